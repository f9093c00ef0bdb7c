"""Series building blocks: pull durations out of log bodies, aggregate points into
(bucket, series) cells.

* :func:`extract_durations` scans UTF-8 bodies (one ``uint8`` buffer plus
  ``int64`` offsets) for a duration keyword (``took``, ``latency``,
  ``duration``, ``elapsed``, ``time``; case-insensitive, at a word start)
  followed by a number and an optional unit, and returns the value in
  milliseconds. This is the ``<*>`` after such a word in the line's template;
  its ordinal among the matches of the line is the parameter position.
* :func:`aggregate_cells` turns points (bucket row, series id, value) into
  dense ``[B, S]`` matrices of count / sum / max / p50 / p95 / trimmed mean of log.
"""
from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["extract_durations", "aggregate_cells", "DURATION_KEYWORDS"]

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
def _extract_durations(buf, off, kw_buf, kw_off, line_out, ord_out, val_out):
    n = len(off) - 1
    nk = len(kw_off) - 1
    m = 0
    cap = len(val_out)
    for r in range(n):
        a = off[r]
        b = off[r + 1]
        ordinal = 0
        i = a
        while i < b:
            c = _lower(buf[i])
            matched = -1
            if (i == a or not _is_alpha(buf[i - 1])):
                for k in range(nk):
                    ka = kw_off[k]
                    kl = kw_off[k + 1] - ka
                    if i + kl <= b and kw_buf[ka] == c:
                        ok = True
                        for q in range(1, kl):
                            if _lower(buf[i + q]) != kw_buf[ka + q]:
                                ok = False
                                break
                        if ok and (i + kl == b or not _is_alpha(buf[i + kl])):
                            matched = kl
                            break
            if matched < 0:
                i += 1
                continue
            j = i + matched
            skipped = 0
            while j < b and skipped < 3 and (buf[j] == 32 or buf[j] == 61 or buf[j] == 58 or buf[j] == 34
                                              or buf[j] == 39 or buf[j] == 9):
                j += 1
                skipped += 1
            # number: digits [. digits]
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
