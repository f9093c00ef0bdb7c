"""Routing with Alertmanager semantics, driven with an explicit clock: nested routes, continue, grouping,
group_wait / group_interval / repeat_interval, dedup, inhibition, silences (also over the HTTP API), resolves."""
from __future__ import annotations

import json
import urllib.request

import pytest

from otelproc.alerting.engine import AlertEngine
from otelproc.alerting.matchers import parse_matcher
from otelproc.alerting.router import Alert, Dispatcher, Inhibitor, Route
from otelproc.alerting.rules import InhibitRuleConfig, parse_alerts
from otelproc.alerting.silences import SilenceStore
from otelproc.batch import LogBatch
from otelproc.findings import Finding, FindingKind, Severity

T0 = 1_800_000_000.0

ROUTES = """
route:
  receiver: default
  group_by: [alertname, service]
  group_wait: 10s
  group_interval: 1m
  repeat_interval: 1h
  routes:
    - matchers: ['severity="critical"']
      receiver: oncall
      continue: true
    - matchers: ['team="payments"']
      receiver: payments
      routes:
        - matchers: ['service="checkout"']
          receiver: checkout
          group_by: ['...']
          group_wait: 0s
    - matchers: ['team=~"pay.*"']
      receiver: never   # shadowed by the route above (no continue)
receivers: [{name: default}, {name: oncall}, {name: payments}, {name: checkout}, {name: never}]
"""


def route_tree() -> Route:
    return Route(parse_alerts(ROUTES).route)


def alert(now: float = T0, ttl: float = 300.0, **labels: str) -> Alert:
    labels.setdefault("alertname", "A")
    return Alert(dict(labels), {"summary": "s"}, starts_at=now, ends_at=now + ttl)


def receivers_of(root: Route, **labels: str) -> list[str]:
    return [r.receiver for r in root.match(labels)]


def test_nested_routes_and_continue():
    root = route_tree()
    assert receivers_of(root, service="x") == ["default"]
    assert receivers_of(root, service="x", severity="critical") == ["oncall"]
    assert receivers_of(root, service="api", team="payments") == ["payments"]
    assert receivers_of(root, service="checkout", team="payments") == ["checkout"]
    # continue: the critical route matched, so the next sibling is tried too
    assert receivers_of(root, service="checkout", team="payments", severity="critical") == ["oncall", "checkout"]
    # inherited settings; own settings on the child
    child = root.match({"service": "checkout", "team": "payments"})[0]
    assert child.group_by_all and child.group_wait == 0 and child.group_interval == 60 and child.repeat_interval == 3600


def test_matchers():
    assert parse_matcher('severity="critical"').matches({"severity": "critical"})
    assert parse_matcher("team=~pay.*").matches({"team": "payments"})
    assert not parse_matcher("team=~pay").matches({"team": "payments"})  # anchored
    assert parse_matcher('team!~"pay.*"').matches({})
    assert parse_matcher("service!=a").matches({"service": "b"})
    assert parse_matcher('x=""').matches({})  # absent = empty
    for bad in ("severity", "1x=2", 'a=~"("'):
        with pytest.raises(ValueError):
            parse_matcher(bad)


def test_grouping_group_wait_and_group_interval():
    d = Dispatcher(route_tree())
    d.ingest([alert(service="api", pattern_id="1"), alert(service="api", pattern_id="2"),
              alert(service="db")], T0)
    assert d.flush_due(T0) == [] and d.flush_due(T0 + 9.9) == []  # group_wait 10s
    notes = d.flush_due(T0 + 10)
    assert sorted((n.group_labels["service"], len(n.alerts)) for n in notes) == [("api", 2), ("db", 1)]
    api = next(n for n in notes if n.group_labels["service"] == "api")
    assert api.receiver == "default" and api.status == "firing"
    assert api.common_labels == {"alertname": "A", "service": "api"}
    assert api.group_key == '{}:{alertname="A",service="api"}'
    # a new alert joining an existing group waits for the next group_interval tick
    d.ingest([alert(T0 + 20, service="api", pattern_id="3")], T0 + 20)
    assert d.flush_due(T0 + 30) == []
    notes = d.flush_due(T0 + 70)
    assert [len(n.alerts) for n in notes] == [3]


def test_group_by_everything_and_group_wait_zero():
    d = Dispatcher(route_tree())
    d.ingest([alert(service="checkout", team="payments", pattern_id="1"),
              alert(service="checkout", team="payments", pattern_id="2")], T0)
    notes = d.flush_due(T0)
    assert len(notes) == 2 and {n.receiver for n in notes} == {"checkout"}
    assert all(len(n.alerts) == 1 for n in notes)


def test_dedup_repeat_interval_and_resolve():
    d = Dispatcher(route_tree())
    d.ingest([alert(service="api")], T0)
    assert len(d.flush_due(T0 + 10)) == 1
    # the same alert refreshed every 30 s: no new notification until repeat_interval
    sent = []
    t = T0 + 10
    while t + 30 < T0 + 10 + 3600:
        t += 30
        d.ingest([alert(t, service="api")], t)
        sent += d.flush_due(t)
    assert sent == []
    t += 30
    d.ingest([alert(t, service="api")], t)
    assert len(d.flush_due(t)) == 1  # repeated after an hour
    assert d.alerts[next(iter(d.alerts))].starts_at == T0  # dedup kept the original start
    # no refresh for ttl: resolved at the next tick, then the group is gone
    notes = []
    while d.groups:
        t += 60
        notes += d.flush_due(t)
    assert [n.status for n in notes] == ["resolved"] and notes[0].alerts[0].status == "resolved"
    assert d.alerts == {}


def test_resolve_not_sent_when_receiver_does_not_want_it():
    d = Dispatcher(route_tree(), send_resolved={"default": False})
    d.ingest([alert(service="api", ttl=30)], T0)
    assert len(d.flush_due(T0 + 10)) == 1
    assert d.flush_due(T0 + 70) == [] and d.groups == {}


def test_inhibition_critical_mutes_warnings_of_same_service():
    inh = Inhibitor([InhibitRuleConfig(['severity="critical"'], ['severity="warning"'], ["service"])])
    d = Dispatcher(route_tree(), inhibitor=inh)
    d.ingest([alert(alertname="Spike", service="api", severity="warning"),
              alert(alertname="Spike", service="db", severity="warning"),
              alert(alertname="Crit", service="api", severity="critical")], T0)
    notes = d.flush_due(T0 + 10)
    got = sorted((n.receiver, n.alerts[0].labels["alertname"], n.alerts[0].labels["service"]) for n in notes)
    assert got == [("default", "Spike", "db"), ("oncall", "Crit", "api")]
    # when the critical alert resolves, the warning is no longer muted and gets notified
    d.ingest([alert(T0 + 60, alertname="Spike", service="api", severity="warning")], T0 + 60)
    d.alerts[next(fp for fp, a in d.alerts.items() if a.labels["alertname"] == "Crit")].ends_at = T0 + 100
    notes = d.flush_due(T0 + 130)
    assert ("Spike", "api", "firing") in {(n.alerts[0].labels["alertname"], n.alerts[0].labels["service"], n.status)
                                          for n in notes}


def test_silence_mutes_until_it_expires():
    silences = SilenceStore()
    d = Dispatcher(route_tree(), silences=silences)
    sid = silences.add([parse_matcher('service="api"')], T0, T0 + 3600, T0, "me", "maintenance")
    d.ingest([alert(service="api"), alert(service="db")], T0)
    notes = d.flush_due(T0 + 10)
    assert [n.group_labels["service"] for n in notes] == ["db"]
    silences.expire(sid, T0 + 20)
    d.ingest([alert(T0 + 30, service="api")], T0 + 30)
    notes = d.flush_due(T0 + 70)
    assert [n.group_labels["service"] for n in notes] == ["api"]
    with pytest.raises(ValueError, match="already expired"):
        silences.expire(sid, T0 + 80)
    with pytest.raises(ValueError, match="match every alert"):
        silences.add([parse_matcher('service=~".*"')], T0, T0 + 10, T0)


# --------------------------------------------------------------------------- engine + HTTP API

ENGINE_CFG = """
global: {resolve_timeout: 5m}
rules:
  - alert: Spike
    kinds: [spike]
    annotations: {summary: '{{ service }} {{ observed }}'}
  - alert: Slow
    kinds: [trend]
    for: 2m
route: {receiver: hook, group_wait: 0s, group_interval: 1m}
receivers: [{name: hook}]
"""


class FakeClock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


def spike(service: str = "api", kind: FindingKind = FindingKind.SPIKE, time_ns: int = 0) -> Finding:
    return Finding(time_ns=time_ns, kind=kind, service=service, score=0.9, severity=Severity.WARNING, observed=42.0)


def test_engine_for_duration_uses_event_time():
    clock = FakeClock()
    eng = AlertEngine(parse_alerts(ENGINE_CFG), clock=clock, integrations={"hook": []})
    b = LogBatch.empty()
    ns = int(T0 * 1e9)
    eng.process(b.with_findings([spike(kind=FindingKind.TREND, time_ns=ns)]))
    assert eng.dispatcher.alerts == {}  # pending
    eng.process(b.with_findings([spike(kind=FindingKind.TREND, time_ns=ns + 60 * 10**9)]))
    assert eng.dispatcher.alerts == {}
    eng.process(b.with_findings([spike(kind=FindingKind.TREND, time_ns=ns + 121 * 10**9)]))
    assert len(eng.dispatcher.alerts) == 1
    a = next(iter(eng.dispatcher.alerts.values()))
    assert a.labels == {"alertname": "Slow", "service": "api", "severity": "warning", "kind": "trend"}


def test_silences_over_http_api():
    from otelproc.alerting.api import AlertAPI

    clock = FakeClock()
    eng = AlertEngine(parse_alerts(ENGINE_CFG), clock=clock, integrations={"hook": []})
    api = AlertAPI(eng, "127.0.0.1:0")
    api.start()
    base = f"http://127.0.0.1:{api.address[1]}"

    def call(method: str, path: str, body: object = None) -> tuple[int, object]:
        req = urllib.request.Request(base + path, method=method, data=None if body is None else json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    try:
        eng.process(LogBatch.empty().with_findings([spike("api"), spike("db")]))
        code, sil = call("POST", "/api/v2/silences", {
            "matchers": [{"name": "service", "value": "api", "isRegex": False, "isEqual": True}],
            "endsAt": "2030-01-01T00:00:00Z", "createdBy": "test", "comment": "deploy"})
        assert code == 200 and sil["silenceID"]
        code, listed = call("GET", "/api/v2/silences")
        assert [s["status"]["state"] for s in listed] == ["active"] and listed[0]["comment"] == "deploy"
        code, alerts = call("GET", "/api/v2/alerts")
        state = {a["labels"]["service"]: a["status"] for a in alerts}
        assert state["api"]["state"] == "suppressed" and state["api"]["silencedBy"] == [sil["silenceID"]]
        assert state["db"]["state"] == "active"
        assert alerts[0]["annotations"]["summary"].endswith(" 42")
        assert call("DELETE", f"/api/v2/silence/{sil['silenceID']}")[0] == 200
        assert call("GET", f"/api/v2/silence/{sil['silenceID']}")[1]["status"]["state"] == "expired"
        # bad requests are 400 with a reason, unknown ids 404
        code, err = call("POST", "/api/v2/silences", {"matchers": [], "endsAt": "2030-01-01T00:00:00Z"})
        assert code == 400 and "matchers" in err["message"]
        code, err = call("POST", "/api/v2/silences", {"matchers": [{"name": "a", "value": "b"}], "endsAt": "soon"})
        assert code == 400 and "endsAt" in err["message"]
        assert call("DELETE", "/api/v2/silence/nope")[0] == 404
    finally:
        api.shutdown()
