"""``clickhouse_query``: a read-only ClickHouse-compatible HTTP endpoint over the embedded chDB store.

chDB has no server mode, and a second process cannot open the store's directory while
otelproc runs. This extension lets Grafana's ClickHouse plugin (HTTP protocol, clickhouse-go),
clickhouse-connect, @clickhouse/client and ``otelproc sql`` / the CLI views query the embedded
store through the process that owns it (config/otelproc.yaml turns it on):

    extensions:
      clickhouse_query:
        endpoint: 127.0.0.1:8123          # host:port to listen on
        exporter: clickhouse              # whose store to serve (a clickhouse exporter id)
        username: grafana
        password: ${env:OTELPROC_QUERY_PASSWORD}   # empty: no credentials, on a loopback address only
    service:
      extensions: [clickhouse_query]      # off unless listed here

Once listening it writes ``<store>/otelproc-query-endpoint.json`` (otelproc.store.running), by which
the CLI finds it. A clickhouse exporter that writes to a server leaves the extension off (logged).

Read-only twice over: every statement runs on a chDB connection opened with ``readonly=1``
(ClickHouse itself refuses writes, DDL, ``SET``, and the file()/url() table functions), and
statements that do not start with SELECT, WITH, SHOW, DESCRIBE/DESC, EXISTS or EXPLAIN, or that
hold more than one statement, are refused before they reach the engine.

What it speaks (docs/grafana.md has the full list): ``POST /`` with the query in the body or
``?query=``, ``GET /?query=``, ``/ping``; ``database``, ``default_format``, ``query_id``,
``param_<name>`` (server-side parameters), ``wait_end_of_query`` (answers are always whole) and
ClickHouse settings as URL parameters (unknown names refused as UNKNOWN_SETTING); credentials as
``X-ClickHouse-User``/``X-ClickHouse-Key`` headers, HTTP basic auth or ``user``/``password`` URL
parameters; ``client_protocol_version`` > 0 (clickhouse-go sends 54460): Native at that revision
(native_revision.py); request bodies in gzip, deflate, zstd or lz4 (frames), decompressed up to
``max_request_size``; gzip/deflate/zstd/lz4 responses when the client sends
``enable_http_compression=1`` and accepts one. Errors come back the way ClickHouse sends them (its
status per code, ``X-ClickHouse-Exception-Code`` and a ``Code: N. DB::Exception: ... (NAME)`` body).
Not supported: ClickHouse block compression (``compress=1``/``decompress=1``), sessions
(``session_id`` is ignored: every request gets a fresh connection), external data, progress headers.

Metrics: otelproc_query_requests_total{extension,status},
otelproc_query_duration_seconds{extension}.
"""
from __future__ import annotations

import base64
import hmac
import ipaddress
import json
import logging
import os
import re
import time
import uuid
from dataclasses import dataclass
from typing import Any, Mapping
from urllib.parse import parse_qsl, urlencode, urlsplit

from otelproc.component import Context, Extension, Factory, Kind
from otelproc.config import ByteSize, Duration, Secret, setting
from otelproc.extensions import clickhouse_exporter_config, store_listener_problems
from otelproc.httpserver import BodyError, Handler, Server, compress, decompress, parse_endpoint, response_encoding
from otelproc.extensions.native_revision import NativeFormatError, has_plain_datetime, native_at_revision
from otelproc.store import output_format_clause, without_format_clause
from otelproc.store.running import ENDPOINT_FILE, local_url, remove_endpoint_file, write_endpoint_file

__all__ = ["QueryEndpointConfig", "QueryEndpoint", "QueryResponse", "check_read_only",
           "READ_ONLY_STATEMENTS", "factory"]

log = logging.getLogger("otelproc.extensions.query_endpoint")

# Config defaults
DEFAULT_ENDPOINT = "127.0.0.1:8123"      # ClickHouse's own HTTP port, on loopback only
DEFAULT_EXPORTER = "clickhouse"
DEFAULT_USERNAME = "default"             # ClickHouse's and clickhouse-connect's default user name
DEFAULT_MAX_RESULT_ROWS = 1_000_000
DEFAULT_MAX_EXECUTION_TIME = Duration(60.0)   # the Grafana plugin's default query timeout
DEFAULT_MAX_REQUEST_SIZE = ByteSize(16 * 1024 * 1024)

READ_ONLY_STATEMENTS = ("SELECT", "WITH", "SHOW", "DESCRIBE", "DESC", "EXISTS", "EXPLAIN")

# ClickHouse error codes used by this endpoint (src/Common/ErrorCodes.cpp)
_CODE_BAD_ARGUMENTS = 36
_CODE_UNKNOWN_FORMAT = 73
_CODE_READONLY = 164
_CODE_AUTHENTICATION_FAILED = 516
_CODE_QUERY_TOO_LARGE = 229     # QUERY_IS_TOO_LARGE: the body (the query) beyond max_request_size
_CODE_CANNOT_DECOMPRESS = 271
_CODE_UNSUPPORTED = 48          # NOT_IMPLEMENTED
_CODE_CANNOT_PARSE = 27
_CODE_UNKNOWN_SETTING = 115
_CODE_INTERNAL = 1001           # STD_EXCEPTION: a fault of this endpoint, not of the request
_CODE_NAMES = {
    _CODE_BAD_ARGUMENTS: "BAD_ARGUMENTS", _CODE_UNKNOWN_FORMAT: "UNKNOWN_FORMAT", _CODE_READONLY: "READONLY",
    _CODE_AUTHENTICATION_FAILED: "AUTHENTICATION_FAILED", _CODE_QUERY_TOO_LARGE: "QUERY_IS_TOO_LARGE",
    _CODE_CANNOT_DECOMPRESS: "CANNOT_DECOMPRESS", _CODE_UNSUPPORTED: "NOT_IMPLEMENTED",
    _CODE_CANNOT_PARSE: "CANNOT_PARSE_INPUT_ASSERTION_FAILED", _CODE_INTERNAL: "STD_EXCEPTION",
    _CODE_UNKNOWN_SETTING: "UNKNOWN_SETTING",
}

# HTTP status per ClickHouse error code, ClickHouse's own table (src/Server/HTTP/exceptionCodeToHTTPStatus.cpp);
# every other code is 500 (READONLY included)
_HTTP_STATUS = {
    194: 401,                                                               # REQUIRED_PASSWORD
    192: 403, 193: 403, _CODE_AUTHENTICATION_FAILED: 403, 512: 403,         # unknown user, wrong password...
    **dict.fromkeys((36, 427, 6, 25, 26, 38, 41, 72, 441, 27, 376, 15, 44, 37, 123, 8, 167, 168, 223, 62, 117, 53,
                     321), 400),                                            # bad arguments, parse and syntax errors
    **dict.fromkeys((60, 46, 47, 50, 56, 81, 115, 152, 63, 73, 336, 78, 511), 404),  # unknown table, column...
    _CODE_QUERY_TOO_LARGE: 413,
    _CODE_UNSUPPORTED: 501,
    209: 503, 76: 503, 439: 503,                                            # socket timeout, cannot open file
    381: 411,                                                               # HTTP_LENGTH_REQUIRED
    159: 408,                                                               # TIMEOUT_EXCEEDED
}

# URL parameters that are part of the HTTP protocol, not ClickHouse settings
_TRANSPORT_PARAMS = frozenset({
    "query", "database", "default_format", "session_id", "session_timeout", "session_check", "query_id",
    "user", "password", "compress", "decompress", "enable_http_compression", "http_zlib_compression_level",
    "wait_end_of_query", "send_progress_in_http_headers", "http_headers_progress_interval_ms",
    "client_protocol_version", "quota_key", "buffer_size", "add_http_cors_header", "http_response_buffer_size",
    "cancel_http_readonly_queries_on_client_close", "http_write_exception_in_output_format",
    "output_format_parallel_formatting",
})
# settings this endpoint decides; a client may only lower the numeric limits
_LIMIT_SETTINGS = ("max_result_rows", "max_execution_time")
_SETTING_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_IDENTIFIER_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_FORMAT_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9]*$")
# chdb.Connection.query() formats that are Python conversions, not ClickHouse output formats
_CHDB_ONLY_FORMATS = frozenset({"dataframe", "arrowtable", "debug"})
_CODE_RE = re.compile(r"Code:\s*(\d+)")
_CONTENT_TYPES = {
    "tabseparated": "text/tab-separated-values; charset=UTF-8",
    "tsv": "text/tab-separated-values; charset=UTF-8",
    "csv": "text/csv; charset=UTF-8",
    "csvwithnames": "text/csv; charset=UTF-8",
}


# --------------------------------------------------------------------------- config

def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and localhost."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass
class QueryEndpointConfig:
    # host:port to listen on; 0.0.0.0:8123 to reach it from other hosts (e.g. a Grafana container)
    endpoint: str = DEFAULT_ENDPOINT
    # id of the clickhouse exporter whose embedded store (endpoint chdb://...) is served
    exporter: str = DEFAULT_EXPORTER
    # the one user this endpoint knows; give Grafana these credentials
    username: str = DEFAULT_USERNAME
    # empty: no credentials checked, allowed only on a loopback address (or with allow_anonymous)
    password: Secret = Secret("")
    # accept every request without checking credentials, on any address
    allow_anonymous: bool = False
    # a query whose result has more rows fails (ClickHouse max_result_rows, result_overflow_mode=throw)
    max_result_rows: int = setting(DEFAULT_MAX_RESULT_ROWS, ge=1)
    # a query running longer is cancelled (ClickHouse max_execution_time)
    max_execution_time: Duration = setting(DEFAULT_MAX_EXECUTION_TIME, gt=0)
    # largest request body (query text) accepted
    max_request_size: ByteSize = DEFAULT_MAX_REQUEST_SIZE

    @property
    def anonymous(self) -> bool:
        """No credentials checked: allow_anonymous, or no password on a loopback address (like
        ClickHouse's passwordless ``default`` user, which listens on localhost only)."""
        if self.allow_anonymous:
            return True
        if self.password:
            return False
        try:
            return is_loopback(parse_endpoint(self.endpoint)[0])
        except ValueError:
            return False

    def validate(self) -> list[str]:
        out = store_listener_problems(self.endpoint, self.exporter)
        if self.allow_anonymous and self.password:
            out.append("allow_anonymous: cannot be combined with a password; remove one of them")
        elif not self.password and not self.anonymous and not out:
            out.append(f"password: required when listening on {self.endpoint}, which is not a loopback address "
                       f"(set it from the environment, e.g. ${{env:OTELPROC_QUERY_PASSWORD}}), or set "
                       f"allow_anonymous: true to let anyone who reaches the port read the store")
        if self.password and not self.username:
            out.append("username: required with a password")
        if self.max_request_size < 1024:
            out.append(f"max_request_size: must be at least 1KiB, got {int(self.max_request_size)} bytes")
        return out


# --------------------------------------------------------------------------- statement check

def _skip_space_and_comments(sql: str, i: int) -> int:
    n = len(sql)
    while i < n:
        c = sql[i]
        if c.isspace():
            i += 1
        elif sql.startswith("--", i) or c == "#":
            j = sql.find("\n", i)
            i = n if j < 0 else j + 1
        elif sql.startswith("/*", i):
            j = sql.find("*/", i + 2)
            i = n if j < 0 else j + 2
        else:
            break
    return i


def _has_second_statement(sql: str) -> bool:
    """True if a ``;`` outside quotes and comments is followed by more code."""
    i, n = 0, len(sql)
    while i < n:
        c = sql[i]
        if c in "'\"`":
            j = i + 1
            while j < n and sql[j] != c:
                j += 2 if sql[j] == "\\" else 1
            i = j + 1
        elif sql.startswith("--", i) or c == "#" or sql.startswith("/*", i):
            i = _skip_space_and_comments(sql, i)
        elif c == ";":
            return _skip_space_and_comments(sql, i + 1) < n
        else:
            i += 1
    return False


def check_read_only(sql: str) -> str | None:
    """Why ``sql`` is refused by the read-only endpoint, or None if it may run.

    Allowed: one statement starting (after comments and opening parentheses) with SELECT, WITH,
    SHOW, DESCRIBE, DESC, EXISTS or EXPLAIN. The engine's ``readonly=1`` is the second line of
    defence (it also refuses table functions that reach files or the network).
    """
    i = _skip_space_and_comments(sql, 0)
    while i < len(sql) and sql[i] == "(":
        i = _skip_space_and_comments(sql, i + 1)
    m = re.match(r"[A-Za-z]+", sql[i:])
    if not m:
        return "empty query" if i >= len(sql) else f"cannot parse the statement at {sql[i:i + 20]!r}"
    word = m.group(0).upper()
    if word not in READ_ONLY_STATEMENTS:
        return (f"{word} is not allowed: this endpoint is read-only "
                f"(allowed: {', '.join(READ_ONLY_STATEMENTS)})")
    if _has_second_statement(sql):
        return "multi-statement queries are not allowed; send one statement per request"
    return None


# --------------------------------------------------------------------------- request handling

@dataclass
class QueryResponse:
    """What to send back: HTTP status, headers, body (uncompressed)."""

    status: int
    headers: dict[str, str]
    body: bytes


class _ClientError(Exception):
    def __init__(self, code: int, message: str, status: int | None = None):
        super().__init__(message)
        self.code = code
        self.status = status or _HTTP_STATUS.get(code, 500)


# ClickHouse error code for each way a request body is refused
_BODY_ERROR_CODES = {"too_large": _CODE_QUERY_TOO_LARGE, "corrupt": _CODE_CANNOT_DECOMPRESS,
                     "unsupported": _CODE_UNSUPPORTED, "malformed": _CODE_CANNOT_PARSE}


def _error_body(code: int, message: str, version: str) -> bytes:
    """ClickHouse's exception text: ``Code: N. DB::Exception: message. (NAME) (version V)``."""
    if message.startswith("Code:"):  # an engine error, already in that form
        return (message.rstrip() + "\n").encode()
    name = _CODE_NAMES.get(code, "")
    return (f"Code: {code}. DB::Exception: {message.rstrip('.')}."
            f"{f' ({name})' if name else ''} (version {version})\n").encode()


class _Engine:
    """Runs statements on fresh read-only chDB connections to the engine's path."""

    def __init__(self, path: str, database: str, config: QueryEndpointConfig):
        from otelproc.store.embedded import import_chdb

        chdb = self._chdb = import_chdb()
        self.path = path
        self.database = database
        self.config = config
        probe = chdb.connect(path)
        try:
            version, tz = probe.query("SELECT version(), timezone()", "TabSeparated").bytes().decode().split("\t")
            # chDB ignores unknown names in its connection string; a server refuses them (UNKNOWN_SETTING)
            self.settings = frozenset(probe.query("SELECT name FROM system.settings",  # aliases included
                                                  "TabSeparated").bytes().decode().split())
        finally:
            probe.close()
        self.version, self.timezone = version.strip(), tz.strip()

    def connect(self, settings: Mapping[str, str]):
        cfg = self.config
        fixed = {"readonly": "1", "result_overflow_mode": "throw",
                 "max_result_rows": str(cfg.max_result_rows),
                 "max_execution_time": str(int(max(1, round(float(cfg.max_execution_time)))))}
        merged = dict(settings)
        for key in _LIMIT_SETTINGS:
            client = merged.pop(key, None)
            if client is not None:
                try:
                    if 0 < float(client) < float(fixed[key]):
                        fixed[key] = client
                except ValueError:
                    raise _ClientError(_CODE_BAD_ARGUMENTS, f"setting {key} must be a number, got {client!r}") from None
        merged.update(fixed)
        return self._chdb.connect(f"{self.path}?{urlencode(merged)}")


class QueryEndpoint(Extension):
    """Serves the embedded store of ``config.exporter`` over HTTP; see the module docstring."""

    def __init__(self, name: str, config: QueryEndpointConfig, context: Context | None = None):
        super().__init__(name)
        self.config = config
        self.context = context or Context()
        self._server: Server | None = None
        self._engine: _Engine | None = None
        self._engine_path: str | None = None
        tel = self.context.telemetry
        self._m = None
        if tel is not None:
            self._m = dict(
                requests=tel.counter("otelproc_query_requests", "Requests to the ClickHouse query endpoint",
                                     ("extension", "status")),
                latency=tel.histogram("otelproc_query_duration_seconds", "Time to answer one query",
                                      ("extension",)),
            )

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def address(self) -> tuple[str, int]:
        """(host, port) actually listened on (the port is chosen by the OS when configured as 0)."""
        if self._server is None:
            raise RuntimeError(f"extension {self.name}: not started")
        return self._server.host, self._server.port

    def _store_location(self) -> tuple[str, str] | None:
        """(chDB path, database) of the configured exporter, from the whole config; None for a server."""
        exp = clickhouse_exporter_config(self.context.config, self.name, self.config.exporter)
        endpoint = str(exp.endpoint)
        scheme, _, rest = endpoint.partition("://")
        if scheme.lower() not in ("chdb", "chdb+connect") or not rest:
            # not an error: the shipped config turns this endpoint on, and its exporter may write to a server
            log.warning("%s: not started: exporter %r writes to %s, a ClickHouse server; point Grafana and "
                        "`otelproc sql` at that server. This endpoint only serves embedded stores (chdb://<path>)",
                        self.name, self.config.exporter, endpoint)
            return None
        return rest, str(exp.database)

    def start(self) -> None:
        from otelproc.store.embedded import acquire_engine, release_engine

        location = self._store_location()
        if location is None:
            return
        path, database = location
        abspath = acquire_engine(path)
        try:
            os.makedirs(abspath, exist_ok=True)
            self._engine = _Engine(abspath, database, self.config)
            handler = type("_BoundHandler", (_Handler,), {"endpoint": self})
            self._server = Server(self.config.endpoint, handler, where=f"extension {self.name}",
                                  thread_name=f"query-{self.name}")
        except BaseException:
            release_engine(abspath)
            raise
        self._engine_path = abspath
        h, p = self.address
        url = local_url(f"{h}:{p}")
        try:  # lets `otelproc sql` and the views of this store find the endpoint
            write_endpoint_file(abspath, url, database, self.config.username, self.config.anonymous)
        except OSError as e:
            log.warning("%s: cannot write %s in %s (%s): the CLI will use the configured endpoint",
                        self.name, ENDPOINT_FILE, abspath, e)
        log.info("%s: ClickHouse HTTP query endpoint on http://%s:%d (read-only, database %s, %s)",
                 self.name, h, p, database, "anonymous" if self.config.anonymous else
                 f"user {self.config.username}")

    def shutdown(self) -> None:
        from otelproc.store.embedded import release_engine

        server, self._server = self._server, None
        if server is not None:
            server.close()
        path, self._engine_path = self._engine_path, None
        self._engine = None
        if path is not None:
            remove_endpoint_file(path)
            release_engine(path)

    # -- requests ----------------------------------------------------------------------------

    def _authenticate(self, headers: Mapping[str, str], qs: Mapping[str, str]) -> None:
        if self.config.anonymous:
            return
        user = headers.get("x-clickhouse-user")
        password = headers.get("x-clickhouse-key")
        auth = headers.get("authorization", "")
        if user is None and auth[:6].lower() == "basic ":
            try:
                user, _, password = base64.b64decode(auth[6:].strip()).decode("utf-8").partition(":")
            except (ValueError, UnicodeDecodeError):
                raise _ClientError(_CODE_AUTHENTICATION_FAILED, "malformed Authorization header") from None
        if user is None:
            user, password = qs.get("user"), qs.get("password")
        user = user or "default"
        ok_user = hmac.compare_digest(user.encode(), self.config.username.encode())
        ok_password = hmac.compare_digest((password or "").encode(), str(self.config.password).encode())
        if not (ok_user and ok_password):
            raise _ClientError(_CODE_AUTHENTICATION_FAILED,
                               f"{user}: Authentication failed: password is incorrect, or there is no user "
                               f"with such name")

    def handle(self, method: str, target: str, headers: Mapping[str, str], body: bytes) -> QueryResponse:
        """Answer one HTTP request (``headers`` with lower-case names, ``body`` as received).

        Never raises: every failure becomes a ClickHouse-style error answer."""
        t0 = time.perf_counter()
        engine = self._engine
        version = engine.version if engine is not None else "unknown"
        hdr = {"X-ClickHouse-Server-Display-Name": f"otelproc/{self.name}"}
        try:
            url = urlsplit(target)
            qs = dict(parse_qsl(url.query, keep_blank_values=True))
            hdr["X-ClickHouse-Query-Id"] = qs.get("query_id") or str(uuid.uuid4())
            if engine is not None:
                hdr["X-ClickHouse-Timezone"] = engine.timezone
            if url.path in ("/ping", "/replicas_status") or (url.path == "/" and "query" not in qs and not body):
                return QueryResponse(200, {"Content-Type": "text/plain; charset=UTF-8"}, b"Ok.\n")
            if url.path != "/":
                raise _ClientError(_CODE_UNSUPPORTED, f"no handler for {url.path!r}; send queries to / "
                                                      f"(GET ?query=... or POST)", status=404)
            if engine is None:
                raise _ClientError(_CODE_UNSUPPORTED, "the query endpoint is shutting down", status=503)
            self._authenticate(headers, qs)
            if qs.get("decompress") == "1" or qs.get("compress") == "1":
                raise _ClientError(_CODE_UNSUPPORTED, "ClickHouse block compression (compress=1/decompress=1) "
                                                      "is not supported; use HTTP compression (gzip, zstd, lz4) "
                                                      "or none")
            try:
                body = decompress(body, headers.get("content-encoding"), int(self.config.max_request_size),
                                  "max_request_size")
            except BodyError as e:
                raise _ClientError(_BODY_ERROR_CODES[e.reason], str(e)) from None
            try:
                text = body.decode("utf-8")
            except UnicodeDecodeError as e:
                raise _ClientError(_CODE_CANNOT_PARSE, f"the query is not valid UTF-8 (byte {e.start})") from None
            sql = qs["query"] + ("\n" + text if text else "") if "query" in qs else text
            why = check_read_only(sql)
            if why is not None:
                raise _ClientError(_CODE_READONLY, why)
            resp = self._run(engine, sql, qs, headers, hdr)
        except _ClientError as e:
            resp = self._error(e.status, e.code, str(e), version, hdr)
        except Exception as e:  # noqa: BLE001 - a fault here must still answer like ClickHouse, not drop the socket
            log.exception("%s: request failed", self.name)
            resp = self._error(500, _CODE_INTERNAL, f"internal error of the query endpoint: {e}", version, hdr)
        if self._m is not None:
            self._m["requests"].labels(self.name, str(resp.status)).inc()
            self._m["latency"].labels(self.name).observe(time.perf_counter() - t0)
        return resp

    @staticmethod
    def _error(status: int, code: int, message: str, version: str, hdr: dict[str, str]) -> QueryResponse:
        hdr["X-ClickHouse-Exception-Code"] = str(code)
        hdr["Content-Type"] = "text/plain; charset=UTF-8"
        return QueryResponse(status, hdr, _error_body(code, message, version))

    def _run(self, engine: _Engine, sql: str, qs: Mapping[str, str], headers: Mapping[str, str],
             hdr: dict[str, str]) -> QueryResponse:
        params = {k[6:]: v for k, v in qs.items() if k.startswith("param_")}
        settings: dict[str, str] = {}
        for key, value in qs.items():
            if key in _TRANSPORT_PARAMS or key.startswith("param_"):
                continue
            if not _SETTING_NAME_RE.match(key):
                raise _ClientError(_CODE_BAD_ARGUMENTS, f"invalid setting name {key!r}")
            if key not in engine.settings:
                raise _ClientError(_CODE_UNKNOWN_SETTING, f"Unknown setting '{key}'")
            if key == "readonly":
                if value not in ("1", "2"):  # 1 and 2 both forbid writes; every statement runs at readonly=1
                    raise _ClientError(_CODE_READONLY, "Cannot modify 'readonly' setting in readonly mode")
                continue
            if key == "result_overflow_mode":
                continue  # always 'throw': a truncated result would silently mislead a dashboard
            settings[key] = value
        revision_text = qs.get("client_protocol_version") or "0"
        try:
            revision = int(revision_text)
        except ValueError:
            raise _ClientError(_CODE_CANNOT_PARSE, f"client_protocol_version must be a whole number, "
                                                   f"got {revision_text!r}") from None
        database = qs.get("database") or headers.get("x-clickhouse-database") or engine.database
        if not _IDENTIFIER_RE.match(database):
            raise _ClientError(_CODE_BAD_ARGUMENTS, f"database name must match [A-Za-z_][A-Za-z0-9_]*, "
                                                    f"got {database!r}")
        fmt = qs.get("default_format") or headers.get("x-clickhouse-format") or "TabSeparated"
        effective = output_format_clause(sql) or fmt
        for f in {fmt, effective}:
            if not _FORMAT_NAME_RE.match(f) or f.lower() in _CHDB_ONLY_FORMATS:
                raise _ClientError(_CODE_UNKNOWN_FORMAT, f"Unknown output format {f!r}")
        try:
            conn = engine.connect(settings)
        except _ClientError:
            raise
        except Exception as e:  # noqa: BLE001 - e.g. an unknown setting name in the connection string
            raise self._engine_error(e) from None
        try:
            try:
                conn.query(f"USE `{database}`", "TabSeparated")
                result = conn.query(sql, fmt, params=params) if params else conn.query(sql, fmt)
            except Exception as e:  # noqa: BLE001 - chDB raises RuntimeError with ClickHouse's message
                raise self._engine_error(e) from None
            if not hasattr(result, "bytes"):
                raise _ClientError(_CODE_UNKNOWN_FORMAT, f"format {effective!r} is not a ClickHouse output format")
            out = result.bytes()
            if effective == "Native" and revision:
                types = self._result_types(conn, sql, params) if has_plain_datetime(out) else None
                try:
                    out = native_at_revision(out, revision, types)
                except NativeFormatError as e:
                    raise _ClientError(_CODE_UNSUPPORTED, str(e)) from None
            hdr["X-ClickHouse-Format"] = effective
            hdr["Content-Type"] = _CONTENT_TYPES.get(effective.lower(), "application/json; charset=UTF-8"
                                                     if effective.lower().startswith("json")
                                                     else "application/octet-stream")
            hdr["X-ClickHouse-Summary"] = json.dumps({
                "read_rows": str(result.rows_read()), "read_bytes": str(result.bytes_read()),
                "written_rows": "0", "written_bytes": "0",
                "elapsed_ns": str(int(result.elapsed() * 1e9))})
            return QueryResponse(200, hdr, out)
        finally:
            conn.close()

    @staticmethod
    def _result_types(conn: Any, sql: str, params: Mapping[str, str]) -> list[str] | None:
        """The result's column types by ``DESCRIBE`` (analysis only, the query does not run again), or None."""
        describe = f"DESCRIBE TABLE (\n{without_format_clause(sql)}\n)"
        fmt = "JSONCompactEachRow"  # [name, type, ...] per column
        try:
            res = conn.query(describe, fmt, params=params) if params else conn.query(describe, fmt)
            return [json.loads(line)[1] for line in res.bytes().decode().splitlines() if line.strip()]
        except Exception:  # noqa: BLE001 - no better names than revision 0's: keep those
            return None

    @staticmethod
    def _engine_error(e: Exception) -> _ClientError:
        msg = str(e)
        m = _CODE_RE.search(msg)
        return _ClientError(int(m.group(1)) if m else _CODE_INTERNAL, msg)


class _Handler(Handler):
    """HTTP/1.1 framing only; QueryEndpoint.handle() decides the answer."""

    endpoint: QueryEndpoint  # set on the bound subclass
    server_version = "otelproc-clickhouse-query"

    def refuse(self, status: int, message: str, reason: str = "") -> None:
        err = _ClientError(_BODY_ERROR_CODES.get(reason, _CODE_UNSUPPORTED), message)
        engine = self.endpoint._engine
        resp = QueryEndpoint._error(err.status, err.code, message, engine.version if engine else "unknown", {})
        self.send(resp.status, resp.body, None, resp.headers)

    def answer(self, method: str) -> None:
        body = self.read_body(int(self.endpoint.config.max_request_size), "max_request_size") if method == "POST" else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        resp = self.endpoint.handle(method, self.path, headers, body)
        payload = resp.body
        # as ClickHouse: answers are compressed only when the client asks with enable_http_compression=1
        qs = dict(parse_qsl(urlsplit(self.path).query))
        if resp.status == 200 and qs.get("enable_http_compression", "").lower() in ("1", "true"):
            encoding = response_encoding(self.headers.get("Accept-Encoding"))
            if encoding is not None:
                payload = compress(payload, encoding)
                resp.headers["Content-Encoding"] = encoding
        self.send(resp.status, payload, None, resp.headers)


def _create(name: str, config: QueryEndpointConfig, next_consumer: Any = None,
            context: Context | None = None) -> QueryEndpoint:
    return QueryEndpoint(name, config, context)


factory = Factory(type="clickhouse_query", kind=Kind.EXTENSION, config_class=QueryEndpointConfig, create=_create,
                  stability="alpha")
