"""Documentation that cannot drift: docs/configuration.md against the config schema, the README's
SQL cookbook against chDB, and the README's documentation links."""
from __future__ import annotations

import dataclasses
import importlib.util
import re
import time
import typing
from pathlib import Path
from typing import Union, get_args, get_origin

import pytest

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "configuration.md"
README = REPO / "README.md"


def _generator():
    spec = importlib.util.spec_from_file_location("gen_configuration", REPO / "docs" / "gen_configuration.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _schema_keys(cls: type, prefix: str, seen: tuple = ()) -> set[str]:
    """Every YAML key path under dataclass ``cls`` (walked here independently of the generator)."""
    out = set()
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        meta = f.metadata.get("config")  # otelproc.config.Setting: the YAML key when not the name, internal fields
        if meta is not None and meta.internal:
            continue
        key = prefix + ((meta and meta.key) or (f.name[:-1] if f.name.endswith("_") else f.name))
        out.add(key)
        tp = hints[f.name]
        if get_origin(tp) is Union or type(tp).__name__ == "UnionType":
            tp = [a for a in get_args(tp) if a is not type(None)][0]
        if dataclasses.is_dataclass(tp) and tp not in seen:
            out |= _schema_keys(tp, key + "::", (*seen, cls))
        elif get_origin(tp) is list and get_args(tp) and dataclasses.is_dataclass(get_args(tp)[0]):
            item = get_args(tp)[0]
            if item not in (*seen, cls):
                out |= _schema_keys(item, key + "[]::", (*seen, cls))
        elif get_origin(tp) is dict and get_args(tp) and dataclasses.is_dataclass(get_args(tp)[1]):
            out |= _schema_keys(get_args(tp)[1], key + "::<id>::", (*seen, cls))
    return out


def _documented_keys(text: str) -> set[str]:
    return set(re.findall(r"^\| `([^`]+)` \|", text, flags=re.M))


def test_configuration_doc_is_generated_from_the_current_schema():
    assert DOC.read_text() == _generator().render(), \
        "docs/configuration.md is out of date: run `python docs/gen_configuration.py`"


def test_every_documented_option_exists_in_the_schema_and_vice_versa():
    from otelproc.alerting.rules import AlertsFile
    from otelproc.config import ServiceConfig
    from otelproc.registry import factories

    schema = set()
    for (kind, typ), fac in factories().items():
        schema |= _schema_keys(fac.config_class, f"{kind.value}::{typ}::")
    schema |= _schema_keys(ServiceConfig, "service::")
    schema |= _schema_keys(AlertsFile, "")
    documented = _documented_keys(DOC.read_text())
    assert documented - schema == set(), f"documented but not in the schema: {sorted(documented - schema)}"
    assert schema - documented == set(), f"in the schema but not documented: {sorted(schema - documented)}"
    # and a component of every kind is there
    for key in ("receivers::otlp::protocols::http::endpoint", "processors::anomaly::resolutions",
                "exporters::clickhouse::ttl", "extensions::clickhouse_query::endpoint",
                "service::telemetry::logs::level", "route::group_by", "rules[]::for"):
        assert key in documented


def test_documented_defaults_match_the_dataclasses():
    from otelproc.processors.batch import BatchProcessorConfig

    text = DOC.read_text()
    row = re.search(r"^\| `processors::batch::send_batch_size` \| int \| `(\d+)` \|", text, flags=re.M)
    assert row and int(row.group(1)) == BatchProcessorConfig().send_batch_size
    assert re.search(r"^\| `processors::batch::timeout` \| duration \| `1s` \|", text, flags=re.M)


def test_field_comments_are_picked_up():
    gen = _generator()
    from otelproc.config import QueueConfig
    from otelproc.exporters.clickhouse import TlsConfig

    c = gen.field_comments(QueueConfig)
    assert c["max_records"].startswith("records accepted from receivers")
    assert c["retry_after"].startswith("the Retry-After")
    assert gen.field_comments(TlsConfig)["key_file"] == "See `cert_file`."


def _cookbook() -> list[str]:
    text = README.read_text()
    m = re.search(r"^## SQL cookbook\n(.*?)(?=^## )", text, flags=re.M | re.S)
    assert m, "README.md has no '## SQL cookbook' section"
    return re.findall(r"```sql\n(.*?)```", m.group(1), flags=re.S)


def test_readme_cookbook_sql_runs_against_chdb(chdb_path, chdb_database):
    from otelproc.batch import LogBatch
    from otelproc.component import Context
    from otelproc.exporters.clickhouse import ClickHouseExporter, ClickHouseExporterConfig
    from otelproc.processors.patterns import PatternsProcessor, PatternsProcessorConfig
    from otelproc.store import open_store
    from otelproc.telemetry import Telemetry

    snippets = _cookbook()
    assert len(snippets) >= 10
    exporter = ClickHouseExporter("clickhouse", ClickHouseExporterConfig(endpoint=f"chdb://{chdb_path}",
                                                                         database=chdb_database),
                                  Context(telemetry=Telemetry(process_metrics=False)))
    exporter.start()
    patterns = PatternsProcessor("patterns", PatternsProcessorConfig(), exporter, None)
    patterns.start()
    now = (int(time.time()) - 300) * 1_000_000_000
    patterns.consume(LogBatch.from_records(
        [{"time_ns": now + i * 1_000_000_000, "service": "checkout", "severity_number": 17 if i % 5 == 0 else 9,
          "severity_text": "ERROR" if i % 5 == 0 else "INFO",
          "body": f"GET /api/cart HTTP/1.1 200 took {10 + i % 7}.5ms"} for i in range(100)]))
    patterns.shutdown()
    exporter.shutdown()
    store = open_store(f"chdb://{chdb_path}", chdb_database)
    try:
        results = []
        for sql in snippets:
            try:
                results.append(store.query_rows(sql))
            except Exception as e:  # noqa: BLE001 - report which snippet failed
                pytest.fail(f"cookbook query failed: {e}\n{sql}")
        assert results[0] and results[0][0][2] == 80  # the volume query: 80 INFO lines of checkout
        latency = [r for sql, r in zip(snippets, results) if "p95_ms" in sql][0]
        assert latency and 10 <= latency[0][2] <= 17  # p50 of the "took <*>" parameter, in ms
    finally:
        store.close()


def test_readme_documentation_links_exist():
    text = README.read_text()
    m = re.search(r"^## Documentation\n(.*?)(?=^## |\Z)", text, flags=re.M | re.S)
    assert m
    links = re.findall(r"\]\(([^)#]+)\)", m.group(1))
    assert "docs/configuration.md" in links and "docs/architecture.md" in links and "docs/alerting.md" in links
    for link in links:
        assert (REPO / link).exists(), link
