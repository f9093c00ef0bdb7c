"""Server store: a ClickHouse server over HTTP(S) through clickhouse-connect.

``http://host:8123`` and ``https://host:8443`` (TLS options: skip verification,
CA bundle, client certificate/key for mutual TLS). The same class also runs
against the embedded engine through clickhouse-connect's ``interface="chdb"``
(endpoint ``chdb+connect://<path>``), which is how it is tested on a machine
without a ClickHouse server: the SQL, parameter binding, Arrow insert and
error mapping are clickhouse-connect's own either way.

Parameters are bound server-side (``{name:Type}`` in the SQL; clickhouse-connect
sends them as ``param_<name>``). Inserts go through ``client.insert_arrow``
(Arrow IPC in the request body).
"""
from __future__ import annotations

import threading
from typing import Any, Mapping
from urllib.parse import urlsplit

from otelproc.store import Store, StoreError, TlsOptions, check_identifier, error_code, quote_identifier

__all__ = ["ServerStore"]

_DEFAULT_PORTS = {"http": 8123, "https": 8443}


def _wrap(e: Exception, sql: str) -> StoreError:
    msg = str(e)
    head = " ".join(sql.split())[:200]
    return StoreError(f"{msg} [statement: {head}]", getattr(e, "code", None) or error_code(msg))


class ServerStore(Store):
    """A :class:`Store` over a clickhouse-connect client.

    HTTP clients are used without a session id so that several threads may
    query at once (ClickHouse rejects concurrent queries in one session). The
    in-process chDB client holds one connection handle, so its calls are
    serialised with a lock.
    """

    def __init__(self, client: Any, endpoint: str, database: str, *, serialise: bool = False,
                 on_close: Any = None):
        self._client = client
        self.endpoint = endpoint
        self.database = check_identifier(database, "database")
        self._lock = threading.Lock() if serialise else None
        self._on_close = on_close
        self._closed = False

    @classmethod
    def open(cls, endpoint: str, database: str, *, username: str = "", password: str = "",
             tls: TlsOptions = TlsOptions(), timeout: float = 30.0, settings: Mapping[str, Any] | None = None,
             create_database: bool = True) -> "ServerStore":
        import clickhouse_connect

        check_identifier(database, "database")
        url = urlsplit(endpoint)
        scheme = url.scheme.lower()
        if scheme == "chdb+connect":
            from otelproc.store.embedded import acquire_engine, release_engine

            path = endpoint.split("://", 1)[1]
            if not path:
                raise ValueError(f"endpoint {endpoint!r} has no path; use chdb+connect:///abs/path")
            abspath = acquire_engine(path)
            try:
                client = clickhouse_connect.get_client(interface="chdb", path=abspath, settings=dict(settings or {}))
            except Exception as e:  # noqa: BLE001
                release_engine(abspath)
                raise StoreError(f"cannot open chDB at {abspath!r} through clickhouse-connect: {e}",
                                 error_code(str(e))) from None
            store = cls(client, f"chdb+connect://{abspath}", database, serialise=True,
                        on_close=lambda: release_engine(abspath))
        elif scheme in _DEFAULT_PORTS:
            if not url.hostname:
                raise ValueError(f"endpoint {endpoint!r} has no host; use {scheme}://host:port")
            kwargs: dict[str, Any] = dict(
                host=url.hostname, port=url.port or _DEFAULT_PORTS[scheme],
                username=username or url.username or "default", password=password or url.password or "",
                secure=scheme == "https", connect_timeout=timeout, send_receive_timeout=timeout,
                settings=dict(settings or {}), autogenerate_session_id=False,
            )
            if scheme == "https":
                kwargs["verify"] = not tls.insecure
                if tls.ca_file:
                    kwargs["ca_cert"] = tls.ca_file
                if tls.cert_file:
                    kwargs["client_cert"] = tls.cert_file
                if tls.key_file:
                    kwargs["client_cert_key"] = tls.key_file
            try:
                client = clickhouse_connect.get_client(**kwargs)
            except Exception as e:  # noqa: BLE001 - connection refused, auth, TLS...
                raise StoreError(f"cannot connect to ClickHouse at {url.scheme}://{url.hostname}:{kwargs['port']} "
                                 f"as {kwargs['username']!r}: {e}", error_code(str(e))) from None
            store = cls(client, f"{scheme}://{url.hostname}:{kwargs['port']}", database)
        else:
            raise ValueError(f"endpoint {endpoint!r}: ServerStore needs http://, https:// or chdb+connect://")
        try:
            if create_database:
                store._call(client.command, f"CREATE DATABASE IF NOT EXISTS {quote_identifier(database)}")
            client.database = database
            store._call(client.command, "SELECT 1")
        except BaseException:
            store.close()
            raise
        return store

    def _call(self, fn, sql: str, *args: Any, **kwargs: Any):
        if self._closed:
            raise StoreError(f"store {self.endpoint} database={self.database} is closed")
        try:
            if self._lock is None:
                return fn(sql, *args, **kwargs)
            with self._lock:
                return fn(sql, *args, **kwargs)
        except StoreError:
            raise
        except Exception as e:  # noqa: BLE001 - clickhouse-connect DatabaseError/OperationalError
            raise _wrap(e, sql) from None

    def command(self, sql: str, params: Mapping[str, Any] | None = None) -> None:
        self._call(self._client.command, sql, parameters=dict(params) if params else None)

    def query_arrow(self, sql: str, params: Mapping[str, Any] | None = None):
        return self._call(self._client.query_arrow, sql, parameters=dict(params) if params else None)

    def query_bytes(self, sql: str, params: Mapping[str, Any] | None = None) -> bytes:
        return self._call(self._client.raw_query, sql, parameters=dict(params) if params else None)

    def insert_arrow(self, table_name: str, arrow_table, dedup_token: str = "") -> int:
        n = arrow_table.num_rows
        if n == 0:
            return 0
        for c in arrow_table.column_names:
            check_identifier(c, "column")
        settings = {"insert_deduplication_token": dedup_token} if dedup_token else None
        self._call(lambda t: self._client.insert_arrow(t, arrow_table, database=self.database, settings=settings),
                   check_identifier(table_name, "table"))
        return n

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._client.close()
        except Exception:  # noqa: BLE001 - closing must not raise
            pass
        if self._on_close is not None:
            self._on_close()

    def __repr__(self) -> str:
        return f"<ServerStore {self.endpoint} database={self.database}{' closed' if self._closed else ''}>"
