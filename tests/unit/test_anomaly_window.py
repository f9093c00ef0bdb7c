"""BucketWindow keeps the counted streams merged per (bucket, series) cell: memory O(cells), same aggregates."""
import numpy as np
import pytest

from otelproc.anomaly.series import SUMMED_STREAMS, BucketWindow, summed_cells
from otelproc.kernels.series import aggregate_cells
from otelproc.pipeline import bound_allocator

NS = 1_000_000_000


def _points(rng, n, b0=1000, nb=6, ns=40):
    bucket = rng.integers(b0, b0 + nb, n).astype(np.int64)
    sid = rng.integers(0, ns, n).astype(np.int64)
    return bucket, sid


def test_summed_streams_match_unmerged_aggregates_and_stay_per_cell():
    rng = np.random.default_rng(7)
    w = BucketWindow(10 * NS, 0, 100)
    raw = {k: ([], [], []) for k in SUMMED_STREAMS}
    for _ in range(12):  # several batches filing into the same open buckets
        for k in SUMMED_STREAMS:
            b, s = _points(rng, 5000)
            v = np.full(len(b), np.nan) if k == "count" else (rng.random(len(b)) < 0.1).astype(np.float64)
            w.add(k, b, s, v)
            for lst, a in zip(raw[k], (b, s, v)):
                lst.append(a)
    for k in SUMMED_STREAMS:
        pend = w._pending[k]
        cells = set(zip(pend[0].tolist(), pend[1].tolist()))
        assert len(pend[0]) == len(cells) <= 6 * 40  # one entry per cell, not 60k points
        assert pend[3].sum() == 60_000
    pts = w.take(1000, 1006)
    for k in SUMMED_STREAMS:
        b, s, v = (np.concatenate(x) for x in raw[k])
        ref = aggregate_cells(b - 1000, s, v, 6, 40, quantiles=False)
        count, total = summed_cells(*pts[k], 6, 40)
        np.testing.assert_array_equal(count, ref["count"])
        if k == "svc":
            np.testing.assert_array_equal(total, ref["sum"])
    assert all(len(p[0]) == 0 for p in w._pending.values())


def test_merge_falls_back_to_sorting_for_sparse_cells_and_state_round_trips():
    rng = np.random.default_rng(3)
    w = BucketWindow(NS, 0, 100)
    b = rng.integers(0, 10**9, 3000).astype(np.int64)  # far too many cells for a dense histogram
    s = rng.integers(0, 10**6, 3000).astype(np.int64)
    w.add("svc", np.concatenate([b, b]), np.concatenate([s, s]), np.ones(6000))
    assert len(w._pending["svc"][0]) == len(set(zip(b.tolist(), s.tolist())))
    assert set(w._pending["svc"][3].tolist()) == {2.0}
    st = w.state("r0")
    w2 = BucketWindow(NS, 0, 100)
    w2.load("r0", st)
    for a, c in zip(w._pending["svc"], w2._pending["svc"]):
        np.testing.assert_array_equal(a, c)
    # a snapshot written before cells were merged (no weights) loads as one point per entry
    old = {k: v for k, v in st.items() if not k.endswith(".weight")}
    old["r0.svc.bucket"], old["r0.svc.sid"], old["r0.svc.value"] = np.array([5, 5, 6]), np.array([1, 1, 1]), \
        np.array([1.0, 0.0, 1.0])
    w3 = BucketWindow(NS, 0, 100)
    w3.load("r0", old)
    count, total = summed_cells(*w3.take(5, 7)["svc"], 2, 2)
    np.testing.assert_array_equal(count, [[0, 2], [0, 1]])
    np.testing.assert_array_equal(total, [[0, 1], [0, 1]])


def test_summed_cells_rejects_out_of_range_ids():
    with pytest.raises(ValueError, match="out of range"):
        summed_cells(np.array([3]), np.array([0]), np.array([1.0]), np.array([1.0]), 2, 2)


def test_bound_allocator_applies_on_glibc():
    import platform

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("glibc only")
    assert bound_allocator() is True
