"""``loki``: Loki's HTTP read API over otelproc's store, so Grafana's Loki data source (Explore, Logs
Drilldown with its Patterns tab, alert rules) and any Loki client read otelproc directly.

    extensions:
      loki:
        endpoint: 127.0.0.1:3100          # Loki's port; 0.0.0.0:3100 for a Grafana container
        exporter: clickhouse              # whose store to read (embedded chdb:// or a ClickHouse server)
        auth: {bearer_token: ${env:OTELPROC_LOKI_TOKEN}}   # optional, as the receivers
    service:
      extensions: [loki]

Read-only: it only runs SELECTs it generates from LogQL (values bound as parameters).

Endpoints (GET, or POST with a form body): ``/loki/api/v1/query_range``, ``/query``, ``/labels``,
``/label/<name>/values``, ``/series``, ``/index/stats``, ``/index/volume``, ``/index/volume_range``,
``/detected_labels``, ``/detected_fields``, ``/detected_field/<name>/values``, ``/patterns``,
``/status/buildinfo``, plus ``/ready``. LogQL answered: stream selectors (``= != =~ !~``), line
filters (``|= != |~ !~`` and the pattern filters ``|> !>``, with ``or``), ``| json``, ``| logfmt``,
``| pattern``, label filters (string and number, ``and``/``or``/``,``), ``| drop``, ``| keep``,
``| line_format`` with ``{{.label}}`` references; ``count_over_time``, ``rate``, ``bytes_over_time``,
``bytes_rate`` (with ``offset``); ``sum count min max avg topk bottomk`` with ``by``/``without``;
``vector()``, numbers and ``+ - * / % ^``. Anything else is answered 400 ``parse error ...`` naming
what is not supported. How labels map onto the table: :mod:`otelproc.extensions.loki.sql`. Not
served: push, tail, rules, delete; the ``interval`` parameter of log queries is ignored. A line that a
parser cannot read gets no labels from it instead of ``__error__`` (so ``| __error__=""`` keeps it).

Patterns come from ``pattern_counts`` (every line counted at ingest, per minute, kept as long as
the store keeps data) with the partial minutes at either end of the range counted from
``otel_logs``, so counts are exact over any range; selectors on other labels or with pipeline
stages count ``otel_logs`` by ``PatternId`` directly.

Metrics: otelproc_loki_requests_total{extension,endpoint,status}, otelproc_loki_duration_seconds{extension,endpoint}.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Mapping
from urllib.parse import parse_qs, unquote, urlsplit

from otelproc.component import Context, Extension, Factory, Kind
from otelproc.config import ByteSize, Duration, setting
from otelproc.extensions import clickhouse_exporter_config, store_listener_problems
from otelproc.httpserver import Handler, Server, compress, decompress, response_encoding
from otelproc.extensions.loki.api import APIError, Limits, LokiAPI
from otelproc.extensions.loki.sql import LOKI_INDEX_LABELS
from otelproc.receivers.otlp import AuthConfig

__all__ = ["LokiConfig", "LokiExtension", "factory"]

log = logging.getLogger("otelproc.extensions.loki")

DEFAULT_ENDPOINT = "127.0.0.1:3100"
MAX_REQUEST_BODY = 1 << 20      # form-encoded POST bodies (queries), as sent and decompressed; Loki's are small too
_PREFIX = "/loki/api/v1/"


@dataclass
class LokiConfig:
    # host:port to listen on (Loki's port 3100; 0.0.0.0:3100 to reach it from a Grafana container)
    endpoint: str = DEFAULT_ENDPOINT
    # id of the clickhouse exporter whose store (embedded or server) is read
    exporter: str = "clickhouse"
    # clients must send "Authorization: Bearer <token>" when set (as the receivers' auth)
    auth: AuthConfig = field(default_factory=AuthConfig)
    # most log lines one query may return (Loki's max_entries_limit_per_query)
    max_entries: int = setting(5000, ge=1)
    # most series one metric query, /series or volume may return (Loki's max_query_series)
    max_series: int = setting(500, ge=1)
    # bytes ClickHouse may read for one query (0 = no limit); a larger query fails with a 400
    max_bytes_read: ByteSize = setting(ByteSize(0), ge=0, hint="0 = no limit")
    # a query running longer is cancelled and answered 504 (Loki's query_timeout)
    timeout: Duration = setting(Duration(60.0), gt=0)
    # resource attributes that are stream labels (the rest is structured metadata); Loki's default list
    index_labels: list[str] = field(default_factory=lambda: list(LOKI_INDEX_LABELS))

    def validate(self) -> list[str]:
        return store_listener_problems(self.endpoint, self.exporter) + [f"auth::{m}" for m in self.auth.validate()]

    def limits(self) -> Limits:
        return Limits(max_entries=self.max_entries, max_series=self.max_series,
                      max_bytes_read=int(self.max_bytes_read), timeout_s=float(self.timeout))


@dataclass
class Response:
    status: int
    body: bytes
    content_type: str = "application/json; charset=utf-8"


def _json(status: int, doc: Any) -> Response:
    return Response(status, json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode())


def _error(status: int, message: str) -> Response:
    # Loki answers errors as text (Grafana shows the body when it is not JSON with a "message")
    return Response(status, (message.rstrip() + "\n").encode(), "text/plain; charset=utf-8")


class LokiExtension(Extension):
    """Serves Loki's read API over the store of ``config.exporter``; see the module docstring."""

    def __init__(self, name: str, config: LokiConfig, context: Context | None = None):
        super().__init__(name)
        self.config = config
        self.context = context or Context()
        self.api: LokiAPI | None = None
        self._store = None
        self._server: Server | None = None
        tel = self.context.telemetry
        self._m = None
        if tel is not None:
            self._m = dict(
                requests=tel.counter("otelproc_loki_requests", "Requests to the Loki read API",
                                     ("extension", "endpoint", "status")),
                latency=tel.histogram("otelproc_loki_duration_seconds", "Time to answer one Loki API request",
                                      ("extension", "endpoint")),
            )

    @property
    def address(self) -> tuple[str, int]:
        if self._server is None:
            raise RuntimeError(f"extension {self.name}: not started")
        return self._server.host, self._server.port

    def start(self) -> None:
        from otelproc.store import open_store

        exp = clickhouse_exporter_config(self.context.config, self.name, self.config.exporter)
        args = dict(tls=exp.tls_options(), timeout=float(exp.timeout), settings=exp.connection_params or None)
        if self.context.stores is not None:   # the exporter's own shared store (one chDB engine per process)
            store = self.context.stores.get(exp.endpoint, exp.database, exp.username, exp.password, **args)
        else:
            store = open_store(exp.endpoint, exp.database, exp.username, str(exp.password), **args)
        self._store = store
        self.api = LokiAPI(store, logs_table=exp.logs_table_name, limits=self.config.limits(),
                           index_labels=self.config.index_labels)
        try:
            handler = type("_BoundHandler", (_Handler,), {"extension": self})
            self._server = Server(self.config.endpoint, handler, where=f"extension {self.name}",
                                  thread_name=f"loki-{self.name}")
        except BaseException:
            self._store, self.api = None, None
            store.close()
            raise
        h, p = self.address
        log.info("%s: Loki read API on http://%s:%d/loki/api/v1 (store %s, database %s%s)", self.name, h, p,
                 store.endpoint, store.database, ", bearer token required" if self.config.auth.bearer_token else "")

    def shutdown(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        store, self._store = self._store, None
        self.api = None
        if store is not None:
            store.close()

    # -- requests ----------------------------------------------------------------------------

    def handle(self, method: str, target: str, headers: Mapping[str, str], body: bytes) -> Response:
        """Answer one request (``headers`` with lower-case names). Never raises."""
        t0 = time.perf_counter()
        url = urlsplit(target)
        path = url.path.rstrip("/") or "/"
        endpoint = path[len(_PREFIX):] if path.startswith(_PREFIX) else path
        if endpoint.startswith("label/"):
            endpoint_name = "label_values"
        elif endpoint.startswith("detected_field/"):
            endpoint_name = "detected_field_values"
        else:
            endpoint_name = endpoint if path.startswith(_PREFIX) or path == "/ready" else "other"
        try:
            resp = self._dispatch(method, path, endpoint, url.query, headers, body)
        except APIError as e:
            resp = _error(e.status, str(e))
        except Exception as e:  # noqa: BLE001 - a bug must not take the server down or show a traceback
            log.error("%s: %s %s failed: %s: %s", self.name, method, path, type(e).__name__, e)
            log.debug("%s: traceback", self.name, exc_info=True)
            resp = _error(500, f"internal error answering {path}: {type(e).__name__}: {e}")
        if self._m is not None:
            self._m["requests"].labels(self.name, endpoint_name, str(resp.status)).inc()
            self._m["latency"].labels(self.name, endpoint_name).observe(time.perf_counter() - t0)
        return resp

    def _dispatch(self, method: str, path: str, endpoint: str, query: str, headers: Mapping[str, str],
                  body: bytes) -> Response:
        if path == "/ready":
            return Response(200, b"ready\n", "text/plain; charset=utf-8")
        if not path.startswith(_PREFIX):
            raise APIError(404, f"404 page not found: {path} (otelproc serves Loki's read API under {_PREFIX})")
        if not self.config.auth.admits(headers.get("authorization")):
            raise APIError(401, "missing or invalid bearer token (send Authorization: Bearer <token>)")
        if method not in ("GET", "POST"):
            raise APIError(405, f"method {method} not allowed; use GET or POST")
        params = parse_qs(query, keep_blank_values=True)
        if method == "POST" and body:
            ctype = headers.get("content-type", "application/x-www-form-urlencoded").lower()
            if "application/x-www-form-urlencoded" not in ctype:
                raise APIError(400, f"unsupported Content-Type {ctype!r} for a POST; send the parameters form "
                                    f"encoded (application/x-www-form-urlencoded)")
            try:
                form = parse_qs(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
            except UnicodeDecodeError:
                raise APIError(400, "the request body is not UTF-8") from None
            for k, v in form.items():
                params.setdefault(k, []).extend(v)
        api = self.api
        if api is None:
            raise APIError(503, "the Loki API is shutting down")
        categorize = "categorize-labels" in headers.get("x-loki-response-encoding-flags", "")
        if endpoint == "query_range":
            return _json(200, api.query_range(params, categorize=categorize))
        if endpoint == "query":
            return _json(200, api.query(params, categorize=categorize))
        if endpoint == "labels":
            return _json(200, api.labels(params))
        if endpoint.startswith("label/") and endpoint.endswith("/values"):
            return _json(200, api.label_values(unquote(endpoint[len("label/"):-len("/values")]), params))
        if endpoint == "series":
            return _json(200, api.series(params))
        if endpoint == "index/stats":
            return _json(200, api.index_stats(params))
        if endpoint == "index/volume":
            return _json(200, api.index_volume(params))
        if endpoint == "index/volume_range":
            return _json(200, api.index_volume_range(params))
        if endpoint == "detected_labels":
            return _json(200, api.detected_labels(params))
        if endpoint == "detected_fields":
            return _json(200, api.detected_fields(params))
        if endpoint.startswith("detected_field/") and endpoint.endswith("/values"):
            return _json(200, api.detected_field_values(unquote(endpoint[len("detected_field/"):-len("/values")]),
                                                        params))
        if endpoint == "patterns":
            return _json(200, api.patterns(params))
        if endpoint == "status/buildinfo":
            from otelproc import __version__

            return _json(200, LokiAPI.buildinfo(__version__))
        raise APIError(404, f"{path}: not part of otelproc's Loki read API (push, tail, rules and delete are not "
                            f"served)")


class _Handler(Handler):
    """HTTP/1.1 framing only; LokiExtension.handle() decides the answer."""

    extension: LokiExtension
    server_version = "otelproc-loki"
    timeout = 60

    def refuse(self, status: int, message: str, reason: str = "") -> None:
        self._send(_error(status, message))

    def answer(self, method: str) -> None:
        body = b""
        if method == "POST":
            body = decompress(self.read_body(MAX_REQUEST_BODY), self.headers.get("Content-Encoding"),
                              MAX_REQUEST_BODY)
        headers = {k.lower(): v for k, v in self.headers.items()}
        self._send(self.extension.handle(method, self.path, headers, body))

    def _send(self, resp: Response) -> None:
        payload, headers = resp.body, {}
        if len(payload) > 1024 and response_encoding(self.headers.get("Accept-Encoding"), ("gzip",)):
            payload, headers["Content-Encoding"] = compress(payload, "gzip"), "gzip"
        if resp.status == 401:
            headers["WWW-Authenticate"] = 'Bearer realm="otelproc"'
        self.send(resp.status, payload, resp.content_type, headers)


def _create(name: str, config: LokiConfig, next_consumer: Any = None, context: Context | None = None) -> LokiExtension:
    return LokiExtension(name, config, context)


factory = Factory(type="loki", kind=Kind.EXTENSION, config_class=LokiConfig, create=_create, stability="alpha")
