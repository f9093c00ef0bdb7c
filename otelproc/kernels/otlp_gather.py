"""Numba column gather of an OTLP ``ExportLogsServiceRequest``: the scan tables of
:mod:`otelproc.kernels.otlp_wire` to the LogBatch arrays (:class:`LogColumns`).

Strings are copied once into contiguous buffers, ints and bools written as text, ids copied
(records with a trace_id not 16 bytes, a span_id not 8 bytes or a severity outside 0..255 are
left out and counted), attribute maps gathered per record, resource and scope, and the
distinct service names numbered. :func:`decode_export_logs_request` runs the scan and the
gather in one Numba call; :func:`gather_scanned` gathers scan tables whose rare values
(doubles, bytes, arrays, kvlists) the caller has turned into text (``KIND_EXTRA``).
"""
from __future__ import annotations

import threading
from typing import NamedTuple

import numpy as np
from numba import njit

from otelproc.kernels.otlp_wire import (ATTR_COLS, ATTR_IVAL, ATTR_KEY_LEN, ATTR_KEY_OFF, ATTR_KIND, ATTR_LEN,
                                        ATTR_OFF, AUX_COLS, CNT_ATTRS, CNT_AUX, CNT_RECORDS, CNT_RESOURCES,
                                        CNT_SCOPES, ERR_SIZE, ERR_STACK, KIND_BOOL, KIND_COMPLEX, KIND_DOUBLE,
                                        KIND_EXTRA, KIND_INT, KIND_STRING, REC_ATTR_END, REC_ATTR_START,
                                        REC_BODY_IVAL, REC_BODY_KIND, REC_BODY_LEN, REC_BODY_OFF, REC_COLS,
                                        REC_EVENT_LEN, REC_EVENT_OFF, REC_FLAGS, REC_OBSERVED, REC_RESOURCE,
                                        REC_SCOPE, REC_SEVERITY, REC_SEVTEXT_LEN, REC_SEVTEXT_OFF, REC_SPAN_LEN,
                                        REC_SPAN_OFF, REC_TIME, REC_TRACE_LEN, REC_TRACE_OFF, RES_ATTR_END,
                                        RES_ATTR_START, RES_COLS, RES_SCHEMA_LEN, RES_SCHEMA_OFF, RES_SVC_LEN,
                                        RES_SVC_OFF, SCOPE_ATTR_END, SCOPE_ATTR_START, SCOPE_COLS,
                                        SCOPE_NAME_LEN, SCOPE_NAME_OFF, SCOPE_SCHEMA_LEN, SCOPE_SCHEMA_OFF,
                                        SCOPE_VERSION_LEN, SCOPE_VERSION_OFF, STATUS_FALLBACK, STATUS_OK,
                                        ScanResult, _scan_request)


@njit(cache=True, nogil=True, _nrt=False)  # allocates nothing: callable from the _nrt=False gather
def _decimal_len(v):
    if v == 0:
        return 1
    n = 0
    if v < 0:
        n = 1
        # -2**63 has no positive counterpart: count digits of its negation as uint64
        u = np.uint64(-(v + 1)) + np.uint64(1)
    else:
        u = np.uint64(v)
    while u > np.uint64(0):
        n += 1
        u //= np.uint64(10)
    return n


@njit(cache=True, nogil=True, _nrt=False)
def _write_decimal(out, pos, v, n):
    """Write int64 v as decimal text into out[pos:pos+n] (n from _decimal_len)."""
    if v < 0:
        out[pos] = 45  # '-'
        u = np.uint64(-(v + 1)) + np.uint64(1)
    else:
        u = np.uint64(v)
    k = pos + n - 1
    if u == np.uint64(0):
        out[k] = 48
        return
    while u > np.uint64(0):
        out[k] = np.uint8(48 + (u % np.uint64(10)))
        u //= np.uint64(10)
        k -= 1


# --------------------------------------------------------------------------- fused decode (scan + gather)
# One Numba call goes from the request bytes to the final LogBatch arrays. The scan
# tables (records/attrs/resources/scopes) are scratch reused between calls, so only the
# compact outputs are freshly allocated; fresh pages for ~0.6 MB of scan tables per
# 1000-record request used to cost more than the scan itself.
STATUS_NEEDS_PYTHON = 101  # valid, but holds doubles/bytes/arrays/kvlists or entity refs (converted in Python)
STATUS_CAPACITY = 102      # a scratch table was too small; rerun with the capacities in counts


# Every per-row loop below runs in an ``_nrt=False`` function: in an NRT function each call
# with array arguments inside a loop costs reference-count updates (~20 ns each), which
# doubled the decode time. Only ``_decode_request`` allocates, once per column.
@njit(cache=True, nogil=True, _nrt=False, inline="always")
def _copy_bytes(dst, dpos, src, spos, n):
    # loop over views: with plain ``dst[dpos + j]`` indexing the negative-index wraparound
    # check blocks vectorisation (6x slower, measured)
    d = dst[dpos:dpos + n]
    s = src[spos:spos + n]
    for j in range(n):
        d[j] = s[j]


@njit(cache=True, nogil=True, _nrt=False)
def _string_offsets(table, rows, n, c_len, out_off):
    """out_off[0..n] = running total of ``table[rows[i], c_len]``; returns the total."""
    out_off[0] = 0
    total = 0
    for i in range(n):
        total += table[rows[i], c_len]
        out_off[i + 1] = total
    return total


@njit(cache=True, nogil=True, _nrt=False)
def _fill_strings(buf, table, rows, n, c_off, c_len, out, out_off):
    for i in range(n):
        r = rows[i]
        _copy_bytes(out, out_off[i], buf, table[r, c_off], table[r, c_len])


@njit(cache=True, nogil=True)
def _take_strings(buf, table, rows, c_off, c_len):
    """The slices ``buf[table[r, c_off] : +table[r, c_len]]`` for r in rows, as (uint8 buf, int64 offsets)."""
    n = rows.shape[0]
    out_off = np.empty(n + 1, dtype=np.int64)
    out = np.empty(_string_offsets(table, rows, n, c_len, out_off), dtype=np.uint8)
    _fill_strings(buf, table, rows, n, c_off, c_len, out, out_off)
    return out, out_off


@njit(cache=True, nogil=True, _nrt=False)
def _fill_attr_index(table, rows, n, c_start, c_end, idx):
    k = 0
    for i in range(n):
        for j in range(table[rows[i], c_start], table[rows[i], c_end]):
            idx[k] = j
            k += 1


@njit(cache=True, nogil=True)
def _attr_rows(table, rows, c_start, c_end):
    """Attribute rows of each owner row: (row offsets int64[n+1], attribute indices int64[total])."""
    n = rows.shape[0]
    row_off = np.empty(n + 1, dtype=np.int64)
    row_off[0] = 0
    total = 0
    for i in range(n):
        total += table[rows[i], c_end] - table[rows[i], c_start]
        row_off[i + 1] = total
    idx = np.empty(total, dtype=np.int64)
    _fill_attr_index(table, rows, n, c_start, c_end, idx)
    return row_off, idx


@njit(cache=True, nogil=True, _nrt=False)
def _service_codes(buf, resources, n_res, slots, first, code):
    """Number the distinct service.name values of the resources in order of first appearance.

    Fills code[r] (the number of resource r's name) and first[d] (the first resource with
    name d); returns the count of distinct names. A resource without a string service.name
    counts as "". Open addressing on an FNV-1a hash in ``slots`` (a power of two >= 2 n_res,
    filled with -1): linear in the number of resources.
    """
    mask = slots.shape[0] - 1
    u = 0
    for r in range(n_res):
        o = resources[r, RES_SVC_OFF]
        ln = resources[r, RES_SVC_LEN] if o >= 0 else 0
        h = np.uint64(14695981039346656037)
        for j in range(ln):
            h = (h ^ np.uint64(buf[o + j])) * np.uint64(1099511628211)
        s = np.int64(h & np.uint64(mask))
        while True:
            d = slots[s]
            if d < 0:
                slots[s] = u
                first[u] = r
                code[r] = u
                u += 1
                break
            q = first[d]
            qo = resources[q, RES_SVC_OFF]
            qln = resources[q, RES_SVC_LEN] if qo >= 0 else 0
            same = qln == ln
            if same:
                for j in range(ln):
                    if buf[qo + j] != buf[o + j]:
                        same = False
                        break
            if same:
                code[r] = d
                break
            s = (s + 1) & mask
    return u


@njit(cache=True, nogil=True, _nrt=False)
def _needs_python(records, n_rec, attrs, n_attr, n_aux):
    if n_aux > 0:
        return True
    for i in range(n_rec):
        kd = records[i, REC_BODY_KIND]
        if kd == KIND_DOUBLE or kd == KIND_COMPLEX:
            return True
    for i in range(n_attr):
        kd = attrs[i, ATTR_KIND]
        if kd == KIND_DOUBLE or kd == KIND_COMPLEX:
            return True
    return False


@njit(cache=True, nogil=True, _nrt=False)
def _value_len(kd, ln, ival):
    if kd == KIND_STRING or kd == KIND_EXTRA:
        return ln
    if kd == KIND_INT:
        return _decimal_len(ival)
    if kd == KIND_BOOL:
        return 4 if ival != 0 else 5
    return 0


@njit(cache=True, nogil=True, _nrt=False)
def _write_value(out, p, buf, extra, kd, off, ln, ival, n):
    if kd == KIND_STRING:
        _copy_bytes(out, p, buf, off, ln)
    elif kd == KIND_EXTRA:
        _copy_bytes(out, p, extra, off, ln)
    elif kd == KIND_INT:
        _write_decimal(out, p, ival, n)
    elif kd == KIND_BOOL:
        if ival != 0:
            out[p] = 116; out[p + 1] = 114; out[p + 2] = 117; out[p + 3] = 101  # true
        else:
            out[p] = 102; out[p + 1] = 97; out[p + 2] = 108; out[p + 3] = 115; out[p + 4] = 101  # false


@njit(cache=True, nogil=True, _nrt=False)
def _record_sizes(records, n_all, kept, sizes):
    """One pass over the scanned records: which are kept (id lengths 0/16 and 0/8, severity
    0..255), and the byte totals of their severity texts, bodies and event names and their
    attribute count. sizes = [kept, severity text bytes, body bytes, log attributes, event name bytes]."""
    n = 0
    st = 0
    bt = 0
    at = 0
    et = 0
    for i in range(n_all):
        sev = records[i, REC_SEVERITY]
        tl = records[i, REC_TRACE_LEN]
        sl = records[i, REC_SPAN_LEN]
        if 0 <= sev <= 255 and (tl == 0 or tl == 16) and (sl == 0 or sl == 8):
            kept[n] = i
            n += 1
            st += records[i, REC_SEVTEXT_LEN]
            bt += _value_len(records[i, REC_BODY_KIND], records[i, REC_BODY_LEN], records[i, REC_BODY_IVAL])
            at += records[i, REC_ATTR_END] - records[i, REC_ATTR_START]
            et += records[i, REC_EVENT_LEN]
    sizes[0] = n
    sizes[1] = st
    sizes[2] = bt
    sizes[3] = at
    sizes[4] = et


@njit(cache=True, nogil=True, _nrt=False)
def _fill_records(buf, extra, records, kept, n, svc_code, time_ns, observed_ns, severity, flags, resource_index,
                  scope_index, service_index, trace, span, st_buf, st_off, b_buf, b_off, la_off, la_idx,
                  ev_buf, ev_off):
    """One pass over the kept records writing every per-record column (the scan table rows are
    read once: separate passes per column re-read them from cache and cost 2x)."""
    st_off[0] = 0
    b_off[0] = 0
    la_off[0] = 0
    ev_off[0] = 0
    sp = 0
    bp = 0
    ap = 0
    ep = 0
    for j in range(n):
        i = kept[j]
        time_ns[j] = records[i, REC_TIME]
        observed_ns[j] = records[i, REC_OBSERVED]
        severity[j] = records[i, REC_SEVERITY]
        flags[j] = records[i, REC_FLAGS]
        r = records[i, REC_RESOURCE]
        resource_index[j] = r
        scope_index[j] = records[i, REC_SCOPE]
        service_index[j] = svc_code[r]
        if records[i, REC_TRACE_LEN] == 16:
            _copy_bytes(trace[j], 0, buf, records[i, REC_TRACE_OFF], 16)
        else:
            for k in range(16):
                trace[j, k] = 0
        if records[i, REC_SPAN_LEN] == 8:
            _copy_bytes(span[j], 0, buf, records[i, REC_SPAN_OFF], 8)
        else:
            for k in range(8):
                span[j, k] = 0
        ln = records[i, REC_SEVTEXT_LEN]
        _copy_bytes(st_buf, sp, buf, records[i, REC_SEVTEXT_OFF], ln)
        sp += ln
        st_off[j + 1] = sp
        ln = records[i, REC_EVENT_LEN]
        _copy_bytes(ev_buf, ep, buf, records[i, REC_EVENT_OFF], ln)
        ep += ln
        ev_off[j + 1] = ep
        kd = records[i, REC_BODY_KIND]
        ival = records[i, REC_BODY_IVAL]
        ln = _value_len(kd, records[i, REC_BODY_LEN], ival)
        _write_value(b_buf, bp, buf, extra, kd, records[i, REC_BODY_OFF], records[i, REC_BODY_LEN], ival, ln)
        bp += ln
        b_off[j + 1] = bp
        for a in range(records[i, REC_ATTR_START], records[i, REC_ATTR_END]):
            la_idx[ap] = a
            ap += 1
        la_off[j + 1] = ap


@njit(cache=True, nogil=True, _nrt=False)
def _attr_sizes(attrs, idx, n, sizes):
    kt = 0
    vt = 0
    for j in range(n):
        a = idx[j]
        kt += attrs[a, ATTR_KEY_LEN]
        vt += _value_len(attrs[a, ATTR_KIND], attrs[a, ATTR_LEN], attrs[a, ATTR_IVAL])
    sizes[0] = kt
    sizes[1] = vt


# the value writes here and in _fill_records look alike on purpose (duplicates pair): both are per-row loops
# over different tables, sharing _value_len/_write_value; folding them would add a call with array arguments
@njit(cache=True, nogil=True, _nrt=False)
def _fill_attrs(buf, extra, attrs, idx, n, k_buf, k_off, v_buf, v_off):
    k_off[0] = 0
    v_off[0] = 0
    kp = 0
    vp = 0
    for j in range(n):
        a = idx[j]
        ln = attrs[a, ATTR_KEY_LEN]
        _copy_bytes(k_buf, kp, buf, attrs[a, ATTR_KEY_OFF], ln)
        kp += ln
        k_off[j + 1] = kp
        kd = attrs[a, ATTR_KIND]
        ival = attrs[a, ATTR_IVAL]
        ln = _value_len(kd, attrs[a, ATTR_LEN], ival)
        _write_value(v_buf, vp, buf, extra, kd, attrs[a, ATTR_OFF], attrs[a, ATTR_LEN], ival, ln)
        vp += ln
        v_off[j + 1] = vp


@njit(cache=True, nogil=True)
def _take_attrs(buf, extra, attrs, idx):
    """Keys and values of the attribute rows ``idx``: ((key buf, key offsets), (value buf, value offsets))."""
    n = idx.shape[0]
    sizes = np.empty(2, dtype=np.int64)
    _attr_sizes(attrs, idx, n, sizes)
    k_buf = np.empty(sizes[0], dtype=np.uint8)
    k_off = np.empty(n + 1, dtype=np.int64)
    v_buf = np.empty(sizes[1], dtype=np.uint8)
    v_off = np.empty(n + 1, dtype=np.int64)
    _fill_attrs(buf, extra, attrs, idx, n, k_buf, k_off, v_buf, v_off)
    return (k_buf, k_off), (v_buf, v_off)


@njit(cache=True, nogil=True)
def _decode_request(buf, records, attrs, resources, scopes, aux, counts, err):
    """Scan + gather: the request bytes to (status, rejected, columns) (see decode_export_logs_request)."""
    status = np.int64(_scan_request(buf, records, attrs, resources, scopes, aux, counts, err))
    n_all, n_attr, n_res, n_sc = counts[CNT_RECORDS], counts[CNT_ATTRS], counts[CNT_RESOURCES], counts[CNT_SCOPES]
    if status == STATUS_OK and (n_all > records.shape[0] or n_attr > attrs.shape[0] or n_res > resources.shape[0]
                                or n_sc > scopes.shape[0] or counts[CNT_AUX] > aux.shape[0]):
        status = STATUS_CAPACITY
    if status == STATUS_OK and _needs_python(records, n_all, attrs, n_attr, counts[CNT_AUX]):
        status = STATUS_NEEDS_PYTHON
    if status != STATUS_OK:
        # same output types, no rows: the caller takes another path
        n_all = 0
        n_res = 0
        n_sc = 0
    rejected, columns = _gather(buf, np.empty(0, dtype=np.uint8), records, attrs, resources, scopes, n_all, n_res,
                                n_sc)
    return status, rejected, columns


@njit(cache=True, nogil=True)
def _gather(buf, extra, records, attrs, resources, scopes, n_all, n_res, n_sc):
    """The LogBatch arrays of the first n_all records, n_res resources and n_sc scopes of the scan tables:
    (rejected records, the fields of LogColumns in order)."""
    kept = np.empty(n_all, dtype=np.int64)
    sizes = np.empty(5, dtype=np.int64)
    _record_sizes(records, n_all, kept, sizes)
    n = sizes[0]
    size = 16
    while size < 2 * n_res:
        size *= 2
    slots = np.full(size, -1, dtype=np.int64)
    first = np.empty(n_res, dtype=np.int64)
    svc_code = np.empty(n_res, dtype=np.int32)
    u = _service_codes(buf, resources, n_res, slots, first, svc_code)
    time_ns = np.empty(n, dtype=np.int64)
    observed_ns = np.empty(n, dtype=np.int64)
    severity = np.empty(n, dtype=np.uint8)
    flags = np.empty(n, dtype=np.uint32)
    resource_index = np.empty(n, dtype=np.int32)
    scope_index = np.empty(n, dtype=np.int32)
    service_index = np.empty(n, dtype=np.int32)
    trace = np.empty((n, 16), dtype=np.uint8)
    span = np.empty((n, 8), dtype=np.uint8)
    st_buf = np.empty(sizes[1], dtype=np.uint8)
    st_off = np.empty(n + 1, dtype=np.int64)
    b_buf = np.empty(sizes[2], dtype=np.uint8)
    b_off = np.empty(n + 1, dtype=np.int64)
    la_off = np.empty(n + 1, dtype=np.int64)
    la_idx = np.empty(sizes[3], dtype=np.int64)
    ev_buf = np.empty(sizes[4], dtype=np.uint8)
    ev_off = np.empty(n + 1, dtype=np.int64)
    _fill_records(buf, extra, records, kept, n, svc_code, time_ns, observed_ns, severity, flags, resource_index,
                  scope_index, service_index, trace, span, st_buf, st_off, b_buf, b_off, la_off, la_idx,
                  ev_buf, ev_off)
    la_keys, la_vals = _take_attrs(buf, extra, attrs, la_idx)
    res_rows = np.arange(n_res)
    ra_off, ra_idx = _attr_rows(resources, res_rows, RES_ATTR_START, RES_ATTR_END)
    ra_keys, ra_vals = _take_attrs(buf, extra, attrs, ra_idx)
    res_schema = _take_strings(buf, resources, res_rows, RES_SCHEMA_OFF, RES_SCHEMA_LEN)
    sc_rows = np.arange(n_sc)
    sc_name = _take_strings(buf, scopes, sc_rows, SCOPE_NAME_OFF, SCOPE_NAME_LEN)
    sc_version = _take_strings(buf, scopes, sc_rows, SCOPE_VERSION_OFF, SCOPE_VERSION_LEN)
    sc_schema = _take_strings(buf, scopes, sc_rows, SCOPE_SCHEMA_OFF, SCOPE_SCHEMA_LEN)
    sa_off, sa_idx = _attr_rows(scopes, sc_rows, SCOPE_ATTR_START, SCOPE_ATTR_END)
    sa_keys, sa_vals = _take_attrs(buf, extra, attrs, sa_idx)
    # the distinct service names, as slices of buf (-1: "")
    svc_off = np.empty(u, dtype=np.int64)
    svc_len = np.empty(u, dtype=np.int64)
    for d in range(u):
        o = resources[first[d], RES_SVC_OFF]
        svc_off[d] = o
        svc_len[d] = resources[first[d], RES_SVC_LEN] if o >= 0 else 0
    return n_all - n, (time_ns, observed_ns, severity, flags, resource_index, scope_index, service_index,
                       (st_buf, st_off), (b_buf, b_off), trace, span, (la_off, la_keys, la_vals),
                       (ra_off, ra_keys, ra_vals), res_schema, sc_name, sc_version, sc_schema,
                       (sa_off, sa_keys, sa_vals), svc_off, svc_len, (ev_buf, ev_off))


class LogColumns(NamedTuple):
    """The LogBatch arrays of one request. A string column is ``(uint8 buf, int64 offsets[n + 1])``, an
    attribute map ``(row offsets, keys, values)`` with keys/values string columns; distinct service i is
    ``buf[service_off[i]:+service_len[i]]`` of the request ("" when service_off[i] < 0)."""

    time_ns: np.ndarray            # int64[n]
    observed_ns: np.ndarray        # int64[n]
    severity_number: np.ndarray    # uint8[n]
    flags: np.ndarray              # uint32[n]
    resource_index: np.ndarray     # int32[n]
    scope_index: np.ndarray        # int32[n]
    service_index: np.ndarray      # int32[n]
    severity_text: tuple
    body: tuple
    trace_id: np.ndarray           # uint8[n, 16]
    span_id: np.ndarray            # uint8[n, 8]
    log_attrs: tuple
    resource_attrs: tuple
    resource_schema_url: tuple
    scope_name: tuple
    scope_version: tuple
    scope_schema_url: tuple
    scope_attrs: tuple
    service_off: np.ndarray        # int64[u]
    service_len: np.ndarray        # int64[u]
    event_name: tuple


class FusedDecode:
    """What :func:`decode_export_logs_request` produced.

    status    : STATUS_OK (``columns`` holds the batch arrays), STATUS_NEEDS_PYTHON or
                STATUS_FALLBACK (``scan`` holds the scan tables for the slower paths) or an
                ERR_* code (``scan.error_message()`` describes it)
    rejected  : records dropped for bad id lengths or severity (STATUS_OK only)
    reject_columns : int64[n_all, 3] severity, trace_id length, span_id length of every
                record when ``rejected`` > 0 (for the partial-success message), else None
    columns   : LogColumns (STATUS_OK only)
    scan      : ScanResult (all other statuses)
    """

    __slots__ = ("status", "rejected", "reject_columns", "columns", "scan")

    def __init__(self, status, rejected, reject_columns, columns, scan):
        self.status, self.rejected, self.reject_columns = status, rejected, reject_columns
        self.columns, self.scan = columns, scan


class _Scratch:
    """Scan tables of one thread, reused between calls (grown when a request needs more)."""

    def __init__(self) -> None:
        self.caps = [0] * 5
        self.tables: list[np.ndarray] = []
        self.counts = np.zeros(5, dtype=np.int64)
        self.err = np.zeros(ERR_SIZE, dtype=np.int64)

    def ensure(self, caps: list[int]) -> None:
        if self.tables and all(c <= h for c, h in zip(caps, self.caps)):
            return
        # grow by at least 1.5x so a slowly growing request size does not reallocate every time
        self.caps = [max(c, int(h * 1.5)) if c > h else h for c, h in zip(caps, self.caps)]
        self.tables = [np.empty((self.caps[0], REC_COLS), dtype=np.int64),
                       np.empty((self.caps[1], ATTR_COLS), dtype=np.int64),
                       np.empty((self.caps[2], RES_COLS), dtype=np.int64),
                       np.empty((self.caps[3], SCOPE_COLS), dtype=np.int64),
                       np.empty((self.caps[4], AUX_COLS), dtype=np.int64)]

    def nbytes(self) -> int:
        return sum(t.nbytes for t in self.tables)


_thread_scratch = threading.local()
# scratch larger than this (a huge request) is freed after the call instead of kept per thread
MAX_KEPT_SCRATCH_BYTES = 64 << 20


def decode_export_logs_request(buf: np.ndarray) -> FusedDecode:
    """Scan an ``ExportLogsServiceRequest`` and gather its LogBatch arrays in one Numba call.

    Parameters
    ----------
    buf : uint8[nbytes]
        The raw request (concatenated requests are a valid request too).

    Returns
    -------
    FusedDecode
        With STATUS_OK, ``columns`` holds the LogBatch arrays (:class:`LogColumns`).
    """
    if not isinstance(buf, np.ndarray) or buf.dtype != np.uint8 or buf.ndim != 1:
        raise TypeError(f"buf must be a 1-d uint8 array, got {type(buf).__name__} "
                        f"{getattr(buf, 'dtype', '')}; use np.frombuffer(data, dtype=np.uint8)")
    if not buf.flags.c_contiguous:
        buf = np.ascontiguousarray(buf)
    scratch = getattr(_thread_scratch, "scratch", None)
    if scratch is None:
        scratch = _thread_scratch.scratch = _Scratch()
    n = buf.shape[0]
    scratch.ensure([n // 96 + 16, n // 24 + 64, n // 2048 + 8, n // 1024 + 8, 8])
    counts, err = scratch.counts, scratch.err
    out = _decode_request(buf, *scratch.tables, counts, err)
    status = int(out[0])
    if status == STATUS_CAPACITY:
        scratch.ensure([int(c) for c in counts])
        out = _decode_request(buf, *scratch.tables, counts, err)
        status = int(out[0])
    try:
        if status == STATUS_OK:
            return _fused(int(out[1]), out[2], scratch.tables[0][:counts[CNT_RECORDS]])
        if status in (STATUS_NEEDS_PYTHON, STATUS_FALLBACK):
            records, attrs, resources, scopes, aux = scratch.tables
            scan = ScanResult(records[:counts[0]].copy(), attrs[:counts[1]].copy(), resources[:counts[2]].copy(),
                              scopes[:counts[3]].copy(), aux[:counts[4]].copy(), status, err[:ERR_STACK].copy())
            return FusedDecode(status, 0, None, None, scan)
        empty = np.zeros((0, 1), dtype=np.int64)
        return FusedDecode(status, 0, None, None, ScanResult(empty, empty, empty, empty, empty, status,
                                                             err[:ERR_STACK].copy()))
    finally:
        if scratch.nbytes() > MAX_KEPT_SCRATCH_BYTES:
            _thread_scratch.scratch = None


def _fused(rejected: int, columns: tuple, records: np.ndarray) -> FusedDecode:
    reject_columns = records[:, [REC_SEVERITY, REC_TRACE_LEN, REC_SPAN_LEN]] if rejected else None
    return FusedDecode(STATUS_OK, rejected, reject_columns, LogColumns(*columns), None)


def gather_scanned(buf: np.ndarray, extra: np.ndarray, scan: ScanResult) -> FusedDecode:
    """The LogBatch arrays of a scan whose DOUBLE / COMPLEX values the caller turned into ``KIND_EXTRA`` text
    (``off``/``len`` into ``extra``); the same gather as :func:`decode_export_logs_request`."""
    rec, attrs = scan.records, scan.attrs
    if len(attrs) and np.isin(attrs[:, ATTR_KIND], (KIND_DOUBLE, KIND_COMPLEX)).any() or \
            len(rec) and np.isin(rec[:, REC_BODY_KIND], (KIND_DOUBLE, KIND_COMPLEX)).any():
        raise ValueError("gather_scanned: DOUBLE/COMPLEX values must be converted to KIND_EXTRA first")
    rejected, columns = _gather(buf, extra, rec, attrs, scan.resources, scan.scopes, len(rec), len(scan.resources),
                                len(scan.scopes))
    return _fused(int(rejected), columns, rec)
