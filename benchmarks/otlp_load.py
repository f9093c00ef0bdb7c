"""Realistic pre-encoded OTLP log requests and a multi-process HTTP/gRPC load generator.

Both transports send bodies gzip-compressed *before* the timed loop, as a Collector on another
machine would (its CPU is not ours). For gRPC that takes a small HTTP/2 client of our own
(:class:`PrecompressedGrpcClient`): grpcio's client can only compress each message itself, in the
loop, at zlib level 6 (~2.9 ms per 173 KiB request), on the same 2 cores as the server under test;
``grpc_client="grpcio"`` keeps that client for comparison.

Bodies come from the Loghub-2k structured CSVs when a data directory is given
(``--loghub DIR``), otherwise from a built-in set of service-like templates with
random variables. Each request has ``records`` log records spread over
``resources`` resources (services) with resource attributes, two log attributes
per record, trace/span ids and severities, like a Collector's batch.
"""
from __future__ import annotations

import csv
import gzip
import http.client
import multiprocessing as mp
import random
import socket
import struct
import time
from pathlib import Path

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord

BUILTIN_TEMPLATES = [
    "GET /api/v1/orders/{id} 200 {ms}ms",
    "user {user} logged in from {ip}",
    "payment {uuid} authorised amount={amount} currency=EUR",
    "cache miss for key session:{hex}",
    "Connection to db-{n}.internal:5432 timed out after {ms} ms",
    "worker {n} finished job {id} in {ms} ms",
    "ERROR failed to write /var/lib/app/{hex}.dat: No space left on device",
    "Received block blk_{id} of size {amount} from /{ip}",
]


def loghub_bodies(root: str | Path) -> list[str]:
    """All Loghub-2k bodies, system after system."""
    return [body for rows in loghub_bodies_by_system(root).values() for body in rows]


def loghub_bodies_by_system(root: str | Path) -> dict[str, list[str]]:
    """Loghub-2k bodies per system (HDFS, Spark, ...), for streams where each service has its own templates."""
    out: dict[str, list[str]] = {}
    for structured in sorted(Path(root).glob("*/*_2k.log_structured.csv")):
        with open(structured, newline="", encoding="utf-8") as f:
            rows = [row["Content"] for row in csv.DictReader(f) if row["Content"].strip()]
        if rows:
            out[structured.parent.name] = rows
    return out


def synthetic_bodies(n: int, rng: random.Random) -> list[str]:
    out = []
    for _ in range(n):
        t = rng.choice(BUILTIN_TEMPLATES)
        out.append(t.format(id=rng.randrange(10**9), ms=rng.randrange(1, 5000), user=f"u{rng.randrange(10**5)}",
                            ip=f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(256)}",
                            uuid=f"{rng.getrandbits(128):032x}", amount=rng.randrange(10**6),
                            hex=f"{rng.getrandbits(64):016x}", n=rng.randrange(64)))
    return out


def _kv(k: str, v: str) -> KeyValue:
    return KeyValue(key=k, value=AnyValue(string_value=v))


def build_requests(count: int, records: int = 1000, resources: int = 5, services: int = 20,
                   bodies: list[str] | dict[str, list[str]] | None = None, seed: int = 1,
                   t0_ns: int | None = None) -> list[bytes]:
    """``count`` serialized ExportLogsServiceRequests of ``records`` records each.

    ``bodies`` as a dict (system -> bodies, :func:`loghub_bodies_by_system`) gives each service
    the bodies of one system (service i: system i mod #systems, named ``<system>-<i>``), so a
    service has its own templates as real services do; as a list every service draws from all.
    """
    rng = random.Random(seed)
    bodies = bodies or synthetic_bodies(20_000, rng)
    groups = list(bodies.items()) if isinstance(bodies, dict) else None
    t0 = t0_ns or time.time_ns()
    per_res = records // resources
    out = []
    for c in range(count):
        req = ExportLogsServiceRequest()
        for r in range(resources):
            rl = req.resource_logs.add()
            svc_no = (c * resources + r) % services
            if groups:
                system, pool = groups[svc_no % len(groups)]
                svc = f"{system.lower()}-{svc_no:03d}"
            else:
                pool = bodies
                svc = f"svc-{svc_no:03d}"
            rl.resource.attributes.extend([_kv("service.name", svc), _kv("host.name", f"node-{r}"),
                                           _kv("k8s.namespace.name", "prod"), _kv("deployment.environment", "prod")])
            sl = rl.scope_logs.add()
            sl.scope.name = "app.logger"
            for i in range(per_res):
                sev = rng.choices((9, 13, 17), weights=(90, 7, 3))[0]
                rec = LogRecord(time_unix_nano=t0 + (c * records + r * per_res + i) * 1000,
                                observed_time_unix_nano=t0 + (c * records + r * per_res + i) * 1000 + 500,
                                severity_number=sev, severity_text={9: "INFO", 13: "WARN", 17: "ERROR"}[sev],
                                body=AnyValue(string_value=rng.choice(pool)),
                                trace_id=rng.randbytes(16), span_id=rng.randbytes(8), flags=1)
                rec.attributes.extend([_kv("thread", f"worker-{rng.randrange(16)}"), _kv("code.function", "handle")])
                sl.log_records.append(rec)
        out.append(req.SerializeToString())
    return out


def _timed_sends(send, duration: float, records: int) -> tuple[int, int, list[float]]:
    """Call ``send(i)`` for request i flat out for ``duration`` s: it returns None after a connection
    error (not counted; the caller reconnected), else (accepted, pause in s before the next request).
    Returns (records accepted, records refused, latency per counted request)."""
    accepted = refused = 0
    lat = []
    end = time.monotonic() + duration
    i = 0
    while time.monotonic() < end:
        t = time.perf_counter()
        answer = send(i)
        if answer is None:
            continue
        lat.append(time.perf_counter() - t)
        ok, pause = answer
        if ok:
            accepted += records
        else:
            refused += records
            time.sleep(pause)
        i += 1
    return accepted, refused, lat


def _http_worker(port: int, payloads: list[bytes], gzip_on: bool, duration: float, records: int, q) -> None:
    body_list = [gzip.compress(p, 1) if gzip_on else p for p in payloads]
    headers = {"Content-Type": "application/x-protobuf"}
    if gzip_on:
        headers["Content-Encoding"] = "gzip"
    conn = [http.client.HTTPConnection("127.0.0.1", port, timeout=60)]

    def send(i: int):
        try:
            conn[0].request("POST", "/v1/logs", body=body_list[i % len(body_list)], headers=headers)
            resp = conn[0].getresponse()
            resp.read()
        except (OSError, http.client.HTTPException):
            conn[0].close()
            conn[0] = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            time.sleep(0.05)
            return None
        return resp.status == 200, float(resp.getheader("Retry-After") or 0.1) / 10

    q.put(_timed_sends(send, duration, records))


def _grpc_worker(port: int, payloads: list[bytes], gzip_on: bool, duration: float, records: int, q) -> None:
    import grpc

    ch = grpc.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.max_send_message_length", 64 << 20)])
    call = ch.unary_unary("/opentelemetry.proto.collector.logs.v1.LogsService/Export")
    comp = grpc.Compression.Gzip if gzip_on else grpc.Compression.NoCompression

    def send(i: int):
        try:
            call(payloads[i % len(payloads)], timeout=60, compression=comp)
            return True, 0.0
        except grpc.RpcError:
            return False, 0.1

    q.put(_timed_sends(send, duration, records))


_H2_DATA, _H2_HEADERS, _H2_RST_STREAM, _H2_SETTINGS, _H2_PING, _H2_GOAWAY, _H2_WINDOW_UPDATE, _H2_CONTINUATION = \
    0x0, 0x1, 0x3, 0x4, 0x6, 0x7, 0x8, 0x9
_H2_END_STREAM, _H2_ACK, _H2_END_HEADERS, _H2_PADDED = 0x1, 0x1, 0x4, 0x8
_H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def _h2_frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes((kind, flags)) + struct.pack(">I", stream) + payload


def _hpack_literal(name: str, value: str) -> bytes:
    """One header as 'literal without indexing, new name', no Huffman (RFC 7541 6.2.2)."""
    out = bytearray((0,))
    for s in (name.encode(), value.encode()):
        n = len(s)
        if n < 127:
            out.append(n)
        else:  # 7-bit prefix integer, continued in 7-bit groups
            out.append(127)
            n -= 127
            while n >= 128:
                out.append((n & 127) | 128)
                n >>= 7
            out.append(n)
        out += s
    return bytes(out)


class PrecompressedGrpcClient:
    """Unary OTLP/gRPC Exports over one HTTP/2 connection, one stream at a time (as a Collector's
    exporter queue consumer does), with messages compressed in advance.

    Sends exactly what a gRPC client sends (preface, SETTINGS, a HEADERS frame with
    ``grpc-encoding: gzip``, length-prefixed DATA with the compressed flag set, honouring the
    server's flow-control windows and frame size) and answers SETTINGS and PING. Response headers
    are not HPACK-decoded: a call counts as accepted when the server sent a response message
    before the trailers (a gRPC server sends none with an error status); ``receiver_throughput.py``
    checks that count against the rows that landed.
    """

    def __init__(self, port: int, path: str = "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
                 compressed: bool = True, timeout: float = 60.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.compressed = compressed
        self.buf = bytearray()
        self.next_stream = 1
        self.conn_window = self.initial_window = 65535
        self.max_frame = 16384
        # the one open stream: its id, send window, whether it ended and whether a response message came
        self.active, self.stream_window, self.done, self.got_message = 0, 0, True, False
        headers = [(":method", "POST"), (":scheme", "http"), (":path", path), (":authority", f"127.0.0.1:{port}"),
                   ("content-type", "application/grpc"), ("te", "trailers"), ("grpc-timeout", f"{int(timeout)}S"),
                   ("grpc-accept-encoding", "identity,gzip"), ("user-agent", "otelproc-bench-grpc/1.0")]
        if compressed:
            headers.append(("grpc-encoding", "gzip"))
        self.header_block = b"".join(_hpack_literal(k, v) for k, v in headers)
        # no push; a 16 MiB stream window and +1 GiB on the connection so the server never waits on us
        settings = struct.pack(">HIHI", 0x2, 0, 0x4, 1 << 24)
        self.sock.sendall(_H2_PREFACE + _h2_frame(_H2_SETTINGS, 0, 0, settings)
                          + _h2_frame(_H2_WINDOW_UPDATE, 0, 0, struct.pack(">I", 1 << 30)))

    def close(self) -> None:
        self.sock.close()

    def export(self, message: bytes) -> bool:
        """Send one (already compressed if ``compressed``) request message; True when answered OK."""
        sid = self.next_stream
        self.next_stream += 2
        self.stream_window, self.active, self.done, self.got_message = self.initial_window, sid, False, False
        self.sock.sendall(_h2_frame(_H2_HEADERS, _H2_END_HEADERS, sid, self.header_block))
        data = memoryview(bytes((1 if self.compressed else 0,)) + struct.pack(">I", len(message)) + message)
        off = 0
        while off < len(data) and not self.done:
            n = min(self.max_frame, self.conn_window, self.stream_window, len(data) - off)
            if n <= 0:
                self._read_frame()  # wait for a WINDOW_UPDATE
                continue
            last = off + n == len(data)
            self.sock.sendall(_h2_frame(_H2_DATA, _H2_END_STREAM if last else 0, sid, bytes(data[off:off + n])))
            off += n
            self.conn_window -= n
            self.stream_window -= n
        while not self.done:
            self._read_frame()
        return self.got_message

    def _recv_exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            chunk = self.sock.recv(1 << 16)
            if not chunk:
                raise ConnectionError("server closed the connection")
            self.buf += chunk
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def _read_frame(self) -> None:
        head = self._recv_exact(9)
        length = int.from_bytes(head[:3], "big")
        kind, flags, stream = head[3], head[4], int.from_bytes(head[5:9], "big") & 0x7FFFFFFF
        payload = self._recv_exact(length)
        mine = stream == self.active
        if kind == _H2_DATA and mine:
            if flags & _H2_PADDED:
                payload = payload[1:len(payload) - payload[0]]
            self.got_message |= len(payload) >= 5
            self.done |= bool(flags & _H2_END_STREAM)
        elif kind in (_H2_HEADERS, _H2_CONTINUATION) and mine:
            self.done |= bool(flags & _H2_END_STREAM)
        elif kind == _H2_RST_STREAM and mine:
            self.done, self.got_message = True, False
        elif kind == _H2_SETTINGS and not flags & _H2_ACK:
            for i in range(0, len(payload) - 5, 6):
                key, value = struct.unpack(">HI", payload[i:i + 6])
                if key == 0x4:  # INITIAL_WINDOW_SIZE: applies to open streams too
                    self.stream_window += value - self.initial_window
                    self.initial_window = value
                elif key == 0x5:
                    self.max_frame = value
            self.sock.sendall(_h2_frame(_H2_SETTINGS, _H2_ACK, 0))
        elif kind == _H2_PING and not flags & _H2_ACK:
            self.sock.sendall(_h2_frame(_H2_PING, _H2_ACK, 0, payload))
        elif kind == _H2_WINDOW_UPDATE:
            inc = int.from_bytes(payload[:4], "big") & 0x7FFFFFFF
            if stream == 0:
                self.conn_window += inc
            elif mine:
                self.stream_window += inc
        elif kind == _H2_GOAWAY:
            raise ConnectionError("server sent GOAWAY")


def _grpc_precompressed_worker(port: int, payloads: list[bytes], gzip_on: bool, duration: float, records: int,
                               q) -> None:
    messages = [gzip.compress(p, 1) if gzip_on else p for p in payloads]  # same bytes as the HTTP worker's
    client = [PrecompressedGrpcClient(port, compressed=gzip_on)]

    def send(i: int):
        try:
            return client[0].export(messages[i % len(messages)]), 0.1
        except OSError:
            client[0].close()
            time.sleep(0.05)
            client[0] = PrecompressedGrpcClient(port, compressed=gzip_on)
            return None

    result = _timed_sends(send, duration, records)
    client[0].close()
    q.put(result)


def run_load(port: int, payloads: list[bytes], records: int, transport: str = "http", gzip_on: bool = True,
             clients: int = 2, duration: float = 10.0, grpc_client: str = "precompressed") -> dict:
    """Send flat out from ``clients`` processes for ``duration`` s; returns accepted/refused counts and latency.

    ``grpc_client``: "precompressed" (default; bodies gzipped before the loop, as for HTTP) or
    "grpcio" (grpcio's client, which gzips every message in the loop at level 6).
    """
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    target = _http_worker if transport == "http" else \
        (_grpc_precompressed_worker if grpc_client == "precompressed" else _grpc_worker)
    procs = [ctx.Process(target=target, args=(port, payloads, gzip_on, duration, records, q)) for _ in range(clients)]
    t = time.perf_counter()
    for p in procs:
        p.start()
    results = [q.get() for _ in procs]
    for p in procs:
        p.join()
    wall = time.perf_counter() - t
    lat = sorted(x for r in results for x in r[2])
    accepted = sum(r[0] for r in results)
    return {"accepted": accepted, "refused": sum(r[1] for r in results), "seconds": duration, "wall": wall,
            "accepted_per_s": accepted / duration,
            "p50_ms": 1000 * lat[len(lat) // 2] if lat else float("nan"),
            "p99_ms": 1000 * lat[int(len(lat) * 0.99)] if lat else float("nan")}
