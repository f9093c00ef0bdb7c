"""Realistic pre-encoded OTLP log requests and a multi-process HTTP/gRPC load generator.

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


def _http_worker(port: int, payloads: list[bytes], gzip_on: bool, duration: float, records: int, q) -> None:
    body_list = [gzip.compress(p, 1) if gzip_on else p for p in payloads]
    headers = {"Content-Type": "application/x-protobuf"}
    if gzip_on:
        headers["Content-Encoding"] = "gzip"
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    accepted = refused = 0
    lat = []
    end = time.monotonic() + duration
    i = 0
    while time.monotonic() < end:
        t = time.perf_counter()
        try:
            conn.request("POST", "/v1/logs", body=body_list[i % len(body_list)], headers=headers)
            resp = conn.getresponse()
            resp.read()
        except (OSError, http.client.HTTPException):
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            time.sleep(0.05)
            continue
        lat.append(time.perf_counter() - t)
        if resp.status == 200:
            accepted += records
        else:
            refused += records
            time.sleep(float(resp.getheader("Retry-After") or 0.1) / 10)
        i += 1
    q.put((accepted, refused, lat))


def _grpc_worker(port: int, payloads: list[bytes], gzip_on: bool, duration: float, records: int, q) -> None:
    import grpc

    ch = grpc.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.max_send_message_length", 64 << 20)])
    call = ch.unary_unary("/opentelemetry.proto.collector.logs.v1.LogsService/Export")
    comp = grpc.Compression.Gzip if gzip_on else grpc.Compression.NoCompression
    accepted = refused = 0
    lat = []
    end = time.monotonic() + duration
    i = 0
    while time.monotonic() < end:
        t = time.perf_counter()
        try:
            call(payloads[i % len(payloads)], timeout=60, compression=comp)
            accepted += records
        except grpc.RpcError:
            refused += records
            time.sleep(0.1)
        lat.append(time.perf_counter() - t)
        i += 1
    q.put((accepted, refused, lat))


def run_load(port: int, payloads: list[bytes], records: int, transport: str = "http", gzip_on: bool = True,
             clients: int = 2, duration: float = 10.0) -> dict:
    """Send flat out from ``clients`` processes for ``duration`` s; returns accepted/refused counts and latency."""
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    target = _http_worker if transport == "http" else _grpc_worker
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
