"""The ``batch`` processor: merges small batches into large ones for the exporters.

ClickHouse writes a part per INSERT and merges parts in the background, rewriting each row
again at every merge level: the fewer, larger the inserts, the less CPU per row. A 100k-row
block cost 23 % less store CPU per log than a 50k-row block, insert and merges together
(benchmarks/store_cost.py, benchmarks/README.md). This processor buffers
batches and hands one merged batch to the next consumer when
``send_batch_size`` records are buffered or ``timeout`` has passed since the
oldest buffered record, on its own thread, so the stages before it (decode,
mining, detection) overlap with the insert.

It holds at most ``max_buffered_records`` (default: one batch filling while one waits for the
sending thread, 2 x send_batch_size); beyond that ``consume`` blocks the
caller, which fills the pipeline's ingest queue, which makes receivers answer
429 / RESOURCE_EXHAUSTED: back-pressure instead of unbounded memory.

    processors:
      batch: {send_batch_size: 100000, timeout: 1s}

Write-ahead log: merged batches carry the WAL range of their parts (``LogBatch.wal_seq``).
After a restart the pipeline replays unacknowledged records and hands this processor the
ranges it sent as one batch before (:meth:`BatchProcessor.set_replay_boundaries`); replayed
records are cut exactly there, so each re-sent batch has the same range, hence the same
insert deduplication token, as the first attempt.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass

from otelproc.batch import LogBatch, concat_batches
from otelproc.component import Consumer, Context, Factory, Kind, PermanentError, Processor
from otelproc.config import Duration, setting

log = logging.getLogger(__name__)

DEFAULT_SEND_BATCH_SIZE = 100_000
DEFAULT_TIMEOUT = Duration(1.0)


@dataclass
class BatchProcessorConfig:
    # records that trigger a send
    send_batch_size: int = setting(DEFAULT_SEND_BATCH_SIZE, ge=1)
    # longest a record waits in the buffer before it is sent anyway
    timeout: Duration = setting(DEFAULT_TIMEOUT, gt=0)
    # most records held at once; consume() blocks above it (0 = 2 x send_batch_size)
    max_buffered_records: int = 0

    def validate(self) -> list[str]:
        out = []
        if self.max_buffered_records and self.max_buffered_records < self.send_batch_size:
            out.append(f"max_buffered_records: must be 0 or >= send_batch_size ({self.send_batch_size}), got {self.max_buffered_records}")
        return out


class BatchProcessor(Processor):
    def __init__(self, name: str, config: BatchProcessorConfig, next_consumer: Consumer, context: Context):
        super().__init__(name, next_consumer)
        self.config = config
        self.max_buffered = config.max_buffered_records or 2 * config.send_batch_size
        self._pending: deque[LogBatch] = deque()
        self._pending_records = 0
        self._oldest = 0.0  # monotonic time the oldest pending batch arrived
        self._cond = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._replay_ranges: deque[tuple[int, int]] = deque()  # recorded (first, last) WAL ranges, in order
        self._replaying = False
        t = context.telemetry
        self._m_sent = t.counter("otelproc_processor_batch_sent_records", "Records sent downstream", ("processor",)) if t else None
        self._m_batch_size = t.histogram("otelproc_processor_batch_size_records", "Records per sent batch", ("processor",),
                                         buckets=(100, 1000, 5000, 10000, 25000, 50000, 100000, 250000)) if t else None
        self._m_dropped = t.counter("otelproc_processor_batch_dropped_records", "Records the exporters refused permanently", ("processor",)) if t else None
        self._m_buffered = t.gauge("otelproc_processor_batch_buffered_records", "Records waiting in the batch buffer", ("processor",)) if t else None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"{self.name}-send", daemon=True)
        self._thread.start()

    def consume(self, batch: LogBatch) -> None:
        if not len(batch) and not batch.tables and not batch.findings:
            return
        with self._cond:
            while self._pending_records + len(batch) > self.max_buffered and self._pending and not self._stopping:
                self._cond.wait(0.5)
            if not self._pending:
                self._oldest = time.monotonic()
            self._pending.append(batch)
            self._pending_records += len(batch)
            if self._m_buffered:
                self._m_buffered.labels(self.name).set(self._pending_records)
            if self._pending_records >= self.config.send_batch_size or self._replay_ranges:
                self._cond.notify_all()
        if self._thread is None:  # not started (or used synchronously in tests): send inline
            self._flush_due(force=self._stopping)

    def set_replay_boundaries(self, ranges: list[tuple[int, int]]) -> None:
        """WAL ranges (first, last) that were sent as one batch before a restart; replayed
        records within a range are sent as exactly that batch again."""
        with self._cond:
            self._replay_ranges = deque(sorted(ranges))
            self._replaying = True

    def replay_done(self) -> None:
        """Every replayed record is queued: a range missing records (unreadable) is sent as it is."""
        with self._cond:
            self._replaying = False
            self._cond.notify_all()

    def _replay_cut(self, force: bool) -> tuple[int, bool] | None:
        """Inside a recorded range: (batches to take, due). None when the head is not in one."""
        ranges = self._replay_ranges
        head = self._pending[0].wal_seq
        if head is None:
            return None
        while ranges and ranges[0][1] < head[1]:
            ranges.popleft()
        if not ranges or ranges[0][0] > head[1]:
            return None
        last = ranges[0][1]
        k = 0
        for b in self._pending:
            if b.wal_seq is None or b.wal_seq[2] > last:
                break
            k += 1
        complete = self._pending[k - 1].wal_seq[2] == last or k < len(self._pending)
        if complete or force or not self._replaying:
            ranges.popleft()
            return k, True
        return k, False

    def _normal_cut(self, force: bool) -> int:
        """How many pending batches form the next batch: up to send_batch_size (all when forced),
        never running into a recorded replay range."""
        nxt = self._replay_ranges[0][0] if self._replay_ranges else None
        k = n = 0
        for b in self._pending:
            if n >= self.config.send_batch_size and not force:
                break
            if k and nxt is not None and b.wal_seq is not None and b.wal_seq[1] >= nxt:
                break
            k += 1
            n += len(b)
        return k

    def _take(self, force: bool) -> LogBatch | None:
        """Pop what is due (size reached, timeout passed, or force) as one batch; None if nothing is due."""
        with self._cond:
            if not self._pending:
                return None
            cut = self._replay_cut(force) if self._replay_ranges else None
            if cut is not None:
                k, due = cut
            else:
                due = force or self._pending_records >= self.config.send_batch_size or \
                    time.monotonic() - self._oldest >= self.config.timeout
                k = self._normal_cut(force) if due else 0
            if not due:
                return None
            out = [self._pending.popleft() for _ in range(k)]
            n = sum(len(b) for b in out)
            self._pending_records -= n
            self._oldest = time.monotonic()
            if self._m_buffered:
                self._m_buffered.labels(self.name).set(self._pending_records)
            self._cond.notify_all()
        return concat_batches(out)

    def _flush_due(self, force: bool) -> None:
        while (merged := self._take(force)) is not None:
            self._send(merged)

    def _send(self, merged: LogBatch) -> None:
        try:
            self.next_consumer.consume(merged)
        except PermanentError as e:
            log.error("batch processor %s: %d records refused downstream: %s", self.name, len(merged), e)
            if self._m_dropped:
                self._m_dropped.labels(self.name).inc(len(merged))
            return
        except Exception:
            # Exporters retry transient errors themselves until they give up (with a WAL, until
            # shutdown). Without a WAL what reaches here is lost; say so loudly, keep running.
            if merged.wal_seq is not None:
                log.error("batch processor %s: exporting %d records failed at shutdown; they stay in the "
                          "write-ahead log and are replayed at the next start", self.name, len(merged))
                return
            log.exception("batch processor %s: exporting %d records failed", self.name, len(merged))
            if self._m_dropped:
                self._m_dropped.labels(self.name).inc(len(merged))
            return
        if self._m_sent:
            self._m_sent.labels(self.name).inc(len(merged))
            self._m_batch_size.labels(self.name).observe(len(merged))

    def _run(self) -> None:
        while True:
            with self._cond:
                if self._stopping:
                    break
                wait = self.config.timeout if not self._pending else \
                    max(0.0, self.config.timeout - (time.monotonic() - self._oldest))
                if self._replay_ranges:
                    # replayed batches go out as soon as their recorded range is complete
                    self._cond.wait(min(wait, 0.02))
                elif self._pending_records < self.config.send_batch_size:
                    self._cond.wait(wait)
            self._flush_due(force=False)
        self._flush_due(force=True)

    def shutdown(self) -> None:
        """Send everything buffered, then stop."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self._flush_due(force=True)


def _create(name: str, config: BatchProcessorConfig, next_consumer: Consumer, context: Context) -> BatchProcessor:
    return BatchProcessor(name, config, next_consumer, context)


factory = Factory(type="batch", kind=Kind.PROCESSOR, config_class=BatchProcessorConfig, create=_create, stability="beta")
