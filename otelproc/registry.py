"""Every component type otelproc knows, by (kind, type). The pipeline builds from this table only."""
from __future__ import annotations

import importlib
from functools import lru_cache

from otelproc.component import Factory, Kind

# Each module defines a module-level ``factory``. Add new components here.
COMPONENT_MODULES = (
    "otelproc.receivers.otlp",
    "otelproc.processors.batch",
    "otelproc.processors.patterns",
    "otelproc.processors.anomaly",
    "otelproc.processors.alerting",
    "otelproc.exporters.clickhouse",
    "otelproc.exporters.otlphttp",
    "otelproc.exporters.debug",
    "otelproc.extensions.query_endpoint",
    "otelproc.extensions.loki",
)


@lru_cache(maxsize=1)
def factories() -> dict[tuple[Kind, str], Factory]:
    out: dict[tuple[Kind, str], Factory] = {}
    for mod in COMPONENT_MODULES:
        fac: Factory = importlib.import_module(mod).factory
        out[(fac.kind, fac.type)] = fac
    return out
