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
from dataclasses import dataclass, fields

import numpy as np
import pyarrow as pa

from otelproc.anomaly.engine import AnomalyEngine, EngineParams, Output
from otelproc.anomaly.explain import ExplainParams, Explainer
from otelproc.anomaly.incidents import INCIDENT_COLUMNS, Correlator
from otelproc.anomaly.persist import load_state, save_state
from otelproc.batch import DictStringArray, LogBatch, StringArray
from otelproc.component import Consumer, Context, Factory, Kind, Processor
from otelproc.config import setting
from otelproc.kernels.series import (DurationPlan, Durations, distinct_first_rows, duration_plan,
                                      durations_from_params, extract_durations)

log = logging.getLogger("otelproc.processors.anomaly")

DEFAULT_CHECKPOINT_EVERY = 200

ANOMALIES_SCHEMA = pa.schema([
    ("Timestamp", pa.timestamp("ns")), ("ServiceName", pa.string()), ("PatternId", pa.uint64()),
    ("Kind", pa.string()), ("Score", pa.float32()), ("Observed", pa.float64()), ("Expected", pa.float64()),
    ("Lower", pa.float64()), ("Upper", pa.float64()), ("Severity", pa.string()), ("Description", pa.string()),
    ("ResolutionSeconds", pa.float32()), ("Series", pa.string()), ("Template", pa.string()),
    ("Labels", pa.map_(pa.string(), pa.string())),
    ("Explanation", pa.list_(pa.struct([
        ("Attribute", pa.string()), ("Value", pa.string()), ("Count", pa.float64()), ("BaselineCount", pa.float64()),
        ("Share", pa.float64()), ("BaselineShare", pa.float64()), ("Lift", pa.float64()), ("Log10P", pa.float64()),
        ("Also", pa.list_(pa.string())), ("Population", pa.string())]))),
])
# explanation entry key -> Explanation tuple field (one place: the table and the entries agree)
_EXPLANATION_FIELDS = (("attribute", "Attribute"), ("value", "Value"), ("count", "Count"),
                       ("baseline_count", "BaselineCount"), ("share", "Share"), ("baseline_share", "BaselineShare"),
                       ("lift", "Lift"), ("log10_p", "Log10P"), ("also", "Also"), ("population", "Population"))
SERIES_SCHEMA = pa.schema([
    ("Timestamp", pa.timestamp("ns")), ("ServiceName", pa.string()), ("PatternId", pa.uint64()),
    ("Series", pa.string()), ("ResolutionSeconds", pa.float32()), ("Observed", pa.float64()),
    ("Expected", pa.float64()), ("Lower", pa.float64()), ("Upper", pa.float64()), ("Score", pa.float32()),
])
_ANOMALY_SRC = ("time", "service", "pattern_id", "kind", "score", "observed", "expected", "lower", "upper",
                "severity", "description", "resolution_s", "series", "template", "labels", "explanation")
_SERIES_SRC = ("time", "service", "pattern_id", "series", "resolution_s", "observed", "expected", "lower", "upper",
               "score")


@dataclass
class AnomalyProcessorConfig(EngineParams):
    """The engine's parameters (their YAML keys, units and bounds are declared on EngineParams) and where
    the processor keeps its state."""

    # explain spike, drop, level-shift, new / rare pattern and error-ratio findings by the attribute values
    # and patterns whose share in the finding's bucket differs most from before (otelproc/anomaly/explain.py)
    explain: bool = True
    # ... an attribute value is named when the Bonferroni-adjusted p of its share change is at most this
    explain_p: float = setting(1e-4, gt=0, lt=1)
    # group findings of several services close in time (within cooldown) into one incident with a probable
    # origin (otelproc/anomaly/incidents.py): the `incident` label and the "incidents" table
    incidents: bool = True
    # directory for persisted detector state; empty = keep state in memory only
    state_dir: str = ""
    # save state every this many batches (and at shutdown)
    checkpoint_every: int = setting(DEFAULT_CHECKPOINT_EVERY, ge=1)

    def validate(self) -> list[str]:
        """What involves several keys (single keys' bounds are checked by the decoder)."""
        out = []
        res = self.resolutions_s
        if not res:
            out.append("resolutions: at least one bucket width is required, e.g. [10s, 1m]")
        for i, r in enumerate(res):
            if r is None or r <= 0:
                out.append(f"resolutions[{i}]: must be > 0, got {r}")
        if len(set(res)) != len(res):
            out.append(f"resolutions: must be distinct, got {list(res)}")
        if res and all(r and r > 0 for r in res):
            coarsest = max(res)
            if self.trend_window_s < 4 * coarsest:
                out.append(f"trend_window: must cover >= 4 buckets of {coarsest}s, got {self.trend_window_s}s")
            if (self.trend_window_s + self.trend_reference_s) / coarsest > 2000:
                out.append(f"trend_reference: trend_window + trend_reference must span <= 2000 buckets of "
                           f"{coarsest}s (state per series), got {self.trend_window_s + self.trend_reference_s}s")
        return out

    def engine_params(self) -> EngineParams:
        return EngineParams(**{f.name: getattr(self, f.name) for f in fields(EngineParams)})


class AnomalyProcessor(Processor):
    def __init__(self, name: str, config: AnomalyProcessorConfig, next_consumer: Consumer, context: Context | None):
        super().__init__(name, next_consumer)
        self.config = config
        self.engine = AnomalyEngine(config.engine_params())
        self.explainer: Explainer | None = None
        if config.explain:
            res = [float(r) for r in config.resolutions_s]
            self.explainer = Explainer(ExplainParams(slot_s=min(res), p=config.explain_p,
                                                     horizon_s=float(config.allowed_lateness_s) + max(res)))
            self.engine.explain = self.explainer.explain
        self.correlator: Correlator | None = None
        if config.incidents:
            self.correlator = Correlator(gap_s=float(config.cooldown_s))
            self.engine.correlate = self.correlator.incident_of
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
        event_ns = batch.event_ns.astype(np.int64)
        if self.explainer is not None:
            self.explainer.add(event_ns, service, pattern, batch.severity_number, batch.resource_index,
                               batch.resource_attrs, batch.log_attrs)
        if self.correlator is not None and n:
            self.correlator.graph.add(list(batch.services), batch.service_index, batch.log_attrs, batch.trace_id,
                                      event_ns)
        out = eng.ingest(event_ns, service, pattern, batch.severity_number, d.line,
                         d.ordinal.astype(np.int64), d.value, d.has_unit)
        if self.explainer is not None:
            self.explainer.advance()
        late = eng.late_points
        if self._m_late is not None:
            if late > self._late_reported:
                self._m_late.labels(self.name).inc(late - self._late_reported)
            self._m_series.labels(self.name).set(len(eng.counts) + len(eng.values) + len(eng.service_ids))
            for f in out.findings:
                self._m_found.labels(self.name, f.kind.value).inc()
        self._late_reported = late
        score = self._row_scores(out, event_ns, service, pattern)
        result = batch.with_columns(anomaly_score=score)
        if out.anomalies["time"]:
            result = result.with_table("anomalies", _anomalies_table(out))
        if out.series["time"]:
            result = result.with_table("series", _series_table(out))
        if self.correlator is not None:
            rows = self.correlator.take_rows()
            if rows["incident"]:
                result = result.with_table("incidents", _incidents_table(rows))
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
    cols = [pa.array([list(d.items()) for d in a[src]] if src == "labels" else
                     [[{col: e[key] for key, col in _EXPLANATION_FIELDS} for e in x] for x in a[src]]
                     if src == "explanation" else a[src], type=f.type)
            for src, f in zip(_ANOMALY_SRC, ANOMALIES_SCHEMA)]
    return pa.Table.from_arrays(cols, schema=ANOMALIES_SCHEMA)


INCIDENTS_SCHEMA = pa.schema([
    ("IncidentId", pa.string()), ("Start", pa.timestamp("ns")), ("Updated", pa.timestamp("ns")),
    ("Origin", pa.string()), ("OriginReason", pa.string()), ("Services", pa.list_(pa.string())),
    ("Chain", pa.list_(pa.struct([("Service", pa.string()), ("Onset", pa.timestamp("ns")),
                                  ("FirstKind", pa.string()), ("Severity", pa.string())]))),
    ("Findings", pa.uint32()), ("Severity", pa.string()), ("Version", pa.uint64()),
])


def _incidents_table(rows: dict[str, list]) -> pa.Table:
    chain_fields = [f.name for f in INCIDENTS_SCHEMA.field("Chain").type.value_type]
    cols = [pa.array([[dict(zip(chain_fields, c)) for c in ch] for ch in rows[src]] if src == "chain" else rows[src],
                     type=f.type) for src, f in zip(INCIDENT_COLUMNS, INCIDENTS_SCHEMA)]
    return pa.Table.from_arrays(cols, schema=INCIDENTS_SCHEMA)


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
