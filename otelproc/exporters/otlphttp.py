"""The ``otlphttp`` exporter: forwards batches (with otelproc's enrichment as log attributes)
as OTLP/HTTP to another endpoint, so otelproc can sit in the middle of a Collector pipeline.

    exporters:
      otlphttp:
        endpoint: http://collector:4318        # POSTs to <endpoint>/v1/logs
        compression: gzip                      # gzip | none
        encoding: proto                        # proto | json
        headers: {Authorization: "Bearer ${env:TOKEN}"}

Answers are handled as the OTLP spec says: 429/502/503/504 and connection errors
are retried (honouring Retry-After); other 4xx/5xx are permanent.
"""
from __future__ import annotations

import gzip
import http.client
import threading
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlsplit

from otelproc.batch import LogBatch
from otelproc.component import Context, Exporter, Factory, Kind, PermanentError
from otelproc.config import Duration, Secret
from otelproc.encode import encode_json, encode_protobuf
from otelproc.retry import RetryAfter, RetryConfig, call_with_retry

RETRYABLE_STATUS = {429, 502, 503, 504}


@dataclass
class OtlpHttpExporterConfig:
    # base URL; logs go to <endpoint>/v1/logs unless logs_endpoint is set
    endpoint: str = ""
    # full URL for logs, overriding endpoint
    logs_endpoint: str = ""
    compression: Literal["gzip", "none"] = "gzip"
    encoding: Literal["proto", "json"] = "proto"
    # per-request timeout
    timeout: Duration = Duration(10.0)
    # extra request headers (e.g. authorization)
    headers: dict[str, Secret] = field(default_factory=dict)
    retry_on_failure: RetryConfig = field(default_factory=RetryConfig)

    def validate(self) -> list[str]:
        url = self.logs_endpoint or self.endpoint
        if not url:
            return ["endpoint: required (e.g. http://collector:4318)"]
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            return [f"{'logs_endpoint' if self.logs_endpoint else 'endpoint'}: expected an http(s) URL, got {url!r}"]
        if self.timeout <= 0:
            return [f"timeout: must be > 0, got {self.timeout}s"]
        return []

    @property
    def url(self) -> str:
        return self.logs_endpoint or self.endpoint.rstrip("/") + "/v1/logs"


class OtlpHttpExporter(Exporter):
    def __init__(self, name: str, config: OtlpHttpExporterConfig, context: Context):
        super().__init__(name)
        self.config = config
        parts = urlsplit(config.url)
        self._https = parts.scheme == "https"
        self._host, self._port = parts.hostname, parts.port or (443 if self._https else 80)
        self._path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._conn: http.client.HTTPConnection | None = None
        self._stop = threading.Event()
        t = context.telemetry
        self._m_sent = t.counter("otelproc_exporter_sent_log_records", "Log records exported", ("exporter",)) if t else None
        self._m_failed = t.counter("otelproc_exporter_send_failed_log_records", "Log records that failed to export", ("exporter",)) if t else None

    def consume(self, batch: LogBatch) -> None:
        if not len(batch):
            return
        cfg = self.config
        body = encode_json(batch) if cfg.encoding == "json" else encode_protobuf(batch)
        headers = {"Content-Type": "application/json" if cfg.encoding == "json" else "application/x-protobuf"}
        if cfg.compression == "gzip":
            body = gzip.compress(body, compresslevel=1)
            headers["Content-Encoding"] = "gzip"
        headers.update({k: str(v) for k, v in cfg.headers.items()})
        try:
            retry = RetryConfig(enabled=False) if self.retry_in_pipeline else cfg.retry_on_failure
            call_with_retry(lambda: self._post(body, headers), retry, f"{self.name} POST {cfg.url}", self._stop)
        except Exception:
            if self._m_failed:
                self._m_failed.labels(self.name).inc(len(batch))
            raise
        if self._m_sent:
            self._m_sent.labels(self.name).inc(len(batch))

    def _post(self, body: bytes, headers: dict[str, str]) -> None:
        if self._conn is None:
            cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
            self._conn = cls(self._host, self._port, timeout=float(self.config.timeout))
        try:
            self._conn.request("POST", self._path, body=body, headers=headers)
            resp = self._conn.getresponse()
            payload = resp.read()
        except (OSError, http.client.HTTPException):
            self._conn.close()
            self._conn = None
            raise
        if resp.status == 200:
            return
        message = f"HTTP {resp.status} from {self.config.url}: {payload[:200]!r}"
        if resp.status in RETRYABLE_STATUS:
            retry_after = resp.headers.get("Retry-After")
            if retry_after and retry_after.isdigit():
                raise RetryAfter(message, float(retry_after))
            raise ConnectionError(message)
        raise PermanentError(message)

    def stop_retrying(self) -> None:
        self._stop.set()

    def shutdown(self) -> None:
        self._stop.set()
        if self._conn is not None:
            self._conn.close()
            self._conn = None


factory = Factory(type="otlphttp", kind=Kind.EXPORTER, config_class=OtlpHttpExporterConfig,
                  create=lambda name, config, next_consumer, context: OtlpHttpExporter(name, config, context))
