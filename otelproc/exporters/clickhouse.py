"""The ``clickhouse`` exporter: LogBatches into ClickHouse (embedded chDB by default, or a server).

    exporters:
      clickhouse:
        endpoint: chdb://./data          # or http://host:8123 / https://host:8443
        database: otel
        logs_table_name: otel_logs
        ttl: 0                           # 72h like the Collector's exporter for a server
        create_schema: true
        retry_on_failure: {enabled: true, initial_interval: 5s, max_interval: 30s, max_elapsed_time: 300s}
        wal: {directory: ./wal, fsync: interval}   # write-ahead log of the pipeline (otelproc.wal)
        deduplication_window: 1000       # inserts remembered per table for replay deduplication

Durability: with ``wal:`` set, the pipeline logs every accepted batch before answering the
client and replays what this exporter has not confirmed after a crash (otelproc/wal.py). Each
insert of a batch that carries a WAL range sends ``insert_deduplication_token =
<wal id>:<first>-<last>:<table>``, and start() sets ``non_replicated_deduplication_window`` on
the (non-replicated MergeTree) tables, so a replayed insert that had already landed is dropped by
ClickHouse instead of duplicating rows (Replicated tables use replicated_deduplication_window,
1000 by default). Health: ``last_error`` holds the last failed attempt's error until an insert
succeeds (the service's /readyz reports it); ``otelproc_clickhouse_store_up{exporter}`` is 0 meanwhile.

start() opens the store (shared through ``Context.stores`` when the pipeline provides a
StoreRegistry), creates missing tables from ``otelproc/store/sql/*.sql`` and applies pending
migrations, then reads the live otel_logs columns: columns the table lacks (an older table made
by the Collector's exporter, with ``create_schema: false``) are left out of inserts.

consume(batch) inserts the batch's otel_logs rows, then every derived table it carries
(``batch.tables``: ``log_patterns``, ``pattern_counts``, ``anomalies``... each must have its
``.sql`` file), each insert with its own retry so a retried derived-table insert never
duplicates the logs. Errors: malformed data or a ClickHouse error that retrying cannot fix
-> PermanentError (never retried); anything else is retried with exponential backoff and jitter
until ``max_elapsed_time`` or shutdown, then re-raised (transient: the receiver answers 503).

Threading: built for ONE consumer thread (the batch processor's). Concurrent consume() calls
are serialised by a lock rather than interleaved; shutdown() interrupts a retry wait, waits for
the insert in flight, then releases the store.

Metrics: otelproc_clickhouse_rows_inserted_total{exporter,table},
otelproc_clickhouse_insert_duration_seconds{exporter,table},
otelproc_clickhouse_insert_errors_total{exporter,table,kind=transient|permanent},
otelproc_clickhouse_insert_retries_total{exporter,table},
otelproc_clickhouse_arrow_build_duration_seconds{exporter}.
"""
from __future__ import annotations

import logging
import os
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from otelproc.batch import LogBatch
from otelproc.component import Context, Exporter, Factory, Kind, PermanentError
from otelproc.config import Duration, Secret, setting
from otelproc.retry import GaveUp, RetryConfig, call_with_retry
from otelproc.store import Store, StoreError, TlsOptions, check_identifier, open_store, quote_identifier
from otelproc.store.arrow import logs_to_arrow
from otelproc.store.schema import SQL_DIR, SchemaOptions, ensure_schema, table_columns, table_files
from otelproc.wal import WalConfig

__all__ = ["ClickHouseExporterConfig", "ClickHouseExporter", "RetryConfig", "TlsConfig", "TableEngineConfig",
           "PERMANENT_ERROR_CODES", "factory"]

log = logging.getLogger("otelproc.exporters.clickhouse")

# Config defaults
DEFAULT_ENDPOINT = "chdb://./data"
DEFAULT_DATABASE = "otel"          # the Collector exporter's default database
DEFAULT_LOGS_TABLE = "otel_logs"
DEFAULT_TIMEOUT = Duration(5.0)    # exporterhelper's default
# TTL 0 (keep forever) for the embedded default: it is a user's local analysis store, often
# loaded with replayed or historical logs, which a 72h TTL would silently drop at the next merge.
# Set ttl: 72h (the Collector exporter's default) for a production server.
DEFAULT_TTL = Duration(0.0)
# A replay re-sends at most the batches that were unacknowledged at a crash; each insert is one
# block per partition. 1000 is ClickHouse's replicated_deduplication_window default.
DEFAULT_DEDUP_WINDOW = 1000

# ClickHouse error codes that mean "this data / this statement can never succeed": retrying is
# pointless, so the batch is rejected as permanent (HTTP 400 to the client).
PERMANENT_ERROR_CODES = frozenset({
    6,    # CANNOT_PARSE_TEXT
    16,   # NO_SUCH_COLUMN_IN_TABLE
    27,   # CANNOT_PARSE_INPUT_ASSERTION_FAILED
    41,   # CANNOT_PARSE_DATETIME
    43,   # ILLEGAL_TYPE_OF_ARGUMENT
    44,   # ILLEGAL_COLUMN
    47,   # UNKNOWN_IDENTIFIER
    53,   # TYPE_MISMATCH
    62,   # SYNTAX_ERROR
    69,   # ARGUMENT_OUT_OF_BOUND
    70,   # CANNOT_CONVERT_TYPE
    72,   # CANNOT_PARSE_NUMBER
    117,  # INCORRECT_DATA
    131,  # TOO_LARGE_STRING_SIZE
    321,  # VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE
})

_SCHEMES = ("chdb", "http", "https", "chdb+connect")
_ENGINE_NAME_RE = re.compile(r"^[A-Za-z]\w*$")
_CLUSTER_RE = re.compile(r"^[A-Za-z0-9_.\-]+$")


@dataclass
class TlsConfig:
    # skip server certificate verification (https only; for self-signed test servers)
    insecure: bool = False
    # PEM file with the CA that signs the server certificate
    ca_file: str = ""
    # client certificate and key for mutual TLS (both or neither)
    cert_file: str = ""
    key_file: str = ""

    def validate(self) -> list[str]:
        out = []
        for key in ("ca_file", "cert_file", "key_file"):
            path = getattr(self, key)
            if path and not os.path.isfile(path):
                out.append(f"{key}: file not found: {path}")
        if bool(self.cert_file) != bool(self.key_file):
            out.append("cert_file: cert_file and key_file must be set together for mutual TLS")
        return out

    def is_set(self) -> bool:
        return self.insecure or bool(self.ca_file or self.cert_file or self.key_file)


@dataclass
class TableEngineConfig:
    # engine family of the tables whose template says ${engine} (otel_logs); Replicated... on a cluster
    name: str = "MergeTree"
    # engine parameters, e.g. "Version" for ReplacingMergeTree
    params: str = ""

    def validate(self) -> list[str]:
        if not _ENGINE_NAME_RE.match(self.name or ""):
            return [f"name: must be an engine name like MergeTree, got {self.name!r}"]
        return []

    def expr(self) -> str:
        return f"{self.name}({self.params})" if self.params else self.name


@dataclass
class ClickHouseExporterConfig:
    # chdb://<path> (embedded, default ./data), http://host:8123 or https://host:8443
    endpoint: str = DEFAULT_ENDPOINT
    # database of every table; created if missing
    database: str = DEFAULT_DATABASE
    # server credentials (not used by the embedded store)
    username: str = ""
    password: Secret = Secret("")
    logs_table_name: str = DEFAULT_LOGS_TABLE
    # retention of otel_logs rows (TTL on TimestampTime); 0 = keep forever
    ttl: Duration = DEFAULT_TTL
    # create missing tables and apply migrations at start
    create_schema: bool = True
    # connect/send/receive timeout for a server (the embedded store has no network)
    timeout: Duration = setting(DEFAULT_TIMEOUT, gt=0)
    tls: TlsConfig = field(default_factory=TlsConfig)
    retry_on_failure: RetryConfig = field(default_factory=RetryConfig)
    # ClickHouse cluster: DDL gets ON CLUSTER and Replicated engines (server only)
    cluster_name: str = ""
    table_engine: TableEngineConfig = field(default_factory=TableEngineConfig)
    # write-ahead log of the pipelines this exporter is in (otelproc.wal); directory "" = none
    wal: WalConfig = field(default_factory=WalConfig)
    # inserts per table ClickHouse remembers to drop a replayed duplicate (0 = no dedup tokens)
    deduplication_window: int = setting(DEFAULT_DEDUP_WINDOW, ge=0, hint="0 = no deduplication tokens")
    # ClickHouse settings sent with every statement to a server, e.g. {async_insert: "1"}
    connection_params: dict[str, str] = field(default_factory=dict)

    def scheme(self) -> str:
        return self.endpoint.split("://", 1)[0].lower() if "://" in self.endpoint else ""

    def validate(self) -> list[str]:
        out = []
        scheme = self.scheme()
        if scheme not in _SCHEMES or not self.endpoint.split("://", 1)[1]:
            out.append(f"endpoint: must be chdb://<path>, http://host:8123 or https://host:8443, got {self.endpoint!r}")
        embedded = scheme in ("chdb", "chdb+connect")
        for key in ("database", "logs_table_name"):
            try:
                check_identifier(getattr(self, key), key)
            except ValueError as e:
                out.append(f"{key}: {e}")
        if self.ttl < 0:
            out.append(f"ttl: must be >= 0 (0 = keep forever), got {self.ttl}s")
        elif 0 < self.ttl < 1:
            out.append(f"ttl: must be 0 or at least 1s, got {self.ttl}s")
        if embedded and (self.username or self.password):
            out.append("username: the embedded store (chdb://) has no users; remove username/password "
                       "or use an http(s):// endpoint")
        if self.connection_params and scheme == "chdb":
            out.append("connection_params: only applies to server endpoints (http://, https://); "
                       "the embedded store (chdb://) takes no connection settings")
        if self.tls.is_set() and scheme != "https":
            out.append(f"tls: only applies to https:// endpoints, endpoint is {self.endpoint!r}")
        out += [f"tls::{m}" for m in self.tls.validate()]
        out += [f"wal::{m}" for m in self.wal.validate()]
        out += [f"retry_on_failure::{m}" for m in self.retry_on_failure.validate()]
        out += [f"table_engine::{m}" for m in self.table_engine.validate()]
        if self.cluster_name:
            if not _CLUSTER_RE.match(self.cluster_name):
                out.append(f"cluster_name: must match [A-Za-z0-9_.-]+, got {self.cluster_name!r}")
            if embedded:
                out.append("cluster_name: needs a ClickHouse server; the embedded store (chdb://) has no cluster")
        return out

    def schema_options(self) -> SchemaOptions:
        return SchemaOptions(database=self.database, ttl=float(self.ttl), cluster=self.cluster_name,
                             engine=self.table_engine.expr(), tables={"otel_logs": self.logs_table_name})

    def tls_options(self) -> TlsOptions:
        return TlsOptions(insecure=self.tls.insecure, ca_file=self.tls.ca_file, cert_file=self.tls.cert_file,
                          key_file=self.tls.key_file)


class ClickHouseExporter(Exporter):
    """Writes otel_logs rows and derived tables of each batch; see the module docstring."""

    def __init__(self, name: str, config: ClickHouseExporterConfig, context: Context | None = None,
                 sql_dir=SQL_DIR):
        super().__init__(name)
        self.config = config
        self.context = context or Context()
        self._sql_dir = sql_dir
        self._store: Store | None = None
        self._stop = threading.Event()
        self._busy = threading.Lock()
        self._live_log_columns: set[str] = set()
        self._derived: set[str] = set()
        self.last_error: str | None = None  # last failed insert attempt, until one succeeds (health)
        tel = self.context.telemetry
        self._m = None
        if tel is not None:
            self._m = dict(
                rows=tel.counter("otelproc_clickhouse_rows_inserted", "Rows inserted into ClickHouse",
                                 ("exporter", "table")),
                latency=tel.histogram("otelproc_clickhouse_insert_duration_seconds",
                                      "Duration of one successful insert", ("exporter", "table")),
                errors=tel.counter("otelproc_clickhouse_insert_errors", "Failed insert attempts",
                                   ("exporter", "table", "kind")),
                retries=tel.counter("otelproc_clickhouse_insert_retries", "Insert attempts retried after a "
                                    "transient error", ("exporter", "table")),
                build=tel.histogram("otelproc_clickhouse_arrow_build_duration_seconds",
                                    "Time to build the otel_logs Arrow table of a batch", ("exporter",)),
                up=tel.gauge("otelproc_clickhouse_store_up", "1 while the last insert attempt succeeded, 0 while "
                             "inserts fail", ("exporter",)),
            )

    @property
    def store(self) -> Store | None:
        """The opened store (after start()), for components and tools that want to reuse it."""
        return self._store

    @property
    def logs_table(self) -> str:
        return self.config.logs_table_name

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        cfg = self.config
        self._stop.clear()
        args = dict(tls=cfg.tls_options(), timeout=float(cfg.timeout))
        if self.context.stores is not None:
            store = self.context.stores.get(cfg.endpoint, cfg.database, cfg.username, cfg.password,
                                            settings=cfg.connection_params or None, **args)
        else:
            store = open_store(cfg.endpoint, cfg.database, cfg.username, cfg.password,
                               settings=cfg.connection_params or None, **args)
        try:
            if cfg.create_schema:
                report = ensure_schema(store, cfg.schema_options(), self._sql_dir)
                if report.migrations_applied:
                    log.info("%s: applied migrations %s", self.name, ", ".join(report.migrations_applied))
            self._live_log_columns = set(table_columns(store, cfg.logs_table_name))
            if not self._live_log_columns:
                raise StoreError(f"table {cfg.database}.{cfg.logs_table_name} does not exist at {store.endpoint}; "
                                 f"set create_schema: true or create it")
        except BaseException:
            store.close()
            raise
        self._derived = {name for name in table_files(self._sql_dir) if name != "otel_logs"}
        self._store = store
        if cfg.deduplication_window and not cfg.cluster_name:
            self._set_dedup_window([cfg.logs_table_name, *sorted(self._derived)])

    def _set_dedup_window(self, tables: list[str]) -> None:
        """Let ClickHouse remember the last inserts' tokens on plain MergeTree tables (replicated
        ones have a window by default)."""
        rows = self._store.query_rows("SELECT name, engine FROM system.tables WHERE database = {db:String}",
                                      {"db": self.config.database})
        wanted = set(tables)
        for name, engine in rows:
            if name not in wanted or not engine.endswith("MergeTree") or engine.startswith("Replicated"):
                continue
            try:
                self._store.command(f"ALTER TABLE {quote_identifier(name, 'table')} MODIFY SETTING "
                                    f"non_replicated_deduplication_window = {int(self.config.deduplication_window)}")
            except StoreError as e:  # e.g. a read-only user: replays may then duplicate rows
                log.warning("%s: cannot set non_replicated_deduplication_window on %s (replayed batches may "
                            "duplicate rows): %s", self.name, name, e)

    def stop_retrying(self) -> None:
        """Give up retries now (the pipeline's WAL keeps the data); inserts still run once."""
        self._stop.set()

    def shutdown(self) -> None:
        self._stop.set()  # interrupts a retry wait
        acquired = self._busy.acquire(timeout=float(self.config.timeout) + 5.0)
        try:
            store, self._store = self._store, None
            if store is not None:
                store.close()
        finally:
            if acquired:
                self._busy.release()

    # -- data path ---------------------------------------------------------------------------

    def consume(self, batch: LogBatch) -> None:
        with self._busy:
            if self._store is None:
                raise RuntimeError(f"exporter {self.name}: consume() called before start() or after shutdown()")
            unknown = sorted(set(batch.tables) - self._derived)
            if unknown:
                raise PermanentError(
                    f"exporter {self.name}: batch carries rows for table(s) {', '.join(unknown)} but "
                    f"otelproc/store/sql/ has no such .sql file; known tables: {', '.join(sorted(self._derived)) or 'none'}")
            if len(batch):
                t0 = time.perf_counter()
                try:
                    table = logs_to_arrow(batch)
                except (TypeError, ValueError) as e:
                    raise PermanentError(f"exporter {self.name}: cannot convert the batch to otel_logs rows: {e}") from None
                if self._m is not None:
                    self._m["build"].labels(self.name).observe(time.perf_counter() - t0)
                absent = [c for c in table.column_names if c not in self._live_log_columns]
                if absent:
                    table = table.drop_columns(absent)
                self._insert(self.config.logs_table_name, table, self._token(batch, "otel_logs"))
            for name, rows in batch.tables.items():
                if rows is not None and rows.num_rows:
                    self._insert(name, rows, self._token(batch, name))

    def _token(self, batch: LogBatch, table: str) -> str:
        """The deduplication token of this batch's insert into ``table`` ("" = none)."""
        if batch.wal_seq is None or not self.config.deduplication_window:
            return ""
        wal_id, first, last = batch.wal_seq
        return f"otelproc:{wal_id}:{first}-{last}:{table}"

    def _insert(self, table_name: str, arrow_table, token: str = "") -> None:
        m = self._m

        def attempt() -> int:
            t0 = time.perf_counter()
            try:
                n = self._store.insert_arrow(table_name, arrow_table, token)
            except Exception as e:  # noqa: BLE001 - classified here
                permanent = isinstance(e, (TypeError, ValueError)) or (
                    isinstance(e, StoreError) and e.code in PERMANENT_ERROR_CODES)
                if not permanent:  # bad data says nothing about the store's health
                    self.last_error = f"insert into {table_name}: {e}"[:500]
                    if m is not None:
                        m["up"].labels(self.name).set(0)
                if m is not None:
                    m["errors"].labels(self.name, table_name, "permanent" if permanent else "transient").inc()
                if permanent:
                    raise PermanentError(f"exporter {self.name}: insert into {table_name} rejected "
                                         f"({arrow_table.num_rows} rows, not retried): {e}") from e
                raise
            if m is not None:
                m["latency"].labels(self.name, table_name).observe(time.perf_counter() - t0)
            return n

        def count_retry(e: BaseException, attempt: int, wait: float) -> None:
            if m is not None:
                m["retries"].labels(self.name, table_name).inc()

        retry = RetryConfig(enabled=False) if self.retry_in_pipeline else self.config.retry_on_failure
        try:
            n = call_with_retry(attempt, retry, f"{self.name}: insert into {table_name}", self._stop,
                                on_retry=count_retry)
        except GaveUp as g:
            why = "retried by the pipeline (its write-ahead log keeps the batch)" if self.retry_in_pipeline else g.reason
            raise StoreError(f"exporter {self.name}: insert into {table_name} failed, {why}: {g.last}",
                             getattr(g.last, "code", 0)) from g.last
        self.last_error = None
        if m is not None:
            m["up"].labels(self.name).set(1)
            m["rows"].labels(self.name, table_name).inc(n)


def _create(name: str, config: ClickHouseExporterConfig, next_consumer: Any = None,
            context: Context | None = None) -> ClickHouseExporter:
    return ClickHouseExporter(name, config, context)


factory = Factory(type="clickhouse", kind=Kind.EXPORTER, config_class=ClickHouseExporterConfig, create=_create,
                  stability="alpha")


def open_exporter_store(config: ClickHouseExporterConfig) -> Store:
    """Open the store an exporter config points at (for `otelproc sql` and other readers)."""
    return open_store(config.endpoint, config.database, config.username, str(config.password),
                      tls=config.tls_options(), timeout=float(config.timeout),
                      settings=config.connection_params or None)
