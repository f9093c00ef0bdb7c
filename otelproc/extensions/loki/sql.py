"""LogQL -> ClickHouse SQL over otelproc's ``otel_logs`` table.

How Loki's labels map onto the OpenTelemetry columns (as Loki's own OTLP ingestion maps them):

* ``service_name`` -> ``ServiceName`` (the table's first key column, so selectors on it prune by key);
* stream labels: the resource attributes listed in ``index_labels`` (Loki's default list of resource
  attributes it indexes), dots and other characters outside ``[A-Za-z0-9_]`` written as ``_``;
* ``level`` / ``detected_level`` -> the severity (``SeverityNumber`` class, else ``SeverityText``),
  named as Loki names levels: trace, debug, info, warn, error, fatal, unknown;
* ``scope_name`` -> ``ScopeName``; ``severity_text``, ``trace_id``, ``span_id`` -> their columns;
* any other name: a resource, log or scope attribute whose key, written with ``_``, is that name
  (Loki's structured metadata);
* after ``| json`` / ``| logfmt``: also the fields those parsers extract from ``Body`` (nested JSON
  objects flattened with ``_`` as Loki does; a stream label or attribute of the same name wins).

Every value travels as a server-side parameter; only identifiers we generate and integers are
written into the SQL text. Every query filters ``TimestampTime`` (the partition and second key
column) as well as the exact ``Timestamp``, and selectors on ``service_name`` become
``ServiceName`` conditions, so ClickHouse reads only the parts and granules of the asked range.
"""
from __future__ import annotations

import re
from typing import Iterable, Sequence

from otelproc.extensions.loki.logql import (LabelFilter, LabelFilterExpr, LineFilter, LogQuery, Matcher, Parser,
                                            pattern_parts, pattern_regex)

__all__ = ["LOKI_INDEX_LABELS", "Translator", "sanitize_label", "level_sql", "ERROR_LABELS"]

# Loki's default resource attributes stored as index (stream) labels (distributor otlp_config default);
# every other attribute is structured metadata.
LOKI_INDEX_LABELS = (
    "service.name", "service.namespace", "service.instance.id", "deployment.environment",
    "deployment.environment.name", "cloud.region", "cloud.availability_zone", "k8s.cluster.name",
    "k8s.namespace.name", "k8s.pod.name", "k8s.container.name", "container.name", "k8s.replicaset.name",
    "k8s.deployment.name", "k8s.statefulset.name", "k8s.daemonset.name", "k8s.cronjob.name", "k8s.job.name",
)

# labels Loki's parsers add on failure; otelproc's extraction never fails (a line that is not JSON simply
# yields no JSON fields), so these are always empty
ERROR_LABELS = ("__error__", "__error_details__")

_LABEL_BAD = re.compile(r"[^A-Za-z0-9_]")


def sanitize_label(key: str) -> str:
    """An attribute key as a Loki label name (``k8s.pod.name`` -> ``k8s_pod_name``)."""
    out = _LABEL_BAD.sub("_", key)
    return "_" + out if out[:1].isdigit() else out


def level_sql(number: str = "SeverityNumber", text: str = "SeverityText") -> str:
    """Loki's level name of a row: from the OpenTelemetry severity number class, else the severity text."""
    norm = (f"multiIf(lower({text}) IN ('warning', 'warn'), 'warn', lower({text}) IN ('err', 'error'), 'error', "
            f"lower({text}) IN ('information', 'info'), 'info', lower({text}) IN ('dbg', 'debug'), 'debug', "
            f"lower({text}) IN ('crit', 'critical'), 'critical', lower({text}) = '', 'unknown', lower({text}))")
    return (f"multiIf({number} = 0, {norm}, {number} <= 4, 'trace', {number} <= 8, 'debug', {number} <= 12, "
            f"'info', {number} <= 16, 'warn', {number} <= 20, 'error', 'fatal')")


LEVEL_SQL = level_sql()
_COLUMN_LABELS = {
    "service_name": "ServiceName",
    "level": LEVEL_SQL,
    "detected_level": LEVEL_SQL,
    "scope_name": "ScopeName",
    "severity_text": "SeverityText",
    "trace_id": "TraceId",
    "span_id": "SpanId",
}
_ATTRIBUTE_MAPS = ("ResourceAttributes", "LogAttributes", "ScopeAttributes")


class Translator:
    """Builds WHERE conditions and label expressions; collects the query parameters in ``params``."""

    def __init__(self, index_labels: Sequence[str] = LOKI_INDEX_LABELS):
        self.params: dict[str, object] = {}
        self.index_keys = tuple(k for k in index_labels if k != "service.name")

    # -- parameters
    def p(self, value: object, typ: str = "String") -> str:
        name = f"p{len(self.params)}"
        self.params[name] = value
        return f"{{{name}:{typ}}}"

    # -- labels
    def attribute_sql(self, name: str) -> str:
        """The value of the attribute whose Loki label name is ``name`` ('' when the row has none)."""
        branches: list[str] = []
        candidates = [name]
        if "_" in name and name.replace("_", ".") not in candidates:
            candidates.append(name.replace("_", "."))
        for column in _ATTRIBUTE_MAPS:
            for key in candidates:
                k = self.p(key)
                branches += [f"mapContains({column}, {k})", f"{column}[{k}]"]
        if "_" in name:
            # keys that are not plain dotted names (http.status_code, user-id): compare their label form
            n = self.p(name)
            for column in _ATTRIBUTE_MAPS:
                hit = f"arrayFirst(k -> replaceRegexpAll(k, '[^A-Za-z0-9_]', '_') = {n}, mapKeys({column}))"
                branches += [f"{hit} != ''", f"{column}[{hit}]"]
        return f"multiIf({', '.join(branches)}, '')"

    def parsed_sql(self, name: str, parsers: Sequence[Parser]) -> str:
        """The value the parsers (in their order; the first that yields one wins) extract for ``name``."""
        exprs = []
        for parser in parsers:
            kind = parser.kind
            if kind == "pattern":
                if any(k == "capture" and n == name for k, n in pattern_parts(parser.expression)):
                    exprs.append(f"extract(Body, {self.p(pattern_regex(parser.expression, name))})")
            elif kind == "json":
                paths = [[name]] + ([name.split("_")] if "_" in name.strip("_") else [])
                for path in paths:
                    args = ", ".join(self.p(part) for part in path)
                    exprs.append(f"multiIf(JSONType(Body, {args}) = 'String', JSONExtractString(Body, {args}), "
                                 f"JSONType(Body, {args}) IN ('Int64', 'UInt64', 'Double', 'Bool'), "
                                 f"JSONExtractRaw(Body, {args}), '')")
            elif kind == "logfmt":
                pattern = self.p(r'(?:^|\s)' + re.escape(name) + r'=("(?:[^"\\]|\\.)*"|\S*)')
                raw = f"extract(Body, {pattern})"
                exprs.append(f"if(startsWith({raw}, '\"'), replaceAll(substring({raw}, 2, length({raw}) - 2), "
                             f"'\\\\\"', '\"'), {raw})")
        if not exprs:
            return "''"
        if len(exprs) == 1:
            return exprs[0]
        return f"arrayFirst(x -> x != '', [{', '.join(exprs)}])"

    def label_sql(self, name: str, parsers: Sequence[Parser] = ()) -> str:
        """SQL for the value of label ``name`` ('' when absent) given the parsers run so far."""
        if name in _COLUMN_LABELS:
            return _COLUMN_LABELS[name]
        if name in ERROR_LABELS:
            return "''"
        attr = self.attribute_sql(name)
        if not parsers:
            return attr
        return f"if(({attr}) != '', ({attr}), {self.parsed_sql(name, parsers)})"

    # -- conditions
    def string_match(self, expr: str, op: str, value: str) -> str:
        if op == "=":
            return f"({expr}) = {self.p(value)}"
        if op == "!=":
            return f"({expr}) != {self.p(value)}"
        anchored = self.p(f"^(?:{value})$")
        if op == "=~":
            return f"match({expr}, {anchored})"
        if op == "!~":
            return f"NOT match({expr}, {anchored})"
        raise ValueError(op)

    def matcher_sql(self, m: Matcher) -> str:
        return self.string_match(self.label_sql(m.name), m.op, m.value)

    def line_filter_sql(self, f: LineFilter) -> str:
        if f.op in ("|=", "!="):
            if any(v == "" for v in f.values):
                anyof = "1"
            else:
                anyof = " OR ".join(f"position(Body, {self.p(v)}) > 0" for v in f.values)
        elif f.op in ("|>", "!>"):   # a pattern is a whole-line LIKE: literals in order, <_> = any text
            anyof = " OR ".join(f"Body LIKE {self.p(pattern_like(v))}" for v in f.values)
        else:
            anyof = " OR ".join(f"match(Body, {self.p(v)})" for v in f.values)
        return f"({anyof})" if f.op in ("|=", "|~", "|>") else f"NOT ({anyof})"

    def label_filter_sql(self, f: LabelFilter | LabelFilterExpr, parsers: Sequence[Parser]) -> str:
        if isinstance(f, LabelFilterExpr):
            return (f"(({self.label_filter_sql(f.left, parsers)}) {f.op.upper()} "
                    f"({self.label_filter_sql(f.right, parsers)}))")
        expr = self.label_sql(f.name, parsers)
        if isinstance(f.value, str):
            return self.string_match(expr, f.op, f.value)
        op = "=" if f.op == "==" else f.op
        return f"ifNull(toFloat64OrNull({expr}) {op} {self.p(float(f.value), 'Float64')}, 0)"

    def query_where(self, q: LogQuery) -> list[str]:
        """Conditions for a log query's selector and pipeline (drop/keep do not filter)."""
        out = [self.matcher_sql(m) for m in q.matchers]
        parsers: list[Parser] = []
        for stage in q.stages:
            if isinstance(stage, LineFilter):
                out.append(self.line_filter_sql(stage))
            elif isinstance(stage, Parser):
                if stage not in parsers:
                    parsers.append(stage)
            elif isinstance(stage, (LabelFilter, LabelFilterExpr)):
                out.append(self.label_filter_sql(stage, parsers))
        return out

    def time_where(self, lo_ns: int, hi_ns: int, *, lo_open: bool = False, hi_open: bool = True) -> list[str]:
        """``lo <= Timestamp < hi`` (or ``lo < ... <= hi``), also on TimestampTime for part/key pruning."""
        lo_s, hi_s = lo_ns // 1_000_000_000, hi_ns // 1_000_000_000
        lo_op, hi_op = (">" if lo_open else ">="), ("<" if hi_open else "<=")
        return [f"TimestampTime >= toDateTime({int(lo_s)})", f"TimestampTime <= toDateTime({int(hi_s)})",
                f"Timestamp {lo_op} fromUnixTimestamp64Nano(toInt64({int(lo_ns)}))",
                f"Timestamp {hi_op} fromUnixTimestamp64Nano(toInt64({int(hi_ns)}))"]

    def stream_labels_sql(self, column: str = "ResourceAttributes") -> str:
        """The resource attributes that are stream labels, as a Map (service.name is ServiceName)."""
        keys = ", ".join(self.p(k) for k in self.index_keys)
        return f"mapFilter((k, v) -> has([{keys}], k), {column})" if keys else "map()"


def pattern_like(expression: str) -> str:
    """A Loki pattern as an SQL LIKE pattern (captures match any text, the whole line must match)."""
    return "".join("%" if kind == "capture" else re.sub(r"([%_\\])", r"\\\1", text)
                   for kind, text in pattern_parts(expression))


def parsers_of(q: LogQuery) -> list[Parser]:
    out: list[Parser] = []
    for stage in q.stages:
        if isinstance(stage, Parser) and stage not in out:
            out.append(stage)
    return out


def where_clause(conds: Iterable[str]) -> str:
    conds = [c for c in conds if c]
    return " AND ".join(conds) if conds else "1"
