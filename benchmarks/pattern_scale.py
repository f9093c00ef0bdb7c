#!/usr/bin/env python3
"""Pattern mining at Loghub-2.0 scale (issue 15 point 6): does the per-line cost stay flat and the
memory bounded while a stream keeps bringing new templates?

    python benchmarks/pattern_scale.py [--lines 10000000] [--templates 100000] [--services 100]
        [--batch 100000] [--report 10] [--seed 1]

A synthetic stream (no data set needed): ``--templates`` distinct templates spread over
``--services`` services, each 5-12 words drawn from a 20,000-word vocabulary of random lowercase
words, with 1-3 variables (a number, a hex id, an IPv4 address, a host:port) between them. New
templates keep arriving until half the stream has been sent (template k first appears around line
k * lines / (2 * templates)); every line picks a template uniformly among those that have appeared,
so the second half runs with all templates known. Each batch goes through the patterns processor's
``process`` (what the pipeline runs: learn with parameters, pattern ids, template dictionary,
log_patterns and pattern_counts tables), one thread.

Printed every ``--report`` batches: lines so far, live patterns, CPU microseconds per line over
those batches (process CPU time: less sensitive to other jobs than wall time) and the process's
resident memory. A flat per-line cost means the last rows cost about what the first rows after
warm-up cost; bounded memory means RSS levels off once the templates stop growing.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("NUMBA_CACHE_DIR", str(REPO / ".numba_cache"))

from otelproc.batch import LogBatch, StringArray  # noqa: E402
from otelproc.processors import patterns as patterns_proc  # noqa: E402

LETTERS = np.frombuffer(b"abcdefghijklmnopqrstuvwxyz", dtype=np.uint8)


class _Sink:
    def consume(self, batch):
        pass


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def make_templates(n: int, rng: np.random.Generator) -> list[list[str]]:
    """n templates as word lists; "{}" marks a variable."""
    lens = rng.integers(3, 10, 20_000)
    vocab = ["".join(chr(c) for c in rng.choice(LETTERS, k)) for k in lens.tolist()]
    out = []
    for _ in range(n):
        words = [vocab[i] for i in rng.integers(0, len(vocab), int(rng.integers(5, 13)))]
        for _ in range(int(rng.integers(1, 4))):
            words.insert(int(rng.integers(1, len(words) + 1)), "{}")
        out.append(words)
    return out


def value(kind: int, x: int) -> str:
    if kind == 0:
        return str(x)
    if kind == 1:
        return f"{x * 2654435761 % 2**48:012x}"
    if kind == 2:
        return f"10.{x % 256}.{x // 256 % 256}.{x // 65536 % 256}"
    return f"host{x % 97}:{1024 + x % 60000}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lines", type=int, default=10_000_000)
    ap.add_argument("--templates", type=int, default=100_000)
    ap.add_argument("--services", type=int, default=100)
    ap.add_argument("--batch", type=int, default=100_000)
    ap.add_argument("--report", type=int, default=10, help="print every this many batches")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)

    rng = np.random.default_rng(args.seed)
    templates = make_templates(args.templates, rng)
    kinds = [rng.integers(0, 4, len(t)).tolist() for t in templates]
    svc_of_template = rng.integers(0, args.services, args.templates)
    services = [f"svc{i:04d}" for i in range(args.services)]
    base = LogBatch.from_records([{"time_ns": 0, "service": s, "body": ""} for s in services])
    base = base.take(np.zeros(args.batch, dtype=np.int64))   # the non-body columns of a batch
    proc = patterns_proc.factory.create("patterns", patterns_proc.PatternsProcessorConfig(
        max_patterns_per_service=max(5000, 2 * args.templates // args.services)), _Sink(), None)
    proc.start()
    print(f"{args.lines:,} lines, {args.templates:,} templates over {args.services} services, batch {args.batch:,}; "
          f"max_patterns_per_service {proc.miner.max_patterns_per_service}", flush=True)
    print(f"{'lines':>12} {'patterns':>9} {'us/line CPU':>12} {'us/line wall':>13} {'RSS MiB':>8}", flush=True)
    arrival = args.lines / 2 / args.templates   # lines between two new templates in the first half
    t_cpu = t_wall = 0.0
    done = 0
    x = 0
    for b in range(0, args.lines, args.batch):
        n = min(args.batch, args.lines - b)
        active = np.minimum(args.templates, 1 + (np.arange(b, b + n) / arrival).astype(np.int64))
        tid = (rng.random(n) * active).astype(np.int64)
        bodies = []
        for t in tid.tolist():
            words, kd = templates[t], kinds[t]
            parts = []
            for w, k in zip(words, kd):
                if w == "{}":
                    x += 1
                    parts.append(value(k, x))
                else:
                    parts.append(w)
            bodies.append(" ".join(parts))
        batch = base if n == args.batch else base.take(np.arange(n))
        ts = np.full(n, 1_700_000_000_000_000_000 + b * 1_000_000, dtype=np.int64)
        batch = dataclasses.replace(batch, body=StringArray.from_pylist(bodies), time_ns=ts, observed_ns=ts,
                                    service_index=svc_of_template[tid].astype(np.int32))
        w0, c0 = time.perf_counter(), time.process_time()
        proc.process(batch)
        t_wall += time.perf_counter() - w0
        t_cpu += time.process_time() - c0
        done += n
        if (b // args.batch + 1) % args.report == 0 or b + n >= args.lines:
            print(f"{b + n:>12,} {proc.miner.pattern_count:>9,} {t_cpu / done * 1e6:>12.2f} "
                  f"{t_wall / done * 1e6:>13.2f} {rss_mib():>8.0f}", flush=True)
            t_cpu = t_wall = 0.0
            done = 0
    print(f"load average {os.getloadavg()[0]:.2f} (2 cores; other jobs share them)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
