"""Per-slot aggregates of a batch in one pass: how many records each pattern slot got, its first
record, its event-time range and its severity mix.

The patterns processor (``log_patterns`` rows) and the miner (counts and first/last seen) need
these per *slot*, not per record. ``np.unique`` + ``ufunc.at`` did it with a sort and four
scatter passes (~14 ns/record each); a slot table is at most a few thousand entries, so one
sequential pass writing into slot-indexed arrays is the cheap way.
"""
from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["SEVERITY_CLASSES", "slot_stats"]

#: columns of the severity mix: unset (0), DEBUG/TRACE (1-8), INFO (9-12), WARN (13-16), ERROR/FATAL (17+)
SEVERITY_CLASSES = 5

_INT64_MAX = np.iinfo(np.int64).max
_INT64_MIN = np.iinfo(np.int64).min


@njit(cache=True, nogil=True)
def _slot_stats(slot, event_ns, severity, count, first_row, tmin, tmax, mix, with_mix):
    for i in range(slot.shape[0]):
        s = slot[i]
        t = event_ns[i]
        if count[s] == 0:
            first_row[s] = i
        if t < tmin[s]:
            tmin[s] = t
        if t > tmax[s]:
            tmax[s] = t
        count[s] += 1
        if with_mix:
            sv = severity[i]
            if sv == 0:
                c = 0
            elif sv <= 8:
                c = 1
            elif sv <= 12:
                c = 2
            elif sv <= 16:
                c = 3
            else:
                c = 4
            mix[s, c] += 1


def slot_stats(slot: np.ndarray, event_ns: np.ndarray, n_slots: int,
               severity: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Count, first record, event-time range and severity mix of every slot.

    Parameters
    ----------
    slot : int32[n]
        Slot of each record, each in [0, n_slots).
    event_ns : int64[n]
        Event time of each record.
    n_slots : int
        Length of the per-slot outputs.
    severity : uint8[n] or None
        OTLP severity number of each record; None skips the severity mix (``mix`` is then all 0).

    Returns
    -------
    count : int64[n_slots]
        Records per slot.
    first_row : int64[n_slots]
        Index of the slot's first record; -1 for a slot without records.
    tmin, tmax : int64[n_slots]
        Smallest / largest event time of the slot's records; int64 max / min for a slot without records.
    mix : uint64[n_slots, 5]
        Records per severity class (:data:`SEVERITY_CLASSES`): unset, 1-8, 9-12, 13-16, 17 and up.
    """
    slot = np.ascontiguousarray(slot, dtype=np.int32)
    event_ns = np.ascontiguousarray(event_ns, dtype=np.int64)
    n = slot.shape[0]
    if event_ns.shape != (n,):
        raise ValueError(f"event_ns has shape {event_ns.shape}, expected ({n},)")
    if n and (int(slot.min()) < 0 or int(slot.max()) >= n_slots):
        raise IndexError(f"slot_stats: slot out of range [0, {n_slots})")
    with_mix = severity is not None
    if with_mix:
        severity = np.ascontiguousarray(severity, dtype=np.uint8)
        if severity.shape != (n,):
            raise ValueError(f"severity has shape {severity.shape}, expected ({n},)")
    else:
        severity = np.zeros(0, dtype=np.uint8)
    count = np.zeros(n_slots, dtype=np.int64)
    first_row = np.full(n_slots, -1, dtype=np.int64)
    tmin = np.full(n_slots, _INT64_MAX, dtype=np.int64)
    tmax = np.full(n_slots, _INT64_MIN, dtype=np.int64)
    mix = np.zeros((n_slots if with_mix else 0, SEVERITY_CLASSES), dtype=np.uint64)
    _slot_stats(slot, event_ns, severity, count, first_row, tmin, tmax, mix, with_mix)
    if not with_mix:
        mix = np.zeros((n_slots, SEVERITY_CLASSES), dtype=np.uint64)
    return count, first_row, tmin, tmax, mix
