"""The ``otlp`` receiver: OTLP/gRPC (LogsService/Export) and OTLP/HTTP (POST /v1/logs).

Both transports hand the raw request bytes to one decoder (``receivers.decode``:
a Numba wire-format scanner, no per-record Python objects) and answer per the
OTLP specification through the one error table in ``receivers.errors``.

    receivers:
      otlp:
        protocols:
          grpc:
            endpoint: 0.0.0.0:4317
            auth: {bearer_token: ${env:OTELPROC_TOKEN}}          # as the Collector's bearertokenauth
            tls: {cert_file: server.pem, key_file: server.key, client_ca_file: ca.pem}   # mTLS with client_ca_file
          http: {endpoint: 0.0.0.0:4318, auth: {bearer_token: ${env:OTELPROC_TOKEN}}}
        limits: {max_records_per_request: 100000, max_body_bytes: 64KiB, max_attribute_value_bytes: 8KiB,
                 max_attributes_per_record: 128, max_future_skew: 24h}

Security: ``auth.bearer_token`` makes each transport require ``Authorization: Bearer <token>``
(HTTP header / gRPC metadata; compared in constant time). A missing or wrong token is answered
401 / UNAUTHENTICATED before the request body is read. ``tls`` serves TLS from PEM files
(confighttp/configgrpc keys); with ``client_ca_file`` clients must present a certificate signed
by that CA (mutual TLS). Write secrets as ``${env:VAR}``, never in the file.

Input limits (``limits``, see receivers/sanitize.py) are applied after decoding, before the
batch is handed on; what they fix is stored sanitised and counted in
``otelproc_receiver_sanitized_log_records_total{receiver,transport,reason}``.
"""
from __future__ import annotations

import hmac
import logging
import os
import socket
import ssl
import threading
import time
import zlib
from concurrent import futures
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
from google.protobuf import json_format
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse

from otelproc.component import Consumer, Context, Factory, Kind, PermanentError, Receiver
from otelproc.config import ByteSize, Duration, Secret
from otelproc.receivers.decode import Decoded, decode_json, decode_protobuf
from otelproc.receivers.errors import Answer, RequestError, answer_for, rpc_status
from otelproc.receivers.sanitize import LimitsConfig, TooManyRecords, sanitize

log = logging.getLogger(__name__)

LOGS_SERVICE = "opentelemetry.proto.collector.logs.v1.LogsService"
MIB = 1 << 20


# an idle or slow HTTP connection is closed after this long (slowloris guard)
HTTP_SOCKET_TIMEOUT = 60.0
TLS_HANDSHAKE_TIMEOUT = 10.0


@dataclass
class AuthConfig:
    # clients must send "Authorization: Bearer <token>"; "" = no authentication
    bearer_token: Secret = Secret("")

    def validate(self) -> list[str]:
        if self.bearer_token and (len(self.bearer_token) < 16 or any(c.isspace() for c in self.bearer_token)):
            return ["bearer_token: must be at least 16 characters without whitespace (write it as ${env:VAR})"]
        return []

    def admits(self, header: str | None) -> bool:
        """True when no token is configured or ``header`` is ``Bearer <the token>`` (every listener's check)."""
        if not self.bearer_token:
            return True
        scheme, _, token = (header or "").strip().partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), str(self.bearer_token).encode())


@dataclass
class ServerTlsConfig:
    # PEM certificate chain and private key of this server (both or neither)
    cert_file: str = ""
    key_file: str = ""
    # PEM CA bundle; when set, clients must present a certificate it signed (mutual TLS)
    client_ca_file: str = ""

    def enabled(self) -> bool:
        return bool(self.cert_file)

    def validate(self) -> list[str]:
        out = []
        if bool(self.cert_file) != bool(self.key_file):
            out.append("cert_file: cert_file and key_file must be set together")
        if self.client_ca_file and not self.cert_file:
            out.append("client_ca_file: needs cert_file and key_file (mutual TLS is TLS with client certificates)")
        for key in ("cert_file", "key_file", "client_ca_file"):
            path = getattr(self, key)
            if path and not os.path.isfile(path):
                out.append(f"{key}: file not found: {path}")
        return out

    def read(self) -> tuple[bytes, bytes, bytes | None]:
        with open(self.cert_file, "rb") as c, open(self.key_file, "rb") as k:
            cert, key = c.read(), k.read()
        ca = None
        if self.client_ca_file:
            with open(self.client_ca_file, "rb") as f:
                ca = f.read()
        return cert, key, ca

    def ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(self.cert_file, self.key_file)
        if self.client_ca_file:
            ctx.verify_mode = ssl.CERT_REQUIRED
            ctx.load_verify_locations(self.client_ca_file)
        return ctx


@dataclass
class GrpcConfig:
    # host:port to listen on (port 0 picks a free port)
    endpoint: str = "localhost:4317"
    auth: AuthConfig = field(default_factory=AuthConfig)
    tls: ServerTlsConfig = field(default_factory=ServerTlsConfig)
    # largest accepted (decompressed) request, as the Collector's key
    max_recv_msg_size_mib: int = 16
    # requests handled at once (worker threads)
    max_concurrent_streams: int = 8

    def validate(self) -> list[str]:
        out = _check_endpoint(self.endpoint)
        out += [f"tls::{m}" for m in self.tls.validate()] + [f"auth::{m}" for m in self.auth.validate()]
        if self.max_recv_msg_size_mib < 1:
            out.append(f"max_recv_msg_size_mib: must be >= 1, got {self.max_recv_msg_size_mib}")
        if self.max_concurrent_streams < 1:
            out.append(f"max_concurrent_streams: must be >= 1, got {self.max_concurrent_streams}")
        return out


@dataclass
class HttpConfig:
    # host:port to listen on (port 0 picks a free port)
    endpoint: str = "localhost:4318"
    # largest accepted request body as sent (compressed), answered 413 above it
    max_request_body_size: ByteSize = ByteSize(20 * MIB)
    # largest body after decompression (guards against gzip bombs), answered 413 above it
    max_decompressed_size: ByteSize = ByteSize(200 * MIB)
    # URL path of the logs endpoint
    logs_url_path: str = "/v1/logs"
    auth: AuthConfig = field(default_factory=AuthConfig)
    tls: ServerTlsConfig = field(default_factory=ServerTlsConfig)

    def validate(self) -> list[str]:
        out = _check_endpoint(self.endpoint)
        out += [f"tls::{m}" for m in self.tls.validate()] + [f"auth::{m}" for m in self.auth.validate()]
        if self.max_request_body_size < 1:
            out.append(f"max_request_body_size: must be > 0, got {self.max_request_body_size}")
        if self.max_decompressed_size < self.max_request_body_size:
            out.append("max_decompressed_size: must be >= max_request_body_size")
        if not self.logs_url_path.startswith("/"):
            out.append(f"logs_url_path: must start with '/', got {self.logs_url_path!r}")
        return out


@dataclass
class ProtocolsConfig:
    grpc: GrpcConfig | None = None
    http: HttpConfig | None = None


@dataclass
class OtlpReceiverConfig:
    protocols: ProtocolsConfig = field(default_factory=ProtocolsConfig)
    # per-request input limits, applied to both transports
    limits: LimitsConfig = field(default_factory=LimitsConfig)

    def validate(self) -> list[str]:
        if self.protocols.grpc is None and self.protocols.http is None:
            return ["protocols: enable at least one of grpc, http"]
        return []


def _check_endpoint(endpoint: str) -> list[str]:
    try:
        split_endpoint(endpoint)
        return []
    except ValueError as e:
        return [f"endpoint: {e}"]


def split_endpoint(endpoint: str) -> tuple[str, int]:
    """``host:port`` (``:port`` means all interfaces) -> (host, port)."""
    host, sep, port = endpoint.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected host:port (e.g. 0.0.0.0:4318), got {endpoint!r}")
    return (host.strip("[]") or "0.0.0.0"), int(port)


def decompress(data: bytes, encoding: str, limit: int) -> bytes:
    """Undo Content-Encoding / grpc-encoding, refusing output larger than ``limit`` bytes."""
    enc = encoding.strip().lower()
    if enc in ("", "identity", "none"):
        return data
    if enc in ("gzip", "deflate", "x-gzip"):
        wbits = 31 if enc != "deflate" else 15
        d = zlib.decompressobj(wbits)
        try:
            out = d.decompress(data, limit + 1)
        except zlib.error as e:
            raise RequestError(400, grpc.StatusCode.INVALID_ARGUMENT, f"malformed {enc} body: {e}") from None
        if len(out) > limit:
            raise RequestError(413, grpc.StatusCode.RESOURCE_EXHAUSTED,
                               f"decompressed body exceeds the limit of {limit} bytes")
        if not d.eof:
            raise RequestError(400, grpc.StatusCode.INVALID_ARGUMENT, f"malformed {enc} body: truncated stream")
        return out
    if enc == "zstd":
        try:
            from compression import zstd  # type: ignore[import-not-found]  # Python 3.14
        except ImportError:
            try:
                from backports import zstd  # type: ignore[no-redef]
            except ImportError:
                raise RequestError(415, grpc.StatusCode.UNIMPLEMENTED, "zstd Content-Encoding is not available") from None
        try:
            dec = zstd.ZstdDecompressor()
            out = dec.decompress(data, max_length=limit + 1)
        except zstd.ZstdError as e:
            raise RequestError(400, grpc.StatusCode.INVALID_ARGUMENT, f"malformed zstd body: {e}") from None
        if len(out) > limit:
            raise RequestError(413, grpc.StatusCode.RESOURCE_EXHAUSTED, f"decompressed body exceeds the limit of {limit} bytes")
        return out
    raise RequestError(415, grpc.StatusCode.UNIMPLEMENTED,
                       f"unsupported Content-Encoding {encoding!r}; supported: gzip, deflate, zstd, identity")


class OtlpReceiver(Receiver):
    def __init__(self, name: str, config: OtlpReceiverConfig, next_consumer: Consumer, context: Context):
        super().__init__(name, next_consumer)
        self.config = config
        self._grpc_server: grpc.Server | None = None
        self._http_server: ThreadingHTTPServer | None = None
        self.grpc_port: int | None = None
        self.http_port: int | None = None
        t = context.telemetry
        self._m_accepted = t.counter("otelproc_receiver_accepted_log_records", "Log records accepted into the pipeline", ("receiver", "transport")) if t else None
        self._m_refused = t.counter("otelproc_receiver_refused_log_records", "Log records refused (rejected, invalid, back-pressure)", ("receiver", "transport", "reason")) if t else None
        self._m_requests = t.counter("otelproc_receiver_requests", "Export requests by answer", ("receiver", "transport", "status")) if t else None
        self._m_latency = t.histogram("otelproc_receiver_request_duration_seconds", "Export request handling time", ("receiver", "transport")) if t else None
        self._m_sanitized = t.counter("otelproc_receiver_sanitized_log_records", "Log records (or attributes) stored sanitised, by reason", ("receiver", "transport", "reason")) if t else None
        self._m_auth = t.counter("otelproc_receiver_auth_failures", "Requests refused for a missing or wrong bearer token or client certificate", ("receiver", "transport")) if t else None

    # -- shared by both transports ------------------------------------------------

    def export(self, payload: bytes, content_type: str, transport: str) -> Decoded:
        """Decode one request and hand it on. Raises on refusal (mapped by ``answer_for``)."""
        start = time.perf_counter()
        try:
            decoded = self._decode(payload, content_type)
            try:
                clean = sanitize(decoded.batch, self.config.limits)
            except TooManyRecords as e:
                raise RequestError(413, grpc.StatusCode.INVALID_ARGUMENT, str(e)) from None
            if clean.counts and self._m_sanitized:
                for reason, n in clean.counts.items():
                    self._m_sanitized.labels(self.name, transport, reason).inc(n)
            decoded.batch = clean.batch
            if len(decoded.batch):
                self.next_consumer.consume(decoded.batch)
        except Exception as exc:
            self._count_refusal(transport, answer_for(exc))
            raise
        finally:
            if self._m_latency:
                self._m_latency.labels(self.name, transport).observe(time.perf_counter() - start)
        if self._m_accepted:
            self._m_accepted.labels(self.name, transport).inc(len(decoded.batch))
            if decoded.rejected:
                self._m_refused.labels(self.name, transport, "rejected").inc(decoded.rejected)
            self._m_requests.labels(self.name, transport, "ok").inc()
        return decoded

    @staticmethod
    def _decode(payload: bytes, content_type: str) -> Decoded:
        try:
            return decode_json(payload) if content_type == "json" else decode_protobuf(payload)
        except PermanentError:
            raise
        except Exception as e:  # noqa: BLE001 - hostile input must never become a 5xx
            log.warning("decoder failed on a %d-byte %s request: %r", len(payload), content_type, e)
            raise PermanentError(f"cannot decode the request: {type(e).__name__}: {e}") from None

    def count_auth_failure(self, transport: str) -> None:
        if self._m_auth:
            self._m_auth.labels(self.name, transport).inc()
            self._m_requests.labels(self.name, transport, "unauthenticated").inc()

    def _count_refusal(self, transport: str, answer: Answer) -> None:
        if self._m_requests:
            self._m_requests.labels(self.name, transport, answer.reason).inc()
        if answer.reason not in ("back_pressure", "unavailable"):
            log.debug("refused %s request: %s", transport, answer.message)

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        # Compile (or load from cache) the decoder before listening, so the first request
        # does not wait seconds for the JIT.
        decode_protobuf(b"")
        proto = self.config.protocols
        if proto.grpc is not None:
            self._start_grpc(proto.grpc)
        if proto.http is not None:
            self._start_http(proto.http)

    def shutdown(self) -> None:
        if self._http_server is not None:
            self._http_server.shutdown()
            self._http_server.server_close()
            self._http_server = None
        if self._grpc_server is not None:
            # let in-flight Exports finish (their data is already handed on) for up to 5 s
            self._grpc_server.stop(grace=5).wait()
            self._grpc_server = None

    # -- gRPC ------------------------------------------------------------------------

    def _start_grpc(self, cfg: GrpcConfig) -> None:
        limit = cfg.max_recv_msg_size_mib * MIB
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=cfg.max_concurrent_streams, thread_name_prefix=f"{self.name}-grpc"),
            # grpc core's inflate (bundled zlib into slice buffers, then a copy into Python bytes) was ~30 % of
            # the server's CPU under load; one system-zlib call per message costs less (-12 % CPU per record
            # measured, benchmarks/README.md). Messages arrive as sent; _grpc_message inflates them and applies
            # max_recv_msg_size_mib to the decompressed size as grpc core did.
            options=[("grpc.max_receive_message_length", limit), ("grpc.max_send_message_length", 4 * MIB),
                     ("grpc.per_message_decompression", 0)],
            maximum_concurrent_rpcs=cfg.max_concurrent_streams * 4,
        )

        def export(request: bytes, context: grpc.ServicerContext) -> bytes:
            if cfg.auth.bearer_token:
                header = dict(context.invocation_metadata()).get("authorization")
                if not cfg.auth.admits(header):
                    self.count_auth_failure("grpc")
                    context.abort(grpc.StatusCode.UNAUTHENTICATED,
                                  "missing or invalid bearer token" if header else "missing bearer token")
            try:
                decoded = self.export(_grpc_message(request, limit), "proto", "grpc")
            except Exception as exc:
                ans = answer_for(exc)
                st = rpc_status(ans)
                context.abort_with_status(_GrpcStatus(ans.grpc_code, ans.message, st.SerializeToString()))
            return _response(decoded).SerializeToString()

        # No deserializer: the handler gets the raw bytes, which go to the Numba scanner as they are.
        handler = grpc.method_handlers_generic_handler(LOGS_SERVICE, {
            "Export": grpc.unary_unary_rpc_method_handler(export),
        })
        server.add_generic_rpc_handlers((handler,))
        host, port = split_endpoint(cfg.endpoint)
        address = f"{host}:{port}" if ":" not in host else f"[{host}]:{port}"
        try:
            if cfg.tls.enabled():
                cert, key, ca = cfg.tls.read()
                creds = grpc.ssl_server_credentials([(key, cert)], root_certificates=ca, require_client_auth=ca is not None)
                bound = server.add_secure_port(address, creds)
            else:
                bound = server.add_insecure_port(address)
        except RuntimeError:  # grpcio >= 1.60 raises "Failed to bind" where older versions returned 0
            bound = 0
        if bound == 0:
            raise OSError(f"receivers::{self.name}::protocols::grpc::endpoint: cannot listen on {cfg.endpoint} "
                          "(in use, or not an address of this host)")
        server.start()
        self._grpc_server, self.grpc_port = server, bound
        log.info("OTLP/gRPC receiver %s listening on %s:%d", self.name, host, bound)

    # -- HTTP ------------------------------------------------------------------------

    def _start_http(self, cfg: HttpConfig) -> None:
        receiver = self

        class Handler(_OtlpHttpHandler):
            pass

        Handler.receiver, Handler.cfg = receiver, cfg
        Handler.timeout = HTTP_SOCKET_TIMEOUT
        host, port = split_endpoint(cfg.endpoint)
        try:
            server = _HttpServer((host, port), Handler)
        except OSError as e:
            raise OSError(f"receivers::{self.name}::protocols::http::endpoint: cannot listen on {cfg.endpoint}: "
                          f"{e.strerror}") from None
        server.daemon_threads = True
        if cfg.tls.enabled():
            server.tls_context = cfg.tls.ssl_context()
        self._http_server, self.http_port = server, server.server_address[1]
        threading.Thread(target=server.serve_forever, name=f"{self.name}-http", daemon=True).start()
        log.info("OTLP/HTTP receiver %s listening on %s:%d%s", self.name, host, self.http_port, cfg.logs_url_path)


class _HttpServer(ThreadingHTTPServer):
    """Threading HTTP server that, with TLS, does each handshake on the connection's own thread
    (a slow or hostile client cannot stall the accept loop)."""

    tls_context: ssl.SSLContext | None = None

    def finish_request(self, request, client_address) -> None:
        if self.tls_context is not None:
            request.settimeout(TLS_HANDSHAKE_TIMEOUT)
            try:
                request = self.tls_context.wrap_socket(request, server_side=True)
            except (ssl.SSLError, OSError) as e:
                log.debug("TLS handshake with %s failed: %s", client_address, e)
                try:
                    request.close()
                except OSError:
                    pass
                return
        super().finish_request(request, client_address)

    def handle_error(self, request, client_address) -> None:
        # a client that resets or times out is not an otelproc error worth a traceback
        log.debug("HTTP connection from %s ended with an error", client_address, exc_info=True)


class _GrpcStatus(grpc.Status):
    """A grpc.Status carrying google.rpc.Status details (RetryInfo for back-pressure)."""

    def __init__(self, code: grpc.StatusCode, details: str, status_bin: bytes):
        self.code = code
        self.details = details
        self.trailing_metadata = (("grpc-status-details-bin", status_bin),)


def _grpc_message(message: bytes, limit: int) -> bytes:
    """The serialized request in a gRPC message that grpc core handed over still compressed.

    grpc-encoding is not passed to handlers, so the format is told by its header bytes: gzip's
    1f 8b, which cannot start a protobuf (0x1f is wire type 7, which does not exist), and zlib's
    78 xx with a valid header check ("deflate" in gRPC), which could also start one (an unknown
    field 15), so such a message that does not inflate is taken as it is. Output above ``limit``
    bytes is refused with RESOURCE_EXHAUSTED, as grpc core refused it; a corrupt gzip stream is
    INVALID_ARGUMENT (permanent), as over HTTP. Other encodings never get here: grpc core still
    refuses them when it parses the grpc-encoding header.
    """
    if message[:2] == b"\x1f\x8b":
        return decompress(message, "gzip", limit)
    if len(message) > 2 and message[0] == 0x78 and (0x7800 | message[1]) % 31 == 0:
        try:
            return decompress(message, "deflate", limit)
        except RequestError as e:
            if e.grpc_code == grpc.StatusCode.RESOURCE_EXHAUSTED:
                raise
    return message  # uncompressed: grpc core already applied max_receive_message_length


def _response(decoded: Decoded) -> ExportLogsServiceResponse:
    resp = ExportLogsServiceResponse()
    if decoded.rejected:
        resp.partial_success.rejected_log_records = decoded.rejected
        resp.partial_success.error_message = decoded.message
    return resp


class _OtlpHttpHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: Collectors reuse connections
    server_version = "otelproc"
    receiver: OtlpReceiver
    cfg: HttpConfig

    def log_message(self, fmt, *args):  # no per-request logs
        pass

    def setup(self) -> None:
        super().setup()
        # headers and body leave in two writes: without TCP_NODELAY, Nagle plus the client's
        # delayed ACK add ~40 ms to every answer on a kept-alive connection
        try:
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass

    def do_GET(self) -> None:
        if self.path.split("?", 1)[0] in ("/health", "/healthz", "/"):
            return self._send(200, "application/json", b'{"status":"ok"}')
        self._send(404, "text/plain", b"not found\n")

    def do_POST(self) -> None:
        cfg = self.cfg
        if not cfg.auth.admits(self.headers.get("Authorization")):
            # refuse before reading the body: unauthenticated clients cost no decoding
            self.receiver.count_auth_failure("http")
            self.close_connection = True
            body = b'{"code":16,"message":"missing or invalid bearer token"}'
            return self._send(401, "application/json", body, {"WWW-Authenticate": 'Bearer realm="otelproc"'})
        path = self.path.split("?", 1)[0]
        if path != cfg.logs_url_path:
            self._discard_body()
            return self._send(404, "text/plain", f"unknown path {path}; logs go to {cfg.logs_url_path}\n".encode())
        ctype = (self.headers.get("Content-Type") or "").split(";", 1)[0].strip().lower()
        kind = {"application/x-protobuf": "proto", "application/protobuf": "proto", "application/json": "json"}.get(ctype)
        try:
            if kind is None:
                self._discard_body()
                raise RequestError(415, grpc.StatusCode.INVALID_ARGUMENT,
                                   f"unsupported Content-Type {ctype!r}; use application/x-protobuf or application/json")
            body = self._read_body(cfg.max_request_body_size)
            body = decompress(body, self.headers.get("Content-Encoding") or "", cfg.max_decompressed_size)
            decoded = self.receiver.export(body, kind, "http")
        except Exception as exc:
            ans = answer_for(exc)
            headers = {}
            if ans.retry_after is not None:
                headers["Retry-After"] = str(max(1, round(ans.retry_after)))
            st = rpc_status(ans)
            if kind == "json":
                return self._send(ans.http_status, "application/json", json_format.MessageToJson(st).encode(), headers)
            return self._send(ans.http_status, "application/x-protobuf", st.SerializeToString(), headers)
        resp = _response(decoded)
        if kind == "json":
            self._send(200, "application/json", json_format.MessageToJson(resp, indent=None).encode())
        else:
            self._send(200, "application/x-protobuf", resp.SerializeToString())

    def _read_body(self, limit: int) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            parts, total = [], 0
            while True:
                line = self.rfile.readline(1024)
                try:
                    n = int(line.split(b";", 1)[0].strip() or b"x", 16)
                except ValueError:
                    self.close_connection = True
                    raise RequestError(400, grpc.StatusCode.INVALID_ARGUMENT, "malformed chunked body") from None
                if n == 0:
                    while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(parts)
                total += n
                if total > limit:
                    self.close_connection = True
                    raise RequestError(413, grpc.StatusCode.RESOURCE_EXHAUSTED, f"request body exceeds {limit} bytes")
                parts.append(self.rfile.read(n))
                self.rfile.readline(1024)
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0:
            self.close_connection = True
            raise RequestError(400, grpc.StatusCode.INVALID_ARGUMENT, "invalid Content-Length")
        if length > limit:
            # don't read a body we will refuse; the connection cannot be reused after that
            self.close_connection = True
            raise RequestError(413, grpc.StatusCode.RESOURCE_EXHAUSTED,
                               f"request body of {length} bytes exceeds max_request_body_size {limit}")
        return self.rfile.read(length)

    def _discard_body(self) -> None:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0 or "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            self.close_connection = True
        elif 0 < length <= (1 << 20):
            self.rfile.read(length)
        elif length:
            self.close_connection = True

    def _send(self, status: int, ctype: str, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)


def _create(name: str, config: OtlpReceiverConfig, next_consumer: Consumer, context: Context) -> OtlpReceiver:
    return OtlpReceiver(name, config, next_consumer, context)


factory = Factory(type="otlp", kind=Kind.RECEIVER, config_class=OtlpReceiverConfig, create=_create, stability="beta")

__all__ = ["OtlpReceiver", "OtlpReceiverConfig", "factory", "decompress", "split_endpoint"]
