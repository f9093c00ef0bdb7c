"""Shared test fixtures.

chDB runs one embedded engine per process bound to one path, so every test in
a pytest process shares ONE data directory (``chdb_path``) and isolates itself
with its own database (``chdb_database``).
"""
from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("OTELPROC_SHARED", REPO.parent / "shared"))

# Compiled Numba kernels are cached across test runs (first compile costs seconds).
os.environ.setdefault("NUMBA_CACHE_DIR", str(REPO / ".numba_cache"))


def shared_path(*parts: str) -> Path:
    """A path under ../shared, or skip the test when the shared data is not there (a user's clone)."""
    p = SHARED.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"needs {p} (the team's shared data directory, absent in a user's clone)")
    return p


@pytest.fixture(scope="session")
def chdb_path(tmp_path_factory) -> str:
    """The one chDB data directory of this test process."""
    return str(tmp_path_factory.mktemp("chdb") / "store")


@pytest.fixture
def chdb_database() -> str:
    """A fresh database name for one test (created by whoever opens the store)."""
    return "t_" + uuid.uuid4().hex[:12]
