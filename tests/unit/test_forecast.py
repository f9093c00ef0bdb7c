"""Seasonal forecasting detector on hand-made series with known answers."""
from __future__ import annotations

import numpy as np
import pytest

from otelproc.kernels.forecast import ForecastState, detect_period, seasonal_forecast

DAY = 24          # steps per day in these tests (hourly data)
WEEK = 7 * DAY


def _weekly(weeks: int, seed: int = 0, noise: float = 1.0) -> np.ndarray:
    """Hourly traffic: a daily bump, weekdays (days 0-4) busier than weekends (days 5-6)."""
    t = np.arange(weeks * WEEK)
    hour, day = t % DAY, (t // DAY) % 7
    daily = 20.0 * np.exp(-0.5 * ((hour - 14) / 3.0) ** 2)
    busy = np.where(day < 5, 1.0, 0.3)
    return 50.0 + busy * daily + np.random.default_rng(seed).normal(0, noise, len(t))


def _run(x, period, **kw):
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    st = ForecastState(np.full(x.shape[1], period, dtype=np.int64))
    return seasonal_forecast(x, np.arange(len(x), dtype=np.int64), st, **kw), st


def test_detect_period_picks_the_cycle_and_rejects_noise():
    rng = np.random.default_rng(1)
    t = np.arange(4 * WEEK)
    daily = 10 * np.sin(2 * np.pi * t / DAY) + rng.normal(0, 1, len(t))
    noise = rng.normal(0, 1, len(t))
    weekly = _weekly(4)
    x = np.column_stack([daily, noise, weekly])
    period, corr = detect_period(x, np.array([DAY, WEEK]), min_corr=0.3)
    # a pure daily cycle correlates at both lags (a week is 7 days): equal-ish, the longer one may win,
    # but both must be high; noise has no period; the weekday/weekend pattern needs the week
    assert period[0] in (DAY, WEEK) and corr[0, 0] > 0.9 and corr[0, 1] > 0.9
    assert period[1] == 0 and abs(corr[1, 0]) < 0.2
    assert period[2] == WEEK and corr[2, 1] > corr[2, 0]


def test_detect_period_needs_enough_cycles_and_skips_nan():
    x = _weekly(4)
    x[::7] = np.nan
    short = x[: WEEK + DAY].reshape(-1, 1)
    period, corr = detect_period(short, np.array([DAY, WEEK]), min_cycles=2.0)
    assert np.isnan(corr[0, 1]), "fewer than 2 weeks: the weekly candidate is not tried"
    assert period[0] == DAY
    period, _ = detect_period(x.reshape(-1, 1), np.array([DAY, WEEK]))
    assert period[0] == WEEK
    flat = np.full((100, 1), 3.0)
    assert detect_period(flat, np.array([DAY]))[0][0] == 0


@pytest.mark.parametrize("seed", [2, 3, 4])
def test_learnt_weekly_cycle_does_not_fire_and_a_holiday_does(seed):
    x = _weekly(6, seed=seed)
    holiday = slice(4 * WEEK + 2 * DAY, 4 * WEEK + 3 * DAY)   # a Wednesday that looks like a Sunday
    t = np.arange(len(x))
    x[holiday] -= 0.7 * 20.0 * np.exp(-0.5 * ((t[holiday] % DAY - 14) / 3.0) ** 2)
    (exp, z, sus), _ = _run(x, WEEK, alpha=0.01, gamma=0.2, acc_alpha=1 / 12)
    normal = np.r_[np.arange(3 * WEEK, 4 * WEEK), np.arange(5 * WEEK, 6 * WEEK)]
    assert np.nanmax(np.abs(sus[normal, 0])) < 4.5, "a learnt weekly cycle must not look anomalous"
    assert np.nanmin(sus[holiday, 0]) < -12.0, "a weekday with a weekend shape is a sustained negative error"
    # a daily-only model has the same bump every day: it cannot tell the holiday from a Sunday
    (_, _, sus_day), _ = _run(x, DAY, alpha=0.01, gamma=0.2, acc_alpha=1 / 12)
    assert np.nanmin(sus_day[holiday, 0]) > -3.0


def test_spike_gives_a_large_z_but_no_sustained_deviation_and_does_not_move_the_forecast():
    x = _weekly(4, seed=3)
    i = 3 * WEEK + 10
    x[i] += 200.0
    (exp, z, sus), _ = _run(x, WEEK, acc_alpha=1 / 24)
    assert z[i, 0] > 50
    assert abs(sus[i, 0]) < 5.0, "one clipped spike is not a sustained deviation"
    (exp0, _, _), _ = _run(np.r_[x[:i], x[i] - 200.0, x[i + 1:]], WEEK, acc_alpha=1 / 24)
    assert np.nanmax(np.abs(exp[i + 1:, 0] - exp0[i + 1:, 0])) < 0.5


def test_level_only_without_period_and_constant_series():
    rng = np.random.default_rng(4)
    x = np.r_[rng.normal(10, 1, 400), rng.normal(14, 1, 200)]     # a 4-sigma step held for 200 points
    (exp, z, sus), _ = _run(x, 0, alpha=0.01, acc_alpha=1 / 24)
    assert np.nanmax(np.abs(sus[100:400, 0])) < 4.0
    assert np.nanmax(sus[400:450, 0]) > 6.0
    (exp, z, sus), _ = _run(np.full(300, 5.0), 0)
    assert np.all(np.isfinite(sus[60:, 0])) and np.all(sus[60:, 0] == 0.0)
    (_, _, sus), _ = _run(np.r_[np.full(300, 5.0), np.full(20, 6.0)], 0)
    assert sus[305, 0] > 100, "a constant series that moves is a sustained deviation"


def test_gaps_keep_the_phase_and_leave_the_state_untouched():
    x = _weekly(4, seed=5)
    step = np.arange(len(x), dtype=np.int64)
    (_, z_full, _), _ = _run(x, DAY)
    # drop a block of rows (no buckets at all) and keep their step numbers: later forecasts stay in phase
    keep = np.r_[np.arange(0, 2 * WEEK), np.arange(2 * WEEK + 30, len(x))]
    st = ForecastState(np.array([DAY]))
    _, z_gap, _ = seasonal_forecast(x[keep].reshape(-1, 1), step[keep], st)
    assert np.nanmax(np.abs(z_gap[2 * WEEK:, 0])) < 6
    # NaN rows leave the state unchanged and give NaN
    xn = x.copy()
    xn[100:110] = np.nan
    st1 = ForecastState(np.array([DAY]))
    e1, z1, s1 = seasonal_forecast(xn.reshape(-1, 1), step, st1)
    assert np.all(np.isnan(z1[100:110, 0])) and np.all(np.isnan(s1[100:110, 0]))
    st2 = ForecastState(np.array([DAY]))
    seasonal_forecast(xn[:100].reshape(-1, 1), step[:100], st2)
    snap = st2.level.copy(), st2.scale.copy(), st2.n.copy()
    seasonal_forecast(xn[100:110].reshape(-1, 1), step[100:110], st2)
    assert np.array_equal(snap[0], st2.level) and np.array_equal(snap[1], st2.scale) and np.array_equal(snap[2], st2.n)


def test_restart_from_state_equals_one_pass_and_series_are_independent():
    x = np.column_stack([_weekly(3, seed=6), _weekly(3, seed=7)[::-1].copy()])
    step = np.arange(len(x), dtype=np.int64)
    periods = np.array([WEEK, DAY])
    one = seasonal_forecast(x, step, ForecastState(periods))
    st = ForecastState(periods)
    a = seasonal_forecast(x[:200], step[:200], st)
    saved = {f: getattr(st, f).copy() for f in ForecastState.FIELDS}
    st2 = ForecastState(periods)
    for f, v in saved.items():
        setattr(st2, f, v)
    b = seasonal_forecast(x[200:], step[200:], st2)
    for full, p1, p2 in zip(one, a, b):
        np.testing.assert_array_equal(full, np.r_[p1, p2])
    single = seasonal_forecast(x[:, 1:].copy(), step, ForecastState(periods[1:]))
    np.testing.assert_array_equal(single[1][:, 0], one[1][:, 1])


def test_bad_input_is_rejected():
    st = ForecastState(np.array([DAY]))
    x = np.zeros((10, 1))
    step = np.arange(10)
    with pytest.raises(TypeError, match="float64"):
        seasonal_forecast(x.astype(np.float32), step, st)
    with pytest.raises(ValueError, match="series"):
        seasonal_forecast(np.zeros((10, 2)), step, st)
    with pytest.raises(ValueError, match="step"):
        seasonal_forecast(x, np.arange(9), st)
    with pytest.raises(ValueError, match="alpha"):
        seasonal_forecast(x, step, st, alpha=0.0)
    with pytest.raises(ValueError, match="period"):
        ForecastState(np.array([-1]))
    with pytest.raises(ValueError, match="min_corr"):
        detect_period(x, np.array([2]), min_corr=0.0)


def test_first_period_initialises_level_and_profile_exactly():
    # noise-free period-4 cycle: after one period the level is its mean (3) and the profile the deviations
    x = np.tile([1.0, 2.0, 3.0, 6.0], 10)
    (exp, z, sus), st = _run(x, 4, alpha=0.3, gamma=0.5, warmup_periods=1.0)
    assert np.all(np.isnan(exp[:4, 0]))
    np.testing.assert_allclose(exp[4:, 0], x[4:], atol=1e-12)
    np.testing.assert_allclose(z[4:, 0], 0.0, atol=1e-9)
    assert st.level[0] == pytest.approx(3.0)
    np.testing.assert_allclose(st.season[0], [-2.0, -1.0, 0.0, 3.0], atol=1e-12)
