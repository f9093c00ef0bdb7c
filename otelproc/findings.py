"""Findings: what detectors conclude (anomalies, new patterns, trends, critical matches).

Detectors (the ``anomaly`` and ``patterns`` processors) attach findings to the batch
(``LogBatch.findings``); the alerting processor further down the pipeline reads them and the
``anomalies`` table stores them. Processors never know who listens.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field


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
    # attribute values and patterns that carry the finding (otelproc/anomaly/explain.py): dicts with
    # attribute, value, count, baseline_count, share, baseline_share, lift, log10_p, also, population
    explanation: list[dict] = field(default_factory=list)


# the explanation entries' attribute for a co-occurring pattern (the id as 16 hex digits, as the views print it)
PATTERN_ATTRIBUTE = "log.pattern.id"
_POPULATION_TEXT = {"errors": "of errors", "pattern errors": "of the pattern's lines", "lines": "of lines"}


def explanation_text(entries: list[dict], limit: int = 3) -> str:
    """One line for alert annotations and descriptions, e.g. ``k8s.pod.name=checkout-2 (also
    host.name=node-7): 96 % of errors vs 31 % before (x3.1, p=1e-25); with pattern 4f1e...: ...``."""
    parts = []
    attrs = [e for e in entries if e["attribute"] != PATTERN_ATTRIBUTE][:limit]
    pats = [e for e in entries if e["attribute"] == PATTERN_ATTRIBUTE][:limit]
    for e in attrs + pats:
        what = f"pattern {e['value']}" if e["attribute"] == PATTERN_ATTRIBUTE else f"{e['attribute']}={e['value']}"
        if e["also"]:
            what += f" (also {', '.join(e['also'][:3])})"
        parts.append(f"{what}: {100 * e['share']:.0f} % {_POPULATION_TEXT.get(e['population'], '')} vs "
                     f"{100 * e['baseline_share']:.0f} % before (x{e['lift']:.3g}, p=1e{e['log10_p']:.0f})")
    return "; ".join(parts)
