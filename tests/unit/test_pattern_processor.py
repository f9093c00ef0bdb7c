"""The patterns processor: columns, tables (checked by SQL in chDB through the clickhouse exporter), findings."""
from __future__ import annotations

import numpy as np
import pytest

from otelproc.batch import LogBatch
from otelproc.component import Context
from otelproc.config import ConfigError, parse_config
from otelproc.processors.patterns import PatternsProcessorConfig, factory
from otelproc.store.arrow import params_to_pylist
from otelproc.telemetry import Telemetry

T0 = 1_700_000_000_000_000_000


class Sink:
    def __init__(self):
        self.batches = []

    def consume(self, batch):
        self.batches.append(batch)


def records(n_offset=0):
    out = []
    for i in range(6):
        out.append({"time_ns": T0 + i * 1_000_000_000, "severity_number": 9, "service": "api",
                    "body": f"GET /users/{100 + i} took {i + 3} ms"})
        out.append({"time_ns": T0 + i * 1_000_000_000, "severity_number": 17, "service": "db",
                    "body": f"connection from 10.0.0.{i} refused"})
    out.append({"time_ns": T0 + 61_000_000_000, "severity_number": 13, "service": "api",
                "body": "cache miss ratio 0.25"})
    return out


def make(tmp_path, **kw):
    sink = Sink()
    cfg = PatternsProcessorConfig(state_dir=str(tmp_path / "state"), **kw)
    proc = factory.create("patterns", cfg, sink, Context(telemetry=Telemetry()))
    return proc, sink


def test_columns_tables_and_restart(tmp_path):
    proc, sink = make(tmp_path)
    proc.shutdown()  # safe without start
    proc.start()
    batch = LogBatch.from_records(records())
    proc.consume(batch)
    out = sink.batches[0]
    n = len(batch)
    ids = out.columns["pattern_id"]
    assert ids.dtype == np.uint64 and len(ids) == n and (ids != 0).all()
    tmpl = out.columns["pattern_template"].to_pylist()
    assert tmpl[0] == "GET <*> took <*> ms" and tmpl[1] == "connection from <*> refused"
    params = params_to_pylist(out.columns["pattern_params"])
    assert params[0] == ["/users/100", "3"] and params[1] == ["10.0.0.0"]
    lp = out.tables["log_patterns"].to_pylist()
    assert sorted((r["ServiceName"], r["Count"]) for r in lp) == [("api", 1), ("api", 6), ("db", 6)]
    pc = out.tables["pattern_counts"].to_pylist()
    assert sum(r["Count"] for r in pc) == n and len(pc) == 3
    assert out.findings == []  # still in warm-up
    proc.shutdown()
    # restart from the saved state: the same ids
    proc2, sink2 = make(tmp_path)
    proc2.start()
    proc2.consume(LogBatch.from_records(records()))
    assert (sink2.batches[0].columns["pattern_id"] == ids).all()
    proc2.shutdown()


def test_no_findings_new_patterns_belong_to_the_anomaly_processor(tmp_path):
    proc, sink = make(tmp_path)
    proc.start()
    proc.consume(LogBatch.from_records(records()))
    proc.consume(LogBatch.from_records(records()[:3] + [{"time_ns": T0, "service": "api", "body": "brand new line"}]))
    assert len(sink.batches[1].tables["log_patterns"]) >= 1
    assert all(b.findings == [] for b in sink.batches)
    proc.shutdown()


def test_config_validation():
    errors = PatternsProcessorConfig(similarity=0, max_patterns_per_service=0).validate()
    assert any(e.startswith("similarity:") for e in errors)
    assert any(e.startswith("max_patterns_per_service:") for e in errors)
    with pytest.raises(ConfigError, match="processors::patterns::similarity"):
        parse_config("""
receivers: {otlp: {}}
processors: {patterns: {similarity: 1.5}}
exporters: {debug: {}}
service: {pipelines: {logs: {receivers: [otlp], processors: [patterns], exporters: [debug]}}}
""")


def test_processor_to_chdb_tables(tmp_path, chdb_path, chdb_database):
    ch = pytest.importorskip("otelproc.exporters.clickhouse")
    exporter = ch.factory.create("clickhouse", ch.ClickHouseExporterConfig(endpoint=f"chdb://{chdb_path}",
                                                                         database=chdb_database), None, None)
    proc, _ = make(tmp_path)
    proc.next_consumer = exporter
    exporter.start()
    proc.start()
    try:
        proc.consume(LogBatch.from_records(records()))
        proc.consume(LogBatch.from_records(records()))
        store = exporter._store
        rows = store.query_rows(
            "SELECT ServiceName, PatternTemplate, count(), uniq(PatternId), any(PatternParams) FROM otel_logs "
            "GROUP BY ServiceName, PatternTemplate ORDER BY ServiceName, PatternTemplate")
        assert [(r[0], r[1], r[2], r[3]) for r in rows] == [
            ("api", "GET <*> took <*> ms", 12, 1), ("api", "cache miss ratio <*>", 2, 1),
            ("db", "connection from <*> refused", 12, 1)]
        lp = store.query_rows(
            "SELECT ServiceName, any(Template), sum(Count), min(FirstSeen), sum(CountError) FROM log_patterns "
            "GROUP BY ServiceName, PatternId ORDER BY ServiceName, sum(Count)")
        assert [(r[0], r[1], r[2], r[4]) for r in lp] == [
            ("api", "cache miss ratio <*>", 2, 0), ("api", "GET <*> took <*> ms", 12, 0),
            ("db", "connection from <*> refused", 12, 12)]
        pc = store.query_rows("SELECT ServiceName, sum(Count) FROM pattern_counts GROUP BY ServiceName ORDER BY 1")
        assert [tuple(r) for r in pc] == [("api", 14), ("db", 12)]
        joined = store.query_rows(
            "SELECT count() FROM otel_logs l INNER JOIN (SELECT PatternId FROM log_patterns GROUP BY PatternId) p "
            "ON l.PatternId = p.PatternId")
        assert joined[0][0] == 26
    finally:
        proc.shutdown()
        exporter.shutdown()


def test_template_column_is_a_dictionary_down_to_the_arrow_table(tmp_path):
    import pyarrow as pa

    from otelproc.batch import DictStringArray
    from otelproc.store.arrow import logs_to_arrow

    proc, sink = make(tmp_path)
    proc.start()
    proc.consume(LogBatch.from_records(records()))
    out = sink.batches[0]
    col = out.columns["pattern_template"]
    assert isinstance(col, DictStringArray) and col.distinct
    # the dictionary is the miner's distinct templates, the codes index it
    dictionary, code_of_slot = proc.miner.template_dictionary()
    assert col.dictionary is dictionary and len(set(dictionary.to_pylist())) == len(dictionary)
    assert col.to_pylist()[:3] == ["GET <*> took <*> ms", "connection from <*> refused", "GET <*> took <*> ms"]
    arrow_col = logs_to_arrow(out).column("PatternTemplate")
    assert pa.types.is_dictionary(arrow_col.type) and arrow_col.to_pylist() == col.to_pylist()
    assert sorted(arrow_col.chunk(0).dictionary.to_pylist()) == sorted(set(col.to_pylist()))


def test_pattern_counts_same_rows_by_bincount_sort_and_lexsort(tmp_path, monkeypatch):
    """The three grouping paths of pattern_counts give the same rows, in (minute, service, id, severity) order."""
    from otelproc.processors import patterns as patterns_mod

    recs = []
    for i in range(300):
        recs.append({"time_ns": T0 + (i % 7) * 61_000_000_000 + i, "severity_number": (9, 13, 17)[i % 3],
                     "service": ("api", "db", "web")[i % 3 if i % 5 else 0],
                     "body": (f"GET /u/{i} took {i} ms", f"conn from 10.0.0.{i % 250} refused", "cache miss")[i % 3]})
    recs.append({"time_ns": 0, "observed_ns": 0, "severity_number": 0, "service": "api", "body": "cache miss"})
    results = []
    for limit, spread in ((2**62, False), (2**62, True), (10, False)):
        if spread:  # a record years away: key range too large for bincount, sorted instead
            recs[-1] = {**recs[-1], "time_ns": T0 - 10**17}
        monkeypatch.setattr(patterns_mod, "_MAX_KEY_RANGE", limit)
        proc, sink = make(tmp_path / f"{limit}-{spread}")
        proc.start()
        proc.consume(LogBatch.from_records(recs))
        rows = sink.batches[0].tables["pattern_counts"].to_pylist()
        keys = [(r["Minute"], r["ServiceName"], r["PatternId"], r["SeverityNumber"]) for r in rows]
        assert keys == sorted(keys) and len(set(keys)) == len(keys)
        assert sum(r["Count"] for r in rows) == len(recs)
        results.append(rows)
    assert results[0][1:] == results[1][1:] == results[2][1:]  # only the moved record's minute differs
    assert results[1] == results[2]


def test_shared_templates_reach_chdb_as_lowcardinality(tmp_path, chdb_path, chdb_database):
    """Two services with the same template (two slots, one text): the Arrow dictionary sent for
    PatternTemplate must hold each value once, or chDB refuses the insert."""
    ch = pytest.importorskip("otelproc.exporters.clickhouse")
    exporter = ch.factory.create("clickhouse", ch.ClickHouseExporterConfig(endpoint=f"chdb://{chdb_path}",
                                                                         database=chdb_database), None, None)
    proc, _ = make(tmp_path)
    proc.next_consumer = exporter
    exporter.start()
    proc.start()
    try:
        recs = [{"time_ns": T0 + i, "severity_number": 9, "service": svc, "body": f"GET /users/{i} took {i} ms"}
                for i in range(4) for svc in ("api", "web")]
        proc.consume(LogBatch.from_records(recs))
        out = proc.process(LogBatch.from_records(recs))
        col = out.columns["pattern_template"]
        # two patterns (one per service), one text: one dictionary entry
        assert len(set(out.columns["pattern_id"].tolist())) == 2 and set(col.codes.tolist()) == {0}
        assert col.to_pylist() == ["GET <*> took <*> ms"] * len(recs)
        proc.consume(LogBatch.from_records([{"time_ns": T0, "service": "api", "body": "cache miss"}] + recs[:2]))
        rows = exporter._store.query_rows(
            "SELECT ServiceName, PatternTemplate, count() FROM otel_logs GROUP BY 1, 2 ORDER BY 1, 2")
        assert [tuple(r) for r in rows] == [("api", "GET <*> took <*> ms", 5), ("api", "cache miss", 1),
                                            ("web", "GET <*> took <*> ms", 5)]
    finally:
        proc.shutdown()
        exporter.shutdown()


_RULES_CONFIG = """
receivers: {otlp: {protocols: {http: {endpoint: "127.0.0.1:0"}}}}
processors:
  patterns:
    masking:
      - {regex: 'order-[0-9a-f]{8}', name: ORDER}
    pinned_templates: ["payment <*> declined: <*>"]
exporters: {debug: {}}
service: {pipelines: {logs: {receivers: [otlp], processors: [patterns], exporters: [debug]}}}
"""


def test_user_rules_are_validated_with_their_key_paths():
    bad = (_RULES_CONFIG.replace("'order-[0-9a-f]{8}'", "'order-[0-9a-f'").replace("name: ORDER", "name: 'OR DER'")
           .replace('["payment <*> declined: <*>"]', '["x <*>", "", "x <*>"]'))
    with pytest.raises(ConfigError) as e:
        parse_config(bad)
    text = "\n".join(e.value.errors)
    assert "processors::patterns::masking[0]::regex: not a valid regular expression" in text
    assert "processors::patterns::masking[0]::name: letters, digits and '_' only" in text
    assert "processors::patterns::pinned_templates[1]: must be a non-empty template" in text
    assert "processors::patterns::pinned_templates[2]: 'x <*>' is listed twice" in text
    cfg = parse_config(_RULES_CONFIG).processors["patterns"]
    assert cfg.miner_kwargs()["masking"] == [("order-[0-9a-f]{8}", "ORDER")]


def test_processor_applies_the_rules_and_otelproc_patterns_file_takes_the_same_config(tmp_path):
    import subprocess
    import sys

    bodies = ["payment p-17 declined: card expired", "payment p-18 declined: insufficient funds",
              "order order-1a2b3c4d shipped to warehouse 3", "order order-ffee0011 shipped to warehouse 9"]
    cfg = parse_config(_RULES_CONFIG).processors["patterns"]
    sink = Sink()
    proc = factory.create("patterns", cfg, sink, Context(telemetry=Telemetry()))
    proc.start()
    proc.consume(LogBatch.from_records([{"time_ns": T0, "service": "shop", "body": b} for b in bodies]))
    shown = [sink.batches[0].columns["pattern_template"][i] for i in range(4)]
    assert shown == ["payment <*> declined: <*>"] * 2 + ["order <ORDER> shipped to warehouse <*>"] * 2
    conf = tmp_path / "otelproc.yaml"
    conf.write_text(_RULES_CONFIG)
    log = tmp_path / "app.log"
    log.write_text("\n".join(bodies) + "\n")
    out = subprocess.run([sys.executable, "-m", "otelproc", "patterns", str(log), "--config", str(conf),
                          "--format", "csv"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert sorted(out.stdout.splitlines()[1:]) == ["2,order <ORDER> shipped to warehouse <*>",
                                                   "2,payment <*> declined: <*>"]
    conf.write_text(_RULES_CONFIG.replace("name: ORDER", "name: 'OR DER'"))
    out = subprocess.run([sys.executable, "-m", "otelproc", "patterns", str(log), "--config", str(conf)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 2 and "processors::patterns::masking[0]::name" in out.stderr
    assert "Traceback" not in out.stderr
