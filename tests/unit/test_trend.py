"""Theil-Sen creep detection on hand-made series."""
from __future__ import annotations

import numpy as np
import pytest

from otelproc.kernels import trend as tr
from tests.reference import ref_theil_sen_slope


def _run(values, window=60, **kw):
    v = np.asarray(values, dtype=np.float64).reshape(len(values), -1)
    st = tr.TrendState(v.shape[1], window)
    return tr.trend(v, 0, st, steps_per_hour=60.0, **kw), st


def test_theil_sen_matches_reference_and_ignores_outliers():
    rng = np.random.default_rng(1)
    t = np.arange(40, dtype=np.float64)
    y = 0.3 * t + rng.normal(0, 0.1, 40)
    y[[5, 17, 30]] += 50  # outliers
    slope, intercept, se = tr.theil_sen(t, y)
    assert slope == pytest.approx(ref_theil_sen_slope(t.tolist(), y.tolist()))
    assert abs(slope - 0.3) < 0.02


def test_two_percent_per_hour_ramp_fires_within_an_hour_and_forecasts():
    rng = np.random.default_rng(2)
    minutes = np.arange(240)
    start = 120
    level = 100.0 * 1.02 ** (np.clip(minutes - start, 0, None) / 60.0)
    x = level * np.exp(rng.normal(0, 0.003, len(minutes)))
    out, _ = _run(x, ratio=2.0)
    flags = np.flatnonzero(out["flag"][:, 0])
    assert len(flags) and flags[0] >= start and flags[0] - start <= 60, flags[:5]
    assert not out["flag"][:start, 0].any()
    k = flags[0] + 30
    assert out["rate_per_hour"][k, 0] == pytest.approx(0.02, abs=0.006)
    # doubling at 2 %/h takes ~35 h from the window start
    assert 25 < out["hours_to_threshold"][-1, 0] < 40


def test_flat_noisy_series_and_spikes_do_not_fire():
    rng = np.random.default_rng(3)
    x = 50.0 * np.exp(rng.normal(0, 0.05, 600))
    x[::37] *= 4  # latency spikes are not a trend
    out, _ = _run(x)
    assert not out["flag"].any()


def test_one_percent_per_hour_does_not_fire_at_two_percent_setting():
    x = 100.0 * 1.004 ** (np.arange(300) / 60.0)
    out, _ = _run(x, rate=0.02)
    assert not out["flag"].any()


def test_gaps_reduce_coverage_and_constant_series():
    x = np.full(200, 10.0)
    x[50:120] = np.nan
    out, _ = _run(x)
    assert np.isnan(out["rate_per_hour"][120:150, 0]).all()  # window not covered yet
    assert out["rate_per_hour"][190, 0] == 0.0 and not out["flag"].any()
    assert np.isinf(out["hours_to_threshold"][190, 0])


def test_restart_continues_with_saved_window():
    rng = np.random.default_rng(4)
    x = 100 * 1.03 ** (np.arange(180) / 60.0) * np.exp(rng.normal(0, 0.002, 180))
    full, _ = _run(x)
    v = x.reshape(-1, 1)
    st = tr.TrendState(1, 60)
    tr.trend(v[:100].copy(), 0, st, steps_per_hour=60.0)
    saved = st.window.copy()
    st2 = tr.TrendState(1, 60)
    st2.window = saved
    rest = tr.trend(v[100:].copy(), 100, st2, steps_per_hour=60.0)
    np.testing.assert_array_equal(rest["flag"], full["flag"][100:])
    np.testing.assert_allclose(rest["rate_per_hour"], full["rate_per_hour"][100:])


def test_bad_input():
    st = tr.TrendState(2, 10)
    with pytest.raises(TypeError):
        tr.trend(np.zeros((5, 3)), 0, st, steps_per_hour=60)
    with pytest.raises(ValueError):
        tr.trend(np.zeros((5, 2)), 0, st, steps_per_hour=0)
    with pytest.raises(ValueError):
        tr.TrendState(1, 2)
