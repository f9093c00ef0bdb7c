"""Receivers' payloads over real sockets (HTTP sink, aiosmtpd), retries, and that a dead receiver never blocks ingest."""
from __future__ import annotations

import email
import socket
import threading
import time

import pytest

from otelproc.alerting.engine import AlertEngine
from otelproc.retry import RetryConfig
from otelproc.alerting.notifiers import (AlertmanagerIntegration, Delivery, EmailIntegration, delivery_retry,
                                         SlackIntegration, WebhookIntegration)
from otelproc.alerting.router import Alert, Notification
from otelproc.alerting.rules import AlertmanagerConfig, EmailConfig, SlackConfig, WebhookConfig, parse_alerts
from otelproc.alerting.sink import WebhookSink
from otelproc.batch import LogBatch
from otelproc.config import Secret

T0 = 1_800_000_000.0
WEBHOOK_KEYS = {"version", "groupKey", "truncatedAlerts", "status", "receiver", "groupLabels", "commonLabels",
                "commonAnnotations", "externalURL", "alerts"}


def note(n_alerts: int = 2, resolved: int = 0) -> Notification:
    alerts = []
    for i in range(n_alerts):
        st = "resolved" if i < resolved else "firing"
        alerts.append(Alert({"alertname": "Crit", "service": "api", "severity": "critical", "pattern_id": str(i)},
                            {"summary": f"api: panic #{i}", "dashboard": "http://g/d/x"},
                            starts_at=T0, ends_at=T0 + 60, generator_url="http://g/d/x", status=st))
    return Notification("team", '{}:{alertname="Crit",service="api"}', {"alertname": "Crit", "service": "api"},
                        "firing" if resolved < n_alerts else "resolved", alerts, "http://otelproc", T0)


@pytest.fixture
def sink():
    s = WebhookSink()
    yield s
    s.close()


def run_delivery(integration, notification, retry=None):
    outcomes = []
    done = threading.Event()

    def on_outcome(o):
        outcomes.append(o)
        done.set()

    d = Delivery({"team": [integration]}, on_outcome, retry=retry or delivery_retry(0.01, 0.05, 2.0))
    d.start()
    d.submit(notification)
    assert done.wait(20), "no delivery outcome"
    d.shutdown()
    return outcomes[0]


def test_webhook_payload_is_alertmanager_compatible(sink):
    out = run_delivery(WebhookIntegration(WebhookConfig(url=sink.url("/hook"), max_alerts=1)), note(2))
    assert out.outcome == "sent" and out.attempts == 1
    p = sink.wait_for(1)[0].json
    assert set(p) == WEBHOOK_KEYS
    assert p["version"] == "4" and p["status"] == "firing" and p["receiver"] == "team"
    assert p["groupLabels"] == {"alertname": "Crit", "service": "api"}
    assert p["commonLabels"] == {"alertname": "Crit", "service": "api", "severity": "critical"}  # of all alerts
    assert p["truncatedAlerts"] == 1 and len(p["alerts"]) == 1
    a = p["alerts"][0]
    assert set(a) == {"status", "labels", "annotations", "startsAt", "endsAt", "generatorURL", "fingerprint"}
    assert a["startsAt"] == "2027-01-15T08:00:00.000Z" and a["endsAt"] == "0001-01-01T00:00:00Z"


def test_alertmanager_v2_payload(sink):
    out = run_delivery(AlertmanagerIntegration(AlertmanagerConfig(url=sink.url("/"))), note(2, resolved=1))
    assert out.outcome == "sent"
    req = sink.wait_for(1)[0]
    assert req.path == "/api/v2/alerts"
    body = req.json
    assert isinstance(body, list) and len(body) == 2
    assert set(body[0]) == {"labels", "annotations", "startsAt", "endsAt", "generatorURL"}
    assert body[0]["endsAt"] == "2027-01-15T08:01:00.000Z"  # resolved: its past endsAt; firing: future endsAt


def test_slack_payload(sink):
    cfg = SlackConfig(url=Secret(sink.url("/slack")), channel="#alerts")
    assert "url" not in repr(cfg) or sink.url("/slack") not in repr(cfg)
    run_delivery(SlackIntegration(cfg), note(1))
    p = sink.wait_for(1)[0].json
    assert p["channel"] == "#alerts" and p["username"] == "otelproc"
    assert p["text"] == "[FIRING] Crit (api)"
    att = p["attachments"][0]
    assert att["color"] == "danger" and "[FIRING] Crit service=api severity=critical: api: panic #0 http://g/d/x" in att["text"]


def test_smtp_email_to_local_aiosmtpd():
    aiosmtpd = pytest.importorskip("aiosmtpd.controller", reason="aiosmtpd is needed for the SMTP receiver test")

    class Handler:
        def __init__(self):
            self.messages = []

        async def handle_DATA(self, server, session, envelope):
            self.messages.append(envelope)
            return "250 OK"

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    handler = Handler()
    ctl = aiosmtpd.Controller(handler, hostname="127.0.0.1", port=port)
    ctl.start()
    try:
        cfg = EmailConfig(to=["oncall@example.com", "lead@example.com"], from_="otelproc@example.com",
                          smarthost=f"127.0.0.1:{port}")
        out = run_delivery(EmailIntegration(cfg), note(2))
        assert out.outcome == "sent"
        env = handler.messages[0]
        assert env.mail_from == "otelproc@example.com" and env.rcpt_tos == ["oncall@example.com", "lead@example.com"]
        msg = email.message_from_bytes(env.content)
        assert msg["Subject"] == "[FIRING:2] Crit alertname=Crit, service=api"
        body = msg.get_payload(decode=True).decode()
        assert "[FIRING] Crit service=api severity=critical: api: panic #1" in body and "http://otelproc" in body
    finally:
        ctl.stop()


def test_retries_transient_failures_then_succeeds(sink):
    sink.fail_next(2, 503)
    out = run_delivery(WebhookIntegration(WebhookConfig(url=sink.url())), note(1))
    assert out.outcome == "sent" and out.attempts == 3
    assert len(sink.wait_for(1)) == 1


def test_permanent_failure_is_not_retried(sink):
    sink.fail_next(5, 400)
    out = run_delivery(WebhookIntegration(WebhookConfig(url=sink.url())), note(1))
    assert out.outcome == "failed" and out.attempts == 1 and "permanent: HTTP 400" in out.error


def test_unreachable_receiver_gives_up_after_max_elapsed_time():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = run_delivery(WebhookIntegration(WebhookConfig(url=f"http://127.0.0.1:{port}/x", timeout=1)), note(1),
                       delivery_retry(0.01, 0.02, 0.1))
    assert out.outcome == "failed" and out.attempts >= 3 and f"gave up after {out.attempts} attempt" in out.error


RULES = """
rules:
  - {alert: Crit, source: logs, regex: panic}
route: {receiver: slow, group_by: ['...'], group_wait: 0s, group_interval: 1m}
receivers:
  - name: slow
    webhook_configs: [{url: "%s", timeout: 30s}]
"""


def test_hung_receiver_never_blocks_ingest_and_overflow_is_recorded(sink):
    sink.hold()  # the receiver accepts connections but never answers
    eng = AlertEngine(parse_alerts(RULES % sink.url()), queue_size=2, retry=RetryConfig(enabled=False))
    eng.start(scheduler=False)
    try:
        def ingest():
            for i in range(50):  # 50 distinct alerts -> 50 notifications for a queue of 2
                eng.process(LogBatch.from_records([{"body": f"panic {i}", "service": f"svc{i}"}]))

        t = threading.Thread(target=ingest)
        t.start()
        t.join(30)
        # if process() waited on the receiver this thread would still hang on the held request
        assert not t.is_alive(), "ingest blocked on a hung receiver"
        dropped = [o for o in eng.take_outcomes() if o.outcome == "dropped"]
        assert len(dropped) >= 50 - 2 - 1  # queue of 2 + one in flight in the worker
        assert "queue full" in dropped[0].error
    finally:
        sink.release()
        eng.shutdown(5)
    time.sleep(0)  # the released requests complete during shutdown
