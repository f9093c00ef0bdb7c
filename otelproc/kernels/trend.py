"""Creep (trend) detection on latency-like series: a ramp test on per-bucket log means.

Why not a slope over the last hour: a 2 %/h creep over one hour changes the level
by 2 % in total, and the least-squares slope of one hour of points uses only the
spread of times *inside* that hour (variance L²/12). The level before the creep is
information too: the best test of "a ramp started L steps ago" compares the
recent points against the level of the preceding ``reference`` steps. That is the
weighted least-squares fit of the **hinge model**

    y = a + b * max(0, t - (now - L))          (t in steps, y = log value)

over the last ``reference + L`` buckets, with each bucket's log-location weighted
by its number of points (the per-point noise of a bucket mean is sigma² / n). The
variance of the hinge regressor is ~L²/4 (R = 2L reference) instead of L²/12 for
the slope alone, so the same creep is ~1.7x as many standard errors; with
thousands of lines per hour a 2 %/h creep is 5-10 standard errors after one hour.

Per step and series the kernel keeps a ring buffer of ``B = reference + W`` buckets
(count and log-location), fits the hinge at a few start lags ``L`` (W, 0.85 W, 0.7 W: a
creep that began less than W ago is found without waiting for it to fill W) plus the
plain slope over the whole span (a creep older than W, whose rate the hinge would
misestimate), and takes the lag with the largest t statistic. The noise is estimated from the
weighted residuals of the fit (``sigma² = sum n r² / (m - 2)`` over m buckets), so
extra minute-to-minute variance beyond sampling noise widens the standard error
instead of producing alarms. A creep is flagged when

* the ramp part and the reference part are covered (``min_coverage`` of the L ramp
  steps and ``min_reference`` steps before it have data),
* ``t = b / se(b) >= min_t`` (the false-alarm guard), and
* ``b + 2 se(b) >= log(1 + rate)``: the slope is not significantly *below* the
  configured creep, so a high-volume series drifting by 0.3 %/h is not flagged.

Locations should be robust per bucket (the processor uses a trimmed mean of
log(ms), :func:`otelproc.kernels.series.aggregate_cells`), so a few slow requests
do not look like a creep. Cost: O(B x lags) per point, constant in stream length;
the state is O(B) per series.
"""
from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["TrendState", "trend", "LAG_FRACTIONS"]

# start lags of the ramp, as fractions of the window W
LAG_FRACTIONS = (1.0, 0.85, 0.7)
# "not significantly below the configured rate": upper bound of the slope at 2 standard errors
UPPER_SE = 2.0
# noise floor of a bucket's log-location (a perfectly clean ramp keeps a finite t statistic)
MIN_SIGMA = 1e-6


class TrendState:
    """Ring buffer of the last ``reference + window`` buckets per series.

    count  float64[S, B]  points (weight) of the bucket at step ``k``, stored at ``k % B``; 0 = no data
    loc    float64[S, B]  log-location of that bucket (NaN = no data)
    """

    FIELDS = ("count", "loc")

    def __init__(self, n_series: int, window: int, reference: int | None = None):
        if window < 4:
            raise ValueError(f"trend window must be >= 4 steps, got {window}")
        reference = 2 * window if reference is None else reference
        if reference < 2:
            raise ValueError(f"trend reference must be >= 2 steps, got {reference}")
        self.window = int(window)
        self.reference = int(reference)
        B = self.window + self.reference
        self.count = np.zeros((n_series, B), dtype=np.float64)
        self.loc = np.full((n_series, B), np.nan, dtype=np.float64)

    @property
    def n_series(self) -> int:
        return self.count.shape[0]

    @property
    def span(self) -> int:
        return self.count.shape[1]

    def grow(self, n_series: int) -> None:
        extra = n_series - self.n_series
        if extra > 0:
            B = self.span
            self.count = np.concatenate([self.count, np.zeros((extra, B))])
            self.loc = np.concatenate([self.loc, np.full((extra, B), np.nan)])

    def reset(self) -> None:
        """Forget every bucket (after a gap in the stream: continuity is lost)."""
        self.count[:] = 0.0
        self.loc[:] = np.nan


@njit(cache=True, nogil=True)
def _trend(loc, weight, step0, cnt, mu, lags, steps_per_hour, log_rate, min_t, min_coverage, min_reference,
           threshold, ratio, rate_out, t_out, level_out, tth_out, lag_out, flag_out):
    T, S = loc.shape
    B = cnt.shape[1]
    K = len(lags)
    sh = np.empty(K, dtype=np.float64)
    shh = np.empty(K, dtype=np.float64)
    shy = np.empty(K, dtype=np.float64)
    ramp_m = np.empty(K, dtype=np.int64)
    for t in range(T):
        step = step0 + t
        pos = step % B
        for s in range(S):
            x = loc[t, s]
            w = weight[t, s]
            if np.isnan(x) or not (w > 0):
                cnt[s, pos] = 0.0
                mu[s, pos] = np.nan
            else:
                cnt[s, pos] = w
                mu[s, pos] = x
            rate_out[t, s] = np.nan
            t_out[t, s] = np.nan
            level_out[t, s] = np.nan
            tth_out[t, s] = np.nan
            lag_out[t, s] = 0
            flag_out[t, s] = 0
            # one pass over the ring (age 0 = now): sums shared by every lag, plus per-lag hinge sums.
            # y is centred on the first value met so the sums do not cancel catastrophically
            y0 = np.nan
            sw = 0.0
            sy = 0.0
            syy = 0.0
            m = 0
            for k in range(K):
                sh[k] = 0.0
                shh[k] = 0.0
                shy[k] = 0.0
                ramp_m[k] = 0
            for age in range(B):
                idx = pos - age
                if idx < 0:
                    idx += B
                c = cnt[s, idx]
                if c <= 0:
                    continue
                if np.isnan(y0):
                    y0 = mu[s, idx]
                y = mu[s, idx] - y0
                sw += c
                sy += c * y
                syy += c * y * y
                m += 1
                for k in range(K):
                    L = lags[k]
                    if age < L:
                        h = L - age  # steps since the ramp started (1 .. L)
                        sh[k] += c * h
                        shh[k] += c * h * h
                        shy[k] += c * h * y
                        ramp_m[k] += 1
            if m < 4:
                continue
            best = -1
            best_t = -np.inf
            best_b = 0.0
            best_se = 0.0
            best_a = 0.0
            for k in range(K):
                L = lags[k]
                # L >= B is the plain slope over the whole span (a creep older than the window)
                if ramp_m[k] < min_coverage * (L if L < B else B) or (L < B and m - ramp_m[k] < min_reference):
                    continue
                vxx = shh[k] - sh[k] * sh[k] / sw
                if vxx <= 0:
                    continue
                vxy = shy[k] - sh[k] * sy / sw
                vyy = syy - sy * sy / sw
                b = vxy / vxx
                rss = vyy - b * vxy
                if rss < 0:
                    rss = 0.0
                sigma = np.sqrt(rss / (m - 2))
                if sigma < MIN_SIGMA:
                    sigma = MIN_SIGMA
                se = sigma / np.sqrt(vxx)
                tk = b / se
                if tk > best_t:
                    best_t = tk
                    best = k
                    best_b = b
                    best_se = se
                    best_a = (sy - b * sh[k]) / sw
            if best < 0:
                continue
            L = lags[best]
            per_hour = best_b * steps_per_hour
            rate_out[t, s] = np.expm1(per_hour)
            t_out[t, s] = best_t
            lag_out[t, s] = L
            base = y0 + best_a  # log level before the ramp
            now = base + best_b * L
            level_out[t, s] = np.exp(now)
            if best_t >= min_t and (best_b + UPPER_SE * best_se) * steps_per_hour >= log_rate:
                flag_out[t, s] = 1
            thr = threshold[s]
            log_thr = np.log(thr) if (not np.isnan(thr)) and thr > 0 else base + np.log(ratio)
            if per_hour > 0:
                hrs = (log_thr - now) / per_hour
                tth_out[t, s] = hrs if hrs > 0 else 0.0
            else:
                tth_out[t, s] = np.inf


def trend(loc: np.ndarray, weight: np.ndarray, step0: int, state: TrendState, *, steps_per_hour: float,
          rate: float = 0.02, min_t: float = 4.0, min_coverage: float = 0.7, min_reference: int | None = None,
          threshold: np.ndarray | None = None, ratio: float = 2.0) -> dict[str, np.ndarray]:
    """Ramp (creep) test on per-bucket log-locations, updating ``state`` in place.

    Parameters
    ----------
    loc : float64[T, S]
        Log-location of each bucket (e.g. trimmed mean of log(latency ms)); NaN = no data.
    weight : float64[T, S]
        Points behind each location (its weight; the noise of a bucket mean is sigma² / n); <= 0 = no data.
    step0 : int
        Global step index of row 0 (decides the ring position; consecutive calls continue at step0 + T).
    state : TrendState
        Ring buffer of ``reference + window`` steps per series.
    steps_per_hour : float
        Steps per hour (60 for 1-minute buckets): converts slopes to relative rates per hour.
    rate : float
        Creep to flag, relative per hour (0.02 = 2 %/h).
    min_t : float
        t statistic of the ramp slope needed (significance against noise).
    min_coverage : float
        Fraction of the ramp's L steps that must have data.
    min_reference : int or None
        Steps with data needed before the ramp start (default: half the window).
    threshold : float64[S] or None
        Absolute level per series for the time-to-threshold forecast; NaN/None = ``ratio`` x the level
        before the ramp.
    ratio : float
        Relative threshold used when no absolute one is given.

    Returns
    -------
    dict with float64[T, S] arrays ``rate_per_hour`` (relative, of the best lag), ``t`` (its t statistic),
    ``level`` (fitted value now), ``hours_to_threshold`` (inf when not rising), int64[T, S] ``lag`` (ramp
    start, steps ago) and int8[T, S] ``flag``; NaN / 0 where no lag is covered.
    """
    S = state.n_series
    for name, a in (("loc", loc), ("weight", weight)):
        if not isinstance(a, np.ndarray) or a.dtype != np.float64 or a.ndim != 2 or a.shape[1] != S:
            raise TypeError(f"{name} must be float64[T, {S}], got {getattr(a, 'dtype', type(a))} "
                            f"{getattr(a, 'shape', '')}")
    if loc.shape != weight.shape:
        raise ValueError(f"loc {loc.shape} and weight {weight.shape} differ")
    if steps_per_hour <= 0:
        raise ValueError(f"steps_per_hour must be > 0, got {steps_per_hour}")
    if rate <= 0:
        raise ValueError(f"rate must be > 0, got {rate}")
    if not (0 < min_coverage <= 1):
        raise ValueError(f"min_coverage must be in (0, 1], got {min_coverage}")
    for name in ("count", "loc"):
        a = getattr(state, name)
        if a.shape != (S, state.span) or a.dtype != np.float64 or not a.flags.c_contiguous:
            raise ValueError(f"state array {name} must be C-contiguous float64[{S}, {state.span}]")
    if min_reference is None:
        min_reference = max(2, state.window // 2)
    if threshold is None:
        threshold = np.full(S, np.nan)
    threshold = np.ascontiguousarray(threshold, dtype=np.float64)
    if threshold.shape != (S,):
        raise ValueError(f"threshold must be float64[{S}], got shape {threshold.shape}")
    lags = np.unique(np.array([max(3, int(round(f * state.window))) for f in LAG_FRACTIONS] + [state.span],
                              dtype=np.int64))
    T = loc.shape[0]
    out = {k: np.empty((T, S), dtype=np.float64) for k in ("rate_per_hour", "t", "level", "hours_to_threshold")}
    lag = np.empty((T, S), dtype=np.int64)
    flag = np.empty((T, S), dtype=np.int8)
    _trend(np.ascontiguousarray(loc), np.ascontiguousarray(weight), int(step0), state.count, state.loc, lags,
           float(steps_per_hour), float(np.log1p(rate)), float(min_t), float(min_coverage), int(min_reference),
           threshold, float(ratio), out["rate_per_hour"], out["t"], out["level"], out["hours_to_threshold"], lag, flag)
    out["lag"] = lag
    out["flag"] = flag
    return out
