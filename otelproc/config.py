"""Collector-style YAML configuration: load, substitute ``${env:VAR}``, decode into typed
dataclasses, validate, and report *every* problem with its key path.

    extensions: {clickhouse_query: {...}}      (started with service::extensions)
    receivers:  {otlp: {protocols: {grpc: {endpoint: ...}, http: {endpoint: ...}}}}
    processors: {batch: {...}, patterns: {...}}
    exporters:  {clickhouse: {...}, otlphttp: {...}, debug: {...}}
    service:
      telemetry: {logs: {level: info}, metrics: {address: ...}}
      pipelines:
        logs: {receivers: [otlp], processors: [batch], exporters: [clickhouse]}

Component ids are ``type`` or ``type/name`` as in the Collector. Key paths in
error messages are joined with ``::`` (``exporters::clickhouse::ttl: ...``).
"""
from __future__ import annotations

import contextvars
import dataclasses
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import yaml

from otelproc.component import Factory, Kind

__all__ = [
    "ConfigError", "Duration", "Secret", "ByteSize", "ConfigRelativePath", "ServiceConfig", "PipelineConfig", "OtelprocConfig",
    "load_config", "parse_config", "decode", "parse_duration", "parse_bytes", "Setting", "setting", "config_key",
    "config_fields",
]


class ConfigError(Exception):
    """Raised with every problem found; ``errors`` holds one ``path: message`` string each."""

    def __init__(self, errors: list[str]):
        self.errors = errors
        super().__init__("invalid configuration:\n" + "\n".join(f"  - {e}" for e in errors))


class Duration(float):
    """Seconds, written in YAML as ``200ms``, ``5s``, ``1m``, ``1h``, ``72h`` or a bare number of seconds."""


class ByteSize(int):
    """Bytes, written as ``64MiB``, ``4KiB``, ``1MB`` or a bare integer."""


class Secret(str):
    """A string that never prints (passwords, tokens)."""

    def __repr__(self) -> str:
        return "Secret('***')" if self else "Secret('')"

    __str__ = str.__str__


class ConfigRelativePath(str):
    """A file the config reads (e.g. the alert rules). A relative path is relative to the directory of
    the config file, as Prometheus does for ``rule_files``, so a config and the files beside it work
    from any working directory and from the package."""


# directory of the config file being decoded (None for a config given as text: paths stay as written)
_CONFIG_DIR: contextvars.ContextVar[Path | None] = contextvars.ContextVar("otelproc_config_dir", default=None)


_DURATION_RE = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*(ns|us|µs|ms|s|m|h|d)?\s*$")
_DURATION_UNIT = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, None: 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_BYTES_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(B|KB|KiB|MB|MiB|GB|GiB)?\s*$", re.I)
_BYTES_UNIT = {"b": 1, "kb": 1000, "kib": 1024, "mb": 1000**2, "mib": 1024**2, "gb": 1000**3, "gib": 1024**3}


def parse_duration(value: Any) -> Duration:
    if isinstance(value, bool):
        raise ValueError(f"expected a duration like 5s, got {value!r}")
    if isinstance(value, (int, float)):
        return Duration(value)
    m = _DURATION_RE.match(str(value))
    if not m:
        raise ValueError(f"expected a duration like 200ms, 5s, 1m or 1h, got {value!r}")
    return Duration(float(m.group(1)) * _DURATION_UNIT[m.group(2)])


def parse_bytes(value: Any) -> ByteSize:
    if isinstance(value, bool):
        raise ValueError(f"expected a size like 4MiB, got {value!r}")
    if isinstance(value, int):
        return ByteSize(value)
    m = _BYTES_RE.match(str(value))
    if not m:
        raise ValueError(f"expected a size like 4MiB or 1000000, got {value!r}")
    return ByteSize(int(float(m.group(1)) * _BYTES_UNIT[(m.group(2) or "b").lower()]))


# --------------------------------------------------------------------------- env

_ENV_RE = re.compile(r"\$\{(?:env:)?([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _substitute_env(node: Any, path: str, errors: list[str]) -> Any:
    """Replace ``${env:VAR}`` / ``${env:VAR:-default}`` (and ``${VAR}``) in every string.
    A string that is exactly one reference takes the YAML type of the value (``${env:PORT}`` -> int)."""
    if isinstance(node, dict):
        return {k: _substitute_env(v, f"{path}::{k}" if path else str(k), errors) for k, v in node.items()}
    if isinstance(node, list):
        return [_substitute_env(v, f"{path}[{i}]", errors) for i, v in enumerate(node)]
    if not isinstance(node, str) or "${" not in node:
        return node

    def repl(m: re.Match) -> str:
        name, default = m.group(1), m.group(2)
        if name in os.environ:
            return os.environ[name]
        if default is not None:
            return default
        errors.append(f"{path}: environment variable {name} is not set (use ${{env:{name}:-default}} for a default)")
        return ""

    whole = _ENV_RE.fullmatch(node)
    out = _ENV_RE.sub(repl, node)
    if whole and out != "":
        try:
            typed = yaml.safe_load(out)
            if isinstance(typed, (int, float, bool)):
                return typed
        except yaml.YAMLError:
            pass
    return out


# --------------------------------------------------------------------------- field metadata

@dataclass(frozen=True)
class Setting:
    """What the decoder knows of a config field beyond its type (``setting()`` attaches it)."""

    key: str | None = None            # the YAML key when it is not the attribute's name (warmup for warmup_s)
    aliases: tuple[str, ...] = ()     # other YAML keys accepted for it
    unit: str | None = None           # "s": written as a duration (200ms, 5s, 1m), held as seconds
    ge: float | None = None           # bounds, checked after decoding with one message shape
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    choices: tuple[Any, ...] = ()
    hint: str = ""                    # said after a bound's message, e.g. "0.02 = 2 %/hour"
    internal: bool = False            # a parameter of the code, not a YAML key


def setting(default: Any = dataclasses.MISSING, *, default_factory: Any = dataclasses.MISSING, **meta: Any) -> Any:
    """A dataclass field with config metadata (:class:`Setting`)."""
    return field(default=default, default_factory=default_factory, metadata={"config": Setting(**meta)})


def _setting(f: dataclasses.Field) -> Setting:
    return f.metadata.get("config") or _PLAIN


_PLAIN = Setting()


def config_key(f: dataclasses.Field) -> str:
    """The YAML key of a dataclass field (``for_`` -> ``for``: Python keywords get a trailing underscore)."""
    return _setting(f).key or (f.name[:-1] if f.name.endswith("_") else f.name)


def config_fields(cls: type) -> list[dataclasses.Field]:
    """The fields of ``cls`` that are YAML keys."""
    return [f for f in dataclasses.fields(cls) if not _setting(f).internal]


def _bound_problem(f: dataclasses.Field, value: Any) -> str | None:
    m = _setting(f)
    if value is None or isinstance(value, (str, bool)) or isinstance(value, (list, tuple)):
        return None
    lo = ("[", m.ge) if m.ge is not None else ("(", m.gt) if m.gt is not None else None
    hi = ("]", m.le) if m.le is not None else (")", m.lt) if m.lt is not None else None
    ok = ((lo is None or (value >= lo[1] if lo[0] == "[" else value > lo[1]))
          and (hi is None or (value <= hi[1] if hi[0] == "]" else value < hi[1])))
    if ok:
        return None
    if lo and hi:
        rule = f"in {lo[0]}{lo[1]:g}, {hi[1]:g}{hi[0]}"
    elif lo:
        rule = f"{'>=' if lo[0] == '[' else '>'} {lo[1]:g}"
    else:
        rule = f"{'<=' if hi[0] == ']' else '<'} {hi[1]:g}"
    shown = f"{value:g}s" if m.unit == "s" or isinstance(value, Duration) else \
        f"{value:g}" if isinstance(value, float) else str(int(value))
    return f"{config_key(f)}: must be {rule}{f' ({m.hint})' if m.hint else ''}, got {shown}"


def check_settings(obj: Any) -> list[str]:
    """Bounds and choices of every field of ``obj`` declared with ``setting()``, one message shape."""
    out = []
    for f in config_fields(type(obj)):
        m, value = _setting(f), getattr(obj, f.name)
        if m.choices and value not in m.choices:
            out.append(f"{config_key(f)}: must be {', '.join(map(str, m.choices[:-1]))} or {m.choices[-1]}, "
                       f"got {value!r}")
        problem = _bound_problem(f, value)
        if problem:
            out.append(problem)
    return out


# --------------------------------------------------------------------------- decode

def _type_name(tp: Any) -> str:
    if tp is Duration:
        return "a duration (e.g. 5s)"
    if tp is ByteSize:
        return "a size (e.g. 4MiB)"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    if get_origin(tp) is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    return getattr(tp, "__name__", str(tp))


def decode(cls: type, data: Any, path: str, errors: list[str]) -> Any:
    """Decode ``data`` (parsed YAML) into dataclass ``cls``; append problems to ``errors``.

    Unknown keys are errors. Missing keys take the dataclass defaults. Field metadata (``setting()``)
    gives YAML keys, aliases, units and bounds; after decoding, the bounds are checked and
    ``cls.validate(self) -> list[str]`` (if defined) adds the other problems, each message starting
    with the key it concerns.
    """
    if data is None:
        data = {}
    if not isinstance(data, dict):
        errors.append(f"{path}: expected a mapping, got {type(data).__name__} {data!r}")
        return cls()
    hints = typing.get_type_hints(cls)
    fields = {config_key(f): f for f in config_fields(cls)}
    keys = sorted(fields)
    fields.update({alias: f for f in config_fields(cls) for alias in _setting(f).aliases})
    kwargs = {}
    for key, value in data.items():
        sub = f"{path}::{key}" if path else str(key)
        if key not in fields:
            close = [k for k in keys if k.replace("_", "") == str(key).replace("_", "").lower()]
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            errors.append(f"{sub}: unknown key{hint}; valid keys: {', '.join(keys)}")
            continue
        f = fields[key]
        tp = hints[f.name]
        if _setting(f).unit == "s":  # seconds written as durations (a tuple of them: a list in YAML)
            tp = list[Duration] if get_origin(tp) in (list, tuple) or tp is tuple else Duration
        before = len(errors)
        decoded = _decode_value(tp, value, sub, errors)
        if isinstance(decoded, list) and (get_origin(hints[f.name]) is tuple or hints[f.name] is tuple):
            decoded = tuple(decoded)
        if decoded is not None or len(errors) == before:
            kwargs[f.name] = decoded  # a value that failed to decode keeps the default, so validate() sees sane types
    try:
        obj = cls(**kwargs)
    except TypeError as e:  # a required field without default was missing
        errors.append(f"{path}: {e}")
        return None
    validate = getattr(obj, "validate", None)
    for problem in check_settings(obj) + (validate() if validate is not None else []):
        errors.append(f"{path}::{problem}" if path else problem)
    return obj


def _decode_value(tp: Any, value: Any, path: str, errors: list[str]) -> Any:
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if value is None:
            # as in the Collector, a present-but-empty section (``grpc:``) means "on, with defaults"
            return decode(args[0], {}, path, errors) if dataclasses.is_dataclass(args[0]) else None
        return _decode_value(args[0], value, path, errors)
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        return decode(tp, value, path, errors)
    if origin is Literal:
        if value not in get_args(tp):
            errors.append(f"{path}: must be {_type_name(tp)}, got {value!r}")
        return value
    if origin is list:
        (item,) = get_args(tp) or (Any,)
        if value is None:
            return []
        if not isinstance(value, list):
            errors.append(f"{path}: expected a list, got {value!r}")
            return []
        return [_decode_value(item, v, f"{path}[{i}]", errors) for i, v in enumerate(value)]
    if origin is dict:
        kt, vt = get_args(tp) or (Any, Any)
        if value is None:
            return {}
        if not isinstance(value, dict):
            errors.append(f"{path}: expected a mapping, got {value!r}")
            return {}
        return {str(k): _decode_value(vt, v, f"{path}::{k}", errors) for k, v in value.items()}
    try:
        if tp is Duration:
            return parse_duration(value)
        if tp is ByteSize:
            return parse_bytes(value)
        if tp is bool:
            if not isinstance(value, bool):
                raise ValueError(f"expected true or false, got {value!r}")
            return value
        if tp is int:
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"expected an integer, got {value!r}")
            return value
        if tp is float:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"expected a number, got {value!r}")
            return float(value)
        if tp is ConfigRelativePath:
            if isinstance(value, (dict, list)) or value is None:
                raise ValueError(f"expected a file path, got {value!r}")
            base = _CONFIG_DIR.get()
            text = os.path.expanduser(str(value))
            return ConfigRelativePath(base / text if base is not None and text and not os.path.isabs(text) else text)
        if tp in (str, Secret):
            if isinstance(value, (dict, list)) or value is None:
                raise ValueError(f"expected a string, got {value!r}")
            return tp(value)
    except ValueError as e:
        errors.append(f"{path}: {e}")
        return None
    return value


# --------------------------------------------------------------------------- service section

@dataclass
class PipelineConfig:
    # ids of the receivers feeding this pipeline
    receivers: list[str] = field(default_factory=list)
    # ids of the processors, run in this order (put batch last)
    processors: list[str] = field(default_factory=list)
    # ids of the exporters; each gets every batch
    exporters: list[str] = field(default_factory=list)

    def validate(self) -> list[str]:
        out = []
        if not self.receivers:
            out.append("receivers: a pipeline needs at least one receiver")
        if not self.exporters:
            out.append("exporters: a pipeline needs at least one exporter")
        return out


@dataclass
class TelemetryLogsConfig:
    # otelproc's own log level
    level: Literal["debug", "info", "warn", "warning", "error"] = "info"
    # "text" for people, "json" for log shippers
    encoding: Literal["text", "json"] = "text"


@dataclass
class TelemetryMetricsConfig:
    # host:port of the /metrics, /healthz, /readyz endpoint; empty to disable
    address: str = ""


@dataclass
class TelemetryConfig:
    # otelproc's own logs
    logs: TelemetryLogsConfig = field(default_factory=TelemetryLogsConfig)
    # otelproc's own metrics and health endpoints
    metrics: TelemetryMetricsConfig = field(default_factory=TelemetryMetricsConfig)


@dataclass
class QueueConfig:
    # records accepted from receivers but not yet taken by the processors; above it
    # receivers answer 429 / RESOURCE_EXHAUSTED so clients retry (1 s at 100k logs/s: more only adds
    # memory and latency when the store is the bottleneck)
    max_records: int = setting(100_000, ge=1)
    # bytes of those records (bodies, attributes); above it receivers answer 429 too
    max_bytes: ByteSize = setting(ByteSize(256 << 20), gt=0)
    # most records the pipeline worker takes from the queue at once when it is behind (merged into one
    # batch, so per-batch costs of the processors are shared); 1 = never merge
    max_batch_records: int = setting(20_000, ge=1)
    # the Retry-After given to clients when the queue is full
    retry_after: Duration = setting(Duration(1.0), gt=0)


@dataclass
class ServiceConfig:
    # extensions to run (ids configured under the top-level extensions:)
    extensions: list[str] = field(default_factory=list)
    # otelproc's own logs and metrics
    telemetry: TelemetryConfig = field(default_factory=TelemetryConfig)
    # the bounded hand-off between receivers and each pipeline's processors
    queue: QueueConfig = field(default_factory=QueueConfig)
    # pipelines by id: logs or logs/<name>
    pipelines: dict[str, PipelineConfig] = field(default_factory=dict)


@dataclass
class OtelprocConfig:
    """The whole file, decoded. ``receivers`` etc. map component id -> typed config."""

    receivers: dict[str, Any]
    processors: dict[str, Any]
    exporters: dict[str, Any]
    service: ServiceConfig
    extensions: dict[str, Any] = field(default_factory=dict)
    source: str = ""


_TOP_KEYS = ("receivers", "processors", "exporters", "extensions", "connectors", "service")


def load_config(path: str | os.PathLike) -> OtelprocConfig:
    """Read, substitute, decode and validate a config file. Raises ConfigError with every problem."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise ConfigError([f"{path}: cannot read config file: {e.strerror}"]) from None
    return parse_config(text, source=str(p), base_dir=p.resolve().parent)


def parse_config(text: str, source: str = "<string>", base_dir: Path | None = None) -> OtelprocConfig:
    """Decode and validate config text. Relative :class:`ConfigRelativePath` values are taken relative
    to ``base_dir`` (the config file's directory), or stay as written when it is None."""
    token = _CONFIG_DIR.set(base_dir)
    try:
        return _parse_config(text, source)
    finally:
        _CONFIG_DIR.reset(token)


def _parse_config(text: str, source: str) -> OtelprocConfig:
    from otelproc.registry import factories

    errors: list[str] = []
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError([f"{source}: not valid YAML: {e}"]) from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError([f"{source}: the top level must be a mapping with receivers/processors/exporters/service"])
    raw = _substitute_env(raw, "", errors)
    for key in raw:
        if key not in _TOP_KEYS:
            errors.append(f"{key}: unknown top-level key; valid keys: extensions, receivers, processors, exporters, service")
        elif key == "connectors" and raw[key]:
            errors.append(f"{key}: not supported by otelproc")

    registry = factories()
    sections: dict[str, dict[str, Any]] = {}
    for kind in (Kind.EXTENSION, Kind.RECEIVER, Kind.PROCESSOR, Kind.EXPORTER):
        sections[kind.value] = {}
        comps = raw.get(kind.value) or {}
        if not isinstance(comps, dict):
            errors.append(f"{kind.value}: expected a mapping of component id -> settings")
            continue
        for cid, body in comps.items():
            cid = str(cid)
            ctype = cid.split("/", 1)[0]
            fac: Factory | None = registry.get((kind, ctype))
            if fac is None:
                known = sorted(t for (k, t) in registry if k == kind)
                errors.append(f"{kind.value}::{cid}: unknown {kind.value[:-1]} type {ctype!r}; known: {', '.join(known)}")
                continue
            sections[kind.value][cid] = decode(fac.config_class, body, f"{kind.value}::{cid}", errors)

    service = decode(ServiceConfig, raw.get("service"), "service", errors)
    if service is not None:
        for i, eid in enumerate(service.extensions):
            if eid not in (raw.get("extensions") or {}):
                errors.append(f"service::extensions[{i}]: {eid!r} is not configured under extensions:")
        if not service.pipelines:
            errors.append("service::pipelines: at least one pipeline is required (e.g. logs: {receivers: [otlp], exporters: [clickhouse]})")
        for pname, pipe in service.pipelines.items():
            if pname.split("/", 1)[0] != "logs":
                errors.append(f"service::pipelines::{pname}: only logs pipelines are supported (logs or logs/<name>)")
            if pipe is None:
                continue
            for kind in (Kind.RECEIVER, Kind.PROCESSOR, Kind.EXPORTER):
                ids = getattr(pipe, kind.value)
                for i, cid in enumerate(ids):
                    if cid not in (raw.get(kind.value) or {}):
                        errors.append(f"service::pipelines::{pname}::{kind.value}[{i}]: {cid!r} is not configured under {kind.value}:")
                if len(set(ids)) != len(ids):
                    errors.append(f"service::pipelines::{pname}::{kind.value}: lists a component twice")
    if errors:
        raise ConfigError(errors)
    return OtelprocConfig(receivers=sections["receivers"], processors=sections["processors"],
                          exporters=sections["exporters"], service=service, extensions=sections["extensions"],
                          source=source)
