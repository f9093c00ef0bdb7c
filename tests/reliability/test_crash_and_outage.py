"""Nothing acknowledged is lost: kill -9 under load, a 30 s store outage under load, and the real
otelcol-contrib retrying through 429s. Figures are printed (pytest -s) and recorded in
benchmarks/README.md under Reliability."""
from __future__ import annotations

import http.client
import json
import os
import signal
import threading
import time
import urllib.request

import pytest

from tests.reliability.util import ChdbShim, CuttableProxy, payload
from tests.e2e.conftest import free_port

pytestmark = pytest.mark.slow

PER_REQUEST = 1000


def server_config(http_port: int, metrics_port: int, endpoint: str, wal_dir: str, extra_exporter: str = "",
                  queue: str = "", batch: str = "{send_batch_size: 20000, timeout: 200ms}") -> str:
    return f"""
receivers:
  otlp:
    protocols:
      http: {{endpoint: 127.0.0.1:{http_port}}}
processors:
  batch: {batch}
exporters:
  clickhouse:
    endpoint: "{endpoint}"
    database: otel
    wal: {{directory: "{wal_dir}", fsync: interval, fsync_interval: 100ms}}
    retry_on_failure: {{initial_interval: 200ms, max_interval: 1s, max_elapsed_time: 5s}}
    timeout: 3s
    {extra_exporter}
service:
  {queue}
  telemetry: {{metrics: {{address: "127.0.0.1:{metrics_port}"}}}}
  pipelines:
    logs: {{receivers: [otlp], processors: [batch], exporters: [clickhouse]}}
"""


def send(port: int, body: bytes, conn_box: list) -> int:
    """POST one request on a kept-alive connection; the HTTP status, or 0 when the connection failed."""
    try:
        if not conn_box:
            conn_box.append(http.client.HTTPConnection("127.0.0.1", port, timeout=30))
        conn = conn_box[0]
        conn.request("POST", "/v1/logs", body=body, headers={"Content-Type": "application/x-protobuf"})
        resp = conn.getresponse()
        resp.read()
        return resp.status
    except (OSError, http.client.HTTPException):
        if conn_box:
            conn_box.pop().close()
        return 0


def wait_metric(server, port, name, predicate, timeout=120.0):
    deadline = time.time() + timeout
    while True:
        try:
            v = server.metric(port, name)
            if predicate(v):
                return v
        except OSError:
            pass
        assert time.time() < deadline, f"{name} did not reach the expected value"
        time.sleep(0.2)


def metric_where(port: int, name: str, label: str) -> float:
    """Sum of the samples of ``name`` whose labels contain ``label`` (e.g. 'status="back_pressure"')."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name + "{") and label in line)


def landed(server) -> tuple[int, int, int]:
    (row,) = server.sql("SELECT count() AS n, uniqExact(Body) AS u, countIf(c > 1) AS dup FROM "
                        "(SELECT Body, count() AS c FROM otel.otel_logs GROUP BY Body) ")
    return int(row["n"]), int(row["u"]), int(row["dup"])


def test_kill_9_while_streaming_200k_logs_loses_and_duplicates_nothing(otelproc_server, tmp_path):
    total = 200_000
    http_port, metrics_port = free_port(), free_port()
    cfg = server_config(http_port, metrics_port, f"chdb://{tmp_path / 'data'}", str(tmp_path / "wal"))
    server = otelproc_server(cfg)
    acknowledged: set[int] = set()   # first index of each request answered 200
    unanswered: set[int] = set()     # in flight when the process died: never retried
    box: list = []
    i = 0
    kill_at = total // 2
    killed = restarted = False
    t0 = time.time()
    while i < total:
        if not killed and i >= kill_at:
            # SIGKILL lands while the next request is being handled (and batches are being inserted)
            threading.Timer(0.002, lambda p=server.proc: p.send_signal(signal.SIGKILL)).start()
            killed = True
        status = send(http_port, payload(i, PER_REQUEST), box)
        if status == 200:
            acknowledged.add(i)
        elif status == 429:
            time.sleep(0.05)
            continue
        elif status == 0 and killed and not restarted:
            unanswered.add(i)  # it may or may not have been logged before the kill
            server.proc.wait(30)
            (tmp_path / "ready.json").unlink()
            server = otelproc_server(cfg)  # restart on the same WAL and data directory
            restarted = True
        else:
            raise AssertionError(f"unexpected answer {status}")
        i += PER_REQUEST
    elapsed = time.time() - t0
    assert restarted
    replayed = server.metric(metrics_port, "otelproc_wal_replayed_log_records_total")
    wait_metric(server, metrics_port, "otelproc_wal_unacknowledged_records", lambda v: v == 0)
    assert server.stop() == 0
    n, distinct, dup = landed(server)
    acked_logs = len(acknowledged) * PER_REQUEST
    got = {int(r["b"]) for r in server.sql("SELECT DISTINCT toUInt32(substring(Body, 5)) DIV 1000 * 1000 AS b "
                                           "FROM otel.otel_logs")}
    lost = acknowledged - got
    print(f"\nkill -9: sent {total} logs in {total // PER_REQUEST} requests ({elapsed:.1f}s), acknowledged "
          f"{acked_logs}, unanswered at the kill {len(unanswered) * PER_REQUEST}, landed {n} rows "
          f"({distinct} distinct), replayed from the WAL {replayed:.0f}, lost {len(lost) * PER_REQUEST}, "
          f"duplicated bodies {dup}")
    assert not lost, f"acknowledged requests lost: {sorted(lost)[:5]}"
    assert dup == 0
    assert n == distinct
    extra = got - acknowledged
    assert extra <= unanswered  # only an unanswered request may have landed besides the acknowledged ones
    assert n == acked_logs + len(extra) * PER_REQUEST


@pytest.fixture
def shim(tmp_path):
    s = ChdbShim(tmp_path / "shim")
    yield s
    s.close()


def test_store_outage_of_30s_under_load_loses_nothing(otelproc_server, tmp_path, shim):
    total = 120_000
    proxy = CuttableProxy(("127.0.0.1", shim.port))
    http_port, metrics_port = free_port(), free_port()
    server = otelproc_server(server_config(http_port, metrics_port, f"http://127.0.0.1:{proxy.port}",
                                           str(tmp_path / "wal")))
    acknowledged = 0
    refused_429 = 0
    box: list = []
    i = 0
    t0 = time.time()
    outage = (3.0, 33.0)  # seconds after the start of the load, which lasts about 36 s
    cut = restored = False
    unready_seen = False
    while i < total or not restored:
        now = time.time() - t0
        if not cut and now >= outage[0]:
            proxy.cut()
            cut = True
        if cut and not restored and now >= outage[1]:
            proxy.restore()
            restored = True
        if cut and not restored and not unready_seen:
            text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()
            unready_seen = 'otelproc_clickhouse_store_up{exporter="clickhouse"} 0.0' in text
        if i >= total:
            time.sleep(0.2)
            continue
        status = send(http_port, payload(i, PER_REQUEST), box)
        if status == 200:
            acknowledged += PER_REQUEST
            i += PER_REQUEST
            time.sleep(0.3)  # a steady stream over the whole outage, not a burst before it
        elif status == 429:
            refused_429 += 1
            time.sleep(0.2)
        else:
            raise AssertionError(f"unexpected answer {status} during the outage")
    wait_metric(server, metrics_port, "otelproc_wal_unacknowledged_records", lambda v: v == 0, timeout=180)
    up = server.metric(metrics_port, "otelproc_clickhouse_store_up")
    retries = server.metric(metrics_port, "otelproc_clickhouse_insert_retries_total")
    assert server.stop() == 0
    proxy.close()
    rows = shim.query("SELECT count(), uniqExact(Body) FROM otel.otel_logs FORMAT TSV").split()
    n, distinct = int(rows[0]), int(rows[1])
    print(f"\nstore outage 30s: acknowledged {acknowledged} logs, 429 answers {refused_429}, insert retries "
          f"{retries:.0f}, landed {n} rows ({distinct} distinct), lost {acknowledged - distinct}, "
          f"duplicated {n - distinct}")
    assert unready_seen, "the outage never showed in otelproc_clickhouse_store_up"
    assert up == 1
    assert distinct == acknowledged == total
    assert n == distinct


def test_real_collector_retries_through_429_and_every_line_arrives(otelproc_server, otelcol, tmp_path, shim):
    lines = 20_000
    proxy = CuttableProxy(("127.0.0.1", shim.port))
    http_port, metrics_port = free_port(), free_port()
    server = otelproc_server(server_config(http_port, metrics_port, f"http://127.0.0.1:{proxy.port}",
                                           str(tmp_path / "wal"), queue="queue: {max_records: 4000}",
                                           batch="{send_batch_size: 2000, max_buffered_records: 2000, timeout: 200ms}"))
    proxy.cut()  # the store is down from the start: the queue fills and otelproc answers 429
    logfile = otelcol(f"http://127.0.0.1:{http_port}", "gzip")
    with open(logfile, "a") as f:
        for k in range(lines):
            f.write(f"2026-11-29T08:00:00.000000000Z INFO line-{k}\n")
    deadline = time.time() + 60
    while metric_where(metrics_port, "otelproc_receiver_requests_total", 'status="back_pressure"') == 0:
        assert time.time() < deadline, "otelproc never answered 429"
        time.sleep(0.2)
    time.sleep(5)  # keep refusing for a while
    n429 = metric_where(metrics_port, "otelproc_receiver_requests_total", 'status="back_pressure"')
    proxy.restore()
    wait_metric(server, metrics_port, "otelproc_receiver_accepted_log_records_total", lambda v: v >= lines)
    wait_metric(server, metrics_port, "otelproc_wal_unacknowledged_records", lambda v: v == 0)
    assert server.stop() == 0
    proxy.close()
    rows = shim.query("SELECT count(), uniqExact(Body) FROM otel.otel_logs FORMAT TSV").split()
    n, distinct = int(rows[0]), int(rows[1])
    print(f"\notelcol through 429: {lines} lines written, 429 answers {n429:.0f}, landed {n} rows ({distinct} distinct)")
    assert n429 > 0
    assert distinct == lines and n == lines
