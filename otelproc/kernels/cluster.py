"""Key-hash -> pattern cache: an open-addressing hash table in numpy arrays (Numba), and the
comparison of a new key with the patterns of its shape (:func:`candidate_scores`).

The miner keeps one table for all services (the key hashes are seeded per
service). Each entry maps a masked-key hash to the pattern slot that owns the
key and to the key's *variable mask* (bit j set: key token j is ``<*>``), from
which the parameter layout of a line follows. Key 0 marks an empty bucket, so
a real hash of 0 is stored as 1 (``fix_hash``).

Typical cost: ~3 ns per lookup (performance-notes.md §1e), so assigning a
line that hits the cache costs next to nothing beside the tokenizer.
"""
from __future__ import annotations

import numpy as np
from numba import njit

EMPTY = np.uint64(0)


@njit(cache=True, nogil=True)
def _slot_of(h, mask):
    # fold the high bits in: FNV's low bits are well mixed but keep it cheap and safe
    return np.int64((h ^ (h >> np.uint64(29))) & mask)


@njit(cache=True, nogil=True)
def _lookup(tab_key, tab_val, tab_vmask, hashes, out_val, out_vmask):
    mask = np.uint64(len(tab_key) - 1)
    misses = 0
    for i in range(len(hashes)):
        h = hashes[i]
        if h == EMPTY:
            h = np.uint64(1)
        j = _slot_of(h, mask)
        while True:
            k = tab_key[j]
            if k == h:
                out_val[i] = tab_val[j]
                out_vmask[i] = tab_vmask[j]
                break
            if k == EMPTY:
                out_val[i] = -1
                out_vmask[i] = 0
                misses += 1
                break
            j = (j + 1) & np.int64(mask)
    return misses


@njit(cache=True, nogil=True)
def _insert(tab_key, tab_val, tab_vmask, keys, vals, vmasks):
    mask = np.uint64(len(tab_key) - 1)
    added = 0
    for i in range(len(keys)):
        h = keys[i]
        if h == EMPTY:
            h = np.uint64(1)
        j = _slot_of(h, mask)
        while True:
            k = tab_key[j]
            if k == h or k == EMPTY:
                if k == EMPTY:
                    added += 1
                tab_key[j] = h
                tab_val[j] = vals[i]
                tab_vmask[j] = vmasks[i]
                break
            j = (j + 1) & np.int64(mask)
    return added


@njit(cache=True, nogil=True)
def _remap(tab_key, tab_val, from_vals, to_val):
    moved = 0
    for j in range(len(tab_key)):
        if tab_key[j] != EMPTY:
            v = tab_val[j]
            for f in from_vals:
                if v == f:
                    tab_val[j] = to_val
                    moved += 1
                    break
    return moved


@njit(cache=True, nogil=True)
def _candidate_scores(tokens, n, key, literals, similarity):
    ntok = tokens.shape[1]
    for r in range(n):
        lits = 0
        ok = True
        eq = 0
        cmp = 0
        for j in range(ntok):
            t = tokens[r, j]
            k = key[j]
            if t != -1:
                lits += 1
                if t != k:
                    ok = False
            if t == -1 and k == -1:
                continue
            cmp += 1
            if t == k:
                eq += 1
        literals[r] = lits if ok else -1
        if ntok > 0 and tokens[r, 0] != key[0] and tokens[r, 0] != -1 and key[0] != -1:
            similarity[r] = -1.0
        else:
            similarity[r] = eq / cmp if cmp > 0 else 1.0


def candidate_scores(tokens: np.ndarray, n: int, key: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """How a new key compares with each pattern of its (service, token count) shape.

    Parameters
    ----------
    tokens : int32[cap, ntok]
        Token ids of the patterns, one row each (rows ``n..cap`` unused); -1 = ``<*>``.
    n : int
        Rows in use.
    key : int32[ntok]
        Token ids of the key; -1 = ``<*>``; an id no pattern uses (e.g. -2) equals nothing.

    Returns
    -------
    literals : int64[n]
        The row's number of literal tokens if every one equals the key's token (the row matches
        the key), else -1.
    similarity : float64[n]
        Drain's similarity: equal tokens / positions where at least one side is literal (1.0 when
        there is none); -1.0 when both first tokens are literal and differ.
    """
    if tokens.dtype != np.int32 or key.dtype != np.int32 or tokens.ndim != 2 or key.shape != (tokens.shape[1],):
        raise TypeError("tokens must be int32[cap, ntok] and key int32[ntok]")
    if not 0 <= n <= tokens.shape[0]:
        raise ValueError(f"n must be in [0, {tokens.shape[0]}], got {n}")
    literals = np.empty(n, dtype=np.int64)
    similarity = np.empty(n, dtype=np.float64)
    _candidate_scores(tokens, n, key, literals, similarity)
    return literals, similarity


class KeyTable:
    """Growable open-addressing map uint64 key hash -> (int32 pattern slot, uint64 variable mask).

    Load factor stays <= 0.5. Removal is by :meth:`rebuild_without` (rare: evictions), which
    reinserts the surviving entries.
    """

    def __init__(self, capacity: int = 1024):
        cap = 1 << max(4, int(capacity - 1).bit_length())
        self.key = np.zeros(cap, dtype=np.uint64)
        self.val = np.full(cap, -1, dtype=np.int32)
        self.vmask = np.zeros(cap, dtype=np.uint64)
        self.size = 0

    def lookup(self, hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
        """Pattern slot (int32[n], -1 on a miss), variable mask (uint64[n]) and the miss count."""
        hashes = np.ascontiguousarray(hashes, dtype=np.uint64)
        val = np.empty(len(hashes), dtype=np.int32)
        vmask = np.empty(len(hashes), dtype=np.uint64)
        misses = _lookup(self.key, self.val, self.vmask, hashes, val, vmask)
        return val, vmask, int(misses)

    def insert(self, keys: np.ndarray, vals: np.ndarray, vmasks: np.ndarray) -> None:
        keys = np.ascontiguousarray(keys, dtype=np.uint64)
        if (self.size + len(keys)) * 2 > len(self.key):
            self._grow(self.size + len(keys))
        self.size += int(_insert(self.key, self.val, self.vmask, keys,
                                 np.ascontiguousarray(vals, dtype=np.int32),
                                 np.ascontiguousarray(vmasks, dtype=np.uint64)))

    def entries(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        used = self.key != EMPTY
        return self.key[used], self.val[used], self.vmask[used]

    def rebuild_without(self, drop_vals: np.ndarray) -> None:
        """Remove every entry whose pattern slot is in ``drop_vals``."""
        k, v, m = self.entries()
        keep = ~np.isin(v, drop_vals)
        self._reset(len(self.key))
        self.insert(k[keep], v[keep], m[keep])

    def remap(self, from_vals: np.ndarray, to_val: int) -> int:
        """Point every entry whose pattern slot is in ``from_vals`` to ``to_val`` (patterns merged)."""
        return int(_remap(self.key, self.val, np.ascontiguousarray(from_vals, dtype=np.int32), np.int32(to_val)))

    def clear(self) -> None:
        self._reset(1024)

    def _reset(self, cap: int) -> None:
        self.key = np.zeros(cap, dtype=np.uint64)
        self.val = np.full(cap, -1, dtype=np.int32)
        self.vmask = np.zeros(cap, dtype=np.uint64)
        self.size = 0

    def _grow(self, need: int) -> None:
        k, v, m = self.entries()
        cap = len(self.key)
        while need * 2 > cap:
            cap *= 2
        self._reset(cap)
        self.size += int(_insert(self.key, self.val, self.vmask, k, v, m))

    @property
    def nbytes(self) -> int:
        return self.key.nbytes + self.val.nbytes + self.vmask.nbytes
