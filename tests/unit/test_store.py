"""otelproc.store against real chDB: schema, migrations, Arrow conversion, both store classes."""
from __future__ import annotations

import threading

import numpy as np
import pyarrow as pa
import pytest

from otelproc.batch import AttrMap, LogBatch, StringArray, concat_batches
from otelproc.store import StoreError, StoreRegistry, open_store
from otelproc.store.arrow import OTEL_LOGS_COLUMNS, encode_params, hex_ids, logs_to_arrow, params_to_pylist
from otelproc.store.embedded import engine_path
from otelproc.store.schema import (
    SQL_DIR, SchemaOptions, engine_expr, ensure_schema, migration_files, render, split_statements, table_columns,
    table_files, ttl_clause,
)

# exporter/clickhouseexporter/internal/sqltemplates/logs_table.sql (collector-contrib main), then ours
UPSTREAM_COLUMNS = [
    ("Timestamp", "DateTime64(9)"), ("TimestampTime", "DateTime"), ("TraceId", "String"), ("SpanId", "String"),
    ("TraceFlags", "UInt8"), ("SeverityText", "LowCardinality(String)"), ("SeverityNumber", "UInt8"),
    ("ServiceName", "LowCardinality(String)"), ("Body", "String"), ("ResourceSchemaUrl", "LowCardinality(String)"),
    ("ResourceAttributes", "Map(LowCardinality(String), String)"), ("ScopeSchemaUrl", "LowCardinality(String)"),
    ("ScopeName", "String"), ("ScopeVersion", "LowCardinality(String)"),
    ("ScopeAttributes", "Map(LowCardinality(String), String)"), ("LogAttributes", "Map(LowCardinality(String), String)"),
    ("EventName", "String"),
]
ENRICHMENT_COLUMNS = [("PatternId", "UInt64"), ("PatternTemplate", "LowCardinality(String)"),
                      ("PatternParams", "Array(String)"), ("AnomalyScore", "Float32")]
UPSTREAM_INDEXES = {"idx_trace_id", "idx_res_attr_key", "idx_res_attr_value", "idx_scope_attr_key",
                    "idx_scope_attr_value", "idx_log_attr_key", "idx_log_attr_value", "idx_body"}

T0 = 1_790_000_000_123_456_789  # 2026-09-21, ns precision


@pytest.fixture
def store(chdb_path, chdb_database):
    s = open_store(f"chdb://{chdb_path}", chdb_database)
    yield s
    s.command(f"DROP DATABASE IF EXISTS `{chdb_database}`")
    s.close()


@pytest.fixture
def logs_store(store):
    ensure_schema(store, SchemaOptions(database=store.database))
    return store


def sample_batch() -> LogBatch:
    records = [
        dict(time_ns=T0, observed_ns=T0 + 5, body="héllo wörld 世界 🚀", severity_text="INFO", severity_number=9,
             trace_id="0102030405060708090a0b0c0d0e0fff", span_id="a1a2a3a4a5a6a7a8", flags=0x301,
             attributes={"http.method": "GET", "ключ": "значение"}, service="api"),
        dict(time_ns=0, observed_ns=T0 + 999, body="no event time", severity_text="ERROR", severity_number=17,
             service="db"),
        dict(time_ns=T0 + 1, body="", service="api", attributes={}),
    ]
    return LogBatch.from_records(records, resource={"host.name": "h-1", "deployment.environment": "prod"},
                                 scope_name="io.otelproc.test", scope_version="1.2.3")


def big_batch(n: int, seed: int = 0) -> LogBatch:
    """n realistic records built with numpy (3 services, 2 attributes each, ids on half)."""
    rng = np.random.default_rng(seed)
    ms = rng.integers(1, 5000, n)
    bodies = StringArray.from_pylist([f"GET /api/items/{i} returned 200 in {m} ms" for i, m in enumerate(ms.tolist())])
    keys = StringArray.from_pylist(["http.method", "user.id"] * n)
    values = StringArray.from_pylist([v for i in range(n) for v in ("GET", f"u{i % 977}")])
    trace = rng.integers(0, 256, (n, 16), dtype=np.uint8)
    trace[::2] = 0
    services = ["api", "checkout", "db"]
    svc = rng.integers(0, 3, n).astype(np.int32)
    return LogBatch(
        time_ns=T0 + np.arange(n, dtype=np.int64) * 1000, observed_ns=np.zeros(n, np.int64),
        severity_number=rng.choice(np.array([9, 13, 17], np.uint8), n), severity_text=StringArray.from_pylist(["INFO"] * n),
        body=bodies, trace_id=trace, span_id=trace[:, :8].copy(), flags=np.ones(n, np.uint32),
        log_attrs=AttrMap(np.arange(0, 2 * n + 1, 2, dtype=np.int64), keys, values),
        resource_index=svc, scope_index=np.zeros(n, np.int32), service_index=svc,
        resource_attrs=AttrMap.from_pylist([{"service.name": s} for s in services]),
        resource_schema_url=StringArray.from_pylist([""] * 3), scope_name=StringArray.from_pylist(["bench"]),
        scope_version=StringArray.from_pylist([""]), scope_schema_url=StringArray.from_pylist([""]),
        scope_attrs=AttrMap.empty(1), services=services)


# ------------------------------------------------------------------------------------------- schema

def test_otel_logs_columns_equal_upstream_plus_enrichment(logs_store):
    assert list(table_columns(logs_store, "otel_logs").items()) == UPSTREAM_COLUMNS + ENRICHMENT_COLUMNS
    indexes = {r[0] for r in logs_store.query_rows(
        "SELECT name FROM system.data_skipping_indices WHERE database = {db:String} AND table = 'otel_logs'",
        {"db": logs_store.database})}
    assert indexes == UPSTREAM_INDEXES | {"idx_pattern_id"}
    (ddl,), = logs_store.query_rows("SHOW CREATE TABLE otel_logs")
    assert "PARTITION BY toDate(TimestampTime)" in ddl
    assert "PRIMARY KEY (ServiceName, TimestampTime)" in ddl
    assert "ORDER BY (ServiceName, TimestampTime, Timestamp)" in ddl
    assert "TTL" not in ddl  # ttl 0 = keep forever
    assert "ttl_only_drop_parts = 1" in ddl
    codecs = dict(logs_store.query_rows("SELECT name, compression_codec FROM system.columns WHERE database = "
                                        "{db:String} AND table = 'otel_logs'", {"db": logs_store.database}))
    # LZ4 where it is smaller and cheaper (values repeating row after row), ZSTD(1) elsewhere (benchmarks/README.md)
    assert codecs["ResourceAttributes"] == codecs["ScopeName"] == "CODEC(LZ4)"
    assert codecs["Body"] == codecs["LogAttributes"] == codecs["TraceId"] == "CODEC(ZSTD(1))"


def test_schema_twice_is_idempotent_and_migrations_run_once(store):
    opts = SchemaOptions(database=store.database, ttl=72 * 3600)
    first = ensure_schema(store, opts)
    (ddl1,), = store.query_rows("SHOW CREATE TABLE otel_logs")
    second = ensure_schema(store, opts)
    (ddl2,), = store.query_rows("SHOW CREATE TABLE otel_logs")
    assert first.tables == second.tables == {name: name for name in table_files()}
    assert first.migrations_applied == [name for _, name, _ in migration_files()]
    assert second.migrations_applied == []
    assert ddl1 == ddl2 and "TTL TimestampTime + toIntervalDay(3)" in ddl1
    recorded = store.query_rows("SELECT Version, Name FROM otelproc_schema_migrations FINAL ORDER BY Version")
    assert [tuple(r) for r in recorded] == [(v, n) for v, n, _ in migration_files()]


def test_migrations_apply_once_each_in_order(store, tmp_path):
    (tmp_path / "migrations").mkdir()
    (tmp_path / "events.sql").write_text(
        "CREATE TABLE IF NOT EXISTS ${database}.${table} ${cluster} (Id UInt64, Note String) "
        "ENGINE = ${engine} ORDER BY Id;\n")
    (tmp_path / "migrations" / "0001_seed.sql").write_text(
        "-- one row per application: counts how often this ran\n"
        "INSERT INTO ${database}.${table(events)} VALUES (1, 'semi;colon ''quoted''');\n"
        "ALTER TABLE ${database}.${table(events)} ADD COLUMN IF NOT EXISTS Extra UInt8 DEFAULT 7;\n")
    opts = SchemaOptions(database=store.database)
    assert ensure_schema(store, opts, tmp_path).migrations_applied == ["0001_seed"]
    assert ensure_schema(store, opts, tmp_path).migrations_applied == []
    (tmp_path / "migrations" / "0002_more.sql").write_text("INSERT INTO ${database}.${table(events)} (Id) VALUES (2)")
    assert ensure_schema(store, opts, tmp_path).migrations_applied == ["0002_more"]
    assert ensure_schema(store, opts, tmp_path).migrations_applied == []
    rows = store.query_rows("SELECT Id, Note, Extra FROM events ORDER BY Id")
    assert [tuple(r) for r in rows] == [(1, "semi;colon 'quoted'", 7), (2, "", 7)]


def test_bad_migration_names_are_rejected(tmp_path):
    (tmp_path / "migrations").mkdir()
    (tmp_path / "migrations" / "1_x.sql").write_text("SELECT 1")
    with pytest.raises(ValueError, match="NNNN_name.sql"):
        migration_files(tmp_path)
    (tmp_path / "migrations" / "1_x.sql").unlink()
    (tmp_path / "migrations" / "0003_a.sql").write_text("SELECT 1")
    (tmp_path / "migrations" / "0003_b.sql").write_text("SELECT 1")
    with pytest.raises(ValueError, match="same version 0003"):
        migration_files(tmp_path)


def test_render_cluster_engine_and_ttl():
    text = table_files()["otel_logs"].read_text()
    out = render(text, SchemaOptions(database="logsdb", cluster="prod_cluster", ttl=90 * 60,
                                     tables={"otel_logs": "my_logs"}), table="otel_logs")
    assert "CREATE TABLE IF NOT EXISTS `logsdb`.`my_logs` ON CLUSTER `prod_cluster` (" in out
    assert "ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/{database}/{table}', '{replica}')" in out
    assert "TTL TimestampTime + toIntervalMinute(90)" in out
    assert "${" not in out
    plain = render(text, SchemaOptions(), table="otel_logs")
    assert "ON CLUSTER" not in plain and "ENGINE = MergeTree()" in plain and "\nTTL " not in plain
    assert engine_expr("ReplacingMergeTree(Version)", "c") == (
        "ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/{database}/{table}', '{replica}', Version)")
    assert engine_expr("ReplicatedMergeTree('/p', 'r')", "c") == "ReplicatedMergeTree('/p', 'r')"
    assert ttl_clause("T", 72 * 3600) == "TTL T + toIntervalDay(3)"
    assert ttl_clause("T", 5 * 3600) == "TTL T + toIntervalHour(5)"
    assert ttl_clause("T", 61) == "TTL T + toIntervalSecond(61)"
    assert ttl_clause("T", 0) == ""


def test_render_errors_name_file_and_placeholder():
    with pytest.raises(ValueError, match=r"x\.sql: unknown placeholder \$\{tabel\}"):
        render("CREATE TABLE ${tabel}", SchemaOptions(), table="t", source="x.sql")
    with pytest.raises(ValueError, match="only defined in table files"):
        render("ALTER TABLE ${table}", SchemaOptions(), table=None)
    with pytest.raises(ValueError, match="database must match"):
        render("${database}", SchemaOptions(database="x; DROP"), table="t")


def test_split_statements_respects_quotes_and_comments():
    sql = "-- header; not a statement\nSELECT 'a;b';\n\nSELECT `c;d` -- trailing; comment\n;\n-- only a comment;\n"
    assert split_statements(sql) == ["-- header; not a statement\nSELECT 'a;b'", "SELECT `c;d` -- trailing; comment"]


# ------------------------------------------------------------------------------------------- arrow

def test_hex_ids_vectorised():
    ids = np.zeros((3, 8), np.uint8)
    ids[0] = np.arange(1, 9)
    ids[2, 7] = 255
    assert hex_ids(ids).to_pylist() == ["0102030405060708", "", "00000000000000ff"]
    with pytest.raises(TypeError, match="uint8"):
        hex_ids(ids.astype(np.int16))


def test_pattern_params_encoding_round_trip():
    rows = [["GET", "/x"], [], [""], ["ünï", "", "🚀"], ["a\x1fb"]]
    enc = encode_params(rows)
    assert params_to_pylist(enc) == [["GET", "/x"], [], [""], ["ünï", "", "🚀"], ["a b"]]
    # survives concat_batches like any StringArray column
    b1 = sample_batch().with_columns(pattern_params=encode_params([["a"], [], ["b", "c"]]))
    b2 = sample_batch().with_columns(pattern_params=encode_params([[], ["d"], []]))
    both = concat_batches([b1, b2])
    assert logs_to_arrow(both).column("PatternParams").to_pylist() == [["a"], [], ["b", "c"], [], ["d"], []]
    with pytest.raises(ValueError, match="record 1 .* 0x1f"):
        params_to_pylist(StringArray.from_pylist(["a\x1f", "b"]))


def test_logs_to_arrow_columns_and_defaults():
    t = logs_to_arrow(sample_batch())
    assert tuple(t.column_names) == OTEL_LOGS_COLUMNS
    assert t.column("Timestamp").type == pa.timestamp("ns", tz="UTC")
    assert t.column("Timestamp").cast(pa.int64()).to_pylist() == [T0, T0 + 999, T0 + 1]  # observed as fallback
    assert t.column("TraceFlags").to_pylist() == [1, 0, 0]
    assert t.column("PatternId").to_pylist() == [0, 0, 0]
    assert t.column("PatternParams").to_pylist() == [[], [], []]
    empty = logs_to_arrow(LogBatch.empty())
    assert empty.num_rows == 0 and tuple(empty.column_names) == OTEL_LOGS_COLUMNS


def test_logs_to_arrow_rejects_bad_processor_columns():
    b = sample_batch().with_columns(pattern_id=np.array(["x", "y", "z"]))
    with pytest.raises(TypeError, match="pattern_id"):
        logs_to_arrow(b)


# ------------------------------------------------------------------------------------------- embedded

def test_insert_and_read_back(logs_store):
    b = sample_batch()
    b = b.with_columns(pattern_id=np.array([11, 12, 11], np.uint64),
                       pattern_template=StringArray.from_pylist(["héllo <*>", "no event time", ""]),
                       pattern_params=encode_params([["wörld 世界 🚀"], [], []]),
                       anomaly_score=np.array([0.25, 0.9, 0], np.float32))
    assert logs_store.insert_arrow("otel_logs", logs_to_arrow(b)) == 3
    rows = logs_store.query_rows(
        "SELECT toUnixTimestamp64Nano(Timestamp), toUnixTimestamp(TimestampTime), TraceId, SpanId, TraceFlags, "
        "SeverityText, SeverityNumber, ServiceName, Body, ResourceAttributes, ScopeName, ScopeVersion, "
        "LogAttributes, PatternId, PatternTemplate, PatternParams, AnomalyScore FROM otel_logs ORDER BY Timestamp")
    assert rows.column_names[2:4] == ("TraceId", "SpanId")
    first, third, second = rows
    assert first == (T0, T0 // 10**9, "0102030405060708090a0b0c0d0e0fff", "a1a2a3a4a5a6a7a8", 1, "INFO", 9, "api",
                     "héllo wörld 世界 🚀",
                     {"host.name": "h-1", "deployment.environment": "prod", "service.name": "api"},
                     "io.otelproc.test", "1.2.3", {"http.method": "GET", "ключ": "значение"}, 11, "héllo <*>",
                     ["wörld 世界 🚀"], 0.25)
    assert second[0] == T0 + 999 and second[2:4] == ("", "") and second[7:9] == ("db", "no event time")
    assert third[0] == T0 + 1 and third[8] == "" and third[12] == {}
    # the Body skip index and map lookups work on what we wrote
    assert logs_store.query_rows("SELECT count() FROM otel_logs WHERE hasToken(Body, 'wörld') "
                                 "AND LogAttributes['ключ'] = 'значение'")[0][0] == 1


def test_empty_batch_inserts_nothing(logs_store):
    assert logs_store.insert_arrow("otel_logs", logs_to_arrow(LogBatch.empty())) == 0
    assert logs_store.query_rows("SELECT count() FROM otel_logs")[0][0] == 0


def test_100k_row_insert(logs_store):
    n = 100_000
    b = big_batch(n)
    logs_store.insert_arrow("otel_logs", logs_to_arrow(b))
    (count, body_bytes, services, traced, t_min, t_max), = logs_store.query_rows(
        "SELECT count(), sum(length(Body)), uniqExact(ServiceName), countIf(TraceId != ''), "
        "toUnixTimestamp64Nano(min(Timestamp)), toUnixTimestamp64Nano(max(Timestamp)) FROM otel_logs")
    assert count == n and body_bytes == int(b.body.off[-1])
    assert services == 3 and traced == int(b.trace_id.any(axis=1).sum())
    assert (t_min, t_max) == (T0, T0 + (n - 1) * 1000)


def test_parameters_are_bound_not_concatenated(logs_store):
    logs_store.insert_arrow("otel_logs", logs_to_arrow(sample_batch()))
    evil = "api' OR 1=1; DROP TABLE otel_logs; --"
    rows = logs_store.query_rows("SELECT count() FROM otel_logs WHERE ServiceName = {s:String}", {"s": evil})
    assert rows[0][0] == 0
    rows = logs_store.query_rows("SELECT {s:String}, {n:UInt64} + 1", {"s": evil, "n": 41})
    assert rows[0] == (evil, 42)
    assert logs_store.query_rows("SELECT count() FROM otel_logs WHERE ServiceName = {s:String}", {"s": "api"})[0][0] == 2


def test_errors_carry_clickhouse_code(store):
    with pytest.raises(StoreError, match="UNKNOWN_TABLE|does not exist") as e:
        store.query_rows("SELECT * FROM no_such_table")
    assert e.value.code == 60
    with pytest.raises(ValueError, match="table must match"):
        store.insert_arrow("x; DROP TABLE y", pa.table({"a": [1]}))


def test_second_path_error_names_both_paths(store, tmp_path):
    other = str(tmp_path / "elsewhere")
    with pytest.raises(StoreError) as e:
        open_store(f"chdb://{other}", "x")
    assert store.endpoint.removeprefix("chdb://") in str(e.value) and other in str(e.value)
    assert engine_path() == store.endpoint.removeprefix("chdb://")  # the failed open left no trace


def test_several_stores_share_one_path(chdb_path, chdb_database):
    a = open_store(f"chdb://{chdb_path}", chdb_database)
    b = open_store(f"chdb://{chdb_path}", chdb_database)
    a.command("CREATE TABLE t (x UInt8) ENGINE = MergeTree ORDER BY x")
    b.command("INSERT INTO t VALUES (1)")
    a.close()
    a.close()  # idempotent
    assert b.query_rows("SELECT sum(x) FROM t")[0][0] == 1
    with pytest.raises(StoreError, match="closed"):
        a.query_rows("SELECT 1")
    b.command(f"DROP DATABASE `{chdb_database}`")
    b.close()
    assert engine_path() is None
    c = open_store(f"chdb://{chdb_path}", chdb_database)  # reopen after the last one closed
    assert c.query_rows("SELECT 1")[0][0] == 1
    c.command(f"DROP DATABASE `{chdb_database}`")
    c.close()


def test_concurrent_writers_and_reader_on_one_store(logs_store):
    batch = big_batch(5_000, seed=1)
    table = logs_to_arrow(batch)
    errors: list[BaseException] = []

    def write():
        try:
            for _ in range(4):
                logs_store.insert_arrow("otel_logs", table)
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    def read():
        try:
            for _ in range(20):
                logs_store.query_rows("SELECT count(), max(Timestamp) FROM otel_logs")
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=write) for _ in range(3)] + [threading.Thread(target=read)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert logs_store.query_rows("SELECT count() FROM otel_logs")[0][0] == 3 * 4 * 5_000


def test_store_registry_shares_and_refcounts(chdb_path, chdb_database):
    reg = StoreRegistry()
    endpoint = f"chdb://{chdb_path}"
    a = reg.get(endpoint, chdb_database)
    b = reg.get(endpoint, chdb_database)
    assert reg.open_count() == 1
    a.command("CREATE TABLE t (x UInt8) ENGINE = MergeTree ORDER BY x")
    a.close()
    assert reg.open_count() == 1 and b.query_rows("SELECT count() FROM t")[0][0] == 0
    b.command(f"DROP DATABASE `{chdb_database}`")
    b.close()
    assert reg.open_count() == 0


def test_bad_endpoints():
    with pytest.raises(ValueError, match="unsupported scheme"):
        open_store("ftp://x", "otel")
    with pytest.raises(ValueError, match="database must match"):
        open_store("chdb://./data", "bad-name")


# ------------------------------------------------------------------------------------------- server

def test_server_store_through_clickhouse_connect_chdb_interface(chdb_path, chdb_database, store):
    server = open_store(f"chdb+connect://{chdb_path}", chdb_database)
    try:
        assert type(server).__name__ == "ServerStore"
        ensure_schema(server, SchemaOptions(database=chdb_database))
        assert list(table_columns(server, "otel_logs").items()) == UPSTREAM_COLUMNS + ENRICHMENT_COLUMNS
        b = sample_batch().with_columns(pattern_params=encode_params([["p1", "p2"], [], ["ü"]]))
        assert server.insert_arrow("otel_logs", logs_to_arrow(b)) == 3
        rows = server.query_rows("SELECT toUnixTimestamp64Nano(Timestamp), Body, TraceId, LogAttributes, PatternParams "
                                 "FROM otel_logs WHERE ServiceName = {s:String} ORDER BY Timestamp", {"s": "api"})
        assert rows == [(T0, "héllo wörld 世界 🚀", "0102030405060708090a0b0c0d0e0fff",
                         {"http.method": "GET", "ключ": "значение"}, ["p1", "p2"]), (T0 + 1, "", "", {}, ["ü"])]
        assert server.query_arrow("SELECT count() AS n FROM otel_logs").column("n").to_pylist() == [3]
        # same engine, same data: the embedded store sees the server store's rows
        assert store.query_rows(f"SELECT count() FROM `{chdb_database}`.otel_logs")[0][0] == 3
        with pytest.raises(StoreError) as e:
            server.command("SELECT nope")
        assert e.value.code == 47
    finally:
        server.close()
    with pytest.raises(StoreError, match="closed"):
        server.query_rows("SELECT 1")
