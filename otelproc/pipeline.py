"""Builds the running service from a config: the only place that wires components.

    receiver threads ──decode──▶ IngestQueue ──▶ worker thread: processors ... ──▶ exporters
                                 (bounded: full => 429)        (batch: own send thread)

Receivers decode on their own threads (the Numba scanner releases the GIL) and
hand batches to a bounded :class:`IngestQueue` per pipeline; one worker thread
per pipeline runs the processors in order, so processors see one batch at a
time and need no locks. A ``batch`` processor hands merged batches to the
exporters on a thread of its own, so mining overlaps with the ClickHouse insert.

Durability: when an exporter of a pipeline configures a write-ahead log (``wal:``, see
:mod:`otelproc.wal`), the pipeline's queue appends every batch to it before the receiver
answers, the end of the pipeline (:class:`ExportStage`) records each sent batch's WAL range,
retries failed exporters until they confirm (the data is safe meanwhile: back-pressure
reaches the clients through the full queues) and then acknowledges the range. Unacknowledged
records are replayed at start, through the processors, before the receivers listen.

Memory: each queue holds at most ``max_records`` records and ``max_bytes`` bytes
(QueueConfig: 100k records, 256 MiB when the config has no such keys); above either, receivers answer 429.

Start order: extensions, exporters, processors, queues, WAL replay, receivers. Shutdown is
the reverse: receivers stop accepting, (with a WAL: exporters stop retrying), queues drain,
processors flush, exporters close, WALs close, extensions stop.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging
import re
import sys
import threading
from collections import deque
from dataclasses import replace
from pathlib import Path
from typing import Sequence

from otelproc.batch import LogBatch, concat_batches
from otelproc.component import BackPressureError, Component, Consumer, Context, Kind, PermanentError
from otelproc.config import Duration, OtelprocConfig, QueueConfig
from otelproc.registry import factories
from otelproc.retry import GaveUp, RetryConfig, call_with_retry
from otelproc.telemetry import Telemetry
from otelproc.wal import WalConfig, WalFullError, WriteAheadLog, batch_nbytes, encode_batch

log = logging.getLogger(__name__)

# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_ARENA_MAX = -1, -3, -8
# column buffers at least this large get their own mapping, returned to the OS when freed
MMAP_THRESHOLD = 1 << 20


def bound_allocator() -> bool:
    """Keep glibc malloc from hoarding freed batch buffers (True when applied).

    Each batch allocates and frees column buffers of 0.1-30 MB on several threads. glibc raises its
    mmap threshold to the largest block freed so far (up to 32 MB) and gives every thread an arena
    of its own, so under load those buffers end up in per-thread heaps that keep their freed pages:
    ~150 MB of free-but-resident heap was measured in the e2e benchmark. A fixed 1 MiB threshold
    (which also turns off the dynamic adjustment), two arenas and a 16 MiB trim threshold return
    those pages when the buffers are freed. No-op on other C libraries (e.g. musl, macOS).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    ok = mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
    ok &= mallopt(_M_TRIM_THRESHOLD, 16 << 20) == 1
    ok &= mallopt(_M_ARENA_MAX, 2) == 1
    return bool(ok)


# how ExportStage retries, with a WAL, an exporter that failed: until it confirms or the service stops
EXPORT_RETRY = RetryConfig(initial_interval=Duration(0.5), max_interval=Duration(10.0), max_elapsed_time=Duration(0),
                           multiplier=2.0, randomization_factor=0.0)


class FanOut:
    """Gives each batch to several consumers (a receiver in several pipelines, several exporters)."""

    def __init__(self, consumers: Sequence[Consumer]):
        self.consumers = list(consumers)

    def consume(self, batch: LogBatch) -> None:
        errors = []
        for c in self.consumers:
            try:
                c.consume(batch)
            except Exception as e:  # one failing exporter must not starve the others
                errors.append(e)
        if errors:
            raise errors[0]


class ExportStage:
    """The end of a pipeline: hands each batch to every exporter; with a WAL, makes it durable.

    Without a WAL it behaves as :class:`FanOut`. With one, for a batch covering WAL records
    first..last it (1) records the range (so a replay re-forms this exact batch and the
    exporters' deduplication tokens match), (2) retries every exporter that failed
    transiently, with back-off, until it confirms or the service shuts down (the batch then
    stays in the WAL), and (3) acknowledges the range. A permanent refusal is not retried
    (the data can never be accepted) and counts as done.
    """

    def __init__(self, pipeline: str, exporters: dict[str, Consumer], wal: WriteAheadLog | None,
                 telemetry: Telemetry | None):
        self.pipeline = pipeline
        self.exporters = exporters
        self.wal = wal
        if wal is not None:  # this stage retries; exporters try once (one retry loop, not two nested)
            for exp in exporters.values():
                exp.retry_in_pipeline = True
        self._stop = threading.Event()
        self.failing: dict[str, str] = {}  # exporter id -> last error, while it fails
        t = telemetry
        self._m_up = t.gauge("otelproc_exporter_up", "1 while the exporter's last delivery succeeded, 0 while it fails",
                             ("pipeline", "exporter")) if t else None
        self._m_retries = t.counter("otelproc_exporter_delivery_retries", "Batches handed again to an exporter after it failed",
                                    ("pipeline", "exporter")) if t else None
        self._m_refused = t.counter("otelproc_exporter_refused_records", "Records an exporter refused permanently",
                                    ("pipeline", "exporter")) if t else None

    def stop_retrying(self) -> None:
        self._stop.set()

    def consume(self, batch: LogBatch) -> None:
        ws = batch.wal_seq if self.wal is not None else None
        if ws is not None:
            self.wal.mark_batch(ws[1], ws[2])
        errors: list[Exception] = []
        # every exporter gets the batch once before a failing one is retried: one cannot starve the others
        failed = [eid for eid in self.exporters if not self._export(eid, batch, errors, ws is not None)]
        for eid in failed if ws is not None else ():
            self._export(eid, batch, errors, False, retry=True)
        if errors:
            raise errors[0]  # with a WAL: shutting down, the batch stays in the WAL
        if ws is not None:
            self.wal.ack(ws[2])

    def _export(self, eid: str, batch: LogBatch, errors: list[Exception], later: bool, retry: bool = False) -> bool:
        """Hand ``batch`` to exporter ``eid`` (with ``retry``: until it confirms or the stage stops). False when
        it failed transiently and ``later`` (it will be retried), else its error is added to ``errors``."""
        def attempt() -> None:
            try:
                self.exporters[eid].consume(batch)
            except PermanentError:
                raise
            except Exception as e:
                self._up(eid, e)
                raise
            self._up(eid, None)

        def count_retry(e: BaseException, attempt: int, wait: float) -> None:
            if self._m_retries:
                self._m_retries.labels(self.pipeline, eid).inc()

        try:
            if retry:
                call_with_retry(attempt, EXPORT_RETRY, f"pipeline {self.pipeline}: {len(batch)} records (kept in the "
                                                       f"WAL) to exporter {eid}", self._stop, on_retry=count_retry)
            else:
                attempt()
        except PermanentError as e:
            self._up(eid, None)
            if self._m_refused:
                self._m_refused.labels(self.pipeline, eid).inc(len(batch))
            if self.wal is None:
                errors.append(e)
            else:  # the data can never be accepted: done with it
                log.error("pipeline %s: exporter %s refused %d records permanently: %s",
                          self.pipeline, eid, len(batch), e)
        except GaveUp as g:
            errors.append(g.last if isinstance(g.last, Exception) else g)
        except Exception as e:  # noqa: BLE001 - transient
            if later:
                return False
            errors.append(e)
        return True

    def _up(self, eid: str, error: Exception | None) -> None:
        if error is None:
            self.failing.pop(eid, None)
        else:
            self.failing[eid] = str(error)[:500]
        if self._m_up:
            self._m_up.labels(self.pipeline, eid).set(0 if error is not None else 1)


class IngestQueue(Component):
    """Bounded hand-off from receiver threads to one pipeline's worker thread.

    ``consume`` never blocks: when ``max_records`` are waiting it raises
    BackPressureError, which receivers answer with 429 / RESOURCE_EXHAUSTED.
    """

    def __init__(self, name: str, config: QueueConfig, next_consumer: Consumer, telemetry: Telemetry | None,
                 wal: WriteAheadLog | None = None):
        super().__init__(name)
        self.config = config
        self.next_consumer = next_consumer
        self.wal = wal
        self.max_bytes = int(config.max_bytes)
        # (batch, bytes, mergeable): replayed batches are not merged, so the batch processor
        # can re-form exactly the batches recorded in the WAL
        self._items: deque[tuple[LogBatch, int, bool]] = deque()
        self._records = 0
        self._bytes = 0
        self.replay_plan = None
        self._cond = threading.Condition()
        self._accepting = False
        self._stopping = False
        self._busy = False
        self._thread: threading.Thread | None = None
        t = telemetry
        self._m_size = t.gauge("otelproc_queue_records", "Records waiting for the processors", ("pipeline",)) if t else None
        self._m_dropped = t.counter("otelproc_pipeline_dropped_records", "Records lost after acceptance (processing or export failed)", ("pipeline", "reason")) if t else None
        self._m_bytes = t.gauge("otelproc_queue_bytes", "Bytes of the batches waiting for the processors", ("pipeline",)) if t else None

    def start(self) -> None:
        if self.wal is not None:
            self.replay_plan = self.wal.open()
        self._accepting = True
        self._thread = threading.Thread(target=self._run, name=f"pipeline-{self.name}", daemon=True)
        self._thread.start()

    def consume(self, batch: LogBatch) -> None:
        """Queue a batch (after writing it to the WAL, if any) or raise BackPressureError."""
        nbytes = batch_nbytes(batch)
        payload = encode_batch(batch) if self.wal is not None else None  # outside the lock: receivers run in parallel
        seq = 0
        with self._cond:
            if not self._accepting:
                raise BackPressureError("otelproc is shutting down", self.config.retry_after)
            if self._records and self._records + len(batch) > self.config.max_records:
                raise BackPressureError(f"pipeline {self.name}: {self._records} records queued (max_records "
                                        f"{self.config.max_records}); retry later", self.config.retry_after)
            if self._bytes and self._bytes + nbytes > self.max_bytes:
                raise BackPressureError(f"pipeline {self.name}: {self._bytes} bytes queued (max_bytes "
                                        f"{self.max_bytes}); retry later", self.config.retry_after)
            if self.wal is not None:
                try:
                    seq = self.wal.append(payload, len(batch))
                except WalFullError as e:
                    raise BackPressureError(f"pipeline {self.name}: {e}; retry later", self.config.retry_after) from None
                batch = replace(batch, wal_seq=(self.wal.id, seq, seq))
            self._push(batch, nbytes, True)
        if seq:
            self.wal.sync(seq)  # fsync policy "always": durable before the client is answered

    def put_replayed(self, batch: LogBatch) -> None:
        """Queue a batch replayed from the WAL (already logged): waits for room instead of refusing."""
        nbytes = batch_nbytes(batch)
        with self._cond:
            while self._records and (self._records + len(batch) > self.config.max_records
                                     or self._bytes + nbytes > self.max_bytes) and not self._stopping:
                self._cond.wait(0.5)
            self._push(batch, nbytes, False)

    def _push(self, batch: LogBatch, nbytes: int, mergeable: bool) -> None:
        self._items.append((batch, nbytes, mergeable))
        self._records += len(batch)
        self._bytes += nbytes
        self._set_gauges()
        self._cond.notify_all()

    def _set_gauges(self) -> None:
        if self._m_size:
            self._m_size.labels(self.name).set(self._records)
            self._m_bytes.labels(self.name).set(self._bytes)

    @property
    def queued_records(self) -> int:
        return self._records

    def idle(self) -> bool:
        """True when nothing is queued or being processed (tests wait on this)."""
        with self._cond:
            return not self._items and not self._busy

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._items and not self._stopping:
                    self._cond.wait()
                if not self._items:
                    return
                batch, nbytes = self._take_locked()
                self._busy = True
            try:
                self.next_consumer.consume(batch)
            except Exception as e:
                reason = "permanent" if isinstance(e, PermanentError) else "error"
                kept = " (kept in the write-ahead log: replayed at the next start)" \
                    if self.wal is not None and batch.wal_seq is not None and reason == "error" else ""
                log.error("pipeline %s: %d records could not be processed%s: %s", self.name, len(batch), kept, e,
                          exc_info=not isinstance(e, PermanentError))
                if self._m_dropped and not kept:
                    self._m_dropped.labels(self.name, reason).inc(len(batch))
            finally:
                with self._cond:
                    self._busy = False
                    self._records -= len(batch)
                    self._bytes -= nbytes
                    self._set_gauges()
                    self._cond.notify_all()

    def _take_locked(self) -> tuple[LogBatch, int]:
        """The next batch; when the worker is behind, consecutive live batches merged into one of up
        to ``max_batch_records``: per-batch costs of the processors are paid once per merge, so the
        pipeline batches adaptively under load and adds no wait when idle."""
        batch, nbytes, mergeable = self._items.popleft()
        if not mergeable:
            return batch, nbytes
        parts, n = [batch], len(batch)
        while self._items and self._items[0][2] and n + len(self._items[0][0]) <= self.config.max_batch_records:
            b, nb, _ = self._items.popleft()
            parts.append(b)
            n += len(b)
            nbytes += nb
        return (concat_batches(parts) if len(parts) > 1 else batch), nbytes

    def shutdown(self) -> None:
        """Refuse new batches, process every queued one, stop the worker."""
        with self._cond:
            self._accepting = False
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join()
            self._thread = None


class Service:
    """All pipelines of one config, built (no I/O), then started and shut down as a unit."""

    def __init__(self, config: OtelprocConfig, telemetry: Telemetry | None = None):
        bound_allocator()
        self.config = config
        self.telemetry = telemetry or Telemetry()
        from otelproc.store import StoreRegistry

        self.context = Context(telemetry=self.telemetry, stores=StoreRegistry(), config=config)
        self.extensions: dict[str, Component] = {}
        self.receivers: dict[str, Component] = {}
        self.exporters: dict[str, Component] = {}
        self.processors: dict[str, list[Component]] = {}   # pipeline -> processors in order
        self.queues: dict[str, IngestQueue] = {}
        self.stages: dict[str, ExportStage] = {}           # pipeline -> its end (exporters)
        self.wals: dict[str, WriteAheadLog] = {}           # pipeline -> its write-ahead log
        self._started = False
        self._lock = threading.Lock()
        self._build()

    def _create(self, kind: Kind, cid: str, next_consumer: Consumer | None) -> Component:
        fac = factories()[(kind, cid.split("/", 1)[0])]
        cfg = getattr(self.config, kind.value)[cid]
        return fac.create(cid, cfg, next_consumer, self.context)

    def _build(self) -> None:
        for xid in self.config.service.extensions:
            self.extensions[xid] = self._create(Kind.EXTENSION, xid, None)
        feeds: dict[str, list[Consumer]] = {}
        for pname, pipe in self.config.service.pipelines.items():
            for eid in pipe.exporters:
                if eid not in self.exporters:
                    self.exporters[eid] = self._create(Kind.EXPORTER, eid, None)
            wal = self._pipeline_wal(pname, pipe.exporters)
            if wal is not None:
                self.wals[pname] = wal
            stage = ExportStage(pname, {e: self.exporters[e] for e in pipe.exporters}, wal, self.telemetry)
            self.stages[pname] = stage
            head: Consumer = stage
            procs: list[Component] = []
            for pid in reversed(pipe.processors):
                proc = self._create(Kind.PROCESSOR, pid, head)
                procs.insert(0, proc)
                head = proc  # type: ignore[assignment]
            self.processors[pname] = procs
            queue = IngestQueue(pname, self.config.service.queue, head, self.telemetry, wal)
            self.queues[pname] = queue
            for rid in pipe.receivers:
                feeds.setdefault(rid, []).append(queue)
        for rid, consumers in feeds.items():
            target = consumers[0] if len(consumers) == 1 else FanOut(consumers)
            self.receivers[rid] = self._create(Kind.RECEIVER, rid, target)

    def _pipeline_wal(self, pname: str, exporter_ids: list[str]) -> WriteAheadLog | None:
        """The WAL of a pipeline: configured by any of its exporters (``wal:``), all alike."""
        configs = [(eid, getattr(self.config.exporters[eid], "wal", None)) for eid in exporter_ids]
        configs = [(eid, c) for eid, c in configs if isinstance(c, WalConfig) and c.enabled()]
        if not configs:
            return None
        first_id, first = configs[0]
        for eid, c in configs[1:]:
            if c != first:
                raise ValueError(f"service::pipelines::{pname}: exporters {first_id} and {eid} configure different "
                                 f"wal settings; a pipeline has one write-ahead log, configure it alike (or on one)")
        sub = re.sub(r"[^A-Za-z0-9_.-]", "_", pname)
        return WriteAheadLog(Path(first.directory) / sub, first, self.telemetry, name=pname)

    def start(self) -> None:
        """Start everything, replay the WALs, then open the receivers; on failure, shut down what
        started and re-raise."""
        with self._lock:
            started: list[Component] = []
            receivers = set(map(id, self.receivers.values()))
            try:
                order = self._start_order()
                for comp in order:
                    if id(comp) in receivers:
                        continue
                    comp.start()
                    started.append(comp)
                self._replay()
                for comp in order:
                    if id(comp) in receivers:
                        comp.start()
                        started.append(comp)
            except Exception:
                for comp in reversed(started):
                    _safe_shutdown(comp)
                for wal in self.wals.values():
                    _safe_close(wal)
                raise
            self._started = True
        log.info("otelproc started: %d receivers, %d pipelines, %d exporters",
                 len(self.receivers), len(self.queues), len(self.exporters))

    def _start_order(self) -> list[Component]:
        order: list[Component] = list(self.extensions.values()) + list(self.exporters.values())
        for pname, procs in self.processors.items():
            order += list(reversed(procs))
            order.append(self.queues[pname])
        order += list(self.receivers.values())
        return order

    def _replay(self) -> None:
        """Send what the WALs hold unacknowledged through the pipelines again, in order, as the
        batches they formed before (recorded boundaries handed to the batch processors)."""
        from otelproc.processors.batch import BatchProcessor

        for pname, queue in self.queues.items():
            plan = queue.replay_plan
            if plan is None or not len(plan):
                continue
            batchers = [p for p in self.processors[pname] if isinstance(p, BatchProcessor)]
            for bp in batchers:
                bp.set_replay_boundaries(plan.boundaries)
            n = 0
            for seq, batch in plan.batches():
                queue.put_replayed(replace(batch, wal_seq=(queue.wal.id, seq, seq)))
                n += len(batch)
            for bp in batchers:
                bp.replay_done()
            queue.replay_plan = None
            log.info("pipeline %s: replayed %d log records from the write-ahead log (%d batches recorded)",
                     pname, n, len(plan.boundaries))

    def shutdown(self) -> None:
        """Stop accepting, drain, flush, close. Idempotent.

        With a WAL, exporters stop retrying first: a batch whose store is down stays in the WAL
        (replayed at the next start) instead of holding up the shutdown.
        """
        with self._lock:
            for comp in self.receivers.values():
                _safe_shutdown(comp)
            for pname, stage in self.stages.items():
                if stage.wal is not None:
                    stage.stop_retrying()
                    for exp in stage.exporters.values():
                        stop = getattr(exp, "stop_retrying", None)
                        if stop is not None:
                            stop()
            for pname, queue in self.queues.items():
                _safe_shutdown(queue)
                for proc in self.processors[pname]:
                    _safe_shutdown(proc)
            for comp in self.exporters.values():
                _safe_shutdown(comp)
            for wal in self.wals.values():
                _safe_close(wal)
            for comp in self.extensions.values():
                _safe_shutdown(comp)
            self.context.stores.close_all()
            if self._started:
                log.info("otelproc stopped")
            self._started = False

    def idle(self) -> bool:
        """True when every queue is empty and no worker is busy (the batch buffers may still hold data)."""
        return all(q.idle() for q in self.queues.values())

    def health(self) -> dict:
        """What /readyz reports: started, and every exporter's store reachable.

        ``{"ready": bool, "failing": {exporter: last error}, "queued_records": {pipeline: n},
        "wal_unacknowledged": {pipeline: n}}``
        """
        failing: dict[str, str] = {}
        for stage in self.stages.values():
            failing.update(stage.failing)
        for eid, exp in self.exporters.items():
            err = getattr(exp, "last_error", None)
            if err:
                failing.setdefault(eid, err)
        return {
            "ready": bool(self._started) and not failing,
            "failing": failing,
            "queued_records": {p: q.queued_records for p, q in self.queues.items()},
            "wal_unacknowledged": {p: max(0, w.last_seq - w.acked) for p, w in self.wals.items()},
        }

    def ready(self) -> bool:
        """Started and no exporter failing (for /readyz)."""
        return self.health()["ready"]


def _safe_close(wal: WriteAheadLog) -> None:
    try:
        wal.close()
    except Exception:
        log.exception("closing the write-ahead log %s failed", wal.directory)


def _safe_shutdown(comp: Component) -> None:
    try:
        comp.shutdown()
    except Exception:
        log.exception("shutdown of %s failed", comp.name)
