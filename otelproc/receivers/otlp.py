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
import ssl
import time
from concurrent import futures
from dataclasses import dataclass, field

import grpc
from google.protobuf import json_format
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse

from otelproc.component import Consumer, Context, Factory, Kind, PermanentError, Receiver
from otelproc.config import ByteSize, Secret, setting
from otelproc.httpserver import BodyError, Handler, Server, decompress, parse_endpoint
from otelproc.receivers.decode import Decoded, decode_json, decode_protobuf
from otelproc.receivers.errors import Answer, RequestError, answer_for, rpc_status
from otelproc.receivers.sanitize import LimitsConfig, TooManyRecords, sanitize

log = logging.getLogger(__name__)

LOGS_SERVICE = "opentelemetry.proto.collector.logs.v1.LogsService"
MIB = 1 << 20


# an idle or slow HTTP connection is closed after this long (slowloris guard)
HTTP_SOCKET_TIMEOUT = 60.0


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
    max_recv_msg_size_mib: int = setting(16, ge=1)
    # requests handled at once (worker threads)
    max_concurrent_streams: int = setting(8, ge=1)

    def validate(self) -> list[str]:
        out = _check_endpoint(self.endpoint)
        out += [f"tls::{m}" for m in self.tls.validate()] + [f"auth::{m}" for m in self.auth.validate()]
        return out


@dataclass
class HttpConfig:
    # host:port to listen on (port 0 picks a free port)
    endpoint: str = "localhost:4318"
    # largest accepted request body as sent (compressed), answered 413 above it
    max_request_body_size: ByteSize = setting(ByteSize(20 * MIB), gt=0)
    # largest body after decompression (guards against gzip bombs), answered 413 above it
    max_decompressed_size: ByteSize = ByteSize(200 * MIB)
    # URL path of the logs endpoint
    logs_url_path: str = "/v1/logs"
    auth: AuthConfig = field(default_factory=AuthConfig)
    tls: ServerTlsConfig = field(default_factory=ServerTlsConfig)

    def validate(self) -> list[str]:
        out = _check_endpoint(self.endpoint)
        out += [f"tls::{m}" for m in self.tls.validate()] + [f"auth::{m}" for m in self.auth.validate()]
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
        parse_endpoint(endpoint, empty_host="0.0.0.0")  # ":4318" means all interfaces
        return []
    except ValueError as e:
        return [f"endpoint: {e}"]


class OtlpReceiver(Receiver):
    def __init__(self, name: str, config: OtlpReceiverConfig, next_consumer: Consumer, context: Context):
        super().__init__(name, next_consumer)
        self.config = config
        self._grpc_server: grpc.Server | None = None
        self._http_server: Server | None = None
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
            self._http_server.close()
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
        host, port = parse_endpoint(cfg.endpoint, empty_host="0.0.0.0")
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
        handler = type("_BoundHandler", (_OtlpHttpHandler,), {"receiver": self, "cfg": cfg})
        server = Server(cfg.endpoint, handler, where=f"receivers::{self.name}::protocols::http::endpoint",
                        thread_name=f"{self.name}-http", empty_host="0.0.0.0",
                        tls_context=cfg.tls.ssl_context() if cfg.tls.enabled() else None)
        self._http_server, self.http_port = server, server.port
        log.info("OTLP/HTTP receiver %s listening on %s:%d%s", self.name, server.host, server.port, cfg.logs_url_path)


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
        return decompress(message, "gzip", limit, "max_recv_msg_size_mib")
    if len(message) > 2 and message[0] == 0x78 and (0x7800 | message[1]) % 31 == 0:
        try:
            return decompress(message, "deflate", limit, "max_recv_msg_size_mib")
        except BodyError as e:
            if e.reason == "too_large":
                raise
    return message  # uncompressed: grpc core already applied max_receive_message_length


def _response(decoded: Decoded) -> ExportLogsServiceResponse:
    resp = ExportLogsServiceResponse()
    if decoded.rejected:
        resp.partial_success.rejected_log_records = decoded.rejected
        resp.partial_success.error_message = decoded.message
    return resp


class _OtlpHttpHandler(Handler):
    receiver: OtlpReceiver
    cfg: HttpConfig
    timeout = HTTP_SOCKET_TIMEOUT

    def log_message(self, fmt, *args):  # no per-request logs
        pass

    def answer(self, method: str) -> None:
        if method != "POST":
            if self.path.split("?", 1)[0] in ("/health", "/healthz", "/"):
                return self.send(200, b'{"status":"ok"}', "application/json")
            return self.send(404, b"not found\n", "text/plain")
        cfg = self.cfg
        if not cfg.auth.admits(self.headers.get("Authorization")):
            # refuse before reading the body: unauthenticated clients cost no decoding
            self.receiver.count_auth_failure("http")
            self.close_connection = True
            body = b'{"code":16,"message":"missing or invalid bearer token"}'
            return self.send(401, body, "application/json", {"WWW-Authenticate": 'Bearer realm="otelproc"'})
        path = self.path.split("?", 1)[0]
        if path != cfg.logs_url_path:
            self.discard_body()
            return self.send(404, f"unknown path {path}; logs go to {cfg.logs_url_path}\n".encode(), "text/plain")
        ctype = (self.headers.get("Content-Type") or "").split(";", 1)[0].strip().lower()
        kind = {"application/x-protobuf": "proto", "application/protobuf": "proto", "application/json": "json"}.get(ctype)
        try:
            if kind is None:
                self.discard_body()
                raise RequestError(415, grpc.StatusCode.INVALID_ARGUMENT,
                                   f"unsupported Content-Type {ctype!r}; use application/x-protobuf or application/json")
            body = self.read_body(cfg.max_request_body_size, "max_request_body_size")
            body = decompress(body, self.headers.get("Content-Encoding"), cfg.max_decompressed_size,
                              "max_decompressed_size", allowed=("gzip", "x-gzip", "deflate", "zstd"))
            decoded = self.receiver.export(body, kind, "http")
        except Exception as exc:
            ans = answer_for(exc)
            headers = {}
            if ans.retry_after is not None:
                headers["Retry-After"] = str(max(1, round(ans.retry_after)))
            st = rpc_status(ans)
            if kind == "json":
                return self.send(ans.http_status, json_format.MessageToJson(st).encode(), "application/json", headers)
            return self.send(ans.http_status, st.SerializeToString(), "application/x-protobuf", headers)
        resp = _response(decoded)
        if kind == "json":
            self.send(200, json_format.MessageToJson(resp, indent=None).encode(), "application/json")
        else:
            self.send(200, resp.SerializeToString(), "application/x-protobuf")


def _create(name: str, config: OtlpReceiverConfig, next_consumer: Consumer, context: Context) -> OtlpReceiver:
    return OtlpReceiver(name, config, next_consumer, context)


factory = Factory(type="otlp", kind=Kind.RECEIVER, config_class=OtlpReceiverConfig, create=_create, stability="beta")

__all__ = ["OtlpReceiver", "OtlpReceiverConfig", "factory"]
