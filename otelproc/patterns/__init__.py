"""Log pattern mining: the streaming miner and the offline ``mine_file`` used by ``otelproc patterns``."""
from __future__ import annotations

import csv
import os

import numpy as np

from otelproc.batch import StringArray
from otelproc.patterns.miner import (ChangeType, LearnResult, PatternMiner, pattern_id, DEFAULT_SIMILARITY, DEFAULT_MIN_DISTINCT,
                                     DEFAULT_MAX_PATTERNS_PER_SERVICE)

__all__ = ["PatternMiner", "ChangeType", "LearnResult", "pattern_id", "mine_lines", "mine_file", "read_lines"]

_CHUNK = 100_000


def read_lines(path: str | os.PathLike) -> StringArray:
    """The lines of a file as a StringArray (LF or CRLF endings; a last line without LF counts)."""
    with open(path, "rb") as f:
        data = np.frombuffer(f.read(), dtype=np.uint8)
    return split_lines(data)


def split_lines(data: np.ndarray) -> StringArray:
    nl = np.flatnonzero(data == 10)
    ends = nl
    if len(data) and (len(nl) == 0 or nl[-1] != len(data) - 1):
        ends = np.append(nl, len(data))
    starts = np.concatenate(([0], nl + 1))[:len(ends)]
    # drop a CR before the LF
    cr = (ends > starts) & (data[np.maximum(ends - 1, 0)] == 13) if len(data) else np.zeros(0, bool)
    ends = ends - cr.astype(np.int64)
    lens = (ends - starts).astype(np.int64)
    off = np.zeros(len(lens) + 1, dtype=np.int64)
    np.cumsum(lens, out=off[1:])
    owner = np.repeat(np.arange(len(lens)), lens)
    buf = data[starts[owner] + (np.arange(off[-1]) - off[:-1][owner])] if off[-1] else np.zeros(0, np.uint8)
    return StringArray(np.ascontiguousarray(buf, dtype=np.uint8), off)


def mine_lines(lines: StringArray, miner: PatternMiner | None = None, service: str = "") -> tuple[PatternMiner, np.ndarray]:
    """Learn every line (in chunks) and return the miner and the pattern slot of each line.

    Slots keep their identity when a pattern generalises, so ``miner.template(slot)`` after the
    whole input is the final template of every line (as Drain reports its clusters).
    """
    miner = miner or PatternMiner(max_patterns_per_service=1_000_000)
    n = len(lines)
    slots = np.empty(n, dtype=np.int32)
    for a in range(0, n, _CHUNK):
        b = min(n, a + _CHUNK)
        off = lines.off[a:b + 1] - lines.off[a]
        buf = lines.buf[lines.off[a]:lines.off[b]]
        # with the parameters: they are the evidence of which masked words are constant (miner.template)
        res = miner.learn(buf, off, np.zeros(b - a, dtype=np.int32), [service], with_params=True)
        # patterns merged in this chunk absorbed slots that earlier lines were given: follow them
        for ch in res.changes:
            if ch.kind == ChangeType.MERGED and a:
                head = slots[:a]
                head[head == ch.slot] = ch.into
        slots[a:b] = res.slot
    return miner, slots


def mine_file(path: str | os.PathLike, csv_out: str | os.PathLike | None = None,
              settings: dict | None = None) -> list[tuple[str, int]]:
    """Mine a file with one log body per line; return (template, count), most frequent first.

    ``settings``: PatternMiner keyword arguments (``PatternsProcessorConfig.miner_kwargs()``: the
    processor's masking rules, pinned templates...).

    With ``csv_out``, also write ``LineId,ClusterId,Template`` per line (LineId from 1, ClusterId
    the pattern id in hex), the prediction format of shared/tools/grouping_accuracy.py.
    """
    lines = read_lines(path)
    # (offline: no cap on patterns, whatever the processor's)
    miner, slots = mine_lines(lines, PatternMiner(**{**(settings or {}), "max_patterns_per_service": 1_000_000}))
    counts = np.bincount(slots, minlength=len(miner.p_tokens)) if len(slots) else np.zeros(0, np.int64)
    out = [(miner.template(s), int(counts[s])) for s in np.flatnonzero(counts)]
    out.sort(key=lambda tc: (-tc[1], tc[0]))
    if csv_out is not None:
        ids = [f"{int(x):016x}" for x in miner.p_id]
        templates = [miner.template(s) for s in range(len(miner.p_tokens))]
        with open(csv_out, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["LineId", "ClusterId", "Template"])
            for i, s in enumerate(slots.tolist()):
                w.writerow([i + 1, ids[s], templates[s]])
    return out
