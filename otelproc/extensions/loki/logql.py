"""A LogQL parser for the subset the ``loki`` extension answers (see the package docstring).

``parse(text)`` returns a tree of the dataclasses below or raises :class:`LogQLError` with Loki's
wording: ``parse error at line 1, col 12: ...``. Constructs that are valid LogQL but not answered
here (``| line_format``, ``| pattern``, ``unwrap``, ``sum_over_time``...) raise the same error naming
the construct, so a user sees *what* is unsupported instead of a wrong answer.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Union

__all__ = ["LogQLError", "Matcher", "LineFilter", "Parser", "LineFormat", "LabelFilter", "LabelFilterExpr", "Drop",
           "Keep", "LogQuery", "RangeAggregation", "VectorAggregation", "Literal", "VectorLiteral", "BinaryOp",
           "MetricExpr", "parse", "parse_selector", "parse_duration_ns", "pattern_parts", "pattern_regex",
           "template_parts"]


class LogQLError(ValueError):
    """A query that cannot be answered: its message is what Loki would say (``parse error ...``)."""


# --------------------------------------------------------------------------- tree

@dataclass(frozen=True)
class Matcher:
    name: str
    op: str          # = != =~ !~
    value: str


@dataclass(frozen=True)
class LineFilter:
    op: str                  # |= != |~ !~ |> !> (the last two: Loki's pattern match, <_> matches anything)
    values: tuple[str, ...]  # `|= "a" or "b"`: any of them


@dataclass(frozen=True)
class Parser:
    kind: str                # json | logfmt | pattern
    expression: str = ""     # the pattern of `| pattern "<ip> - <_>"`


@dataclass(frozen=True)
class LineFormat:
    template: str            # literal text and {{.label}} references only


@dataclass(frozen=True)
class LabelFilter:
    name: str
    op: str                  # = != =~ !~ (strings) or == != > >= < <= (numbers)
    value: Union[str, float]


@dataclass(frozen=True)
class LabelFilterExpr:
    op: str                  # and | or
    left: "LabelPredicate"
    right: "LabelPredicate"


LabelPredicate = Union[LabelFilter, LabelFilterExpr]


@dataclass(frozen=True)
class Drop:
    names: tuple[str, ...]


@dataclass(frozen=True)
class Keep:
    names: tuple[str, ...]


Stage = Union[LineFilter, Parser, LabelFilter, LabelFilterExpr, Drop, Keep, LineFormat]


@dataclass(frozen=True)
class LogQuery:
    matchers: tuple[Matcher, ...]
    stages: tuple[Stage, ...] = ()


@dataclass(frozen=True)
class RangeAggregation:
    fn: str                  # count_over_time | rate | bytes_over_time | bytes_rate
    query: LogQuery
    range_ns: int
    offset_ns: int = 0


@dataclass(frozen=True)
class VectorAggregation:
    op: str                  # sum | count | min | max | avg | topk | bottomk
    expr: "MetricExpr"
    grouping: str = ""       # "" | by | without
    labels: tuple[str, ...] = ()
    param: float | None = None   # k of topk/bottomk


@dataclass(frozen=True)
class Literal:
    value: float


@dataclass(frozen=True)
class VectorLiteral:
    value: float


@dataclass(frozen=True)
class BinaryOp:
    op: str                  # + - * / % ^
    left: "MetricExpr"
    right: "MetricExpr"


MetricExpr = Union[RangeAggregation, VectorAggregation, Literal, VectorLiteral, BinaryOp]

RANGE_FUNCTIONS = ("count_over_time", "rate", "bytes_over_time", "bytes_rate")
UNWRAP_FUNCTIONS = ("sum_over_time", "avg_over_time", "max_over_time", "min_over_time", "stddev_over_time",
                    "stdvar_over_time", "quantile_over_time", "first_over_time", "last_over_time", "absent_over_time",
                    "rate_counter")
VECTOR_OPS = ("sum", "count", "min", "max", "avg", "topk", "bottomk")
UNSUPPORTED_VECTOR_OPS = ("stddev", "stdvar", "sort", "sort_desc", "approx_topk", "label_replace")
UNSUPPORTED_STAGES = ("label_format", "regexp", "unpack", "unwrap", "decolorize",
                      "distinct", "ip")

# --------------------------------------------------------------------------- lexer

_DURATION_UNITS = {"ns": 1, "us": 1_000, "µs": 1_000, "ms": 1_000_000, "s": 1_000_000_000, "m": 60_000_000_000,
                   "h": 3_600_000_000_000, "d": 86_400_000_000_000, "w": 7 * 86_400_000_000_000,
                   "y": 365 * 86_400_000_000_000}
_DURATION_RE = re.compile(r"(?:\d+(?:\.\d+)?(?:ns|us|µs|ms|s|m|h|d|w|y))+")
_DURATION_PART_RE = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h|d|w|y)")

_TOKEN_RE = re.compile(r"""
    (?P<ws>\s+|\#[^\n]*)
  | (?P<duration>(?:\d+(?:\.\d+)?(?:ns|us|µs|ms|s|m|h|d|w|y))+(?![A-Za-z0-9_]))
  | (?P<number>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?(?![A-Za-z_]))
  | (?P<ident>[A-Za-z_][A-Za-z0-9_.]*)
  | (?P<string>"(?:[^"\\]|\\.)*"|`[^`]*`)
  | (?P<op>\|=|\|~|!=|!~|=~|==|>=|<=|\|>|!>|[{}()\[\],|=<>+\-*/%^])
""", re.X)


@dataclass
class _Tok:
    kind: str
    text: str
    pos: int


def parse_duration_ns(text: str) -> int:
    """``5m``, ``1h30m``, ``250ms`` -> nanoseconds (Prometheus duration syntax plus Go's ns/us/ms)."""
    if not _DURATION_RE.fullmatch(text):
        raise ValueError(f"not a duration: {text!r}")
    return int(sum(float(n) * _DURATION_UNITS[u] for n, u in _DURATION_PART_RE.findall(text)))


_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", '"': '"', "'": "'", "a": "\a", "b": "\b", "f": "\f",
            "v": "\v"}


def _unquote(tok: str, where: str) -> str:
    if tok.startswith("`"):
        return tok[1:-1]
    out, i, body = [], 0, tok[1:-1]
    while i < len(body):
        c = body[i]
        if c != "\\":
            out.append(c)
            i += 1
            continue
        nxt = body[i + 1] if i + 1 < len(body) else ""
        if nxt in _ESCAPES:
            out.append(_ESCAPES[nxt])
            i += 2
        elif nxt in ("x", "u", "U"):
            width = {"x": 2, "u": 4, "U": 8}[nxt]
            digits = body[i + 2:i + 2 + width]
            try:
                out.append(chr(int(digits, 16)))
            except ValueError:
                raise LogQLError(f"{where}: invalid escape \\{nxt}{digits} in string") from None
            i += 2 + width
        elif nxt.isdigit():
            try:
                out.append(chr(int(body[i + 1:i + 4], 8)))
            except ValueError:
                raise LogQLError(f"{where}: invalid octal escape in string") from None
            i += 4
        else:
            # Go's strconv.Unquote rejects unknown escapes; Loki says "invalid char escape"
            raise LogQLError(f"{where}: invalid char escape \\{nxt}")
    return "".join(out)


class _Parser:
    def __init__(self, text: str):
        self.text = text
        self.toks: list[_Tok] = []
        pos = 0
        while pos < len(text):
            m = _TOKEN_RE.match(text, pos)
            if not m:
                raise LogQLError(f"{self._where(pos)}: syntax error: unexpected character {text[pos]!r}")
            if m.lastgroup != "ws":
                self.toks.append(_Tok(m.lastgroup, m.group(), pos))
            pos = m.end()
        self.i = 0

    # -- helpers
    def _where(self, pos: int) -> str:
        line = self.text.count("\n", 0, pos) + 1
        col = pos - (self.text.rfind("\n", 0, pos) + 1) + 1
        return f"parse error at line {line}, col {col}"

    def peek(self, k: int = 0) -> _Tok | None:
        j = self.i + k
        return self.toks[j] if j < len(self.toks) else None

    def error(self, msg: str, tok: _Tok | None = None) -> LogQLError:
        tok = tok if tok is not None else self.peek()
        pos = tok.pos if tok is not None else len(self.text)
        return LogQLError(f"{self._where(pos)}: {msg}")

    def unexpected(self, expecting: str) -> LogQLError:
        tok = self.peek()
        got = "end of input" if tok is None else repr(tok.text)
        return self.error(f"syntax error: unexpected {got}, expecting {expecting}")

    def accept(self, text: str) -> _Tok | None:
        tok = self.peek()
        if tok is not None and tok.kind in ("op", "ident") and tok.text == text:
            self.i += 1
            return tok
        return None

    def expect(self, text: str) -> _Tok:
        tok = self.accept(text)
        if tok is None:
            raise self.unexpected(repr(text))
        return tok

    def string(self, what: str = "a string") -> str:
        tok = self.peek()
        if tok is None or tok.kind != "string":
            raise self.unexpected(what)
        self.i += 1
        return _unquote(tok.text, self._where(tok.pos))

    def ident(self, what: str = "a label name") -> str:
        tok = self.peek()
        if tok is None or tok.kind != "ident":
            raise self.unexpected(what)
        self.i += 1
        return tok.text

    # -- grammar
    def parse(self) -> Union[LogQuery, MetricExpr]:
        if not self.toks:
            raise LogQLError("parse error : syntax error: unexpected end of input, expecting a query")
        tok = self.peek()
        out = self.log_query() if tok.kind == "op" and tok.text == "{" else self.metric_expr()
        if self.peek() is not None:
            raise self.unexpected("end of query")
        return out

    def selector(self) -> tuple[Matcher, ...]:
        self.expect("{")
        matchers: list[Matcher] = []
        while not self.accept("}"):
            name_tok = self.peek()
            name = self.ident()
            op_tok = self.peek()
            if op_tok is None or op_tok.text not in ("=", "!=", "=~", "!~"):
                raise self.unexpected("one of =, !=, =~, !~")
            self.i += 1
            value = self.string()
            if op_tok.text in ("=~", "!~"):
                _check_regex(value, self.error, name_tok)
            matchers.append(Matcher(name, op_tok.text, value))
            if not self.accept(","):
                self.expect("}")
                break
        return tuple(matchers)

    def log_query(self) -> LogQuery:
        matchers = self.selector()
        stages: list[Stage] = []
        while True:
            tok = self.peek()
            if tok is None or tok.kind != "op":
                break
            if tok.text in ("|=", "!=", "|~", "!~", "|>", "!>"):
                if any(isinstance(st, LineFormat) for st in stages):
                    raise self.error("line filters after | line_format are not supported by otelproc's Loki API; "
                                     "put them before it")
                self.i += 1
                stages.append(self.line_filter(tok.text))
            elif tok.text == "|":
                self.i += 1
                stage = self.pipe_stage()
                if isinstance(stage, Parser) and any(isinstance(st, LineFormat) for st in stages):
                    raise self.error("parsers after | line_format are not supported by otelproc's Loki API; put "
                                     "them before it", tok)
                stages.append(stage)
            else:
                break
        return LogQuery(matchers, tuple(stages))

    def line_filter(self, op: str) -> LineFilter:
        tok = self.peek()
        if tok is not None and tok.kind == "ident" and tok.text == "ip":
            raise self.error("ip() line filters are not supported by otelproc's Loki API")
        values = [self.string()]
        while self.accept("or"):
            values.append(self.string())
        if op in ("|~", "!~"):
            for v in values:
                _check_regex(v, self.error, tok)
        if op in ("|>", "!>"):
            for v in values:
                pattern_parts(v, self.error, tok)
        return LineFilter(op, tuple(values))

    def pipe_stage(self) -> Stage:
        tok = self.peek()
        if tok is None:
            raise self.unexpected("a pipeline stage")
        if tok.kind == "ident" and tok.text in ("json", "logfmt"):
            self.i += 1
            nxt = self.peek()
            if nxt is not None and ((nxt.kind == "ident" and self._is_param_start()) or nxt.text == "-"):
                raise self.error(f"| {tok.text} with parameters is not supported by otelproc's Loki API; "
                                 f"use | {tok.text} without parameters", nxt)
            return Parser(tok.text)
        if tok.kind == "ident" and tok.text == "pattern":
            self.i += 1
            str_tok = self.peek()
            expression = self.string("a pattern such as \"<ip> - <_>\"")
            if not any(name for kind, name in pattern_parts(expression, self.error, str_tok) if kind == "capture"):
                raise self.error("at least one named capture must be used in a pattern parser", str_tok)
            return Parser("pattern", expression)
        if tok.kind == "ident" and tok.text == "line_format":
            self.i += 1
            str_tok = self.peek()
            template = self.string("a template such as \"{{.msg}}\"")
            template_parts(template, self.error, str_tok)
            return LineFormat(template)
        if tok.kind == "ident" and tok.text in ("drop", "keep"):
            self.i += 1
            names = []
            while True:
                name_tok = self.peek()
                names.append(self.ident())
                if self.peek() is not None and self.peek().text in ("=", "!=", "=~", "!~"):
                    raise self.error(f"| {tok.text} with label matchers is not supported by otelproc's Loki API; "
                                     f"list label names only", name_tok)
                if not self.accept(","):
                    break
            return (Drop if tok.text == "drop" else Keep)(tuple(names))
        if tok.kind == "ident" and tok.text in UNSUPPORTED_STAGES:
            raise self.error(f"| {tok.text} is not supported by otelproc's Loki API (supported stages: line "
                             f"filters, | json, | logfmt, | pattern, label filters, | drop, | keep, | line_format "
                             f"with {{{{.label}}}} references)")
        return self.label_predicate()

    def _is_param_start(self) -> bool:
        # `| json a="b"` (parameters) vs `| json` followed by another stage / bracket / end
        nxt, after = self.peek(), self.peek(1)
        return nxt.kind == "ident" and after is not None and after.text == "="

    def label_predicate(self) -> LabelPredicate:
        left = self.label_and()
        while self.accept("or"):
            left = LabelFilterExpr("or", left, self.label_and())
        return left

    def label_and(self) -> LabelPredicate:
        left = self.label_atom()
        while True:
            tok = self.peek()
            if tok is not None and (tok.text == "and" or tok.text == ","):
                self.i += 1
                left = LabelFilterExpr("and", left, self.label_atom())
            else:
                return left

    def label_atom(self) -> LabelPredicate:
        if self.accept("("):
            inner = self.label_predicate()
            self.expect(")")
            return inner
        name_tok = self.peek()
        name = self.ident("a label filter, a parser (json, logfmt) or drop/keep")
        op_tok = self.peek()
        if op_tok is None or op_tok.text not in ("=", "!=", "=~", "!~", "==", ">", ">=", "<", "<="):
            raise self.unexpected("a label filter operator")
        self.i += 1
        val_tok = self.peek()
        if val_tok is not None and val_tok.kind == "string":
            if op_tok.text not in ("=", "!=", "=~", "!~"):
                raise self.error(f"syntax error: operator {op_tok.text} needs a number, got a string", val_tok)
            value = self.string()
            if op_tok.text in ("=~", "!~"):
                _check_regex(value, self.error, name_tok)
            return LabelFilter(name, op_tok.text, value)
        if val_tok is not None and val_tok.kind == "number":
            self.i += 1
            if op_tok.text in ("=~", "!~"):
                raise self.error(f"syntax error: operator {op_tok.text} needs a string", val_tok)
            return LabelFilter(name, "==" if op_tok.text == "=" else op_tok.text, float(val_tok.text))
        if val_tok is not None and val_tok.kind == "duration":
            raise self.error("duration comparisons in label filters are not supported by otelproc's Loki API; "
                             "compare with a number", val_tok)
        if val_tok is not None and val_tok.kind == "ident" and re.fullmatch(r"\d", val_tok.text[:1] or "x"):
            raise self.error("bytes comparisons in label filters are not supported", val_tok)
        raise self.unexpected("a string or a number")

    # -- metric expressions (precedence: or/and/unless not supported; + - ; * / % ; ^)
    def metric_expr(self) -> MetricExpr:
        left = self.metric_term()
        while True:
            tok = self.peek()
            if tok is not None and tok.text in ("+", "-"):
                self.i += 1
                left = BinaryOp(tok.text, left, self.metric_term())
            elif tok is not None and tok.kind == "ident" and tok.text in ("and", "or", "unless"):
                raise self.error(f"the {tok.text} set operator is not supported by otelproc's Loki API")
            elif tok is not None and tok.text in ("==", "!=", ">", ">=", "<", "<="):
                raise self.error(f"comparison operators between metric expressions ({tok.text}) are not "
                                 f"supported by otelproc's Loki API")
            else:
                return left

    def metric_term(self) -> MetricExpr:
        left = self.metric_power()
        while True:
            tok = self.peek()
            if tok is not None and tok.text in ("*", "/", "%"):
                self.i += 1
                left = BinaryOp(tok.text, left, self.metric_power())
            else:
                return left

    def metric_power(self) -> MetricExpr:
        base = self.metric_atom()
        if self.accept("^"):
            return BinaryOp("^", base, self.metric_power())
        return base

    def metric_atom(self) -> MetricExpr:
        tok = self.peek()
        if tok is None:
            raise self.unexpected("a metric expression")
        if tok.kind == "number":
            self.i += 1
            return Literal(float(tok.text))
        if tok.text == "-" and self.peek(1) is not None and self.peek(1).kind == "number":
            self.i += 2
            return Literal(-float(self.toks[self.i - 1].text))
        if self.accept("("):
            inner = self.metric_expr()
            self.expect(")")
            return inner
        if tok.kind != "ident":
            raise self.unexpected("a metric expression such as count_over_time({...}[5m])")
        name = tok.text
        if name == "vector":
            self.i += 1
            self.expect("(")
            num = self.peek()
            if num is None or num.kind != "number":
                raise self.unexpected("a number")
            self.i += 1
            self.expect(")")
            return VectorLiteral(float(num.text))
        if name in RANGE_FUNCTIONS:
            self.i += 1
            return self.range_aggregation(name)
        if name in UNWRAP_FUNCTIONS:
            raise self.error(f"{name} (an unwrapped range aggregation) is not supported by otelproc's Loki API; "
                             f"supported: {', '.join(RANGE_FUNCTIONS)}")
        if name in VECTOR_OPS:
            self.i += 1
            return self.vector_aggregation(name)
        if name in UNSUPPORTED_VECTOR_OPS:
            raise self.error(f"{name} is not supported by otelproc's Loki API; supported aggregations: "
                             f"{', '.join(VECTOR_OPS)}")
        raise self.error(f"syntax error: unexpected IDENTIFIER {name!r}, expecting a metric expression or a "
                         f"stream selector")

    def range_aggregation(self, fn: str) -> RangeAggregation:
        self.expect("(")
        query = self.log_query()
        if self.peek() is not None and self.peek().text == "|" and self.peek(1) is not None \
                and self.peek(1).text == "unwrap":
            raise self.error("unwrap is not supported by otelproc's Loki API")
        self.expect("[")
        dur_tok = self.peek()
        if dur_tok is None or dur_tok.kind != "duration":
            raise self.unexpected("a duration such as 5m")
        self.i += 1
        range_ns = parse_duration_ns(dur_tok.text)
        self.expect("]")
        offset_ns = 0
        if self.accept("offset"):
            off = self.peek()
            if off is None or off.kind != "duration":
                raise self.unexpected("a duration after offset")
            self.i += 1
            offset_ns = parse_duration_ns(off.text)
        self.expect(")")
        if range_ns <= 0:
            raise self.error("the range of a range aggregation must be > 0", dur_tok)
        tok = self.peek()
        if tok is not None and tok.text in ("by", "without"):
            raise self.error(f"grouping ({tok.text}) on {fn} is only allowed for unwrapped range aggregations; "
                             f"wrap it in sum {tok.text} (...)")
        return RangeAggregation(fn, query, range_ns, offset_ns)

    def grouping(self) -> tuple[str, tuple[str, ...]]:
        tok = self.peek()
        if tok is None or tok.text not in ("by", "without"):
            return "", ()
        self.i += 1
        self.expect("(")
        names: list[str] = []
        while not self.accept(")"):
            names.append(self.ident())
            if not self.accept(","):
                self.expect(")")
                break
        return tok.text, tuple(names)

    def vector_aggregation(self, op: str) -> VectorAggregation:
        grouping, labels = self.grouping()
        self.expect("(")
        param = None
        if op in ("topk", "bottomk"):
            num = self.peek()
            if num is None or num.kind != "number":
                raise self.unexpected(f"the k of {op}(k, ...)")
            self.i += 1
            param = float(num.text)
            if param < 1 or param != int(param):
                raise self.error(f"{op}: k must be a positive integer, got {num.text}", num)
            self.expect(",")
        inner = self.metric_expr()
        self.expect(")")
        if not grouping:
            grouping, labels = self.grouping()
        return VectorAggregation(op, inner, grouping, labels, param)


_PATTERN_TOKEN_RE = re.compile(r"<(_|[A-Za-z_][A-Za-z0-9_]*)>")


def pattern_parts(expression: str, error=None, tok=None) -> list[tuple[str, str]]:
    """A Loki pattern as [("literal", text) | ("capture", name) ...]; ``<_>`` is a capture named ''."""
    parts: list[tuple[str, str]] = []
    pos = 0
    for m in _PATTERN_TOKEN_RE.finditer(expression):
        if m.start() > pos:
            parts.append(("literal", expression[pos:m.start()]))
        if parts and parts[-1][0] == "capture" and error is not None:
            raise error(f"invalid pattern {expression!r}: consecutive captures must be separated by a literal", tok)
        parts.append(("capture", "" if m.group(1) == "_" else m.group(1)))
        pos = m.end()
    if pos < len(expression):
        parts.append(("literal", expression[pos:]))
    if not any(kind == "capture" for kind, _ in parts) and error is not None:
        raise error(f"invalid pattern {expression!r}: it needs at least one capture such as <_>", tok)
    return parts


def pattern_regex(expression: str, capture: str | None = None) -> str:
    """The regex (RE2 and Python syntax) a whole line matches for a Loki pattern: every capture is a group,
    or, with ``capture``, only the first capture of that name (for extracting one field in SQL)."""
    out, taken = ["(?s)^"], False
    for kind, text in pattern_parts(expression):
        if kind == "literal":
            out.append(re.escape(text))
        elif capture is None or (text == capture and not taken):
            out.append("(.*?)")
            taken = True
        else:
            out.append(".*?")
    out.append("$")
    return "".join(out)


_TEMPLATE_RE = re.compile(r"\{\{-?\s*\.([A-Za-z_][A-Za-z0-9_]*)\s*-?\}\}")


def template_parts(template: str, error=None, tok=None) -> list[tuple[str, str]]:
    """A line_format template as [("literal", text) | ("label", name) ...]; other template actions refused."""
    parts: list[tuple[str, str]] = []
    pos = 0
    for m in _TEMPLATE_RE.finditer(template):
        parts.append(("literal", template[pos:m.start()]))
        parts.append(("label", m.group(1)))
        pos = m.end()
    parts.append(("literal", template[pos:]))
    if error is not None and any("{{" in text for kind, text in parts if kind == "literal"):
        raise error(f"line_format template {template!r}: only literal text and {{{{.label}}}} references are "
                    f"supported by otelproc's Loki API (no functions, pipelines or conditionals)", tok)
    return [p for p in parts if p[1] != "" or p[0] == "label"]


def _check_regex(value: str, error, tok) -> None:
    # Python's re stands in for RE2 (Go's and ClickHouse's syntax); it only differs on inline flags
    # placed mid-pattern, which RE2 allows
    try:
        re.compile(value)
    except re.error as e:
        if "global flags" not in str(e):
            raise error(f"invalid regex {value!r}: {e}", tok) from None


def parse(text: str) -> Union[LogQuery, MetricExpr]:
    """Parse a LogQL query (log query or metric query). Raises LogQLError."""
    return _Parser(text).parse()


def parse_selector(text: str) -> LogQuery:
    """Parse a query that must be a log query (``/labels``, ``/series``, ``/patterns``...)."""
    q = parse(text)
    if not isinstance(q, LogQuery):
        raise LogQLError("parse error : a stream selector such as {service_name=\"api\"} is required here, "
                         "got a metric query")
    return q
