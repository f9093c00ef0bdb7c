"""Series building blocks: pull durations out of log bodies, aggregate points into
(bucket, series) cells.

* :func:`extract_durations` scans UTF-8 bodies (one ``uint8`` buffer plus
  ``int64`` offsets) for a duration keyword (``took``, ``latency``,
  ``duration``, ``elapsed``, ``time``; case-insensitive, at a word start)
  followed by a number and an optional unit, and returns the value in
  milliseconds. This is the ``<*>`` after such a word in the line's template;
  its ordinal among the matches of the line is the parameter position.
* :func:`duration_plan` + :func:`durations_from_params` give the same from the
  patterns processor's columns: the template (once per distinct template) says
  which parameter follows a duration word, and per line only that parameter is
  parsed from ``pattern_params``; a template that cannot tell (a duration word
  touching a ``<*>``) or a line whose parameter count is not its template's is
  scanned as a body. Not seen: a duration word *inside* a parameter.
* :class:`SeriesTable` (series key -> dense id) and :func:`distinct_first_rows`:
  hash tables, O(1) per point, for the lookups that sorted the batch's keys.
* :func:`aggregate_cells` turns points (bucket row, series id, value) into
  dense ``[B, S]`` matrices of count / sum / max / p50 / p95 / trimmed mean of log.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit

__all__ = ["extract_durations", "duration_plan", "durations_from_params", "DurationPlan", "aggregate_cells",
           "DURATION_KEYWORDS", "PLAN_NONE", "PLAN_PARAMS", "PLAN_BODY", "SeriesTable",
           "distinct_first_rows"]

DURATION_KEYWORDS = ("took", "latency", "duration", "elapsed", "time")

_KW_BYTES = [k.encode() for k in DURATION_KEYWORDS]
_KW_BUF = np.frombuffer(b"".join(_KW_BYTES), dtype=np.uint8).copy()
_KW_OFF = np.zeros(len(_KW_BYTES) + 1, dtype=np.int64)
np.cumsum([len(k) for k in _KW_BYTES], out=_KW_OFF[1:])


@njit(cache=True, nogil=True, inline="always")
def _lower(c):
    return c + 32 if 65 <= c <= 90 else c


@njit(cache=True, nogil=True, inline="always")
def _is_alpha(c):
    return (97 <= c <= 122) or (65 <= c <= 90)


@njit(cache=True, nogil=True)
def _parse_unit(buf, i, end):
    """Unit at buf[i:] -> (milliseconds per unit, bytes consumed); no unit = ms."""
    j = i
    while j < end and buf[j] == 32:  # "30 ms"
        j += 1
    # collect up to 12 letters (or the micro sign 0xC2 0xB5)
    k = j
    micro = False
    if k + 1 < end and buf[k] == 0xC2 and buf[k + 1] == 0xB5:
        micro = True
        k += 2
    start = k
    while k < end and _is_alpha(buf[k]) and k - start < 12:
        k += 1
    n = k - start
    if micro:
        if n == 1 and _lower(buf[start]) == 115:
            return 1e-3, k - i
        return 1.0, 0
    if n == 0:
        return 1.0, 0
    c0 = _lower(buf[start])
    c1 = _lower(buf[start + 1]) if n > 1 else 0
    if c0 == 109 and (c1 == 115 or c1 == 105):  # ms, msec, millis, milliseconds
        return 1.0, k - i
    if c0 == 117 and c1 == 115 and n == 2:  # us
        return 1e-3, k - i
    if c0 == 110 and c1 == 115 and n == 2:  # ns
        return 1e-6, k - i
    if c0 == 115 and (n == 1 or c1 == 101):  # s, sec, secs, seconds
        return 1000.0, k - i
    return 1.0, 0


@njit(cache=True, nogil=True)
def _keyword_at(buf, i, a, b, kw_buf, kw_off):
    """Length of the duration word (case-insensitive, a whole word) starting at buf[i] within buf[a:b], else -1."""
    if i > a and _is_alpha(buf[i - 1]):
        return -1
    c = _lower(buf[i])
    for k in range(len(kw_off) - 1):
        ka = kw_off[k]
        kl = kw_off[k + 1] - ka
        if i + kl <= b and kw_buf[ka] == c:
            ok = True
            for q in range(1, kl):
                if _lower(buf[i + q]) != kw_buf[ka + q]:
                    ok = False
                    break
            if ok and (i + kl == b or not _is_alpha(buf[i + kl])):
                return kl
    return -1


@njit(cache=True, nogil=True)
def _scan_line(buf, a, b, r, kw_buf, kw_off, line_out, ord_out, val_out, m):
    """Durations of the body ``buf[a:b]`` (row r) appended at ``m`` (capacity len(val_out)); returns the new m."""
    cap = len(val_out)
    ordinal = 0
    i = a
    while i < b:
        matched = _keyword_at(buf, i, a, b, kw_buf, kw_off)
        if matched < 0:
            i += 1
            continue
        j = i + matched
        skipped = 0
        while j < b and skipped < 3 and _is_separator(buf[j]):
            j += 1
            skipped += 1
        v, nd, j = _parse_number(buf, j, b)
        if nd == 0:
            i += matched
            continue
        unit, used = _parse_unit(buf, j, b)
        if m < cap:
            line_out[m] = r
            ord_out[m] = ordinal
            val_out[m] = v * unit
            m += 1
        ordinal += 1
        i = j + used
    return m


@njit(cache=True, nogil=True, inline="always")
def _is_separator(c):
    # what may stand between a duration word and its number: space = : " ' tab
    return c == 32 or c == 61 or c == 58 or c == 34 or c == 39 or c == 9


@njit(cache=True, nogil=True)
def _parse_number(buf, j, b):
    """digits [. digits] at buf[j:b] -> (value, digits read, index after the number)."""
    v = 0.0
    nd = 0
    while j < b and 48 <= buf[j] <= 57:
        v = v * 10.0 + (buf[j] - 48)
        j += 1
        nd += 1
    if j < b and buf[j] == 46:
        j += 1
        scale = 0.1
        while j < b and 48 <= buf[j] <= 57:
            v += (buf[j] - 48) * scale
            scale *= 0.1
            j += 1
            nd += 1
    return v, nd, j


@njit(cache=True, nogil=True)
def _extract_durations(buf, off, kw_buf, kw_off, line_out, ord_out, val_out):
    n = len(off) - 1
    m = 0
    for r in range(n):
        m = _scan_line(buf, off[r], off[r + 1], r, kw_buf, kw_off, line_out, ord_out, val_out, m)
    return m


def extract_durations(body_buf: np.ndarray, body_off: np.ndarray, max_per_line: int = 4
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Durations after duration words in every body, normalised to milliseconds.

    Parameters
    ----------
    body_buf : uint8[total_bytes]   all bodies, UTF-8
    body_off : int64[n + 1]         body i is ``body_buf[body_off[i]:body_off[i + 1]]``
    max_per_line : int              output capacity is ``n * max_per_line`` (extra matches dropped)

    Returns
    -------
    line : int64[m]      row of each match
    ordinal : int32[m]   0 for the first duration of its line, 1 for the next...
    value_ms : float64[m]  value in ms (units ms/msec/millis, s/sec/seconds, us/µs, ns; no unit = ms)
    """
    if body_buf.dtype != np.uint8 or body_off.dtype != np.int64:
        raise TypeError(f"body_buf must be uint8 and body_off int64, got {body_buf.dtype} and {body_off.dtype}")
    if body_off.ndim != 1 or len(body_off) < 1:
        raise ValueError("body_off must be int64[n + 1]")
    n = len(body_off) - 1
    cap = max(0, n * max_per_line)
    line = np.empty(cap, dtype=np.int64)
    ordinal = np.empty(cap, dtype=np.int32)
    value = np.empty(cap, dtype=np.float64)
    m = _extract_durations(body_buf, body_off, _KW_BUF, _KW_OFF, line, ordinal, value) if n else 0
    return line[:m].copy(), ordinal[:m].copy(), value[:m].copy()


# what a template says about its durations (DurationPlan.kind)
PLAN_NONE = 0       # no duration word in the template's literal text: its lines have no durations
PLAN_PARAMS = 1     # every duration is a parameter right after a duration word: parse those parameters
PLAN_BODY = 2       # the template cannot tell (duration word touching a <*>, digits in the literal text): scan the body


class DurationPlan(NamedTuple):
    """Per template of a dictionary, where its lines' durations are (see :func:`duration_plan`).

    kind      : int8[T]      PLAN_NONE / PLAN_PARAMS / PLAN_BODY
    n_params  : int32[T]     ``<*>`` in the template (a line whose parameter count differs is scanned)
    slot_off  : int64[T + 1] template t's duration slots are ``slot_off[t]:slot_off[t + 1]``
    slot_param : int32[s]    parameter index of each slot, ascending within a template
    slot_unit : float64[s]   ms per unit of the text after the ``<*>`` (used when the parameter is just a number)
    """

    kind: np.ndarray
    n_params: np.ndarray
    slot_off: np.ndarray
    slot_param: np.ndarray
    slot_unit: np.ndarray


@njit(cache=True, nogil=True, inline="always")
def _is_var(buf, i, b):
    # the template's "<*>" marker
    return i + 3 <= b and buf[i] == 60 and buf[i + 1] == 42 and buf[i + 2] == 62


@njit(cache=True, nogil=True)
def _count_vars(buf, i, b):
    n = 0
    while i < b:
        if _is_var(buf, i, b):
            n += 1
            i += 3
        else:
            i += 1
    return n


@njit(cache=True, nogil=True)
def _plan_template(buf, a, b, kw_buf, kw_off, slot_param, slot_unit, s):
    """The body scan of :func:`_scan_line` run on a template ``buf[a:b]`` whose ``<*>`` stand for
    parameters. Returns (kind, number of ``<*>``, slots written up to); slots go to ``[s:]``."""
    kind = PLAN_NONE
    var = 0
    s0 = s
    i = a
    while i < b:
        if _is_var(buf, i, b):
            var += 1
            i += 3
            continue
        matched = _keyword_at(buf, i, a, b, kw_buf, kw_off)
        if matched < 0:
            i += 1
            continue
        # a duration word; whether it is one in the body depends on a parameter's bytes when it touches a <*>
        if (i - 3 >= a and _is_var(buf, i - 3, b)) or _is_var(buf, i + matched, b):
            return PLAN_BODY, var + _count_vars(buf, i, b), s0
        j = i + matched
        skipped = 0
        while j < b and skipped < 3 and not _is_var(buf, j, b) and _is_separator(buf[j]):
            j += 1
            skipped += 1
        if _is_var(buf, j, b):
            # the number is this parameter; the unit is in it or, if it is just a number, after the <*>
            unit, used = _parse_unit(buf, j + 3, b)
            slot_param[s] = var
            slot_unit[s] = unit
            s += 1
            kind = PLAN_PARAMS
            var += 1
            # resume after the <*>: a unit word (m/u/n/s...) holds no duration word at a word start
            i = j + 3
            continue
        if j < b and 48 <= buf[j] <= 57:
            return PLAN_BODY, var + _count_vars(buf, j, b), s0  # a literal number after the word (the miner masks digits: not expected)
        i += matched
    return kind, var, s


@njit(cache=True, nogil=True)
def _duration_plan(buf, off, kw_buf, kw_off, kind, n_params, slot_off, slot_param, slot_unit):
    s = 0
    for t in range(len(off) - 1):
        slot_off[t] = s
        k, nv, s = _plan_template(buf, off[t], off[t + 1], kw_buf, kw_off, slot_param, slot_unit, s)
        kind[t] = k
        n_params[t] = nv
    slot_off[len(off) - 1] = s
    return s


def duration_plan(template_buf: np.ndarray, template_off: np.ndarray) -> DurationPlan:
    """Decide once per template where :func:`extract_durations` would find durations in its lines.

    Parameters
    ----------
    template_buf : uint8[total_bytes]  templates (UTF-8, variables written ``<*>``), e.g. the dictionary
                                       of the ``pattern_template`` column
    template_off : int64[T + 1]        template t is ``template_buf[template_off[t]:template_off[t + 1]]``

    Returns
    -------
    DurationPlan: a template whose literal text holds no duration word is PLAN_NONE; one whose every
    duration word is followed (after at most 3 of `` =:"'\t``) by a ``<*>`` is PLAN_PARAMS with that
    parameter as a slot; any other duration word (touching a ``<*>``, or before a literal digit) makes
    it PLAN_BODY. Words inside parameters are not seen (see :func:`durations_from_params`).
    """
    if template_buf.dtype != np.uint8 or template_off.dtype != np.int64:
        raise TypeError(f"template_buf must be uint8 and template_off int64, got {template_buf.dtype} and "
                        f"{template_off.dtype}")
    if template_off.ndim != 1 or len(template_off) < 1:
        raise ValueError("template_off must be int64[T + 1]")
    n = len(template_off) - 1
    # at most one slot per <*> (a slot is a <*>), so the template bytes / 3 bound the slots
    cap = max(1, len(template_buf) // 3)
    kind = np.zeros(n, dtype=np.int8)
    n_params = np.zeros(n, dtype=np.int32)
    slot_off = np.zeros(n + 1, dtype=np.int64)
    slot_param = np.empty(cap, dtype=np.int32)
    slot_unit = np.empty(cap, dtype=np.float64)
    s = _duration_plan(template_buf, template_off, _KW_BUF, _KW_OFF, kind, n_params, slot_off, slot_param, slot_unit)
    return DurationPlan(kind, n_params, slot_off, slot_param[:s].copy(), slot_unit[:s].copy())


@njit(cache=True, nogil=True)
def _durations_from_params(codes, kind, n_params, slot_off, slot_param, slot_unit, pbuf, poff, bbuf, boff, kw_buf,
                           kw_off, line_out, ord_out, val_out):
    n = len(codes)
    cap = len(val_out)
    m = 0
    for r in range(n):
        t = codes[r]
        k = kind[t]
        if k == PLAN_NONE:
            continue
        pa = poff[r]
        pb = poff[r + 1]
        if k == PLAN_PARAMS:
            # the parameters must be the template's (else the body decides)
            cnt = 0
            for q in range(pa, pb):
                if pbuf[q] == 31:
                    cnt += 1
            if cnt != n_params[t]:
                k = PLAN_BODY
        if k == PLAN_BODY:
            m = _scan_line(bbuf, boff[r], boff[r + 1], r, kw_buf, kw_off, line_out, ord_out, val_out, m)
            continue
        ordinal = 0
        p = 0   # index of the parameter starting at q
        q = pa
        for s in range(slot_off[t], slot_off[t + 1]):
            want = slot_param[s]
            while p < want:
                while pbuf[q] != 31:
                    q += 1
                q += 1
                p += 1
            pe = q
            while pbuf[pe] != 31:
                pe += 1
            v, nd, j = _parse_number(pbuf, q, pe)
            if nd == 0:
                continue
            # unit inside the parameter ("74.1ms"), else the template's text after the <*> ("266.2" + " ms")
            rest = j
            while rest < pe and pbuf[rest] == 32:
                rest += 1
            unit = slot_unit[s]
            if rest < pe:
                unit, _ = _parse_unit(pbuf, j, pe)
            if m < cap:
                line_out[m] = r
                ord_out[m] = ordinal
                val_out[m] = v * unit
                m += 1
            ordinal += 1
    return m


def durations_from_params(codes: np.ndarray, plan: DurationPlan, params_buf: np.ndarray, params_off: np.ndarray,
                          body_buf: np.ndarray, body_off: np.ndarray, max_per_line: int = 4
                          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`extract_durations` from the patterns processor's columns: bodies are read only for
    lines whose template is PLAN_BODY or whose parameter count is not the template's.

    Parameters
    ----------
    codes : int32[n]              template of each line (index into the templates of ``plan``)
    plan : DurationPlan           :func:`duration_plan` of those templates
    params_buf : uint8[p_bytes]   the ``pattern_params`` column: each line's parameters, each followed by 0x1f
    params_off : int64[n + 1]
    body_buf : uint8[total_bytes], body_off : int64[n + 1]   the bodies (fallback)
    max_per_line : int            output capacity is ``n * max_per_line``, as in extract_durations

    Returns
    -------
    line : int64[m], ordinal : int32[m], value_ms : float64[m]: what ``extract_durations`` returns for the
    bodies, except that a duration word *inside* a parameter (a generalised word, a path) is not seen.
    """
    for name, a, dt in (("codes", codes, np.int32), ("params_buf", params_buf, np.uint8),
                        ("params_off", params_off, np.int64), ("body_buf", body_buf, np.uint8),
                        ("body_off", body_off, np.int64)):
        if a.dtype != dt:
            raise TypeError(f"{name} must be {np.dtype(dt)}, got {a.dtype} (use .astype(np.{np.dtype(dt)}))")
    n = len(codes)
    if len(params_off) != n + 1 or len(body_off) != n + 1:
        raise ValueError(f"params_off and body_off must be int64[n + 1] = {n + 1}, got {len(params_off)} and "
                         f"{len(body_off)}")
    if n and (int(codes.min()) < 0 or int(codes.max()) >= len(plan.kind)):
        raise IndexError(f"codes must index the plan's {len(plan.kind)} templates")
    cap = max(0, n * max_per_line)
    line = np.empty(cap, dtype=np.int64)
    ordinal = np.empty(cap, dtype=np.int32)
    value = np.empty(cap, dtype=np.float64)
    m = _durations_from_params(codes, plan.kind, plan.n_params, plan.slot_off, plan.slot_param, plan.slot_unit,
                               params_buf, params_off, body_buf, body_off, _KW_BUF, _KW_OFF, line, ordinal,
                               value) if n else 0
    return line[:m].copy(), ordinal[:m].copy(), value[:m].copy()


# splitmix64 finaliser constants (otelproc.anomaly.series.series_key uses the same)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_ONE = np.uint64(1)
_S30 = np.uint64(30)
_S27 = np.uint64(27)
_S31 = np.uint64(31)


@njit(cache=True, nogil=True, inline="always")
def _mix64(x):
    x ^= x >> _S30
    x *= _M1
    x ^= x >> _S27
    x *= _M2
    x ^= x >> _S31
    return x


@njit(cache=True, nogil=True)
def _series_lookup(service, pattern, ordinal, tab_key, tab_id, n_series, ids, new_rows, new_keys):
    # open addressing, linear probing; tab_id -1 = empty; the table is at most half full (the wrapper sees to it)
    mask = np.uint64(len(tab_key) - 1)
    n_new = 0
    for i in range(len(service)):
        h = _mix64(np.uint64(service[i]) + _GOLDEN)
        h = _mix64(h ^ pattern[i])
        key = _mix64(h ^ (np.uint64(ordinal[i]) + _ONE))
        slot = key & mask
        while True:
            sid = tab_id[slot]
            if sid < 0:
                sid = n_series + n_new
                tab_key[slot] = key
                tab_id[slot] = sid
                new_rows[n_new] = i
                new_keys[n_new] = key
                n_new += 1
                break
            if tab_key[slot] == key:
                break
            slot = (slot + _ONE) & mask
        ids[i] = sid
    return n_new


@njit(cache=True, nogil=True)
def _table_insert(keys, tab_key, tab_id):
    mask = np.uint64(len(tab_key) - 1)
    for i in range(len(keys)):
        slot = keys[i] & mask
        while tab_id[slot] >= 0:
            slot = (slot + _ONE) & mask
        tab_key[slot] = keys[i]
        tab_id[slot] = i


class SeriesTable:
    """uint64 series key -> dense id (0..S-1, in order of first appearance), O(1) per point.

    keys : uint64[S]  the key of each id; the hash table (``tab_key`` uint64[C], ``tab_id`` int64[C],
    C a power of two >= 2 x the keys it may hold after a call) is derived from it.
    """

    def __init__(self, keys: np.ndarray | None = None) -> None:
        self.keys = np.zeros(0, dtype=np.uint64) if keys is None else np.ascontiguousarray(keys, dtype=np.uint64)
        self._rebuild(len(self.keys))

    def _rebuild(self, room: int) -> None:
        cap = 16
        while cap < 2 * (len(self.keys) + room):
            cap *= 2
        self.tab_key = np.zeros(cap, dtype=np.uint64)
        self.tab_id = np.full(cap, -1, dtype=np.int64)
        _table_insert(self.keys, self.tab_key, self.tab_id)

    def lookup(self, service: np.ndarray, pattern: np.ndarray, ordinal: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Ids of the keys ``series_key(service, pattern, ordinal)`` (new keys get the next ids).

        Parameters
        ----------
        service : int64[m], pattern : uint64[m], ordinal : int64[m]

        Returns
        -------
        ids : int64[m]       dense id of each point
        new_rows : int64[k]  the first point of each new id, in id order
        """
        service = np.ascontiguousarray(service, dtype=np.int64)
        pattern = np.ascontiguousarray(pattern, dtype=np.uint64)
        ordinal = np.ascontiguousarray(ordinal, dtype=np.int64)
        m = len(service)
        if not (len(pattern) == len(ordinal) == m):
            raise ValueError(f"service, pattern, ordinal must have one length, got {m}, {len(pattern)}, {len(ordinal)}")
        if 2 * (len(self.keys) + m) > len(self.tab_key):
            self._rebuild(m)
        ids = np.empty(m, dtype=np.int64)
        new_rows = np.empty(m, dtype=np.int64)
        new_keys = np.empty(m, dtype=np.uint64)
        k = _series_lookup(service, pattern, ordinal, self.tab_key, self.tab_id, len(self.keys), ids, new_rows,
                           new_keys)
        if k:
            self.keys = np.concatenate([self.keys, new_keys[:k]])
        return ids, new_rows[:k].copy()


@njit(cache=True, nogil=True)
def _distinct_first_rows(keys, tab_key, tab_used, rows):
    mask = np.uint64(len(tab_key) - 1)
    u = 0
    for i in range(len(keys)):
        slot = _mix64(keys[i]) & mask
        while tab_used[slot]:
            if tab_key[slot] == keys[i]:
                break
            slot = (slot + _ONE) & mask
        if not tab_used[slot]:
            tab_used[slot] = True
            tab_key[slot] = keys[i]
            rows[u] = i
            u += 1
    return u


def distinct_first_rows(keys: np.ndarray) -> np.ndarray:
    """int64[u]: the row of the first occurrence of each distinct value of ``keys`` (uint64[n]), in
    order of first appearance (a hash set: O(n), where ``np.unique(return_index=True)`` sorts)."""
    keys = np.ascontiguousarray(keys)
    if keys.dtype != np.uint64:
        raise TypeError(f"keys must be uint64, got {keys.dtype} (use .astype(np.uint64))")
    cap = 16
    while cap < 2 * len(keys):
        cap *= 2
    rows = np.empty(len(keys), dtype=np.int64)
    u = _distinct_first_rows(keys, np.zeros(cap, dtype=np.uint64), np.zeros(cap, dtype=np.bool_), rows)
    return rows[:u].copy()


@njit(cache=True, nogil=True)
def _aggregate_cells(bucket, series, value, B, S, with_quantiles, trim, count, nvals, total, vmax, p50, p95,
                     log_tmean, npos):
    m = len(bucket)
    for i in range(m):
        b = bucket[i]
        s = series[i]
        v = value[i]
        count[b, s] += 1.0
        if not np.isnan(v):
            nvals[b, s] += 1.0
            total[b, s] += v
            if np.isnan(vmax[b, s]) or v > vmax[b, s]:
                vmax[b, s] = v
    if not with_quantiles or m == 0:
        return
    cell = np.empty(m, dtype=np.int64)
    for i in range(m):
        cell[i] = bucket[i] * S + series[i]
    # sort by value, then stably by cell: each cell's values end up contiguous and sorted
    o1 = np.argsort(value, kind="mergesort")
    cs = cell[o1]
    o2 = np.argsort(cs, kind="mergesort")
    order = o1[o2]
    i = 0
    while i < m:
        c = cell[order[i]]
        j = i
        while j < m and cell[order[j]] == c:
            j += 1
        # NaNs sort last; use only finite values of the cell
        k = j
        while k > i and np.isnan(value[order[k - 1]]):
            k -= 1
        nv = k - i
        if nv > 0:
            b = c // S
            s = c % S
            p50[b, s] = _quantile_sorted(value, order, i, nv, 0.5)
            p95[b, s] = _quantile_sorted(value, order, i, nv, 0.95)
            # trimmed mean of log(value) over the positive values (a duration of 0 has no log):
            # nearly as efficient as the mean for log-normal noise, and a few extreme lines do not move it
            q = i
            while q < k and value[order[q]] <= 0:
                q += 1
            npv = k - q
            if npv > 0:
                cut = int(trim * npv)
                acc = 0.0
                for u in range(q + cut, k - cut):
                    acc += np.log(value[order[u]])
                log_tmean[b, s] = acc / (npv - 2 * cut)
                npos[b, s] = npv
        i = j


@njit(cache=True, nogil=True, inline="always")
def _quantile_sorted(value, order, start, nv, q):
    pos = q * (nv - 1)
    lo = int(np.floor(pos))
    hi = lo + 1 if lo + 1 < nv else lo
    f = pos - lo
    return value[order[start + lo]] * (1.0 - f) + value[order[start + hi]] * f


def aggregate_cells(bucket: np.ndarray, series: np.ndarray, value: np.ndarray, n_buckets: int, n_series: int,
                    quantiles: bool = True, trim: float = 0.1) -> dict[str, np.ndarray]:
    """Aggregate points into dense (bucket, series) cells.

    Parameters
    ----------
    bucket : int64[m]   row 0..n_buckets-1 of each point
    series : int64[m]   series id 0..n_series-1 of each point
    value : float64[m]  value of each point (NaN = count only)
    quantiles : bool    also compute p50/p95 and the log trimmed mean (sorts the points: O(m log m))
    trim : float        fraction of the positive values cut at each end for ``log_tmean`` (0 <= trim < 0.5)

    Returns
    -------
    dict of float64[n_buckets, n_series]: ``count`` (points, NaN values included), ``sum``, ``mean``
    (NaN where no value), ``max``, ``p50``, ``p95`` (NaN where no value or quantiles=False),
    ``log_tmean`` (mean of log(value) over the positive values without the lowest and highest ``trim``
    share; NaN where none or quantiles=False) and ``npos`` (positive values behind it; 0 where none)
    """
    if not (0.0 <= trim < 0.5):
        raise ValueError(f"trim must be in [0, 0.5), got {trim}")
    bucket = np.ascontiguousarray(bucket, dtype=np.int64)
    series = np.ascontiguousarray(series, dtype=np.int64)
    value = np.ascontiguousarray(value, dtype=np.float64)
    if not (bucket.shape == series.shape == value.shape) or bucket.ndim != 1:
        raise ValueError(f"bucket, series, value must be 1-D of one length, got {bucket.shape}, {series.shape}, "
                         f"{value.shape}")
    if len(bucket) and (bucket.min() < 0 or bucket.max() >= n_buckets or series.min() < 0
                        or series.max() >= n_series):
        raise ValueError("bucket or series id out of range")
    shape = (int(n_buckets), int(n_series))
    count = np.zeros(shape)
    total = np.zeros(shape)
    vmax = np.full(shape, np.nan)
    p50 = np.full(shape, np.nan)
    p95 = np.full(shape, np.nan)
    nvals = np.zeros(shape)
    log_tmean = np.full(shape, np.nan)
    npos = np.zeros(shape)
    _aggregate_cells(bucket, series, value, shape[0], shape[1], bool(quantiles), float(trim), count, nvals, total,
                     vmax, p50, p95, log_tmean, npos)
    # cells whose points all had NaN values have no mean
    mean = np.where(nvals > 0, total / np.maximum(nvals, 1.0), np.nan)
    return {"count": count, "sum": total, "mean": mean, "max": vmax, "p50": p50, "p95": p95, "log_tmean": log_tmean,
            "npos": npos}
