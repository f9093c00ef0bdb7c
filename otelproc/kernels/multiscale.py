"""Multi-scale evidence: sliding-window statistics of standardised residuals.

A per-point test (|z| of :func:`otelproc.kernels.detectors.robust_baseline`) misses changes that are
never extreme at any single point but are unusual *on average*: a slow drift (many moderately positive
residuals in a row) or a variance change (many moderately large residuals of either sign). Averaging
the last ``k`` residuals turns such evidence into one number whose null distribution is known under
independence:

* level statistic  ``sqrt(k) * mean(clip(z))``                      ~ N(0, 1)
* spread statistic ``(mean(clip(|z|)) - m1) / (s1 / sqrt(k))``      ~ N(0, 1)

with ``m1 = E|Z|``, ``s1 = sd|Z|`` of the clipped standard normal. Real residuals are autocorrelated,
so these are not exactly N(0, 1): feed them to :func:`otelproc.kernels.detectors.spot_threshold`,
which calibrates the tail on the statistic's own history (the comparison "is this average unusual
for this series?").

Kernels:

* :func:`window_evidence`  the two statistics. State (:class:`WindowEvidenceState`) is a ring buffer of
  the last ``k`` clipped residuals per series plus running sums: O(1) work per point per series.
* :func:`record_high`      flags a statistic exceeding its own running maximum by a relative margin (a
  new record). Used on the spread statistic it says "the residuals have never been this large for this
  long", which needs no distributional model and fires rarely (records of a stationary sequence get
  rarer as history grows), unlike a tail model fitted on strongly autocorrelated window averages.

``NaN`` = no observation: state untouched, outputs NaN.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

from otelproc.kernels.detectors import _check_matrix, _check_state

__all__ = ["WindowEvidenceState", "window_evidence", "clipped_normal_abs_moments", "RecordState", "record_high"]


def clipped_normal_abs_moments(clip: float) -> tuple[float, float]:
    """Mean and standard deviation of ``min(|Z|, clip)`` for a standard normal Z.

    Parameters
    ----------
    clip : float
        Clipping level (> 0); ``math.inf`` gives E|Z| = sqrt(2/pi), sd = sqrt(1 - 2/pi).

    Returns
    -------
    (mean, sd) : tuple of float
    """
    if not clip > 0:
        raise ValueError(f"clip must be > 0, got {clip}")
    if math.isinf(clip):
        return math.sqrt(2.0 / math.pi), math.sqrt(1.0 - 2.0 / math.pi)
    phi = math.exp(-0.5 * clip * clip) / math.sqrt(2.0 * math.pi)
    tail = math.erfc(clip / math.sqrt(2.0))           # P(|Z| > c)
    # E[|Z|; |Z| <= c] = 2 (phi(0) - phi(c)); E[Z^2; |Z| <= c] = (1 - tail) - 2 c phi(c)
    m1 = 2.0 * (1.0 / math.sqrt(2.0 * math.pi) - phi) + clip * tail
    m2 = (1.0 - tail) - 2.0 * clip * phi + clip * clip * tail
    return m1, math.sqrt(max(m2 - m1 * m1, 1e-12))


class WindowEvidenceState:
    """State of :func:`window_evidence` for S series and a window of K points.

    ring      float64[S, K]  last K clipped residuals (signed)
    sum_z     float64[S]     sum of the residuals in the ring
    sum_abs   float64[S]     sum of their absolute values
    count     int64[S]       residuals absorbed so far (the ring is full once count >= K)
    """

    FIELDS = ("ring", "sum_z", "sum_abs", "count")

    def __init__(self, n_series: int, window: int):
        if window < 2:
            raise ValueError(f"window must be >= 2 points, got {window}")
        self.ring = np.zeros((n_series, window), dtype=np.float64)
        self.sum_z = np.zeros(n_series, dtype=np.float64)
        self.sum_abs = np.zeros(n_series, dtype=np.float64)
        self.count = np.zeros(n_series, dtype=np.int64)

    @property
    def n_series(self) -> int:
        return len(self.count)

    @property
    def window(self) -> int:
        return self.ring.shape[1]

    def grow(self, n_series: int) -> None:
        """Add empty series at the end (new keys)."""
        extra = n_series - self.n_series
        if extra <= 0:
            return
        self.ring = np.concatenate([self.ring, np.zeros((extra, self.window))])
        self.sum_z = np.concatenate([self.sum_z, np.zeros(extra)])
        self.sum_abs = np.concatenate([self.sum_abs, np.zeros(extra)])
        self.count = np.concatenate([self.count, np.zeros(extra, dtype=np.int64)])


@njit(cache=True, nogil=True)
def _window_evidence(z, ring, sum_z, sum_abs, count, clip, abs_mean, abs_sd, level_out, spread_out):
    T, S = z.shape
    K = ring.shape[1]
    root_k = math.sqrt(K)
    for t in range(T):
        for s in range(S):
            x = z[t, s]
            if np.isnan(x):
                level_out[t, s] = np.nan
                spread_out[t, s] = np.nan
                continue
            # clipping bounds what one spike can contribute: a window average is evidence of many
            # moderately unusual points, not a second vote for a single extreme one
            if x > clip:
                x = clip
            elif x < -clip:
                x = -clip
            pos = count[s] % K
            old = ring[s, pos]
            if count[s] >= K:
                sum_z[s] -= old
                sum_abs[s] -= abs(old)
            ring[s, pos] = x
            sum_z[s] += x
            sum_abs[s] += abs(x)
            count[s] += 1
            if count[s] % (16 * K) == 0:
                # re-sum now and then so rounding errors of the running sums cannot accumulate
                a = 0.0
                b = 0.0
                for j in range(K):
                    a += ring[s, j]
                    b += abs(ring[s, j])
                sum_z[s] = a
                sum_abs[s] = b
            if count[s] >= K:
                level_out[t, s] = sum_z[s] / root_k
                spread_out[t, s] = (sum_abs[s] / K - abs_mean) * root_k / abs_sd
            else:
                level_out[t, s] = np.nan
                spread_out[t, s] = np.nan


def window_evidence(z: np.ndarray, state: WindowEvidenceState, *, clip: float = 4.0
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Level and spread evidence of the last K standardised residuals, updating ``state`` in place.

    Parameters
    ----------
    z : float64[T, S]
        Standardised residuals (e.g. the z of ``robust_baseline``); NaN = no observation.
    state : WindowEvidenceState
        S series, window K (number of observed points averaged); updated in place.
    clip : float
        Residuals are clipped to [-clip, clip] before averaging (> 0).

    Returns
    -------
    level : float64[T, S]
        ``sqrt(K) * mean`` of the last K clipped residuals: N(0, 1) for independent N(0, 1) residuals;
        large |level| = a sustained shift or drift. NaN until K points were seen and on gaps.
    spread : float64[T, S]
        Mean |clipped residual| of the last K, standardised by the clipped-normal mean and sd of |Z|:
        N(0, 1)-like under the null; large = the residuals became larger (variance increase).
        NaN until K points were seen and on gaps.
    """
    S, K = state.n_series, state.window
    _check_matrix("z", z, np.float64, S)
    for name, shape, dtype in (("ring", (S, K), np.float64), ("sum_z", (S,), np.float64),
                               ("sum_abs", (S,), np.float64), ("count", (S,), np.int64)):
        _check_state(name, getattr(state, name), dtype, shape)
    if not clip > 0:
        raise ValueError(f"clip must be > 0, got {clip}")
    m1, s1 = clipped_normal_abs_moments(float(clip))
    T = z.shape[0]
    level = np.empty((T, S), dtype=np.float64)
    spread = np.empty((T, S), dtype=np.float64)
    _window_evidence(np.ascontiguousarray(z), state.ring, state.sum_z, state.sum_abs, state.count,
                     float(clip), m1, s1, level, spread)
    return level, spread


# --------------------------------------------------------------------------- records

class RecordState:
    """State of :func:`record_high` for S series with a reference delay of D values.

    high    float64[S]     largest value seen so far, excluding the last D (-inf before the first)
    recent  float64[S, D]  ring buffer of the last D values, not yet part of ``high`` (D = max(delay, 1))
    n       int64[S]       values seen
    delay   int            D: a value joins the reference maximum D values after it was seen
    """

    FIELDS = ("high", "recent", "n")

    def __init__(self, n_series: int, delay: int = 0):
        if delay < 0:
            raise ValueError(f"delay must be >= 0, got {delay}")
        self.delay = int(delay)
        self.high = np.full(n_series, -np.inf, dtype=np.float64)
        self.recent = np.zeros((n_series, max(self.delay, 1)), dtype=np.float64)
        self.n = np.zeros(n_series, dtype=np.int64)

    @property
    def n_series(self) -> int:
        return len(self.n)

    def grow(self, n_series: int) -> None:
        """Add empty series at the end (new keys)."""
        extra = n_series - self.n_series
        if extra <= 0:
            return
        self.high = np.concatenate([self.high, np.full(extra, -np.inf)])
        self.recent = np.concatenate([self.recent, np.zeros((extra, self.recent.shape[1]))])
        self.n = np.concatenate([self.n, np.zeros(extra, dtype=np.int64)])


@njit(cache=True, nogil=True)
def _record_high(stat, high, recent, n, delay, margin, warmup, out):
    T, S = stat.shape
    for t in range(T):
        for s in range(S):
            x = stat[t, s]
            if np.isnan(x):
                out[t, s] = np.nan
                continue
            if delay > 0:
                # the value seen `delay` steps ago joins the reference maximum now
                pos = n[s] % delay
                if n[s] >= delay and recent[s, pos] > high[s]:
                    high[s] = recent[s, pos]
                recent[s, pos] = x
            m = high[s]
            bar = m + margin * abs(m) if m > -np.inf else np.inf
            # only a positive statistic is evidence: a record of "less unusual than ever" is not
            out[t, s] = 1.0 if (n[s] >= warmup and x > 0.0 and x > bar) else 0.0
            if delay == 0 and x > high[s]:
                high[s] = x
            n[s] += 1


def record_high(stat: np.ndarray, state: RecordState, *, margin: float = 0.2, warmup: int = 0) -> np.ndarray:
    """1 where a statistic beats the maximum of its earlier values by a relative margin (a record), else 0.

    The reference maximum leaves out the last ``state.delay`` values: for a sliding-window statistic
    over K points use delay = K, so the current window is compared with windows that do not overlap it.
    Otherwise a statistic that rises gradually (one point at a time enters the window) keeps raising the
    bar itself and never beats it by the margin.

    Parameters
    ----------
    stat : float64[T, S]
        Any statistic where larger = more unusual (e.g. ``spread`` of :func:`window_evidence`);
        NaN = no observation (state unchanged, output NaN).
    state : RecordState
        Reference maximum and delay ring per series; updated in place (also during warm-up).
    margin : float
        A record must exceed the reference maximum ``m`` by ``margin * |m|`` (>= 0): small new highs of a
        slowly growing maximum are not events.
    warmup : int
        Values absorbed before records are reported.

    Returns
    -------
    record : float64[T, S]   1.0 on a record, 0.0 otherwise (also while the reference is empty), NaN on gaps
    """
    S = state.n_series
    _check_matrix("stat", stat, np.float64, S)
    D = max(state.delay, 1)
    for name, shape, dtype in (("high", (S,), np.float64), ("recent", (S, D), np.float64), ("n", (S,), np.int64)):
        _check_state(name, getattr(state, name), dtype, shape)
    if not margin >= 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    if warmup < 0:
        raise ValueError(f"warmup must be >= 0, got {warmup}")
    out = np.empty(stat.shape, dtype=np.float64)
    _record_high(np.ascontiguousarray(stat), state.high, state.recent, state.n, int(state.delay), float(margin),
                 int(warmup), out)
    return out
