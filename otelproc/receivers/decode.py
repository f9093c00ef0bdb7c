"""OTLP logs (protobuf or JSON) -> :class:`~otelproc.batch.LogBatch`.

The protobuf path never builds a Python object per record: the Numba scanner
(:mod:`otelproc.kernels.otlp_scan`) finds every field as an ``(offset,
length)`` slice of the request, then Numba gathers the strings into the
batch's contiguous buffers. Only AnyValues that are doubles, bytes, arrays or
kvlists (rare in logs) are converted to text in Python, the way the
Collector's ClickHouse exporter does (``pcommon.Value.AsString``).

Errors: a malformed request raises :class:`~otelproc.component.PermanentError`
naming the field and byte; records that are well-formed protobuf but cannot be
accepted (trace_id not 16 bytes, span_id not 8 bytes, severity_number outside
0..255) are dropped one by one and counted in ``Decoded.rejected`` (OTLP
partial success).
"""
from __future__ import annotations

import base64
import binascii
import json
import math
from dataclasses import dataclass
from decimal import Decimal

import numpy as np
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.resource.v1 import resource_pb2

from otelproc.batch import AttrMap, LogBatch, StringArray
from otelproc.component import PermanentError
from otelproc.kernels import otlp_scan as k

__all__ = ["Decoded", "decode_protobuf", "decode_json", "any_value_text", "go_float_text"]

TRACE_ID_BYTES = 16
SPAN_ID_BYTES = 8
MAX_SEVERITY_NUMBER = 255  # LogBatch.severity_number is uint8
# upb refuses messages nested deeper than this; an AnyValue in a LogRecord body
# starts at depth 5 (request > ResourceLogs > ScopeLogs > LogRecord > AnyValue)
_PROTOBUF_DEPTH_LIMIT = 100
_ANY_VALUE_DEPTH_IN_REQUEST = 5

_EntityRef = getattr(resource_pb2, "EntityRef", None)
if _EntityRef is None:  # older opentelemetry-proto: Resource has no entity_refs
    from opentelemetry.proto.common.v1 import common_pb2 as _common_pb2

    _EntityRef = getattr(_common_pb2, "EntityRef", None)


@dataclass
class Decoded:
    """One decoded request: the accepted records, how many were rejected and why."""

    batch: LogBatch
    rejected: int
    message: str


# --------------------------------------------------------------------------- AnyValue -> text
def go_float_text(f: float) -> str:
    """A double as the Collector prints it (pcommon ``float64AsString``: ES6 number formatting).

    Shortest round-trip digits; exponent form only below 1e-6 or from 1e21 on
    (``1e-7``, ``1e+21``), plain decimals otherwise (``1``, ``0.5``, ``10000000000000000``).
    NaN and infinities give the Collector's text ``json: unsupported value: NaN`` / ``+Inf`` / ``-Inf``.
    """
    if math.isnan(f):
        return "json: unsupported value: NaN"
    if math.isinf(f):
        return "json: unsupported value: " + ("+Inf" if f > 0 else "-Inf")
    a = abs(f)
    r = repr(f)
    if a != 0 and (a < 1e-6 or a >= 1e21):
        # Python's repr uses exponent form in this whole range, with at least two
        # exponent digits like Go's 'e' format; Go then trims "e-07" to "e-7".
        if len(r) >= 4 and r[-4] == "e" and r[-3] == "-" and r[-2] == "0":
            r = r[:-2] + r[-1]
        return r
    text = format(Decimal(r).normalize(), "f")
    return text


class _Unsupported(Exception):
    """A NaN/Inf inside an array or kvlist: Go's json.Marshal fails and the text is empty."""


def _go_quote(s: str) -> str:
    # encoding/json string escaping with HTML escaping off (pcommon marshalJSONNoHTMLEscape)
    out = ['"']
    for ch in s:
        c = ord(ch)
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif c < 0x20:
            out.append({0x0A: "\\n", 0x0D: "\\r", 0x09: "\\t", 0x08: "\\b", 0x0C: "\\f"}.get(c, "\\u%04x" % c))
        elif c in (0x2028, 0x2029):
            out.append("\\u%04x" % c)
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _json_of(av: AnyValue) -> str:
    which = av.WhichOneof("value")
    if which == "string_value":
        return _go_quote(av.string_value)
    if which == "bool_value":
        return "true" if av.bool_value else "false"
    if which == "int_value":
        return str(av.int_value)
    if which == "double_value":
        f = av.double_value
        if math.isnan(f) or math.isinf(f):
            raise _Unsupported()
        return go_float_text(f)
    if which == "bytes_value":
        return '"' + base64.b64encode(av.bytes_value).decode("ascii") + '"'
    if which == "array_value":
        return "[" + ",".join(_json_of(v) for v in av.array_value.values) + "]"
    if which == "kvlist_value":
        entries: dict[str, AnyValue] = {}
        for kv in av.kvlist_value.values:  # AsRaw: later duplicates win
            entries[kv.key] = kv.value
        # Go's encoding/json sorts map keys bytewise (== code point order)
        return "{" + ",".join(_go_quote(key) + ":" + _json_of(entries[key]) for key in sorted(entries)) + "}"
    return "null"  # empty value (or string_value_strindex, meaningless in logs)


def any_value_text(av: AnyValue) -> str:
    """``pcommon.Value.AsString()``: how the Collector's ClickHouse exporter stores a body/attribute.

    string as is, int as decimal, double via :func:`go_float_text`, bool ``true``/``false``,
    bytes as standard base64, arrays and kvlists as compact JSON (keys sorted), empty as "".
    """
    which = av.WhichOneof("value")
    if which == "string_value":
        return av.string_value
    if which == "bool_value":
        return "true" if av.bool_value else "false"
    if which == "int_value":
        return str(av.int_value)
    if which == "double_value":
        return go_float_text(av.double_value)
    if which == "bytes_value":
        return base64.b64encode(av.bytes_value).decode("ascii")
    if which in ("array_value", "kvlist_value"):
        try:
            return _json_of(av)
        except _Unsupported:
            return ""
    return ""


def _any_value_depth(av: AnyValue) -> int:
    which = av.WhichOneof("value")
    if which == "array_value":
        return 2 + max((_any_value_depth(v) for v in av.array_value.values), default=0)
    if which == "kvlist_value":
        return 3 + max((_any_value_depth(kv.value) for kv in av.kvlist_value.values), default=0)
    return 1


# --------------------------------------------------------------------------- protobuf
def decode_protobuf(data: bytes | bytearray | memoryview | np.ndarray) -> Decoded:
    """Decode the protobuf bytes of an ``ExportLogsServiceRequest``.

    Raises
    ------
    PermanentError
        "malformed protobuf: ..." with the field, message type and byte of the first problem.
    """
    buf = data if isinstance(data, np.ndarray) else np.frombuffer(data, dtype=np.uint8)
    if buf.dtype != np.uint8 or buf.ndim != 1:
        raise PermanentError(f"decode_protobuf needs bytes, got an array of {buf.dtype} with shape {buf.shape}")
    fused = k.decode_export_logs_request(buf)
    if fused.status == k.STATUS_OK:
        return _batch_from_columns(buf, fused)
    if fused.status == k.STATUS_NEEDS_PYTHON:
        return _build_batch(buf, fused.scan)
    if fused.status == k.STATUS_FALLBACK:
        return _decode_with_library(buf.tobytes())
    raise PermanentError(f"malformed protobuf: {fused.scan.error_message()}")


def _batch_from_columns(buf: np.ndarray, fused: k.FusedDecode) -> Decoded:
    """The LogBatch around the arrays of the fused Numba decode (no per-record work here)."""
    (time_ns, observed_ns, severity, flags, resource_index, scope_index, service_index, sevtext, body, trace, span,
     log_attrs, res_attrs, res_schema, sc_name, sc_version, sc_schema, sc_attrs, svc_off, svc_len,
     event_name) = fused.columns
    data = buf.data
    services = [bytes(data[o:o + n]).decode("utf-8") if o >= 0 else "" for o, n in zip(svc_off.tolist(), svc_len.tolist())]
    message = ""
    if fused.rejected:
        cols = fused.reject_columns
        message = _reject_mask(cols[:, 0], cols[:, 1], cols[:, 2])[1]
    batch = LogBatch(
        time_ns=time_ns, observed_ns=observed_ns, severity_number=severity,
        severity_text=StringArray(*sevtext), body=StringArray(*body), trace_id=trace, span_id=span, flags=flags,
        log_attrs=_map(log_attrs), resource_index=resource_index, scope_index=scope_index,
        service_index=service_index, resource_attrs=_map(res_attrs), resource_schema_url=StringArray(*res_schema),
        scope_name=StringArray(*sc_name), scope_version=StringArray(*sc_version),
        scope_schema_url=StringArray(*sc_schema), scope_attrs=_map(sc_attrs), services=services,
        event_name=StringArray(*event_name))
    return Decoded(batch, fused.rejected, message)


def _map(parts: tuple) -> AttrMap:
    off, keys, values = parts
    return AttrMap(off, StringArray(*keys), StringArray(*values))


def _check_aux(buf: np.ndarray, aux: np.ndarray) -> None:
    for off, ln, typ in aux.tolist():
        if typ == k.AUX_ENTITY_REF and _EntityRef is not None:
            try:
                _EntityRef.FromString(buf[off:off + ln].tobytes())
            except DecodeError as e:
                raise PermanentError(f"malformed protobuf: Resource.entity_refs at byte {off}: {e}") from None


def _rare_values_to_extra(buf: np.ndarray, kind: np.ndarray, off: np.ndarray, ln: np.ndarray, ival: np.ndarray,
                          extra: list[bytes], extra_len: list[int]) -> None:
    """Turn DOUBLE / COMPLEX values into KIND_EXTRA text (in place); the text goes to ``extra``."""
    rare = np.flatnonzero((kind == k.KIND_DOUBLE) | (kind == k.KIND_COMPLEX))
    for j in rare.tolist():
        if kind[j] == k.KIND_DOUBLE:
            text = go_float_text(float(np.int64(ival[j]).view(np.float64)))
        else:
            start = int(off[j])
            try:
                av = AnyValue.FromString(buf[start:start + int(ln[j])].tobytes())
            except DecodeError as e:
                raise PermanentError(f"malformed protobuf: AnyValue at byte {start}: {e}") from None
            if _any_value_depth(av) + _ANY_VALUE_DEPTH_IN_REQUEST > _PROTOBUF_DEPTH_LIMIT:
                raise PermanentError(f"malformed protobuf: AnyValue at byte {start} is nested more than "
                                     f"{_PROTOBUF_DEPTH_LIMIT} messages deep")
            text = any_value_text(av)
        encoded = text.encode("utf-8")
        kind[j] = k.KIND_EXTRA
        off[j] = extra_len[0]
        ln[j] = len(encoded)
        ival[j] = 0
        extra.append(encoded)
        extra_len[0] += len(encoded)


def _strings(buf: np.ndarray, off: np.ndarray, ln: np.ndarray) -> StringArray:
    data, offsets = k.gather_slices(buf, off, ln)
    return StringArray(data, offsets)


def _values(buf: np.ndarray, extra: np.ndarray, kind, off, ln, ival) -> StringArray:
    data, offsets = k.gather_values(buf, extra, kind, off, ln, ival)
    return StringArray(data, offsets)


def _attr_map(buf: np.ndarray, extra: np.ndarray, attrs: np.ndarray, start: np.ndarray, stop: np.ndarray) -> AttrMap:
    idx = k.ranges_to_index(start, stop)
    row_off = np.zeros(len(start) + 1, dtype=np.int64)
    np.cumsum(stop - start, out=row_off[1:])
    a = attrs[idx]
    keys = _strings(buf, a[:, k.ATTR_KEY_OFF], a[:, k.ATTR_KEY_LEN])
    values = _values(buf, extra, a[:, k.ATTR_KIND], a[:, k.ATTR_OFF], a[:, k.ATTR_LEN], a[:, k.ATTR_IVAL])
    return AttrMap(row_off, keys, values)


def _ids(buf: np.ndarray, off: np.ndarray, ln: np.ndarray, width: int) -> np.ndarray:
    out = np.zeros((len(off), width), dtype=np.uint8)
    present = ln == width
    if present.any():
        out[present] = buf[off[present][:, None] + np.arange(width, dtype=np.int64)]
    return out


def _reject_mask(sev: np.ndarray, trace_len: np.ndarray, span_len: np.ndarray) -> tuple[np.ndarray, str]:
    bad_trace = (trace_len != 0) & (trace_len != TRACE_ID_BYTES)
    bad_span = (span_len != 0) & (span_len != SPAN_ID_BYTES)
    bad_sev = (sev < 0) | (sev > MAX_SEVERITY_NUMBER)
    keep = ~(bad_trace | bad_span | bad_sev)
    if keep.all():
        return keep, ""
    parts = []
    if bad_trace.any():
        parts.append(f"{int(bad_trace.sum())} with a trace_id that is not {TRACE_ID_BYTES} bytes "
                     f"(first: {int(trace_len[bad_trace][0])} bytes)")
    if bad_span.any():
        parts.append(f"{int(bad_span.sum())} with a span_id that is not {SPAN_ID_BYTES} bytes "
                     f"(first: {int(span_len[bad_span][0])} bytes)")
    if bad_sev.any():
        parts.append(f"{int(bad_sev.sum())} with severity_number outside 0..{MAX_SEVERITY_NUMBER} "
                     f"(first: {int(sev[bad_sev][0])})")
    return keep, f"rejected {int((~keep).sum())} log records: " + "; ".join(parts)


def _services(resource_service: list[str], resource_index: np.ndarray) -> tuple[list[str], np.ndarray]:
    code: dict[str, int] = {}
    res_code = np.asarray([code.setdefault(s, len(code)) for s in resource_service], dtype=np.int32)
    service_index = res_code[resource_index] if len(resource_index) else np.zeros(0, dtype=np.int32)
    return list(code), service_index.astype(np.int32, copy=False)


def _build_batch(buf: np.ndarray, scan: k.ScanResult) -> Decoded:
    _check_aux(buf, scan.aux)
    rec, attrs, res, scopes = scan.records, scan.attrs, scan.resources, scan.scopes

    # text for the rare value kinds (all of them: an invalid nested value fails the whole request,
    # as in the protobuf library, even if its record is rejected below)
    extra_parts: list[bytes] = []
    extra_len = [0]
    a_kind, a_off, a_len, a_ival = (attrs[:, c].copy() for c in (k.ATTR_KIND, k.ATTR_OFF, k.ATTR_LEN, k.ATTR_IVAL))
    _rare_values_to_extra(buf, a_kind, a_off, a_len, a_ival, extra_parts, extra_len)
    b_kind, b_off, b_len, b_ival = (rec[:, c].copy() for c in (k.REC_BODY_KIND, k.REC_BODY_OFF, k.REC_BODY_LEN,
                                                                k.REC_BODY_IVAL))
    _rare_values_to_extra(buf, b_kind, b_off, b_len, b_ival, extra_parts, extra_len)
    extra = np.frombuffer(b"".join(extra_parts), dtype=np.uint8) if extra_parts else np.zeros(0, dtype=np.uint8)
    if extra_parts:
        attrs = attrs.copy()
        attrs[:, k.ATTR_KIND], attrs[:, k.ATTR_OFF], attrs[:, k.ATTR_LEN], attrs[:, k.ATTR_IVAL] = \
            a_kind, a_off, a_len, a_ival

    keep, message = _reject_mask(rec[:, k.REC_SEVERITY], rec[:, k.REC_TRACE_LEN], rec[:, k.REC_SPAN_LEN])
    rejected = int(len(keep) - keep.sum())
    if rejected:
        rec = rec[keep]
        b_kind, b_off, b_len, b_ival = b_kind[keep], b_off[keep], b_len[keep], b_ival[keep]

    resource_index = rec[:, k.REC_RESOURCE].astype(np.int32)
    svc_off, svc_len = res[:, k.RES_SVC_OFF].tolist(), res[:, k.RES_SVC_LEN].tolist()
    resource_service = [buf[o:o + n].tobytes().decode("utf-8") if o >= 0 else "" for o, n in zip(svc_off, svc_len)]
    services, service_index = _services(resource_service, resource_index)

    batch = LogBatch(
        time_ns=np.ascontiguousarray(rec[:, k.REC_TIME]),
        observed_ns=np.ascontiguousarray(rec[:, k.REC_OBSERVED]),
        severity_number=rec[:, k.REC_SEVERITY].astype(np.uint8),
        severity_text=_strings(buf, rec[:, k.REC_SEVTEXT_OFF], rec[:, k.REC_SEVTEXT_LEN]),
        body=_values(buf, extra, b_kind, b_off, b_len, b_ival),
        trace_id=_ids(buf, rec[:, k.REC_TRACE_OFF], rec[:, k.REC_TRACE_LEN], TRACE_ID_BYTES),
        span_id=_ids(buf, rec[:, k.REC_SPAN_OFF], rec[:, k.REC_SPAN_LEN], SPAN_ID_BYTES),
        flags=rec[:, k.REC_FLAGS].astype(np.uint32),
        log_attrs=_attr_map(buf, extra, attrs, rec[:, k.REC_ATTR_START], rec[:, k.REC_ATTR_END]),
        resource_index=resource_index,
        scope_index=rec[:, k.REC_SCOPE].astype(np.int32),
        service_index=service_index,
        resource_attrs=_attr_map(buf, extra, attrs, res[:, k.RES_ATTR_START], res[:, k.RES_ATTR_END]),
        resource_schema_url=_strings(buf, res[:, k.RES_SCHEMA_OFF], res[:, k.RES_SCHEMA_LEN]),
        scope_name=_strings(buf, scopes[:, k.SCOPE_NAME_OFF], scopes[:, k.SCOPE_NAME_LEN]),
        scope_version=_strings(buf, scopes[:, k.SCOPE_VERSION_OFF], scopes[:, k.SCOPE_VERSION_LEN]),
        scope_schema_url=_strings(buf, scopes[:, k.SCOPE_SCHEMA_OFF], scopes[:, k.SCOPE_SCHEMA_LEN]),
        scope_attrs=_attr_map(buf, extra, attrs, scopes[:, k.SCOPE_ATTR_START], scopes[:, k.SCOPE_ATTR_END]),
        services=services,
        event_name=_strings(buf, rec[:, k.REC_EVENT_OFF], rec[:, k.REC_EVENT_LEN]),
    )
    return Decoded(batch, rejected, message)


def _decode_with_library(data: bytes) -> Decoded:
    """The protobuf library path, for the rare valid shapes the scanner leaves to it
    (a singular message field repeated in one parent, which protobuf merges). Slow: a Python loop per record."""
    try:
        req = ExportLogsServiceRequest.FromString(data)
    except DecodeError as e:
        raise PermanentError(f"malformed protobuf: {e}") from None

    def texts(kvs) -> list[tuple[str, str]]:
        return [(kv.key, _checked_text(kv.value)) for kv in kvs]

    res_attrs, res_schema, res_service = [], [], []
    sc_name, sc_version, sc_schema, sc_attrs = [], [], [], []
    cols: dict[str, list] = {c: [] for c in ("time", "observed", "sev", "sevtext", "body", "trace", "span", "flags",
                                             "attrs", "res", "scope", "event")}
    for rl in req.resource_logs:
        r = len(res_attrs)
        kvs = list(rl.resource.attributes)
        res_attrs.append(texts(kvs))
        res_schema.append(rl.schema_url)
        svc = ""
        for kv in kvs:
            if kv.key == "service.name":
                svc = kv.value.string_value if kv.value.WhichOneof("value") == "string_value" else ""
                break
        res_service.append(svc)
        for sl in rl.scope_logs:
            s = len(sc_name)
            sc_name.append(sl.scope.name)
            sc_version.append(sl.scope.version)
            sc_schema.append(sl.schema_url)
            sc_attrs.append(texts(sl.scope.attributes))
            for lr in sl.log_records:
                cols["time"].append(lr.time_unix_nano)
                cols["observed"].append(lr.observed_time_unix_nano)
                cols["sev"].append(int(lr.severity_number))
                cols["sevtext"].append(lr.severity_text)
                cols["body"].append(_checked_text(lr.body))
                cols["trace"].append(lr.trace_id)
                cols["span"].append(lr.span_id)
                cols["flags"].append(lr.flags)
                cols["attrs"].append(texts(lr.attributes))
                cols["res"].append(r)
                cols["scope"].append(s)
                cols["event"].append(lr.event_name)
    sev = np.asarray(cols["sev"], dtype=np.int64)
    trace_len = np.asarray([len(t) for t in cols["trace"]], dtype=np.int64)
    span_len = np.asarray([len(t) for t in cols["span"]], dtype=np.int64)
    keep, message = _reject_mask(sev, trace_len, span_len)
    kept = np.flatnonzero(keep).tolist()
    pick = {name: [v[i] for i in kept] for name, v in cols.items()}

    def ids(values: list[bytes], width: int) -> np.ndarray:
        out = np.zeros((len(values), width), dtype=np.uint8)
        for i, v in enumerate(values):
            if len(v) == width:
                out[i] = np.frombuffer(v, dtype=np.uint8)
        return out

    def amap(rows) -> AttrMap:
        off = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum([len(r) for r in rows], out=off[1:])
        return AttrMap(off, StringArray.from_pylist([kk for r in rows for kk, _ in r]),
                       StringArray.from_pylist([vv for r in rows for _, vv in r]))

    resource_index = np.asarray(pick["res"], dtype=np.int32)
    services, service_index = _services(res_service, resource_index)
    batch = LogBatch(
        time_ns=np.asarray(pick["time"], dtype=np.uint64).view(np.int64),
        observed_ns=np.asarray(pick["observed"], dtype=np.uint64).view(np.int64),
        severity_number=np.asarray(pick["sev"], dtype=np.int64).astype(np.uint8),
        severity_text=StringArray.from_pylist(pick["sevtext"]),
        body=StringArray.from_pylist(pick["body"]),
        trace_id=ids(pick["trace"], TRACE_ID_BYTES),
        span_id=ids(pick["span"], SPAN_ID_BYTES),
        flags=np.asarray(pick["flags"], dtype=np.uint32),
        log_attrs=amap(pick["attrs"]),
        resource_index=resource_index,
        scope_index=np.asarray(pick["scope"], dtype=np.int32),
        service_index=service_index,
        resource_attrs=amap(res_attrs),
        resource_schema_url=StringArray.from_pylist(res_schema),
        scope_name=StringArray.from_pylist(sc_name),
        scope_version=StringArray.from_pylist(sc_version),
        scope_schema_url=StringArray.from_pylist(sc_schema),
        scope_attrs=amap(sc_attrs),
        services=services,
        event_name=StringArray.from_pylist(pick["event"]),
    )
    return Decoded(batch, int(len(keep) - len(kept)), message)


def _checked_text(av: AnyValue) -> str:
    if _any_value_depth(av) + _ANY_VALUE_DEPTH_IN_REQUEST > _PROTOBUF_DEPTH_LIMIT:
        raise PermanentError(f"malformed protobuf: an AnyValue is nested more than {_PROTOBUF_DEPTH_LIMIT} "
                             f"messages deep")
    return any_value_text(av)


# --------------------------------------------------------------------------- JSON
_ID_KEYS = (("traceId", TRACE_ID_BYTES), ("trace_id", TRACE_ID_BYTES), ("spanId", SPAN_ID_BYTES),
            ("span_id", SPAN_ID_BYTES))


def _list_field(obj: dict, camel: str, snake: str) -> list:
    value = obj.get(camel, obj.get(snake))
    return value if isinstance(value, list) else []


def _hex_ids_to_base64(request: dict) -> None:
    """OTLP/JSON carries trace/span ids as hex; protobuf's JSON mapping expects base64 for bytes."""
    for rl in _list_field(request, "resourceLogs", "resource_logs"):
        if not isinstance(rl, dict):
            continue
        for sl in _list_field(rl, "scopeLogs", "scope_logs"):
            if not isinstance(sl, dict):
                continue
            for lr in _list_field(sl, "logRecords", "log_records"):
                if not isinstance(lr, dict):
                    continue
                for key, _width in _ID_KEYS:
                    v = lr.get(key)
                    if isinstance(v, str):
                        try:
                            raw = bytes.fromhex(v)
                        except ValueError:
                            raise PermanentError(f"malformed OTLP JSON: logRecord {key} {v[:40]!r} is not hex") from None
                        lr[key] = base64.b64encode(raw).decode("ascii")


def decode_json(data: bytes | str) -> Decoded:
    """Decode an OTLP/JSON ``ExportLogsServiceRequest`` (hex ids, camelCase or snake_case keys,
    int64 as strings or numbers, enums as ints or names; unknown fields are ignored as the spec requires).

    Raises
    ------
    PermanentError
        "malformed JSON: ..." / "malformed OTLP JSON: ..." with the parser's message.
    """
    try:
        obj = json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise PermanentError(f"malformed JSON: {e}") from None
    if not isinstance(obj, dict):
        raise PermanentError(f"malformed OTLP JSON: expected an object at the top level, got {type(obj).__name__}")
    _hex_ids_to_base64(obj)
    try:
        req = json_format.ParseDict(obj, ExportLogsServiceRequest(), ignore_unknown_fields=True)
    except (json_format.ParseError, RecursionError, binascii.Error, ValueError, TypeError) as e:
        raise PermanentError(f"malformed OTLP JSON: {e}") from None
    return decode_protobuf(req.SerializeToString())
