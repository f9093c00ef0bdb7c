"""CPU per log of each analysis stage (patterns, anomaly, alerting) on the traffic of e2e_throughput.py.

    python benchmarks/analysis_stages.py --loghub ../shared/data/loghub2k [--merge 5] [--rounds 5] [--skip 2]

The 200 OTLP requests of benchmarks/e2e_throughput.py (1000 records each, 200 services with Loghub bodies)
are decoded once and concatenated ``--merge`` at a time (the ingest queue merges requests that queued up
while the worker was busy: 1 to 20 of them). The three processors run in process, as the pipeline chains
them, each ``consume`` timed on its own thread's CPU clock. The requests are replayed ``--rounds`` times;
the first ``--skip`` rounds are not counted (the miner's templates settle during them: new template texts
make new template dictionaries, which the anomaly and alerting stages re-plan), so the figure is the
steady-state cost. Alert notifications go nowhere (no receivers are reachable; failures are not logged).
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from otlp_load import build_requests, loghub_bodies_by_system  # noqa: E402

STAGES = ("patterns", "anomaly", "alerting")


class _Collect:
    def __init__(self) -> None:
        self.last = None

    def consume(self, batch) -> None:
        self.last = batch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--loghub", help="Loghub-2k directory (bodies); built-in templates if absent")
    ap.add_argument("--merge", type=int, default=5, help="requests per batch")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--skip", type=int, default=2, help="rounds not counted (warm-up)")
    args = ap.parse_args()
    logging.disable(logging.ERROR)  # the alerting stage's notifications have no receiver here

    from otelproc.batch import concat_batches
    from otelproc.component import Context
    from otelproc.processors import alerting, anomaly, patterns
    from otelproc.receivers.decode import decode_protobuf

    groups = loghub_bodies_by_system(args.loghub) if args.loghub else None
    requests = [decode_protobuf(p).batch for p in
                build_requests(200, records=1000, resources=10, services=200, bodies=groups)]
    batches = [concat_batches(requests[i:i + args.merge]) for i in range(0, len(requests), args.merge)]
    records = sum(map(len, batches))
    procs = []
    for name, module in zip(STAGES, (patterns, anomaly, alerting)):
        out = _Collect()
        proc = module.factory.create(name, module.factory.config_class(), out, Context())
        proc.start()
        procs.append((name, proc, out))
    cpu = dict.fromkeys(STAGES, 0.0)
    for r in range(args.rounds):
        for batch in batches:
            for name, proc, out in procs:
                t = time.thread_time()
                proc.consume(batch)
                if r >= args.skip:
                    cpu[name] += time.thread_time() - t
                batch = out.last
    counted = (args.rounds - args.skip) * records
    print(f"{records:,} records x {args.rounds - args.skip} counted rounds, {args.merge} requests per batch: "
          + ", ".join(f"{k} {v / counted * 1e6:.3f}" for k, v in cpu.items())
          + f" CPU s per 1M logs (sum {sum(cpu.values()) / counted * 1e6:.3f})", flush=True)
    for _, proc, _ in procs[::-1]:
        proc.shutdown()


if __name__ == "__main__":
    main()
