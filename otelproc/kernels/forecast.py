"""Seasonal forecasting detector: prediction errors of a robust Holt-Winters model as anomaly evidence.

The level-and-hour-of-day baseline of :mod:`otelproc.kernels.detectors` compares a point with what the
same hour usually looks like. Two kinds of anomaly slip through it:

* a change of the *shape* of a cycle whose period is not a day, e.g. a public holiday in a weekly
  pattern: the day looks like a Sunday, which the hour-of-day profile has seen every week, so no
  single point is unusual;
* a modest deviation that lasts for hours: every point stays within the noise, only their sum is
  unusual.

This module forecasts every point from an additive Holt-Winters model (level + one seasonal offset
per phase step of a period chosen per series from the data), turns the forecast error into a robust
z-score, and accumulates the z-scores in an exponentially weighted mean whose own typical size is
tracked, so a sustained deviation stands out in units of what the accumulated error normally does.

* :func:`detect_period`      choose, per series, the candidate period (in steps) with the largest
  autocorrelation over a learning stretch (0 = no significant period).
* :func:`seasonal_forecast`  one-step-ahead Holt-Winters forecast, robust z of its error and the
  normalised accumulated error ("sustained deviation" evidence); state in :class:`ForecastState`.

Both kernels are vectorised over S series sharing a time axis (``values[T, S]``); NaN = no
observation. Work is O(1) per point per series for the forecast and O(T x candidates) once for the
period choice.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from otelproc.kernels.detectors import _check_matrix

__all__ = ["detect_period", "ForecastState", "seasonal_forecast"]

# 1.2533 turns a mean absolute deviation into a Gaussian sigma
_MAD_TO_SIGMA = 1.2533


# --------------------------------------------------------------------------- period choice

@njit(cache=True, nogil=True)
def _lag_correlation(x, lag):
    """Pearson correlation of x[t] and x[t - lag] over pairs where both are observed (NaN if < 3 pairs
    or a side is constant)."""
    T = x.shape[0]
    n = 0
    sa = 0.0
    sb = 0.0
    for t in range(lag, T):
        a = x[t - lag]
        b = x[t]
        if np.isnan(a) or np.isnan(b):
            continue
        sa += a
        sb += b
        n += 1
    if n < 3:
        return np.nan
    ma = sa / n
    mb = sb / n
    caa = 0.0
    cbb = 0.0
    cab = 0.0
    for t in range(lag, T):
        a = x[t - lag]
        b = x[t]
        if np.isnan(a) or np.isnan(b):
            continue
        caa += (a - ma) * (a - ma)
        cbb += (b - mb) * (b - mb)
        cab += (a - ma) * (b - mb)
    if caa <= 0.0 or cbb <= 0.0:
        return np.nan
    return cab / np.sqrt(caa * cbb)


@njit(cache=True, nogil=True)
def _detect_period(values, candidates, min_corr, min_cycles, period_out, corr_out):
    T, S = values.shape
    C = candidates.shape[0]
    for s in range(S):
        best = 0
        best_r = min_corr
        for c in range(C):
            lag = candidates[c]
            r = np.nan
            if lag >= 2 and min_cycles * lag <= T:
                r = _lag_correlation(values[:, s], lag)
            corr_out[s, c] = r
            # ">=": on a tie the longer candidate wins (a weekly period also contains the daily one)
            if not np.isnan(r) and r >= best_r:
                best = lag
                best_r = r
        period_out[s] = best


def detect_period(values: np.ndarray, candidates: np.ndarray, *, min_corr: float = 0.3,
                  min_cycles: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
    """Choose a seasonal period per series from the autocorrelation over a learning stretch.

    Run it once on the first rows of each series (the warm-up), then give the result to
    :class:`ForecastState`.

    Parameters
    ----------
    values : float64[T, S]
        Learning stretch of S series (NaN = no observation; pairs with a NaN are skipped).
    candidates : int64[C]
        Candidate periods in steps, e.g. one day and one week at the sampling interval, in increasing
        order (on equal correlation the later candidate wins).
    min_corr : float
        Smallest lag correlation that counts as a period (0 < min_corr <= 1): 0.3 keeps clear daily /
        weekly cycles and rejects noise and spiky series.
    min_cycles : float
        A candidate is only tried when the stretch holds at least this many periods (>= 1).

    Returns
    -------
    period : int64[S]         chosen period in steps, 0 when no candidate reaches ``min_corr``
    corr : float64[S, C]      lag correlation of every candidate (NaN when not tried)
    """
    _check_matrix("values", values, np.float64)
    candidates = np.ascontiguousarray(candidates, dtype=np.int64)
    if candidates.ndim != 1:
        raise ValueError(f"candidates must be 1-D, got shape {candidates.shape}")
    if not 0.0 < min_corr <= 1.0:
        raise ValueError(f"min_corr must be in (0, 1], got {min_corr}")
    if min_cycles < 1.0:
        raise ValueError(f"min_cycles must be >= 1, got {min_cycles}")
    S = values.shape[1]
    period = np.zeros(S, dtype=np.int64)
    corr = np.full((S, candidates.shape[0]), np.nan)
    _detect_period(np.ascontiguousarray(values), candidates, float(min_corr), float(min_cycles), period, corr)
    return period, corr


# --------------------------------------------------------------------------- seasonal forecast

class ForecastState:
    """State of :func:`seasonal_forecast` for S series, each with its own period (<= max period).

    period     int64[S]        period in steps (0 or 1 = no seasonal term: level only)
    level      float64[S]      deseasonalised level
    season     float64[S, P]   additive seasonal offset per phase step (P = the largest period, >= 1)
    seen       int8[S, P]      1 once a phase step has been visited (its first visit initialises it)
    scale      float64[S]      EW mean absolute forecast error
    n          int64[S]        observations absorbed
    acc        float64[S]      EW mean of the clipped z-scores (accumulated error)
    acc_dev    float64[S]      EW mean absolute value of ``acc`` (its typical size)
    acc_n      int64[S]        z-scores accumulated
    """

    FIELDS = ("period", "level", "season", "seen", "scale", "n", "acc", "acc_dev", "acc_n")

    def __init__(self, period: np.ndarray):
        period = np.ascontiguousarray(period, dtype=np.int64)
        if period.ndim != 1:
            raise ValueError(f"period must be 1-D (one per series), got shape {period.shape}")
        if np.any(period < 0):
            raise ValueError("period must be >= 0 (0 = no seasonal term)")
        S = len(period)
        P = max(1, int(period.max())) if S else 1
        self.period = period.copy()
        self.level = np.zeros(S, dtype=np.float64)
        self.season = np.zeros((S, P), dtype=np.float64)
        self.seen = np.zeros((S, P), dtype=np.int8)
        self.scale = np.zeros(S, dtype=np.float64)
        self.n = np.zeros(S, dtype=np.int64)
        self.acc = np.zeros(S, dtype=np.float64)
        self.acc_dev = np.zeros(S, dtype=np.float64)
        self.acc_n = np.zeros(S, dtype=np.int64)

    @property
    def n_series(self) -> int:
        return len(self.period)


@njit(cache=True, nogil=True)
def _seasonal_forecast(values, step, period, level, season, seen, scale, n, acc, acc_dev, acc_n,
                       alpha, gamma, beta, huber_c, min_scale, warmup_periods, acc_alpha, acc_beta, acc_clip,
                       acc_warmup, expected_out, z_out, sustained_out):
    T, S = values.shape
    for t in range(T):
        for s in range(S):
            x = values[t, s]
            if np.isnan(x):
                expected_out[t, s] = np.nan
                z_out[t, s] = np.nan
                sustained_out[t, s] = np.nan
                continue
            P = period[s]
            p = step[t] % P if P > 1 else 0
            if n[s] == 0:
                level[s] = x
            # during the first period the profile holds raw values (not offsets yet): forecast the mean
            seas = season[s, p] if (P > 1 and n[s] >= P and seen[s, p] == 1) else 0.0
            exp_v = level[s] + seas
            sc = _MAD_TO_SIGMA * scale[s]
            if sc < min_scale:
                sc = min_scale
            r = x - exp_v
            # z only once every phase step had a chance to be learnt
            warm = n[s] >= warmup_periods * (P if P > 1 else 1)
            z = r / sc
            if warm:
                expected_out[t, s] = exp_v
                z_out[t, s] = z
            else:
                expected_out[t, s] = np.nan
                z_out[t, s] = np.nan
            # Huber clipping: an outlier moves neither the level nor the profile by more than huber_c sigmas
            rc = r
            if warm:
                lim = huber_c * sc
                if rc > lim:
                    rc = lim
                elif rc < -lim:
                    rc = -lim
            first_period = P > 1 and n[s] < P
            a = alpha
            if first_period or 1.0 / (n[s] + 1.0) > a:
                a = 1.0 / (n[s] + 1.0)
            level[s] += a * rc
            if first_period:
                # classical Holt-Winters start: the first period's values, less their mean, are the profile
                season[s, p] = x
                seen[s, p] = 1
                if n[s] + 1 == P:
                    for q in range(P):
                        if seen[s, q] == 1:
                            season[s, q] -= level[s]
            elif P > 1:
                if seen[s, p] == 0:
                    season[s, p] = x - level[s]
                    seen[s, p] = 1
                else:
                    # the profile learns the clipped observation (exp_v + rc), relative to the new level
                    season[s, p] += gamma * (exp_v + rc - level[s] - season[s, p])
            b = beta
            if 1.0 / (n[s] + 1.0) > b:
                b = 1.0 / (n[s] + 1.0)
            ar = abs(r)
            if warm and scale[s] > 0 and ar > 4.0 * scale[s]:
                ar = 4.0 * scale[s]
            scale[s] += b * (ar - scale[s])
            n[s] += 1
            # accumulated error, in units of its own typical size
            if not warm:
                sustained_out[t, s] = np.nan
                continue
            zc = z
            if zc > acc_clip:
                zc = acc_clip
            elif zc < -acc_clip:
                zc = -acc_clip
            acc[s] += acc_alpha * (zc - acc[s])
            if acc_n[s] >= acc_warmup:
                # floored like the error sigma: a flat series that starts to move is a sustained deviation
                dev = _MAD_TO_SIGMA * acc_dev[s]
                if dev < min_scale:
                    dev = min_scale
                sustained_out[t, s] = acc[s] / dev
            else:
                sustained_out[t, s] = np.nan
            d = abs(acc[s])
            if acc_n[s] >= acc_warmup and acc_dev[s] > 0 and d > 4.0 * acc_dev[s]:
                d = 4.0 * acc_dev[s]
            bd = acc_beta
            if 1.0 / (acc_n[s] + 1.0) > bd:
                bd = 1.0 / (acc_n[s] + 1.0)
            acc_dev[s] += bd * (d - acc_dev[s])
            acc_n[s] += 1


def seasonal_forecast(values: np.ndarray, step: np.ndarray, state: ForecastState, *, alpha: float = 0.01,
                      gamma: float = 0.2, beta: float = 0.01, huber_c: float = 4.0, min_scale: float = 1e-9,
                      warmup_periods: float = 1.0, acc_alpha: float = 1.0 / 48, acc_beta: float = 0.005,
                      acc_clip: float = 6.0, acc_warmup: int = 50
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One-step-ahead robust Holt-Winters forecast per point, its z-score and the sustained deviation.

    The forecast of a point is ``level + season[phase]`` (phase = ``step % period``), both learnt by
    Huber-clipped exponential smoothing. Start as in classical Holt-Winters: the level is the mean of the
    first ``period`` observations and the profile their deviations from it; a phase step first visited
    later (gaps) starts at its value less the level. The
    z-score divides the forecast error by an EW mean absolute error. The *sustained deviation* is the
    EW mean of the z-scores (clipped to ``acc_clip``, memory ``1 / acc_alpha`` points) divided by the EW
    mean of its own absolute value: ~N(0, 1)-sized in normal operation whatever the autocorrelation of the
    errors, large when the forecast has been wrong in the same direction for a while (a holiday in a
    weekly cycle, an outage that halves the traffic, a slow drift away from the usual shape).

    Parameters
    ----------
    values : float64[T, S]
        T time steps of S series; NaN = no observation (state unchanged, outputs NaN).
    step : int64[T]
        Global step index of each row (e.g. bucket start // bucket width): the phase is ``step % period``,
        so gaps and restarts keep the phase right.
    state : ForecastState
        S series with their periods; updated in place.
    alpha : float
        Level smoothing weight (0 < alpha <= 1). Small (0.01: memory ~100 steps) so that a day-long
        deviation is not absorbed by the level before it is seen.
    gamma : float
        Seasonal offset smoothing weight per visit of a phase step (0 <= gamma <= 1).
    beta : float
        Smoothing weight of the mean absolute error (scale), 0 < beta <= 1.
    huber_c : float
        Forecast errors beyond ``huber_c`` sigmas are clipped before the model learns from them (> 0).
    min_scale : float
        Floor of the error sigma and of the typical size of the accumulated error (constant series).
    warmup_periods : float
        Outputs are NaN until ``warmup_periods`` x period points (x 1 without a period) were absorbed.
    acc_alpha : float
        Weight of the accumulated error (0 < acc_alpha <= 1); 1 / acc_alpha points is the time scale of the
        deviations looked for (1/48: a day at 30-minute steps, 4 hours at 5 minutes).
    acc_beta : float
        Weight of the typical size of the accumulated error (0 < acc_beta <= 1; 0.005: ~200 points).
    acc_clip : float
        |z| is clipped to this before accumulation, so one spike does not look like a sustained deviation.
    acc_warmup : int
        Accumulated z-scores needed before ``sustained`` is emitted.

    Returns
    -------
    expected : float64[T, S]   forecast before seeing the point (NaN in warm-up / gaps)
    z : float64[T, S]          (value - expected) / sigma (NaN in warm-up / gaps)
    sustained : float64[T, S]  accumulated error / its typical size (NaN in warm-up / gaps)
    """
    S = state.n_series
    _check_matrix("values", values, np.float64, S)
    step = np.ascontiguousarray(step, dtype=np.int64)
    if step.shape != (values.shape[0],):
        raise ValueError(f"step must have one entry per time step ({values.shape[0]}), got shape {step.shape}")
    if np.any(step < 0):
        raise ValueError("step must be >= 0")
    P = state.season.shape[1]
    for name, dt, shape in (("period", np.int64, (S,)), ("level", np.float64, (S,)), ("season", np.float64, (S, P)),
                            ("seen", np.int8, (S, P)), ("scale", np.float64, (S,)), ("n", np.int64, (S,)),
                            ("acc", np.float64, (S,)), ("acc_dev", np.float64, (S,)), ("acc_n", np.int64, (S,))):
        a = getattr(state, name)
        if a.dtype != dt or a.shape != shape or not a.flags.c_contiguous or not a.flags.writeable:
            raise ValueError(f"state array {name} must be a writeable C-contiguous {np.dtype(dt).name}{list(shape)}, "
                             f"got {a.dtype}{list(a.shape)}")
    if S and state.period.max() > P:
        raise ValueError(f"a period ({state.period.max()}) exceeds the state's {P} seasonal slots")
    if not (0 < alpha <= 1 and 0 <= gamma <= 1 and 0 < beta <= 1 and 0 < acc_alpha <= 1 and 0 < acc_beta <= 1):
        raise ValueError(f"alpha, beta, acc_alpha, acc_beta must be in (0, 1] and gamma in [0, 1], got "
                         f"{alpha}, {beta}, {acc_alpha}, {acc_beta}, {gamma}")
    if huber_c <= 0 or acc_clip <= 0 or warmup_periods < 0 or acc_warmup < 0:
        raise ValueError(f"huber_c and acc_clip must be > 0, warmup_periods and acc_warmup >= 0, got "
                         f"{huber_c}, {acc_clip}, {warmup_periods}, {acc_warmup}")
    T = values.shape[0]
    expected = np.empty((T, S), dtype=np.float64)
    z = np.empty((T, S), dtype=np.float64)
    sustained = np.empty((T, S), dtype=np.float64)
    _seasonal_forecast(np.ascontiguousarray(values), step, state.period, state.level, state.season, state.seen,
                       state.scale, state.n, state.acc, state.acc_dev, state.acc_n, float(alpha), float(gamma),
                       float(beta), float(huber_c), float(min_scale), float(warmup_periods), float(acc_alpha),
                       float(acc_beta), float(acc_clip), int(acc_warmup), expected, z, sustained)
    return expected, z, sustained
