"""Attribute explanation (otelproc/anomaly/explain.py, kernels/attr_sketch.py): kernels against slow
references, explanations of injected incidents, quiet traffic, the anomalies column, view and alerts."""
from __future__ import annotations

import numpy as np
import pytest

from otelproc.anomaly.explain import Explainer, ExplainParams
from otelproc.batch import AttrMap, LogBatch, concat_batches
from otelproc.findings import Finding, FindingKind, explanation_text
from otelproc.kernels import attr_sketch as ks
from otelproc.processors.anomaly import AnomalyProcessor, AnomalyProcessorConfig

T0 = 1_767_225_600 * 10**9
NS = 10**9


# ---------------------------------------------------------------- kernels vs slow references

def _fnv_ref(data: bytes, h: int = 0xCBF29CE484222325) -> int:
    for c in data:
        h = ((h ^ c) * 0x100000001B3) & (2**64 - 1)
    return h


def _finish_ref(h: int) -> int:
    m = 2**64 - 1
    h ^= h >> 30
    h = (h * 0xBF58476D1CE4E5B9) & m
    h ^= h >> 27
    h = (h * 0x94D049BB133111EB) & m
    h ^= h >> 31
    return h or 1


def test_hash_pairs_matches_the_reference_and_separates_key_from_value():
    attrs = AttrMap.from_pylist([{"a": "bc", "ab": "c", "k8s.pod.name": "pod-ü"}, {"": ""}])
    item, key = ks.hash_pairs(attrs.keys.buf, attrs.keys.off, attrs.values.buf, attrs.values.off)
    pairs = [("a", "bc"), ("ab", "c"), ("k8s.pod.name", "pod-ü"), ("", "")]
    for i, (k, v) in enumerate(pairs):
        hk = _fnv_ref(k.encode())
        assert int(key[i]) == _finish_ref(hk)
        assert int(item[i]) == _finish_ref(_fnv_ref(v.encode(), _fnv_ref(b"\xff", hk)))
    assert item[0] != item[1] and (item != 0).all()


def _space_saving_ref(stream, k):
    cells: dict[int, float] = {}
    for item, w in stream:
        if item in cells:
            cells[item] += w
        elif len(cells) < k:
            cells[item] = w
        else:
            low = min(cells, key=lambda x: cells[x])
            cells[item] = cells.pop(low) + w
    return cells


def test_sketch_add_and_merge_follow_space_saving():
    rng = np.random.default_rng(3)
    K = 8
    items = (rng.zipf(1.5, 3000) % 50 + 1).astype(np.uint64)
    weights = rng.integers(1, 4, 3000).astype(np.float64)
    ids, cnt = np.zeros((2, K), dtype=np.uint64), np.zeros((2, K))
    ks.sketch_add(ids, cnt, np.zeros(3000, dtype=np.int64), items, weights)
    ref = _space_saving_ref(zip(items.tolist(), weights.tolist()), K)
    got = {int(i): float(c) for i, c in zip(ids[0], cnt[0]) if i}
    assert sum(got.values()) == pytest.approx(weights.sum())
    # the same multiset of counts (ties may pick another cell than the reference) and the heavy hitters kept
    assert sorted(got.values()) == pytest.approx(sorted(ref.values()))
    true = {int(i): float(weights[items == i].sum()) for i in np.unique(items)}
    for i, c in true.items():
        if c > weights.sum() / K:
            assert i in got and got[i] >= c
    # merging row 0 into the empty row 1 copies it; merging again doubles it
    ks.sketch_merge(ids, cnt, np.array([1]), ids, cnt, np.array([0]))
    assert {int(i): float(c) for i, c in zip(ids[1], cnt[1]) if i} == got
    ks.sketch_merge(ids, cnt, np.array([1]), ids, cnt, np.array([0]))
    assert {int(i): float(c) for i, c in zip(ids[1], cnt[1]) if i} == {i: 2 * c for i, c in got.items()}


# ---------------------------------------------------------------- traffic with pods

PODS = 4


def traffic(start_s: int, seconds: int, rng, bad_pod: int | None = None, bad_ratio: float = 0.3,
            silent_pod: int | None = None, rate: float = 3.0) -> LogBatch:
    """One service 'checkout' on PODS pods (resource: pod, host, version), log attributes http.route and
    a unique request.id; pattern 11 (INFO), 13 (ERROR, 1 % background); ``bad_pod`` errs ``bad_ratio``."""
    parts = []
    for pod in range(PODS):
        if pod == silent_pod:
            continue
        n = rng.poisson(rate * seconds)
        t = np.sort(rng.integers(0, seconds * NS, n)) + T0 + start_s * NS
        err = rng.random(n) < (bad_ratio if pod == bad_pod else 0.01)
        routes = np.array(["/a", "/b", "/pay"])[rng.integers(0, 3, n)]
        recs = [dict(time_ns=int(t[i]), service="checkout", severity_number=17 if err[i] else 9, body="x",
                     attributes={"http.route": str(routes[i]), "request.id": f"{rng.integers(1 << 40):x}"})
                for i in range(n)]
        b = LogBatch.from_records(recs, resource={"service.name": "checkout", "k8s.pod.name": f"pod-{pod}",
                                                  "host.name": f"node-{pod}", "service.version": "1.2"})
        parts.append(b.with_columns(pattern_id=np.where(err, 13, 11).astype(np.uint64)))
    b = concat_batches(parts)
    return b.take(np.argsort(b.time_ns, kind="stable"))


class Sink:
    def __init__(self) -> None:
        self.findings: list[Finding] = []
        self.batches: list[LogBatch] = []

    def consume(self, batch: LogBatch) -> None:
        self.findings.extend(batch.findings)
        self.batches.append(batch)


def run(seconds: int, incident: dict | None = None, at: int = 2400, length: int = 300, seed: int = 1, **cfg):
    rng = np.random.default_rng(seed)
    sink = Sink()
    p = AnomalyProcessor("anomaly", AnomalyProcessorConfig(**{"warmup_s": 600.0, **cfg}), sink, None)
    p.start()
    for s in range(0, seconds, 5):
        on = incident if incident and at <= s < at + length else {}
        p.consume(traffic(s, 5, rng, **on))
    p.shutdown()
    return p, sink


@pytest.fixture(scope="module")
def pod_errors():
    return run(3000, {"bad_pod": 2})


def test_error_burst_on_one_pod_is_explained_by_the_pod_and_its_host(pod_errors):
    p, sink = pod_errors
    found = [f for f in sink.findings if f.kind in (FindingKind.ERROR_RATIO, FindingKind.SPIKE) and f.time_ns >= T0 + 2400 * NS]
    assert found, "the error burst was not detected"
    for f in found:
        top = f.explanation[0]
        assert (top["attribute"], top["value"]) == ("k8s.pod.name", "pod-2"), f.explanation
        assert top["also"] == ["host.name=node-2"]
        assert top["share"] > 0.8 and 0.15 < top["baseline_share"] < 0.35 and top["lift"] > 2.5
        assert top["log10_p"] <= -4
        # the constant version and the route (random) are not named
        assert all(e["attribute"] not in ("service.version", "http.route", "request.id") for e in f.explanation)
    # the pattern's spike is explained from its own lines; the error ratio from the service's errors
    pops = {f.kind: f.explanation[0]["population"] for f in found}
    assert pops.get(FindingKind.ERROR_RATIO, "errors") == "errors"
    assert pops.get(FindingKind.SPIKE, "pattern errors") == "pattern errors"
    # request.id has a new value on every line: never an item
    assert len(p.explainer.excluded_keys) == 1
    assert all(k != "request.id" for k, _ in p.explainer.names.values())
    text = explanation_text(found[0].explanation)
    assert text.startswith("k8s.pod.name=pod-2 (also host.name=node-2): ") and "% of" in text


def test_incident_free_windows_have_no_significant_value():
    """Every bucket of quiet traffic, explained as if it were an error-ratio / spike / drop finding."""
    rng = np.random.default_rng(5)
    e = Explainer(ExplainParams(slot_s=10.0, horizon_s=40.0))
    hits = tested = 0
    for s in range(0, 3600, 5):
        b = traffic(s, 5, rng)
        e.add(b.event_ns, np.zeros(len(b), dtype=np.int64), b.columns["pattern_id"], b.severity_number,
              b.resource_index, b.resource_attrs, b.log_attrs)
        if s >= 600 and s % 10 == 5:
            t = T0 + (s - 5) * NS
            for kind in (FindingKind.ERROR_RATIO, FindingKind.SPIKE, FindingKind.DROP):
                hits += len(e.explain(Finding(time_ns=t, kind=kind, service="checkout", score=1.0), 0))
                tested += 1
        e.advance()
    assert tested > 800 and hits == 0


def test_a_silent_pod_explains_a_drop():
    rng = np.random.default_rng(2)
    e = Explainer(ExplainParams(slot_s=10.0, horizon_s=40.0))
    for s in range(0, 1500, 5):
        b = traffic(s, 5, rng, silent_pod=1 if s >= 1200 else None, rate=10.0)
        e.add(b.event_ns, np.zeros(len(b), dtype=np.int64), b.columns["pattern_id"], b.severity_number,
              b.resource_index, b.resource_attrs, b.log_attrs)
        if s == 1260:
            out = e.explain(Finding(time_ns=T0 + 1250 * NS, kind=FindingKind.DROP, service="checkout", score=1.0),
                            0)
        e.advance()
    assert (out[0]["attribute"], out[0]["value"], out[0]["share"]) == ("k8s.pod.name", "pod-1", 0.0)
    assert out[0]["baseline_share"] > 0.2 and out[0]["lift"] < 0.1


def test_memory_is_bounded_and_late_records_are_counted():
    rng = np.random.default_rng(0)
    e = Explainer(ExplainParams(slot_s=10.0, horizon_s=40.0, slots=8))
    for s in range(0, 600, 5):
        b = traffic(s, 5, rng)
        e.add(b.event_ns, np.zeros(len(b), dtype=np.int64), b.columns["pattern_id"], b.severity_number,
              b.resource_index, b.resource_attrs, b.log_attrs)
        e.advance()
    size = e.memory_bytes()
    b = traffic(0, 5, rng)  # ten minutes late: its buckets are in the baseline already
    e.add(b.event_ns, np.zeros(len(b), dtype=np.int64), b.columns["pattern_id"], b.severity_number,
          b.resource_index, b.resource_attrs, b.log_attrs)
    assert e.late_records == len(b) and e.memory_bytes() == size
    # one service: 8 slots x 2 populations x 64 cells + 2 x 128 baseline cells, 16 bytes each, + totals
    assert size == (8 * 2 * 64 + 2 * 128) * 16 + (8 * 2 + 2) * 8


def test_explanation_is_stored_shown_by_the_view_and_in_alert_annotations(chdb_path, chdb_database):
    from otelproc import views
    from otelproc.alerting.engine import AlertEngine
    from otelproc.alerting.rules import load_alerts_file
    from otelproc import defaults
    from otelproc.exporters.clickhouse import ClickHouseExporter, ClickHouseExporterConfig
    from otelproc.store import open_store

    exporter = ClickHouseExporter("clickhouse", ClickHouseExporterConfig(endpoint=f"chdb://{chdb_path}",
                                                                         database=chdb_database), None)
    exporter.start()
    rng = np.random.default_rng(1)
    p = AnomalyProcessor("anomaly", AnomalyProcessorConfig(warmup_s=600.0), exporter, None)
    p.start()
    findings = []
    for s in range(0, 2700, 5):
        b = traffic(s, 5, rng, **({"bad_pod": 2} if s >= 2400 else {}))
        out = p._process(b)
        findings += out.findings
        if "anomalies" in out.tables:  # the anomalies rows only (the log rows are not what is tested)
            exporter.consume(LogBatch.empty().with_table("anomalies", out.tables["anomalies"]))
    p.shutdown()
    exporter.shutdown()
    store = open_store(f"chdb://{chdb_path}", chdb_database)
    try:
        rows = store.query_rows(
            f"SELECT Kind, tupleElement(Explanation[1], 'Attribute'), tupleElement(Explanation[1], 'Value'), "
            f"tupleElement(Explanation[1], 'Also'), tupleElement(Explanation[1], 'Share') FROM {chdb_database}.anomalies "
            f"WHERE Kind = 'error_ratio'")
        assert rows and all(r[1:4] == ("k8s.pod.name", "pod-2", ["host.name=node-2"]) and r[4] > 0.8 for r in rows)
        shown = views.anomalies(store, kind="error_ratio")
        text = dict(zip(shown.column_names, shown[0]))["explanation"]
        assert text.startswith("k8s.pod.name=pod-2 ") and "% vs " in text and "(x" in text
    finally:
        store.close()
    engine = AlertEngine(load_alerts_file(str(defaults.ALERT_RULES)), integrations={"default": [], "oncall": []})
    f = next(f for f in findings if f.kind == FindingKind.ERROR_RATIO)
    rule = next(r for r in engine.finding_rules if r.matches_finding(f))
    alert = engine._make_alert(rule, f, 0.0, 0.0)
    assert alert.annotations["explanation"].startswith("k8s.pod.name=pod-2 (also host.name=node-2): ")
    assert "explanation" not in alert.labels  # not part of the alert's identity


def test_old_anomalies_table_gains_the_explanation_column(chdb_path, chdb_database):
    from otelproc.store import open_store
    from otelproc.store.schema import SchemaOptions, ensure_schema

    store = open_store(f"chdb://{chdb_path}", chdb_database)
    try:
        store.command(f"CREATE TABLE {chdb_database}.anomalies (Timestamp DateTime64(9), ServiceName String, "
                      f"Kind String, Description String) ENGINE = MergeTree ORDER BY Timestamp")
        store.command(f"INSERT INTO {chdb_database}.anomalies (Timestamp, ServiceName, Kind, Description) "
                      f"VALUES (now(), 'a', 'spike', 'old row')")
        ensure_schema(store, SchemaOptions(database=chdb_database))
        assert store.query_rows(f"SELECT Description, length(Explanation) FROM {chdb_database}.anomalies") == \
            [("old row", 0)]
    finally:
        store.close()
