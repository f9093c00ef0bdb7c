"""Gathering strings stored Arrow-style (one uint8 buffer + int64 offsets)."""
from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def _gather(buf, off, idx, out_off, out_buf):
    for i in range(idx.shape[0]):
        s = off[idx[i]]
        n = off[idx[i] + 1] - s
        o = out_off[i]
        out_buf[o:o + n] = buf[s:s + n]  # slice copy: a memcpy, not a byte loop


def take_strings(buf: np.ndarray, off: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The strings at positions ``idx``, as a new (buffer, offsets) pair.

    Parameters
    ----------
    buf : uint8[total_bytes]    concatenated strings
    off : int64[n + 1]          string i is buf[off[i]:off[i + 1]]
    idx : int64[m]              positions to take, each in [0, n), repeats allowed

    Returns
    -------
    out_buf : uint8[sum of taken lengths]
    out_off : int64[m + 1]
    """
    if buf.dtype != np.uint8 or off.dtype != np.int64:
        raise TypeError(f"take_strings needs uint8 buf and int64 off, got {buf.dtype} and {off.dtype}")
    idx = np.ascontiguousarray(idx, dtype=np.int64)
    if idx.size and (idx.min() < 0 or idx.max() >= off.shape[0] - 1):
        raise IndexError(f"take_strings: index out of range [0, {off.shape[0] - 1})")
    out_off = np.zeros(idx.shape[0] + 1, dtype=np.int64)
    np.cumsum(off[idx + 1] - off[idx], out=out_off[1:])
    out_buf = np.empty(out_off[-1], dtype=np.uint8)
    _gather(buf, off, idx, out_off, out_buf)
    return out_buf, out_off
