"""The endpoints of Loki's read API over a :class:`otelproc.store.Store` (no HTTP here: see ``__init__``).

Each public method takes the request's parameters (a multi-dict: name -> list of values) and returns
the JSON document Loki returns, or raises :class:`APIError` (status + message, Loki's wording).
"""
from __future__ import annotations

import json
import math
import re
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from otelproc.extensions.loki import logql
from otelproc.extensions.loki.logql import (BinaryOp, Drop, Keep, Literal, LogQLError, LogQuery, RangeAggregation,
                                            VectorAggregation, VectorLiteral)
from otelproc.extensions.loki.sql import (ERROR_LABELS, LEVEL_SQL, LOKI_INDEX_LABELS, Translator, level_sql,
                                          parsers_of, sanitize_label, where_clause)
from otelproc.store import Store, StoreError

__all__ = ["APIError", "Limits", "LokiAPI", "parse_time_ns", "parse_step_ns", "format_value"]

NS = 1_000_000_000
DEFAULT_LOOKBACK_NS = 3600 * NS           # query_range without start: the last hour (Loki)
DEFAULT_LABELS_LOOKBACK_NS = 6 * 3600 * NS  # /labels, /label/x/values, /series without start: 6 hours (Loki)
MAX_POINTS = 11_000                        # Loki: "exceeded maximum resolution of 11,000 points per timeseries"
MAX_BUCKETS = 2_000_000                    # fine buckets one range aggregation may need (step/range gcd)
SERIES_LABEL_VALUES_LIMIT = 10_000
PATTERN_MINUTE = 60


class APIError(Exception):
    """An answer that is not 200: ``status`` and Loki's message."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Limits:
    max_entries: int = 5000          # Loki max_entries_limit_per_query
    max_series: int = 500            # Loki max_query_series
    max_bytes_read: int = 0          # bytes ClickHouse may read for one query; 0 = no limit
    timeout_s: float = 60.0          # Loki query_timeout
    detected_fields_lines: int = 1000  # lines sampled by /detected_fields (Loki's line_limit default)


# --------------------------------------------------------------------------- parameters

def parse_time_ns(value: str | None, default: int, name: str = "time") -> int:
    """A timestamp in any form Loki takes: ns epoch (more than 10 digits), s epoch (10 or fewer
    digits), float seconds, or RFC3339(Nano)."""
    if value is None or value == "":
        return default
    v = value.strip()
    try:
        if "." in v and re.fullmatch(r"-?\d+\.\d*", v):
            whole, _, frac = v.partition(".")
            frac = (frac + "000000000")[:9]
            sign = -1 if whole.startswith("-") else 1
            return int(whole) * NS + sign * int(frac)
        if re.fullmatch(r"-?\d+", v):
            n = int(v)
            return n * NS if len(v.lstrip("-")) <= 10 else n
        m = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)", v)
        if m:
            base = datetime.fromisoformat(m.group(1) + ("+00:00" if m.group(3) == "Z" else m.group(3)))
            return int(base.timestamp()) * NS + int((m.group(2) or "0").ljust(9, "0"))
    except (ValueError, OverflowError):
        pass
    raise APIError(400, f"invalid {name} {value!r}: use a Unix epoch in nanoseconds or seconds, float seconds "
                        f"or RFC3339 (2024-01-02T15:04:05Z)")


def parse_step_ns(value: str | None, name: str = "step") -> int | None:
    """A duration (``30s``, ``1m``, ``60000ms``) or float seconds; None when absent."""
    if value is None or value == "":
        return None
    v = value.strip()
    try:
        ns = logql.parse_duration_ns(v) if re.search(r"[a-zµ]", v) else int(round(float(v) * NS))
    except ValueError:
        raise APIError(400, f"invalid {name} {value!r}: use a duration such as 30s or 1m, or seconds") from None
    if ns <= 0:
        raise APIError(400, "zero or negative query resolution step widths are not accepted. Try a positive "
                            "integer")
    return ns


def default_step_ns(start: int, end: int) -> int:
    """Loki's default step: (end - start) / 250, at least one second, in whole seconds."""
    return max(int((end - start) / NS / 250), 1) * NS


def format_value(v: float) -> str:
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return str(int(v)) if v == int(v) and abs(v) < 1e15 else repr(float(v))


def _seconds(t_ns: int) -> int | float:
    return t_ns // NS if t_ns % NS == 0 else t_ns / NS


def _one(params: Mapping[str, list[str]], name: str) -> str | None:
    values = params.get(name)
    return values[-1] if values else None


def _int_param(params: Mapping[str, list[str]], name: str, default: int) -> int:
    raw = _one(params, name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise APIError(400, f"invalid {name} {raw!r}: must be an integer") from None
    if value <= 0:
        raise APIError(400, f"invalid {name} {raw!r}: must be > 0")
    return value


# --------------------------------------------------------------------------- line parsing (output side)

# logfmt pairs: a key (identifier-like, at the start or after a space), '=', a bare or quoted value
_LOGFMT_RE = re.compile(r'(?:^|(?<=\s))([A-Za-z_][\w.\-]*)=("(?:[^"\\]|\\.)*"|\S*)')


def _flatten_json(obj: Any, prefix: str, out: dict[str, str], paths: dict[str, list[str]], path: list[str]) -> None:
    for k, v in obj.items():
        key = sanitize_label(f"{prefix}_{k}" if prefix else str(k))
        if isinstance(v, dict):
            _flatten_json(v, key, out, paths, path + [str(k)])
        elif isinstance(v, list):
            continue
        else:
            out[key] = "" if v is None else ("true" if v is True else "false" if v is False else str(v))
            paths[key] = path + [str(k)]


def parse_json_line(line: str) -> tuple[dict[str, str], dict[str, list[str]]]:
    """Loki's ``| json`` without parameters: nested objects flattened with ``_``, arrays skipped."""
    try:
        obj = json.loads(line)
    except ValueError:
        return {}, {}
    if not isinstance(obj, dict):
        return {}, {}
    out: dict[str, str] = {}
    paths: dict[str, list[str]] = {}
    _flatten_json(obj, "", out, paths, [])
    return out, paths


def parse_logfmt_line(line: str) -> dict[str, str]:
    out = {}
    for key, raw in _LOGFMT_RE.findall(line):
        if raw.startswith('"') and raw.endswith('"') and len(raw) >= 2:
            raw = raw[1:-1].replace('\\"', '"')
        out[sanitize_label(key)] = raw
    return out


def parse_pattern_line(line: str, expression: str) -> dict[str, str]:
    """Loki's ``| pattern``: the named captures of a line that matches the pattern."""
    names = [n for kind, n in logql.pattern_parts(expression) if kind == "capture"]
    m = re.match(logql.pattern_regex(expression), line)
    if not m:
        return {}
    out: dict[str, str] = {}
    for name, value in zip(names, m.groups()):
        if name:
            out.setdefault(name, value)
    return out


def extract_fields(line: str, parsers: Sequence[logql.Parser]) -> dict[str, str]:
    out: dict[str, str] = {}
    for parser in parsers:
        if parser.kind == "pattern":
            found = parse_pattern_line(line, parser.expression)
        elif parser.kind == "json":
            found = parse_json_line(line)[0]
        else:
            found = parse_logfmt_line(line)
        for k, v in found.items():
            out.setdefault(k, v)
    return out


# --------------------------------------------------------------------------- series arithmetic

Labels = tuple[tuple[str, str], ...]
Series = dict[Labels, np.ndarray]


def _labels(d: Mapping[str, str]) -> Labels:
    return tuple(sorted((k, v) for k, v in d.items() if v != ""))


_BINARY = {"+": np.add, "-": np.subtract, "*": np.multiply, "/": np.true_divide, "%": np.fmod, "^": np.power}


class LokiAPI:
    """Answers Loki's read endpoints from ``store`` (tables ``logs_table``, ``pattern_counts``, ``log_patterns``)."""

    def __init__(self, store: Store, *, logs_table: str = "otel_logs", limits: Limits = Limits(),
                 index_labels: Sequence[str] | None = None, clock: Callable[[], int] = time.time_ns):
        self.store = store
        self.table = logs_table
        self.limits = limits
        self.index_labels = tuple(index_labels) if index_labels is not None else LOKI_INDEX_LABELS
        self.index_keys = tuple(k for k in self.index_labels if k != "service.name")
        self.clock = clock
        self._bytes_expr: str | None = None

    # -- plumbing ------------------------------------------------------------------------------

    def _translator(self) -> Translator:
        return Translator(self.index_labels)

    def _sql(self, sql: str, params: Mapping[str, Any]):
        settings = [f"max_execution_time = {max(1, int(math.ceil(self.limits.timeout_s)))}"]
        if self.limits.max_bytes_read:
            settings.append(f"max_bytes_to_read = {int(self.limits.max_bytes_read)}")
        try:
            return self.store.query_arrow(f"{sql}\nSETTINGS {', '.join(settings)}", dict(params))
        except StoreError as e:
            msg = str(e).split(" [statement:")[0]
            if e.code == 159:
                raise APIError(504, f"query timed out after {self.limits.timeout_s:g}s (query_timeout); "
                                    f"narrow the time range or the selector") from None
            if e.code == 307:
                raise APIError(400, f"the query would read more than {self.limits.max_bytes_read} bytes "
                                    f"(max_bytes_read); narrow the time range or the selector") from None
            if e.code == 60:
                raise APIError(503, f"the store has no table {self.table} yet (is the clickhouse exporter "
                                    f"running with create_schema: true?): {msg}") from None
            raise APIError(500, f"store query failed: {msg}") from None

    def _body_bytes(self) -> str:
        """SQL for a line's size in bytes: the ``Body.size`` subcolumn where the engine has it (it reads the
        lengths, not the text: 2.3x faster over 8M lines), else ``length(Body)``. Probed once."""
        if self._bytes_expr is None:
            try:
                self.store.query_arrow(f"SELECT Body.size FROM {self.table} LIMIT 0")
                self._bytes_expr = "Body.size"
            except StoreError as e:
                if e.code == 60:        # no table yet: decide on a later request
                    return "length(Body)"
                self._bytes_expr = "length(Body)"
        return self._bytes_expr

    def _rows(self, sql: str, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        return self._sql(sql, params).to_pylist()

    def _range(self, params: Mapping[str, list[str]], lookback: int) -> tuple[int, int]:
        now = self.clock()
        end = parse_time_ns(_one(params, "end"), now, "end")
        since = parse_step_ns(_one(params, "since"), "since")
        default_start = (min(end, now) if since else end) - (since or lookback)
        start = parse_time_ns(_one(params, "start"), default_start, "start")
        if end < start:
            raise APIError(400, "end timestamp must not be before or equal to start time")
        return start, end

    @staticmethod
    def _parse(text: str | None) -> LogQuery | logql.MetricExpr:
        if text is None or not text.strip():
            raise APIError(400, "query parameter is required (a LogQL query such as {service_name=\"api\"})")
        try:
            return logql.parse(text)
        except LogQLError as e:
            raise APIError(400, str(e)) from None

    @staticmethod
    def _selector(text: str | None, *, required: bool = False) -> LogQuery | None:
        if text is None or not text.strip():
            if required:
                raise APIError(400, "query parameter is required (a stream selector such as {service_name=\"api\"})")
            return None
        try:
            return logql.parse_selector(text)
        except LogQLError as e:
            raise APIError(400, str(e)) from None

    def _check_selector(self, q: LogQuery) -> None:
        if not q.matchers or all(_empty_compatible(m) for m in q.matchers):
            raise APIError(400, "parse error : queries require at least one regexp or equality matcher that does "
                                "not have an empty-compatible value. For instance, app=~\".*\" does not meet this "
                                "requirement, but app=~\".+\" will")

    def _stats(self, t0: float, entries: int) -> dict:
        return {"summary": {"execTime": round(time.perf_counter() - t0, 6), "queueTime": 0,
                            "totalEntriesReturned": entries}}

    # -- query / query_range --------------------------------------------------------------------

    def query_range(self, params: Mapping[str, list[str]], *, categorize: bool = False) -> dict:
        t0 = time.perf_counter()
        q = self._parse(_one(params, "query"))
        start, end = self._range(params, DEFAULT_LOOKBACK_NS)
        if isinstance(q, LogQuery):
            limit = _int_param(params, "limit", 100)
            direction = (_one(params, "direction") or "backward").lower()
            if direction not in ("forward", "backward"):
                raise APIError(400, f"invalid direction {direction!r}: use forward or backward")
            return self._log_result(q, start, end, limit, direction, categorize, t0)
        step = parse_step_ns(_one(params, "step")) or default_step_ns(start, end)
        if (end - start) // step > MAX_POINTS:
            raise APIError(400, f"exceeded maximum resolution of {MAX_POINTS:,} points per timeseries. Try "
                                f"decreasing the query resolution (?step=XX)")
        steps = np.arange(start, end + 1, step, dtype=np.int64)
        result = self._evaluate(q, steps)
        if isinstance(result, float):
            matrix = [{"metric": {}, "values": [[_seconds(int(t)), format_value(result)] for t in steps]}]
            return self._ok("matrix", matrix, t0, 0)
        matrix = []
        for labels, values in sorted(result.items()):
            pts = [[_seconds(int(t)), format_value(float(v))] for t, v in zip(steps, values) if not np.isnan(v)]
            if pts:
                matrix.append({"metric": dict(labels), "values": pts})
        return self._ok("matrix", matrix, t0, 0)

    def query(self, params: Mapping[str, list[str]], *, categorize: bool = False) -> dict:
        t0 = time.perf_counter()
        q = self._parse(_one(params, "query"))
        at = parse_time_ns(_one(params, "time"), self.clock(), "time")
        if isinstance(q, LogQuery):
            raise APIError(400, "log queries are not supported as an instant query type, please change your "
                                "query to a range query type")
        steps = np.array([at], dtype=np.int64)
        result = self._evaluate(q, steps)
        if isinstance(result, float):
            return {"status": "success", "data": {"resultType": "scalar", "result": [_seconds(at),
                                                                                      format_value(result)],
                                                  "stats": self._stats(t0, 0)}}
        vector = [{"metric": dict(labels), "value": [_seconds(at), format_value(float(values[0]))]}
                  for labels, values in sorted(result.items()) if not np.isnan(values[0])]
        return self._ok("vector", vector, t0, 0)

    def _ok(self, kind: str, result: list, t0: float, entries: int, extra: dict | None = None) -> dict:
        data = {"resultType": kind, "result": result, "stats": self._stats(t0, entries)}
        if extra:
            data.update(extra)
        return {"status": "success", "data": data}

    # -- log queries

    def _log_result(self, q: LogQuery, start: int, end: int, limit: int, direction: str, categorize: bool,
                    t0: float) -> dict:
        self._check_selector(q)
        if limit > self.limits.max_entries:
            raise APIError(400, f"max entries limit per query exceeded, limit > max_entries_limit "
                                f"({limit} > {self.limits.max_entries})")
        tr = self._translator()
        where = where_clause(tr.time_where(start, end) + tr.query_where(q))
        order = "DESC" if direction == "backward" else "ASC"
        sql = (f"SELECT toUnixTimestamp64Nano(Timestamp) AS ts, Body, ServiceName, {tr.stream_labels_sql()} AS sl, "
               f"ResourceAttributes AS ra, LogAttributes AS la, ScopeAttributes AS sa, ScopeName, "
               f"{LEVEL_SQL} AS lvl, SeverityText, TraceId, SpanId FROM {self.table} WHERE {where} "
               f"ORDER BY TimestampTime {order}, Timestamp {order} LIMIT {int(limit)}")
        rows = self._rows(sql, tr.params)
        parsers = parsers_of(q)
        drops = {n for s in q.stages if isinstance(s, Drop) for n in s.names}
        keeps = [set(s.names) for s in q.stages if isinstance(s, Keep)]
        formats = [logql.template_parts(s.template) for s in q.stages if isinstance(s, logql.LineFormat)]
        streams: dict[Labels, list] = {}
        for r in rows:
            stream = self._stream_labels(r)
            meta = self._metadata(r)
            parsed = {}
            if parsers:
                for k, v in extract_fields(r["Body"], parsers).items():
                    parsed[k + "_extracted" if k in stream or k in meta else k] = v
            for group in (stream, meta, parsed):
                for name in list(group):
                    if name in drops or name in ERROR_LABELS or any(name not in keep for keep in keeps):
                        del group[name]
            ts = str(r["ts"])
            line = r["Body"]
            for parts in formats:   # | line_format "{{.a}} ...": the line becomes the template's text
                every = {**stream, **meta, **parsed}
                line = "".join(every.get(text, "") if kind == "label" else text for kind, text in parts)
            if categorize:
                cat = {}
                if meta:
                    cat["structuredMetadata"] = meta
                if parsed:
                    cat["parsed"] = parsed
                streams.setdefault(_labels(stream), []).append([ts, line, cat])
            else:
                streams.setdefault(_labels({**stream, **meta, **parsed}), []).append([ts, line])
        result = [{"stream": dict(k), "values": v} for k, v in streams.items()]
        extra = {"encodingFlags": ["categorize-labels"]} if categorize else None
        return self._ok("streams", result, t0, len(rows), extra)

    def _stream_labels(self, r: Mapping[str, Any]) -> dict[str, str]:
        out = {sanitize_label(k): v for k, v in (r["sl"] or []) if v != ""}
        if r["ServiceName"]:
            out["service_name"] = r["ServiceName"]
        return out

    def _metadata(self, r: Mapping[str, Any]) -> dict[str, str]:
        out: dict[str, str] = {}
        for column in ("sa", "ra", "la"):
            for k, v in r[column] or []:
                if column == "ra" and (k == "service.name" or k in self.index_keys):
                    continue
                if v != "":
                    out[sanitize_label(k)] = v
        for name, column in (("scope_name", "ScopeName"), ("severity_text", "SeverityText"),
                             ("trace_id", "TraceId"), ("span_id", "SpanId")):
            if r[column]:
                out[name] = r[column]
        if r["lvl"] and r["lvl"] != "unknown":
            out["detected_level"] = r["lvl"]
        return out

    # -- metric queries

    def _evaluate(self, e: logql.MetricExpr, steps: np.ndarray) -> Series | float:
        if isinstance(e, Literal):
            return float(e.value)
        if isinstance(e, VectorLiteral):
            return {(): np.full(len(steps), float(e.value))}
        if isinstance(e, RangeAggregation):
            return self._range_series(e, steps, stream=True, extra=())
        if isinstance(e, VectorAggregation):
            return self._aggregate(e, steps)
        if isinstance(e, BinaryOp):
            return self._binary(e, steps)
        raise APIError(400, f"parse error : unsupported expression {type(e).__name__}")

    def _binary(self, e: BinaryOp, steps: np.ndarray) -> Series | float:
        left, right = self._evaluate(e.left, steps), self._evaluate(e.right, steps)
        fn = _BINARY[e.op]
        with np.errstate(all="ignore"):
            if isinstance(left, float) and isinstance(right, float):
                return float(fn(np.float64(left), np.float64(right)))
            if isinstance(left, float):
                return {k: fn(np.float64(left), v) for k, v in right.items()}
            if isinstance(right, float):
                return {k: fn(v, np.float64(right)) for k, v in left.items()}
            return {k: fn(v, right[k]) for k, v in left.items() if k in right}

    def _aggregate(self, e: VectorAggregation, steps: np.ndarray) -> Series:
        inner_expr = e.expr
        if isinstance(inner_expr, RangeAggregation) and e.grouping in ("by", ""):
            if e.op == "sum":   # sums distribute: let ClickHouse group by the wanted labels directly
                inner = self._range_series(inner_expr, steps, stream=False, extra=e.labels)
            else:
                inner = self._range_series(inner_expr, steps, stream=True, extra=e.labels)
        else:
            inner = self._evaluate(inner_expr, steps)
        if isinstance(inner, float):
            raise APIError(400, f"parse error : {e.op} needs a vector, got a scalar")

        def group_key(labels: Labels) -> Labels:
            if e.grouping == "by":
                return tuple((k, v) for k, v in labels if k in e.labels)
            if e.grouping == "without":
                return tuple((k, v) for k, v in labels if k not in e.labels)
            return ()

        groups: dict[Labels, list[tuple[Labels, np.ndarray]]] = {}
        for labels, values in inner.items():
            groups.setdefault(group_key(labels), []).append((labels, values))
        out: Series = {}
        for key, members in groups.items():
            stack = np.vstack([v for _, v in members])
            present = ~np.isnan(stack)
            any_present = present.any(axis=0)
            with np.errstate(all="ignore"):
                if e.op in ("topk", "bottomk"):
                    k = int(e.param or 1)
                    ranked = np.where(present, stack, -np.inf if e.op == "topk" else np.inf)
                    order = np.argsort(-ranked if e.op == "topk" else ranked, axis=0, kind="stable")[:k]
                    for j, (labels, values) in enumerate(members):
                        chosen = (order == j).any(axis=0) & present[j]
                        if chosen.any():
                            out[labels] = np.where(chosen, values, np.nan)
                    continue
                if e.op == "sum":
                    agg = np.nansum(stack, axis=0)
                elif e.op == "count":
                    agg = present.sum(axis=0).astype(float)
                elif e.op == "avg":
                    agg = np.nansum(stack, axis=0) / np.maximum(present.sum(axis=0), 1)
                elif e.op == "min":
                    agg = np.nanmin(np.where(present, stack, np.inf), axis=0)
                else:
                    agg = np.nanmax(np.where(present, stack, -np.inf), axis=0)
            out[key] = np.where(any_present, agg, np.nan)
        self._check_series(len(out))
        return out

    def _check_series(self, n: int) -> None:
        if n > self.limits.max_series:
            raise APIError(400, f"maximum number of series ({self.limits.max_series}) reached for a single query; "
                                f"consider reducing query cardinality by adding more specific stream selectors, "
                                f"reducing the time range, or aggregating results with sum by (...)")

    def _range_series(self, e: RangeAggregation, steps: np.ndarray, *, stream: bool,
                      extra: Sequence[str]) -> Series:
        q = e.query
        self._check_selector(q)
        step = int(steps[1] - steps[0]) if len(steps) > 1 else e.range_ns
        grain = math.gcd(step, e.range_ns)
        origin = int(steps[0]) - e.offset_ns - e.range_ns
        last = int(steps[-1]) - e.offset_ns
        n_buckets = -(-(last - origin) // grain)
        if n_buckets > MAX_BUCKETS:
            raise APIError(400, f"step ({step / NS:g}s) and range ({e.range_ns / NS:g}s) need "
                                f"{n_buckets} buckets per series; use a step that divides the range (or vice versa)")
        keeps = [set(s.names) for s in q.stages if isinstance(s, Keep)]
        drops = {n for s in q.stages if isinstance(s, Drop) for n in s.names}
        if keeps:   # `| keep a, b`: the series carry only those labels
            kept = set.intersection(*keeps)
            stream, extra = False, tuple(n for n in extra if n in kept) if extra else tuple(sorted(kept))
        tr = self._translator()
        parsers = parsers_of(q)
        cols, names = [], []
        if stream:
            cols += ["ServiceName AS l_svc", f"{tr.stream_labels_sql()} AS l_stream"]
        for i, name in enumerate(extra):
            cols.append(f"{tr.label_sql(name, parsers)} AS l{i}")
            names.append(name)
        where = where_clause(tr.time_where(origin, last, lo_open=True, hi_open=False) + tr.query_where(q))
        group = ", ".join([c.rsplit(" AS ", 1)[1] for c in cols] + ["b"])
        sql = (f"SELECT {', '.join(cols + [f'intDiv(toUnixTimestamp64Nano(Timestamp) - {origin} - 1, {grain}) AS b'])}, "
               f"count() AS c, sum({self._body_bytes()}) AS bytes FROM {self.table} WHERE {where} GROUP BY {group}")
        table = self._sql(sql, tr.params)
        data = table.to_pydict()
        n = table.num_rows
        keys: dict[Labels, int] = {}
        idx = np.empty(n, dtype=np.int64)
        for r in range(n):
            labels: dict[str, str] = {}
            if stream:
                labels.update({sanitize_label(k): v for k, v in (data["l_stream"][r] or [])})
                labels["service_name"] = data["l_svc"][r]
            for i, name in enumerate(names):
                labels[name] = data[f"l{i}"][r]
            for d in drops:
                labels.pop(d, None)
            key = _labels(labels)
            idx[r] = keys.setdefault(key, len(keys))
        self._check_series(len(keys))
        count = np.zeros((len(keys), n_buckets + 1))
        size = np.zeros((len(keys), n_buckets + 1))
        if n:
            b = np.asarray(data["b"], dtype=np.int64)
            np.add.at(count, (idx, b + 1), np.asarray(data["c"], dtype=float))
            np.add.at(size, (idx, b + 1), np.asarray(data["bytes"], dtype=float))
        ccount, csize = np.cumsum(count, axis=1), np.cumsum(size, axis=1)
        lo = (steps - e.offset_ns - e.range_ns - origin) // grain
        hi = lo + e.range_ns // grain
        range_s = e.range_ns / NS
        out: Series = {}
        for key, j in keys.items():
            c = ccount[j, hi] - ccount[j, lo]
            if e.fn == "count_over_time":
                v = c.copy()
            elif e.fn == "rate":
                v = c / range_s
            elif e.fn == "bytes_over_time":
                v = csize[j, hi] - csize[j, lo]
            else:
                v = (csize[j, hi] - csize[j, lo]) / range_s
            out[key] = np.where(c > 0, v, np.nan)
        return out

    # -- labels, series, stats, volume ----------------------------------------------------------

    def _selector_where(self, tr: Translator, q: LogQuery | None, start: int, end: int) -> str:
        return where_clause(tr.time_where(start, end) + (tr.query_where(q) if q is not None else []))

    def labels(self, params: Mapping[str, list[str]]) -> dict:
        start, end = self._range(params, DEFAULT_LABELS_LOOKBACK_NS)
        q = self._selector(_one(params, "query"))
        tr = self._translator()
        where = self._selector_where(tr, q, start, end)
        rows = self._rows(f"SELECT DISTINCT arrayJoin(arrayConcat(if(ServiceName != '', ['service.name'], []), "
                          f"mapKeys({tr.stream_labels_sql()}))) AS k FROM {self.table} WHERE {where}", tr.params)
        names = sorted({sanitize_label(r["k"]) for r in rows})
        return {"status": "success", "data": names}

    def label_values(self, name: str, params: Mapping[str, list[str]]) -> dict:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise APIError(400, f"invalid label name {name!r}")
        start, end = self._range(params, DEFAULT_LABELS_LOOKBACK_NS)
        q = self._selector(_one(params, "query"))
        tr = self._translator()
        where = self._selector_where(tr, q, start, end)
        expr = tr.label_sql(name, parsers_of(q) if q else ())
        rows = self._rows(f"SELECT DISTINCT {expr} AS v FROM {self.table} WHERE {where} AND v != '' "
                          f"ORDER BY v LIMIT {SERIES_LABEL_VALUES_LIMIT}", tr.params)
        return {"status": "success", "data": [r["v"] for r in rows]}

    def series(self, params: Mapping[str, list[str]]) -> dict:
        start, end = self._range(params, DEFAULT_LABELS_LOOKBACK_NS)
        selectors = [s for s in params.get("match[]", []) + params.get("match", []) if s.strip()]
        if not selectors:
            raise APIError(400, "at least one match[] argument (a stream selector) is required")
        tr = self._translator()
        ors = []
        for text in selectors:
            q = self._selector(text, required=True)
            ors.append("(" + where_clause(tr.query_where(q)) + ")")
        where = where_clause(tr.time_where(start, end) + ["(" + " OR ".join(ors) + ")"])
        rows = self._rows(f"SELECT DISTINCT ServiceName, {tr.stream_labels_sql()} AS sl FROM {self.table} "
                          f"WHERE {where} LIMIT {self.limits.max_series + 1}", tr.params)
        self._check_series(len(rows))
        data = [dict(_labels(self._stream_labels(r))) for r in rows]
        return {"status": "success", "data": sorted(data, key=lambda d: sorted(d.items()))}

    def index_stats(self, params: Mapping[str, list[str]]) -> dict:
        start, end = self._range(params, DEFAULT_LOOKBACK_NS)
        q = self._selector(_one(params, "query"))
        tr = self._translator()
        where = self._selector_where(tr, q, start, end)
        rows = self._rows(f"SELECT uniqExact(ServiceName, {tr.stream_labels_sql()}) AS streams, "
                          f"uniqExact(ServiceName, {tr.stream_labels_sql()}, toStartOfHour(TimestampTime)) AS chunks, "
                          f"count() AS entries, sum({self._body_bytes()}) AS bytes FROM {self.table} WHERE {where}",
                          tr.params)
        r = rows[0] if rows else {"streams": 0, "chunks": 0, "entries": 0, "bytes": 0}
        return {k: int(r[k] or 0) for k in ("streams", "chunks", "entries", "bytes")}

    def _volume_labels(self, q: LogQuery, params: Mapping[str, list[str]]) -> tuple[list[str], str]:
        target = [t.strip() for t in (_one(params, "targetLabels") or "").split(",") if t.strip()]
        names = target or list(dict.fromkeys(m.name for m in q.matchers))
        aggregate_by = (_one(params, "aggregateBy") or "series").lower()
        if aggregate_by not in ("series", "labels"):
            raise APIError(400, f"invalid aggregateBy {aggregate_by!r}: use series or labels")
        return names, aggregate_by

    def _volume(self, params: Mapping[str, list[str]], steps: np.ndarray, range_ns: int) -> Series:
        q = self._selector(_one(params, "query"), required=True)
        names, aggregate_by = self._volume_labels(q, params)
        if aggregate_by == "series":
            return self._range_series(RangeAggregation("bytes_over_time", q, range_ns), steps, stream=False,
                                      extra=tuple(names))
        out: Series = {}
        for name in names:
            sub = LogQuery(q.matchers + (logql.Matcher(name, "!=", ""),), q.stages)
            for values in self._range_series(RangeAggregation("bytes_over_time", sub, range_ns), steps,
                                             stream=False, extra=()).values():
                out[((name, ""),)] = values
        return out

    def index_volume(self, params: Mapping[str, list[str]]) -> dict:
        t0 = time.perf_counter()
        start, end = self._range(params, DEFAULT_LOOKBACK_NS)
        limit = _int_param(params, "limit", 100)
        # one window [start, end]: the aggregation's window is (end - range, end]
        series = self._volume(params, np.array([end], dtype=np.int64), end - start + 1)
        ranked = sorted(((float(v[0]), labels) for labels, v in series.items() if not np.isnan(v[0])),
                        key=lambda x: (-x[0], x[1]))[:limit]
        result = [{"metric": dict(labels) if labels and labels[0][1] else {k: "" for k, _ in labels},
                   "value": [_seconds(end), format_value(v)]} for v, labels in ranked]
        return self._ok("vector", result, t0, 0)

    def index_volume_range(self, params: Mapping[str, list[str]]) -> dict:
        t0 = time.perf_counter()
        start, end = self._range(params, DEFAULT_LOOKBACK_NS)
        limit = _int_param(params, "limit", 100)
        step = parse_step_ns(_one(params, "step")) or default_step_ns(start, end)
        if (end - start) // step > MAX_POINTS:
            raise APIError(400, f"exceeded maximum resolution of {MAX_POINTS:,} points per timeseries. Try "
                                f"decreasing the query resolution (?step=XX)")
        steps = np.arange(start, end + 1, step, dtype=np.int64)
        series = self._volume(params, steps, step)
        totals = sorted(series.items(), key=lambda kv: (-float(np.nansum(kv[1])), kv[0]))[:limit]
        result = []
        for labels, values in totals:
            pts = [[_seconds(int(t)), format_value(float(v))] for t, v in zip(steps, values) if not np.isnan(v)]
            metric = dict(labels) if labels and labels[0][1] else {k: "" for k, _ in labels}
            result.append({"metric": metric, "values": pts})
        return self._ok("matrix", result, t0, 0)

    # -- detected labels / fields ---------------------------------------------------------------

    def detected_labels(self, params: Mapping[str, list[str]]) -> dict:
        start, end = self._range(params, DEFAULT_LOOKBACK_NS)
        q = self._selector(_one(params, "query"))
        tr = self._translator()
        where = self._selector_where(tr, q, start, end)
        # the distinct (service, resource) pairs first: one hash per row instead of a map rebuilt per row
        rows = self._rows(
            f"SELECT kv.1 AS k, uniqExact(kv.2) AS n FROM (SELECT arrayJoin(arrayConcat("
            f"if(ServiceName != '', [('service.name', toString(ServiceName))], []), "
            f"arrayZip(mapKeys(sl), mapValues(sl)))) AS kv FROM (SELECT ServiceName, {tr.stream_labels_sql('ra')} "
            f"AS sl FROM (SELECT DISTINCT ServiceName, ResourceAttributes AS ra FROM {self.table} WHERE {where}))) "
            f"GROUP BY k ORDER BY k", tr.params)
        merged: dict[str, int] = {}
        for r in rows:
            label = sanitize_label(r["k"])
            merged[label] = merged.get(label, 0) + int(r["n"])
        return {"detectedLabels": [{"label": k, "cardinality": v} for k, v in sorted(merged.items())]}

    def _sample_fields(self, params: Mapping[str, list[str]]) -> tuple[dict[str, dict], int]:
        start, end = self._range(params, DEFAULT_LOOKBACK_NS)
        q = self._selector(_one(params, "query"), required=True)
        line_limit = _int_param(params, "line_limit", self.limits.detected_fields_lines)
        line_limit = min(line_limit, self.limits.max_entries)
        tr = self._translator()
        where = where_clause(tr.time_where(start, end) + tr.query_where(q))
        rows = self._rows(f"SELECT Body, ServiceName, {tr.stream_labels_sql()} AS sl, ResourceAttributes AS ra, "
                          f"LogAttributes AS la, ScopeAttributes AS sa, ScopeName, {LEVEL_SQL} AS lvl, SeverityText, "
                          f"TraceId, SpanId FROM {self.table} WHERE {where} "
                          f"ORDER BY TimestampTime DESC, Timestamp DESC LIMIT {int(line_limit)}", tr.params)
        fields: dict[str, dict] = {}

        def add(name: str, value: str, parser: str | None, path: list[str] | None = None) -> None:
            f = fields.setdefault(name, {"values": set(), "parsers": set(), "jsonPath": path})
            f["values"].add(value)
            if parser:
                f["parsers"].add(parser)

        for r in rows:
            stream = self._stream_labels(r)
            for k, v in self._metadata(r).items():
                add(k, v, None)
            line = r["Body"]
            parsed, paths = parse_json_line(line)
            kind = "json"
            if not parsed and "=" in line:
                parsed, paths, kind = parse_logfmt_line(line), {}, "logfmt"
            for k, v in parsed.items():
                add(k + "_extracted" if k in stream else k, v, kind, paths.get(k))
        return fields, line_limit

    def detected_fields(self, params: Mapping[str, list[str]]) -> dict:
        fields, _ = self._sample_fields(params)
        limit = _int_param(params, "limit", 1000)
        out = []
        for name in sorted(fields)[:limit]:
            f = fields[name]
            entry = {"label": name, "type": _field_type(f["values"]), "cardinality": len(f["values"]),
                     "parsers": sorted(f["parsers"]) or None}
            if f["jsonPath"]:
                entry["jsonPath"] = f["jsonPath"]
            out.append(entry)
        return {"fields": out, "limit": limit}

    def detected_field_values(self, name: str, params: Mapping[str, list[str]]) -> dict:
        fields, _ = self._sample_fields(params)
        values = sorted(fields.get(name, {"values": set()})["values"])
        return {"values": values[:_int_param(params, "limit", 1000)]}

    # -- patterns -------------------------------------------------------------------------------

    def patterns(self, params: Mapping[str, list[str]]) -> dict:
        start, end = self._range(params, DEFAULT_LOOKBACK_NS)
        q = self._selector(_one(params, "query"), required=True)
        step = parse_step_ns(_one(params, "step")) or max(default_step_ns(start, end), 10 * NS)
        step_s = max(1, step // NS)
        if (end - start) // (step_s * NS) > MAX_POINTS:
            raise APIError(400, f"exceeded maximum resolution of {MAX_POINTS:,} points; use a larger step")
        counts: dict[tuple[str, int, str], dict[int, int]] = {}

        def add(rows: list[dict]) -> None:
            for r in rows:
                per = counts.setdefault((r["svc"], int(r["pid"]), r["lvl"]), {})
                per[int(r["t"])] = per.get(int(r["t"]), 0) + int(r["n"])

        summary_only = all(m.name in ("service_name", "level", "detected_level") for m in q.matchers) \
            and not q.stages and step_s % PATTERN_MINUTE == 0
        lvl_number_only = level_sql("SeverityNumber", "''")
        if summary_only:
            first_full = -(-start // (PATTERN_MINUTE * NS)) * PATTERN_MINUTE        # first whole minute >= start
            last_full = (end // (PATTERN_MINUTE * NS)) * PATTERN_MINUTE             # minutes before it are whole
            if first_full < last_full:
                tr = self._translator()
                conds = [tr.string_match("ServiceName" if m.name == "service_name" else lvl_number_only,
                                         m.op, m.value) for m in q.matchers]
                where = where_clause([f"Minute >= toDateTime({first_full})", f"Minute < toDateTime({last_full})"]
                                     + conds)
                add(self._rows(f"SELECT ServiceName AS svc, PatternId AS pid, {lvl_number_only} AS lvl, "
                               f"intDiv(toUnixTimestamp(Minute), {step_s}) * {step_s} AS t, sum(Count) AS n "
                               f"FROM pattern_counts WHERE {where} GROUP BY svc, pid, lvl, t", tr.params))
                edges = [(start, first_full * NS), (last_full * NS, end)]
            else:
                edges = [(start, end)]
        else:
            edges = [(start, end)]
        for lo, hi in edges:
            if hi <= lo:
                continue
            tr = self._translator()
            where = where_clause(tr.time_where(lo, hi) + tr.query_where(q) + ["PatternId != 0"])
            add(self._rows(f"SELECT ServiceName AS svc, PatternId AS pid, {lvl_number_only} AS lvl, "
                           f"intDiv(toUnixTimestamp(TimestampTime), {step_s}) * {step_s} AS t, count() AS n "
                           f"FROM {self.table} WHERE {where} GROUP BY svc, pid, lvl, t", tr.params))
        if not counts:
            return {"status": "success", "data": []}
        templates = self._templates({svc for svc, _, _ in counts})
        merged: dict[tuple[str, str], dict[int, int]] = {}
        for (svc, pid, lvl), per in counts.items():
            template = templates.get((svc, pid))
            if template is None:
                continue
            tgt = merged.setdefault((template, lvl), {})
            for t, n in per.items():
                tgt[t] = tgt.get(t, 0) + n
        out = [{"pattern": pattern, "level": lvl, "samples": [[t, n] for t, n in sorted(per.items())]}
               for (pattern, lvl), per in merged.items()]
        out.sort(key=lambda d: (-sum(n for _, n in d["samples"]), d["pattern"], d["level"]))
        return {"status": "success", "data": out}

    def _templates(self, services: set[str]) -> dict[tuple[str, int], str]:
        """(service, pattern id or alias id) -> pattern in Loki's ``<_>`` syntax, from log_patterns."""
        tr = self._translator()
        names = ", ".join(tr.p(s) for s in sorted(services))
        rows = self._rows(f"SELECT ServiceName AS svc, PatternId AS pid, any(Template) AS tpl, "
                          f"groupUniqArrayArray(Aliases) AS aliases FROM log_patterns "
                          f"WHERE ServiceName IN ({names}) GROUP BY svc, pid", tr.params)
        out: dict[tuple[str, int], str] = {}
        for r in rows:
            pattern = r["tpl"].replace("<*>", "<_>")
            for alias in r["aliases"] or []:
                out.setdefault((r["svc"], int(alias)), pattern)
        for r in rows:
            out[(r["svc"], int(r["pid"]))] = r["tpl"].replace("<*>", "<_>")
        return out

    # -- misc -----------------------------------------------------------------------------------

    @staticmethod
    def buildinfo(version: str) -> dict:
        return {"version": LOKI_API_VERSION, "revision": f"otelproc-{version}", "branch": "otelproc",
                "buildUser": "otelproc", "buildDate": "", "goVersion": ""}


# the Loki release whose read API this extension follows (Grafana enables features by this version)
LOKI_API_VERSION = "3.4.0"

_INT_RE = re.compile(r"-?\d+")
_FLOAT_RE = re.compile(r"-?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][+-]?\d+)?")
_DURATION_VALUE_RE = re.compile(r"-?(?:\d+(?:\.\d+)?(?:ns|us|µs|ms|s|m|h))+")
_BYTES_VALUE_RE = re.compile(r"\d+(?:\.\d+)?\s?(?:B|kB|KB|KiB|MB|MiB|GB|GiB|TB|TiB)")


def _field_type(values: set[str]) -> str:
    """Loki's detected field types: int, float, boolean, duration, bytes, else string."""
    vals = [v for v in values if v != ""]
    if not vals:
        return "string"
    for name, test in (("int", _INT_RE.fullmatch), ("float", _FLOAT_RE.fullmatch),
                       ("boolean", lambda v: v.lower() in ("true", "false")),
                       ("duration", _DURATION_VALUE_RE.fullmatch), ("bytes", _BYTES_VALUE_RE.fullmatch)):
        if all(test(v) for v in vals):
            return name
    return "string"


def _empty_compatible(m: logql.Matcher) -> bool:
    """True if the matcher also matches an absent label (Loki refuses selectors made only of those)."""
    if m.op == "=":
        return m.value == ""
    if m.op == "!=":
        return m.value != ""
    try:   # Python's re stands in for RE2 here; a pattern it cannot compile is taken as not matching ""
        matches_empty = re.fullmatch(m.value, "") is not None
    except re.error:
        matches_empty = False
    return matches_empty if m.op == "=~" else not matches_empty
