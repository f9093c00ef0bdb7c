"""The service built from config: wiring, back-pressure, flush on shutdown, lifecycle of every component."""
from __future__ import annotations

import threading
import time

import pytest

from otelproc.batch import LogBatch
from otelproc.component import BackPressureError, Context, Kind
from otelproc.config import decode, parse_config
from otelproc.pipeline import IngestQueue, Service
from otelproc.config import QueueConfig
from otelproc.processors.batch import BatchProcessor, BatchProcessorConfig
from otelproc.registry import factories
from otelproc.telemetry import Telemetry

CFG = """
receivers:
  otlp: {protocols: {http: {endpoint: 127.0.0.1:0}}}
processors:
  batch: {send_batch_size: 10, timeout: 50ms}
exporters:
  debug: {}
  debug/two: {}
service:
  pipelines:
    logs: {receivers: [otlp], processors: [batch], exporters: [debug, debug/two]}
"""


def records(n, svc="api"):
    return LogBatch.from_records([{"body": f"r{i}", "service": svc, "time_ns": i + 1} for i in range(n)])


def wait_for(cond, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.01)


def test_service_wires_fanout_and_flushes_on_shutdown():
    svc = Service(parse_config(CFG))
    svc.start()
    try:
        svc.queues["logs"].consume(records(3))
        svc.queues["logs"].consume(records(4))
        wait_for(lambda: svc.exporters["debug"].records == 7)  # timeout (50ms) flush
        svc.queues["logs"].consume(records(2))
    finally:
        svc.shutdown()
    assert svc.exporters["debug"].records == 9
    assert svc.exporters["debug/two"].records == 9
    svc.shutdown()  # idempotent


class Slow:
    def __init__(self):
        self.gate = threading.Event()
        self.seen = 0

    def consume(self, batch):
        self.gate.wait(10)
        self.seen += len(batch)


def test_ingest_queue_full_is_back_pressure_and_nothing_accepted_is_lost():
    slow = Slow()
    q = IngestQueue("logs", QueueConfig(max_records=10, retry_after=2.0), slow, Telemetry())
    q.start()
    accepted = 0
    refused = None
    for _ in range(10):
        try:
            q.consume(records(4))
            accepted += 4
        except BackPressureError as e:
            refused = e
            break
    assert refused is not None and refused.retry_after == 2.0
    slow.gate.set()
    q.shutdown()
    assert slow.seen == accepted
    with pytest.raises(BackPressureError, match="shutting down"):
        q.consume(records(1))


def test_batch_processor_merges_up_to_size_and_keeps_order():
    out = []

    class Sink:
        def consume(self, b):
            out.append(b)

    bp = BatchProcessor("batch", BatchProcessorConfig(send_batch_size=5, timeout=10.0), Sink(), Context())
    bp.start()
    for i in range(4):
        bp.consume(records(3))
    wait_for(lambda: sum(len(b) for b in out) >= 6)
    bp.shutdown()
    assert sum(len(b) for b in out) == 12
    assert [s for b in out for s in b.body.to_pylist()] == ["r0", "r1", "r2"] * 4


def test_processing_failure_is_counted_and_worker_survives():
    class Flaky:
        def __init__(self):
            self.calls = 0
            self.seen = 0

        def consume(self, b):
            self.calls += 1
            if self.calls == 1:
                raise RuntimeError("boom")
            self.seen += len(b)

    tel = Telemetry()
    flaky = Flaky()
    q = IngestQueue("logs", QueueConfig(max_batch_records=1), flaky, tel)
    q.start()
    q.consume(records(2))
    q.consume(records(3))
    q.shutdown()
    assert flaky.seen == 3
    assert tel.value("otelproc_pipeline_dropped_records_total", pipeline="logs", reason="error") == 2


@pytest.mark.parametrize("key", sorted(f"{k.value}/{t}" for (k, t) in factories()))
def test_every_component_survives_shutdown_without_start_and_double_shutdown(key, tmp_path, chdb_path):
    """The lifecycle contract of every registered component (as the Collector's generated tests)."""
    kind_name, ctype = key.split("/", 1)
    fac = factories()[(Kind(kind_name), ctype)]
    errors: list[str] = []
    cfg = decode(fac.config_class, _minimal_settings(ctype, tmp_path, chdb_path), ctype, errors)
    assert not errors, errors
    comp = fac.create(ctype, cfg, _Null(), Context(telemetry=Telemetry(), stores=_stores()))
    comp.shutdown()
    comp.shutdown()


class _Null:
    def consume(self, batch):
        pass


def _stores():
    from otelproc.store import StoreRegistry
    return StoreRegistry()


def _minimal_settings(ctype: str, tmp_path, chdb_path) -> dict:
    return {
        "otlp": {"protocols": {"http": {"endpoint": "127.0.0.1:0"}}},
        "otlphttp": {"endpoint": "http://127.0.0.1:1"},
        "clickhouse": {"endpoint": f"chdb://{chdb_path}"},
        "clickhouse_query": {"endpoint": "127.0.0.1:0", "allow_anonymous": True},
    }.get(ctype, {})


def test_worker_merges_queued_batches_when_behind_and_keeps_order():
    slow = Slow()
    seen = []

    class Recorder:
        def consume(self, b):
            slow.consume(b)
            seen.append(b.body.to_pylist())

    q = IngestQueue("logs", QueueConfig(max_batch_records=7), Recorder(), Telemetry())
    q.start()
    for i in range(5):  # the first is taken at once and blocks; the other four wait in the queue
        q.consume(LogBatch.from_records([{"body": f"b{i}-{j}"} for j in range(3)]))
    slow.gate.set()
    q.shutdown()
    flat = [x for b in seen for x in b]
    assert flat == [f"b{i}-{j}" for i in range(5) for j in range(3)]
    assert max(len(b) for b in seen) == 6  # merged, never above max_batch_records
