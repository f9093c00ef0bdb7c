"""otelproc.warmup: where compiled kernels are cached, and the first-run line."""
from __future__ import annotations

import os

from otelproc import warmup


def test_cache_goes_to_a_user_directory_when_the_package_is_read_only(tmp_path, monkeypatch):
    # a path below a regular file cannot be created, not even by root (as a read-only site-packages)
    (tmp_path / "site-packages").write_text("")
    monkeypatch.setattr(warmup, "KERNELS", tmp_path / "site-packages" / "otelproc" / "kernels")
    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    warmup.configure_cache()
    assert os.environ["NUMBA_CACHE_DIR"] == str(tmp_path / "cache" / "otelproc" / "numba")


def test_cache_stays_beside_writable_kernels_and_an_explicit_directory_wins(tmp_path, monkeypatch):
    monkeypatch.setattr(warmup, "KERNELS", tmp_path / "kernels")
    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    warmup.configure_cache()
    assert "NUMBA_CACHE_DIR" not in os.environ
    assert warmup.cache_directory() == tmp_path / "kernels" / "__pycache__"
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "mine"))
    warmup.configure_cache()
    assert os.environ["NUMBA_CACHE_DIR"] == str(tmp_path / "mine")


def test_warm_up_says_what_it_does_once_then_is_silent(tmp_path, monkeypatch):
    # a stamp directory of its own; the kernels themselves load from the suite's Numba cache
    monkeypatch.setattr(warmup, "cache_directory", lambda: tmp_path)
    said: list[str] = []
    assert not warmup.is_warm()
    warmup.warm_up(say=said.append)
    assert said[0].startswith("compiling kernels, first run only") and said[-1].startswith("kernels ready in")
    assert warmup.is_warm()
    said.clear()
    assert warmup.warm_up(say=said.append) == 0.0 and said == []
