"""window_evidence (multi-scale level / spread evidence) and record_high on hand-made series with known answers."""
from __future__ import annotations

import math

import numpy as np
import pytest

from otelproc.kernels.multiscale import (RecordState, WindowEvidenceState, clipped_normal_abs_moments, record_high,
                                         window_evidence)


def _col(x) -> np.ndarray:
    return np.asarray(x, dtype=np.float64).reshape(len(x), 1)


def _brute(z: np.ndarray, k: int, clip: float) -> tuple[np.ndarray, np.ndarray]:
    """Reference: recompute both statistics from scratch at every row (NaN rows skipped)."""
    m1, s1 = clipped_normal_abs_moments(clip)
    seen: list[float] = []
    level = np.full(len(z), np.nan)
    spread = np.full(len(z), np.nan)
    for i, v in enumerate(z):
        if np.isnan(v):
            continue
        seen.append(min(max(v, -clip), clip))
        if len(seen) >= k:
            last = np.array(seen[-k:])
            level[i] = last.sum() / math.sqrt(k)
            spread[i] = (np.abs(last).mean() - m1) * math.sqrt(k) / s1
    return level, spread


def test_clipped_moments_match_closed_form_and_monte_carlo():
    m, s = clipped_normal_abs_moments(math.inf)
    assert m == pytest.approx(math.sqrt(2 / math.pi)) and s == pytest.approx(math.sqrt(1 - 2 / math.pi))
    # clip far out = no clipping
    m50, s50 = clipped_normal_abs_moments(50.0)
    assert m50 == pytest.approx(m, abs=1e-12) and s50 == pytest.approx(s, abs=1e-12)
    a = np.minimum(np.abs(np.random.default_rng(0).normal(size=2_000_000)), 1.0)
    m1, s1 = clipped_normal_abs_moments(1.0)
    assert m1 == pytest.approx(a.mean(), abs=2e-3) and s1 == pytest.approx(a.std(), abs=2e-3)
    with pytest.raises(ValueError):
        clipped_normal_abs_moments(0.0)


def test_constant_residual_gives_known_level_and_spread():
    k = 4
    level, spread = window_evidence(_col([1.0] * 10), WindowEvidenceState(1, k), clip=4.0)
    m1, s1 = clipped_normal_abs_moments(4.0)
    # NaN until the window is full, then sqrt(4) * mean(1) = 2
    assert np.isnan(level[:3, 0]).all() and np.isnan(spread[:3, 0]).all()
    assert np.allclose(level[3:, 0], 2.0)
    assert np.allclose(spread[3:, 0], (1.0 - m1) * 2.0 / s1)


def test_iid_normal_residuals_are_standard_normal_under_the_null():
    z = np.random.default_rng(1).normal(size=200_000)
    level, spread = window_evidence(_col(z), WindowEvidenceState(1, 24), clip=4.0)
    # windows 24 apart do not overlap: independent N(0, 1) draws
    lv, sv = level[23::24, 0], spread[23::24, 0]
    assert abs(lv.mean()) < 0.05 and abs(lv.std() - 1) < 0.05
    assert abs(sv.mean()) < 0.05 and abs(sv.std() - 1) < 0.07


def test_small_sustained_shift_is_evidence_although_no_point_is_extreme():
    rng = np.random.default_rng(2)
    z = rng.normal(size=600)
    z[400:] += 1.0                      # every point |z| < 5, but the mean moved by one sigma
    level, spread = window_evidence(_col(z), WindowEvidenceState(1, 48), clip=4.0)
    assert np.abs(level[100:400, 0]).max() < 4.0
    # sqrt(48) * 1 = 6.9 once the window is past the shift
    assert level[460:, 0].min() > 4.0 and np.median(level[460:, 0]) == pytest.approx(math.sqrt(48), abs=1.0)


def test_variance_increase_raises_spread_not_level():
    rng = np.random.default_rng(3)
    z = np.r_[rng.normal(size=500), rng.normal(scale=2.5, size=200)]
    level, spread = window_evidence(_col(z), WindowEvidenceState(1, 24), clip=4.0)
    assert spread[100:500, 0].max() < 5.0
    assert np.median(spread[550:, 0]) > 8.0
    assert np.abs(np.median(level[550:, 0])) < 2.0


def test_single_spike_is_clipped():
    z = np.zeros(30)
    z[20] = 1000.0
    level, spread = window_evidence(_col(z), WindowEvidenceState(1, 10), clip=3.0)
    assert level[20, 0] == pytest.approx(3.0 / math.sqrt(10))
    # leaves the window 10 points later
    assert level[29, 0] == pytest.approx(3.0 / math.sqrt(10)) and level[19, 0] == 0.0


def test_nan_is_a_gap_and_leaves_the_state_untouched():
    rng = np.random.default_rng(4)
    z = rng.normal(size=300)
    z_gap = z.copy()
    z_gap[[50, 51, 52, 200]] = np.nan
    level, spread = window_evidence(_col(z_gap), WindowEvidenceState(1, 16), clip=4.0)
    ref_level, ref_spread = _brute(z_gap, 16, 4.0)
    assert np.isnan(level[[50, 51, 52, 200], 0]).all()
    assert np.allclose(level[:, 0], ref_level, equal_nan=True)
    assert np.allclose(spread[:, 0], ref_spread, equal_nan=True)


def test_running_sums_match_brute_force_over_many_resums():
    z = np.random.default_rng(5).standard_cauchy(size=3000)   # heavy tails: many clipped points
    level, spread = window_evidence(_col(z), WindowEvidenceState(1, 7), clip=2.0)
    ref_level, ref_spread = _brute(z, 7, 2.0)
    assert np.allclose(level[:, 0], ref_level, equal_nan=True, atol=1e-9)
    assert np.allclose(spread[:, 0], ref_spread, equal_nan=True, atol=1e-9)


def test_restart_with_persisted_state_equals_one_pass_and_series_are_independent():
    rng = np.random.default_rng(6)
    z = rng.normal(size=(400, 3))
    z[:, 2] = 0.5                          # a third, constant series must not be affected by the others
    one = window_evidence(z, WindowEvidenceState(3, 32), clip=4.0)
    st = WindowEvidenceState(3, 32)
    a = window_evidence(z[:150], st, clip=4.0)
    b = window_evidence(z[150:], st, clip=4.0)
    for full, part1, part2 in zip(one, a, b):
        assert np.allclose(full, np.vstack([part1, part2]), equal_nan=True)
    assert np.allclose(one[0][31:, 2], 0.5 * math.sqrt(32))


def test_grow_adds_empty_series():
    st = WindowEvidenceState(1, 5)
    window_evidence(_col(np.ones(10)), st)
    st.grow(2)
    level, _ = window_evidence(np.ones((5, 2)), st)
    assert np.allclose(level[:, 0], math.sqrt(5))
    assert np.isnan(level[:4, 1]).all() and level[4, 1] == pytest.approx(math.sqrt(5))


def test_bad_inputs_are_rejected():
    with pytest.raises(ValueError):
        WindowEvidenceState(1, 1)
    with pytest.raises(TypeError):
        window_evidence(np.ones((5, 1), dtype=np.float32), WindowEvidenceState(1, 3))
    with pytest.raises(ValueError):
        window_evidence(np.ones((5, 2)), WindowEvidenceState(1, 3))
    with pytest.raises(ValueError):
        window_evidence(np.ones((5, 1)), WindowEvidenceState(1, 3), clip=0.0)


# --------------------------------------------------------------------------- record_high

def test_record_high_flags_only_new_maxima_beyond_the_margin():
    x = _col([1.0, 2.0, 2.3, 2.5, 1.0, 3.1, np.nan, 3.0, 10.0])
    rec = record_high(x, RecordState(1), margin=0.2)[:, 0]
    # first value: no reference yet; max 1 -> 2 (> 1.2): record; 2.3 <= 2.4: no (but the max becomes 2.3);
    # 2.5 <= 2.76: no; 3.1 > 2.5 * 1.2 = 3.0: record; NaN: gap; 3.0: no; 10: record
    assert np.array_equal(np.nan_to_num(rec, nan=-1), [0, 1, 0, 0, 0, 1, -1, 0, 1])


def test_record_high_with_delay_compares_with_values_at_least_delay_steps_old():
    # a statistic rising by 10 % per step never beats its immediate maximum by 20 %,
    # but beats the maximum of the values 3 or more steps old
    x = _col(np.r_[np.ones(10), 1.1 ** np.arange(1, 11)])
    assert not record_high(x, RecordState(1, delay=0), margin=0.2).any()
    rec = record_high(x, RecordState(1, delay=3), margin=0.2)[:, 0]
    # reference at row i = max(x[:i-2]); 1.1^k > 1.2 * 1.1^(k-3) = 1.331 / 1.2 > 1 from the 2nd step on
    assert np.array_equal(np.flatnonzero(rec), np.arange(11, 20))
    # nothing is reported until delay values have formed the reference
    assert not record_high(_col([1.0, 5.0, 9.0]), RecordState(1, delay=3), margin=0.0).any()


def test_record_high_warmup_learns_but_does_not_report_and_negatives_are_no_evidence():
    x = _col([5.0, 1.0, 6.5, -1.0, -0.5, 7.0])
    st = RecordState(1)
    rec = record_high(x, st, margin=0.0, warmup=3)[:, 0]
    assert np.array_equal(rec, [0, 0, 0, 0, 0, 1])
    assert st.high[0] == 7.0 and st.n[0] == 6
    # a series whose statistic is always negative never records
    rec = record_high(_col(-np.arange(1.0, 10.0)[::-1]), RecordState(1), margin=0.0)[:, 0]
    assert not rec.any()


def test_record_high_on_stationary_noise_is_rare_and_a_variance_burst_is_a_record():
    rng = np.random.default_rng(7)
    z = rng.normal(size=6000)
    z[5000:5030] *= 4.0                                         # 30 points of four times the usual spread
    _, spread = window_evidence(_col(z), WindowEvidenceState(1, 24), clip=4.0)
    rec = record_high(spread, RecordState(1, delay=24), margin=1.0, warmup=750)[:, 0]
    hits = np.flatnonzero(np.nan_to_num(rec) > 0)
    assert len(hits[hits < 5000]) == 0                           # twice the largest earlier window: rare
    assert len(hits) > 0 and hits.min() >= 5000 and hits.min() < 5024


def test_record_high_restart_equals_one_pass_and_rejects_bad_input():
    x = np.random.default_rng(8).normal(size=(300, 2))
    one = record_high(x, RecordState(2, delay=7), margin=0.1, warmup=5)
    st = RecordState(2, delay=7)
    two = np.vstack([record_high(x[:100], st, margin=0.1, warmup=5), record_high(x[100:], st, margin=0.1, warmup=5)])
    assert np.array_equal(one, two)
    st.grow(3)
    assert st.high.shape == (3,) and st.recent.shape == (3, 7) and np.isneginf(st.high[2])
    with pytest.raises(ValueError):
        RecordState(1, delay=-1)
    with pytest.raises(ValueError):
        record_high(x, RecordState(2), margin=-0.1)
    with pytest.raises(ValueError):
        record_high(x, RecordState(3))
    with pytest.raises(TypeError):
        record_high(x.astype(np.float32), RecordState(2))
