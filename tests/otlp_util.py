"""Building OTLP requests in tests (with the protobuf library, independent of our encoder)."""
from __future__ import annotations

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord


def kv(key: str, value) -> KeyValue:
    if isinstance(value, bool):
        return KeyValue(key=key, value=AnyValue(bool_value=value))
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    return KeyValue(key=key, value=AnyValue(string_value=str(value)))


def make_request(bodies: list[str], service: str = "checkout", t0: int = 1_790_000_000_000_000_000,
                 attrs: dict | None = None, severity: int = 9) -> ExportLogsServiceRequest:
    req = ExportLogsServiceRequest()
    rl = req.resource_logs.add()
    rl.resource.attributes.extend([kv("service.name", service), kv("host.name", "node-1")])
    sl = rl.scope_logs.add()
    sl.scope.name = "test-scope"
    for i, body in enumerate(bodies):
        rec = LogRecord(time_unix_nano=t0 + i, observed_time_unix_nano=t0 + i + 5, severity_number=severity,
                        severity_text="INFO", body=AnyValue(string_value=body),
                        trace_id=bytes(range(16)), span_id=bytes(range(8)), flags=1)
        rec.attributes.extend([kv(k, v) for k, v in (attrs or {"line": i}).items()])
        sl.log_records.append(rec)
    return req
