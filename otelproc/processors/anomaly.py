"""The ``anomaly`` processor: streaming anomaly detection on log series.

Runs after ``patterns`` (it reads ``columns["pattern_id"]`` and, when present,
``columns["pattern_template"]``). Per event-time bucket (default 10 s and 1 min,
watermark = max event time - ``allowed_lateness``; later points are counted in
``otelproc_processor_anomaly_late_records`` and dropped) it keeps:

* lines per (service, pattern) and per service,
* the error ratio per service (severity_number >= 17),
* durations after took/latency/duration/elapsed/time/in with their units (ns, us, ms, s, m, h, Go's
  ``1m30s``, or the key's suffix ``latency_ms`` / ``duration_seconds``; normalised to ms; a number
  without a unit is kept as written, its unit unknown)
  per (service, pattern, parameter position): with the patterns processor's
  ``pattern_template`` (a DictStringArray) and ``pattern_params`` columns, decided once
  per distinct template and parsed from that parameter only
  (:func:`otelproc.kernels.series.durations_from_params`), else by scanning every body,

and when buckets close runs the detectors of ``otelproc/kernels`` over all
series at once. It adds to the batch:

* ``tables["anomalies"]``  one row per finding (see ``store/sql/anomalies.sql``),
* ``tables["series"]``     observed value and expected band per closed bucket,
* ``findings``             :class:`otelproc.findings.Finding` for the alerting engine,
* ``columns["anomaly_score"]`` float32[n]: the score of the finding about the row's
  (service, pattern) when one fired in this batch for a bucket at or before the row, else 0.

Detection uses event time only: a replay gives the findings live traffic gave.
State (series ids, baselines, tail models, open buckets) is saved as versioned
arrays in ``state_dir`` every ``checkpoint_every`` batches and at shutdown, and
loaded at start, so a restart continues where it stopped.

Example::

    processors:
      anomaly:
        resolutions: [10s, 1m]
        allowed_lateness: 30s
        state_dir: /var/lib/otelproc/anomaly
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from otelproc.anomaly.engine import AnomalyEngine, EngineParams, Output
from otelproc.anomaly.persist import load_state, save_state
from otelproc.batch import DictStringArray, LogBatch, StringArray
from otelproc.component import Consumer, Context, Factory, Kind, Processor
from otelproc.config import Duration
from otelproc.kernels.series import (DurationPlan, Durations, distinct_first_rows, duration_plan,
                                      durations_from_params, extract_durations)

log = logging.getLogger("otelproc.processors.anomaly")

# the defaults are the engine's (one place): the YAML keys below are its settings in config units
_DEFAULTS = EngineParams()
DEFAULT_RESOLUTIONS = tuple(Duration(r) for r in _DEFAULTS.resolutions_s)
DEFAULT_CHECKPOINT_EVERY = 200

ANOMALIES_SCHEMA = pa.schema([
    ("Timestamp", pa.timestamp("ns")), ("ServiceName", pa.string()), ("PatternId", pa.uint64()),
    ("Kind", pa.string()), ("Score", pa.float32()), ("Observed", pa.float64()), ("Expected", pa.float64()),
    ("Lower", pa.float64()), ("Upper", pa.float64()), ("Severity", pa.string()), ("Description", pa.string()),
    ("ResolutionSeconds", pa.float32()), ("Series", pa.string()), ("Template", pa.string()),
    ("Labels", pa.map_(pa.string(), pa.string())),
])
SERIES_SCHEMA = pa.schema([
    ("Timestamp", pa.timestamp("ns")), ("ServiceName", pa.string()), ("PatternId", pa.uint64()),
    ("Series", pa.string()), ("ResolutionSeconds", pa.float32()), ("Observed", pa.float64()),
    ("Expected", pa.float64()), ("Lower", pa.float64()), ("Upper", pa.float64()), ("Score", pa.float32()),
])
_ANOMALY_SRC = ("time", "service", "pattern_id", "kind", "score", "observed", "expected", "lower", "upper",
                "severity", "description", "resolution_s", "series", "template", "labels")
_SERIES_SRC = ("time", "service", "pattern_id", "series", "resolution_s", "observed", "expected", "lower", "upper",
               "score")


@dataclass
class AnomalyProcessorConfig:
    # bucket widths of the series (each runs the count / error detectors; the longest also
    # runs pattern presence and the trend detector)
    resolutions: list[Duration] = field(default_factory=lambda: list(DEFAULT_RESOLUTIONS))
    # how long after a bucket's end points may still arrive (event time); later ones are dropped
    allowed_lateness: Duration = Duration(_DEFAULTS.allowed_lateness_s)
    # event time before detectors report (baselines learn); a pattern first seen later is "new"
    warmup: Duration = Duration(_DEFAULTS.warmup_s)
    # the same finding (kind, series) is reported at most once per cooldown
    cooldown: Duration = Duration(_DEFAULTS.cooldown_s)
    # a silence of the whole stream longer than this is a gap, not zero traffic
    max_gap: Duration = Duration(_DEFAULTS.max_gap_s)
    # target false-alarm probability per point of the SPOT thresholds
    spot_q: float = _DEFAULTS.spot_q
    # robust z a count must reach (on top of the SPOT threshold) for spike / drop
    min_z: float = _DEFAULTS.min_z
    # a spike / drop must change the count by at least this many lines per bucket ...
    min_count_change: float = _DEFAULTS.min_count_change
    # ... and by this factor against the expectation
    min_ratio: float = _DEFAULTS.min_ratio
    # error ratio: binomial z needed, and the least absolute jump of the ratio (0.05 = 5 points)
    error_z: float = _DEFAULTS.error_z
    error_min_jump: float = _DEFAULTS.error_min_jump
    # error ratio: least number of error lines in the bucket (small buckets are noisy)
    error_min_count: float = _DEFAULTS.error_min_count
    # error ratio: Poisson probability of at least the observed errors under the baseline must be below this
    error_p: float = _DEFAULTS.error_p
    # error ratio / ERROR-pattern spike: critical when the jump's size still holds at the lower confidence
    # bound of the bucket's own sample (this many standard errors), else a warning (a few ERROR lines)
    error_confidence_z: float = _DEFAULTS.error_confidence_z
    # latency shift (value anomaly): z of the window's location against the series' baseline, with its
    # standard error from the number of values and the series' own dispersion
    value_z: float = _DEFAULTS.value_z
    # ... and the least ratio of the window's location to the baseline
    value_min_ratio: float = _DEFAULTS.value_min_ratio
    # a shift is reported once it has held this long (event time); critical from latency_critical_ratio held
    # for latency_critical_duration, else warning
    latency_min_duration: Duration = Duration(_DEFAULTS.latency_min_duration_s)
    latency_critical_ratio: float = _DEFAULTS.latency_critical_ratio
    latency_critical_duration: Duration = Duration(_DEFAULTS.latency_critical_duration_s)
    # the pooled window of a series' last values reaches back this far and needs latency_min_values values
    latency_window: Duration = Duration(_DEFAULTS.latency_window_s)
    latency_min_values: int = _DEFAULTS.latency_min_values
    # memory of the latency baseline (event time), and the (decayed) values it needs before a series is tested
    latency_memory: Duration = Duration(_DEFAULTS.latency_memory_s)
    latency_min_history: float = _DEFAULTS.latency_min_history
    # a shift held this long becomes the new baseline
    latency_relevel: Duration = Duration(_DEFAULTS.latency_relevel_s)
    # report lower-than-usual latency as well (faster is not an incident by default)
    latency_lower: bool = _DEFAULTS.latency_lower
    # trend: relative creep per hour to flag; a ramp that started up to trend_window ago is tested
    trend_rate: float = _DEFAULTS.trend_rate
    trend_window: Duration = Duration(_DEFAULTS.trend_window_s)
    # trend: the level before the ramp is learnt from this much history (longer = more power)
    trend_reference: Duration = Duration(_DEFAULTS.trend_reference_s)
    # trend: t statistic of the ramp slope needed (false-alarm guard; 4 = ~1e-3 false trends per
    # series-hour of flat noise)
    trend_min_t: float = _DEFAULTS.trend_min_t
    # trend: a creep is a warning (something to look at); critical from this t statistic of its slope on
    # only if set (.inf = never)
    trend_critical_t: float = _DEFAULTS.trend_critical_t
    # trend: forecast the time until the level reaches this multiple of the window-start level
    trend_forecast_ratio: float = _DEFAULTS.trend_forecast_ratio
    # vanished pattern: only a pattern with a cadence (heartbeat, periodic job, busy line) can vanish, when
    # the probability of its silence under its own rate and dispersion falls below vanish_p, and not
    # before vanish_min
    vanish_p: float = _DEFAULTS.vanish_p
    vanish_min: Duration = Duration(_DEFAULTS.vanish_min_s)
    # a drop of a service's lines must last this long (a restart's silence is not a traffic drop)
    drop_min: Duration = Duration(_DEFAULTS.drop_min_s)
    # write expected bands to the "series" table
    series_table: bool = _DEFAULTS.series_table
    # findings below this severity (info, warning, critical) are not reported: no anomalies row, nothing to
    # alerting. info is ordinary variation (new / rare non-error patterns, spikes and shifts of non-error
    # lines); new patterns stay in the patterns table. Set info to store those too
    min_severity_stored: str = _DEFAULTS.min_severity_stored
    # directory for persisted detector state; empty = keep state in memory only
    state_dir: str = ""
    # save state every this many batches (and at shutdown)
    checkpoint_every: int = DEFAULT_CHECKPOINT_EVERY

    def validate(self) -> list[str]:
        out = []
        if not self.resolutions:
            out.append("resolutions: at least one bucket width is required, e.g. [10s, 1m]")
        for i, r in enumerate(self.resolutions):
            if r is None or r <= 0:
                out.append(f"resolutions[{i}]: must be > 0, got {r}")
        if len(set(self.resolutions)) != len(self.resolutions):
            out.append(f"resolutions: must be distinct, got {list(self.resolutions)}")
        for key in ("allowed_lateness", "warmup", "cooldown"):
            v = getattr(self, key)
            if v is None or v < 0:
                out.append(f"{key}: must be >= 0, got {v}")
        for key in ("max_gap", "trend_window", "trend_reference", "vanish_min", "drop_min", "latency_window",
                    "latency_memory", "latency_relevel"):
            v = getattr(self, key)
            if v is None or v <= 0:
                out.append(f"{key}: must be > 0, got {v}")
        if not (0 < self.spot_q < 0.5):
            out.append(f"spot_q: must be in (0, 0.5), got {self.spot_q}")
        for key in ("min_z", "error_z", "value_z", "trend_min_t", "min_count_change", "error_confidence_z"):
            if getattr(self, key) < 0:
                out.append(f"{key}: must be >= 0, got {getattr(self, key)}")
        if self.min_ratio < 1:
            out.append(f"min_ratio: must be >= 1, got {self.min_ratio}")
        for key in ("value_min_ratio", "latency_critical_ratio"):
            if getattr(self, key) < 1:
                out.append(f"{key}: must be >= 1 (a ratio to the usual latency), got {getattr(self, key)}")
        for key in ("latency_min_duration", "latency_critical_duration"):
            if getattr(self, key) is None or getattr(self, key) < 0:
                out.append(f"{key}: must be >= 0, got {getattr(self, key)}")
        if self.latency_min_values < 2:
            out.append(f"latency_min_values: must be >= 2, got {self.latency_min_values}")
        if self.latency_min_history < 0:
            out.append(f"latency_min_history: must be >= 0, got {self.latency_min_history}")
        if not (0 < self.error_p < 1):
            out.append(f"error_p: must be in (0, 1), got {self.error_p}")
        if not (0 <= self.error_min_jump <= 1):
            out.append(f"error_min_jump: must be in [0, 1], got {self.error_min_jump}")
        if self.trend_rate <= 0:
            out.append(f"trend_rate: must be > 0 (0.02 = 2 %/hour), got {self.trend_rate}")
        if self.trend_forecast_ratio <= 1:
            out.append(f"trend_forecast_ratio: must be > 1, got {self.trend_forecast_ratio}")
        if not (0 < self.vanish_p < 1):
            out.append(f"vanish_p: must be in (0, 1), got {self.vanish_p}")
        if self.min_severity_stored not in ("info", "warning", "critical"):
            out.append(f"min_severity_stored: must be info, warning or critical, got {self.min_severity_stored!r}")
        if self.checkpoint_every < 1:
            out.append(f"checkpoint_every: must be >= 1, got {self.checkpoint_every}")
        if self.resolutions and all(r and r > 0 for r in self.resolutions) and self.trend_window \
                and self.trend_window < 4 * max(self.resolutions):
            out.append(f"trend_window: must cover >= 4 buckets of {max(self.resolutions)}s, got {self.trend_window}s")
        if self.resolutions and all(r and r > 0 for r in self.resolutions) and self.trend_window \
                and self.trend_reference and (self.trend_window + self.trend_reference) / max(self.resolutions) > 2000:
            out.append(f"trend_reference: trend_window + trend_reference must span <= 2000 buckets of "
                       f"{max(self.resolutions)}s (state per series), got {self.trend_window + self.trend_reference}s")
        return out

    def engine_params(self) -> EngineParams:
        return EngineParams(
            resolutions_s=tuple(float(r) for r in self.resolutions), allowed_lateness_s=float(self.allowed_lateness),
            max_gap_s=float(self.max_gap), warmup_s=float(self.warmup), cooldown_s=float(self.cooldown),
            spot_q=self.spot_q, min_z=self.min_z, min_count_change=self.min_count_change, min_ratio=self.min_ratio,
            error_z=self.error_z, error_min_jump=self.error_min_jump, error_min_count=self.error_min_count,
            error_p=self.error_p, error_confidence_z=self.error_confidence_z, value_z=self.value_z,
            value_min_ratio=self.value_min_ratio,
            latency_min_duration_s=float(self.latency_min_duration), latency_critical_ratio=self.latency_critical_ratio,
            latency_critical_duration_s=float(self.latency_critical_duration),
            latency_window_s=float(self.latency_window), latency_min_values=self.latency_min_values,
            latency_memory_s=float(self.latency_memory), latency_min_history=self.latency_min_history,
            latency_relevel_s=float(self.latency_relevel), latency_lower=self.latency_lower,
            trend_rate=self.trend_rate, trend_window_s=float(self.trend_window),
            trend_reference_s=float(self.trend_reference), trend_min_t=self.trend_min_t,
            trend_forecast_ratio=self.trend_forecast_ratio, trend_critical_t=self.trend_critical_t,
            vanish_p=self.vanish_p, vanish_min_s=float(self.vanish_min), drop_min_s=float(self.drop_min),
            series_table=self.series_table, min_severity_stored=self.min_severity_stored)


class AnomalyProcessor(Processor):
    def __init__(self, name: str, config: AnomalyProcessorConfig, next_consumer: Consumer, context: Context | None):
        super().__init__(name, next_consumer)
        self.config = config
        self.engine = AnomalyEngine(config.engine_params())
        self._lock = threading.Lock()
        self._batches = 0
        self._started = False
        self._stopped = False
        t = context.telemetry if context is not None else None
        lbl = ("processor",)
        self._m_late = t.counter("otelproc_processor_anomaly_late_records",
                                 "Records dropped because their bucket had closed (beyond allowed_lateness)",
                                 lbl) if t else None
        self._m_found = t.counter("otelproc_processor_anomaly_findings", "Findings emitted", ("processor", "kind")) \
            if t else None
        self._m_series = t.gauge("otelproc_processor_anomaly_series", "Series tracked", lbl) if t else None
        self._late_reported = 0
        # the duration plan of the last template dictionary seen (the patterns processor keeps one
        # dictionary object until a template changes, so this is computed once per change, not per batch)
        self._plan_dictionary: StringArray | None = None
        self._plan: DurationPlan | None = None

    def start(self) -> None:
        if self.config.state_dir:
            st = load_state(self.config.state_dir)
            if st is not None:
                self.engine.load_state(st)
                log.info("%s: restored anomaly state from %s (%d count series)", self.name, self.config.state_dir,
                         len(self.engine.counts))
        self._started = True

    def consume(self, batch: LogBatch) -> None:
        with self._lock:
            out_batch = self._process(batch)
            self._batches += 1
            if self.config.state_dir and self._batches % self.config.checkpoint_every == 0:
                save_state(self.config.state_dir, self.engine.state(), reason=f"every {self.config.checkpoint_every} batches")
        self.next_consumer.consume(out_batch)

    def _process(self, batch: LogBatch) -> LogBatch:
        n = len(batch)
        eng = self.engine
        codes = eng.service_codes(list(batch.services))
        service = codes[batch.service_index] if n else np.zeros(0, dtype=np.int64)
        pattern = batch.columns.get("pattern_id")
        if pattern is None:
            pattern = np.zeros(n, dtype=np.uint64)
        pattern = np.asarray(pattern, dtype=np.uint64)
        self._learn_templates(batch, pattern)
        d = self._durations(batch)
        out = eng.ingest(batch.event_ns.astype(np.int64), service, pattern, batch.severity_number, d.line,
                         d.ordinal.astype(np.int64), d.value, d.has_unit)
        late = eng.late_points
        if self._m_late is not None:
            if late > self._late_reported:
                self._m_late.labels(self.name).inc(late - self._late_reported)
            self._m_series.labels(self.name).set(len(eng.counts) + len(eng.values) + len(eng.service_ids))
            for f in out.findings:
                self._m_found.labels(self.name, f.kind.value).inc()
        self._late_reported = late
        score = self._row_scores(out, batch.event_ns, service, pattern)
        result = batch.with_columns(anomaly_score=score)
        if out.anomalies["time"]:
            result = result.with_table("anomalies", _anomalies_table(out))
        if out.series["time"]:
            result = result.with_table("series", _series_table(out))
        if out.findings:
            result = result.with_findings(out.findings)
        return result

    def _durations(self, batch: LogBatch) -> Durations:
        """The durations in the batch (line, ordinal, value, has_unit).

        With the patterns processor's columns, where a template's durations are is decided once per
        distinct template and only those parameters are parsed per line (bodies are read only for
        templates that cannot tell); without them, every body is scanned.
        """
        n = len(batch)
        tmpl = batch.columns.get("pattern_template")
        params = batch.columns.get("pattern_params")
        if isinstance(tmpl, DictStringArray) and isinstance(params, StringArray) and len(tmpl) == n \
                and len(params) == n:
            if tmpl.dictionary is not self._plan_dictionary or self._plan is None:
                self._plan = duration_plan(tmpl.dictionary.buf, tmpl.dictionary.off)
                self._plan_dictionary = tmpl.dictionary
            return durations_from_params(tmpl.codes, self._plan, params.buf, params.off, batch.body.buf,
                                         batch.body.off)
        return extract_durations(batch.body.buf, batch.body.off)

    def _learn_templates(self, batch: LogBatch, pattern: np.ndarray) -> None:
        if len(pattern) == 0:
            return
        tmpl = batch.columns.get("pattern_template")
        first = distinct_first_rows(pattern)
        # in pattern id order, as before (the order the dictionaries fill in is saved with the state)
        first = first[np.argsort(pattern[first], kind="stable")]
        known, samples = self.engine.templates, self.engine.samples
        has_tmpl = isinstance(tmpl, StringArray)
        for pid, i in zip(pattern[first].tolist(), first.tolist()):  # one per distinct pattern, not per line
            if pid not in samples:
                # the first body of a pattern: new-pattern findings (and the alerts about them) show it
                samples[pid] = batch.body[i][:1000]
            if has_tmpl and pid not in known:
                known[pid] = tmpl[i]

    @staticmethod
    def _row_scores(out: Output, event_ns: np.ndarray, service: np.ndarray, pattern: np.ndarray) -> np.ndarray:
        score = np.zeros(len(event_ns), dtype=np.float32)
        for svc, pid, t, sc in out.flagged:  # one pass per finding (few per batch)
            m = (service == svc) & (event_ns >= t)
            if pid:
                m &= pattern == np.uint64(pid)
            np.maximum(score, np.float32(sc), out=score, where=m)
        return score

    def shutdown(self) -> None:
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            if self._started and self.config.state_dir:
                save_state(self.config.state_dir, self.engine.state(), reason="shutdown")


def _anomalies_table(out: Output) -> pa.Table:
    a = out.anomalies
    cols = [pa.array([list(d.items()) for d in a[src]] if src == "labels" else a[src], type=f.type)
            for src, f in zip(_ANOMALY_SRC, ANOMALIES_SCHEMA)]
    return pa.Table.from_arrays(cols, schema=ANOMALIES_SCHEMA)


def _series_table(out: Output) -> pa.Table:
    s = out.series
    cols = []
    for src, f in zip(_SERIES_SRC, SERIES_SCHEMA):
        v = np.concatenate(s[src])
        if src in ("service", "series"):
            cols.append(pa.array(v.tolist(), type=f.type))
        else:
            cols.append(pa.array(v.astype(f.type.to_pandas_dtype()) if src != "time" else v, type=f.type))
    return pa.Table.from_arrays(cols, schema=SERIES_SCHEMA)


def _create(name: str, config: AnomalyProcessorConfig, next_consumer: Consumer, context: Context) -> AnomalyProcessor:
    return AnomalyProcessor(name, config, next_consumer, context)


factory = Factory(type="anomaly", kind=Kind.PROCESSOR, config_class=AnomalyProcessorConfig, create=_create,
                  stability="alpha")
