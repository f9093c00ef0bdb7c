"""Loki API latency: the requests Logs Drilldown sends (tests/fixtures/loki_grafana_requests.json, client
"drilldown") answered by ``otelproc serve``'s ``loki`` extension over a store of about 11 million lines.

    NUMBA_CACHE_DIR=.numba_cache python benchmarks/loki_api.py /tmp/dash_store [--repeats 10] [--range 1h]

1. build: the store of ``benchmarks/dashboard_latency.py`` (24 h of simulated traffic, 20 services,
   through the real ``patterns`` and ``anomaly`` processors into the real ``clickhouse`` exporter, about
   11 million lines), built by that script when the directory holds none; a store it built is reused
   (its end time is in ``dashboard_latency.end_ns``), so both benchmarks read the same data.
2. serve: ``otelproc serve`` on that store with the loki extension on a free loopback port.
3. measure: each Drilldown request (its placeholders filled for the time range ending at the build's
   end and service ``checkout-eu``) ``--repeats`` times, round-robin, over HTTP with gzip; the time is until
   the last byte. Prints p50/p95 per request as Markdown rows and exits 1 when a p95 is over ``--target-ms``.
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATABASE = "otel"                 # dashboard_latency.py's database
END_NS = 1_767_312_000 * 10**9    # 2026-01-02T00:00:00Z: the end of a store this script asks for
SERVICE = "checkout-eu"
FIXTURES = REPO / "tests" / "fixtures" / "loki_grafana_requests.json"


# --------------------------------------------------------------------------- 1. build

def store_end_s(path: str) -> int:
    """The end (s) of the store at ``path``, built by benchmarks/dashboard_latency.py if it holds none."""
    marker = Path(path) / "dashboard_latency.end_ns"
    if not marker.exists():
        Path(path).mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "NUMBA_CACHE_DIR": os.environ.get("NUMBA_CACHE_DIR", str(REPO / ".numba_cache"))}
        subprocess.run([sys.executable, str(REPO / "benchmarks" / "dashboard_latency.py"), path, "--build-only",
                        str(END_NS)], check=True, env=env)
        marker.write_text(str(END_NS))
    return int(marker.read_text()) // 10**9


# --------------------------------------------------------------------------- 2. serve

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(path: str, work: Path) -> tuple[subprocess.Popen, int]:
    port = _free_port()
    cfg = work / "otelproc.yaml"
    cfg.write_text(f"""
extensions:
  loki: {{endpoint: "127.0.0.1:{port}"}}
receivers:
  otlp: {{protocols: {{http: {{endpoint: "127.0.0.1:{_free_port()}"}}}}}}
exporters:
  clickhouse: {{endpoint: "chdb://{path}", database: {DATABASE}}}
service:
  extensions: [loki]
  telemetry: {{metrics: {{address: ""}}}}
  pipelines:
    logs: {{receivers: [otlp], exporters: [clickhouse]}}
""")
    proc = subprocess.Popen([sys.executable, "-m", "otelproc", "serve", "--config", str(cfg)], cwd=work,
                            stdout=subprocess.DEVNULL, stderr=open(work / "serve.log", "w"))
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=2):
                return proc, port
        except OSError:
            if proc.poll() is not None:
                raise SystemExit(f"otelproc serve exited: {(work / 'serve.log').read_text()[-2000:]}")
            time.sleep(0.5)
    proc.kill()
    raise SystemExit("otelproc serve did not become ready in 120 s")


# --------------------------------------------------------------------------- 3. measure

def _iso(s: int) -> str:
    return datetime.fromtimestamp(s, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def _get(port: int, path: str, params: dict, headers: dict) -> tuple[float, int, bytes]:
    url = f"http://127.0.0.1:{port}{path}?{urllib.parse.urlencode(params)}"
    req = urllib.request.Request(url, headers={"Accept-Encoding": "gzip", **headers})
    t0 = time.perf_counter()
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            body = r.read()
            if r.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            return time.perf_counter() - t0, r.status, body
    except urllib.error.HTTPError as e:
        return time.perf_counter() - t0, e.code, e.read()


def requests(port: int, end_s: int, range_s: int) -> list[tuple[str, str, dict, dict]]:
    start, end = end_s - range_s, end_s
    step_s = max(range_s // 250, 1)      # Grafana's interval for a ~1000 px wide panel, at least 1 s
    step_s = next(s for s in (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 1800, 3600) if s >= step_s)
    fixtures = [r for r in json.loads(FIXTURES.read_text())["requests"] if r["client"] == "drilldown"]
    # the pattern the Patterns tab's sample queries use: the service's most frequent one
    _, status, body = _get(port, "/loki/api/v1/patterns", {"query": f'{{service_name="{SERVICE}"}}',
                                                          "start": str(start * 10**9), "end": str(end * 10**9),
                                                          "step": f"{step_s}s"}, {})
    pattern = json.loads(body)["data"][0]["pattern"] if status == 200 else "<_>"
    out = []
    for r in fixtures:
        params = {}
        for k, v in r["params"].items():
            v = (v.replace("$START_NS", str(start * 10**9)).replace("$END_NS", str(end * 10**9))
                 .replace("$START_ISO", _iso(start)).replace("$END_ISO", _iso(end))
                 .replace("$PATTERN", pattern.replace('"', '\\"')).replace("checkout", SERVICE)
                 .replace("CHECK", "CHECKOUT-E").replace("[1m]", f"[{step_s}s]").replace("[1800s]", f"[{range_s}s]"))
            params[k] = v
        if "step" in params:
            params["step"] = f"{step_s * 1000}ms" if params["step"].endswith("ms") else f"{step_s}s"
        out.append((r["name"], r["path"], params, r.get("headers", {})))
    return out


def measure(port: int, reqs, repeats: int) -> list[tuple[str, float, float, int]]:
    times: dict[str, list[float]] = {name: [] for name, *_ in reqs}
    sizes: dict[str, int] = {}
    for name, path, params, headers in reqs:   # warm-up round (first touch of each part), not timed
        dt, status, body = _get(port, path, params, headers)
        if status != 200:
            raise SystemExit(f"{name}: HTTP {status}: {body[:500]!r}")
    for _ in range(repeats):
        for name, path, params, headers in reqs:
            dt, status, body = _get(port, path, params, headers)
            times[name].append(dt)
            sizes[name] = len(body)
    return [(name, float(np.percentile(t, 50)) * 1e3, float(np.percentile(t, 95)) * 1e3, sizes[name])
            for name, t in times.items()]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("path", help="chDB directory of the store (built there by dashboard_latency.py when it holds none)")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--range", default="1h", help="time range of the requests, ending at the build's end "
                                                  "(Drilldown's default is 15m; 24h reads the whole store)")
    ap.add_argument("--target-ms", type=float, default=1000.0, help="p95 budget per request")
    args = ap.parse_args()
    path = os.path.abspath(args.path)
    end_s = store_end_s(path)
    from otelproc.config import parse_duration

    range_s = int(parse_duration(args.range))
    work = Path(path).parent / (Path(path).name + "_work")
    work.mkdir(exist_ok=True)
    proc, port = serve(path, work)
    try:
        rows = measure(port, requests(port, end_s, range_s), args.repeats)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    print(f"\n| request ({args.range} range, {SERVICE}) | p50 ms | p95 ms | response bytes |\n|---|---:|---:|---:|")
    for name, p50, p95, size in rows:
        print(f"| {name} | {p50:.0f} | {p95:.0f} | {size} |")
    over = [name for name, _, p95, _ in rows if p95 > args.target_ms]
    if over:
        print(f"\np95 over {args.target_ms:.0f} ms: {', '.join(over)}")
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main())
