"""Reaching the store of a config from another process: what ``otelproc sql`` and the views open.

An embedded store (``chdb://<path>``) opens in one process at a time: chDB locks ``<path>/status``.
While ``otelproc serve`` holds it, its ``clickhouse_query`` extension serves the store read-only over
HTTP and writes :data:`ENDPOINT_FILE` into ``<path>`` (``{"url", "database", "username", "anonymous",
"pid"}``; removed at shutdown). :func:`open_config_store` opens the store itself when it is free, and
otherwise goes through that endpoint: the one the file names, else the one the config turns on.
When neither answers, :class:`StoreUnavailable` says in one line why and what to do.
"""
from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path
from typing import Any

from otelproc.httpserver import parse_endpoint
from otelproc.store import Store, StoreError, error_code, open_store

__all__ = ["ENDPOINT_FILE", "PASSWORD_ENV", "StoreUnavailable", "write_endpoint_file", "remove_endpoint_file",
           "read_endpoint_file", "held_by_another_process", "local_url", "open_config_store"]

ENDPOINT_FILE = "otelproc-query-endpoint.json"
#: the query endpoint's password, for the CLI (the config's, when it sets one, is the fallback)
PASSWORD_ENV = "OTELPROC_QUERY_PASSWORD"
_AUTHENTICATION_FAILED = 516


class StoreUnavailable(Exception):
    """The store cannot be opened; the message is one line saying why and what to do."""


def local_url(endpoint: str) -> str:
    """``http://host:port`` by which a client on this machine reaches a listener on ``endpoint`` (host:port)."""
    host, port = parse_endpoint(endpoint, empty_host="0.0.0.0")
    if host == "0.0.0.0":
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def write_endpoint_file(store_path: str, url: str, database: str, username: str, anonymous: bool) -> None:
    """Announce the query endpoint serving ``store_path`` (written whole: a reader never sees half a file)."""
    target = Path(store_path) / ENDPOINT_FILE
    tmp = target.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"url": url, "database": database, "username": username,
                               "anonymous": bool(anonymous), "pid": os.getpid()}))
    os.replace(tmp, target)


def remove_endpoint_file(store_path: str) -> None:
    """Remove the announcement if this process wrote it."""
    target = Path(store_path) / ENDPOINT_FILE
    try:
        if json.loads(target.read_text()).get("pid") == os.getpid():
            target.unlink()
    except (OSError, ValueError, AttributeError):
        pass


def _alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


def read_endpoint_file(store_path: str) -> dict | None:
    """The announcement of the endpoint serving ``store_path``, or None (absent, unreadable, writer gone)."""
    try:
        info = json.loads((Path(store_path) / ENDPOINT_FILE).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(info, dict) or not isinstance(info.get("url"), str) or not _alive(info.get("pid")):
        return None
    return info


def held_by_another_process(store_path: str) -> bool:
    """True when another process holds chDB's lock on ``<store_path>/status`` (a running otelproc)."""
    from otelproc.store.embedded import engine_path

    path = os.path.abspath(os.path.expanduser(store_path))
    if engine_path() == path:
        return False  # this process's own engine
    try:
        fd = os.open(os.path.join(path, "status"), os.O_RDONLY)
    except OSError:
        return False  # never opened, or not readable: let chDB say what is wrong
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def _configured_endpoints(config: Any, exporter_id: str) -> list[tuple[str, str, str]]:
    """(url, username, password) of every clickhouse_query extension the config starts for ``exporter_id``."""
    out = []
    for eid in getattr(config.service, "extensions", []) or []:
        ext = (config.extensions or {}).get(eid)
        if eid.split("/", 1)[0] == "clickhouse_query" and getattr(ext, "exporter", None) == exporter_id:
            out.append((local_url(ext.endpoint), ext.username, str(ext.password)))
    return out


def _through_endpoint(config: Any, exporter_id: str, path: str, database: str) -> Store:
    candidates = []
    info = read_endpoint_file(path)
    configured = _configured_endpoints(config, exporter_id)
    config_password = next((pw for _, _, pw in configured if pw), "")
    if info is not None:
        candidates.append((info["url"], str(info.get("username") or "default"), config_password))
    candidates += [c for c in configured if info is None or c[0] != info["url"]]
    if not candidates:
        raise StoreUnavailable(
            f"the embedded store {path} is in use by another process (a running `otelproc serve`?) that serves "
            f"no query endpoint: add clickhouse_query to its service::extensions (as config/otelproc.yaml "
            f"does) and restart it, or stop it")
    failures = []
    for url, username, password in candidates:
        try:
            return open_store(url, database, username=username, password=os.environ.get(PASSWORD_ENV) or password,
                              timeout=10.0, create_database=False)
        except StoreError as e:
            if e.code == _AUTHENTICATION_FAILED:
                raise StoreUnavailable(f"the query endpoint {url} of the running otelproc refused user "
                                       f"{username!r}: set {PASSWORD_ENV} to its password") from None
            failures.append(f"{url}: {_first_line(str(e))}")
        except Exception as e:  # noqa: BLE001 - connection refused, timeouts...
            failures.append(f"{url}: {_first_line(str(e))}")
    raise StoreUnavailable(
        f"the embedded store {path} is in use by another process (a running `otelproc serve`?) and its query "
        f"endpoint does not answer ({'; '.join(failures)}): check that process's clickhouse_query extension, "
        f"or stop it")


def _first_line(text: str) -> str:
    return (text.strip().splitlines() or [""])[0][:300]


def open_config_store(config: Any, exporter_id: str) -> Store:
    """The store of the clickhouse exporter ``exporter_id`` of ``config``, for reading from the CLI.

    A server store is opened directly. An embedded store is opened in this process when no other
    process holds it, else through the running otelproc's query endpoint (read-only). Raises
    StoreUnavailable (one line: why and what to do) when neither works.
    """
    from otelproc.exporters.clickhouse import open_exporter_store

    exp = config.exporters[exporter_id]
    scheme, _, rest = str(exp.endpoint).partition("://")
    if scheme.lower() != "chdb":
        try:
            return open_exporter_store(exp)
        except (StoreError, ValueError) as e:
            raise StoreUnavailable(f"cannot open the store {exp.endpoint}: {_first_line(str(e))}") from None
    path = os.path.abspath(os.path.expanduser(rest))
    if held_by_another_process(path):
        return _through_endpoint(config, exporter_id, path, str(exp.database))
    try:
        return open_exporter_store(exp)
    except (StoreError, ValueError) as e:
        if held_by_another_process(path) or "EmbeddedServer" in str(e):  # taken between the check and the open
            return _through_endpoint(config, exporter_id, path, str(exp.database))
        raise StoreUnavailable(f"cannot open the embedded store {path}: {_first_line(str(e))} "
                               f"(code {error_code(str(e)) or 'unknown'})") from None
