"""Detector state on disk: one ``.npz`` of named, versioned arrays (never pickles).

Written atomically (temporary file + rename) so a crash mid-write keeps the
previous snapshot; loaded with ``allow_pickle=False``.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

log = logging.getLogger("otelproc.anomaly")

STATE_FILE = "anomaly_state.npz"


def save_state(state_dir: str | os.PathLike, arrays: dict[str, np.ndarray], reason: str) -> Path:
    """Write ``arrays`` to ``state_dir/anomaly_state.npz``; returns the path."""
    d = Path(state_dir)
    d.mkdir(parents=True, exist_ok=True)
    path = d / STATE_FILE
    tmp = d / (STATE_FILE + ".tmp")
    with open(tmp, "wb") as fh:
        np.savez(fh, **arrays)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    log.info("anomaly state saved (%s): %d arrays, %d bytes, %s", reason, len(arrays), path.stat().st_size, path)
    return path


def load_state(state_dir: str | os.PathLike) -> dict[str, np.ndarray] | None:
    """The saved arrays, or None when there is no snapshot yet."""
    path = Path(state_dir) / STATE_FILE
    if not path.exists():
        return None
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}
