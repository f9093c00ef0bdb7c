"""Extensions: components outside the data path, started before the pipelines (see component.Extension).

``clickhouse_query`` (:mod:`otelproc.extensions.query_endpoint`) serves the embedded chDB store
over a read-only ClickHouse-compatible HTTP interface, so Grafana and clickhouse-connect can
query a store that has no server; ``loki`` (:mod:`otelproc.extensions.loki`) serves Loki's read API.
"""
from __future__ import annotations

from typing import Any

from otelproc.httpserver import parse_endpoint


def store_listener_problems(endpoint: str, exporter: str) -> list[str]:
    """The config problems shared by the extensions that serve a clickhouse exporter's store on ``endpoint``."""
    out = []
    try:
        parse_endpoint(endpoint)
    except ValueError as e:
        out.append(f"endpoint: {e}")
    if not exporter:
        out.append("exporter: must name a clickhouse exporter (e.g. clickhouse)")
    return out


def clickhouse_exporter_config(whole: Any, extension: str, exporter_id: str) -> Any:
    """The config of the clickhouse exporter ``exporter_id`` in the service config ``whole``; ValueError
    naming the configured ones when there is no such exporter."""
    if whole is None:
        raise RuntimeError(f"extension {extension}: needs the service config to find exporter {exporter_id!r}")
    exporters = getattr(whole, "exporters", {}) or {}
    exp = exporters.get(exporter_id)
    if exp is None or exporter_id.split("/", 1)[0] != "clickhouse":
        known = ", ".join(sorted(e for e in exporters if e.split("/", 1)[0] == "clickhouse")) or "none"
        raise ValueError(f"extensions::{extension}::exporter: {exporter_id!r} is not a configured "
                         f"clickhouse exporter (configured: {known})")
    return exp
