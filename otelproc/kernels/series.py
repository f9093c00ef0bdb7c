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

__all__ = ["extract_durations", "duration_plan", "durations_from_params", "DurationPlan", "Durations",
           "aggregate_cells", "DURATION_KEYWORDS", "DURATION_NEEDS_UNIT", "TIME_UNITS", "PLAN_NONE", "PLAN_PARAMS", "PLAN_BODY", "SeriesTable",
           "distinct_first_rows"]

# Words after which a number is a duration. Those marked True in DURATION_NEEDS_UNIT ("in") count only with
# an explicit time unit ("done in 12 ms", "in 1.5s"; not "in 3 retries").
DURATION_KEYWORDS = ("took", "latency", "duration", "elapsed", "time", "in")
DURATION_NEEDS_UNIT = (False, False, False, False, False, True)

_KW_BYTES = [k.encode() for k in DURATION_KEYWORDS]
_KW_BUF = np.frombuffer(b"".join(_KW_BYTES), dtype=np.uint8).copy()
_KW_OFF = np.zeros(len(_KW_BYTES) + 1, dtype=np.int64)
np.cumsum([len(k) for k in _KW_BYTES], out=_KW_OFF[1:])
_KW_NEEDS_UNIT = np.array(DURATION_NEEDS_UNIT, dtype=np.bool_)

# Time units (milliseconds per unit), matched as whole words, case-insensitively except the one-letter ones
# ("s", "m", "h" lower case only: "5M" is more often a count than five minutes). "m" is minutes, as in Go's
# "1m30s". The micro sign (U+00B5) and the Greek mu (U+03BC) before "s" are microseconds.
TIME_UNITS = {
    "ns": 1e-6, "nsec": 1e-6, "nanos": 1e-6, "nanosecond": 1e-6, "nanoseconds": 1e-6,
    "us": 1e-3, "usec": 1e-3, "usecs": 1e-3, "micros": 1e-3, "microsecond": 1e-3, "microseconds": 1e-3,
    "ms": 1.0, "msec": 1.0, "msecs": 1.0, "millis": 1.0, "millisecond": 1.0, "milliseconds": 1.0,
    "s": 1000.0, "sec": 1000.0, "secs": 1000.0, "second": 1000.0, "seconds": 1000.0,
    "m": 60_000.0, "min": 60_000.0, "mins": 60_000.0, "minute": 60_000.0, "minutes": 60_000.0,
    "h": 3_600_000.0, "hr": 3_600_000.0, "hrs": 3_600_000.0, "hour": 3_600_000.0, "hours": 3_600_000.0,
}
_UNIT_BYTES = [u.encode() for u in TIME_UNITS]
_UNIT_BUF = np.frombuffer(b"".join(_UNIT_BYTES), dtype=np.uint8).copy()
_UNIT_OFF = np.zeros(len(_UNIT_BYTES) + 1, dtype=np.int64)
np.cumsum([len(u) for u in _UNIT_BYTES], out=_UNIT_OFF[1:])
_UNIT_MS = np.array(list(TIME_UNITS.values()), dtype=np.float64)
_MAX_UNIT_LEN = max(len(u) for u in _UNIT_BYTES)


@njit(cache=True, nogil=True, inline="always")
def _lower(c):
    return c + 32 if 65 <= c <= 90 else c


@njit(cache=True, nogil=True, inline="always")
def _is_alpha(c):
    return (97 <= c <= 122) or (65 <= c <= 90)


@njit(cache=True, nogil=True, inline="always")
def _is_upper(c):
    return 65 <= c <= 90


@njit(cache=True, nogil=True, inline="always")
def _is_digit(c):
    return 48 <= c <= 57


@njit(cache=True, nogil=True)
def _unit_word(buf, k, end, camel):
    """A time unit word at buf[k:end] -> (ms per unit, length), (0.0, 0) if none.

    The word is the run of letters at k (the micro sign / Greek mu counts as a letter before "s") and must be
    a whole word: what follows is not a letter or digit. With ``camel`` the word must start upper case and
    may be followed by another upper-case letter (``durationMsTotal``); one-letter units do not count there.
    """
    start = k
    micro = False
    if k + 1 < end and ((buf[k] == 0xC2 and buf[k + 1] == 0xB5) or (buf[k] == 0xCE and buf[k + 1] == 0xBC)):
        micro = True
        k += 2
    ls = k
    if camel and (micro or not _is_upper(buf[k])):
        return 0.0, 0
    k += 1 if k < end and _is_alpha(buf[k]) else 0
    while k < end and _is_alpha(buf[k]) and not (camel and _is_upper(buf[k])) and k - ls <= _MAX_UNIT_LEN:
        k += 1
    n = k - ls
    if n == 0 or n > _MAX_UNIT_LEN:
        return 0.0, 0
    if micro:
        return (1e-3, k - start) if n == 1 and _lower(buf[ls]) == 115 else (0.0, 0)
    if n == 1 and (camel or _is_upper(buf[ls])):
        return 0.0, 0
    for u in range(len(_UNIT_OFF) - 1):
        ua = _UNIT_OFF[u]
        if _UNIT_OFF[u + 1] - ua != n:
            continue
        ok = True
        for q in range(n):
            if _lower(buf[ls + q]) != _UNIT_BUF[ua + q]:
                ok = False
                break
        if ok:
            return _UNIT_MS[u], k - start
    return 0.0, 0


@njit(cache=True, nogil=True)
def _parse_unit(buf, i, end):
    """Unit after a number at buf[i:] (spaces allowed before it) -> (ms per unit, bytes consumed); (0.0, 0)
    when there is none."""
    j = i
    while j < end and buf[j] == 32:  # "30 ms"
        j += 1
    f, n = _unit_word(buf, j, end, False)
    if n == 0:
        return 0.0, 0
    return f, j + n - i


@njit(cache=True, nogil=True)
def _parse_duration(buf, j, b):
    """A number with its unit at buf[j:b]: ``12``, ``12 ms``, ``1.5s``, Go's ``1m30s`` / ``1h2m3.5s``.

    Returns (value, digits read, ms per unit or 0.0 when there is no unit, index after it); the value is in
    milliseconds when there is a unit, else the number as written.
    """
    v, nd, k = _parse_number(buf, j, b)
    if nd == 0:
        return 0.0, 0, 0.0, j
    f, used = _parse_unit(buf, k, b)
    if f == 0.0:
        return v, nd, 0.0, k
    total = v * f
    e = k + used
    # the parts of a compound duration follow each other without spaces ("1m30s")
    while buf[k] != 32 and e < b and _is_digit(buf[e]):
        v2, nd2, k2 = _parse_number(buf, e, b)
        f2, used2 = _unit_word(buf, k2, b, False)
        if f2 == 0.0:
            break
        total += v2 * f2
        e = k2 + used2
    return total, nd, f, e


@njit(cache=True, nogil=True)
def _key_unit(buf, i, b):
    """A unit suffix of a key right after a duration word at buf[i]: ``latency_ms``, ``duration-seconds``,
    ``time.us``, ``durationMs`` -> (ms per unit, bytes consumed); (0.0, 0) when there is none."""
    if i >= b:
        return 0.0, 0
    c = buf[i]
    if c == 95 or c == 45 or c == 46:  # _ - .
        f, n = _unit_word(buf, i + 1, b, False)
        return (f, n + 1) if n else (0.0, 0)
    f, n = _unit_word(buf, i, b, True)
    # camelCase: the unit word must end the key (not "durationMsTotal")
    if n and (i + n >= b or not _is_alpha(buf[i + n])):
        return f, n
    return 0.0, 0


@njit(cache=True, nogil=True)
def _keyword_at(buf, i, a, b, kw_buf, kw_off):
    """(keyword index, length) of the duration word starting at buf[i] within buf[a:b], else (-1, -1).

    Case-insensitive and a whole word, where a camelCase boundary also starts / ends a word
    (``responseTime``, ``durationMs``)."""
    if i > a and _is_alpha(buf[i - 1]) and not (_is_upper(buf[i]) and not _is_upper(buf[i - 1])):
        return -1, -1
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
            if ok and (i + kl == b or not _is_alpha(buf[i + kl]) or _key_unit(buf, i + kl, b)[1] > 0):
                return k, kl
    return -1, -1


@njit(cache=True, nogil=True)
def _scan_line(buf, a, b, r, kw_buf, kw_off, kw_needs_unit, line_out, ord_out, val_out, unit_out, m):
    """Durations of the body ``buf[a:b]`` (row r) appended at ``m`` (capacity len(val_out)); returns the new m."""
    cap = len(val_out)
    ordinal = 0
    i = a
    while i < b:
        k, matched = _keyword_at(buf, i, a, b, kw_buf, kw_off)
        if k < 0:
            i += 1
            continue
        j = i + matched
        key_f, key_n = _key_unit(buf, j, b)
        j += key_n
        skipped = 0
        while j < b and skipped < 3 and _is_separator(buf[j]):
            j += 1
            skipped += 1
        v, nd, f, e = _parse_duration(buf, j, b)
        if f == 0.0:
            f = key_f
            v *= key_f if key_f > 0.0 else 1.0
        if nd == 0 or (f == 0.0 and kw_needs_unit[k]):
            i += matched
            continue
        if m < cap:
            line_out[m] = r
            ord_out[m] = ordinal
            val_out[m] = v
            unit_out[m] = f > 0.0
            m += 1
        ordinal += 1
        i = e
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
def _extract_durations(buf, off, kw_buf, kw_off, kw_needs_unit, line_out, ord_out, val_out, unit_out):
    n = len(off) - 1
    m = 0
    for r in range(n):
        m = _scan_line(buf, off[r], off[r + 1], r, kw_buf, kw_off, kw_needs_unit, line_out, ord_out, val_out,
                       unit_out, m)
    return m


class Durations(NamedTuple):
    """Durations found in a batch's lines (see :func:`extract_durations`).

    line : int64[m]       row of each duration
    ordinal : int32[m]    0 for the first duration of its line, 1 for the next...
    value : float64[m]    milliseconds when ``has_unit``, else the number as written
    has_unit : bool[m]    the unit was written: after the number (``12 ms``, ``1.5s``, ``1m30s``) or as the
                          key's suffix (``latency_ms=12``, ``duration_seconds=0.5``, ``durationMs=12``)
    """

    line: np.ndarray
    ordinal: np.ndarray
    value: np.ndarray
    has_unit: np.ndarray


def _empty_out(n: int, max_per_line: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    cap = max(0, n * max_per_line)
    return (np.empty(cap, dtype=np.int64), np.empty(cap, dtype=np.int32), np.empty(cap, dtype=np.float64),
            np.empty(cap, dtype=np.bool_))


def extract_durations(body_buf: np.ndarray, body_off: np.ndarray, max_per_line: int = 4) -> Durations:
    """Durations after duration words in every body, in milliseconds where the unit is written.

    A duration is a number after a duration word (:data:`DURATION_KEYWORDS`, case-insensitive, a whole word or
    a camelCase part; then at most 3 of `` =:"'\t``), with an optional unit (:data:`TIME_UNITS`, also Go's
    compound ``1h2m3.5s``); without one, the key's unit suffix (``latency_ms``) is the unit. A number without
    any unit is kept as written (``has_unit`` False): its unit is unknown, and guessing one would misread
    seconds as milliseconds or the reverse. After ``in`` only a number with a unit counts.

    Parameters
    ----------
    body_buf : uint8[total_bytes]   all bodies, UTF-8
    body_off : int64[n + 1]         body i is ``body_buf[body_off[i]:body_off[i + 1]]``
    max_per_line : int              output capacity is ``n * max_per_line`` (extra matches dropped)
    """
    if body_buf.dtype != np.uint8 or body_off.dtype != np.int64:
        raise TypeError(f"body_buf must be uint8 and body_off int64, got {body_buf.dtype} and {body_off.dtype}")
    if body_off.ndim != 1 or len(body_off) < 1:
        raise ValueError("body_off must be int64[n + 1]")
    n = len(body_off) - 1
    out = _empty_out(n, max_per_line)
    m = _extract_durations(body_buf, body_off, _KW_BUF, _KW_OFF, _KW_NEEDS_UNIT, *out) if n else 0
    return Durations(*(a[:m].copy() for a in out))


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
    slot_unit : float64[s]   ms per unit of the text after the ``<*>``, else of the key's suffix; 0 = none
                             (used when the parameter is just a number)
    slot_needs_unit : bool[s]  the duration word counts only with a unit ("in"): a bare number is no duration
    """

    kind: np.ndarray
    n_params: np.ndarray
    slot_off: np.ndarray
    slot_param: np.ndarray
    slot_unit: np.ndarray
    slot_needs_unit: np.ndarray


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
def _plan_template(buf, a, b, kw_buf, kw_off, kw_needs_unit, slot_param, slot_unit, slot_needs_unit, s):
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
        k, matched = _keyword_at(buf, i, a, b, kw_buf, kw_off)
        if k < 0:
            i += 1
            continue
        j = i + matched
        key_f, key_n = _key_unit(buf, j, b)
        # a duration word (or its key suffix); whether it is one in the body depends on a parameter's bytes when
        # it touches a <*>
        if (i - 3 >= a and _is_var(buf, i - 3, b)) or _is_var(buf, j, b) or (key_n and _is_var(buf, j + key_n, b)):
            return PLAN_BODY, var + _count_vars(buf, i, b), s0
        j += key_n
        skipped = 0
        while j < b and skipped < 3 and not _is_var(buf, j, b) and _is_separator(buf[j]):
            j += 1
            skipped += 1
        if _is_var(buf, j, b):
            # the number is this parameter; the unit is in it or, if it is just a number, after the <*> or the key's
            unit, used = _parse_unit(buf, j + 3, b)
            slot_param[s] = var
            slot_unit[s] = unit if unit > 0.0 else key_f
            slot_needs_unit[s] = kw_needs_unit[k]
            s += 1
            kind = PLAN_PARAMS
            var += 1
            # resume after the <*>: a unit word holds no duration word at a word start
            i = j + 3
            continue
        if j < b and _is_digit(buf[j]):
            return PLAN_BODY, var + _count_vars(buf, j, b), s0  # a literal number after the word (the miner masks digits: not expected)
        i += matched
    return kind, var, s


@njit(cache=True, nogil=True)
def _duration_plan(buf, off, kw_buf, kw_off, kw_needs_unit, kind, n_params, slot_off, slot_param, slot_unit,
                   slot_needs_unit):
    s = 0
    for t in range(len(off) - 1):
        slot_off[t] = s
        k, nv, s = _plan_template(buf, off[t], off[t + 1], kw_buf, kw_off, kw_needs_unit, slot_param, slot_unit,
                                  slot_needs_unit, s)
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
    duration word is followed (after its key suffix, if any, and at most 3 of `` =:"'\t``) by a ``<*>`` is
    PLAN_PARAMS with that parameter as a slot; any other duration word (touching a ``<*>``, or before a literal
    digit) makes it PLAN_BODY. Words inside parameters are not seen (see :func:`durations_from_params`).
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
    slot_needs_unit = np.empty(cap, dtype=np.bool_)
    s = _duration_plan(template_buf, template_off, _KW_BUF, _KW_OFF, _KW_NEEDS_UNIT, kind, n_params, slot_off,
                       slot_param, slot_unit, slot_needs_unit)
    return DurationPlan(kind, n_params, slot_off, slot_param[:s].copy(), slot_unit[:s].copy(),
                        slot_needs_unit[:s].copy())


@njit(cache=True, nogil=True)
def _durations_from_params(codes, kind, n_params, slot_off, slot_param, slot_unit, slot_needs_unit, pbuf, poff, bbuf,
                           boff, kw_buf, kw_off, kw_needs_unit, line_out, ord_out, val_out, unit_out):
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
            m = _scan_line(bbuf, boff[r], boff[r + 1], r, kw_buf, kw_off, kw_needs_unit, line_out, ord_out, val_out,
                           unit_out, m)
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
            v, nd, f, j = _parse_duration(pbuf, q, pe)
            if nd == 0:
                continue
            if f == 0.0:
                # a bare number: the unit is the template's text after the <*> (or the key's) only when nothing
                # else follows the number in the parameter (in the body, that text would stand between them)
                rest = j
                while rest < pe and pbuf[rest] == 32:
                    rest += 1
                if rest == pe:
                    f = slot_unit[s]
                    v *= f if f > 0.0 else 1.0
                if f == 0.0 and slot_needs_unit[s]:
                    continue
            if m < cap:
                line_out[m] = r
                ord_out[m] = ordinal
                val_out[m] = v
                unit_out[m] = f > 0.0
                m += 1
            ordinal += 1
    return m


def durations_from_params(codes: np.ndarray, plan: DurationPlan, params_buf: np.ndarray, params_off: np.ndarray,
                          body_buf: np.ndarray, body_off: np.ndarray, max_per_line: int = 4) -> Durations:
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
    :class:`Durations`: what ``extract_durations`` returns for the bodies, except that a duration word *inside*
    a parameter (a generalised word, a path) is not seen.
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
    out = _empty_out(n, max_per_line)
    m = _durations_from_params(codes, plan.kind, plan.n_params, plan.slot_off, plan.slot_param, plan.slot_unit,
                               plan.slot_needs_unit, params_buf, params_off, body_buf, body_off, _KW_BUF, _KW_OFF,
                               _KW_NEEDS_UNIT, *out) if n else 0
    return Durations(*(a[:m].copy() for a in out))


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
