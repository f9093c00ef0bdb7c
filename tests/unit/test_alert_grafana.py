"""Grafana alert provisioning (grafana/provisioning/alerting/*.yaml): structure per Grafana's file
provisioning format, agreement with the fast-path routing (config/alerts.yaml), and every rule's SQL
run against chDB with demo data after expanding the ClickHouse plugin's macros."""
from __future__ import annotations

import re
import time
from pathlib import Path

import pyarrow as pa
import pytest
import yaml

from otelproc.alerting.rules import load_alerts_file

REPO = Path(__file__).resolve().parents[2]
ALERTING_DIR = REPO / "grafana" / "provisioning" / "alerting"
FILES = sorted(ALERTING_DIR.glob("*.yaml"))
EXPR_TYPES = {"threshold", "reduce", "math", "resample", "classic_conditions", "sql"}
NO_DATA_STATES = {"NoData", "Alerting", "OK"}
EXEC_ERR_STATES = {"Error", "Alerting", "OK"}


def load_all() -> list[dict]:
    assert FILES, f"no provisioning files in {ALERTING_DIR}"
    return [yaml.safe_load(p.read_text()) for p in FILES]


def all_rules() -> list[dict]:
    return [r for doc in load_all() for g in doc.get("groups", []) for r in g["rules"]]


def duration_s(text: str) -> float:
    m = re.fullmatch(r"(\d+)(s|m|h)", str(text))
    assert m, f"bad duration {text!r}"
    return int(m.group(1)) * {"s": 1, "m": 60, "h": 3600}[m.group(2)]


def test_rules_follow_grafana_file_provisioning_format():
    uids = set()
    for doc in load_all():
        assert doc["apiVersion"] == 1
        assert set(doc) <= {"apiVersion", "groups", "contactPoints", "policies", "templates", "muteTimes",
                            "deleteRules", "deleteContactPoints", "resetPolicies"}
        for g in doc.get("groups", []):
            assert g["orgId"] == 1 and g["name"] and g["folder"]
            assert duration_s(g["interval"]) % 10 == 0
            for r in g["rules"]:
                assert re.fullmatch(r"[A-Za-z0-9_-]{1,40}", r["uid"]) and r["uid"] not in uids
                uids.add(r["uid"])
                assert r["title"] and r["noDataState"] in NO_DATA_STATES and r["execErrState"] in EXEC_ERR_STATES
                duration_s(r["for"])
                assert r["labels"]["severity"] in {"critical", "warning", "info"}
                refs = {d["refId"]: d for d in r["data"]}
                assert r["condition"] in refs
                for d in r["data"]:
                    assert d["model"]["refId"] == d["refId"]
                    if d["datasourceUid"] == "__expr__":
                        assert d["model"]["type"] in EXPR_TYPES and d["model"]["expression"] in refs
                    else:
                        assert d["datasourceUid"] == "otelproc-ch"
                        rel = d["relativeTimeRange"]
                        assert rel["from"] > rel["to"] >= 0
                        assert d["model"]["editorType"] == "sql" and d["model"]["format"] == 1
                        sql = d["model"]["rawSql"]
                        # backend-only evaluation: no template variables or frontend macros
                        assert "$__conditionalAll" not in sql and not re.search(r"\$(?!__)\w|\$\{", sql)


def test_contact_points_and_policies_mirror_the_fast_path():
    docs = load_all()
    points = {c["name"]: c for d in docs for c in d.get("contactPoints", [])}
    policies = [p for d in docs for p in d.get("policies", [])]
    assert len(policies) == 1
    root = policies[0]
    for cp in points.values():
        for rcv in cp["receivers"]:
            assert rcv["uid"] and rcv["type"] in {"webhook", "prometheus-alertmanager", "slack", "email"} and rcv["settings"]

    def walk(p):
        assert p["receiver"] in points, f"policy receiver {p['receiver']} is not a contact point"
        for m in p.get("object_matchers", []):
            assert len(m) == 3 and m[1] in {"=", "!=", "=~", "!~"}
        for c in p.get("routes", []):
            walk(c)

    walk(root)
    fast = load_alerts_file(REPO / "config" / "alerts.yaml")
    strip = lambda name: name.removeprefix("otelproc-")
    assert strip(root["receiver"]) == fast.route.receiver
    assert root["group_by"] == fast.route.group_by
    assert {strip(n) for n in points} == {r.name for r in fast.receivers}
    kinds = {"webhook": "webhook_configs", "prometheus-alertmanager": "alertmanager_configs",
             "slack": "slack_configs", "email": "email_configs"}
    for r in fast.receivers:
        for rcv in points["otelproc-" + r.name]["receivers"]:
            assert getattr(r, kinds[rcv["type"]]), f"{r.name}: {rcv['type']} has no fast-path counterpart"
    grafana_routes = [(strip(c["receiver"]), [f'{m[0]}="{m[2]}"' for m in c["object_matchers"]], c.get("continue", False))
                      for c in root["routes"]]
    fast_routes = [(c.receiver, c.matchers, c.continue_) for c in fast.route.routes]
    assert grafana_routes == fast_routes
    # the SQL derives `team` from the service with the fast path's service_labels mapping
    mapping = {s: l["team"] for s, l in fast.global_.service_labels.items() if "team" in l}
    for rule in all_rules():
        sql = rule["data"][0]["model"]["rawSql"]
        m = re.search(r"transform\(ServiceName, \[(.*?)\], \[(.*?)\], ''\) AS team", sql)
        assert m, f"{rule['uid']}: no team label"
        services = re.findall(r"'([^']*)'", m.group(1))
        teams = re.findall(r"'([^']*)'", m.group(2))
        assert dict(zip(services, teams)) == mapping


# --------------------------------------------------------------------------- SQL against chDB

def expand_macros(sql: str, from_s: int, to_s: int) -> str:
    """The ClickHouse plugin's backend macros used by alert rules (see environment.md §7)."""
    sql = re.sub(r"\$__timeFilter\(([^()]+)\)", lambda m: f"{m.group(1)} >= toDateTime({from_s}) AND "
                 f"{m.group(1)} <= toDateTime({to_s})", sql)
    sql = sql.replace("$__fromTime", f"toDateTime({from_s})").replace("$__toTime", f"toDateTime({to_s})")
    assert "$__" not in sql, f"unexpanded macro in {sql}"
    return sql


@pytest.fixture
def demo_store(chdb_path, chdb_database):
    from otelproc.store import open_store
    from otelproc.store.schema import SchemaOptions, ensure_schema

    store = open_store(f"chdb://{chdb_path}", chdb_database)
    ensure_schema(store, SchemaOptions(database=store.database))
    now_ns = time.time_ns()
    ts = pa.array([now_ns - 60 * 10**9] * 4 + [now_ns - 7200 * 10**9, now_ns - 50 * 10**9], type=pa.timestamp("ns"))
    incident = [("incident", "checkout@t1")]
    store.insert_arrow("anomalies", pa.table({
        "Timestamp": ts,
        "ServiceName": ["checkout", "checkout", "checkout", "frontend", "checkout", "checkout"],
        "Kind": ["spike", "spike", "spike", "error_ratio", "spike", "error_ratio"],
        "Score": pa.array([0.95, 0.9, 0.85, 0.99, 0.99, 0.6], type=pa.float32()),
        "Severity": ["critical", "warning", "warning", "warning", "critical", "critical"],
        "Description": ["d"] * 6,
        # the two critical findings of one incident (spike and error ratio) share its key: one alert
        "Labels": pa.array([incident, [], [], [], [("incident", "checkout@t0")], incident],
                           type=pa.map_(pa.string(), pa.string())),
    }))
    recent = pa.array([now_ns - 60 * 10**9] * 3, type=pa.timestamp("ns"))
    old = pa.array([now_ns - 86400 * 10**9] * 3, type=pa.timestamp("ns"))
    store.insert_arrow("log_patterns", pa.table({
        "ServiceName": ["checkout", "auth", "frontend"],
        "PatternId": pa.array([1, 2, 3], type=pa.uint64()),
        "Template": ["java.lang.OutOfMemoryError: <*>", "user <*> logged in", "GET <*> 200"],
        "FirstSeen": [old[0], recent[1], old[2]],
        "LastSeen": recent,
        "Count": pa.array([3, 10, 100], type=pa.uint64()),
        "SampleBody": ["java.lang.OutOfMemoryError: heap", "user 7 logged in", "GET / 200"],
    }))
    yield store
    store.command(f"DROP DATABASE IF EXISTS `{chdb_database}`")
    store.close()


EXPECTED = {  # rule uid -> rows (label columns..., value) on the demo data
    "otelproc-anomaly-critical": [("checkout", "checkout@t1", "error_ratio,spike", "payments", 2)],
    # (the demo rows of these carry no incident label; the anomaly processor's always do)
    "otelproc-anomaly-warning": [("checkout", "", "spike", "payments", 2), ("frontend", "", "error_ratio", "web", 1)],
    # rules over patterns: the service is the alert's incident (the policy groups by incident)
    "otelproc-new-patterns": [("auth", "auth", "identity", 1)],
    "otelproc-critical-patterns": [("checkout", "checkout", "payments", 1)],
}


def test_every_rule_sql_runs_on_chdb_and_returns_labels_plus_one_value(demo_store):
    rules = all_rules()
    assert {r["uid"] for r in rules} == set(EXPECTED)
    for rule in rules:
        q = next(d for d in rule["data"] if d["datasourceUid"] != "__expr__")
        to_s = int(time.time())
        sql = expand_macros(q["model"]["rawSql"], to_s - q["relativeTimeRange"]["from"], to_s)
        table = demo_store.query_arrow(sql)
        numeric = [f.name for f in table.schema if pa.types.is_integer(f.type) or pa.types.is_floating(f.type)]
        strings = [f.name for f in table.schema if f.name not in numeric]
        assert len(numeric) == 1, f"{rule['uid']}: a table-format alert query needs exactly one numeric column"
        assert "service" in strings and "team" in strings, rule["uid"]
        rows = sorted(tuple(r.values()) for r in table.to_pylist())
        assert rows == EXPECTED[rule["uid"]], rule["uid"]
