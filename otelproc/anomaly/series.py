"""Series identity and event-time bucketing with a watermark.

:class:`SeriesIndex` maps a (service, pattern id, parameter position) key to a
dense series id (0..S-1), vectorised over a batch. :class:`BucketWindow` keeps
the points of not-yet-closed buckets of one resolution and closes buckets when
the event-time watermark (max event time seen - allowed lateness) passes their
end. A point whose bucket had already closed when it arrived is late: counted
and dropped. "Already closed" uses the running maximum of event times *up to
that point of the stream*, so the outcome does not depend on how the stream
was cut into batches (a replay gives the same buckets as live traffic).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from otelproc.kernels.detectors import grow_rows
from otelproc.kernels.series import SeriesTable

__all__ = ["SeriesIndex", "BucketWindow", "ClosedBuckets", "series_key", "summed_cells", "SUMMED_STREAMS"]

# Streams whose points are only counted and summed per (bucket, series) cell (no quantiles): the
# window keeps them merged per cell as they arrive, so their pending memory is O(open cells)
# instead of O(log records) (at 100k logs/s a 5-minute bucket would otherwise hold ~30M points).
SUMMED_STREAMS = ("count", "svc")

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser, uint64 -> uint64 (vectorised)."""
    x = x.astype(np.uint64, copy=True)
    with np.errstate(over="ignore"):
        x ^= x >> np.uint64(30)
        x *= _M1
        x ^= x >> np.uint64(27)
        x *= _M2
        x ^= x >> np.uint64(31)
    return x


def series_key(service: np.ndarray, pattern: np.ndarray, ordinal: np.ndarray) -> np.ndarray:
    """uint64 key per point from global service code int64[m], pattern id uint64[m], position int64[m]."""
    with np.errstate(over="ignore"):
        h = _mix(service.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15))
        h = _mix(h ^ pattern.astype(np.uint64))
        h = _mix(h ^ (ordinal.astype(np.uint64) + np.uint64(1)))
    return h


class SeriesIndex:
    """Dense ids for series keys, in order of first appearance.

    keys     uint64[S]  key of each series
    service  int64[S]   global service code
    pattern  uint64[S]  pattern id (0 = all patterns)
    ordinal  int64[S]   parameter position (-1 = not a parameter series)

    Lookups go through a hash table (:class:`otelproc.kernels.series.SeriesTable`, the key computed
    in the same kernel): O(1) per point, where sorting the batch's keys cost O(m log m).
    """

    FIELDS = ("keys", "service", "pattern", "ordinal")

    def __init__(self) -> None:
        self.service = np.zeros(0, dtype=np.int64)
        self.pattern = np.zeros(0, dtype=np.uint64)
        self.ordinal = np.zeros(0, dtype=np.int64)
        self._table = SeriesTable()

    @property
    def keys(self) -> np.ndarray:
        return self._table.keys

    def __len__(self) -> int:
        return len(self._table.keys)

    def lookup(self, service: np.ndarray, pattern: np.ndarray, ordinal: np.ndarray) -> np.ndarray:
        """Series id per point (int64[m]); unseen keys get new ids."""
        ids, new_rows = self._table.lookup(service, pattern, ordinal)
        if len(new_rows):
            n = len(self.service) + len(new_rows)
            for name, column in (("service", service), ("pattern", pattern), ("ordinal", ordinal)):
                grown = grow_rows(getattr(self, name), n)
                grown[n - len(new_rows):] = column[new_rows]
                setattr(self, name, grown)
        return ids

    def state(self, prefix: str) -> dict[str, np.ndarray]:
        return {f"{prefix}.{k}": getattr(self, k) for k in self.FIELDS}

    def load(self, prefix: str, arrays: dict[str, np.ndarray]) -> None:
        self._table = SeriesTable(arrays[f"{prefix}.keys"].copy())
        for k in self.FIELDS[1:]:
            setattr(self, k, arrays[f"{prefix}.{k}"].copy())


@dataclass
class ClosedBuckets:
    """Dense aggregates of consecutive closed buckets of one resolution.

    first_bucket: absolute bucket number (event_ns // width_ns) of row 0
    count / errors: float64[B, S_count] / float64[B, S_service]; values: dict of float64[B, S_value];
    value_points: (row int64[m], series id int64[m], value float64[m])
    """

    first_bucket: int
    n_rows: int
    width_ns: int
    counts: np.ndarray
    service_totals: np.ndarray
    service_errors: np.ndarray
    values: dict
    after_gap: bool  # rows follow a skipped gap (state that assumes continuity must reset)
    # the value points themselves (row, series id, value), for detectors that pool values across buckets
    value_points: tuple = ()


class BucketWindow:
    """Open buckets of one resolution: pending points, watermark, late-point accounting."""

    def __init__(self, width_ns: int, lateness_ns: int, max_rows: int) -> None:
        if width_ns <= 0:
            raise ValueError(f"bucket width must be > 0 ns, got {width_ns}")
        self.width_ns = int(width_ns)
        self.lateness_ns = int(lateness_ns)
        self.max_rows = int(max_rows)
        self.next_bucket = -1           # first bucket not closed yet (-1: nothing seen)
        self.max_event_ns = -(2**62)  # "nothing seen": far below any event time, no overflow when lateness is subtracted
        self.late = 0
        # pending points per stream: (bucket, series id, value); the SUMMED_STREAMS also carry a
        # weight (points merged into the cell) and hold one entry per cell with the value summed
        self._pending: dict[str, list[np.ndarray]] = {k: [np.zeros(0, np.int64), np.zeros(0, np.int64),
                                                          np.zeros(0, np.float64)] for k in ("count", "svc", "value")}
        for k in SUMMED_STREAMS:
            self._pending[k].append(np.zeros(0, np.float64))

    def accept_mask(self, event_ns: np.ndarray) -> np.ndarray:
        """bool[n]: points whose bucket was still open when they arrived (updates the watermark)."""
        if len(event_ns) == 0:
            return np.zeros(0, dtype=bool)
        prev = np.concatenate([[self.max_event_ns], event_ns[:-1]])
        running = np.maximum.accumulate(prev)
        wm = running - self.lateness_ns
        bucket = event_ns // self.width_ns
        ok = (bucket + 1) * self.width_ns > wm
        if self.next_bucket >= 0:
            ok &= bucket >= self.next_bucket
        self.max_event_ns = max(self.max_event_ns, int(event_ns.max()))
        self.late += int(len(ok) - ok.sum())
        if self.next_bucket < 0 and ok.any():
            self.next_bucket = int(bucket[ok].min())
        return ok

    def add(self, stream: str, bucket: np.ndarray, sid: np.ndarray, value: np.ndarray) -> None:
        p = self._pending[stream]
        p[0] = np.concatenate([p[0], bucket])
        p[1] = np.concatenate([p[1], sid])
        p[2] = np.concatenate([p[2], value])
        if stream in SUMMED_STREAMS:
            p[3] = np.concatenate([p[3], np.ones(len(bucket), dtype=np.float64)])
            self._pending[stream] = _merge_cells(*p)

    def closable_until(self) -> int:
        """First bucket number that stays open under the current watermark."""
        if self.next_bucket < 0:
            return -1
        wm = self.max_event_ns - self.lateness_ns
        return int(wm // self.width_ns)  # buckets < this have end <= watermark

    def take(self, start: int, stop: int) -> dict[str, tuple[np.ndarray, ...]]:
        """Remove and return the pending points with start <= bucket < stop, per stream:
        (bucket - start, series id, value), plus the weight for the SUMMED_STREAMS (see summed_cells)."""
        out = {}
        for k, p in self._pending.items():
            b = p[0]
            sel = (b >= start) & (b < stop)
            out[k] = (b[sel] - start,) + tuple(a[sel] for a in p[1:])
            if sel.any():
                keep = ~sel
                self._pending[k] = [a[keep] for a in p]
        return out

    def pending_min_bucket(self) -> int:
        mins = [int(p[0].min()) for p in self._pending.values() if len(p[0])]
        return min(mins) if mins else -1

    def state(self, prefix: str) -> dict[str, np.ndarray]:
        out = {f"{prefix}.scalars": np.array([self.next_bucket, self.max_event_ns, self.late], dtype=np.int64)}
        for k, p in self._pending.items():
            out[f"{prefix}.{k}.bucket"], out[f"{prefix}.{k}.sid"], out[f"{prefix}.{k}.value"] = p[:3]
            if k in SUMMED_STREAMS:
                out[f"{prefix}.{k}.weight"] = p[3]
        return out

    def load(self, prefix: str, arrays: dict[str, np.ndarray]) -> None:
        self.next_bucket, self.max_event_ns, self.late = (int(x) for x in arrays[f"{prefix}.scalars"])
        for k in self._pending:
            p = [arrays[f"{prefix}.{k}.bucket"].copy(), arrays[f"{prefix}.{k}.sid"].copy(),
                 arrays[f"{prefix}.{k}.value"].copy()]
            if k in SUMMED_STREAMS:
                # state saved before cells were merged has no weights: one point each
                w = arrays.get(f"{prefix}.{k}.weight")
                p = _merge_cells(*p, w.copy() if w is not None else np.ones(len(p[0]), dtype=np.float64))
            self._pending[k] = p


def _merge_cells(bucket: np.ndarray, sid: np.ndarray, value: np.ndarray, weight: np.ndarray) -> list[np.ndarray]:
    """One entry per (bucket, series) cell: weights and values summed, cells in (bucket, series) order."""
    n = len(bucket)
    if n == 0:
        return [bucket, sid, value, weight]
    b0, nb = int(bucket.min()), int(bucket.max()) - int(bucket.min()) + 1
    ns = int(sid.max()) + 1
    if nb * ns <= 8 * n + 4096:
        # few open cells (the usual case: a batch spans a few buckets): a dense histogram, no sort
        key = (bucket - b0) * ns + sid
        w = np.bincount(key, weights=weight, minlength=nb * ns)
        v = np.bincount(key, weights=value, minlength=nb * ns)  # NaN (count-only) values stay NaN
        cells = np.flatnonzero(w > 0)
        return [cells // ns + b0, cells % ns, v[cells], w[cells]]
    order = np.lexsort((sid, bucket))
    b, s = bucket[order], sid[order]
    starts = np.flatnonzero(np.concatenate([[True], (b[1:] != b[:-1]) | (s[1:] != s[:-1])]))
    return [b[starts], s[starts], np.add.reduceat(value[order], starts), np.add.reduceat(weight[order], starts)]


def summed_cells(bucket: np.ndarray, sid: np.ndarray, value: np.ndarray, weight: np.ndarray, n_buckets: int,
                 n_series: int) -> tuple[np.ndarray, np.ndarray]:
    """Dense cells of a SUMMED stream as taken from :meth:`BucketWindow.take`.

    Parameters
    ----------
    bucket, sid : int64[m]  row 0..n_buckets-1 and series id 0..n_series-1 of each merged cell
    value, weight : float64[m]  summed value and number of points of each cell

    Returns
    -------
    (count, sum) : float64[n_buckets, n_series] each: points per cell and their value sum, as
    ``aggregate_cells(..., quantiles=False)`` gives ``count`` and ``sum`` for the unmerged points.
    """
    shape = (int(n_buckets), int(n_series))
    if len(bucket) and (bucket.min() < 0 or bucket.max() >= shape[0] or sid.min() < 0 or sid.max() >= shape[1]):
        raise ValueError("bucket or series id out of range")
    key = bucket * shape[1] + sid
    count = np.bincount(key, weights=weight, minlength=shape[0] * shape[1]).reshape(shape)
    total = np.bincount(key, weights=np.nan_to_num(value), minlength=shape[0] * shape[1]).reshape(shape)
    return count, total
