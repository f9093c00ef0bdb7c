"""The ``patterns`` processor: a template and a stable pattern id for every log line.

    processors:
      patterns:
        state_dir: ./data/patterns        # where the miner state is saved ("" = in memory only)
        max_patterns_per_service: 5000     # cap; least recently seen patterns are evicted
        similarity: 0.7                    # Drain-like merge threshold of the miner
        min_distinct: 3                    # distinct values a position needs before it becomes <*>
        snapshot_interval: 60s             # also saved on shutdown

consume(batch) (ONE caller thread) runs :class:`otelproc.patterns.PatternMiner` over the
bodies and passes on the batch with:

* columns ``pattern_id`` (uint64), ``pattern_template`` (StringArray) and ``pattern_params``
  (StringArray, each parameter followed by 0x1f: the layout of otelproc.store.arrow);
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
import time
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from otelproc.batch import LogBatch, StringArray
from otelproc.component import Consumer, Context, Factory, Kind, Processor
from otelproc.config import Duration
from otelproc.kernels.tokenize import gather_params_terminated, param_spans
from otelproc.patterns.miner import (DEFAULT_MAX_PATTERNS_PER_SERVICE, DEFAULT_MIN_DISTINCT, DEFAULT_SIMILARITY,
                                     ChangeType, PatternMiner)

log = logging.getLogger(__name__)

DEFAULT_SNAPSHOT_INTERVAL = Duration(60.0)
_NS_PER_MIN = 60_000_000_000


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
    # how often the state is saved while running (it is always saved on shutdown); 0 = only on shutdown
    snapshot_interval: Duration = DEFAULT_SNAPSHOT_INTERVAL

    def validate(self) -> list[str]:
        out = []
        if self.max_patterns_per_service < 1:
            out.append(f"max_patterns_per_service: must be >= 1, got {self.max_patterns_per_service}")
        if not 0.0 < self.similarity <= 1.0:
            out.append(f"similarity: must be > 0 and <= 1, got {self.similarity}")
        if self.min_distinct < 2:
            out.append(f"min_distinct: must be >= 2, got {self.min_distinct}")
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
        kwargs = {"similarity": self.config.similarity, "min_distinct": self.config.min_distinct,
                  "max_patterns_per_service": self.config.max_patterns_per_service}
        if self.config.state_dir:
            self.miner = PatternMiner.load(self.config.state_dir, **kwargs)
            log.info("patterns %s: loaded %d patterns from %s", self.name, self.miner.pattern_count, self.config.state_dir)
        else:
            self.miner = PatternMiner(**kwargs)
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
        res = miner.learn(body.buf, body.off, batch.service_index, batch.services, event_ns)
        slot = res.slot
        ids = miner.p_id[slot] if n else np.zeros(0, np.uint64)
        templates = miner.templates_array().take(slot) if n else StringArray.empty()
        poff, start, end = param_spans(body.buf, body.off, res.genmask)
        pbuf, pboff = gather_params_terminated(body.buf, poff, start, end)
        out = batch.with_columns(pattern_id=ids.astype(np.uint64), pattern_template=templates,
                                 pattern_params=StringArray(pbuf, pboff))
        if n:
            out = out.with_table("log_patterns", self._log_patterns_rows(batch, slot, event_ns))
            out = out.with_table("pattern_counts", self._pattern_counts_rows(batch, ids, event_ns))
        if self._m is not None:
            self._m["lines"].labels(self.name).inc(n)
            self._m["created"].labels(self.name).inc(sum(c.kind == ChangeType.CREATED for c in res.changes))
            self._m["active"].labels(self.name).set(miner.pattern_count)
            self._m["duration"].labels(self.name).observe(time.perf_counter() - t0)
        return out

    def _log_patterns_rows(self, batch: LogBatch, slot: np.ndarray, event_ns: np.ndarray) -> pa.Table:
        miner = self.miner
        uniq, first_row, inv = np.unique(slot, return_index=True, return_inverse=True)
        k = len(uniq)
        count = np.bincount(inv, minlength=k).astype(np.uint64)
        tmin = np.full(k, np.iinfo(np.int64).max, dtype=np.int64)
        tmax = np.full(k, np.iinfo(np.int64).min, dtype=np.int64)
        np.minimum.at(tmin, inv, event_ns)
        np.maximum.at(tmax, inv, event_ns)
        sev = batch.severity_number.astype(np.int64)
        sev_class = np.select([sev == 0, sev <= 8, sev <= 12, sev <= 16], [0, 1, 2, 3], 4)
        mix = np.zeros((k, 5), dtype=np.uint64)
        np.add.at(mix, (inv, sev_class), 1)
        us = uniq.tolist()
        return pa.table({
            "ServiceName": pa.array([miner.service_of(s) for s in us], pa.string()),
            "PatternId": pa.array(miner.p_id[uniq], pa.uint64()),
            "Template": pa.array([miner.template(s) for s in us], pa.string()),
            "FirstSeen": pa.array(tmin, pa.timestamp("ns", tz="UTC")),
            "LastSeen": pa.array(tmax, pa.timestamp("ns", tz="UTC")),
            "Count": pa.array(count, pa.uint64()),
            "SampleBody": batch.body.take(first_row).to_arrow(),
            "CountUnset": pa.array(mix[:, 0]), "CountDebug": pa.array(mix[:, 1]), "CountInfo": pa.array(mix[:, 2]),
            "CountWarn": pa.array(mix[:, 3]), "CountError": pa.array(mix[:, 4]),
            "Aliases": pa.array([miner.p_aliases[s] for s in us], pa.list_(pa.uint64())),
        })

    def _pattern_counts_rows(self, batch: LogBatch, ids: np.ndarray, event_ns: np.ndarray) -> pa.Table:
        # group by (minute, service, pattern, severity) with one lexsort over plain columns
        # (np.unique on a record array is ~20x slower)
        cols = (event_ns // _NS_PER_MIN, batch.service_index.astype(np.int64), ids, batch.severity_number)
        order = np.lexsort(cols[::-1])
        m, svc, pid, sev = (c[order] for c in cols)
        first = np.ones(len(order), dtype=bool)
        first[1:] = (m[1:] != m[:-1]) | (svc[1:] != svc[:-1]) | (pid[1:] != pid[:-1]) | (sev[1:] != sev[:-1])
        starts = np.flatnonzero(first)
        count = np.diff(np.append(starts, len(order))).astype(np.uint64)
        services = np.asarray(batch.services, dtype=object)
        return pa.table({
            "Minute": pa.array((m[starts] * 60).astype("datetime64[s]"), pa.timestamp("s", tz="UTC")),
            "ServiceName": pa.array(services[svc[starts]].tolist(), pa.string()),
            "PatternId": pa.array(pid[starts], pa.uint64()),
            "SeverityNumber": pa.array(sev[starts], pa.uint8()),
            "Count": pa.array(count, pa.uint64()),
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
