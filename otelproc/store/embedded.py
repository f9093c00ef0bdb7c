"""Embedded store: chDB (ClickHouse in-process) bound to one directory.

chDB runs ONE engine per process, bound to ONE path. This module keeps the
process-wide account of that path: any number of stores (and clickhouse-connect
``interface="chdb"`` clients, see server.py) may use the same path; opening a
different path while any is open raises :class:`StoreError` naming both; when
the last user releases the path, another may be opened.

Each thread that uses a store gets its own ``chdb.connect(path)`` connection
(opening one costs under 1 ms): separate connections are what chDB documents
as safe for concurrent use, and they let the insert of one thread overlap
with queries of another (the ``Python()`` table function releases the GIL).

Inserts use ``INSERT INTO t (cols) SELECT cols FROM Python(arrow_table)``, the
fastest path measured here (about 600-760k rows/s for otel_logs at 100k-row
blocks, environment.md section 2): chDB reads the Arrow buffers directly.

Memory: chDB allocates with its own (statically linked) jemalloc, which by default keeps
freed pages resident for seconds. Each 50k-row insert allocates and frees a few hundred MB,
so that cache alone was ~110 MB of the process's RSS (1M rows in 50k blocks: peak RSS 750 MB
with the default, 650 MB with :data:`JEMALLOC_CONF`; purging at once, ``dirty_decay_ms:0``,
gave 570 MB but cost ~30% of the insert rate). The setting is applied through the
``JE_MALLOC_CONF`` environment variable before chDB is first imported; a value already in
the environment wins.
"""
from __future__ import annotations

import os
import threading
from typing import Any, Mapping

from otelproc.store import Store, StoreError, check_identifier, error_code, quote_identifier

__all__ = ["EmbeddedStore", "acquire_engine", "release_engine", "engine_path"]

#: chDB's jemalloc options: return freed pages to the OS after 250 ms instead of jemalloc's default
JEMALLOC_CONF = "dirty_decay_ms:250,muzzy_decay_ms:0"

_engine_lock = threading.Lock()
_engine_path: str | None = None
_engine_refs = 0


def _normalise(path: str) -> str:
    return os.path.abspath(os.path.expanduser(path))


def acquire_engine(path: str) -> str:
    """Register one more user of the process's chDB engine at ``path``; return the absolute path.

    Raises StoreError if the engine is bound to a different path.
    """
    global _engine_path, _engine_refs
    abspath = _normalise(path)
    with _engine_lock:
        if _engine_path is not None and _engine_path != abspath:
            raise StoreError(
                f"chDB is already open at {_engine_path!r} in this process; cannot open {abspath!r} as well "
                f"(chDB runs one embedded engine per process, bound to one path: use the same endpoint "
                f"everywhere, or close every store on {_engine_path!r} first)", code=36)
        _engine_path = abspath
        _engine_refs += 1
    return abspath


def release_engine(path: str) -> None:
    """Drop one user of the engine at ``path`` (after its connections are closed)."""
    global _engine_path, _engine_refs
    with _engine_lock:
        if _engine_path != _normalise(path) or _engine_refs == 0:
            return
        _engine_refs -= 1
        if _engine_refs == 0:
            _engine_path = None


def engine_path() -> str | None:
    """The path the process's chDB engine is bound to, or None when no store is open."""
    with _engine_lock:
        return _engine_path


def import_chdb() -> Any:
    """The ``chdb`` module, imported with :data:`JEMALLOC_CONF` in effect.

    Every import of chdb in otelproc goes through here: chDB's jemalloc reads its options once, at the first
    import, and imported lazily it costs 0.1 s and 250 MB of mapped pages only when an embedded store is used."""
    os.environ.setdefault("JE_MALLOC_CONF", JEMALLOC_CONF)
    import chdb

    return chdb


_PARAM_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r", "\0": "\\0"})


def _escape_param(value: Any) -> Any:
    """ClickHouse reads a query parameter in its escaped text form (as clickhouse-connect sends it):
    a string's backslashes, tabs and newlines must be escaped or they are taken as escapes."""
    return value.translate(_PARAM_ESCAPES) if isinstance(value, str) else value


def _wrap(e: Exception, sql: str) -> StoreError:
    msg = str(e)
    head = " ".join(sql.split())[:200]
    return StoreError(f"{msg} [statement: {head}]", error_code(msg))


class EmbeddedStore(Store):
    """A :class:`Store` on the process's embedded chDB engine."""

    def __init__(self, path: str, database: str = "otel", *, create_database: bool = True):
        self._chdb = import_chdb()
        self.database = check_identifier(database, "database")
        self.path = acquire_engine(path)
        self.endpoint = f"chdb://{self.path}"
        self._local = threading.local()
        self._conns: list[Any] = []
        self._conns_lock = threading.Lock()
        self._closed = False
        try:
            os.makedirs(self.path, exist_ok=True)
            conn = self._raw_connect()
            self._register(conn)
            if create_database:
                self._run(conn, f"CREATE DATABASE IF NOT EXISTS {quote_identifier(database)}")
            self._run(conn, f"USE {quote_identifier(database)}")
        except BaseException:
            self._close_connections()
            release_engine(self.path)
            raise

    # -- connections ---------------------------------------------------------------------------

    def _raw_connect(self):
        try:
            return self._chdb.connect(self.path)
        except Exception as e:  # noqa: BLE001 - chDB raises RuntimeError for everything
            # e.g. someone opened another path with chdb.query()/chdb.connect() behind our back
            msg = str(e)
            raise StoreError(f"cannot open chDB at {self.path!r}: {msg}", error_code(msg)) from None

    def _register(self, conn) -> None:
        self._local.conn = conn
        with self._conns_lock:
            self._conns.append(conn)

    def _conn(self):
        if self._closed:
            raise StoreError(f"store {self.endpoint} database={self.database} is closed")
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._raw_connect()
            self._register(conn)
            self._run(conn, f"USE {quote_identifier(self.database)}")
        return conn

    @staticmethod
    def _run(conn, sql: str, fmt: str = "CSV", params: Mapping[str, Any] | None = None):
        try:
            if params:
                return conn.query(sql, fmt, params={k: _escape_param(v) for k, v in params.items()})
            return conn.query(sql, fmt)
        except Exception as e:  # noqa: BLE001
            raise _wrap(e, sql) from None

    # -- Store ---------------------------------------------------------------------------------

    def command(self, sql: str, params: Mapping[str, Any] | None = None) -> None:
        self._run(self._conn(), sql, "CSV", params)

    def query_arrow(self, sql: str, params: Mapping[str, Any] | None = None):
        return self._run(self._conn(), sql, "ArrowTable", params)

    def query_bytes(self, sql: str, params: Mapping[str, Any] | None = None) -> bytes:
        return self._run(self._conn(), sql, "TabSeparated", params).bytes()

    def insert_arrow(self, table_name: str, arrow_table, dedup_token: str = "") -> int:
        n = arrow_table.num_rows
        if n == 0:
            return 0
        cols = ", ".join(quote_identifier(c, "column") for c in arrow_table.column_names)
        settings = " SETTINGS insert_deduplication_token = {otelproc_token:String}" if dedup_token else ""
        sql = (f"INSERT INTO {quote_identifier(self.database)}.{quote_identifier(table_name, 'table')} ({cols})"
               f"{settings} SELECT {cols} FROM Python(arrow_table)")
        conn = self._conn()
        try:
            # Python(arrow_table) resolves the name in THIS frame: keep the local variable name.
            if dedup_token:
                conn.query(sql, "CSV", params={"otelproc_token": dedup_token})
            else:
                conn.query(sql)
        except Exception as e:  # noqa: BLE001
            raise _wrap(e, sql) from None
        return n

    def _close_connections(self) -> None:
        with self._conns_lock:
            conns, self._conns = self._conns, []
        for c in conns:
            try:
                c.close()
            except Exception:  # noqa: BLE001 - closing must not raise
                pass

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._close_connections()
        release_engine(self.path)

    def __repr__(self) -> str:
        return f"<EmbeddedStore {self.endpoint} database={self.database}{' closed' if self._closed else ''}>"
