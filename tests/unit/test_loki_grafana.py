"""Every request Grafana's Loki data source and Logs Drilldown send (tests/fixtures/loki_grafana_requests.json,
each with the source it was taken from) answered by the ``loki`` extension on a demo store: 200, the
shape Loki's HTTP API reference documents, and the numbers cross-checked against the same question
asked in SQL."""
from __future__ import annotations

import json
import re
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime, timezone
from pathlib import Path

import pytest

from otelproc.component import Context
from otelproc.config import parse_config
from otelproc.extensions.loki import LokiExtension
from otelproc.store import open_store

NS = 1_000_000_000
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "loki_grafana_requests.json"
REQUESTS = json.loads(FIXTURES.read_text())["requests"]
SPAN_S = 1800
# the severity classes of the OpenTelemetry log data model, written here independently of the extension
SQL_LEVEL = ("multiIf(SeverityNumber BETWEEN 1 AND 4, 'trace', SeverityNumber BETWEEN 5 AND 8, 'debug', "
             "SeverityNumber BETWEEN 9 AND 12, 'info', SeverityNumber BETWEEN 13 AND 16, 'warn', "
             "SeverityNumber BETWEEN 17 AND 20, 'error', SeverityNumber BETWEEN 21 AND 24, 'fatal', 'unknown')")


# --------------------------------------------------------------------------- shapes (Loki HTTP API reference)
# docs/sources/reference/loki-http-api.md: "Query logs at a single point in time" (vector), "Query logs
# within a range of time" (matrix, streams), "Query labels", "Query label values", "Query streams",
# "Query log statistics", "Query log volume", "Patterns detection", "Show build information"; the
# categorize-labels entry form is Grafana's pkg/tsdb/loki/testdata/streams_structured_metadata.json;
# detected_labels/detected_fields follow Loki's logproto DetectedLabelsResponse / DetectedFieldsResponse.

def _is_num(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def shape_vector(doc):
    assert doc["status"] == "success" and doc["data"]["resultType"] == "vector"
    for r in doc["data"]["result"]:
        assert set(r) == {"metric", "value"} and all(isinstance(v, str) for v in r["metric"].values())
        t, v = r["value"]
        assert _is_num(t) and isinstance(v, str) and float(v) == float(v)


def shape_matrix(doc):
    assert doc["status"] == "success" and doc["data"]["resultType"] == "matrix"
    for r in doc["data"]["result"]:
        assert set(r) == {"metric", "values"} and all(isinstance(v, str) for v in r["metric"].values())
        ts = [t for t, _ in r["values"]]
        assert all(_is_num(t) for t in ts) and ts == sorted(ts) and all(isinstance(v, str) for _, v in r["values"])


def shape_streams(doc, *, categorized: bool, direction: str = "backward"):
    assert doc["status"] == "success" and doc["data"]["resultType"] == "streams"
    if categorized:
        assert doc["data"]["encodingFlags"] == ["categorize-labels"]
    for s in doc["data"]["result"]:
        assert set(s) == {"stream", "values"} and all(isinstance(v, str) for v in s["stream"].values())
        for entry in s["values"]:
            assert isinstance(entry[0], str) and entry[0].isdigit() and isinstance(entry[1], str)
            if categorized:
                assert len(entry) == 3 and set(entry[2]) <= {"structuredMetadata", "parsed"}
                for group in entry[2].values():
                    assert all(isinstance(k, str) and isinstance(v, str) for k, v in group.items())
            else:
                assert len(entry) == 2
        ts = [int(e[0]) for e in s["values"]]
        assert ts == sorted(ts, reverse=direction == "backward")


def shape_strings(doc):
    assert doc["status"] == "success" and all(isinstance(x, str) for x in doc["data"])


def shape_series(doc):
    assert doc["status"] == "success"
    for labels in doc["data"]:
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in labels.items())


def shape_stats(doc):
    assert set(doc) == {"streams", "chunks", "entries", "bytes"} and all(isinstance(v, int) for v in doc.values())


def shape_patterns(doc):
    assert doc["status"] == "success"
    for p in doc["data"]:
        assert set(p) <= {"pattern", "samples", "level"} and isinstance(p["pattern"], str)
        assert all(isinstance(t, int) and isinstance(n, int) for t, n in p["samples"])


def shape_buildinfo(doc):
    assert {"version", "revision", "branch", "buildDate", "buildUser", "goVersion"} <= set(doc)


def shape_detected_labels(doc):
    for d in doc["detectedLabels"]:
        assert set(d) == {"label", "cardinality"} and isinstance(d["cardinality"], int)


def shape_detected_fields(doc):
    assert isinstance(doc["limit"], int)
    for f in doc["fields"]:
        assert {"label", "type", "cardinality", "parsers"} <= set(f) <= {"label", "type", "cardinality", "parsers",
                                                                         "jsonPath"}
        assert f["type"] in ("string", "int", "float", "boolean", "duration", "bytes")
        assert f["parsers"] is None or all(p in ("json", "logfmt") for p in f["parsers"])


SHAPE_BY_PATH = {
    "/loki/api/v1/labels": shape_strings, "/loki/api/v1/series": shape_series,
    "/loki/api/v1/index/stats": shape_stats, "/loki/api/v1/index/volume": shape_vector,
    "/loki/api/v1/index/volume_range": shape_matrix, "/loki/api/v1/patterns": shape_patterns,
    "/loki/api/v1/status/buildinfo": shape_buildinfo, "/loki/api/v1/detected_labels": shape_detected_labels,
    "/loki/api/v1/detected_fields": shape_detected_fields,
}


# --------------------------------------------------------------------------- demo store + server

@pytest.fixture(scope="module")
def demo(tmp_path_factory, request):
    from otelproc.report import load_demo

    chdb_path = request.getfixturevalue("chdb_path")
    store = open_store(f"chdb://{chdb_path}", "t_loki_grafana")
    load_demo(store, duration_s=float(SPAN_S), batch_seconds=60.0)
    lo = store.query_rows("SELECT toUnixTimestamp(min(TimestampTime)) FROM otel_logs")[0][0]
    start = (lo // 60) * 60
    cfg = parse_config(f"""
extensions:
  loki: {{endpoint: "127.0.0.1:0"}}
receivers:
  otlp: {{protocols: {{http: {{endpoint: 127.0.0.1:0}}}}}}
exporters:
  clickhouse: {{endpoint: "chdb://{chdb_path}", database: t_loki_grafana}}
service:
  extensions: [loki]
  pipelines:
    logs: {{receivers: [otlp], exporters: [clickhouse]}}
""")
    ext = LokiExtension("loki", cfg.extensions["loki"], Context(config=cfg))
    ext.start()
    yield ext, store, start, start + SPAN_S
    ext.shutdown()
    store.close()


def _iso(s: int) -> str:
    return datetime.fromtimestamp(s, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def _fill(text: str, start: int, end: int, pattern: str) -> str:
    return (text.replace("$START_NS", str(start * NS)).replace("$END_NS", str(end * NS))
            .replace("$START_ISO", _iso(start)).replace("$END_ISO", _iso(end)).replace("$PATTERN", pattern))


def _get(ext, path, params, headers):
    host, port = ext.address
    req = urllib.request.Request(f"http://{host}:{port}{path}?{urllib.parse.urlencode(params)}", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def _like(pattern: str) -> str:
    """A Loki pattern (<_> = any text, the whole line) as an SQL LIKE pattern."""
    return "".join("%" if part == "<_>" else re.sub(r"([%_\\])", r"\\\1", part)
                   for part in re.split(r"(<_>)", pattern))


def _count(store, where: str, lo_ns: int, hi_ns: int, params=None) -> int:
    return store.query_rows(f"SELECT count() FROM otel_logs WHERE ServiceName = 'checkout' AND ({where}) AND "
                            f"Timestamp > fromUnixTimestamp64Nano(toInt64({lo_ns})) AND "
                            f"Timestamp <= fromUnixTimestamp64Nano(toInt64({hi_ns}))", params or {})[0][0]


@pytest.fixture(scope="module")
def top_pattern(demo):
    ext, store, start, end = demo
    status, doc = _get(ext, "/loki/api/v1/patterns", {"query": '{service_name="checkout"}', "start": str(start * NS),
                                                      "end": str(end * NS), "step": "5m"}, {})
    assert status == 200 and doc["data"]
    return doc["data"][0]["pattern"]


def test_fixtures_say_where_they_come_from():
    assert len(REQUESTS) >= 25
    for r in REQUESTS:
        assert r["client"] in ("grafana", "drilldown") and r["source"] and r["path"].startswith("/loki/api/v1/")


@pytest.mark.parametrize("req", REQUESTS, ids=[r["name"] for r in REQUESTS])
def test_grafana_request(req, demo, top_pattern):
    ext, store, start, end = demo
    params = {k: _fill(v, start, end, top_pattern.replace('"', '\\"')) for k, v in req["params"].items()}
    headers = req.get("headers", {})
    status, doc = _get(ext, req["path"], params, headers)
    assert status == 200, doc
    categorized = "categorize-labels" in headers.get("X-Loki-Response-Encoding-Flags", "")
    if req["path"] in SHAPE_BY_PATH:
        SHAPE_BY_PATH[req["path"]](doc)
    elif req["path"].startswith("/loki/api/v1/label/"):
        shape_strings(doc)
    elif req["path"].startswith("/loki/api/v1/detected_field/"):
        assert set(doc) == {"values"} and all(isinstance(v, str) for v in doc["values"])
    elif doc["data"]["resultType"] == "streams":
        shape_streams(doc, categorized=categorized, direction=params.get("direction", "backward"))
    elif doc["data"]["resultType"] == "matrix":
        shape_matrix(doc)
    else:
        shape_vector(doc)
    CHECKS[req["check"]](doc, store, start, end, params, top_pattern)


def test_volume_range_shape_and_sum(demo):
    """index/volume_range (Loki HTTP API reference, "Query log volume"): a matrix per service; its points
    add up to the service's bytes in the range."""
    ext, store, start, end = demo
    status, doc = _get(ext, "/loki/api/v1/index/volume_range", {"query": '{service_name=~".+"}', "step": "300",
                                                                "start": str(start * NS), "end": str(end * NS)}, {})
    assert status == 200
    shape_matrix(doc)
    got = {r["metric"]["service_name"]: sum(int(v) for _, v in r["values"]) for r in doc["data"]["result"]}
    want = dict(store.query_rows(f"SELECT ServiceName, sum(length(Body)) FROM otel_logs WHERE "
                                 f"Timestamp > fromUnixTimestamp64Nano(toInt64({(start - 300) * NS})) AND "
                                 f"Timestamp <= fromUnixTimestamp64Nano(toInt64({end * NS})) GROUP BY ServiceName"))
    assert got == want


# --------------------------------------------------------------------------- the same questions in SQL

def _window_rows(store, start, end, extra=""):
    return (f"FROM otel_logs WHERE Timestamp >= fromUnixTimestamp64Nano(toInt64({start * NS})) AND "
            f"Timestamp < fromUnixTimestamp64Nano(toInt64({end * NS})) {extra}")


def check_health(doc, *_):
    # Grafana's check reads one sample and wants the value 2 (time=4000000000 has 10 digits: Loki reads
    # that as seconds, as this endpoint does)
    (sample,) = doc["data"]["result"]
    assert sample["metric"] == {} and sample["value"][1] == "2"


def check_buildinfo(doc, *_):
    assert doc["version"].count(".") == 2


def check_labels(doc, *_):
    assert "service_name" in doc["data"]


def check_service_values(doc, store, start, end, *_):
    want = [r[0] for r in store.query_rows(f"SELECT DISTINCT ServiceName {_window_rows(store, start, end)} "
                                           f"ORDER BY 1")]
    assert doc["data"] == want and len(want) >= 4


def check_service_values_checkout(doc, *_):
    assert doc["data"] == ["checkout"]


def check_series(doc, *_):
    assert doc["data"] == [{"service_name": "checkout"}]


def check_stats(doc, store, start, end, *_):
    n, size = store.query_rows(f"SELECT count(), sum(length(Body)) "
                               f"{_window_rows(store, start, end, 'AND ServiceName = %s' % repr('checkout'))}")[0]
    assert (doc["entries"], doc["bytes"], doc["streams"]) == (n, size, 1)


def _lines(doc):
    return [e for s in doc["data"]["result"] for e in s["values"]]


def check_logs_contains_checkout(doc, store, start, end, params, _):
    lines = _lines(doc)
    n = store.query_rows(f"SELECT count() {_window_rows(store, start, end)} AND ServiceName = 'checkout' "
                         f"AND position(Body, 'checkout') > 0")[0][0]
    assert len(lines) == min(n, int(params["limit"])) and all("checkout" in e[1] for e in lines)


def check_logs_latest(doc, store, start, end, params, _):
    limit = int(params["limit"])
    want = store.query_rows(f"SELECT toString(toUnixTimestamp64Nano(Timestamp)), Body "
                            f"{_window_rows(store, start, end)} AND ServiceName = 'checkout' "
                            f"ORDER BY Timestamp DESC LIMIT {limit}")
    got = sorted(((e[0], e[1]) for e in _lines(doc)), reverse=True)
    assert got == [tuple(r) for r in want] and len(want) == limit


def check_logs_errors(doc, store, start, end, params, _):
    lines = _lines(doc)
    n = store.query_rows(f"SELECT count() {_window_rows(store, start, end)} AND ServiceName = 'checkout' "
                         f"AND {SQL_LEVEL} = 'error'")[0][0]
    assert n > 0 and len(lines) == min(n, int(params["limit"]))
    assert all(e[2]["structuredMetadata"]["detected_level"] == "error" for e in lines)


def _points(doc):
    for series in doc["data"]["result"]:
        for t, v in series["values"]:
            yield series["metric"], int(t), float(v)


def check_level_counts(doc, store, *_):
    seen = 0
    for metric, t, v in _points(doc):
        levels = set(metric.values())
        assert len(levels) == 1, metric
        want = _count(store, f"{SQL_LEVEL} = {{lvl:String}}", (t - 60) * NS, t * NS, {"lvl": levels.pop()})
        assert v == want, (metric, t)
        seen += 1
    assert seen > 20


def check_total_counts(doc, store, *_):
    totals: dict[int, float] = {}
    for _metric, t, v in _points(doc):
        totals[t] = totals.get(t, 0) + v
    assert len(totals) > 20
    for t, v in totals.items():
        assert v == _count(store, "1", (t - 60) * NS, t * NS), t


def check_level_totals(doc, store, start, end, *_):
    got = {r["metric"]["detected_level"]: int(r["value"][1]) for r in doc["data"]["result"]}
    want = dict(store.query_rows(f"SELECT {SQL_LEVEL} AS l, count() FROM otel_logs WHERE ServiceName = 'checkout' "
                                 f"AND Timestamp > fromUnixTimestamp64Nano(toInt64({(end - 1800) * NS})) AND "
                                 f"Timestamp <= fromUnixTimestamp64Nano(toInt64({end * NS})) GROUP BY l"))
    assert got == want


def check_volume(doc, store, start, end, *_):
    got = {r["metric"]["service_name"]: int(r["value"][1]) for r in doc["data"]["result"]}
    want = dict(store.query_rows(f"SELECT ServiceName, sum(length(Body)) FROM otel_logs WHERE "
                                 f"Timestamp >= fromUnixTimestamp64Nano(toInt64({start * NS})) AND "
                                 f"Timestamp <= fromUnixTimestamp64Nano(toInt64({end * NS})) GROUP BY ServiceName"))
    assert got == want
    values = [int(r["value"][1]) for r in doc["data"]["result"]]
    assert values == sorted(values, reverse=True)


def check_volume_checkout(doc, *_):
    assert [r["metric"] for r in doc["data"]["result"]] == [{"service_name": "checkout"}]


def check_detected_labels(doc, store, start, end, *_):
    n = store.query_rows(f"SELECT uniqExact(ServiceName) {_window_rows(store, start, end)}")[0][0]
    assert {"label": "service_name", "cardinality": n} in doc["detectedLabels"]


def check_detected_labels_checkout(doc, *_):
    assert {"label": "service_name", "cardinality": 1} in doc["detectedLabels"]


def check_detected_fields(doc, store, start, end, *_):
    fields = {f["label"]: f for f in doc["fields"]}
    n = store.query_rows(f"SELECT uniqExact(l) FROM (SELECT {SQL_LEVEL} AS l {_window_rows(store, start, end)} "
                         f"AND ServiceName = 'checkout' ORDER BY Timestamp DESC LIMIT 1000)")[0][0]
    assert fields["detected_level"]["cardinality"] == n and fields["detected_level"]["parsers"] is None


def check_detected_level_values(doc, store, start, end, *_):
    want = [r[0] for r in store.query_rows(
        f"SELECT DISTINCT l FROM (SELECT {SQL_LEVEL} AS l {_window_rows(store, start, end)} AND "
        f"ServiceName = 'checkout' ORDER BY Timestamp DESC LIMIT 1000) ORDER BY l")]
    assert doc["values"] == want and "info" in want


def check_patterns(doc, store, start, end, *_):
    got: dict[str, int] = {}
    for p in doc["data"]:
        assert "<*>" not in p["pattern"]
        assert all(t % 60 == 0 for t, _ in p["samples"])
        got[p["level"]] = got.get(p["level"], 0) + sum(n for _, n in p["samples"])
    want = dict(store.query_rows(f"SELECT {SQL_LEVEL} AS l, count() {_window_rows(store, start, end)} "
                                 f"AND ServiceName = 'checkout' AND PatternId != 0 GROUP BY l"))
    assert got == want      # every line of the range counted exactly once, under its level
    per_pattern = {p["pattern"]: 0 for p in doc["data"]}
    for p in doc["data"]:
        per_pattern[p["pattern"]] += sum(n for _, n in p["samples"])
    for pattern, n in list(per_pattern.items())[:5]:
        lines = store.query_rows(f"SELECT count() {_window_rows(store, start, end)} AND ServiceName = 'checkout' "
                                 f"AND replaceAll(PatternTemplate, '<*>', '<_>') = {{p:String}}", {"p": pattern})[0][0]
        assert lines <= n      # lines stored under an older form of the pattern count towards its current form


def check_pattern_sample(doc, store, start, end, params, pattern):
    lines = _lines(doc)
    n = store.query_rows(f"SELECT count() {_window_rows(store, start, end)} AND ServiceName = 'checkout' "
                         f"AND Body LIKE {{p:String}}", {"p": _like(pattern)})[0][0]
    assert n > 0 and len(lines) == min(n, int(params["limit"]))


def check_pattern_excluded_counts(doc, store, start, end, params, pattern):
    seen = 0
    for _metric, t, v in _points(doc):
        assert v == _count(store, "Body NOT LIKE {p:String}", (t - 60) * NS, t * NS, {"p": _like(pattern)})
        seen += 1
    assert seen > 20


CHECKS = {name[len("check_"):]: fn for name, fn in globals().items() if name.startswith("check_")}
