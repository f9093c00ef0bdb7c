"""kernels/slot_stats: per-slot count, first record, time range and severity mix on hand-made input."""
from __future__ import annotations

import numpy as np
import pytest

from otelproc.kernels.slot_stats import slot_stats

I64 = np.iinfo(np.int64)


def test_hand_made_batch():
    slot = np.array([2, 0, 2, 2, 0], np.int32)
    t = np.array([50, 10, 20, 70, 5], np.int64)
    sev = np.array([0, 9, 17, 13, 8], np.uint8)
    count, first, tmin, tmax, mix = slot_stats(slot, t, 4, sev)
    assert count.tolist() == [2, 0, 3, 0]
    assert first.tolist() == [1, -1, 0, -1]
    assert tmin.tolist() == [5, I64.max, 20, I64.max]
    assert tmax.tolist() == [10, I64.min, 70, I64.min]
    # classes: unset, 1-8, 9-12, 13-16, 17+
    assert mix.dtype == np.uint64 and mix.tolist() == [[0, 1, 1, 0, 0], [0] * 5, [1, 0, 0, 1, 1], [0] * 5]


def test_severity_class_edges_and_no_mix():
    sev = np.array([0, 1, 8, 9, 12, 13, 16, 17, 24, 255], np.uint8)
    slot = np.zeros(len(sev), np.int32)
    *_, mix = slot_stats(slot, np.zeros(len(sev), np.int64), 1, sev)
    assert mix.tolist() == [[1, 2, 2, 2, 3]]
    count, first, tmin, tmax, mix = slot_stats(slot, np.arange(len(sev), dtype=np.int64), 2)
    assert count.tolist() == [10, 0] and first.tolist() == [0, -1] and (tmin[0], tmax[0]) == (0, 9)
    assert not mix.any()


def test_empty_and_bad_input():
    count, first, tmin, tmax, mix = slot_stats(np.zeros(0, np.int32), np.zeros(0, np.int64), 3,
                                               np.zeros(0, np.uint8))
    assert count.tolist() == [0, 0, 0] and first.tolist() == [-1, -1, -1] and mix.shape == (3, 5)
    with pytest.raises(IndexError):
        slot_stats(np.array([3], np.int32), np.zeros(1, np.int64), 3)
    with pytest.raises(ValueError, match="event_ns"):
        slot_stats(np.array([0, 1], np.int32), np.zeros(1, np.int64), 3)


def test_matches_numpy_on_random_input():
    rng = np.random.default_rng(5)
    slot = rng.integers(0, 50, 5000).astype(np.int32)
    t = rng.integers(-10**18, 10**18, 5000)
    sev = rng.integers(0, 25, 5000).astype(np.uint8)
    count, first, tmin, tmax, mix = slot_stats(slot, t, 60, sev)
    assert np.array_equal(count, np.bincount(slot, minlength=60))
    ref_min = np.full(60, I64.max)
    np.minimum.at(ref_min, slot, t)
    ref_max = np.full(60, I64.min)
    np.maximum.at(ref_max, slot, t)
    assert np.array_equal(tmin, ref_min) and np.array_equal(tmax, ref_max)
    uniq, idx = np.unique(slot, return_index=True)
    assert np.array_equal(first[uniq], idx)
    assert int(mix.sum()) == 5000 and np.array_equal(mix.sum(axis=1), count)
