"""Robust trend (creep) detection over sliding windows, vectorised over series.

Each series keeps a ring buffer of its last W values in log space (so a slope is
a *relative* rate). At every step the Theil-Sen slope (median of pairwise
slopes) of the window is computed: it ignores up to ~29 % outliers, so a single
latency spike does not look like a trend. A creep is flagged when

* the window is covered (at least ``min_coverage`` of its W steps have data),
* the slope is significantly above zero (``slope / se >= min_t``, ``se`` from
  the MAD of the residuals), and
* the relative rate is consistent with the configured creep: the point
  estimate is ``>= 0.75 rate`` and the upper confidence bound ``>= rate``
  (a true 2 %/h creep measured with noise is still flagged).

With W steps spanning the sustain duration (default 1 h), "flagged" means a
sustained creep over that whole duration. The time-to-threshold forecast
extrapolates the fitted log-linear trend to a threshold.

The window is first reduced to ``groups`` (12) consecutive group medians, so the
cost is O(W + groups^2) per point - constant in stream length.
"""
from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["TrendState", "theil_sen", "trend"]

# MAD around a group's own median (groups of ~5) understates sigma: small-sample correction
GROUP_MAD_CORRECTION = 1.15
# Theil-Sen on group medians vs the least-squares formula: calibrated on white noise so that
# |slope / se| has about Gaussian tails (benchmarks: 99th percentile ~2.6)
SE_INFLATION = 1.3


class TrendState:
    """Ring buffer of the last W log-values per series.

    window   float64[S, W]  log(value) at step ``k`` stored at ``k % W``; NaN = no data
    """

    FIELDS = ("window",)

    def __init__(self, n_series: int, window: int):
        if window < 4:
            raise ValueError(f"trend window must be >= 4 steps, got {window}")
        self.window = np.full((n_series, window), np.nan, dtype=np.float64)

    @property
    def n_series(self) -> int:
        return self.window.shape[0]

    def grow(self, n_series: int) -> None:
        extra = n_series - self.n_series
        if extra > 0:
            self.window = np.concatenate([self.window, np.full((extra, self.window.shape[1]), np.nan)])


@njit(cache=True, nogil=True)
def _median_inplace(buf, n):
    """Median of buf[:n] (sorts buf[:n] in place by insertion: n is small here, no allocation)."""
    for i in range(1, n):
        v = buf[i]
        j = i - 1
        while j >= 0 and buf[j] > v:
            buf[j + 1] = buf[j]
            j -= 1
        buf[j + 1] = v
    h = n // 2
    return buf[h] if n % 2 == 1 else 0.5 * (buf[h - 1] + buf[h])


@njit(cache=True, nogil=True)
def _theil_sen(tk, yk, m, pair_buf, res_buf):
    """Theil-Sen slope, intercept and slope standard error of m points (tk, yk)."""
    npairs = 0
    for i in range(m):
        for j in range(i + 1, m):
            dt = tk[j] - tk[i]
            if dt != 0:
                pair_buf[npairs] = (yk[j] - yk[i]) / dt
                npairs += 1
    if npairs == 0:
        return np.nan, np.nan, np.nan
    slope = _median_inplace(pair_buf, npairs)
    for i in range(m):
        res_buf[i] = yk[i] - slope * tk[i]
    intercept = _median_inplace(res_buf, m)
    tbar = 0.0
    for i in range(m):
        tbar += tk[i]
    tbar /= m
    sxx = 0.0
    for i in range(m):
        res_buf[i] = abs(yk[i] - slope * tk[i] - intercept)
        sxx += (tk[i] - tbar) ** 2
    mad = _median_inplace(res_buf, m)
    sigma = 1.4826 * mad
    # Theil-Sen is ~ as efficient as least squares for Gaussian noise; floor the
    # noise so a perfectly clean ramp keeps a finite (large) t statistic
    if sigma < 1e-9:
        sigma = 1e-9
    # 1.25: the MAD of Theil-Sen residuals understates the slope's spread on short windows;
    # calibrated on white noise so that |slope / se| has about Gaussian tails
    se = 1.25 * sigma / np.sqrt(sxx) if sxx > 0 else np.nan
    return slope, intercept, se


@njit(cache=True, nogil=True)
def _trend(values, step0, window, steps_per_hour, rate, min_t, min_coverage, threshold, ratio, groups,
           slope_out, t_out, level_out, tth_out, flag_out):
    T, S = values.shape
    W = window.shape[1]
    G = groups if groups < W else W
    gt = np.empty(G, dtype=np.float64)
    gy = np.empty(G, dtype=np.float64)
    vals = np.empty(W, dtype=np.float64)
    dev = np.empty(W, dtype=np.float64)
    pair_buf = np.empty(G * (G - 1) // 2 + 1, dtype=np.float64)
    res_buf = np.empty(G, dtype=np.float64)
    need = int(np.ceil(min_coverage * W))
    if need < 3:
        need = 3
    for t in range(T):
        step = step0 + t
        pos = step % W
        for s in range(S):
            x = values[t, s]
            window[s, pos] = np.log(x) if (not np.isnan(x)) and x > 0 else np.nan
            slope_out[t, s] = np.nan
            t_out[t, s] = np.nan
            level_out[t, s] = np.nan
            tth_out[t, s] = np.nan
            flag_out[t, s] = 0
            # the window, oldest first, cut into G consecutive groups; each group is reduced to
            # (mean time, median value): Theil-Sen then costs O(G^2) instead of O(W^2)
            total = 0
            m = 0
            for g in range(G):
                a = (g * W) // G
                b = ((g + 1) * W) // G
                nv = 0
                tsum = 0.0
                for k in range(a, b):
                    y = window[s, (pos + 1 + k) % W]
                    if not np.isnan(y):
                        vals[nv] = y
                        tsum += k - (W - 1)
                        nv += 1
                if nv * 2 >= (b - a) and nv > 0:
                    gt[m] = tsum / nv
                    for k in range(nv):
                        dev[total + k] = vals[k]
                    med = _median_inplace(vals, nv)
                    gy[m] = med
                    m += 1
                    for k in range(nv):
                        dev[total + k] = abs(dev[total + k] - med)
                total += nv
            if total < need or m < 3:
                continue
            slope, intercept, se = _theil_sen(gt, gy, m, pair_buf, res_buf)
            if np.isnan(slope):
                continue
            # noise from all points (pooled deviations from their group median) is far more stable
            # than the MAD of G group residuals; a group median's sigma is ~1.25 sigma / sqrt(size)
            sigma_pt = GROUP_MAD_CORRECTION * 1.4826 * _median_inplace(dev, total)
            if sigma_pt < 1e-9:
                sigma_pt = 1e-9
            tbar = 0.0
            for k in range(m):
                tbar += gt[k]
            tbar /= m
            sxx = 0.0
            for k in range(m):
                sxx += (gt[k] - tbar) ** 2
            size = total / m
            se = SE_INFLATION * 1.2533 * sigma_pt / np.sqrt(size) / np.sqrt(sxx)
            per_hour = slope * steps_per_hour
            rel = np.expm1(per_hour)
            tstat = slope / se if se > 0 else np.inf
            slope_out[t, s] = rel
            t_out[t, s] = tstat
            level_out[t, s] = np.exp(intercept)
            upper = np.expm1((slope + 2.0 * se) * steps_per_hour)
            if tstat >= min_t and rel >= 0.75 * rate and upper >= rate:
                flag_out[t, s] = 1
            # time to threshold, in hours, from the fitted level now
            thr = threshold[s]
            if np.isnan(thr) or thr <= 0:
                # relative: ``ratio`` times the level at the start of the window
                thr = np.exp(intercept + slope * (-(W - 1))) * ratio
            if per_hour > 0:
                h = (np.log(thr) - intercept) / per_hour
                tth_out[t, s] = h if h > 0 else 0.0
            else:
                tth_out[t, s] = np.inf


def trend(values: np.ndarray, step0: int, state: TrendState, *, steps_per_hour: float, rate: float = 0.02,
          min_t: float = 4.0, min_coverage: float = 0.8, threshold: np.ndarray | None = None,
          ratio: float = 2.0, groups: int = 12) -> dict[str, np.ndarray]:
    """Theil-Sen creep detection on positive series (latency-like), updating ``state`` in place.

    Parameters
    ----------
    values : float64[T, S]
        Positive values per step (e.g. p50 latency per minute); NaN or <= 0 = no data.
    step0 : int
        Global step index of row 0 (decides the ring-buffer position; must increase by T each call).
    state : TrendState
        Ring buffer of W steps per series (W = sustain duration / step).
    steps_per_hour : float
        Steps per hour (60 for 1-minute buckets): converts slopes to relative rates per hour.
    rate : float
        Creep to flag, relative per hour (0.02 = 2 %/h).
    min_t : float
        Slope t statistic needed (significance against noise).
    min_coverage : float
        Fraction of the W steps that must have data.
    threshold : float64[S] or None
        Absolute level per series for the time-to-threshold forecast; NaN/None = ``ratio`` x window start.
    ratio : float
        Relative threshold used when no absolute one is given.
    groups : int
        The window is reduced to this many consecutive group medians before the Theil-Sen fit
        (cost O(W + groups^2) per point; a group needs half its steps with data).

    Returns
    -------
    dict with float64[T, S] arrays ``rate_per_hour`` (relative), ``t`` (slope t stat), ``level``
    (fitted value now), ``hours_to_threshold`` (inf when not rising) and int8[T, S] ``flag``;
    NaN / 0 where the window is not covered.
    """
    S = state.n_series
    if not isinstance(values, np.ndarray) or values.dtype != np.float64 or values.ndim != 2 or values.shape[1] != S:
        raise TypeError(f"values must be float64[T, {S}], got {getattr(values, 'dtype', type(values))} "
                        f"{getattr(values, 'shape', '')}")
    if steps_per_hour <= 0:
        raise ValueError(f"steps_per_hour must be > 0, got {steps_per_hour}")
    if groups < 3:
        raise ValueError(f"groups must be >= 3, got {groups}")
    if not (0 < min_coverage <= 1):
        raise ValueError(f"min_coverage must be in (0, 1], got {min_coverage}")
    if threshold is None:
        threshold = np.full(S, np.nan)
    threshold = np.ascontiguousarray(threshold, dtype=np.float64)
    if threshold.shape != (S,):
        raise ValueError(f"threshold must be float64[{S}], got shape {threshold.shape}")
    T = values.shape[0]
    out = {k: np.empty((T, S), dtype=np.float64) for k in ("rate_per_hour", "t", "level", "hours_to_threshold")}
    flag = np.empty((T, S), dtype=np.int8)
    _trend(np.ascontiguousarray(values), int(step0), state.window, float(steps_per_hour), float(rate), float(min_t),
           float(min_coverage), threshold, float(ratio), int(groups), out["rate_per_hour"], out["t"], out["level"],
           out["hours_to_threshold"], flag)
    out["flag"] = flag
    return out


def theil_sen(t: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """Theil-Sen fit of y on t (float64[m] each, m >= 2): (slope, intercept, slope standard error)."""
    t = np.ascontiguousarray(t, dtype=np.float64)
    y = np.ascontiguousarray(y, dtype=np.float64)
    if t.shape != y.shape or t.ndim != 1 or len(t) < 2:
        raise ValueError(f"t and y must be float64[m] with m >= 2, got {t.shape} and {y.shape}")
    m = len(t)
    return _theil_sen(t, y, m, np.empty(m * (m - 1) // 2 + 1), np.empty(m))
