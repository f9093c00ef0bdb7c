"""Dashboard latency: every panel, variable and annotation query of the shipped dashboards (and the
Grafana alert rules) over the dashboards' default time range, sent to a running ``otelproc serve``
through its ``clickhouse_query`` endpoint over HTTP the way Grafana's ClickHouse plugin sends them.

    NUMBA_CACHE_DIR=.numba_cache python benchmarks/dashboard_latency.py /tmp/dash_store [--repeats 20]

1. build (skipped when the directory already holds a store built by this script): 24 h of simulated
   traffic ending now, 20 services (the simulator's five, four regions each, every region with its own
   incidents), through the real ``patterns`` and ``anomaly`` processors into the real ``clickhouse``
   exporter, so ``pattern_counts``, ``log_patterns``, ``anomalies`` and ``series`` hold what a day of
   serving writes (about 11.3 million lines). Runs in a child process: the store belongs to one process.
2. serve: ``otelproc serve`` on that store with the query endpoint on a free loopback port.
3. measure (at the build's end time as "now", so re-runs on one store read the same rows): the dashboards' variables resolved as Grafana does on load (All, or the first value), then
   every query ``--repeats`` times, round-robin over the queries, each one a POST with the plugin's
   URL parameters (database, default_format=Native, client_protocol_version=54460, max_execution_time)
   and ``Accept-Encoding: gzip``; the time is until the last byte of the answer. Prints p50/p95 per
   query as Markdown rows for benchmarks/README.md and exits 1 when a p95 is over ``--target-ms``.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATABASE = "otel"
USER, PASSWORD = "grafana", "bench"
REGIONS = ("us", "eu", "ap", "sa")
DAY_S = 86_400.0
KEEP = 0.8  # share of the simulated lines kept (a Poisson thinning): about 11.3 million lines a day
PLUGIN_PARAMS = {"default_format": "Native", "client_protocol_version": "54460", "max_execution_time": "65"}


# --------------------------------------------------------------------------- 1. build

def _region_batches(now_ns: int, batch_seconds: float):
    """Event-time ordered LogBatches of 20 services: four simulator runs (one per region, its own seed and
    incidents) shifted to end at ``now_ns``, their services renamed ``<service>-<region>``, thinned to
    ``KEEP`` of the lines, merged per step."""
    from otelproc.batch import AttrMap, concat_batches
    from otelproc.simulate import Incident, Scenario, simulate

    kinds = ("error_burst", "new_error_pattern", "traffic_drop", "vanished_heartbeat", "latency_creep")
    services = ("frontend", "checkout", "payment", "inventory", "auth")
    gens = []
    for r, region in enumerate(REGIONS):
        # two incidents per region, at different hours of the day and on different services
        incidents = []
        for k in range(2):
            kind = kinds[(2 * r + k) % len(kinds)]
            start = DAY_S * (0.3 + 0.35 * k + 0.05 * r)
            end = DAY_S if kind in ("latency_creep", "vanished_heartbeat") else start + 1200
            incidents.append(Incident(kind, services[(r + 2 * k) % len(services)], start, end))
        sc = Scenario(seed=101 + r, duration_s=DAY_S, batch_seconds=batch_seconds, incidents=incidents)
        gens.append((region, simulate(sc)))
    rng = np.random.default_rng(7)
    offsets: dict[str, int] = {}
    start_ns = now_ns - int(DAY_S * 1e9)
    for parts in zip(*(g for _, g in gens)):
        shifted = []
        for (region, _), b in zip(gens, parts):
            if not len(b):
                continue
            off = offsets.setdefault(region, start_ns - int(b.time_ns.min()))
            b = b.take(np.flatnonzero(rng.random(len(b)) < KEEP))
            names = [f"{s}-{region}" for s in b.services]
            shifted.append(dataclasses.replace(
                b, time_ns=b.time_ns + off, observed_ns=b.observed_ns + off, services=names,
                resource_attrs=AttrMap.from_pylist([{"service.name": s} for s in names])))
        if shifted:
            yield concat_batches(shifted)


def build(path: str, end_ns: int) -> None:
    from otelproc.report import add_demo_alerts, load_batches, table_counts
    from otelproc.store import open_store

    store = open_store(f"chdb://{path}", DATABASE)
    t0 = time.perf_counter()
    load_batches(store, _region_batches(end_ns, batch_seconds=120.0))
    add_demo_alerts(store)
    store.command("OPTIMIZE TABLE otel_logs FINAL")  # as after a day of background merges
    counts = table_counts(store)
    services = store.query_rows("SELECT uniqExact(ServiceName) FROM otel_logs")[0][0]
    print(f"built in {time.perf_counter() - t0:.0f} s: {counts}, {services} services", flush=True)
    store.close()


# --------------------------------------------------------------------------- 2. serve

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(path: str, work: Path) -> tuple[subprocess.Popen, int]:
    port = _free_port()
    config = work / "dashboard_latency.yaml"
    config.write_text(f"""
extensions:
  clickhouse_query: {{endpoint: "127.0.0.1:{port}", username: {USER}, password: {PASSWORD}}}
receivers:
  otlp: {{protocols: {{http: {{endpoint: 127.0.0.1:0}}}}}}
exporters:
  clickhouse: {{endpoint: "chdb://{path}", database: {DATABASE}}}
service:
  telemetry: {{metrics: {{address: "127.0.0.1:0"}}}}
  extensions: [clickhouse_query]
  pipelines:
    logs: {{receivers: [otlp], exporters: [clickhouse]}}
""")
    log = open(work / "dashboard_latency.serve.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "otelproc", "serve", "--config", str(config)],
                            stdout=log, stderr=subprocess.STDOUT, cwd=work)
    deadline = time.time() + 900  # the first start after an upgrade compiles the kernels
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2).read()
            return proc, port
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                sys.exit(f"otelproc serve did not start: see {work / 'dashboard_latency.serve.log'}")
            time.sleep(0.2)


# --------------------------------------------------------------------------- 3. measure

def query(port: int, sql: str) -> tuple[float, int]:
    """One query as the plugin sends it; (seconds until the last byte, answer bytes)."""
    params = urllib.parse.urlencode({"database": DATABASE, **PLUGIN_PARAMS})
    req = urllib.request.Request(f"http://127.0.0.1:{port}/?{params}", data=sql.encode(), method="POST",
                                 headers={"X-ClickHouse-User": USER, "X-ClickHouse-Key": PASSWORD,
                                          "Accept-Encoding": "gzip", "User-Agent": "dashboard_latency"})
    t0 = time.perf_counter()
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            body = r.read()
    except urllib.error.HTTPError as e:
        raise RuntimeError(f"{e.code}: {e.read().decode(errors='replace')[:400]}\n{sql}") from None
    return time.perf_counter() - t0, len(body)


class _EndpointStore:
    """What otelproc.report.variable_values needs of a store, answered over HTTP (JSON, names and rows);
    the variable queries are timed with the panels in :func:`measure`."""

    def __init__(self, port: int):
        self.port = port

    def query_rows(self, sql: str):
        params = urllib.parse.urlencode({"database": DATABASE, "default_format": "JSONCompact"})
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}/?{params}", data=sql.encode(), method="POST",
                                     headers={"X-ClickHouse-User": USER, "X-ClickHouse-Key": PASSWORD})
        doc = json.loads(urllib.request.urlopen(req, timeout=120).read())

        class Rows(list):
            column_names = [m["name"] for m in doc["meta"]]
        return Rows(doc["data"])


def queries(port: int, now_ns: int) -> list[tuple[str, str, str]]:
    """(dashboard, what, expanded SQL) over each dashboard's default range ending at ``now_ns``."""
    import yaml

    from otelproc.report import MAIN_DASHBOARDS, TimeRange, dashboard_specs, expand_macros, panel_queries, \
        variable_values

    out = []
    store = _EndpointStore(port)
    for name, d in dashboard_specs(MAIN_DASHBOARDS).items():
        hours = {"now-6h": 6, "now-24h": 24}[d["time"]["from"]]
        # Grafana's interval: the range over about 1000 points (a panel's width in pixels), rounded
        tr = TimeRange.around(now_ns - hours * 3600 * 10**9, now_ns, points=1000)
        variables = variable_values(store, d, tr)
        for v in d["templating"]["list"]:
            out.append((name, f"variable {v['name']}", expand_macros(v["query"]["rawSql"], tr.from_ms, tr.to_ms,
                                                                     tr.interval_ms, variables)))
        for a in d["annotations"]["list"]:
            if not a.get("builtIn"):
                out.append((name, f"annotation {a['name']}", expand_macros(a["target"]["rawSql"], tr.from_ms,
                                                                           tr.to_ms, tr.interval_ms, variables)))
        for p, t in panel_queries(d):
            local = dict(variables)
            if p.get("repeat"):  # a repeated panel: one copy per value, measure the first
                local[p["repeat"]] = (variables[p["repeat"] + ".__all"] or [""])[0]
            out.append((name, p["title"], expand_macros(t["rawSql"], tr.from_ms, tr.to_ms, tr.interval_ms, local)))
    for path in sorted((REPO / "grafana" / "provisioning" / "alerting").glob("*.yaml")):
        for g in yaml.safe_load(path.read_text()).get("groups", []):
            for r in g["rules"]:
                for q in r["data"]:
                    if "rawSql" in q["model"]:
                        span = q["relativeTimeRange"]["from"] * 1000
                        to_ms = now_ns // 10**6
                        out.append(("alert rules", r["uid"], expand_macros(q["model"]["rawSql"], to_ms - span, to_ms,
                                                                           1000)))
    return out


def measure(port: int, repeats: int, now_ns: int) -> list[tuple[str, str, float, float, int]]:
    qs = queries(port, now_ns)
    for _, _, sql in qs:  # one warm-up round (first-touch of the parts' marks)
        query(port, sql)
    times = [[] for _ in qs]
    sizes = [0] * len(qs)
    for _ in range(repeats):
        for i, (_, _, sql) in enumerate(qs):
            dt, sizes[i] = query(port, sql)
            times[i].append(dt)
    return [(d, w, float(np.percentile(t, 50)) * 1e3, float(np.percentile(t, 95)) * 1e3, sizes[i])
            for i, ((d, w, _), t) in enumerate(zip(qs, times))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("path", help="chDB directory of the store (built there when it holds none)")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--target-ms", type=float, default=1000.0, help="p95 budget per query")
    ap.add_argument("--build-only", type=int, metavar="END_NS", help=argparse.SUPPRESS)
    args = ap.parse_args()
    path = str(Path(args.path).resolve())
    if args.build_only:
        build(path, args.build_only)
        return 0
    # the data ends at the build time; "now" of the dashboards is that time, so re-runs on the same store
    # see the same rows
    marker = Path(path) / "dashboard_latency.end_ns"
    if not marker.exists():
        Path(path).mkdir(parents=True, exist_ok=True)
        end_ns = time.time_ns()
        env = {**os.environ, "NUMBA_CACHE_DIR": os.environ.get("NUMBA_CACHE_DIR", str(REPO / ".numba_cache"))}
        subprocess.run([sys.executable, __file__, path, "--build-only", str(end_ns)], check=True, env=env)
        marker.write_text(str(end_ns))
    end_ns = int(marker.read_text())
    proc, port = serve(path, Path(path).parent)
    try:
        rows = measure(port, args.repeats, end_ns)
    finally:
        proc.terminate()
        proc.wait(60)
    print(f"| dashboard | query | p50 ms | p95 ms | answer bytes |\n|---|---|---:|---:|---:|")
    for d, w, p50, p95, size in rows:
        print(f"| {d} | {w} | {p50:.0f} | {p95:.0f} | {size} |")
    over = [(d, w, p95) for d, w, _, p95, _ in rows if p95 > args.target_ms]
    for d, w, p95 in over:
        print(f"OVER {args.target_ms:.0f} ms: {d} / {w}: p95 {p95:.0f} ms", file=sys.stderr)
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main())
