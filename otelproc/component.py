"""The component model, as in the OpenTelemetry Collector.

Every receiver, processor and exporter is created from a typed config by a
:class:`Factory` (no I/O at creation), then goes through ``start()`` (connect,
create schema, start threads; returns fast) → ``consume(batch)`` →
``shutdown()`` (idempotent, safe without start, flushes downstream).

Errors travel *backwards* as exceptions and are mapped to protocol answers in
one place (``otelproc.receivers.errors``):

* :class:`PermanentError`   - the data is bad; never retry (HTTP 400, INVALID_ARGUMENT)
* :class:`BackPressureError` - full right now; retry later (HTTP 429, RESOURCE_EXHAUSTED)
* any other exception        - transient failure (HTTP 503, UNAVAILABLE)
"""
from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Callable, Protocol

from otelproc.batch import LogBatch


class Kind(str, enum.Enum):
    EXTENSION = "extensions"
    RECEIVER = "receivers"
    PROCESSOR = "processors"
    EXPORTER = "exporters"


class PermanentError(Exception):
    """The input can never be accepted (malformed, invalid): drop it, tell the client, don't retry."""


class BackPressureError(Exception):
    """Temporarily full: the client should retry after ``retry_after`` seconds."""

    def __init__(self, message: str, retry_after: float = 1.0):
        super().__init__(message)
        self.retry_after = retry_after


class Consumer(Protocol):
    def consume(self, batch: LogBatch) -> None: ...


class Component:
    """Base lifecycle. Subclasses override what they need."""

    def __init__(self, name: str):
        self.name = name

    def start(self) -> None:  # noqa: D401 - lifecycle hook
        """Connect / start background work. Must return fast."""

    def shutdown(self) -> None:
        """Stop background work and flush. Idempotent; safe without start()."""


class Receiver(Component):
    """Turns network input into LogBatches and hands them to ``next_consumer``."""

    def __init__(self, name: str, next_consumer: Consumer):
        super().__init__(name)
        self.next_consumer = next_consumer


class Processor(Component):
    """Transforms/extends a batch and passes it on to ``next_consumer``."""

    def __init__(self, name: str, next_consumer: Consumer):
        super().__init__(name)
        self.next_consumer = next_consumer

    def consume(self, batch: LogBatch) -> None:
        self.next_consumer.consume(batch)


class Extension(Component):
    """Outside the data path: serves something next to the pipelines (e.g. a query endpoint)."""


class Exporter(Component):
    """The end of a pipeline: writes batches somewhere."""

    # set by the pipeline when its write-ahead log keeps each batch and its export stage retries it
    # (otelproc.retry): the exporter then tries once per consume, so retries are never nested
    retry_in_pipeline: bool = False

    def consume(self, batch: LogBatch) -> None:
        raise NotImplementedError


@dataclass(frozen=True)
class Factory:
    """How to build one component type from its config.

    type:         the YAML key (``otlp``, ``batch``, ``clickhouse``...)
    kind:         extensions / receivers / processors / exporters
    config_class: a dataclass; its fields are the YAML keys, its defaults the defaults
    create:       (name, config, next_consumer or None, context) -> Component
    """

    type: str
    kind: Kind
    config_class: type
    create: Callable[..., Component]
    stability: str = "alpha"


@dataclass
class Context:
    """What the pipeline gives every component at creation (shared services, no data path)."""

    telemetry: Any = None  # otelproc.telemetry.Telemetry
    stores: Any = None     # otelproc.store.StoreRegistry: one store per distinct store config
    config: Any = None     # the whole OtelprocConfig (extensions look up e.g. an exporter's store settings)
