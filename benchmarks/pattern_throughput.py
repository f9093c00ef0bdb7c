#!/usr/bin/env python3
"""Throughput of the pattern kernel path vs Drain3 on Loghub-2k content replicated to >= 1M lines.

    python benchmarks/pattern_throughput.py --data ../shared/data/loghub2k [--lines 1000000]
        [--batch 100000] [--drain3-lines 200000] [--repeat 3]

Content lines are cut from every system's raw log with formats.yaml (as pattern_accuracy.py does),
cycled to --lines and shuffled (seed 42). Timed, single thread, after a JIT warm-up, best and median
of --repeat runs:
Rates are given in wall time and in CPU seconds of this process (less sensitive to other jobs).
  * kernel       the fused kernel alone (hash_and_lookup: tokenise + classify + mask + hash in one pass
                 over the bytes, then the exact-key cache lookup) with a warm cache, per batch
  * learn        PatternMiner.learn per batch, each run with a fresh miner: tokenise + mask + hash + cache lookup + slow path for
                 new keys + counts (what the processor needs to get pattern ids)
  * learn+params learn(with_params=True): the parameters of each line taken in the same walk over the
                 bytes as its key (0x1f-terminated, the pattern_params layout), i.e. everything the
                 patterns processor computes per line except Arrow/table building (until 2026-11-29
                 session 2: a second walk over the bytes after learn)
Drain3 (defaults, no masking, profiling off) runs on the first --drain3-lines lines of the same
shuffled input. Peak memory is the process's max RSS.
"""
from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))
os.environ.setdefault("NUMBA_CACHE_DIR", str(REPO / ".numba_cache"))

from otelproc.batch import StringArray  # noqa: E402
from otelproc.patterns import PatternMiner  # noqa: E402
from pattern_accuracy import read_contents  # noqa: E402


def load(data: Path, n: int) -> list[str]:
    formats = yaml.safe_load((data / "formats.yaml").read_text())["systems"]
    lines: list[str] = []
    for s in sorted(formats):
        if (data / s).is_dir():
            lines += read_contents(data / s / formats[s]["log_file"], formats[s]["log_format"])
    reps = -(-n // len(lines))
    allv = (lines * reps)[:n]
    rng = np.random.default_rng(42)
    order = rng.permutation(len(allv))
    return [allv[i] for i in order]


def run(sa: StringArray, batch: int, params: bool) -> tuple[float, float, PatternMiner]:
    """(wall seconds, CPU seconds of this process, the miner) of learning ``sa`` in batches."""
    m = PatternMiner()
    n = len(sa)
    svc = np.zeros(batch, dtype=np.int32)
    slices = []
    for a in range(0, n, batch):
        b = min(n, a + batch)
        slices.append((sa.buf[sa.off[a]:sa.off[b]], sa.off[a:b + 1] - sa.off[a], svc[:b - a]))
    t0, c0 = time.perf_counter(), time.process_time()
    for buf, off, s in slices:
        # with params: what the patterns processor does (parameters taken in the key walk, 0x1f-terminated)
        m.learn(buf, off, s, ["bench"], with_params=params)
    return time.perf_counter() - t0, time.process_time() - c0, m


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--lines", type=int, default=1_000_000)
    ap.add_argument("--batch", type=int, default=100_000)
    ap.add_argument("--drain3-lines", type=int, default=200_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)

    lines = load(Path(args.data), args.lines)
    sa = StringArray.from_pylist(lines)
    print(f"input: {len(sa):,} lines, {len(sa.buf) / len(sa):.1f} B/line, {len(set(lines[:200000])):,} distinct in first 200k")
    run(StringArray.from_pylist(lines[:5000]), 1000, True)  # JIT warm-up (or cache load)

    results = {}
    run(sa, args.batch, False)
    _, _, warm = run(sa, args.batch, False)
    from otelproc.kernels.tokenize import hash_and_lookup
    times, cpu = [], []
    svc = np.zeros(args.batch, dtype=np.int32)
    seeds = warm.seeds
    for _ in range(args.repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        for a in range(0, len(sa), args.batch):
            b = min(len(sa), a + args.batch)
            hash_and_lookup(sa.buf[sa.off[a]:sa.off[b]], sa.off[a:b + 1] - sa.off[a], svc[:b - a], seeds,
                            warm.table.key, warm.table.val, warm.table.vmask)
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    # CPU seconds are less sensitive than wall time to other jobs on a shared box
    results["kernel"] = (len(sa) / float(np.median(times)), len(sa) / float(np.median(cpu)))
    print(f"ours {'kernel':<13} {len(sa) / min(times) / 1e6:6.2f} M lines/s best, {results['kernel'][0] / 1e6:6.2f} median "
          f"of {args.repeat}; CPU time: {len(sa) / min(cpu) / 1e6:6.2f} best, {results['kernel'][1] / 1e6:6.2f} median")
    for name, params in (("learn", False), ("learn+params", True)):
        times, cpu = [], []
        for _ in range(args.repeat):
            dt, dc, m = run(sa, args.batch, params)
            times.append(dt)
            cpu.append(dc)
        med = float(np.median(times))
        results[name] = (len(sa) / med, len(sa) / float(np.median(cpu)))
        print(f"ours {name:<13} {len(sa) / min(times) / 1e6:6.2f} M lines/s best, {len(sa) / med / 1e6:6.2f} median "
              f"({med:.3f} s of {args.repeat}; {m.pattern_count} patterns); CPU time: {len(sa) / min(cpu) / 1e6:6.2f} "
              f"best, {results[name][1] / 1e6:6.2f} median")

    from drain3 import TemplateMiner
    from drain3.template_miner_config import TemplateMinerConfig

    cfg = TemplateMinerConfig()
    cfg.profiling_enabled = False
    tm = TemplateMiner(config=cfg)
    sub = lines[:args.drain3_lines]
    t0, c0 = time.perf_counter(), time.process_time()
    for ln in sub:
        tm.add_log_message(ln)
    dt, dc = time.perf_counter() - t0, time.process_time() - c0
    d3, d3_cpu = len(sub) / dt, len(sub) / dc
    print(f"drain3             {d3 / 1e6:6.3f} M lines/s  ({len(sub):,} lines in {dt:.2f} s; {len(tm.drain.clusters)} "
          f"clusters); CPU time: {d3_cpu / 1e6:6.3f}")
    for name, (v, v_cpu) in results.items():
        print(f"ratio {name:<12} {v / d3:6.1f}x drain3 (medians, wall), {v_cpu / d3_cpu:6.1f}x (CPU time)")
    print(f"load average {os.getloadavg()[0]:.2f} (2 cores; other jobs share them)")
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
