"""Incidents across services (otelproc/anomaly/incidents.py): grouping, origin by onset and call
direction, the call graph from peer attributes and trace ids, and the incidents table / view."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from otelproc.anomaly.incidents import CallGraph, Correlator
from otelproc.batch import AttrMap
from otelproc.findings import Finding, FindingKind, Severity

NS = 10**9
T0 = 1_767_225_600 * NS


def _calls(graph: CallGraph, caller: str, attrs: dict, n: int = 5) -> None:
    services = [caller]
    graph.add(services, np.zeros(n, dtype=np.int32), AttrMap.from_pylist([attrs] * n),
              np.zeros((n, 16), dtype=np.uint8), np.zeros(n, dtype=np.int64))


def test_call_graph_from_peer_attributes_and_shared_traces():
    g = CallGraph()
    g.names.update(["frontend", "checkout", "payment"])
    _calls(g, "checkout", {"peer.service": "payment"})
    _calls(g, "frontend", {"url.full": "http://checkout.shop.svc:8080/api/cart?x=1"})
    _calls(g, "frontend", {"server.address": "unknown-host"})
    assert g.calls("checkout", "payment") and not g.calls("payment", "checkout")
    assert g.calls("frontend", "checkout") and g.linked("checkout", "frontend")
    assert not g.knows("unknown-host")
    # traces: auth logs first, then ledger, in four traces -> auth calls ledger
    g2 = CallGraph()
    tid = np.zeros((8, 16), dtype=np.uint8)
    tid[:, 0] = np.repeat(np.arange(1, 5), 2)
    svc = np.array([0, 1] * 4, dtype=np.int32)
    t = np.arange(8, dtype=np.int64)
    g2.add(["auth", "ledger"], svc, AttrMap.empty(8), tid, t)
    assert g2.calls("auth", "ledger") and not g2.calls("ledger", "auth")


def _finding(svc: str, t_s: float, sev=Severity.CRITICAL, kind=FindingKind.ERROR_RATIO) -> Finding:
    return Finding(time_ns=T0 + int(t_s * NS), kind=kind, service=svc, score=1.0, severity=sev)


def test_cascade_is_one_incident_with_the_callee_as_origin():
    g = CallGraph()
    g.names.update(["frontend", "checkout", "payment", "search"])
    _calls(g, "frontend", {"peer.service": "checkout"})
    _calls(g, "checkout", {"peer.service": "payment"})
    _calls(g, "frontend", {"peer.service": "search"})
    c = Correlator(gap_s=900, graph=g)
    # the caller's error ratio is seen first (a 10 s bucket) though payment's 60 s bucket started earlier
    ids = [c.incident_of(_finding("checkout", 40), "checkout@a"),
           c.incident_of(_finding("payment", 0, kind=FindingKind.SPIKE), "payment@b"),
           c.incident_of(_finding("frontend", 90), "frontend@c"),
           c.incident_of(_finding("frontend", 95, sev=Severity.INFO), "frontend@c")]
    assert ids == ["checkout@a"] * 4
    (row_id,), = [c.take_rows()["incident"]]
    inc = c.incidents["checkout@a"]
    assert inc.origin == "payment" and inc.chain == ["payment", "checkout", "frontend"]
    assert "called by checkout" in inc.origin_reason
    # an info finding alone never joins; a linked service long after is a new incident
    assert c.incident_of(_finding("search", 100, sev=Severity.INFO), "search@d") == "search@d"
    assert c.incident_of(_finding("search", 5000), "search@e") == "search@e"


def test_unlinked_service_at_the_same_time_is_another_incident():
    g = CallGraph()
    g.names.update(["a", "b", "c", "d"])
    _calls(g, "a", {"peer.service": "b"})
    _calls(g, "c", {"peer.service": "d"})
    corr = Correlator(graph=g)
    assert corr.incident_of(_finding("a", 0), "a@1") == "a@1"
    assert corr.incident_of(_finding("c", 10), "c@1") == "c@1"  # known to the graph, not linked to a
    assert corr.incident_of(_finding("b", 20), "b@1") == "a@1"
    # a service the graph knows nothing about joins by time alone: the incident active last (b, at 20 s)
    assert corr.incident_of(_finding("zeta", 30), "zeta@1") == "a@1"
    # ... but not an incident that started long before (a creep must not absorb every later failure)
    corr.incident_of(_finding("a", 800), "a@1")
    assert corr.incident_of(_finding("omega", 850), "omega@1") == "omega@1"


def test_cascade_through_the_processors_gives_one_incident_stored_and_shown(chdb_path, chdb_database, capsys):
    """Simulated cascade (otelproc/simulate/cascade.py) through the patterns and anomaly processors into chDB:
    the origin's and its callers' findings share one incident id, the incidents table and `otelproc
    incidents` name the origin first in the chain."""
    from otelproc import cli, views
    from otelproc.batch import LogBatch
    from otelproc.exporters.clickhouse import ClickHouseExporter, ClickHouseExporterConfig
    from otelproc.processors.anomaly import AnomalyProcessor, AnomalyProcessorConfig
    from otelproc.processors.patterns import PatternsProcessor, PatternsProcessorConfig
    from otelproc.simulate.cascade import Cascade, simulate_cascade, topology
    from otelproc.store import open_store

    class Tables:
        def __init__(self, exporter):
            self.exporter, self.findings = exporter, []

        def consume(self, batch):
            self.findings += batch.findings
            derived = {k: v for k, v in batch.tables.items() if k in ("anomalies", "incidents")}
            if derived:
                out = LogBatch.empty()
                for k, v in derived.items():
                    out = out.with_table(k, v)
                self.exporter.consume(out)

    rng = np.random.default_rng(3)
    topo = topology(rng, n_services=4)
    origin = next(s for s in range(1, 4) if topo.callees[s] == [] and s in topo.callees[0] + topo.callees[1])
    pod = topo.pod_attrs[origin][0]["k8s.pod.name"]
    cascade = Cascade(origin, "k8s.pod.name", pod, start_s=2400.0, end_s=3300.0, fail_ratio=0.8, lag_s=60.0)
    exporter = ClickHouseExporter("clickhouse", ClickHouseExporterConfig(endpoint=f"chdb://{chdb_path}",
                                                                         database=chdb_database), None)
    exporter.start()
    sink = Tables(exporter)
    an = AnomalyProcessor("anomaly", AnomalyProcessorConfig(warmup_s=1200.0), sink, None)
    pp = PatternsProcessor("patterns", PatternsProcessorConfig(), an, None)
    an.start()
    pp.start()
    for b in simulate_cascade(topo, 3, 3300.0, int(__import__("time").time() - 4000) * NS, cascade):
        pp.consume(b)
    pp.shutdown()
    an.shutdown()
    exporter.shutdown()
    alertable = [f for f in sink.findings if f.severity != Severity.INFO]
    callers = {s for s in topo.depth_from(origin)}
    assert {f.service for f in alertable} >= {topo.services[origin]}
    incident = {f.labels["incident"] for f in alertable if f.service == topo.services[origin]}
    assert len(incident) == 1
    (inc_id,) = incident
    others = {f.service for f in alertable if f.labels["incident"] == inc_id}
    assert len(others) >= 2 and others <= {topo.services[s] for s in callers}
    first_origin = next(f for f in alertable if f.service == topo.services[origin] and f.explanation)
    assert any(e["value"] == pod or f"k8s.pod.name={pod}" in e["also"] for e in first_origin.explanation[:3])
    store = open_store(f"chdb://{chdb_path}", chdb_database)
    try:
        rows = views.incidents(store)
        got = {r[0]: dict(zip(rows.column_names, r)) for r in rows}
        assert got[inc_id]["origin"] == topo.services[origin]
        assert got[inc_id]["chain"].startswith(topo.services[origin] + " (") and got[inc_id]["services"] >= 2
    finally:
        store.close()
    cfg = Path(str(chdb_path)).parent / "incidents.yaml"
    cfg.write_text(f"""
receivers: {{otlp: {{protocols: {{http: {{endpoint: 127.0.0.1:0}}}}}}}}
exporters: {{clickhouse: {{endpoint: "chdb://{chdb_path}", database: {chdb_database}}}}}
service: {{pipelines: {{logs: {{receivers: [otlp], exporters: [clickhouse]}}}}}}
""")
    assert cli.main(["incidents", "--config", str(cfg), "--service", topo.services[origin], "--format", "json"]) == 0
    shown = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert inc_id in {r["incident"] for r in shown} and all("origin" in r and "why" in r for r in shown)
