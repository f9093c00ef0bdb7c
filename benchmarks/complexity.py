"""How cost grows with the input: per-stage ns/record against

  services     distinct service.name values in the stream (1 ... 1,000); each template
               belongs to one service, so the pattern count stays the same
  patterns     distinct templates in the stream (10 ... 100,000)
  body         body length in bytes (32 ... 4,096)
  batch        records per batch (1,000 ... 100,000): ns/record must stay flat, i.e. no stage
               is worse than linear in batch size

Stages are timed in-process on the same batches, in pipeline order: decode (OTLP protobuf ->
LogBatch), patterns processor, anomaly processor, arrow (otel_logs Arrow table) and insert
(embedded chDB, a fresh table per point). Each point feeds ``--batches`` batches and reports the
median ns/record over the batches after the first (warm-up and cold caches of a new stream).

Usage: python benchmarks/complexity.py [--axes services patterns body batch] [--batches 6] [--no-insert]
       python benchmarks/complexity.py --point services=200 patterns=10000 batch=1000 --batches 30 --no-insert
       (one point; with few records per template per batch every batch meets new patterns: a growing population)
"""
from __future__ import annotations

import argparse
import os
import random
import statistics
import string
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("NUMBA_CACHE_DIR", str(Path(__file__).resolve().parents[1] / ".numba_cache"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from otelproc.batch import LogBatch  # noqa: E402
from otelproc.component import Context  # noqa: E402
from otelproc.encode import encode_protobuf  # noqa: E402
from otelproc.processors import anomaly as anomaly_proc  # noqa: E402
from otelproc.processors import patterns as patterns_proc  # noqa: E402
from otelproc.receivers.decode import decode_protobuf  # noqa: E402
from otelproc.store.arrow import logs_to_arrow  # noqa: E402
from otelproc.telemetry import Telemetry  # noqa: E402

STAGES = ("decode", "patterns", "anomaly", "arrow", "insert")
WORDS = ["request", "served", "connection", "closed", "user", "login", "failed", "cache", "miss", "block",
         "received", "timeout", "worker", "started", "job", "error", "disk", "full", "retry", "ok"]


def template_bank(n: int, rng: random.Random) -> list[str]:
    """n distinct templates: 4-9 literal words (distinct word sequences) with 1-3 variable slots."""
    out, seen = [], set()
    while len(out) < n:
        k = rng.randint(4, 9)
        # common words plus one random letters-only token, so templates stay distinct at every scale
        words = tuple(rng.choice(WORDS) for _ in range(k)) + ("".join(rng.choice(string.ascii_lowercase)
                                                                       for _ in range(6)),)
        if words in seen:
            continue
        seen.add(words)
        slots = sorted(rng.sample(range(len(words) + 1), rng.randint(1, 3)))
        parts = list(words)
        for s in reversed(slots):
            parts.insert(s, "{}")
        out.append(" ".join(parts))
    return out


def make_batch(n: int, services: int, templates: list[str], body_len: int, rng: random.Random, t0: int) -> LogBatch:
    recs = []
    for i in range(n):
        t = rng.randrange(len(templates))
        body = templates[t].replace("{}", str(rng.randrange(100000)))
        if body_len and len(body) < body_len:
            body = (body + " " + "x" * body_len)[:body_len]  # pad with one long literal token
        recs.append({"time_ns": t0 + i * 1000, "severity_number": rng.choice((9, 9, 9, 13, 17)),
                     "body": body, "service": f"svc-{t % services:04d}",  # a template belongs to one service
                     "attributes": {"thread": f"w-{i % 8}"}})
    return LogBatch.from_records(recs, resource={"host.name": "node-1"})


class Sink:
    def __init__(self):
        self.last = None

    def consume(self, batch):
        self.last = batch


def measure(point: dict, args, store) -> dict[str, float]:
    rng = random.Random(7)
    templates = template_bank(point["patterns"], rng)
    tel = Telemetry()
    psink, asink = Sink(), Sink()
    state = tempfile.mkdtemp(prefix="cx-")
    pat = patterns_proc.factory.create("patterns", patterns_proc.PatternsProcessorConfig(
        state_dir=state, max_patterns_per_service=max(10_000, point["patterns"] * 2)), psink, Context(telemetry=tel))
    ano = anomaly_proc.factory.create("anomaly", anomaly_proc.AnomalyProcessorConfig(), asink, Context(telemetry=tel))
    pat.start()
    ano.start()
    per_stage = {s: [] for s in STAGES}
    t0 = 1_700_000_000_000_000_000
    table = f"cx_{abs(hash(tuple(point.items()))) % 10**9}"
    if store is not None:
        from otelproc.store.schema import SchemaOptions, render, split_statements, SQL_DIR

        ddl = render((SQL_DIR / "otel_logs.sql").read_text(), SchemaOptions(database=store.database,
                                                                           tables={"otel_logs": table}), table="otel_logs")
        for stmt in split_statements(ddl):
            store.command(stmt)
    # the whole pattern population is seen before timing starts only if it fits in the first batch;
    # otherwise later batches keep meeting new templates, as a real stream does
    for b in range(args.batches):
        src = make_batch(point["batch"], point["services"], templates, point["body"], rng, t0 + b * 10**9)
        data = encode_protobuf(src)
        n = len(src)
        t = time.perf_counter(); batch = decode_protobuf(data).batch; d_dec = time.perf_counter() - t
        t = time.perf_counter(); pat.consume(batch); d_pat = time.perf_counter() - t
        t = time.perf_counter(); ano.consume(psink.last); d_ano = time.perf_counter() - t
        t = time.perf_counter(); tbl = logs_to_arrow(asink.last); d_arr = time.perf_counter() - t
        d_ins = float("nan")
        if store is not None:
            t = time.perf_counter(); store.insert_arrow(table, tbl); d_ins = time.perf_counter() - t
        if b:
            for s, d in zip(STAGES, (d_dec, d_pat, d_ano, d_arr, d_ins)):
                per_stage[s].append(d / n * 1e9)
    pat.shutdown()
    ano.shutdown()
    if store is not None:
        store.command(f"DROP TABLE IF EXISTS {table}")
    return {s: statistics.median(v) for s, v in per_stage.items()}


AXES = {
    "services": [{"services": s} for s in (1, 10, 100, 1000)],
    "patterns": [{"patterns": p} for p in (10, 100, 1000, 10_000, 100_000)],
    "body": [{"body": b} for b in (32, 128, 512, 2048, 4096)],
    "batch": [{"batch": b} for b in (1000, 10_000, 100_000)],
}
BASE = {"services": 20, "patterns": 2000, "body": 0, "batch": 20_000}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--axes", nargs="+", choices=tuple(AXES), default=list(AXES))
    ap.add_argument("--batches", type=int, default=6)
    ap.add_argument("--no-insert", action="store_true", help="skip the chDB insert stage")
    ap.add_argument("--point", nargs="+", metavar="KEY=N", help=f"measure one point (keys {', '.join(BASE)}; "
                    "the rest from the base point) instead of the axes")
    args = ap.parse_args()
    point = None
    if args.point:
        try:
            point = {**BASE, **{k: int(v) for k, v in (kv.split("=", 1) for kv in args.point)}}
        except ValueError:
            ap.error(f"--point takes KEY=N pairs, got {args.point}")
        if set(point) != set(BASE):
            ap.error(f"--point keys are {', '.join(BASE)}, got {args.point}")
    store = None
    if not args.no_insert:
        from otelproc.store.embedded import EmbeddedStore

        store = EmbeddedStore(tempfile.mkdtemp(prefix="cx-chdb-"), "cx")
    # JIT warm-up
    measure({**BASE, "batch": 1000}, argparse.Namespace(batches=2), store)
    print(f"load average {os.getloadavg()[0]:.2f}; base point {BASE}; body 0 = natural length (~45 B)")
    if point is not None:
        r = measure(point, args, store)
        print(f"{point}: " + ", ".join(f"{s} {r[s]:.0f}" for s in STAGES) + " ns/record")
    for axis in ([] if point is not None else args.axes):
        print(f"\n{axis:>9s} | " + " | ".join(f"{s:>9s}" for s in STAGES) + " | total ns/rec | logs/s (1 core)")
        for change in AXES[axis]:
            point = {**BASE, **change}
            r = measure(point, args, store)
            total = sum(v for v in r.values() if v == v)
            print(f"{change[axis]:>9} | " + " | ".join(f"{r[s]:9.0f}" for s in STAGES)
                  + f" | {total:12.0f} | {1e9 / total:12,.0f}", flush=True)
    print(f"\nload average {os.getloadavg()[0]:.2f}")
    if store is not None:
        store.close()


if __name__ == "__main__":
    main()
