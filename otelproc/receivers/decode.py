"""OTLP logs (protobuf or JSON) -> :class:`~otelproc.batch.LogBatch`.

The protobuf path never builds a Python object per record: the Numba scanner
(:mod:`otelproc.kernels.otlp_wire`) finds every field as an ``(offset,
length)`` slice of the request, then the Numba gather
(:mod:`otelproc.kernels.otlp_gather`) copies the columns into the batch's
contiguous buffers. Only AnyValues that are doubles, bytes, arrays or kvlists
(rare in logs) are converted to text in Python, the way the Collector's
ClickHouse exporter does (``pcommon.Value.AsString``), before the same gather.
Every request, protobuf or JSON, becomes a LogBatch in one place
(:func:`_batch_from_columns`).

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
from otelproc.kernels import otlp_gather as g
from otelproc.kernels import otlp_wire as w

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
    fused = g.decode_export_logs_request(buf)
    if fused.status == w.STATUS_FALLBACK:
        # a singular message field repeated in one parent, which protobuf merges: the library's
        # serialization of the request has each once, and the scanner takes it
        buf = np.frombuffer(_merged_by_library(buf), dtype=np.uint8)
        fused = g.decode_export_logs_request(buf)
    if fused.status == g.STATUS_NEEDS_PYTHON:
        fused = g.gather_scanned(buf, _python_values(buf, fused.scan), fused.scan)
    if fused.status != w.STATUS_OK:
        raise PermanentError(f"malformed protobuf: {fused.scan.error_message()}")
    return _batch_from_columns(buf, fused)


def _batch_from_columns(buf: np.ndarray, fused: g.FusedDecode) -> Decoded:
    """The LogBatch around the arrays of the Numba gather (no per-record work here): the one place a
    request becomes a LogBatch."""
    c = fused.columns
    data = buf.data
    services = [bytes(data[o:o + n]).decode("utf-8") if o >= 0 else ""
                for o, n in zip(c.service_off.tolist(), c.service_len.tolist())]
    message = ""
    if fused.rejected:
        cols = fused.reject_columns
        message = _reject_message(cols[:, 0], cols[:, 1], cols[:, 2])
    batch = LogBatch(
        time_ns=c.time_ns, observed_ns=c.observed_ns, severity_number=c.severity_number,
        severity_text=StringArray(*c.severity_text), body=StringArray(*c.body), trace_id=c.trace_id,
        span_id=c.span_id, flags=c.flags, log_attrs=_map(c.log_attrs), resource_index=c.resource_index,
        scope_index=c.scope_index, service_index=c.service_index, resource_attrs=_map(c.resource_attrs),
        resource_schema_url=StringArray(*c.resource_schema_url), scope_name=StringArray(*c.scope_name),
        scope_version=StringArray(*c.scope_version), scope_schema_url=StringArray(*c.scope_schema_url),
        scope_attrs=_map(c.scope_attrs), services=services, event_name=StringArray(*c.event_name))
    return Decoded(batch, fused.rejected, message)


def _map(parts: tuple) -> AttrMap:
    off, keys, values = parts
    return AttrMap(off, StringArray(*keys), StringArray(*values))


def _merged_by_library(buf: np.ndarray) -> bytes:
    try:
        return ExportLogsServiceRequest.FromString(buf.tobytes()).SerializeToString()
    except DecodeError as e:
        raise PermanentError(f"malformed protobuf: {e}") from None


def _python_values(buf: np.ndarray, scan: w.ScanResult) -> np.ndarray:
    """Check the entity refs, and turn every DOUBLE / COMPLEX value of the scan tables into KIND_EXTRA text
    (in place); returns the buffer of that text. All of them: an invalid nested value fails the whole
    request, as in the protobuf library, even if its record is rejected."""
    for off, ln, typ in scan.aux.tolist():
        if typ == w.AUX_ENTITY_REF and _EntityRef is not None:
            try:
                _EntityRef.FromString(buf[off:off + ln].tobytes())
            except DecodeError as e:
                raise PermanentError(f"malformed protobuf: Resource.entity_refs at byte {off}: {e}") from None
    extra: list[bytes] = []
    size = 0
    for table, cols in ((scan.attrs, (w.ATTR_KIND, w.ATTR_OFF, w.ATTR_LEN, w.ATTR_IVAL)),
                        (scan.records, (w.REC_BODY_KIND, w.REC_BODY_OFF, w.REC_BODY_LEN, w.REC_BODY_IVAL))):
        kind, off, ln, ival = cols
        for j in np.flatnonzero((table[:, kind] == w.KIND_DOUBLE) | (table[:, kind] == w.KIND_COMPLEX)).tolist():
            if table[j, kind] == w.KIND_DOUBLE:
                text = go_float_text(float(np.int64(table[j, ival]).view(np.float64)))
            else:
                start = int(table[j, off])
                try:
                    av = AnyValue.FromString(buf[start:start + int(table[j, ln])].tobytes())
                except DecodeError as e:
                    raise PermanentError(f"malformed protobuf: AnyValue at byte {start}: {e}") from None
                if _any_value_depth(av) + _ANY_VALUE_DEPTH_IN_REQUEST > _PROTOBUF_DEPTH_LIMIT:
                    raise PermanentError(f"malformed protobuf: AnyValue at byte {start} is nested more than "
                                         f"{_PROTOBUF_DEPTH_LIMIT} messages deep")
                text = any_value_text(av)
            encoded = text.encode("utf-8")
            table[j, kind], table[j, off], table[j, ln], table[j, ival] = w.KIND_EXTRA, size, len(encoded), 0
            extra.append(encoded)
            size += len(encoded)
    return np.frombuffer(b"".join(extra), dtype=np.uint8) if extra else np.zeros(0, dtype=np.uint8)


def _reject_message(sev: np.ndarray, trace_len: np.ndarray, span_len: np.ndarray) -> str:
    bad_trace = (trace_len != 0) & (trace_len != TRACE_ID_BYTES)
    bad_span = (span_len != 0) & (span_len != SPAN_ID_BYTES)
    bad_sev = (sev < 0) | (sev > MAX_SEVERITY_NUMBER)
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
    return f"rejected {int((bad_trace | bad_span | bad_sev).sum())} log records: " + "; ".join(parts)


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
