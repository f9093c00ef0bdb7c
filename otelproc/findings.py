"""Findings: what detectors conclude (anomalies, new patterns, trends, critical matches).

Detectors (the ``anomaly`` and ``patterns`` processors) emit findings to a
:class:`FindingSink`; the alerting engine is one sink, the ``anomalies`` table
another. The pipeline wires sinks; processors never know who listens.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Protocol, Sequence


class FindingKind(str, enum.Enum):
    SPIKE = "spike"                    # rate far above expected
    DROP = "drop"                      # rate far below expected
    LEVEL_SHIFT = "level_shift"        # sustained change of level (change point)
    NEW_PATTERN = "new_pattern"        # first seen after warm-up
    RARE_PATTERN = "rare_pattern"
    VANISHED_PATTERN = "vanished_pattern"
    ERROR_RATIO = "error_ratio"        # error share of a service jumped
    VALUE_ANOMALY = "value_anomaly"    # a numeric template parameter (latency, size) is abnormal
    TREND = "trend"                    # sustained relative creep (e.g. latency +2 %/hour)
    CRITICAL_MATCH = "critical_match"  # a critical-pattern rule matched on ingest


class Severity(str, enum.Enum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


@dataclass
class Finding:
    """One conclusion about one series at one (event) time."""

    time_ns: int                 # event time the finding refers to (bucket start or record time)
    kind: FindingKind
    service: str
    score: float                 # 0..1, how sure / how extreme
    severity: Severity = Severity.WARNING
    pattern_id: int = 0          # 0 when not about a pattern
    template: str = ""
    observed: float = float("nan")
    expected: float = float("nan")
    lower: float = float("nan")
    upper: float = float("nan")
    description: str = ""
    sample: str = ""             # a sample log body
    labels: dict[str, str] = field(default_factory=dict)  # extra labels (team, parameter, ...)


class FindingSink(Protocol):
    def emit(self, findings: Sequence[Finding]) -> None: ...
