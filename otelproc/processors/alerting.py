"""``alerting`` processor: the fast alerting path, after the patterns and anomaly processors.

For each batch it evaluates the critical-pattern rules on the records and the
findings rules on ``batch.findings`` (otelproc.alerting.engine), lets the
router group / mute / deduplicate, and hands notifications to delivery workers
(never blocking). It adds the CRITICAL_MATCH findings it produced to the batch,
attaches the delivery outcomes that arrived since the previous batch as rows of
the ``alerts`` table, and passes the batch on.

    processors:
      alerting:
        rules_file: alerts.yaml          # beside the config file; empty: the shipped rules
        api_endpoint: 127.0.0.1:9095    # silences / alerts API; empty = off
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from otelproc.batch import LogBatch
from otelproc.component import Context, Factory, Kind, Processor
from otelproc.config import ConfigError, ConfigRelativePath, Duration, setting
from otelproc.httpserver import parse_endpoint
from otelproc import defaults
from otelproc.telemetry import Telemetry
from otelproc.alerting.engine import AlertEngine, outcomes_to_arrow
from otelproc.alerting.notifiers import delivery_retry
from otelproc.alerting.rules import load_alerts_file

log = logging.getLogger("otelproc.alerting")

DEFAULT_QUEUE_SIZE = 1000
DEFAULT_MAX_ELAPSED_TIME = Duration(10.0)
DEFAULT_INITIAL_BACKOFF = Duration(0.1)
DEFAULT_MAX_BACKOFF = Duration(5.0)
DEFAULT_SHUTDOWN_TIMEOUT = Duration(5.0)
ALERTS_TABLE = "alerts"


@dataclass
class AlertingConfig:
    # the alert rules, routes and receivers (otelproc/alerting/README.md); a relative path is relative to
    # the config file's directory; empty: the rules shipped with otelproc (otelproc/defaults/alerts.yaml)
    rules_file: ConfigRelativePath = ConfigRelativePath("")
    # host:port of the silences / alerts HTTP API (Alertmanager v2 paths); empty disables it
    api_endpoint: str = ""
    # notifications queued per receiver integration; beyond it they are dropped (and recorded)
    queue_size: int = setting(DEFAULT_QUEUE_SIZE, ge=1)
    # a notification is retried (transient failures only) with doubling waits from initial_backoff up to
    # max_backoff, for at most max_elapsed_time (otelproc.retry)
    initial_backoff: Duration = setting(DEFAULT_INITIAL_BACKOFF, gt=0)
    max_backoff: Duration = DEFAULT_MAX_BACKOFF
    max_elapsed_time: Duration = setting(DEFAULT_MAX_ELAPSED_TIME, ge=0, hint="0 = until shutdown")
    # how long shutdown waits for queued notifications
    shutdown_timeout: Duration = setting(DEFAULT_SHUTDOWN_TIMEOUT, ge=0)

    def validate(self) -> list[str]:
        out = []
        try:
            load_alerts_file(self.rules_path())
        except ConfigError as e:
            out.extend(f"rules_file: {err}" for err in e.errors)
        if self.api_endpoint:
            try:
                parse_endpoint(self.api_endpoint, empty_host="127.0.0.1")
            except ValueError as e:
                out.append(f"api_endpoint: must be host:port: {e}")
        if self.max_backoff is not None and self.initial_backoff is not None and self.max_backoff < self.initial_backoff:
            out.append(f"max_backoff: must be >= initial_backoff ({self.initial_backoff}s), got {self.max_backoff}s")
        return out

    def rules_path(self) -> str:
        """The rules file to load: ``rules_file``, or the shipped rules when it is empty."""
        return self.rules_file or str(defaults.ALERT_RULES)


class AlertingProcessor(Processor):
    def __init__(self, name: str, cfg: AlertingConfig, next_consumer: Any, telemetry: Telemetry | None = None,
                 engine: AlertEngine | None = None):
        super().__init__(name, next_consumer)
        self.cfg = cfg
        self.telemetry = telemetry or Telemetry()
        self.engine = engine or AlertEngine(
            load_alerts_file(cfg.rules_path()), queue_size=cfg.queue_size,
            retry=delivery_retry(float(cfg.initial_backoff), float(cfg.max_backoff), float(cfg.max_elapsed_time)),
            telemetry=self.telemetry)
        self.api = None
        self._errors = self.telemetry.counter("otelproc_alerting_errors_total",
                                              "Batches whose alert evaluation failed (the batch still passes on)")
        self._duration = self.telemetry.histogram("otelproc_alerting_duration_seconds",
                                                  "Rule evaluation and routing time per batch", ("processor",))
        self._started = False

    def start(self) -> None:
        if self._started:
            return
        # import pyarrow and build the alerts schema now, not inside the first consume() (~0.4 s once)
        outcomes_to_arrow([])
        self.engine.start()
        if self.cfg.api_endpoint:
            from otelproc.alerting.api import AlertAPI

            self.api = AlertAPI(self.engine, self.cfg.api_endpoint)
            self.api.start()
        self._started = True

    def consume(self, batch: LogBatch) -> None:
        t0 = time.perf_counter()
        try:
            critical = self.engine.process(batch)
            if critical:
                batch = batch.with_findings(critical)
        except Exception:  # alerting must never lose the logs themselves
            self._errors.inc()
            log.exception("alert evaluation failed for a batch of %d records", len(batch))
        self._duration.labels(self.name).observe(time.perf_counter() - t0)
        outcomes = self.engine.take_outcomes()
        if outcomes:
            batch = batch.with_table(ALERTS_TABLE, outcomes_to_arrow(outcomes))
        self.next_consumer.consume(batch)

    def shutdown(self) -> None:
        if not self._started:
            return
        self._started = False
        if self.api is not None:
            self.api.shutdown()
            self.api = None
        self.engine.shutdown(float(self.cfg.shutdown_timeout))
        outcomes = self.engine.take_outcomes()
        if outcomes:  # the last deliveries still reach the alerts table
            try:
                self.next_consumer.consume(LogBatch.empty().with_table(ALERTS_TABLE, outcomes_to_arrow(outcomes)))
            except Exception:
                log.exception("could not pass the last %d alert delivery outcomes downstream", len(outcomes))


def _create(name: str, cfg: AlertingConfig, next_consumer: Any, context: Context | None = None) -> AlertingProcessor:
    return AlertingProcessor(name, cfg, next_consumer, context.telemetry if context is not None else None)


factory = Factory(type="alerting", kind=Kind.PROCESSOR, config_class=AlertingConfig, create=_create)
