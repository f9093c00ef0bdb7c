"""Creep detection (ramp test on per-bucket log-locations) on hand-made series with known answers."""
from __future__ import annotations

import numpy as np
import pytest

from otelproc.kernels import trend as tr
from tests.reference import ref_hinge_trend

W = 60  # 1 h of 1-minute buckets


def _buckets(rng, minutes, lines_per_s, sigma=0.15, creep=0.0, start=None, median_ms=50.0):
    """Per-minute (log trimmed mean, count) of log-normal latencies, optionally creeping from ``start``."""
    n = rng.poisson(lines_per_s * 60, minutes).astype(np.float64)
    mins = np.arange(minutes)
    level = np.log(median_ms) + (np.log1p(creep) * np.clip(mins - start, 0, None) / 60.0 if start is not None
                                 else np.zeros(minutes))
    loc = np.array([level[i] + rng.normal(0, sigma, int(k)).mean() if k else np.nan for i, k in enumerate(n)])
    return loc, n


def _run(loc, weight, window=W, **kw):
    loc = np.asarray(loc, dtype=np.float64).reshape(len(loc), -1)
    weight = np.asarray(weight, dtype=np.float64).reshape(len(weight), -1)
    st = tr.TrendState(loc.shape[1], window)
    return tr.trend(loc, weight, 0, st, steps_per_hour=60.0, **kw), st


def test_matches_weighted_least_squares_reference_with_gaps():
    rng = np.random.default_rng(1)
    loc, n = _buckets(rng, 260, 2.0, creep=0.05, start=190)
    n[rng.random(260) < 0.1] = 0  # gaps
    out, st = _run(loc, n, min_t=0.0)
    lags = tr.ramp_lags(W, st.span).tolist()
    assert lags[0] == round(tr.MIN_LAG_FRACTION * W) and lags[-2:] == [W, st.span]
    for k in (100, 180, 215, 259):
        b, t, L = ref_hinge_trend(loc[:k + 1].tolist(), n[:k + 1].tolist(), lags, st.reference, 0.7, W // 2)
        assert out["t"][k, 0] == pytest.approx(t, rel=1e-6), k
        assert out["rate_per_hour"][k, 0] == pytest.approx(np.expm1(60 * b), rel=1e-6, abs=1e-9)
        assert out["lag"][k, 0] == L


def test_two_percent_per_hour_at_3_lines_per_s_fires_within_an_hour_and_forecasts():
    rng = np.random.default_rng(2)
    start = 150
    loc, n = _buckets(rng, 240, 3.0, creep=0.02, start=start)
    out, _ = _run(loc, n, ratio=2.0)
    flags = np.flatnonzero(out["flag"][:, 0])
    assert len(flags) and start < flags[0] <= start + 60, flags[:5]
    assert not out["flag"][:start, 0].any()
    k = flags[0]
    assert out["rate_per_hour"][k, 0] == pytest.approx(0.02, abs=0.01)
    # from the pre-ramp level, doubling at 2 %/h takes 35 h; about as long from now
    assert 20 < out["hours_to_threshold"][k, 0] < 50


def test_flat_noisy_series_with_outlier_buckets_does_not_fire():
    rng = np.random.default_rng(3)
    loc, n = _buckets(rng, 24 * 60, 5.0)
    loc[::97] += np.log(4.0)  # whole slow minutes are not a trend
    out, _ = _run(loc, n)
    assert not out["flag"].any()


def test_small_creep_on_a_busy_series_is_significant_but_below_the_rate():
    # 0.5 %/h on 200 lines/s: many standard errors, yet clearly below 2 %/h: not flagged
    rng = np.random.default_rng(4)
    loc, n = _buckets(rng, 300, 200.0, creep=0.005, start=120)
    out, _ = _run(loc, n, rate=0.02)
    assert out["t"][-1, 0] > 4 and not out["flag"].any()
    flagged, _ = _run(loc, n, rate=0.005)
    assert flagged["flag"][-30:, 0].any()


def test_constant_series_and_coverage():
    loc = np.full(300, np.log(10.0))
    n = np.full(300, 100.0)
    n[100:170] = 0  # a gap: ramp part not covered for a while
    out, _ = _run(loc, n)
    assert not out["flag"].any()
    assert np.isnan(out["rate_per_hour"][:50, 0]).all()  # no reference + ramp yet
    assert np.isnan(out["rate_per_hour"][150:180, 0]).all()
    assert out["rate_per_hour"][299, 0] == 0.0 and np.isinf(out["hours_to_threshold"][299, 0])
    assert out["level"][299, 0] == pytest.approx(10.0)


def test_clean_ramp_has_finite_statistics():
    x = np.log(100.0) + np.log1p(0.03) * np.clip(np.arange(400) - 100, 0, None) / 60.0
    out, st = _run(x, np.full(400, 10.0))
    assert out["flag"][160, 0] == 1 and np.isfinite(out["t"][160, 0])
    assert out["rate_per_hour"][160, 0] == pytest.approx(0.03, rel=1e-6) and out["lag"][160, 0] == 60
    # a creep older than the whole span: the plain slope over the span measures it exactly
    assert out["rate_per_hour"][-1, 0] == pytest.approx(0.03, rel=1e-6) and out["lag"][-1, 0] == st.span


def _copy_state(st: tr.TrendState) -> tr.TrendState:
    """A fresh state loaded from ``st``'s arrays, as the engine's persistence does."""
    st2 = tr.TrendState(st.n_series, st.window, st.reference)
    for f in tr.TrendState.FIELDS:
        setattr(st2, f, getattr(st, f).copy())
    return st2


def test_restart_continues_with_saved_state_and_reset():
    rng = np.random.default_rng(5)
    loc, n = _buckets(rng, 240, 3.0, creep=0.03, start=120)
    full, _ = _run(loc, n)
    st = tr.TrendState(1, W)
    tr.trend(loc[:100].reshape(-1, 1).copy(), n[:100].reshape(-1, 1).copy(), 0, st, steps_per_hour=60.0)
    st2 = _copy_state(st)
    rest = tr.trend(loc[100:].reshape(-1, 1).copy(), n[100:].reshape(-1, 1).copy(), 100, st2, steps_per_hour=60.0)
    np.testing.assert_array_equal(rest["flag"], full["flag"][100:])
    np.testing.assert_allclose(rest["rate_per_hour"], full["rate_per_hour"][100:])
    st2.reset()
    assert (st2.count == 0).all() and np.isnan(st2.loc).all()


def _seasonal(rng, days, lines_per_s, amplitude=0.10, creep_start=None, median_ms=50.0):
    """Per-minute buckets over ``days`` days from midnight: load 1 + 0.5 sin(2 pi (h - 9) / 24) and log-normal
    latency whose median follows it by +-``amplitude`` (peaking with traffic), optionally creeping 2 %/h."""
    minutes = np.arange(days * 1440)
    phase = np.sin(2 * np.pi * ((minutes + 0.5) / 60.0 - 9.0) / 24.0)
    n = rng.poisson(lines_per_s * 60 * (1 + 0.5 * phase)).astype(np.float64)
    level = np.log(median_ms) + np.log1p(amplitude * phase)
    if creep_start is not None:
        level += np.log1p(0.02) * np.clip(minutes - creep_start, 0, None) / 60.0
    loc = np.array([level[i] + rng.normal(0, 0.15, int(k)).mean() if k else np.nan for i, k in enumerate(n)])
    return loc, n


def test_daily_latency_cycle_does_not_fire_once_a_day_is_learnt():
    # +-10 % over the day with the load: slopes up to 2.6 %/h for hours, every day
    loc, n = _seasonal(np.random.default_rng(6), 4, 3.0)
    out, st = _run(loc, n)
    assert not out["flag"][1440:, 0].any(), np.flatnonzero(out["flag"][1440:, 0])[:5] + 1440
    # the learnt profile is the cycle (hour means of log latency less their daily mean)
    hours = np.arange(24) + 0.5
    cycle = np.log1p(0.10 * np.sin(2 * np.pi * (hours - 9.0) / 24.0))
    np.testing.assert_allclose(st.prof[0], cycle - cycle.mean(), atol=0.006)
    assert st.prof_days[0] == pytest.approx(1 + (3 * 24 - 1) / 24)
    # without the adjustment the same data fires (as it can on the first day, before a profile exists)
    raw, _ = _run(loc, n, season=False)
    assert raw["flag"][1440:, 0].sum() > 100


def test_two_percent_ramp_on_top_of_the_daily_cycle_fires():
    start = 2 * 1440 + 8 * 60  # day 3, 08:00, while the cycle itself rises at its fastest
    loc, n = _seasonal(np.random.default_rng(7), 3, 3.0, creep_start=start)
    out, _ = _run(loc, n)
    flags = np.flatnonzero(out["flag"][1440:, 0]) + 1440
    assert len(flags) and start < flags[0] <= start + 60, flags[:5]
    # measured against the profile, not against the raw (cycle + creep) slope of ~4.6 %/h
    assert out["rate_per_hour"][flags[0], 0] == pytest.approx(0.02, abs=0.012)


def test_first_day_latency_that_follows_the_load_is_explained_by_the_load():
    """Day 1 has no hour-of-day profile: latency rising with the morning load looked like a creep in
    every series. The load covariate (elasticity learnt in the reference part) explains most of it
    away; it only ever removes flags, and the series' own load must have moved for it to act."""
    rng = np.random.default_rng(11)
    pairs = [_seasonal(rng, 1, rate) for rate in (3.0, 4.0, 5.0, 14.0) for _ in range(5)]
    loc = np.stack([p[0] for p in pairs], axis=1)
    n = np.stack([p[1] for p in pairs], axis=1)
    with_load, _ = _run(loc, n)
    without, _ = _run(loc, n, load_min_t=0.0)
    assert without["flag"].sum() > 1000  # the problem: every series fires while the load rises
    assert with_load["flag"].sum() < 0.2 * without["flag"].sum()
    assert not (with_load["flag"] & ~without["flag"]).any()  # never a flag the plain test does not raise


def test_load_covariate_changes_nothing_where_latency_does_not_follow_the_load():
    # flat latency under the load cycle (the covariate may act on a chance correlation: flags only removed)
    loc, n = _seasonal(np.random.default_rng(12), 1, 3.0, amplitude=0.0, creep_start=10 * 60)
    with_load, _ = _run(loc, n)
    without, _ = _run(loc, n, load_min_t=0.0)
    assert not (with_load["flag"] & ~without["flag"]).any()
    first = np.flatnonzero(with_load["flag"][:, 0])
    assert len(first) and 10 * 60 < first[0] <= 11 * 60  # the creep is still found within the hour
    # a steady load (Poisson noise only) never moves the covariate: identical outputs
    loc2, n2 = _buckets(np.random.default_rng(13), 400, 3.0, creep=0.02, start=200)
    a, _ = _run(loc2, n2)
    b, _ = _run(loc2, n2, load_min_t=0.0)
    for key in ("flag", "lag", "t", "rate_per_hour"):
        np.testing.assert_array_equal(a[key], b[key])


def test_creep_on_the_first_day_on_top_of_a_load_following_latency_is_found():
    start = 10 * 60  # 10:00, while load and latency rise
    out, _ = _run(*_seasonal(np.random.default_rng(14), 1, 5.0, creep_start=start))
    calm, _ = _run(*_seasonal(np.random.default_rng(14), 1, 5.0))  # the same day without the creep
    flags = np.flatnonzero(out["flag"][:, 0])
    assert not out["flag"][start - 180:start, 0].any() and not calm["flag"][start:start + 75, 0].any()
    assert flags[flags >= start][0] <= start + 75


def _business_hours(rng, days, lines_per_s, elasticity, night=0.25, creep_start=None, sigma=0.4):
    """Per-minute buckets of a business-hours service (not a sinusoid): load at ``night`` x its day level,
    ramping up 07-09, a lunch dip 12-14, ramping down 17-21, with +-30 % steps of 2-10 min; the latency
    median follows the load as load ** elasticity (log-normal ``sigma``), optionally creeping 2 %/h."""
    minutes = np.arange(days * 1440)
    h = (minutes / 60.0) % 24.0
    shape = np.interp(h, [0, 7, 9, 12, 13, 14, 17, 21, 24], [0, 0, 1, 1, 0.8, 1, 1, 0, 0])
    steps = np.repeat(np.where(rng.random(days * 300) < 0.5, 1.0, rng.uniform(0.7, 1.3, days * 300)),
                      rng.integers(2, 11, days * 300))[:len(minutes)]
    load = (night + (1 - night) * shape) * steps
    n = rng.poisson(lines_per_s * 60 * load).astype(np.float64)
    level = np.log(80.0) + elasticity * np.log(load)
    if creep_start is not None:
        level += np.log1p(0.02) * np.clip(minutes - creep_start, 0, None) / 60.0
    loc = np.array([level[i] + rng.normal(0, sigma, int(k)).mean() if k else np.nan for i, k in enumerate(n)])
    return loc, n


def test_latency_that_follows_a_business_hours_load_does_not_fire_after_the_first_day():
    """Issue 14 (quiet days): sharp morning / evening ramps and a lunch dip are not fitted by a profile of 4
    daily harmonics, and rate steps move latency with the load for minutes: both fired as creeps every day.
    8 harmonics and the load covariate on every day (not only the first; on the season-adjusted values once a
    profile exists) remove most of them; a 2 %/h creep on day 3 is still found within the hour."""
    rng = np.random.default_rng(21)
    pairs = [_business_hours(rng, 3, rate, el) for rate in (0.5, 2.0) for el in (0.3, 0.6)]
    loc = np.stack([p[0] for p in pairs], axis=1)
    n = np.stack([p[1] for p in pairs], axis=1)
    out, _ = _run(loc, n)
    # flagged minutes on days 2-3, 4 series: 1,655 with 4 harmonics and the load check on day 1 only, now 371
    assert out["flag"][1440:].sum() <= 500, out["flag"][1440:].sum(axis=0)
    # a creep of latency that does not follow the load, on the afternoon plateau of day 3: the load covariate
    # does not take it away
    start = 2 * 1440 + 15 * 60
    loc_c, n_c = _business_hours(np.random.default_rng(22), 3, 5.0, 0.0, creep_start=start, sigma=0.15)
    flags = np.flatnonzero(_run(loc_c, n_c)[0]["flag"][:, 0])
    assert not (flags < start).any() and flags[0] <= start + 45, flags[:5]


def test_restart_with_a_learnt_profile_continues_identically():
    loc, n = _seasonal(np.random.default_rng(8), 2, 2.0, creep_start=1440 + 600)
    loc, n = loc.reshape(-1, 1), n.reshape(-1, 1)
    full, _ = _run(loc, n)
    st = tr.TrendState(1, W)
    cut = 1440 + 500  # after the profile was learnt, before the creep
    tr.trend(loc[:cut].copy(), n[:cut].copy(), 0, st, steps_per_hour=60.0)
    assert st.prof_days[0] >= 1
    rest = tr.trend(loc[cut:].copy(), n[cut:].copy(), cut, _copy_state(st), steps_per_hour=60.0)
    np.testing.assert_array_equal(rest["flag"], full["flag"][cut:])
    np.testing.assert_allclose(rest["t"], full["t"][cut:])
    # a gap (reset) forgets the ring but keeps the profile
    st.reset()
    assert st.prof_days[0] >= 1 and np.isfinite(st.prof).all()


def test_busy_series_are_flagged_by_a_lag_that_fits_the_creep_start():
    # 14 lines/s: the largest-t lag often starts before the creep, underestimates its slope (~1.4 %/h) and fails
    # the "not significantly below 2 %/h" bound although its t is 10; a lag that fits the start passes both
    rng = np.random.default_rng(9)
    S, start = 300, 120.4
    n = rng.poisson(14 * 60, (240, S)).astype(np.float64)
    level = np.log(40.0) + np.log1p(0.02) * np.clip(np.arange(240) + 0.5 - start, 0, None) / 60.0
    loc = level[:, None] + 0.15 * rng.standard_normal((240, S)) / np.sqrt(n)  # exact law of a bucket's mean
    out, _ = _run(loc, n)
    assert not out["flag"][:120].any()
    first = out["flag"].argmax(axis=0)
    assert out["flag"].any(axis=0).all() and (first + 1 - start).max() <= 52, np.sort(first)[-5:]
    assert np.abs(out["rate_per_hour"][first, np.arange(S)] - 0.02).max() < 0.008


def test_bad_input():
    st = tr.TrendState(2, 10)
    with pytest.raises(TypeError):
        tr.trend(np.zeros((5, 3)), np.zeros((5, 3)), 0, st, steps_per_hour=60)
    with pytest.raises(TypeError):
        tr.trend(np.zeros((5, 2)), np.zeros((5, 2), dtype=np.int64), 0, st, steps_per_hour=60)
    with pytest.raises(ValueError):
        tr.trend(np.zeros((5, 2)), np.zeros((4, 2)), 0, st, steps_per_hour=60)
    with pytest.raises(ValueError):
        tr.trend(np.zeros((5, 2)), np.zeros((5, 2)), 0, st, steps_per_hour=0)
    with pytest.raises(ValueError):
        tr.trend(np.zeros((5, 2)), np.zeros((5, 2)), 0, st, steps_per_hour=60, rate=0)
    with pytest.raises(ValueError):
        tr.trend(np.zeros((5, 2)), np.zeros((5, 2)), 0, st, steps_per_hour=60, season_gamma=0)
    st.hstamp = st.hstamp.astype(np.float64)
    with pytest.raises(ValueError, match="hstamp"):
        tr.trend(np.zeros((5, 2)), np.zeros((5, 2)), 0, st, steps_per_hour=60)
    with pytest.raises(ValueError):
        tr.TrendState(1, 2)


# --------------------------------------------------------------------------- equivalence with the one-pass kernel
# The kernel keeps running sums per series and walks only the ages between the shortest and the longest window
# lag. The one-pass kernel it replaced (a full O(B) walk over the ring per step and series, its sums recomputed
# from scratch every time) is kept here, verbatim with the profile helpers the rewrite changed (it calls the
# package's unchanged _season), as the reference: same flags and lags, the same persisted state bit for bit,
# the statistics equal up to rounding order.

from numba import njit  # noqa: E402

from otelproc.kernels.trend import MIN_SIGMA, NO_HOUR, SEASON_HARMONICS, UPPER_SE, _season  # noqa: E402


@njit(cache=True, nogil=True)
def _one_pass_close_hour(hour, hsum, hw, hmean, hstamp, hfirst, prof, pfit, prof_days, gamma, min_hours):
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
            _one_pass_fit_profile(prof, pfit, s)
        else:
            dev = hmean[s, slot] - level
            # a plain mean over the first 1 / gamma days (one hour's mean is noisy), then an EWMA; an hour
            # without data on the first day is learnt when it first has some
            g = max(gamma, 1.0 / (prof_days[s] + 1.0))
            prof[s, slot] = dev if np.isnan(prof[s, slot]) else prof[s, slot] + g * (dev - prof[s, slot])
            prof_days[s] += 1.0 / 24.0
            _one_pass_fit_profile(prof, pfit, s)


@njit(cache=True, nogil=True)
def _one_pass_fit_profile(prof, pfit, s):
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


@njit(cache=True, nogil=True)
def _one_pass_trend(loc, weight, step0, cnt, mu, prof, pfit, prof_days, hmean, hstamp, hfirst, hsum, hw, hour, lags,
                    steps_per_hour, log_rate, min_t, min_coverage, min_reference, season, season_gamma,
                    season_min_hours, threshold, ratio, rate_out, t_out, level_out, tth_out, lag_out, flag_out):
    """The kernel before the running sums (``_trend`` up to round 3, verbatim but for its helpers' names): one
    O(B) pass over the ring per step and series."""
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
                _one_pass_close_hour(hour[0], hsum, hw, hmean, hstamp, hfirst, prof, pfit, prof_days, season_gamma,
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


def _one_pass(loc, weight, step0, st, *, steps_per_hour, rate=0.02, min_t=4.0, min_coverage=0.7, min_reference=None,
              season=True, season_gamma=0.1, threshold=None, ratio=2.0):
    """The one-pass kernel with the defaults of :func:`tr.trend` (its ring and profile state in ``st``)."""
    T, S = loc.shape
    min_reference = max(2, st.window // 2) if min_reference is None else min_reference
    threshold = np.full(S, np.nan) if threshold is None else np.ascontiguousarray(threshold, dtype=np.float64)
    out = {k: np.empty((T, S)) for k in ("rate_per_hour", "t", "level", "hours_to_threshold")}
    out["lag"] = np.empty((T, S), dtype=np.int64)
    out["flag"] = np.empty((T, S), dtype=np.int8)
    _one_pass_trend(loc, weight, int(step0), st.count, st.loc, st.prof, st.pfit, st.prof_days, st.hmean, st.hstamp,
                    st.hfirst, st.hsum, st.hw, st.hour, tr.ramp_lags(st.window, st.span), float(steps_per_hour),
                    float(np.log1p(rate)), float(min_t), float(min_coverage), int(min_reference), bool(season),
                    float(season_gamma), tr.SEASON_MIN_HOURS, threshold, float(ratio), out["rate_per_hour"], out["t"],
                    out["level"], out["hours_to_threshold"], out["lag"], out["flag"])
    return out


# The statistics may differ by rounding order only: within RTOL relative, and for a slope that is not
# significantly different from 0 (|t| < 1) within RTOL of its standard error. Such a slope is a difference of
# nearly equal sums whose last bits depend on the summation order (in the one-pass kernel as much as here): at
# t = 1e-4 a relative difference of 1e-8 is 1e-12 standard errors.
RTOL = 1e-9


def _assert_same(new: dict, ref: dict, where: str) -> None:
    """Identical flags and lags, the other outputs equal within RTOL as above (inf / NaN in the same cells)."""
    np.testing.assert_array_equal(new["flag"], ref["flag"], err_msg=where)
    np.testing.assert_array_equal(new["lag"], ref["lag"], err_msg=where)
    # rate, t and the time to threshold (through the rate) carry the slope's relative error
    slope_scale = 1.0 / np.clip(np.abs(ref["t"]), RTOL, 1.0)
    for name in ("rate_per_hour", "t", "level", "hours_to_threshold"):
        a, b = new[name], ref[name]
        np.testing.assert_array_equal(np.isfinite(a), np.isfinite(b), err_msg=f"{where} {name}")
        fin = np.isfinite(b)
        np.testing.assert_array_equal(a[~fin], b[~fin], err_msg=f"{where} {name}")
        scale = np.abs(b[fin]) * (1.0 if name == "level" else slope_scale[fin])
        diff = np.abs(a[fin] - b[fin])
        bad = diff > RTOL * scale
        assert not bad.any(), (f"{where} {name}: {bad.sum()} cells differ by more than {RTOL:g} relative, e.g. "
                               f"{a[fin][bad][:3]} vs {b[fin][bad][:3]}")


def _assert_same_state(st: tr.TrendState, ref: tr.TrendState, where: str) -> None:
    for f in tr.TrendState.FIELDS:
        if f not in ("load", "load_ew"):  # the day-1 load check came after the one-pass kernel
            np.testing.assert_array_equal(getattr(st, f), getattr(ref, f), err_msg=f"{where}: state {f}")


def _random_stream(rng, steps: int, S: int, steps_per_hour: float = 60.0):
    """Per-step (log-location, weight) of S series with gaps: lines per step from 0.05 to 300 per series, NaN and
    weight-0 buckets, bursts of empty steps, a daily cycle on half the series and creeps of 1-8 %/h (some
    decreasing) starting at random steps."""
    minutes = np.arange(steps)[:, None]
    hours = (minutes + 0.5) / steps_per_hour
    rate = np.exp(rng.uniform(np.log(0.05), np.log(300.0), S))
    cycle = np.where(rng.random(S) < 0.5, rng.uniform(0.02, 0.2, S), 0.0)
    n = rng.poisson(rate * (1 + 0.5 * np.sin(2 * np.pi * (hours - 9.0) / 24.0))).astype(np.float64)
    creep = np.where(rng.random(S) < 0.6, rng.uniform(0.01, 0.08, S) * rng.choice([1, 1, 1, -1], S), 0.0)
    start = rng.integers(0, steps, S)
    level = (np.log(rng.uniform(5, 500, S)) + np.log1p(cycle * np.sin(2 * np.pi * (hours - 9.0) / 24.0))
             + np.log1p(creep) * np.clip(minutes - start, 0, None) / steps_per_hour)
    loc = level + rng.normal(0, 0.15, (steps, S)) / np.sqrt(np.maximum(n, 1))
    loc[n == 0] = np.nan
    loc[rng.random((steps, S)) < 0.05] = np.nan          # no location although there were lines
    n[rng.random((steps, S)) < 0.05] = 0.0               # a location without weight: no data either
    for s in range(S):                                   # bursts of empty steps
        for b0 in rng.integers(0, steps, rng.integers(0, 4)):
            n[b0:b0 + rng.integers(5, 200), s] = 0.0
    return loc, n


def _feed(loc, n, chunks, step0, st, ref, where, threshold=None, **kw) -> None:
    """Feed rows of loc/n in chunks of the given sizes through the kernel and the one-pass kernel, comparing every
    output and the persisted state after each chunk."""
    row = 0
    for T in chunks:
        a, w = loc[row:row + T].copy(), n[row:row + T].copy()
        new = tr.trend(a, w, step0 + row, st, threshold=threshold, load_min_t=0.0, **kw)
        old = _one_pass(a, w, step0 + row, ref, threshold=threshold, **kw)
        _assert_same(new, old, f"{where}, rows {row}..{row + T}")
        _assert_same_state(st, ref, f"{where}, rows {row}..{row + T}")
        row += T
    assert row == len(loc)


def _chunks(rng, total: int, max_rows: int = 90) -> list[int]:
    """Call sizes summing to ``total``: mostly 1 (the engine's usual call), some longer."""
    out = []
    while sum(out) < total:
        out.append(int(min(total - sum(out), 1 if rng.random() < 0.5 else rng.integers(2, max_rows))))
    return out


def _fired(*outs) -> int:
    return int(sum(o["flag"].sum() for o in outs))


@pytest.mark.parametrize("seed", [11, 12])
def test_same_answers_as_the_one_pass_kernel_over_more_than_a_day(seed):
    # 31 h from a non-zero step (so hours and ring positions do not start at 0): the profile becomes active after
    # a day, and series of every volume see gaps, empty bursts, daily cycles and creeps up and down
    rng = np.random.default_rng(seed)
    S, steps, step0 = 60, 31 * 60, 28_000_000 + 37
    loc, n = _random_stream(rng, steps, S)
    thr = np.where(rng.random(S) < 0.3, rng.uniform(10, 1000, S), np.nan)
    st, ref = tr.TrendState(S, W), tr.TrendState(S, W)
    _feed(loc, n, _chunks(rng, steps), step0, st, ref, "stream", threshold=thr, steps_per_hour=60.0)
    assert (st.prof_days > 0).sum() > S // 2  # the seasonal adjustment was active for most series
    # the comparison is not vacuous: series fired
    full = _one_pass(loc, n, step0, tr.TrendState(S, W), steps_per_hour=60.0, threshold=thr)
    assert _fired(full) > 100 and 0 < (full["flag"] == 0).sum()


def test_same_answers_after_reset_grow_restart_and_discontinuities():
    rng = np.random.default_rng(13)
    S0, S1, steps, step0 = 30, 45, 30 * 60, 5_000_000
    loc, n = _random_stream(rng, steps, S1)
    loc[:, S0:][: 5 * 60] = np.nan  # the added series have no data before they are added
    st, ref = tr.TrendState(S0, W), tr.TrendState(S0, W)
    kw = {"steps_per_hour": 60.0}
    cut = [0, 5 * 60 + 17, 12 * 60 + 3, 20 * 60 + 40, 25 * 60 + 1, 27 * 60, steps]
    seg = [(loc[a:b], n[a:b], a) for a, b in zip(cut[:-1], cut[1:])]
    # 1. the first series
    x, w, a = seg[0]
    _feed(x[:, :S0], w[:, :S0], _chunks(rng, len(x)), step0 + a, st, ref, "start", **kw)
    # 2. grow mid-stream (between two steps, as the engine does when new series appear)
    st.grow(S1)
    ref.grow(S1)
    x, w, a = seg[1]
    _feed(x, w, _chunks(rng, len(x)), step0 + a, st, ref, "after grow", **kw)
    # 3. restart: the persisted arrays copied into a fresh state (the derived sums are not saved)
    st = _copy_state(st)
    x, w, a = seg[2]
    _feed(x, w, _chunks(rng, len(x)), step0 + a, st, ref, "after restart", **kw)
    # 4. a gap in the stream: reset, and continue 90 steps later
    st.reset()
    ref.reset()
    x, w, a = seg[3]
    _feed(x, w, _chunks(rng, len(x)), step0 + a + 90, st, ref, "after reset", **kw)
    # 5. steps skipped without a reset, within the hour (stale ring slots are reused as they are), and a call
    #    without the seasonal adjustment in between
    x, w, a = seg[4]
    start = step0 + a + 90 + 5
    assert (start - 6) // 60 == start // 60  # no hour boundary in the gap (that would rebuild every series anyway)
    _feed(x[:30], w[:30], [30], start, st, ref, "skipped steps", **kw)
    _feed(x[30:], w[30:], _chunks(rng, len(x) - 30), start + 30, st, ref, "no season", season=False, **kw)
    # 6. a state load into a live state object (the engine assigns the saved arrays one by one): its running sums,
    #    of other data but up to the step just before, must not be used
    x, w, a = seg[5]
    start = step0 + a + 90 + 5
    assert start % 60 != 0  # not an hour boundary (that would rebuild every series anyway)
    loaded = tr.TrendState(S1, W)
    tr.trend(loc[:30] + 1.0, n[:30].copy(), start - 30, loaded, steps_per_hour=60.0)
    for f in tr.TrendState.FIELDS:
        setattr(loaded, f, getattr(st, f).copy())
    _feed(x, w, _chunks(rng, len(x)), start, loaded, ref, "after load", **kw)
    assert (ref.prof_days > 0).any()
    assert _fired(_one_pass(loc, n, step0, tr.TrendState(S1, W), **kw)) > 50


def test_same_answers_with_other_bucket_widths_and_parameters():
    # 5-minute buckets (12 steps per hour, W = 12, lags 8..12 and the 36-step span) over 3 days, and
    # 1-minute buckets with a short reference, other thresholds and a non-integer steps_per_hour
    rng = np.random.default_rng(14)
    loc, n = _random_stream(rng, 3 * 24 * 12, 25, steps_per_hour=12.0)
    kw = {"steps_per_hour": 12.0, "rate": 0.03, "min_t": 3.0, "min_coverage": 0.6, "min_reference": 4}
    st, ref = tr.TrendState(25, 12), tr.TrendState(25, 12)
    _feed(loc, n, _chunks(rng, len(loc), 20), 1_000_003, st, ref, "5-minute buckets", **kw)
    assert _fired(_one_pass(loc, n, 1_000_003, tr.TrendState(25, 12), **kw)) > 20
    loc, n = _random_stream(rng, 600, 25, steps_per_hour=61.5)
    kw = {"steps_per_hour": 61.5, "season_gamma": 0.5, "ratio": 1.5}
    st, ref = tr.TrendState(25, 20, 7), tr.TrendState(25, 20, 7)
    _feed(loc, n, _chunks(rng, len(loc)), 77, st, ref, "short reference", **kw)


def test_same_answers_with_non_finite_locations():
    # log(0 ms) = -inf (and a stray +inf): the running sums cannot subtract those; the series is rebuilt from
    # the ring while they are in it, and continues exactly as the one-pass kernel once they have left
    rng = np.random.default_rng(15)
    loc, n = _random_stream(rng, 500, 20)
    n[:, :] = np.maximum(n, 1)
    loc = np.where(np.isnan(loc), np.log(50.0) + 0.1 * rng.standard_normal(loc.shape), loc)
    loc[100, 3] = -np.inf
    loc[130, 4] = np.inf
    loc[300:305, 5] = -np.inf
    st, ref = tr.TrendState(20, W), tr.TrendState(20, W)
    _feed(loc, n, _chunks(rng, len(loc)), 0, st, ref, "non-finite", steps_per_hour=60.0)
    assert st.run_sums[:, tr.SUMS_VALID].all()  # every series is back on running sums
    # a span shorter than an hour: the value enters and leaves the ring between two hourly rebuilds
    st, ref = tr.TrendState(20, 20, 7), tr.TrendState(20, 20, 7)
    _feed(loc, n, _chunks(rng, len(loc)), 0, st, ref, "non-finite, 27-step span", steps_per_hour=60.0)


def test_assigning_a_persisted_array_marks_the_running_sums_stale_and_grow_does_not():
    st = tr.TrendState(3, W)
    x = np.full((5, 3), np.log(20.0))
    tr.trend(x, np.full((5, 3), 50.0), 0, st, steps_per_hour=60.0)
    assert st.synced[0] == 4 and st.run_sums[:, tr.SUMS_VALID].all()
    st.grow(5)
    assert st.synced[0] == 4 and list(st.run_sums[:, tr.SUMS_VALID]) == [1, 1, 1, 0, 0]
    st.count = st.count.copy()
    assert np.isnan(st.synced).all()
    st.synced[:] = (4, 60.0, 1.0)
    st.reset()
    assert np.isnan(st.synced).all()
