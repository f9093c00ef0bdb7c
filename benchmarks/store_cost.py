"""CPU cost of the store per log: the clickhouse exporter's inserts AND the background merges they cause.

    python benchmarks/store_cost.py --loghub ../shared/data/loghub2k [--rows 3000000] [--block 50000]
           [--alter "ALTER TABLE otel_logs DROP INDEX idx_body" ...] [--label name]

The batches are what the exporter gets in the shipped pipeline: OTLP requests as
benchmarks/e2e_throughput.py builds them (Loghub bodies, 200 services, trace ids, attributes), but
``--rows`` distinct ones (e2e replays 200), decoded by the
receiver's decoder and run through the real ``patterns`` processor (pattern columns, the
log_patterns and pattern_counts tables), concatenated into blocks of ``--block`` records as
the batch processor does. They are built before the timed part. Then ``ClickHouseExporter.consume``
inserts them into a fresh embedded store (schema from otelproc/store/sql, then the ``--alter``
statements on the empty table: variants to compare), and the script waits until no merge has
run for 5 s. Printed: process CPU seconds per 1M logs (all threads: the insert call, chDB's
pipeline and merge pools), split by OS thread name; insert rows/s (wall); parts and bytes on
disk; compressed bytes per otel_logs column with --columns.

Each variant runs in its own process (chDB binds one engine per process).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from e2e_throughput import thread_cpu_by_name  # noqa: E402


def process_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def build_batches(loghub: str | None, rows: int, block: int):
    """LogBatches of ``block`` records as the exporter receives them (decoded, patterns columns)."""
    from otlp_load import build_requests, loghub_bodies_by_system

    from otelproc.batch import concat_batches
    from otelproc.processors.patterns import PatternsProcessor, PatternsProcessorConfig
    from otelproc.receivers.decode import decode_protobuf

    groups = loghub_bodies_by_system(loghub) if loghub else None
    # distinct requests (trace ids, timestamps): replaying a few would put identical rows side by side
    # after the sort and flatter every codec
    payloads = build_requests(-(-rows // 1000), records=1000, resources=10, services=200, bodies=groups)
    proc = PatternsProcessor("patterns", PatternsProcessorConfig(), None, None)
    proc.start()
    out, pending, n = [], [], 0
    i = 0
    while n < rows:
        b = proc.process(decode_protobuf(payloads[i % len(payloads)]).batch)
        i += 1
        pending.append(b)
        n += len(b)
        if sum(map(len, pending)) >= block:
            out.append(concat_batches(pending))
            pending = []
    if pending:
        out.append(concat_batches(pending))
    return out


def settle(store, quiet_s: float = 5.0, limit_s: float = 300.0) -> float:
    """Wait until no merge has run for ``quiet_s`` seconds; return the seconds waited."""
    t0 = time.monotonic()
    last_busy = t0
    while time.monotonic() - t0 < limit_s:
        busy = store.query_rows("SELECT count() FROM system.merges")[0][0]
        now = time.monotonic()
        if busy:
            last_busy = now
        elif now - last_busy >= quiet_s:
            break
        time.sleep(0.25)
    return time.monotonic() - t0


def child(args) -> dict:
    from otelproc.exporters.clickhouse import ClickHouseExporter, ClickHouseExporterConfig

    batches = build_batches(args.loghub, args.rows, args.block)
    rows = sum(map(len, batches))
    data = args.dir
    cfg = ClickHouseExporterConfig(endpoint=f"chdb://{data}", database="bench")
    exp = ClickHouseExporter("clickhouse", cfg)
    exp.start()
    store = exp.store
    for stmt in args.alter:
        store.command(stmt)
    # a WAL range per batch, as the shipped config (WAL on) sends an insert_deduplication_token
    for k, b in enumerate(batches):
        b.wal_seq = ("bench", k * 1_000_000, k * 1_000_000 + len(b) - 1)
    threads0, cpu0 = thread_cpu_by_name(os.getpid()), process_cpu()
    t0 = time.perf_counter()
    for b in batches:
        exp.consume(b)
    insert_s = time.perf_counter() - t0
    cpu_insert = process_cpu() - cpu0
    waited = settle(store)
    cpu_total = process_cpu() - cpu0  # includes settle()'s polling queries (a few ms)
    threads1 = thread_cpu_by_name(os.getpid())
    by_thread = {k: (v - threads0.get(k, 0.0)) * 1e6 / rows for k, v in threads1.items()
                 if v - threads0.get(k, 0.0) > 0.005}
    parts = store.query_rows(
        "SELECT table, count(), sum(rows), sum(bytes_on_disk), countIf(part_type = 'Wide') FROM system.parts "
        "WHERE database = 'bench' AND active GROUP BY table ORDER BY table")
    cols = store.query_rows(
        "SELECT name, sum(data_compressed_bytes), sum(data_uncompressed_bytes) FROM system.columns "
        "WHERE database = 'bench' AND table = 'otel_logs' GROUP BY name ORDER BY 2 DESC")
    idx = store.query_rows(
        "SELECT name, sum(data_compressed_bytes) FROM system.data_skipping_indices "
        "WHERE database = 'bench' AND table = 'otel_logs' GROUP BY name ORDER BY 2 DESC")
    exp.shutdown()
    return {"rows": rows, "block": args.block, "insert_rows_per_s": rows / insert_s,
            "cpu_insert_s_per_1M": cpu_insert * 1e6 / rows, "cpu_total_s_per_1M": cpu_total * 1e6 / rows,
            "settle_s": waited, "threads_s_per_1M": dict(sorted(by_thread.items(), key=lambda kv: -kv[1])),
            "parts": [list(p) for p in parts], "columns": [list(c) for c in cols], "indexes": [list(i) for i in idx]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--loghub", help="Loghub-2k directory (bodies); built-in templates if absent")
    ap.add_argument("--rows", type=int, default=3_000_000)
    ap.add_argument("--block", type=int, default=50_000, help="records per insert (the batch processor's size)")
    ap.add_argument("--alter", action="append", default=[], help="statement run on the empty tables (repeatable)")
    ap.add_argument("--label", default="", help="name printed with the result")
    ap.add_argument("--columns", action="store_true", help="also print compressed bytes per column and index")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--dir", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return
    tmp = Path(tempfile.mkdtemp(prefix="otelproc-store-cost-"))
    argv = [sys.executable, __file__, "--child", "--dir", str(tmp / "data"), "--rows", str(args.rows),
            "--block", str(args.block)] + (["--loghub", args.loghub] if args.loghub else [])
    for a in args.alter:
        argv += ["--alter", a]
    load0 = os.getloadavg()[0]
    try:
        out = subprocess.run(argv, capture_output=True, text=True, cwd=tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if out.returncode:
        raise SystemExit(out.stderr[-4000:])
    r = json.loads(out.stdout.strip().splitlines()[-1])
    logs = {p[0]: p for p in r["parts"]}.get("otel_logs", [0, 0, 0, 0, 0])
    print(f"{args.label or 'current schema'}: block {r['block']:,}  {r['rows']:,} rows  "
          f"CPU {r['cpu_total_s_per_1M']:.2f} s/1M (insert calls {r['cpu_insert_s_per_1M']:.2f}, then merges "
          f"{r['cpu_total_s_per_1M'] - r['cpu_insert_s_per_1M']:.2f} in {r['settle_s']:.0f} s)  "
          f"insert {r['insert_rows_per_s']:,.0f} rows/s  otel_logs {logs[1]} parts ({logs[4]} wide) "
          f"{logs[3] / 2**20:.1f} MiB  load {load0:.1f}->{os.getloadavg()[0]:.1f}")
    print("   threads CPU s/1M: " + ", ".join(f"{k} {v:.2f}" for k, v in r["threads_s_per_1M"].items()))
    if args.columns:
        print("   columns (compressed / uncompressed MiB): " + ", ".join(
            f"{n} {c / 2**20:.2f}/{u / 2**20:.1f}" for n, c, u in r["columns"]))
        print("   indexes (MiB): " + ", ".join(f"{n} {c / 2**20:.2f}" for n, c in r["indexes"]))
        print("   tables: " + "; ".join(f"{p[0]} {p[1]} parts {p[2]} rows {p[3] / 2**20:.1f} MiB" for p in r["parts"]))


if __name__ == "__main__":
    main()
