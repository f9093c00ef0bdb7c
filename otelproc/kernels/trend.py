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
span (a creep older than W, whose rate the hinge would misestimate). Every lag's fit needs
only the sums of c, c·age, c·age², c·y and c·age·y over its ramp ages (``h = L - age``) and
the sums over the whole span, and the ramp ages [0, L) of the lags nest: per series the
state keeps those sums over the ramp of the shortest lag and over the whole span as
**running sums**, updated in O(1) per step (the bucket that leaves each window is
subtracted, the new one added), and a walk over the ages between the shortest and the
longest window lag gives the other lags' sums: O(lags) per point, not O(B) (see
"Running sums" below). The noise is estimated from the weighted residuals of each fit
(``sigma² = sum n r² / (m - 2)`` over m buckets), so extra minute-to-minute variance
beyond sampling noise widens the standard error instead of producing alarms. A creep is
flagged when, for at least one lag,

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
applied to the whole ring (the ring keeps raw values and its season-adjusted copy is
rebuilt whenever the profile changes, so the ring is always adjusted by one profile).
Deviations from a mean over a full day do not contain a linear trend (it moves every
hour alike), so a creep is not learnt as a season. During the first day there is no
profile: a load-driven latency cycle can fire then (the data of one monotone stretch
cannot always tell it from a creep).

**Load.** Latency that follows the load (a business-hours ramp the profile's harmonics do not
fit exactly, rate steps of some minutes, the first morning before a profile exists) is not a
creep. On every day a flag must also survive the series' own log smoothed load as a covariate
(:func:`_load_keeps_flag`; once a profile exists, on the season-adjusted values: the daily cycle is
the profile's, the load explains its moves off the cycle), with the elasticity learnt in the reference
part where the load moved there, else fitted together with the hinge over the whole span. It can only
remove flags. (On the raw values instead, a 2 %/h creep on a latency that follows a +-50 % load cycle
was found within the hour on day 3 in 41 % of the series instead of 99 %, benchmarks/trend_power.py.)

Locations should be robust per bucket (the processor uses a trimmed mean of
log(ms), :func:`otelproc.kernels.series.aggregate_cells`), so a few slow requests
do not look like a creep.

**Running sums.** They use ``k = step - anchor step`` instead of the age (``sum c·age =
now·sum c - sum c·k``, so nothing shifts when a step passes) and ``y`` = the season-adjusted
log-location minus an anchor value (so the sums do not cancel catastrophically); the
season-adjusted ``y`` of every ring slot is kept next to the ring. The profile changes only
when an hour closes, and float additions and subtractions drift, so a series' sums are
rebuilt exactly from the ring (one O(B) pass) at every hour boundary (O(B / steps per hour)
per point, amortised), after :meth:`TrendState.reset`, for the rows added by
:meth:`TrendState.grow`, after a state array was assigned (a state load: the derived sums
are not persisted), when a call does not continue the previous one (``step0``, ``season``
or ``steps_per_hour`` differ) and while a non-finite value is in the ring.
Cost: O(lags) per point, constant in stream length; the state is O(B + 24) per series.
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
# harmonics of the day kept in the profile (periods 24, 12, ..., 3 h): the hour-to-hour noise of 24 separately
# learnt hours would add slopes of its own, and 4 harmonics (down to 6 h) leave the 2-hour ramps of a
# business-hours load as creeps every day (issue 14's quiet days; kernel alone on benchmarks/nuisance.py-like
# latency with the load check on every day: false trends on days 2-3 ~17 -> ~5 per seed-day; flat series,
# days 2-4 of benchmarks/trend_power.py: 11 false trends in 7,200 series-hours, 6 with 4 harmonics)
SEASON_HARMONICS = 8
# The load covariate. LOAD_SMOOTH_STEPS is the EWMA span of a series' points per step; its log is the
# covariate. A flag stands only if the ramp remains after removing the load effect, where the data show one:
# elasticity significant at LOAD_MIN_T and a load that moved (variance of its log at least
# LOAD_MIN_NOISE_RATIO x its Poisson noise).
LOAD_SMOOTH_STEPS = 15
LOAD_MIN_T = 2.0
LOAD_MIN_NOISE_RATIO = 2.0


# Columns of ``TrendState.run_sums``: running sums per series over the ramp of the shortest lag (ages
# [0, lags[0])) and over the whole span (ages [0, B)) of the weights c, c k, c k², c y, c k y (and c y²
# over the span) and the number m of buckets with data, where k = step - ANCHOR_STEP and
# y = season-adjusted log-location - ANCHOR_Y; SUMS_VALID = 0 means "rebuild from the ring".
RAMP_C, RAMP_CK, RAMP_CKK, RAMP_CY, RAMP_CKY, RAMP_M = 0, 1, 2, 3, 4, 5
SPAN_C, SPAN_CK, SPAN_CKK, SPAN_CY, SPAN_CKY, SPAN_CYY, SPAN_M = 6, 7, 8, 9, 10, 11, 12
ANCHOR_STEP, ANCHOR_Y, SUMS_VALID = 13, 14, 15
N_SUMS = 16


class _Persisted:
    """A persisted state array (one of ``TrendState.FIELDS``). Assigning it, as a state load does,
    marks every series' running sums stale: they are derived from these arrays and not persisted."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.slot = "_" + name

    def __get__(self, obj, objtype=None):
        return self if obj is None else getattr(obj, self.slot)

    def __set__(self, obj, value) -> None:
        setattr(obj, self.slot, value)
        obj.synced[:] = np.nan


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
    load       float64[S, B]   log of the smoothed load (points per step) at step ``k``, stored at ``k % B``
    load_ew    float64[S]      EWMA of points per step (0 for an empty step; NaN before the first step)

    Derived from those and not persisted (``FIELDS`` is what a save writes; assigning any of them
    marks these stale, and the kernel rebuilds them from the ring):

    ring_y     float64[S, B]   season-adjusted log-location of each ring slot minus the series' anchor
                               (0 where the slot has no data)
    run_sums   float64[S, N_SUMS]  running sums per series, columns ``RAMP_*``, ``SPAN_*``, ``ANCHOR_*``,
                               ``SUMS_VALID`` (see the module constants)
    synced     float64[3]      (last step, steps_per_hour, season) of the previous call; NaN = rebuild all
    lags       int64[K]        :func:`ramp_lags` of the window and span (computed once, not per call)

    Change the persisted arrays only through :func:`trend`, :meth:`reset`, :meth:`grow` or by assigning
    whole arrays: an in-place edit of ``count`` or ``loc`` would not be seen by the running sums.
    """

    FIELDS = ("count", "loc", "prof", "pfit", "prof_days", "hmean", "hstamp", "hfirst", "hsum", "hw", "hour",
              "load", "load_ew")
    count = _Persisted()
    loc = _Persisted()
    prof = _Persisted()
    pfit = _Persisted()
    prof_days = _Persisted()
    hmean = _Persisted()
    hstamp = _Persisted()
    hfirst = _Persisted()
    hsum = _Persisted()
    hw = _Persisted()
    hour = _Persisted()
    load = _Persisted()
    load_ew = _Persisted()

    def __init__(self, n_series: int, window: int, reference: int | None = None):
        if window < 4:
            raise ValueError(f"trend window must be >= 4 steps, got {window}")
        reference = 2 * window if reference is None else reference
        if reference < 2:
            raise ValueError(f"trend reference must be >= 2 steps, got {reference}")
        self.window = int(window)
        self.reference = int(reference)
        B = self.window + self.reference
        self.synced = np.full(3, np.nan, dtype=np.float64)
        self.lags = ramp_lags(self.window, B)
        self.ring_y = np.zeros((n_series, B), dtype=np.float64)
        self.run_sums = np.zeros((n_series, N_SUMS), dtype=np.float64)
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
        self.load = np.full((n_series, B), np.nan, dtype=np.float64)
        self.load_ew = np.full(n_series, np.nan, dtype=np.float64)

    @property
    def n_series(self) -> int:
        return self.count.shape[0]

    @property
    def span(self) -> int:
        return self.count.shape[1]

    def grow(self, n_series: int) -> None:
        """Add series up to ``n_series`` (empty rings); the existing series keep their running sums."""
        for name, fill in (("count", 0.0), ("loc", np.nan), ("prof", np.nan), ("pfit", 0.0), ("prof_days", 0.0),
                           ("hmean", np.nan), ("hstamp", NO_HOUR), ("hfirst", NO_HOUR), ("hsum", 0.0), ("hw", 0.0),
                           ("load", np.nan), ("load_ew", np.nan)):
            # the private slot, not the attribute: assigning the attribute marks every series stale
            setattr(self, "_" + name, grow_rows(getattr(self, name), n_series, fill))
        self.ring_y = grow_rows(self.ring_y, n_series, 0.0)
        self.run_sums = grow_rows(self.run_sums, n_series, 0.0)  # SUMS_VALID = 0: rebuilt at the next step

    def init_load_from_counts(self) -> None:
        """The load ring of a state saved before it existed (version 3): the bucket counts themselves."""
        has = self.count > 0
        self.load = np.where(has, np.log(np.where(has, self.count, 1.0)), np.nan)
        self.load_ew = self.count.mean(axis=1)  # the newest slot is not known here: the ring's mean

    def reset(self) -> None:
        """Forget every bucket (after a gap in the stream: continuity is lost). The hour-of-day
        profile is kept: the daily cycle does not change because the stream paused."""
        self.count[:] = 0.0
        self.loc[:] = np.nan
        self.hsum[:] = 0.0
        self.hw[:] = 0.0
        self.hour[:] = NO_HOUR
        self.synced[:] = np.nan

    def _derived_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(ring_y, run_sums, synced), reallocated (stale) when a state load changed the number of series."""
        S, B = self.count.shape
        if self.ring_y.shape != (S, B) or self.run_sums.shape != (S, N_SUMS):
            self.ring_y = np.zeros((S, B), dtype=np.float64)
            self.run_sums = np.zeros((S, N_SUMS), dtype=np.float64)
            self.synced[:] = np.nan
        return self.ring_y, self.run_sums, self.synced


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
    # the harmonics at each hour slot, once per call rather than per series (the same values, the same order)
    harm_cos = np.empty((SEASON_HARMONICS, 24), dtype=np.float64)
    harm_sin = np.empty((SEASON_HARMONICS, 24), dtype=np.float64)
    for k in range(1, SEASON_HARMONICS + 1):
        for j in range(24):
            harm_cos[k - 1, j] = np.cos(2 * np.pi * k * j / 24.0)
            harm_sin[k - 1, j] = np.sin(2 * np.pi * k * j / 24.0)
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
            _fit_profile(prof, pfit, s, harm_cos, harm_sin)
        else:
            dev = hmean[s, slot] - level
            # a plain mean over the first 1 / gamma days (one hour's mean is noisy), then an EWMA; an hour
            # without data on the first day is learnt when it first has some
            g = max(gamma, 1.0 / (prof_days[s] + 1.0))
            prof[s, slot] = dev if np.isnan(prof[s, slot]) else prof[s, slot] + g * (dev - prof[s, slot])
            prof_days[s] += 1.0 / 24.0
            _fit_profile(prof, pfit, s, harm_cos, harm_sin)


@njit(cache=True, nogil=True)
def _fit_profile(prof, pfit, s, harm_cos, harm_sin):
    """pfit[s] = the first SEASON_HARMONICS harmonics of prof[s] (discrete Fourier series over the 24 hours;
    unlearnt hours take the mean of the learnt ones). harm_cos, harm_sin : float64[SEASON_HARMONICS, 24], the
    cosine and sine of harmonic k + 1 at hour slot j."""
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
            a += p * harm_cos[k - 1, j]
            b += p * harm_sin[k - 1, j]
        a *= 2.0 / 24.0
        b *= 2.0 / 24.0
        for j in range(24):
            pfit[s, j] += a * harm_cos[k - 1, j] + b * harm_sin[k - 1, j]


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


@njit(cache=True, nogil=True, error_model="numpy")
def _rebuild_sums(s, ramp_len, anchor_step, seasonal, cnt, mu, pfit, ring_idx, slot_age, slot_next, frac_age,
                  season_age, ring_y, run_sums):
    """Rebuild series s's running sums and season-adjusted ring exactly from its ring (one O(B) pass),
    anchored at the current step and at the latest bucket with data (as the one-pass fit centres y).

    Parameters
    ----------
    s : int
        Series row.
    ramp_len : int
        Ages [0, ramp_len) form the ramp window (the shortest lag).
    anchor_step : int
        The current step (age 0).
    seasonal : bool
        Subtract the profile ``pfit[s]`` between the hour slots ``slot_age`` and ``slot_next`` with the weight
        ``frac_age`` of the next one (per age at this step).
    cnt, mu : float64[S, B]
        Ring of counts and raw log-locations.
    ring_idx, slot_age, slot_next : uint64[B]; frac_age : float64[B]
        Ring position and hour-of-day interpolation per age at this step (shared by every series).
    season_age : float64[B]
        Scratch: the profile per age.
    ring_y : float64[S, B]; run_sums : float64[S, N_SUMS]
        Row s rewritten; ``SUMS_VALID`` is 0 when a sum is not finite (rebuilt again next step).
    """
    B = cnt.shape[1]
    if seasonal:
        learnt = True
        for j in range(24):
            if np.isnan(pfit[s, j]):
                learnt = False
        if learnt:  # the same interpolation as _season, without its fallbacks for unlearnt slots
            for age in range(B):
                f = frac_age[age]
                season_age[age] = pfit[s, slot_age[age]] * (1.0 - f) + pfit[s, slot_next[age]] * f
        else:
            for age in range(B):
                season_age[age] = _season(pfit, s, np.int64(slot_age[age]), frac_age[age])
    # the anchor: the latest season-adjusted value
    y_anchor = np.nan
    for age in range(B):
        idx = ring_idx[age]
        if cnt[s, idx] > 0:
            y_anchor = mu[s, idx] - season_age[age] if seasonal else mu[s, idx]
            if not np.isnan(y_anchor):
                break
    sc = 0.0
    sck = 0.0
    sckk = 0.0
    scy = 0.0
    scky = 0.0
    scyy = 0.0
    sm = 0.0
    # ages [0, ramp_len) (the ramp window), then [ramp_len, B); k = -age at the anchor step. An empty slot
    # holds c = 0, y = 0 and adds zeros
    for part in range(2):
        for age in range(0 if part == 0 else ramp_len, ramp_len if part == 0 else B):
            idx = ring_idx[age]
            c = cnt[s, idx]
            y = 0.0
            if c > 0:
                y = (mu[s, idx] - season_age[age] if seasonal else mu[s, idx]) - y_anchor
                sm += 1.0
            ring_y[s, idx] = y
            ck = c * -age
            sc += c
            sck += ck
            sckk += ck * -age
            scy += c * y
            scky += ck * y
            scyy += c * y * y
        if part == 0:
            run_sums[s, RAMP_C] = sc
            run_sums[s, RAMP_CK] = sck
            run_sums[s, RAMP_CKK] = sckk
            run_sums[s, RAMP_CY] = scy
            run_sums[s, RAMP_CKY] = scky
            run_sums[s, RAMP_M] = sm
    run_sums[s, SPAN_C] = sc
    run_sums[s, SPAN_CK] = sck
    run_sums[s, SPAN_CKK] = sckk
    run_sums[s, SPAN_CY] = scy
    run_sums[s, SPAN_CKY] = scky
    run_sums[s, SPAN_CYY] = scyy
    run_sums[s, SPAN_M] = sm
    run_sums[s, ANCHOR_STEP] = anchor_step
    run_sums[s, ANCHOR_Y] = 0.0 if np.isnan(y_anchor) else y_anchor
    total = y_anchor if np.isinf(y_anchor) else 0.0
    for j in range(ANCHOR_STEP):
        total += run_sums[s, j]
    run_sums[s, SUMS_VALID] = 1.0 if np.isfinite(total) else 0.0


@njit(cache=True, nogil=True, inline="always")
def _hinge_fit(L, rc, ra, raa, ry, ray, sw, sy, vyy, m):
    """Weighted least squares of the hinge at lag L from its ramp sums (c, c·age, c·age², c·y, c·age·y) and
    the span's (sw = sum c, sy = sum c·y, vyy = sum c·(y - mean)², m buckets): (slope b, se(b), t, sum c·h)."""
    sh = L * rc - ra
    shh = L * L * rc - 2.0 * L * ra + raa
    shy = L * ry - ray
    vxx = shh - sh * sh / sw
    vxy = shy - sh * sy / sw
    b = vxy / vxx
    rss = vyy - b * vxy
    if rss < 0:
        rss = 0.0
    sigma = np.sqrt(rss / (m - 2))
    if sigma < MIN_SIGMA:
        sigma = MIN_SIGMA
    se = sigma / np.sqrt(vxx)
    return b, se, b / se, sh


@njit(cache=True, nogil=True, inline="always")
def _slide_sums(s, step, B, L0, upos, leave_ramp, c_old, y_old, c_new, v_new, cnt, ring_y, run_sums):
    """O(1) update of series s's running sums at a new step: the bucket (c_old, y_old) of the ring slot ``upos``
    being overwritten leaves the span, the new bucket (c_new, season-adjusted value v_new; c_new = 0 = no data)
    enters both windows and is written to ``ring_y[s, upos]``, and the bucket at age L0 (slot ``leave_ramp``)
    leaves the ramp window. Returns False when a sum is not finite (a non-finite value came in)."""
    k0 = run_sums[s, ANCHOR_STEP]
    sc = run_sums[s, SPAN_C]
    sck = run_sums[s, SPAN_CK]
    sckk = run_sums[s, SPAN_CKK]
    scy = run_sums[s, SPAN_CY]
    scky = run_sums[s, SPAN_CKY]
    scyy = run_sums[s, SPAN_CYY]
    sm = run_sums[s, SPAN_M]
    # an empty slot holds c = 0, y = 0: subtracting it changes nothing
    k = (step - B) - k0
    ck = c_old * k
    sc -= c_old
    sck -= ck
    sckk -= ck * k
    scy -= c_old * y_old
    scky -= ck * y_old
    scyy -= c_old * y_old * y_old
    if c_old > 0:
        sm -= 1.0
    if sm == 0.0:
        # nothing left in the ring: restart exactly from zero, anchored at the new bucket
        sc = sck = sckk = scy = scky = scyy = 0.0
        run_sums[s, RAMP_C] = 0.0
        run_sums[s, RAMP_CK] = 0.0
        run_sums[s, RAMP_CKK] = 0.0
        run_sums[s, RAMP_CY] = 0.0
        run_sums[s, RAMP_CKY] = 0.0
        run_sums[s, RAMP_M] = 0.0
        run_sums[s, ANCHOR_STEP] = step
        k0 = run_sums[s, ANCHOR_STEP]
        if c_new > 0:
            run_sums[s, ANCHOR_Y] = v_new
    y_new = v_new - run_sums[s, ANCHOR_Y] if c_new > 0 else 0.0
    ring_y[s, upos] = y_new
    k = step - k0
    ck = c_new * k
    sc += c_new
    sck += ck
    sckk += ck * k
    scy += c_new * y_new
    scky += ck * y_new
    scyy += c_new * y_new * y_new
    rc = run_sums[s, RAMP_C] + c_new
    rck = run_sums[s, RAMP_CK] + ck
    rckk = run_sums[s, RAMP_CKK] + ck * k
    rcy = run_sums[s, RAMP_CY] + c_new * y_new
    rcky = run_sums[s, RAMP_CKY] + ck * y_new
    rm = run_sums[s, RAMP_M]
    if c_new > 0:
        sm += 1.0
        rm += 1.0
    # the bucket L0 steps old leaves the ramp window
    c_r = cnt[s, leave_ramp]
    y_r = ring_y[s, leave_ramp]
    k = (step - L0) - k0
    ck = c_r * k
    rc -= c_r
    rck -= ck
    rckk -= ck * k
    rcy -= c_r * y_r
    rcky -= ck * y_r
    if c_r > 0:
        rm -= 1.0
    if rm == 0.0:
        rc = rck = rckk = rcy = rcky = 0.0
    run_sums[s, SPAN_C] = sc
    run_sums[s, SPAN_CK] = sck
    run_sums[s, SPAN_CKK] = sckk
    run_sums[s, SPAN_CY] = scy
    run_sums[s, SPAN_CKY] = scky
    run_sums[s, SPAN_CYY] = scyy
    run_sums[s, SPAN_M] = sm
    run_sums[s, RAMP_C] = rc
    run_sums[s, RAMP_CK] = rck
    run_sums[s, RAMP_CKK] = rckk
    run_sums[s, RAMP_CY] = rcy
    run_sums[s, RAMP_CKY] = rcky
    run_sums[s, RAMP_M] = rm
    return np.isfinite(sc + sck + sckk + scy + scky + scyy + rc + rck + rckk + rcy + rcky)


@njit(cache=True, nogil=True, inline="always")
def _lag_sums(s, step, L0, walk_idx, cnt, ring_y, run_sums, lag_c, lag_a, lag_aa, lag_y, lag_ay, lag_m):
    """Ramp sums of every lag of series s over ages (c, c·age, c·age², c·y, c·age·y, buckets with data) into
    ``lag_*[:K]``: the shortest lag's and the span's from the running sums (age = now - k), the window lags
    between them by adding the ages L0 .. (ring slots ``walk_idx``), one per lag."""
    n_walk = len(walk_idx)
    now = step - run_sums[s, ANCHOR_STEP]
    rc = run_sums[s, RAMP_C]
    ra = now * rc - run_sums[s, RAMP_CK]
    raa = now * now * rc - 2.0 * now * run_sums[s, RAMP_CK] + run_sums[s, RAMP_CKK]
    ry = run_sums[s, RAMP_CY]
    ray = now * ry - run_sums[s, RAMP_CKY]
    rm = run_sums[s, RAMP_M]
    lag_c[0] = rc
    lag_a[0] = ra
    lag_aa[0] = raa
    lag_y[0] = ry
    lag_ay[0] = ray
    lag_m[0] = rm
    age = float(L0)
    for i in range(n_walk):
        idx = walk_idx[i]
        c = cnt[s, idx]
        y = ring_y[s, idx]
        ca = c * age
        rc += c
        ra += ca
        raa += ca * age
        ry += c * y
        ray += ca * y
        rm += 1.0 if c > 0 else 0.0
        lag_c[i + 1] = rc
        lag_a[i + 1] = ra
        lag_aa[i + 1] = raa
        lag_y[i + 1] = ry
        lag_ay[i + 1] = ray
        lag_m[i + 1] = rm
        age += 1.0
    # the last lag is the whole span (L = B)
    sw = run_sums[s, SPAN_C]
    sy = run_sums[s, SPAN_CY]
    lag_c[n_walk + 1] = sw
    lag_a[n_walk + 1] = now * sw - run_sums[s, SPAN_CK]
    lag_aa[n_walk + 1] = now * now * sw - 2.0 * now * run_sums[s, SPAN_CK] + run_sums[s, SPAN_CKK]
    lag_y[n_walk + 1] = sy
    lag_ay[n_walk + 1] = now * sy - run_sums[s, SPAN_CKY]
    lag_m[n_walk + 1] = run_sums[s, SPAN_M]


# error_model="numpy" (here and in _trend, which inlines this): a division by zero gives inf / NaN instead of a
# check and an exception, so the per-lag loop has no branches; lags where that can happen are masked out by ``ok``
@njit(cache=True, nogil=True, inline="always", error_model="numpy")
def _best_lag(K, lag_f, lag_c, lag_a, lag_aa, lag_y, lag_ay, lag_m, need_ramp, need_ref, lag_key, sw, sy, vyy, m,
              min_t, log_rate, steps_per_hour):
    """The lag to report: the flagging lag with the largest t if any lag flags, else the largest-t lag (the
    first one on ties); -1 when no lag is covered. Returns (lag index, flag)."""
    inv_sw = 1.0 / sw
    inv_m2 = 1.0 / (m - 2.0)
    # t|t| of every lag (t = b / se(b) = vxy / sqrt(sigma² vxx)): the same order as t without a square root,
    # one division per lag and no branches, so the loop vectorises (over the padded length); -inf where the lag
    # is not covered or degenerate
    for k in range(len(lag_key)):
        L = lag_f[k]
        sh = L * lag_c[k] - lag_a[k]
        shh = L * L * lag_c[k] - 2.0 * L * lag_a[k] + lag_aa[k]
        shy = L * lag_y[k] - lag_ay[k]
        vxx = shh - sh * sh * inv_sw
        vxy = shy - sh * sy * inv_sw
        q = (vyy * vxx - vxy * vxy) * inv_m2  # rss · vxx / (m - 2)
        q_min = MIN_SIGMA * MIN_SIGMA * vxx
        if q < q_min:
            q = q_min
        t_abs_t = vxy * np.abs(vxy) / q
        ok = (lag_m[k] >= need_ramp[k]) & (m - lag_m[k] >= need_ref[k]) & (vxx > 1e-12 * shh)
        lag_key[k] = t_abs_t if ok else -np.inf
    best = -1
    best_key = -np.inf
    for k in range(K):
        if lag_key[k] > best_key:
            best_key = lag_key[k]
            best = k
    if best_key < min_t * abs(min_t):
        return best, False  # no lag reaches min_t: none can flag
    # some lag may flag: the selection of the one-pass fit, with its formulas
    best = -1
    best_t = -np.inf
    best_flag = False
    for k in range(K):
        if lag_key[k] == -np.inf:
            continue  # not covered
        b, se, tk, _ = _hinge_fit(lag_f[k], lag_c[k], lag_a[k], lag_aa[k], lag_y[k], lag_ay[k], sw, sy, vyy, m)
        fl = tk >= min_t and (b + UPPER_SE * se) * steps_per_hour >= log_rate
        if (fl and not best_flag) or (fl == best_flag and tk > best_t):
            best_t = tk
            best = k
            best_flag = fl
    return best, best_flag


@njit(cache=True, nogil=True)
def _load_keeps_flag(s, pos, cnt, mu, load, lags, window, min_coverage, min_reference, min_t, log_rate,
                     steps_per_hour, load_alpha, load_min_t):
    """Does the flag of series ``s`` at ring position ``pos`` survive the series' load as a covariate?

    Latency that follows the load rises with the morning traffic (and looks like a creep until a profile
    is learnt), with rate steps, and with the parts of a business-hours cycle the profile does not fit.
    Where the reference part of the span (ages >= ``window``) shows a load effect
    -- the weighted regression of log-location on log smoothed load has a slope beta with
    |beta| >= ``load_min_t`` standard errors, and the log load there varied at least
    ``LOAD_MIN_NOISE_RATIO`` x its Poisson noise -- the ramp is tested again on y - beta x (the
    uncertainty of beta added through the ramp's own slope of x), and the flag stands only if some lag
    passes both tests. Estimating beta before the window keeps a creep inside it from being learnt as a
    load effect. Where the reference part cannot tell (its load flat: the first rise after the night) but
    the load moved in the span, hinge and log load are fitted together over the whole span, and a lag
    loses its flag only if the load's coefficient is significant at ``load_min_t`` there and the hinge no
    longer passes beside it. A load that moved nowhere leaves the flag as it is; the check can only remove
    flags. O(B), run only for flagged series, so it costs nothing on the common path.
    """
    B = cnt.shape[1]
    K = len(lags)
    k_c = np.empty(K)
    k_a = np.empty(K)
    k_aa = np.empty(K)
    k_y = np.empty(K)
    k_ay = np.empty(K)
    k_x = np.empty(K)
    k_ax = np.empty(K)
    k_m = np.empty(K, dtype=np.int64)
    y0 = np.nan
    x0 = np.nan
    sw = sy = syy = sa = saa = say = 0.0
    sx = sxx = sxy = sax = 0.0
    rc = rx = rxx = rxy = ry = ryy = 0.0
    m = 0
    ref_m = 0
    k = 0
    for age in range(B):
        idx = pos - age
        if idx < 0:
            idx += B
        c = cnt[s, idx]
        if c > 0 and not np.isnan(load[s, idx]):
            if np.isnan(y0):
                y0 = mu[s, idx]
                x0 = load[s, idx]
            y = mu[s, idx] - y0
            xl = load[s, idx] - x0
            sw += c
            sy += c * y
            syy += c * y * y
            sa += c * age
            saa += c * age * age
            say += c * age * y
            sx += c * xl
            sxx += c * xl * xl
            sxy += c * xl * y
            sax += c * age * xl
            m += 1
            if age >= window:
                rc += c
                rx += c * xl
                rxx += c * xl * xl
                rxy += c * xl * y
                ry += c * y
                ryy += c * y * y
                ref_m += 1
        while k < K and lags[k] == age + 1:  # ages 0 .. L-1 are the ramp of lag L
            k_c[k] = sw
            k_a[k] = sa
            k_aa[k] = saa
            k_y[k] = sy
            k_ay[k] = say
            k_x[k] = sx
            k_ax[k] = sax
            k_m[k] = m
            k += 1
    if m < 4:
        return True
    # the elasticity from the reference part, where it can be told there (else joint = True: below)
    joint = True
    beta = se_beta = 0.0
    if ref_m >= max(min_reference, 3):
        vx_r = rxx - rx * rx / rc
        if vx_r > 1e-12:
            cxy_r = rxy - rx * ry / rc
            beta = cxy_r / vx_r
            res_r = max((ryy - ry * ry / rc) - beta * cxy_r, 0.0)
            se_beta = np.sqrt(res_r / (ref_m - 2) / vx_r)
            noise = load_alpha / (2.0 - load_alpha) * ref_m / rc  # variance of the smoothed log count, Poisson
            joint = vx_r / rc < LOAD_MIN_NOISE_RATIO * noise or abs(beta) < load_min_t * max(se_beta, 1e-12)
    vyy = syy - sy * sy / sw
    vxl = sxx - sx * sx / sw  # log load over the whole span
    if joint and vxl / sw < LOAD_MIN_NOISE_RATIO * load_alpha / (2.0 - load_alpha) * m / sw:
        return True  # the load did not move beyond its noise anywhere in the span: nothing to explain
    vly = sxy - sx * sy / sw
    sy_x = sy - beta * sx
    vyy_x = (syy - 2.0 * beta * sxy + beta * beta * sxx) - sy_x * sy_x / sw
    for k in range(K):
        L = lags[k]
        rm = k_m[k]
        if rm < min_coverage * (L if L < B else B) or (L < B and m - rm < min_reference):
            continue
        sh = L * k_c[k] - k_a[k]
        shh = L * L * k_c[k] - 2.0 * L * k_a[k] + k_aa[k]
        shy = L * k_y[k] - k_ay[k]
        vxx = shh - sh * sh / sw
        if vxx <= 1e-12 * shh:
            continue
        # the plain test of this lag ...
        vxy = shy - sh * sy / sw
        b = vxy / vxx
        sigma = max(np.sqrt(max(vyy - b * vxy, 0.0) / (m - 2)), MIN_SIGMA)
        se = sigma / np.sqrt(vxx)
        if not (b / se >= min_t and (b + UPPER_SE * se) * steps_per_hour >= log_rate):
            continue
        shx = L * k_x[k] - k_ax[k]
        vhl = shx - sh * sx / sw  # hinge x log load
        if not joint:
            # ... and on y - beta x
            vxy = (shy - beta * shx) - sh * sy_x / sw
            b = vxy / vxx
            sigma = max(np.sqrt(max(vyy_x - b * vxy, 0.0) / (m - 2)), MIN_SIGMA)
            bx = vhl / vxx  # the ramp's own slope of log load
            se = np.sqrt(sigma * sigma / vxx + bx * bx * se_beta * se_beta)
            if b / se >= min_t and (b + UPPER_SE * se) * steps_per_hour >= log_rate:
                return True
            continue
        # ... or, where the reference part cannot tell (the load was flat there: the first rise after the
        # night), hinge and load fitted together over the whole span: the lag loses its flag only when the
        # load's elasticity is significant in that fit and the hinge is no longer significant beside it
        det = vxx * vxl - vhl * vhl
        if not (det > 1e-12 * vxx * vxl):
            return True  # hinge and load indistinguishable: the load cannot be told from a creep either
        bj = (vxy * vxl - vly * vhl) / det
        gj = (vly * vxx - vxy * vhl) / det
        sj = max(np.sqrt(max(vyy - bj * vxy - gj * vly, 0.0) / (m - 3)), MIN_SIGMA)
        se_b = sj * np.sqrt(vxl / det)
        se_g = sj * np.sqrt(vxx / det)
        if abs(gj) < load_min_t * se_g:
            return True  # the load explains nothing here
        if bj / se_b >= min_t and (bj + UPPER_SE * se_b) * steps_per_hour >= log_rate:
            return True
    return False


@njit(cache=True, nogil=True, error_model="numpy")
def _trend(loc, weight, step0, cnt, mu, prof, pfit, prof_days, hmean, hstamp, hfirst, hsum, hw, hour, load, load_ew,
           ring_y, run_sums, synced, lags, window, steps_per_hour, log_rate, min_t, min_coverage, min_reference,
           season, season_gamma, season_min_hours, load_alpha, load_min_t, threshold, ratio, rate_out, t_out,
           level_out, tth_out, lag_out, flag_out):
    """Ring update, hour-of-day profile, running sums and hinge fits at every lag for T steps of S series.

    Parameters
    ----------
    loc, weight : float64[T, S]
        Bucket log-locations and their point counts (NaN / <= 0 = no data).
    step0 : int
        Absolute step of row 0 (ring position ``step % B``, UTC hour ``floor(step / steps_per_hour)``).
    cnt, mu : float64[S, B]
        Ring of counts and raw log-locations (updated).
    prof, pfit, prof_days, hmean, hstamp, hfirst, hsum, hw, hour, load, load_ew
        Hour-of-day profile and load state, see :class:`TrendState` (updated).
    ring_y : float64[S, B]; run_sums : float64[S, N_SUMS]; synced : float64[3]
        Derived state, see :class:`TrendState` (updated; rebuilt where stale).
    lags : int64[K]
        Ramp start lags from :func:`ramp_lags`: consecutive window lags ``lags[:-1] < B``, then ``lags[-1] == B``.
    window : int
        Ramp window W (steps): the reference part of the span is ages >= W.
    steps_per_hour, log_rate, min_t, min_coverage, min_reference, season, season_gamma, season_min_hours,
    load_alpha, load_min_t, threshold (float64[S]), ratio
        As in :func:`trend` (``log_rate = log(1 + rate)``, ``load_alpha`` the load EWMA's weight).
    rate_out, t_out, level_out, tth_out : float64[T, S]; lag_out : int64[T, S]; flag_out : int8[T, S]
        Outputs, written for every cell.
    """
    T, S = loc.shape
    B = cnt.shape[1]
    K = len(lags)
    L0 = lags[0]
    n_walk = lags[K - 2] - L0  # ages L0 .. lags[K - 2] - 1 complete the longer lags' ramps
    # per lag (padded to a multiple of 8 with lags that are never covered, so the fit loop has no scalar tail):
    # ramp sums of c, c·age, c·age², c·y, c·age·y and buckets with data; t·|t| (ordered as t)
    KP = (K + 7) // 8 * 8
    lag_c = np.zeros(KP, dtype=np.float64)
    lag_a = np.zeros(KP, dtype=np.float64)
    lag_aa = np.zeros(KP, dtype=np.float64)
    lag_y = np.zeros(KP, dtype=np.float64)
    lag_ay = np.zeros(KP, dtype=np.float64)
    lag_m = np.zeros(KP, dtype=np.float64)
    lag_key = np.empty(KP, dtype=np.float64)
    # per lag constants: L as float, ramp buckets needed, reference buckets needed
    lag_f = np.ones(KP, dtype=np.float64)
    need_ramp = np.full(KP, np.inf)
    need_ref = np.zeros(KP, dtype=np.float64)
    for k in range(K):
        L = lags[k]
        lag_f[k] = L
        # L >= B is the plain slope over the whole span (a creep older than the window)
        need_ramp[k] = min_coverage * (L if L < B else B)
        need_ref[k] = min_reference if L < B else -np.inf
    log_ratio = np.log(ratio)
    # per age at the current step (shared by every series): ring position, hour-of-day interpolation; filled
    # only at steps where some series is rebuilt
    ring_idx = np.empty(B, dtype=np.uint64)
    slot_age = np.empty(B, dtype=np.uint64)
    slot_next = np.empty(B, dtype=np.uint64)
    frac_age = np.empty(B, dtype=np.float64)
    season_age = np.zeros(B, dtype=np.float64)
    walk_idx = np.empty(n_walk, dtype=np.uint64)
    season_flag = 1.0 if season else 0.0
    # a call that does not continue the previous one (or a state load, reset, ...) rebuilds every series
    rebuild_all = not (synced[0] == step0 - 1 and synced[1] == steps_per_hour and synced[2] == season_flag)
    for t in range(T):
        step = step0 + t
        pos = step % B
        hr = np.int64(np.floor(step / steps_per_hour))
        if hr != hour[0]:
            if hour[0] != NO_HOUR:
                _close_hour(hour[0], hsum, hw, hmean, hstamp, hfirst, prof, pfit, prof_days, season_gamma,
                            season_min_hours)
            hour[0] = hr
            # the profile may have changed; and an exact rebuild every hour bounds the drift of the sums
            rebuild_all = True
        # hour of day at the bucket's centre, minus 0.5 h: between the centres of slots i and i + 1 (age 0)
        u = ((step + 0.5) / steps_per_hour) % 24.0 - 0.5
        i0 = np.int64(np.floor(u))
        frac_now = u - i0
        slot_now = i0 % 24
        tables_ready = False
        # ring positions as unsigned integers: no negative-index wrap-around code on every access
        upos = np.uint64(pos)
        leave_ramp = np.uint64(pos - L0 if pos >= L0 else pos - L0 + B)  # leaves the ramp window at this step
        for i in range(n_walk):
            idx = pos - L0 - i
            walk_idx[i] = idx + B if idx < 0 else idx
        for s in range(S):
            x = loc[t, s]
            w = weight[t, s]
            # the bucket in the slot being overwritten leaves the span (read before the write)
            c_old = cnt[s, upos]
            y_old = ring_y[s, upos]
            if np.isnan(x) or not (w > 0):
                c_new = 0.0
                cnt[s, upos] = 0.0
                mu[s, upos] = np.nan
            else:
                c_new = w
                cnt[s, upos] = w
                mu[s, upos] = x
                hsum[s] += w * x
                hw[s] += w
            # smoothed load (points per step, an empty step counts 0): the covariate of the load check
            load_ew[s] = c_new if np.isnan(load_ew[s]) else load_ew[s] + load_alpha * (c_new - load_ew[s])
            load[s, upos] = np.log(load_ew[s]) if load_ew[s] > 0 else np.nan
            seasonal = season and prof_days[s] > 0
            season_now = _season(pfit, s, slot_now, frac_now) if seasonal else 0.0
            rebuild = rebuild_all or run_sums[s, SUMS_VALID] == 0.0
            if not rebuild:
                # a non-finite value came in: rebuild (and keep rebuilding while it is in the ring)
                rebuild = not _slide_sums(s, step, B, L0, upos, leave_ramp, c_old, y_old, c_new, x - season_now,
                                          cnt, ring_y, run_sums)
            if rebuild:
                if not tables_ready:
                    for age in range(B):
                        idx = pos - age
                        ring_idx[age] = idx + B if idx < 0 else idx
                        # as for age 0 above
                        ua = ((step - age + 0.5) / steps_per_hour) % 24.0 - 0.5
                        ia = np.int64(np.floor(ua))
                        frac_age[age] = ua - ia
                        slot = ia % 24
                        slot_age[age] = slot
                        slot_next[age] = slot + 1 if slot < 23 else 0
                    tables_ready = True
                _rebuild_sums(s, L0, step, seasonal, cnt, mu, pfit, ring_idx, slot_age, slot_next, frac_age,
                              season_age, ring_y, run_sums)
            r_rate = np.nan
            r_t = np.nan
            r_level = np.nan
            r_tth = np.nan
            r_lag = 0
            r_flag = 0
            m = run_sums[s, SPAN_M]
            if m >= 4:
                _lag_sums(s, step, L0, walk_idx, cnt, ring_y, run_sums, lag_c, lag_a, lag_aa, lag_y, lag_ay, lag_m)
                sw = run_sums[s, SPAN_C]
                sy = run_sums[s, SPAN_CY]
                vyy = run_sums[s, SPAN_CYY] - sy * sy / sw
                best, best_flag = _best_lag(K, lag_f, lag_c, lag_a, lag_aa, lag_y, lag_ay, lag_m, need_ramp,
                                            need_ref, lag_key, sw, sy, vyy, m, min_t, log_rate, steps_per_hour)
                if best >= 0:
                    L = lags[best]
                    best_b, _, r_t, sh = _hinge_fit(lag_f[best], lag_c[best], lag_a[best], lag_aa[best],
                                                    lag_y[best], lag_ay[best], sw, sy, vyy, m)
                    best_a = (sy - best_b * sh) / sw
                    per_hour = best_b * steps_per_hour
                    r_rate = np.expm1(per_hour)
                    r_lag = L
                    # log level before the ramp and now (season-adjusted values put back on today's profile)
                    base = run_sums[s, ANCHOR_Y] + best_a
                    now_level = base + best_b * L
                    if seasonal:
                        now_level += season_now
                    r_level = np.exp(now_level)
                    if best_flag and load_min_t > 0:
                        # on the season-adjusted values once a profile exists: the daily cycle is the profile's,
                        # what is left to the load is its moves off the cycle (rate steps, a ramp the profile's
                        # harmonics do not fit)
                        best_flag = _load_keeps_flag(s, pos, cnt, ring_y if seasonal else mu, load, lags, window,
                                                     min_coverage, min_reference, min_t, log_rate, steps_per_hour,
                                                     load_alpha, load_min_t)
                    if best_flag:
                        r_flag = 1
                    thr = threshold[s]
                    log_thr = np.log(thr) if (not np.isnan(thr)) and thr > 0 else base + log_ratio
                    if per_hour > 0:
                        hrs = (log_thr - now_level) / per_hour
                        r_tth = hrs if hrs > 0 else 0.0
                    else:
                        r_tth = np.inf
            rate_out[t, s] = r_rate
            t_out[t, s] = r_t
            level_out[t, s] = r_level
            tth_out[t, s] = r_tth
            lag_out[t, s] = r_lag
            flag_out[t, s] = r_flag
        rebuild_all = False
    if T > 0:
        synced[0] = step0 + T - 1
        synced[1] = steps_per_hour
        synced[2] = season_flag


def trend(loc: np.ndarray, weight: np.ndarray, step0: int, state: TrendState, *, steps_per_hour: float,
          rate: float = 0.02, min_t: float = 4.0, min_coverage: float = 0.7, min_reference: int | None = None,
          season: bool = True, season_gamma: float = 0.1, threshold: np.ndarray | None = None, ratio: float = 2.0,
          load_min_t: float = LOAD_MIN_T) -> dict[str, np.ndarray]:
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
    load_min_t : float
        Load check: the t a load elasticity needs before a flag must also survive the load as a covariate
        (see :func:`_load_keeps_flag`); 0 = off.

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
              "hmean": (S, 24), "hstamp": (S, 24), "hfirst": (S,), "hsum": (S,), "hw": (S,), "hour": (1,),
              "load": (S, B), "load_ew": (S,)}
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
    lags = state.lags
    if lags[-1] != B:  # a state load changed the span
        lags = state.lags = ramp_lags(state.window, B)
    if not ((lags[1:-1] - lags[:-2] == 1).all() and lags[-1] == B):  # what the kernel's walk relies on
        raise AssertionError(f"ramp lags must be consecutive window lags then the span {B}, got {lags}")
    ring_y, run_sums, synced = state._derived_arrays()
    T = loc.shape[0]
    out = {k: np.empty((T, S), dtype=np.float64) for k in ("rate_per_hour", "t", "level", "hours_to_threshold")}
    lag = np.empty((T, S), dtype=np.int64)
    flag = np.empty((T, S), dtype=np.int8)
    _trend(np.ascontiguousarray(loc), np.ascontiguousarray(weight), int(step0), state.count, state.loc, state.prof,
           state.pfit, state.prof_days, state.hmean, state.hstamp, state.hfirst, state.hsum, state.hw, state.hour,
           state.load, state.load_ew, ring_y, run_sums, synced, lags, state.window, float(steps_per_hour),
           float(np.log1p(rate)), float(min_t), float(min_coverage), int(min_reference), bool(season),
           float(season_gamma), SEASON_MIN_HOURS, 2.0 / (LOAD_SMOOTH_STEPS + 1.0), float(load_min_t), threshold,
           float(ratio),
           out["rate_per_hour"], out["t"], out["level"], out["hours_to_threshold"], lag, flag)
    out["lag"] = lag
    out["flag"] = flag
    return out
