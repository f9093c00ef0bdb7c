#!/usr/bin/env python3
"""Patterns processor cost per record on the end-to-end benchmark's traffic, in-process, one thread.

    python benchmarks/patterns_processor.py --loghub ../shared/data/loghub2k [--rounds 5]

The requests of benchmarks/e2e_throughput.py (200 pre-encoded requests x 1000 records, 10 resources,
200 services each drawing bodies from one Loghub system) are decoded once, then fed to a fresh
patterns processor in the two pipeline orders of that benchmark:

  per-request  patterns on each 1000-record request, then the requests concatenated into 50k-record
               batches (what the batch processor does) and the otel_logs Arrow table built
  batched      requests concatenated into 50k-record batches first, then patterns, then Arrow

The first pass over the 200 requests learns the patterns (not timed); each round then feeds them
again. Reported: median over rounds of ns per record for patterns / concat / arrow. Compare trees
by running the script in each (A/B, alternating) on a shared box.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("NUMBA_CACHE_DIR", str(Path(__file__).resolve().parents[1] / ".numba_cache"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from otlp_load import build_requests, loghub_bodies_by_system  # noqa: E402

from otelproc.batch import concat_batches  # noqa: E402
from otelproc.processors import patterns as patterns_proc  # noqa: E402
from otelproc.receivers.decode import decode_protobuf  # noqa: E402
from otelproc.store.arrow import logs_to_arrow  # noqa: E402

BATCH = 50


class _Sink:
    def consume(self, batch):
        self.last = batch


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--loghub", required=True)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args(argv)
    payloads = build_requests(200, records=1000, resources=10, services=200,
                              bodies=loghub_bodies_by_system(args.loghub))
    requests = [decode_protobuf(p).batch for p in payloads]
    n_total = sum(len(b) for b in requests)
    print(f"{len(requests)} requests, {n_total:,} records, "
          f"{sum(len(b.body.buf) for b in requests) / n_total:.1f} B/body", flush=True)
    for order in ("per-request", "batched"):
        proc = patterns_proc.factory.create("patterns", patterns_proc.PatternsProcessorConfig(), _Sink(), None)
        proc.start()
        times: dict[str, list[float]] = {"patterns": [], "concat": [], "arrow": []}
        for r in range(args.rounds + 1):
            t_pat = t_cat = t_arr = 0.0
            for a in range(0, len(requests), BATCH):
                group = requests[a:a + BATCH]
                if order == "per-request":
                    t = time.perf_counter()
                    done = [proc.process(b) for b in group]
                    t_pat += time.perf_counter() - t
                    t = time.perf_counter()
                    big = concat_batches(done)
                    t_cat += time.perf_counter() - t
                else:
                    t = time.perf_counter()
                    big = concat_batches(group)
                    t_cat += time.perf_counter() - t
                    t = time.perf_counter()
                    big = proc.process(big)
                    t_pat += time.perf_counter() - t
                t = time.perf_counter()
                logs_to_arrow(big)
                t_arr += time.perf_counter() - t
            if r:  # round 0 learns the patterns
                for k, v in (("patterns", t_pat), ("concat", t_cat), ("arrow", t_arr)):
                    times[k].append(v / n_total * 1e9)
        med = {k: statistics.median(v) for k, v in times.items()}
        print(f"{order:12s} ns/record: patterns {med['patterns']:6.0f}  concat {med['concat']:5.0f}  "
              f"arrow {med['arrow']:5.0f}  ({proc.miner.pattern_count} patterns; load {os.getloadavg()[0]:.1f})",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
