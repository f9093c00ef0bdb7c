"""What the parameters of a pattern's lines show: which words of each variable never change.

The key kernel masks by the shape of a token (a digit, a ``key=value`` value, a run of wholly
variable tokens), so a constant name such as ``ssh2`` in ``port 22 ssh2`` or ``NODEVssh`` in
``tty=NODEVssh`` is masked on every line. The miner shows such a word in the template once the
lines say it is constant (:meth:`otelproc.patterns.PatternMiner.template`); this kernel gathers
that evidence from the ``pattern_params`` of a batch, in one pass, per pattern slot:

* ``lines[s]``: lines whose parameters were compared (each with as many parameters as the
  slot's template has ``<*>``; a line with another count marks the slot ``irregular`` and the
  slot's parameters are not compared any more until its template changes);
* per parameter k < ``ev_hash.shape[1]``: its number of whitespace-separated words (``words``)
  and the FNV-1a hash of each of its first ``ev_hash.shape[2]`` words (``ev_hash``), taken from
  the slot's first line; ``varied[s, k]`` bit w is set once a line shows another word w, bit
  :data:`SHAPE_VARIED` once a line shows another word count;
* every line of a slot is compared until it has ``FULL_LINES`` lines, then one in ``SAMPLE_STRIDE``
  (``seen`` counts them all): the evidence settles within the first lines, and comparing every line
  of a frequent pattern forever cost ~30 % of the miner's time with parameters;
* per parameter k: its first ``ev_head.shape[2]`` bytes on the slot's first line (``ev_head``) and
  how many of them every line since shared (``prefix``): ``node-<*>`` for ``node-12``, ``node-7``;
  the same for its last bytes (``ev_tail``, right-aligned, and ``suffix``): ``<*>):`` for
  ``(node1):``, ``(n7):``.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from otelproc.kernels.mask import KC_SPACE, KEY_CLASS

FNV_OFFSET = np.uint64(0xCBF29CE484222325)
FNV_PRIME = np.uint64(0x100000001B3)
SHAPE_VARIED = 1 << 15
FULL_LINES = 64
SAMPLE_STRIDE = 16
TERMINATOR = 0x1F


@njit(cache=True, nogil=True)
def _note_word(ev_hash, varied, s, k, w, h, first) -> bool:
    if w >= ev_hash.shape[2]:
        return False
    if first:
        ev_hash[s, k, w] = h
        return False
    if ev_hash[s, k, w] != h and (varied[s, k] & (1 << w)) == 0:
        varied[s, k] |= np.uint16(1 << w)
        return True
    return False


@njit(cache=True, nogil=True)
def _param_evidence(pbuf, poff, slot, nvar, kc, seen, lines, irregular, words, ev_hash, varied, ev_head, prefix,
                    ev_tail, suffix, first_row, changed):
    kmax = ev_hash.shape[1]
    hmax = ev_head.shape[2]
    for r in range(len(poff) - 1):
        s = slot[r]
        seen[s] += 1
        if irregular[s] or (lines[s] >= FULL_LINES and seen[s] % SAMPLE_STRIDE != 0):
            continue
        a = poff[r]
        b = poff[r + 1]
        cnt = 0
        for i in range(a, b):
            if pbuf[i] == TERMINATOR:
                cnt += 1
        if cnt != nvar[s]:
            irregular[s] = True
            changed[s] = True
            continue
        first = lines[s] == 0
        if first:
            first_row[s] = r
        i = a
        for k in range(min(cnt, kmax)):
            # the shared head: copied from the first line, cut where a later line differs
            vs = i
            if first:
                m = 0
                while m < hmax and pbuf[vs + m] != TERMINATOR:
                    ev_head[s, k, m] = pbuf[vs + m]
                    m += 1
                prefix[s, k] = m
            else:
                m = 0
                p = prefix[s, k]
                while m < p and pbuf[vs + m] != TERMINATOR and pbuf[vs + m] == ev_head[s, k, m]:
                    m += 1
                if m < p:
                    prefix[s, k] = m
                    changed[s] = True
            w = 0
            h = FNV_OFFSET
            in_word = False
            while pbuf[i] != TERMINATOR:
                c = pbuf[i]
                if kc[c] & KC_SPACE:
                    if in_word:
                        if _note_word(ev_hash, varied, s, k, w, h, first):
                            changed[s] = True
                        w += 1
                        in_word = False
                        h = FNV_OFFSET
                else:
                    h = (h ^ np.uint64(c)) * FNV_PRIME
                    in_word = True
                i += 1
            if in_word:
                if _note_word(ev_hash, varied, s, k, w, h, first):
                    changed[s] = True
                w += 1
            # the shared tail, compared from the value's last byte (i is at its terminator)
            if first:
                m = 0
                while m < hmax and i - 1 - m >= vs:
                    ev_tail[s, k, hmax - 1 - m] = pbuf[i - 1 - m]
                    m += 1
                suffix[s, k] = m
            else:
                m = 0
                p = suffix[s, k]
                while m < p and i - 1 - m >= vs and pbuf[i - 1 - m] == ev_tail[s, k, hmax - 1 - m]:
                    m += 1
                if m < p:
                    suffix[s, k] = m
                    changed[s] = True
            i += 1
            if first:
                words[s, k] = w
            elif words[s, k] != w and (varied[s, k] & SHAPE_VARIED) == 0:
                varied[s, k] |= np.uint16(SHAPE_VARIED)
                changed[s] = True
        lines[s] += 1


def param_evidence(pbuf: np.ndarray, poff: np.ndarray, slot: np.ndarray, nvar: np.ndarray, seen: np.ndarray,
                   lines: np.ndarray,
                   irregular: np.ndarray, words: np.ndarray, ev_hash: np.ndarray, varied: np.ndarray,
                   ev_head: np.ndarray, prefix: np.ndarray, ev_tail: np.ndarray, suffix: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Add a batch's parameters to the per-slot evidence (arrays updated in place).

    Parameters
    ----------
    pbuf : uint8[m], poff : int64[n + 1]
        The batch's parameters, each followed by 0x1f (``LearnResult.params``).
    slot : int32[n]
        Pattern slot of every line.
    nvar : int32[slots]
        ``<*>`` count of every slot's template.
    seen : int64[slots]
        Lines of each slot so far, compared or not (see :data:`FULL_LINES`).
    lines : int64[slots], irregular : bool[slots], words : int32[slots, K],
    ev_hash : uint64[slots, K, W], varied : uint16[slots, K], ev_head : uint8[slots, K, H], prefix : int32[slots, K],
    ev_tail : uint8[slots, K, H], suffix : int32[slots, K]
        The evidence (see the module docstring); a slot with ``lines == 0`` takes its values
        from its first line in this batch.

    Returns
    -------
    first_row : int64[slots]
        Row of the line whose values a slot took in this batch, -1 where none.
    changed : bool[slots]
        Slots that became irregular, showed a new varying word or word count, or a shorter shared
        head or tail in this batch.
    """
    n_slots = len(lines)
    if len(seen) != n_slots:
        raise ValueError("seen and lines must have one entry per slot")
    if len(poff) != len(slot) + 1:
        raise ValueError(f"poff has {len(poff)} entries, expected {len(slot) + 1}")
    if len(slot) and (slot.min() < 0 or slot.max() >= n_slots):
        raise ValueError("slot out of range of the evidence arrays")
    first_row = np.full(n_slots, -1, dtype=np.int64)
    changed = np.zeros(n_slots, dtype=np.bool_)
    _param_evidence(pbuf, poff, np.ascontiguousarray(slot, dtype=np.int32), nvar, KEY_CLASS, seen, lines, irregular,
                    words, ev_hash, varied, ev_head, prefix, ev_tail, suffix, first_row, changed)
    return first_row, changed
