"""LogBatch -> OTLP ``ExportLogsServiceRequest`` (protobuf bytes or OTLP/JSON).

Records are grouped into ResourceLogs / ScopeLogs by the batch's
``resource_index`` / ``scope_index`` (groups in order of first appearance,
records in batch order inside a group). Attribute values are sent as
``string_value`` (the batch stores every AnyValue as text). Processor columns
travel as log attributes when present:

=====================  =======================  =====================================
batch column           log attribute            AnyValue
=====================  =======================  =====================================
``pattern_id``         ``log.pattern.id``       string, 16 lowercase hex digits
``pattern_template``   ``log.pattern.template`` string
``anomaly_score``      ``log.anomaly.score``    double
=====================  =======================  =====================================
"""
from __future__ import annotations

import base64
import json

import numpy as np
from google.protobuf import json_format
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from otelproc.batch import LogBatch, StringArray

__all__ = ["encode_protobuf", "encode_json", "to_request", "PATTERN_ID_ATTR", "PATTERN_TEMPLATE_ATTR",
           "ANOMALY_SCORE_ATTR"]

PATTERN_ID_ATTR = "log.pattern.id"
PATTERN_TEMPLATE_ATTR = "log.pattern.template"
ANOMALY_SCORE_ATTR = "log.anomaly.score"


def _kvs(keys: list[str], values: list[str], start: int, stop: int) -> list[KeyValue]:
    return [KeyValue(key=keys[j], value=AnyValue(string_value=values[j])) for j in range(start, stop)]


def _groups(batch: LogBatch) -> list[tuple[int, list[tuple[int, np.ndarray]]]]:
    """[(resource row, [(scope row, record indices), ...]), ...] in order of first appearance."""
    n = len(batch)
    if n == 0:
        return []
    pair = batch.resource_index.astype(np.int64) * (int(batch.scope_index.max()) + 1) + batch.scope_index
    _, first, inverse = np.unique(pair, return_index=True, return_inverse=True)
    # order groups by first appearance, records stay in batch order within a group
    group_rank = np.empty(len(first), dtype=np.int64)
    group_rank[np.argsort(first, kind="stable")] = np.arange(len(first))
    rank_of_record = group_rank[inverse.ravel()]
    order = np.argsort(rank_of_record, kind="stable")
    bounds = np.flatnonzero(np.diff(rank_of_record[order])) + 1
    out: list[tuple[int, list[tuple[int, np.ndarray]]]] = []
    for idx in np.split(order, bounds):
        r, s = int(batch.resource_index[idx[0]]), int(batch.scope_index[idx[0]])
        if out and out[-1][0] == r:
            out[-1][1].append((s, idx))
        else:
            out.append((r, [(s, idx)]))
    return out


def to_request(batch: LogBatch) -> ExportLogsServiceRequest:
    """The batch as an ``ExportLogsServiceRequest`` message."""
    req = ExportLogsServiceRequest()
    if len(batch) == 0:
        return req
    res_keys, res_values = batch.resource_attrs.keys.to_pylist(), batch.resource_attrs.values.to_pylist()
    res_off = batch.resource_attrs.off.tolist()
    sc_keys, sc_values = batch.scope_attrs.keys.to_pylist(), batch.scope_attrs.values.to_pylist()
    sc_off = batch.scope_attrs.off.tolist()
    log_keys, log_values = batch.log_attrs.keys.to_pylist(), batch.log_attrs.values.to_pylist()
    log_off = batch.log_attrs.off.tolist()
    bodies = batch.body.to_pylist()
    sev_text = batch.severity_text.to_pylist()
    event_names = batch.event_name.to_pylist()
    time_ns = batch.time_ns.astype(np.int64).view(np.uint64).tolist()
    observed_ns = batch.observed_ns.astype(np.int64).view(np.uint64).tolist()
    sev = batch.severity_number.tolist()
    flags = batch.flags.tolist()
    trace_set = batch.trace_id.any(axis=1).tolist()
    span_set = batch.span_id.any(axis=1).tolist()
    trace_bytes = batch.trace_id.tobytes()
    span_bytes = batch.span_id.tobytes()

    extra: list[tuple[str, object]] = []
    cols = batch.columns
    if "pattern_id" in cols:
        extra.append((PATTERN_ID_ATTR, ["%016x" % v for v in np.asarray(cols["pattern_id"]).astype(np.uint64).tolist()]))
    if "pattern_template" in cols and isinstance(cols["pattern_template"], StringArray):
        extra.append((PATTERN_TEMPLATE_ATTR, cols["pattern_template"].to_pylist()))
    if "anomaly_score" in cols:
        extra.append((ANOMALY_SCORE_ATTR, np.asarray(cols["anomaly_score"], dtype=np.float64).tolist()))

    schema = batch.resource_schema_url.to_pylist()
    sc_name, sc_version, sc_schema = (batch.scope_name.to_pylist(), batch.scope_version.to_pylist(),
                                      batch.scope_schema_url.to_pylist())
    for r, scopes in _groups(batch):
        rl = req.resource_logs.add(resource=Resource(attributes=_kvs(res_keys, res_values, res_off[r], res_off[r + 1])),
                                   schema_url=schema[r])
        for s, idx in scopes:
            sl = rl.scope_logs.add(scope=InstrumentationScope(name=sc_name[s], version=sc_version[s],
                                                              attributes=_kvs(sc_keys, sc_values, sc_off[s],
                                                                              sc_off[s + 1])),
                                   schema_url=sc_schema[s])
            records = []
            for i in idx.tolist():
                attrs = _kvs(log_keys, log_values, log_off[i], log_off[i + 1])
                for key, values in extra:
                    v = values[i]
                    attrs.append(KeyValue(key=key, value=AnyValue(double_value=v) if isinstance(v, float)
                                          else AnyValue(string_value=v)))
                records.append(LogRecord(
                    time_unix_nano=time_ns[i], observed_time_unix_nano=observed_ns[i],
                    severity_number=sev[i], severity_text=sev_text[i],
                    body=AnyValue(string_value=bodies[i]), attributes=attrs, flags=flags[i],
                    event_name=event_names[i],
                    trace_id=trace_bytes[16 * i:16 * i + 16] if trace_set[i] else b"",
                    span_id=span_bytes[8 * i:8 * i + 8] if span_set[i] else b""))
            sl.log_records.extend(records)
    return req


def encode_protobuf(batch: LogBatch) -> bytes:
    """The batch as protobuf ``ExportLogsServiceRequest`` bytes (OTLP/gRPC and OTLP/HTTP protobuf)."""
    return to_request(batch).SerializeToString()


def _ids_to_hex(obj: dict) -> None:
    for rl in obj.get("resourceLogs", []):
        for sl in rl.get("scopeLogs", []):
            for lr in sl.get("logRecords", []):
                for key in ("traceId", "spanId"):
                    if key in lr:
                        lr[key] = base64.b64decode(lr[key]).hex()


def encode_json(batch: LogBatch) -> bytes:
    """The batch as OTLP/JSON (lowerCamelCase keys, hex trace/span ids, enums as integers,
    64-bit integers as decimal strings)."""
    obj = json_format.MessageToDict(to_request(batch), use_integers_for_enums=True)
    _ids_to_hex(obj)
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")

