"""Numba scanner of the protobuf wire format of an OTLP ``ExportLogsServiceRequest``.

The scanner walks the raw request bytes once and writes, for every record,
attribute, resource and scope, integer rows: scalars (times, severity,
flags) and ``(offset, length)`` pairs pointing into the input buffer
(zero-copy). The column gather that turns these rows into LogBatch arrays is
:mod:`otelproc.kernels.otlp_gather` (it runs the scan and the gather in one
Numba call).

Message structure walked (field numbers from opentelemetry-proto)::

    ExportLogsServiceRequest { 1: ResourceLogs* }
    ResourceLogs  { 1: Resource, 2: ScopeLogs*, 3: schema_url }
    Resource      { 1: KeyValue*, 2: dropped_attributes_count, 3: EntityRef* }
    ScopeLogs     { 1: InstrumentationScope, 2: LogRecord*, 3: schema_url }
    InstrumentationScope { 1: name, 2: version, 3: KeyValue*, 4: dropped }
    LogRecord     { 1: time fixed64, 11: observed fixed64, 2: severity_number,
                    3: severity_text, 5: body AnyValue, 6: KeyValue*, 7: dropped,
                    8: flags fixed32, 9: trace_id, 10: span_id, 12: event_name }
    KeyValue      { 1: key, 2: value AnyValue, 3: key_strindex }
    AnyValue      { 1: string, 2: bool, 3: int, 4: double, 5: array, 6: kvlist,
                    7: bytes, 8: string_value_strindex }  (a oneof: last one wins)

Semantics follow the protobuf library (upb) exactly: unknown fields of every
wire type (including nested groups) are skipped; a known field sent with the
wrong wire type is treated as unknown; proto3 ``string`` fields must be valid
UTF-8; varints longer than 10 bytes, tags longer than 5 bytes or above 2**32,
field number 0, wire types 6/7 and unbalanced groups are errors.

Two rare but valid shapes are not resolved here and are reported with
``STATUS_FALLBACK`` so that the caller decodes the request with the protobuf
library: a singular message field that occurs twice in one parent (protobuf
*merges* the two: Resource, InstrumentationScope, body, KeyValue.value).
AnyValues that hold an array, kvlist or bytes are reported as
``KIND_COMPLEX`` with the slice of the whole AnyValue message; doubles as
``KIND_DOUBLE`` with their IEEE bits. The caller converts those in Python.
"""
from __future__ import annotations


import numpy as np
from numba import njit

# --------------------------------------------------------------------------- status / error codes
STATUS_OK = 0
STATUS_FALLBACK = 100  # valid message the scanner leaves to the protobuf library

ERR_TRUNCATED_VARINT = 1
ERR_VARINT_TOO_LONG = 2
ERR_LENGTH_PAST_END = 3
ERR_BAD_WIRE_TYPE = 4
ERR_FIELD_ZERO = 5
ERR_FIXED_PAST_END = 6
ERR_UNBALANCED_GROUP = 7
ERR_BAD_UTF8 = 8
ERR_TOO_DEEP = 9
ERR_BAD_TAG = 10

ERROR_TEXT = {
    ERR_TRUNCATED_VARINT: "truncated varint",
    ERR_VARINT_TOO_LONG: "varint longer than 10 bytes",
    ERR_LENGTH_PAST_END: "length-delimited field runs past the end",
    ERR_BAD_WIRE_TYPE: "invalid wire type",
    ERR_FIELD_ZERO: "field number 0",
    ERR_FIXED_PAST_END: "fixed-width field runs past the end",
    ERR_UNBALANCED_GROUP: "unbalanced group (start/end group tags do not match)",
    ERR_BAD_UTF8: "string field is not valid UTF-8",
    ERR_TOO_DEEP: "groups nested too deeply",
    ERR_BAD_TAG: "invalid tag (longer than 5 bytes or above 2**32)",
}

# message type in which an error happened (err[3])
MSG_REQUEST, MSG_RESOURCE_LOGS, MSG_RESOURCE, MSG_SCOPE_LOGS, MSG_SCOPE, MSG_LOG_RECORD, MSG_KEY_VALUE, MSG_ANY_VALUE = range(8)
MESSAGE_NAMES = ("ExportLogsServiceRequest", "ResourceLogs", "Resource", "ScopeLogs", "InstrumentationScope",
                 "LogRecord", "KeyValue", "AnyValue")

# --------------------------------------------------------------------------- value kinds
KIND_EMPTY = 0    # no value set (or string_value_strindex): text ""
KIND_STRING = 1   # off/len: the UTF-8 bytes
KIND_BOOL = 2     # ival: 0/1
KIND_INT = 3      # ival: the int64
KIND_DOUBLE = 4   # ival: IEEE-754 bits of the double
KIND_COMPLEX = 5  # off/len: the whole AnyValue message (array, kvlist or bytes)
KIND_EXTRA = 6    # set by the caller: off/len into a second ("extra") buffer

# --------------------------------------------------------------------------- output row layouts
# records: int64[cap, REC_COLS]
REC_TIME, REC_OBSERVED, REC_SEVERITY, REC_FLAGS = 0, 1, 2, 3
REC_SEVTEXT_OFF, REC_SEVTEXT_LEN = 4, 5
REC_TRACE_OFF, REC_TRACE_LEN, REC_SPAN_OFF, REC_SPAN_LEN = 6, 7, 8, 9
REC_BODY_KIND, REC_BODY_OFF, REC_BODY_LEN, REC_BODY_IVAL = 10, 11, 12, 13
REC_ATTR_START, REC_ATTR_END, REC_SCOPE, REC_RESOURCE = 14, 15, 16, 17
REC_EVENT_OFF, REC_EVENT_LEN = 18, 19
REC_COLS = 20
# attributes (all levels, in stream order): int64[cap, ATTR_COLS]
ATTR_KEY_OFF, ATTR_KEY_LEN, ATTR_KIND, ATTR_OFF, ATTR_LEN, ATTR_IVAL = 0, 1, 2, 3, 4, 5
ATTR_COLS = 6
# resources: int64[cap, RES_COLS]; RES_SVC_OFF == -1: no service.name, -2: service.name not a string
RES_ATTR_START, RES_ATTR_END, RES_SCHEMA_OFF, RES_SCHEMA_LEN, RES_SVC_OFF, RES_SVC_LEN = 0, 1, 2, 3, 4, 5
RES_COLS = 6
# scopes: int64[cap, SCOPE_COLS]
(SCOPE_RESOURCE, SCOPE_NAME_OFF, SCOPE_NAME_LEN, SCOPE_VERSION_OFF, SCOPE_VERSION_LEN,
 SCOPE_SCHEMA_OFF, SCOPE_SCHEMA_LEN, SCOPE_ATTR_START, SCOPE_ATTR_END) = range(9)
SCOPE_COLS = 9
# aux slices the caller must validate with the protobuf library: int64[cap, AUX_COLS]
AUX_OFF, AUX_LEN, AUX_TYPE = 0, 1, 2
AUX_COLS = 3
AUX_ENTITY_REF = 1
# counts: int64[5]
CNT_RECORDS, CNT_ATTRS, CNT_RESOURCES, CNT_SCOPES, CNT_AUX = 0, 1, 2, 3, 4

MAX_DEPTH = 100  # upb's default recursion limit, used for unknown nested groups
ERR_STACK = 4  # err[:4] is the error report, err[4:] scratch space for group skipping
ERR_SIZE = ERR_STACK + MAX_DEPTH + 1

_SERVICE_NAME = np.frombuffer(b"service.name", dtype=np.uint8).copy()


# --------------------------------------------------------------------------- primitives
@njit(cache=True, nogil=True, _nrt=False, inline="always")
def _fail(err, code, pos, field, msg):
    """Record the first error: err = [code, byte position, field number, message type]."""
    if err[0] == 0:
        err[0] = code
        err[1] = pos
        err[2] = field
        err[3] = msg
    return -1


@njit(cache=True, nogil=True, _nrt=False)
def _varint(buf, pos, end):
    """Decode a varint at ``pos``.

    Returns (value as uint64, position after it); the position is -1 when the
    input ends inside the varint and -2 when it is longer than 10 bytes.
    """
    b = buf[pos] if pos < end else np.uint8(0)
    if pos < end and b < 0x80:
        return np.uint64(b), pos + 1
    result = np.uint64(0)
    shift = np.uint64(0)
    i = pos
    while True:
        if i >= end:
            return result, -1
        if i - pos >= 10:
            return result, -2
        b = buf[i]
        result |= np.uint64(b & 0x7F) << shift
        i += 1
        if b < 0x80:
            return result, i
        shift += np.uint64(7)


@njit(cache=True, nogil=True, _nrt=False, inline="always")
def _read_tag(buf, pos, end, err, msg):
    """Decode a tag. Returns (field number, wire type, next position); next position -1 on error."""
    b = np.int64(buf[pos])
    if b < 0x80 and b >= 8:  # one-byte tag with field >= 1: the hot path
        return b >> 3, b & 7, pos + 1
    return _read_tag_slow(buf, pos, end, err, msg)


@njit(cache=True, nogil=True, _nrt=False)
def _read_tag_slow(buf, pos, end, err, msg):
    value = np.uint64(0)
    shift = np.uint64(0)
    i = pos
    while True:
        if i >= end:
            return np.int64(0), np.int64(0), _fail(err, ERR_TRUNCATED_VARINT, pos, 0, msg)
        if i - pos >= 5:
            return np.int64(0), np.int64(0), _fail(err, ERR_BAD_TAG, pos, 0, msg)
        b = buf[i]
        value |= np.uint64(b & 0x7F) << shift
        i += 1
        if b < 0x80:
            break
        shift += np.uint64(7)
    if value > np.uint64(0xFFFFFFFF):
        return np.int64(0), np.int64(0), _fail(err, ERR_BAD_TAG, pos, 0, msg)
    field = np.int64(value >> np.uint64(3))
    if field == 0:
        return np.int64(0), np.int64(0), _fail(err, ERR_FIELD_ZERO, pos, 0, msg)
    return field, np.int64(value & np.uint64(7)), i


@njit(cache=True, nogil=True, _nrt=False, inline="always")
def _read_varint(buf, pos, end, err, field, msg):
    """A varint field value: (uint64 value, next position or -1 on error)."""
    if pos < end and buf[pos] < 0x80:
        return np.uint64(buf[pos]), pos + 1
    v, nxt = _varint(buf, pos, end)
    if nxt == -1:
        return v, _fail(err, ERR_TRUNCATED_VARINT, pos, field, msg)
    if nxt == -2:
        return v, _fail(err, ERR_VARINT_TOO_LONG, pos, field, msg)
    return v, nxt


@njit(cache=True, nogil=True, _nrt=False, inline="always")
def _read_len(buf, pos, end, err, field, msg):
    """The length prefix of a length-delimited field: (start of payload, end of payload); -1 on error."""
    if pos + 1 < end:
        b0 = np.int64(buf[pos])
        if b0 < 0x80:  # hot path: 1- and 2-byte lengths
            if b0 <= end - pos - 1:
                return pos + 1, pos + 1 + b0
        else:
            b1 = np.int64(buf[pos + 1])
            if b1 < 0x80:
                n = (b0 & 0x7F) | (b1 << 7)
                if n <= end - pos - 2:
                    return pos + 2, pos + 2 + n
    return _read_len_slow(buf, pos, end, err, field, msg)


@njit(cache=True, nogil=True, _nrt=False)
def _read_len_slow(buf, pos, end, err, field, msg):
    n, nxt = _read_varint(buf, pos, end, err, field, msg)
    if nxt < 0:
        return -1, -1
    if n > np.uint64(end - nxt):
        _fail(err, ERR_LENGTH_PAST_END, pos, field, msg)
        return -1, -1
    return nxt, nxt + np.int64(n)


@njit(cache=True, nogil=True, _nrt=False, inline="always")
def _fixed64(buf, pos):
    v = np.uint64(0)
    for k in range(8):
        v |= np.uint64(buf[pos + k]) << np.uint64(8 * k)
    return v


@njit(cache=True, nogil=True, _nrt=False, inline="always")
def _fixed32(buf, pos):
    v = np.uint64(0)
    for k in range(4):
        v |= np.uint64(buf[pos + k]) << np.uint64(8 * k)
    return v


@njit(cache=True, nogil=True, _nrt=False)
def _skip_group(buf, pos, end, field, depth, err, msg):
    """Skip the body of a group started by ``field`` (tag already read); returns the position after its end tag."""
    # the stack of open group field numbers lives in err[ERR_STACK:] (no allocation in the scan)
    stack = err[ERR_STACK:]
    top = 0
    stack[0] = field
    if depth + 1 > MAX_DEPTH:
        return _fail(err, ERR_TOO_DEEP, pos, field, msg)
    while True:
        if pos >= end:
            return _fail(err, ERR_UNBALANCED_GROUP, pos, stack[top], msg)
        tag_pos = pos
        f, wt, pos = _read_tag(buf, pos, end, err, msg)
        if pos < 0:
            return -1
        if wt == 4:
            if f != stack[top]:
                return _fail(err, ERR_UNBALANCED_GROUP, tag_pos, f, msg)
            if top == 0:
                return pos
            top -= 1
        elif wt == 3:
            top += 1
            if depth + 1 + top > MAX_DEPTH:
                return _fail(err, ERR_TOO_DEEP, tag_pos, f, msg)
            stack[top] = f
        else:
            pos = _skip_scalar(buf, pos, end, f, wt, err, msg)
            if pos < 0:
                return -1


@njit(cache=True, nogil=True, _nrt=False)
def _skip_scalar(buf, pos, end, field, wt, err, msg):
    """Skip a field value of wire type 0, 1, 2 or 5; errors on 4, 6, 7 (3 is handled by the caller)."""
    if wt == 0:
        v, nxt = _read_varint(buf, pos, end, err, field, msg)
        return nxt
    if wt == 2:
        s, e = _read_len(buf, pos, end, err, field, msg)
        return e
    if wt == 1:
        if end - pos < 8:
            return _fail(err, ERR_FIXED_PAST_END, pos, field, msg)
        return pos + 8
    if wt == 5:
        if end - pos < 4:
            return _fail(err, ERR_FIXED_PAST_END, pos, field, msg)
        return pos + 4
    if wt == 4:
        return _fail(err, ERR_UNBALANCED_GROUP, pos, field, msg)
    return _fail(err, ERR_BAD_WIRE_TYPE, pos, field, msg)


@njit(cache=True, nogil=True, _nrt=False)
def _skip(buf, pos, end, field, wt, depth, err, msg):
    """Skip an unknown (or wrongly typed) field whose tag has been read."""
    if wt == 3:
        return _skip_group(buf, pos, end, field, depth, err, msg)
    return _skip_scalar(buf, pos, end, field, wt, err, msg)


@njit(cache=True, nogil=True, _nrt=False)
def _utf8_ok(buf, start, end):
    """True when buf[start:end] is valid UTF-8 (no overlongs, surrogates or code points above U+10FFFF)."""
    i = start
    while i < end:
        c = buf[i]
        if c < 0x80:
            i += 1
            continue
        if c < 0xC2:
            return False
        if c < 0xE0:
            if i + 1 >= end or (buf[i + 1] & 0xC0) != 0x80:
                return False
            i += 2
            continue
        if c < 0xF0:
            if i + 2 >= end:
                return False
            c1 = buf[i + 1]
            if (c1 & 0xC0) != 0x80 or (buf[i + 2] & 0xC0) != 0x80:
                return False
            if c == 0xE0 and c1 < 0xA0:
                return False
            if c == 0xED and c1 >= 0xA0:
                return False
            i += 3
            continue
        if c < 0xF5:
            if i + 3 >= end:
                return False
            c1 = buf[i + 1]
            if (c1 & 0xC0) != 0x80 or (buf[i + 2] & 0xC0) != 0x80 or (buf[i + 3] & 0xC0) != 0x80:
                return False
            if c == 0xF0 and c1 < 0x90:
                return False
            if c == 0xF4 and c1 >= 0x90:
                return False
            i += 4
            continue
        return False
    return True


@njit(cache=True, nogil=True, _nrt=False)
def _read_string(buf, pos, end, err, field, msg):
    """A proto3 string field: (start, end) of its bytes after UTF-8 validation; (-1, -1) on error."""
    s, e = _read_len(buf, pos, end, err, field, msg)
    if s < 0:
        return -1, -1
    # ASCII fast path: an OR over a view vectorises (the wraparound check on buf[i] would not)
    v = buf[s:e]
    acc = np.uint8(0)
    for j in range(e - s):
        acc |= v[j]
    if acc >= 0x80 and not _utf8_ok(buf, s, e):
        _fail(err, ERR_BAD_UTF8, pos, field, msg)
        return -1, -1
    return s, e


# --------------------------------------------------------------------------- messages
@njit(cache=True, nogil=True, _nrt=False)
def _scan_any_value(buf, pos, end, depth, err):
    """Scan one AnyValue message occupying buf[pos:end].

    Returns (status, kind, off, len, ival); status 0 or -1 (error, see err).
    """
    kind = KIND_EMPTY
    off = 0
    ln = 0
    ival = np.int64(0)
    complex_seen = False
    msg = MSG_ANY_VALUE
    p = pos
    while p < end:
        tag_pos = p
        f, wt, p = _read_tag(buf, p, end, err, msg)
        if p < 0:
            return -1, 0, 0, 0, ival
        if f == 1 and wt == 2:
            s, e = _read_string(buf, p, end, err, f, msg)
            if s < 0:
                return -1, 0, 0, 0, ival
            kind = KIND_STRING
            off = s
            ln = e - s
            p = e
        elif f == 2 and wt == 0:
            v, p = _read_varint(buf, p, end, err, f, msg)
            if p < 0:
                return -1, 0, 0, 0, ival
            kind = KIND_BOOL
            ival = np.int64(1) if v != np.uint64(0) else np.int64(0)
        elif f == 3 and wt == 0:
            v, p = _read_varint(buf, p, end, err, f, msg)
            if p < 0:
                return -1, 0, 0, 0, ival
            kind = KIND_INT
            ival = np.int64(v)
        elif f == 4 and wt == 1:
            if end - p < 8:
                return _fail(err, ERR_FIXED_PAST_END, p, f, msg), 0, 0, 0, ival
            kind = KIND_DOUBLE
            ival = np.int64(_fixed64(buf, p))
            p += 8
        elif (f == 5 or f == 6 or f == 7) and wt == 2:
            s, e = _read_len(buf, p, end, err, f, msg)
            if s < 0:
                return -1, 0, 0, 0, ival
            # array / kvlist / bytes: the protobuf library parses (and validates) the
            # whole AnyValue later; remember that the oneof now holds a complex value.
            kind = KIND_COMPLEX
            complex_seen = True
            p = e
        elif f == 8 and wt == 0:
            v, p = _read_varint(buf, p, end, err, f, msg)
            if p < 0:
                return -1, 0, 0, 0, ival
            kind = KIND_EMPTY
        else:
            p = _skip(buf, p, end, f, wt, depth, err, msg)
            if p < 0:
                return -1, 0, 0, 0, ival
    if complex_seen:
        # a complex member must be validated even if a later scalar won the oneof
        return 0, KIND_COMPLEX, pos, end - pos, np.int64(0)
    return 0, kind, off, ln, ival


@njit(cache=True, nogil=True, _nrt=False)
def _scan_key_value(buf, pos, end, depth, attrs, counts, err):
    """Scan one KeyValue in buf[pos:end] and append it to ``attrs``.

    Returns (status, key_off, key_len, kind, off, len); status 0, -1 (error) or STATUS_FALLBACK.
    """
    msg = MSG_KEY_VALUE
    key_off = 0
    key_len = 0
    kind = KIND_EMPTY
    off = 0
    ln = 0
    ival = np.int64(0)
    value_seen = False
    p = pos
    while p < end:
        f, wt, p = _read_tag(buf, p, end, err, msg)
        if p < 0:
            return -1, 0, 0, 0, 0, 0
        if f == 1 and wt == 2:
            s, e = _read_string(buf, p, end, err, f, msg)
            if s < 0:
                return -1, 0, 0, 0, 0, 0
            key_off = s
            key_len = e - s
            p = e
        elif f == 2 and wt == 2:
            s, e = _read_len(buf, p, end, err, f, msg)
            if s < 0:
                return -1, 0, 0, 0, 0, 0
            if value_seen:
                return STATUS_FALLBACK, 0, 0, 0, 0, 0
            value_seen = True
            st, kind, off, ln, ival = _scan_any_value(buf, s, e, depth + 1, err)
            if st < 0:
                return -1, 0, 0, 0, 0, 0
            p = e
        else:
            p = _skip(buf, p, end, f, wt, depth, err, msg)
            if p < 0:
                return -1, 0, 0, 0, 0, 0
    a = counts[CNT_ATTRS]
    if a < attrs.shape[0]:
        attrs[a, ATTR_KEY_OFF] = key_off
        attrs[a, ATTR_KEY_LEN] = key_len
        attrs[a, ATTR_KIND] = kind
        attrs[a, ATTR_OFF] = off
        attrs[a, ATTR_LEN] = ln
        attrs[a, ATTR_IVAL] = ival
    counts[CNT_ATTRS] = a + 1
    return 0, key_off, key_len, kind, off, ln


@njit(cache=True, nogil=True, _nrt=False)
def _is_service_name(buf, off, ln):
    if ln != 12:
        return False
    for k in range(12):
        if buf[off + k] != _SERVICE_NAME[k]:
            return False
    return True


@njit(cache=True, nogil=True, _nrt=False)
def _scan_resource(buf, pos, end, r, resources, attrs, aux, counts, err):
    """Scan a Resource message for resource row ``r``. Returns 0, -1 or STATUS_FALLBACK."""
    msg = MSG_RESOURCE
    depth = 2
    have_row = r < resources.shape[0]
    svc_off = -1
    svc_len = 0
    a0 = counts[CNT_ATTRS]
    p = pos
    while p < end:
        f, wt, p = _read_tag(buf, p, end, err, msg)
        if p < 0:
            return -1
        if f == 1 and wt == 2:
            s, e = _read_len(buf, p, end, err, f, msg)
            if s < 0:
                return -1
            st, koff, klen, kind, voff, vlen = _scan_key_value(buf, s, e, depth + 1, attrs, counts, err)
            if st != 0:
                return st
            if svc_off == -1 and _is_service_name(buf, koff, klen):
                # the Collector's ClickHouse exporter uses Value.Str(): "" for non-strings
                if kind == KIND_STRING:
                    svc_off = voff
                    svc_len = vlen
                else:
                    svc_off = -2
            p = e
        elif f == 3 and wt == 2:
            s, e = _read_len(buf, p, end, err, f, msg)
            if s < 0:
                return -1
            x = counts[CNT_AUX]
            if x < aux.shape[0]:
                aux[x, AUX_OFF] = s
                aux[x, AUX_LEN] = e - s
                aux[x, AUX_TYPE] = AUX_ENTITY_REF
            counts[CNT_AUX] = x + 1
            p = e
        else:
            p = _skip(buf, p, end, f, wt, depth, err, msg)
            if p < 0:
                return -1
    if have_row:
        resources[r, RES_ATTR_START] = a0
        resources[r, RES_ATTR_END] = counts[CNT_ATTRS]
        resources[r, RES_SVC_OFF] = svc_off
        resources[r, RES_SVC_LEN] = svc_len
    return 0


@njit(cache=True, nogil=True, _nrt=False)
def _scan_scope(buf, pos, end, sc, scopes, attrs, counts, err):
    """Scan an InstrumentationScope for scope row ``sc``. Returns 0, -1 or STATUS_FALLBACK."""
    msg = MSG_SCOPE
    depth = 3
    have_row = sc < scopes.shape[0]
    a0 = counts[CNT_ATTRS]
    p = pos
    while p < end:
        f, wt, p = _read_tag(buf, p, end, err, msg)
        if p < 0:
            return -1
        if (f == 1 or f == 2) and wt == 2:
            s, e = _read_string(buf, p, end, err, f, msg)
            if s < 0:
                return -1
            if have_row:
                col = SCOPE_NAME_OFF if f == 1 else SCOPE_VERSION_OFF
                scopes[sc, col] = s
                scopes[sc, col + 1] = e - s
            p = e
        elif f == 3 and wt == 2:
            s, e = _read_len(buf, p, end, err, f, msg)
            if s < 0:
                return -1
            st, koff, klen, kind, voff, vlen = _scan_key_value(buf, s, e, depth + 1, attrs, counts, err)
            if st != 0:
                return st
            p = e
        else:
            p = _skip(buf, p, end, f, wt, depth, err, msg)
            if p < 0:
                return -1
    if have_row:
        scopes[sc, SCOPE_ATTR_START] = a0
        scopes[sc, SCOPE_ATTR_END] = counts[CNT_ATTRS]
    return 0


@njit(cache=True, nogil=True, _nrt=False)
def _scan_log_record(buf, pos, end, records, attrs, counts, err):
    """Scan one LogRecord in buf[pos:end] into the next records row. Returns 0, -1 or STATUS_FALLBACK."""
    msg = MSG_LOG_RECORD
    depth = 4
    i = counts[CNT_RECORDS]
    have_row = i < records.shape[0]
    if have_row:
        # every column starts at 0: a record without a field gets offset/length 0 ("")
        for c in range(REC_COLS):
            records[i, c] = 0
    a0 = counts[CNT_ATTRS]
    body_seen = False
    p = pos
    while p < end:
        f, wt, p = _read_tag(buf, p, end, err, msg)
        if p < 0:
            return -1
        if (f == 1 or f == 11) and wt == 1:
            if end - p < 8:
                return _fail(err, ERR_FIXED_PAST_END, p, f, msg)
            if have_row:
                records[i, REC_TIME if f == 1 else REC_OBSERVED] = np.int64(_fixed64(buf, p))
            p += 8
        elif f == 2 and wt == 0:
            v, p = _read_varint(buf, p, end, err, f, msg)
            if p < 0:
                return -1
            if have_row:
                # enum = int32: the low 32 bits, sign-extended
                records[i, REC_SEVERITY] = np.int64(np.int32(v & np.uint64(0xFFFFFFFF)))
        elif f == 3 and wt == 2:
            s, e = _read_string(buf, p, end, err, f, msg)
            if s < 0:
                return -1
            if have_row:
                records[i, REC_SEVTEXT_OFF] = s
                records[i, REC_SEVTEXT_LEN] = e - s
            p = e
        elif f == 5 and wt == 2:
            s, e = _read_len(buf, p, end, err, f, msg)
            if s < 0:
                return -1
            if body_seen:
                return STATUS_FALLBACK  # protobuf merges repeated singular messages
            body_seen = True
            st, kind, off, ln, ival = _scan_any_value(buf, s, e, depth + 1, err)
            if st < 0:
                return -1
            if have_row:
                records[i, REC_BODY_KIND] = kind
                records[i, REC_BODY_OFF] = off
                records[i, REC_BODY_LEN] = ln
                records[i, REC_BODY_IVAL] = ival
            p = e
        elif f == 6 and wt == 2:
            s, e = _read_len(buf, p, end, err, f, msg)
            if s < 0:
                return -1
            st, koff, klen, kind, voff, vlen = _scan_key_value(buf, s, e, depth + 1, attrs, counts, err)
            if st != 0:
                return st
            p = e
        elif f == 8 and wt == 5:
            if end - p < 4:
                return _fail(err, ERR_FIXED_PAST_END, p, f, msg)
            if have_row:
                records[i, REC_FLAGS] = np.int64(_fixed32(buf, p))
            p += 4
        elif (f == 9 or f == 10) and wt == 2:
            s, e = _read_len(buf, p, end, err, f, msg)
            if s < 0:
                return -1
            if have_row:
                col = REC_TRACE_OFF if f == 9 else REC_SPAN_OFF
                records[i, col] = s
                records[i, col + 1] = e - s
            p = e
        elif f == 12 and wt == 2:
            s, e = _read_string(buf, p, end, err, f, msg)  # event_name (a later occurrence wins, as in protobuf)
            if s < 0:
                return -1
            if have_row:
                records[i, REC_EVENT_OFF] = s
                records[i, REC_EVENT_LEN] = e - s
            p = e
        else:
            # 7 dropped_attributes_count and anything unknown or wrongly typed
            p = _skip(buf, p, end, f, wt, depth, err, msg)
            if p < 0:
                return -1
    if have_row:
        records[i, REC_ATTR_START] = a0
        records[i, REC_ATTR_END] = counts[CNT_ATTRS]
    counts[CNT_RECORDS] = i + 1
    return 0


@njit(cache=True, nogil=True, _nrt=False)
def _scan_scope_logs(buf, pos, end, r, records, attrs, scopes, counts, err):
    """Scan one ScopeLogs belonging to resource row ``r``. Returns 0, -1 or STATUS_FALLBACK."""
    msg = MSG_SCOPE_LOGS
    depth = 2
    sc = counts[CNT_SCOPES]
    counts[CNT_SCOPES] = sc + 1
    have_row = sc < scopes.shape[0]
    if have_row:
        for c in range(SCOPE_COLS):
            scopes[sc, c] = 0
        scopes[sc, SCOPE_RESOURCE] = r
        scopes[sc, SCOPE_ATTR_START] = counts[CNT_ATTRS]
        scopes[sc, SCOPE_ATTR_END] = counts[CNT_ATTRS]
    scope_seen = False
    p = pos
    while p < end:
        f, wt, p = _read_tag(buf, p, end, err, msg)
        if p < 0:
            return -1
        if f == 2 and wt == 2:
            s, e = _read_len(buf, p, end, err, f, msg)
            if s < 0:
                return -1
            i = counts[CNT_RECORDS]
            st = _scan_log_record(buf, s, e, records, attrs, counts, err)
            if st != 0:
                return st
            if i < records.shape[0]:
                records[i, REC_SCOPE] = sc
                records[i, REC_RESOURCE] = r
            p = e
        elif f == 1 and wt == 2:
            s, e = _read_len(buf, p, end, err, f, msg)
            if s < 0:
                return -1
            if scope_seen:
                return STATUS_FALLBACK
            scope_seen = True
            st = _scan_scope(buf, s, e, sc, scopes, attrs, counts, err)
            if st != 0:
                return st
            p = e
        elif f == 3 and wt == 2:
            s, e = _read_string(buf, p, end, err, f, msg)
            if s < 0:
                return -1
            if have_row:
                scopes[sc, SCOPE_SCHEMA_OFF] = s
                scopes[sc, SCOPE_SCHEMA_LEN] = e - s
            p = e
        else:
            p = _skip(buf, p, end, f, wt, depth, err, msg)
            if p < 0:
                return -1
    return 0


# _scan_resource_logs and _scan_scope_logs walk alike on purpose (duplicates pair): each message's field
# numbers and row tables are constants in its own loop, which a shared walker would take as arguments.
@njit(cache=True, nogil=True, _nrt=False)
def _scan_resource_logs(buf, pos, end, records, attrs, resources, scopes, aux, counts, err):
    """Scan one ResourceLogs. Returns 0, -1 or STATUS_FALLBACK."""
    msg = MSG_RESOURCE_LOGS
    depth = 1
    r = counts[CNT_RESOURCES]
    counts[CNT_RESOURCES] = r + 1
    have_row = r < resources.shape[0]
    if have_row:
        for c in range(RES_COLS):
            resources[r, c] = 0
        resources[r, RES_ATTR_START] = counts[CNT_ATTRS]
        resources[r, RES_ATTR_END] = counts[CNT_ATTRS]
        resources[r, RES_SVC_OFF] = -1
    resource_seen = False
    p = pos
    while p < end:
        f, wt, p = _read_tag(buf, p, end, err, msg)
        if p < 0:
            return -1
        if f == 2 and wt == 2:
            s, e = _read_len(buf, p, end, err, f, msg)
            if s < 0:
                return -1
            st = _scan_scope_logs(buf, s, e, r, records, attrs, scopes, counts, err)
            if st != 0:
                return st
            p = e
        elif f == 1 and wt == 2:
            s, e = _read_len(buf, p, end, err, f, msg)
            if s < 0:
                return -1
            if resource_seen:
                return STATUS_FALLBACK
            resource_seen = True
            st = _scan_resource(buf, s, e, r, resources, attrs, aux, counts, err)
            if st != 0:
                return st
            p = e
        elif f == 3 and wt == 2:
            s, e = _read_string(buf, p, end, err, f, msg)
            if s < 0:
                return -1
            if have_row:
                resources[r, RES_SCHEMA_OFF] = s
                resources[r, RES_SCHEMA_LEN] = e - s
            p = e
        else:
            p = _skip(buf, p, end, f, wt, depth, err, msg)
            if p < 0:
                return -1
    return 0


@njit(cache=True, nogil=True, _nrt=False)
def _scan_request(buf, records, attrs, resources, scopes, aux, counts, err):
    """Scan a whole ExportLogsServiceRequest. Rows past an array's capacity are counted, not written.

    Returns STATUS_OK, STATUS_FALLBACK or an ERR_* code (details in err).
    """
    for c in range(counts.shape[0]):
        counts[c] = 0
    for c in range(ERR_STACK):
        err[c] = 0
    end = buf.shape[0]
    p = 0
    while p < end:
        f, wt, p = _read_tag(buf, p, end, err, MSG_REQUEST)
        if p < 0:
            return err[0]
        if f == 1 and wt == 2:
            s, e = _read_len(buf, p, end, err, f, MSG_REQUEST)
            if s < 0:
                return err[0]
            st = _scan_resource_logs(buf, s, e, records, attrs, resources, scopes, aux, counts, err)
            if st == STATUS_FALLBACK:
                return STATUS_FALLBACK
            if st < 0:
                return err[0]
            p = e
        else:
            p = _skip(buf, p, end, f, wt, 0, err, MSG_REQUEST)
            if p < 0:
                return err[0]
    return STATUS_OK


class ScanResult:
    """What :func:`scan_export_logs_request` found (all arrays int64, row layouts as the REC_/ATTR_/... constants).

    records   : int64[n, REC_COLS]
    attrs     : int64[a, ATTR_COLS]   resource, scope and record attributes in stream order
    resources : int64[r, RES_COLS]
    scopes    : int64[s, SCOPE_COLS]
    aux       : int64[x, AUX_COLS]    slices the caller must validate with the protobuf library
    status    : STATUS_OK, STATUS_FALLBACK or an ERR_* code
    err       : int64[4]  [code, byte position, field number, message type] of the first error
    """

    __slots__ = ("records", "attrs", "resources", "scopes", "aux", "status", "err")

    def __init__(self, records, attrs, resources, scopes, aux, status, err):
        self.records, self.attrs, self.resources, self.scopes, self.aux = records, attrs, resources, scopes, aux
        self.status, self.err = status, err

    def error_message(self) -> str:
        """A one-line description of the error, naming the field, message type and byte position."""
        code, pos, field, msg = (int(x) for x in self.err)
        where = MESSAGE_NAMES[msg] if 0 <= msg < len(MESSAGE_NAMES) else "message"
        what = ERROR_TEXT.get(code, f"error {code}")
        if code == ERR_LENGTH_PAST_END:
            return f"length-delimited field {field} of {where} at byte {pos} runs past the end"
        if code == ERR_FIXED_PAST_END:
            return f"fixed-width field {field} of {where} at byte {pos} runs past the end"
        if field:
            return f"{what}: field {field} of {where} at byte {pos}"
        return f"{what} in {where} at byte {pos}"


def scan_export_logs_request(buf: np.ndarray) -> ScanResult:
    """Scan the protobuf bytes of an ``ExportLogsServiceRequest`` without copying any string.

    Parameters
    ----------
    buf : uint8[nbytes], C-contiguous
        The raw request (concatenated requests are a valid request too).

    Returns
    -------
    ScanResult
        Row arrays trimmed to the number of rows found. Offsets index ``buf``.
        On an error (``status`` not in (STATUS_OK, STATUS_FALLBACK)) the arrays are empty.
    """
    if not isinstance(buf, np.ndarray) or buf.dtype != np.uint8 or buf.ndim != 1:
        raise TypeError(f"buf must be a 1-d uint8 array, got {type(buf).__name__} "
                        f"{getattr(buf, 'dtype', '')}; use np.frombuffer(data, dtype=np.uint8)")
    if not buf.flags.c_contiguous:
        buf = np.ascontiguousarray(buf)
    n = buf.shape[0]
    # first guess from typical sizes (~170 B/record, ~40 B/attribute); rows past the
    # guess are counted and the scan reruns once with exact capacities
    caps = [n // 96 + 16, n // 24 + 64, n // 2048 + 8, n // 1024 + 8, 8]
    counts = np.zeros(5, dtype=np.int64)
    err = np.zeros(ERR_SIZE, dtype=np.int64)
    for _attempt in range(2):
        records = np.empty((caps[0], REC_COLS), dtype=np.int64)
        attrs = np.empty((caps[1], ATTR_COLS), dtype=np.int64)
        resources = np.empty((caps[2], RES_COLS), dtype=np.int64)
        scopes = np.empty((caps[3], SCOPE_COLS), dtype=np.int64)
        aux = np.empty((caps[4], AUX_COLS), dtype=np.int64)
        status = int(_scan_request(buf, records, attrs, resources, scopes, aux, counts, err))
        if status not in (STATUS_OK, STATUS_FALLBACK):
            empty = np.zeros((0, 1), dtype=np.int64)
            return ScanResult(empty, empty, empty, empty, empty, status, err[:ERR_STACK])
        if status == STATUS_FALLBACK:
            break
        if all(int(counts[k]) <= caps[k] for k in range(5)):
            break
        caps = [max(int(counts[k]), 1) for k in range(5)]
    return ScanResult(records[:counts[0]], attrs[:counts[1]], resources[:counts[2]], scopes[:counts[3]],
                      aux[:counts[4]], status, err[:ERR_STACK])
