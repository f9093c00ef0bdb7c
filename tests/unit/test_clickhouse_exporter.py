"""The clickhouse exporter against real chDB: config, lifecycle, inserts, derived tables, retries."""
from __future__ import annotations

import shutil
import threading
import time

import numpy as np
import pyarrow as pa
import pytest

from otelproc.batch import LogBatch
from otelproc.component import Context, Kind, PermanentError
from otelproc.config import Duration, decode
from otelproc.exporters.clickhouse import (
    ClickHouseExporter, ClickHouseExporterConfig, RetryConfig, factory,
)
from otelproc.store import StoreError, StoreRegistry, open_store
from otelproc.store.schema import SQL_DIR
from otelproc.telemetry import Telemetry

T0 = 1_790_000_000_000_000_000

DERIVED_SQL = """\
CREATE TABLE IF NOT EXISTS ${database}.${table} ${cluster} (
    Service LowCardinality(String),
    PatternId UInt64,
    Count UInt64
) ENGINE = ${engine(SummingMergeTree((Count)))}
ORDER BY (Service, PatternId)
"""


def records(n: int = 3) -> list[dict]:
    return [dict(time_ns=T0 + i, body=f"line {i} ünï", service="api", severity_number=9,
                 attributes={"i": str(i)}) for i in range(n)]


@pytest.fixture
def sql_dir(tmp_path):
    """The real templates plus one derived table, as another engineer would drop it in."""
    d = tmp_path / "sql"
    shutil.copytree(SQL_DIR, d)
    (d / "test_counts.sql").write_text(DERIVED_SQL)
    return d


@pytest.fixture
def make(chdb_path, chdb_database, sql_dir):
    made: list[ClickHouseExporter] = []

    def _make(context: Context | None = None, **overrides) -> ClickHouseExporter:
        cfg = ClickHouseExporterConfig(endpoint=f"chdb://{chdb_path}", database=chdb_database, **overrides)
        assert cfg.validate() == []
        exp = ClickHouseExporter("clickhouse", cfg, context or Context(telemetry=Telemetry()), sql_dir=sql_dir)
        made.append(exp)
        return exp

    yield _make
    for exp in made:
        exp.shutdown()
    with open_store(f"chdb://{chdb_path}", chdb_database) as s:
        s.command(f"DROP DATABASE IF EXISTS `{chdb_database}`")


def fast_retry(**kw) -> RetryConfig:
    return RetryConfig(initial_interval=Duration(0.01), max_interval=Duration(0.05),
                       max_elapsed_time=Duration(kw.pop("max_elapsed_time", 0.3)), **kw)


def count(exp: ClickHouseExporter, table: str) -> int:
    return exp.store.query_rows(f"SELECT count() FROM `{table}`")[0][0]


# ------------------------------------------------------------------------------------------- config

def test_factory_and_defaults():
    assert factory.type == "clickhouse" and factory.kind is Kind.EXPORTER
    assert factory.config_class is ClickHouseExporterConfig
    cfg = ClickHouseExporterConfig()
    assert (cfg.endpoint, cfg.database, cfg.logs_table_name, cfg.ttl, cfg.create_schema) == (
        "chdb://./data", "otel", "otel_logs", 0, True)
    assert cfg.validate() == []
    exp = factory.create("clickhouse/x", cfg, None, Context())
    assert isinstance(exp, ClickHouseExporter) and exp.store is None  # no I/O at creation
    exp.shutdown()  # safe without start
    exp.shutdown()


def test_config_decodes_from_yaml_shape():
    errors: list[str] = []
    cfg = decode(ClickHouseExporterConfig, {
        "endpoint": "https://ch.example:8443", "database": "logs", "username": "otel", "password": "s3cret",
        "ttl": "72h", "timeout": "10s", "cluster_name": "prod", "table_engine": {"name": "MergeTree"},
        "retry_on_failure": {"initial_interval": "1s", "max_interval": "10s", "max_elapsed_time": "1m"},
        "tls": {"insecure": True}, "connection_params": {"async_insert": "1"},
    }, "exporters::clickhouse", errors)
    assert errors == []
    assert cfg.ttl == 72 * 3600 and cfg.retry_on_failure.max_elapsed_time == 60 and cfg.tls.insecure
    assert "s3cret" not in repr(cfg)
    opts = cfg.schema_options()
    assert (opts.database, opts.ttl, opts.cluster) == ("logs", 259200.0, "prod")


def test_config_reports_every_problem_with_its_key(tmp_path):
    errors: list[str] = []
    decode(ClickHouseExporterConfig, {
        "endpoint": "ftp://x", "database": "bad-db", "logs_table_name": "a b", "ttl": "-1h", "timeout": 0,
        "retry_on_failure": {"initial_interval": "5s", "max_interval": "1s", "multiplier": 0.5},
        "tls": {"cert_file": str(tmp_path / "missing.pem")}, "table_engine": {"name": "Merge Tree"},
    }, "exporters::clickhouse", errors)
    text = "\n".join(errors)
    for expected in (
        "exporters::clickhouse::endpoint: must be chdb://<path>",
        "exporters::clickhouse::database: database must match",
        "exporters::clickhouse::logs_table_name: logs_table_name must match",
        "exporters::clickhouse::ttl: must be >= 0 (0 = keep forever), got -3600.0s",
        "exporters::clickhouse::timeout: must be > 0",
        "exporters::clickhouse::retry_on_failure::max_interval: must be >= initial_interval",
        "exporters::clickhouse::retry_on_failure::multiplier: must be >= 1",
        "exporters::clickhouse::tls::cert_file: file not found",
        "exporters::clickhouse::tls::cert_file: cert_file and key_file must be set together",
        "exporters::clickhouse::tls: only applies to https:// endpoints",
        "exporters::clickhouse::table_engine::name: must be an engine name",
    ):
        assert expected in text, f"missing {expected!r} in:\n{text}"
    errors = []
    decode(ClickHouseExporterConfig, {"cluster_name": "c", "username": "u", "connection_params": {"a": "1"}},
           "e", errors)
    assert any("connection_params: only applies to server endpoints" in e for e in errors)
    assert any("cluster_name: needs a ClickHouse server" in e for e in errors)
    assert any("username: the embedded store" in e for e in errors)


# ------------------------------------------------------------------------------------------- data path

def test_start_consume_shutdown_writes_logs_and_metrics(make):
    exp = make()
    exp.start()
    batch = LogBatch.from_records(records(3))
    exp.consume(batch)
    exp.consume(LogBatch.empty())  # nothing to do, no error
    assert count(exp, "otel_logs") == 3
    rows = exp.store.query_rows("SELECT toUnixTimestamp64Nano(Timestamp), Body, LogAttributes FROM otel_logs "
                                "ORDER BY Timestamp")
    assert rows[2] == (T0 + 2, "line 2 ünï", {"i": "2"})
    tel = exp.context.telemetry
    assert tel.value("otelproc_clickhouse_rows_inserted_total", exporter="clickhouse", table="otel_logs") == 3
    assert tel.value("otelproc_clickhouse_insert_duration_seconds_count", exporter="clickhouse", table="otel_logs") == 1
    exp.shutdown()
    exp.shutdown()
    assert exp.store is None
    with pytest.raises(RuntimeError, match="before start"):
        exp.consume(batch)


def test_event_name_lands_in_otel_logs_event_name(make):
    exp = make()
    exp.start()
    recs = records(3)
    recs[0]["event_name"] = "browser.page_view"
    recs[2]["event_name"] = "app.crash ünï"
    exp.consume(LogBatch.from_records(recs))
    rows = exp.store.query_rows("SELECT Body, EventName FROM otel_logs ORDER BY Timestamp")
    assert rows == [("line 0 ünï", "browser.page_view"), ("line 1 ünï", ""), ("line 2 ünï", "app.crash ünï")]
    exp.shutdown()


def test_restart_is_idempotent(make):
    first = make()
    first.start()
    first.consume(LogBatch.from_records(records(2)))
    first.shutdown()
    second = make()
    second.start()  # schema already there, migrations already recorded
    second.consume(LogBatch.from_records(records(2)))
    assert count(second, "otel_logs") == 4
    # each migration recorded once, however often the schema was ensured
    assert count(second, "otelproc_schema_migrations") == len(list((SQL_DIR / "migrations").glob("*.sql")))


def test_derived_tables_are_inserted_after_the_logs(make):
    exp = make()
    exp.start()
    counts = pa.table({"Service": ["api", "db"], "PatternId": pa.array([1, 2], pa.uint64()),
                       "Count": pa.array([5, 7], pa.uint64())})
    exp.consume(LogBatch.from_records(records(2)).with_table("test_counts", counts))
    assert count(exp, "otel_logs") == 2
    assert exp.store.query_rows("SELECT Service, Count FROM test_counts ORDER BY Service") == [("api", 5), ("db", 7)]


def test_unknown_derived_table_is_permanent_and_writes_nothing(make):
    exp = make()
    exp.start()
    batch = LogBatch.from_records(records(2)).with_table("no_such_table", pa.table({"a": [1]}))
    with pytest.raises(PermanentError, match="no_such_table.*no such .sql file.*test_counts"):
        exp.consume(batch)
    assert count(exp, "otel_logs") == 0


def test_bad_rows_are_permanent_and_never_retried(make):
    exp = make(retry_on_failure=fast_retry())
    exp.start()
    wrong = pa.table({"Service": ["api"], "NoSuchColumn": [1]})
    with pytest.raises(PermanentError, match="test_counts.*not retried"):
        exp.consume(LogBatch.from_records(records(1)).with_table("test_counts", wrong))
    tel = exp.context.telemetry
    labels = dict(exporter="clickhouse", table="test_counts")
    assert tel.value("otelproc_clickhouse_insert_errors_total", kind="permanent", **labels) == 1
    assert tel.value("otelproc_clickhouse_insert_retries_total", **labels) == 0
    bad_column = LogBatch.from_records(records(1)).with_columns(anomaly_score=np.array(["high"]))
    with pytest.raises(PermanentError, match="anomaly_score"):
        exp.consume(bad_column)


def test_transient_errors_are_retried_until_max_elapsed_time(make):
    exp = make(retry_on_failure=fast_retry(max_elapsed_time=0.3))
    exp.start()
    exp.store.command("DROP TABLE test_counts")  # UNKNOWN_TABLE: may be fixed by an operator -> transient
    rows = pa.table({"Service": ["api"], "PatternId": pa.array([1], pa.uint64()), "Count": pa.array([1], pa.uint64())})
    t0 = time.monotonic()
    with pytest.raises(StoreError, match="giving up after .* attempts") as e:
        exp.consume(LogBatch.from_records(records(1)).with_table("test_counts", rows))
    assert not isinstance(e.value, PermanentError) and e.value.code == 60
    assert time.monotonic() - t0 < 2
    assert exp.context.telemetry.value("otelproc_clickhouse_insert_retries_total", exporter="clickhouse",
                                       table="test_counts") >= 3
    assert count(exp, "otel_logs") == 1  # the logs went in once; only the failing table was retried


def test_retry_succeeds_once_the_cause_is_fixed(make, sql_dir):
    exp = make(retry_on_failure=fast_retry(max_elapsed_time=10))
    exp.start()
    exp.store.command("DROP TABLE test_counts")
    ddl = DERIVED_SQL.replace("${database}.${table} ${cluster}", "test_counts").replace(
        "${engine(SummingMergeTree((Count)))}", "SummingMergeTree((Count))")
    fixer = threading.Timer(0.2, lambda: exp.store.command(ddl))
    fixer.start()
    rows = pa.table({"Service": ["api"], "PatternId": pa.array([1], pa.uint64()), "Count": pa.array([3], pa.uint64())})
    exp.consume(LogBatch.from_records(records(1)).with_table("test_counts", rows))
    fixer.join()
    assert exp.store.query_rows("SELECT sum(Count) FROM test_counts")[0][0] == 3
    assert count(exp, "otel_logs") == 1


def test_retry_disabled_fails_at_once(make):
    exp = make(retry_on_failure=RetryConfig(enabled=False))
    exp.start()
    exp.store.command("DROP TABLE test_counts")
    rows = pa.table({"Service": ["api"], "PatternId": pa.array([1], pa.uint64()), "Count": pa.array([1], pa.uint64())})
    with pytest.raises(StoreError, match="retry_on_failure is disabled"):
        exp.consume(LogBatch.from_records(records(1)).with_table("test_counts", rows))


def test_shutdown_interrupts_a_retry_loop(make):
    exp = make(retry_on_failure=RetryConfig(initial_interval=Duration(0.05), max_interval=Duration(0.5),
                                            max_elapsed_time=Duration(0)))  # retry until shutdown
    exp.start()
    exp.store.command("DROP TABLE test_counts")
    rows = pa.table({"Service": ["api"], "PatternId": pa.array([1], pa.uint64()), "Count": pa.array([1], pa.uint64())})
    outcome: list[BaseException] = []

    def run():
        try:
            exp.consume(LogBatch.from_records(records(1)).with_table("test_counts", rows))
        except BaseException as e:  # noqa: BLE001
            outcome.append(e)

    worker = threading.Thread(target=run)
    worker.start()
    time.sleep(0.3)
    assert worker.is_alive()  # still retrying
    t0 = time.monotonic()
    exp.shutdown()
    worker.join(5)
    assert not worker.is_alive() and time.monotonic() - t0 < 2
    assert len(outcome) == 1 and "shutting down" in str(outcome[0])


def test_existing_upstream_table_without_enrichment_columns(make, chdb_path, chdb_database):
    # a table made by the Collector's exporter before EventName / our columns existed
    with open_store(f"chdb://{chdb_path}", chdb_database) as s:
        s.command("""CREATE TABLE otel_logs (
            Timestamp DateTime64(9), TimestampTime DateTime DEFAULT toDateTime(Timestamp), TraceId String,
            SpanId String, TraceFlags UInt8, SeverityText LowCardinality(String), SeverityNumber UInt8,
            ServiceName LowCardinality(String), Body String, ResourceSchemaUrl LowCardinality(String),
            ResourceAttributes Map(LowCardinality(String), String), ScopeSchemaUrl LowCardinality(String),
            ScopeName String, ScopeVersion LowCardinality(String), ScopeAttributes Map(LowCardinality(String), String),
            LogAttributes Map(LowCardinality(String), String)
        ) ENGINE = MergeTree ORDER BY (ServiceName, TimestampTime)""")
    exp = make(create_schema=False)
    exp.start()
    exp.consume(LogBatch.from_records(records(2)).with_columns(pattern_id=np.array([1, 2], np.uint64)))
    assert count(exp, "otel_logs") == 2
    exp.shutdown()
    # with create_schema the migration adds the missing columns to the old table
    exp2 = make()
    exp2.start()
    exp2.consume(LogBatch.from_records(records(1)).with_columns(pattern_id=np.array([9], np.uint64)))
    assert exp2.store.query_rows("SELECT PatternId FROM otel_logs ORDER BY PatternId") == [(0,), (0,), (9,)]
    # ... and gives the old table our codecs (0004): parts written before read back the same once rewritten
    codecs = dict(exp2.store.query_rows("SELECT name, compression_codec FROM system.columns WHERE database = "
                                        "{db:String} AND table = 'otel_logs'", {"db": chdb_database}))
    assert codecs["ResourceAttributes"] == codecs["ScopeName"] == "CODEC(LZ4)"
    before = exp2.store.query_rows("SELECT ResourceAttributes, ScopeName, Body FROM otel_logs ORDER BY Body")
    exp2.store.command("OPTIMIZE TABLE otel_logs FINAL")
    assert exp2.store.query_rows("SELECT ResourceAttributes, ScopeName, Body FROM otel_logs ORDER BY Body") == before


def test_missing_table_without_create_schema_fails_at_start(make):
    exp = make(create_schema=False)
    with pytest.raises(StoreError, match="otel_logs does not exist.*create_schema"):
        exp.start()


def test_store_is_shared_through_the_registry(make):
    reg = StoreRegistry()
    exp = make(context=Context(telemetry=None, stores=reg))
    exp.start()
    other = reg.get(exp.config.endpoint, exp.config.database)  # e.g. the patterns processor
    assert reg.open_count() == 1
    exp.consume(LogBatch.from_records(records(2)))
    assert other.query_rows("SELECT count() FROM otel_logs")[0][0] == 2
    exp.shutdown()
    assert reg.open_count() == 1  # still used by `other`
    other.close()
    assert reg.open_count() == 0


def test_custom_logs_table_name_and_ttl(make):
    exp = make(logs_table_name="my_logs", ttl=Duration(7 * 86400))
    exp.start()
    # current time: rows older than the TTL may be dropped as soon as their part is written
    exp.consume(LogBatch.from_records([dict(time_ns=time.time_ns(), body="now", service="api")]))
    assert count(exp, "my_logs") == 1
    (ddl,), = exp.store.query_rows("SHOW CREATE TABLE my_logs")
    assert "TTL TimestampTime + toIntervalDay(7)" in ddl
