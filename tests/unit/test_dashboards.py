"""Grafana dashboards: generated JSON is committed, well-formed, and every panel's SQL runs on chDB."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from otelproc.report import (MAIN_DASHBOARDS, TimeRange, data_time_range, expand_macros, load_demo, panel_queries,
                             variable_values)

REPO = Path(__file__).resolve().parents[2]
GRAFANA = REPO / "grafana"
DASH_DIR = GRAFANA / "dashboards"

# panel types shipped with Grafana 10/11 core
KNOWN_PANEL_TYPES = {"row", "timeseries", "stat", "table", "logs", "piechart", "bargauge", "barchart", "gauge",
                     "text", "state-timeline", "heatmap", "histogram", "status-history"}
FORMAT_FOR_TYPE = {"timeseries": 0, "logs": 2, "table": 1, "piechart": 1, "bargauge": 1}
VAR_RE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(?!__)([A-Za-z_]\w*)")


def _builder():
    import importlib.util

    spec = importlib.util.spec_from_file_location("build_dashboards", GRAFANA / "build_dashboards.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _dashboards() -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in sorted(DASH_DIR.glob("*.json"))}


def _vars_used(text: str) -> set[str]:
    return {a or b for a, b in VAR_RE.findall(text)} - {"__all"}


def test_regenerating_gives_the_committed_json():
    rendered = _builder().render_all()
    committed = {p.name: p.read_text() for p in DASH_DIR.glob("*.json")}
    assert set(rendered) == set(committed), "run python grafana/build_dashboards.py"
    for name, text in rendered.items():
        assert committed[name] == text, f"{name} is stale: run python grafana/build_dashboards.py"


def test_every_main_dashboard_is_there():
    assert set(MAIN_DASHBOARDS) <= set(_dashboards())


def test_structure():
    ds = yaml.safe_load((GRAFANA / "provisioning/datasources/clickhouse.yaml").read_text())["datasources"][0]
    uids = set()
    for name, d in _dashboards().items():
        assert d["uid"] not in uids, f"{name}: duplicate dashboard uid {d['uid']}"
        uids.add(d["uid"])
        assert len(d["uid"]) <= 40 and d["title"] and d["schemaVersion"] >= 36
        # variables: each query only uses variables defined before it
        defined: list[str] = []
        for v in d["templating"]["list"]:
            assert v["datasource"] == {"type": ds["type"], "uid": ds["uid"]}, (name, v["name"])
            used = _vars_used(v["query"]["rawSql"])
            assert used <= set(defined), f"{name}: variable {v['name']} uses {used - set(defined)} before definition"
            assert v["name"] not in defined, f"{name}: variable {v['name']} defined twice"
            defined.append(v["name"])
        panel_ids = set()
        for p in d["panels"]:
            assert p["type"] in KNOWN_PANEL_TYPES, (name, p["type"])
            assert p["id"] not in panel_ids, f"{name}: duplicate panel id {p['id']}"
            panel_ids.add(p["id"])
            g = p["gridPos"]
            assert g["x"] >= 0 and g["w"] >= 1 and g["x"] + g["w"] <= 24, (name, p["title"])
            if p["type"] == "row":
                continue
            assert p["datasource"]["uid"] == ds["uid"] and p["datasource"]["type"] == ds["type"]
            assert p["targets"], (name, p["title"])
            texts = [p["title"]] + [str(link["url"]) for link in p["fieldConfig"]["defaults"].get("links", [])]
            for t in p["targets"]:
                assert t["datasource"]["uid"] == ds["uid"] and t["rawSql"].strip()
                if p["type"] in FORMAT_FOR_TYPE:
                    assert t["format"] == FORMAT_FOR_TYPE[p["type"]], (name, p["title"])
                texts.append(t["rawSql"])
            if p.get("repeat"):
                assert p["repeat"] in defined
            for text in texts:
                used = _vars_used(text.replace("${__data.fields.", "${__x.").replace("${__url_time_range}", ""))
                assert used <= set(defined), f"{name}/{p['title']}: undefined variable(s) {used - set(defined)}"
        for a in d["annotations"]["list"]:
            if a.get("builtIn"):
                continue
            assert a["datasource"]["uid"] == ds["uid"]
            assert _vars_used(a["target"]["rawSql"]) <= set(defined)


# Files that may link to a dashboard: config and alert templates, provisioning, docs, package sources.
LINK_SOURCES = ("config/**/*.yaml", "grafana/provisioning/**/*.yaml", "grafana/dashboards/*.json", "docs/**/*.md",
                "README.md", "otelproc/**/*.py", "otelproc/**/*.md", "otelproc/**/*.yaml", "otelproc/**/*.json")
DASHBOARD_URL = re.compile(r"/d/([A-Za-z0-9_-]+)(?:/[A-Za-z0-9_-]*)?(\?[^\s'\"]*)?")


def _links_in_dashboard(d: dict) -> list[str]:
    """Every URL of a dashboard: its links, panel links, field links (defaults and overrides)."""
    urls = [link.get("url", "") for link in d.get("links", [])]
    for p in d["panels"]:
        urls += [link.get("url", "") for link in p.get("links", [])]
        fc = p.get("fieldConfig", {})
        urls += [link["url"] for link in fc.get("defaults", {}).get("links", [])]
        for o in fc.get("overrides", []):
            for prop in o["properties"]:
                if prop["id"] == "links":
                    urls += [link["url"] for link in prop["value"]]
    return [u for u in urls if u]


def test_every_dashboard_link_anywhere_points_at_a_shipped_dashboard_and_its_variables():
    dashes = {d["uid"]: d for d in _dashboards().values()}
    found = []
    for pattern in LINK_SOURCES:
        for path in sorted(REPO.glob(pattern)):
            for m in DASHBOARD_URL.finditer(path.read_text(errors="replace")):
                found.append((str(path.relative_to(REPO)), m.group(1), m.group(2) or ""))
    for name, d in _dashboards().items():
        for url in _links_in_dashboard(d):
            m = DASHBOARD_URL.search(url)
            assert m and url.startswith("/d/"), f"{name}: a link that is not to a dashboard: {url}"
            found.append((f"dashboard {name}", m.group(1), m.group(2) or ""))
    assert len(found) >= 10, found  # the scan sees the alert rules' and the panels' links
    for where, uid, query in found:
        assert uid in dashes, f"{where} links to /d/{uid}, which no shipped dashboard has (uids: {sorted(dashes)})"
        names = {v["name"] for v in dashes[uid]["templating"]["list"]}
        for var in re.findall(r"var-(\w+)=", query):
            assert var in names, f"{where}: /d/{uid} has no variable {var}"


def test_provisioning_files():
    ds = yaml.safe_load((GRAFANA / "provisioning/datasources/clickhouse.yaml").read_text())
    (src,) = ds["datasources"]
    assert src["type"] == "grafana-clickhouse-datasource" and src["jsonData"]["protocol"] == "http"
    assert src["jsonData"]["logs"]["defaultTable"] == "otel_logs" and src["jsonData"]["logs"]["otelEnabled"]
    assert src["secureJsonData"]["password"].startswith("${"), "the password must come from the environment"
    assert src["jsonData"]["username"].startswith("${")
    prov = yaml.safe_load((GRAFANA / "provisioning/dashboards/otelproc.yaml").read_text())
    assert prov["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards/otelproc"


# --------------------------------------------------------------------------- macro expansion

def test_expand_macros():
    sql = ("SELECT $__timeInterval(Timestamp) AS time FROM t WHERE $__timeFilter(Timestamp) AND "
           "$__conditionalAll(s IN (${service:singlequote}), $service) AND n > $__interval_s AND "
           "x BETWEEN $__fromTime AND $__toTime AND p = '${pattern}'")
    out = expand_macros(sql, 1_700_000_000_000, 1_700_003_600_000, 60_000, {"service": "$__all", "pattern": "7"})
    assert "1=1" in out and "INTERVAL 60 second" in out and "toDateTime(1700000000)" in out
    assert "n > 60" in out and "p = '7'" in out and "$" not in out
    out = expand_macros(sql, 0, 1000, 1000, {"service": ["a", "b'c"], "pattern": "1"})
    assert "s IN ('a','b\\'c')" in out
    with pytest.raises(ValueError, match="not defined"):
        expand_macros("SELECT $nope", 0, 1, 1, {})
    with pytest.raises(ValueError, match="not known"):
        expand_macros("SELECT $__columns(a)", 0, 1, 1, {})


# --------------------------------------------------------------------------- SQL on chDB (demo data)

@pytest.fixture(scope="module")
def demo_store(tmp_path_factory, request):
    chdb_path = request.getfixturevalue("chdb_path")
    from otelproc.store import open_store

    store = open_store(f"chdb://{chdb_path}", "t_dashboards_demo")
    counts = load_demo(store, duration_s=3600.0, batch_seconds=60.0)
    yield store, counts
    store.close()


def _columns_ok(ptype: str, fmt: int, rows) -> str | None:
    cols = list(rows.column_names)
    if fmt == 0:  # time series: a time column first, then at least one number
        if not cols or cols[0] != "time":
            return f"time series must start with a 'time' column, got {cols}"
        if rows and not any(isinstance(v, (int, float)) and not isinstance(v, bool) for v in rows[0][1:]):
            return f"time series has no numeric column: {cols}"
    if fmt == 2 and not {"timestamp", "body"} <= set(cols):
        return f"logs need timestamp and body columns, got {cols}"
    if ptype == "stat" and fmt == 1 and rows and not isinstance(rows[0][0], (int, float)):
        return f"stat needs a number first, got {cols}"
    if ptype in ("piechart", "bargauge") and rows and not (isinstance(rows[0][0], str)
                                                          and isinstance(rows[0][1], (int, float))):
        return f"{ptype} needs (label, number) columns, got {cols}"
    return None


# key panels: (dashboard, title) that must show data after the demo run
KEY_PANELS = {
    ("overview", "Log lines"), ("overview", "Ingest rate by service"), ("overview", "Error ratio by service"),
    ("overview", "Top patterns"), ("overview", "New patterns"), ("overview", "Anomaly timeline"),
    ("overview", "Active alerts"), ("patterns", "Templates"), ("patterns", "Top patterns over time"),
    ("patterns", "Share by service"), ("patterns", "Logs of the selected pattern"),
    ("anomalies", "${series}: ${service}"), ("anomalies", "Anomalies"), ("anomalies", "Trend slopes and time to breach"),
    ("service", "Lines by severity"), ("service", "Log volume and expected band"), ("service", "Patterns of the service"),
    ("service", "Logs"), ("alerts", "History"), ("alerts", "Notifications by outcome"), ("alerts", "Sent notifications"),
}


@pytest.mark.slow
def test_every_panel_query_runs_on_demo_data(demo_store):
    store, counts = demo_store
    assert all(counts[t] > 0 for t in ("otel_logs", "log_patterns", "pattern_counts", "anomalies", "series", "alerts"))
    tr = data_time_range(store)
    problems, seen = [], set()
    for name, d in _dashboards().items():
        variables = variable_values(store, d, tr)
        for v in d["templating"]["list"]:
            assert variables[v["name"] + ".__all"], f"{name}: variable {v['name']} has no values"
        # also with a concrete choice for every variable (the non-All branch of $__conditionalAll)
        chosen = variable_values(store, d, tr, choose=lambda _n, vals: vals[0] if vals else "")
        for a in d["annotations"]["list"]:
            if not a.get("builtIn"):
                # the demo has anomalies for some services only: some choice of $service must show them
                shown = 0
                for svc in variables.get("service.__all") or [None]:
                    local = dict(variables) if svc is None else {**variables, "service": svc}
                    rows = store.query_rows(expand_macros(a["target"]["rawSql"], tr.from_ms, tr.to_ms,
                                                          tr.interval_ms, local))
                    assert {"time", "timeEnd", "text", "tags"} <= set(rows.column_names), (name, a["name"])
                    shown += len(rows)
                assert shown, f"{name}: annotation {a['name']} shows nothing for any service"
        for p, t in panel_queries(d):
            for vs in (variables, chosen):
                local = dict(vs)
                if p.get("repeat"):
                    local[p["repeat"]] = (vs[p["repeat"] + ".__all"] or [""])[0]
                sql = expand_macros(t["rawSql"], tr.from_ms, tr.to_ms, tr.interval_ms, local)
                try:
                    rows = store.query_rows(sql)
                except Exception as e:  # noqa: BLE001 - collect every failing panel
                    problems.append(f"{name}/{p['title']}: {e}")
                    continue
                why = _columns_ok(p["type"], t["format"], rows)
                if why:
                    problems.append(f"{name}/{p['title']}: {why}")
                if vs is variables and rows:
                    seen.add((name, p["title"]))
    assert not problems, "\n".join(problems)
    assert KEY_PANELS - seen == set(), f"empty key panels: {sorted(KEY_PANELS - seen)}"


@pytest.mark.slow
def test_report_renders_pictures(demo_store, tmp_path):
    pytest.importorskip("matplotlib")
    from otelproc.report import render_report

    store, _ = demo_store
    written = render_report(store, tmp_path, dashboards=("overview", "alerts"))
    assert [p.name for p in written] == ["overview.png", "alerts.png", "index.html"]
    assert all(p.stat().st_size > 10_000 for p in written[:2])
    index = written[-1].read_text()
    assert "overview.png" in index and "color:red" not in index


def test_time_range_buckets():
    # one hour in about 120 buckets: 30.008 s rounds up to the next "nice" interval, 1 minute
    tr = TimeRange.around(1_700_000_000_000_000_000, 1_700_003_600_000_000_000)
    assert tr.interval_ms == 60_000 and tr.from_ms == 1_700_000_000_000 and tr.to_ms > 1_700_003_600_000
    assert TimeRange.around(0, 10_000_000_000).interval_ms == 1000


# --------------------------------------------------------------------------- index use on otel_logs

def _otel_logs_queries() -> list[tuple[str, str, dict]]:
    """(where, raw SQL, dashboard or {}) of every panel, variable, annotation and Grafana alert rule query
    that reads otel_logs."""
    out = []
    for name, d in _dashboards().items():
        texts = [(f"{name}/{p['title']}", t["rawSql"]) for p, t in panel_queries(d)]
        texts += [(f"{name}/variable {v['name']}", v["query"]["rawSql"]) for v in d["templating"]["list"]]
        texts += [(f"{name}/annotation {a['name']}", a["target"]["rawSql"])
                  for a in d["annotations"]["list"] if not a.get("builtIn")]
        out += [(where, sql, d) for where, sql in texts if re.search(r"\botel_logs\b", sql)]
    for path in sorted((GRAFANA / "provisioning" / "alerting").glob("*.yaml")):
        for g in yaml.safe_load(path.read_text()).get("groups", []):
            for r in g["rules"]:
                for q in r["data"]:
                    sql = q["model"].get("rawSql", "")
                    if re.search(r"\botel_logs\b", sql):
                        out.append((f"alert rule {r['uid']}", sql, {}))
    return out


def _merge_tree_reads(explain: list[str], table: str) -> list[dict[str, dict]]:
    """The index analysis of every ReadFromMergeTree of ``table`` in ``EXPLAIN indexes = 1`` output:
    one {index name: {"keys": [...], "condition": str, "parts": (selected, total)}} per read."""
    reads: list[dict[str, dict]] = []
    current: dict[str, dict] | None = None
    index: dict | None = None
    in_keys = False
    for raw in explain:
        line = raw.strip(" │├└─")
        m = re.match(r"ReadFromMergeTree \((.+)\)$", line)
        if m:
            current = {} if m.group(1).split(".")[-1].strip("`") == table else None
            if current is not None:
                reads.append(current)
            index, in_keys = None, False
            continue
        if current is None or not line:
            continue
        if ":" not in line:
            if in_keys and index is not None:
                index["keys"].append(line)
            else:
                index = current.setdefault(line, {"keys": [], "condition": "", "parts": None})
            continue
        key, _, value = line.partition(":")
        in_keys = key == "Keys" and not value.strip()
        if index is not None and key == "Condition":
            index["condition"] = value.strip()
        elif index is not None and key == "Parts" and "/" in value:
            a, b = value.strip().split("/")
            index["parts"] = (int(a), int(b))
    return reads


@pytest.fixture(scope="module")
def partitioned_store(request):
    """otel_logs over four days (four partitions), 6 services, and the small tables built from it."""
    from otelproc.store import open_store
    from otelproc.store.schema import SchemaOptions, ensure_schema

    store = open_store(f"chdb://{request.getfixturevalue('chdb_path')}", "t_dashboards_index")
    ensure_schema(store, SchemaOptions(database=store.database))
    store.command("INSERT INTO otel_logs (Timestamp, ServiceName, Body, SeverityText, SeverityNumber, PatternId, "
                  "TraceId) SELECT toDateTime64('2026-01-01 00:00:00', 9) + toIntervalMillisecond(number * 4321), "
                  "['api', 'auth', 'billing', 'cart', 'db', 'edge'][number % 6 + 1], concat('request ', toString(number)), "
                  "['INFO', 'WARN', 'ERROR'][number % 3 + 1], [9, 13, 17][number % 3 + 1], 100 + number % 7, "
                  "hex(number) FROM numbers(80000)")
    store.command("INSERT INTO pattern_counts SELECT toStartOfMinute(TimestampTime) AS m, ServiceName, PatternId, "
                  "SeverityNumber, count() FROM otel_logs GROUP BY m, ServiceName, PatternId, SeverityNumber")
    store.command("INSERT INTO log_patterns (ServiceName, PatternId, Template, FirstSeen, LastSeen, Count) "
                  "SELECT ServiceName, PatternId, 'request <*>', min(Timestamp), max(Timestamp), count() FROM otel_logs "
                  "GROUP BY ServiceName, PatternId")
    yield store
    store.command(f"DROP DATABASE IF EXISTS `{store.database}`")
    store.close()


def test_every_otel_logs_query_prunes_by_partition_and_primary_key(partitioned_store):
    """EXPLAIN indexes = 1 of every otel_logs query (macros expanded as the plugin does, every variable
    on All and on one value): the partition key toDate(TimestampTime) must skip the other days' parts
    and the primary key (ServiceName, TimestampTime) must be used on TimestampTime. A query filtering
    on Timestamp alone fails here. Also: no result column the plugin turns into a trace link."""
    store = partitioned_store
    parts = store.query_rows("SELECT count() FROM system.parts WHERE database = currentDatabase() "
                             "AND table = 'otel_logs' AND active")[0][0]
    assert parts >= 4
    day2 = 1_767_312_000_000  # 2026-01-02T00:00:00Z; the dashboards' default range, 6 hours, on the second day
    tr = TimeRange(day2 + 8 * 3_600_000, day2 + 14 * 3_600_000, 180_000)
    queries = _otel_logs_queries()
    assert len(queries) >= 3, queries
    problems = []
    for where, sql, d in queries:
        choices = [variable_values(store, d, tr), variable_values(store, d, tr, choose=lambda _n, v: v[0] if v else "")]
        for variables in choices:
            assert all(variables[n + ".__all"] for n in _vars_used(sql) if n + ".__all" in variables), where
            local = dict(variables)
            for p in d.get("panels", []):
                if p.get("repeat"):
                    local[p["repeat"]] = (variables[p["repeat"] + ".__all"] or [""])[0]
            expanded = expand_macros(sql, tr.from_ms, tr.to_ms, tr.interval_ms, local)
            columns = {c.lower() for c in store.query_rows(expanded).column_names}
            if columns & {"traceid", "trace_id"}:
                problems.append(f"{where}: a trace id column the plugin links to a traces table that does not exist")
            explain = [r[0] for r in store.query_rows(f"EXPLAIN indexes = 1 {expanded}")]
            reads = _merge_tree_reads(explain, "otel_logs")
            if not reads:
                problems.append(f"{where}: no read of otel_logs in the plan")
            for read in reads:
                minmax, part, pk = read.get("Min-Max", {}), read.get("Partition", {}), read.get("PrimaryKey", {})
                if "toDate(TimestampTime)" not in part.get("keys", []) or part.get("condition") in ("", "true"):
                    problems.append(f"{where}: partition key not used")
                elif not minmax.get("parts") or minmax["parts"][0] >= minmax["parts"][1]:
                    problems.append(f"{where}: partition pruning skipped no part ({minmax.get('parts')})")
                if "TimestampTime" not in pk.get("keys", []) or pk.get("condition") in ("", "true"):
                    problems.append(f"{where}: primary key not used on TimestampTime ({pk})")
    assert not problems, "\n".join(dict.fromkeys(problems))


def test_explain_parser_sees_a_query_that_does_not_prune(partitioned_store):
    """The check above can fail: filtering on Timestamp alone uses neither key."""
    sql = ("SELECT count() FROM otel_logs WHERE Timestamp >= toDateTime(1767340800) "
           "AND Timestamp <= toDateTime(1767362400)")
    (read,) = _merge_tree_reads([r[0] for r in partitioned_store.query_rows(f"EXPLAIN indexes = 1 {sql}")], "otel_logs")
    assert read["Partition"]["condition"] == "true" and "TimestampTime" not in read["PrimaryKey"]["keys"]
