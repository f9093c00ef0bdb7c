"""The ``alerting`` processor: registry/config wiring, lifecycle, critical logs -> webhook, the alerts table."""
from __future__ import annotations

import time
from pathlib import Path

import pytest

from otelproc.alerting.sink import WebhookSink
from otelproc.batch import LogBatch
from otelproc.component import Context, Kind
from otelproc.config import ConfigError, parse_config
from otelproc.findings import Finding, FindingKind, Severity
from otelproc.processors.alerting import ALERTS_TABLE, AlertingConfig, factory
from otelproc.registry import factories
from otelproc.telemetry import Telemetry

RULES = """
global: {{resolve_timeout: 5m, grafana_url: "http://grafana:3000", service_labels: {{checkout: {{team: payments}}}}}}
rules:
  - alert: CriticalLogPattern
    source: logs
    regex: 'OutOfMemory|panic'
    severity_number_min: 21
    labels: {{severity: critical}}
    annotations:
      summary: '{{{{ service }}}}: {{{{ count }}}} critical line(s)'
      dashboard: '{{{{ grafana_url }}}}/d/logs?var-service={{{{ service | urlquery }}}}'
  - alert: LogRateSpike
    kinds: [spike]
    score_min: 0.5
route:
  receiver: hook
  group_by: [alertname, service]
  group_wait: 0s
  group_interval: 1m
receivers:
  - name: hook
    webhook_configs: [{{url: "{url}"}}]
"""


class Collect:
    def __init__(self) -> None:
        self.batches: list[LogBatch] = []

    def consume(self, batch: LogBatch) -> None:
        self.batches.append(batch)


@pytest.fixture
def sink():
    s = WebhookSink()
    yield s
    s.close()


@pytest.fixture
def rules_file(tmp_path: Path, sink: WebhookSink) -> str:
    p = tmp_path / "alerts.yaml"
    p.write_text(RULES.format(url=sink.url("/hook")))
    return str(p)


def test_registered_and_config_errors_carry_the_key_path(tmp_path):
    assert factories()[(Kind.PROCESSOR, "alerting")] is factory
    bad = tmp_path / "bad.yaml"
    bad.write_text("rules: [{alert: A, kinds: [nope]}]\nroute: {receiver: x}\n")
    cfg = f"""
receivers: {{otlp: {{}}}}
processors: {{alerting: {{rules_file: {bad}, queue_size: 0, api_endpoint: "nohost"}}}}
exporters: {{debug: {{}}}}
service: {{pipelines: {{logs: {{receivers: [otlp], processors: [alerting], exporters: [debug]}}}}}}
"""
    with pytest.raises(ConfigError) as e:
        parse_config(cfg)
    text = "\n".join(e.value.errors)
    assert f"processors::alerting::rules_file: {bad}: rules[0]::kinds[0]: unknown finding kind 'nope'" in text
    assert f"processors::alerting::rules_file: {bad}: route::receiver: unknown receiver 'x'" in text
    assert "processors::alerting::queue_size: must be >= 1, got 0" in text
    assert "processors::alerting::api_endpoint: must be host:port" in text
    missing = AlertingConfig(rules_file=str(tmp_path / "nope.yaml")).validate()
    assert missing and missing[0].startswith("rules_file: ") and "cannot read alert rules file" in missing[0]


def test_shutdown_without_start_and_twice(rules_file):
    p = factory.create("alerting", AlertingConfig(rules_file=rules_file), Collect(), Context(telemetry=Telemetry()))
    p.shutdown()
    p.start()
    p.shutdown()
    p.shutdown()


def test_critical_logs_reach_the_webhook_and_the_alerts_table(rules_file, sink, chdb_path, chdb_database):
    tel = Telemetry()
    out = Collect()
    p = factory.create("alerting", AlertingConfig(rules_file=rules_file), out, Context(telemetry=tel))
    p.start()
    try:
        batch = LogBatch.from_records([
            {"body": "GET /cart 200", "service": "checkout", "severity_number": 9},
            {"body": "java.lang.OutOfMemoryError: Java heap space", "service": "checkout", "severity_number": 17},
            {"body": "disk full", "service": "db", "severity_number": 21},
        ]).with_findings([Finding(time_ns=1, kind=FindingKind.SPIKE, service="web", score=0.9, observed=90.0,
                                  expected=10.0)])
        p.consume(batch)
        reqs = sink.wait_for(3, timeout=10)
        by_alert = {(r.json["groupLabels"]["alertname"], r.json["groupLabels"]["service"]): r.json for r in reqs}
        assert set(by_alert) == {("CriticalLogPattern", "checkout"), ("CriticalLogPattern", "db"),
                                 ("LogRateSpike", "web")}
        crit = by_alert[("CriticalLogPattern", "checkout")]["alerts"][0]
        # a logs rule's alert is its service's own incident (routes group by incident)
        assert crit["labels"] == {"alertname": "CriticalLogPattern", "service": "checkout", "severity": "critical",
                                  "kind": "critical_match", "team": "payments", "incident": "checkout"}
        assert crit["annotations"]["summary"] == "checkout: 1 critical line(s)"
        assert crit["annotations"]["dashboard"] == "http://grafana:3000/d/logs?var-service=checkout"
        # the batch passes on with the critical findings added
        first = out.batches[0]
        assert len(first) == 3
        assert sorted(f.service for f in first.findings if f.kind == FindingKind.CRITICAL_MATCH) == ["checkout", "db"]
        # delivery outcomes ride on the next batch as `alerts` rows
        deadline = time.monotonic() + 10
        rows = []
        while len(rows) < 3 and time.monotonic() < deadline:
            p.consume(LogBatch.empty())
            t = out.batches[-1].tables.get(ALERTS_TABLE)
            rows += t.to_pylist() if t is not None else []
            time.sleep(0.01)
        assert sorted(r["ServiceName"] for r in rows) == ["checkout", "db", "web"]
        assert {r["Outcome"] for r in rows} == {"sent"} and {r["Receiver"] for r in rows} == {"hook"}
        assert all(r["LatencyMs"] >= 0 for r in rows)
        assert tel.value("otelproc_alerting_notifications_total", receiver="hook", integration="webhook",
                         outcome="sent") == 3
    finally:
        p.shutdown()

    # the rows fit the alerts table DDL (store/sql/alerts.sql)
    from otelproc.store import open_store
    from otelproc.store.schema import SchemaOptions, ensure_schema
    from otelproc.alerting.engine import outcomes_to_arrow

    import pyarrow as pa

    table = pa.concat_tables([b.tables[ALERTS_TABLE] for b in out.batches if ALERTS_TABLE in b.tables])
    store = open_store(f"chdb://{chdb_path}", chdb_database)
    try:
        ensure_schema(store, SchemaOptions(database=store.database))
        store.insert_arrow("alerts", table)
        assert store.query_rows("SELECT count() FROM alerts")[0][0] == 3
        got = store.query_rows("SELECT AlertName, Outcome, Labels['team'], toTypeName(Timestamp) FROM alerts "
                               "WHERE ServiceName = 'checkout'")
        assert got == [("CriticalLogPattern", "sent", "payments", "DateTime64(9)")]
    finally:
        store.command(f"DROP DATABASE IF EXISTS `{chdb_database}`")
        store.close()
    assert outcomes_to_arrow([]).num_rows == 0


def test_a_broken_batch_is_passed_on_and_counted(rules_file):
    tel = Telemetry()
    out = Collect()
    p = factory.create("alerting", AlertingConfig(rules_file=rules_file), out, Context(telemetry=tel))
    p.start()
    try:
        # a finding with a kind no enum knows and a non-numeric score: evaluation must not crash the pipeline
        weird = Finding(time_ns=0, kind="bogus", service="x", score=None, severity="critical")  # type: ignore[arg-type]
        p.consume(LogBatch.empty().with_findings([weird]))
        assert len(out.batches) == 1
    finally:
        p.shutdown()


def test_one_incident_gives_one_alert_group_and_info_findings_are_not_alerted(tmp_path, sink):
    """The shipped route groups by (service, incident): the anomaly engine gives every finding of one incident
    the same `incident` label, so an error burst seen by two detectors (two rules) is one notification."""
    rules = tmp_path / "alerts.yaml"
    rules.write_text(f"""
rules:
  - alert: LogRateSpike
    kinds: [spike, level_shift]
    severities: [warning, critical]
  - alert: ErrorRatioJump
    kinds: [error_ratio]
    severities: [warning, critical]
route:
  receiver: hook
  group_by: [service, incident]
  group_wait: 0s
  group_interval: 1m
receivers:
  - name: hook
    webhook_configs: [{{url: "{sink.url('/hook')}"}}]
""")
    p = factory.create("alerting", AlertingConfig(rules_file=str(rules)), Collect(), Context(telemetry=Telemetry()))
    p.start()
    try:
        burst = {"incident": "checkout@2026-01-01T10:00:00Z"}
        p.consume(LogBatch.empty().with_findings([
            Finding(time_ns=1, kind=FindingKind.ERROR_RATIO, service="checkout", score=0.9,
                    severity=Severity.CRITICAL, labels=dict(burst)),
            Finding(time_ns=2, kind=FindingKind.SPIKE, service="checkout", score=0.7, severity=Severity.CRITICAL,
                    labels=dict(burst)),
            Finding(time_ns=3, kind=FindingKind.SPIKE, service="checkout", score=0.99, severity=Severity.INFO,
                    labels={"incident": "checkout@2026-01-01T12:00:00Z"}),
        ]))
        reqs = sink.wait_for(1, timeout=10)
        time.sleep(0.5)
        assert len(sink.requests) == 1
        body = reqs[0].json
        assert body["groupLabels"] == {"service": "checkout", "incident": burst["incident"]}
        assert sorted(a["labels"]["alertname"] for a in body["alerts"]) == ["ErrorRatioJump", "LogRateSpike"]
    finally:
        p.shutdown()
