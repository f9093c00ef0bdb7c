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
    lags = sorted({max(3, round(f * W)) for f in tr.LAG_FRACTIONS} | {st.span})
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


def test_restart_continues_with_saved_state_and_reset():
    rng = np.random.default_rng(5)
    loc, n = _buckets(rng, 240, 3.0, creep=0.03, start=120)
    full, _ = _run(loc, n)
    st = tr.TrendState(1, W)
    tr.trend(loc[:100].reshape(-1, 1).copy(), n[:100].reshape(-1, 1).copy(), 0, st, steps_per_hour=60.0)
    st2 = tr.TrendState(1, W)
    st2.count, st2.loc = st.count.copy(), st.loc.copy()
    rest = tr.trend(loc[100:].reshape(-1, 1).copy(), n[100:].reshape(-1, 1).copy(), 100, st2, steps_per_hour=60.0)
    np.testing.assert_array_equal(rest["flag"], full["flag"][100:])
    np.testing.assert_allclose(rest["rate_per_hour"], full["rate_per_hour"][100:])
    st2.reset()
    assert (st2.count == 0).all() and np.isnan(st2.loc).all()


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
        tr.TrendState(1, 2)
