"""The ``debug`` exporter: writes what it receives to otelproc's log (as the Collector's).

    exporters:
      debug: {verbosity: basic}     # basic: one line per batch; detailed: every record
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

from otelproc.batch import LogBatch
from otelproc.component import Exporter, Factory, Kind

log = logging.getLogger(__name__)


@dataclass
class DebugExporterConfig:
    # basic: a line per batch; normal: plus a line per derived table and finding; detailed: every record
    verbosity: Literal["basic", "normal", "detailed"] = "basic"


class DebugExporter(Exporter):
    def __init__(self, name: str, config: DebugExporterConfig):
        super().__init__(name)
        self.config = config
        self.records = 0  # total seen, for tests and the CLI

    def consume(self, batch: LogBatch) -> None:
        self.records += len(batch)
        log.info("%s: %d log records, %d services, columns %s, tables %s, %d findings", self.name, len(batch),
                 len(batch.services), sorted(batch.columns), {k: t.num_rows for k, t in batch.tables.items()},
                 len(batch.findings))
        if self.config.verbosity == "basic":
            return
        for f in batch.findings:
            log.info("%s: finding %s", self.name, f)
        if self.config.verbosity == "detailed":
            names = batch.service_names
            ev = batch.event_ns
            for i in range(len(batch)):
                event = f" event={batch.event_name[i]}" if batch.event_name[i] else ""
                log.info("%s: %d %s sev=%d%s %s attrs=%s", self.name, ev[i], names[i], batch.severity_number[i],
                         event, batch.body[i], batch.log_attrs.row(i))


factory = Factory(type="debug", kind=Kind.EXPORTER, config_class=DebugExporterConfig,
                  create=lambda name, config, next_consumer, context: DebugExporter(name, config), stability="beta")
