"""The one small HTTP/1.1 server under every otelproc listener: the OTLP/HTTP receiver, the ClickHouse
query endpoint, the Loki API, the alert API, the metrics/health server and the webhook sink.

It does what every listener needs once: ``host:port`` parsing, binding (IPv4 or IPv6, optional TLS
with the handshake on the connection's thread), a serving thread, bounded body reading (Content-Length
or chunked; refused before reading when too large) and bounded decompression (refused while
decompressing: a few KiB of gzip can expand to gigabytes). What a refusal looks like on the wire is
each protocol's own: ``Handler.refuse`` is the one hook a listener overrides.
"""
from __future__ import annotations

import gzip
import logging
import socket
import ssl
import threading
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

__all__ = ["BodyError", "ListenError", "Handler", "Server", "parse_endpoint", "decompress", "compress",
           "response_encoding", "DECOMPRESSORS"]

log = logging.getLogger("otelproc.httpserver")

TLS_HANDSHAKE_TIMEOUT = 10.0


class BodyError(Exception):
    """A request body refused. ``reason``: too_large (413), malformed framing (400), corrupt compressed
    data (400), unsupported Content-Encoding (415); each protocol answers it in its own shape."""

    STATUS = {"too_large": 413, "malformed": 400, "corrupt": 400, "unsupported": 415}

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason
        self.status = self.STATUS[reason]


class ListenError(OSError):
    """Cannot bind; ``str()`` is the one-line message (no ``[Errno N]`` prefix), ``errno`` is kept."""

    def __str__(self) -> str:
        return str(self.strerror)


def parse_endpoint(endpoint: str, empty_host: str | None = None) -> tuple[str, int]:
    """``host:port`` (``[::1]:8123`` for IPv6) -> (host, port); port 0 picks a free port. An empty host
    (``:4318``) becomes ``empty_host``, or is refused when that is None. Raises ValueError saying what is wrong."""
    if not isinstance(endpoint, str) or ":" not in endpoint:
        raise ValueError(f"expected host:port (e.g. 127.0.0.1:8123), got {endpoint!r}")
    host, _, port_text = endpoint.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not host:
        if empty_host is None:
            raise ValueError(f"missing host in {endpoint!r}; use 0.0.0.0:{port_text} to listen on every interface")
        host = empty_host
    if not port_text.isdigit():
        raise ValueError(f"port must be a number, got {port_text!r} in {endpoint!r}")
    port = int(port_text)
    if port > 65535:
        raise ValueError(f"port must be 0..65535 (0 = any free port), got {port}")
    return host, port


# --------------------------------------------------------------------------- bodies

def _zstd() -> Any:
    try:
        from compression import zstd  # type: ignore[import-not-found]  # Python 3.14
    except ImportError:
        from backports import zstd  # type: ignore[no-redef]
    return zstd


def _lz4_frame() -> Any:
    import lz4.frame

    return lz4.frame


# Content-Encoding -> a new decompressor (decompress(data, max_length), eof, unused_data)
DECOMPRESSORS: dict[str, Callable[[], Any]] = {
    "gzip": lambda: zlib.decompressobj(16 + zlib.MAX_WBITS),
    "x-gzip": lambda: zlib.decompressobj(16 + zlib.MAX_WBITS),
    "deflate": lambda: zlib.decompressobj(),  # zlib-wrapped (RFC 9110); raw deflate is tried after it
    "zstd": lambda: _zstd().ZstdDecompressor(),
    "lz4": lambda: _lz4_frame().LZ4FrameDecompressor(),  # frames, as ClickHouse reads them
}


def _bounded(new_decompressor: Callable[[], Any], data: bytes, limit: int, enc: str, limit_name: str) -> bytes:
    out = bytearray()
    while data:  # every gzip member / zstd or lz4 frame
        d = new_decompressor()
        out += d.decompress(data, limit + 1 - len(out))
        if len(out) > limit:
            raise BodyError("too_large", f"the decompressed {enc} request body exceeds {limit_name} ({limit} bytes)")
        if not d.eof:
            raise BodyError("corrupt", f"cannot decode the {enc} request body: it ends inside a compressed frame")
        data = d.unused_data
    return bytes(out)


def decompress(data: bytes, encoding: str | None, limit: int, limit_name: str = "the limit",
               allowed: tuple[str, ...] = tuple(DECOMPRESSORS)) -> bytes:
    """``data`` without its Content-Encoding, refusing more than ``limit`` bytes of output while decompressing.
    Raises BodyError (too_large / corrupt / unsupported)."""
    enc = (encoding or "").strip().lower()
    if enc in ("", "identity", "none"):
        return data
    if enc not in allowed:
        raise BodyError("unsupported", f"unsupported Content-Encoding {enc!r}; use {', '.join(allowed)} or none")
    try:
        return _bounded(DECOMPRESSORS[enc], data, limit, enc, limit_name)
    except ImportError:
        raise BodyError("unsupported", f"{enc} Content-Encoding is not available in this installation") from None
    except BodyError as e:
        if e.reason == "too_large" or enc != "deflate":
            raise
        first = e
    except Exception as e:  # noqa: BLE001 - each library has its own error class; a corrupt body is the client's
        first = BodyError("corrupt", f"cannot decode the {enc} request body: {e}")
        if enc != "deflate":
            raise first from None
    try:  # raw deflate, as some clients send it
        return _bounded(lambda: zlib.decompressobj(-zlib.MAX_WBITS), data, limit, enc, limit_name)
    except BodyError as e:
        if e.reason == "too_large":
            raise
    except zlib.error:
        pass
    raise first from None


# Accept-Encoding name -> compressor for answers
_COMPRESSORS: dict[str, Callable[[bytes], bytes]] = {
    "gzip": lambda b: gzip.compress(b, compresslevel=3),
    "deflate": lambda b: zlib.compress(b, 3),
    "zstd": lambda b: _zstd().compress(b, 3),
    "lz4": lambda b: _lz4_frame().compress(b),
}


def compress(data: bytes, encoding: str) -> bytes:
    return _COMPRESSORS[encoding](data)


def response_encoding(accept_encoding: str | None, allowed: tuple[str, ...] = tuple(_COMPRESSORS)) -> str | None:
    """The client's first acceptable encoding among ``allowed`` (``q=0`` refuses one), or None."""
    for item in (accept_encoding or "").split(","):
        name, _, params = item.strip().lower().partition(";")
        if name.strip() in allowed and params.replace(" ", "") not in ("q=0", "q=0.0"):
            return name.strip()
    return None


# --------------------------------------------------------------------------- handler and server

class Handler(BaseHTTPRequestHandler):
    """HTTP/1.1 framing shared by every listener; a subclass implements ``answer(method)``."""

    protocol_version = "HTTP/1.1"  # keep-alive: clients reuse connections
    server_version = "otelproc"
    # headers and body leave in two writes: without TCP_NODELAY, Nagle + the client's delayed ACK
    # add ~40 ms to every answer on a kept-alive connection
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - BaseHTTPRequestHandler's name
        log.debug("%s %s", self.address_string(), format % args)

    def answer(self, method: str) -> None:
        self.refuse(405, f"method {method} not allowed")

    def refuse(self, status: int, message: str, reason: str = "") -> None:
        """The error shape hook: answer ``status`` with ``message`` as this protocol does (plain text here);
        ``reason`` is a BodyError's when a body was refused."""
        self.send(status, (message.rstrip() + "\n").encode(), "text/plain; charset=utf-8")

    def _serve(self, method: str) -> None:
        try:
            self.answer(method)
        except BodyError as e:
            self.refuse(e.status, str(e), e.reason)

    def do_GET(self) -> None:  # noqa: N802 - BaseHTTPRequestHandler's naming
        self._serve("GET")

    def do_HEAD(self) -> None:  # noqa: N802
        self._serve("HEAD")

    def do_POST(self) -> None:  # noqa: N802
        self._serve("POST")

    def do_DELETE(self) -> None:  # noqa: N802
        self._serve("DELETE")

    def read_body(self, limit: int, limit_name: str = "the limit") -> bytes:
        """The request body (Content-Length or chunked), at most ``limit`` bytes: a larger Content-Length is
        refused before reading. Raises BodyError (too_large / malformed; the connection is closed after it)."""
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            parts, total = [], 0
            while True:
                line = self.rfile.readline(1024)
                try:
                    n = int(line.split(b";", 1)[0].strip() or b"x", 16)
                except ValueError:
                    self.close_connection = True
                    raise BodyError("malformed", "malformed chunked body") from None
                if n == 0:
                    while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(parts)
                total += n
                if total > limit:
                    self.close_connection = True
                    raise BodyError("too_large", f"request body exceeds {limit_name} ({limit} bytes)")
                parts.append(self.rfile.read(n))
                self.rfile.readline(1024)
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0:
            self.close_connection = True
            raise BodyError("malformed", "invalid Content-Length")
        if length > limit:
            # a body we refuse is not read, so the connection cannot be reused
            self.close_connection = True
            raise BodyError("too_large", f"request body of {length} bytes exceeds {limit_name} ({limit} bytes)")
        return self.rfile.read(length) if length else b""

    def discard_body(self) -> None:
        """Skip a body not to be read (up to 1 MiB), else close the connection after the answer."""
        try:
            self.read_body(1 << 20)
        except BodyError:
            pass

    def send(self, status: int, body: bytes, content_type: str | None = None,
             headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        if content_type:
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)


class Server(ThreadingHTTPServer):
    """A listening, serving HTTP server (its own daemon thread); ``close()`` stops it."""

    daemon_threads = True

    def __init__(self, endpoint: str, handler: type[BaseHTTPRequestHandler], *, where: str, thread_name: str,
                 empty_host: str | None = None, tls_context: ssl.SSLContext | None = None):
        """``where`` names the config key in errors (``receivers::otlp::protocols::http::endpoint``)."""
        try:
            host, port = parse_endpoint(endpoint, empty_host)
        except ValueError as e:
            raise ValueError(f"{where}: {e}") from None
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.tls_context = tls_context
        try:
            super().__init__((host, port), handler)
        except OSError as e:
            raise ListenError(e.errno, f"{where}: cannot listen on {endpoint}: {e.strerror}") from None
        self._thread = threading.Thread(target=self.serve_forever, name=thread_name, daemon=True)
        self._thread.start()

    @property
    def host(self) -> str:
        return str(self.server_address[0])

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def close(self) -> None:
        self.shutdown()
        self.server_close()
        self._thread.join(5)

    def finish_request(self, request: Any, client_address: Any) -> None:
        # with TLS, each handshake runs on the connection's own thread: a slow or hostile client
        # cannot stall the accept loop
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

    def handle_error(self, request: Any, client_address: Any) -> None:
        # a client that resets or times out is not an otelproc error worth a traceback
        log.debug("HTTP connection from %s ended with an error", client_address, exc_info=True)
