"""Latency shift detection: is a series' recent latency higher than its own history, given how many values
the evidence rests on?

Why not the per-bucket median against a baseline of bucket medians: a template seen 0.5-1 times a second has
5-10 values in a 10 s bucket and 1-2 in a slow minute, so a bucket median is mostly noise, and a template
seen a few times an hour gives a "distribution" of one value. Here every value counts once, wherever its
bucket ends:

* **Pooled window.** Each series keeps its last ``R`` log values (a ring, with their bucket numbers). The
  test at a bucket uses the ring's values from the last ``window`` buckets, and at least its last
  ``min_values`` values however old: a busy template's window is its last R values (a few seconds), a
  slow one's the last ``window`` of time, a sparse one's (a few values a minute down to one per 5 min) its
  last ``min_values`` values (its evidence is its last values, not its last minutes). Fewer than
  ``min_values`` values in the ring: no test (a handful of values is not a distribution).
* **Robust location with its standard error from n.** The window's location is the 20 %-trimmed mean of
  log(value) (a few extreme lines move it little; its variance for log-normal values is ~1.06 sigma² / n).
  Its z against the series' baseline is ``(loc - mu) / sqrt(1.06 sd² / n + tau²)`` where ``sd`` is the
  series' own spread of log values (EW mean absolute deviation x 1.2533) and ``tau²`` its own
  **over-dispersion**: the EW mean of ``(loc - mu)² - 1.06 sd² / n`` over windows that were not flagged
  (latency that drifts with load from minute to minute is normal variation, not sampling noise), learnt
  from warm-up on and only from ordinary windows (|z| < 3 and below the reported ratio): a shift that builds
  up over a few windows must not inflate it before it is flagged.
* **Baseline** ``mu`` (EW mean of log values, residuals Huber-clipped at ``clip`` sd) and ``sd`` decay with
  event time, not per value, so a busy and a slow template have the same memory in minutes: the time
  constant is ``decay``'s, or the time ``memory_values`` values take at the series' own rate (the ring's
  span over its values), whichever is longer, so a sparse series' baseline holds enough values to be
  tested; the baseline's weight (the decayed number of values behind it) must reach ``min_weight`` and the
  series must be ``warm_buckets`` old before it is tested: a template seen a few times an hour is tested
  only after a day or more of its values.
* **Flag** when ``z >= z_min`` and the ratio ``exp(loc - mu) >= exp(min_log_ratio)`` (up); down likewise
  (the caller decides whether a lower latency is reported: by default it is not). While a series is flagged
  (either way) its baseline does not learn, so neither a spike nor a faster period becomes the normal, unless
  it lasts ``relevel_buckets``: then its level is the new baseline.

Outputs per (bucket, series) with values: the flag, z, ratio and window size, and how many buckets the
current flagged run has lasted (the caller's "sustained" rule and severity use it).
Cost: O(R log R) per (bucket, series) with values (the window sort), O(1) per value.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

from otelproc.kernels.detectors import grow_rows

__all__ = ["LatencyState", "latency_shift", "TRIMMED_VAR_FACTOR", "TRIM"]

# share of the window's values cut at each end for its location
TRIM = 0.2
# variance of the 20 %-trimmed mean of n normal values / (sigma² / n)
TRIMMED_VAR_FACTOR = 1.06
# windows at least this many standard errors off, or off by the reported ratio, do not update the over-dispersion
TAU_MAX_Z = 3.0
# the spread of log latency is never taken below 1 % (a constant series would make every change infinite z)
MIN_SD = 0.01


class LatencyState:
    """State of :func:`latency_shift` for S series with a ring of R values each.

    ring_v     float64[S, R]  last R log values
    ring_b     int64[S, R]    their bucket numbers
    ring_n     int64[S]       values ever put in the ring
    mu, mad    float64[S]     baseline mean of log values and mean absolute deviation around it
    weight     float64[S]     decayed number of values behind the baseline
    last_b     int64[S]       bucket of the last baseline update (-1 none)
    first_b    int64[S]       first bucket with a value (-1 none)
    tau2       float64[S]     over-dispersion of the window location (log² units)
    run_start  int64[S]       first bucket of the current flagged run (-1 none)
    run_dir    int64[S]       +1 up / -1 down run
    """

    FIELDS = ("ring_v", "ring_b", "ring_n", "mu", "mad", "weight", "last_b", "first_b", "tau2", "run_start",
              "run_dir")

    def __init__(self, n_series: int, ring: int = 32):
        if ring < 4:
            raise ValueError(f"ring must hold >= 4 values, got {ring}")
        self.ring_v = np.zeros((n_series, ring), dtype=np.float64)
        self.ring_b = np.full((n_series, ring), -1, dtype=np.int64)
        self.ring_n = np.zeros(n_series, dtype=np.int64)
        self.mu = np.zeros(n_series, dtype=np.float64)
        self.mad = np.zeros(n_series, dtype=np.float64)
        self.weight = np.zeros(n_series, dtype=np.float64)
        self.last_b = np.full(n_series, -1, dtype=np.int64)
        self.first_b = np.full(n_series, -1, dtype=np.int64)
        self.tau2 = np.zeros(n_series, dtype=np.float64)
        self.run_start = np.full(n_series, -1, dtype=np.int64)
        self.run_dir = np.zeros(n_series, dtype=np.int64)

    @property
    def n_series(self) -> int:
        return len(self.mu)

    def grow(self, n_series: int) -> None:
        if n_series <= self.n_series:
            return
        fills = {"ring_b": -1, "last_b": -1, "first_b": -1, "run_start": -1}
        for f in self.FIELDS:
            setattr(self, f, grow_rows(getattr(self, f), n_series, fills.get(f, 0)))


@njit(cache=True, nogil=True)
def _trimmed_mean(buf, n, trim):
    v = np.sort(buf[:n])
    cut = int(trim * n)
    acc = 0.0
    for i in range(cut, n - cut):
        acc += v[i]
    return acc / (n - 2 * cut)


@njit(cache=True, nogil=True)
def _latency_shift(row, sid, logv, first_bucket, B, ring_v, ring_b, ring_n, mu, mad, weight, last_b, first_b, tau2,
                   run_start, run_dir, tau_time, memory_values, clip, window, min_values, min_weight, warm_buckets,
                   z_min, min_log_ratio, beta_tau, relevel_buckets, flag_out, z_out, ratio_out, n_out, run_out,
                   exp_out, sd_out):
    S = len(mu)
    R = ring_v.shape[1]
    acc_n = np.zeros(S, dtype=np.int64)
    acc_r = np.zeros(S)
    acc_a = np.zeros(S)
    touched = np.empty(S, dtype=np.int64)
    win = np.empty(R)
    m = len(row)
    i = 0
    for t in range(B):
        bucket = first_bucket + t
        nt = 0
        while i < m and row[i] == t:
            s = sid[i]
            y = logv[i]
            i += 1
            if first_b[s] < 0:
                first_b[s] = bucket
                mu[s] = y
            pos = ring_n[s] % R
            ring_v[s, pos] = y
            ring_b[s, pos] = bucket
            ring_n[s] += 1
            if acc_n[s] == 0:
                touched[nt] = s
                nt += 1
            r = y - mu[s]
            sd = 1.2533 * mad[s]
            if sd < MIN_SD:
                sd = MIN_SD
            if weight[s] >= 10.0:
                # Huber: a spike's values move the baseline by at most clip sd each
                if r > clip * sd:
                    r = clip * sd
                elif r < -clip * sd:
                    r = -clip * sd
            acc_n[s] += 1
            acc_r[s] += r
            acc_a[s] += abs(r)
        for q in range(nt):
            s = touched[q]
            held = ring_n[s] if ring_n[s] < R else R
            w = weight[s]
            if last_b[s] >= 0:
                # memory: `decay`'s time constant or memory_values values at the series' own rate (from the
                # ring's span), whichever is longer: a sparse series remembers enough values to be tested
                tau = tau_time
                oldest = ring_b[s, (ring_n[s] - held) % R]
                if held >= 2 and bucket > oldest:
                    tau_v = memory_values * (bucket - oldest) / (held - 1)
                    if tau_v > tau:
                        tau = tau_v
                w *= math.exp(-(bucket - last_b[s]) / tau)
            sd = 1.2533 * mad[s]
            if sd < MIN_SD:
                sd = MIN_SD
            sd_out[t, s] = sd
            exp_out[t, s] = mu[s]
            # the window: ring values of the last `window` buckets, and at least the last min_values values
            # however old (a sparse series' evidence is its last values, not its last minutes)
            nw = 0
            for j in range(held):
                k = (ring_n[s] - 1 - j) % R
                if j >= min_values and ring_b[s, k] <= bucket - window:
                    break
                win[nw] = ring_v[s, k]
                nw += 1
            n_out[t, s] = nw
            flagged = 0
            if nw >= min_values and w >= min_weight:
                loc = _trimmed_mean(win, nw, TRIM)
                var = TRIMMED_VAR_FACTOR * sd * sd / nw
                d = loc - mu[s]
                z = d / math.sqrt(var + tau2[s])
                if bucket - first_b[s] >= warm_buckets:
                    z_out[t, s] = z
                    ratio_out[t, s] = math.exp(d)
                    if z >= z_min and d >= min_log_ratio:
                        flagged = 1
                    elif z <= -z_min and -d >= min_log_ratio:
                        flagged = -1
                if abs(z) < TAU_MAX_Z and abs(d) < min_log_ratio:
                    # the series' own between-window variance beyond sampling noise, learnt (from warm-up on)
                    # from ordinary windows only: an episode that is building up must not teach it its size
                    tau2[s] += beta_tau * (d * d - var - tau2[s])
                    if tau2[s] < 0.0:
                        tau2[s] = 0.0
            if flagged != 0 and (run_start[s] < 0 or run_dir[s] != flagged):
                run_start[s] = bucket
                run_dir[s] = flagged
            elif flagged == 0:
                run_start[s] = -1
                run_dir[s] = 0
            flag_out[t, s] = flagged
            run_len = bucket - run_start[s] + 1 if run_start[s] >= 0 else 0
            run_out[t, s] = run_len
            n_b = acc_n[s]
            if run_len >= relevel_buckets:
                # flagged for so long that it is the new normal: start the baseline from the window
                mu[s] = _trimmed_mean(win, nw, TRIM)
                w = 0.0
                run_start[s] = -1
                run_dir[s] = 0
            elif run_len == 0:
                mu[s] += acc_r[s] / (w + n_b)
                mad[s] += (acc_a[s] - n_b * mad[s]) / (w + n_b)
                w += n_b
            weight[s] = w
            last_b[s] = bucket
            acc_n[s] = 0
            acc_r[s] = 0.0
            acc_a[s] = 0.0


def latency_shift(row: np.ndarray, sid: np.ndarray, value: np.ndarray, first_bucket: int, n_buckets: int,
                  state: LatencyState, *, decay: float, window: int, memory_values: float = 0.0,
                  min_values: int = 16, min_weight: float = 100.0, warm_buckets: int = 0, z_min: float = 5.0,
                  min_ratio: float = 1.5, clip: float = 3.0, beta_tau: float = 0.02,
                  relevel_buckets: int = 180) -> dict[str, np.ndarray]:
    """Test every (bucket, series) with new values for a shift of its latency; updates ``state`` in place.

    Parameters
    ----------
    row : int64[m]      bucket row 0..n_buckets-1 of each value (any order)
    sid : int64[m]      series 0..S-1 of each value
    value : float64[m]  positive values (latency); others are ignored
    first_bucket : int  absolute bucket number of row 0 (rows must continue the previous call's buckets)
    decay : float       baseline weight kept per bucket (exp(-bucket width / memory))
    memory_values       ... or, if longer, the time this many values take at the series' rate (its ring's span)
    window : int        buckets the pooled window reaches back (at least the last min_values values)
    min_values : int    values a test needs
    min_weight : float  decayed values the baseline needs for a test
    warm_buckets : int  buckets since the series' first value before it is tested
    z_min, min_ratio    flag when z >= z_min and the ratio >= min_ratio (or both the other way: -1)
    clip : float        Huber clip of baseline residuals, in sd
    beta_tau : float    EW weight of the over-dispersion estimate per test
    relevel_buckets     a run flagged this long becomes the baseline

    Returns
    -------
    dict of [n_buckets, S] arrays: ``flag`` int8 (+1 up, -1 down, 0), ``z``, ``ratio`` (window location /
    baseline), ``n`` (window values), ``run`` int64 (buckets the current flagged run has lasted, 0 if not
    flagged), ``expected`` (baseline mean of log values before the bucket), ``sd`` (its spread of log values);
    NaN / 0 where the series had no value in the bucket or was not tested.
    """
    S = state.n_series
    row = np.ascontiguousarray(row, dtype=np.int64)
    sid = np.ascontiguousarray(sid, dtype=np.int64)
    value = np.ascontiguousarray(value, dtype=np.float64)
    if not (row.shape == sid.shape == value.shape) or row.ndim != 1:
        raise ValueError(f"row, sid, value must be 1-D of one length, got {row.shape}, {sid.shape}, {value.shape}")
    if len(row) and (row.min() < 0 or row.max() >= n_buckets or sid.min() < 0 or sid.max() >= S):
        raise ValueError("row or series id out of range")
    if not (0 < decay <= 1) or window < 1 or min_values < 1 or min_ratio < 1 or memory_values < 0:
        raise ValueError(f"need 0 < decay <= 1, window >= 1, min_values >= 1, min_ratio >= 1, memory_values >= 0; got "
                         f"{decay}, {window}, {min_values}, {min_ratio}, {memory_values}")
    pos = value > 0
    order = np.argsort(row[pos], kind="stable")
    shape = (int(n_buckets), S)
    out = {"flag": np.zeros(shape, dtype=np.int8), "z": np.full(shape, np.nan), "ratio": np.full(shape, np.nan),
           "n": np.zeros(shape, dtype=np.int64), "run": np.zeros(shape, dtype=np.int64),
           "expected": np.full(shape, np.nan), "sd": np.full(shape, np.nan)}
    _latency_shift(row[pos][order], sid[pos][order], np.log(value[pos][order]), int(first_bucket), int(n_buckets),
                   state.ring_v, state.ring_b, state.ring_n, state.mu, state.mad, state.weight, state.last_b,
                   state.first_b, state.tau2, state.run_start, state.run_dir,
                   math.inf if decay == 1 else -1.0 / math.log(decay), float(memory_values), float(clip), int(window),
                   int(min_values), float(min_weight), int(warm_buckets), float(z_min), float(math.log(min_ratio)),
                   float(beta_tau), int(relevel_buckets), out["flag"], out["z"], out["ratio"], out["n"], out["run"],
                   out["expected"], out["sd"])
    return out
