"""LogBatch: the one columnar type every pipeline stage consumes.

A receiver builds a LogBatch once per request (numpy arrays, no per-record
Python objects); processors only *extend* it with new columns; exporters read
it. Kernels never see this class: they take its arrays.

Strings are stored Arrow-style as one ``uint8`` buffer plus ``int64`` offsets
(:class:`StringArray`). Resource and scope data is stored once per resource /
scope (a small table) and each record points into it with an index column, so
a request with 1,000 records from one resource carries its resource
attributes once, as the OTLP message does.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Iterable, Sequence

import numpy as np

__all__ = ["StringArray", "DictStringArray", "AttrMap", "LogBatch", "concat_batches"]

_EMPTY_U8 = np.zeros(0, dtype=np.uint8)


@dataclass(frozen=True)
class StringArray:
    """n UTF-8 strings: ``buf[off[i]:off[i+1]]`` is string i.

    buf : uint8[total_bytes]
    off : int64[n + 1], off[0] == 0, non-decreasing
    """

    buf: np.ndarray
    off: np.ndarray

    def __post_init__(self) -> None:
        if self.buf.dtype != np.uint8 or self.off.dtype != np.int64:
            raise TypeError(f"StringArray needs uint8 buf and int64 off, got {self.buf.dtype} and {self.off.dtype}")
        if len(self.off) == 0:
            raise ValueError("StringArray.off must have n + 1 >= 1 entries")

    def __len__(self) -> int:
        return len(self.off) - 1

    def __getitem__(self, i: int) -> str:
        return self.buf[self.off[i]:self.off[i + 1]].tobytes().decode("utf-8", "replace")

    def get_bytes(self, i: int) -> bytes:
        return self.buf[self.off[i]:self.off[i + 1]].tobytes()

    def to_pylist(self) -> list[str]:
        data = self.buf.tobytes()
        off = self.off.tolist()
        return [data[off[i]:off[i + 1]].decode("utf-8", "replace") for i in range(len(off) - 1)]

    @classmethod
    def from_pylist(cls, values: Iterable[str | bytes]) -> "StringArray":
        encoded = [v if isinstance(v, bytes) else v.encode("utf-8") for v in values]
        off = np.zeros(len(encoded) + 1, dtype=np.int64)
        if encoded:
            np.cumsum([len(e) for e in encoded], out=off[1:])
        buf = np.frombuffer(b"".join(encoded), dtype=np.uint8).copy() if encoded else _EMPTY_U8.copy()
        return cls(buf, off)

    @classmethod
    def empty(cls, n: int = 0) -> "StringArray":
        """n empty strings."""
        return cls(_EMPTY_U8.copy(), np.zeros(n + 1, dtype=np.int64))

    def take(self, idx: np.ndarray) -> "StringArray":
        """The strings at positions ``idx`` (any int array), as a new array."""
        from otelproc.kernels.strings import take_strings

        buf, off = take_strings(self.buf, self.off, idx)
        return StringArray(buf, off)

    def to_arrow(self):
        """A zero-copy ``pyarrow.large_string`` array over buf/off."""
        import pyarrow as pa

        return pa.LargeStringArray.from_buffers(
            len(self), pa.py_buffer(self.off), pa.py_buffer(self.buf))


class DictStringArray(StringArray):
    """n strings held as codes into a dictionary: string i is ``dictionary[codes[i]]``.

    codes      : int32[n], each in [0, len(dictionary))
    dictionary : StringArray (shared, never modified: a new one is made when a value changes)

    The patterns processor's ``pattern_template`` column: a few thousand templates for 20k+
    records, so per record it costs 4 bytes instead of a copy of the template text, ``take`` and
    ``concat_strings`` move codes only, and the store sends it to ClickHouse as an Arrow
    dictionary (LowCardinality(String)). It IS a StringArray: ``[i]``, ``get_bytes``,
    ``to_pylist``, ``len`` and ``to_arrow`` (plain large_string) give what the flat array would;
    ``buf``/``off`` are built on first access (so code that reads them still works, at the cost
    of the copy this class avoids).
    """

    codes: np.ndarray
    dictionary: StringArray
    distinct: bool  # the dictionary's values are all different (the producer promises it)

    def __init__(self, codes: np.ndarray, dictionary: StringArray, distinct: bool = False):
        # no super().__init__: buf/off are built on demand
        if isinstance(dictionary, DictStringArray):
            dictionary = StringArray(dictionary.buf, dictionary.off)
        if not isinstance(dictionary, StringArray):
            raise TypeError(f"dictionary must be a StringArray, got {type(dictionary).__name__}")
        codes = np.asarray(codes)
        if codes.ndim != 1 or codes.dtype.kind not in "iu":
            raise TypeError(f"codes must be a 1-d integer array, got {codes.dtype}{list(codes.shape)}")
        codes = codes.astype(np.int32, copy=False)
        if len(codes) and (int(codes.min()) < 0 or int(codes.max()) >= len(dictionary)):
            raise IndexError(f"DictStringArray: code out of range [0, {len(dictionary)})")
        object.__setattr__(self, "codes", codes)
        object.__setattr__(self, "dictionary", dictionary)
        object.__setattr__(self, "distinct", bool(distinct))
        object.__setattr__(self, "_flat", None)

    def _materialise(self) -> StringArray:
        flat = self._flat
        if flat is None:
            flat = self.dictionary.take(self.codes)
            object.__setattr__(self, "_flat", flat)
        return flat

    @property
    def buf(self) -> np.ndarray:  # type: ignore[override]
        return self._materialise().buf

    @property
    def off(self) -> np.ndarray:  # type: ignore[override]
        return self._materialise().off

    def __len__(self) -> int:
        return len(self.codes)

    def __getitem__(self, i: int) -> str:
        return self.dictionary[int(self.codes[i])]

    def __repr__(self) -> str:
        return f"DictStringArray(n={len(self.codes)}, dictionary={len(self.dictionary)} strings)"

    def get_bytes(self, i: int) -> bytes:
        return self.dictionary.get_bytes(int(self.codes[i]))

    def to_pylist(self) -> list[str]:
        values = self.dictionary.to_pylist()
        return [values[c] for c in self.codes.tolist()]

    def take(self, idx: np.ndarray) -> "DictStringArray":
        return DictStringArray(self.codes[np.asarray(idx, dtype=np.int64)], self.dictionary, self.distinct)

    def to_arrow_dictionary(self):
        """``pyarrow.DictionaryArray`` (int32 indices, large_string values, each value once).

        ClickHouse rejects a dictionary with repeated values for a LowCardinality column: unless
        the dictionary is ``distinct``, equal values are merged (a hash of the used entries).
        When records use less than half of the dictionary (a miner's dictionary holds every
        template, one batch may use a fraction), only the used entries are sent. O(n + dictionary).
        """
        import pyarrow as pa

        codes, dictionary = self.codes, self.dictionary
        if len(codes) == 0:
            return pa.DictionaryArray.from_arrays(pa.array(codes, type=pa.int32()),
                                                  pa.array([], type=pa.large_string()))
        used = np.bincount(codes, minlength=len(dictionary)) > 0
        n_used = int(used.sum())
        if self.distinct and 2 * n_used >= len(dictionary):
            return pa.DictionaryArray.from_arrays(pa.array(codes, type=pa.int32()), dictionary.to_arrow())
        keep = np.flatnonzero(used)
        values = dictionary.to_arrow().take(pa.array(keep))
        new_code = np.full(len(dictionary), -1, dtype=np.int32)
        if self.distinct:
            new_code[keep] = np.arange(n_used, dtype=np.int32)
        else:
            values = values.dictionary_encode()  # keep[j] -> position of its value among the distinct ones
            new_code[keep] = np.asarray(values.indices, dtype=np.int32)
            values = values.dictionary
        return pa.DictionaryArray.from_arrays(pa.array(new_code[codes], type=pa.int32()), values)


def _concat_dict_strings(parts: Sequence[DictStringArray]) -> DictStringArray:
    """Concatenated codes over the distinct dictionaries of ``parts`` (by identity: consecutive
    batches of one miner share its dictionary until a template changes, so usually one)."""
    base_of: dict[int, int] = {}
    dicts: list[StringArray] = []
    base = 0
    codes = []
    for p in parts:
        b = base_of.get(id(p.dictionary))
        if b is None:
            b = base_of[id(p.dictionary)] = base
            dicts.append(p.dictionary)
            base += len(p.dictionary)
        codes.append(p.codes + np.int32(b) if b else p.codes)
    if len(dicts) == 1:
        return DictStringArray(np.concatenate(codes).astype(np.int32, copy=False), dicts[0],
                               all(p.distinct for p in parts))
    return DictStringArray(np.concatenate(codes).astype(np.int32, copy=False), concat_strings(dicts))


def concat_strings(parts: Sequence[StringArray]) -> StringArray:
    if not parts:
        return StringArray.empty()
    if all(isinstance(p, DictStringArray) for p in parts):
        return _concat_dict_strings(parts)
    bufs = [p.buf[p.off[0]:p.off[-1]] for p in parts]
    offs = [np.zeros(1, dtype=np.int64)]
    base = 0
    for p in parts:
        offs.append(p.off[1:] - p.off[0] + base)
        base += int(p.off[-1] - p.off[0])
    return StringArray(np.concatenate(bufs) if bufs else _EMPTY_U8.copy(), np.concatenate(offs))


@dataclass(frozen=True)
class AttrMap:
    """A map<string,string> per row: entries ``off[i]:off[i+1]`` of keys/values belong to row i.

    Non-string OTLP AnyValues are stored as strings the way the Collector's
    ClickHouse exporter does: ints/doubles as their decimal text, bools as
    ``true``/``false``, bytes as base64, arrays and kvlists as JSON.
    """

    off: np.ndarray  # int64[rows + 1]
    keys: StringArray
    values: StringArray

    def __len__(self) -> int:
        return len(self.off) - 1

    def row(self, i: int) -> dict[str, str]:
        return {self.keys[j]: self.values[j] for j in range(int(self.off[i]), int(self.off[i + 1]))}

    def to_pylist(self) -> list[dict[str, str]]:
        keys, values = self.keys.to_pylist(), self.values.to_pylist()
        off = self.off.tolist()
        return [dict(zip(keys[off[i]:off[i + 1]], values[off[i]:off[i + 1]])) for i in range(len(off) - 1)]

    @classmethod
    def from_pylist(cls, rows: Iterable[dict[str, str]]) -> "AttrMap":
        keys: list[str] = []
        values: list[str] = []
        off = [0]
        for r in rows:
            for k, v in r.items():
                keys.append(k)
                values.append(v)
            off.append(len(keys))
        return cls(np.asarray(off, dtype=np.int64), StringArray.from_pylist(keys), StringArray.from_pylist(values))

    @classmethod
    def empty(cls, rows: int) -> "AttrMap":
        return cls(np.zeros(rows + 1, dtype=np.int64), StringArray.empty(), StringArray.empty())

    def take(self, idx: np.ndarray) -> "AttrMap":
        idx = np.asarray(idx, dtype=np.int64)
        lens = self.off[idx + 1] - self.off[idx]
        off = np.zeros(len(idx) + 1, dtype=np.int64)
        np.cumsum(lens, out=off[1:])
        owner = np.repeat(np.arange(len(idx)), lens)
        entries = self.off[idx][owner] + (np.arange(off[-1]) - off[:-1][owner])
        return AttrMap(off, self.keys.take(entries), self.values.take(entries))

    def to_arrow(self):
        """``pyarrow.map_(string, string)`` array, zero-copy over the buffers."""
        import pyarrow as pa

        off32 = self.off.astype(np.int32)
        # Arrow's MapArray needs 32-bit offsets for map entries; keys/values
        # themselves stay large_string (64-bit byte offsets).
        return pa.MapArray.from_arrays(pa.array(off32, type=pa.int32()), self.keys.to_arrow(), self.values.to_arrow())


def concat_maps(parts: Sequence[AttrMap]) -> AttrMap:
    offs = [np.zeros(1, dtype=np.int64)]
    base = 0
    for p in parts:
        offs.append(p.off[1:] - p.off[0] + base)
        base += int(p.off[-1] - p.off[0])
    return AttrMap(np.concatenate(offs), concat_strings([p.keys for p in parts]),
                   concat_strings([p.values for p in parts]))


@dataclass
class LogBatch:
    """n log records, column by column.

    Per record (length n):
      time_ns          int64   LogRecord.time_unix_nano (0 when unset)
      observed_ns      int64   LogRecord.observed_time_unix_nano (0 when unset)
      severity_number  uint8   LogRecord.severity_number (0..24)
      severity_text    StringArray
      body             StringArray  body text; non-string AnyValue bodies as JSON
      trace_id         uint8[n, 16] (all zero when unset)
      span_id          uint8[n, 8]  (all zero when unset)
      flags            uint32  LogRecord.flags (low byte = W3C trace flags)
      log_attrs        AttrMap with n rows
      resource_index   int32   row of the resource table for each record
      scope_index      int32   row of the scope table for each record
      service_index    int32   index into ``services`` (from resource service.name)
      event_name       StringArray  LogRecord.event_name ("" when unset); otel_logs.EventName

    Per resource (length r):
      resource_attrs      AttrMap with r rows
      resource_schema_url StringArray
    Per scope (length s):
      scope_name, scope_version, scope_schema_url  StringArray
      scope_attrs         AttrMap with s rows
    services: list[str]   distinct service names ("" when a resource has none)

    What processors add travels with the batch, so data flows one way and
    exporters decide where it lands:
      columns   per-record columns, name -> array[n] or StringArray[n]
                (``pattern_id`` uint64, ``pattern_template`` StringArray,
                ``pattern_params`` see otelproc.store.arrow, ``anomaly_score`` float32)
      tables    rows for other tables, table name -> pyarrow.Table
                (``log_patterns``, ``pattern_counts``, ``anomalies``, ``series``...);
                the clickhouse exporter inserts each into the table of that name
      findings  otelproc.findings.Finding list, read by the alerting processor
      wal_seq   (log id, first seq, last seq) of the write-ahead-log records this batch holds
                (otelproc.wal), or None; merged by concat_batches; exporters derive their
                insert deduplication tokens from it
    """

    time_ns: np.ndarray
    observed_ns: np.ndarray
    severity_number: np.ndarray
    severity_text: StringArray
    body: StringArray
    trace_id: np.ndarray
    span_id: np.ndarray
    flags: np.ndarray
    log_attrs: AttrMap
    resource_index: np.ndarray
    scope_index: np.ndarray
    service_index: np.ndarray
    resource_attrs: AttrMap
    resource_schema_url: StringArray
    scope_name: StringArray
    scope_version: StringArray
    scope_schema_url: StringArray
    scope_attrs: AttrMap
    services: list[str]
    # a default keeps constructors that predate the field working; __post_init__ makes it n empty strings
    event_name: StringArray | None = None
    columns: dict[str, Any] = field(default_factory=dict)
    tables: dict[str, Any] = field(default_factory=dict)
    findings: list = field(default_factory=list)
    wal_seq: tuple[str, int, int] | None = None

    def __post_init__(self) -> None:
        if self.event_name is None:
            # zero buffer + zero offsets: no per-record work for batches without event names
            self.event_name = StringArray.empty(len(self.time_ns))

    def __len__(self) -> int:
        return len(self.time_ns)

    @property
    def event_ns(self) -> np.ndarray:
        """Event time: the record's timestamp, else its observed time (int64[n])."""
        return np.where(self.time_ns != 0, self.time_ns, self.observed_ns)

    @property
    def service_names(self) -> np.ndarray:
        """Service name per record as an object array (for tests and small outputs)."""
        return np.asarray(self.services, dtype=object)[self.service_index] if len(self) else np.zeros(0, dtype=object)

    def with_columns(self, **cols: Any) -> "LogBatch":
        """A shallow copy with extra processor columns (the original is not modified)."""
        for name, col in cols.items():
            if len(col) != len(self):
                raise ValueError(f"column {name!r} has {len(col)} rows, batch has {len(self)}")
        return replace(self, columns={**self.columns, **cols})

    def with_table(self, name: str, table: Any) -> "LogBatch":
        """A shallow copy carrying extra rows for table ``name`` (appended to any already carried)."""
        if name in self.tables:
            import pyarrow as pa

            table = pa.concat_tables([self.tables[name], table], promote_options="default")
        return replace(self, tables={**self.tables, name: table})

    def with_findings(self, findings: Sequence[Any]) -> "LogBatch":
        """A shallow copy carrying extra findings."""
        return replace(self, findings=[*self.findings, *findings])

    def take(self, idx: np.ndarray) -> "LogBatch":
        """The records at positions ``idx`` (int array, any order, repeats allowed) as a new batch.

        Every per-record field and processor column is taken (numpy columns by fancy index,
        StringArray and pyarrow columns with their ``take``). Everything that is not per record
        (resource/scope tables, ``services``, ``tables``, ``findings``, ``wal_seq``) is shared
        unchanged, as in the other ``with_*`` copies: the index columns still point into the tables.
        """
        idx = np.asarray(idx, dtype=np.int64)
        columns = {name: col[idx] if isinstance(col, np.ndarray) else col.take(idx)
                   for name, col in self.columns.items()}
        return replace(
            self, time_ns=self.time_ns[idx], observed_ns=self.observed_ns[idx],
            severity_number=self.severity_number[idx], severity_text=self.severity_text.take(idx),
            body=self.body.take(idx), trace_id=self.trace_id[idx], span_id=self.span_id[idx], flags=self.flags[idx],
            log_attrs=self.log_attrs.take(idx), resource_index=self.resource_index[idx],
            scope_index=self.scope_index[idx], service_index=self.service_index[idx],
            event_name=self.event_name.take(idx), columns=columns)

    def check(self) -> None:
        """Raise ValueError if the columns are inconsistent (used by tests and decoders)."""
        n = len(self)
        for name in ("observed_ns", "severity_number", "flags", "resource_index", "scope_index", "service_index"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"{name} has {len(getattr(self, name))} rows, expected {n}")
        for name in ("severity_text", "body", "event_name"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"{name} has {len(getattr(self, name))} rows, expected {n}")
        if self.trace_id.shape != (n, 16) or self.span_id.shape != (n, 8):
            raise ValueError("trace_id must be uint8[n,16] and span_id uint8[n,8]")
        if len(self.log_attrs) != n:
            raise ValueError("log_attrs must have n rows")
        r, s = len(self.resource_attrs), len(self.scope_name)
        if len(self.resource_schema_url) != r:
            raise ValueError("resource_schema_url must have one row per resource")
        if not (len(self.scope_version) == len(self.scope_schema_url) == len(self.scope_attrs) == s):
            raise ValueError("scope columns must have one row per scope")
        if n:
            if self.resource_index.min() < 0 or self.resource_index.max() >= r:
                raise ValueError("resource_index out of range")
            if self.scope_index.min() < 0 or self.scope_index.max() >= s:
                raise ValueError("scope_index out of range")
            if self.service_index.min() < 0 or self.service_index.max() >= len(self.services):
                raise ValueError("service_index out of range")

    @classmethod
    def empty(cls) -> "LogBatch":
        return cls.from_records([])

    @classmethod
    def from_records(cls, records: Sequence[dict], resource: dict[str, str] | None = None,
                     scope_name: str = "", scope_version: str = "") -> "LogBatch":
        """Build a batch from Python dicts (tests, simulators, CLI; not the hot path).

        Each record may have: time_ns, observed_ns, severity_number, severity_text,
        body, trace_id (16 bytes or 32 hex chars), span_id (8 bytes or 16 hex),
        flags, attributes (dict), service (overrides resource service.name), event_name.
        """
        resource = dict(resource or {})
        # one resource per distinct service so that service.name stays a resource attribute
        svc_of = [r.get("service", resource.get("service.name", "")) for r in records]
        services = sorted(set(svc_of)) or [resource.get("service.name", "")]
        svc_code = {s: i for i, s in enumerate(services)}
        res_rows = []
        for s in services:
            attrs = dict(resource)
            if s:
                attrs["service.name"] = s
            res_rows.append(attrs)
        n = len(records)

        def ids(key: str, width: int) -> np.ndarray:
            out = np.zeros((n, width), dtype=np.uint8)
            for i, r in enumerate(records):
                v = r.get(key)
                if v:
                    b = bytes.fromhex(v) if isinstance(v, str) else bytes(v)
                    out[i] = np.frombuffer(b, dtype=np.uint8)
            return out

        service_index = np.asarray([svc_code[s] for s in svc_of], dtype=np.int32)
        return cls(
            time_ns=np.asarray([r.get("time_ns", 0) for r in records], dtype=np.int64),
            observed_ns=np.asarray([r.get("observed_ns", 0) for r in records], dtype=np.int64),
            severity_number=np.asarray([r.get("severity_number", 0) for r in records], dtype=np.uint8),
            severity_text=StringArray.from_pylist([r.get("severity_text", "") for r in records]),
            body=StringArray.from_pylist([r.get("body", "") for r in records]),
            trace_id=ids("trace_id", 16),
            span_id=ids("span_id", 8),
            flags=np.asarray([r.get("flags", 0) for r in records], dtype=np.uint32),
            log_attrs=AttrMap.from_pylist([r.get("attributes", {}) for r in records]),
            resource_index=service_index.copy(),
            scope_index=np.zeros(n, dtype=np.int32),
            service_index=service_index,
            resource_attrs=AttrMap.from_pylist(res_rows),
            resource_schema_url=StringArray.from_pylist([""] * len(res_rows)),
            scope_name=StringArray.from_pylist([scope_name]),
            scope_version=StringArray.from_pylist([scope_version]),
            scope_schema_url=StringArray.from_pylist([""]),
            scope_attrs=AttrMap.empty(1),
            services=services,
            event_name=StringArray.from_pylist([r.get("event_name", "") for r in records]),
        )


def concat_batches(batches: Sequence[LogBatch]) -> LogBatch:
    """One batch holding all records of ``batches`` in order (resource/scope tables re-indexed,
    service tables merged). Processor columns are kept only if every batch has them."""
    if len(batches) == 1:
        return batches[0]
    if not batches:
        return LogBatch.empty()
    services: list[str] = []
    code: dict[str, int] = {}
    service_index, resource_index, scope_index = [], [], []
    r_base = s_base = 0
    for b in batches:
        remap = np.asarray([code.setdefault(s, len(code)) for s in b.services], dtype=np.int32)
        service_index.append(remap[b.service_index] if len(b) else b.service_index)
        resource_index.append(b.resource_index + r_base)
        scope_index.append(b.scope_index + s_base)
        r_base += len(b.resource_attrs)
        s_base += len(b.scope_name)
    services = list(code)
    common = set(batches[0].columns)
    for b in batches[1:]:
        common &= set(b.columns)
    columns: dict[str, Any] = {}
    for name in common:
        first = batches[0].columns[name]
        if isinstance(first, StringArray):
            columns[name] = concat_strings([b.columns[name] for b in batches])
        else:
            columns[name] = np.concatenate([b.columns[name] for b in batches])
    tables: dict[str, Any] = {}
    for b in batches:
        for tname, t in b.tables.items():
            tables.setdefault(tname, []).append(t)
    if tables:
        import pyarrow as pa

        tables = {k: pa.concat_tables(v, promote_options="default") for k, v in tables.items()}
    cat = np.concatenate
    return LogBatch(
        time_ns=cat([b.time_ns for b in batches]),
        observed_ns=cat([b.observed_ns for b in batches]),
        severity_number=cat([b.severity_number for b in batches]),
        severity_text=concat_strings([b.severity_text for b in batches]),
        body=concat_strings([b.body for b in batches]),
        trace_id=cat([b.trace_id for b in batches]),
        span_id=cat([b.span_id for b in batches]),
        flags=cat([b.flags for b in batches]),
        log_attrs=concat_maps([b.log_attrs for b in batches]),
        resource_index=cat(resource_index).astype(np.int32),
        scope_index=cat(scope_index).astype(np.int32),
        service_index=cat(service_index).astype(np.int32),
        resource_attrs=concat_maps([b.resource_attrs for b in batches]),
        resource_schema_url=concat_strings([b.resource_schema_url for b in batches]),
        scope_name=concat_strings([b.scope_name for b in batches]),
        scope_version=concat_strings([b.scope_version for b in batches]),
        scope_schema_url=concat_strings([b.scope_schema_url for b in batches]),
        scope_attrs=concat_maps([b.scope_attrs for b in batches]),
        services=services,
        event_name=concat_strings([b.event_name for b in batches]),
        columns=columns,
        tables=tables,
        findings=[f for b in batches for f in b.findings],
        wal_seq=_merge_wal_seq([b.wal_seq for b in batches]),
    )


def _merge_wal_seq(parts: Sequence[tuple[str, int, int] | None]) -> tuple[str, int, int] | None:
    """The WAL range covering every part (batches flow in WAL order, so the range is contiguous)."""
    present = [p for p in parts if p is not None]
    if not present:
        return None
    return (present[0][0], min(p[1] for p in present), max(p[2] for p in present))
