"""The alert rules file (``config/alerts.yaml``): schema, loading, validation and rule evaluation.

Two kinds of rules share one schema:

* ``source: logs``: critical-pattern rules, evaluated on every batch at ingest
  (a regex over the pattern template or the body, and/or SeverityNumber >= N), so
  they fire without waiting for a time bucket to close. The regex runs once per
  *distinct pattern* when the batch carries ``pattern_id``/``pattern_template``,
  else once over the batch's whole body buffer (never a Python loop per line).
* ``source: findings``: rules over what detectors concluded (``batch.findings``):
  kind, service, severity, pattern id, a regex over template/sample, a score threshold.

Both may hold for a while before firing (``for:``) and carry templated labels and
annotations (otelproc.alerting.templating). ``route``, ``receivers`` and
``inhibit_rules`` follow Alertmanager's configuration format.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import yaml

from otelproc.batch import DictStringArray, LogBatch, StringArray
from otelproc.config import ConfigError, Duration, Secret, _substitute_env, decode
from otelproc.findings import Finding, FindingKind, Severity
from otelproc.httpserver import parse_endpoint
from otelproc.alerting.matchers import parse_matcher
from otelproc.alerting.templating import ALERT_VARIABLES, NOTIFICATION_VARIABLES, Template, TemplateError

__all__ = [
    "AlertsFile", "RuleConfig", "RouteConfig", "ReceiverConfig", "InhibitRuleConfig", "GlobalConfig",
    "WebhookConfig", "AlertmanagerConfig", "SlackConfig", "EmailConfig",
    "load_alerts_file", "parse_alerts", "CompiledRule", "LogRuleEvaluator",
]

# Defaults as named constants (Alertmanager's are 30s / 5m / 4h; the fast path wants group_wait 0s).
DEFAULT_RESOLVE_TIMEOUT = Duration(300.0)
DEFAULT_GROUP_BY = ["alertname", "service"]
DEFAULT_GROUP_WAIT = Duration(0.0)
DEFAULT_GROUP_INTERVAL = Duration(30.0)
DEFAULT_REPEAT_INTERVAL = Duration(4 * 3600.0)
DEFAULT_HTTP_TIMEOUT = Duration(5.0)
SEVERITY_FATAL = 21  # OTLP SeverityNumber FATAL..FATAL4 = 21..24

_LABEL_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_FINDING_KINDS = tuple(k.value for k in FindingKind)
_SEVERITIES = tuple(s.value for s in Severity)

DEFAULT_SLACK_TITLE = "[{{ status | upper }}] {{ alertname }} ({{ service }})"
DEFAULT_SLACK_TEXT = "{{ alerts_text }}"
DEFAULT_EMAIL_SUBJECT = "[{{ status | upper }}:{{ firing_count }}] {{ alertname }} {{ group_labels }}"
DEFAULT_EMAIL_TEXT = "{{ alerts_text }}\n\n{{ external_url }}\n"


# --------------------------------------------------------------------------- schema

@dataclass
class GlobalConfig:
    # an alert no longer refreshed by a match for this long is resolved (as Alertmanager's resolve_timeout)
    resolve_timeout: Duration = DEFAULT_RESOLVE_TIMEOUT
    # base URL of Grafana, available to templates as {{ grafana_url }}
    grafana_url: str = ""
    # externalURL of webhook payloads (where people can see the alerts, e.g. otelproc's API or Grafana)
    external_url: str = ""
    # extra labels per service, e.g. {checkout: {team: payments}}, so routes can match on team
    service_labels: dict[str, dict[str, str]] = field(default_factory=dict)

    def validate(self) -> list[str]:
        out = []
        if self.resolve_timeout <= 0:
            out.append(f"resolve_timeout: must be > 0, got {self.resolve_timeout}s")
        for svc, labels in self.service_labels.items():
            for k in labels:
                if not _LABEL_NAME_RE.match(k):
                    out.append(f"service_labels::{svc}::{k}: not a valid label name ([A-Za-z_][A-Za-z0-9_]*)")
        return out


@dataclass
class RuleConfig:
    # the alertname label
    alert: str = ""
    # logs: evaluated on every batch at ingest; findings: evaluated on batch.findings
    source: Literal["logs", "findings"] = "findings"
    # finding kinds to match (findings source; empty = any): spike, drop, new_pattern, trend, ...
    kinds: list[str] = field(default_factory=list)
    # services to match (empty = any)
    services: list[str] = field(default_factory=list)
    # finding severities to match (findings source; empty = any): info, warning, critical
    severities: list[str] = field(default_factory=list)
    # pattern ids to match (empty = any)
    pattern_ids: list[int] = field(default_factory=list)
    # a regex searched in the pattern template / body (logs) or the finding's template / sample (findings)
    regex: str = ""
    # auto: template if the batch has pattern_template, else body (logs); template, else sample (findings)
    regex_target: Literal["auto", "template", "body", "sample"] = "auto"
    # logs source: a record with SeverityNumber >= this matches (21 = FATAL); 0 = not used
    severity_number_min: int = 0
    # logs source with both regex and severity_number_min: any = either matches, all = both
    match: Literal["any", "all"] = "any"
    # findings source: minimum finding score (0..1)
    score_min: float = 0.0
    # the condition must hold this long (event time) before the alert fires; 0s = at once
    for_: Duration = Duration(0.0)
    # labels added to the alert (templated); severity defaults to the finding's severity
    labels: dict[str, str] = field(default_factory=dict)
    # annotations (templated): summary, description, dashboard link, runbook ...
    annotations: dict[str, str] = field(default_factory=dict)

    def validate(self) -> list[str]:
        out = []
        if not self.alert:
            out.append("alert: required (the alertname label)")
        for i, k in enumerate(self.kinds):
            if k not in _FINDING_KINDS:
                out.append(f"kinds[{i}]: unknown finding kind {k!r}; known: {', '.join(_FINDING_KINDS)}")
        for i, s in enumerate(self.severities):
            if s not in _SEVERITIES:
                out.append(f"severities[{i}]: unknown severity {s!r}; known: {', '.join(_SEVERITIES)}")
        if self.source == "logs":
            if not self.regex and not self.severity_number_min:
                out.append("regex: a logs rule needs a regex and/or severity_number_min")
            if self.kinds or self.severities or self.score_min:
                out.append("source: kinds, severities and score_min apply to findings rules only")
            if self.regex_target == "sample":
                out.append("regex_target: 'sample' applies to findings rules; use auto, template or body")
        else:
            if self.severity_number_min:
                out.append("severity_number_min: applies to logs rules only (source: logs)")
            if self.regex_target == "body":
                out.append("regex_target: 'body' applies to logs rules; use auto, template or sample")
        if not 0 <= self.severity_number_min <= 24:
            out.append(f"severity_number_min: must be within 0..24, got {self.severity_number_min}")
        if not 0.0 <= self.score_min <= 1.0:
            out.append(f"score_min: must be within 0..1, got {self.score_min}")
        if self.for_ is not None and self.for_ < 0:
            out.append(f"for: must be >= 0, got {self.for_}s")
        for i, pid in enumerate(self.pattern_ids):
            if not 0 <= pid < 2**64:
                out.append(f"pattern_ids[{i}]: must be a uint64, got {pid}")
        if self.regex:
            try:
                re.compile(self.regex)
                if self.source == "logs":
                    re.compile(self.regex.encode("utf-8"))
            except re.error as e:
                out.append(f"regex: invalid regular expression {self.regex!r}: {e}")
        for section in ("labels", "annotations"):
            for k, v in getattr(self, section).items():
                if section == "labels" and not _LABEL_NAME_RE.match(k):
                    out.append(f"labels::{k}: not a valid label name ([A-Za-z_][A-Za-z0-9_]*)")
                try:
                    Template(str(v))
                except TemplateError as e:
                    out.append(f"{section}::{k}: {e}")
        return out


@dataclass
class RouteConfig:
    # receiver name; child routes inherit their parent's
    receiver: str = ""
    # Alertmanager matchers, e.g. ['severity="critical"', 'team=~"pay.*"']
    matchers: list[str] = field(default_factory=list)
    # keep matching sibling routes after this one matched
    continue_: bool = False
    # labels that form a group; ['...'] = every label; inherited when unset
    group_by: list[str] | None = None
    group_wait: Duration | None = None
    group_interval: Duration | None = None
    repeat_interval: Duration | None = None
    routes: list["RouteConfig"] = field(default_factory=list)

    def validate(self) -> list[str]:
        out = []
        for i, m in enumerate(self.matchers):
            try:
                parse_matcher(m)
            except ValueError as e:
                out.append(f"matchers[{i}]: {e}")
        for name in ("group_wait", "group_interval", "repeat_interval"):
            v = getattr(self, name)
            if v is not None and v < 0:
                out.append(f"{name}: must be >= 0, got {v}s")
        for name in ("group_interval", "repeat_interval"):
            v = getattr(self, name)
            if v is not None and v == 0:
                out.append(f"{name}: must be > 0 (as in Alertmanager)")
        if self.group_by and "..." in self.group_by and len(self.group_by) > 1:
            out.append("group_by: '...' (group by every label) cannot be combined with other labels")
        return out


@dataclass
class InhibitRuleConfig:
    # alerts matching target_matchers are muted while an alert matching source_matchers fires ...
    source_matchers: list[str] = field(default_factory=list)
    target_matchers: list[str] = field(default_factory=list)
    # ... with the same values of these labels
    equal: list[str] = field(default_factory=list)

    def validate(self) -> list[str]:
        out = []
        for key in ("source_matchers", "target_matchers"):
            if not getattr(self, key):
                out.append(f"{key}: at least one matcher is required")
            for i, m in enumerate(getattr(self, key)):
                try:
                    parse_matcher(m)
                except ValueError as e:
                    out.append(f"{key}[{i}]: {e}")
        return out


def _check_url(url: str, key: str = "url") -> list[str]:
    if not url:
        return [f"{key}: required"]
    if not re.match(r"^https?://[^/\s]+", url):
        return [f"{key}: must be an http:// or https:// URL, got {url!r}"]
    return []


def _check_templates(**templates: str) -> list[str]:
    out = []
    for key, source in templates.items():
        try:
            Template(source, NOTIFICATION_VARIABLES)
        except TemplateError as e:
            out.append(f"{key}: {e}")
    return out


@dataclass
class WebhookConfig:
    # receives Alertmanager's webhook payload (version 4)
    url: str = ""
    send_resolved: bool = True
    timeout: Duration = DEFAULT_HTTP_TIMEOUT
    # 0 = all alerts of the group; else the payload is truncated (truncatedAlerts counts the rest)
    max_alerts: int = 0
    headers: dict[str, str] = field(default_factory=dict)

    def validate(self) -> list[str]:
        out = _check_url(self.url)
        if self.timeout <= 0:
            out.append(f"timeout: must be > 0, got {self.timeout}s")
        if self.max_alerts < 0:
            out.append(f"max_alerts: must be >= 0, got {self.max_alerts}")
        return out


@dataclass
class AlertmanagerConfig:
    # base URL of an Alertmanager, e.g. http://alertmanager:9093 (POST {url}/api/v2/alerts)
    url: str = ""
    timeout: Duration = DEFAULT_HTTP_TIMEOUT
    # Alertmanager needs resolves (endsAt) to end alerts before their timeout; keep true
    send_resolved: bool = True

    def validate(self) -> list[str]:
        out = _check_url(self.url)
        if self.timeout <= 0:
            out.append(f"timeout: must be > 0, got {self.timeout}s")
        return out


@dataclass
class SlackConfig:
    # a Slack (or Mattermost / Rocket.Chat) incoming-webhook URL
    url: Secret = Secret("")
    channel: str = ""
    username: str = "otelproc"
    title: str = DEFAULT_SLACK_TITLE
    text: str = DEFAULT_SLACK_TEXT
    send_resolved: bool = True
    timeout: Duration = DEFAULT_HTTP_TIMEOUT

    def validate(self) -> list[str]:
        out = _check_url(str(self.url))
        return out + _check_templates(title=self.title, text=self.text)


@dataclass
class EmailConfig:
    to: list[str] = field(default_factory=list)
    from_: str = ""
    # host:port of the SMTP server
    smarthost: str = ""
    auth_username: str = ""
    auth_password: Secret = Secret("")
    # STARTTLS before sending (Alertmanager's default is true; set it for any non-local server)
    require_tls: bool = False
    subject: str = DEFAULT_EMAIL_SUBJECT
    text: str = DEFAULT_EMAIL_TEXT
    send_resolved: bool = True
    timeout: Duration = Duration(10.0)

    def validate(self) -> list[str]:
        out = []
        if not self.to:
            out.append("to: at least one address is required")
        if not self.from_:
            out.append("from: required")
        try:
            parse_endpoint(self.smarthost)
        except ValueError:
            out.append(f"smarthost: must be host:port, got {self.smarthost!r}")
        return out + _check_templates(subject=self.subject, text=self.text)


@dataclass
class ReceiverConfig:
    name: str = ""
    webhook_configs: list[WebhookConfig] = field(default_factory=list)
    alertmanager_configs: list[AlertmanagerConfig] = field(default_factory=list)
    slack_configs: list[SlackConfig] = field(default_factory=list)
    email_configs: list[EmailConfig] = field(default_factory=list)

    def validate(self) -> list[str]:
        return [] if self.name else ["name: required"]


@dataclass
class AlertsFile:
    global_: GlobalConfig = field(default_factory=GlobalConfig)
    rules: list[RuleConfig] = field(default_factory=list)
    route: RouteConfig = field(default_factory=RouteConfig)
    receivers: list[ReceiverConfig] = field(default_factory=list)
    inhibit_rules: list[InhibitRuleConfig] = field(default_factory=list)

    def validate(self) -> list[str]:
        out = []
        names = [r.name for r in self.receivers if r is not None]
        seen: set[str] = set()
        for i, n in enumerate(names):
            if n in seen:
                out.append(f"receivers[{i}]::name: receiver {n!r} is defined twice")
            seen.add(n)
        if self.route is None:
            return out
        if not self.route.receiver:
            out.append("route::receiver: the root route needs a receiver")
        if self.route.matchers:
            out.append("route::matchers: the root route must match every alert (no matchers)")

        def walk(route: RouteConfig, path: str) -> None:
            if route is None:
                return
            if route.receiver and route.receiver not in seen:
                out.append(f"{path}::receiver: unknown receiver {route.receiver!r}; defined: {', '.join(sorted(seen)) or 'none'}")
            for i, child in enumerate(route.routes):
                walk(child, f"{path}::routes[{i}]")

        walk(self.route, "route")
        return out


# --------------------------------------------------------------------------- loading

def parse_alerts(text: str, source: str = "<string>") -> AlertsFile:
    """Parse and validate a rules file's text; raise ConfigError listing every problem as ``source: key::path: msg``."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError([f"{source}: not valid YAML: {e}"]) from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError([f"{source}: the top level must be a mapping with rules/route/receivers"])
    errors: list[str] = []
    raw = _substitute_env(raw, "", errors)  # ${env:VAR} / ${env:VAR:-default}, as in the main config
    cfg = decode(AlertsFile, raw, "", errors)  # keys that are Python keywords (for, from...) are fields for_, from_
    if errors:
        raise ConfigError([f"{source}: {e}" for e in errors])
    return cfg


def load_alerts_file(path: str | Path) -> AlertsFile:
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise ConfigError([f"{path}: cannot read alert rules file: {e.strerror}"]) from None
    return parse_alerts(text, source=str(p))


# --------------------------------------------------------------------------- compiled rules

class CompiledRule:
    """A validated rule ready to evaluate: compiled regexes, sets, parsed templates."""

    def __init__(self, index: int, cfg: RuleConfig):
        self.index = index
        self.cfg = cfg
        self.name = cfg.alert
        self.source = cfg.source
        self.kinds = frozenset(cfg.kinds)
        self.services = frozenset(cfg.services)
        self.severities = frozenset(cfg.severities)
        self.pattern_ids = frozenset(int(p) for p in cfg.pattern_ids)
        self.for_s = float(cfg.for_ or 0.0)
        # MULTILINE: in the body buffer records are separated by "\n", so ^/$ anchor at record starts/ends
        self.regex_bytes = re.compile(cfg.regex.encode("utf-8"), re.MULTILINE) if cfg.regex else None
        self.regex_text = re.compile(cfg.regex) if cfg.regex else None
        self.severity_min = int(cfg.severity_number_min)
        self.label_templates = {k: Template(str(v), ALERT_VARIABLES) for k, v in cfg.labels.items()}
        self.annotation_templates = {k: Template(str(v), ALERT_VARIABLES) for k, v in cfg.annotations.items()}

    def matches_finding(self, f: Finding) -> bool:
        kind = f.kind.value if isinstance(f.kind, FindingKind) else str(f.kind)
        if self.kinds and kind not in self.kinds:
            return False
        if self.services and f.service not in self.services:
            return False
        sev = f.severity.value if isinstance(f.severity, Severity) else str(f.severity)
        if self.severities and sev not in self.severities:
            return False
        if self.pattern_ids and int(f.pattern_id) not in self.pattern_ids:
            return False
        if not (f.score >= self.cfg.score_min):  # NaN scores never pass a threshold
            return False
        if self.regex_text is not None:
            target = self.cfg.regex_target
            if target == "template":
                texts = (f.template,)
            elif target == "sample":
                texts = (f.sample,)
            else:
                texts = (f.template or f.sample,)
            if not any(t and self.regex_text.search(t) for t in texts):
                return False
        return True


def _body_regex_rows(regex: re.Pattern, body: StringArray) -> np.ndarray:
    """bool[n]: which bodies the (bytes, MULTILINE) regex finds a match in.

    One regex scan over the batch's body buffer with "\\n" between records (built
    with one vectorised np.insert), not one ``search`` per line. Python work is
    per *matching record*: after a hit the scan jumps to the next record. A match
    that spans a record boundary (only possible for regexes that can match "\\n")
    is re-checked record by record, so results equal ``regex.search(body[i])``.
    """
    n = len(body)
    hit = np.zeros(n, dtype=np.bool_)
    if n == 0:
        return hit
    rel = body.off - body.off[0]
    raw = body.buf[body.off[0]:body.off[-1]]
    joined = np.insert(raw, rel[1:n], np.uint8(10)) if n > 1 else raw
    starts = rel[:n] + np.arange(n, dtype=np.int64)       # record i begins here in `joined`
    ends = rel[1:] + np.arange(n, dtype=np.int64)          # ... and ends here (exclusive)
    data = joined.tobytes()
    pos, size = 0, len(data)
    while pos <= size:
        m = regex.search(data, pos)
        if m is None:
            break
        s, e = m.start(), m.end()
        row = int(np.searchsorted(starts, s, side="right")) - 1
        if e <= ends[row]:  # inside record `row` (an empty match at its end included)
            hit[row] = True
            pos = int(ends[row]) + 1  # the next record's start
            continue
        # spans a separator: decide each touched record on its own
        last = int(np.searchsorted(starts, max(e - 1, s), side="right")) - 1
        for r in range(row, last + 1):
            if not hit[r] and regex.search(data, int(starts[r]), int(ends[r])) is not None:
                hit[r] = True
        pos = max(e, s + 1)
    return hit


class LogRuleEvaluator:
    """Evaluates ``source: logs`` rules on a batch and reports one CRITICAL_MATCH finding per
    (rule, service, pattern) with the match count and a sample, not one per line."""

    def __init__(self, rules: list[CompiledRule]):
        self.rules = [r for r in rules if r.source == "logs"]
        # template bytes -> bool per rule: each distinct template text is regex-checked once
        self._template_cache: dict[bytes, np.ndarray] = {}
        self._cache_limit = 200_000
        # the last template dictionary seen (DictStringArray) and bool[n_rules, len(dictionary)] for it
        self._dictionary_hits: tuple[StringArray, np.ndarray] | None = None

    def _text_hits(self, text: bytes) -> np.ndarray:
        hits = self._template_cache.get(text)
        if hits is None:
            if len(self._template_cache) >= self._cache_limit:
                self._template_cache.clear()
            hits = np.asarray([r.regex_bytes is not None and r.regex_bytes.search(text) is not None
                               for r in self.rules], dtype=np.bool_)
            self._template_cache[text] = hits
        return hits

    def _template_hits(self, pid: np.ndarray, templates: StringArray) -> np.ndarray:
        """bool[n_rules, n]: rule r's regex matches record i's template (searched once per distinct text).

        The patterns processor's templates are a DictStringArray whose dictionary changes only when a
        template does: the rules are evaluated per dictionary entry once per dictionary and looked up
        by code (no per-batch work per pattern). Otherwise once per distinct pattern id in the batch.
        """
        if isinstance(templates, DictStringArray):
            memo = self._dictionary_hits
            if memo is None or memo[0] is not templates.dictionary:
                d = templates.dictionary
                per_entry = np.zeros((len(self.rules), len(d)), dtype=np.bool_)
                for j in range(len(d)):
                    per_entry[:, j] = self._text_hits(d.get_bytes(j))
                memo = self._dictionary_hits = (d, per_entry)
            return memo[1][:, templates.codes]
        uniq, first, inverse = np.unique(pid, return_index=True, return_inverse=True)
        per_pattern = np.zeros((len(self.rules), len(uniq)), dtype=np.bool_)
        for j, i in enumerate(first.tolist()):
            per_pattern[:, j] = self._text_hits(templates.get_bytes(i))
        return per_pattern[:, inverse.ravel()]

    def evaluate(self, batch: LogBatch) -> list[tuple[CompiledRule, Finding]]:
        n = len(batch)
        if n == 0 or not self.rules:
            return []
        pid = batch.columns.get("pattern_id")
        templates = batch.columns.get("pattern_template")
        has_templates = pid is not None and isinstance(templates, StringArray)
        template_hits = None
        if has_templates and any(r.regex_bytes is not None and r.cfg.regex_target in ("auto", "template")
                                 for r in self.rules):
            template_hits = self._template_hits(np.asarray(pid), templates)
        out: list[tuple[CompiledRule, Finding]] = []
        event_ns = None
        for k, rule in enumerate(self.rules):
            regex_mask = None
            if rule.regex_bytes is not None:
                target = rule.cfg.regex_target
                if target == "body" or (target == "auto" and not has_templates):
                    regex_mask = _body_regex_rows(rule.regex_bytes, batch.body)
                elif template_hits is not None:
                    regex_mask = template_hits[k]
                else:  # target: template, but this batch carries no templates
                    regex_mask = np.zeros(n, dtype=np.bool_)
            sev_mask = batch.severity_number >= rule.severity_min if rule.severity_min else None
            if regex_mask is not None and sev_mask is not None:
                mask = (regex_mask | sev_mask) if rule.cfg.match == "any" else (regex_mask & sev_mask)
            else:
                mask = regex_mask if regex_mask is not None else sev_mask
            if rule.services:
                codes = [i for i, s in enumerate(batch.services) if s in rule.services]
                mask = mask & np.isin(batch.service_index, codes)
            if rule.pattern_ids and pid is not None:
                mask = mask & np.isin(np.asarray(pid), np.fromiter(rule.pattern_ids, dtype=np.uint64))
            rows = np.flatnonzero(mask)
            if len(rows) == 0:
                continue
            if event_ns is None:
                event_ns = batch.event_ns
            svc = batch.service_index[rows].astype(np.int64)
            if pid is not None:
                upid, pinv = np.unique(np.asarray(pid)[rows], return_inverse=True)
                key = svc * len(upid) + pinv.ravel()
            else:
                key = svc
            _, first, counts = np.unique(key, return_index=True, return_counts=True)
            for fi, count in zip(first.tolist(), counts.tolist()):
                row = int(rows[fi])
                out.append((rule, Finding(
                    time_ns=int(event_ns[row]),
                    kind=FindingKind.CRITICAL_MATCH,
                    service=batch.services[int(batch.service_index[row])],
                    score=1.0,
                    severity=Severity.CRITICAL,
                    pattern_id=int(pid[row]) if pid is not None else 0,
                    template=templates[row] if has_templates else "",
                    observed=float(count),
                    description=f"{count} log line(s) matched rule {rule.name}",
                    sample=batch.body[row],
                    labels={},
                )))
        return out


def compile_rules(cfg: AlertsFile) -> list[CompiledRule]:
    return [CompiledRule(i, r) for i, r in enumerate(cfg.rules)]

