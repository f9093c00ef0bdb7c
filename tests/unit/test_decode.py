"""decode_protobuf / decode_json / encode_protobuf / encode_json and the AnyValue -> text rules."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue, KeyValueList
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from otelproc.batch import LogBatch, StringArray, concat_batches
from otelproc.component import PermanentError
from otelproc.encode import encode_json, encode_protobuf
from otelproc.receivers.decode import any_value_text, decode_json, decode_protobuf, go_float_text

# The example request from the OTLP specification (opentelemetry-proto examples/logs.json)
SPEC_EXAMPLE = b"""{
  "resourceLogs": [
    {
      "resource": {
        "attributes": [
          {"key": "service.name", "value": {"stringValue": "my.service"}}
        ]
      },
      "scopeLogs": [
        {
          "scope": {
            "name": "my.library",
            "version": "1.0.0",
            "attributes": [
              {"key": "my.scope.attribute", "value": {"stringValue": "some scope attribute"}}
            ]
          },
          "logRecords": [
            {
              "timeUnixNano": "1544712660300000000",
              "observedTimeUnixNano": "1544712660300000000",
              "severityNumber": 10,
              "severityText": "Information",
              "traceId": "5B8EFFF798038103D269B633813FC60C",
              "spanId": "EEE19B7EC3C1B174",
              "body": {"stringValue": "Example log record"},
              "attributes": [
                {"key": "string.attribute", "value": {"stringValue": "some string"}},
                {"key": "boolean.attribute", "value": {"boolValue": true}},
                {"key": "int.attribute", "value": {"intValue": "10"}},
                {"key": "double.attribute", "value": {"doubleValue": 637.704}},
                {"key": "array.attribute", "value": {"arrayValue": {"values": [
                  {"stringValue": "many"}, {"stringValue": "values"}]}}},
                {"key": "map.attribute", "value": {"kvlistValue": {"values": [
                  {"key": "some.map.key", "value": {"stringValue": "some value"}}]}}}
              ]
            }
          ]
        }
      ]
    }
  ]
}"""


@pytest.mark.parametrize("value, text", [
    (1.0, "1"), (-0.0, "-0"), (0.0, "0"), (0.5, "0.5"), (637.704, "637.704"), (1e16, "10000000000000000"),
    (1e20, "100000000000000000000"), (1e21, "1e+21"), (1.5e300, "1.5e+300"), (1e-6, "0.000001"),
    (1e-7, "1e-7"), (1.25e-10, "1.25e-10"), (5e-324, "5e-324"), (123456789.125, "123456789.125"),
    (0.1 + 0.2, "0.30000000000000004"), (math.nan, "json: unsupported value: NaN"),
    (math.inf, "json: unsupported value: +Inf"), (-math.inf, "json: unsupported value: -Inf"),
])
def test_doubles_print_like_the_collector(value, text):
    assert go_float_text(value) == text


def test_any_value_text_follows_pcommon_as_string():
    assert any_value_text(AnyValue(string_value="héllo")) == "héllo"
    assert any_value_text(AnyValue(int_value=-9223372036854775808)) == "-9223372036854775808"
    assert any_value_text(AnyValue(bool_value=False)) == "false"
    assert any_value_text(AnyValue(bytes_value=b"\x00\xffab")) == "AP9hYg=="
    assert any_value_text(AnyValue()) == ""
    arr = AnyValue(array_value=ArrayValue(values=[AnyValue(string_value='a"<b>\n\u2028'), AnyValue(int_value=3),
                                                  AnyValue(double_value=2.0), AnyValue(), AnyValue(bool_value=True),
                                                  AnyValue(bytes_value=b"\x01")]))
    assert any_value_text(arr) == '["a\\"<b>\\n\\u2028",3,2,null,true,"AQ=="]'
    kv = AnyValue(kvlist_value=KeyValueList(values=[
        KeyValue(key="z", value=AnyValue(int_value=1)), KeyValue(key="a", value=AnyValue(string_value="x")),
        KeyValue(key="z", value=AnyValue(int_value=2))]))
    assert any_value_text(kv) == '{"a":"x","z":2}'  # keys sorted, later duplicate wins
    # Go's json.Marshal refuses NaN: the Collector stores an empty string
    assert any_value_text(AnyValue(array_value=ArrayValue(values=[AnyValue(double_value=math.nan)]))) == ""


def test_spec_example_json():
    got = decode_json(SPEC_EXAMPLE)
    b = got.batch
    b.check()
    assert got.rejected == 0 and len(b) == 1
    assert b.services == ["my.service"]
    assert b.time_ns[0] == 1544712660300000000 and b.observed_ns[0] == 1544712660300000000
    assert b.severity_number[0] == 10 and b.severity_text[0] == "Information"
    assert b.trace_id[0].tobytes().hex() == "5b8efff798038103d269b633813fc60c"
    assert b.span_id[0].tobytes().hex() == "eee19b7ec3c1b174"
    assert b.body[0] == "Example log record"
    assert b.log_attrs.row(0) == {"string.attribute": "some string", "boolean.attribute": "true",
                                  "int.attribute": "10", "double.attribute": "637.704",
                                  "array.attribute": '["many","values"]',
                                  "map.attribute": '{"some.map.key":"some value"}'}
    assert b.scope_name[0] == "my.library" and b.scope_version[0] == "1.0.0"
    assert b.scope_attrs.row(0) == {"my.scope.attribute": "some scope attribute"}


def test_json_snake_case_enum_names_and_int64_numbers():
    doc = {"resource_logs": [{"scope_logs": [{"log_records": [{
        "time_unix_nano": 1544712660300000001, "severity_number": "SEVERITY_NUMBER_ERROR",
        "trace_id": "00" * 16, "body": {"string_value": "x"}, "unknownField": 3}]}]}]}
    b = decode_json(json.dumps(doc).encode()).batch
    assert b.time_ns[0] == 1544712660300000001 and b.severity_number[0] == 17 and b.body[0] == "x"


@pytest.mark.parametrize("payload, fragment", [
    (b"{not json", "malformed JSON"),
    (b"[1, 2]", "expected an object"),
    (b'{"resourceLogs": [{"scopeLogs": [{"logRecords": [{"traceId": "zz"}]}]}]}', "not hex"),
    (b'{"resourceLogs": [{"scopeLogs": [{"logRecords": [{"timeUnixNano": "soon"}]}]}]}', "malformed OTLP JSON"),
    (b'{"resourceLogs": 5}', "malformed OTLP JSON"),
])
def test_bad_json_is_a_permanent_error(payload, fragment):
    with pytest.raises(PermanentError, match=fragment):
        decode_json(payload)


def test_bad_ids_are_rejected_per_record():
    req = ExportLogsServiceRequest(resource_logs=[ResourceLogs(scope_logs=[ScopeLogs(log_records=[
        LogRecord(body=AnyValue(string_value="good"), trace_id=bytes(16), span_id=bytes(8)),
        LogRecord(body=AnyValue(string_value="short trace"), trace_id=bytes(15)),
        LogRecord(body=AnyValue(string_value="long span"), span_id=bytes(9)),
        LogRecord(body=AnyValue(string_value="no ids")),
    ])])])
    got = decode_protobuf(req.SerializeToString())
    assert got.rejected == 2
    assert got.batch.body.to_pylist() == ["good", "no ids"]
    assert "trace_id" in got.message and "span_id" in got.message
    doc = json.dumps({"resourceLogs": [{"scopeLogs": [{"logRecords": [
        {"traceId": "ab" * 15, "body": {"stringValue": "bad"}}, {"body": {"stringValue": "ok"}}]}]}]})
    got = decode_json(doc.encode())
    assert got.rejected == 1 and got.batch.body.to_pylist() == ["ok"]


def test_service_name_rules():
    def req(*attr_sets):
        return ExportLogsServiceRequest(resource_logs=[
            ResourceLogs(resource=Resource(attributes=attrs), scope_logs=[ScopeLogs(log_records=[LogRecord()])])
            for attrs in attr_sets]).SerializeToString()
    b = decode_protobuf(req(
        [KeyValue(key="service.name", value=AnyValue(string_value="api"))],
        [],
        [KeyValue(key="service.name", value=AnyValue(int_value=3))],
        [KeyValue(key="service.name", value=AnyValue(string_value="api")),
         KeyValue(key="service.name", value=AnyValue(string_value="second"))])).batch
    assert list(b.service_names) == ["api", "", "", "api"]
    assert b.services == ["api", ""]


def _sample_batch() -> LogBatch:
    a = LogBatch.from_records([
        {"time_ns": 10, "observed_ns": 11, "severity_number": 9, "severity_text": "INFO", "body": "héllo wörld",
         "trace_id": "0af7651916cd43dd8448eb211c80319c", "span_id": "b7ad6b7169203331", "flags": 1,
         "attributes": {"k": "v", "n": "42"}, "service": "api", "event_name": "user.login"},
        {"time_ns": 2 ** 63 - 1, "severity_number": 17, "body": "", "service": "db", "attributes": {},
         "event_name": "db.query.ü"},
        {"observed_ns": 5, "body": "third 😀", "service": "api", "attributes": {"x": ""}},
    ], resource={"host.name": "n1"}, scope_name="lib", scope_version="0.1")
    b = LogBatch.from_records([{"time_ns": 99, "body": "other", "service": "web"}], scope_name="other")
    return concat_batches([a, b])


def _records(batch: LogBatch) -> list[str]:
    """Every record with its resource/scope data, in a canonical order (the encoder groups records
    by resource and scope, so records of interleaved resources come back grouped)."""
    return sorted(repr(r) for r in [(int(batch.time_ns[i]), int(batch.observed_ns[i]), int(batch.severity_number[i]), batch.severity_text[i],
             batch.body[i], batch.trace_id[i].tobytes(), batch.span_id[i].tobytes(), int(batch.flags[i]),
             batch.log_attrs.row(i), batch.service_names[i], batch.resource_attrs.row(int(batch.resource_index[i])),
             batch.scope_name[int(batch.scope_index[i])], batch.scope_version[int(batch.scope_index[i])],
             batch.event_name[i])
            for i in range(len(batch))])


def test_protobuf_round_trip():
    batch = _sample_batch()
    back = decode_protobuf(encode_protobuf(batch))
    assert back.rejected == 0
    assert _records(back.batch) == _records(batch)


def test_json_round_trip():
    batch = _sample_batch()
    data = encode_json(batch)
    doc = json.loads(data)
    lr = doc["resourceLogs"][0]["scopeLogs"][0]["logRecords"][0]
    assert lr["traceId"] == "0af7651916cd43dd8448eb211c80319c" and lr["spanId"] == "b7ad6b7169203331"
    assert lr["severityNumber"] == 9 and lr["timeUnixNano"] == "10"
    assert lr["eventName"] == "user.login"
    assert _records(decode_json(data).batch) == _records(batch)


def test_processor_columns_become_log_attributes():
    batch = _sample_batch()
    n = len(batch)
    batch = batch.with_columns(pattern_id=np.arange(n, dtype=np.uint64) + np.uint64(2 ** 63),
                               pattern_template=StringArray.from_pylist([f"tpl <*> {i}" for i in range(n)]),
                               anomaly_score=np.linspace(0, 1, n).astype(np.float32))
    req = ExportLogsServiceRequest.FromString(encode_protobuf(batch))
    attrs = {kv.key: kv.value for kv in req.resource_logs[0].scope_logs[0].log_records[0].attributes}
    assert attrs["log.pattern.id"].string_value == "8000000000000000"
    assert attrs["log.pattern.template"].string_value == "tpl <*> 0"
    assert attrs["log.anomaly.score"].WhichOneof("value") == "double_value"
    back = decode_protobuf(encode_protobuf(batch)).batch
    assert back.log_attrs.row(0)["log.anomaly.score"] == "0"
    assert back.log_attrs.row(n - 1)["log.anomaly.score"] == "1"


def test_encode_empty_batch():
    assert encode_protobuf(LogBatch.empty()) == b""
    assert len(decode_protobuf(encode_protobuf(LogBatch.empty())).batch) == 0
    assert json.loads(encode_json(LogBatch.empty())) == {}


def test_decode_accepts_bytearray_memoryview_and_numpy():
    data = encode_protobuf(_sample_batch())
    for form in (bytearray(data), memoryview(data), np.frombuffer(data, dtype=np.uint8)):
        assert _records(decode_protobuf(form).batch) == _records(decode_protobuf(data).batch)


def test_json_event_name_camel_and_snake_case():
    doc = {"resourceLogs": [{"scopeLogs": [{"logRecords": [
        {"eventName": "device.app.lifecycle", "body": {"stringValue": "a"}},
        {"body": {"stringValue": "b"}},
        {"event_name": "ünï.event", "body": {"stringValue": "c"}}]}]}]}
    b = decode_json(json.dumps(doc).encode()).batch
    b.check()
    assert b.event_name.to_pylist() == ["device.app.lifecycle", "", "ünï.event"]
    assert b.body.to_pylist() == ["a", "b", "c"]


def test_spec_example_has_no_event_name():
    b = decode_json(SPEC_EXAMPLE).batch
    assert b.event_name.to_pylist() == [""]
