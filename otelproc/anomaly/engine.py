"""The anomaly engine: series per event-time bucket -> detectors -> anomalies, bands, findings.

One :class:`AnomalyEngine` per ``anomaly`` processor. ``ingest()`` takes the
arrays of one batch (no LogBatch: the processor unpacks it), files every point
into the open buckets of each resolution, closes the buckets the watermark
has passed and runs the detectors over the closed rows, all series at once.

Series (per resolution):
  counts     per (service, pattern) and per service total (pattern 0):
             Anscombe transform 2*sqrt(c + 3/8) (Poisson noise -> ~unit variance),
             robust seasonal baseline, DSPOT threshold on |z| (spike / drop),
             CUSUM (level shift); at the coarsest resolution also presence
             (new / rare / vanished pattern).
  errors     per service: error count (severity >= 17) / total, binomial jump.
  values     per (service, pattern, parameter position): durations (ms when the
             unit is written, else the number as written). At the finest resolution
             the latency shift test (kernels/latency.py: a pooled window of the last
             values against the series' own baseline, z from the window's size and
             the series' dispersion; value anomaly, up only unless latency_lower) and,
             at the coarsest resolution, the ramp test on the count-weighted trimmed
             mean of log value per bucket, less its learnt hour-of-day profile (trend,
             time to threshold; kernels/trend.py).

Detection only ever looks at event time, so replaying a day in minutes gives
the findings live traffic gave.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from otelproc.config import setting
from otelproc.anomaly.series import BucketWindow, ClosedBuckets, SeriesIndex, summed_cells
from otelproc.findings import Finding, FindingKind, Severity
from otelproc.kernels import detectors as det
from otelproc.kernels import latency as lat
from otelproc.kernels import trend as trk
from otelproc.kernels.series import aggregate_cells

__all__ = ["EngineParams", "AnomalyEngine", "ANOMALY_COLUMNS", "SERIES_COLUMNS"]

NS = 1_000_000_000
ERROR_SEVERITY = 17  # OTLP SEVERITY_NUMBER_ERROR
N_SLOTS = 24         # hour-of-day seasonal profile

ANOMALY_COLUMNS = ("time", "service", "pattern_id", "kind", "score", "observed", "expected", "lower", "upper",
                   "severity", "description", "resolution_s", "series", "template", "labels", "explanation")
SERIES_COLUMNS = ("time", "service", "pattern_id", "series", "resolution_s", "observed", "expected", "lower",
                  "upper", "score")


@dataclass
class EngineParams:
    """Detector settings, declared once: the ``anomaly`` processor's YAML keys are these fields (key, unit,
    bounds in their metadata; the comment above each is its documentation); internal ones are not keys."""

    # bucket widths of the series (each runs the count / error detectors; the longest also
    # runs pattern presence and the trend detector)
    resolutions_s: tuple = setting((10.0, 60.0), key="resolutions", unit="s")
    # how long after a bucket's end points may still arrive (event time); later ones are dropped
    allowed_lateness_s: float = setting(30.0, key="allowed_lateness", unit="s", ge=0)
    # a silence of the whole stream longer than this is a gap, not zero traffic
    max_gap_s: float = setting(3600.0, key="max_gap", unit="s", gt=0)
    # event time before detectors report (baselines learn); a pattern first seen later is "new"
    warmup_s: float = setting(1800.0, key="warmup", unit="s", ge=0)
    # the same finding (kind, series) is reported at most once per cooldown
    cooldown_s: float = setting(900.0, key="cooldown", unit="s", ge=0)
    alpha: float = setting(0.05, internal=True)
    beta: float = setting(0.02, internal=True)
    season_gamma: float = setting(0.1, internal=True)
    # target false-alarm probability per point of the SPOT thresholds
    spot_q: float = setting(1e-4, gt=0, lt=0.5)
    spot_init: float = setting(3.0, internal=True)
    # robust z a count must reach (on top of the SPOT threshold) for spike / drop
    min_z: float = setting(5.0, ge=0)
    # a spike / drop must change the count by at least this many lines per bucket ...
    min_count_change: float = setting(10.0, ge=0)
    # ... and by this factor against the expectation
    min_ratio: float = setting(2.0, ge=1)
    cusum_k: float = setting(1.0, internal=True)
    cusum_h: float = setting(15.0, internal=True)
    # error ratio: binomial z needed, and the least absolute jump of the ratio (0.05 = 5 points)
    error_z: float = setting(6.0, ge=0)
    error_min_jump: float = setting(0.05, ge=0, le=1)
    error_min_total: float = setting(10.0, internal=True)
    # error ratio: least number of error lines in the bucket (small buckets are noisy)
    error_min_count: float = 5.0
    # error ratio: Poisson probability of at least the observed errors under the baseline must be below this
    error_p: float = setting(1e-7, gt=0, lt=1)
    # error ratio / ERROR-pattern spike: critical when the jump's size still holds at the lower confidence
    # bound of the bucket's own sample (this many standard errors), else a warning (a few ERROR lines)
    error_confidence_z: float = setting(3.0, ge=0)
    # latency shift (value anomaly): z of the window's location against the series' baseline, with its
    # standard error from the number of values and the series' own dispersion
    value_z: float = setting(5.0, ge=0)
    # ... and the least ratio of the window's location to the baseline
    value_min_ratio: float = setting(1.5, ge=1, hint="a ratio to the usual latency")
    # a shift is reported once it has held this long (event time); critical from latency_critical_ratio held
    # for latency_critical_duration, else warning
    latency_min_duration_s: float = setting(30.0, key="latency_min_duration", unit="s", ge=0)
    latency_critical_ratio: float = setting(2.0, ge=1, hint="a ratio to the usual latency")
    latency_critical_duration_s: float = setting(60.0, key="latency_critical_duration", unit="s", ge=0)
    # the pooled window of a series' last values reaches back this far, and holds at least its last
    # latency_min_values values (a test needs that many)
    latency_window_s: float = setting(300.0, key="latency_window", unit="s", gt=0)
    latency_min_values: int = setting(16, ge=2)
    # memory of the latency baseline (event time; for a sparse series the time 2 x latency_min_history of its
    # values take, if longer), and the (decayed) values it needs before a series is tested
    latency_memory_s: float = setting(1800.0, key="latency_memory", unit="s", gt=0)
    latency_min_history: float = setting(100.0, ge=0)
    # a shift held this long becomes the new baseline
    latency_relevel_s: float = setting(1800.0, key="latency_relevel", unit="s", gt=0)
    # report lower-than-usual latency as well (faster is not an incident by default)
    latency_lower: bool = False
    # trend: relative creep per hour to flag; a ramp that started up to trend_window ago is tested
    trend_rate: float = setting(0.02, gt=0, hint="0.02 = 2 %/hour")
    trend_window_s: float = setting(3600.0, key="trend_window", unit="s", gt=0)
    # trend: the level before the ramp is learnt from this much history (longer = more power)
    trend_reference_s: float = setting(7200.0, key="trend_reference", unit="s", gt=0)
    # trend: t statistic of the ramp slope needed (false-alarm guard; 4 = ~1e-3 false trends per
    # series-hour of flat noise)
    trend_min_t: float = setting(4.0, ge=0)
    # trend: forecast the time until the level reaches this multiple of the window-start level
    trend_forecast_ratio: float = setting(2.0, gt=1)
    # trend: a creep is a warning (something to look at); critical from this t statistic of its slope on
    # only if set (.inf = never)
    trend_critical_t: float = math.inf
    # vanished pattern: only a pattern with a cadence (heartbeat, periodic job, busy line) can vanish, when
    # the probability of its silence under its own rate and dispersion falls below vanish_p, and not
    # before vanish_min
    vanish_p: float = setting(1e-9, gt=0, lt=1)
    vanish_min_s: float = setting(180.0, key="vanish_min", unit="s", gt=0)
    vanish_max_dispersion: float = setting(0.5, internal=True)
    steady_min: int = setting(10, internal=True)
    # a drop of a service's lines must last this long (a restart's silence is not a traffic drop)
    drop_min_s: float = setting(180.0, key="drop_min", unit="s", gt=0)
    new_error_min_buckets: int = setting(3, internal=True)
    band_sigmas: float = setting(3.0, internal=True)
    # write expected bands to the "series" table
    series_table: bool = True
    # findings below this severity (info, warning, critical) are not reported: no anomalies row, nothing to
    # alerting. info is ordinary variation (new / rare non-error patterns, spikes and shifts of non-error
    # lines); new patterns stay in the patterns table. Set info to store those too
    min_severity_stored: str = setting("warning", choices=("info", "warning", "critical"))


@dataclass
class _ResolutionState:
    window: BucketWindow
    step_s: float
    coarsest: bool
    count_base: det.BaselineState
    count_spot: det.SpotState
    cusum_up: np.ndarray
    cusum_down: np.ndarray
    drop_run: np.ndarray
    err_ew_err: np.ndarray
    err_ew_tot: np.ndarray
    err_n: np.ndarray
    presence: det.PresenceState
    trend: trk.TrendState
    origin_bucket: int = -1


@dataclass
class Output:
    anomalies: dict = field(default_factory=lambda: {c: [] for c in ANOMALY_COLUMNS})
    series: dict = field(default_factory=lambda: {c: [] for c in SERIES_COLUMNS})
    findings: list = field(default_factory=list)
    # (service code, pattern id, from time ns, score) for flagging log rows
    flagged: list = field(default_factory=list)


class AnomalyEngine:
    """Event-time series and detectors for every (service, pattern, parameter)."""

    # 2: trend state is a ring of (count, log-location) per bucket (was log p50 values)
    # 3: trend state adds the hour-of-day profile of log-location (prof, pfit, prof_days, hmean, hstamp,
    #    hfirst, hsum, hw, hour)
    # 4: trend state adds the smoothed load ring (load, load_ew) of the day-1 load adjustment
    # 5: the latency shift state (latency.*, value_unit) replaces the value baseline / SPOT of log p50
    # 6: presence adds the gap and per-step count moments (gap_sq, rate, rate_sq) of the cadence test;
    #    counts add drop_run (sustained drops)
    STATE_VERSION = 6

    def __init__(self, params: EngineParams | None = None) -> None:
        self.p = params or EngineParams()
        self._min_rank = _RANK[Severity(self.p.min_severity_stored)]
        self.services: list[str] = []
        self._service_code: dict[str, int] = {}
        self.counts = SeriesIndex()   # (service, pattern) and (service, 0) totals
        self.values = SeriesIndex()   # (service, pattern, ordinal)
        # per value series: its values carry a unit (ms) or are numbers of an unknown unit
        self.value_unit = np.zeros(0, dtype=np.bool_)
        self.latency = lat.LatencyState(0)   # at the finest resolution
        self.service_ids = SeriesIndex()  # (service) for error ratio
        self.templates: dict[int, str] = {}
        # a sample body per pattern, for new / rare pattern findings (alert texts show it); not persisted
        self.samples: dict[int, str] = {}
        self.pattern_severity = np.zeros(0, dtype=np.int64)  # max severity per count series
        self.last_fired: dict[tuple, int] = {}
        self._last_rank: dict[tuple, int] = {}  # severity rank of the last finding per key (not persisted)
        # not persisted (a restart starts new groups): service -> (incident key, last finding time ns)
        self._groups: dict[str, tuple[str, int]] = {}
        # service code -> event time of its latest new-pattern finding (a deploy's patterns replace old ones)
        self._last_new: dict[int, int] = {}
        # count column -> first time of a new ERROR pattern reported with too few lines to page (yet)
        self._new_errors: dict[int, int] = {}
        coarsest = max(self.p.resolutions_s)
        self._finest = int(np.argmin(self.p.resolutions_s))
        # severity reported so far for the current latency run of each (series key, direction): a run is
        # reported once, and again only if it escalates
        self.latency_reported: dict[tuple, tuple[int, int]] = {}
        self.res: list[_ResolutionState] = []
        for r in self.p.resolutions_s:
            width = int(round(r * NS))
            max_rows = max(1, int(self.p.max_gap_s // r))
            # only the coarsest resolution runs the trend test: the others keep a minimal ring
            w = max(4, int(round(self.p.trend_window_s / r))) if r == coarsest else 4
            ref = max(2, int(round(self.p.trend_reference_s / r))) if r == coarsest else 2
            self.res.append(_ResolutionState(
                window=BucketWindow(width, int(self.p.allowed_lateness_s * NS), max_rows), step_s=r,
                coarsest=(r == coarsest),
                count_base=det.BaselineState(0, N_SLOTS), count_spot=det.SpotState(0, 64),
                cusum_up=np.zeros(0), cusum_down=np.zeros(0), drop_run=np.zeros(0, dtype=np.int64),
                err_ew_err=np.zeros(0), err_ew_tot=np.zeros(0), err_n=np.zeros(0, dtype=np.int64),
                presence=det.PresenceState(0), trend=trk.TrendState(0, w, ref)))
        self.late_points = 0
        # explain(finding, service code) -> explanation entries; set by the processor
        # (otelproc/anomaly/explain.py), None: findings carry none
        self.explain: Callable[[Finding, int], list[dict]] | None = None
        # correlate(finding, service episode key) -> incident id across services (otelproc/anomaly/incidents.py)
        self.correlate: Callable[[Finding, str], str] | None = None

    # ----------------------------------------------------------------- ingest

    def service_codes(self, names: list[str]) -> np.ndarray:
        """Global code per batch-local service name (int64[len(names)])."""
        out = np.empty(len(names), dtype=np.int64)
        for i, s in enumerate(names):
            code = self._service_code.get(s)
            if code is None:
                code = self._service_code[s] = len(self.services)
                self.services.append(s)
            out[i] = code
        return out

    def ingest(self, event_ns: np.ndarray, service: np.ndarray, pattern: np.ndarray, severity: np.ndarray,
               value_line: np.ndarray, value_ordinal: np.ndarray, value_ms: np.ndarray,
               value_has_unit: np.ndarray | None = None) -> Output:
        """File one batch and run detectors on every bucket that closes.

        event_ns int64[n], service int64[n] (global codes), pattern uint64[n], severity uint8[n];
        value_line int64[m] (row of each duration), value_ordinal int64[m], value_ms float64[m] (ms where
        value_has_unit bool[m], else a number of unknown unit; None = all in ms). A series keeps the kind of
        its first value: values of the other kind are dropped (ms and unknown units do not mix).
        """
        n = len(event_ns)
        zeros = np.zeros(n, dtype=np.uint64)
        cid = self.counts.lookup(service, pattern, np.full(n, -1, dtype=np.int64))
        tid = self.counts.lookup(service, zeros, np.full(n, -1, dtype=np.int64))
        sid = self.service_ids.lookup(service, zeros, np.full(n, -2, dtype=np.int64))
        vid = self.values.lookup(service[value_line], pattern[value_line], value_ordinal.astype(np.int64))
        has_unit = np.ones(len(vid), dtype=np.bool_) if value_has_unit is None else np.asarray(value_has_unit, bool)
        if len(self.values) > len(self.value_unit):
            old = len(self.value_unit)
            self.value_unit = det.grow_rows(self.value_unit, len(self.values), False)
            new = vid >= old
            # the first value of each new series decides its kind
            first = np.unique(vid[new], return_index=True)
            self.value_unit[first[0]] = has_unit[new][first[1]]
        same_kind = self.value_unit[vid] == has_unit
        if not same_kind.all():
            value_line, vid, value_ms = value_line[same_kind], vid[same_kind], value_ms[same_kind]
        self.pattern_severity = det.grow_rows(self.pattern_severity, len(self.counts))
        if n:
            np.maximum.at(self.pattern_severity, cid, severity.astype(np.int64))
        is_err = (severity >= ERROR_SEVERITY).astype(np.float64)
        out = Output()
        for rs in self.res:
            self._grow(rs)
            ok = rs.window.accept_mask(event_ns)
            bucket = event_ns // rs.window.width_ns
            okv = ok[value_line]
            # lines without a pattern (pattern 0) count only towards their service total
            okp = ok & (pattern != 0)
            rs.window.add("count", np.concatenate([bucket[okp], bucket[ok]]), np.concatenate([cid[okp], tid[ok]]),
                          np.full(int(okp.sum()) + int(ok.sum()), np.nan))
            rs.window.add("svc", bucket[ok], sid[ok], is_err[ok])
            rs.window.add("value", bucket[value_line][okv], vid[okv], value_ms[okv])
            if rs.origin_bucket < 0 and rs.window.next_bucket >= 0:
                rs.origin_bucket = rs.window.next_bucket
            self._close(rs, out)
        self.late_points = sum(rs.window.late for rs in self.res)
        return out

    def _grow(self, rs: _ResolutionState) -> None:
        nc, ns_, nv = len(self.counts), len(self.service_ids), len(self.values)
        rs.count_base.grow(nc)
        rs.count_spot.grow(nc)
        rs.presence.grow(nc)
        rs.cusum_up = det.grow_rows(rs.cusum_up, nc, 0.0)
        rs.cusum_down = det.grow_rows(rs.cusum_down, nc, 0.0)
        rs.drop_run = det.grow_rows(rs.drop_run, nc, 0)
        rs.err_ew_err = det.grow_rows(rs.err_ew_err, ns_, 0.0)
        rs.err_ew_tot = det.grow_rows(rs.err_ew_tot, ns_, 0.0)
        rs.err_n = det.grow_rows(rs.err_n, ns_, 0)
        rs.trend.grow(nv)
        self.latency.grow(nv)

    def _close(self, rs: _ResolutionState, out: Output) -> None:
        w = rs.window
        stop = w.closable_until()
        after_gap = False
        while w.next_bucket >= 0 and w.next_bucket < stop:
            start = w.next_bucket
            end = min(stop, start + w.max_rows)
            pts = w.take(start, end)
            has_points = any(len(v[0]) for v in pts.values())
            if not has_points and end - start >= w.max_rows:
                # a silence longer than max_gap: skip it; continuity-based state restarts
                nxt = w.pending_min_bucket()
                w.next_bucket = stop if nxt < 0 else max(end, min(stop, nxt))
                after_gap = True
                continue
            B = end - start
            cb = ClosedBuckets(first_bucket=start, n_rows=B, width_ns=w.width_ns,
                               counts=summed_cells(*pts["count"], B, len(self.counts))[0],
                               service_totals=None, service_errors=None, values={}, after_gap=after_gap,
                               value_points=pts["value"])
            cb.service_totals, cb.service_errors = summed_cells(*pts["svc"], B, len(self.service_ids))
            if rs.coarsest:  # per-bucket value aggregates feed the trend test and the series table only
                cb.values = aggregate_cells(*pts["value"], B, len(self.values), quantiles=True)
            w.next_bucket = end
            self._detect(rs, cb, out)
            after_gap = False

    # ----------------------------------------------------------------- detection

    def _detect(self, rs: _ResolutionState, cb: ClosedBuckets, out: Output) -> None:
        p = self.p
        B = cb.n_rows
        bucket_ns = (cb.first_bucket + np.arange(B, dtype=np.int64)) * cb.width_ns
        slot = (bucket_ns // (3600 * NS)) % N_SLOTS
        step0 = cb.first_bucket - rs.origin_bucket
        warm_steps = int(p.warmup_s / rs.step_s)
        warmup_pts = max(10, warm_steps)
        if cb.after_gap:
            rs.trend.reset()
        res_s = rs.step_s

        # ---- counts: spike / drop / level shift
        c = cb.counts
        x = 2.0 * np.sqrt(c + 0.375)
        # a series does not exist before its first point: no zeros before birth
        if len(self.counts):
            born = rs.count_base.n > 0
            first_row = np.argmax(c > 0, axis=0)
            any_pt = (c > 0).any(axis=0)
            unborn_rows = np.arange(B)[:, None] < np.where(born, 0, np.where(any_pt, first_row, B))[None, :]
            x = np.where(unborn_rows, np.nan, x)
        exp_t, scale_t, z = det.robust_baseline(x, slot, rs.count_base, alpha=p.alpha, gamma=p.season_gamma,
                                                beta=p.beta, huber_c=3.0, min_scale=1.0, warmup=warmup_pts,
                                                season_warmup=int(86400 / res_s), relevel_after=0)
        thr, tail = det.spot_threshold(np.abs(z), rs.count_spot, init_threshold=p.spot_init, q=p.spot_q,
                                       fallback=max(p.min_z, 6.0))
        expected = np.maximum((exp_t / 2.0) ** 2 - 0.375, 0.0)
        lower = np.maximum(((exp_t - p.band_sigmas * scale_t) / 2.0) ** 2 - 0.375, 0.0)
        lower = np.where(exp_t - p.band_sigmas * scale_t <= 0, 0.0, lower)
        upper = ((exp_t + p.band_sigmas * scale_t) / 2.0) ** 2 - 0.375
        score = det.spot_score01(tail, p.spot_q)
        with np.errstate(invalid="ignore"):
            big = (np.abs(z) >= np.maximum(thr, p.min_z)) & (np.abs(c - expected) >= p.min_count_change)
            spike = big & (z > 0) & (c >= p.min_ratio * expected)
            low = big & (z < 0) & (c * p.min_ratio <= expected)
        drop = self._sustained(rs, low, max(1, int(math.ceil(p.drop_min_s / res_s))))
        _, alarm = det.cusum(np.nan_to_num(z), rs.cusum_up, rs.cusum_down, k=p.cusum_k, h=p.cusum_h)
        with np.errstate(invalid="ignore"):
            # a change point of at least the spike/drop ratio: rate wobbles of tens of per cent are not shifts
            shift = (alarm != 0) & ~spike & ~low & (np.abs(c - expected) >= p.min_count_change) & \
                ((c >= p.min_ratio * expected) | (c * p.min_ratio <= expected))
        if len(self.counts):
            spike, drop = self._one_row_per_event(spike, drop, rs)
        # a spike of an ERROR pattern pages only when its size is beyond doubt from its own count: the lower
        # confidence bound of the rate behind c (sqrt(c) has sd 1/2) still clears the spike's least change and
        # ratio. A handful of ERROR lines (a retry burst giving up) is something to look at: warning
        err_cols = (self.pattern_severity >= ERROR_SEVERITY) & (self.counts.pattern != 0)
        with np.errstate(invalid="ignore"):
            c_low = np.maximum(np.sqrt(c) - p.error_confidence_z / 2.0, 0.0) ** 2
            sure = (c_low - expected >= p.min_count_change) & (c_low >= p.min_ratio * expected)
        for mask, sev in ((spike & ~err_cols[None, :], None), (spike & err_cols[None, :] & sure, Severity.CRITICAL),
                          (spike & err_cols[None, :] & ~sure, Severity.WARNING)):
            self._emit(out, rs, bucket_ns, mask, FindingKind.SPIKE, "counts", c, expected, lower, upper, score,
                       severity=sev)
        self._emit(out, rs, bucket_ns, drop, FindingKind.DROP, "counts", c, expected, lower, upper, score)
        self._emit(out, rs, bucket_ns, shift, FindingKind.LEVEL_SHIFT, "counts", c, expected, lower, upper,
                   np.maximum(score, 0.5))

        if rs.coarsest:
            pattern_cols = self.counts.pattern != 0
            ev = det.presence(np.where(pattern_cols[None, :], c, 0.0), step0, rs.presence,
                              warmup_steps=warm_steps, steady_min=p.steady_min,
                              max_dispersion=p.vanish_max_dispersion, vanish_p=p.vanish_p,
                              vanish_min=max(2, int(p.vanish_min_s / res_s)))
            for kind, code in ((FindingKind.NEW_PATTERN, det.EVENT_NEW), (FindingKind.VANISHED_PATTERN,
                               det.EVENT_VANISHED), (FindingKind.RARE_PATTERN, det.EVENT_RARE)):
                mask = (ev == code) & pattern_cols[None, :]
                sc = np.full(c.shape, 0.9 if code != det.EVENT_RARE else 0.6)
                self._emit(out, rs, bucket_ns, mask, kind, "counts", c, expected, lower, upper, sc,
                           silence=rs.presence.zero_run if code == det.EVENT_VANISHED else None)
            if self._new_errors:
                self._new_error_repeats(out, rs, bucket_ns, c, expected, lower, upper)

        # ---- error ratio per service
        if len(self.service_ids):
            tot = np.where(cb.service_totals > 0, cb.service_totals, np.nan)
            zr, ratio, exp_r, logp = det.error_ratio(cb.service_errors, tot, rs.err_ew_err, rs.err_ew_tot, rs.err_n,
                                               alpha=p.alpha / 2, warmup=warmup_pts)
            with np.errstate(invalid="ignore"):
                jump = (zr >= p.error_z) & (logp <= np.log(p.error_p)) & (ratio - exp_r >= p.error_min_jump) & (tot >= p.error_min_total) & \
                    (cb.service_errors >= p.error_min_count)
                sd = np.sqrt(np.maximum(exp_r * (1 - exp_r), 1e-6) / np.maximum(tot, 1))
                sc = np.clip(0.5 + (zr - p.error_z) / (4 * p.error_z), 0, 1)
                # critical when the jump is beyond doubt from the bucket's own sample: the lower confidence bound
                # of its error share (Wilson, error_confidence_z) is still error_min_jump above the baseline; a few
                # ERROR lines in a small bucket (a retry burst giving up) are a warning
                sure = _wilson_low(cb.service_errors, tot, p.error_confidence_z) - exp_r >= p.error_min_jump
            for mask, sev in ((jump & sure, Severity.CRITICAL), (jump & ~sure, Severity.WARNING)):
                self._emit(out, rs, bucket_ns, mask, FindingKind.ERROR_RATIO, "error_ratio", ratio, exp_r,
                           np.maximum(exp_r - p.band_sigmas * sd, 0), np.minimum(exp_r + p.band_sigmas * sd, 1), sc,
                           index=self.service_ids, severity=sev)
            if p.series_table and rs.coarsest:
                self._series_rows(out, bucket_ns, self.service_ids, "error_ratio", res_s, ratio, exp_r,
                                  np.maximum(exp_r - p.band_sigmas * sd, 0), np.minimum(exp_r + p.band_sigmas * sd, 1),
                                  sc)

        # ---- numeric parameters (durations): latency shift (finest resolution) + creep (coarsest)
        if len(self.values):
            if rs is self.res[self._finest]:
                self._latency(rs, cb, bucket_ns, out)
            if rs.coarsest:
                p50 = cb.values["p50"]
                # the band of the series table: the latency baseline's spread of single values
                mu, sd = self.latency.mu[None, :], 1.2533 * np.maximum(self.latency.mad, lat.MIN_SD)[None, :]
                known = self.latency.weight[None, :] > 0
                exp_v = np.where(known, np.exp(mu), np.nan)
                lo_v = np.where(known, np.exp(mu - p.band_sigmas * sd), np.nan)
                hi_v = np.where(known, np.exp(mu + p.band_sigmas * sd), np.nan)
                with np.errstate(divide="ignore", invalid="ignore"):
                    sc_v = np.clip(np.abs(np.log(p50) - mu) / (2 * p.band_sigmas * sd), 0, 1)
                exp_v, lo_v, hi_v, sc_v = (np.broadcast_to(a, p50.shape) for a in (exp_v, lo_v, hi_v, sc_v))
                tr = trk.trend(cb.values["log_tmean"], cb.values["npos"], cb.first_bucket, rs.trend,
                               steps_per_hour=3600.0 / res_s, rate=p.trend_rate, min_t=p.trend_min_t,
                               season_gamma=p.season_gamma, ratio=p.trend_forecast_ratio)
                sc_t = np.clip(np.nan_to_num(tr["rate_per_hour"]) / (4 * p.trend_rate) + 0.5, 0, 1)
                # a creep the data show beyond doubt (t >= trend_critical_t: it has held for a while) is critical
                strong = np.nan_to_num(tr["t"]) >= p.trend_critical_t
                for mask, sev in (((tr["flag"] == 1) & ~strong, Severity.WARNING),
                                  ((tr["flag"] == 1) & strong, Severity.CRITICAL)):
                    self._emit(out, rs, bucket_ns, mask, FindingKind.TREND, "p50", p50, tr["level"], lo_v, hi_v, sc_t,
                               index=self.values, trend=tr, severity=sev)
                if p.series_table:
                    self._series_rows(out, bucket_ns, self.values, "p50", res_s, p50, exp_v, lo_v, hi_v, sc_v)
        if p.series_table and rs.coarsest and len(self.counts):
            totals = np.flatnonzero(self.counts.pattern == 0)
            self._series_rows(out, bucket_ns, self.counts, "log_count", res_s, c[:, totals], expected[:, totals],
                              lower[:, totals], upper[:, totals], score[:, totals], cols=totals)

    def _latency(self, rs: _ResolutionState, cb: ClosedBuckets, bucket_ns: np.ndarray, out: Output) -> None:
        """Latency shift test on the value points of the closed buckets; reports runs that are held."""
        p = self.p
        step = rs.step_s
        row, sid, value = cb.value_points
        res = lat.latency_shift(row, sid, value, cb.first_bucket, cb.n_rows, self.latency,
                                decay=math.exp(-step / p.latency_memory_s),
                                memory_values=2.0 * p.latency_min_history,
                                window=max(1, int(round(p.latency_window_s / step))),
                                min_values=p.latency_min_values, min_weight=p.latency_min_history,
                                warm_buckets=int(p.warmup_s / step), z_min=p.value_z, min_ratio=p.value_min_ratio,
                                relevel_buckets=max(1, int(round(p.latency_relevel_s / step))))
        held = res["run"] * step >= p.latency_min_duration_s
        report = held & ((res["flag"] > 0) | ((res["flag"] < 0) & p.latency_lower))
        rows, cols = np.nonzero(report)
        if len(rows) == 0:
            return
        exp_v = np.exp(res["expected"])
        band = np.exp(p.band_sigmas * res["sd"])
        obs = exp_v * res["ratio"]
        for r, k in zip(rows.tolist(), cols.tolist()):
            ratio = float(res["ratio"][r, k])
            up = ratio > 1
            big = ratio >= p.latency_critical_ratio if up else ratio <= 1 / p.latency_critical_ratio
            held_s = float(res["run"][r, k]) * step
            critical = up and big and held_s >= p.latency_critical_duration_s
            rank = 2 if critical else 1
            t = int(bucket_ns[r])
            run_key = (int(self.values.keys[k]), 1 if up else -1)
            run_start = t - int(res["run"][r, k] - 1) * cb.width_ns
            last_start, last_rank = self.latency_reported.get(run_key, (None, 0))
            if last_start == run_start and rank <= last_rank:
                continue  # this run was reported at this severity already
            self.latency_reported[run_key] = (run_start, rank)
            z = float(res["z"][r, k])
            labels = {"ratio": f"{ratio:.3g}", "z": f"{z:.2f}", "values": str(int(res["n"][r, k])),
                      "held_seconds": f"{held_s:g}", "direction": "up" if up else "down"}
            sev = Severity.CRITICAL if critical else Severity.WARNING
            score = float(np.clip(0.5 + (z - p.value_z) / (4 * p.value_z), 0.5, 1.0)) if up else \
                float(np.clip(0.5 + (-z - p.value_z) / (4 * p.value_z), 0.5, 1.0))
            self._emit(out, rs, bucket_ns, _one_cell(report.shape, r, k), FindingKind.VALUE_ANOMALY, "latency", obs,
                       np.broadcast_to(exp_v, obs.shape), exp_v / band, exp_v * band, np.full(obs.shape, score),
                       index=self.values, severity=sev, extra_labels=labels, cooldown=False)

    def _unit(self, k: int) -> str:
        """Unit of value series k in texts: ms, or none when its values had no unit."""
        return "ms" if self.value_unit[k] else ""

    def _new_error_repeats(self, out: Output, rs: _ResolutionState, bucket_ns, c, expected, lower, upper) -> None:
        """A new ERROR pattern is info at first sight (a rare error line first seen after warm-up, the first
        give-up line of a retry loop: on the tuning seeds of benchmarks/quiet_days.py and incidents.py every
        first-sight warning in nuisance traffic was a false one); when it is present in ``new_error_min_buckets``
        buckets out of its first ``new_error_min_buckets + 2`` it is reported again as critical (a new error
        that keeps coming), in the same incident."""
        B = c.shape[0]
        need = self.p.new_error_min_buckets
        window = (need + 1) * int(rs.step_s * NS)
        lines = np.zeros_like(c)
        fire = np.zeros(c.shape, dtype=bool)
        for k, t0 in list(self._new_errors.items()):
            # at each row: buckets with lines (and lines) since first seen = the totals now less later rows
            later_buckets = np.cumsum((c[::-1, k] > 0))[::-1] - (c[:, k] > 0)
            present = rs.presence.present[k] - later_buckets
            ok = np.flatnonzero((present >= need) & (bucket_ns > t0) & (c[:, k] > 0) & (bucket_ns - t0 <= window))
            if len(ok):
                fire[ok[0], k] = True
                lines[:, k] = rs.presence.total[k] - (np.cumsum(c[::-1, k])[::-1] - c[:, k])
                del self._new_errors[k]
            elif bucket_ns[B - 1] - t0 > window:
                del self._new_errors[k]
        if fire.any():
            self._emit(out, rs, bucket_ns, fire, FindingKind.NEW_PATTERN, "counts", lines, expected, lower, upper,
                       np.full(c.shape, 0.9), severity=Severity.CRITICAL)

    @staticmethod
    def _sustained(rs: _ResolutionState, low: np.ndarray, need: int) -> np.ndarray:
        """True where ``low`` has held for exactly ``need`` consecutive buckets of the series (once per run):
        a restart's silence of a minute or so is not a traffic drop."""
        if low.shape[0] == 0:
            return np.zeros(low.shape, dtype=bool)
        # run length at each row: rows since the last row that was not low (1-based), plus the carried run
        # where every row so far was low (one pass over the rows in numpy, not a Python loop per row)
        row = np.arange(1, low.shape[0] + 1)[:, None]
        last_not_low = np.maximum.accumulate(np.where(low, 0, row), axis=0)
        run = np.where(last_not_low == 0, row + rs.drop_run[None, :], row - last_not_low)
        rs.drop_run[:] = run[-1]
        return run == need

    def _one_row_per_event(self, spike: np.ndarray, drop: np.ndarray, rs: _ResolutionState):
        """One finding row per event: a service whose total dropped does not also get a drop row per pattern
        (they all fell with it), and a spike of one pattern is not repeated on the service total."""
        svc = self.counts.service
        totals = self.counts.pattern == 0
        n_svc = len(self.services)
        if drop.any():
            total_low = np.zeros((drop.shape[0], n_svc), dtype=bool)
            r, k = np.nonzero(drop & totals[None, :])
            total_low[r, svc[k]] = True
            # the total is still in its drop run while patterns reach theirs a bucket later
            in_run = np.zeros(n_svc, dtype=bool)
            in_run[svc[totals & (rs.drop_run > 0)]] = True
            drop = drop & (totals[None, :] | ~(total_low[:, svc] | in_run[svc][None, :]))
        if spike.any():
            pat_spike = np.zeros((spike.shape[0], n_svc), dtype=bool)
            r, k = np.nonzero(spike & ~totals[None, :])
            pat_spike[r, svc[k]] = True
            spike = spike & ~(totals[None, :] & pat_spike[:, svc])
        return spike, drop

    def _severity(self, kind: FindingKind, index: SeriesIndex, k: int, pid: int, t: int, step_s: float,
                  silence: int) -> Severity:
        """What a person should be woken for is critical; ordinary variation is info.

        critical: a new ERROR pattern that keeps coming (reported again by _new_error_repeats), a sustained
        drop of a service's traffic, a pattern with a cadence that vanished without a new pattern replacing it
        (a restart or deploy replaces patterns: info). warning: latency findings. info: the rest (new patterns
        at first sight, ERROR ones too; rare patterns, spikes and shifts of non-error lines, drops of single
        patterns). Error-ratio jumps and ERROR-pattern spikes (critical when their size holds at the
        lower confidence bound of the bucket's sample, else warning) and trends are given their severity
        where they are detected.
        """
        if kind == FindingKind.NEW_PATTERN:
            # at first sight any new pattern is info; a new ERROR pattern pages when it keeps coming (see
            # _new_error_repeats)
            return Severity.INFO
        if kind == FindingKind.DROP:
            return Severity.CRITICAL if pid == 0 else Severity.INFO
        if kind == FindingKind.VANISHED_PATTERN:
            svc = int(index.service[k])
            silence_start = t - silence * int(step_s * NS)
            replaced = self._last_new.get(svc, -1) >= silence_start
            return Severity.INFO if replaced else Severity.CRITICAL
        if kind in (FindingKind.VALUE_ANOMALY, FindingKind.TREND):
            return Severity.WARNING
        return Severity.INFO

    def _incident_key(self, svc: str, t: int) -> str:
        """The finding's group: findings of one service closer than ``cooldown`` in event time share it
        (one incident -> one alert group, whichever detectors saw it)."""
        gap = int(self.p.cooldown_s * NS)
        key, last = self._groups.get(svc, ("", None))
        if last is None or abs(t - last) > gap:
            key = f"{svc}@{_iso(t)}"
        self._groups[svc] = (key, max(t, last) if last is not None else t)
        return key

    # ----------------------------------------------------------------- outputs

    def _series_rows(self, out: Output, bucket_ns, index: SeriesIndex, name: str, res_s: float, obs, exp, lo, hi,
                     score, cols=None) -> None:
        cols = np.arange(obs.shape[1]) if cols is None else cols
        B, S = obs.shape
        has = ~np.isnan(obs)
        r, k = np.nonzero(has)
        if len(r) == 0:
            return
        sids = cols[k]
        svc = np.asarray(self.services, dtype=object)[index.service[sids]]
        ords = index.ordinal[sids]
        if index is self.values:
            names = np.array([f"{name}_ms[{o}]" if u else f"{name}[{o}]" for o, u in
                              zip(ords.tolist(), self.value_unit[sids].tolist())], dtype=object)
        else:
            names = np.array([name if o < 0 else f"{name}[{o}]" for o in ords], dtype=object) if (ords >= 0).any() \
                else np.full(len(r), name, dtype=object)
        s = out.series
        s["time"].append(bucket_ns[r])
        s["service"].append(svc)
        s["pattern_id"].append(index.pattern[sids])
        s["series"].append(names)
        s["resolution_s"].append(np.full(len(r), res_s, dtype=np.float32))
        for col, arr in (("observed", obs), ("expected", exp), ("lower", lo), ("upper", hi), ("score", score)):
            s[col].append(np.asarray(arr[r, k], dtype=np.float64))

    def _emit(self, out: Output, rs: _ResolutionState, bucket_ns, mask, kind: FindingKind, series: str, obs, exp,
              lo, hi, score, index: SeriesIndex | None = None, trend: dict | None = None,
              silence: np.ndarray | None = None, severity: Severity | None = None,
              extra_labels: dict | None = None, cooldown: bool = True) -> None:
        index = index or self.counts
        rows, cols = np.nonzero(mask)
        if len(rows) == 0:
            return
        order = np.lexsort((cols, rows))
        use_cooldown = cooldown
        cooldown = int(self.p.cooldown_s * NS)
        for r, k in zip(rows[order].tolist(), cols[order].tolist()):
            t = int(bucket_ns[r])
            key = (kind.value, series, int(index.keys[k]))
            last = self.last_fired.get(key)
            # within the cooldown only an escalation (a higher explicit severity) is reported again
            rank = _RANK[severity] if severity is not None else 0
            if use_cooldown and last is not None and t - last < cooldown and kind not in (FindingKind.NEW_PATTERN,) \
                    and rank <= self._last_rank.get(key, 0):
                continue
            self.last_fired[key] = t
            self._last_rank[key] = rank
            svc = self.services[int(index.service[k])]
            pid = int(index.pattern[k])
            o, e, l, u = (float(a[r, k]) for a in (obs, exp, lo, hi))
            sc = float(np.nan_to_num(score[r, k], nan=0.5))
            # silent buckets at row r = those at the end of this call less the rows after r
            quiet = max(int(silence[k]) - (len(bucket_ns) - 1 - r), int(self.p.vanish_min_s / rs.step_s)) \
                if silence is not None else 0
            sev = severity or self._severity(kind, index, k, pid, t, rs.step_s, quiet)
            if kind == FindingKind.NEW_PATTERN:
                self._last_new[int(index.service[k])] = max(t, self._last_new.get(int(index.service[k]), t))
                if severity is None and index is self.counts and self.pattern_severity[k] >= ERROR_SEVERITY:
                    self._new_errors[k] = t  # first sight of an ERROR pattern: does it keep coming?
            if _RANK[sev] < self._min_rank:
                continue
            labels = {"resolution": f"{rs.step_s:g}s", "series": series, "incident": self._incident_key(svc, t)}
            unit = ""
            if index is self.values:
                labels["parameter"] = str(int(index.ordinal[k]))
                unit = self._unit(k)
                labels["unit"] = unit or "unknown"
            labels.update(extra_labels or {})
            desc = _describe(kind, svc, pid, o, e, rs.step_s, series, unit, labels)
            if kind == FindingKind.TREND and trend is not None:
                rate = float(trend["rate_per_hour"][r, k])
                tth = float(trend["hours_to_threshold"][r, k])
                ramp_min = float(trend["lag"][r, k]) * rs.step_s / 60.0
                # structured, for dashboards and alert templates (the anomalies table's Labels map)
                labels["slope_pct_per_hour"] = f"{100 * rate:.3f}"
                labels["hours_to_threshold"] = f"{tth:.2f}" if math.isfinite(tth) else "inf"
                labels["t_stat"] = f"{float(trend['t'][r, k]):.2f}"
                labels["ramp_minutes"] = f"{ramp_min:g}"
                desc = (f"{svc}: {series} of pattern {pid:016x} param {int(index.ordinal[k])} creeps "
                        f"{100 * rate:+.1f} %/h over the last {ramp_min:g} min (now {o:.4g}{_sp(unit)})")
                if math.isfinite(tth):
                    desc += f"; {self.p.trend_forecast_ratio:g}x the start level in {tth:.1f} h at this rate"
            sample = self.samples.get(pid, "") if kind in (FindingKind.NEW_PATTERN, FindingKind.RARE_PATTERN) else ""
            f = Finding(time_ns=t, kind=kind, service=svc, score=sc, severity=sev, pattern_id=pid,
                        template=self.templates.get(pid, ""), observed=o, expected=e, lower=l, upper=u,
                        description=desc, sample=sample, labels=labels)
            if self.explain is not None:
                f.explanation = self.explain(f, int(index.service[k]))
            if self.correlate is not None:  # the service's episode may be part of a cross-service incident
                labels["incident"] = self.correlate(f, labels["incident"])
            out.findings.append(f)
            a = out.anomalies
            for col, v in (("time", t), ("service", svc), ("pattern_id", pid), ("kind", kind.value), ("score", sc),
                           ("observed", o), ("expected", e), ("lower", l), ("upper", u), ("severity", sev.value),
                           ("description", desc), ("resolution_s", rs.step_s), ("series", series),
                           ("template", f.template), ("labels", dict(labels)), ("explanation", f.explanation)):
                a[col].append(v)
            out.flagged.append((int(index.service[k]), pid, t, sc))

    # ----------------------------------------------------------------- persistence

    def state(self) -> dict[str, np.ndarray]:
        """Every piece of state as named arrays (no pickles): see :mod:`otelproc.anomaly.persist`."""
        st: dict[str, np.ndarray] = {
            "version": np.array([self.STATE_VERSION], dtype=np.int64),
            "resolutions_s": np.asarray(self.p.resolutions_s, dtype=np.float64),
            "services": np.asarray(self.services, dtype=np.str_) if self.services else np.zeros(0, dtype="<U1"),
            "pattern_severity": self.pattern_severity,
            "template_ids": np.fromiter(self.templates.keys(), dtype=np.uint64, count=len(self.templates)),
            "template_text": np.asarray(list(self.templates.values()), dtype=np.str_) if self.templates
            else np.zeros(0, dtype="<U1"),
        }
        fired = list(self.last_fired.items())
        st["fired.kind"] = np.asarray([k[0] for k, _ in fired], dtype=np.str_) if fired else np.zeros(0, "<U1")
        st["fired.series"] = np.asarray([k[1] for k, _ in fired], dtype=np.str_) if fired else np.zeros(0, "<U1")
        st["fired.key"] = np.asarray([k[2] for k, _ in fired], dtype=np.uint64)
        st["fired.time"] = np.asarray([v for _, v in fired], dtype=np.int64)
        st.update(self.counts.state("counts"))
        st.update(self.values.state("values"))
        st.update(self.service_ids.state("service_ids"))
        st["value_unit"] = self.value_unit
        for f in self.latency.FIELDS:
            st[f"latency.{f}"] = getattr(self.latency, f)
        reported = list(self.latency_reported.items())
        st["latency_reported.key"] = np.asarray([k[0] for k, _ in reported], dtype=np.uint64)
        st["latency_reported.run"] = np.asarray([[k[1], v[0], v[1]] for k, v in reported], dtype=np.int64
                                                ).reshape(-1, 3)
        for i, rs in enumerate(self.res):
            pre = f"res{i}"
            st.update(rs.window.state(f"{pre}.window"))
            st[f"{pre}.origin"] = np.array([rs.origin_bucket], dtype=np.int64)
            for name, obj in (("count_base", rs.count_base), ("count_spot", rs.count_spot),
                              ("presence", rs.presence), ("trend", rs.trend)):
                for f in obj.FIELDS:
                    st[f"{pre}.{name}.{f}"] = getattr(obj, f)
            for f in ("cusum_up", "cusum_down", "drop_run", "err_ew_err", "err_ew_tot", "err_n"):
                st[f"{pre}.{f}"] = getattr(rs, f)
        return st

    def load_state(self, st: dict[str, np.ndarray]) -> None:
        version = int(st["version"][0])
        if version not in (2, 3, 4, 5, self.STATE_VERSION):
            raise ValueError(f"anomaly state version {version} is not supported (expected {self.STATE_VERSION}, "
                             f"or 2, 3, 4, 5)")
        res = tuple(float(x) for x in st["resolutions_s"])
        if res != tuple(float(x) for x in self.p.resolutions_s):
            raise ValueError(f"anomaly state was written for resolutions {res}, configured {self.p.resolutions_s}")
        self.services = [str(s) for s in st["services"]]
        self._service_code = {s: i for i, s in enumerate(self.services)}
        self.pattern_severity = st["pattern_severity"].astype(np.int64)
        self.templates = {int(k): str(v) for k, v in zip(st["template_ids"], st["template_text"])}
        self.last_fired = {(str(k), str(s), int(key)): int(t) for k, s, key, t in
                           zip(st["fired.kind"], st["fired.series"], st["fired.key"], st["fired.time"])}
        self.counts.load("counts", st)
        self.values.load("values", st)
        self.service_ids.load("service_ids", st)
        if version >= 5:
            self.value_unit = st["value_unit"].astype(np.bool_).copy()
            for f in self.latency.FIELDS:
                setattr(self.latency, f, np.ascontiguousarray(st[f"latency.{f}"]).copy())
            self.latency_reported = {(int(key), int(d)): (int(start), int(rank)) for key, (d, start, rank) in
                                     zip(st["latency_reported.key"].tolist(), st["latency_reported.run"].tolist())}
        else:
            # before version 5 every value was read as ms, and the value detector kept other state: the latency
            # baselines start afresh
            self.value_unit = np.ones(len(self.values), dtype=np.bool_)
            self.latency = lat.LatencyState(len(self.values))
        for i, rs in enumerate(self.res):
            pre = f"res{i}"
            rs.window.load(f"{pre}.window", st)
            rs.origin_bucket = int(st[f"{pre}.origin"][0])
            for name, obj in (("count_base", rs.count_base), ("count_spot", rs.count_spot),
                              ("presence", rs.presence), ("trend", rs.trend)):
                for f in obj.FIELDS:
                    key = f"{pre}.{name}.{f}"
                    if version < self.STATE_VERSION and obj in (rs.trend, rs.presence) and key not in st:
                        continue  # written before this field existed: filled in below
                    setattr(obj, f, np.ascontiguousarray(st[key]).copy())
            if version == 2:
                # version 2 kept only the ring (count, loc): start the hour-of-day profile from scratch
                fresh = trk.TrendState(rs.trend.count.shape[0], rs.trend.window, rs.trend.reference)
                for f in fresh.FIELDS:
                    if f not in ("count", "loc"):
                        setattr(rs.trend, f, getattr(fresh, f))
            if version < 4:
                rs.trend.init_load_from_counts()
            if version < 6:
                n = len(rs.presence.total)
                for f in ("gap_sq", "rate", "rate_sq"):
                    setattr(rs.presence, f, np.zeros(n))
                rs.presence.init_moments()
                st = {**st, f"{pre}.drop_run": np.zeros(len(st[f"{pre}.cusum_up"]), dtype=np.int64)}
            for f in ("cusum_up", "cusum_down", "drop_run", "err_ew_err", "err_ew_tot", "err_n"):
                setattr(rs, f, st[f"{pre}.{f}"].copy())


_RANK = {Severity.INFO: 0, Severity.WARNING: 1, Severity.CRITICAL: 2}


def _iso(t_ns: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t_ns // NS))


def _wilson_low(k: np.ndarray, n: np.ndarray, z: float) -> np.ndarray:
    """Lower Wilson score bound of the share k / n at z standard errors (NaN where n is NaN)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        p = k / n
        z2 = z * z
        return (p + z2 / (2 * n) - z * np.sqrt(np.maximum(p * (1 - p), 0.0) / n + z2 / (4 * n * n))) / (1 + z2 / n)


def _one_cell(shape: tuple, r: int, k: int) -> np.ndarray:
    m = np.zeros(shape, dtype=bool)
    m[r, k] = True
    return m


def _sp(unit: str) -> str:
    return f" {unit}" if unit else ""


def _describe(kind: FindingKind, svc: str, pid: int, obs: float, exp: float, step_s: float, series: str,
              unit: str = "", labels: dict | None = None) -> str:
    what = f"pattern {pid:016x}" if pid else "all logs"
    if kind in (FindingKind.SPIKE, FindingKind.DROP, FindingKind.LEVEL_SHIFT):
        verb = {"spike": "spiked to", "drop": "dropped to", "level_shift": "shifted to"}[kind.value]
        return f"{svc}: {what} {verb} {obs:.0f} per {step_s:g}s (expected {exp:.1f})"
    if kind == FindingKind.NEW_PATTERN:
        return f"{svc}: new pattern {pid:016x} appeared ({obs:.0f} lines in {step_s:g}s)"
    if kind == FindingKind.VANISHED_PATTERN:
        return f"{svc}: steady {what} stopped (expected about {exp:.1f} per {step_s:g}s)"
    if kind == FindingKind.RARE_PATTERN:
        return f"{svc}: rare pattern {pid:016x} seen again"
    if kind == FindingKind.ERROR_RATIO:
        return f"{svc}: error ratio {100 * obs:.1f} % (expected {100 * exp:.1f} %)"
    if kind == FindingKind.VALUE_ANOMALY:
        labels = labels or {}
        how = f" x{float(labels['ratio']):.2g} for {labels['held_seconds']} s" if "ratio" in labels else ""
        return (f"{svc}: {series} of {what} param {labels.get('parameter', '?')} is {obs:.4g}{_sp(unit)}{how} "
                f"(usual {exp:.4g}{_sp(unit)})")
    return f"{svc}: {kind.value} on {what}"
