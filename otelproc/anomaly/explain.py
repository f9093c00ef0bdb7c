"""Attribute explanation of findings: which attribute values and patterns carry an anomaly.

For a spike, drop, level shift, new / rare pattern or error-ratio finding, the resource and log
attribute values (``k8s.pod.name=checkout-7f9``, ``service.version=1.4.2``, ``http.route=/pay``, any
user attribute) whose share in the finding's window differs most from their share in the baseline,
each with both shares, the lift (window share / baseline share) and a significance, and the patterns
that rose with it. Like Elastic's log rate analysis or Datadog's error outliers, but from streaming
state, at ingest, not by rescanning the store.

State (bounded; ``memory_bytes()``), per service:

* window rows: for each of ``slots`` recent event-time buckets (the anomaly processor's finest
  resolution) and for two populations (all records; error records, severity >= 17) a Space-Saving
  sketch of ``cells`` items (kernels/attr_sketch.py). Items of all records: every (key, value) of the
  record's resource and log attributes, and its pattern. Items of error records: the same, plus each
  (pattern, key, value), so a pattern's own attribute mix is known for error patterns.
* baseline rows: per service and population a sketch of ``baseline_cells`` items with counts that
  decay with time constant ``memory`` (event time): a window bucket is merged into it once no finding
  can be about it any more (the watermark passed it by the longest resolution).

``service.name`` is not an item (it is the series), and a log attribute key whose values are nearly
all different (request or trace ids: more than half of its values in a batch of >= 32 distinct) is
dropped for good: no single value of it can carry anything.

Which population is compared with which:

=====================  =========================================  =============================================
finding                window (target)                            baseline (reference)
=====================  =========================================  =============================================
error_ratio            the service's error records                its errors before (all its records when fewer
                                                                  than ``min_reference`` errors were seen)
pattern (id != 0)      the pattern's error records by             all records of the service before
                       (pattern, attribute) items; a pattern
                       without errors: all the service's records
service spike / shift  all records of the service                 all records of the service before
drop                   all records (values whose share *fell*)    all records of the service before
=====================  =========================================  =============================================

The window of a finding is its bucket and the buckets after it already counted (the engine reports a
bucket once the watermark passed it, ``allowed_lateness`` later, so those lines are here at no delay);
its baseline is the decayed baseline plus the window buckets before it. The significance
is the Chernoff bound exp(-n KL(window share || baseline share)) on the one-sided binomial tail of
the value's lines among the window's n (an upper bound on the p-value at any count, where the
chi-square approximation of a G-test overstates small ones), its exponent divided by the values'
over-dispersion across the buckets before the window (lines come in clusters: a request logs several
lines on one pod), Bonferroni-adjusted for the number of candidates tested; an
entry is reported when the adjusted p <= ``p`` (1e-4), the lift >= ``min_lift`` (<= 1/``min_lift``
for a drop) or its share gained ``min_share_gain`` (0.25; lost, for a drop), and it has >= ``min_count`` lines in the window (in the baseline, for a drop). Values with
the same counts in window and baseline (a pod and its host) are one entry with ``also``.
Sketch counts are upper bounds; a value missing from a full baseline row is given that row's
smallest count (its largest possible count), which can only lower its lift.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from otelproc.batch import AttrMap
from otelproc.findings import PATTERN_ATTRIBUTE, Finding, FindingKind
from otelproc.kernels import attr_sketch as ks

__all__ = ["ExplainParams", "Explainer", "EXPLAINED_KINDS"]

NS = 1_000_000_000
ERROR_SEVERITY = 17
ALL, ERR = 0, 1
EXPLAINED_KINDS = frozenset({FindingKind.SPIKE, FindingKind.DROP, FindingKind.LEVEL_SHIFT, FindingKind.NEW_PATTERN,
                             FindingKind.RARE_PATTERN, FindingKind.ERROR_RATIO})
_SKIP_KEYS = ("service.name",)
_PATTERN_TAG = np.uint64(0x7061747465726E31)  # "pattern1": pattern items live apart from attribute items
# an attribute key is identifier-like when, in one batch, it has >= this many distinct values and
# more than half of its values are distinct
_ID_MIN_DISTINCT = 32
_DISPERSION_PRIOR = 10.0  # pseudo degrees of freedom at dispersion 1 (few buckets: close to binomial)
_MAX_ITEMS = 200_000  # item descriptions kept (ids still in a sketch are never forgotten)
_KIND_KV, _KIND_PATTERN = 0, 1


@dataclass
class ExplainParams:
    slot_s: float = 10.0           # width of a window bucket (the finest resolution)
    horizon_s: float = 90.0        # a bucket stays a window bucket this long after the watermark
    slots: int = 32                # window buckets kept at most (a batch spanning more closes the oldest)
    cells: int = 64                # items per window row
    baseline_cells: int = 128      # items per baseline row
    memory_s: float = 1800.0       # baseline decay time constant (event time)
    p: float = 1e-4                # Bonferroni-adjusted significance an entry needs
    min_lift: float = 1.5
    min_share_gain: float = 0.25   # ... or this gain (loss, for a drop) of share
    min_count: float = 3.0
    min_reference: float = 30.0    # errors in the baseline needed to compare errors with errors
    top: int = 5                   # attribute entries per finding
    top_patterns: int = 3


@dataclass
class _Side:
    items: np.ndarray   # uint64[m]
    counts: np.ndarray  # float64[m]
    total: float
    floor: float        # count a missing item may still have (smallest count of a full row, else 0)


class Explainer:
    """Streaming attribute state of every service and the explanation of findings."""

    def __init__(self, params: ExplainParams | None = None) -> None:
        self.p = params or ExplainParams()
        self.width_ns = int(round(self.p.slot_s * NS))
        self.n_services = 0
        P, K, KB = self.p.slots, self.p.cells, self.p.baseline_cells
        # window rows: row (service * P + slot) * 2 + population
        self.win_ids = np.zeros((0, K), dtype=np.uint64)
        self.win_cnt = np.zeros((0, K), dtype=np.float64)
        self.win_tot = np.zeros(0, dtype=np.float64)
        self.slot_bucket = np.full(P, -1, dtype=np.int64)
        # baseline rows: row service * 2 + population
        self.base_ids = np.zeros((0, KB), dtype=np.uint64)
        self.base_cnt = np.zeros((0, KB), dtype=np.float64)
        self.base_tot = np.zeros(0, dtype=np.float64)
        self.base_bucket = -1          # the latest bucket merged into the baseline
        self.max_event_ns = -(2 ** 62)
        self.late_records = 0
        # attribute or pattern item -> (kind, pattern id, attribute item); attribute item -> (key, value)
        self.meta: dict[int, tuple[int, int, int]] = {}
        self.names: dict[int, tuple[str, str]] = {}
        self.excluded_keys = np.zeros(0, dtype=np.uint64)
        self._forget_at = _MAX_ITEMS
        skip = AttrMap.from_pylist([{k: ""} for k in _SKIP_KEYS])
        self._skip_keys = ks.hash_pairs(skip.keys.buf, skip.keys.off, skip.values.buf, skip.values.off)[1]

    # ------------------------------------------------------------------ state size
    def memory_bytes(self) -> int:
        arrays = (self.win_ids, self.win_cnt, self.win_tot, self.base_ids, self.base_cnt, self.base_tot)
        return int(sum(a.nbytes for a in arrays))

    def _grow(self, n_services: int) -> None:
        if n_services <= self.n_services:
            return
        new = max(n_services, 2 * self.n_services)
        P, K, KB = self.p.slots, self.p.cells, self.p.baseline_cells
        add_w, add_b = (new - self.n_services) * P * 2, (new - self.n_services) * 2
        self.win_ids = np.concatenate([self.win_ids, np.zeros((add_w, K), dtype=np.uint64)])
        self.win_cnt = np.concatenate([self.win_cnt, np.zeros((add_w, K))])
        self.win_tot = np.concatenate([self.win_tot, np.zeros(add_w)])
        self.base_ids = np.concatenate([self.base_ids, np.zeros((add_b, KB), dtype=np.uint64)])
        self.base_cnt = np.concatenate([self.base_cnt, np.zeros((add_b, KB))])
        self.base_tot = np.concatenate([self.base_tot, np.zeros(add_b)])
        self.n_services = new

    # ------------------------------------------------------------------ ingest
    def add(self, event_ns: np.ndarray, service: np.ndarray, pattern: np.ndarray, severity: np.ndarray,
            resource_index: np.ndarray, resource_attrs: AttrMap, log_attrs: AttrMap) -> None:
        """Count one batch's items into the window rows of their buckets.

        event_ns int64[n]; service int64[n] (the anomaly engine's global codes); pattern uint64[n];
        severity uint8[n]; resource_index int[n] into resource_attrs (one row per resource);
        log_attrs one row per record. Records of a bucket already merged into the baseline are late:
        counted in ``late_records`` and left out.
        """
        n = len(event_ns)
        if n == 0:
            return
        self._grow(int(service.max()) + 1)
        self.max_event_ns = max(self.max_event_ns, int(event_ns.max()))
        slot, ok = self._slots(event_ns // self.width_ns)
        if not ok.all():
            self.late_records += int((~ok).sum())
            keep = np.flatnonzero(ok)
            if len(keep) == 0:
                return
            service, pattern, severity, slot, resource_index = (a[keep] for a in (service, pattern, severity, slot,
                                                                                  resource_index))
            log_attrs = log_attrs.take(keep)
            n = len(keep)
        row = (service.astype(np.int64) * self.p.slots + slot) * 2   # population ALL; + 1 = ERR
        err = severity >= ERROR_SEVERITY
        n_rows = len(self.win_tot)
        self.win_tot += np.bincount(row, minlength=n_rows)
        e = np.flatnonzero(err)
        if len(e):
            self.win_tot += np.bincount(row[e] + 1, minlength=n_rows)
        rows: list[np.ndarray] = []
        items: list[np.ndarray] = []
        weights: list[np.ndarray] = []

        def put(r: np.ndarray, it: np.ndarray, w: np.ndarray | None = None) -> None:
            rows.append(r)
            items.append(it)
            weights.append(np.ones(len(it)) if w is None else w)

        # resource attributes: hashed once per resource, counted once per (resource, window row)
        ra = resource_attrs
        r_item, r_key = ks.hash_pairs(ra.keys.buf, ra.keys.off, ra.values.buf, ra.values.off)
        r_keep = np.flatnonzero(~np.isin(r_key, self._skip_keys))
        if len(r_keep):
            r_owner = np.repeat(np.arange(len(ra)), np.diff(ra.off))[r_keep]
            r_item = r_item[r_keep]
            self._describe_attrs(r_item, r_keep, ra)
            kept_off = np.zeros(len(ra) + 1, dtype=np.int64)
            np.cumsum(np.bincount(r_owner, minlength=len(ra)), out=kept_off[1:])
            pairs, counts = np.unique(resource_index.astype(np.int64) * n_rows + row, return_counts=True)
            at, ent = _expand(kept_off, pairs // n_rows)
            put((pairs % n_rows)[at], r_item[ent], counts[at].astype(np.float64))
            if len(e):
                at, ent = _expand(kept_off, resource_index[e].astype(np.int64))
                put(row[e][at] + 1, r_item[ent])
                self._pair_items(put, row[e][at] + 1, pattern[e][at], r_item[ent])

        # log attributes: one item per entry
        if len(log_attrs.keys):
            la = log_attrs
            l_item, l_key = ks.hash_pairs(la.keys.buf, la.keys.off, la.values.buf, la.values.off)
            owner = np.repeat(np.arange(n), np.diff(la.off))
            keep = np.flatnonzero(self._keep_keys(l_item, l_key))
            l_item, owner = l_item[keep], owner[keep]
            self._describe_attrs(l_item, keep, la)
            put(row[owner], l_item)
            ee = np.flatnonzero(err[owner])
            if len(ee):
                put(row[owner[ee]] + 1, l_item[ee])
                self._pair_items(put, row[owner[ee]] + 1, pattern[owner[ee]], l_item[ee])

        # patterns: one item per record (pattern 0 = none)
        has_p = np.flatnonzero(pattern != 0)
        if len(has_p):
            p_item = ks.combine(np.full(len(has_p), _PATTERN_TAG, dtype=np.uint64), pattern[has_p])
            put(row[has_p], p_item)
            pe = err[has_p]
            if pe.any():
                put(row[has_p][pe] + 1, p_item[pe])
            u, first = np.unique(p_item, return_index=True)
            for it, pid in zip(u.tolist(), pattern[has_p][first].tolist()):
                if it not in self.meta:
                    self.meta[it] = (_KIND_PATTERN, pid, 0)
        if rows:
            ks.sketch_add(self.win_ids, self.win_cnt, np.concatenate(rows).astype(np.int64),
                          np.concatenate(items), np.concatenate(weights).astype(np.float64))
        if len(self.meta) > self._forget_at:
            self._forget()
            # amortised: the next pass once as many items again were described
            self._forget_at = max(_MAX_ITEMS, 2 * len(self.meta))

    def _pair_items(self, put, rows: np.ndarray, pattern: np.ndarray, attr_item: np.ndarray) -> None:
        """(pattern, attribute) items of error records (a pattern of 0 has none)."""
        m = np.flatnonzero(pattern != 0)
        if not len(m):
            return
        # not described: explain() finds a pattern's pairs by combining it with the attribute items it knows
        put(rows[m], ks.combine(pattern[m], attr_item[m]))

    def _describe_attrs(self, item: np.ndarray, entry: np.ndarray, attrs: AttrMap) -> None:
        """Remember "key=value" of attribute items not seen before (entry: their positions in attrs)."""
        if not len(item):
            return
        u, first = np.unique(item, return_index=True)
        meta = self.meta
        for it, j in zip(u.tolist(), entry[first].tolist()):
            if it not in meta:
                meta[it] = (_KIND_KV, 0, it)
                self.names[it] = (attrs.keys[j], attrs.values[j])

    def _keep_keys(self, item: np.ndarray, key: np.ndarray) -> np.ndarray:
        """Mask of log attribute entries to count: not service.name, not of an identifier-like key."""
        drop = np.isin(key, self._skip_keys)
        if len(self.excluded_keys):
            drop |= np.isin(key, self.excluded_keys)
        if len(item) >= _ID_MIN_DISTINCT:
            live = np.flatnonzero(~drop)
            keys, per_key = np.unique(key[live], return_counts=True)
            if (per_key >= _ID_MIN_DISTINCT).any():
                _, first = np.unique(item[live], return_index=True)
                distinct = np.bincount(np.searchsorted(keys, key[live][first]), minlength=len(keys))
                ident = keys[(distinct >= _ID_MIN_DISTINCT) & (2 * distinct > per_key)]
                if len(ident):
                    self.excluded_keys = np.union1d(self.excluded_keys, ident)
                    drop |= np.isin(key, ident)
        return ~drop

    def _forget(self) -> None:
        """Drop descriptions of items no sketch holds any more (bounded memory under churn)."""
        live = set(np.unique(np.concatenate([self.win_ids.ravel(), self.base_ids.ravel()])).tolist())
        meta = {k: v for k, v in self.meta.items() if k in live}
        kv_live = {v[2] for v in meta.values()}
        self.meta = {**meta, **{k: (_KIND_KV, 0, k) for k in kv_live if k in self.names}}
        self.names = {k: v for k, v in self.names.items() if k in kv_live}

    # ------------------------------------------------------------------ buckets
    def _slots(self, bucket: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Window slot of each record's bucket (allocating, and closing the oldest when all are taken)
        and the mask of records that are not late."""
        lo, hi = int(bucket.min()), int(bucket.max())
        if hi - lo < 4 * self.p.slots:
            present = np.flatnonzero(np.bincount(bucket - lo)) + lo
        else:
            present = np.unique(bucket)
        slot_of = np.full(len(present), -1, dtype=np.int64)
        for i, b in enumerate(present.tolist()):
            if b <= self.base_bucket:
                continue  # already in the baseline: late
            hit = np.flatnonzero(self.slot_bucket == b)
            if len(hit):
                slot_of[i] = hit[0]
                continue
            free = np.flatnonzero(self.slot_bucket < 0)
            if not len(free):
                oldest = int(np.argmin(self.slot_bucket))
                if self.slot_bucket[oldest] > b:
                    continue  # older than every kept bucket with none free: late
                self._close(oldest)
                free = np.array([oldest])
            self.slot_bucket[free[0]] = b
            slot_of[i] = free[0]
        s = slot_of[np.searchsorted(present, bucket)]
        return np.maximum(s, 0), s >= 0

    def advance(self) -> None:
        """Merge into the baseline every window bucket no finding can be about any more: its end is
        ``horizon`` before the latest event time (call after the anomaly engine's ingest)."""
        limit = (self.max_event_ns - int(self.p.horizon_s * NS)) // self.width_ns  # buckets < limit - 0 end by then
        for s in np.argsort(self.slot_bucket).tolist():
            b = int(self.slot_bucket[s])
            if b >= 0 and b + 1 <= limit:
                self._close(s)

    def _close(self, s: int) -> None:
        """Merge window slot s into the baseline rows (decayed to its bucket) and free it."""
        b = int(self.slot_bucket[s])
        if self.base_bucket >= 0 and b > self.base_bucket:
            d = math.exp(-(b - self.base_bucket) * self.p.slot_s / self.p.memory_s)
            self.base_cnt *= d
            self.base_tot *= d
        self.base_bucket = max(self.base_bucket, b)
        svc = np.arange(self.n_services, dtype=np.int64)
        src = np.concatenate([(svc * self.p.slots + s) * 2, (svc * self.p.slots + s) * 2 + 1])
        dst = np.concatenate([svc * 2, svc * 2 + 1])
        used = self.win_tot[src] > 0
        src, dst = src[used], dst[used]
        ks.sketch_merge(self.base_ids, self.base_cnt, dst, self.win_ids, self.win_cnt, src)
        self.base_tot[dst] += self.win_tot[src]
        self.win_ids[src] = 0
        self.win_cnt[src] = 0.0
        self.win_tot[src] = 0.0
        self.slot_bucket[s] = -1

    # ------------------------------------------------------------------ explanation
    def _side(self, code: int, pop: int, slots: np.ndarray, baseline: bool) -> _Side:
        """Items and counts of one service and population over window slots (and the baseline)."""
        P = self.p.slots
        wr = (code * P + slots.astype(np.int64)) * 2 + pop
        ids = [self.win_ids[wr].ravel()]
        cnt = [self.win_cnt[wr].ravel()]
        total = float(self.win_tot[wr].sum())
        full = (self.win_ids[wr] != 0).all(axis=1)
        floor = float(self.win_cnt[wr][full].min(axis=1).sum()) if full.any() else 0.0
        if baseline:
            br = code * 2 + pop
            ids.append(self.base_ids[br])
            cnt.append(self.base_cnt[br])
            total += float(self.base_tot[br])
            if (self.base_ids[br] != 0).all():
                floor += float(self.base_cnt[br].min())
        ids_a, cnt_a = np.concatenate(ids), np.concatenate(cnt)
        nz = ids_a != 0
        u, inv = np.unique(ids_a[nz], return_inverse=True)
        return _Side(u, np.bincount(inv, weights=cnt_a[nz], minlength=len(u)), total, floor)

    def explain(self, f: Finding, code: int) -> list[dict]:
        """The explanation entries of finding ``f`` of service code ``code``:
        attribute values then patterns, each a dict (the keys of Finding.explanation); [] when nothing is significant
        or the kind is not explained."""
        if f.kind not in EXPLAINED_KINDS or code >= self.n_services:
            return []
        b0 = f.time_ns // self.width_ns
        sb = self.slot_bucket
        # the finding's bucket and every bucket after it seen so far: a bucket is reported once the watermark
        # passed it, allowed_lateness later, so the lines since then are already here (4x the data of a 10 s
        # bucket, at no delay)
        win = np.flatnonzero(sb >= b0)
        if not len(win):
            return []
        before = np.flatnonzero((sb >= 0) & (sb < b0))
        down = f.kind == FindingKind.DROP
        ref_all = self._side(code, ALL, before, True)
        if f.kind == FindingKind.ERROR_RATIO:
            target = self._side(code, ERR, win, False)
            ref = self._side(code, ERR, before, True)
            if ref.total < self.p.min_reference:
                ref = ref_all
            attrs = self._kv(target)
            population = "errors"
            pat_target, pat_ref = target, ref
        else:
            pat_target, pat_ref = self._side(code, ALL, win, False), ref_all
            target, population = pat_target, "lines"
            if f.pattern_id:
                err_win = self._side(code, ERR, win, False)
                p_item = int(ks.combine(np.array([_PATTERN_TAG]), np.array([f.pattern_id], dtype=np.uint64))[0])
                j = np.searchsorted(err_win.items, p_item)
                if j < len(err_win.items) and err_win.items[j] == p_item and err_win.counts[j] >= self.p.min_count:
                    population = "pattern errors"
                    target = self._pattern_kv(err_win, f.pattern_id, float(err_win.counts[j]))
            attrs = self._kv(target) if population != "pattern errors" else target
            ref = ref_all
        ref_pop = ERR if ref is not ref_all else ALL
        out = [dict(e, population=population) for e in
               self._compare(attrs, self._kv(ref), down, self.p.top, lambda c: self._dispersion(code, ref_pop, before, c))]
        skip = {int(f.pattern_id)}
        pat_pop = ERR if pat_ref is not ref_all else ALL
        pats = self._compare(self._patterns(pat_target, skip), self._patterns(pat_ref, skip), down,
                             self.p.top_patterns, lambda c: self._dispersion(code, pat_pop, before, c))
        out += [dict(e, population="errors" if f.kind == FindingKind.ERROR_RATIO else "lines") for e in pats]
        return out

    def _kv(self, side: _Side) -> _Side:
        keep = np.fromiter((self.meta.get(i, (-1,))[0] == _KIND_KV for i in side.items.tolist()), dtype=bool,
                           count=len(side.items))
        return _Side(side.items[keep], side.counts[keep], side.total, side.floor)

    def _patterns(self, side: _Side, skip: set[int]) -> _Side:
        keep = np.fromiter(((m := self.meta.get(i, (-1, 0)))[0] == _KIND_PATTERN and m[1] not in skip
                            for i in side.items.tolist()), dtype=bool, count=len(side.items))
        return _Side(side.items[keep], side.counts[keep], side.total, side.floor)

    def _pattern_kv(self, side: _Side, pattern_id: int, total: float) -> _Side:
        """The (pattern, attribute) items of ``pattern_id`` as attribute items, over its error lines: every
        attribute item of the error lines (``side``) combined with the pattern and looked up."""
        kv = self._kv(side).items
        pairs = ks.combine(np.full(len(kv), pattern_id, dtype=np.uint64), kv)
        j = np.minimum(np.searchsorted(side.items, pairs), max(len(side.items) - 1, 0))
        hit = side.items[j] == pairs if len(side.items) else np.zeros(len(kv), dtype=bool)
        order = np.argsort(kv[hit])
        return _Side(kv[hit][order], side.counts[j[hit]][order], total, side.floor)

    def _dispersion(self, code: int, pop: int, slots: np.ndarray, items: np.ndarray) -> float:
        """Over-dispersion (>= 1) of the candidates' counts across the window buckets before the finding.

        Lines come in clusters (one request logs several lines on one pod; one failure, error lines in
        caller and callee), so a value's count varies more from bucket to bucket than independent lines
        would: the Pearson chi-square of the counts per bucket against their pooled shares, per degree of
        freedom, shrunk towards 1 by ``_DISPERSION_PRIOR`` pseudo degrees of freedom. The tail bound's
        exponent is divided by it (a quasi-binomial test)."""
        P = self.p.slots
        rows = (code * P + slots.astype(np.int64)) * 2 + pop
        rows = rows[self.win_tot[rows] > 0]
        if len(rows) < 2 or not len(items):
            return 1.0
        items = np.unique(items)
        n = self.win_tot[rows]
        c = np.zeros((len(rows), len(items)))
        for i, r in enumerate(rows.tolist()):
            ids = self.win_ids[r]
            j = np.minimum(np.searchsorted(items, ids), len(items) - 1)
            hit = (items[j] == ids) & (ids != 0)
            c[i, j[hit]] = self.win_cnt[r][hit]
        share = c.sum(axis=0) / n.sum()
        ok = (share > 0) & (share < 1)
        expect = n[:, None] * share[None, ok]
        chi = float((((c[:, ok] - expect) ** 2) / (expect * (1 - share[None, ok]))).sum())
        dof = (len(rows) - 1) * int(ok.sum())
        return max(1.0, (chi + _DISPERSION_PRIOR) / (dof + _DISPERSION_PRIOR))

    def _compare(self, t: _Side, r: _Side, down: bool, top: int, dispersion) -> list[dict]:
        p = self.p
        if t.total <= 0 or r.total <= 0:
            return []
        if down:
            cand = r.items[r.counts >= p.min_count]
        else:
            cand = t.items[t.counts >= p.min_count]
        if not len(cand):
            return []
        a = _lookup(t, cand)
        b = _lookup(r, cand)
        n1, n2 = t.total, r.total
        a, b = np.minimum(a, n1), np.minimum(b, n2)
        share1, share0 = a / n1, b / n2
        lift = ((a + 0.5) / (n1 + 0.5)) / ((b + 0.5) / (n2 + 0.5))
        log10p = _log10_tail(a, n1, b, n2, down) / dispersion(cand) + math.log10(len(cand))
        # the effect: a lift, or for a value most lines carry anyway (a region of 2/3 of the pods carrying all
        # the errors) a gain of share
        big = ((lift <= 1 / p.min_lift) | (share0 - share1 >= p.min_share_gain)) if down else \
            ((lift >= p.min_lift) | (share1 - share0 >= p.min_share_gain))
        ok = (log10p <= math.log10(p.p)) & big
        idx = np.flatnonzero(ok)
        idx = idx[np.argsort(log10p[idx], kind="stable")]
        out: list[dict] = []
        for i in idx.tolist():
            name = self._name(int(cand[i]))
            for e in out:  # the same lines (a pod and its host): one entry
                if abs(e["count"] - a[i]) <= 0.02 * max(a[i], 1) and \
                        abs(e["baseline_count"] - b[i]) <= 0.02 * max(b[i], 1) + 0.5:
                    e["also"].append(f"{name[0]}={name[1]}")
                    break
            else:
                if len(out) < top:
                    out.append({"attribute": name[0], "value": name[1], "count": float(a[i]),
                                "baseline_count": float(b[i]), "share": float(share1[i]),
                                "baseline_share": float(share0[i]), "lift": float(lift[i]),
                                "log10_p": float(max(log10p[i], -300.0)), "also": []})
        return out

    def _name(self, item: int) -> tuple[str, str]:
        m = self.meta.get(item)
        if m is not None and m[0] == _KIND_PATTERN:
            return PATTERN_ATTRIBUTE, f"{m[1]:016x}"
        return self.names.get(item, ("?", f"{item:016x}"))


def _expand(off: np.ndarray, owners: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For CSR offsets ``off`` and owners o[i]: (position i, entry index) of every entry of every owner."""
    n_e = off[owners + 1] - off[owners]
    at = np.repeat(np.arange(len(owners)), n_e)
    ent = off[owners][at] + (np.arange(int(n_e.sum())) - np.repeat(np.cumsum(n_e) - n_e, n_e))
    return at, ent


def _lookup(side: _Side, items: np.ndarray) -> np.ndarray:
    """Counts of ``items`` in ``side`` (the side's floor where missing)."""
    j = np.searchsorted(side.items, items)
    j = np.minimum(j, max(len(side.items) - 1, 0))
    hit = (side.items[j] == items) if len(side.items) else np.zeros(len(items), dtype=bool)
    return np.where(hit, side.counts[j] if len(side.items) else 0.0, side.floor)


def _log10_tail(a: np.ndarray, n1: float, b: np.ndarray, n2: float, down: bool) -> np.ndarray:
    """log10 of the Chernoff bound exp(-n1 KL(a/n1 || p0)) on the binomial tail P(X >= a) (P(X <= a) when
    ``down``) of a window of n1 lines whose expected share p0 is the baseline's b/n2, taken at its
    conservative side ((b + 1)/(n2 + 1) up, b/(n2 + 1) down). An upper bound on the p-value at any n
    (the chi-square approximation of G is not: it overstates small counts); 0 in the wrong direction."""
    q = np.clip(a / n1, 0.0, 1.0)
    p0 = np.clip(b / (n2 + 1.0) if down else (b + 1.0) / (n2 + 1.0), 1e-12, 1 - 1e-12)
    with np.errstate(divide="ignore", invalid="ignore"):
        kl = np.where(q > 0, q * np.log(q / p0), 0.0) + np.where(q < 1, (1 - q) * np.log((1 - q) / (1 - p0)), 0.0)
    right = (q < p0) if down else (q > p0)
    return np.where(right, -n1 * np.maximum(kl, 0.0) / math.log(10.0), 0.0)
