"""Builds the running service from a config: the only place that wires components.

    receiver threads ──decode──▶ IngestQueue ──▶ worker thread: processors ... ──▶ exporters
                                 (bounded: full => 429)        (batch: own send thread)

Receivers decode on their own threads (the Numba scanner releases the GIL) and
hand batches to a bounded :class:`IngestQueue` per pipeline; one worker thread
per pipeline runs the processors in order, so processors see one batch at a
time and need no locks. A ``batch`` processor hands merged batches to the
exporters on a thread of its own, so mining overlaps with the ClickHouse insert.

Start order: extensions, exporters, processors, queues, receivers. Shutdown is the
reverse: receivers stop accepting, queues drain, processors flush, exporters close,
extensions stop.
"""
from __future__ import annotations

import logging
import threading
from collections import deque
from typing import Sequence

from otelproc.batch import LogBatch
from otelproc.component import BackPressureError, Component, Consumer, Context, Kind, PermanentError
from otelproc.config import OtelprocConfig, QueueConfig
from otelproc.registry import factories
from otelproc.telemetry import Telemetry

log = logging.getLogger(__name__)


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


class IngestQueue(Component):
    """Bounded hand-off from receiver threads to one pipeline's worker thread.

    ``consume`` never blocks: when ``max_records`` are waiting it raises
    BackPressureError, which receivers answer with 429 / RESOURCE_EXHAUSTED.
    """

    def __init__(self, name: str, config: QueueConfig, next_consumer: Consumer, telemetry: Telemetry | None):
        super().__init__(name)
        self.config = config
        self.next_consumer = next_consumer
        self._items: deque[LogBatch] = deque()
        self._records = 0
        self._cond = threading.Condition()
        self._accepting = False
        self._stopping = False
        self._busy = False
        self._thread: threading.Thread | None = None
        t = telemetry
        self._m_size = t.gauge("otelproc_queue_records", "Records waiting for the processors", ("pipeline",)) if t else None
        self._m_dropped = t.counter("otelproc_pipeline_dropped_records", "Records lost after acceptance (processing or export failed)", ("pipeline", "reason")) if t else None

    def start(self) -> None:
        self._accepting = True
        self._thread = threading.Thread(target=self._run, name=f"pipeline-{self.name}", daemon=True)
        self._thread.start()

    def consume(self, batch: LogBatch) -> None:
        with self._cond:
            if not self._accepting:
                raise BackPressureError("otelproc is shutting down", self.config.retry_after)
            if self._records and self._records + len(batch) > self.config.max_records:
                raise BackPressureError(f"pipeline {self.name}: {self._records} records queued (max_records "
                                        f"{self.config.max_records}); retry later", self.config.retry_after)
            self._items.append(batch)
            self._records += len(batch)
            if self._m_size:
                self._m_size.labels(self.name).set(self._records)
            self._cond.notify()

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
                batch = self._items.popleft()
                self._busy = True
            try:
                self.next_consumer.consume(batch)
            except Exception as e:
                reason = "permanent" if isinstance(e, PermanentError) else "error"
                log.error("pipeline %s: %d records could not be processed: %s", self.name, len(batch), e,
                          exc_info=not isinstance(e, PermanentError))
                if self._m_dropped:
                    self._m_dropped.labels(self.name, reason).inc(len(batch))
            finally:
                with self._cond:
                    self._busy = False
                    self._records -= len(batch)
                    if self._m_size:
                        self._m_size.labels(self.name).set(self._records)
                    self._cond.notify_all()

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
        self.config = config
        self.telemetry = telemetry or Telemetry()
        from otelproc.store import StoreRegistry

        self.context = Context(telemetry=self.telemetry, stores=StoreRegistry(), config=config)
        self.extensions: dict[str, Component] = {}
        self.receivers: dict[str, Component] = {}
        self.exporters: dict[str, Component] = {}
        self.processors: dict[str, list[Component]] = {}   # pipeline -> processors in order
        self.queues: dict[str, IngestQueue] = {}
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
            head: Consumer = FanOut([self.exporters[e] for e in pipe.exporters]) \
                if len(pipe.exporters) > 1 else self.exporters[pipe.exporters[0]]
            procs: list[Component] = []
            for pid in reversed(pipe.processors):
                proc = self._create(Kind.PROCESSOR, pid, head)
                procs.insert(0, proc)
                head = proc  # type: ignore[assignment]
            self.processors[pname] = procs
            queue = IngestQueue(pname, self.config.service.queue, head, self.telemetry)
            self.queues[pname] = queue
            for rid in pipe.receivers:
                feeds.setdefault(rid, []).append(queue)
        for rid, consumers in feeds.items():
            target = consumers[0] if len(consumers) == 1 else FanOut(consumers)
            self.receivers[rid] = self._create(Kind.RECEIVER, rid, target)

    def start(self) -> None:
        """Start everything; on failure, shut down what started and re-raise."""
        with self._lock:
            started: list[Component] = []
            try:
                for comp in self._start_order():
                    comp.start()
                    started.append(comp)
            except Exception:
                for comp in reversed(started):
                    _safe_shutdown(comp)
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

    def shutdown(self) -> None:
        """Stop accepting, drain, flush, close. Idempotent."""
        with self._lock:
            for comp in self.receivers.values():
                _safe_shutdown(comp)
            for pname, queue in self.queues.items():
                _safe_shutdown(queue)
                for proc in self.processors[pname]:
                    _safe_shutdown(proc)
            for comp in self.exporters.values():
                _safe_shutdown(comp)
            for comp in self.extensions.values():
                _safe_shutdown(comp)
            self.context.stores.close_all()
            if self._started:
                log.info("otelproc stopped")
            self._started = False

    def idle(self) -> bool:
        """True when every queue is empty and no worker is busy (the batch buffers may still hold data)."""
        return all(q.idle() for q in self.queues.values())

    def component(self, cid: str) -> Component:
        """A receiver/exporter by id, or a processor as ``<pipeline>::<processor id>``."""
        if cid in self.receivers:
            return self.receivers[cid]
        if cid in self.exporters:
            return self.exporters[cid]
        pname, _, pid = cid.partition("::")
        for proc in self.processors.get(pname, []):
            if proc.name == pid:
                return proc
        raise KeyError(cid)


def _safe_shutdown(comp: Component) -> None:
    try:
        comp.shutdown()
    except Exception:
        log.exception("shutdown of %s failed", comp.name)
