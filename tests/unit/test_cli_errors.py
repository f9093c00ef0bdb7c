"""Errors reach the user of the command line as one line that says what is wrong and what to do,
never as a traceback: missing config, bad $OTELPROC_HOME, an empty store, an unwritable folder,
a port in use."""
from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from otelproc import defaults
from otelproc.cli import main

REPO = Path(__file__).resolve().parents[2]


def _errors(capsys, argv: list[str]) -> tuple[int, list[str]]:
    with pytest.raises(SystemExit) as exc:
        code = main(argv)
        raise SystemExit(code)
    return exc.value.code, capsys.readouterr().err.splitlines()


def test_missing_config_file(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code, err = _errors(capsys, ["validate", "--config", "nope.yaml"])
    assert code == 2 and err == [f"otelproc: config file nope.yaml not found in {tmp_path}; "
                                 "leave --config out to run the embedded default config"]
    code, err = _errors(capsys, ["tail", "--config", str(tmp_path)])
    assert code == 2 and err == [f"otelproc: config file {tmp_path} is a directory, not a config file; "
                                 "leave --config out to run the embedded default config"]


@pytest.mark.parametrize("command", [["validate"], ["serve"]])
def test_bad_otelproc_home(tmp_path, monkeypatch, capsys, command):
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("OTELPROC_HOME", str(tmp_path / "file"))
    code, err = _errors(capsys, command)
    assert code != 0 and err == [f"otelproc: $OTELPROC_HOME={tmp_path / 'file'} exists and is not a directory: set it "
                                 "to a directory otelproc may write, or unset it to keep the data under ./data"]


def test_unwritable_demo_directory(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    code, err = _errors(capsys, ["demo", "--dir", str(tmp_path / "file" / "demo")])
    assert code == 2 and len(err) == 1
    assert err[0].startswith(f"otelproc demo: --dir: cannot create the demo directory {tmp_path / 'file' / 'demo'}")


def _otelproc(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("OTELPROC_")}
    full_env.update(NUMBA_CACHE_DIR=os.environ.get("NUMBA_CACHE_DIR", str(REPO / ".numba_cache")), **env)
    return subprocess.run([sys.executable, "-m", "otelproc", *args], cwd=cwd, env=full_env, capture_output=True,
                          text=True, timeout=600)


def test_views_and_report_on_an_empty_store(tmp_path):
    for args in (["tail"], ["report"]):
        proc = _otelproc(tmp_path, *args)
        assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
        assert proc.stderr.splitlines() == [
            f"otelproc {args[0]}: the store holds no otelproc data yet (Unknown table expression identifier "
            "'otel_logs'): run `otelproc serve` or `otelproc demo` first, or name another store with --config"]


def test_port_in_use(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        # every other listener of the default config on a free port (whatever endpoints it gains)
        free = {var: "127.0.0.1:0" for var in re.findall(r"\$\{env:(OTELPROC_\w+_ENDPOINT)", defaults.CONFIG.read_text())}
        proc = _otelproc(tmp_path, "serve", **{**free, "OTELPROC_HTTP_ENDPOINT": f"127.0.0.1:{port}"})
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if "ERROR" in line]
    assert len(errors) == 1 and errors[0].endswith(
        f"failed to start: receivers::otlp::protocols::http::endpoint: cannot listen on 127.0.0.1:{port}: "
        "Address already in use"), proc.stderr
