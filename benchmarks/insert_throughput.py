"""Insert throughput of the clickhouse store: LogBatch -> Arrow (logs_to_arrow) -> chDB otel_logs.

    python benchmarks/insert_throughput.py [--loghub ../shared/data/loghub2k] [--store /tmp/bench_chdb]
                                           [--sizes 10000,50000,100000] [--rows 500000] [--runs 3]
                                           [--endpoint chdb|chdb+connect]

Batches are realistic: Loghub-2k `Content` lines of all systems (cycled, shuffled) as bodies when
--loghub is given (else synthetic HTTP lines), 10 services, 3 log attributes per record, trace/span
ids on half the records, pattern_id/anomaly_score columns. For each block size, inserts --rows rows
in blocks of that size into a fresh otel_logs table and reports the median of --runs runs:
Arrow build time (per block and rows/s) separately, then end-to-end rows/s (build + insert).
"""
from __future__ import annotations

import argparse
import csv
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from otelproc.batch import AttrMap, LogBatch, StringArray  # noqa: E402
from otelproc.store import open_store  # noqa: E402
from otelproc.store.arrow import logs_to_arrow  # noqa: E402
from otelproc.store.schema import SchemaOptions, ensure_schema  # noqa: E402


def load_bodies(loghub: Path | None) -> list[str]:
    if loghub is None:
        return [f"GET /api/items/{i} returned 200 in {i % 997} ms" for i in range(20_000)]
    out: list[str] = []
    for f in sorted(loghub.glob("*/*_2k.log_structured.csv")):
        with open(f, newline="", encoding="utf-8", errors="replace") as fh:
            out += [row["Content"] for row in csv.DictReader(fh)]
    if not out:
        raise SystemExit(f"no */*_2k.log_structured.csv under {loghub}")
    return out


def make_batch(n: int, bodies: list[str], rng: np.random.Generator, t0: int) -> LogBatch:
    """n records; built with numpy except the body list (prepared once outside the timing)."""
    pick = rng.integers(0, len(bodies), n)
    body = StringArray.from_pylist([bodies[i] for i in pick.tolist()])
    services = [f"svc-{i}" for i in range(10)]
    svc = rng.integers(0, 10, n).astype(np.int32)
    keys = StringArray.from_pylist(["http.method", "user.id", "region"] * n)
    values = StringArray.from_pylist([v for i in range(n) for v in ("GET", f"u{i % 977}", "eu-west-1")])
    trace = rng.integers(0, 256, (n, 16), dtype=np.uint8)
    trace[::2] = 0
    return LogBatch(
        time_ns=t0 + np.arange(n, dtype=np.int64) * 1000, observed_ns=np.zeros(n, np.int64),
        severity_number=rng.choice(np.array([9, 13, 17], np.uint8), n),
        severity_text=StringArray.from_pylist(rng.choice(["INFO", "WARN", "ERROR"], n).tolist()),
        body=body, trace_id=trace, span_id=trace[:, :8].copy(), flags=np.ones(n, np.uint32),
        log_attrs=AttrMap(np.arange(0, 3 * n + 1, 3, dtype=np.int64), keys, values),
        resource_index=svc, scope_index=np.zeros(n, np.int32), service_index=svc,
        resource_attrs=AttrMap.from_pylist([{"service.name": s, "host.name": f"h{i}"} for i, s in enumerate(services)]),
        resource_schema_url=StringArray.from_pylist([""] * 10), scope_name=StringArray.from_pylist(["bench"]),
        scope_version=StringArray.from_pylist(["1"]), scope_schema_url=StringArray.from_pylist([""]),
        scope_attrs=AttrMap.empty(1), services=services,
    ).with_columns(pattern_id=rng.integers(0, 500, n).astype(np.uint64),
                   anomaly_score=rng.random(n).astype(np.float32))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--loghub", type=Path, help="loghub2k directory (bodies); synthetic lines if absent")
    ap.add_argument("--store", type=Path, help="chDB data directory (default: a temporary one, removed)")
    ap.add_argument("--sizes", default="10000,50000,100000")
    ap.add_argument("--rows", type=int, default=500_000, help="rows inserted per size and run")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--endpoint", choices=("chdb", "chdb+connect"), default="chdb",
                    help="chdb: embedded Python(arrow) insert; chdb+connect: clickhouse-connect insert_arrow")
    args = ap.parse_args()
    path = args.store or Path(tempfile.mkdtemp(prefix="otelproc_bench_"))
    bodies = load_bodies(args.loghub)
    rng = np.random.default_rng(42)
    t0 = time.time_ns()
    store = open_store(f"{args.endpoint}://{path}", "bench")
    print(f"endpoint {args.endpoint}://{path}, bodies from {args.loghub or 'synthetic'} "
          f"({len(bodies)} lines), {args.rows} rows per run, median of {args.runs}")
    print(f"{'block':>8} {'arrow ms/block':>15} {'arrow rows/s':>13} {'e2e rows/s':>11} {'insert-only rows/s':>19}")
    try:
        for size in [int(s) for s in args.sizes.split(",")]:
            blocks = [make_batch(size, bodies, rng, t0) for _ in range(max(1, args.rows // size))]
            builds, e2e, inserts = [], [], []
            for _ in range(args.runs):
                store.command("DROP TABLE IF EXISTS otel_logs")
                ensure_schema(store, SchemaOptions(database="bench"))
                build_s = insert_s = 0.0
                start = time.perf_counter()
                for b in blocks:
                    a = time.perf_counter()
                    table = logs_to_arrow(b)
                    m = time.perf_counter()
                    store.insert_arrow("otel_logs", table)
                    build_s += m - a
                    insert_s += time.perf_counter() - m
                total = time.perf_counter() - start
                rows = size * len(blocks)
                got = store.query_rows("SELECT count() FROM otel_logs")[0][0]
                assert got == rows, f"inserted {rows}, table has {got}"
                builds.append(build_s / len(blocks))
                e2e.append(rows / total)
                inserts.append(rows / insert_s)
            b = statistics.median(builds)
            print(f"{size:>8} {b * 1e3:>15.2f} {size / b:>13,.0f} {statistics.median(e2e):>11,.0f} "
                  f"{statistics.median(inserts):>19,.0f}")
    finally:
        store.command("DROP DATABASE IF EXISTS bench")
        store.close()
        if args.store is None:
            shutil.rmtree(path, ignore_errors=True)


if __name__ == "__main__":
    main()
