"""The alerting engine: rules -> alerts -> dispatcher (routing, grouping, muting) -> delivery workers.

One object the ``alerting`` processor drives. ``process(batch)`` runs on the
pipeline thread and never blocks on a receiver: it evaluates the rules, updates
the dispatcher, and hands due notifications to the delivery queues. A
scheduler thread fires group timers (group_wait, group_interval, resolves)
between batches. Delivery outcomes come back from the workers and wait in
``take_outcomes()`` until the processor attaches them to the next batch.
"""
from __future__ import annotations

import logging
import math
import threading
import time
from typing import Any, Callable

from otelproc.batch import LogBatch
from otelproc.findings import Finding, FindingKind, Severity, explanation_text
from otelproc.retry import RetryConfig
from otelproc.alerting.notifiers import Delivery, DeliveryOutcome, Integration, build_integrations
from otelproc.alerting.router import Alert, Dispatcher, Inhibitor, Notification, Route, iso_time
from otelproc.alerting.rules import AlertsFile, CompiledRule, LogRuleEvaluator, compile_rules
from otelproc.alerting.silences import SilenceStore

__all__ = ["AlertEngine", "outcomes_to_arrow", "ALERTS_ARROW_SCHEMA"]

log = logging.getLogger("otelproc.alerting")

# the scheduler re-checks at least this often (clock jumps, pending-state cleanup)
SCHEDULER_MAX_SLEEP_S = 1.0


def _alerts_schema():
    import pyarrow as pa

    m = pa.map_(pa.string(), pa.string())
    return pa.schema([
        ("Timestamp", pa.timestamp("ns")), ("AlertName", pa.string()), ("Fingerprint", pa.string()),
        ("Status", pa.string()), ("Outcome", pa.string()), ("Receiver", pa.string()), ("Integration", pa.string()),
        ("ServiceName", pa.string()), ("Severity", pa.string()), ("GroupKey", pa.string()),
        ("Attempts", pa.uint16()), ("Error", pa.string()), ("LatencyMs", pa.float64()),
        ("StartsAt", pa.timestamp("ns")), ("EndsAt", pa.timestamp("ns")), ("EventTime", pa.timestamp("ns")),
        ("Labels", m), ("Annotations", m),
    ])


ALERTS_ARROW_SCHEMA = None  # built lazily (pyarrow import is not free)


def outcomes_to_arrow(outcomes: list[DeliveryOutcome]):
    """Rows for the ``alerts`` table: one per alert per delivery outcome (see store/sql/alerts.sql)."""
    import pyarrow as pa

    global ALERTS_ARROW_SCHEMA
    if ALERTS_ARROW_SCHEMA is None:
        ALERTS_ARROW_SCHEMA = _alerts_schema()
    cols: dict[str, list] = {f.name: [] for f in ALERTS_ARROW_SCHEMA}
    for o in outcomes:
        for a in o.notification.alerts:
            cols["Timestamp"].append(int(o.finished_at * 1e9))
            cols["AlertName"].append(a.labels.get("alertname", ""))
            cols["Fingerprint"].append(a.fingerprint)
            cols["Status"].append(a.status)
            cols["Outcome"].append(o.outcome)
            cols["Receiver"].append(o.receiver)
            cols["Integration"].append(o.integration)
            cols["ServiceName"].append(a.labels.get("service", ""))
            cols["Severity"].append(a.labels.get("severity", ""))
            cols["GroupKey"].append(o.notification.group_key)
            cols["Attempts"].append(min(o.attempts, 65535))
            cols["Error"].append(o.error)
            lat = (o.finished_perf - a.detected_at) * 1e3 if a.detected_at and a.status == "firing" else math.nan
            cols["LatencyMs"].append(lat)
            cols["StartsAt"].append(int(a.starts_at * 1e9))
            cols["EndsAt"].append(int(a.ends_at * 1e9) if a.status == "resolved" else 0)
            cols["EventTime"].append(int(a.event_ns))
            cols["Labels"].append(list(a.labels.items()))
            cols["Annotations"].append(list(a.annotations.items()))
    return pa.table({k: pa.array(v, type=ALERTS_ARROW_SCHEMA.field(k).type) for k, v in cols.items()},
                    schema=ALERTS_ARROW_SCHEMA)


class AlertEngine:
    def __init__(self, cfg: AlertsFile, *, queue_size: int = 1000, retry: RetryConfig | None = None,
                 clock: Callable[[], float] = time.time, telemetry: Any = None,
                 integrations: dict[str, list[Integration]] | None = None):
        self.cfg = cfg
        self.clock = clock
        self.rules: list[CompiledRule] = compile_rules(cfg)
        self.log_rules = LogRuleEvaluator(self.rules)
        self.finding_rules = [r for r in self.rules if r.source == "findings"]
        self.resolve_timeout = float(cfg.global_.resolve_timeout)
        self.grafana_url = cfg.global_.grafana_url.rstrip("/")
        self.service_labels = cfg.global_.service_labels
        self.silences = SilenceStore()
        integrations = integrations if integrations is not None else build_integrations(cfg.receivers)
        send_resolved = {name: any(i.send_resolved for i in integs) for name, integs in integrations.items()}
        self.dispatcher = Dispatcher(Route(cfg.route), Inhibitor(cfg.inhibit_rules), self.silences,
                                     send_resolved, cfg.global_.external_url)
        self.delivery = Delivery(integrations, self._on_outcome, queue_size, retry, telemetry)
        self._lock = threading.RLock()
        self._wake = threading.Condition(self._lock)
        self._outcomes: list[DeliveryOutcome] = []
        self._outcome_lock = threading.Lock()
        self._pending: dict[str, list] = {}  # fingerprint -> [first event ns, last seen (wall)] for `for:`
        self._scheduler: threading.Thread | None = None
        self._stopping = False
        self._m_matches = self._m_alerts = None
        if telemetry is not None:
            self._m_matches = telemetry.counter("otelproc_alerting_rule_matches_total",
                                                "Rule matches (one per rule, service and pattern per batch)", ("rule",))
            self._m_alerts = telemetry.gauge("otelproc_alerting_active_alerts", "Alerts currently firing")

    # ------------------------------------------------------------------ lifecycle
    def start(self, scheduler: bool = True) -> None:
        self.delivery.start()
        if scheduler and self._scheduler is None:
            self._stopping = False
            self._scheduler = threading.Thread(target=self._run_scheduler, name="alert-scheduler", daemon=True)
            self._scheduler.start()

    def shutdown(self, timeout: float = 5.0) -> None:
        with self._wake:
            self._stopping = True
            self._wake.notify_all()
        if self._scheduler is not None:
            self._scheduler.join(timeout)
            self._scheduler = None
        self.delivery.shutdown(timeout)

    # ------------------------------------------------------------------ evaluation
    def process(self, batch: LogBatch) -> list[Finding]:
        """Evaluate every rule on ``batch``; returns the CRITICAL_MATCH findings the logs rules produced."""
        perf = time.perf_counter()
        now = self.clock()
        log_matches = self.log_rules.evaluate(batch)
        matches = list(log_matches)
        for f in batch.findings:
            for rule in self.finding_rules:
                if rule.matches_finding(f):
                    matches.append((rule, f))
        alerts = []
        if matches:
            with self._lock:
                for rule, f in matches:
                    if self._m_matches is not None:
                        self._m_matches.labels(rule.name).inc()
                    alert = self._make_alert(rule, f, now, perf)
                    if self._passes_for(rule, alert, f, now):
                        alerts.append(alert)
        self._dispatch(alerts, now)
        return [f for _, f in log_matches]

    def tick(self, now: float | None = None) -> list[Notification]:
        """Fire due group timers (the scheduler thread does this; tests call it with a fake clock)."""
        return self._dispatch([], self.clock() if now is None else now)

    def _dispatch(self, alerts: list[Alert], now: float) -> list[Notification]:
        with self._wake:
            if alerts:
                self.dispatcher.ingest(alerts, now)
            notes = self.dispatcher.flush_due(now)
            if self._pending:
                horizon = now - self.resolve_timeout
                for fp in [fp for fp, st in self._pending.items() if st[1] < horizon]:
                    del self._pending[fp]
            if self._m_alerts is not None:
                self._m_alerts.set(sum(a.ends_at > now for a in self.dispatcher.alerts.values()))
            if alerts:
                self._wake.notify()  # a new group may have an earlier deadline
        for n in notes:
            self.delivery.submit(n)
        return notes

    def _make_alert(self, rule: CompiledRule, f: Finding, now: float, perf: float) -> Alert:
        kind = f.kind.value if isinstance(f.kind, FindingKind) else str(f.kind)
        sev = f.severity.value if isinstance(f.severity, Severity) else str(f.severity)
        labels = {**self.service_labels.get(f.service, {}), **f.labels,
                  "alertname": rule.name, "service": f.service, "severity": sev, "kind": kind}
        if f.pattern_id:
            labels["pattern_id"] = str(int(f.pattern_id))
        if rule.source == "logs":  # routes group by incident: a logs rule's alert is its service's own
            labels.setdefault("incident", f.service)
        t_s = f.time_ns / 1e9 if f.time_ns else now
        variables = {"alertname": rule.name, "rule": rule.name, "service": f.service, "kind": kind, "severity": sev,
                     "score": f.score, "observed": f.observed, "expected": f.expected, "lower": f.lower,
                     "upper": f.upper, "pattern_id": str(int(f.pattern_id)) if f.pattern_id else "",
                     "template": f.template, "sample": f.sample, "description": f.description,
                     "count": f.observed if kind == FindingKind.CRITICAL_MATCH.value else 1,
                     "time": iso_time(t_s), "time_ms": int(t_s * 1000), "grafana_url": self.grafana_url,
                     "explanation": explanation_text(f.explanation) if f.explanation else ""}
        for k, t in rule.label_templates.items():
            v = t.render(variables, labels)
            if v:
                labels[k] = v
            else:  # an empty label is an absent label (Alertmanager semantics)
                labels.pop(k, None)
        annotations = {k: t.render(variables, labels) for k, t in rule.annotation_templates.items()}
        annotations.setdefault("description", f.description)
        # which attribute values / patterns carry the finding (otelproc/anomaly/explain.py)
        annotations.setdefault("explanation", variables["explanation"])
        annotations = {k: v for k, v in annotations.items() if v}
        return Alert(labels, annotations, starts_at=now, ends_at=now + self.resolve_timeout,
                     generator_url=annotations.get("dashboard", ""), rule=rule.name, detected_at=perf,
                     event_ns=int(f.time_ns))

    def _passes_for(self, rule: CompiledRule, alert: Alert, f: Finding, now: float) -> bool:
        """``for:``: fire once matches of this alert have kept coming (gaps < resolve_timeout) for ``for`` of event time."""
        if rule.for_s <= 0:
            return True
        active = self.dispatcher.alerts.get(alert.fingerprint)
        if active is not None and active.ends_at > now:
            return True
        st = self._pending.get(alert.fingerprint)
        if st is None:
            self._pending[alert.fingerprint] = [f.time_ns, now]
            return False
        st[1] = now
        return (f.time_ns - st[0]) / 1e9 >= rule.for_s

    def _run_scheduler(self) -> None:
        while True:
            with self._wake:
                if self._stopping:
                    return
                deadline = self.dispatcher.next_deadline()
                now = self.clock()
                wait = SCHEDULER_MAX_SLEEP_S if deadline is None else min(deadline - now, SCHEDULER_MAX_SLEEP_S)
                if wait > 0:
                    self._wake.wait(wait)
                    continue
            try:
                self.tick()
            except Exception:  # keep the timers alive whatever happens
                log.exception("alert scheduler tick failed")

    # ------------------------------------------------------------------ outcomes
    def _on_outcome(self, o: DeliveryOutcome) -> None:
        with self._outcome_lock:
            self._outcomes.append(o)

    def take_outcomes(self) -> list[DeliveryOutcome]:
        with self._outcome_lock:
            out, self._outcomes = self._outcomes, []
        return out

    # ------------------------------------------------------------------ API helpers
    def active_alerts(self) -> list[dict]:
        """Alertmanager API v2 ``GET /api/v2/alerts`` shape."""
        now = self.clock()
        with self._lock:
            firing = [a for a in self.dispatcher.alerts.values() if a.ends_at > now]
            receivers: dict[str, set[str]] = {}
            for g in self.dispatcher.groups.values():
                for fp in g.fingerprints:
                    receivers.setdefault(fp, set()).add(g.route.receiver)
            out = []
            for a in firing:
                silenced, inhibited = self.dispatcher.mute_reason(a, now, firing)
                out.append({"labels": a.labels, "annotations": a.annotations, "fingerprint": a.fingerprint,
                            "startsAt": iso_time(a.starts_at), "endsAt": iso_time(a.ends_at),
                            "generatorURL": a.generator_url,
                            "receivers": [{"name": r} for r in sorted(receivers.get(a.fingerprint, ()))],
                            "status": {"state": "suppressed" if silenced or inhibited else "active",
                                       "silencedBy": silenced, "inhibitedBy": [inhibited] if inhibited else []}})
        return out
