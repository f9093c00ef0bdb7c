"""Detector kernels on hand-made series with known answers."""
from __future__ import annotations

import math

import numpy as np
import pytest

from otelproc.batch import StringArray
from otelproc.kernels import detectors as det
from otelproc.anomaly.series import series_key
from otelproc.kernels.series import (PLAN_BODY, PLAN_NONE, PLAN_PARAMS, SeriesTable, aggregate_cells,
                                     distinct_first_rows, duration_plan, durations_from_params, extract_durations)
from tests.reference import ref_cusum, ref_extract_durations


def _baseline(x, slots=None, n_slots=1, **kw):
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    st = det.BaselineState(x.shape[1], n_slots)
    slot = np.zeros(len(x), dtype=np.int64) if slots is None else np.asarray(slots)
    return det.robust_baseline(x, slot, st, **kw), st


def test_spike_is_flagged_and_does_not_move_the_baseline():
    rng = np.random.default_rng(1)
    x = 100 + rng.normal(0, 1, 300)
    x[200] = 130.0
    (exp, scale, z), _ = _baseline(x, warmup=20)
    assert z[200, 0] > 10
    assert np.nanmax(np.abs(z[20:200, 0])) < 5
    # Huber clipping: the point after the spike is expected at the old level
    assert abs(exp[201, 0] - 100) < 1.0


def test_step_is_accepted_after_relevel_and_cusum_fires_once():
    rng = np.random.default_rng(2)
    x = np.r_[rng.normal(10, 0.5, 200), rng.normal(20, 0.5, 200)]
    (exp, scale, z), _ = _baseline(x, warmup=20, relevel_after=5)
    assert z[200, 0] > 10
    assert abs(exp[260, 0] - 20) < 1.0 and abs(z[260:, 0]).max() < 6
    up, dn = np.zeros(1), np.zeros(1)
    _, alarm = det.cusum(np.nan_to_num(z), up, dn, k=1.0, h=15.0)
    fired = np.flatnonzero(alarm[:, 0])
    assert len(fired) >= 1 and fired[0] in range(200, 204) and alarm[fired[0], 0] == 1
    assert not alarm[:200].any()


def test_seasonal_cycle_does_not_fire_after_one_period():
    # hourly profile with a sharp square-wave step every 12 "hours"; 5 points per slot
    days, per_slot = 6, 5
    slot = np.repeat(np.tile(np.arange(24), days), per_slot)
    level = np.where((slot >= 8) & (slot < 20), 50.0, 10.0)
    rng = np.random.default_rng(3)
    x = level + rng.normal(0, 1, len(slot))
    (exp, scale, z), _ = _baseline(x, slots=slot, n_slots=24, alpha=0.05, gamma=0.3, warmup=20,
                                    season_warmup=24 * per_slot)
    after = 2 * 24 * per_slot
    assert np.nanmax(np.abs(z[after:, 0])) < 6, "a learnt daily cycle must not look anomalous"
    # the seasonal expectation follows the steps; a plain EWMA lags them
    err_season = np.abs(exp[after:, 0] - level[after:])
    (exp0, _, _), _ = _baseline(x, warmup=20, alpha=0.05)
    err_plain = np.abs(exp0[after:, 0] - level[after:])
    assert err_season.mean() < 0.5 * err_plain.mean()


def test_constant_series_has_finite_scores_and_flags_any_change():
    x = np.full(100, 7.0)
    x[80] = 8.0
    (exp, scale, z), _ = _baseline(x, warmup=10, min_scale=1e-3)
    assert np.all(np.isfinite(z[10:, 0]))
    assert np.all(z[10:80, 0] == 0)
    assert z[80, 0] > 100


def test_nan_gaps_leave_the_state_untouched():
    x = np.r_[np.full(30, 5.0), np.full(10, np.nan), np.full(30, 5.0)]
    (exp, scale, z), st = _baseline(x, warmup=10, min_scale=0.1)
    assert np.isnan(z[30:40, 0]).all() and np.isnan(exp[30:40, 0]).all()
    assert st.n[0] == 60
    assert np.all(z[40:, 0] == 0)


def test_restart_from_state_arrays_equals_one_pass():
    rng = np.random.default_rng(4)
    x = rng.normal(0, 1, (400, 3))
    slot = np.arange(400) % 24
    full_st = det.BaselineState(3, 24)
    _, _, z_full = det.robust_baseline(x, slot, full_st)
    st = det.BaselineState(3, 24)
    det.robust_baseline(x[:150], slot[:150], st)
    copy = det.BaselineState(3, 24)
    for f in det.BaselineState.FIELDS:  # persisted as arrays, reloaded
        setattr(copy, f, getattr(st, f).copy())
    _, _, z_rest = det.robust_baseline(x[150:], slot[150:], copy)
    np.testing.assert_array_equal(z_full[150:], z_rest)


def test_grow_rows_keeps_values_fills_new_rows_and_reuses_its_buffer():
    a = np.arange(6, dtype=np.float64).reshape(3, 2)
    g = det.grow_rows(a, 5, np.nan)
    np.testing.assert_array_equal(g[:3], a)
    assert g.shape == (5, 2) and np.isnan(g[3:]).all() and g.flags.c_contiguous
    g[0, 0] = 42.0
    assert a[0, 0] == 0.0  # an array that owns its data is copied, never written through
    g2 = det.grow_rows(g, 7, -1.0)  # within capacity: the same buffer, no copy
    assert g2.ctypes.data == g.ctypes.data and g2[0, 0] == 42.0 and (g2[5:] == -1).all()
    assert det.grow_rows(g2, 4) is g2
    # a view of another array's rows (not from grow_rows' start) is copied, not grown into
    big = np.zeros(10)
    view = big[2:5]
    grown = det.grow_rows(view, 6, 9.0)
    assert (big == 0).all() and grown.tolist() == [0, 0, 0, 9, 9, 9]


def test_series_added_batch_by_batch_score_like_all_at_once():
    """States grown a few series at a time (amortised buffers) give the same results as states
    created with every series, for every detector state class."""
    rng = np.random.default_rng(7)
    x = rng.normal(10, 1, (60, 9))
    slot = np.arange(60) % 24
    whole_b, whole_s = det.BaselineState(9, 24), det.SpotState(9)
    _, _, z_whole = det.robust_baseline(x, slot, whole_b)
    step_b, step_s = det.BaselineState(0, 24), det.SpotState(0)
    for n in (2, 3, 7, 9):  # grown in steps, through the spare-capacity path
        step_b.grow(n)
        step_s.grow(n)
    _, _, z_step = det.robust_baseline(x, slot, step_b)
    np.testing.assert_array_equal(z_whole, z_step)
    for f in det.BaselineState.FIELDS:
        np.testing.assert_array_equal(getattr(whole_b, f), getattr(step_b, f))
    thr_w, _ = det.spot_threshold(np.abs(z_whole), whole_s)
    thr_s, _ = det.spot_threshold(np.abs(z_step), step_s)
    np.testing.assert_array_equal(thr_w, thr_s)
    pres = det.PresenceState(0)
    for n in (1, 4, 9):
        pres.grow(n)
    assert pres.first_step.tolist() == [-1] * 9


def test_baseline_rejects_bad_input():
    st = det.BaselineState(2)
    with pytest.raises(TypeError, match="float64"):
        det.robust_baseline(np.zeros((3, 2), dtype=np.float32), np.zeros(3), st)
    with pytest.raises(ValueError, match="series"):
        det.robust_baseline(np.zeros((3, 5)), np.zeros(3), st)
    with pytest.raises(ValueError, match="alpha"):
        det.robust_baseline(np.zeros((3, 2)), np.zeros(3), st, alpha=0.0)


def test_spot_threshold_tracks_the_tail_and_flags_extremes():
    rng = np.random.default_rng(5)
    z = np.abs(rng.standard_normal((20000, 2)))
    z[15000, 0] = 9.0
    st = det.SpotState(2, 256)
    thr, tail = det.spot_threshold(z, st, init_threshold=2.0, q=1e-4)
    # the (1 - 1e-4) two-sided-|z| quantile of a normal is 3.89: the GPD fit lands near it
    assert 3.3 < np.nanmedian(thr[10000:, 1]) < 4.6
    assert z[15000, 0] > thr[15000, 0]
    assert det.spot_score01(tail, 1e-4)[15000, 0] >= 0.5
    # false alarms near the target rate q (within a factor of a few)
    rate = np.mean(z[5000:] > thr[5000:])
    assert rate < 1e-3


def test_cusum_matches_reference():
    rng = np.random.default_rng(6)
    z = rng.normal(0, 1, 500)
    z[250:300] += 2.0
    z[100] = np.nan
    up, dn = np.zeros(1), np.zeros(1)
    _, alarm = det.cusum(z.reshape(-1, 1).copy(), up, dn, k=0.5, h=5.0)
    assert alarm[:, 0].tolist() == ref_cusum(z.tolist(), 0.5, 5.0)
    assert (alarm[250:300, 0] == 1).any()


def test_presence_new_vanished_rare():
    T = 200
    counts = np.zeros((T, 3))
    counts[:, 0] = 2.0            # steady pattern ...
    counts[150:, 0] = 0.0         # ... that stops at step 150
    counts[120, 1] = 1.0          # first seen after warm-up: new
    counts[[5, 170], 2] = 1.0     # seen once in warm-up, once again much later: rare
    st = det.PresenceState(3)
    ev = det.presence(counts, 0, st, warmup_steps=60, vanish_min=3, vanish_p=1e-9)
    # 2 lines every step, no spread: dispersion shrunk towards 1 by 10 pseudo-steps = 10/160;
    # log P(silence of L) = L * 2 * log(phi) / (1 - phi) = -5.91 L <= log(1e-9) from L = 4 (step 153)
    assert np.flatnonzero(ev[:, 0] == det.EVENT_VANISHED).tolist() == [153]
    assert np.flatnonzero(ev[:, 1] == det.EVENT_NEW).tolist() == [120]
    assert np.flatnonzero(ev[:, 2] == det.EVENT_RARE).tolist() == [170]
    assert not (ev[:, 2] == det.EVENT_NEW).any()
    # vanishing fires once per silence, and again after a return and a new silence
    more = np.zeros((40, 3))
    more[0:20, 0] = 2.0
    ev2 = det.presence(more, T, st, warmup_steps=60)
    assert (ev2[:, 0] == det.EVENT_VANISHED).sum() == 1


def test_presence_cadence_test_rare_and_bursty_lines_do_not_vanish_periodic_jobs_do():
    """Rare is not vanished: a Poisson line a few times an hour and a bursty line have no cadence and never
    vanish; a job every 5 steps vanishes once its silence is improbable under its own regular gaps."""
    rng = np.random.default_rng(3)
    T = 3000
    counts = np.zeros((T, 3))
    counts[:, 0] = rng.poisson(0.1, T)                                   # ~6 per hour of 1-min steps
    counts[:, 1] = rng.poisson(rng.gamma(0.3, 1 / 0.3, T) * 2.0)         # over-dispersed bursts
    counts[np.arange(3, 2000, 5), 2] = 1.0                               # every 5 steps, stops at 2000
    ev = det.presence(counts, 0, det.PresenceState(3), warmup_steps=60)
    assert not (ev[:, :2] == det.EVENT_VANISHED).any()
    fired = np.flatnonzero(ev[:, 2] == det.EVENT_VANISHED)
    assert len(fired) == 1 and 1998 + 10 <= fired[0] <= 1998 + 60


def test_error_ratio_jump():
    rng = np.random.default_rng(7)
    tot = np.full((300, 1), 200.0)
    err = rng.binomial(200, 0.01, (300, 1)).astype(np.float64)
    err[250, 0] = 40.0
    z, ratio, exp, logp = det.error_ratio(err, tot, np.zeros(1), np.zeros(1), np.zeros(1, dtype=np.int64),
                                          warmup=20)
    assert z[250, 0] > 20 and abs(ratio[250, 0] - 0.2) < 1e-12
    assert logp[250, 0] < np.log(1e-15)
    # Poisson tail vs the exact value: P(X >= 5 | lam = 0.5) = 1.72e-4; the bound is within 15 %
    small = det.error_ratio(np.array([[5.0]]), np.array([[50.0]]), np.array([0.01]), np.array([1.0]),
                            np.array([100], dtype=np.int64), min_p=0.0)[3]
    assert math.exp(small[0, 0]) == pytest.approx(1.7212e-4, rel=0.15)
    assert abs(exp[251, 0] - 0.01) < 0.01  # the jump did not become the baseline
    assert np.nanmax(z[20:250, 0]) < 6


def _by_line(d):
    got = {}
    for r, o, v, u in zip(*(a.tolist() for a in d)):
        got.setdefault(r, []).append((o, v, u))
    return got


def _assert_as_reference(bodies, d):
    got = _by_line(d)
    for i, b in enumerate(bodies):
        exp = ref_extract_durations(b)
        assert [(o, u) for o, _, u in got.get(i, [])] == [(o, u) for o, _, u in exp], b
        np.testing.assert_allclose([v for _, v, _ in got.get(i, [])], [v for _, v, _ in exp], rtol=1e-9, err_msg=b)


def test_extract_durations_units_and_reference():
    bodies = ["GET /x took 120ms", "Latency=1.5s ok", "elapsed time: 30 us then duration 7", "timeout 5 took",
              "x took 3µs", "response_time=12.5 msec", "elapsed 2 seconds", "", "done in 5ms",
              "GET /api 200 in 123 ms", "request completed in 0.123s", "retrying in 5 attempts", "op=read latency_ms=123",
              "export duration_seconds=0.532", "rpc durationMs=12", "requestLatencyMs=12.5", "elapsedTime=12",
              "backup took 2 min", "sync took 1m30s", "sync took 1h2m3.5s", "time: 2 h", "took 5 msgs", "took 5 M",
              "took 7 μs", "duration=0.5", "took 3 s 4m", "durationMsTotal=4", "latency-us: 40", "took 5 S"]
    sa = StringArray.from_pylist(bodies)
    d = extract_durations(sa.buf, sa.off)
    _assert_as_reference(bodies, d)
    got = _by_line(d)
    assert got[0] == [(0, 120.0, True)] and got[1] == [(0, 1500.0, True)]
    assert got[2][0][1] == pytest.approx(0.03) and got[2][1] == (1, 7.0, False)
    assert 8 in got and 3 not in got and 7 not in got
    assert got[9] == [(0, 123.0, True)] and got[10][0][1] == pytest.approx(123.0) and 11 not in got
    # the key's unit suffix: seconds are not read as milliseconds
    assert got[12] == [(0, 123.0, True)] and got[13][0][1] == pytest.approx(532.0)
    assert got[14] == [(0, 12.0, True)] and got[15] == [(0, 12.5, True)] and got[16] == [(0, 12.0, False)]
    # minutes are minutes (were milliseconds), Go compounds add up
    assert got[17] == [(0, 120_000.0, True)] and got[18] == [(0, 90_000.0, True)]
    assert got[19][0][1] == pytest.approx(3_723_500.0) and got[20] == [(0, 7_200_000.0, True)]
    # a word that only starts like a unit, or an upper-case one-letter unit, is no unit
    assert got[21] == [(0, 5.0, False)] and got[22] == [(0, 5.0, False)] and got[28] == [(0, 5.0, False)]
    assert got[23][0][1] == pytest.approx(7e-3) and got[24] == [(0, 0.5, False)]
    assert got[25] == [(0, 3000.0, True)] and 26 not in got and got[27] == [(0, 0.04, True)]


def test_extract_durations_match_the_reference_on_generated_bodies():
    rng = np.random.default_rng(7)
    words = ["took", "Took", "latency", "latency_ms", "duration_seconds", "durationMs", "elapsed", "elapsedTime",
             "time", "in", "In", "login", "timeout", "uptime", "x", "GET", "/api", "200", "ok", "durationMsTotal"]
    seps = ["", " ", "=", ": ", "  ", "=\"", "    "]
    nums = ["12", "1.5", "0.123", "7.", "300", "abc", "1m30s", "2h5m"]
    units = ["", " ms", "ms", "s", " s", "sec", " seconds", "µs", " us", "ns", " min", "m", "h", " hours", "msgs", "S",
             " items"]
    bodies = []
    for _ in range(3000):
        parts = []
        for _ in range(int(rng.integers(1, 5))):
            parts.append(str(rng.choice(words)) + str(rng.choice(seps)) + str(rng.choice(nums)) + str(rng.choice(units)))
        bodies.append(" ".join(parts))
    sa = StringArray.from_pylist(bodies)
    _assert_as_reference(bodies, extract_durations(sa.buf, sa.off, max_per_line=8))


def _plan(templates):
    sa = StringArray.from_pylist(templates)
    return duration_plan(sa.buf, sa.off)


def test_duration_plan_finds_the_parameter_after_each_duration_word():
    plan = _plan(["GET <*> took <*>", "duration: <*> ms", "elapsed <*> s", "heartbeat ok", "timeout <*> ms",
                  "<*>took <*>", "took <*> then time=<*>s", "elapsed time: <*> us", "took 5 ms", "took N/A ms",
                  "done in <*>", "op=<*> latency_ms=<*>", "rpc durationMs=<*>", "latency_ms<*>", "backup took <*> min"])
    assert plan.kind.tolist() == [PLAN_PARAMS, PLAN_PARAMS, PLAN_PARAMS, PLAN_NONE, PLAN_NONE, PLAN_BODY,
                                  PLAN_PARAMS, PLAN_PARAMS, PLAN_BODY, PLAN_NONE, PLAN_PARAMS, PLAN_PARAMS,
                                  PLAN_PARAMS, PLAN_BODY, PLAN_PARAMS]
    assert plan.n_params.tolist() == [2, 1, 1, 0, 1, 2, 2, 1, 0, 0, 1, 2, 1, 1, 1]
    slots = [(plan.slot_param[a:b].tolist(), plan.slot_unit[a:b].tolist(), plan.slot_needs_unit[a:b].tolist())
             for a, b in zip(plan.slot_off[:-1], plan.slot_off[1:])]
    # 0 = no unit in the template (the parameter's own, or none)
    assert slots[0] == ([1], [0.0], [False]) and slots[1] == ([0], [1.0], [False])
    assert slots[2] == ([0], [1000.0], [False])
    # "then" is no duration word; "time=" is (after "=", unit "s" outside the parameter)
    assert slots[6] == ([0, 1], [0.0, 1000.0], [False, False])
    # "elapsed" is followed by a word, so the number belongs to "time" (as in the body scan)
    assert slots[7] == ([0], [1e-3], [False])
    assert slots[3] == slots[5] == slots[8] == ([], [], [])
    # "in" needs a unit (in the parameter here); the key's suffix is the unit
    assert slots[10] == ([0], [0.0], [True]) and slots[11] == ([1], [1.0], [False])
    assert slots[12] == ([0], [1.0], [False]) and slots[14] == ([0], [60_000.0], [False])


def test_durations_from_params_equal_the_body_scan_and_fall_back_per_line():
    templates = ["GET <*> took <*>", "duration: <*> ms", "elapsed <*> s", "heartbeat ok", "<*>took <*>",
                 "took <*> then time=<*>s", "done in <*>", "export duration_seconds=<*>", "GET <*> in <*> ms"]
    plan = _plan(templates)
    # (template, parameters, body)
    lines = [(0, ["/a HTTP/1.1 200", "74.1ms"], "GET /a HTTP/1.1 200 took 74.1ms"),
             (1, ["266.2"], "duration: 266.2 ms"),
             (2, ["3"], "elapsed 3 s"),
             (3, [], "heartbeat ok"),
             (0, ["/b", "N/A"], "GET /b took N/A"),               # no number: no duration
             (4, ["x9", "5us"], "x9took 5us"),                     # PLAN_BODY: the body decides
             (5, ["2", "1.5"], "took 2 then time=1.5s"),
             (5, ["oops", "4"], "took oops then time=4s"),         # first slot fails, the second is ordinal 0
             (1, ["7", "8"], "duration: 7 ms 8"),                  # parameter count is not the template's: body
             (0, ["/c", "12 sec"], "GET /c took 12 sec"),          # unit inside a multi-token parameter
             (6, ["0.25s"], "done in 0.25s"),                      # "in": the unit is in the parameter
             (6, ["5"], "done in 5"),                              # "in" without a unit: no duration
             (7, ["0.5"], "export duration_seconds=0.5"),          # the key's unit
             (8, ["/x 200", "17"], "GET /x 200 in 17 ms"),
             (1, ["9 x"], "duration: 9 x ms"),                     # text after the number: not the template's unit
             (0, ["/d", "1m30s"], "GET /d took 1m30s")]
    codes = np.array([t for t, _, _ in lines], dtype=np.int32)
    params = StringArray.from_pylist(["".join(p + "\x1f" for p in ps) for _, ps, _ in lines])
    bodies = StringArray.from_pylist([b for _, _, b in lines])
    got = durations_from_params(codes, plan, params.buf, params.off, bodies.buf, bodies.off)
    exp = extract_durations(bodies.buf, bodies.off)
    for g, e in zip(got, exp):
        np.testing.assert_array_equal(g, e)
    by_line = _by_line(got)
    assert by_line[0] == [(0, 74.1, True)] and by_line[1] == [(0, 266.2, True)] and by_line[2] == [(0, 3000.0, True)]
    assert 3 not in by_line and 4 not in by_line
    assert by_line[5] == [(0, 5e-3, True)] and by_line[6] == [(0, 2.0, False), (1, 1500.0, True)]
    assert by_line[7] == [(0, 4000.0, True)]
    assert by_line[8] == [(0, 7.0, True)] and by_line[9] == [(0, 12000.0, True)]
    assert by_line[10] == [(0, 250.0, True)] and 11 not in by_line and by_line[12] == [(0, 500.0, True)]
    assert by_line[13] == [(0, 17.0, True)] and by_line[14] == [(0, 9.0, False)] and by_line[15] == [(0, 90_000.0, True)]
    with pytest.raises(TypeError, match="codes must be int32"):
        durations_from_params(codes.astype(np.int64), plan, params.buf, params.off, bodies.buf, bodies.off)
    with pytest.raises(IndexError, match="9 templates"):
        durations_from_params(codes + 9, plan, params.buf, params.off, bodies.buf, bodies.off)


def test_series_table_gives_ids_in_order_of_first_appearance_with_the_series_keys():
    svc = np.array([3, 1, 3, 2, 1, 3], dtype=np.int64)
    pat = np.array([7, 0, 7, 7, 0, 9], dtype=np.uint64)
    ordv = np.array([-1, -1, -1, -2, -1, 0], dtype=np.int64)
    t = SeriesTable()
    ids, new_rows = t.lookup(svc, pat, ordv)
    assert ids.tolist() == [0, 1, 0, 2, 1, 3] and new_rows.tolist() == [0, 1, 3, 5]
    np.testing.assert_array_equal(t.keys, series_key(svc[new_rows], pat[new_rows], ordv[new_rows]))
    # past the table's first size (16 slots, half full at most): known keys keep their ids
    many = np.arange(40, dtype=np.int64)
    ids2, new2 = t.lookup(np.concatenate([svc, many]), np.concatenate([pat, np.zeros(40, np.uint64)]),
                          np.concatenate([ordv, np.full(40, -1, np.int64)]))
    # service 1 with pattern 0, ordinal -1 is id 1 already
    assert ids2[:6].tolist() == ids.tolist() and ids2[6:].tolist() == [4, 1] + list(range(5, 43))
    assert new2.tolist() == [6] + list(range(8, 46))
    # rebuilt from its keys (a restart), the table answers the same
    assert SeriesTable(t.keys).lookup(svc, pat, ordv)[0].tolist() == ids.tolist()


def test_distinct_first_rows():
    keys = np.array([5, 9, 5, 0, 9, 2**64 - 1, 0], dtype=np.uint64)
    assert distinct_first_rows(keys).tolist() == [0, 1, 3, 5]
    assert distinct_first_rows(np.zeros(0, dtype=np.uint64)).tolist() == []
    with pytest.raises(TypeError, match="uint64"):
        distinct_first_rows(keys.astype(np.int64))


def test_aggregate_cells_quantiles():
    rng = np.random.default_rng(8)
    b = rng.integers(0, 4, 2000)
    s = rng.integers(0, 3, 2000)
    v = rng.normal(10, 2, 2000)
    v[::50] = np.nan
    out = aggregate_cells(b, s, v, 4, 3)
    for bi in range(4):
        for si in range(3):
            sel = (b == bi) & (s == si)
            vals = v[sel][~np.isnan(v[sel])]
            assert out["count"][bi, si] == sel.sum()
            assert out["p50"][bi, si] == pytest.approx(np.quantile(vals, 0.5))
            assert out["p95"][bi, si] == pytest.approx(np.quantile(vals, 0.95))
            assert out["max"][bi, si] == pytest.approx(vals.max())
            assert out["mean"][bi, si] == pytest.approx(vals.mean())
            pos = np.sort(vals[vals > 0])
            cut = int(0.1 * len(pos))
            assert out["npos"][bi, si] == len(pos)
            assert out["log_tmean"][bi, si] == pytest.approx(np.log(pos[cut:len(pos) - cut]).mean())
    empty = aggregate_cells(np.zeros(0), np.zeros(0), np.zeros(0), 2, 2)
    assert (empty["count"] == 0).all() and np.isnan(empty["p50"]).all()
    with pytest.raises(ValueError, match="out of range"):
        aggregate_cells(np.array([5]), np.array([0]), np.array([1.0]), 2, 2)


def test_log_trimmed_mean_ignores_zero_durations_and_extremes():
    # bucket 0: nine 10 ms lines, one 10 s outlier, two zero durations (no log): trimmed away / skipped
    v = np.array([10.0] * 9 + [10_000.0, 0.0, 0.0])
    out = aggregate_cells(np.zeros(12, np.int64), np.zeros(12, np.int64), v, 1, 1, trim=0.1)
    assert out["npos"][0, 0] == 10 and out["log_tmean"][0, 0] == pytest.approx(np.log(10.0))
    none = aggregate_cells(np.zeros(2, np.int64), np.zeros(2, np.int64), np.array([0.0, np.nan]), 1, 1)
    assert none["npos"][0, 0] == 0 and np.isnan(none["log_tmean"][0, 0])
    with pytest.raises(ValueError, match="trim"):
        aggregate_cells(np.zeros(1), np.zeros(1), np.ones(1), 1, 1, trim=0.5)

