"""The Numba OTLP scanner (through decode_protobuf) against the protobuf library.

Every check decodes the same bytes twice: with ``ExportLogsServiceRequest.FromString``
plus a plain Python walk (the reference) and with the scanner. They must agree
record by record, or both must refuse the bytes (the scanner with PermanentError).
"""
from __future__ import annotations

import math
import random
import struct

import numpy as np
import pytest
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import (AnyValue, ArrayValue, InstrumentationScope, KeyValue,
                                                       KeyValueList)
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from otelproc.component import PermanentError
from otelproc.kernels import otlp_gather as g
from otelproc.kernels import otlp_wire as k
from otelproc.receivers.decode import any_value_text, decode_protobuf


# --------------------------------------------------------------------------- reference
def reference_rows(data: bytes) -> tuple[list[tuple], int]:
    """(accepted records as tuples, rejected count) via the protobuf library, or raise DecodeError."""
    req = ExportLogsServiceRequest.FromString(data)
    rows, rejected = [], 0
    for rl in req.resource_logs:
        res_attrs = tuple((kv.key, any_value_text(kv.value)) for kv in rl.resource.attributes)
        service = ""
        for kv in rl.resource.attributes:
            if kv.key == "service.name":
                service = kv.value.string_value if kv.value.WhichOneof("value") == "string_value" else ""
                break
        for sl in rl.scope_logs:
            scope = (sl.scope.name, sl.scope.version, sl.schema_url,
                     tuple((kv.key, any_value_text(kv.value)) for kv in sl.scope.attributes))
            for lr in sl.log_records:
                if (len(lr.trace_id) not in (0, 16) or len(lr.span_id) not in (0, 8)
                        or not 0 <= lr.severity_number <= 255):
                    rejected += 1
                    continue
                rows.append((lr.time_unix_nano, lr.observed_time_unix_nano, int(lr.severity_number),
                             lr.severity_text, any_value_text(lr.body),
                             lr.trace_id or bytes(16), lr.span_id or bytes(8), lr.flags,
                             tuple((kv.key, any_value_text(kv.value)) for kv in lr.attributes),
                             service, res_attrs, rl.schema_url, scope, lr.event_name))
    return rows, rejected


def batch_rows(batch) -> list[tuple]:
    batch.check()
    res_attrs = batch.resource_attrs
    rows = []
    log_keys, log_vals, log_off = batch.log_attrs.keys.to_pylist(), batch.log_attrs.values.to_pylist(), batch.log_attrs.off
    schema = batch.resource_schema_url.to_pylist()
    sc_attr = batch.scope_attrs
    for i in range(len(batch)):
        r, s = int(batch.resource_index[i]), int(batch.scope_index[i])
        attrs = tuple(zip(log_keys[log_off[i]:log_off[i + 1]], log_vals[log_off[i]:log_off[i + 1]]))
        ra = tuple((res_attrs.keys[j], res_attrs.values[j]) for j in range(res_attrs.off[r], res_attrs.off[r + 1]))
        sa = tuple((sc_attr.keys[j], sc_attr.values[j]) for j in range(sc_attr.off[s], sc_attr.off[s + 1]))
        rows.append((int(batch.time_ns[i:i + 1].view(np.uint64)[0]), int(batch.observed_ns[i:i + 1].view(np.uint64)[0]),
                     int(batch.severity_number[i]), batch.severity_text[i], batch.body[i],
                     batch.trace_id[i].tobytes(), batch.span_id[i].tobytes(), int(batch.flags[i]), attrs,
                     batch.services[batch.service_index[i]], ra, schema[r],
                     (batch.scope_name[s], batch.scope_version[s], batch.scope_schema_url[s], sa),
                     batch.event_name[i]))
    return rows


def assert_same_as_library(data: bytes) -> str:
    """Decode both ways; returns "ok" or "refused" (both refused)."""
    try:
        expected, rejected = reference_rows(data)
    except DecodeError:
        with pytest.raises(PermanentError, match="malformed protobuf"):
            decode_protobuf(data)
        return "refused"
    except PermanentError:  # nesting beyond the depth limit inside a converted AnyValue
        with pytest.raises(PermanentError):
            decode_protobuf(data)
        return "refused"
    got = decode_protobuf(data)
    assert got.rejected == rejected
    assert batch_rows(got.batch) == expected
    return "ok"


# --------------------------------------------------------------------------- generators
_ALPHABET = ["a", "b", "Z", " ", "0", "9", "é", "ß", "日本", "😀", "\n", "\t", '"', "\\", "<", "\u2028", "\x01", ""]


def rand_str(rng: random.Random, max_len: int = 12) -> str:
    return "".join(rng.choice(_ALPHABET) for _ in range(rng.randint(0, max_len)))


def rand_double(rng: random.Random) -> float:
    return rng.choice([0.0, -0.0, 1.0, 0.5, -2.25, 1e21, 1e-7, 123456789.125, 1e16, 1e-5, 5e-324, 1.7976931348623157e308,
                       math.nan, math.inf, -math.inf, rng.uniform(-1e6, 1e6), rng.random() * 10 ** rng.randint(-30, 30)])


def rand_any(rng: random.Random, depth: int = 0) -> AnyValue:
    kinds = ["string"] * 6 + ["int", "bool", "double", "bytes", "empty"] + (["array", "kvlist"] if depth < 3 else [])
    kind = rng.choice(kinds)
    if kind == "string":
        return AnyValue(string_value=rand_str(rng))
    if kind == "int":
        return AnyValue(int_value=rng.choice([0, 1, -1, 42, 2 ** 63 - 1, -2 ** 63, rng.randint(-10 ** 12, 10 ** 12)]))
    if kind == "bool":
        return AnyValue(bool_value=rng.random() < 0.5)
    if kind == "double":
        return AnyValue(double_value=rand_double(rng))
    if kind == "bytes":
        return AnyValue(bytes_value=bytes(rng.randrange(256) for _ in range(rng.randint(0, 9))))
    if kind == "array":
        return AnyValue(array_value=ArrayValue(values=[rand_any(rng, depth + 1) for _ in range(rng.randint(0, 3))]))
    if kind == "kvlist":
        return AnyValue(kvlist_value=KeyValueList(values=[KeyValue(key=rand_str(rng, 4), value=rand_any(rng, depth + 1))
                                                          for _ in range(rng.randint(0, 3))]))
    return AnyValue()


def rand_attrs(rng: random.Random, n_max: int = 4) -> list[KeyValue]:
    out = []
    for _ in range(rng.randint(0, n_max)):
        kv = KeyValue(key=rand_str(rng, 6))
        if rng.random() < 0.95:
            kv.value.CopyFrom(rand_any(rng))
        out.append(kv)
    return out


def rand_record(rng: random.Random) -> LogRecord:
    lr = LogRecord()
    if rng.random() < 0.8:
        lr.time_unix_nano = rng.choice([1, 2 ** 64 - 1, 2 ** 63, rng.randrange(2 ** 62)])
    if rng.random() < 0.5:
        lr.observed_time_unix_nano = rng.randrange(2 ** 64)
    if rng.random() < 0.9:
        lr.severity_number = rng.choice([1, 5, 9, 13, 17, 21, 24, 0, 255] + [-3, 256, 70000] * (rng.random() < 0.05))
    if rng.random() < 0.7:
        lr.severity_text = rng.choice(["INFO", "WARN", "ERROR", "", "débug"])
    if rng.random() < 0.9:
        lr.body.CopyFrom(AnyValue(string_value=rand_str(rng, 30)) if rng.random() < 0.8 else rand_any(rng))
    lr.attributes.extend(rand_attrs(rng))
    if rng.random() < 0.3:
        lr.dropped_attributes_count = rng.randint(1, 5)
    if rng.random() < 0.5:
        lr.flags = rng.randrange(2 ** 32)
    if rng.random() < 0.6:
        lr.trace_id = bytes(rng.randrange(256) for _ in range(16 if rng.random() < 0.97 else rng.choice([1, 15, 17])))
    if rng.random() < 0.6:
        lr.span_id = bytes(rng.randrange(256) for _ in range(8 if rng.random() < 0.97 else rng.choice([4, 9])))
    if rng.random() < 0.4:
        lr.event_name = rand_str(rng, 5)
    return lr


def rand_request(rng: random.Random) -> ExportLogsServiceRequest:
    req = ExportLogsServiceRequest()
    for _ in range(rng.randint(0, 4)):
        rl = req.resource_logs.add()
        if rng.random() < 0.9:
            attrs = rand_attrs(rng, 3)
            if rng.random() < 0.8:
                pos = rng.randint(0, len(attrs))
                value = AnyValue(string_value=rng.choice(["checkout", "cart", "", "日本-svc"])) if rng.random() < 0.9 \
                    else AnyValue(int_value=7)
                attrs.insert(pos, KeyValue(key="service.name", value=value))
            rl.resource.CopyFrom(Resource(attributes=attrs, dropped_attributes_count=rng.randint(0, 2)))
        if rng.random() < 0.3:
            rl.schema_url = "https://opentelemetry.io/schemas/1.21.0"
        for _ in range(rng.randint(0, 3)):
            sl = rl.scope_logs.add()
            if rng.random() < 0.8:
                sl.scope.CopyFrom(InstrumentationScope(name=rand_str(rng, 8), version=rand_str(rng, 3),
                                                       attributes=rand_attrs(rng, 2)))
            if rng.random() < 0.2:
                sl.schema_url = rand_str(rng, 8)
            sl.log_records.extend(rand_record(rng) for _ in range(rng.randint(0, 6)))
    return req


def _varint(v: int) -> bytes:
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def unknown_fields(rng: random.Random) -> bytes:
    """One unknown field of every wire type (field numbers the schema does not use), incl. a nested group."""
    f = rng.choice([13, 20, 99, 1000, 536870911])
    g = f + 1 if f < 536870911 else 14
    return (_varint(f << 3 | 0) + _varint(rng.randrange(2 ** 64))
            + _varint(g << 3 | 1) + struct.pack("<Q", rng.randrange(2 ** 64))
            + _varint(f << 3 | 2) + _varint(5) + b"\xff\xfe\x00ab"  # bytes that are not UTF-8: never validated
            + _varint(g << 3 | 5) + struct.pack("<I", rng.randrange(2 ** 32))
            + _varint(f << 3 | 3) + _varint(g << 3 | 0) + b"\x01" + _varint(g << 3 | 3) + _varint(g << 3 | 4)
            + _varint(f << 3 | 4))


def with_unknown_fields(msg, rng: random.Random):
    """A copy of ``msg`` whose every nested message carries unknown fields (upb keeps and re-serialises them)."""
    cls = type(msg)
    data = msg.SerializeToString()
    out = cls.FromString(unknown_fields(rng) + data + unknown_fields(rng))
    for field, value in list(out.ListFields()):
        if field.message_type is None:
            continue
        if field.is_repeated if hasattr(field, "is_repeated") else field.label == field.LABEL_REPEATED:
            items = [with_unknown_fields(v, rng) for v in value]
            del value[:]
            value.extend(items)
        else:
            getattr(out, field.name).CopyFrom(with_unknown_fields(value, rng))
    return out


def realistic_request(n_resources: int = 3, per_resource: int = 4) -> ExportLogsServiceRequest:
    req = ExportLogsServiceRequest()
    for r in range(n_resources):
        rl = req.resource_logs.add(resource=Resource(attributes=[
            KeyValue(key="service.name", value=AnyValue(string_value=f"svc-{r}")),
            KeyValue(key="host.name", value=AnyValue(string_value="node-1")),
            KeyValue(key="process.pid", value=AnyValue(int_value=1234 + r))]))
        for s in range(2):
            sl = rl.scope_logs.add(scope=InstrumentationScope(name=f"lib.{s}", version="1.2.3"))
            for i in range(per_resource):
                sl.log_records.add(time_unix_nano=1_700_000_000_000_000_000 + i, observed_time_unix_nano=1_700_000_000_5,
                                   severity_number=9, severity_text="INFO",
                                   body=AnyValue(string_value=f"user {i} logged in from 10.0.0.{i} — ok"),
                                   attributes=[KeyValue(key="http.status_code", value=AnyValue(int_value=200)),
                                               KeyValue(key="latency", value=AnyValue(double_value=0.25 * i)),
                                               KeyValue(key="ok", value=AnyValue(bool_value=True))],
                                   trace_id=bytes(range(16)), span_id=bytes(range(8)), flags=1,
                                   event_name="user.login" if i % 2 else "")
    return req


# --------------------------------------------------------------------------- tests
def test_realistic_message_matches_library():
    assert assert_same_as_library(realistic_request().SerializeToString()) == "ok"


def test_empty_request_and_empty_parts():
    for req in (ExportLogsServiceRequest(),
                ExportLogsServiceRequest(resource_logs=[ResourceLogs()]),
                ExportLogsServiceRequest(resource_logs=[ResourceLogs(scope_logs=[ScopeLogs(log_records=[LogRecord()])])])):
        assert assert_same_as_library(req.SerializeToString()) == "ok"
    got = decode_protobuf(ExportLogsServiceRequest(resource_logs=[ResourceLogs(
        scope_logs=[ScopeLogs(log_records=[LogRecord()])])]).SerializeToString())
    assert len(got.batch) == 1 and got.batch.body[0] == "" and got.batch.services == [""]


def test_random_messages_match_library():
    rng = random.Random(20240611)
    outcomes = [assert_same_as_library(rand_request(rng).SerializeToString()) for _ in range(2000)]
    assert outcomes.count("ok") == 2000


def test_concatenated_requests_are_one_request():
    rng = random.Random(7)
    parts = [rand_request(rng).SerializeToString() for _ in range(20)]
    assert assert_same_as_library(b"".join(parts)) == "ok"


def test_unknown_fields_of_every_wire_type_are_skipped():
    rng = random.Random(11)
    for _ in range(200):
        req = rand_request(rng)
        noisy = with_unknown_fields(req, rng).SerializeToString()
        assert len(noisy) > len(req.SerializeToString()) or not req.ListFields()
        assert assert_same_as_library(noisy) == "ok"
        assert batch_rows(decode_protobuf(noisy).batch) == batch_rows(decode_protobuf(req.SerializeToString()).batch)


def test_known_field_with_wrong_wire_type_is_unknown():
    # flags (fixed32) sent as a varint, body (message) sent as a fixed64: protobuf skips both
    record = _varint(8 << 3 | 0) + b"\x05" + _varint(5 << 3 | 1) + bytes(8) + _varint(3 << 3 | 2) + b"\x04WARN"
    data = _request_with_record(record)
    assert assert_same_as_library(data) == "ok"
    b = decode_protobuf(data).batch
    assert b.flags[0] == 0 and b.body[0] == "" and b.severity_text[0] == "WARN"


def _request_with_record(record: bytes) -> bytes:
    scope_logs = _varint(2 << 3 | 2) + _varint(len(record)) + record
    resource_logs = _varint(2 << 3 | 2) + _varint(len(scope_logs)) + scope_logs
    return _varint(1 << 3 | 2) + _varint(len(resource_logs)) + resource_logs


@pytest.mark.parametrize("record, fragment", [
    (_varint(5 << 3 | 2) + b"\x40", "runs past the end"),                    # length past the end
    (_varint(1 << 3 | 1) + b"\x01\x02", "fixed-width field 1"),              # truncated fixed64
    (_varint(2 << 3 | 0) + b"\x80\x80", "truncated varint"),
    (_varint(2 << 3 | 0) + b"\x80" * 10 + b"\x01", "longer than 10 bytes"),
    (_varint(3 << 3 | 2) + b"\x02\xc3\x28", "not valid UTF-8"),
    (b"\x00\x01", "field number 0"),
    (_varint(30 << 3 | 6) + b"\x01", "wire type"),
    (_varint(30 << 3 | 3) + _varint(31 << 3 | 4), "unbalanced group"),
    (_varint(30 << 3 | 4), "unbalanced group"),
    (b"\x88\x80\x80\x80\x80\x00\x01", "invalid tag"),
])
def test_malformed_records_raise_permanent_error_with_position(record, fragment):
    data = _request_with_record(record)
    with pytest.raises(DecodeError):
        ExportLogsServiceRequest.FromString(data)
    with pytest.raises(PermanentError, match=fragment) as info:
        decode_protobuf(data)
    assert "at byte" in str(info.value)


def test_error_message_names_field_and_byte():
    data = ExportLogsServiceRequest(resource_logs=[ResourceLogs()]).SerializeToString() + b"\x0a\x7f\x00"
    with pytest.raises(PermanentError, match=r"malformed protobuf: length-delimited field 1 of "
                                             r"ExportLogsServiceRequest at byte 3 runs past the end"):
        decode_protobuf(data)


def _mutations(rng: random.Random, data: bytes):
    b = bytearray(data)
    op = rng.randrange(6)
    if not b:
        return bytes([rng.randrange(256) for _ in range(rng.randint(1, 4))])
    i = rng.randrange(len(b))
    if op == 0:
        b[i] = rng.randrange(256)
    elif op == 1:
        b[i] ^= 1 << rng.randrange(8)
    elif op == 2:
        del b[i:i + rng.randint(1, 4)]
    elif op == 3:
        b[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 4)))
    elif op == 4:
        return bytes(b[:i])  # truncation
    else:
        j = rng.randrange(len(b))
        b[i], b[j] = b[j], b[i]
    return bytes(b)


def test_fuzzed_bytes_decode_exactly_or_raise_permanent_error():
    rng = random.Random(99)
    seeds = [rand_request(rng).SerializeToString() for _ in range(60)] + [realistic_request(2, 3).SerializeToString()]
    outcomes = {"ok": 0, "refused": 0}
    for _ in range(4000):
        data = rng.choice(seeds)
        for _ in range(rng.randint(1, 3)):
            data = _mutations(rng, data)
        outcomes[assert_same_as_library(data)] += 1
    # both branches must actually be exercised
    assert outcomes["ok"] > 200 and outcomes["refused"] > 200, outcomes


def test_random_bytes_never_crash():
    rng = np.random.default_rng(5)
    for n in range(0, 300):
        data = rng.integers(0, 256, size=n, dtype=np.uint8).tobytes()
        assert_same_as_library(data)


def test_repeated_singular_messages_are_merged_like_protobuf():
    # body twice: protobuf merges the two AnyValues (the later oneof member wins);
    # the scanner hands such requests to the library path
    body1 = AnyValue(string_value="first").SerializeToString()
    body2 = AnyValue(int_value=5).SerializeToString()
    record = (_varint(5 << 3 | 2) + _varint(len(body1)) + body1 + _varint(5 << 3 | 2) + _varint(len(body2)) + body2)
    data = _request_with_record(record)
    assert assert_same_as_library(data) == "ok"
    assert decode_protobuf(data).batch.body[0] == "5"
    # Resource twice: attributes are concatenated
    r1 = Resource(attributes=[KeyValue(key="service.name", value=AnyValue(string_value="a"))]).SerializeToString()
    r2 = Resource(attributes=[KeyValue(key="x", value=AnyValue(string_value="y"))]).SerializeToString()
    sl = ScopeLogs(log_records=[LogRecord(body=AnyValue(string_value="b"))]).SerializeToString()
    rl = (_varint(1 << 3 | 2) + _varint(len(r1)) + r1 + _varint(2 << 3 | 2) + _varint(len(sl)) + sl
          + _varint(1 << 3 | 2) + _varint(len(r2)) + r2)
    data = _varint(1 << 3 | 2) + _varint(len(rl)) + rl
    assert assert_same_as_library(data) == "ok"
    assert decode_protobuf(data).batch.resource_attrs.row(0) == {"service.name": "a", "x": "y"}


def test_scan_capacity_rerun_with_many_tiny_records():
    # 5000 empty records (2 bytes each) overflow the first capacity guess
    req = ExportLogsServiceRequest(resource_logs=[ResourceLogs(scope_logs=[ScopeLogs(
        log_records=[LogRecord() for _ in range(5000)])])])
    data = req.SerializeToString()
    scan = k.scan_export_logs_request(np.frombuffer(data, dtype=np.uint8))
    assert scan.status == k.STATUS_OK and len(scan.records) == 5000
    assert len(decode_protobuf(data).batch) == 5000


def test_scanner_rejects_wrong_input_type():
    with pytest.raises(TypeError, match="uint8"):
        k.scan_export_logs_request(np.zeros(4, dtype=np.int32))


def test_ints_and_bools_are_written_as_text():
    values = [AnyValue(int_value=-2 ** 63), AnyValue(int_value=0), AnyValue(int_value=2 ** 63 - 1),
              AnyValue(bool_value=True), AnyValue(bool_value=False), AnyValue(), AnyValue(string_value="hello")]
    req = ExportLogsServiceRequest(resource_logs=[ResourceLogs(scope_logs=[ScopeLogs(log_records=[
        LogRecord(body=v, attributes=[KeyValue(key="k", value=v)]) for v in values])])])
    batch = decode_protobuf(req.SerializeToString()).batch
    want = [str(-2 ** 63), "0", str(2 ** 63 - 1), "true", "false", "", "hello"]
    assert batch.body.to_pylist() == want and batch.log_attrs.values.to_pylist() == want


def test_gather_scanned_wants_rare_values_converted_first():
    data = _request_with_record(_varint(5 << 3 | 2) + _varint(9) + AnyValue(double_value=1.5).SerializeToString())
    buf = np.frombuffer(data, dtype=np.uint8)
    scan = k.scan_export_logs_request(buf)
    with pytest.raises(ValueError, match="KIND_EXTRA"):
        g.gather_scanned(buf, np.zeros(0, np.uint8), scan)
    assert decode_protobuf(data).batch.body[0] == "1.5"


# --------------------------------------------------------------------------- fused decode (scan + gather in one call)
def _simple_values(msg) -> None:
    """Replace every double/bytes/array/kvlist AnyValue by a string, in place (fused fast path inputs)."""
    def fix(av: AnyValue, rng_text: str) -> None:
        if av.WhichOneof("value") in ("double_value", "bytes_value", "array_value", "kvlist_value"):
            av.string_value = rng_text

    for rl in msg.resource_logs:
        for kv in rl.resource.attributes:
            fix(kv.value, "r")
        for sl in rl.scope_logs:
            for kv in sl.scope.attributes:
                fix(kv.value, "s")
            for lr in sl.log_records:
                if lr.HasField("body"):
                    fix(lr.body, "body é")
                for kv in lr.attributes:
                    fix(kv.value, "a")


def test_fused_path_matches_library_on_fuzzed_requests():
    rng = random.Random(99)
    fast = 0
    for _ in range(1500):
        req = rand_request(rng)
        _simple_values(req)
        data = req.SerializeToString()
        fused = g.decode_export_logs_request(np.frombuffer(data, dtype=np.uint8))
        assert fused.status in (k.STATUS_OK, k.STATUS_FALLBACK)
        fast += fused.status == k.STATUS_OK
        assert assert_same_as_library(data) == "ok"
    assert fast == 1500  # none of these needs the slower paths


def test_fused_and_scanned_gather_paths_agree():
    """The same request turned into a batch by the fused kernel and by the gather of separate scan tables."""
    from otelproc.receivers.decode import _batch_from_columns

    rng = random.Random(5)
    for _ in range(300):
        req = rand_request(rng)
        _simple_values(req)
        data = req.SerializeToString()
        buf = np.frombuffer(data, dtype=np.uint8)
        scan = k.scan_export_logs_request(buf)
        if scan.status != k.STATUS_OK:
            continue
        slow = _batch_from_columns(buf, g.gather_scanned(buf, np.zeros(0, np.uint8), scan))
        fast = decode_protobuf(data)
        assert batch_rows(fast.batch) == batch_rows(slow.batch)
        assert (fast.rejected, fast.message) == (slow.rejected, slow.message)


def test_fused_scratch_is_reused_across_sizes_and_threads():
    from concurrent.futures import ThreadPoolExecutor

    rng = random.Random(11)
    big = realistic_request(20, 300).SerializeToString()
    small = [rand_request(rng) for _ in range(20)]
    for r in small:
        _simple_values(r)
    datas = [big] + [r.SerializeToString() for r in small] + [big, b"".join([big] * 3)]
    expected = [reference_rows(d) for d in datas]

    def check(i: int) -> bool:
        got = decode_protobuf(datas[i % len(datas)])
        return (batch_rows(got.batch), got.rejected) == expected[i % len(datas)]

    assert all(check(i) for i in range(len(datas)))
    with ThreadPoolExecutor(4) as pool:
        assert all(pool.map(check, range(200)))


def test_fused_rejects_and_keeps_the_rest():
    req = ExportLogsServiceRequest(resource_logs=[ResourceLogs(
        resource=Resource(attributes=[KeyValue(key="service.name", value=AnyValue(string_value="svc"))]),
        scope_logs=[ScopeLogs(log_records=[
            LogRecord(body=AnyValue(string_value="a"), trace_id=bytes(16)),
            LogRecord(body=AnyValue(string_value="b"), trace_id=bytes(3)),
            LogRecord(body=AnyValue(int_value=-7), span_id=bytes(8)),
            LogRecord(body=AnyValue(bool_value=False), span_id=bytes(7))])])])
    data = req.SerializeToString()
    fused = g.decode_export_logs_request(np.frombuffer(data, dtype=np.uint8))
    assert fused.status == k.STATUS_OK and fused.rejected == 2
    got = decode_protobuf(data)
    assert got.batch.body.to_pylist() == ["a", "-7"] and got.rejected == 2
    assert "trace_id" in got.message and "span_id" in got.message
    assert got.batch.services == ["svc"]


# --------------------------------------------------------------------------- event_name (LogRecord field 12)
def _event_request(body_of_second: AnyValue) -> ExportLogsServiceRequest:
    return ExportLogsServiceRequest(resource_logs=[ResourceLogs(
        resource=Resource(attributes=[KeyValue(key="service.name", value=AnyValue(string_value="svc"))]),
        scope_logs=[ScopeLogs(log_records=[
            LogRecord(body=AnyValue(string_value="a"), event_name="browser.page_view"),
            LogRecord(body=body_of_second),
            LogRecord(body=AnyValue(string_value="c"), event_name="é.日本 😀")])])])


def test_event_name_decoded_on_fused_scan_and_library_paths():
    expected = ["browser.page_view", "", "é.日本 😀"]
    # fused: all values are strings
    data = _event_request(AnyValue(string_value="b")).SerializeToString()
    assert g.decode_export_logs_request(np.frombuffer(data, dtype=np.uint8)).status == k.STATUS_OK
    assert decode_protobuf(data).batch.event_name.to_pylist() == expected
    # scan + Python gather: a double body needs the Python conversion
    data = _event_request(AnyValue(double_value=0.5)).SerializeToString()
    assert g.decode_export_logs_request(np.frombuffer(data, dtype=np.uint8)).status == g.STATUS_NEEDS_PYTHON
    got = decode_protobuf(data).batch
    assert got.event_name.to_pylist() == expected and got.body.to_pylist() == ["a", "0.5", "c"]
    # protobuf library: a body sent twice (protobuf merges) sends the request to the library path
    body2 = AnyValue(int_value=5).SerializeToString()
    record = (_varint(12 << 3 | 2) + _varint(4) + b"ev.x" + _varint(5 << 3 | 2) + _varint(len(body2)) + body2
              + _varint(5 << 3 | 2) + _varint(len(body2)) + body2)
    data = _request_with_record(record)
    assert g.decode_export_logs_request(np.frombuffer(data, dtype=np.uint8)).status == k.STATUS_FALLBACK
    assert decode_protobuf(data).batch.event_name.to_pylist() == ["ev.x"]
    assert assert_same_as_library(data) == "ok"


def test_event_name_sent_twice_last_wins_and_bad_utf8_is_refused():
    record = _varint(12 << 3 | 2) + b"\x05first" + _varint(12 << 3 | 2) + b"\x04last"
    data = _request_with_record(record)
    assert assert_same_as_library(data) == "ok"
    assert decode_protobuf(data).batch.event_name.to_pylist() == ["last"]
    bad = _request_with_record(_varint(12 << 3 | 2) + b"\x02\xc3\x28")
    assert assert_same_as_library(bad) == "refused"


def test_record_without_event_name_gets_empty_string_after_one_with_it():
    # the scan table is per-thread scratch reused between calls: a record without field 12 must
    # not see the event_name offset/length a previous request left in the same row
    with_name = ExportLogsServiceRequest(resource_logs=[ResourceLogs(scope_logs=[ScopeLogs(
        log_records=[LogRecord(event_name=f"event.{i}", body=AnyValue(string_value="x")) for i in range(50)])])])
    without = ExportLogsServiceRequest(resource_logs=[ResourceLogs(scope_logs=[ScopeLogs(
        log_records=[LogRecord(body=AnyValue(string_value="y")) for _ in range(50)])])])
    assert decode_protobuf(with_name.SerializeToString()).batch.event_name[49] == "event.49"
    got = decode_protobuf(without.SerializeToString()).batch
    assert got.event_name.to_pylist() == [""] * 50 and len(got.event_name.buf) == 0


def test_random_requests_carry_event_names():
    # the library comparisons above include event_name; make sure the generator exercises it
    rng = random.Random(20240611)
    names = [n for _ in range(200) for n in decode_protobuf(rand_request(rng).SerializeToString()).batch.event_name.to_pylist()]
    assert sum(1 for n in names if n) > 50 and "" in names
