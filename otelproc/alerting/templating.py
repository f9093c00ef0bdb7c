"""Label and annotation templates: ``{{ name }}``, ``{{ name:.2f }}``, ``{{ name | urlquery }}``.

A deliberately small language (no loops, no code): every ``{{ ... }}`` names one
variable, optionally with a Python format spec after ``:`` and a chain of
filters after ``|``. Templates are parsed once, when the rules file loads, and
unknown variables or filters are reported there with the key they came from,
so a typo never surfaces as an empty label at 3 a.m.

    summary: "{{ service }}: {{ observed:.0f }} lines, expected {{ expected:.1f }}"
    dashboard: "{{ grafana_url }}/d/otelproc-service/otelproc-service-drill-down?var-service={{ service | urlquery }}"
    team: "{{ labels.team | default:platform }}"
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any, Callable, Mapping
from urllib.parse import quote

__all__ = ["Template", "TemplateError", "ALERT_VARIABLES", "NOTIFICATION_VARIABLES"]

# What a rule's labels/annotations may use (filled per alert from the finding).
ALERT_VARIABLES = frozenset({
    "alertname", "rule", "service", "kind", "severity", "score", "observed", "expected", "lower", "upper",
    "pattern_id", "template", "sample", "description", "count", "time", "time_ms", "grafana_url", "explanation",
})
# What receiver-level templates (Slack text, e-mail subject) may use (filled per notification).
NOTIFICATION_VARIABLES = frozenset({
    "status", "receiver", "group_key", "alert_count", "firing_count", "resolved_count", "group_labels",
    "alerts_text", "external_url", "alertname", "service", "severity",
})
# ``labels.<name>`` / ``annotations.<name>`` reach into those maps (alert or common labels).
_MAP_PREFIXES = ("labels.", "annotations.")

_FILTERS: dict[str, Callable[[str, str], str]] = {
    "urlquery": lambda v, _a: quote(v, safe=""),
    "upper": lambda v, _a: v.upper(),
    "lower": lambda v, _a: v.lower(),
    "json": lambda v, _a: json.dumps(v),
    "truncate": lambda v, a: v if len(v) <= int(a or 200) else v[: int(a or 200) - 1] + "…",
    "default": lambda v, a: v if v else a,
}

_EXPR_RE = re.compile(r"\{\{(.*?)\}\}", re.S)
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_.\-]*)?$")


class TemplateError(ValueError):
    """A template that cannot be parsed; the message says which part and why."""


@dataclass(frozen=True)
class _Expr:
    name: str
    spec: str
    filters: tuple[tuple[str, str], ...]


def _to_text(value: Any, spec: str) -> str:
    if value is None:
        return ""
    if spec:
        try:
            return format(value, spec)
        except (TypeError, ValueError):
            return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        # integers print without ".0", others with a short, stable representation
        return str(int(value)) if value.is_integer() and abs(value) < 1e15 else f"{value:.6g}"
    return str(value)


class Template:
    """A parsed template; ``render(variables)`` never raises (missing values render empty)."""

    __slots__ = ("source", "_parts", "is_static")

    def __init__(self, source: str, allowed: frozenset[str] = ALERT_VARIABLES):
        self.source = source
        self._parts: list[str | _Expr] = []
        pos = 0
        for m in _EXPR_RE.finditer(source):
            if m.start() > pos:
                self._parts.append(source[pos:m.start()])
            self._parts.append(self._parse(m.group(1), allowed))
            pos = m.end()
        if "{{" in source[pos:] or "}}" in source[pos:]:
            raise TemplateError(f"unbalanced '{{{{' / '}}}}' in {source!r}")
        if pos < len(source):
            self._parts.append(source[pos:])
        self.is_static = all(isinstance(p, str) for p in self._parts)

    @staticmethod
    def _parse(body: str, allowed: frozenset[str]) -> _Expr:
        head, *filter_parts = [p.strip() for p in body.split("|")]
        name, _, spec = head.partition(":")
        name = name.strip().lstrip("$.")  # accept Go-template habits: {{ $labels.x }}, {{ .service }}
        if not _NAME_RE.match(name):
            raise TemplateError(f"{{{{{body}}}}}: {name!r} is not a variable name")
        if name not in allowed and not name.startswith(_MAP_PREFIXES):
            raise TemplateError(f"{{{{{body}}}}}: unknown variable {name!r}; known: {', '.join(sorted(allowed))}, "
                                "labels.<name>, annotations.<name>")
        filters = []
        for f in filter_parts:
            fname, _, arg = f.partition(":")
            fname = fname.strip()
            if fname not in _FILTERS:
                raise TemplateError(f"{{{{{body}}}}}: unknown filter {fname!r}; known: {', '.join(sorted(_FILTERS))}")
            filters.append((fname, arg.strip()))
        if spec:
            try:
                format(1.5, spec)
            except ValueError:
                try:
                    format("x", spec)
                except ValueError:
                    raise TemplateError(f"{{{{{body}}}}}: invalid format spec {spec!r}") from None
        return _Expr(name, spec.strip(), tuple(filters))

    def render(self, variables: Mapping[str, Any], labels: Mapping[str, str] | None = None,
               annotations: Mapping[str, str] | None = None) -> str:
        if self.is_static:
            return self.source
        out = []
        for part in self._parts:
            if isinstance(part, str):
                out.append(part)
                continue
            if part.name.startswith("labels."):
                value: Any = (labels or {}).get(part.name[7:], "")
            elif part.name.startswith("annotations."):
                value = (annotations or {}).get(part.name[12:], "")
            else:
                value = variables.get(part.name)
            text = _to_text(value, part.spec)
            for fname, arg in part.filters:
                text = _FILTERS[fname](text, arg)
            out.append(text)
        return "".join(out)

    def __repr__(self) -> str:
        return f"Template({self.source!r})"
