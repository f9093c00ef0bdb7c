"""otelproc from its wheel, with no checkout: build the wheel, install it into a fresh venv, and from
an empty folder run `validate`, `serve` without --config (one OTLP/HTTP record in, read back from the
store), `demo --duration 20 --check` and `report`.

The fresh venv gets the dependencies from the test's own environment (a path line in a .pth file:
the test's site-packages come after the venv's own, and their .pth files, such as an editable install
of otelproc, are not run), so nothing but the wheel is installed and no index is needed for it. The
wheel's first command compiles the kernels (its files live elsewhere than the checkout's): that is the
first-run experience, checked to say so.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
import urllib.request
import zipfile
from pathlib import Path

import pytest

from otelproc import defaults
from otelproc.report import MAIN_DASHBOARDS

REPO = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel, built from a copy of the sources the Dockerfile copies (no stale build/ of the checkout)."""
    src = tmp_path_factory.mktemp("src")
    shutil.copy(REPO / "pyproject.toml", src)
    shutil.copy(REPO / "README.md", src)
    shutil.copytree(REPO / "otelproc", src / "otelproc", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    out = tmp_path_factory.mktemp("wheels")
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", str(out), str(src)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (whl,) = out.glob("otelproc-*.whl")
    return whl


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("venv") / "v"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True, timeout=300)
    purelib = Path(subprocess.run([str(root / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                                  capture_output=True, text=True, check=True).stdout.strip())
    (purelib / "zz_test_dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    proc = subprocess.run([str(root / "bin" / "python"), "-m", "pip", "install", "--no-deps", "--no-index", str(wheel)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("empty")


def _env(workdir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTELPROC_", "PYTHON", "NUMBA_"))}
    env["NUMBA_CACHE_DIR"] = str(workdir.parent / "numba-cache")  # a fresh cache: the first run compiles
    env["HOME"] = str(workdir.parent)
    # every listener of the default config on a free port (whatever endpoints it gains)
    for var in set(re.findall(r"\$\{env:(OTELPROC_\w+_ENDPOINT)", defaults.CONFIG.read_text())):
        env[var] = "127.0.0.1:0"
    return env


def _run(venv: Path, workdir: Path, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run([str(venv / "bin" / "otelproc"), *args], cwd=workdir, env=_env(workdir),
                          capture_output=True, text=True, timeout=timeout)


def test_the_wheel_carries_the_shipped_files_and_declares_the_runtime_dependencies(wheel):
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        meta = next(z.read(n).decode() for n in names if n.endswith(".dist-info/METADATA"))
    for path in ("otelproc/defaults/otelproc.yaml", "otelproc/defaults/alerts.yaml",
                 "otelproc/defaults/dashboards/overview.json", "otelproc/store/sql/otel_logs.sql"):
        assert path in names, f"{path} is not in the wheel"
    assert not any(n.startswith(("config/", "grafana/", "tests/")) for n in names)
    requires = [line.split(":", 1)[1].strip() for line in meta.splitlines() if line.startswith("Requires-Dist:")]
    for dep in ("lz4", "backports.zstd"):
        assert any(r.startswith(dep) for r in requires), f"{dep} is not a declared dependency: {requires}"


def test_from_an_empty_folder(venv, workdir):
    # the package is the wheel's, not the checkout's
    where = subprocess.run([str(venv / "bin" / "python"), "-c", "import otelproc; print(otelproc.__file__)"],
                           cwd=workdir, env=_env(workdir), capture_output=True, text=True, check=True).stdout
    assert where.startswith(str(venv)), where

    proc = _run(venv, workdir, "validate")
    assert proc.returncode == 0 and "valid" in proc.stdout, proc.stderr

    # serve, no --config: the first run compiles the kernels behind a visible line
    ready = workdir / "ready.json"
    env = _env(workdir)
    server = subprocess.Popen([str(venv / "bin" / "otelproc"), "serve", "--ready-file", str(ready)], cwd=workdir,
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 1200
        while not ready.exists() and server.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
        assert ready.exists(), f"serve did not start (exit {server.poll()})"
        port = json.loads(ready.read_text())["otlp"]["http"]
        body = {"resourceLogs": [{"resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "wheel"}}]},
                                  "scopeLogs": [{"logRecords": [{"timeUnixNano": str(time.time_ns()), "severityNumber": 9,
                                                                 "body": {"stringValue": "hello from the wheel"}}]}]}]}
        req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/logs", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as resp:
            assert resp.status == 200
    finally:
        server.send_signal(signal.SIGTERM)
        out, _ = server.communicate(timeout=120)
    assert server.returncode == 0, out[-3000:]
    assert "compiling kernels, first run only" in out and "kernels ready in" in out, out[-3000:]
    assert "Traceback" not in out
    assert (workdir / "data").is_dir()  # the default config's data under ./data

    proc = _run(venv, workdir, "tail", "--format", "json")
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["body"] for r in rows if r.get("service") == "wheel"] == ["hello from the wheel"], proc.stdout

    # the demo: kernels already compiled, so its clock starts at once and nothing is compiled during it
    cache = Path(env["NUMBA_CACHE_DIR"])
    compiled = sorted(cache.rglob("*.nbc"))
    proc = _run(venv, workdir, "demo", "--duration", "20", "--check")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "compiling kernels" not in proc.stdout + proc.stderr
    assert sorted(cache.rglob("*.nbc")) == compiled, "the demo compiled kernels the warm-up did not"

    proc = _run(venv, workdir, "report", "--out", "report")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    index = (workdir / "report" / "index.html").read_text()
    assert sorted(p.name for p in (workdir / "report").glob("*.png")) == sorted(f"{n}.png" for n in MAIN_DASHBOARDS)
    assert "<li>" not in index, "panels failed: " + index
