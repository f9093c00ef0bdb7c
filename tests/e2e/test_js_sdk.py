"""The OpenTelemetry JS SDK's OTLP log exporters send to `otelproc serve`: gRPC (grpc-js, a gRPC stack
that is neither grpcio nor ours), HTTP protobuf and HTTP JSON (an OTLP/JSON encoder that is not ours),
gzip and uncompressed; every record must land in otel_logs with its body, timestamp, severity,
attributes, resource and scope.

Needs Node.js and `npm ci --prefix tests/e2e/js` (.ci/run does it); skips with the reason otherwise."""
from __future__ import annotations

import json
import shutil
import subprocess
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from tests.e2e.conftest import free_port

pytestmark = pytest.mark.e2e

JS_DIR = Path(__file__).resolve().parent / "js"
N_RECORDS = 3000


def node_sender() -> list[str]:
    node = shutil.which("node")
    if node is None:
        pytest.skip("Node.js is not installed (the JS SDK client needs it)")
    if not (JS_DIR / "node_modules" / "@opentelemetry" / "exporter-logs-otlp-grpc").is_dir():
        pytest.skip(f"the JS SDK is not installed: npm ci --prefix {JS_DIR}")
    return [node, str(JS_DIR / "send_logs.mjs")]


def server_config(grpc_port: int, http_port: int, metrics_port: int, data_dir: str) -> str:
    return f"""
receivers:
  otlp:
    protocols:
      grpc: {{endpoint: 127.0.0.1:{grpc_port}}}
      http: {{endpoint: 127.0.0.1:{http_port}}}
processors:
  patterns: {{}}
  batch: {{send_batch_size: 5000, timeout: 200ms}}
exporters:
  clickhouse: {{endpoint: "chdb://{data_dir}", database: otel, ttl: 0s}}
service:
  telemetry: {{metrics: {{address: "127.0.0.1:{metrics_port}"}}}}
  pipelines:
    logs: {{receivers: [otlp], processors: [patterns, batch], exporters: [clickhouse]}}
"""


@pytest.mark.parametrize("transport,compression", [("grpc", "gzip"), ("grpc", "none"), ("http-proto", "gzip"),
                                                   ("http-json", "gzip"), ("http-json", "none")])
def test_js_sdk_exporter_to_otelproc_all_rows_land(otelproc_server, tmp_path, transport, compression):
    sender = node_sender()
    grpc_port, http_port, metrics_port = free_port(), free_port(), free_port()
    server = otelproc_server(server_config(grpc_port, http_port, metrics_port, str(tmp_path / "data")))
    url = f"http://127.0.0.1:{grpc_port}" if transport == "grpc" else f"http://127.0.0.1:{http_port}/v1/logs"
    out = subprocess.run(sender + [transport, url, compression, str(N_RECORDS), "js-svc"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {"sent": N_RECORDS, "failed": 0}
    assert server.metric(metrics_port, "otelproc_receiver_accepted_log_records_total") == N_RECORDS
    assert server.stop() == 0

    rows = server.sql("SELECT Body, toUnixTimestamp64Nano(Timestamp) AS ns, SeverityNumber, SeverityText, "
                      "ServiceName, ResourceAttributes['host.name'] AS host, ScopeName, ScopeVersion, "
                      "LogAttributes['i'] AS i, LogAttributes['kind'] AS kind, PatternTemplate "
                      "FROM otel.otel_logs ORDER BY ns")
    assert len(rows) == N_RECORDS
    t0 = datetime(2026, 11, 29, 8, 0, 0, tzinfo=timezone.utc)
    for i, r in enumerate(rows):
        error = i % 10 == 0
        assert r["Body"] == f"js line {i} took {i % 97} ms"
        assert int(r["ns"]) == int((t0 + timedelta(milliseconds=i)).timestamp()) * 10**9 + i % 1000 * 10**6
        assert (r["SeverityNumber"], r["SeverityText"]) == ((17, "ERROR") if error else (9, "INFO"))
        assert (r["ServiceName"], r["host"], r["ScopeName"], r["ScopeVersion"]) == ("js-svc", "js-host", "e2e-js", "1.2.3")
        assert (r["i"], r["kind"]) == (str(i), "js")
    assert {r["PatternTemplate"] for r in rows} == {"js line <*> took <*> ms"}
