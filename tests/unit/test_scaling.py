"""Scale-out: cluster DDL (Replicated + Distributed, parsed by ClickHouse) and pattern ids that
agree across otelproc instances because they derive from (service, template)."""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from otelproc.batch import LogBatch
from otelproc.component import Context
from otelproc.encode import encode_protobuf
from otelproc.patterns.miner import pattern_id
from otelproc.processors.patterns import PatternsProcessorConfig, factory
from otelproc.store.embedded import EmbeddedStore
from otelproc.store.schema import LOCAL_SUFFIX, SchemaOptions, schema_statements, table_files
from otelproc.telemetry import Telemetry

REPO = Path(__file__).resolve().parents[2]
CLUSTER = "otel_cluster"


def _literal(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n") + "'"


def test_cluster_ddl_is_replicated_distributed_and_parses(chdb_path, chdb_database):
    store = EmbeddedStore(chdb_path, chdb_database)
    try:
        stmts = schema_statements(SchemaOptions(database="otel", cluster=CLUSTER, ttl=72 * 3600))
        templates = set(table_files())
        assert {t for t, _ in stmts} == templates
        for template, stmt in stmts:
            # ClickHouse's own parser: formatQuery fails on anything it cannot parse
            formatted = store.query_rows(f"SELECT formatQuery({_literal(stmt)})")[0][0]
            assert f"ON CLUSTER {CLUSTER}" in formatted, stmt
            ast = "\n".join(r[0] for r in store.query_rows("EXPLAIN AST " + stmt))
            assert "CreateQuery" in ast
        for template in templates:
            ddl = [s for t, s in stmts if t == template]
            local, dist = ddl[-2], ddl[-1]
            assert f"`otel`.`{template}{LOCAL_SUFFIX}`" in local and "ENGINE = Replicated" in local
            assert "/clickhouse/tables/{shard}/{database}/{table}" in local
            assert dist.startswith(f"CREATE TABLE IF NOT EXISTS `otel`.`{template}` ON CLUSTER `{CLUSTER}` "
                                   f"AS `otel`.`{template}{LOCAL_SUFFIX}`")
            assert f"Distributed('{CLUSTER}', 'otel', '{template}{LOCAL_SUFFIX}', cityHash64(ServiceName))" in dist
    finally:
        store.close()


def test_single_node_ddl_is_unchanged_and_runs(chdb_path, chdb_database):
    stmts = schema_statements(SchemaOptions(database=chdb_database))
    assert all("ON CLUSTER" not in s and "Distributed" not in s and "Replicated" not in s for _, s in stmts)
    store = EmbeddedStore(chdb_path, chdb_database)
    try:
        for _, s in stmts:
            store.command(s)
        names = {r[0] for r in store.query_rows("SELECT name FROM system.tables WHERE database = {d:String}",
                                                {"d": chdb_database})}
        assert set(table_files()) <= names
    finally:
        store.close()


def test_bad_cluster_name_is_refused():
    with pytest.raises(ValueError, match="cluster name"):
        schema_statements(SchemaOptions(cluster="a b; DROP"))


LINES = ["GET /api/v1/orders/{} 200 {}ms", "user u{} logged in from 10.0.{}.7", "worker {} finished job in {} ms",
         "Connection to db-{}.internal:5432 timed out after {} ms", "cache miss for key session:{}{}"]


def _records(seed: int, n: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        svc = ["api", "db", "web"][i % 3]
        out.append({"time_ns": 1_700_000_000_000_000_000 + i, "severity_number": 9, "service": svc,
                    "body": LINES[int(rng.integers(len(LINES)))].format(int(rng.integers(1000)), int(rng.integers(99)))})
    return out


def _pairs(proc_batches) -> set[tuple[str, int, str]]:
    out = set()
    for b in proc_batches:
        ids, tpl = b.columns["pattern_id"], b.columns["pattern_template"]
        for i in range(len(b)):
            out.add((b.services[b.service_index[i]], int(ids[i]), tpl[i]))
    return out


class _Sink:
    def __init__(self):
        self.batches = []

    def consume(self, batch):
        self.batches.append(batch)


def test_pattern_ids_agree_across_instances_fed_differently(tmp_path):
    """Two instances, same lines, different batching and order: same id for the same template."""
    recs = _records(1, 600)
    results = []
    for k, (order, size) in enumerate([(recs, 600), (recs[::-1], 37)]):
        sink = _Sink()
        proc = factory.create("patterns", PatternsProcessorConfig(), sink, Context(telemetry=Telemetry()))
        proc.start()
        for a in range(0, len(order), size):
            proc.consume(LogBatch.from_records(order[a:a + size]))
        proc.shutdown()
        results.append(_pairs(sink.batches))
        # the id is the one of the mined template (masked words as <*>); the template shown may show a
        # masked word that its lines never changed, so it is the mined one or a refinement of it
        m = proc.miner
        mined = {pattern_id(m.service_of(s), m.template_mined(s)): m.template_mined(s) for s in range(len(m.p_tokens))}
        for svc, pid, tpl in results[-1]:
            assert pid in mined and pid == pattern_id(svc, mined[pid])
            assert re.fullmatch(".*".join(map(re.escape, mined[pid].split("<*>"))), tpl, re.S)
    by_tpl = [{(s, t): p for s, p, t in r} for r in results]
    common = set(by_tpl[0]) & set(by_tpl[1])
    assert common, "the two instances found no template in common"
    assert all(by_tpl[0][k] == by_tpl[1][k] for k in common)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_serve_processes_write_the_same_pattern_ids(tmp_path):
    """Two `otelproc serve` processes (own ports, own embedded stores) fed the same requests."""
    payloads = [encode_protobuf(LogBatch.from_records(_records(seed, 300))) for seed in range(4)]
    env = {**os.environ, "NUMBA_CACHE_DIR": str(REPO / ".numba_cache")}
    results = []
    for inst in range(2):
        d = tmp_path / f"inst{inst}"
        d.mkdir()
        port = _free_port()
        cfg = d / "cfg.yaml"
        cfg.write_text(f"""
receivers:
  otlp: {{protocols: {{http: {{endpoint: "127.0.0.1:{port}"}}}}}}
processors:
  patterns: {{}}
  batch: {{send_batch_size: 1000, timeout: 200ms}}
exporters:
  clickhouse: {{endpoint: "chdb://{d / 'data'}", database: otel, ttl: 0s}}
service:
  telemetry: {{logs: {{level: warn}}}}
  pipelines:
    logs: {{receivers: [otlp], processors: [patterns, batch], exporters: [clickhouse]}}
""")
        ready = d / "ready.json"
        proc = subprocess.Popen([sys.executable, "-m", "otelproc", "serve", "--config", str(cfg), "--ready-file",
                                 str(ready)], env=env, cwd=d, stderr=open(d / "server.log", "w"))
        try:
            deadline = time.monotonic() + 600  # the first serve after a kernel change compiles them first
            while not ready.exists():
                assert proc.poll() is None, (d / "server.log").read_text()
                assert time.monotonic() < deadline, "otelproc serve did not become ready"
                time.sleep(0.1)
            order = payloads if inst == 0 else payloads[::-1]
            for p in order:
                req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/logs", data=p,
                                             headers={"Content-Type": "application/x-protobuf"})
                assert urllib.request.urlopen(req, timeout=30).status == 200
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(120)
        out = subprocess.run([sys.executable, "-m", "otelproc", "sql",
                              "SELECT DISTINCT ServiceName, PatternId, PatternTemplate FROM otel.otel_logs",
                              "--config", str(cfg), "--format", "json"], capture_output=True, text=True, env=env, cwd=d)
        assert out.returncode == 0, out.stderr
        rows = [json.loads(line) for line in out.stdout.splitlines() if line.strip()]
        assert sum(1 for _ in rows) > 0
        results.append({(r["ServiceName"], r["PatternTemplate"]): int(r["PatternId"]) for r in rows})
    common = set(results[0]) & set(results[1])
    assert common
    assert all(results[0][k] == results[1][k] for k in common)
    # the id is the one of the mined template (masked words as <*>); the template shown refines it
    sink = _Sink()
    proc = factory.create("patterns", PatternsProcessorConfig(), sink, Context(telemetry=Telemetry()))
    proc.start()
    for seed in range(4):
        proc.consume(LogBatch.from_records(_records(seed, 300)))
    proc.shutdown()
    m = proc.miner
    mined = {pattern_id(m.service_of(s), m.template_mined(s)): m.template_mined(s) for s in range(len(m.p_tokens))}
    for (svc, tpl), pid in results[0].items():
        assert pid in mined and pid == pattern_id(svc, mined[pid])
        assert re.fullmatch(".*".join(map(re.escape, mined[pid].split("<*>"))), tpl, re.S)


def test_shipped_scale_out_configs():
    import yaml

    from otelproc.config import load_config

    cfg = load_config(REPO / "config" / "scale-out" / "otelproc-cluster.yaml")
    exporter = cfg.exporters["clickhouse"]
    assert exporter.cluster_name == "otel_cluster" and exporter.scheme() == "http"
    assert cfg.service.pipelines["logs"].processors == ["batch", "patterns", "anomaly", "alerting"]
    col = yaml.safe_load((REPO / "config" / "scale-out" / "collector-loadbalancing.yaml").read_text())
    lb = col["exporters"]["loadbalancing"]
    assert lb["routing_key"] == "service"
    assert all(h.endswith(":4317") for h in lb["resolver"]["static"]["hostnames"])
    assert col["service"]["pipelines"]["logs"]["exporters"] == ["loadbalancing"]
    xml = (REPO / "config" / "scale-out" / "clickhouse-cluster.xml").read_text()
    assert f"<{CLUSTER}>" in xml and "<macros>" in xml
