"""Streaming anomaly detectors, vectorised over many series at once.

Every detector keeps its state in arrays with one row per series and does O(1)
work per (time step, series) point. Inputs are matrices ``values[T, S]``: T
consecutive time steps (closed buckets) of S series that share the time axis.
``NaN`` means "no observation" (a gap): the state is left untouched and the
outputs for that point are NaN / 0.

Kernels (``_``-prefixed, ``@njit``) take arrays and scalars only; the public
wrappers check dtypes/shapes and allocate the outputs.

* :func:`robust_baseline`  Holt-Winters-like additive level + seasonal profile
  with Huber-clipped updates and an EW mean-absolute-deviation scale; outputs
  expected value, scale and a robust z-score per point.
* :func:`spot_threshold`   SPOT / DSPOT (Siffer et al., KDD 2017) on |z|:
  peaks-over-threshold with a generalised Pareto tail fitted by the method of
  moments over a ring buffer of recent peaks; outputs the dynamic threshold
  and the tail probability of each point.
* :func:`cusum`            two-sided CUSUM change-point statistic on z.
* :func:`presence`         new / rare / vanished pattern events from counts.
* :func:`error_ratio`      binomial jump of a ratio (errors / all) per series.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

__all__ = [
    "BaselineState", "robust_baseline", "SpotState", "spot_threshold", "spot_score01",
    "cusum", "PresenceState", "presence", "error_ratio",
    "EVENT_NONE", "EVENT_NEW", "EVENT_VANISHED", "EVENT_RARE", "grow_rows",
]

EVENT_NONE = 0
EVENT_NEW = 1
EVENT_VANISHED = 2
EVENT_RARE = 3


def _check_matrix(name: str, a: np.ndarray, dtype, n_series: int | None = None) -> None:
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(a).__name__}")
    if a.dtype != dtype:
        raise TypeError(f"{name} must be {np.dtype(dtype).name}, got {a.dtype}; use .astype(np.{np.dtype(dtype).name})")
    if a.ndim != 2:
        raise ValueError(f"{name} must be 2-D [time, series], got shape {a.shape}")
    if n_series is not None and a.shape[1] != n_series:
        raise ValueError(f"{name} has {a.shape[1]} series, the state has {n_series}")


def _check_state(name: str, a: np.ndarray, dtype, shape: tuple) -> None:
    if a.dtype != dtype or a.shape != shape:
        raise ValueError(f"state array {name} must be {np.dtype(dtype).name}{list(shape)}, got {a.dtype}{list(a.shape)}")
    if not a.flags.c_contiguous or not a.flags.writeable:
        raise ValueError(f"state array {name} must be C-contiguous and writeable")


def grow_rows(a: np.ndarray, n: int, fill=0) -> np.ndarray:
    """``a`` extended to ``n`` rows (the new rows set to ``fill``); ``a`` itself if it has them.

    The result is a view of the first ``n`` rows of a buffer with spare rows (capacity doubles
    when it runs out), and a later call on that view reuses the buffer: a stream that adds a few
    series in every batch costs amortised O(new rows) per batch instead of copying every
    series' state each time. Only pass arrays this function returned or that own their data
    (a prefix view of somebody else's array would be grown into that array).
    """
    old = a.shape[0]
    if n <= old:
        return a
    buf = a.base
    if not (isinstance(buf, np.ndarray) and buf.dtype == a.dtype and buf.shape[1:] == a.shape[1:]
            and buf.shape[0] >= n and buf.flags.c_contiguous and buf.ctypes.data == a.ctypes.data):
        buf = np.empty((max(n, 2 * old, 16),) + a.shape[1:], dtype=a.dtype)
        buf[:old] = a
    out = buf[:n]
    out[old:] = fill
    return out


# --------------------------------------------------------------------------- robust baseline

class BaselineState:
    """State of :func:`robust_baseline` for S series with P seasonal slots.

    level    float64[S]     deseasonalised level
    scale    float64[S]     EW mean absolute deviation of the residual (robust scale)
    season   float64[S, P]  additive seasonal offsets per slot
    n        int64[S]       observations absorbed so far
    run      int64[S]       signed run length of consecutive same-side outliers (re-level trigger)
    """

    FIELDS = ("level", "scale", "season", "n", "run")

    def __init__(self, n_series: int, n_slots: int = 1):
        if n_slots < 1:
            raise ValueError(f"n_slots must be >= 1, got {n_slots}")
        self.level = np.zeros(n_series, dtype=np.float64)
        self.scale = np.zeros(n_series, dtype=np.float64)
        self.season = np.zeros((n_series, n_slots), dtype=np.float64)
        self.n = np.zeros(n_series, dtype=np.int64)
        self.run = np.zeros(n_series, dtype=np.int64)

    @property
    def n_series(self) -> int:
        return len(self.level)

    def grow(self, n_series: int) -> None:
        """Add zero-initialised series at the end (new keys)."""
        extra = n_series - self.n_series
        if extra <= 0:
            return
        self.level = grow_rows(self.level, n_series, 0)
        self.scale = grow_rows(self.scale, n_series, 0)
        self.season = grow_rows(self.season, n_series, 0)
        self.n = grow_rows(self.n, n_series, 0)
        self.run = grow_rows(self.run, n_series, 0)


@njit(cache=True, nogil=True)
def _robust_baseline(values, slot, level, scale, season, n, run,
                     alpha, gamma, beta, huber_c, min_scale, rel_scale, warmup, season_warmup, relevel_after,
                     expected_out, scale_out, z_out):
    T, S = values.shape
    P = season.shape[1]
    for t in range(T):
        p = slot[t] % P if P > 1 else 0
        for s in range(S):
            x = values[t, s]
            if np.isnan(x):
                expected_out[t, s] = np.nan
                scale_out[t, s] = np.nan
                z_out[t, s] = np.nan
                continue
            if n[s] == 0:
                level[s] = x
                scale[s] = 0.0
                n[s] = 1
                expected_out[t, s] = x
                scale_out[t, s] = np.nan
                z_out[t, s] = np.nan
                continue
            use_season = P > 1 and n[s] >= season_warmup
            seas = season[s, p] if use_season else 0.0
            exp_v = level[s] + seas
            floor = min_scale
            rel = rel_scale * abs(exp_v)
            if rel > floor:
                floor = rel
            # 1.2533 turns a mean absolute deviation into a Gaussian sigma
            sc = 1.2533 * scale[s]
            if sc < floor:
                sc = floor
            r = x - exp_v
            z = r / sc
            if n[s] >= warmup:
                expected_out[t, s] = exp_v
                scale_out[t, s] = sc
                z_out[t, s] = z
            else:
                expected_out[t, s] = np.nan
                scale_out[t, s] = np.nan
                z_out[t, s] = np.nan
            # Huber clipping keeps a spike from dragging the baseline; a long
            # run of same-side outliers is a level shift, so accept it.
            lim = huber_c * sc
            rc = r
            outlier = False
            if n[s] >= warmup:
                if rc > lim:
                    rc = lim
                    outlier = True
                elif rc < -lim:
                    rc = -lim
                    outlier = True
            if outlier:
                if (r > 0 and run[s] >= 0) or (r < 0 and run[s] <= 0):
                    run[s] += 1 if r > 0 else -1
                else:
                    run[s] = 1 if r > 0 else -1
            else:
                run[s] = 0
            if relevel_after > 0 and abs(run[s]) >= relevel_after:
                level[s] = x - seas
                scale[s] = scale[s] * 1.5 + 0.25 * abs(r)
                run[s] = 0
            else:
                # faster learning at the start (1/n) so the first points set the level
                a = alpha
                if 1.0 / (n[s] + 1.0) > a:
                    a = 1.0 / (n[s] + 1.0)
                level[s] += a * rc
                b = beta
                if 1.0 / (n[s] + 1.0) > b:
                    b = 1.0 / (n[s] + 1.0)
                ar = abs(r)
                cap = 4.0 * scale[s] if scale[s] > 0 else ar
                if n[s] >= warmup and ar > cap:
                    ar = cap
                scale[s] += b * (ar - scale[s])
                if P > 1:
                    # the seasonal offset learns what the level does not explain
                    season[s, p] += gamma * (x - level[s] - season[s, p])
            n[s] += 1


def robust_baseline(values: np.ndarray, slot: np.ndarray, state: BaselineState, *,
                    alpha: float = 0.05, gamma: float = 0.1, beta: float = 0.02, huber_c: float = 3.0,
                    min_scale: float = 1e-9, rel_scale: float = 0.0, warmup: int = 20,
                    season_warmup: int = 0, relevel_after: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Robust expected value and z-score for every point, updating ``state`` in place.

    Parameters
    ----------
    values : float64[T, S]
        T time steps of S series; NaN = no observation (state unchanged).
    slot : int32[T] or int64[T]
        Seasonal slot of each time step (e.g. hour of day); ignored when the state has one slot.
    state : BaselineState
        S series, P slots; updated in place.
    alpha : float
        EWMA weight of the level (0 < alpha <= 1); memory ~ 1/alpha points.
    gamma : float
        EWMA weight of the seasonal offset of a slot (per visit of that slot).
    beta : float
        EWMA weight of the mean absolute deviation (scale).
    huber_c : float
        Residuals beyond ``huber_c`` scales are clipped before updating (robustness to spikes).
    min_scale, rel_scale : float
        Scale floor: ``max(min_scale, rel_scale * |expected|)`` (constant series, tiny noise).
    warmup : int
        Points absorbed before z-scores are emitted (NaN before).
    season_warmup : int
        Points absorbed before the seasonal offsets are used in the expectation.
    relevel_after : int
        After this many consecutive same-side outliers the level jumps to the new value
        (a level shift is accepted as the new normal); 0 disables.

    Returns
    -------
    expected : float64[T, S]   expectation before seeing the point (NaN in warm-up / gaps)
    scale : float64[T, S]      robust sigma used for z (NaN in warm-up / gaps)
    z : float64[T, S]          (value - expected) / scale (NaN in warm-up / gaps)
    """
    S = state.n_series
    _check_matrix("values", values, np.float64, S)
    slot = np.ascontiguousarray(slot, dtype=np.int64)
    if slot.shape != (values.shape[0],):
        raise ValueError(f"slot must have one entry per time step ({values.shape[0]}), got shape {slot.shape}")
    for name in ("level", "scale", "n", "run"):
        _check_state(name, getattr(state, name), np.int64 if name in ("n", "run") else np.float64, (S,))
    if not (0 < alpha <= 1 and 0 <= gamma <= 1 and 0 < beta <= 1):
        raise ValueError(f"alpha, beta must be in (0, 1] and gamma in [0, 1], got {alpha}, {beta}, {gamma}")
    T = values.shape[0]
    expected = np.empty((T, S), dtype=np.float64)
    scale = np.empty((T, S), dtype=np.float64)
    z = np.empty((T, S), dtype=np.float64)
    _robust_baseline(np.ascontiguousarray(values), slot, state.level, state.scale, state.season, state.n, state.run,
                     float(alpha), float(gamma), float(beta), float(huber_c), float(min_scale), float(rel_scale),
                     int(warmup), int(season_warmup), int(relevel_after), expected, scale, z)
    return expected, scale, z


# --------------------------------------------------------------------------- SPOT / DSPOT

class SpotState:
    """State of :func:`spot_threshold` for S series.

    peaks      float64[S, K]  ring buffer of the last K excesses over ``init_threshold``
    n_peaks    int64[S]       peaks stored so far (saturates at K in the buffer, keeps counting)
    n_obs      int64[S]       observations seen
    """

    FIELDS = ("peaks", "n_peaks", "n_obs")

    def __init__(self, n_series: int, capacity: int = 128):
        if capacity < 4:
            raise ValueError(f"capacity must be >= 4 peaks, got {capacity}")
        self.peaks = np.zeros((n_series, capacity), dtype=np.float64)
        self.n_peaks = np.zeros(n_series, dtype=np.int64)
        self.n_obs = np.zeros(n_series, dtype=np.int64)

    @property
    def n_series(self) -> int:
        return len(self.n_obs)

    def grow(self, n_series: int) -> None:
        extra = n_series - self.n_series
        if extra <= 0:
            return
        self.peaks = grow_rows(self.peaks, n_series, 0)
        self.n_peaks = grow_rows(self.n_peaks, n_series, 0)
        self.n_obs = grow_rows(self.n_obs, n_series, 0)


@njit(cache=True, nogil=True)
def _gpd_fit(peaks, m):
    """Method-of-moments GPD fit of the first m peaks: (sigma, xi)."""
    mean = 0.0
    for i in range(m):
        mean += peaks[i]
    mean /= m
    var = 0.0
    for i in range(m):
        d = peaks[i] - mean
        var += d * d
    var /= max(m - 1, 1)
    if var <= 1e-12 or mean <= 1e-12:
        return max(mean, 1e-6), 0.0
    r = mean * mean / var
    xi = 0.5 * (1.0 - r)
    sigma = 0.5 * mean * (r + 1.0)
    # keep the tail shape in a sane range: very heavy tails make thresholds explode
    if xi > 0.5:
        xi = 0.5
    if xi < -0.5:
        xi = -0.5
    return sigma, xi


@njit(cache=True, nogil=True)
def _spot(score, peaks, n_peaks, n_obs, init_threshold, q, min_peaks, fallback, thr_out, tail_out):
    T, S = score.shape
    K = peaks.shape[1]
    for s in range(S):
        # fit once per series per call segment, refit when a peak is added
        m = n_peaks[s] if n_peaks[s] < K else K
        sigma = 1.0
        xi = 0.0
        if m >= 2:
            sigma, xi = _gpd_fit(peaks[s], m)
        for t in range(T):
            x = score[t, s]
            if np.isnan(x):
                thr_out[t, s] = np.nan
                tail_out[t, s] = np.nan
                continue
            n_obs[s] += 1
            rate = n_peaks[s] / n_obs[s]
            if m >= min_peaks and rate > 0:
                ratio = q / rate
                if abs(xi) > 1e-9:
                    thr = init_threshold + sigma / xi * (ratio ** (-xi) - 1.0)
                else:
                    thr = init_threshold - sigma * np.log(ratio)
                if thr < init_threshold:
                    thr = init_threshold
            else:
                thr = fallback
            thr_out[t, s] = thr
            # tail probability P(score >= x) under the fitted model
            if x <= init_threshold:
                # below the peak level the tail model says nothing: Gaussian reference
                tail_out[t, s] = 0.5 * _erfc(x / 1.4142135623730951)
            elif m >= min_peaks and rate > 0:
                e = x - init_threshold
                if abs(xi) > 1e-9:
                    base = 1.0 + xi * e / sigma
                    tail = rate * base ** (-1.0 / xi) if base > 0 else 0.0
                else:
                    tail = rate * np.exp(-e / sigma)
                tail_out[t, s] = tail
            else:
                # not enough peaks yet: Gaussian tail of x as a stand-in
                tail_out[t, s] = 0.5 * _erfc(x / 1.4142135623730951)
            if x > init_threshold and x < thr:
                # a normal peak (not an anomaly) enters the tail model
                peaks[s, n_peaks[s] % K] = x - init_threshold
                n_peaks[s] += 1
                m = n_peaks[s] if n_peaks[s] < K else K
                if m >= 2:
                    sigma, xi = _gpd_fit(peaks[s], m)


@njit(cache=True, nogil=True)
def _erfc(x):
    # Abramowitz-Stegun 7.1.26, |error| < 1.5e-7: enough for a tail score
    z = abs(x)
    t = 1.0 / (1.0 + 0.5 * z)
    r = t * np.exp(-z * z - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 + t * (
        -0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277)))))))))
    return r if x >= 0 else 2.0 - r


def spot_threshold(score: np.ndarray, state: SpotState, *, init_threshold: float = 2.5, q: float = 1e-4,
                   min_peaks: int = 10, fallback: float = 6.0) -> tuple[np.ndarray, np.ndarray]:
    """DSPOT dynamic threshold on a non-negative score (e.g. |z| of :func:`robust_baseline`).

    Applying SPOT to the residual of a moving baseline is DSPOT (drift-aware SPOT).

    Parameters
    ----------
    score : float64[T, S]
        Non-negative anomaly statistic; NaN = no observation.
    state : SpotState
        Peaks ring buffer per series; updated in place.
    init_threshold : float
        Peaks are the excesses over this level (SPOT's t).
    q : float
        Target false-alarm probability per point: the threshold is the (1 - q) quantile.
    min_peaks : int
        Peaks needed before the fitted tail is used; until then ``fallback`` is the threshold.
    fallback : float
        Threshold before enough peaks exist.

    Returns
    -------
    threshold : float64[T, S]   dynamic threshold z_q before the point (NaN on gaps)
    tail : float64[T, S]        model probability P(score >= observed) (NaN on gaps)
    """
    S = state.n_series
    _check_matrix("score", score, np.float64, S)
    _check_state("peaks", state.peaks, np.float64, (S, state.peaks.shape[1]))
    if not (0 < q < 1):
        raise ValueError(f"q must be in (0, 1), got {q}")
    T = score.shape[0]
    thr = np.empty((T, S), dtype=np.float64)
    tail = np.empty((T, S), dtype=np.float64)
    _spot(np.ascontiguousarray(score), state.peaks, state.n_peaks, state.n_obs, float(init_threshold), float(q),
          int(min_peaks), float(fallback), thr, tail)
    return thr, tail


def spot_score01(tail: np.ndarray, q: float) -> np.ndarray:
    """Map a tail probability to a 0-1 score: 0.5 at the SPOT threshold (tail = q), 1 at tail = q**2.

    tail : float64[...] -> float64[...] (NaN stays NaN)
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        s = 0.5 * np.log(np.maximum(tail, 1e-300)) / np.log(q)
    return np.clip(s, 0.0, 1.0)


# --------------------------------------------------------------------------- CUSUM

@njit(cache=True, nogil=True)
def _cusum(z, g_up, g_down, k, h, stat_out, alarm_out):
    T, S = z.shape
    for t in range(T):
        for s in range(S):
            x = z[t, s]
            if np.isnan(x):
                stat_out[t, s] = np.nan
                alarm_out[t, s] = 0
                continue
            # clip single points so one spike cannot trigger a level-shift alarm alone
            if x > 4.0 * h:
                x = 4.0 * h
            elif x < -4.0 * h:
                x = -4.0 * h
            up = g_up[s] + x - k
            dn = g_down[s] - x - k
            g_up[s] = up if up > 0 else 0.0
            g_down[s] = dn if dn > 0 else 0.0
            if g_up[s] >= g_down[s]:
                stat_out[t, s] = g_up[s]
            else:
                stat_out[t, s] = -g_down[s]
            if g_up[s] > h:
                alarm_out[t, s] = 1
                g_up[s] = 0.0
                g_down[s] = 0.0
            elif g_down[s] > h:
                alarm_out[t, s] = -1
                g_up[s] = 0.0
                g_down[s] = 0.0
            else:
                alarm_out[t, s] = 0


def cusum(z: np.ndarray, g_up: np.ndarray, g_down: np.ndarray, *, k: float = 0.5,
          h: float = 8.0) -> tuple[np.ndarray, np.ndarray]:
    """Two-sided CUSUM on standardised residuals; statistics reset after an alarm.

    Parameters
    ----------
    z : float64[T, S]     standardised residuals (NaN = gap: state unchanged)
    g_up, g_down : float64[S]   running upper / lower sums, updated in place
    k : float             allowance (half the shift to detect, in sigmas)
    h : float             decision threshold (in sigmas); single points are clipped to 4h

    Returns
    -------
    stat : float64[T, S]  g_up if larger, else -g_down (NaN on gaps)
    alarm : int8[T, S]    +1 upward change, -1 downward change, 0 none
    """
    S = len(g_up)
    _check_matrix("z", z, np.float64, S)
    _check_state("g_up", g_up, np.float64, (S,))
    _check_state("g_down", g_down, np.float64, (S,))
    if k < 0 or h <= 0:
        raise ValueError(f"k must be >= 0 and h > 0, got k={k}, h={h}")
    T = z.shape[0]
    stat = np.empty((T, S), dtype=np.float64)
    alarm = np.empty((T, S), dtype=np.int8)
    _cusum(np.ascontiguousarray(z), g_up, g_down, float(k), float(h), stat, alarm)
    return stat, alarm


# --------------------------------------------------------------------------- presence (new / rare / vanished)

class PresenceState:
    """State of :func:`presence` for S series (patterns).

    first_step   int64[S]    global step index of the first non-zero count (-1 never)
    total        float64[S]  total count so far
    present      int64[S]    steps with a non-zero count
    gap_ewma     float64[S]  EW mean of the number of steps between occurrences
    gap_sq       float64[S]  EW mean of its square (the gaps' own spread: a cadence)
    rate         float64[S]  EW mean of the count per step since the first occurrence (zeros included)
    rate_sq      float64[S]  EW mean of its square (the counts' own dispersion)
    zero_run     int64[S]    current run of zero-count steps
    fired        int8[S]     1 when ``vanished`` already fired for the current zero run
    """

    FIELDS = ("first_step", "total", "present", "gap_ewma", "gap_sq", "rate", "rate_sq", "zero_run", "fired")

    def __init__(self, n_series: int):
        self.first_step = np.full(n_series, -1, dtype=np.int64)
        self.total = np.zeros(n_series, dtype=np.float64)
        self.present = np.zeros(n_series, dtype=np.int64)
        self.gap_ewma = np.zeros(n_series, dtype=np.float64)
        self.gap_sq = np.zeros(n_series, dtype=np.float64)
        self.rate = np.zeros(n_series, dtype=np.float64)
        self.rate_sq = np.zeros(n_series, dtype=np.float64)
        self.zero_run = np.zeros(n_series, dtype=np.int64)
        self.fired = np.zeros(n_series, dtype=np.int8)

    @property
    def n_series(self) -> int:
        return len(self.total)

    def grow(self, n_series: int) -> None:
        extra = n_series - self.n_series
        if extra <= 0:
            return
        self.first_step = grow_rows(self.first_step, n_series, -1)
        for name in ("total", "present", "gap_ewma", "gap_sq", "rate", "rate_sq", "zero_run", "fired"):
            setattr(self, name, grow_rows(getattr(self, name), n_series, 0))

    def init_moments(self) -> None:
        """Fill the fields added in state version 5 from the older ones (gaps as if regular, the rate
        from the gap)."""
        self.gap_sq = self.gap_ewma * self.gap_ewma
        self.rate = np.where(self.gap_ewma > 0, 1.0 / np.maximum(self.gap_ewma, 1e-9), 0.0)
        self.rate_sq = self.rate * self.rate


@njit(cache=True, nogil=True)
def _log_p_zero_per_event(phi):
    """log P(no event) per expected event for counts of index of dispersion phi: -log(phi) / (phi - 1)
    (negative binomial for phi > 1, binomial for phi < 1, Poisson at 1)."""
    if abs(phi - 1.0) < 1e-6:
        return -1.0
    return -np.log(phi) / (phi - 1.0)


@njit(cache=True, nogil=True)
def _dispersions(n_steps, rate, rate_sq, n_gaps, gap, gap_sq, prior, floor):
    """(index of dispersion of the per-step counts, squared CV of the gaps), each shrunk towards 1 (Poisson)
    by ``prior`` pseudo-observations: a handful of values does not make a cadence."""
    phi_c = 1.0
    if rate > 0:
        phi_c = max(rate_sq - rate * rate, 0.0) / rate
    phi_c = (n_steps * phi_c + prior) / (n_steps + prior)
    cv2 = 1.0
    if gap > 0:
        cv2 = max(gap_sq - gap * gap, 0.0) / (gap * gap)
    cv2 = (n_gaps * cv2 + prior) / (n_gaps + prior)
    return max(phi_c, floor), max(cv2, floor)


@njit(cache=True, nogil=True)
def _presence(counts, step0, warmup_steps, first_step, total, present, gap_ewma, gap_sq, rate, rate_sq, zero_run,
              fired, gap_alpha, steady_min, max_dispersion, log_p, vanish_min, rare_max, prior, event_out):
    T, S = counts.shape
    for t in range(T):
        step = step0 + t
        for s in range(S):
            c = counts[t, s]
            ev = 0
            if np.isnan(c) or c <= 0:
                if first_step[s] >= 0:
                    zero_run[s] += 1
                    if fired[s] == 0 and present[s] >= steady_min and zero_run[s] >= vanish_min:
                        # cadence test: how likely is a silence this long given this pattern's own
                        # per-step counts and gaps (their mean and dispersion, learnt per series)?
                        phi_c, cv2 = _dispersions(step - first_step[s] - zero_run[s] + 1.0, rate[s], rate_sq[s],
                                                  present[s] - 1.0, gap_ewma[s], gap_sq[s], prior, 0.05)
                        if min(phi_c, cv2) <= max_dispersion:
                            L = float(zero_run[s])
                            lp = L * rate[s] * _log_p_zero_per_event(phi_c)
                            if gap_ewma[s] > 0:
                                lp2 = (L / gap_ewma[s]) * _log_p_zero_per_event(cv2)
                                if lp2 < lp:
                                    lp = lp2
                            if lp <= log_p:
                                ev = 2
                                fired[s] = 1
                event_out[t, s] = ev
                continue
            n_steps = 0.0
            if first_step[s] < 0:
                first_step[s] = step
                if step >= warmup_steps:
                    ev = 1
            else:
                if step >= warmup_steps and total[s] <= rare_max and zero_run[s] > 0:
                    ev = 3
                gap = zero_run[s] + 1.0
                if fired[s] == 1:
                    # a silence reported as vanished is an outage, not the cadence: not learnt
                    zero_run[s] = 0
                    gap = gap_ewma[s]
                if present[s] <= 1:
                    gap_ewma[s] = gap
                    gap_sq[s] = gap * gap
                else:
                    gap_ewma[s] += gap_alpha * (gap - gap_ewma[s])
                    gap_sq[s] += gap_alpha * (gap * gap - gap_sq[s])
                n_steps = float(step - first_step[s])
            # the zero steps of the silence that just ended enter the per-step moments now
            a = gap_alpha
            if n_steps > 0 and 1.0 / (n_steps + 1.0) > a:
                a = 1.0 / (n_steps + 1.0)
            if zero_run[s] > 0:
                keep = (1.0 - a) ** min(zero_run[s], 100000)
                rate[s] *= keep
                rate_sq[s] *= keep
            if n_steps == 0.0:
                rate[s] = c
                rate_sq[s] = c * c
            else:
                rate[s] += a * (c - rate[s])
                rate_sq[s] += a * (c * c - rate_sq[s])
            present[s] += 1
            total[s] += c
            zero_run[s] = 0
            fired[s] = 0
            event_out[t, s] = ev


def presence(counts: np.ndarray, step0: int, state: PresenceState, *, warmup_steps: int = 60,
             gap_alpha: float = 0.02, steady_min: int = 10, max_dispersion: float = 0.5, vanish_p: float = 1e-9,
             vanish_min: int = 3, rare_max: float = 3.0, prior: float = 10.0) -> np.ndarray:
    """Pattern life-cycle events from per-step counts.

    Parameters
    ----------
    counts : float64[T, S]
        Count of each pattern per step (0 or NaN = absent).
    step0 : int
        Global index of the first row (steps since the detector started; decides warm-up).
    state : PresenceState
        Updated in place.
    warmup_steps : int
        A pattern first seen at step >= this is ``new``; earlier ones are the known vocabulary.
    gap_alpha : float
        EWMA weight of the gap and per-step count moments.
    steady_min : int
        Steps with the pattern needed before it can vanish (a handful of sightings is not a cadence).
    max_dispersion : float
        Only a pattern with a cadence can vanish: the index of dispersion of its per-step counts or the
        squared coefficient of variation of its gaps (each shrunk towards 1 by ``prior`` pseudo-steps) must
        be at most this (heartbeats, periodic jobs and busy lines ~0; Poisson-rare lines ~1; bursty > 1).
    vanish_p : float
        A silence of L steps is *vanished* when the probability of no line in L steps is below this, under a
        count model with the pattern's own mean and dispersion (binomial / Poisson / negative binomial, from
        the per-step counts and from the gaps; the smaller is used). Fires once per silence.
    vanish_min : int
        ... and never before this many empty steps.
    rare_max : float
        A pattern seen at most this many times in total that comes back after a silence is ``rare``.
    prior : float
        Pseudo-observations of Poisson behaviour in the dispersion estimates.

    Returns
    -------
    event : int8[T, S]  EVENT_NONE, EVENT_NEW, EVENT_VANISHED or EVENT_RARE
    """
    S = state.n_series
    _check_matrix("counts", counts, np.float64, S)
    if not (0 < vanish_p < 1):
        raise ValueError(f"vanish_p must be in (0, 1), got {vanish_p}")
    T = counts.shape[0]
    event = np.zeros((T, S), dtype=np.int8)
    _presence(np.ascontiguousarray(counts), int(step0), int(warmup_steps), state.first_step, state.total,
              state.present, state.gap_ewma, state.gap_sq, state.rate, state.rate_sq, state.zero_run, state.fired,
              float(gap_alpha), int(steady_min), float(max_dispersion), float(np.log(vanish_p)), int(vanish_min),
              float(rare_max), float(prior), event)
    return event


# --------------------------------------------------------------------------- error ratio

@njit(cache=True, nogil=True)
def _poisson_log_sf(k, lam):
    """log P(X >= k) for X ~ Poisson(lam), k > lam (pmf(k) times a geometric bound of the tail)."""
    if k <= 0:
        return 0.0
    if lam <= 0:
        return -np.inf
    log_pmf = k * np.log(lam) - lam - math.lgamma(k + 1.0)
    r = lam / (k + 1.0)
    if r >= 1.0:
        return 0.0
    v = log_pmf - np.log(1.0 - r)
    return v if v < 0.0 else 0.0


@njit(cache=True, nogil=True)
def _error_ratio(errors, totals, ew_err, ew_tot, n, alpha, warmup, min_p, z_out, ratio_out, expected_out, logp_out):
    T, S = errors.shape
    for t in range(T):
        for s in range(S):
            e = errors[t, s]
            m = totals[t, s]
            if np.isnan(e) or np.isnan(m) or m <= 0:
                z_out[t, s] = np.nan
                ratio_out[t, s] = np.nan
                expected_out[t, s] = np.nan
                logp_out[t, s] = np.nan
                continue
            r = e / m
            ratio_out[t, s] = r
            if n[s] >= warmup and ew_tot[s] > 0:
                p0 = ew_err[s] / ew_tot[s]
                pf = p0 if p0 > min_p else min_p
                expected_out[t, s] = p0
                z_out[t, s] = (e - m * pf) / np.sqrt(m * pf * (1.0 - pf) + 1e-12)
                # exact-ish tail: few errors per bucket are Poisson, far from Gaussian
                logp_out[t, s] = _poisson_log_sf(e, m * pf) if e > m * pf else 0.0
            else:
                expected_out[t, s] = np.nan
                z_out[t, s] = np.nan
                logp_out[t, s] = np.nan
            # do not learn from a jump: clip the error count to the expectation + 3 sigma
            if n[s] >= warmup and ew_tot[s] > 0:
                p0 = ew_err[s] / ew_tot[s]
                pf = p0 if p0 > min_p else min_p
                cap = m * pf + 3.0 * np.sqrt(m * pf * (1.0 - pf) + 1e-12)
                if e > cap:
                    e = cap
            a = alpha
            if 1.0 / (n[s] + 1.0) > a:
                a = 1.0 / (n[s] + 1.0)
            ew_err[s] += a * (e - ew_err[s])
            ew_tot[s] += a * (m - ew_tot[s])
            n[s] += 1


def error_ratio(errors: np.ndarray, totals: np.ndarray, ew_err: np.ndarray, ew_tot: np.ndarray, n: np.ndarray, *,
                alpha: float = 0.02, warmup: int = 20, min_p: float = 0.002
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Binomial z-score of the error share of each series against its EW baseline.

    Parameters
    ----------
    errors, totals : float64[T, S]   error count and total count per step (total 0/NaN = no data)
    ew_err, ew_tot : float64[S]      EW means of errors and totals (updated in place)
    n : int64[S]                     steps absorbed (updated in place)
    alpha : float                    EWMA weight
    warmup : int                     steps before z is emitted
    min_p : float                    floor of the baseline ratio (a zero-error baseline still has a variance)

    Returns
    -------
    z : float64[T, S]         (errors - total * p0) / sqrt(total p0 (1 - p0))
    ratio : float64[T, S]     observed errors / total
    expected : float64[T, S]  baseline ratio p0 (NaN in warm-up)
    log_p : float64[T, S]     natural log of P(errors >= observed) under Poisson(total * p0) (0 when not above)
    """
    S = len(ew_err)
    _check_matrix("errors", errors, np.float64, S)
    _check_matrix("totals", totals, np.float64, S)
    if errors.shape != totals.shape:
        raise ValueError(f"errors {errors.shape} and totals {totals.shape} differ")
    for name, a, dt in (("ew_err", ew_err, np.float64), ("ew_tot", ew_tot, np.float64), ("n", n, np.int64)):
        _check_state(name, a, dt, (S,))
    T = errors.shape[0]
    z = np.empty((T, S), dtype=np.float64)
    ratio = np.empty((T, S), dtype=np.float64)
    expected = np.empty((T, S), dtype=np.float64)
    log_p = np.empty((T, S), dtype=np.float64)
    _error_ratio(np.ascontiguousarray(errors), np.ascontiguousarray(totals), ew_err, ew_tot, n, float(alpha),
                 int(warmup), float(min_p), z, ratio, expected, log_p)
    return z, ratio, expected, log_p

