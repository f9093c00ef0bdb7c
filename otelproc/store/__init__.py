"""The ClickHouse store: one small interface over embedded chDB and a ClickHouse server.

    store = open_store("chdb://./data", database="otel")          # embedded (chDB, in-process)
    store = open_store("https://ch.example:8443", database="otel",
                       username="otel", password=secret)           # server (clickhouse-connect)
    store.command("CREATE TABLE IF NOT EXISTS t (a UInt8) ENGINE = MergeTree ORDER BY a")
    store.insert_arrow("t", arrow_table)
    rows = store.query_rows("SELECT a FROM t WHERE a > {min:UInt8}", {"min": 1})
    rows.column_names  # ('a',)
    store.close()

Every statement runs with the store's ``database`` as the current database, so
unqualified table names resolve there. Values always travel as server-side
parameters (``{name:Type}`` in the SQL, ``params={"name": value}``), never by
formatting them into the SQL text.

Components share stores through :class:`StoreRegistry` (``Context.stores``):
one store per distinct (endpoint, database, credentials, TLS) key, reference
counted, closed when its last user releases it.
"""
from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from typing import Any, Mapping

__all__ = [
    "Store", "StoreError", "Rows", "TlsOptions", "open_store", "StoreRegistry",
    "quote_identifier", "check_identifier", "error_code", "output_format_clause",
    "without_format_clause",
]

_IDENTIFIER_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_CODE_RE = re.compile(r"Code:\s*(\d+)")


class StoreError(Exception):
    """A statement failed in ClickHouse. ``code`` is ClickHouse's error code (0 when unknown)."""

    def __init__(self, message: str, code: int = 0):
        super().__init__(message)
        self.code = code


def error_code(message: str) -> int:
    """The ClickHouse error code in an exception message (``Code: 47. DB::Exception...``), 0 if none."""
    m = _CODE_RE.search(message)
    return int(m.group(1)) if m else 0


_FORMAT_CLAUSE_RE = re.compile(r"\bFORMAT\s+([A-Za-z][A-Za-z0-9]*)\s*;?\s*$", re.I)


def _without_comment_lines(sql: str) -> str:
    return "\n".join(ln for ln in sql.rstrip().splitlines() if not ln.strip().startswith("--")).rstrip()


def output_format_clause(sql: str) -> str | None:
    """The format named by a trailing ``FORMAT X`` clause (``--`` comment lines ignored), or None."""
    m = _FORMAT_CLAUSE_RE.search(_without_comment_lines(sql))
    return m.group(1) if m else None


def without_format_clause(sql: str) -> str:
    """``sql`` without its trailing ``FORMAT X`` clause, ``;`` and ``--`` comment lines."""
    return _FORMAT_CLAUSE_RE.sub("", _without_comment_lines(sql)).rstrip().rstrip(";").rstrip()


def check_identifier(name: str, what: str = "identifier") -> str:
    """Return ``name`` if it is a plain SQL identifier, else raise ValueError naming it.

    Table and database names cannot be bound as parameters, so they are
    restricted to ``[A-Za-z_][A-Za-z0-9_]*`` before they are put into SQL text.
    """
    if not isinstance(name, str) or not _IDENTIFIER_RE.match(name):
        raise ValueError(f"{what} must match [A-Za-z_][A-Za-z0-9_]*, got {name!r}")
    return name


def quote_identifier(name: str, what: str = "identifier") -> str:
    """Backtick-quote a checked identifier for SQL text."""
    return f"`{check_identifier(name, what)}`"


class Rows(list):
    """Result rows (a list of tuples) that also carries ``column_names``."""

    def __init__(self, rows: list[tuple], column_names: tuple[str, ...]):
        super().__init__(rows)
        self.column_names = tuple(column_names)


@dataclass(frozen=True)
class TlsOptions:
    """TLS settings for a server endpoint (``https://``). Ignored by the embedded store."""

    insecure: bool = False      # skip certificate verification
    ca_file: str = ""           # PEM bundle that signs the server certificate
    cert_file: str = ""         # client certificate (mutual TLS)
    key_file: str = ""          # client key (mutual TLS)


class Store:
    """What every back end provides. Instances are safe to share between threads.

    Attributes
    ----------
    endpoint : str
        What it was opened with (``chdb:///abs/path`` or ``http(s)://host:port``).
    database : str
        The current database of every statement.
    """

    endpoint: str
    database: str

    def command(self, sql: str, params: Mapping[str, Any] | None = None) -> None:
        """Run a statement that returns no rows (DDL, INSERT ... SELECT, ALTER...)."""
        raise NotImplementedError

    def query_arrow(self, sql: str, params: Mapping[str, Any] | None = None):
        """Run a query and return a ``pyarrow.Table``."""
        raise NotImplementedError

    def query_rows(self, sql: str, params: Mapping[str, Any] | None = None) -> Rows:
        """Run a query and return its rows as tuples (with ``.column_names``). For small results."""
        import pyarrow as pa

        table = self.query_arrow(sql, params)
        columns = []
        for col in table.columns:
            values = col.to_pylist()
            if pa.types.is_map(col.type):  # Arrow gives [(k, v), ...]; a dict is what callers expect
                values = [dict(v) if v is not None else None for v in values]
            columns.append(values)
        return Rows(list(zip(*columns)) if columns else [], tuple(table.column_names))

    def query_bytes(self, sql: str, params: Mapping[str, Any] | None = None) -> bytes:
        """Run a query and return its output as the engine writes it: in the format of the query's
        ``FORMAT`` clause (see :func:`output_format_clause`), else TabSeparated."""
        raise NotImplementedError

    def insert_arrow(self, table_name: str, arrow_table, dedup_token: str = "") -> int:
        """Insert a ``pyarrow.Table`` into ``table_name`` (in ``database``), columns matched by name.

        Returns the number of rows inserted. Columns of the table that the Arrow
        table does not carry take their DEFAULT. A non-empty ``dedup_token`` is sent as
        ``insert_deduplication_token`` (a setting value, never SQL text), so ClickHouse drops a
        repeated insert with the same token (see the exporter's write-ahead log replay).
        """
        raise NotImplementedError

    def close(self) -> None:
        """Release the connection. Idempotent."""
        raise NotImplementedError

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _parse_chdb_path(endpoint: str) -> str:
    # chdb://./data -> ./data ; chdb:///abs/path -> /abs/path ; chdb://relative -> relative
    rest = endpoint.split("://", 1)[1]
    if not rest:
        raise ValueError(f"endpoint {endpoint!r} has no path; use chdb://./data or chdb:///abs/path")
    return rest


def open_store(endpoint: str = "chdb://./data", database: str = "otel", username: str = "",
               password: str = "", *, tls: TlsOptions | None = None, timeout: float = 30.0,
               settings: Mapping[str, Any] | None = None, create_database: bool = True) -> Store:
    """Open a store for ``endpoint`` and make ``database`` (created if missing) its current database.

    Endpoints
    ---------
    ``chdb://<path>``          embedded chDB bound to directory <path> (``chdb://./data``,
                               ``chdb:///var/lib/otelproc``). One path per process.
    ``http://host[:8123]``     ClickHouse server over HTTP (clickhouse-connect).
    ``https://host[:8443]``    same over TLS (``tls`` options apply).
    ``chdb+connect://<path>``  the *server* code path (clickhouse-connect) run against the embedded
                               engine through clickhouse-connect's ``interface="chdb"``; for tests
                               and for checking the server path without a server.
    """
    check_identifier(database, "database")
    scheme = endpoint.split("://", 1)[0].lower() if "://" in endpoint else ""
    if scheme == "chdb":
        from otelproc.store.embedded import EmbeddedStore

        return EmbeddedStore(_parse_chdb_path(endpoint), database, create_database=create_database)
    if scheme in ("http", "https", "chdb+connect"):
        from otelproc.store.server import ServerStore

        return ServerStore.open(endpoint, database, username=username, password=password, tls=tls or TlsOptions(),
                                timeout=timeout, settings=settings, create_database=create_database)
    raise ValueError(f"endpoint {endpoint!r}: unsupported scheme; use chdb://<path>, http://host:8123 "
                     f"or https://host:8443")


class _Shared(Store):
    """A registry handle: delegates to a shared store; ``close()`` releases one reference."""

    def __init__(self, registry: "StoreRegistry", key: tuple, inner: Store):
        self._registry, self._key, self._inner = registry, key, inner
        self._closed = False
        self.endpoint, self.database = inner.endpoint, inner.database

    def command(self, sql, params=None):
        return self._inner.command(sql, params)

    def query_arrow(self, sql, params=None):
        return self._inner.query_arrow(sql, params)

    def query_rows(self, sql, params=None):
        return self._inner.query_rows(sql, params)

    def query_bytes(self, sql, params=None):
        return self._inner.query_bytes(sql, params)

    def insert_arrow(self, table_name, arrow_table, dedup_token=""):
        return self._inner.insert_arrow(table_name, arrow_table, dedup_token)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._registry._release(self._key)

    def __repr__(self) -> str:
        return f"<shared store {self.endpoint} database={self.database}>"


class StoreRegistry:
    """Stores shared by the components of one process (``component.Context.stores``).

    ``get()`` returns a handle onto one store per distinct key (endpoint,
    database, username, password, TLS); each handle's ``close()`` releases one
    reference, and the underlying store closes with the last one. So the
    clickhouse exporter, the patterns processor and the ``otelproc sql`` CLI
    can all say ``stores.get(endpoint, database)`` and use one connection.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stores: dict[tuple, list] = {}  # key -> [store, refcount]

    def get(self, endpoint: str = "chdb://./data", database: str = "otel", username: str = "",
            password: str = "", *, tls: TlsOptions | None = None, timeout: float = 30.0,
            settings: Mapping[str, Any] | None = None) -> Store:
        """A handle on the shared store for this key (opened on first use); close() it when done."""
        key = (endpoint, database, username, str(password), tls or TlsOptions(),
               tuple(sorted((settings or {}).items())))
        with self._lock:
            entry = self._stores.get(key)
            if entry is None:
                entry = [open_store(endpoint, database, username, password, tls=tls, timeout=timeout,
                                    settings=settings), 0]
                self._stores[key] = entry
            entry[1] += 1
            return _Shared(self, key, entry[0])

    def _release(self, key: tuple) -> None:
        with self._lock:
            entry = self._stores.get(key)
            if entry is None:
                return
            entry[1] -= 1
            if entry[1] > 0:
                return
            del self._stores[key]
        entry[0].close()

    def open_count(self) -> int:
        """How many distinct stores are open (tests, diagnostics)."""
        with self._lock:
            return len(self._stores)

    def close_all(self) -> None:
        """Close every store regardless of references (pipeline teardown)."""
        with self._lock:
            entries, self._stores = list(self._stores.values()), {}
        for store, _ in entries:
            store.close()
