"""`otelproc demo` end to end: a subprocess runs the whole product on simulated traffic over real
OTLP/HTTP; then the store is read back (through the CLI, in other subprocesses: chDB binds one
data directory per process and this test process has its own) to check that the patterns, each
scripted incident's anomaly and the routed alerts are all there.

The run is shortened with a faster clock: 3 h of event time in 20 s (--speed 540). Detection works
on event time, so what is found does not depend on how fast the machine replays it.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from otelproc.demo import EXPECTED_FINDINGS, demo_incidents

REPO = Path(__file__).resolve().parents[2]


def _otelproc(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "NUMBA_CACHE_DIR": os.environ.get("NUMBA_CACHE_DIR", str(REPO / ".numba_cache"))}
    return subprocess.run([sys.executable, "-m", "otelproc", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)


def _json_rows(proc: subprocess.CompletedProcess) -> list[dict]:
    assert proc.returncode == 0, proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    root = tmp_path_factory.mktemp("demo") / "run"
    proc = _otelproc("demo", "--duration", "20", "--seed", "1", "--dir", str(root), timeout=600)
    return root, proc


def test_demo_exits_zero_and_prints_summary(demo_run):
    root, proc = demo_run
    assert proc.returncode == 0, f"stdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}"
    out = proc.stdout
    assert "logs sent over OTLP" in out and "Look further" in out
    assert "otelproc anomalies" in out and "SQL cookbook" in out
    summary = json.loads((root / "summary.json").read_text())
    assert summary["logs_sent"] > 50_000
    assert summary["logs_stored"] == summary["logs_sent"], "every record sent over OTLP must be stored"


def test_store_has_logs_from_every_service_and_patterns(demo_run):
    root, _ = demo_run
    cfg = str(root / "otelproc.yaml")
    rows = _json_rows(_otelproc("sql", "--config", cfg, "--format", "json",
                                "SELECT ServiceName AS s, count() AS n, countIf(PatternId != 0) AS with_pattern "
                                "FROM otel_logs GROUP BY s ORDER BY s"))
    assert [r["s"] for r in rows] == ["auth", "checkout", "frontend", "inventory", "payment"]
    assert all(r["n"] > 1000 and r["with_pattern"] == r["n"] for r in rows)
    top = _json_rows(_otelproc("patterns", "top", "--config", cfg, "--format", "json", "-n", "50"))
    # the simulator has 22 templates plus the incident's new error line
    assert 20 <= len(top) <= 40
    templates = " | ".join(r["template"] for r in top)
    assert "No space left on device" in templates
    assert top[0]["count"] >= top[-1]["count"]


@pytest.mark.parametrize("incident", demo_incidents(), ids=lambda i: i.kind)
def test_each_scripted_incident_has_its_anomaly_and_a_routed_alert(demo_run, incident):
    root, _ = demo_run
    cfg = str(root / "otelproc.yaml")
    found = _json_rows(_otelproc("anomalies", "--config", cfg, "--service", incident.service, "--format", "json",
                                 "-n", "1000"))
    kinds = {r["kind"] for r in found}
    assert kinds & set(EXPECTED_FINDINGS[incident.kind]), \
        f"{incident.kind} on {incident.service}: no finding of {EXPECTED_FINDINGS[incident.kind]}; got {kinds}"
    summary = json.loads((root / "summary.json").read_text())
    (res,) = [i for i in summary["incidents"] if i["kind"] == incident.kind]
    assert res["anomalies"] > 0, res
    sent = _json_rows(_otelproc("alerts", "--config", cfg, "--service", incident.service, "--outcome", "sent",
                                "--format", "json", "-n", "1000"))
    assert any(a["status"] == "firing" for a in sent), f"no alert sent about {incident.service}"
    assert res["alerts"] > 0 and set(res["receivers"]) <= {a["receiver"] for a in sent}, (res, sent)


def test_alerts_were_routed_to_the_receivers_of_the_route_tree(demo_run):
    root, _ = demo_run
    summary = json.loads((root / "summary.json").read_text())
    # the webhook sink saw deliveries; critical ones reach oncall, checkout's (team payments) reach payments
    assert summary["webhook_requests"].get("oncall", 0) >= 1
    assert summary["webhook_requests"].get("payments", 0) >= 1
    rows = _json_rows(_otelproc("alerts", "--config", str(root / "otelproc.yaml"), "--format", "json", "-n", "1000"))
    assert rows and all(r["outcome"] == "sent" for r in rows), [r for r in rows if r["outcome"] != "sent"]
    by_service = {}
    for r in rows:
        by_service.setdefault(r["service"], set()).add(r["receiver"])
    assert "payments" in by_service.get("checkout", set())


def test_demo_rejects_a_run_too_short_for_the_warmup(tmp_path):
    proc = _otelproc("demo", "--duration", "10", "--speed", "60", "--dir", str(tmp_path / "d"))
    assert proc.returncode == 2
    assert "--speed" in proc.stderr and "event time" in proc.stderr
