"""Independent clients against the clickhouse_query endpoint of a running `otelproc serve`:

(a) a Native decoder written from clickhouse-go's published decoding rules (tests/e2e/native_decoder.py, which
    cites the Go files), at revision 0 and at the revision clickhouse-go (so Grafana's plugin) uses, every byte
    consumed, on every dashboard panel, variable, annotation and alert-rule query and on a query holding every
    column type those return and more; its values must equal clickhouse-connect's;
(b) clickhouse-connect with each of its compressions;
(c) the official JavaScript client @clickhouse/client from npm (JSON formats), which skips without Node.js or
    `npm ci --prefix tests/e2e/js`;
plus bounded decompression of request bodies and the shape of errors.

The store is filled by a demo run (real patterns/anomaly processors and clickhouse exporter) before serving.
"""
from __future__ import annotations

import datetime as dt
import decimal
import gzip
import ipaddress
import json
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
import zlib
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

import pytest
import yaml

from tests.e2e.conftest import REPO, OtelprocProcess, free_port
from tests.e2e.native_decoder import decode_native, rows_of

pytestmark = pytest.mark.e2e

USER, PASSWORD = "grafana", "s3cret"
CLICKHOUSE_GO_REVISION = 54460   # clickhouse-go lib/proto/const.go DBMS_TCP_PROTOCOL_VERSION, sent by Grafana's plugin
JS_DIR = Path(__file__).resolve().parent / "js"
HANDSHAKE = "SELECT displayName(), version(), revision(), timezone()"

_LOAD_DEMO = """
import sys
from otelproc.report import load_demo
from otelproc.store import open_store
store = open_store("chdb://" + sys.argv[1], "otel")
print(load_demo(store, duration_s=1800.0, batch_seconds=60.0))
store.close()
"""

# every type the dashboards return and the ones the issue lists, over more rows than one Native block
ALL_TYPES_SQL = """
SELECT number AS u64, toUInt8(number % 256) AS u8, toUInt16(number) AS u16, toUInt32(number) AS u32,
       toInt8(number % 100 - 50) AS i8, toInt16(-number) AS i16, toInt32(-number) AS i32, toInt64(-number) AS i64,
       number / 7 AS f64, toFloat32(number / 4) AS f32, toBool(number % 3 = 0) AS flag,
       concat('line ', toString(number), if(number % 5 = 0, ' ünïcode ✓', '')) AS s,
       toLowCardinality(concat('svc-', toString(number % 4))) AS lc,
       CAST(if(number % 6 = 0, NULL, concat('v', toString(number % 3))) AS LowCardinality(Nullable(String))) AS lcn,
       map(toLowCardinality('k'), toString(number), toLowCardinality('z'), '') AS m,
       CAST(if(number % 2 = 0, NULL, number) AS Nullable(UInt64)) AS nu,
       CAST(if(number % 3 = 0, NULL, 'x') AS Nullable(String)) AS ns,
       range(number % 4) AS arr, CAST(arrayMap(i -> toString(i), range(number % 3)) AS Array(LowCardinality(String))) AS arr_lc,
       [[number % 2], []] AS nested, (number, toString(number)) AS tup, CAST((number % 2, 'y'), 'Tuple(a UInt8, b String)') AS named_tup,
       toDateTime64('2026-01-01 00:00:00', 9, 'UTC') + toIntervalNanosecond(number * 1234567) AS dt64,
       toDateTime64('2026-01-01 00:00:00', 3) + toIntervalMillisecond(number) AS dt64_ms,
       toDateTime(1767225600 + number) AS dt, toDateTime(1767225600 + number, 'Asia/Tokyo') AS dt_tz, toDate('2026-01-01') + number % 400 AS d,
       CAST(number % 3, 'Enum8(\\'info\\' = 0, \\'warn\\' = 1, \\'error\\' = 2)') AS e8,
       CAST(number % 2 * 300, 'Enum16(\\'a\\' = 0, \\'b\\' = 300)') AS e16,
       toDecimal64(number / 8, 3) AS dec, toUUID('6ba7b810-9dad-11d1-80b4-00c04fd430c8') AS id,
       toIPv4('10.1.2.3') AS ip, NULL AS nothing, toFixedString('ab', 2) AS fs
FROM numbers(70000)
"""


@dataclass
class Served:
    host: str
    port: int
    tmp: Path

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("query_clients")
    store = tmp / "data"
    env = {"NUMBA_CACHE_DIR": str(REPO / ".numba_cache"), "PATH": "/usr/bin:/bin"}
    load = subprocess.run([sys.executable, "-c", _LOAD_DEMO, str(store)], capture_output=True, text=True,
                          timeout=900, cwd=REPO, env=env)
    assert load.returncode == 0, load.stderr[-3000:]
    port = free_port()
    server = OtelprocProcess(tmp, f"""
extensions:
  clickhouse_query: {{endpoint: "127.0.0.1:{port}", username: {USER}, password: {PASSWORD}}}
receivers:
  otlp: {{protocols: {{http: {{endpoint: "127.0.0.1:{free_port()}"}}}}}}
exporters:
  clickhouse: {{endpoint: "chdb://{store}", database: otel, ttl: 0s}}
service:
  extensions: [clickhouse_query]
  telemetry: {{metrics: {{address: "127.0.0.1:{free_port()}"}}}}
  pipelines:
    logs: {{receivers: [otlp], exporters: [clickhouse]}}
""")
    try:
        yield Served("127.0.0.1", port, tmp)
    finally:
        assert server.stop() == 0, server.log.read_text()[-3000:]


def _request(served: Served, sql: str | bytes, params: dict | None = None, headers: dict | None = None,
             auth: bool = True, method: str = "POST"):
    """(status, headers, body) of one request, as clickhouse-go sends it: query in the POST body, settings as
    URL parameters, credentials as X-ClickHouse-User/Key."""
    hdrs = {"X-ClickHouse-User": USER, "X-ClickHouse-Key": PASSWORD} if auth else {}
    hdrs.update(headers or {})
    data = sql.encode() if isinstance(sql, str) else sql
    req = urllib.request.Request(f"{served.url}/?{urlencode(params or {})}", data=data if method == "POST" else None,
                                 method=method, headers=hdrs)
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()


def _native(served: Served, sql: str, revision: int, **extra) -> bytes:
    """A query as Grafana's plugin sends it (clickhouse-go conn_http.go): Native, client_protocol_version,
    a deadline as max_execution_time; gzip in both directions like a gzip-configured data source."""
    params = {"database": "otel", "default_format": "Native", "max_execution_time": "60",
              "enable_http_compression": "1", **extra}
    if revision:
        params["client_protocol_version"] = str(revision)
    status, headers, body = _request(served, gzip.compress(sql.encode()), params,
                                     {"Content-Encoding": "gzip", "Accept-Encoding": "gzip"})
    assert status == 200, body[:2000]
    return gzip.decompress(body) if headers.get("content-encoding") == "gzip" else body


def _connect(served: Served, **kw):
    import clickhouse_connect

    return clickhouse_connect.get_client(host=served.host, port=served.port, username=USER, password=PASSWORD,
                                         database="otel", **kw)


def _dashboard_queries(served: Served) -> list[tuple[str, str]]:
    """(label, SQL) of every panel, variable, annotation and alert-rule query, expanded as Grafana would over
    the data's time range (variables resolved through the endpoint)."""
    from otelproc.report import dashboard_specs, data_time_range, expand_macros, panel_queries, variable_values
    from otelproc.store import open_store

    store = open_store(served.url, "otel", username=USER, password=PASSWORD, create_database=False)
    try:
        tr = data_time_range(store)
        out = []
        for name, dash in dashboard_specs().items():
            variables = variable_values(store, dash, tr)
            for v in dash.get("templating", {}).get("list", []):
                if v.get("type") == "query":
                    out.append((f"{name} variable {v['name']}",
                                expand_macros(v["query"]["rawSql"], tr.from_ms, tr.to_ms, tr.interval_ms, variables)))
            for a in dash.get("annotations", {}).get("list", []):
                if "rawSql" in a.get("target", {}):
                    out.append((f"{name} annotation {a['name']}",
                                expand_macros(a["target"]["rawSql"], tr.from_ms, tr.to_ms, tr.interval_ms,
                                              variables)))
            for panel, tgt in panel_queries(dash):
                local = dict(variables)
                if panel.get("repeat"):
                    local[panel["repeat"]] = (variables[panel["repeat"] + ".__all"] or [""])[0]
                out.append((f"{name} panel {panel['title']}",
                            expand_macros(tgt["rawSql"], tr.from_ms, tr.to_ms, tr.interval_ms, local)))
        rules = yaml.safe_load((REPO / "grafana/provisioning/alerting/otelproc.yaml").read_text())
        for group in rules.get("groups", []):
            for rule in group.get("rules", []):
                for q in rule.get("data", []):
                    if "rawSql" in q.get("model", {}):
                        # an alert rule looks back relativeTimeRange.from seconds from now: use the data's end
                        span = int(q.get("relativeTimeRange", {}).get("from", 600)) * 1000
                        out.append((f"alert {rule['title']}", expand_macros(q["model"]["rawSql"], tr.to_ms - span,
                                                                            tr.to_ms, tr.interval_ms, {})))
        return out
    finally:
        store.close()


def _plain(v):
    """A value in one comparable form, from either client."""
    if isinstance(v, dt.datetime):
        v = v if v.tzinfo else v.replace(tzinfo=dt.timezone.utc)  # the server's timezone is UTC
        return ("t", (v - dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)) // dt.timedelta(microseconds=1))
    if isinstance(v, dt.date):
        return ("d", v.toordinal())
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, dict):
        return sorted((_plain(k), _plain(x)) for k, x in v.items())
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    if isinstance(v, (uuid.UUID, ipaddress.IPv4Address)):
        return str(v)
    if isinstance(v, decimal.Decimal):
        return ("dec", str(v.normalize()))
    if isinstance(v, float):
        return ("f", repr(v))
    if isinstance(v, bool):
        return int(v)
    return v


def _same_rows(decoded: list[tuple], connect_rows: list, label: str) -> None:
    assert len(decoded) == len(connect_rows), label
    mine = sorted(map(repr, (_plain(tuple(r)) for r in decoded)))
    theirs = sorted(map(repr, (_plain(tuple(r)) for r in connect_rows)))
    assert mine == theirs, label


# --------------------------------------------------------------------------- (a) clickhouse-go's rules

def test_handshake_then_every_dashboard_query_decodes_at_the_plugin_revision(served):
    # conn_http.go queryHello: decoded at the client's revision; later blocks at the revision() answered
    names, types, rows = rows_of(decode_native(_native(served, HANDSHAKE, CLICKHOUSE_GO_REVISION),
                                               CLICKHOUSE_GO_REVISION))
    assert types == ["String", "String", "UInt32", "String"] and len(rows) == 1
    display_name, version, server_revision, timezone = rows[0]
    assert server_revision >= CLICKHOUSE_GO_REVISION and version.count(".") >= 2 and timezone
    client = _connect(served, compress="gzip")
    queries = _dashboard_queries(served)
    assert len(queries) >= 40
    seen_types: set[str] = set()
    for label, sql in queries:
        at0 = rows_of(decode_native(_native(served, sql, 0), 0))
        at_plugin = _native(served, sql, CLICKHOUSE_GO_REVISION)
        for revision in (CLICKHOUSE_GO_REVISION, server_revision):  # what the preflight and the later reads use
            names, types, rows = rows_of(decode_native(at_plugin, revision))
            assert (names, types) == at0[:2], label
            _same_rows(rows, at0[2], label)  # as multisets: ORDER BY ... may break ties either way
        seen_types.update(at0[1])
        _same_rows(at0[2], client.query(sql).result_rows, label)
    # the column types the dashboards, variables, annotations and alert rules return
    for t in ("DateTime64(9)", "DateTime", "String", "LowCardinality(String)", "UInt64", "Float64",
              "SimpleAggregateFunction(any, String)", "SimpleAggregateFunction(max, DateTime64(9))"):
        assert any(s == t or s.startswith(t + "(") for s in seen_types), (t, sorted(seen_types))


def test_every_column_type_and_many_blocks_at_both_revisions(served):
    native0 = _native(served, ALL_TYPES_SQL, 0)
    blocks0 = decode_native(native0, 0)
    blocks = decode_native(_native(served, ALL_TYPES_SQL, CLICKHOUSE_GO_REVISION), CLICKHOUSE_GO_REVISION)
    assert len(blocks) == len(blocks0) >= 2  # more rows than one Native block
    names, types, rows = rows_of(blocks)
    names0, types0, rows0 = rows_of(blocks0)
    # ClickHouse's NativeWriter names a top-level DateTime('tz') plain DateTime below revision 54337 only
    assert types0 == [t if not t.startswith("DateTime(") else "DateTime" for t in types]
    assert (names, rows) == (names0, rows0)
    assert len(rows) == 70000
    for t in ("Map(LowCardinality(String), String)", "LowCardinality(Nullable(String))", "Array(LowCardinality(String))",
              "Nullable(UInt64)", "Array(Array(UInt8))", "Tuple(a UInt8, b String)", "Nullable(Nothing)",
              "DateTime64(9, 'UTC')", "DateTime", "DateTime('Asia/Tokyo')", "Decimal(18, 3)", "UUID", "IPv4", "FixedString(2)", "Date",
              "Bool", "Float32", "Int8", "Int16", "Int32", "Int64", "UInt16", "UInt32"):
        assert t in types, (t, types)
    assert any(t.startswith("Enum8(") for t in types) and any(t.startswith("Enum16(") for t in types)
    row = dict(zip(names, rows[12345]))
    assert row["s"] == "line 12345 ünïcode ✓" and row["lc"] == "svc-1" and row["nu"] == 12345 and row["ns"] is None
    assert row["m"] == {"k": "12345", "z": ""} and row["e8"] == "info" and row["e16"] == "b" and row["nothing"] is None
    assert row["dt64"] == dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc) + dt.timedelta(microseconds=12345 * 1234567 // 1000)
    assert str(row["id"]) == "6ba7b810-9dad-11d1-80b4-00c04fd430c8" and str(row["ip"]) == "10.1.2.3"
    assert dict(zip(names, rows[6]))["lcn"] is None and dict(zip(names, rows[7]))["lcn"] == "v1"
    _same_rows(rows, _connect(served).query(ALL_TYPES_SQL).result_rows, "all types")


def test_empty_result_and_explicit_format_clause(served):
    assert _native(served, "SELECT * FROM otel_logs WHERE 0", CLICKHOUSE_GO_REVISION) == b""
    # FORMAT Native in the query text gets the same revision layout as default_format=Native
    params = {"database": "otel", "client_protocol_version": str(CLICKHOUSE_GO_REVISION)}
    status, headers, body = _request(served, "SELECT 1 AS one, 'a' AS s FORMAT Native", params)
    assert status == 200 and headers["x-clickhouse-format"] == "Native"
    assert rows_of(decode_native(body, CLICKHOUSE_GO_REVISION)) == (["one", "s"], ["UInt8", "String"], [(1, "a")])


# --------------------------------------------------------------------------- (b) clickhouse-connect

@pytest.mark.parametrize("compress", [False, True, "lz4", "zstd", "gzip"])
def test_clickhouse_connect_with_each_compression(served, compress):
    client = _connect(served, compress=compress)
    sql = ("SELECT ServiceName, count() AS n, max(Timestamp) AS last, any(LogAttributes) AS attrs FROM otel_logs "
           "WHERE ServiceName != {skip:String} GROUP BY ServiceName ORDER BY ServiceName")
    result = client.query(sql, parameters={"skip": "nope"})
    assert len(result.result_rows) >= 4 and all(r[1] > 0 for r in result.result_rows)
    status, headers, body = _request(served, sql.replace("{skip:String}", "'nope'"), {"database": "otel",
                                                                                    "default_format": "Native"})
    assert status == 200
    _same_rows(rows_of(decode_native(body, 0))[2], result.result_rows, f"compress={compress}")
    table = client.query_arrow("SELECT count() AS c FROM otel_logs")
    assert table.column("c").to_pylist()[0] == sum(r[1] for r in result.result_rows)


# --------------------------------------------------------------------------- (c) @clickhouse/client

def _node_client() -> list[str]:
    node = shutil.which("node")
    if node is None:
        pytest.skip("Node.js is not installed (the @clickhouse/client peer needs it)")
    if not (JS_DIR / "node_modules" / "@clickhouse" / "client").is_dir():
        pytest.skip(f"@clickhouse/client is not installed: npm ci --prefix {JS_DIR}")
    return [node, str(JS_DIR / "query_clickhouse.mjs")]


@pytest.mark.parametrize("compression", ["gzip", "none"])
def test_official_js_client(served, compression):
    cmd = _node_client()
    requests = [
        {"query": "SELECT ServiceName AS service, count() AS n FROM otel_logs WHERE ServiceName != {skip: String} "
                  "GROUP BY service ORDER BY service", "format": "JSONEachRow", "query_params": {"skip": "nope"},
         "settings": {"max_execution_time": 30}, "query_id": "js-query-1"},
        {"query": "SELECT ServiceName, LogAttributes, PatternParams, toUnixTimestamp64Nano(Timestamp) AS ns "
                  "FROM otel_logs ORDER BY Timestamp, Body LIMIT 50", "format": "JSON",
         "settings": {"output_format_json_quote_64bit_integers": 1}},
        {"query": "SELECT ServiceName, count() AS n FROM log_patterns GROUP BY ServiceName ORDER BY ServiceName", "format": "JSONCompactEachRow"},
        {"query": "SELECT * FROM no_such_table", "format": "JSONEachRow"},
        {"query": "INSERT INTO otel_logs (Body) VALUES ('x')", "format": "JSONEachRow"},
    ]
    out = subprocess.run(cmd + [served.url, USER, PASSWORD, "otel", compression], input=json.dumps(requests),
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["ping"] == {"success": True}
    by_service, logs, kinds, missing, write = got["results"]
    client = _connect(served)

    assert by_service["query_id"] == "js-query-1"
    want = client.query("SELECT ServiceName, count() FROM otel_logs GROUP BY ServiceName ORDER BY ServiceName")
    assert [(r["service"], int(r["n"])) for r in by_service["rows"]] == [tuple(r) for r in want.result_rows]

    want = client.query("SELECT ServiceName, LogAttributes, PatternParams, toUnixTimestamp64Nano(Timestamp) "
                        "FROM otel_logs ORDER BY Timestamp, Body LIMIT 50").result_rows
    assert [m["name"] for m in logs["rows"]["meta"]] == ["ServiceName", "LogAttributes", "PatternParams", "ns"]
    assert [(r["ServiceName"], r["LogAttributes"], r["PatternParams"], int(r["ns"])) for r in logs["rows"]["data"]] \
        == [(s, dict(a), list(p), n) for s, a, p, n in want]

    want = client.query("SELECT ServiceName, count() FROM log_patterns GROUP BY ServiceName ORDER BY ServiceName").result_rows
    assert [(k, int(n)) for k, n in kinds["rows"]] == [tuple(r) for r in want] and want

    assert missing["error"]["code"] == "60" and missing["error"]["type"] == "UNKNOWN_TABLE"
    assert write["error"]["code"] == "164" and write["error"]["type"] == "READONLY"


# --------------------------------------------------------------------------- bounded bodies and error shape

@pytest.mark.parametrize("encoding", ["gzip", "deflate", "zstd", "lz4"])
def test_decompression_bomb_is_refused_while_decompressing(served, encoding):
    plain = b" " * (64 * 1024 * 1024)  # 64 MiB of spaces: four times max_request_size (16 MiB)
    if encoding == "gzip":
        bomb = gzip.compress(plain, 9)
    elif encoding == "deflate":
        bomb = zlib.compress(plain, 9)
    elif encoding == "zstd":
        try:
            from compression import zstd
        except ImportError:
            from backports import zstd
        bomb = zstd.compress(plain)
    else:
        import lz4.frame

        bomb = lz4.frame.compress(plain)
    assert len(bomb) < 1024 * 1024
    status, headers, body = _request(served, bomb, {"database": "otel"}, {"Content-Encoding": encoding})
    assert status == 413 and headers["x-clickhouse-exception-code"] == "229", body[:500]
    assert body.startswith(b"Code: 229. DB::Exception: ") and b"max_request_size" in body
    assert _request(served, b"", method="GET", auth=False)[2] == b"Ok.\n"  # still serving


# statuses: ClickHouse's table (src/Server/HTTP/exceptionCodeToHTTPStatus.cpp): READONLY and the rest are 500
@pytest.mark.parametrize("sql, params, headers, status, code, text", [
    ("SELEC 1", {}, {}, 500, 164, b"SELEC is not allowed"),
    ("SELECT nope FROM otel_logs", {"database": "otel"}, {}, 404, 47, b"nope"),
    ("SELECT * FROM no_such_table", {"database": "otel"}, {}, 404, 60, b"no_such_table"),
    ("SELECT 1 FROM", {}, {}, 400, 62, b"Syntax error"),
    ("SELECT 1", {"client_protocol_version": "abc"}, {}, 400, 27, b"client_protocol_version"),
    ("SELECT 1", {"compress": "1"}, {}, 501, 48, b"block compression"),
    ("SELECT 1", {"readonly": "0"}, {}, 500, 164, b"readonly"),
    ("SELECT 1", {"database": "a;b"}, {}, 400, 36, b"database name"),
    ("SELECT 1", {"default_format": "Pretty!"}, {}, 404, 73, b"Unknown output format"),
    ("SELECT uniqState(1) AS s", {"default_format": "Native", "client_protocol_version": "54460"}, {}, 501, 48,
     b"cast it to String"),
    ("SELECT 1", {"no_such_setting_xyz": "1"}, {}, 404, 115, b"no_such_setting_xyz"),
    (b"\x1f\x8b\x08\x00broken", {}, {"Content-Encoding": "gzip"}, 500, 271, b"cannot decode the gzip request body"),
    ("SELECT 1", {}, {"Content-Encoding": "br"}, 501, 48, b"unsupported Content-Encoding"),
    (b"SELECT '\xff'", {}, {}, 400, 27, b"UTF-8"),
])
def test_errors_have_clickhouse_shape(served, sql, params, headers, status, code, text):
    got_status, got_headers, body = _request(served, sql, params, headers)
    assert (got_status, got_headers.get("x-clickhouse-exception-code")) == (status, str(code)), body[:500]
    assert body.startswith(f"Code: {code}. DB::Exception: ".encode()) and text in body, body[:500]
    assert body.count(b"\n") == 1 or code in (47, 60, 62, 115)  # engine messages may span lines


def test_auth_ping_get_and_query_id(served):
    status, headers, body = _request(served, "SELECT 1", auth=False)
    assert (status, headers["x-clickhouse-exception-code"]) == (403, "516") and b"AUTHENTICATION_FAILED" in body
    assert _request(served, b"", method="GET", auth=False)[2] == b"Ok.\n"
    req = urllib.request.Request(f"{served.url}/ping")
    assert urllib.request.urlopen(req, timeout=10).read() == b"Ok.\n"
    status, headers, body = _request(served, b"", {"query": "SELECT 1", "query_id": "q-42", "wait_end_of_query": "1"},
                                     method="GET")
    assert (status, body, headers["x-clickhouse-query-id"]) == (200, b"1\n", "q-42")


# --------------------------------------------------------------------------- the CLI while otelproc serves

def _cli(served: Served, *args: str, env: dict | None = None, pipe_to_head: bool = False):
    import os

    cmd = [sys.executable, "-m", "otelproc", *args, "--config", str(served.tmp / "otelproc.yaml")]
    full_env = {**os.environ, "NUMBA_CACHE_DIR": str(REPO / ".numba_cache"), **(env or {})}
    full_env.pop("OTELPROC_DEBUG", None)
    if not pipe_to_head:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=served.tmp, env=full_env)
    writer = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=served.tmp, env=full_env)
    head = subprocess.run(["head", "-n", "3"], stdin=writer.stdout, capture_output=True, text=True, timeout=300)
    writer.stdout.close()
    stderr = writer.stderr.read().decode()
    writer.wait(timeout=300)
    return writer.returncode, head.stdout, stderr


def test_cli_goes_through_the_running_endpoint(served):
    direct = _connect(served).query("SELECT count() FROM otel_logs").result_rows[0][0]
    out = _cli(served, "sql", "SELECT count() AS n FROM otel_logs", "--format", "json")
    assert out.returncode == 0 and json.loads(out.stdout) == {"n": direct}, out.stderr
    # a trailing FORMAT clause: the engine's output as it is (clickhouse-local's behaviour)
    out = _cli(served, "sql", "SELECT ServiceName, count() AS n FROM otel_logs GROUP BY 1 ORDER BY 1 FORMAT JSONEachRow")
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert sum(int(r["n"]) for r in rows) == direct and {"ServiceName", "n"} == set(rows[0])
    out = _cli(served, "patterns", "top", "-n", "3", "--format", "json")
    assert out.returncode == 0 and len(out.stdout.splitlines()) == 3, out.stderr


def test_cli_errors_are_one_line(served):
    out = _cli(served, "sql", "SELECT * FROM no_such_table")
    assert out.returncode == 1 and out.stderr.count("\n") == 1 and "Traceback" not in out.stderr
    assert "Code: 60" in out.stderr and "UNKNOWN_TABLE" in out.stderr and "In scope" not in out.stderr
    out = _cli(served, "sql", "SELECT 1", env={"OTELPROC_QUERY_PASSWORD": "wrong"})
    assert out.returncode == 1 and out.stderr.count("\n") == 1, out.stderr
    assert "set OTELPROC_QUERY_PASSWORD" in out.stderr
    # a reader that goes away early: no BrokenPipe traceback
    for args in (("sql", "SELECT number FROM numbers(200000)"), ("tail", "-n", "5000"),
                 ("sql", "SELECT number FROM numbers(900000) FORMAT TSV")):
        code, head, stderr = _cli(served, *args, pipe_to_head=True)
        assert len(head.splitlines()) == 3 and stderr == "", (args, stderr)
        assert code in (0, 141), (args, code)


def test_cli_says_what_to_do_when_the_store_is_held_without_an_endpoint(served, tmp_path):
    """A config naming the served store but no query endpoint, and no endpoint file to find: one line."""
    import os

    store = served.tmp / "data"
    moved = store / "otelproc-query-endpoint.json"
    saved = moved.read_text()
    moved.unlink()
    try:
        cfg = tmp_path / "bare.yaml"
        cfg.write_text(f"""
receivers:
  otlp: {{protocols: {{http: {{endpoint: "127.0.0.1:1"}}}}}}
exporters:
  clickhouse: {{endpoint: "chdb://{store}", database: otel}}
service:
  pipelines:
    logs: {{receivers: [otlp], exporters: [clickhouse]}}
""")
        out = subprocess.run([sys.executable, "-m", "otelproc", "sql", "SELECT 1", "--config", str(cfg)],
                             capture_output=True, text=True, timeout=300,
                             env={**os.environ, "NUMBA_CACHE_DIR": str(REPO / ".numba_cache")})
        assert out.returncode != 0 and out.stderr.count("\n") == 1 and "Traceback" not in out.stderr, out.stderr
        assert "in use by another process" in out.stderr and "clickhouse_query" in out.stderr
    finally:
        moved.write_text(saved)
