"""Attribute items and heavy-hitter sketches for the attribute explanation (otelproc/anomaly/explain.py).

An *item* is a 64-bit hash: of one attribute (key, value) pair, of a pattern id, or of a (pattern,
attribute) pair. A *sketch row* is K (item, count) cells holding the heavy hitters of one stream
(one service, one event-time bucket, all records or error records) with the Space-Saving rule
(Metwally et al. 2005): an item already in the row adds its weight; a new item takes an empty cell,
else the cell with the smallest count, and starts from that count (so every count is an upper
bound, over by at most the smallest count of the row, and every item heavier than total / K is in
the row). Weighted inserts are the same rule with weight w instead of 1, so rows can be merged
(a closed bucket into the baseline).

Item 0 marks an empty cell: hashes are never 0.
"""
from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["hash_pairs", "combine", "sketch_add", "sketch_merge", "FNV_OFFSET", "FNV_PRIME"]

FNV_OFFSET = np.uint64(0xCBF29CE484222325)
FNV_PRIME = np.uint64(0x100000001B3)


@njit(cache=True, nogil=True, inline="always")
def _finish(h):
    # splitmix64 finaliser: FNV's low bits are weak; the sketch compares whole words, but items
    # of different kinds are combined by xor-multiply, which needs well-mixed inputs
    h ^= h >> np.uint64(30)
    h *= np.uint64(0xBF58476D1CE4E5B9)
    h ^= h >> np.uint64(27)
    h *= np.uint64(0x94D049BB133111EB)
    h ^= h >> np.uint64(31)
    if h == np.uint64(0):
        h = np.uint64(1)
    return h


@njit(cache=True, nogil=True)
def hash_pairs(kbuf: np.ndarray, koff: np.ndarray, vbuf: np.ndarray, voff: np.ndarray):
    """Item hash of each (key, value) entry and hash of its key alone.

    kbuf/koff and vbuf/voff: the keys and values of an AttrMap (uint8 buffers, int64[E + 1] offsets).
    Returns (item uint64[E], key uint64[E]), both never 0. The item hash covers the key, a separator
    byte that cannot occur in UTF-8 (0xff) and the value, so ("a", "bc") and ("ab", "c") differ.
    """
    n = koff.shape[0] - 1
    item = np.empty(n, dtype=np.uint64)
    key = np.empty(n, dtype=np.uint64)
    for i in range(n):
        h = FNV_OFFSET
        for j in range(koff[i], koff[i + 1]):
            h = (h ^ np.uint64(kbuf[j])) * FNV_PRIME
        key[i] = _finish(h)
        h = (h ^ np.uint64(0xFF)) * FNV_PRIME
        for j in range(voff[i], voff[i + 1]):
            h = (h ^ np.uint64(vbuf[j])) * FNV_PRIME
        item[i] = _finish(h)
    return item, key


@njit(cache=True, nogil=True)
def combine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Item of the pair (a[i], b[i]) (e.g. a pattern and an attribute item), never 0; not symmetric."""
    out = np.empty(a.shape[0], dtype=np.uint64)
    for i in range(a.shape[0]):
        out[i] = _finish(a[i] * np.uint64(0x9E3779B97F4A7C15) + _finish(b[i] ^ np.uint64(0x5851F42D4C957F2D)))
    return out


@njit(cache=True, nogil=True, inline="always")
def _insert(ids, cnt, r, item, w):
    K = ids.shape[1]
    empty = -1
    low = 0
    for j in range(K):
        v = ids[r, j]
        if v == item:
            cnt[r, j] += w
            return
        if v == 0:
            if empty < 0:
                empty = j
        elif cnt[r, j] < cnt[r, low] or ids[r, low] == 0:
            low = j
    if empty >= 0:
        ids[r, empty] = item
        cnt[r, empty] = w
    else:
        ids[r, low] = item
        cnt[r, low] += w


@njit(cache=True, nogil=True)
def sketch_add(ids: np.ndarray, cnt: np.ndarray, row: np.ndarray, item: np.ndarray, weight: np.ndarray) -> None:
    """Space-Saving insert of item[i] with weight[i] into sketch row row[i] (in place).

    ids uint64[R, K] (0 = empty cell), cnt float64[R, K]; row int64[m], item uint64[m] (never 0),
    weight float64[m] (>= 0).
    """
    for i in range(row.shape[0]):
        _insert(ids, cnt, row[i], item[i], weight[i])


@njit(cache=True, nogil=True)
def sketch_merge(dst_ids: np.ndarray, dst_cnt: np.ndarray, dst_row: np.ndarray, src_ids: np.ndarray,
                 src_cnt: np.ndarray, src_row: np.ndarray) -> None:
    """Insert every cell of src row src_row[i] into dst row dst_row[i], weighted by its count (in place)."""
    for i in range(dst_row.shape[0]):
        s = src_row[i]
        d = dst_row[i]
        for j in range(src_ids.shape[1]):
            if src_ids[s, j] != 0 and src_cnt[s, j] > 0:
                _insert(dst_ids, dst_cnt, d, src_ids[s, j], src_cnt[s, j])
