"""Write-ahead log: codec, segments, torn tails, acks, replay through a pipeline with the same
batch boundaries, and ClickHouse deduplication of a replayed insert."""
from __future__ import annotations

import os
import threading
import time
from dataclasses import replace

import numpy as np
import pytest

from otelproc.batch import LogBatch, StringArray, concat_batches
from otelproc.component import Context
from otelproc.config import ByteSize, QueueConfig
from otelproc.exporters.clickhouse import ClickHouseExporter, ClickHouseExporterConfig
from otelproc.pipeline import ExportStage, IngestQueue
from otelproc.processors.batch import BatchProcessor, BatchProcessorConfig
from otelproc.telemetry import Telemetry
from otelproc.wal import REC_DATA, WalConfig, WriteAheadLog, decode_batch, encode_batch


def records(n, start=0, svc="api"):
    return LogBatch.from_records([{"body": f"r{start + i} é", "service": svc, "time_ns": 1_790_000_000_000_000_000 + i,
                                   "attributes": {"k": str(i)}, "trace_id": "0" * 31 + "1"} for i in range(n)],
                                 resource={"host": "h1"})


def bodies(batches):
    return [b for x in batches for b in x.body.to_pylist()]


def test_codec_round_trip_keeps_every_column():
    b = concat_batches([records(3), records(2, 3, svc="db")])
    back = decode_batch(encode_batch(b))
    assert back.body.to_pylist() == b.body.to_pylist()
    assert back.log_attrs.to_pylist() == b.log_attrs.to_pylist()
    assert back.resource_attrs.to_pylist() == b.resource_attrs.to_pylist()
    assert list(back.service_names) == list(b.service_names)
    assert np.array_equal(back.trace_id, b.trace_id) and np.array_equal(back.time_ns, b.time_ns)
    with pytest.raises(ValueError):
        decode_batch(encode_batch(b)[:-3])


def with_event_names(b):
    return replace(b, event_name=StringArray.from_pylist([f"ev.{i} é" if i % 2 else "" for i in range(len(b))]))


def encode_batch_v1(batch) -> bytes:
    """The batch codec of the previous release (version 1: no event_name), kept here verbatim in
    behaviour so that the test does not depend on the code it checks."""
    import json
    import struct

    arrays = [(n, getattr(batch, n)) for n in ("time_ns", "observed_ns", "severity_number", "flags", "resource_index",
                                               "scope_index", "service_index", "trace_id", "span_id")]
    for n in ("severity_text", "body", "resource_schema_url", "scope_name", "scope_version", "scope_schema_url"):
        s = getattr(batch, n)
        arrays += [(f"{n}.buf", s.buf), (f"{n}.off", s.off)]
    for n in ("log_attrs", "resource_attrs", "scope_attrs"):
        m = getattr(batch, n)
        arrays += [(f"{n}.off", m.off), (f"{n}.keys.buf", m.keys.buf), (f"{n}.keys.off", m.keys.off),
                   (f"{n}.values.buf", m.values.buf), (f"{n}.values.off", m.values.off)]
    arrays = [(n, np.ascontiguousarray(a)) for n, a in arrays]
    header = json.dumps({"v": 1, "services": list(batch.services),
                         "arrays": [[n, a.dtype.str, list(a.shape)] for n, a in arrays]}, separators=(",", ":")).encode()
    return b"".join([struct.pack("<I", len(header)), header] + [a.tobytes() for _, a in arrays])


def test_codec_keeps_event_name_and_reads_version_1():
    b = with_event_names(concat_batches([records(3), records(2, 3, svc="db")]))
    back = decode_batch(encode_batch(b))
    assert back.event_name.to_pylist() == ["", "ev.1 é", "", "ev.3 é", ""]
    old = decode_batch(encode_batch_v1(b))  # a WAL record written by the previous release
    assert old.event_name.to_pylist() == [""] * 5
    assert old.body.to_pylist() == b.body.to_pylist() and list(old.service_names) == list(b.service_names)
    payload = bytearray(encode_batch(b))
    at = payload.index(b'"v":2')
    payload[at:at + 5] = b'"v":9'
    with pytest.raises(ValueError, match="unknown batch codec version 9"):
        decode_batch(bytes(payload))


def test_version_1_segment_still_replays(tmp_path):
    wal, _ = open_wal(tmp_path, fsync="always")
    old = records(4)
    wal.append(encode_batch_v1(old), 4)  # written by the previous release
    new = with_event_names(records(3, 4))
    wal.append(encode_batch(new), 3)
    wal.sync(2)
    wal.close()
    _, plan = open_wal(tmp_path)
    got = [b for _, b in plan.batches()]
    assert bodies(got) == bodies([old, new])
    assert [n for b in got for n in b.event_name.to_pylist()] == [""] * 4 + ["", "ev.1 é", ""]


def open_wal(tmp_path, **kw):
    wal = WriteAheadLog(tmp_path / "wal", WalConfig(directory=str(tmp_path), **kw), Telemetry(), "logs")
    return wal, wal.open()


def test_append_ack_replay_and_segment_cleanup(tmp_path):
    wal, plan = open_wal(tmp_path, fsync="always", segment_size=ByteSize(1 << 20))
    assert len(plan) == 0
    payload = encode_batch(records(2000))  # ~100 KB each: 12 of them span several 1 MiB segments
    seqs = [wal.append(payload, 2000) for _ in range(12)]
    for s in seqs:
        wal.sync(s)
    assert seqs == list(range(1, 13))
    assert len(wal.segment_paths()) >= 2
    wal.mark_batch(1, 4)
    wal.ack(4)
    wal.close()

    wal2, plan2 = open_wal(tmp_path)
    assert [e.seq for e in plan2.entries] == list(range(5, 13))
    assert plan2.records == 8 * 2000 and plan2.boundaries == []
    assert [len(b) for _, b in plan2.batches()] == [2000] * 8
    assert wal2.id == wal.id
    assert wal2.append(payload, 1) == 13  # numbering continues across restarts
    wal2.ack(13)
    assert len(wal2.segment_paths()) == 1  # everything acknowledged: only the active segment is left
    wal2.close()
    wal3, plan3 = open_wal(tmp_path)
    assert len(plan3) == 0 and wal3.last_seq == 13
    wal3.close()


def test_torn_tail_and_corrupt_record_are_skipped_not_fatal(tmp_path):
    wal, _ = open_wal(tmp_path, fsync="none")
    for i in range(3):
        wal.append(encode_batch(records(1, i)), 1)
    wal.close()
    seg = wal.segment_paths()[-1]
    data = seg.read_bytes()
    seg.write_bytes(data[:-5])  # a crash in the middle of the last write
    tel = Telemetry()
    wal2 = WriteAheadLog(tmp_path / "wal", WalConfig(directory=str(tmp_path)), tel, "logs")
    plan = wal2.open()
    assert [e.seq for e in plan.entries] == [1, 2]
    assert tel.value("otelproc_wal_corrupt_records_total", pipeline="logs") == 1
    assert wal2.append(encode_batch(records(1)), 1) == 3  # the torn record's number is reused
    wal2.close()

    # flip a byte inside the first record's payload: that segment's rest is skipped
    first = wal2.segment_paths()[0]
    raw = bytearray(first.read_bytes())
    raw[60] ^= 0xFF
    first.write_bytes(bytes(raw))
    wal3, plan3 = open_wal(tmp_path)
    assert 1 not in [e.seq for e in plan3.entries]
    wal3.close()


def test_full_log_is_back_pressure(tmp_path):
    from otelproc.component import BackPressureError

    cfg = WalConfig(directory=str(tmp_path), segment_size=ByteSize(1 << 20), max_size=ByteSize(2 << 20))
    wal = WriteAheadLog(tmp_path / "logs", cfg, Telemetry(), "logs")
    seen = []

    class Stuck:
        def consume(self, b):
            seen.append(b)
            time.sleep(0.5)

    q = IngestQueue("logs", QueueConfig(max_records=10_000_000), Stuck(), Telemetry(), wal)
    q.start()
    with pytest.raises(BackPressureError, match="write-ahead log"):
        for _ in range(100):
            q.consume(records(2000))
    q.shutdown()
    wal.close()


class Sink:
    """An exporter that records what it got and can fail on demand."""

    def __init__(self):
        self.batches: list[LogBatch] = []
        self.fail_times = 0
        self.lock = threading.Lock()

    def consume(self, b):
        with self.lock:
            if self.fail_times:
                self.fail_times -= 1
                raise ConnectionError("store down")
            self.batches.append(b)


def build(tmp_path, sink, send_batch_size=5):
    tel = Telemetry()
    wal = WriteAheadLog(tmp_path / "logs", WalConfig(directory=str(tmp_path), fsync="always"), tel, "logs")
    stage = ExportStage("logs", {"sink": sink}, wal, tel)
    bp = BatchProcessor("batch", BatchProcessorConfig(send_batch_size=send_batch_size, timeout=0.05), stage,
                        Context(telemetry=tel))
    q = IngestQueue("logs", QueueConfig(), bp, tel, wal)
    return wal, stage, bp, q


def test_export_failure_is_retried_until_confirmed_then_acknowledged(tmp_path):
    sink = Sink()
    sink.fail_times = 2
    wal, stage, bp, q = build(tmp_path, sink)
    bp.start()
    q.start()
    for i in range(3):
        q.consume(records(2, 2 * i))
    deadline = time.monotonic() + 10
    while wal.acked < 3:
        assert time.monotonic() < deadline, "never acknowledged"
        time.sleep(0.02)
    assert sorted(bodies(sink.batches)) == sorted(f"r{i} é" for i in range(6))
    q.shutdown()
    bp.shutdown()
    wal.close()


def test_replay_after_crash_reforms_the_same_batches(tmp_path):
    """Crash (no shutdown) after some batches were sent but not acknowledged: the restart
    replays them cut at the recorded boundaries, so their WAL ranges (tokens) match."""
    sink = Sink()
    wal, stage, bp, q = build(tmp_path, sink, send_batch_size=3)
    # run the pipeline synchronously: the batch processor sends inline when not started
    q.wal.open()
    for i in range(7):
        batch = records(1, i)
        seq = wal.append(encode_batch(batch), 1)
        bp.consume(replace(batch, wal_seq=(wal.id, seq, seq)))
    first_ranges = [b.wal_seq[1:] for b in sink.batches]
    assert first_ranges and all(b - a == 2 for a, b in first_ranges)  # send_batch_size 3, no timeout hit
    # pretend the acks never reached the disk: rewrite the log without ACK records
    wal.close()
    for seg in wal.segment_paths():
        raw = seg.read_bytes()
        from otelproc.wal import HEADER_SIZE, REC_ACK, _HEAD
        out, pos = bytearray(), 0
        while pos < len(raw):
            _, rtype, plen, _, _ = _HEAD.unpack_from(raw, pos)
            if rtype != REC_ACK:
                out += raw[pos:pos + HEADER_SIZE + plen]
            pos += HEADER_SIZE + plen
        seg.write_bytes(bytes(out))

    sink2 = Sink()
    wal2, stage2, bp2, q2 = build(tmp_path, sink2, send_batch_size=100)  # a different size: the record wins
    bp2.start()
    q2.start()
    plan = q2.replay_plan
    assert [e.seq for e in plan.entries] == list(range(1, 8))
    bp2.set_replay_boundaries(plan.boundaries)
    for seq, b in plan.batches():
        q2.put_replayed(replace(b, wal_seq=(wal2.id, seq, seq)))
    bp2.replay_done()
    deadline = time.monotonic() + 10
    while wal2.acked < 7:
        assert time.monotonic() < deadline, f"acked {wal2.acked}"
        time.sleep(0.02)
    replay_ranges = [b.wal_seq[1:] for b in sink2.batches]
    assert replay_ranges[:len(first_ranges)] == first_ranges
    assert sorted(bodies(sink2.batches)) == sorted(f"r{i} é" for i in range(7))
    q2.shutdown()
    bp2.shutdown()
    wal2.close()


def test_clickhouse_drops_a_replayed_insert_by_token(chdb_path, chdb_database):
    exp = ClickHouseExporter("clickhouse", ClickHouseExporterConfig(endpoint=f"chdb://{chdb_path}",
                                                                    database=chdb_database),
                             Context(telemetry=Telemetry()))
    exp.start()
    try:
        b = replace(records(10), wal_seq=("abcd", 1, 10))
        exp.consume(b)
        exp.consume(b)  # the replay of a batch whose ack was lost
        exp.consume(replace(records(10, 10), wal_seq=("abcd", 11, 20)))
        exp.consume(records(5, 20))  # no WAL range: no token, always inserted
        exp.consume(records(5, 20))
        (n,), = exp.store.query_rows("SELECT count() FROM otel_logs")
        assert n == 30
    finally:
        exp.shutdown()
