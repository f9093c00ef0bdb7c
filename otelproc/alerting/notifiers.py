"""Receivers (webhook, Alertmanager API v2, Slack-compatible webhook, SMTP e-mail) and their delivery workers.

Each integration of each receiver gets its own bounded queue and worker thread,
so a slow or dead receiver only delays itself: ``Delivery.submit`` never blocks
(a full queue drops the notification, counts it and reports it as ``dropped``).
Workers retry transient failures (connection errors, timeouts, HTTP 429/5xx,
SMTP 4xx) with exponential back-off and jitter; permanent failures (other HTTP
4xx, SMTP 5xx) are not retried. Every final outcome is reported to a callback,
which the engine turns into rows of the ``alerts`` table.
"""
from __future__ import annotations

import http.client
import json
import logging
import queue
import smtplib
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any, Callable, Protocol
from urllib.parse import urlsplit

from otelproc.alerting.router import Alert, Notification, iso_time
from otelproc.alerting.rules import (AlertmanagerConfig, EmailConfig, ReceiverConfig, SlackConfig,
                                     WebhookConfig)
from otelproc.alerting.templating import NOTIFICATION_VARIABLES, Template
from otelproc.config import Duration
from otelproc.httpserver import parse_endpoint
from otelproc.retry import GaveUp, RetryConfig, call_with_retry

__all__ = [
    "DeliveryError", "DeliveryOutcome", "Delivery", "Integration", "WebhookIntegration",
    "AlertmanagerIntegration", "SlackIntegration", "EmailIntegration", "build_integrations",
    "webhook_payload", "alertmanager_payload", "slack_payload", "email_message",
]

log = logging.getLogger("otelproc.alerting")

ZERO_TIME = "0001-01-01T00:00:00Z"  # Alertmanager's "unset" endsAt
USER_AGENT = "otelproc-alerting/0.1"


class DeliveryError(Exception):
    """A failed delivery attempt; ``retryable`` False means trying again cannot help."""

    def __init__(self, message: str, retryable: bool = True):
        super().__init__(message)
        self.retryable = retryable


@dataclass
class DeliveryOutcome:
    notification: Notification
    receiver: str
    integration: str       # webhook | alertmanager | slack | email
    outcome: str           # sent | failed | dropped
    attempts: int
    error: str
    finished_at: float     # unix seconds
    finished_perf: float   # time.perf_counter() when it finished (latency)


# --------------------------------------------------------------------------- payloads

def _alert_json(a: Alert) -> dict:
    return {"status": a.status, "labels": a.labels, "annotations": a.annotations,
            "startsAt": iso_time(a.starts_at), "endsAt": iso_time(a.ends_at) if a.status == "resolved" else ZERO_TIME,
            "generatorURL": a.generator_url, "fingerprint": a.fingerprint}


def webhook_payload(n: Notification, max_alerts: int = 0) -> dict:
    """Alertmanager's webhook payload (version 4), so any Alertmanager webhook consumer works unchanged."""
    alerts = n.alerts if max_alerts <= 0 else n.alerts[:max_alerts]
    return {"version": "4", "groupKey": n.group_key, "truncatedAlerts": len(n.alerts) - len(alerts),
            "status": n.status, "receiver": n.receiver, "groupLabels": n.group_labels,
            "commonLabels": n.common_labels, "commonAnnotations": n.common_annotations,
            "externalURL": n.external_url, "alerts": [_alert_json(a) for a in alerts]}


def alertmanager_payload(n: Notification) -> list[dict]:
    """``POST /api/v2/alerts`` body: firing alerts carry their future endsAt (resolve_timeout), so
    Alertmanager resolves them by itself if otelproc stops; resolved ones an endsAt in the past."""
    return [{"labels": a.labels, "annotations": a.annotations, "startsAt": iso_time(a.starts_at),
             "endsAt": iso_time(a.ends_at), "generatorURL": a.generator_url} for a in n.alerts]


def notification_variables(n: Notification) -> dict[str, Any]:
    common = n.common_labels
    lines = []
    for a in n.alerts:
        what = a.annotations.get("summary") or a.annotations.get("description") or ""
        link = a.annotations.get("dashboard", "")
        lines.append(f"[{a.status.upper()}] {a.labels.get('alertname', '')} service={a.labels.get('service', '')} "
                     f"severity={a.labels.get('severity', '')}" + (f": {what}" if what else "") + (f" {link}" if link else ""))
    return {"status": n.status, "receiver": n.receiver, "group_key": n.group_key, "alert_count": len(n.alerts),
            "firing_count": sum(a.status == "firing" for a in n.alerts),
            "resolved_count": sum(a.status == "resolved" for a in n.alerts),
            "group_labels": ", ".join(f"{k}={v}" for k, v in sorted(n.group_labels.items())),
            "alerts_text": "\n".join(lines), "external_url": n.external_url,
            "alertname": common.get("alertname", ""), "service": common.get("service", ""),
            "severity": common.get("severity", "")}


def _render(t: Template, n: Notification, variables: dict) -> str:
    return t.render(variables, n.common_labels, n.common_annotations)


def slack_payload(n: Notification, cfg: SlackConfig) -> dict:
    """A Slack incoming-webhook message (also accepted by Mattermost and Rocket.Chat)."""
    v = notification_variables(n)
    title = _render(Template(cfg.title, NOTIFICATION_VARIABLES), n, v)
    text = _render(Template(cfg.text, NOTIFICATION_VARIABLES), n, v)
    color = "good" if n.status == "resolved" else ("danger" if v["severity"] == "critical" else "warning")
    out: dict[str, Any] = {"username": cfg.username, "text": title,
                           "attachments": [{"fallback": f"{title}\n{text}", "color": color, "title": title,
                                            "text": text, "mrkdwn_in": ["text"]}]}
    if cfg.channel:
        out["channel"] = cfg.channel
    return out


def email_message(n: Notification, cfg: EmailConfig) -> EmailMessage:
    v = notification_variables(n)
    msg = EmailMessage()
    msg["Subject"] = _render(Template(cfg.subject, NOTIFICATION_VARIABLES), n, v).replace("\n", " ")
    msg["From"] = cfg.from_
    msg["To"] = ", ".join(cfg.to)
    msg["X-Otelproc-Group-Key"] = n.group_key
    msg.set_content(_render(Template(cfg.text, NOTIFICATION_VARIABLES), n, v))
    return msg


# --------------------------------------------------------------------------- transports

class _HttpPoster:
    """POSTs JSON over one keep-alive connection (a worker owns it; not shared between threads)."""

    def __init__(self, url: str, timeout: float, headers: dict[str, str] | None = None):
        u = urlsplit(url)
        self.https = u.scheme == "https"
        self.host = u.hostname or ""
        self.port = u.port or (443 if self.https else 80)
        self.path = (u.path or "/") + (f"?{u.query}" if u.query else "")
        self.timeout = timeout
        self.headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT, **(headers or {})}
        self._conn: http.client.HTTPConnection | None = None

    def _connect(self) -> http.client.HTTPConnection:
        if self.https:
            conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                self.host, self.port, timeout=self.timeout, context=ssl.create_default_context())
        else:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        try:
            conn.connect()
            # small request writes must not wait for the peer's delayed ACK (Nagle): ~40 ms per alert otherwise
            conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError as e:
            conn.close()
            raise DeliveryError(f"cannot connect to {self.host}:{self.port}: {e!r}") from None
        return conn

    def post(self, body: bytes) -> None:
        for attempt in range(2):
            reused = self._conn is not None
            conn = self._conn or self._connect()
            try:
                conn.request("POST", self.path, body=body, headers=self.headers)
                resp = conn.getresponse()
                data = resp.read(4096)
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as e:
                conn.close()
                self._conn = None
                if reused and attempt == 0:
                    continue  # the server closed an idle keep-alive connection: reconnect once
                raise DeliveryError(f"connection to {self.host}:{self.port} failed: {e!r}") from None
            except (OSError, http.client.HTTPException) as e:
                conn.close()
                self._conn = None
                raise DeliveryError(f"POST {self.host}:{self.port}{self.path} failed: {e!r}") from None
            if resp.will_close:
                conn.close()
                self._conn = None
            else:
                self._conn = conn
            if resp.status < 300:
                return
            snippet = data[:200].decode("utf-8", "replace").strip()
            retryable = resp.status == 429 or resp.status >= 500 or resp.status == 408
            raise DeliveryError(f"HTTP {resp.status} from {self.host}:{self.port}{self.path}: {snippet}", retryable)
        raise DeliveryError("unreachable")  # pragma: no cover

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class Integration(Protocol):
    kind: str
    send_resolved: bool

    def send(self, n: Notification) -> None: ...

    def close(self) -> None: ...


class WebhookIntegration:
    kind = "webhook"

    def __init__(self, cfg: WebhookConfig):
        self.cfg = cfg
        self.send_resolved = cfg.send_resolved
        self._http = _HttpPoster(cfg.url, cfg.timeout, cfg.headers)

    def send(self, n: Notification) -> None:
        self._http.post(json.dumps(webhook_payload(n, self.cfg.max_alerts)).encode())

    def close(self) -> None:
        self._http.close()


class AlertmanagerIntegration:
    kind = "alertmanager"

    def __init__(self, cfg: AlertmanagerConfig):
        self.cfg = cfg
        self.send_resolved = cfg.send_resolved
        self._http = _HttpPoster(cfg.url.rstrip("/") + "/api/v2/alerts", cfg.timeout)

    def send(self, n: Notification) -> None:
        self._http.post(json.dumps(alertmanager_payload(n)).encode())

    def close(self) -> None:
        self._http.close()


class SlackIntegration:
    kind = "slack"

    def __init__(self, cfg: SlackConfig):
        self.cfg = cfg
        self.send_resolved = cfg.send_resolved
        self._http = _HttpPoster(str(cfg.url), cfg.timeout)

    def send(self, n: Notification) -> None:
        self._http.post(json.dumps(slack_payload(n, self.cfg)).encode())

    def close(self) -> None:
        self._http.close()


class EmailIntegration:
    kind = "email"

    def __init__(self, cfg: EmailConfig):
        self.cfg = cfg
        self.send_resolved = cfg.send_resolved
        self.host, self.port = parse_endpoint(cfg.smarthost)

    def send(self, n: Notification) -> None:
        msg = email_message(n, self.cfg)
        try:
            with smtplib.SMTP(self.host, self.port, timeout=self.cfg.timeout) as smtp:
                if self.cfg.require_tls:
                    smtp.starttls(context=ssl.create_default_context())
                if self.cfg.auth_username:
                    smtp.login(self.cfg.auth_username, str(self.cfg.auth_password))
                smtp.send_message(msg)
        except smtplib.SMTPResponseException as e:
            # 4xx = try later, 5xx = the server will never accept this
            raise DeliveryError(f"SMTP {e.smtp_code} from {self.cfg.smarthost}: {e.smtp_error!r}",
                                retryable=400 <= e.smtp_code < 500) from None
        except smtplib.SMTPRecipientsRefused as e:
            raise DeliveryError(f"SMTP recipients refused by {self.cfg.smarthost}: {e.recipients}", False) from None
        except (smtplib.SMTPException, OSError, socket.timeout) as e:
            raise DeliveryError(f"SMTP to {self.cfg.smarthost} failed: {e!r}") from None

    def close(self) -> None:
        pass


def build_integrations(receivers: list[ReceiverConfig]) -> dict[str, list[Integration]]:
    out: dict[str, list[Integration]] = {}
    for r in receivers:
        out[r.name] = ([WebhookIntegration(c) for c in r.webhook_configs]
                       + [AlertmanagerIntegration(c) for c in r.alertmanager_configs]
                       + [SlackIntegration(c) for c in r.slack_configs]
                       + [EmailIntegration(c) for c in r.email_configs])
    return out


# --------------------------------------------------------------------------- delivery workers

def delivery_retry(initial_backoff: float = 0.1, max_backoff: float = 5.0, max_elapsed_time: float = 10.0) -> RetryConfig:
    """How a notification is retried (transient failures only): doubling waits with 20 % jitter."""
    return RetryConfig(initial_interval=Duration(initial_backoff), max_interval=Duration(max_backoff),
                       max_elapsed_time=Duration(max_elapsed_time), multiplier=2.0, randomization_factor=0.2)


class _Worker:
    def __init__(self, receiver: str, integration: Integration, queue_size: int):
        self.receiver = receiver
        self.integration = integration
        self.queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self.thread: threading.Thread | None = None


class Delivery:
    """One bounded queue + worker thread per (receiver, integration). ``submit`` never blocks."""

    def __init__(self, integrations: dict[str, list[Integration]], on_outcome: Callable[[DeliveryOutcome], None],
                 queue_size: int = 1000, retry: RetryConfig | None = None, telemetry: Any = None):
        self.on_outcome = on_outcome
        self.retry = retry or delivery_retry()
        self._stop = threading.Event()
        self._workers: dict[str, list[_Worker]] = {
            name: [_Worker(name, i, queue_size) for i in integs] for name, integs in integrations.items()}
        self._started = False
        self._m_sent = self._m_retries = self._m_latency = None
        if telemetry is not None:
            self._m_sent = telemetry.counter("otelproc_alerting_notifications_total",
                                             "Notifications by receiver, integration and outcome (sent, failed, dropped)",
                                             ("receiver", "integration", "outcome"))
            self._m_retries = telemetry.counter("otelproc_alerting_delivery_retries_total",
                                                "Delivery attempts that were retried", ("receiver", "integration"))
            self._m_latency = telemetry.histogram("otelproc_alerting_notification_latency_seconds",
                                                  "From rule match to notification delivered", ("integration",))

    def start(self) -> None:
        if self._started:
            return
        self._started = True
        for workers in self._workers.values():
            for w in workers:
                w.thread = threading.Thread(target=self._run, args=(w,), daemon=True,
                                            name=f"alert-delivery-{w.receiver}-{w.integration.kind}")
                w.thread.start()

    def submit(self, n: Notification) -> None:
        """Queue ``n`` for every integration of its receiver; never blocks."""
        for w in self._workers.get(n.receiver, ()):
            note = n
            if not w.integration.send_resolved:
                firing = [a for a in n.alerts if a.status == "firing"]
                if not firing:
                    continue
                if len(firing) != len(n.alerts):
                    note = Notification(n.receiver, n.group_key, n.group_labels, "firing", firing,
                                        n.external_url, n.created_at)
            try:
                w.queue.put_nowait(note)
            except queue.Full:
                self._report(note, w, "dropped", 0, f"delivery queue full ({w.queue.maxsize}); receiver too slow or down")

    def _report(self, n: Notification, w: _Worker, outcome: str, attempts: int, error: str) -> None:
        perf = time.perf_counter()
        if self._m_sent is not None:
            self._m_sent.labels(w.receiver, w.integration.kind, outcome).inc()
            if outcome == "sent":
                for a in n.alerts:
                    if a.status == "firing" and a.detected_at:
                        self._m_latency.labels(w.integration.kind).observe(perf - a.detected_at)
        if outcome != "sent":
            log.warning("alert notification %s: receiver=%s integration=%s group=%s alerts=%d attempts=%d: %s",
                        outcome, w.receiver, w.integration.kind, n.group_key, len(n.alerts), attempts, error)
        try:
            self.on_outcome(DeliveryOutcome(n, w.receiver, w.integration.kind, outcome, attempts, error,
                                            time.time(), perf))
        except Exception:  # a recording problem must not kill a worker
            log.exception("recording an alert delivery outcome failed")

    def _run(self, w: _Worker) -> None:
        while True:
            n = w.queue.get()
            if n is None:
                break
            self._deliver(n, w)
        w.integration.close()

    def _deliver(self, n: Notification, w: _Worker) -> None:
        attempts = 0

        def attempt() -> None:
            nonlocal attempts
            attempts += 1
            w.integration.send(n)

        def count_retry(e: BaseException, attempt: int, wait: float) -> None:
            if self._m_retries is not None:
                self._m_retries.labels(w.receiver, w.integration.kind).inc()

        try:  # shutdown stops the retrying so that the queue can drain
            call_with_retry(attempt, self.retry, f"notification to {w.receiver} ({w.integration.kind})", self._stop,
                            permanent=lambda e: not (isinstance(e, DeliveryError) and e.retryable), on_retry=count_retry)
        except GaveUp as g:
            self._report(n, w, "failed", attempts, f"gave up after {attempts} attempt(s): {g.last}")
        except DeliveryError as e:
            self._report(n, w, "failed", attempts, f"permanent: {e}")
        except Exception as e:  # a bug in a payload builder: report, never kill the worker
            self._report(n, w, "failed", attempts, f"unexpected: {e!r}")
        else:
            self._report(n, w, "sent", attempts, "")

    def shutdown(self, timeout: float = 5.0) -> None:
        """Stop retries, deliver what is queued (each once) within ``timeout``, stop the workers."""
        if not self._started:
            return
        self._stop.set()
        deadline = time.monotonic() + timeout
        for workers in self._workers.values():
            for w in workers:
                try:
                    w.queue.put(None, timeout=max(0.0, deadline - time.monotonic()))
                except queue.Full:
                    pass
        for workers in self._workers.values():
            for w in workers:
                if w.thread is not None:
                    w.thread.join(max(0.0, deadline - time.monotonic()))
        self._started = False
