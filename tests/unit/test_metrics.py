"""Self-telemetry: a real Service with /metrics, /healthz and /readyz served by MetricsServer,
fed over OTLP/HTTP, scraped over HTTP and parsed with prometheus_client's own text parser."""
from __future__ import annotations

import http.client
import json
import re
import time
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from otelproc.config import parse_config
from otelproc.pipeline import Service
from otelproc.telemetry import MetricsServer, Telemetry
from tests.otlp_util import make_request

REPO = Path(__file__).resolve().parents[2]
NAME_RE = re.compile(r"^otelproc_[a-z0-9]+(_[a-z0-9]+)+$")


def _get(port: int, path: str) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read().decode()
    finally:
        conn.close()


def _post(port: int, body: bytes) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("POST", "/v1/logs", body=body, headers={"Content-Type": "application/x-protobuf"})
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


def _scrape(port: int) -> dict[str, object]:
    status, text = _get(port, "/metrics")
    assert status == 200
    return {f.name: f for f in text_string_to_metric_families(text)}


def _sample(families, family: str, sample: str, **labels: str) -> float:
    f = families[family]
    values = [s.value for s in f.samples if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items())]
    assert values, f"no sample {sample}{labels} in {family}: {[(s.name, s.labels) for s in f.samples][:10]}"
    return sum(values)


@pytest.fixture
def running(chdb_path, chdb_database):
    cfg = parse_config(f"""
receivers:
  otlp: {{protocols: {{http: {{endpoint: 127.0.0.1:0}}}}}}
processors:
  patterns: {{}}
  batch: {{send_batch_size: 1000, timeout: 100ms}}
exporters:
  clickhouse: {{endpoint: "chdb://{chdb_path}", database: {chdb_database}}}
service:
  telemetry: {{logs: {{level: warn}}, metrics: {{address: "127.0.0.1:0"}}}}
  pipelines:
    logs: {{receivers: [otlp], processors: [patterns, batch], exporters: [clickhouse]}}
""")
    service = Service(cfg)
    server = MetricsServer(service.telemetry, cfg.service.telemetry.metrics.address, ready=lambda: service._started)
    try:
        yield service, server
    finally:
        service.shutdown()
        server.close()


def test_healthz_and_readyz_follow_the_lifecycle(running):
    service, server = running
    assert _get(server.port, "/healthz") == (200, '{"status":"ok"}')
    status, body = _get(server.port, "/readyz")
    assert status == 503 and json.loads(body)["status"] == "not ready"
    service.start()
    status, body = _get(server.port, "/readyz")
    assert status == 200 and json.loads(body)["status"] == "ready"
    assert _get(server.port, "/nope")[0] == 404


def test_metrics_parse_and_count_what_happened(running):
    service, server = running
    service.start()
    port = service.receivers["otlp"].http_port
    bodies = [f"user {i} logged in from 10.0.0.{i % 200}" for i in range(300)] + \
             [f"disk /dev/sd{c} is {i}% full" for i, c in enumerate("abcdefghij" * 20)]
    assert _post(port, make_request(bodies, service="checkout").SerializeToString()) == 200
    assert _post(port, b"\x0a\xff\xff\xff\xff") == 400  # malformed protobuf: a refused request
    # The exporter counts its rows before its insert returns and the batch processor counts
    # what it sent after: wait for both, or a scrape between the two sees only the first.
    def _done(fams) -> bool:
        def total(family: str, **labels: str) -> float:
            f = fams.get(family)
            return sum(s.value for s in (f.samples if f else []) if s.name.endswith("_total")
                       and all(s.labels.get(k) == v for k, v in labels.items()))
        return total("otelproc_clickhouse_rows_inserted", table="otel_logs") >= len(bodies) and \
            total("otelproc_processor_batch_sent_records") >= len(bodies)

    deadline = time.monotonic() + 60
    fams = _scrape(server.port)
    while not _done(fams) and time.monotonic() < deadline:
        time.sleep(0.1)
        fams = _scrape(server.port)
    assert _done(fams), "records not inserted and counted within 60 s"

    # names follow otelproc_<component>_<what>_<unit>; every family parses
    for name in fams:
        if name.startswith("otelproc"):
            assert NAME_RE.match(name), name

    # receiver: accepted / requests by answer
    assert _sample(fams, "otelproc_receiver_accepted_log_records", "otelproc_receiver_accepted_log_records_total",
                   receiver="otlp", transport="http") == len(bodies)
    assert _sample(fams, "otelproc_receiver_requests", "otelproc_receiver_requests_total", status="ok") == 1
    refused = [s for s in fams["otelproc_receiver_requests"].samples
               if s.name.endswith("_total") and s.labels["status"] != "ok"]
    assert sum(s.value for s in refused) == 1, refused
    # request latency histogram: one observation per request, buckets cumulative up to +Inf
    lat = fams["otelproc_receiver_request_duration_seconds"]
    assert lat.type == "histogram"
    assert _sample(fams, lat.name, lat.name + "_count", transport="http") == 2
    buckets = [s for s in lat.samples if s.name.endswith("_bucket")]
    assert buckets[-1].labels["le"] == "+Inf" and buckets[-1].value == 2
    # queue size gauge, pattern mining time (kernel latency) and patterns count
    assert fams["otelproc_queue_records"].type == "gauge"
    assert _sample(fams, "otelproc_patterns_duration_seconds", "otelproc_patterns_duration_seconds_count") >= 1
    assert _sample(fams, "otelproc_patterns_active", "otelproc_patterns_active", processor="patterns") >= 2
    assert _sample(fams, "otelproc_patterns_lines", "otelproc_patterns_lines_total") == len(bodies)
    # batch processor and store insert latency / rows
    assert _sample(fams, "otelproc_processor_batch_sent_records", "otelproc_processor_batch_sent_records_total") == len(bodies)
    assert _sample(fams, "otelproc_clickhouse_insert_duration_seconds", "otelproc_clickhouse_insert_duration_seconds_count",
                   table="otel_logs") >= 1
    assert _sample(fams, "otelproc_clickhouse_rows_inserted", "otelproc_clickhouse_rows_inserted_total",
                   table="otel_logs") == len(bodies)
    # process metrics and build info, like the Collector's own telemetry
    assert _sample(fams, "process_resident_memory_bytes", "process_resident_memory_bytes") > 10e6
    assert _sample(fams, "otelproc_build_info", "otelproc_build_info") == 1


def test_telemetry_total_sums_label_sets():
    tel = Telemetry(process_metrics=False)
    c = tel.counter("otelproc_test_things", "things", ("kind",))
    c.labels("a").inc(2)
    c.labels("b").inc(3)
    assert tel.total("otelproc_test_things_total") == 5
    assert tel.total("otelproc_test_things_total", kind="b") == 3
    assert tel.total("otelproc_absent_total") == 0
    assert "process_" not in tel.render().decode()
