"""otelproc's own telemetry: Prometheus metrics (one registry per running pipeline) and logging.

Metric names follow ``otelproc_<component>_<what>_<unit>``. Components get the
shared :class:`Telemetry` through their creation context and define their
metrics once, at creation. Every registry also carries the standard ``process_*``
metrics (CPU seconds, resident memory, open fds, start time; Linux) and
``otelproc_build_info{version}``, like the Collector's own telemetry.

:class:`MetricsServer` serves ``/metrics``, ``/healthz`` and ``/readyz``;
:func:`setup_logging` configures otelproc's own logs (text or JSON, level from
``service::telemetry::logs``).
"""
from __future__ import annotations

import json
import logging
import sys
import time
from typing import Callable

from prometheus_client import (CollectorRegistry, Counter, Gauge, Histogram, PlatformCollector, ProcessCollector,
                               generate_latest)

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Telemetry:
    """A metrics registry plus helpers; cheap to create (tests create many)."""

    def __init__(self, process_metrics: bool = True) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._metrics: dict[str, object] = {}
        if process_metrics:
            from otelproc import __version__

            # process_cpu_seconds_total, process_resident_memory_bytes, ... (read from /proc at scrape time)
            ProcessCollector(registry=self.registry)
            PlatformCollector(registry=self.registry)
            self.gauge("otelproc_build_info", "otelproc version (value 1)", ("version",)).labels(__version__).set(1)

    def counter(self, name: str, doc: str, labels: tuple[str, ...] = ()) -> Counter:
        return self._get(Counter, name, doc, labels)

    def gauge(self, name: str, doc: str, labels: tuple[str, ...] = ()) -> Gauge:
        return self._get(Gauge, name, doc, labels)

    def histogram(self, name: str, doc: str, labels: tuple[str, ...] = (), buckets=LATENCY_BUCKETS) -> Histogram:
        if name not in self._metrics:
            self._metrics[name] = Histogram(name, doc, labels, registry=self.registry, buckets=buckets)
        return self._metrics[name]  # type: ignore[return-value]

    def _get(self, cls, name, doc, labels):
        # the same metric may be asked for by several instances of one component type
        if name not in self._metrics:
            self._metrics[name] = cls(name, doc, labels, registry=self.registry)
        return self._metrics[name]

    def render(self) -> bytes:
        """Prometheus text exposition of every metric."""
        return generate_latest(self.registry)

    def value(self, name: str, **labels: str) -> float:
        """Current value of a sample (tests, CLI summaries); 0.0 when absent."""
        v = self.registry.get_sample_value(name, labels or None)
        return 0.0 if v is None else v

    def total(self, name: str, **labels: str) -> float:
        """Sum of the samples ``name`` over every label set matching ``labels`` (e.g. all kinds of a
        counter: ``total("otelproc_processor_anomaly_findings_total")``); 0.0 when absent."""
        out = 0.0
        for metric in self.registry.collect():
            for sample in metric.samples:
                if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                    out += sample.value
        return out


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {"ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
               "level": record.levelname.lower(), "logger": record.name, "msg": record.getMessage()}
        if record.exc_info:
            out["error"] = self.formatException(record.exc_info)
        return json.dumps(out)


def setup_logging(level: str = "info", encoding: str = "text") -> None:
    """Configure otelproc's own logs (stderr)."""
    lvl = {"warn": "WARNING"}.get(level, level.upper())
    handler = logging.StreamHandler(sys.stderr)
    if encoding == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger("otelproc")
    root.handlers[:] = [handler]
    root.setLevel(lvl)
    root.propagate = False


class MetricsServer:
    """Serves ``/metrics`` (Prometheus text), ``/healthz`` (process alive) and ``/readyz``
    (pipelines started) on ``address`` (host:port)."""

    def __init__(self, telemetry: Telemetry, address: str, ready: Callable[[], bool]) -> None:
        from otelproc.httpserver import Handler, Server

        class MetricsHandler(Handler):
            def answer(self, method: str) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    return self.send(200, telemetry.render(), "text/plain; version=0.0.4")
                if path == "/healthz":
                    return self.send(200, b'{"status":"ok"}', "application/json")
                if path == "/readyz":
                    ok = bool(ready())
                    return self.send(200 if ok else 503, b'{"status":"ready"}' if ok else b'{"status":"not ready"}',
                                     "application/json")
                self.send(404, b"not found\n", "text/plain")

        self._server = Server(address, MetricsHandler, where="service::telemetry::metrics::address",
                              thread_name="metrics", empty_host="0.0.0.0")
        self.port = self._server.port

    def close(self) -> None:
        self._server.close()
