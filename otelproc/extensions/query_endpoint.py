"""``clickhouse_query``: a read-only ClickHouse-compatible HTTP endpoint over the embedded chDB store.

chDB has no server mode, and a second process cannot open the store's directory while
otelproc runs. This extension lets Grafana's ClickHouse plugin (HTTP protocol) and
clickhouse-connect query the embedded store through the process that owns it:

    extensions:
      clickhouse_query:
        endpoint: 127.0.0.1:8123          # host:port to listen on
        exporter: clickhouse              # whose store to serve (a clickhouse exporter id)
        username: grafana
        password: ${env:OTELPROC_QUERY_PASSWORD}
    service:
      extensions: [clickhouse_query]      # off unless listed here

Read-only twice over: every statement runs on a chDB connection opened with ``readonly=1``
(ClickHouse itself refuses writes, DDL, ``SET``, and the file()/url() table functions), and
statements that do not start with SELECT, WITH, SHOW, DESCRIBE/DESC, EXISTS or EXPLAIN, or that
hold more than one statement, are refused before they reach the engine.

What it speaks (docs/grafana.md has the full list): ``POST /`` with the query in the body or
``?query=``, ``GET /?query=``, ``/ping``; ``database``, ``default_format``, ``query_id``,
``param_<name>`` (server-side parameters) and ClickHouse settings as URL parameters; credentials as
``X-ClickHouse-User``/``X-ClickHouse-Key`` headers, HTTP basic auth or ``user``/``password`` URL
parameters; request bodies in gzip, deflate, zstd or lz4 (frames); gzip/deflate responses when the
client sends ``enable_http_compression=1``. Errors come back the way ClickHouse sends them (status,
``X-ClickHouse-Exception-Code`` and a ``Code: N. DB::Exception: ...`` body). Not supported:
ClickHouse block compression (``compress=1``/``decompress=1``), sessions (``session_id`` is ignored:
every request gets a fresh connection), external data, progress headers.

Metrics: otelproc_query_requests_total{extension,status},
otelproc_query_duration_seconds{extension}.
"""
from __future__ import annotations

import base64
import gzip
import hmac
import json
import logging
import re
import threading
import time
import uuid
import zlib
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Mapping
from urllib.parse import parse_qsl, urlencode, urlsplit

from otelproc.component import Context, Extension, Factory, Kind
from otelproc.config import ByteSize, Duration, Secret

__all__ = ["QueryEndpointConfig", "QueryEndpoint", "QueryResponse", "check_read_only", "parse_host_port",
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

# ClickHouse error codes used by this endpoint
_CODE_BAD_ARGUMENTS = 36
_CODE_SYNTAX_ERROR = 62
_CODE_UNKNOWN_FORMAT = 73
_CODE_READONLY = 164
_CODE_AUTHENTICATION_FAILED = 516
_CODE_SIZE_LIMIT = 307          # TOO_MANY_BYTES
_CODE_UNSUPPORTED = 48          # NOT_IMPLEMENTED

# HTTP status per ClickHouse error code, as the server's HTTPHandler maps them
_HTTP_STATUS = {
    _CODE_AUTHENTICATION_FAILED: 401, 192: 401, 194: 401, 195: 401,   # auth / unknown user / password
    _CODE_READONLY: 403, 497: 403,                                    # READONLY, ACCESS_DENIED
    _CODE_SYNTAX_ERROR: 400, 47: 400, 46: 400, 43: 400, 53: 400, 36: 400, 73: 400, 26: 400, 27: 400,
    _CODE_UNSUPPORTED: 501,
    60: 404, 81: 404,                                                 # UNKNOWN_TABLE, UNKNOWN_DATABASE
    _CODE_SIZE_LIMIT: 413,
    159: 504,                                                         # TIMEOUT_EXCEEDED
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
_FORMAT_CLAUSE_RE = re.compile(r"\bFORMAT\s+([A-Za-z][A-Za-z0-9]*)\s*;?\s*$", re.I)
_CODE_RE = re.compile(r"Code:\s*(\d+)")
_CONTENT_TYPES = {
    "tabseparated": "text/tab-separated-values; charset=UTF-8",
    "tsv": "text/tab-separated-values; charset=UTF-8",
    "csv": "text/csv; charset=UTF-8",
    "csvwithnames": "text/csv; charset=UTF-8",
}


# --------------------------------------------------------------------------- config

def parse_host_port(endpoint: str) -> tuple[str, int]:
    """``host:port`` (``[::1]:8123`` for IPv6) -> (host, port). Raises ValueError saying what is wrong."""
    if not isinstance(endpoint, str) or ":" not in endpoint:
        raise ValueError(f"expected host:port (e.g. 127.0.0.1:8123), got {endpoint!r}")
    host, _, port_text = endpoint.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not host:
        raise ValueError(f"missing host in {endpoint!r}; use 0.0.0.0:{port_text} to listen on every interface")
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"port must be a number, got {port_text!r} in {endpoint!r}") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"port must be 0..65535 (0 = any free port), got {port}")
    return host, port


@dataclass
class QueryEndpointConfig:
    # host:port to listen on; 0.0.0.0:8123 to reach it from other hosts (e.g. a Grafana container)
    endpoint: str = DEFAULT_ENDPOINT
    # id of the clickhouse exporter whose embedded store (endpoint chdb://...) is served
    exporter: str = DEFAULT_EXPORTER
    # the one user this endpoint knows; give Grafana these credentials
    username: str = DEFAULT_USERNAME
    password: Secret = Secret("")
    # accept every request without checking credentials (local use only)
    allow_anonymous: bool = False
    # a query whose result has more rows fails (ClickHouse max_result_rows, result_overflow_mode=throw)
    max_result_rows: int = DEFAULT_MAX_RESULT_ROWS
    # a query running longer is cancelled (ClickHouse max_execution_time)
    max_execution_time: Duration = DEFAULT_MAX_EXECUTION_TIME
    # largest request body (query text) accepted
    max_request_size: ByteSize = DEFAULT_MAX_REQUEST_SIZE

    def validate(self) -> list[str]:
        out = []
        try:
            parse_host_port(self.endpoint)
        except ValueError as e:
            out.append(f"endpoint: {e}")
        if not self.exporter:
            out.append("exporter: must name a clickhouse exporter (e.g. clickhouse)")
        if not self.allow_anonymous:
            if not self.password:
                out.append("password: required (set it from the environment, e.g. ${env:OTELPROC_QUERY_PASSWORD}), "
                           "or set allow_anonymous: true for local use")
            if not self.username:
                out.append("username: required unless allow_anonymous: true")
        elif self.password:
            out.append("allow_anonymous: cannot be combined with a password; remove one of them")
        if self.max_result_rows < 1:
            out.append(f"max_result_rows: must be >= 1, got {self.max_result_rows}")
        if self.max_execution_time <= 0:
            out.append(f"max_execution_time: must be > 0, got {self.max_execution_time}s")
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


def _decode_body(data: bytes, encoding: str | None) -> bytes:
    enc = (encoding or "").strip().lower()
    if not enc or enc == "identity":
        return data
    try:
        if enc == "gzip":
            return gzip.decompress(data)
        if enc == "deflate":
            try:
                return zlib.decompress(data)
            except zlib.error:
                return zlib.decompress(data, -zlib.MAX_WBITS)  # raw deflate, as some clients send
        if enc == "zstd":
            try:
                from compression import zstd  # Python 3.14
            except ImportError:
                from backports import zstd
            return zstd.decompress(data)
        if enc == "lz4":
            import lz4.frame

            # clickhouse-connect streams one LZ4 frame per block: decode every frame
            out = []
            while data:
                d = lz4.frame.LZ4FrameDecompressor()
                out.append(d.decompress(data))
                data = d.unused_data
            return b"".join(out)
    except Exception as e:  # noqa: BLE001 - corrupt body: tell the client
        raise _ClientError(_CODE_BAD_ARGUMENTS, f"cannot decode the {enc} request body: {e}") from None
    raise _ClientError(_CODE_UNSUPPORTED, f"unsupported Content-Encoding {enc!r}; use gzip, deflate, zstd, "
                                          f"lz4 or none")


def _error_body(code: int, message: str) -> bytes:
    if message.startswith("Code:"):
        return (message.rstrip() + "\n").encode()
    return f"Code: {code}. DB::Exception: {message}. (version otelproc query endpoint)\n".encode()


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
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
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
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def _store_location(self) -> tuple[str, str]:
        """(chDB path, database) of the configured exporter, from the whole config."""
        whole = self.context.config
        if whole is None:
            raise RuntimeError(f"extension {self.name}: needs the service config to find exporter "
                               f"{self.config.exporter!r}")
        exporters = getattr(whole, "exporters", {}) or {}
        exp = exporters.get(self.config.exporter)
        if exp is None or self.config.exporter.split("/", 1)[0] != "clickhouse":
            known = ", ".join(sorted(e for e in exporters if e.split("/", 1)[0] == "clickhouse")) or "none"
            raise ValueError(f"extensions::{self.name}::exporter: {self.config.exporter!r} is not a configured "
                             f"clickhouse exporter (configured: {known})")
        endpoint = str(exp.endpoint)
        scheme, _, rest = endpoint.partition("://")
        if scheme.lower() not in ("chdb", "chdb+connect") or not rest:
            raise ValueError(f"extensions::{self.name}: exporter {self.config.exporter!r} writes to {endpoint}, "
                             f"a ClickHouse server; point Grafana at that server directly. This endpoint only "
                             f"serves embedded stores (chdb://<path>)")
        return rest, str(exp.database)

    def start(self) -> None:
        from otelproc.store.embedded import acquire_engine, release_engine

        path, database = self._store_location()
        host, port = parse_host_port(self.config.endpoint)
        abspath = acquire_engine(path)
        try:
            import os

            os.makedirs(abspath, exist_ok=True)
            self._engine = _Engine(abspath, database, self.config)
            handler = type("_BoundHandler", (_Handler,), {"endpoint": self})
            self._server = ThreadingHTTPServer((host, port), handler)
        except OSError as e:
            release_engine(abspath)
            raise OSError(e.errno, f"extension {self.name}: cannot listen on {self.config.endpoint}: "
                                   f"{e.strerror}") from None
        except BaseException:
            release_engine(abspath)
            raise
        self._engine_path = abspath
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name=f"query-{self.name}", daemon=True)
        self._thread.start()
        h, p = self.address
        log.info("%s: ClickHouse HTTP query endpoint on http://%s:%d (read-only, database %s, %s)",
                 self.name, h, p, database, "anonymous" if self.config.allow_anonymous else
                 f"user {self.config.username}")

    def shutdown(self) -> None:
        from otelproc.store.embedded import release_engine

        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        path, self._engine_path = self._engine_path, None
        self._engine = None
        if path is not None:
            release_engine(path)

    # -- requests ----------------------------------------------------------------------------

    def _authenticate(self, headers: Mapping[str, str], qs: Mapping[str, str]) -> None:
        if self.config.allow_anonymous:
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
                               f"with such name. (AUTHENTICATION_FAILED)")

    def handle(self, method: str, target: str, headers: Mapping[str, str], body: bytes) -> QueryResponse:
        """Answer one HTTP request (``headers`` with lower-case names, ``body`` as received)."""
        t0 = time.perf_counter()
        url = urlsplit(target)
        qs = dict(parse_qsl(url.query, keep_blank_values=True))
        query_id = qs.get("query_id") or str(uuid.uuid4())
        engine = self._engine
        hdr = {"X-ClickHouse-Query-Id": query_id, "X-ClickHouse-Server-Display-Name": f"otelproc/{self.name}"}
        if engine is not None:
            hdr["X-ClickHouse-Timezone"] = engine.timezone
        try:
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
                                                      "is not supported; use HTTP compression (gzip) or none")
            body = _decode_body(body, headers.get("content-encoding"))
            text = body.decode("utf-8", "replace")
            sql = qs["query"] + ("\n" + text if text else "") if "query" in qs else text
            why = check_read_only(sql)
            if why is not None:
                raise _ClientError(_CODE_READONLY, f"{why}. (READONLY)")
            resp = self._run(engine, sql, qs, headers, hdr)
        except _ClientError as e:
            hdr["X-ClickHouse-Exception-Code"] = str(e.code)
            hdr["Content-Type"] = "text/plain; charset=UTF-8"
            resp = QueryResponse(e.status, hdr, _error_body(e.code, str(e)))
        if self._m is not None:
            self._m["requests"].labels(self.name, str(resp.status)).inc()
            self._m["latency"].labels(self.name).observe(time.perf_counter() - t0)
        return resp

    def _run(self, engine: _Engine, sql: str, qs: Mapping[str, str], headers: Mapping[str, str],
             hdr: dict[str, str]) -> QueryResponse:
        params = {k[6:]: v for k, v in qs.items() if k.startswith("param_")}
        settings: dict[str, str] = {}
        for key, value in qs.items():
            if key in _TRANSPORT_PARAMS or key.startswith("param_"):
                continue
            if not _SETTING_NAME_RE.match(key):
                raise _ClientError(_CODE_BAD_ARGUMENTS, f"invalid setting name {key!r}")
            if key == "readonly":
                if value != "1":
                    raise _ClientError(_CODE_READONLY, f"Cannot modify 'readonly' setting in readonly mode. (READONLY)")
                continue
            if key == "result_overflow_mode":
                continue  # always 'throw': a truncated result would silently mislead a dashboard
            settings[key] = value
        database = qs.get("database") or headers.get("x-clickhouse-database") or engine.database
        if not _IDENTIFIER_RE.match(database):
            raise _ClientError(_CODE_BAD_ARGUMENTS, f"database name must match [A-Za-z_][A-Za-z0-9_]*, "
                                                    f"got {database!r}")
        fmt = qs.get("default_format") or "TabSeparated"
        m = _FORMAT_CLAUSE_RE.search(_strip_trailing_comments(sql))
        effective = m.group(1) if m else fmt
        for f in {fmt, effective}:
            if not _FORMAT_NAME_RE.match(f) or f.lower() in _CHDB_ONLY_FORMATS:
                raise _ClientError(_CODE_UNKNOWN_FORMAT, f"Unknown output format {f!r}. (UNKNOWN_FORMAT)")
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
    def _engine_error(e: Exception) -> _ClientError:
        msg = str(e)
        m = _CODE_RE.search(msg)
        return _ClientError(int(m.group(1)) if m else 1000, msg)


def _strip_trailing_comments(sql: str) -> str:
    lines = [ln for ln in sql.rstrip().splitlines() if not ln.strip().startswith("--")]
    return "\n".join(lines).rstrip()


class _Handler(BaseHTTPRequestHandler):
    """HTTP/1.1 framing only; QueryEndpoint.handle() decides the answer."""

    protocol_version = "HTTP/1.1"
    endpoint: QueryEndpoint  # set on the bound subclass
    server_version = "otelproc-clickhouse-query"
    # headers and body are two writes: without TCP_NODELAY, Nagle + delayed ACK add ~40 ms per answer
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - BaseHTTPRequestHandler's name
        log.debug("%s %s", self.address_string(), format % args)

    def _read_body(self) -> bytes | None:
        limit = int(self.endpoint.config.max_request_size)
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            parts, total = [], 0
            while True:
                line = self.rfile.readline(1024)
                try:
                    n = int(line.split(b";")[0].strip() or b"0", 16)
                except ValueError:
                    return None
                if n == 0:
                    break
                total += n
                if total > limit:
                    return None
                parts.append(self.rfile.read(n))
                self.rfile.readline(1024)
            while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                pass
            return b"".join(parts)
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            return None
        if length > limit or length < 0:
            return None
        return self.rfile.read(length) if length else b""

    def _answer(self, method: str) -> None:
        body = self._read_body() if method == "POST" else b""
        if body is None:
            self.close_connection = True
            limit = int(self.endpoint.config.max_request_size)
            resp = QueryResponse(413, {"X-ClickHouse-Exception-Code": str(_CODE_SIZE_LIMIT),
                                       "Content-Type": "text/plain; charset=UTF-8"},
                                 _error_body(_CODE_SIZE_LIMIT, f"request body larger than max_request_size "
                                                               f"({limit} bytes) or malformed"))
        else:
            headers = {k.lower(): v for k, v in self.headers.items()}
            resp = self.endpoint.handle(method, self.path, headers, body)
        payload = resp.body
        qs = dict(parse_qsl(urlsplit(self.path).query))
        if resp.status == 200 and qs.get("enable_http_compression") == "1" and len(payload) > 256:
            accepted = [a.split(";")[0].strip().lower() for a in (self.headers.get("Accept-Encoding") or "").split(",")]
            if "gzip" in accepted:
                payload = gzip.compress(payload, compresslevel=3)
                resp.headers["Content-Encoding"] = "gzip"
            elif "deflate" in accepted:
                payload = zlib.compress(payload, 3)
                resp.headers["Content-Encoding"] = "deflate"
        self.send_response(resp.status)
        for k, v in resp.headers.items():
            self.send_header(k, v)
        if resp.status == 401:
            self.send_header("WWW-Authenticate", 'Basic realm="otelproc", charset="UTF-8"')
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if method != "HEAD":
            self.wfile.write(payload)

    def do_GET(self) -> None:  # noqa: N802 - BaseHTTPRequestHandler's naming
        self._answer("GET")

    def do_HEAD(self) -> None:  # noqa: N802
        self._answer("HEAD")

    def do_POST(self) -> None:  # noqa: N802
        self._answer("POST")


def _create(name: str, config: QueryEndpointConfig, next_consumer: Any = None,
            context: Context | None = None) -> QueryEndpoint:
    return QueryEndpoint(name, config, context)


factory = Factory(type="clickhouse_query", kind=Kind.EXTENSION, config_class=QueryEndpointConfig, create=_create,
                  stability="alpha")
