"""The otlphttp exporter against a real OTLP/HTTP server (otelproc's own receiver): enriched
records arrive intact; 429/503 are retried (honouring Retry-After); 400 is permanent."""
from __future__ import annotations

import threading

import numpy as np
import pytest

from otelproc.batch import LogBatch, StringArray
from otelproc.component import BackPressureError, Context, PermanentError
from otelproc.config import decode, parse_config
from otelproc.exporters.otlphttp import OtlpHttpExporter, OtlpHttpExporterConfig
from otelproc.receivers.otlp import OtlpReceiver
from otelproc.telemetry import Telemetry


class Scripted:
    """Consumer that fails the first calls as scripted, then records batches."""

    def __init__(self):
        self.batches = []
        self.failures: list[Exception] = []
        self.calls = 0
        self.lock = threading.Lock()

    def consume(self, batch):
        with self.lock:
            self.calls += 1
            if self.failures:
                raise self.failures.pop(0)
            self.batches.append(batch)


@pytest.fixture(scope="module")
def upstream():
    cfg = parse_config("""
receivers: {otlp: {protocols: {http: {endpoint: 127.0.0.1:0}}}}
exporters: {debug: {}}
service: {pipelines: {logs: {receivers: [otlp], exporters: [debug]}}}
""").receivers["otlp"]
    sink = Scripted()
    r = OtlpReceiver("otlp", cfg, sink, Context(telemetry=Telemetry()))
    r.start()
    yield r, sink
    r.shutdown()


def exporter(port: int, **settings) -> OtlpHttpExporter:
    errors: list[str] = []
    cfg = decode(OtlpHttpExporterConfig, {"endpoint": f"http://127.0.0.1:{port}",
                                          "retry_on_failure": {"initial_interval": "10ms", "max_interval": "50ms",
                                                               "max_elapsed_time": "5s"}, **settings}, "otlphttp", errors)
    assert not errors, errors
    return OtlpHttpExporter("otlphttp", cfg, Context(telemetry=Telemetry()))


def enriched_batch() -> LogBatch:
    b = LogBatch.from_records([{"body": f"user {i} logged in", "service": "auth", "time_ns": 1_790_000_000_000_000_000 + i,
                                "severity_number": 9, "attributes": {"k": "v"},
                                "event_name": "auth.login" if i != 1 else ""} for i in range(3)])
    return b.with_columns(pattern_id=np.array([0xABCDEF, 0xABCDEF, 0xABCDEF], np.uint64),
                          pattern_template=StringArray.from_pylist(["user <*> logged in"] * 3),
                          anomaly_score=np.array([0, 0.5, 1], np.float32))


@pytest.mark.parametrize("settings", [{}, {"compression": "none"}, {"encoding": "json"}])
def test_enriched_records_arrive(upstream, settings):
    r, sink = upstream
    sink.batches.clear()
    ex = exporter(r.http_port, **settings)
    ex.consume(enriched_batch())
    ex.shutdown()
    (got,) = sink.batches
    assert got.body.to_pylist() == [f"user {i} logged in" for i in range(3)]
    assert list(got.service_names) == ["auth"] * 3
    assert got.event_name.to_pylist() == ["auth.login", "", "auth.login"]
    attrs = got.log_attrs.row(1)
    assert attrs["k"] == "v" and attrs["log.pattern.template"] == "user <*> logged in"
    assert attrs["log.pattern.id"] == f"{0xABCDEF:016x}" and float(attrs["log.anomaly.score"]) == 0.5


def test_back_pressure_and_unavailable_are_retried(upstream):
    r, sink = upstream
    sink.batches.clear()
    sink.failures = [BackPressureError("full", retry_after=0.01), RuntimeError("store down")]
    calls = sink.calls
    ex = exporter(r.http_port)
    ex.consume(enriched_batch())
    ex.shutdown()
    assert sink.calls - calls == 3 and len(sink.batches) == 1


def test_bad_request_is_permanent(upstream):
    r, sink = upstream
    sink.failures = [PermanentError("bad data")]
    ex = exporter(r.http_port)
    with pytest.raises(PermanentError, match="HTTP 400"):
        ex.consume(enriched_batch())
    ex.shutdown()


def test_config_needs_an_http_url():
    errors: list[str] = []
    decode(OtlpHttpExporterConfig, {"endpoint": "collector:4318"}, "exporters::otlphttp", errors)
    assert errors == ["exporters::otlphttp::endpoint: expected an http(s) URL, got 'collector:4318'"]
