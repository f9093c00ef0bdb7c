#!/usr/bin/env python3
"""Per-record CPU of the ``anomaly`` processor on simulated multi-service traffic (with durations).

    python benchmarks/anomaly_stage.py --hours 1 --rounds 3

Simulates ``--hours`` of ``otelproc.simulate`` traffic (5 services, request and low-rate latency lines,
heartbeats, errors; 5 s batches), runs it through the ``patterns`` processor once (not timed), then feeds
the batches to a fresh ``anomaly`` processor (default config) ``--rounds`` times and prints the process CPU
per record of ``consume`` (median and min over rounds): the cost of duration extraction, series filing and
every detector, per record.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("NUMBA_CACHE_DIR", str(REPO / ".numba_cache"))


class _Sink:
    def __init__(self) -> None:
        self.batches = []

    def consume(self, batch) -> None:
        self.batches.append(batch)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hours", type=float, default=1.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    from otelproc.processors import anomaly as anomaly_proc
    from otelproc.processors import patterns as patterns_proc
    from otelproc.simulate import Scenario, simulate

    sink = _Sink()
    pat = patterns_proc.factory.create("patterns", patterns_proc.PatternsProcessorConfig(), sink, None)
    pat.start()
    for b in simulate(Scenario(seed=args.seed, duration_s=args.hours * 3600.0)):
        if len(b):
            pat.consume(b)
    batches = sink.batches
    records = sum(len(b) for b in batches)
    per_record = []
    for _ in range(args.rounds + 1):  # the first round compiles / warms the caches
        proc = anomaly_proc.factory.create("anomaly", anomaly_proc.AnomalyProcessorConfig(), _Sink(), None)
        proc.start()
        cpu = time.process_time()
        for b in batches:
            proc.consume(b)
        per_record.append((time.process_time() - cpu) / records * 1e9)
    per_record = per_record[1:]
    print(f"{records} records in {len(batches)} batches ({args.hours:g} h simulated): anomaly processor "
          f"{statistics.median(per_record):.0f} ns/record median, {min(per_record):.0f} min over {args.rounds} rounds "
          f"({', '.join(f'{x:.0f}' for x in per_record)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
