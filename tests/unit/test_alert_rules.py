"""Alert rules file: loading, key-path validation, templating, and rule evaluation on batches/findings."""
from __future__ import annotations

import random
import re
from pathlib import Path

import numpy as np
import pytest

from otelproc.alerting.rules import (CompiledRule, LogRuleEvaluator, RuleConfig, _body_regex_rows,
                                     load_alerts_file, parse_alerts)
from otelproc.alerting.templating import Template, TemplateError
from otelproc.batch import LogBatch, StringArray
from otelproc.config import ConfigError
from otelproc.findings import Finding, FindingKind, Severity

REPO = Path(__file__).resolve().parents[2]

MINIMAL = """
route: {receiver: hook}
receivers: [{name: hook, webhook_configs: [{url: "http://127.0.0.1:1/x"}]}]
"""


def errors_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as e:
        parse_alerts(text, source="alerts.yaml")
    return e.value.errors


def test_shipped_rules_file_loads():
    cfg = load_alerts_file(REPO / "config" / "alerts.yaml")
    names = [r.alert for r in cfg.rules]
    assert "CriticalLogPattern" in names
    crit = cfg.rules[names.index("CriticalLogPattern")]
    assert crit.source == "logs" and crit.severity_number_min == 21 and re.search(crit.regex, "OutOfMemoryError")
    assert cfg.route.routes[0].continue_ is True
    assert cfg.receivers[-1].email_configs[0].from_ == "otelproc@example.com"
    assert cfg.inhibit_rules[0].equal == ["service"]


def test_validation_reports_every_problem_with_its_key_path():
    errs = errors_of("""
global: {resolve_timeout: -1s}
rules:
  - alert: A
    kinds: [spikey]
    regex: '(unclosed'
    for: -5s
    labels: {"bad-name": x, team: '{{ nope }}'}
  - source: logs
route:
  receiver: nobody
  routes:
    - matchers: ['severity=~"(x"']
      receiver: ghost
      continue: 3
receivers:
  - name: hook
    webhook_configs: [{url: "ftp://x"}]
    email_configs: [{to: [], from: "", smarthost: nohost}]
""")
    text = "\n".join(errs)
    expected = [
        "alerts.yaml: global::resolve_timeout: must be > 0",
        "rules[0]::kinds[0]: unknown finding kind 'spikey'",
        "rules[0]::regex: invalid regular expression",
        "rules[0]::for: must be >= 0",
        "rules[0]::labels::bad-name: not a valid label name",
        "rules[0]::labels::team: {{ nope }}: unknown variable 'nope'",
        "rules[1]::alert: required",
        "rules[1]::regex: a logs rule needs a regex and/or severity_number_min",
        "route::routes[0]::matchers[0]: invalid regex",
        "route::routes[0]::continue: expected true or false",
        "receivers[0]::webhook_configs[0]::url: must be an http:// or https:// URL",
        "receivers[0]::email_configs[0]::to: at least one address is required",
        "receivers[0]::email_configs[0]::from: required",
        "receivers[0]::email_configs[0]::smarthost: must be host:port",
    ]
    for e in expected:
        assert e in text, f"missing {e!r} in:\n{text}"
    assert "for_" not in text and "continue_" not in text and "global_" not in text


def test_routes_must_name_defined_receivers():
    errs = errors_of("""
route:
  receiver: nobody
  routes: [{matchers: ['severity="critical"'], receiver: ghost}]
receivers: [{name: hook}, {name: hook}]
""")
    assert "alerts.yaml: route::receiver: unknown receiver 'nobody'; defined: hook" in errs
    assert "alerts.yaml: route::routes[0]::receiver: unknown receiver 'ghost'; defined: hook" in errs
    assert "alerts.yaml: receivers[1]::name: receiver 'hook' is defined twice" in errs


def test_unknown_keys_and_bad_yaml():
    errs = errors_of(MINIMAL + "rules: [{alert: A, kind: [spike]}]\n")
    assert any("rules[0]::kind: unknown key" in e for e in errs)
    assert errors_of("rules: [")[0].startswith("alerts.yaml: not valid YAML")
    assert "top level must be a mapping" in errors_of("- 1\n- 2")[0]


def test_env_substitution(monkeypatch):
    monkeypatch.setenv("HOOK_URL", "http://10.0.0.1:9/h")
    cfg = parse_alerts("route: {receiver: hook}\nreceivers: [{name: hook, webhook_configs: [{url: '${env:HOOK_URL}'}]}]")
    assert cfg.receivers[0].webhook_configs[0].url == "http://10.0.0.1:9/h"


# --------------------------------------------------------------------------- templating

def test_template_rendering_and_filters():
    t = Template("{{ service }}: {{ observed:.1f }} vs {{ expected }} {{ template | upper }} "
                 "{{ grafana_url }}/d?s={{ service | urlquery }} {{ labels.team | default:none }} {{ sample | truncate:5 }}")
    out = t.render({"service": "a b", "observed": 3.14159, "expected": 2.0, "template": "x <*>",
                    "grafana_url": "http://g", "sample": "0123456789"}, labels={})
    assert out == "a b: 3.1 vs 2 X <*> http://g/d?s=a%20b none 0123…"
    assert Template("{{ $labels.team }}/{{ .service }}").render({"service": "s"}, {"team": "t"}) == "t/s"
    assert Template("{{ observed }}").render({"observed": float("nan")}) == "NaN"
    for bad, msg in [("{{ nope }}", "unknown variable"), ("{{ service | shout }}", "unknown filter"),
                     ("{{ service", "unbalanced"), ("{{ observed:zz }}", "invalid format spec")]:
        with pytest.raises(TemplateError, match=msg):
            Template(bad)


# --------------------------------------------------------------------------- logs rules (ingest path)

def naive_rows(pattern: bytes, bodies: list[str]) -> np.ndarray:
    rx = re.compile(pattern, re.MULTILINE)
    return np.asarray([rx.search(b.encode()) is not None for b in bodies], dtype=bool)


@pytest.mark.parametrize("pattern", [rb"OutOfMemory|panic|FATAL", rb"^panic", rb"FATAL$", rb"x\s+y", rb"a.*z",
                                     rb"", rb"[^q]{3}", "é+".encode(), rb"\d{3,}"])
def test_body_regex_equals_per_line_search(pattern):
    rng = random.Random(7)
    alphabet = ["a", "z", "x", "y", " ", "\n", "panic", "FATAL", "é", "1", "q", "OutOfMemory", ""]
    for n in (0, 1, 2, 50, 400):
        bodies = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 8))) for _ in range(n)]
        arr = StringArray.from_pylist(bodies)
        got = _body_regex_rows(re.compile(pattern, re.MULTILINE), arr)
        assert got.dtype == np.bool_ and got.shape == (n,)
        np.testing.assert_array_equal(got, naive_rows(pattern, bodies), err_msg=f"{pattern!r} n={n}")


def test_body_regex_on_a_sliced_string_array():
    arr = StringArray.from_pylist(["skip panic", "ok", "panic here", "fine"]).take(np.array([1, 2, 3]))
    np.testing.assert_array_equal(_body_regex_rows(re.compile(rb"panic"), arr), [False, True, False])


def rule(**kw) -> CompiledRule:
    base = dict(alert="Crit", source="logs")
    base.update(kw)
    cfg = RuleConfig(**base)
    assert cfg.validate() == []
    return CompiledRule(0, cfg)


def test_logs_rule_groups_matches_per_service_and_counts():
    b = LogBatch.from_records([
        {"body": "GET /a 200", "service": "api"},
        {"body": "panic: nil map", "service": "api", "time_ns": 5},
        {"body": "panic: again", "service": "api", "time_ns": 6},
        {"body": "disk ok", "service": "db", "severity_number": 21},
        {"body": "OutOfMemoryError", "service": "db", "severity_number": 9},
    ])
    ev = LogRuleEvaluator([rule(regex="OutOfMemory|panic", severity_number_min=21)])
    got = {f.service: f for _, f in ev.evaluate(b)}
    assert set(got) == {"api", "db"}
    assert got["api"].observed == 2 and got["api"].sample == "panic: nil map" and got["api"].time_ns == 5
    assert got["db"].observed == 2 and got["db"].kind == FindingKind.CRITICAL_MATCH
    assert got["db"].severity == Severity.CRITICAL
    # match: all = regex AND severity
    ev_all = LogRuleEvaluator([rule(regex="OutOfMemory|panic", severity_number_min=21, match="all")])
    assert ev_all.evaluate(b) == []
    # services filter
    ev_db = LogRuleEvaluator([rule(regex="panic|Out", services=["db"])])
    assert [f.service for _, f in ev_db.evaluate(b)] == ["db"]
    assert LogRuleEvaluator([rule(regex="panic")]).evaluate(LogBatch.empty()) == []


def test_logs_rule_uses_templates_once_per_pattern_and_rechecks_changed_templates():
    bodies = ["worker 1 panic", "worker 2 panic", "user 7 logged in", "user 9 logged in"]
    b = LogBatch.from_records([{"body": x, "service": "api"} for x in bodies])
    pid = np.array([11, 11, 22, 22], dtype=np.uint64)
    b1 = b.with_columns(pattern_id=pid, pattern_template=StringArray.from_pylist(
        ["worker <*> panic", "worker <*> panic", "user <*> logged in", "user <*> logged in"]))
    ev = LogRuleEvaluator([rule(regex="panic")])
    out = ev.evaluate(b1)
    assert len(out) == 1 and out[0][1].pattern_id == 11 and out[0][1].observed == 2
    assert out[0][1].template == "worker <*> panic"
    assert set(ev._template_cache) == {b"worker <*> panic", b"user <*> logged in"}
    # pattern 22's template generalised into something that matches: re-evaluated, not served from cache
    b2 = b.with_columns(pattern_id=pid, pattern_template=StringArray.from_pylist(
        ["worker <*> panic", "worker <*> panic", "<*> panic <*>", "<*> panic <*>"]))
    assert sorted(f.pattern_id for _, f in ev.evaluate(b2)) == [11, 22]
    # regex_target: body ignores templates
    ev_body = LogRuleEvaluator([rule(regex="user 7", regex_target="body")])
    assert [f.observed for _, f in ev_body.evaluate(b1)] == [1.0]


def test_logs_rule_on_dictionary_templates_equals_the_flat_templates():
    """The patterns processor's DictStringArray templates are checked per dictionary entry (once per
    dictionary) and give what the flat templates give; a new dictionary is evaluated afresh."""
    from otelproc.batch import DictStringArray

    bodies = ["worker 1 panic", "user 7 logged in", "worker 2 panic", "disk FATAL", "user 9 logged in"]
    b = LogBatch.from_records([{"body": x, "service": s} for x, s in zip(bodies, ["api", "api", "db", "db", "db"])])
    pid = np.array([11, 22, 11, 33, 22], dtype=np.uint64)
    texts = ["worker <*> panic", "user <*> logged in", "worker <*> panic", "disk FATAL", "user <*> logged in"]
    dictionary = StringArray.from_pylist(["user <*> logged in", "worker <*> panic", "disk FATAL"])
    codes = np.array([1, 0, 1, 2, 0])
    rules = lambda: [rule(alert="Crit", regex="panic|FATAL"), rule(alert="Login", regex="logged")]  # noqa: E731
    ev_flat, ev_dict = LogRuleEvaluator(rules()), LogRuleEvaluator(rules())
    flat = ev_flat.evaluate(b.with_columns(pattern_id=pid, pattern_template=StringArray.from_pylist(texts)))
    dicts = ev_dict.evaluate(b.with_columns(pattern_id=pid, pattern_template=DictStringArray(codes, dictionary)))
    key = lambda out: sorted((r.cfg.alert, f.service, f.pattern_id, f.observed, f.template) for r, f in out)  # noqa: E731
    assert key(dicts) == key(flat)
    assert [k[:3] for k in key(flat)] == [("Crit", "api", 11), ("Crit", "db", 11), ("Crit", "db", 33),
                                          ("Login", "api", 22), ("Login", "db", 22)]
    # a template generalised: the processor makes a new dictionary, which is evaluated, not the memo reused
    dictionary2 = StringArray.from_pylist(["user <*> panic <*>", "worker <*> panic", "disk FATAL"])
    out = ev_dict.evaluate(b.with_columns(pattern_id=pid, pattern_template=DictStringArray(codes, dictionary2)))
    assert [k[:3] for k in key(out)] == [("Crit", "api", 11), ("Crit", "api", 22), ("Crit", "db", 11),
                                         ("Crit", "db", 22), ("Crit", "db", 33)]

# --------------------------------------------------------------------------- findings rules

def finding(**kw) -> Finding:
    base = dict(time_ns=1, kind=FindingKind.SPIKE, service="api", score=0.9, severity=Severity.WARNING,
                pattern_id=5, template="GET <*> took <*> ms", sample="GET /x took 900 ms")
    base.update(kw)
    return Finding(**base)


def test_findings_rule_matching():
    r = rule(source="findings", kinds=["spike", "level_shift"], services=["api"], score_min=0.8)
    assert r.matches_finding(finding())
    assert not r.matches_finding(finding(kind=FindingKind.DROP))
    assert not r.matches_finding(finding(service="db"))
    assert not r.matches_finding(finding(score=0.5))
    assert not r.matches_finding(finding(score=float("nan")))
    assert rule(source="findings", pattern_ids=[5]).matches_finding(finding())
    assert not rule(source="findings", pattern_ids=[6]).matches_finding(finding())
    assert rule(source="findings", severities=["warning"]).matches_finding(finding())
    assert not rule(source="findings", severities=["critical"]).matches_finding(finding())
    assert rule(source="findings", regex="took <\\*> ms").matches_finding(finding())
    assert rule(source="findings", regex="900", regex_target="sample").matches_finding(finding())
    assert not rule(source="findings", regex="900").matches_finding(finding())  # auto = template first
