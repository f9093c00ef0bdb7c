#!/usr/bin/env python3
"""Write docs/configuration.md from the config schema: every option of every registered component
(``otelproc.registry`` factories and their ``config_class`` dataclasses), the ``service`` section and
the alert rules file, with its type, default and the comment above the field in the source.

    python docs/gen_configuration.py            # rewrite docs/configuration.md
    python docs/gen_configuration.py --check    # exit 1 if the file is out of date

tests/unit/test_docs.py fails when the file is not what this script writes, so a new option (or a
changed default or comment) needs a re-run of this script in the same change.
"""
from __future__ import annotations

import argparse
import dataclasses
import inspect
import re
import sys
import types
import typing
from pathlib import Path
from typing import Any, Iterator, Literal, Union, get_args, get_origin

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from otelproc.component import Kind  # noqa: E402
from otelproc.config import (ByteSize, ConfigRelativePath, Duration, Secret, ServiceConfig, config_fields,  # noqa: E402
                             config_key)

OUT = REPO / "docs" / "configuration.md"
_FIELD_RE = re.compile(r"^\s+(\w+)\s*:")


def field_comments(cls: type) -> dict[str, str]:
    """Field name -> the ``#`` comment lines directly above it in the source of the class that declares it."""
    out: dict[str, str] = {}
    for base in reversed(cls.__mro__):
        if dataclasses.is_dataclass(base):
            out.update(_own_comments(base))
    return out


def _own_comments(cls: type) -> dict[str, str]:
    try:
        lines = inspect.getsource(cls).splitlines()
    except (OSError, TypeError):
        return {}
    fields_by_name = {f.name: f for f in dataclasses.fields(cls)}
    names = set(fields_by_name)
    out: dict[str, str] = {}
    pending: list[str] = []
    previous = ""  # the field on the line just above (no blank line or comment between)
    for line in lines[1:]:
        s = line.strip()
        if s.startswith("#"):
            pending.append(s.lstrip("#").strip())
            previous = ""
            continue
        m = _FIELD_RE.match(line)
        name = m.group(1) if m and m.group(1) in names else ""
        if name and name not in out:
            if pending:
                out[name] = " ".join(pending)
            elif "#" in line:  # a trailing comment on the field line
                out[name] = line.split("#", 1)[1].strip()
            elif previous in out:
                # one comment written above a group of fields ("client certificate and key ...")
                out[name] = f"See `{config_key(fields_by_name[previous])}`."
        if s.startswith("def "):
            break
        pending = []
        previous = name
    return out


def _unwrap(tp: Any) -> tuple[Any, bool]:
    """(type without Optional, was optional)."""
    if get_origin(tp) in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        return args[0], len(args) != len(get_args(tp))
    return tp, False


def type_name(tp: Any) -> str:
    tp, _ = _unwrap(tp)
    if tp is Duration:
        return "duration"
    if tp is ByteSize:
        return "size"
    if tp is Secret:
        return "secret string"
    if tp is ConfigRelativePath:
        return "file path"
    if get_origin(tp) is Literal:
        return " \\| ".join(f"`{a}`" for a in get_args(tp))
    if get_origin(tp) is list:
        (item,) = get_args(tp) or (Any,)
        return f"list of {type_name(item)}"
    if get_origin(tp) is dict:
        k, v = get_args(tp) or (Any, Any)
        return f"map of {type_name(k)} to {type_name(v)}"
    if dataclasses.is_dataclass(tp):
        return "mapping"
    if tp is Any:
        return "any"
    return getattr(tp, "__name__", str(tp))


def _fmt_duration(v: float) -> str:
    for unit, size in (("h", 3600.0), ("m", 60.0), ("s", 1.0), ("ms", 1e-3)):
        if v and v % size == 0 or (unit == "ms" and v):
            n = v / size
            return f"{n:g}{unit}"
    return "0s"


def _fmt_bytes(v: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if v and v % size == 0:
            return f"{v // size}{unit}"
    return str(v)


def default_text(f: dataclasses.Field, tp: Any) -> str:
    if f.metadata.get("config") and f.metadata["config"].unit == "s":
        tp = list[Duration] if isinstance(f.default, tuple) else Duration
    if f.default is not dataclasses.MISSING:
        v = f.default
    elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        v = f.default_factory()  # type: ignore[misc]
    else:
        return "required"
    base, _ = _unwrap(tp)
    if v is None:
        return "off"
    if isinstance(v, Secret):
        return '`""`' if not v else "`***`"
    if base is Duration or isinstance(v, Duration):
        return f"`{_fmt_duration(float(v))}`"
    if base is ByteSize or isinstance(v, ByteSize):
        return f"`{_fmt_bytes(int(v))}`"
    if isinstance(v, bool):
        return f"`{str(v).lower()}`"
    if isinstance(v, str):
        return f'`"{v}"`' if v == "" else f"`{v}`"
    if isinstance(v, (list, tuple)):
        if not v:
            return "`[]`"
        as_duration = isinstance(v[0], Duration) or get_args(base) == (Duration,)
        return "`[" + ", ".join(_fmt_duration(float(x)) if as_duration else str(x) for x in v) + "]`"
    if isinstance(v, dict):
        return "`{}`" if not v else f"`{v}`"
    return f"`{v}`"


def options(cls: type, prefix: str = "", _outer: tuple[type, ...] = ()) -> Iterator[tuple[str, str, str, str]]:
    """(key path, type, default, description) of every option under dataclass ``cls``, depth first.

    Nested mappings are joined with ``::`` (as in error messages), list items with ``[]``. A
    recursive type (a route's ``routes``) is listed once, pointing to its enclosing key.
    """
    outer = (*_outer, cls)
    hints = typing.get_type_hints(cls)
    comments = field_comments(cls)
    for f in config_fields(cls):
        key = f"{prefix}{config_key(f)}"
        tp = hints[f.name]
        if f.metadata.get("config") and f.metadata["config"].unit == "s":
            tp = list[Duration] if isinstance(f.default, tuple) else Duration
        base, optional = _unwrap(tp)
        desc = comments.get(f.name, "")
        if dataclasses.is_dataclass(base):
            if optional:
                desc = (desc + " " if desc else "") + "Off unless present (an empty `" + config_key(f) + \
                       ":` turns it on with the defaults below)."
            yield key, "mapping", "off" if optional else "", desc
            yield from options(base, key + "::", outer)
        elif get_origin(base) is list and get_args(base) and dataclasses.is_dataclass(get_args(base)[0]):
            item = get_args(base)[0]
            if item in outer:
                yield key, "list of mappings", "`[]`", (desc + " " if desc else "") + \
                    f"Each item has the keys of `{prefix.rstrip(':') or 'the enclosing mapping'}`."
                continue
            yield key, "list of mappings", "`[]`", desc
            yield from options(item, key + "[]::", outer)
        elif get_origin(base) is dict and get_args(base) and dataclasses.is_dataclass(get_args(base)[1]):
            yield key, "map of id to mapping", "`{}`", desc
            yield from options(get_args(base)[1], key + "::<id>::", outer)
        else:
            yield key, type_name(tp), default_text(f, tp), desc


def _table(rows: list[tuple[str, str, str, str]]) -> list[str]:
    out = ["| key | type | default | description |", "|---|---|---|---|"]
    for key, tp, default, desc in rows:
        cell = desc.replace("|", "\\|")
        out.append(f"| `{key}` | {tp} | {default} | {cell} |")
    return out


def _first_paragraph(doc: str | None) -> str:
    if not doc:
        return ""
    para = doc.strip().split("\n\n", 1)[0]
    return " ".join(line.strip() for line in para.splitlines())


def render() -> str:
    from otelproc.registry import COMPONENT_MODULES, factories
    from otelproc.alerting.rules import AlertsFile
    import importlib

    modules = {importlib.import_module(m).factory.type: m for m in COMPONENT_MODULES}
    lines = [
        "# Configuration reference",
        "",
        "<!-- generated by docs/gen_configuration.py from the config dataclasses; do not edit by hand:",
        "     change the field or its comment, then run `python docs/gen_configuration.py` -->",
        "",
        "otelproc reads one Collector-style YAML file (`otelproc serve --config FILE`; check it with",
        "`otelproc validate --config FILE`; without `--config`, the default config shipped in the package:",
        "the same as the repository's `config/otelproc.yaml`). Every component is configured under its kind, by id (`type` or",
        "`type/name`), and enabled by listing it in a pipeline. `${env:VAR}` and `${env:VAR:-default}` are",
        "substituted everywhere. Unknown keys are errors. Durations are written `200ms`, `5s`, `1m`, `72h`;",
        "sizes `4KiB`, `64MiB`. Keys of nested mappings are shown joined with `::`, as in error messages",
        "(`protocols::http::endpoint` is `protocols: {http: {endpoint: ...}}`); `[]` marks the items of a list.",
        "",
        "```yaml",
        "receivers:  {otlp: {protocols: {http: {endpoint: 0.0.0.0:4318}}}}",
        "processors: {patterns: {}, anomaly: {}, alerting: {rules_file: alerts.yaml}, batch: {}}",
        "exporters:  {clickhouse: {endpoint: chdb://./data}}",
        "service:",
        "  pipelines:",
        "    logs: {receivers: [otlp], processors: [patterns, anomaly, alerting, batch], exporters: [clickhouse]}",
        "```",
        "",
        "Contents: " + ", ".join(f"[{k.value}](#{k.value})" for k in Kind) + ", [service](#service), "
        "[alert rules file](#alert-rules-file).",
        "",
    ]
    facs = factories()
    for kind in (Kind.RECEIVER, Kind.PROCESSOR, Kind.EXPORTER, Kind.EXTENSION):
        lines += [f"## {kind.value}", ""]
        for (k, typ), fac in sorted(facs.items(), key=lambda kv: kv[0][1]):
            if k != kind:
                continue
            mod = modules.get(typ, "")
            summary = _first_paragraph(sys.modules[mod].__doc__) if mod in sys.modules else ""
            lines += [f"### `{typ}`", "", f"{summary} Stability: {fac.stability}. Source: `{mod.replace('.', '/')}.py`.", ""]
            lines += _table(list(options(fac.config_class, f"{kind.value}::{typ}::"))) + [""]
    lines += ["## service", "",
              "Which components run and how they are connected, and otelproc's own telemetry "
              "(`/metrics`, `/healthz`, `/readyz`, log level).", ""]
    lines += _table(list(options(ServiceConfig, "service::"))) + [""]
    lines += ["## alert rules file", "",
              "The file named by `processors::alerting::rules_file` (default: the shipped rules, the same as "
              "the repository's `config/alerts.yaml`): rules, "
              "Alertmanager-style `route`, `inhibit_rules` and `receivers`. See [alerting.md](alerting.md).", ""]
    lines += _table(list(options(AlertsFile))) + [""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if docs/configuration.md is out of date")
    args = ap.parse_args(argv)
    text = render()
    if args.check:
        current = OUT.read_text() if OUT.exists() else ""
        if current != text:
            print(f"{OUT} is out of date: run python docs/gen_configuration.py", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text)
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
