"""End-to-end throughput: a load generator in its own processes sends pre-encoded OTLP requests
(Loghub bodies, many services) over HTTP or gRPC, flat out, to `otelproc serve` running

  full              receiver -> batch -> patterns -> anomaly -> alerting -> clickhouse (embedded chDB)
  full-per-request  receiver -> patterns -> anomaly -> alerting -> batch -> clickhouse (analysis per request)
  store             receiver -> batch -> clickhouse (receive-and-store only: the cost of analysis is the ratio)

and prints accepted logs/s, rows landed (count() after shutdown), p50/p99 request latency,
server CPU s per 1M logs, peak RSS, and with --profile CPU s per 1M logs by stage (the server
runs under benchmarks/stage_profiler.py, which charges each Python thread's CPU clock to the
otelproc stage on its stack; chDB's and gRPC's native threads are the remainder). With --drain3 it also
measures our pattern kernel against Drain3 on the same lines in the same run.

Usage:
  python benchmarks/e2e_throughput.py --loghub ../shared/data/loghub2k [--duration 20]
         [--transport http grpc] [--mode full store] [--clients 2] [--services 200] [--no-gzip]
         [--profile] [--drain3]
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from otlp_load import build_requests, loghub_bodies, loghub_bodies_by_system, run_load  # noqa: E402
from receiver_throughput import cpu_seconds, free_port, peak_rss_mib  # noqa: E402

REPO = Path(__file__).resolve().parents[1]

def shipped_batch() -> dict:
    """The batch processor settings of the shipped config (otelproc/defaults/otelproc.yaml)."""
    import yaml

    return yaml.safe_load((REPO / "otelproc" / "defaults" / "otelproc.yaml").read_text())["processors"]["batch"]


def config(mode: str, http_port: int, grpc_port: int, data: str, state: str, metrics_port: int = 0,
           batch: dict | None = None, anomaly: dict | None = None) -> str:
    # as the shipped config/otelproc.yaml: write-ahead log on, its batch settings
    # full: the batch processor first, so the analysis stages see 100k-record batches (their
    # per-call costs are amortised); full-per-request: analysis on each request's batch, then batch
    processors = {"full": ["batch", "patterns", "anomaly", "alerting"],
                  "full-per-request": ["patterns", "anomaly", "alerting", "batch"], "store": ["batch"]}[mode]
    return f"""
receivers:
  otlp:
    protocols:
      http: {{endpoint: 127.0.0.1:{http_port}}}
      grpc: {{endpoint: 127.0.0.1:{grpc_port}}}
processors:
  patterns: {{state_dir: "{state}"}}
  anomaly: {json.dumps(anomaly or {})}
  alerting: {{rules_file: "{REPO / 'config' / 'alerts.yaml'}"}}
  batch: {json.dumps(batch or shipped_batch())}
exporters:
  clickhouse: {{endpoint: "chdb://{data}", database: bench, ttl: 0s, wal: {{directory: "{state}/wal"}}}}
service:
  telemetry: {{logs: {{level: warn}}{f", metrics: {{address: 127.0.0.1:{metrics_port}}}" if metrics_port else ""}}}
  pipelines:
    logs: {{receivers: [otlp], processors: [{", ".join(processors)}], exporters: [clickhouse]}}
"""


_SINK = None


def server_env() -> dict[str, str]:
    """Environment for `otelproc serve`: alert notifications of config/alerts.yaml go to an
    in-process webhook sink (they would otherwise retry against absent Alertmanager/Slack)."""
    global _SINK
    if _SINK is None:
        from otelproc.alerting.sink import WebhookSink

        _SINK = WebhookSink().__enter__()
    return {**os.environ, "NUMBA_CACHE_DIR": str(REPO / ".numba_cache"), "PYTHONPATH": str(REPO),
            "OTELPROC_ALERT_WEBHOOK": _SINK.url("/hook"), "OTELPROC_ALERTMANAGER_URL": _SINK.url(""),
            "OTELPROC_SLACK_PAYMENTS_URL": _SINK.url("/slack")}


def thread_cpu_by_name(pid: int) -> dict[str, float]:
    """CPU seconds of the process's threads, summed by OS thread name (chDB names its pools:
    QueryPipelineEx, MergeMutate, BgSchPool...; Python threads all carry the interpreter's name)."""
    out: dict[str, float] = collections.Counter()
    tick = os.sysconf("SC_CLK_TCK")
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            stat = (task / "stat").read_text()
        except OSError:
            continue
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        fields = stat.rsplit(")", 1)[1].split()
        out[name.rstrip("0123456789").rstrip("_-") or name] += (int(fields[11]) + int(fields[12])) / tick
    return out


def _read_stages(path: Path) -> dict[str, float]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def run(mode: str, transport: str, payloads: list[bytes], records: int, args) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix=f"otelproc-e2e-{mode}-"))
    http_port, grpc_port = free_port(), free_port()
    cfg = tmp / "cfg.yaml"
    cfg.write_text(config(mode, http_port, grpc_port, str(tmp / "data"), str(tmp / "state"),
                          batch={**shipped_batch(), "send_batch_size": args.send_batch_size} if args.send_batch_size else None,
                          anomaly=json.loads(args.anomaly) if args.anomaly else None))
    ready = tmp / "ready.json"
    env = server_env()
    prof = tmp / "stages.json"
    serve = [sys.executable, str(REPO / "benchmarks" / "stage_profiler.py"), str(prof)] if args.profile \
        else [sys.executable, "-m", "otelproc"]
    proc = subprocess.Popen(serve + ["serve", "--config", str(cfg), "--ready-file", str(ready)],
                            env=env, cwd=tmp, stderr=open(tmp / "server.log", "w"))
    while not ready.exists():
        if proc.poll() is not None:
            raise SystemExit((tmp / "server.log").read_text())
        time.sleep(0.05)
    port = http_port if transport == "http" else grpc_port
    warm = run_load(port, payloads[:4], records, transport, not args.no_gzip, 1, 3.0)  # JIT / first-insert warm-up
    time.sleep(2.0)
    stages0 = _read_stages(prof)
    cpu0 = cpu_seconds(proc.pid)
    threads0 = thread_cpu_by_name(proc.pid)
    load0 = os.getloadavg()[0]
    res = run_load(port, payloads, records, transport, not args.no_gzip, args.clients, args.duration)
    cpu = cpu_seconds(proc.pid) - cpu0
    threads1 = thread_cpu_by_name(proc.pid)
    python_name = max(threads1, key=lambda k: threads1[k] if k.startswith("python") else -1)
    res["native_cpu_s_per_1M"] = {k: (v - threads0.get(k, 0.0)) / max(res["accepted"], 1) * 1e6
                                  for k, v in sorted(threads1.items(), key=lambda kv: -kv[1])
                                  if k != python_name and v - threads0.get(k, 0.0) > 0}
    res["load_avg"] = (load0, os.getloadavg()[0])
    res["server_cpu_s_per_1M"] = cpu / max(res["accepted"], 1) * 1e6
    if args.profile:
        time.sleep(1.2)  # the profiler writes its totals once a second
        stages1 = _read_stages(prof)
        by_stage = {k: stages1.get(k, 0.0) - stages0.get(k, 0.0) for k in stages1}
        by_stage["native threads (chDB, gRPC core)"] = max(0.0, cpu - sum(by_stage.values()))
        res["stage_cpu_s_per_1M"] = {k: v / max(res["accepted"], 1) * 1e6 for k, v in
                                     sorted(by_stage.items(), key=lambda kv: -kv[1]) if v > 0}
    res["peak_rss_mib"] = peak_rss_mib(proc.pid)
    t = time.perf_counter()
    proc.send_signal(signal.SIGTERM)
    proc.wait(600)
    res["drain_s"] = time.perf_counter() - t
    out = subprocess.run([sys.executable, "-m", "otelproc", "sql", "SELECT count() AS n FROM bench.otel_logs",
                          "--config", str(cfg), "--format", "json"], capture_output=True, text=True, env=env, cwd=tmp)
    res["rows_landed"] = int(json.loads(out.stdout.splitlines()[0])["n"]) if out.returncode == 0 else -1
    res["total_accepted"] = warm["accepted"] + res["accepted"]  # the warm-up's rows land too
    shutil.rmtree(tmp, ignore_errors=True)
    return res


def otelcol_binary() -> str:
    import otel_collector

    return str(Path(otel_collector.__file__).parent / "bin" / "otelcol-contrib_linux_amd64")


def accepted_total(metrics_port: int) -> int:
    import urllib.request

    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()
    return int(sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith("otelproc_receiver_accepted_log_records_total")))


def run_otelcol(lines: int, bodies: list[str] | None, args) -> dict:
    """otelcol-contrib (filelog -> batch -> otlphttp, gzip) reads a file of ``lines`` lines into
    `otelproc serve` (full pipeline). Times until otelproc has accepted every line, then until
    the rows are counted after a draining shutdown."""
    tmp = Path(tempfile.mkdtemp(prefix="otelproc-e2e-otelcol-"))
    bodies = bodies or [f"user {i} logged in from 10.0.{i % 256}.7" for i in range(20_000)]
    logfile = tmp / "app.log"
    with open(logfile, "w") as f:
        for i in range(lines):
            f.write(bodies[i % len(bodies)].replace("\n", " ") + "\n")
    http_port, grpc_port, metrics_port = free_port(), free_port(), free_port()
    cfg = tmp / "cfg.yaml"
    cfg.write_text(config("full", http_port, grpc_port, str(tmp / "data"), str(tmp / "state"), metrics_port))
    ready = tmp / "ready.json"
    env = server_env()
    proc = subprocess.Popen([sys.executable, "-m", "otelproc", "serve", "--config", str(cfg), "--ready-file",
                             str(ready)], env=env, cwd=tmp, stderr=open(tmp / "server.log", "w"))
    while not ready.exists():
        if proc.poll() is not None:
            raise SystemExit((tmp / "server.log").read_text())
        time.sleep(0.05)
    ccfg = tmp / "otelcol.yaml"
    ccfg.write_text(f"""
receivers:
  filelog: {{include: [{logfile}], start_at: beginning, poll_interval: 50ms, max_log_size: 1MiB,
            resource: {{service.name: filelog-app}}}}
processors:
  batch: {{send_batch_size: 8192, send_batch_max_size: 8192, timeout: 200ms}}
exporters:
  otlphttp:
    endpoint: http://127.0.0.1:{http_port}
    compression: gzip
    encoding: proto
    sending_queue: {{enabled: true, num_consumers: 4, queue_size: 1000}}
    retry_on_failure: {{enabled: true, initial_interval: 200ms, max_interval: 2s, max_elapsed_time: 300s}}
service:
  telemetry: {{metrics: {{level: none}}, logs: {{level: warn}}}}
  pipelines:
    logs: {{receivers: [filelog], processors: [batch], exporters: [otlphttp]}}
""")
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    col = subprocess.Popen([otelcol_binary(), "--config", str(ccfg)], stdout=open(tmp / "otelcol.out", "w"),
                           stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 900
    while accepted_total(metrics_port) < lines and time.monotonic() < deadline:
        if col.poll() is not None:
            raise SystemExit((tmp / "otelcol.out").read_text()[-3000:])
        time.sleep(0.1)
    accept_s = time.perf_counter() - t0
    col.terminate()
    col.wait(60)
    proc.send_signal(signal.SIGTERM)
    proc.wait(900)
    total_s = time.perf_counter() - t0
    out = subprocess.run([sys.executable, "-m", "otelproc", "sql", "SELECT count() AS n FROM bench.otel_logs",
                          "--config", str(cfg), "--format", "json"], capture_output=True, text=True, env=env, cwd=tmp)
    rows = int(json.loads(out.stdout.splitlines()[0])["n"]) if out.returncode == 0 else -1
    shutil.rmtree(tmp, ignore_errors=True)
    return {"lines": lines, "accept_s": accept_s, "total_s": total_s, "rows_landed": rows,
            "load_avg": (load0, os.getloadavg()[0])}


def kernel_vs_drain3(bodies: list[str], n: int) -> tuple[float, float]:
    """Lines/s of our PatternMiner.learn and of Drain3 on the same ``n`` lines (Drain3 on n/5: it is slow)."""
    import numpy as np

    from otelproc.batch import StringArray
    from otelproc.patterns import PatternMiner

    lines = [bodies[i % len(bodies)] for i in range(n)]
    sa = StringArray.from_pylist(lines)
    miner = PatternMiner(max_patterns_per_service=1_000_000)
    miner.learn(sa.buf[:sa.off[1000]], sa.off[:1001], np.zeros(1000, np.int32), [""])  # JIT warm-up
    miner = PatternMiner(max_patterns_per_service=1_000_000)
    t = time.perf_counter()
    for a in range(0, n, 100_000):
        b = min(n, a + 100_000)
        miner.learn(sa.buf[sa.off[a]:sa.off[b]], sa.off[a:b + 1] - sa.off[a], np.zeros(b - a, np.int32), [""])
    ours = n / (time.perf_counter() - t)
    from drain3 import TemplateMiner
    from drain3.template_miner_config import TemplateMinerConfig

    cfg = TemplateMinerConfig()
    cfg.profiling_enabled = False
    tm = TemplateMiner(config=cfg)
    m = n // 5
    t = time.perf_counter()
    for line in lines[:m]:
        tm.add_log_message(line)
    return ours, m / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--loghub", help="Loghub-2k directory for realistic bodies (default: built-in templates)")
    ap.add_argument("--duration", type=float, default=20.0)
    ap.add_argument("--clients", type=int, default=2)
    ap.add_argument("--records", type=int, default=1000)
    ap.add_argument("--services", type=int, default=200)
    ap.add_argument("--transport", nargs="+", choices=("http", "grpc"), default=["http", "grpc"])
    ap.add_argument("--mode", nargs="+", choices=("full", "full-per-request", "store"), default=["full", "store"])
    ap.add_argument("--no-gzip", action="store_true")
    ap.add_argument("--send-batch-size", type=int, help="batch processor's send_batch_size (default: the shipped config's)")
    ap.add_argument("--anomaly", help="anomaly processor settings as JSON, e.g. '{\"explain\": false, "
                                      "\"incidents\": false}' (the cost of the explanation and incidents)")
    ap.add_argument("--profile", action="store_true", help="CPU by stage (benchmarks/stage_profiler.py)")
    ap.add_argument("--drain3", action="store_true", help="also: pattern kernel vs Drain3 on the same lines")
    ap.add_argument("--otelcol-lines", type=int, default=0,
                    help="also: otelcol-contrib tails a file of this many lines into otelproc (full pipeline)")
    args = ap.parse_args()
    groups = loghub_bodies_by_system(args.loghub) if args.loghub else None
    bodies = [b for g in groups.values() for b in g] if groups else None
    payloads = build_requests(200, records=args.records, resources=10, services=args.services, bodies=groups)
    print(f"{len(payloads)} requests x {args.records} records, {args.services} services, "
          f"{sum(map(len, payloads)) / len(payloads) / 1024:.0f} KiB each, gzip={not args.no_gzip} "
          f"clients={args.clients} duration={args.duration}s", flush=True)
    rates = {}
    for transport in args.transport:
        for mode in args.mode:
            r = run(mode, transport, payloads, args.records, args)
            rates[(transport, mode)] = r["accepted_per_s"]
            print(f"{transport:4s} {mode:16s} accepted {r['accepted_per_s']:>9,.0f} logs/s  refused {r['refused']:,}  "
                  f"p50 {r['p50_ms']:.1f} ms  p99 {r['p99_ms']:.1f} ms  server CPU {r['server_cpu_s_per_1M']:.2f} s/1M  "
                  f"peak RSS {r['peak_rss_mib']:.0f} MiB  rows landed {r['rows_landed']:,} of {r['total_accepted']:,} accepted "
                  f"(incl. warm-up)  shutdown {r['drain_s']:.1f} s  "
                  f"load avg {r['load_avg'][0]:.1f}->{r['load_avg'][1]:.1f}", flush=True)
            if "stage_cpu_s_per_1M" in r:
                print("      CPU s per 1M logs by stage: " + ", ".join(
                    f"{k} {v:.2f}" for k, v in r["stage_cpu_s_per_1M"].items()), flush=True)
            print("      native threads by name, CPU s per 1M logs: " + ", ".join(
                f"{k} {v:.2f}" for k, v in r["native_cpu_s_per_1M"].items()), flush=True)
    for transport in args.transport:
        if (transport, "full") in rates and (transport, "store") in rates:
            print(f"{transport}: full pipeline / receive-and-store = "
                  f"{rates[(transport, 'full')] / rates[(transport, 'store')]:.2f}")
    if args.otelcol_lines:
        r = run_otelcol(args.otelcol_lines, bodies, args)
        print(f"otelcol-contrib filelog -> otlphttp -> otelproc (full): {r['lines']:,} lines in {r['accept_s']:.1f} s "
              f"= {r['lines'] / r['accept_s']:,.0f} logs/s accepted; rows landed {r['rows_landed']:,} "
              f"{r['total_s']:.1f} s after start (incl. otelproc drain on shutdown); load avg "
              f"{r['load_avg'][0]:.1f}->{r['load_avg'][1]:.1f}", flush=True)
    if args.drain3:
        ours, drain = kernel_vs_drain3(bodies or [p.decode("latin-1")[:80] for p in payloads[:1]], 500_000)
        print(f"patterns on the same lines: PatternMiner.learn {ours:,.0f} lines/s, Drain3 {drain:,.0f} lines/s, "
              f"ratio {ours / drain:.1f}x")


if __name__ == "__main__":
    main()
