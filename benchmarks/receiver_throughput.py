"""Receiver throughput: pre-encoded realistic OTLP requests (1,000 records each) posted
concurrently to `otelproc serve`; prints accepted logs/s for

  decode   receiver -> batch -> (counting) debug exporter: HTTP + decode + pipeline, no store
  store    receiver -> batch -> clickhouse exporter on embedded chDB, rows landed checked by count()

Usage:
  python benchmarks/receiver_throughput.py [--loghub ../shared/data/loghub2k] [--duration 15]
         [--clients 2] [--transport http|grpc] [--grpc-client precompressed|grpcio] [--no-gzip]
         [--mode decode store]

gRPC bodies are gzipped before the timed loop, as for HTTP (see benchmarks/otlp_load.py);
--grpc-client grpcio uses grpcio's client instead, which gzips each message in the loop.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from otlp_load import build_requests, loghub_bodies, run_load  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def config(mode: str, http_port: int, grpc_port: int, data: str) -> str:
    exporter = ("clickhouse", f'clickhouse: {{endpoint: "chdb://{data}", database: bench, ttl: 0s}}') if mode == "store" \
        else ("debug", "debug: {verbosity: basic}")
    return f"""
receivers:
  otlp:
    protocols:
      http: {{endpoint: 127.0.0.1:{http_port}}}
      grpc: {{endpoint: 127.0.0.1:{grpc_port}}}
processors:
  batch: {{send_batch_size: 100000, timeout: 1s}}
exporters:
  {exporter[1]}
service:
  telemetry: {{logs: {{level: warn}}}}
  queue: {{max_records: 400000}}
  pipelines:
    logs: {{receivers: [otlp], processors: [batch], exporters: [{exporter[0]}]}}
"""


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run(mode: str, payloads: list[bytes], records: int, args) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix=f"otelproc-bench-{mode}-"))
    http_port, grpc_port = free_port(), free_port()
    cfg = tmp / "cfg.yaml"
    cfg.write_text(config(mode, http_port, grpc_port, str(tmp / "data")))
    ready = tmp / "ready.json"
    env = {**os.environ, "NUMBA_CACHE_DIR": str(REPO / ".numba_cache")}
    proc = subprocess.Popen([sys.executable, "-m", "otelproc", "serve", "--config", str(cfg), "--ready-file", str(ready)],
                            env=env, cwd=tmp, stderr=open(tmp / "server.log", "w"))
    while not ready.exists():
        if proc.poll() is not None:
            raise SystemExit((tmp / "server.log").read_text())
        time.sleep(0.05)
    port = http_port if args.transport == "http" else grpc_port
    warm = run_load(port, payloads[:4], records, args.transport, not args.no_gzip, 1, 2.0,
                    args.grpc_client)  # JIT warm-up
    cpu0 = cpu_seconds(proc.pid)
    load0 = os.getloadavg()[0]
    res = run_load(port, payloads, records, args.transport, not args.no_gzip, args.clients, args.duration,
                   args.grpc_client)
    res["load_avg"] = (load0, os.getloadavg()[0])
    res["server_cpu_s_per_1M"] = (cpu_seconds(proc.pid) - cpu0) / max(res["accepted"], 1) * 1e6
    res["peak_rss_mib"] = peak_rss_mib(proc.pid)
    proc.send_signal(signal.SIGTERM)
    proc.wait(300)
    if mode == "store":
        out = subprocess.run([sys.executable, "-m", "otelproc", "sql", "SELECT count() AS n FROM bench.otel_logs",
                              "--config", str(cfg), "--format", "json"], capture_output=True, text=True, env=env, cwd=tmp)
        rows = json.loads(out.stdout.splitlines()[0])["n"] if out.returncode == 0 else f"error: {out.stderr[-300:]}"
        res["rows_landed"] = int(rows) if str(rows).isdigit() else rows
        res["accepted_incl_warmup"] = res["accepted"] + warm["accepted"]
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--loghub", help="Loghub-2k directory for realistic bodies (default: built-in templates)")
    ap.add_argument("--duration", type=float, default=15.0)
    ap.add_argument("--clients", type=int, default=2)
    ap.add_argument("--records", type=int, default=1000)
    ap.add_argument("--transport", choices=("http", "grpc"), default="http")
    ap.add_argument("--grpc-client", choices=("precompressed", "grpcio"), default="precompressed",
                    help="gRPC load client (default: our HTTP/2 client sending pre-gzipped messages)")
    ap.add_argument("--no-gzip", action="store_true")
    ap.add_argument("--mode", nargs="+", choices=("decode", "store"), default=["decode", "store"])
    args = ap.parse_args()
    bodies = loghub_bodies(args.loghub) if args.loghub else None
    payloads = build_requests(200, records=args.records, bodies=bodies)
    print(f"{len(payloads)} requests x {args.records} records, {sum(map(len, payloads)) / len(payloads) / 1024:.0f} KiB each, "
          f"transport={args.transport}{'/' + args.grpc_client if args.transport == 'grpc' else ''} gzip={not args.no_gzip} clients={args.clients} duration={args.duration}s")
    for mode in args.mode:
        r = run(mode, payloads, args.records, args)
        line = (f"{mode:7s} accepted {r['accepted_per_s']:>10,.0f} logs/s  refused {r['refused']:,}  "
                f"p50 {r['p50_ms']:.1f} ms  p99 {r['p99_ms']:.1f} ms  server CPU {r['server_cpu_s_per_1M']:.2f} s/1M  "
                f"peak RSS {r['peak_rss_mib']:.0f} MiB  load {r['load_avg'][0]:.1f}-{r['load_avg'][1]:.1f}")
        if "rows_landed" in r:
            line += f"  rows landed {r['rows_landed']:,} of {r['accepted_incl_warmup']:,} accepted (incl. warm-up)" \
                if isinstance(r["rows_landed"], int) \
                else f"  rows landed: {r['rows_landed']}"
        print(line, flush=True)


if __name__ == "__main__":
    main()
