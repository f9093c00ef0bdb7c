"""The clickhouse_query extension: a read-only ClickHouse HTTP endpoint over the embedded store."""
from __future__ import annotations

import base64
import gzip
import json
import urllib.error
import urllib.request

import pytest

from otelproc.config import ConfigError, parse_config
from otelproc.extensions.query_endpoint import QueryEndpoint, QueryEndpointConfig, check_read_only
from otelproc.component import Context
from otelproc.store import open_store

USER, PASSWORD = "grafana", "s3cret"


def _config_yaml(chdb_path: str, database: str, ext: str) -> str:
    return f"""
extensions:
  clickhouse_query:
{ext}
receivers:
  otlp: {{protocols: {{http: {{endpoint: 127.0.0.1:0}}}}}}
exporters:
  clickhouse: {{endpoint: "chdb://{chdb_path}", database: {database}}}
service:
  extensions: [clickhouse_query]
  pipelines:
    logs: {{receivers: [otlp], exporters: [clickhouse]}}
"""


@pytest.fixture
def store(chdb_path, chdb_database):
    s = open_store(f"chdb://{chdb_path}", chdb_database)
    s.command("CREATE TABLE t (id UInt32, name String, attrs Map(LowCardinality(String), String), "
              "ts DateTime64(9), ratio Float64) ENGINE = MergeTree ORDER BY id")
    s.command("INSERT INTO t SELECT number, concat('n', toString(number)), map('k', toString(number % 7)), "
              "toDateTime64('2026-01-01 00:00:00', 9) + toIntervalSecond(number), number / 3 FROM numbers(5000)")
    yield s
    s.close()


@pytest.fixture
def endpoint(store, chdb_path, chdb_database):
    cfg = parse_config(_config_yaml(chdb_path, chdb_database,
                                    f"    endpoint: 127.0.0.1:0\n    username: {USER}\n    password: {PASSWORD}\n"
                                    f"    max_result_rows: 4000"))
    ep = QueryEndpoint("clickhouse_query", cfg.extensions["clickhouse_query"], Context(config=cfg))
    ep.start()
    yield ep
    ep.shutdown()


def _client(ep: QueryEndpoint, **kw):
    import clickhouse_connect

    host, port = ep.address
    return clickhouse_connect.get_client(host=host, port=port, username=kw.pop("username", USER),
                                         password=kw.pop("password", PASSWORD), **kw)


def _post(ep: QueryEndpoint, body: bytes, params: str = "", headers: dict | None = None):
    host, port = ep.address
    req = urllib.request.Request(f"http://{host}:{port}/?{params}", data=body, method="POST",
                                 headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


# --------------------------------------------------------------------------- config and statement check

def test_config_requires_password_off_loopback_unless_anonymous(chdb_path, chdb_database):
    with pytest.raises(ConfigError) as e:
        parse_config(_config_yaml(chdb_path, chdb_database, "    endpoint: 0.0.0.0:8123"))
    assert any("extensions::clickhouse_query::password: required when listening on 0.0.0.0:8123" in m
               for m in e.value.errors)
    # on loopback no password means no credentials (ClickHouse's passwordless default user on localhost)
    for endpoint in ("127.0.0.1:8123", "localhost:8123", "[::1]:8123"):
        cfg = parse_config(_config_yaml(chdb_path, chdb_database, f"    endpoint: '{endpoint}'"))
        assert cfg.extensions["clickhouse_query"].anonymous
    cfg = parse_config(_config_yaml(chdb_path, chdb_database, "    endpoint: 127.0.0.1:8123\n    password: x"))
    assert not cfg.extensions["clickhouse_query"].anonymous
    with pytest.raises(ConfigError) as e:
        parse_config(_config_yaml(chdb_path, chdb_database,
                                  "    allow_anonymous: true\n    password: x\n    endpoint: nohost"))
    msgs = "\n".join(e.value.errors)
    assert "allow_anonymous: cannot be combined with a password" in msgs
    assert "endpoint: expected host:port" in msgs
    cfg = parse_config(_config_yaml(chdb_path, chdb_database, "    allow_anonymous: true"))
    assert cfg.extensions["clickhouse_query"].endpoint == "127.0.0.1:8123"


@pytest.mark.parametrize("sql", [
    "SELECT 1", "  select 1", "WITH x AS (SELECT 1) SELECT * FROM x", "-- c\n/* d */ SHOW TABLES",
    "DESCRIBE TABLE t", "desc t", "EXISTS TABLE t", "EXPLAIN SELECT 1", "(SELECT 1) UNION ALL (SELECT 2)",
    "SELECT ';' AS semi;", "SELECT 1 FORMAT Native",
])
def test_read_statements_pass(sql):
    assert check_read_only(sql) is None


@pytest.mark.parametrize("sql, why", [
    ("INSERT INTO t VALUES (1)", "INSERT is not allowed"),
    ("  drop table t", "DROP is not allowed"),
    ("/* SELECT */ ALTER TABLE t DELETE WHERE 1", "ALTER is not allowed"),
    ("SET readonly = 0", "SET is not allowed"),
    ("SELECT 1; DROP TABLE t", "multi-statement"),
    ("KILL QUERY WHERE 1", "KILL is not allowed"),
    ("", "empty query"),
])
def test_write_statements_refused(sql, why):
    assert why in (check_read_only(sql) or "")


def test_extension_stays_off_for_a_server_exporter(chdb_database, caplog):
    """The shipped config turns the endpoint on; OTELPROC_STORE=http://... must not stop otelproc from serving."""
    cfg = parse_config(_config_yaml("/nonexistent", chdb_database, "    allow_anonymous: true").replace(
        '"chdb:///nonexistent"', "http://127.0.0.1:1"))
    ep = QueryEndpoint("clickhouse_query", cfg.extensions["clickhouse_query"], Context(config=cfg))
    ep.start()
    assert "point Grafana and `otelproc sql` at that server" in caplog.text
    with pytest.raises(RuntimeError, match="not started"):
        ep.address
    ep.shutdown()  # safe when it never listened


# --------------------------------------------------------------------------- clickhouse-connect

@pytest.mark.parametrize("compress", [False, True, "gzip", "zstd"])
def test_clickhouse_connect_matches_direct_chdb(endpoint, store, compress):
    client = _client(endpoint, compress=compress)
    sql = ("SELECT id, name, attrs, ts, ratio FROM t WHERE id >= {lo:UInt32} AND attrs['k'] = {k:String} "
           "ORDER BY id")
    params = {"lo": 100, "k": "3"}
    got = client.query(sql, parameters=params)
    want = store.query_rows(sql, params)
    assert got.column_names == want.column_names
    assert len(got.result_rows) == len(want) > 500
    assert [r[:2] + r[4:] for r in got.result_rows] == [r[:2] + r[4:] for r in want]
    assert [r[2] for r in got.result_rows] == [r[2] for r in want]
    assert client.query_arrow("SELECT count() AS c FROM t").column("c").to_pylist() == [5000]
    assert client.command("SELECT currentDatabase()") == store.database


def test_writes_are_rejected_and_data_unchanged(endpoint, store):
    from clickhouse_connect.driver.exceptions import DatabaseError

    client = _client(endpoint)
    for stmt in ("INSERT INTO t (id) VALUES (1)", "CREATE TABLE x (a UInt8) ENGINE = Memory", "DROP TABLE t",
                 "TRUNCATE TABLE t", "ALTER TABLE t DELETE WHERE 1", "SELECT 1; DROP TABLE t"):
        with pytest.raises(DatabaseError, match="164"):
            client.command(stmt)
    with pytest.raises(DatabaseError, match="164"):
        client.insert("t", [[9999, "x", {}, 0, 0.0]], column_names=["id", "name", "attrs", "ts", "ratio"])
    # the engine's readonly=1 is the second line: table functions that reach files are refused too
    with pytest.raises(DatabaseError, match="164|READONLY"):
        client.query("SELECT * FROM file('/etc/passwd', LineAsString)")
    assert store.query_rows("SELECT count() FROM t")[0][0] == 5000


def test_bad_password_is_403_with_code_516(endpoint):
    from clickhouse_connect.driver.exceptions import DatabaseError

    with pytest.raises(DatabaseError, match="516"):
        _client(endpoint, password="wrong")
    status, headers, body = _post(endpoint, b"SELECT 1")  # no credentials at all
    assert status == 403 and headers["X-ClickHouse-Exception-Code"] == "516"  # ClickHouse's status for 516
    assert b"AUTHENTICATION_FAILED" in body
    status, _, _ = _post(endpoint, b"SELECT 1", headers={"X-ClickHouse-User": USER, "X-ClickHouse-Key": "nope"})
    assert status == 403


def test_result_row_limit(endpoint):
    from clickhouse_connect.driver.exceptions import DatabaseError

    client = _client(endpoint)
    with pytest.raises(DatabaseError, match="396|TOO_MANY_ROWS"):
        client.query("SELECT id FROM t")          # 5000 rows > max_result_rows 4000
    assert len(client.query("SELECT id FROM t LIMIT 4000").result_rows) == 4000


# --------------------------------------------------------------------------- Grafana-style raw HTTP

def test_grafana_style_native_gzip_request(endpoint, store):
    """What clickhouse-go v2 sends in HTTP mode with gzip: query in a gzip body, default_format=Native,
    database in the URL, credentials in X-ClickHouse-User/Key (or basic auth), gzip accepted."""
    import chdb

    sql = "SELECT id, name, ratio FROM t WHERE id < 300 ORDER BY id"
    params = f"database={store.database}&default_format=Native&enable_http_compression=1&max_execution_time=30"
    headers = {"X-ClickHouse-User": USER, "X-ClickHouse-Key": PASSWORD, "Content-Encoding": "gzip",
               "Accept-Encoding": "gzip"}
    status, rh, body = _post(endpoint, gzip.compress(sql.encode()), params, headers)
    assert status == 200, body
    assert rh.get("Content-Encoding") == "gzip" and rh["X-ClickHouse-Format"] == "Native"
    conn = chdb.connect(endpoint._engine.path)
    try:
        conn.query(f"USE `{store.database}`")
        want = conn.query(sql, "Native").bytes()
    finally:
        conn.close()
    assert gzip.decompress(body) == want
    # basic auth + RowBinaryWithNamesAndTypes, uncompressed
    basic = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    status, rh, body = _post(endpoint, b"SELECT count() AS c FROM t",
                             f"database={store.database}&default_format=RowBinaryWithNamesAndTypes",
                             {"Authorization": basic})
    assert status == 200 and body.startswith(b"\x01\x01c\x06UInt64")
    # ping needs no credentials
    host, port = endpoint.address
    assert urllib.request.urlopen(f"http://{host}:{port}/ping", timeout=5).read() == b"Ok.\n"


def test_errors_look_like_clickhouse(endpoint, store):
    auth = {"X-ClickHouse-User": USER, "X-ClickHouse-Key": PASSWORD}
    status, rh, body = _post(endpoint, b"SELECT nope FROM t", f"database={store.database}", auth)
    assert status == 404 and rh["X-ClickHouse-Exception-Code"] == "47" and body.startswith(b"Code: 47")
    status, rh, _ = _post(endpoint, b"SELECT 1", "database=no_such_db_x", auth)
    assert status == 404 and rh["X-ClickHouse-Exception-Code"] == "81"
    status, rh, _ = _post(endpoint, b"SELECT 1", "compress=1", auth)
    assert status == 501
    status, rh, _ = _post(endpoint, b"SELECT 1", "readonly=0", auth)
    assert status == 500 and rh["X-ClickHouse-Exception-Code"] == "164"
    status, rh, body = _post(endpoint, b"SELECT 1 FORMAT JSON", "", auth)
    assert status == 200 and json.loads(body)["data"] == [{"1": 1}]


def test_shutdown_releases_the_port_and_engine(store, chdb_path, chdb_database):
    from otelproc.store.embedded import engine_path

    cfg = parse_config(_config_yaml(chdb_path, chdb_database, "    allow_anonymous: true\n    endpoint: 127.0.0.1:0"))
    ep = QueryEndpoint("clickhouse_query", cfg.extensions["clickhouse_query"], Context(config=cfg))
    ep.start()
    host, port = ep.address
    assert urllib.request.urlopen(f"http://{host}:{port}/?query=SELECT%201", timeout=5).read() == b"1\n"
    ep.shutdown()
    ep.shutdown()  # idempotent
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://{host}:{port}/ping", timeout=2)
    assert engine_path() is not None  # the test's store still holds the engine


def test_dashboard_queries_through_the_endpoint_match_chdb(chdb_path, chdb_database):
    """clickhouse-connect pointed at the endpoint runs the dashboards' queries with the results of direct chDB."""
    from otelproc.report import dashboard_specs, data_time_range, expand_macros, load_demo, panel_queries, \
        variable_values

    store = open_store(f"chdb://{chdb_path}", chdb_database)
    try:
        load_demo(store, duration_s=900.0, batch_seconds=60.0)
        cfg = parse_config(_config_yaml(chdb_path, chdb_database,
                                        f"    endpoint: 127.0.0.1:0\n    username: {USER}\n    password: {PASSWORD}"))
        ep = QueryEndpoint("clickhouse_query", cfg.extensions["clickhouse_query"], Context(config=cfg))
        ep.start()
        try:
            client = _client(ep, compress="gzip")
            tr = data_time_range(store)
            compared = 0
            for dash in dashboard_specs().values():
                variables = variable_values(store, dash, tr)
                for panel, tgt in panel_queries(dash):
                    local = dict(variables)
                    if panel.get("repeat"):
                        local[panel["repeat"]] = (variables[panel["repeat"] + ".__all"] or [""])[0]
                    sql = expand_macros(tgt["rawSql"], tr.from_ms, tr.to_ms, tr.interval_ms, local)
                    want = store.query_arrow(sql)
                    got = client.query_arrow(sql)
                    assert got.column_names == want.column_names, panel["title"]
                    assert got.num_rows == want.num_rows, panel["title"]
                    # the same rows (as a multiset: ORDER BY ... LIMIT may break ties either way)
                    assert sorted(map(repr, got.to_pylist())) == sorted(map(repr, want.to_pylist())), \
                        panel["title"]
                    compared += 1
            assert compared >= 30
        finally:
            ep.shutdown()
    finally:
        store.close()
