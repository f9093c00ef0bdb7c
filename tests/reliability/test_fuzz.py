"""Hostile input: >= 10,000 mutated protobuf / JSON / gzip payloads against `otelproc serve`.
No crash, no hang (every request answered within its timeout), every answer 2xx or 4xx, memory
bounded. Figures are printed (pytest -s) and recorded in benchmarks/README.md under Reliability."""
from __future__ import annotations

import gzip
import http.client
import json
import random
import time
import zlib
from pathlib import Path

import grpc
import pytest
from google.protobuf import json_format
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse

from tests.e2e.conftest import free_port
from tests.otlp_util import make_request

pytestmark = pytest.mark.slow

N_PAYLOADS = int(__import__("os").environ.get("OTELPROC_FUZZ_N", "10000"))
LOGS_EXPORT = "/opentelemetry.proto.collector.logs.v1.LogsService/Export"


def seeds() -> list[bytes]:
    out = [make_request([f"body {i} é ✓" for i in range(n)], attrs={"a": "x" * 30, "n": 7}).SerializeToString()
           for n in (1, 5, 40)]
    req = make_request(["nested"])
    rec = req.resource_logs[0].scope_logs[0].log_records[0]
    v = rec.body
    for _ in range(30):  # deep kvlist/array nesting
        v = v.kvlist_value.values.add(key="k").value.array_value.values.add()
    v.string_value = "deep"
    out.append(req.SerializeToString())
    return out


def mutate(rng: random.Random, data: bytes) -> bytes:
    b = bytearray(data)
    op = rng.randrange(9)
    if op == 0 and b:       # flip bits
        for _ in range(rng.randint(1, 8)):
            b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
    elif op == 1 and b:     # truncate
        b = b[:rng.randrange(len(b))]
    elif op == 2:           # insert random bytes
        pos = rng.randrange(len(b) + 1)
        b[pos:pos] = rng.randbytes(rng.randint(1, 32))
    elif op == 3 and b:     # overwrite with a huge varint / length
        pos = rng.randrange(len(b))
        b[pos:pos + 10] = b"\xff" * 9 + b"\x01"
    elif op == 4 and len(b) > 4:  # duplicate a slice (repeated fields, concatenated messages)
        i, j = sorted(rng.sample(range(len(b)), 2))
        b[j:j] = b[i:j]
    elif op == 5 and b:     # invalid UTF-8 into string bytes
        pos = rng.randrange(len(b))
        b[pos:pos + 2] = b"\xc3\x28"
    elif op == 6:           # random garbage
        b = bytearray(rng.randbytes(rng.randint(0, 2000)))
    elif op == 7 and b:     # zero a run
        pos = rng.randrange(len(b))
        b[pos:pos + rng.randint(1, 16)] = bytes(min(16, len(b) - pos))
    else:                   # swap two bytes
        if len(b) > 1:
            i, j = rng.randrange(len(b)), rng.randrange(len(b))
            b[i], b[j] = b[j], b[i]
    return bytes(b)


def json_mutation(rng: random.Random, json_seeds: list[str]) -> bytes:
    text = rng.choice(json_seeds) if rng.random() < 0.9 else "{}"
    ops = [
        lambda t: t.replace('"timeUnixNano"', '"timeUnixNano": "99999999999999999999999", "x"', 1),
        lambda t: t.replace('"stringValue"', '"intValue"', 1),
        lambda t: t.replace("{", "[", 1),
        lambda t: t[:rng.randrange(len(t) + 1)],
        lambda t: t.replace('"traceId": "', '"traceId": "zz', 1),
        lambda t: "[" * 5000 + "]" * 5000,
        lambda t: t.replace('"body"', '"body": {"stringValue": "\\ud800"}, "b"', 1),
        lambda t: json.dumps({"resourceLogs": [{"scopeLogs": [{"logRecords": [{"body": {"stringValue": "x"}}] * 50}]}]}),
    ]
    return rng.choice(ops)(text).encode("utf-8", "surrogatepass")


def _parse(data: bytes):
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

    r = ExportLogsServiceRequest()
    r.ParseFromString(data)
    return r


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def test_fuzz_10000_mutated_payloads_never_crash_hang_or_5xx(otelproc_server, tmp_path):
    http_port, grpc_port, metrics_port = free_port(), free_port(), free_port()
    server = otelproc_server(f"""
receivers:
  otlp:
    protocols:
      grpc: {{endpoint: 127.0.0.1:{grpc_port}}}
      http: {{endpoint: 127.0.0.1:{http_port}, max_request_body_size: 1MiB, max_decompressed_size: 8MiB}}
processors:
  batch: {{send_batch_size: 5000, timeout: 200ms}}
exporters:
  clickhouse: {{endpoint: "chdb://{tmp_path / 'data'}", database: otel}}
service:
  telemetry: {{metrics: {{address: "127.0.0.1:{metrics_port}"}}}}
  pipelines:
    logs: {{receivers: [otlp], processors: [batch], exporters: [clickhouse]}}
""")
    rng = random.Random(20261129)
    base = seeds()
    bomb = zlib.compress(b"\x0a" * (64 << 20), 9)  # a deflate bomb: 64 MiB from ~64 KB
    json_seeds = [json_format.MessageToJson(_parse(b)) for b in base[:3]]  # the deep one is beyond upb's depth
    statuses: dict[int, int] = {}
    kinds = {"proto": 0, "json": 0, "gzip": 0, "grpc": 0, "bomb": 0}
    conn = http.client.HTTPConnection("127.0.0.1", http_port, timeout=20)
    channel = grpc.insecure_channel(f"127.0.0.1:{grpc_port}")
    call = channel.unary_unary(LOGS_EXPORT, request_serializer=None, response_deserializer=None)
    grpc_codes: dict[str, int] = {}
    warm = rss_mib(server.proc.pid)
    peak = warm
    t0 = time.time()
    for n in range(N_PAYLOADS):
        seed = rng.choice(base)
        r = rng.random()
        headers = {"Content-Type": "application/x-protobuf"}
        if r < 0.1:
            kinds["grpc"] += 1
            try:
                call(mutate(rng, seed), timeout=20)
                grpc_codes["OK"] = grpc_codes.get("OK", 0) + 1
            except grpc.RpcError as e:
                code = e.code()
                assert code not in (grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL, grpc.StatusCode.DEADLINE_EXCEEDED), \
                    f"payload {n}: gRPC {code}: {e.details()}"
                grpc_codes[code.name] = grpc_codes.get(code.name, 0) + 1
            continue
        if r < 0.55:
            kinds["proto"] += 1
            body = mutate(rng, seed)
        elif r < 0.75:
            kinds["json"] += 1
            body = json_mutation(rng, json_seeds)
            headers["Content-Type"] = "application/json"
        elif r < 0.98:
            kinds["gzip"] += 1
            body = gzip.compress(mutate(rng, seed), 1)
            if rng.random() < 0.5:
                body = mutate(rng, body)  # a corrupt gzip stream
            headers["Content-Encoding"] = "gzip"
        else:
            kinds["bomb"] += 1
            body = bomb
            headers["Content-Encoding"] = "deflate"
        try:
            conn.request("POST", "/v1/logs", body=body, headers=headers)
            resp = conn.getresponse()
            resp.read()
            status = resp.status
            if resp.getheader("Connection", "").lower() == "close":
                conn.close()
        except (ConnectionError, http.client.HTTPException, OSError) as e:
            assert server.proc.poll() is None, f"otelproc died on payload {n}"
            raise AssertionError(f"payload {n}: no answer ({e!r})")
        statuses[status] = statuses.get(status, 0) + 1
        assert 200 <= status < 300 or 400 <= status < 500, f"payload {n}: HTTP {status}"
        if status == 200 and headers["Content-Type"] == "application/x-protobuf":
            ExportLogsServiceResponse().ParseFromString(b"")  # the answer shape is checked in unit tests
        if n % 500 == 0:
            peak = max(peak, rss_mib(server.proc.pid))
    elapsed = time.time() - t0
    channel.close()
    peak = max(peak, rss_mib(server.proc.pid))
    assert server.proc.poll() is None, "otelproc died"
    # still healthy: a valid request is accepted
    conn = http.client.HTTPConnection("127.0.0.1", http_port, timeout=20)
    conn.request("POST", "/v1/logs", body=make_request(["after the fuzz"]).SerializeToString(),
                 headers={"Content-Type": "application/x-protobuf"})
    assert conn.getresponse().status == 200
    sanitized = server.metric(metrics_port, "otelproc_receiver_sanitized_log_records_total")
    assert server.stop() == 0
    print(f"\nfuzz: {N_PAYLOADS} payloads in {elapsed:.1f}s ({kinds}), HTTP answers {dict(sorted(statuses.items()))}, "
          f"gRPC answers {grpc_codes}, sanitized records {sanitized:.0f}, crashes 0, hangs 0, "
          f"RSS {warm:.0f} MiB after start -> peak {peak:.0f} MiB")
    assert peak - warm < 600, f"memory grew from {warm:.0f} to {peak:.0f} MiB"
