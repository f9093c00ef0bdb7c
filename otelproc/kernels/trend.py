"""Creep (trend) detection on latency-like series: a ramp test on per-bucket log means.

Why not a slope over the last hour: a 2 %/h creep over one hour changes the level
by 2 % in total, and the least-squares slope of one hour of points uses only the
spread of times *inside* that hour (variance L²/12). The level before the creep is
information too: the best test of "a ramp started L steps ago" compares the
recent points against the level of the preceding ``reference`` steps. That is the
weighted least-squares fit of the **hinge model**

    y = a + b * max(0, t - (now - L))          (t in steps, y = log value)

over the last ``reference + W`` buckets, with each bucket's log-location weighted
by its number of points (the per-point noise of a bucket mean is sigma² / n). The
variance of the hinge regressor is ~L²/4 (R = 2L reference) instead of L²/12 for
the slope alone, so the same creep is ~1.7x as many standard errors.

Power, worked out (sigma 0.15 per line, known onset, reference R, ramp L, rho lines per
hour): t = log(1 + rate) * sqrt(rho L³ (1/3 - p/4)) / sigma with p = L / (R + L). A 2 %/h
creep on 1.5 lines/s (5400 per hour) reaches t = 4.6 after 60 min with R = 75 min (5.6 with
an unlimited reference) and only 3.0 after 45 min: at that volume "within one hour" is at
the limit of what the data can show; at 3 lines/s it is t = 6.5 after 60 min.

Per step and series the kernel keeps a ring buffer of ``B = reference + W`` buckets
(count and log-location) and fits the hinge at **every** start lag L from
``MIN_LAG_FRACTION * W`` to W steps (a creep that began less than W ago is found at
its own start, without waiting for it to fill W) plus the plain slope over the whole
span (a creep older than W, whose rate the hinge would misestimate). One pass over the
ring with running sums of c, c·age, c·age², c·y and c·age·y gives every lag's sums
(``h = L - age``), so all lags cost O(B), not O(B x lags). The noise is estimated from
the weighted residuals of each fit (``sigma² = sum n r² / (m - 2)`` over m buckets), so
extra minute-to-minute variance beyond sampling noise widens the standard error
instead of producing alarms. A creep is flagged when, for at least one lag,

* the ramp part and the reference part are covered (``min_coverage`` of the L ramp
  steps and ``min_reference`` steps before it have data),
* ``t = b / se(b) >= min_t`` (the false-alarm guard; it is the maximum over lags
  that is compared with ``min_t``, so ``min_t`` is calibrated for that maximum, see
  ``benchmarks/trend_power.py``), and
* ``b + 2 se(b) >= log(1 + rate)``: the slope is not significantly *below* the
  configured creep, so a high-volume series drifting by 0.3 %/h is not flagged.
  (Checked per lag: a lag that starts before the true onset underestimates the
  slope, so only the largest-t lag would miss busy series.)

**Seasonality.** Latency that follows the daily load cycle rises for hours every day.
The kernel learns an hour-of-day profile per series: at the end of every hour it stores
the hour's weighted mean of log-location; once the series has been seen for a day and
``SEASON_MIN_HOURS`` of the last 24 hours have data it sets the profile to each hour's
deviation from the mean over those hours (all hours at once, the first time) and from
then on moves the profile of the hour that just ended towards its new deviation (a mean
over the first ``1 / season_gamma`` days, then an EWMA with weight ``season_gamma``: slow
changes of the cycle are followed). What is subtracted is that profile's first
``SEASON_HARMONICS`` harmonics (a daily cycle is smooth; 24 separately learnt hours carry
hour-to-hour noise whose slopes add false trends: ~3x the flat-series rate without the
smoothing in ``benchmarks/trend_power.py``). The test runs on the log-locations minus that
profile interpolated linearly between hour centres,
applied to the whole ring at test time (the ring keeps raw values, so the ring is always
adjusted by one profile). Deviations from a mean over a full day do not contain a
linear trend (it moves every hour alike), so a creep is not learnt as a season. During
the first day there is no profile: a load-driven latency cycle can fire then (the data
of one monotone stretch cannot tell it from a creep).

Locations should be robust per bucket (the processor uses a trimmed mean of
log(ms), :func:`otelproc.kernels.series.aggregate_cells`), so a few slow requests
do not look like a creep. Cost: O(B) per point, constant in stream length; the state is
O(B + 24) per series.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from otelproc.kernels.detectors import grow_rows

__all__ = ["TrendState", "trend", "ramp_lags", "MIN_LAG_FRACTION", "SEASON_MIN_HOURS", "SEASON_HARMONICS"]

# shortest ramp start lag tested, as a fraction of the window W (every lag from here to W is tested)
MIN_LAG_FRACTION = 0.7
# "not significantly below the configured rate": upper bound of the slope at 2 standard errors
UPPER_SE = 2.0
# noise floor of a bucket's log-location (a perfectly clean ramp keeps a finite t statistic)
MIN_SIGMA = 1e-6
# hours of the last day that must have data before the hour-of-day profile is learnt / updated
SEASON_MIN_HOURS = 20
NO_HOUR = -(2**62)
# harmonics of the day kept in the profile (periods 24, 12, 8, 6 h): a daily cycle is smooth, and the
# hour-to-hour noise of 24 separately learnt hours would otherwise add slopes of its own
SEASON_HARMONICS = 4


class TrendState:
    """Ring buffer of the last ``reference + window`` buckets and an hour-of-day profile per series.

    count      float64[S, B]   points (weight) of the bucket at step ``k``, stored at ``k % B``; 0 = no data
    loc        float64[S, B]   log-location of that bucket (NaN = no data), not season-adjusted
    prof       float64[S, 24]  seasonal deviation of log-location per hour of day (NaN = not learnt)
    pfit       float64[S, 24]  ``prof`` smoothed to its first ``SEASON_HARMONICS`` harmonics: what is subtracted
    prof_days  float64[S]      days of profile learnt (0 = none: no adjustment)
    hmean      float64[S, 24]  latest weighted mean log-location per hour of day ...
    hstamp     int64[S, 24]    ... and its absolute hour number (``NO_HOUR`` = none)
    hfirst     int64[S]        first hour with data (``NO_HOUR`` = none); learning starts a day later
    hsum, hw   float64[S]      running weighted sum / weight of the current hour
    hour       int64[1]        absolute hour number being accumulated (``NO_HOUR`` before the first step)
    """

    FIELDS = ("count", "loc", "prof", "pfit", "prof_days", "hmean", "hstamp", "hfirst", "hsum", "hw", "hour")

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
        self.prof = np.full((n_series, 24), np.nan, dtype=np.float64)
        self.pfit = np.zeros((n_series, 24), dtype=np.float64)
        self.prof_days = np.zeros(n_series, dtype=np.float64)
        self.hmean = np.full((n_series, 24), np.nan, dtype=np.float64)
        self.hstamp = np.full((n_series, 24), NO_HOUR, dtype=np.int64)
        self.hfirst = np.full(n_series, NO_HOUR, dtype=np.int64)
        self.hsum = np.zeros(n_series, dtype=np.float64)
        self.hw = np.zeros(n_series, dtype=np.float64)
        self.hour = np.full(1, NO_HOUR, dtype=np.int64)

    @property
    def n_series(self) -> int:
        return self.count.shape[0]

    @property
    def span(self) -> int:
        return self.count.shape[1]

    def grow(self, n_series: int) -> None:
        for name, fill in (("count", 0.0), ("loc", np.nan), ("prof", np.nan), ("pfit", 0.0), ("prof_days", 0.0),
                           ("hmean", np.nan), ("hstamp", NO_HOUR), ("hfirst", NO_HOUR), ("hsum", 0.0), ("hw", 0.0)):
            setattr(self, name, grow_rows(getattr(self, name), n_series, fill))

    def reset(self) -> None:
        """Forget every bucket (after a gap in the stream: continuity is lost). The hour-of-day
        profile is kept: the daily cycle does not change because the stream paused."""
        self.count[:] = 0.0
        self.loc[:] = np.nan
        self.hsum[:] = 0.0
        self.hw[:] = 0.0
        self.hour[:] = NO_HOUR


def ramp_lags(window: int, span: int) -> np.ndarray:
    """int64[K]: the ramp start lags tested (steps), ascending: every lag from
    ``max(3, round(MIN_LAG_FRACTION * window))`` to ``window``, then ``span`` (the plain slope)."""
    lo = min(window, max(3, int(round(MIN_LAG_FRACTION * window))))
    return np.unique(np.concatenate([np.arange(lo, window + 1), [span]])).astype(np.int64)


@njit(cache=True, nogil=True)
def _close_hour(hour, hsum, hw, hmean, hstamp, hfirst, prof, pfit, prof_days, gamma, min_hours):
    """Store the weighted mean of the hour ``hour`` per series and update the hour-of-day profile."""
    S = hsum.shape[0]
    slot = hour % 24
    for s in range(S):
        if not (hw[s] > 0):
            continue
        hmean[s, slot] = hsum[s] / hw[s]
        hstamp[s, slot] = hour
        hsum[s] = 0.0
        hw[s] = 0.0
        if hfirst[s] == NO_HOUR:
            hfirst[s] = hour
        if hour - hfirst[s] < 23:
            continue  # not a full day seen yet
        # the level is the mean over the hours of the last day: a full cycle averages the season out,
        # and a linear trend moves every hour's deviation alike, so it is not learnt as a season
        acc = 0.0
        nv = 0
        for j in range(24):
            if hstamp[s, j] > hour - 24:
                acc += hmean[s, j]
                nv += 1
        if nv < min_hours:
            continue
        level = acc / nv
        if prof_days[s] == 0:
            # first day: learn every hour at once, so the whole ring is adjusted by one profile from now on
            for j in range(24):
                prof[s, j] = hmean[s, j] - level if hstamp[s, j] > hour - 24 else np.nan
            prof_days[s] = 1.0
            _fit_profile(prof, pfit, s)
        else:
            dev = hmean[s, slot] - level
            # a plain mean over the first 1 / gamma days (one hour's mean is noisy), then an EWMA; an hour
            # without data on the first day is learnt when it first has some
            g = max(gamma, 1.0 / (prof_days[s] + 1.0))
            prof[s, slot] = dev if np.isnan(prof[s, slot]) else prof[s, slot] + g * (dev - prof[s, slot])
            prof_days[s] += 1.0 / 24.0
            _fit_profile(prof, pfit, s)


@njit(cache=True, nogil=True)
def _fit_profile(prof, pfit, s):
    """pfit[s] = the first SEASON_HARMONICS harmonics of prof[s] (discrete Fourier series over the 24 hours;
    unlearnt hours take the mean of the learnt ones)."""
    acc = 0.0
    nv = 0
    for j in range(24):
        if not np.isnan(prof[s, j]):
            acc += prof[s, j]
            nv += 1
    mean = acc / nv if nv else 0.0
    for j in range(24):
        pfit[s, j] = mean
    for k in range(1, SEASON_HARMONICS + 1):
        a = 0.0
        b = 0.0
        for j in range(24):
            p = prof[s, j] - mean if not np.isnan(prof[s, j]) else 0.0
            a += p * np.cos(2 * np.pi * k * j / 24.0)
            b += p * np.sin(2 * np.pi * k * j / 24.0)
        a *= 2.0 / 24.0
        b *= 2.0 / 24.0
        for j in range(24):
            pfit[s, j] += a * np.cos(2 * np.pi * k * j / 24.0) + b * np.sin(2 * np.pi * k * j / 24.0)


@njit(cache=True, nogil=True, inline="always")
def _season(prof, s, j, f):
    """Profile of series s between the centres of hour slots j and j + 1 (f in [0, 1)); an unlearnt
    (NaN) slot takes its neighbour's value, two unlearnt ones give 0."""
    jn = j + 1 if j < 23 else 0
    p0 = prof[s, j]
    p1 = prof[s, jn]
    if np.isnan(p0):
        p0 = 0.0 if np.isnan(p1) else p1
    if np.isnan(p1):
        p1 = p0
    return p0 * (1.0 - f) + p1 * f


@njit(cache=True, nogil=True)
def _trend(loc, weight, step0, cnt, mu, prof, pfit, prof_days, hmean, hstamp, hfirst, hsum, hw, hour, lags,
           steps_per_hour, log_rate, min_t, min_coverage, min_reference, season, season_gamma, season_min_hours,
           threshold, ratio, rate_out, t_out, level_out, tth_out, lag_out, flag_out):
    """Ring update, hour-of-day profile and hinge fits at every lag for T steps of S series.

    Parameters
    ----------
    loc, weight : float64[T, S]
        Bucket log-locations and their point counts (NaN / <= 0 = no data).
    step0 : int
        Absolute step of row 0 (ring position ``step % B``, UTC hour ``floor(step / steps_per_hour)``).
    cnt, mu : float64[S, B]
        Ring of counts and raw log-locations (updated).
    prof, pfit, prof_days, hmean, hstamp, hfirst, hsum, hw, hour
        Hour-of-day profile state, see :class:`TrendState` (updated).
    lags : int64[K]
        Ramp start lags, ascending, the last one <= B (see :func:`ramp_lags`).
    steps_per_hour, log_rate, min_t, min_coverage, min_reference, season, season_gamma, season_min_hours,
    threshold (float64[S]), ratio
        As in :func:`trend` (``log_rate = log(1 + rate)``).
    rate_out, t_out, level_out, tth_out : float64[T, S]; lag_out : int64[T, S]; flag_out : int8[T, S]
        Outputs, written for every cell.
    """
    T, S = loc.shape
    B = cnt.shape[1]
    K = len(lags)
    # running sums over the ring (age 0 = now) snapshotted when age reaches each lag
    k_c = np.empty(K, dtype=np.float64)
    k_a = np.empty(K, dtype=np.float64)
    k_aa = np.empty(K, dtype=np.float64)
    k_y = np.empty(K, dtype=np.float64)
    k_ay = np.empty(K, dtype=np.float64)
    k_m = np.empty(K, dtype=np.int64)
    # seasonal interpolation per age (shared by every series): profile slot and weight of the next slot
    slot0 = np.empty(B, dtype=np.int64)
    frac = np.empty(B, dtype=np.float64)
    for t in range(T):
        step = step0 + t
        pos = step % B
        hr = np.int64(np.floor(step / steps_per_hour))
        if hr != hour[0]:
            if hour[0] != NO_HOUR:
                _close_hour(hour[0], hsum, hw, hmean, hstamp, hfirst, prof, pfit, prof_days, season_gamma,
                            season_min_hours)
            hour[0] = hr
        for age in range(B):
            # hour of day at the bucket's centre, minus 0.5 h: between the centres of slots i and i + 1
            u = ((step - age + 0.5) / steps_per_hour) % 24.0 - 0.5
            i0 = np.int64(np.floor(u))
            frac[age] = u - i0
            slot0[age] = i0 % 24
        for s in range(S):
            x = loc[t, s]
            w = weight[t, s]
            if np.isnan(x) or not (w > 0):
                cnt[s, pos] = 0.0
                mu[s, pos] = np.nan
            else:
                cnt[s, pos] = w
                mu[s, pos] = x
                hsum[s] += w * x
                hw[s] += w
            rate_out[t, s] = np.nan
            t_out[t, s] = np.nan
            level_out[t, s] = np.nan
            tth_out[t, s] = np.nan
            lag_out[t, s] = 0
            flag_out[t, s] = 0
            seasonal = season and prof_days[s] > 0
            # one pass over the ring: totals plus running sums snapshotted at each lag.
            # y is centred on the first value met so the sums do not cancel catastrophically
            y0 = np.nan
            sw = 0.0
            sy = 0.0
            syy = 0.0
            sa = 0.0
            saa = 0.0
            say = 0.0
            m = 0
            k = 0
            for age in range(B):
                idx = pos - age
                if idx < 0:
                    idx += B
                c = cnt[s, idx]
                if c > 0:
                    v = mu[s, idx]
                    if seasonal:
                        v -= _season(pfit, s, slot0[age], frac[age])
                    if np.isnan(y0):
                        y0 = v
                    y = v - y0
                    sw += c
                    sy += c * y
                    syy += c * y * y
                    sa += c * age
                    saa += c * age * age
                    say += c * age * y
                    m += 1
                # ages 0 .. L-1 are the ramp of lag L
                while k < K and lags[k] == age + 1:
                    k_c[k] = sw
                    k_a[k] = sa
                    k_aa[k] = saa
                    k_y[k] = sy
                    k_ay[k] = say
                    k_m[k] = m
                    k += 1
            while k < K:  # lags beyond the ring (none when lags end at B)
                k_c[k] = sw
                k_a[k] = sa
                k_aa[k] = saa
                k_y[k] = sy
                k_ay[k] = say
                k_m[k] = m
                k += 1
            if m < 4:
                continue
            vyy = syy - sy * sy / sw
            best = -1
            best_t = -np.inf
            best_b = 0.0
            best_a = 0.0
            best_flag = False
            for k in range(K):
                L = lags[k]
                rm = k_m[k]
                # L >= B is the plain slope over the whole span (a creep older than the window)
                if rm < min_coverage * (L if L < B else B) or (L < B and m - rm < min_reference):
                    continue
                # h = L - age over the ramp ages: sums of c h, c h², c h y from the running sums
                sh = L * k_c[k] - k_a[k]
                shh = L * L * k_c[k] - 2.0 * L * k_a[k] + k_aa[k]
                shy = L * k_y[k] - k_ay[k]
                vxx = shh - sh * sh / sw
                if vxx <= 1e-12 * shh:
                    continue
                vxy = shy - sh * sy / sw
                b = vxy / vxx
                rss = vyy - b * vxy
                if rss < 0:
                    rss = 0.0
                sigma = np.sqrt(rss / (m - 2))
                if sigma < MIN_SIGMA:
                    sigma = MIN_SIGMA
                se = sigma / np.sqrt(vxx)
                tk = b / se
                fl = tk >= min_t and (b + UPPER_SE * se) * steps_per_hour >= log_rate
                # report the largest-t lag among the flagging ones if any, else the largest-t lag
                if (fl and not best_flag) or (fl == best_flag and tk > best_t):
                    best_t = tk
                    best = k
                    best_b = b
                    best_a = (sy - b * sh) / sw
                    best_flag = fl
            if best < 0:
                continue
            L = lags[best]
            per_hour = best_b * steps_per_hour
            rate_out[t, s] = np.expm1(per_hour)
            t_out[t, s] = best_t
            lag_out[t, s] = L
            # log level before the ramp and now (season-adjusted values put back on today's profile)
            base = y0 + best_a
            now = base + best_b * L
            if seasonal:
                now += _season(pfit, s, slot0[0], frac[0])
            level_out[t, s] = np.exp(now)
            if best_flag:
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
          season: bool = True, season_gamma: float = 0.1, threshold: np.ndarray | None = None, ratio: float = 2.0
          ) -> dict[str, np.ndarray]:
    """Ramp (creep) test on per-bucket log-locations, updating ``state`` in place.

    Parameters
    ----------
    loc : float64[T, S]
        Log-location of each bucket (e.g. trimmed mean of log(latency ms)); NaN = no data.
    weight : float64[T, S]
        Points behind each location (its weight; the noise of a bucket mean is sigma² / n); <= 0 = no data.
    step0 : int
        Global step index of row 0: the bucket number since the epoch (``event_ns // width``), so
        ``step / steps_per_hour`` is the UTC hour (hour-of-day profile); consecutive calls continue at
        step0 + T.
    state : TrendState
        Ring buffer of ``reference + window`` steps and hour-of-day profile per series.
    steps_per_hour : float
        Steps per hour (60 for 1-minute buckets): converts slopes to relative rates per hour.
    rate : float
        Creep to flag, relative per hour (0.02 = 2 %/h).
    min_t : float
        t statistic of the ramp slope needed, compared with the maximum over the tested lags.
    min_coverage : float
        Fraction of the ramp's L steps that must have data.
    min_reference : int or None
        Steps with data needed before the ramp start (default: half the window).
    season : bool
        Subtract the learnt hour-of-day profile before the test (it is learnt either way).
    season_gamma : float
        Weight of a new day in the hour-of-day profile (0 < season_gamma <= 1).
    threshold : float64[S] or None
        Absolute level per series for the time-to-threshold forecast; NaN/None = ``ratio`` x the level
        before the ramp.
    ratio : float
        Relative threshold used when no absolute one is given.

    Returns
    -------
    dict with float64[T, S] arrays ``rate_per_hour`` (relative, of the reported lag: the flagging lag with
    the largest t, else the largest-t lag), ``t`` (its t statistic), ``level`` (fitted value now),
    ``hours_to_threshold`` (inf when not rising), int64[T, S] ``lag`` (ramp start, steps ago) and int8[T, S]
    ``flag``; NaN / 0 where no lag is covered.
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
    if not (0 < season_gamma <= 1):
        raise ValueError(f"season_gamma must be in (0, 1], got {season_gamma}")
    B = state.span
    shapes = {"count": (S, B), "loc": (S, B), "prof": (S, 24), "pfit": (S, 24), "prof_days": (S,),
              "hmean": (S, 24), "hstamp": (S, 24), "hfirst": (S,), "hsum": (S,), "hw": (S,), "hour": (1,)}
    for name, shape in shapes.items():
        a = getattr(state, name)
        dt = np.int64 if name in ("hstamp", "hfirst", "hour") else np.float64
        if a.shape != shape or a.dtype != dt or not a.flags.c_contiguous:
            raise ValueError(f"state array {name} must be C-contiguous {np.dtype(dt).name}{list(shape)}, got "
                             f"{a.dtype}{list(a.shape)}")
    if min_reference is None:
        min_reference = max(2, state.window // 2)
    if threshold is None:
        threshold = np.full(S, np.nan)
    threshold = np.ascontiguousarray(threshold, dtype=np.float64)
    if threshold.shape != (S,):
        raise ValueError(f"threshold must be float64[{S}], got shape {threshold.shape}")
    lags = ramp_lags(state.window, B)
    T = loc.shape[0]
    out = {k: np.empty((T, S), dtype=np.float64) for k in ("rate_per_hour", "t", "level", "hours_to_threshold")}
    lag = np.empty((T, S), dtype=np.int64)
    flag = np.empty((T, S), dtype=np.int8)
    _trend(np.ascontiguousarray(loc), np.ascontiguousarray(weight), int(step0), state.count, state.loc, state.prof,
           state.pfit, state.prof_days, state.hmean, state.hstamp, state.hfirst, state.hsum, state.hw, state.hour,
           lags, float(steps_per_hour), float(np.log1p(rate)), float(min_t), float(min_coverage),
           int(min_reference), bool(season), float(season_gamma), SEASON_MIN_HOURS, threshold, float(ratio),
           out["rate_per_hour"], out["t"], out["level"], out["hours_to_threshold"], lag, flag)
    out["lag"] = lag
    out["flag"] = flag
    return out
