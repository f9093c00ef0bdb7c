"""The ``loki`` extension: Loki's read API over the store, answered over HTTP and cross-checked
against the same questions asked in SQL."""
from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request

import pytest

from otelproc.batch import LogBatch
from otelproc.component import Context
from otelproc.config import ConfigError, parse_config
from otelproc.exporters.clickhouse import ClickHouseExporter, ClickHouseExporterConfig
from otelproc.extensions.loki import LokiExtension
from otelproc.extensions.loki import logql
from otelproc.extensions.loki.api import APIError, parse_step_ns, parse_time_ns
from otelproc.processors.patterns import PatternsProcessor, PatternsProcessorConfig
from otelproc.store import open_store
from otelproc.telemetry import Telemetry

NS = 1_000_000_000
T0 = 1767225600          # 2026-01-01T00:00:00Z
TOKEN = "t0ken-for-the-loki-api"


class _Sink:
    def __init__(self, exporter):
        self.exporter = exporter

    def consume(self, batch):
        self.exporter.consume(batch)


def _records():
    api, worker = [], []
    for i in range(600):          # 10 minutes, one line per second per service
        t = (T0 + i) * NS + 1000 * i
        status = 500 if i % 10 == 0 else 200
        api.append({"time_ns": t, "service": "api", "severity_number": 17 if status == 500 else 9,
                    "severity_text": "ERROR" if status == 500 else "INFO",
                    "body": json.dumps({"msg": "request done", "status": status, "path": f"/item/{i % 7}",
                                        "req": {"ms": i % 50}}),
                    "attributes": {"http.method": "GET" if i % 2 else "POST"},
                    "trace_id": f"{i + 1:032x}" if i % 3 == 0 else None})
        worker.append({"time_ns": t + 500_000_000, "service": "worker", "severity_number": 13 if i % 4 == 0 else 9,
                       "severity_text": "WARN" if i % 4 == 0 else "INFO",
                       "body": f'level={"warn" if i % 4 == 0 else "info"} job=j{i % 3} took={i % 9}ms '
                               f'msg="batch {i} done"'})
    return api, worker


@pytest.fixture(scope="module")
def store(tmp_path_factory, request):
    chdb_path = request.getfixturevalue("chdb_path")
    database = "t_loki_api"
    cfg = ClickHouseExporterConfig(endpoint=f"chdb://{chdb_path}", database=database)
    exporter = ClickHouseExporter("clickhouse", cfg, Context(telemetry=Telemetry(process_metrics=False)))
    exporter.start()
    patterns = PatternsProcessor("patterns", PatternsProcessorConfig(), _Sink(exporter), None)
    patterns.start()
    api, worker = _records()
    for chunk in range(0, 600, 150):
        patterns.consume(LogBatch.from_records(api[chunk:chunk + 150], resource={
            "k8s.namespace.name": "prod", "deployment.environment": "prod", "host.name": "h1"},
            scope_name="api.http"))
        patterns.consume(LogBatch.from_records(worker[chunk:chunk + 150], resource={
            "k8s.namespace.name": "batch", "host.name": "h2"}, scope_name="worker.jobs"))
    patterns.shutdown()
    exporter.shutdown()
    s = open_store(f"chdb://{chdb_path}", database)
    yield s
    s.close()


def _config(chdb_path: str, database: str, ext: str = "") -> str:
    return f"""
extensions:
  loki:
    endpoint: 127.0.0.1:0
{ext}
receivers:
  otlp: {{protocols: {{http: {{endpoint: 127.0.0.1:0}}}}}}
exporters:
  clickhouse: {{endpoint: "chdb://{chdb_path}", database: {database}}}
service:
  extensions: [loki]
  pipelines:
    logs: {{receivers: [otlp], exporters: [clickhouse]}}
"""


@pytest.fixture(scope="module")
def loki(store, request):
    chdb_path = request.getfixturevalue("chdb_path")
    cfg = parse_config(_config(chdb_path, store.database, f"    auth: {{bearer_token: {TOKEN}}}\n"
                                                          f"    max_entries: 1000\n    max_series: 50"))
    ext = LokiExtension("loki", cfg.extensions["loki"], Context(config=cfg, telemetry=Telemetry(process_metrics=False)))
    ext.start()
    yield ext
    ext.shutdown()


def get(ext, path, params=None, *, token=TOKEN, headers=None, method="GET"):
    host, port = ext.address
    qs = urllib.parse.urlencode(params or {}, doseq=True)
    hdrs = dict(headers or {})
    if token:
        hdrs["Authorization"] = f"Bearer {token}"
    if method == "POST":
        hdrs["Content-Type"] = "application/x-www-form-urlencoded"
        req = urllib.request.Request(f"http://{host}:{port}{path}", data=qs.encode(), headers=hdrs, method="POST")
    else:
        req = urllib.request.Request(f"http://{host}:{port}{path}?{qs}", headers=hdrs)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            body = r.read()
            return r.status, (json.loads(body) if "json" in r.headers.get("Content-Type", "") else body.decode())
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def rng(**kw):
    return {"start": str(T0 * NS), "end": str((T0 + 600) * NS), **kw}


def sql(store, q, params=None):
    return store.query_rows(q, params or {})


# --------------------------------------------------------------------------- parser

@pytest.mark.parametrize("text", [
    '{service_name="api"}',
    '{service_name=~"a.*", k8s_namespace_name!="x"} |= "done" != "nope" |~ "(?i)REQ" !~ "z+"',
    '{service_name="api"} | json | status >= 500 and path=~"/item/.*" or status == 200',
    '{service_name="worker"} | logfmt | drop __error__, __error_details__ | keep job',
    'sum by (detected_level) (count_over_time({service_name="api"} | drop __error__ [1m]))',
    'topk(3, sum(rate({service_name=~".+"}[5m] offset 1m)) by (service_name))',
    'sum without (k8s_namespace_name) (bytes_over_time({service_name="api"}[1m])) / 60',
    'vector(1)+vector(1)',
    '{service_name=`api`} |= `a"b`',
])
def test_parser_accepts(text):
    logql.parse(text)


@pytest.mark.parametrize("text,needle", [
    ('{service_name="api"} | label_format a=b', "label_format is not supported"),
    ('{service_name="api"} | regexp "(?P<a>.)"', "regexp is not supported"),
    ('{service_name="api"} | pattern "<_> x"', "at least one named capture"),
    ('sum_over_time({service_name="api"} | unwrap ms [1m])', "sum_over_time"),
    ('{service_name="api"} | json a="b"', "with parameters is not supported"),
    ('{service_name="api"', "unexpected end of input"),
    ('count_over_time({service_name="api"})', "expecting '['"),
    ('{service_name=~"("}', "invalid regex"),
    ('stddev(count_over_time({a="b"}[1m]))', "stddev is not supported"),
    ('', "unexpected end of input"),
])
def test_parser_errors_name_what_is_wrong(text, needle):
    with pytest.raises(logql.LogQLError) as e:
        logql.parse(text)
    assert str(e.value).startswith("parse error") and needle in str(e.value)


def test_time_and_step_forms():
    ns = T0 * NS
    assert parse_time_ns(str(ns), 0) == ns                       # nanoseconds
    assert parse_time_ns(str(T0), 0) == ns                       # seconds (10 digits)
    assert parse_time_ns(f"{T0}.5", 0) == ns + NS // 2           # float seconds
    assert parse_time_ns("2026-01-01T00:00:00Z", 0) == ns        # RFC3339
    assert parse_time_ns("2026-01-01T01:00:00.000000001+01:00", 0) == ns + 1   # RFC3339Nano with offset
    assert parse_time_ns(None, 42) == 42
    with pytest.raises(APIError):
        parse_time_ns("yesterday", 0)
    assert parse_step_ns("60000ms") == parse_step_ns("1m") == parse_step_ns("60") == 60 * NS
    assert parse_step_ns("1.5") == 1_500_000_000
    with pytest.raises(APIError):
        parse_step_ns("-1")


def test_config_validation(chdb_path):
    with pytest.raises(ConfigError) as e:
        parse_config(_config(chdb_path, "x", "    auth: {bearer_token: short}\n    max_series: 0\n    endpoint: nope"))
    text = str(e.value)
    assert "bearer_token" in text and "max_series" in text and "endpoint" in text


# --------------------------------------------------------------------------- HTTP

def test_auth_and_errors(loki):
    status, body = get(loki, "/loki/api/v1/labels", rng(), token="")
    assert status == 401 and "bearer token" in body
    status, body = get(loki, "/loki/api/v1/labels", rng(), token="wrong-token-value-xx")
    assert status == 401
    status, body = get(loki, "/loki/api/v1/query_range", rng(query='{service_name="api"} | unpack'))
    assert status == 400 and body.startswith("parse error") and "unpack is not supported" in body
    status, body = get(loki, "/loki/api/v1/query_range", rng(query='{service_name=~".*"}'))
    assert status == 400 and "empty-compatible" in body
    status, body = get(loki, "/loki/api/v1/query_range", rng(query='{service_name="api"}', limit="5000"))
    assert status == 400 and "max entries limit" in body
    status, body = get(loki, "/loki/api/v1/query_range", rng(query='count_over_time({service_name="api"}[1s])',
                                                            step="0.01"))
    assert status == 400 and "maximum resolution" in body
    status, body = get(loki, "/loki/api/v1/query_range", rng(query='{service_name="api"}', start="soon"))
    assert status == 400 and "invalid start" in body
    status, body = get(loki, "/loki/api/v1/push")
    assert status == 404
    status, _ = get(loki, "/ready", token="")
    assert status == 200


def test_series_limit(loki):
    status, body = get(loki, "/loki/api/v1/query_range",
                       rng(query='sum by (path) (count_over_time({service_name="api"} | json | path!="" [1m]))',
                           step="60"))
    assert status == 200
    status, body = get(loki, "/loki/api/v1/query_range",
                       rng(query='sum by (trace_id) (count_over_time({service_name="api"}[10m]))', step="600"))
    assert status == 400 and "maximum number of series (50)" in body


def test_log_query_matches_sql(loki, store):
    q = '{service_name="api", k8s_namespace_name="prod"} |= "request" | json | status >= 500'
    status, body = get(loki, "/loki/api/v1/query_range", rng(query=q, limit="1000", direction="forward"))
    assert status == 200 and body["status"] == "success"
    data = body["data"]
    assert data["resultType"] == "streams"
    for s in data["result"]:   # each stream in time order (forward)
        assert all(a[0] <= b[0] for a, b in zip(s["values"], s["values"][1:]))
    got = sorted(v for s in data["result"] for v in s["values"])
    want = sql(store, "SELECT toString(toUnixTimestamp64Nano(Timestamp)), Body FROM otel_logs "
                      "WHERE ServiceName = 'api' AND JSONExtractInt(Body, 'status') >= 500 ORDER BY Timestamp")
    assert [tuple(v) for v in got] == [tuple(r) for r in want] and len(want) == 60
    stream = next(s["stream"] for s in data["result"] if s["values"][0] == list(want[0]))
    # without categorize-labels: stream labels, structured metadata and parsed labels in one label set
    assert stream["service_name"] == "api" and stream["k8s_namespace_name"] == "prod"
    assert stream["host_name"] == "h1" and stream["scope_name"] == "api.http" and stream["status"] == "500"
    assert stream["req_ms"] == "0" and stream["detected_level"] == "error"


def test_log_query_categorized_backward_limit(loki, store):
    q = '{service_name="worker"} | logfmt | job="j1" | drop took'
    status, body = get(loki, "/loki/api/v1/query_range", rng(query=q, limit="7"),
                       headers={"X-Loki-Response-Encoding-Flags": "categorize-labels"})
    assert status == 200
    data = body["data"]
    assert data["encodingFlags"] == ["categorize-labels"]
    assert len(data["result"]) == 1 and data["result"][0]["stream"] == {"service_name": "worker",
                                                                       "k8s_namespace_name": "batch"}
    values = data["result"][0]["values"]
    want = sql(store, "SELECT toString(toUnixTimestamp64Nano(Timestamp)) FROM otel_logs WHERE ServiceName = 'worker' "
                      "AND Body LIKE '% job=j1 %' ORDER BY Timestamp DESC LIMIT 7")
    assert [v[0] for v in values] == [r[0] for r in want]
    cat = values[0][2]
    assert cat["parsed"]["job"] == "j1" and "took" not in cat["parsed"] and cat["parsed"]["msg"].startswith("batch ")
    assert cat["structuredMetadata"]["host_name"] == "h2" and cat["structuredMetadata"]["scope_name"] == "worker.jobs"


def test_line_filters_and_regex_selectors(loki, store):
    q = '{service_name=~"api|worker", detected_level!~"warn|error"} != "POST" |~ "item/[12]\\"|job=j2"'
    status, body = get(loki, "/loki/api/v1/query_range", rng(query=q, limit="1000"), method="POST")
    assert status == 200
    n = sum(len(s["values"]) for s in body["data"]["result"])
    want = sql(store, "SELECT count() FROM otel_logs WHERE SeverityNumber = 9 AND position(Body, 'POST') = 0 "
                      "AND match(Body, 'item/[12]\"|job=j2')")[0][0]
    assert n == want and n > 0


def test_metric_range_query_matches_sql(loki, store):
    q = 'sum by (detected_level) (count_over_time({service_name="api"}[2m]))'
    status, body = get(loki, "/loki/api/v1/query_range", rng(query=q, step="60"))
    assert status == 200 and body["data"]["resultType"] == "matrix"
    for series in body["data"]["result"]:
        sev = 17 if series["metric"] == {"detected_level": "error"} else 9
        for t, v in series["values"]:
            want = sql(store, f"SELECT count() FROM otel_logs WHERE ServiceName = 'api' AND SeverityNumber = {sev} "
                              f"AND Timestamp > fromUnixTimestamp64Nano(toInt64({(t - 120) * NS})) "
                              f"AND Timestamp <= fromUnixTimestamp64Nano(toInt64({t * NS}))")[0][0]
            assert int(v) == want, (series["metric"], t)
    levels = {tuple(s["metric"].items()) for s in body["data"]["result"]}
    assert levels == {(("detected_level", "error"),), (("detected_level", "info"),)}


def test_rate_bytes_topk_without_and_instant(loki, store):
    status, body = get(loki, "/loki/api/v1/query",
                       {"query": 'sum without (k8s_namespace_name) (bytes_rate({service_name=~".+"}[10m]))',
                        "time": str(T0 + 600)})
    assert status == 200 and body["data"]["resultType"] == "vector"
    got = {r["metric"]["service_name"]: float(r["value"][1]) for r in body["data"]["result"]}
    # the window is (t - 10m, t]: the api line at exactly T0 is not in it
    for svc, total in sql(store, f"SELECT ServiceName, sum(length(Body)) FROM otel_logs WHERE Timestamp > "
                                 f"fromUnixTimestamp64Nano(toInt64({T0 * NS})) GROUP BY ServiceName"):
        assert got[svc] == pytest.approx(total / 600)
    status, body = get(loki, "/loki/api/v1/query", {"query": 'topk(1, sum by (service_name) '
                                                             '(count_over_time({service_name=~".+"} |= "item/1" [10m])))',
                                                    "time": str(T0 + 600)})
    assert [r["metric"] for r in body["data"]["result"]] == [{"service_name": "api"}]
    assert body["data"]["result"][0]["value"][1] == str(sql(
        store, f"SELECT count() FROM otel_logs WHERE position(Body, 'item/1') > 0 AND Timestamp > "
               f"fromUnixTimestamp64Nano(toInt64({T0 * NS}))")[0][0])
    status, body = get(loki, "/loki/api/v1/query", {"query": "vector(1)+vector(1)", "time": "4"})
    assert body["data"]["result"] == [{"metric": {}, "value": [4, "2"]}]
    status, body = get(loki, "/loki/api/v1/query", {"query": '{service_name="api"}'})
    assert status == 400 and "instant query" in body


def test_labels_values_series_stats(loki, store):
    status, body = get(loki, "/loki/api/v1/labels", rng())
    assert body == {"status": "success", "data": ["deployment_environment", "k8s_namespace_name", "service_name"]}
    status, body = get(loki, "/loki/api/v1/label/k8s_namespace_name/values", rng())
    assert body["data"] == ["batch", "prod"]
    status, body = get(loki, "/loki/api/v1/label/service_name/values", rng(query='{k8s_namespace_name="batch"}'))
    assert body["data"] == ["worker"]
    status, body = get(loki, "/loki/api/v1/series", {**rng(), "match[]": ['{service_name="api"}',
                                                                          '{k8s_namespace_name="batch"}']})
    assert body["data"] == [{"deployment_environment": "prod", "k8s_namespace_name": "prod", "service_name": "api"},
                            {"k8s_namespace_name": "batch", "service_name": "worker"}]
    status, body = get(loki, "/loki/api/v1/index/stats", rng(query='{service_name="api"}'))
    entries, size = sql(store, "SELECT count(), sum(length(Body)) FROM otel_logs WHERE ServiceName = 'api'")[0]
    assert body == {"streams": 1, "chunks": 1, "entries": entries, "bytes": size}


def test_volume_and_volume_range(loki, store):
    status, body = get(loki, "/loki/api/v1/index/volume", rng(query='{service_name=~".+"}', limit="1"))
    assert status == 200 and body["data"]["resultType"] == "vector"
    (top,) = body["data"]["result"]
    want = sql(store, "SELECT ServiceName, sum(length(Body)) AS b FROM otel_logs GROUP BY ServiceName "
                      "ORDER BY b DESC LIMIT 1")[0]
    assert top["metric"] == {"service_name": want[0]} and top["value"][1] == str(want[1])
    status, body = get(loki, "/loki/api/v1/index/volume",
                       rng(query='{service_name=~".+"}', targetLabels="k8s_namespace_name", aggregateBy="labels"))
    assert [r["metric"] for r in body["data"]["result"]] == [{"k8s_namespace_name": ""}]
    status, body = get(loki, "/loki/api/v1/index/volume_range", rng(query='{service_name="worker"}', step="300"))
    assert body["data"]["resultType"] == "matrix"
    (series,) = body["data"]["result"]
    total = sum(int(v) for _, v in series["values"])
    assert total == sql(store, "SELECT sum(length(Body)) FROM otel_logs WHERE ServiceName = 'worker'")[0][0]


def test_detected_labels_and_fields(loki):
    status, body = get(loki, "/loki/api/v1/detected_labels", rng(query=""))
    assert body == {"detectedLabels": [{"label": "deployment_environment", "cardinality": 1},
                                       {"label": "k8s_namespace_name", "cardinality": 2},
                                       {"label": "service_name", "cardinality": 2}]}
    status, body = get(loki, "/loki/api/v1/detected_fields", rng(query='{service_name="api"}'))
    fields = {f["label"]: f for f in body["fields"]}
    assert fields["status"] == {"label": "status", "type": "int", "cardinality": 2, "parsers": ["json"],
                                "jsonPath": ["status"]}
    assert fields["req_ms"]["jsonPath"] == ["req", "ms"] and fields["req_ms"]["cardinality"] == 50
    assert fields["http_method"]["parsers"] is None and fields["detected_level"]["cardinality"] == 2
    status, body = get(loki, "/loki/api/v1/detected_fields", rng(query='{service_name="worker"}'))
    fields = {f["label"]: f for f in body["fields"]}
    assert fields["took"]["type"] == "duration" and fields["took"]["parsers"] == ["logfmt"]
    status, body = get(loki, "/loki/api/v1/detected_field/job/values", rng(query='{service_name="worker"}'))
    assert body == {"values": ["j0", "j1", "j2"]}


def test_patterns_exact_over_any_range(loki, store):
    start, end = (T0 + 30) * NS, (T0 + 570) * NS + 123        # partial minutes at both ends
    status, body = get(loki, "/loki/api/v1/patterns", {"query": '{service_name="worker"}', "start": str(start),
                                                      "end": str(end), "step": "2m"})
    assert status == 200 and body["status"] == "success"
    got = {(p["pattern"], p["level"]): sum(n for _, n in p["samples"]) for p in body["data"]}
    want = sql(store, "SELECT replaceAll(PatternTemplate, '<*>', '<_>'), SeverityNumber, count() FROM otel_logs "
                      "WHERE ServiceName = 'worker' AND Timestamp >= fromUnixTimestamp64Nano(toInt64({s:Int64})) "
                      "AND Timestamp < fromUnixTimestamp64Nano(toInt64({e:Int64})) GROUP BY ALL",
               {"s": start, "e": end})
    assert got == {(t, "warn" if sev == 13 else "info"): n for t, sev, n in want}
    assert all("<_>" in p for p, _ in got)
    for p in body["data"]:
        assert all(t % 120 == 0 for t, _ in p["samples"])
    # the same through otel_logs (a selector pattern_counts cannot answer) gives the same counts
    status, body2 = get(loki, "/loki/api/v1/patterns", {"query": '{service_name="worker", host_name="h2"}',
                                                       "start": str(start), "end": str(end), "step": "2m"})
    assert {(p["pattern"], p["level"]): p["samples"] for p in body2["data"]} == \
        {(p["pattern"], p["level"]): p["samples"] for p in body["data"]}


def test_buildinfo(loki):
    status, body = get(loki, "/loki/api/v1/status/buildinfo")
    assert status == 200 and set(body) >= {"version", "revision", "branch", "buildDate", "buildUser", "goVersion"}


def test_bad_input_never_crashes(loki):
    for params in ({"query": "{"}, {"query": '{a="\\q"}'}, {"query": "x" * 5000}, {"query": '{a="b"}', "limit": "-3"},
                   {"query": '{a="b"}', "direction": "up"}, {"query": "sum(", "step": "abc"}):
        status, body = get(loki, "/loki/api/v1/query_range", params)
        assert status == 400, (params, body)
    status, _ = get(loki, "/loki/api/v1/label/%ZZ/values")
    assert status == 400


def test_pattern_filter_parser_and_line_format(loki, store):
    q = ('{service_name="worker"} |> "level=<_> job=j2 took=<_> msg=<_>" !> "<_>took=0ms<_>" '
         '| pattern "level=<lvl> job=<job> took=<took> <_>" | took!="1ms" | line_format "{{.job}}/{{ .took }}"')
    status, body = get(loki, "/loki/api/v1/query_range", rng(query=q, limit="1000"))
    assert status == 200, body
    lines = [v[1] for s in body["data"]["result"] for v in s["values"]]
    want = sql(store, "SELECT extract(Body, 'took=(\\\\S+)') AS t FROM otel_logs WHERE ServiceName = 'worker' "
                      "AND position(Body, ' job=j2 ') > 0 AND t NOT IN ('0ms', '1ms')")
    assert sorted(lines) == sorted(f"j2/{r[0]}" for r in want) and lines
    assert all(s["stream"]["lvl"] in ("info", "warn") for s in body["data"]["result"])
    for text, needle in (('{service_name="worker"} | line_format "{{.job}}" |= "x"', "after | line_format"),
                         ('{service_name="worker"} | line_format "{{ .job | upper }}"', "only literal text"),
                         ('{service_name="worker"} | pattern "<a><b>"', "consecutive captures")):
        status, body = get(loki, "/loki/api/v1/query_range", rng(query=text))
        assert status == 400 and needle in body, body


def test_provisioned_loki_datasource_reaches_the_extension(monkeypatch):
    """grafana/provisioning/datasources/loki.yaml + docker-compose.yml: Grafana's Loki data source URL is the
    otelproc service's loki extension, on the port the compose config makes it listen on; the shipped
    embedded config listens on Loki's port on loopback."""
    from pathlib import Path

    import yaml

    from otelproc.config import load_config

    repo = Path(__file__).resolve().parents[2]
    ds = yaml.safe_load((repo / "grafana/provisioning/datasources/loki.yaml").read_text())["datasources"][0]
    assert ds["type"] == "loki" and ds["url"] == "${OTELPROC_LOKI_URL}"
    compose = yaml.safe_load((repo / "docker-compose.yml").read_text())["services"]
    grafana_env, otelproc_env = compose["grafana"]["environment"], compose["otelproc"]["environment"]
    url = urllib.parse.urlsplit(grafana_env["OTELPROC_LOKI_URL"])
    assert url.hostname == "otelproc" and "otelproc" in compose
    assert "grafana-lokiexplore-app" in grafana_env["GF_INSTALL_PLUGINS"]      # Logs Drilldown
    config_file = compose["otelproc"]["command"][compose["otelproc"]["command"].index("--config") + 1]
    monkeypatch.setenv("OTELPROC_LOKI_ENDPOINT", otelproc_env["OTELPROC_LOKI_ENDPOINT"])
    cfg = load_config(repo / "config" / Path(config_file).name)
    assert "loki" in cfg.service.extensions
    host, _, port = cfg.extensions["loki"].endpoint.rpartition(":")
    assert host == "0.0.0.0" and int(port) == url.port
    monkeypatch.delenv("OTELPROC_LOKI_ENDPOINT")
    embedded = load_config(repo / "config" / "otelproc.yaml")
    assert "loki" in embedded.service.extensions and embedded.extensions["loki"].endpoint == "127.0.0.1:3100"


def test_bytes_limit(store, request):
    chdb_path = request.getfixturevalue("chdb_path")
    cfg = parse_config(_config(chdb_path, store.database, "    max_bytes_read: 4KiB"))
    ext = LokiExtension("loki", cfg.extensions["loki"], Context(config=cfg))
    ext.start()
    try:
        status, body = get(ext, "/loki/api/v1/query_range", rng(query='{service_name="api"} |= "x"'), token="")
        assert status == 400 and "max_bytes_read" in body
    finally:
        ext.shutdown()
