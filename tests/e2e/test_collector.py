"""A real OpenTelemetry Collector (otelcol-contrib: filelog -> batch -> otlphttp) sends 20,000
Loghub lines to `otelproc serve`; every one must land in otel_logs with the right Body,
Timestamp, ServiceName and log.file.name."""
from __future__ import annotations

import csv
import random
import time
from datetime import datetime, timedelta, timezone

import pytest

from tests.conftest import shared_path
from tests.e2e.conftest import free_port

pytestmark = pytest.mark.e2e

N_LINES = 20_000


def loghub_bodies() -> list[str]:
    root = shared_path("data", "loghub2k")
    bodies = []
    for structured in sorted(root.glob("*/*_2k.log_structured.csv")):
        with open(structured, newline="", encoding="utf-8") as f:
            bodies += [row["Content"] for row in csv.DictReader(f) if row["Content"].strip()]
    return bodies


def server_config(http_port: int, metrics_port: int, data_dir: str) -> str:
    return f"""
receivers:
  otlp:
    protocols:
      http: {{endpoint: 127.0.0.1:{http_port}}}
processors:
  batch: {{send_batch_size: 5000, timeout: 200ms}}
exporters:
  clickhouse: {{endpoint: "chdb://{data_dir}", database: otel, ttl: 0s}}
service:
  telemetry: {{metrics: {{address: "127.0.0.1:{metrics_port}"}}}}
  pipelines:
    logs: {{receivers: [otlp], processors: [batch], exporters: [clickhouse]}}
"""


@pytest.mark.parametrize("compression", ["gzip", "none"])
def test_collector_to_otelproc_all_rows_land(otelproc_server, otelcol, tmp_path, compression):
    bodies = loghub_bodies()
    rng = random.Random(7)
    http_port, metrics_port = free_port(), free_port()
    server = otelproc_server(server_config(http_port, metrics_port, str(tmp_path / "data")))
    logfile = otelcol(f"http://127.0.0.1:{http_port}", compression)

    t0 = datetime(2026, 11, 29, 8, 0, 0, tzinfo=timezone.utc)
    expected = {}
    with open(logfile, "a", encoding="utf-8") as f:
        for i in range(N_LINES):
            ts = t0 + timedelta(microseconds=i * 137)
            body = f"[{i}] {rng.choice(bodies)}"
            sev = "ERROR" if i % 10 == 0 else "INFO"
            f.write(f"{ts.strftime('%Y-%m-%dT%H:%M:%S.%f')}000Z {sev} {body}\n")
            if i % 997 == 0:
                expected[i] = (body, ts, sev)

    deadline = time.time() + 120
    while server.metric(metrics_port, "otelproc_receiver_accepted_log_records_total") < N_LINES:
        assert time.time() < deadline, "collector did not deliver all lines in 120 s"
        time.sleep(0.2)
    assert server.stop() == 0  # SIGTERM: drain, flush, close

    (row,) = server.sql("SELECT count() AS n, uniqExact(Body) AS bodies, min(ServiceName) AS svc, "
                        "max(ServiceName) AS svc2, uniqExact(LogAttributes['log.file.name']) AS files, "
                        "any(LogAttributes['log.file.name']) AS file FROM otel.otel_logs")
    assert int(row["n"]) == N_LINES
    assert int(row["bodies"]) == N_LINES  # every line is unique thanks to its [i] prefix
    assert row["svc"] == row["svc2"] == "e2e-svc"
    assert int(row["files"]) == 1 and row["file"] == "app.log"

    ids = ",".join(f"'[{i}]'" for i in expected)
    got = {r["Body"]: r for r in server.sql(
        "SELECT Body, toUnixTimestamp64Nano(Timestamp) AS ns, SeverityText, SeverityNumber FROM otel.otel_logs "
        f"WHERE splitByChar(' ', Body)[1] IN ({ids})")}
    for i, (body, ts, sev) in expected.items():
        assert body in got, body
        r = got[body]
        assert int(r["ns"]) == int(ts.timestamp()) * 1_000_000_000 + ts.microsecond * 1000
        assert r["SeverityText"] == sev
        assert int(r["SeverityNumber"]) == (17 if sev == "ERROR" else 9)
