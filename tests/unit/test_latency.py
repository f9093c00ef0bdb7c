"""Latency shift detection: the kernel against its slow reference, and the engine on latency scenarios
(low-rate templates, heavy tails, values in seconds, lower latency, rare templates)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from otelproc.anomaly.engine import AnomalyEngine, EngineParams
from otelproc.findings import FindingKind, Severity
from otelproc.kernels.latency import LatencyState, latency_shift
from tests.reference import ref_latency_shift

NS = 10**9
T0 = 1_767_225_600 * NS


def _stream(rng, n_buckets, S, rate, shift_at=None, shift=1.0):
    pts = []
    for t in range(n_buckets):
        for s in range(S):
            k = rng.poisson(rate[s])
            mult = shift if shift_at is not None and s == 0 and shift_at[0] <= t < shift_at[1] else 1.0
            for v in np.exp(np.log(50.0 + 30 * s) + 0.5 * rng.standard_normal(k)) * mult:
                pts.append((t, s, float(v)))
    if S:
        pts.append((n_buckets - 1, S - 1, -1.0))  # not positive: ignored
    return pts


def test_kernel_matches_the_reference_over_calls():
    rng = np.random.default_rng(3)
    S, R = 4, 12
    rate = [3.0, 0.7, 6.0, 0.2]
    kw = dict(decay=math.exp(-10 / 600), window=12, min_values=8, min_weight=30.0, warm_buckets=20, z_min=4.0,
              min_ratio=1.5, relevel_buckets=40, memory_values=60.0)
    pts = _stream(rng, 300, S, rate, shift_at=(150, 260), shift=3.0)
    state = LatencyState(S, ring=R)
    ref_state = None
    got, exp = [], []
    # in uneven calls: the state carries over
    for a, b in ((0, 1), (1, 57), (57, 140), (140, 141), (141, 300)):
        part = [(r - a, s, v) for r, s, v in pts if a <= r < b]
        arr = np.array(part, dtype=np.float64).reshape(-1, 3)
        res = latency_shift(arr[:, 0].astype(np.int64), arr[:, 1].astype(np.int64), arr[:, 2], 1000 + a, b - a, state,
                            **kw)
        for r, s in zip(*np.nonzero(res["n"] > 0)):
            got.append((int(r) + a, int(s), int(res["flag"][r, s]), res["z"][r, s], res["ratio"][r, s],
                        int(res["n"][r, s]), int(res["run"][r, s])))
        # the reference processes the same calls
        o, ref_state = ref_latency_shift(part, 1000 + a, b - a, S, R, state=ref_state, **kw)
        exp += [(t + a, s, f, z, ra, n, run) for t, s, f, z, ra, n, run in o]
    got.sort(key=lambda x: (x[0], x[1]))
    exp.sort(key=lambda x: (x[0], x[1]))
    assert [g[:3] + g[5:] for g in got] == [e[:3] + e[5:] for e in exp]
    np.testing.assert_allclose([g[3] for g in got], [e[3] for e in exp], rtol=1e-9, equal_nan=True)
    np.testing.assert_allclose([g[4] for g in got], [e[4] for e in exp], rtol=1e-9, equal_nan=True)
    # the sparse series (0.2 values per bucket: ~2 in the 12-bucket window, a decayed weight of ~12 with the
    # time memory alone) is tested on its last 8 values, with a baseline that remembers ~60 values
    sparse = [g for g in got if g[1] == 3 and not math.isnan(g[3])]
    assert sparse and all(g[5] == 8 for g in sparse)
    # the x3 shift of series 0 was flagged, the others never
    assert any(g[2] == 1 and g[1] == 0 and 150 <= g[0] < 260 for g in got)
    assert not [g for g in got if g[2] != 0 and g[1] != 0]
    for s in range(S):
        assert state.mu[s] == pytest.approx(ref_state[s]["mu"], rel=1e-9)


def test_kernel_checks_its_inputs():
    st = LatencyState(2)
    with pytest.raises(ValueError, match="out of range"):
        latency_shift(np.array([0]), np.array([2]), np.array([1.0]), 0, 1, st, decay=0.9, window=3)
    with pytest.raises(ValueError, match="decay"):
        latency_shift(np.array([0]), np.array([0]), np.array([1.0]), 0, 1, st, decay=0.0, window=3)
    with pytest.raises(ValueError, match="ring"):
        LatencyState(1, ring=2)


# --- the engine on latency scenarios ---------------------------------------------------------------------

def _run_engine(minutes: int, rate: float, *, sigma: float = 0.5, median_ms: float = 200.0, unit_s: bool = False,
                episode: tuple | None = None, factor: float = 1.0, seed: int = 0, params: EngineParams | None = None,
                busy_rate: float = 8.0, unit: str = "ms", load: float = 0.0):
    """One service: template 21 at `rate` lines/s (log-normal latency, optional x factor during `episode`
    minutes), template 22 busy at `busy_rate` lines/s as background. Returns the findings.
    unit: how template 21 writes its values (s, ms, us); load: amplitude of a load cycle (period 40 min) that
    both the rate and the latency of template 21 follow (latency x (1 + load sin), rate likewise)."""
    eng = AnomalyEngine(params or EngineParams())
    svc = eng.service_codes(["api"])[0]
    rng = np.random.default_rng(seed)
    found = []
    for m in range(minutes):
        cycle = 1.0 + load * math.sin(2 * math.pi * m / 40)
        n1, n2 = rng.poisson(rate * cycle * 60), rng.poisson(busy_rate * 60)
        t1, t2 = np.sort(rng.uniform(m * 60, (m + 1) * 60, n1)), np.sort(rng.uniform(m * 60, (m + 1) * 60, n2))
        v1 = median_ms * cycle * np.exp(sigma * rng.standard_normal(n1))
        if episode is not None:
            v1 = np.where((t1 >= episode[0] * 60) & (t1 < episode[1] * 60), v1 * factor, v1)
        v2 = 30.0 * np.exp(0.3 * rng.standard_normal(n2))
        t = np.concatenate([t1, t2])
        o = np.argsort(t, kind="stable")
        pat = np.concatenate([np.full(n1, 21), np.full(n2, 22)]).astype(np.uint64)[o]
        n = len(t)
        unit = "s" if unit_s else unit
        written = {"s": "{:.4f}s", "ms": "{:.2f} ms", "us": "{:.0f}us"}[unit]
        scale = {"s": 1e-3, "ms": 1.0, "us": 1e3}[unit]
        body = ["op took " + written.format(v * scale) for v in v1] + \
            [f"GET / took {v:.2f} ms" for v in v2]
        d = _durations([body[i] for i in o.tolist()])
        out = eng.ingest(T0 + (t[o] * NS).astype(np.int64), np.full(n, svc), pat, np.full(n, 9, dtype=np.uint8),
                         d.line, d.ordinal.astype(np.int64), d.value, d.has_unit)
        found += out.findings
    return found


def _durations(bodies):
    from otelproc.batch import StringArray
    from otelproc.kernels.series import extract_durations

    sa = StringArray.from_pylist(bodies)
    return extract_durations(sa.buf, sa.off)


def _latency_findings(found, pattern=21):
    return [f for f in found if f.kind == FindingKind.VALUE_ANOMALY and f.pattern_id == pattern]


@pytest.mark.parametrize("rate,factor", [(0.5, 3.0), (0.8, 5.0), (1.0, 3.0)])
def test_low_rate_spike_is_found_within_two_minutes_as_critical(rate, factor):
    found = _run_engine(120, rate, episode=(90, 95), factor=factor, seed=int(rate * 10))
    hits = _latency_findings(found)
    assert hits, [(f.kind.value, f.pattern_id) for f in found]
    first = min(f.time_ns for f in hits)
    # bucket end within 2 min of the start
    assert T0 + 90 * 60 * NS <= first and first + 10 * NS <= T0 + (90 * 60 + 120) * NS
    assert any(f.severity == Severity.CRITICAL for f in hits)
    assert all(T0 + 90 * 60 * NS <= f.time_ns <= T0 + 96 * 60 * NS for f in hits)
    assert not [f for f in found if f.kind == FindingKind.VALUE_ANOMALY and f.pattern_id != 21]
    f = hits[0]
    assert f.labels["unit"] == "ms" and float(f.labels["ratio"]) > 2 and "latency" in f.description


def test_lower_latency_is_no_incident_unless_configured():
    assert _latency_findings(_run_engine(120, 0.8, episode=(80, 95), factor=0.3, seed=5)) == []
    found = _run_engine(120, 0.8, episode=(80, 95), factor=0.3, seed=5, params=EngineParams(latency_lower=True))
    hits = _latency_findings(found)
    assert hits and all(f.labels["direction"] == "down" and f.severity == Severity.WARNING for f in hits)


def test_rare_template_and_quiet_traffic_give_no_latency_finding():
    # a template seen ~6 times an hour, heavy tails, with a x5 hour among its handful of values
    found = _run_engine(240, 6 / 3600, sigma=1.0, episode=(120, 180), factor=5.0, seed=9)
    assert _latency_findings(found) == []
    # ordinary heavy-tailed traffic at 0.5-1 lines/s for 4 h: nothing
    for seed, rate in ((1, 0.5), (2, 1.0)):
        assert [f for f in _run_engine(240, rate, sigma=0.8, seed=seed) if f.kind == FindingKind.VALUE_ANOMALY] == []


def test_values_in_seconds_are_reported_in_ms():
    found = _run_engine(120, 0.8, median_ms=350.0, unit_s=True, episode=(90, 95), factor=4.0, seed=11)
    hits = _latency_findings(found)
    assert hits
    # the usual level is ~350 ms, not 0.35
    assert 200 < hits[0].expected < 600 and hits[0].observed > 2 * hits[0].expected


@pytest.mark.parametrize("rate,unit", [(0.5, "us"), (0.8, "s"), (0.5, "ms")])
def test_spike_on_a_load_following_heavy_tailed_template_is_found_in_any_unit(rate, unit):
    # latency and rate follow a +-30 % load cycle, log-normal sigma 0.8: a x3 spike for 5 min is found within
    # 2 min as critical, and the same traffic without it gives no finding
    kw = dict(sigma=0.8, load=0.3, unit=unit, seed=int(rate * 10) + len(unit))
    found = _run_engine(150, rate, episode=(120, 125), factor=3.0, **kw)
    hits = _latency_findings(found)
    assert hits and min(f.time_ns for f in hits) + 10 * NS <= T0 + (120 * 60 + 120) * NS
    assert any(f.severity == Severity.CRITICAL for f in hits)
    assert all(T0 + 120 * 60 * NS <= f.time_ns <= T0 + 126 * 60 * NS for f in hits)
    assert 100 < hits[0].expected < 400 and hits[0].labels["unit"] == "ms"
    assert _latency_findings(_run_engine(150, rate, **kw)) == []


def test_sparse_template_is_tested_on_its_last_values():
    # one value a minute (a handful in 5 min): once its baseline holds ~100 values (its memory is 200 values,
    # not 30 min), a x4 shift for 40 min is found on the template's last 16 values (when most of them are
    # shifted: ~20 min here); the same traffic without it gives nothing
    kw = dict(sigma=0.5, seed=4, busy_rate=1.0)
    found = _run_engine(5 * 60, 1 / 60, episode=(240, 280), factor=4.0, **kw)
    hits = _latency_findings(found)
    assert hits and all(T0 + 240 * 60 * NS <= f.time_ns <= T0 + 281 * 60 * NS for f in hits)
    assert min(f.time_ns for f in hits) <= T0 + 262 * 60 * NS
    assert int(hits[0].labels["values"]) == 16
    assert _latency_findings(_run_engine(5 * 60, 1 / 60, **kw)) == []
