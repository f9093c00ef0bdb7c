"""The ``patterns`` processor: a template and a stable pattern id for every log line.

    processors:
      patterns:
        state_dir: ./data/patterns        # where the miner state is saved ("" = in memory only)
        max_patterns_per_service: 5000     # cap; least recently seen patterns are evicted
        similarity: 0.7                    # Drain-like merge threshold of the miner
        min_distinct: 3                    # distinct values a position needs before it becomes <*>
        max_repeat: 100                    # values that all recur more often than this on average are categorical
        min_constant_lines: 2              # lines a masked name must show unchanged before the template shows it
        message_fields: [msg, message, log, event]   # JSON / kvlist / logfmt bodies are mined on this field
        trace_frames: 3                    # stack traces are mined on their exception and this many top frames
        masking:                           # user masking rules, applied in order before mining (Drain3's masking)
          - regex: 'order-[0-9a-f]{8}'
            name: ORDER                    # a match becomes <ORDER> in the template
        pinned_templates:                  # a body matching one of these belongs to it, whatever mining says
          - "payment <*> declined: <*>"
        snapshot_interval: 60s             # also saved on shutdown

consume(batch) (ONE caller thread) runs :class:`otelproc.patterns.PatternMiner` over the
bodies and passes on the batch with:

* columns ``pattern_id`` (uint64), ``pattern_template`` (a DictStringArray: codes into the
  miner's distinct templates; the store sends it as an Arrow dictionary for LowCardinality)
  and ``pattern_params`` (StringArray, each parameter followed by 0x1f: the layout of
  otelproc.store.arrow);
* table ``log_patterns``: one delta row per pattern seen in the batch (count, first/last
  seen, a sample body, severity mix, aliases); ``pattern_counts``: per minute, service,
  pattern and severity.

It emits no findings: ``NEW_PATTERN`` findings come from the ``anomaly`` processor, which
judges "new" against its event-time warm-up (a replay after a restart does not re-announce
the vocabulary) and knows the pattern's severity, so alerting sees one finding per new pattern.

Metrics: otelproc_patterns_lines_total{processor}, otelproc_patterns_created_total{processor},
otelproc_patterns_active{processor}, otelproc_patterns_duration_seconds{processor}.
"""
from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from otelproc.batch import DictStringArray, LogBatch, StringArray
from otelproc.component import Consumer, Context, Factory, Kind, Processor
from otelproc.config import Duration
from otelproc.kernels.slot_stats import slot_stats
from otelproc.patterns.bodies import DEFAULT_MESSAGE_FIELDS, DEFAULT_TRACE_FRAMES
from otelproc.patterns.miner import (DEFAULT_MAX_PATTERNS_PER_SERVICE, DEFAULT_MAX_REPEAT, DEFAULT_MIN_CONSTANT_LINES,
                                     DEFAULT_MIN_DISTINCT, DEFAULT_SIMILARITY, ChangeType, PatternMiner)

log = logging.getLogger(__name__)

DEFAULT_SNAPSHOT_INTERVAL = Duration(60.0)
_NS_PER_MIN = 60_000_000_000
# pattern_counts groups by one int64 key while its range stays below this (else a lexsort over the columns)
_MAX_KEY_RANGE = 2**62


@dataclass
class MaskingRule:
    # regular expression (Python syntax) whose every match in a body is masked before mining
    regex: str = ""
    # placeholder name: a match becomes <name> in the template (letters, digits, '_')
    name: str = ""

    def validate(self) -> list[str]:
        out = []
        try:
            re.compile(self.regex)
        except re.error as e:
            out.append(f"regex: not a valid regular expression ({e}): {self.regex!r}")
        if self.regex == "":
            out.append("regex: must not be empty")
        if not re.fullmatch(r"\w+", self.name):
            out.append(f"name: letters, digits and '_' only (the placeholder is <name>), got {self.name!r}")
        return out


@dataclass
class PatternsProcessorConfig:
    # directory of the miner state file (patterns_state.npz); "" keeps the state in memory only
    state_dir: str = ""
    # most patterns kept per service; beyond it the least recently seen are evicted
    max_patterns_per_service: int = DEFAULT_MAX_PATTERNS_PER_SERVICE
    # share of equal literal tokens for a new key to join an existing pattern (0 < x <= 1)
    similarity: float = DEFAULT_SIMILARITY
    # distinct values a token position must show before two patterns merge over it (>= 2)
    min_distinct: int = DEFAULT_MIN_DISTINCT
    # a position whose values all recur (none seen on one line only), each on more than this many lines on
    # average, is categorical (a method, a state, a level) and its values stay apart (>= 1)
    max_repeat: float = DEFAULT_MAX_REPEAT
    # a masked word that looks like a name (ssh2, eth1) is shown in the template once this many lines showed it
    # unchanged (>= 2; the pattern id does not change with it)
    min_constant_lines: int = DEFAULT_MIN_CONSTANT_LINES
    # a JSON, OTLP kvlist or logfmt body is mined on the first of these fields that holds a string (key order and
    # other fields do not split an event; the body is stored whole); [] mines JSON objects as sorted key=value
    message_fields: list[str] = field(default_factory=lambda: list(DEFAULT_MESSAGE_FIELDS))
    # a Python, JVM or Go stack trace is mined on its exception and this many frames nearest to the throw (>= 1)
    trace_frames: int = DEFAULT_TRACE_FRAMES
    # masking rules (regex -> placeholder name), applied in order to every body before it is mined
    masking: list[MaskingRule] = field(default_factory=list)
    # templates that always win over mining: a body that matches one (<*> = any text) gets its pattern; a mined
    # pattern it covers is taken over (its id becomes an alias)
    pinned_templates: list[str] = field(default_factory=list)
    # how often the state is saved while running (it is always saved on shutdown); 0 = only on shutdown
    snapshot_interval: Duration = DEFAULT_SNAPSHOT_INTERVAL

    def miner_kwargs(self) -> dict:
        """The :class:`PatternMiner` settings of this config (the processor and ``otelproc patterns FILE``)."""
        return {"similarity": self.similarity, "min_distinct": self.min_distinct, "max_repeat": self.max_repeat,
                "min_constant_lines": self.min_constant_lines, "message_fields": tuple(self.message_fields),
                "trace_frames": self.trace_frames, "max_patterns_per_service": self.max_patterns_per_service,
                "masking": [(m.regex, m.name) for m in self.masking], "pinned": list(self.pinned_templates)}

    def validate(self) -> list[str]:
        out = []
        if self.max_patterns_per_service < 1:
            out.append(f"max_patterns_per_service: must be >= 1, got {self.max_patterns_per_service}")
        if not 0.0 < self.similarity <= 1.0:
            out.append(f"similarity: must be > 0 and <= 1, got {self.similarity}")
        if self.min_distinct < 2:
            out.append(f"min_distinct: must be >= 2, got {self.min_distinct}")
        for i, t in enumerate(self.pinned_templates):
            if not isinstance(t, str) or not t.strip():
                out.append(f"pinned_templates[{i}]: must be a non-empty template, got {t!r}")
            elif self.pinned_templates.index(t) != i:
                out.append(f"pinned_templates[{i}]: {t!r} is listed twice")
        if self.trace_frames < 1:
            out.append(f"trace_frames: must be >= 1, got {self.trace_frames}")
        for i, f in enumerate(self.message_fields):
            if not f or any(c.isspace() or c == "=" for c in f):
                out.append(f"message_fields::{i}: a field name without spaces or '=', got {f!r}")
        if self.min_constant_lines < 2:
            out.append(f"min_constant_lines: must be >= 2, got {self.min_constant_lines}")
        if not self.max_repeat >= 1:
            out.append(f"max_repeat: must be >= 1, got {self.max_repeat}")
        if self.snapshot_interval < 0:
            out.append(f"snapshot_interval: must be >= 0, got {self.snapshot_interval}s")
        return out


def default_config() -> PatternsProcessorConfig:
    return PatternsProcessorConfig()


class PatternsProcessor(Processor):
    def __init__(self, name: str, config: PatternsProcessorConfig, next_consumer: Consumer, context: Context | None):
        super().__init__(name, next_consumer)
        self.config = config
        self.miner: PatternMiner | None = None
        self._last_snapshot = 0.0
        self._services_arrow: pa.Array | None = None
        tel = getattr(context, "telemetry", None) if context is not None else None
        self._m = None
        if tel is not None:
            self._m = {
                "lines": tel.counter("otelproc_patterns_lines_total", "log lines assigned to a pattern", ("processor",)),
                "created": tel.counter("otelproc_patterns_created_total", "patterns created", ("processor",)),
                "active": tel.gauge("otelproc_patterns_active", "patterns held in memory", ("processor",)),
                "duration": tel.histogram("otelproc_patterns_duration_seconds", "mining time per batch", ("processor",)),
            }

    def start(self) -> None:
        kwargs = self.config.miner_kwargs()
        if self.config.state_dir:
            self.miner = PatternMiner.load(self.config.state_dir, **kwargs)
            log.info("patterns %s: loaded %d patterns from %s", self.name, self.miner.pattern_count, self.config.state_dir)
        else:
            self.miner = PatternMiner(**kwargs)
        self._services_arrow = None
        self._last_snapshot = time.monotonic()

    def consume(self, batch: LogBatch) -> None:
        if self.miner is None:
            self.start()
        self.next_consumer.consume(self.process(batch))
        if (self.config.state_dir and self.config.snapshot_interval > 0
                and time.monotonic() - self._last_snapshot >= self.config.snapshot_interval):
            self._snapshot("interval")

    def process(self, batch: LogBatch) -> LogBatch:
        """The batch with the pattern columns, tables and findings (no downstream call)."""
        t0 = time.perf_counter()
        miner = self.miner
        assert miner is not None
        n = len(batch)
        body = batch.body
        event_ns = batch.event_ns
        res = miner.learn(body.buf, body.off, batch.service_index, batch.services, event_ns, with_params=True)
        slot = res.slot
        ids = miner.p_id[slot] if n else np.zeros(0, np.uint64)
        # codes into the miner's distinct templates, not a copy of the text per record
        dictionary, code_of_slot = miner.template_dictionary()
        templates = DictStringArray(code_of_slot[slot], dictionary, distinct=True) if n else StringArray.empty()
        out = batch.with_columns(pattern_id=ids.astype(np.uint64), pattern_template=templates,
                                 pattern_params=res.params)
        if n:
            count, first_row, tmin, tmax, mix = slot_stats(slot, event_ns, len(miner.p_id), batch.severity_number)
            present = np.flatnonzero(count)
            out = out.with_table("log_patterns", self._log_patterns_rows(batch, present, count, first_row, tmin,
                                                                         tmax, mix))
            out = out.with_table("pattern_counts",
                                 self._pattern_counts_rows(batch, slot, present, first_row, event_ns))
        if self._m is not None:
            self._m["lines"].labels(self.name).inc(n)
            self._m["created"].labels(self.name).inc(sum(c.kind == ChangeType.CREATED for c in res.changes))
            self._m["active"].labels(self.name).set(miner.pattern_count)
            self._m["duration"].labels(self.name).observe(time.perf_counter() - t0)
        return out

    def _log_patterns_rows(self, batch: LogBatch, present: np.ndarray, count: np.ndarray, first_row: np.ndarray,
                           tmin: np.ndarray, tmax: np.ndarray, mix: np.ndarray) -> pa.Table:
        """One row per slot seen in the batch (``present``, ascending), from the per-slot aggregates."""
        miner = self.miner
        dictionary, code_of_slot = miner.template_dictionary()
        p_service = miner.p_service  # a list over all slots: index it per present slot, never convert it whole
        svc = np.fromiter((p_service[s] for s in present.tolist()), dtype=np.int32, count=len(present))
        mix = mix[present]
        return pa.table({
            "ServiceName": self._miner_services().take(pa.array(svc)),
            "PatternId": pa.array(miner.p_id[present], pa.uint64()),
            # (a slot evicted later in this batch still holds its last template: slots are reused only after it)
            "Template": dictionary.take(code_of_slot[present]).to_arrow().cast(pa.string()),
            "FirstSeen": pa.array(tmin[present], pa.timestamp("ns", tz="UTC")),
            "LastSeen": pa.array(tmax[present], pa.timestamp("ns", tz="UTC")),
            "Count": pa.array(count[present].astype(np.uint64), pa.uint64()),
            "SampleBody": batch.body.take(first_row[present]).to_arrow(),
            "CountUnset": pa.array(mix[:, 0]), "CountDebug": pa.array(mix[:, 1]), "CountInfo": pa.array(mix[:, 2]),
            "CountWarn": pa.array(mix[:, 3]), "CountError": pa.array(mix[:, 4]),
            "Aliases": pa.array([miner.p_aliases[s] for s in present.tolist()], pa.list_(pa.uint64())),
        })

    def _miner_services(self) -> pa.Array:
        """The miner's service names as an Arrow array (services are only ever appended)."""
        services = self.miner.services
        if self._services_arrow is None or len(self._services_arrow) != len(services):
            self._services_arrow = pa.array(services, pa.string())
        return self._services_arrow

    def _pattern_counts_rows(self, batch: LogBatch, slot: np.ndarray, present: np.ndarray, first_row: np.ndarray,
                             event_ns: np.ndarray) -> pa.Table:
        """Rows per (minute, service, pattern id, severity), in that order.

        (service, pattern id) is normally a property of the slot (checked per batch: a name
        listed twice in ``batch.services`` gives two service indexes), so the slots seen in the
        batch are ranked by it once (a few thousand), severities by value, and each record gets
        one integer key (minute * groups + group) * severities + severity, grouped by bincount
        when the key range is small (the usual case: a batch spans a few minutes) and by one sort
        otherwise. A lexsort over the four columns cost ~6 ns/record per column.
        """
        miner = self.miner
        pid_of = miner.p_id[present]
        svc_of_slot = np.zeros(len(miner.p_id), dtype=np.int32)
        svc_of_slot[present] = batch.service_index[first_row[present]]
        if np.array_equal(svc_of_slot[slot], batch.service_index):  # each slot's records name one service
            svc_of = svc_of_slot[present].astype(np.int64)
            order = np.lexsort((pid_of, svc_of))
            s_sorted, p_sorted = svc_of[order], pid_of[order]
            new_group = np.ones(len(order), dtype=bool)
            new_group[1:] = (s_sorted[1:] != s_sorted[:-1]) | (p_sorted[1:] != p_sorted[:-1])
            group_of_slot = np.zeros(len(miner.p_id), dtype=np.int64)
            group_of_slot[present[order]] = np.cumsum(new_group) - 1
            group_svc, group_pid = s_sorted[new_group], p_sorted[new_group]
            group = group_of_slot[slot]
        else:  # e.g. a service name twice in batch.services: group by the record's own service index
            uniq_pid = np.unique(pid_of)
            rank_of_slot = np.zeros(len(miner.p_id), dtype=np.int64)
            rank_of_slot[present] = np.searchsorted(uniq_pid, pid_of)
            n_svc = len(batch.services)
            group_svc = np.repeat(np.arange(n_svc, dtype=np.int64), len(uniq_pid))
            group_pid = np.tile(uniq_pid, n_svc)
            group = batch.service_index.astype(np.int64) * len(uniq_pid) + rank_of_slot[slot]
        n_groups = len(group_svc)
        sev_values = np.flatnonzero(np.bincount(batch.severity_number, minlength=256))
        n_sev = len(sev_values)
        sev_rank = np.zeros(256, dtype=np.int64)
        sev_rank[sev_values] = np.arange(n_sev)
        minute = event_ns // _NS_PER_MIN
        m0 = int(minute.min())
        span = int(minute.max()) - m0 + 1
        key_range = span * n_groups * n_sev
        if key_range < _MAX_KEY_RANGE:
            key = ((minute - m0) * n_groups + group) * n_sev + sev_rank[batch.severity_number]
            if key_range <= 8 * len(key) + 65536:
                counts = np.bincount(key, minlength=key_range)
                keys = np.flatnonzero(counts)
                count = counts[keys]
            else:
                keys, count = np.unique(key, return_counts=True)
            sev = sev_values[keys % n_sev]
            g = (keys // n_sev) % n_groups
            m = keys // n_sev // n_groups + m0
        else:  # event times spread over centuries: one lexsort over the three columns
            cols = (minute, group, batch.severity_number.astype(np.int64))
            srt = np.lexsort(cols[::-1])
            m_s, g_s, sev_s = (c[srt] for c in cols)
            first = np.ones(len(srt), dtype=bool)
            first[1:] = (m_s[1:] != m_s[:-1]) | (g_s[1:] != g_s[:-1]) | (sev_s[1:] != sev_s[:-1])
            starts = np.flatnonzero(first)
            count = np.diff(np.append(starts, len(srt)))
            m, g, sev = m_s[starts], g_s[starts], sev_s[starts]
        services = pa.array(batch.services if batch.services else [""], pa.string())
        return pa.table({
            "Minute": pa.array((m * 60).astype("datetime64[s]"), pa.timestamp("s", tz="UTC")),
            "ServiceName": services.take(pa.array(group_svc[g])),
            "PatternId": pa.array(group_pid[g], pa.uint64()),
            "SeverityNumber": pa.array(sev.astype(np.uint8), pa.uint8()),
            "Count": pa.array(count.astype(np.uint64), pa.uint64()),
        })

    def _snapshot(self, reason: str) -> None:
        if self.miner is not None and self.config.state_dir:
            self.miner.save(self.config.state_dir)
            log.info("patterns %s: state saved (%s)", self.name, reason)
        self._last_snapshot = time.monotonic()

    def shutdown(self) -> None:
        if self.miner is not None:
            self._snapshot("shutdown")


def _create(name: str, config: PatternsProcessorConfig, next_consumer: Consumer, context: Context | None = None):
    return PatternsProcessor(name, config, next_consumer, context)


factory = Factory(type="patterns", kind=Kind.PROCESSOR, config_class=PatternsProcessorConfig, create=_create)
