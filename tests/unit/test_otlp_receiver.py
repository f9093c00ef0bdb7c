"""The otlp receiver's answers over HTTP and gRPC, per the OTLP specification.

Each test talks to a real server on a free port; a capturing consumer stands in
for the pipeline so the answers to back-pressure and failures can be provoked.
"""
from __future__ import annotations

import gzip
import http.client
import json
import socket
import threading
import zlib

import grpc
import pytest
from google.protobuf import json_format
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2_grpc
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse

from otelproc.component import BackPressureError, Context
from otelproc.config import parse_config
from otelproc.httpserver import BodyError
from otelproc.receivers.errors import answer_for
from otelproc.receivers.otlp import OtlpReceiver, _grpc_message
from otelproc.telemetry import Telemetry
from tests.otlp_util import make_request


class Capture:
    def __init__(self):
        self.batches = []
        self.fail: Exception | None = None
        self.lock = threading.Lock()

    def consume(self, batch):
        if self.fail is not None:
            raise self.fail
        with self.lock:
            self.batches.append(batch)

    @property
    def bodies(self):
        return [b for batch in self.batches for b in batch.body.to_pylist()]


CFG = """
receivers:
  otlp:
    protocols:
      grpc: {endpoint: 127.0.0.1:0}
      http: {endpoint: 127.0.0.1:0, max_request_body_size: 1MiB, max_decompressed_size: 4MiB}
exporters: {debug: {}}
service: {pipelines: {logs: {receivers: [otlp], exporters: [debug]}}}
"""


@pytest.fixture(scope="module")
def server():
    cfg = parse_config(CFG).receivers["otlp"]
    cap = Capture()
    tel = Telemetry()
    r = OtlpReceiver("otlp", cfg, cap, Context(telemetry=tel))
    r.start()
    yield r, cap, tel
    r.shutdown()


@pytest.fixture
def capture(server):
    _, cap, _ = server
    cap.batches.clear()
    cap.fail = None
    return cap


def post(server, body: bytes, ctype="application/x-protobuf", encoding=None, path="/v1/logs"):
    r, _, _ = server
    conn = http.client.HTTPConnection("127.0.0.1", r.http_port, timeout=10)
    headers = {"Content-Type": ctype}
    if encoding:
        headers["Content-Encoding"] = encoding
    conn.request("POST", path, body=body, headers=headers)
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp, data


def assert_still_serving(server, capture):
    resp, _ = post(server, make_request(["still alive"]).SerializeToString())
    assert resp.status == 200
    assert "still alive" in capture.bodies


def rpc_status(data: bytes) -> status_pb2.Status:
    st = status_pb2.Status()
    st.ParseFromString(data)
    return st


# ---------------------------------------------------------------- HTTP

def test_http_protobuf_ok(server, capture):
    resp, data = post(server, make_request(["a", "b", "c"]).SerializeToString())
    assert resp.status == 200 and resp.getheader("Content-Type") == "application/x-protobuf"
    out = ExportLogsServiceResponse()
    out.ParseFromString(data)
    assert not out.HasField("partial_success")
    assert capture.bodies == ["a", "b", "c"]
    batch = capture.batches[0]
    assert list(batch.service_names) == ["checkout"] * 3
    assert batch.log_attrs.row(1) == {"line": "1"}


def test_http_gzip(server, capture):
    resp, _ = post(server, gzip.compress(make_request(["zipped"]).SerializeToString()), encoding="gzip")
    assert resp.status == 200 and capture.bodies == ["zipped"]


def test_http_json_answers_json(server, capture):
    body = json_format.MessageToJson(make_request(["from json"])).encode()
    # the OTLP JSON mapping uses hex ids, not proto3-JSON base64
    doc = json.loads(body)
    rec = doc["resourceLogs"][0]["scopeLogs"][0]["logRecords"][0]
    rec["traceId"], rec["spanId"] = "000102030405060708090a0b0c0d0e0f", "0001020304050607"
    resp, data = post(server, json.dumps(doc).encode(), ctype="application/json")
    assert resp.status == 200 and resp.getheader("Content-Type") == "application/json"
    json.loads(data)
    assert capture.bodies == ["from json"]
    assert capture.batches[0].trace_id[0].tobytes() == bytes(range(16))


def test_partial_success_for_bad_trace_id(server, capture):
    req = make_request(["good", "bad"])
    req.resource_logs[0].scope_logs[0].log_records[1].trace_id = b"\x01\x02\x03"
    resp, data = post(server, req.SerializeToString())
    assert resp.status == 200
    out = ExportLogsServiceResponse()
    out.ParseFromString(data)
    assert out.partial_success.rejected_log_records == 1
    assert out.partial_success.error_message
    assert capture.bodies == ["good"]


@pytest.mark.parametrize("case", ["malformed_protobuf", "bad_json", "bad_gzip"])
def test_http_bad_data_is_400_with_status(server, capture, case):
    body, ctype, enc = {
        "malformed_protobuf": (b"\x0a\xff\xff\xff\xff\x0f garbage", "application/x-protobuf", None),
        "bad_json": (b'{"resourceLogs": [', "application/json", None),
        "bad_gzip": (b"\x1f\x8b\x08\x00 definitely not gzip", "application/x-protobuf", "gzip"),
    }[case]
    resp, data = post(server, body, ctype=ctype, encoding=enc)
    assert resp.status == 400
    if ctype == "application/json":
        msg = json.loads(data)["message"]
    else:
        msg = rpc_status(data).message
    assert msg
    assert_still_serving(server, capture)


def test_http_wrong_content_type_is_415(server, capture):
    resp, data = post(server, b"hello", ctype="text/plain")
    assert resp.status == 415 and "Content-Type" in rpc_status(data).message
    assert_still_serving(server, capture)


def test_http_oversize_is_413(server, capture):
    # Refused on Content-Length alone, before the body is read (a raw socket: http.client would
    # fail writing the rest of a body the server never reads).
    r, _, _ = server
    with socket.create_connection(("127.0.0.1", r.http_port), timeout=10) as sock:
        sock.sendall(b"POST /v1/logs HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
                     b"Content-Length: %d\r\n\r\n" % (2 << 20) + b"\x00" * 1024)
        head = sock.recv(65536)
    assert head.startswith(b"HTTP/1.1 413 ")
    assert b"exceeds max_request_body_size" in head or b"Connection: close" in head
    assert_still_serving(server, capture)


def test_http_gzip_bomb_is_413(server, capture):
    bomb = gzip.compress(b"\x00" * (16 << 20))  # 16 MiB of zeros in ~16 KiB
    resp, data = post(server, bomb, encoding="gzip")
    assert resp.status == 413 and "decompressed" in rpc_status(data).message
    assert_still_serving(server, capture)


def test_http_back_pressure_is_429_with_retry_after(server, capture):
    capture.fail = BackPressureError("queue full", retry_after=2)
    resp, data = post(server, make_request(["x"]).SerializeToString())
    assert resp.status == 429 and resp.getheader("Retry-After") == "2"
    st = rpc_status(data)
    info = error_details_pb2.RetryInfo()
    assert st.details[0].Unpack(info) and info.retry_delay.seconds == 2
    capture.fail = None
    assert_still_serving(server, capture)


def test_http_transient_failure_is_503_never_500(server, capture):
    capture.fail = RuntimeError("store down")
    resp, _ = post(server, make_request(["x"]).SerializeToString())
    assert resp.status == 503 and resp.getheader("Retry-After")


def test_http_unknown_path_and_health(server, capture):
    resp, _ = post(server, b"", path="/v1/traces")
    assert resp.status == 404
    r, _, _ = server
    conn = http.client.HTTPConnection("127.0.0.1", r.http_port, timeout=5)
    conn.request("GET", "/health")
    assert conn.getresponse().status == 200


def test_http_metrics_count_accepted_and_refused(server, capture):
    _, _, tel = server
    before = tel.value("otelproc_receiver_accepted_log_records_total", receiver="otlp", transport="http")
    post(server, make_request(["m1", "m2"]).SerializeToString())
    after = tel.value("otelproc_receiver_accepted_log_records_total", receiver="otlp", transport="http")
    assert after - before == 2


# ---------------------------------------------------------------- gRPC

@pytest.fixture
def stub(server):
    r, _, _ = server
    ch = grpc.insecure_channel(f"127.0.0.1:{r.grpc_port}")
    yield logs_service_pb2_grpc.LogsServiceStub(ch)
    ch.close()


def test_grpc_export_ok(stub, capture):
    resp = stub.Export(make_request(["g1", "g2"]), timeout=10)
    assert not resp.HasField("partial_success")
    assert capture.bodies == ["g1", "g2"]


def test_grpc_gzip(stub, capture):
    stub.Export(make_request(["gz"]), timeout=10, compression=grpc.Compression.Gzip)
    assert capture.bodies == ["gz"]


def test_grpc_deflate(stub, capture):
    stub.Export(make_request(["df"]), timeout=10, compression=grpc.Compression.Deflate)
    assert capture.bodies == ["df"]


def test_grpc_gzip_decompressed_size_limit_is_resource_exhausted(stub, capture):
    # ~17 MiB once inflated (the default max_recv_msg_size_mib is 16), a few KiB as sent
    with pytest.raises(grpc.RpcError) as ei:
        stub.Export(make_request(["z" * (17 << 20)]), timeout=30, compression=grpc.Compression.Gzip)
    assert ei.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert capture.bodies == []
    stub.Export(make_request(["z" * (15 << 20)]), timeout=30, compression=grpc.Compression.Gzip)
    assert len(capture.bodies) == 1


def test_grpc_message_compression_told_by_header_bytes():
    raw = make_request(["a", "b"]).SerializeToString()
    assert _grpc_message(raw, 1 << 20) is raw
    assert _grpc_message(gzip.compress(raw), 1 << 20) == raw
    assert _grpc_message(zlib.compress(raw), 1 << 20) == raw
    # 78 01 passes zlib's header check but can also start a protobuf (field 15, varint 1): kept as it is
    odd = b"\x78\x01" + raw
    assert _grpc_message(odd, 1 << 20) == odd
    with pytest.raises(BodyError) as ei:
        _grpc_message(gzip.compress(raw), len(raw) - 1)
    assert answer_for(ei.value).grpc_code == grpc.StatusCode.RESOURCE_EXHAUSTED
    with pytest.raises(BodyError) as ei:
        _grpc_message(gzip.compress(raw)[:-9], 1 << 20)
    assert answer_for(ei.value).grpc_code == grpc.StatusCode.INVALID_ARGUMENT


def test_grpc_partial_success(stub, capture):
    req = make_request(["ok", "bad"])
    req.resource_logs[0].scope_logs[0].log_records[1].span_id = b"\x01"
    resp = stub.Export(req, timeout=10)
    assert resp.partial_success.rejected_log_records == 1


def test_grpc_malformed_is_invalid_argument(server, capture):
    r, _, _ = server
    ch = grpc.insecure_channel(f"127.0.0.1:{r.grpc_port}")
    raw = ch.unary_unary("/opentelemetry.proto.collector.logs.v1.LogsService/Export")
    with pytest.raises(grpc.RpcError) as ei:
        raw(b"\x0a\xff\xff\xff\xff\x0f garbage", timeout=10)
    assert ei.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    ch.close()


def test_grpc_back_pressure_is_resource_exhausted_with_retry_info(stub, capture):
    capture.fail = BackPressureError("full", retry_after=1)
    with pytest.raises(grpc.RpcError) as ei:
        stub.Export(make_request(["x"]), timeout=10)
    assert ei.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    details = dict(ei.value.trailing_metadata())["grpc-status-details-bin"]
    info = error_details_pb2.RetryInfo()
    assert rpc_status(details).details[0].Unpack(info) and info.retry_delay.seconds == 1


def test_grpc_transient_is_unavailable(stub, capture):
    capture.fail = RuntimeError("boom")
    with pytest.raises(grpc.RpcError) as ei:
        stub.Export(make_request(["x"]), timeout=10)
    assert ei.value.code() == grpc.StatusCode.UNAVAILABLE
