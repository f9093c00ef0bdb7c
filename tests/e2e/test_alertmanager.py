"""End to end with a REAL Alertmanager: critical logs -> alerting processor -> Alertmanager API v2 ->
Alertmanager routing/grouping -> its webhook -> this test. Also resolves flow through."""
from __future__ import annotations

import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from otelproc.alerting.sink import WebhookSink
from otelproc.batch import LogBatch
from otelproc.component import Context
from otelproc.processors.alerting import ALERTS_TABLE, AlertingConfig, factory
from otelproc.telemetry import Telemetry

pytestmark = pytest.mark.e2e

AM_BINARY = "prometheus-alertmanager"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def sink():
    s = WebhookSink()
    yield s
    s.close()


@pytest.fixture
def alertmanager(tmp_path: Path, sink: WebhookSink):
    binary = shutil.which(AM_BINARY)
    if binary is None:
        pytest.skip(f"{AM_BINARY} not found: apt-get install -y --no-install-recommends prometheus-alertmanager "
                    "(.ci/run installs it)")
    port = free_port()
    cfg = tmp_path / "am.yml"
    # Alertmanager groups by alertname + service; group_interval 1s so the resolve arrives quickly
    cfg.write_text(f"""
route:
  receiver: hook
  group_by: [alertname, service]
  group_wait: 0s
  group_interval: 1s
  repeat_interval: 4h
receivers:
  - name: hook
    webhook_configs:
      - url: {sink.url('/am')}
        send_resolved: true
""")
    log = open(tmp_path / "am.log", "wb")
    proc = subprocess.Popen([binary, f"--config.file={cfg}", f"--storage.path={tmp_path / 'am-data'}",
                             f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address=",
                             "--log.level=warn"], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while True:
        try:
            with urllib.request.urlopen(url + "/-/ready", timeout=1) as r:
                if r.status == 200:
                    break
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            log.close()
            pytest.fail(f"alertmanager did not become ready: {(tmp_path / 'am.log').read_text()[-2000:]}")
        time.sleep(0.05)
    yield url
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


RULES = """
global: {{resolve_timeout: 2s, service_labels: {{checkout: {{team: payments}}}}}}
rules:
  - alert: CriticalLogPattern
    source: logs
    regex: 'OutOfMemory|panic|FATAL'
    severity_number_min: 21
    labels: {{severity: critical}}
    annotations:
      summary: '{{{{ service }}}}: {{{{ count }}}} critical line(s): {{{{ sample | truncate:80 }}}}'
route:
  receiver: am
  group_by: [alertname, service]
  group_wait: 0s
  group_interval: 500ms
receivers:
  - name: am
    alertmanager_configs: [{{url: "{am}"}}]
"""


class Collect:
    def __init__(self) -> None:
        self.batches: list[LogBatch] = []

    def consume(self, batch: LogBatch) -> None:
        self.batches.append(batch)


def test_critical_logs_through_real_alertmanager(tmp_path, alertmanager, sink):
    rules = tmp_path / "alerts.yaml"
    rules.write_text(RULES.format(am=alertmanager))
    out = Collect()
    proc = factory.create("alerting", AlertingConfig(rules_file=str(rules)), out, Context(telemetry=Telemetry()))
    proc.start()
    try:
        # ingest: normal traffic with critical lines in two services (two patterns in checkout)
        records = [{"body": f"GET /item/{i} 200 in {i % 50} ms", "service": "checkout", "severity_number": 9}
                   for i in range(500)]
        records[100] = {"body": "java.lang.OutOfMemoryError: Java heap space", "service": "checkout",
                        "severity_number": 17}
        records[200] = {"body": "goroutine 7 [running]: panic: nil map", "service": "checkout", "severity_number": 17}
        records[300] = {"body": "disk /dev/sda1 failed", "service": "db", "severity_number": 21}
        proc.consume(LogBatch.from_records(records))

        reqs = sink.wait_for(2, timeout=15, path="/am")
        groups = {r.json["groupLabels"]["service"]: r.json for r in reqs}
        assert set(groups) == {"checkout", "db"}
        checkout = groups["checkout"]
        assert checkout["status"] == "firing" and checkout["receiver"] == "hook"
        assert checkout["groupLabels"] == {"alertname": "CriticalLogPattern", "service": "checkout"}
        # a logs rule's alert is its service's own incident (the shipped routes group by incident)
        assert checkout["commonLabels"] == {"alertname": "CriticalLogPattern", "service": "checkout",
                                            "severity": "critical", "kind": "critical_match", "team": "payments",
                                            "incident": "checkout"}
        # both checkout lines came in one batch -> one otelproc alert (one group per service) -> one AM alert
        assert len(checkout["alerts"]) == 1
        assert checkout["alerts"][0]["annotations"]["summary"].startswith("checkout: 2 critical line(s): ")
        db = groups["db"]["alerts"][0]
        assert db["labels"]["severity"] == "critical" and db["annotations"]["summary"] == \
            "db: 1 critical line(s): disk /dev/sda1 failed"

        # the deliveries to Alertmanager are recorded (attached to the next batch)
        deadline = time.monotonic() + 10
        rows: list[dict] = []
        while len(rows) < 2 and time.monotonic() < deadline:
            proc.consume(LogBatch.empty())
            t = out.batches[-1].tables.get(ALERTS_TABLE)
            rows += t.to_pylist() if t is not None else []
            time.sleep(0.02)
        assert sorted((r["ServiceName"], r["Integration"], r["Outcome"]) for r in rows) == [
            ("checkout", "alertmanager", "sent"), ("db", "alertmanager", "sent")]

        # no more critical lines: after resolve_timeout (2s) otelproc resolves, Alertmanager notifies the resolve
        resolved = sink.wait_for(4, timeout=20, path="/am")[2:]
        assert {r.json["status"] for r in resolved} == {"resolved"}
        assert {r.json["groupLabels"]["service"] for r in resolved} == {"checkout", "db"}
    finally:
        proc.shutdown()
