"""Label matchers with Alertmanager syntax: ``name="value"``, ``name!=v``, ``name=~"re"``, ``name!~re``.

Regex matchers are anchored (``^(?:re)$``) as in Alertmanager. Used by routes,
inhibition rules and silences.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Mapping, Sequence

__all__ = ["Matcher", "parse_matcher", "matches_all"]

_MATCHER_RE = re.compile(r'^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*(.*?)\s*$', re.S)


@dataclass(frozen=True)
class Matcher:
    name: str
    op: str  # "=", "!=", "=~", "!~"
    value: str
    _regex: re.Pattern | None = field(default=None, compare=False, repr=False)

    @classmethod
    def make(cls, name: str, op: str, value: str) -> "Matcher":
        if op not in ("=", "!=", "=~", "!~"):
            raise ValueError(f"unknown matcher operator {op!r}; use =, !=, =~ or !~")
        rx = None
        if op in ("=~", "!~"):
            try:
                rx = re.compile(f"^(?:{value})$", re.S)
            except re.error as e:
                raise ValueError(f"invalid regex {value!r} in matcher {name}{op}: {e}") from None
        return cls(name, op, value, rx)

    def matches(self, labels: Mapping[str, str]) -> bool:
        v = labels.get(self.name, "")  # an absent label is the empty string, as in Alertmanager
        if self.op == "=":
            return v == self.value
        if self.op == "!=":
            return v != self.value
        hit = self._regex.match(v) is not None  # type: ignore[union-attr]
        return hit if self.op == "=~" else not hit

    def __str__(self) -> str:
        return f'{self.name}{self.op}"{self.value}"'

    def to_api(self) -> dict:
        """Alertmanager API v2 silence matcher."""
        return {"name": self.name, "value": self.value, "isRegex": self.op in ("=~", "!~"),
                "isEqual": self.op in ("=", "=~")}

    @classmethod
    def from_api(cls, d: Mapping) -> "Matcher":
        if not isinstance(d, Mapping) or not isinstance(d.get("name"), str) or not isinstance(d.get("value"), str):
            raise ValueError(f"a matcher needs string 'name' and 'value', got {d!r}")
        is_regex, is_equal = bool(d.get("isRegex", False)), bool(d.get("isEqual", True))
        op = ("=~" if is_equal else "!~") if is_regex else ("=" if is_equal else "!=")
        return cls.make(d["name"], op, d["value"])


def parse_matcher(text: str) -> Matcher:
    """``severity="critical"`` / ``team=~"pay.*"`` / ``service!=checkout`` -> Matcher."""
    m = _MATCHER_RE.match(text)
    if not m:
        raise ValueError(f"cannot parse matcher {text!r}; expected name=\"value\" (operators =, !=, =~, !~)")
    name, op, value = m.groups()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = value[1:-1].replace('\\"', '"').replace("\\\\", "\\")
    return Matcher.make(name, op, value)


def matches_all(matchers: Sequence[Matcher], labels: Mapping[str, str]) -> bool:
    return all(m.matches(labels) for m in matchers)
