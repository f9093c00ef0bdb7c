"""A ClickHouse ``Native`` decoder written from clickhouse-go's decoding rules (github.com/ClickHouse/clickhouse-go,
v2, read at commit 0c09672d), used as an independent client of the query endpoint. Nothing here comes from
otelproc: the rules are the Go client's, which Grafana's ClickHouse plugin runs.

Where each rule comes from (clickhouse-go paths):
- conn_http.go ``dialHttp``: every request carries ``default_format=Native`` and
  ``client_protocol_version=ClientTCPProtocolVersion`` (client_info.go: ``proto.DBMS_TCP_PROTOCOL_VERSION``,
  lib/proto/const.go: 54460); ``queryHello`` runs ``SELECT displayName(), version(), revision(), timezone()``
  (decoded at 54460) and later blocks are decoded at the revision() the server answered.
- lib/proto/block.go ``Block.Decode``: if revision > 0, ``decodeBlockInfo`` (UVarInt field 1, Bool
  is_overflows, UVarInt field 2, Int32 bucket_num, UVarInt 0); UVarInt columns, UVarInt rows; per column
  Str name, Str type, if revision >= DBMS_MIN_REVISION_WITH_CUSTOM_SERIALIZATION (54454) a Bool that must be
  false ("custom serialization ... not supported"); if rows != 0, ``ReadStatePrefix`` of CustomSerialization
  columns, then ``Decode(reader, rows)``.
- ch-go proto (the Reader and ColStr/ColumnOf types clickhouse-go decodes with): UVarInt is LEB128; Str is
  UVarInt length + bytes; fixed-width values little-endian, ``rows`` of them back to back.
- lib/column/nullable.go: UInt8 null map (rows bytes), then the base column (rows values); prefix = base's.
- lib/column/array.go: UInt64 end offsets (rows), then the values column with (last offset) rows; prefix =
  values' prefix.
- lib/column/map.go: UInt64 offsets, then keys and values columns of (last offset) rows; prefix = keys' then
  values'.
- lib/column/tuple.go: each element column with rows values; prefix = each element's, in order.
- lib/column/lowcardinality.go: prefix UInt64 keys version, must be 1 (sharedDictionariesWithAdditionalKeys);
  Decode: UInt64 serialization type (low byte 0..3 = UInt8/16/32/64 positions; bit 8 global dictionary is an
  error; bit 9 additional keys must be set), Int64 dictionary size, the dictionary column (the inner type,
  Nullable stripped), Int64 rows, the positions; in LowCardinality(Nullable(T)) position 0 is NULL.
- lib/column/enum.go, enum8.go, enum16.go: Int8 / Int16 values named by the type's 'name' = value list.
- lib/column/datetime.go (UInt32 seconds), datetime64.go (Int64 ticks of 10^-precision s), date.go (UInt16
  days), date32.go (Int32 days), decimal.go (Decimal32/64/128/256 by precision <= 9/18/38/76), uuid.go
  (16 bytes, two UInt64 halves), ipv4.go (UInt32), bool.go (UInt8), fixed_string.go (N bytes),
  nothing.go (one byte per row), simple_aggregate_function.go (the inner type).
"""
from __future__ import annotations

import datetime as dt
import decimal
import ipaddress
import re
import struct
import uuid
from dataclasses import dataclass, field

CUSTOM_SERIALIZATION_REVISION = 54454  # lib/proto/const.go DBMS_MIN_REVISION_WITH_CUSTOM_SERIALIZATION

_INTS = {"UInt8": "<B", "UInt16": "<H", "UInt32": "<I", "UInt64": "<Q", "Int8": "<b", "Int16": "<h",
         "Int32": "<i", "Int64": "<q", "Float32": "<f", "Float64": "<d", "Bool": "<?"}
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)


class DecodeError(AssertionError):
    pass


class Reader:
    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise DecodeError(f"need {n} bytes at {self.pos}, only {len(self.data) - self.pos} left")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def uvarint(self) -> int:
        value = shift = 0
        while True:
            b = self.take(1)[0]
            value |= (b & 0x7F) << shift
            if b < 0x80:
                return value
            shift += 7

    def str(self) -> bytes:
        return self.take(self.uvarint())

    def fixed(self, fmt: str, rows: int) -> list:
        size = struct.calcsize(fmt)
        return [v[0] for v in struct.iter_unpack(fmt, self.take(size * rows))] if rows else []

    def int_le(self, width: int, signed: bool = True) -> int:
        return int.from_bytes(self.take(width), "little", signed=signed)


def _args(type_name: str) -> tuple[str, list[str]]:
    i = type_name.find("(")
    if i < 0:
        return type_name, []
    inner, args, depth, start, quote = type_name[i + 1:-1], [], 0, 0, None
    for j, c in enumerate(inner):
        if quote:
            quote = None if c == quote and inner[j - 1] != "\\" else quote
        elif c in "'`":
            quote = c
        elif c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
        elif c == "," and depth == 0:
            args.append(inner[start:j].strip())
            start = j + 1
    args.append(inner[start:].strip())
    return type_name[:i], args


class Column:
    """One column type: prefix() reads its state prefix, decode(rows) its values."""

    def __init__(self, type_name: str):
        self.type = type_name
        self.name, self.args = _args(type_name)
        n, a = self.name, self.args
        if n in ("Nullable", "Array", "LowCardinality", "SimpleAggregateFunction"):
            self.inner = Column(a[-1])
        elif n == "Map":
            self.keys, self.values = Column(a[0]), Column(a[1])
        elif n == "Tuple":
            # named elements are "name Type" (lib/column/tuple.go splits the name off; a named tuple's row is a
            # map of name -> value)
            named = [re.match(r"^[A-Za-z_]\w* ", e) is not None for e in a]
            self.elem_names = [e.split(" ", 1)[0] for e in a] if all(named) else None
            self.elems = [Column(e.split(" ", 1)[1] if is_named else e) for e, is_named in zip(a, named)]
        elif n in ("Enum8", "Enum16"):
            self.labels = {int(v): k for k, v in re.findall(r"'((?:[^'\\]|\\.)*)'\s*=\s*(-?\d+)", ",".join(a))}
        if n == "LowCardinality":
            self.dictionary = self.inner.inner if self.inner.name == "Nullable" else self.inner

    def prefix(self, r: Reader) -> None:
        if self.name == "LowCardinality":
            version = r.int_le(8, signed=False)
            if version != 1:
                raise DecodeError(f"invalid key serialization version value {version}")
        elif self.name in ("Nullable", "Array", "SimpleAggregateFunction"):
            self.inner.prefix(r)
        elif self.name == "Map":
            self.keys.prefix(r)
            self.values.prefix(r)
        elif self.name == "Tuple":
            for e in self.elems:
                e.prefix(r)

    def decode(self, r: Reader, rows: int) -> list:
        n, a = self.name, self.args
        if n in _INTS:
            return r.fixed(_INTS[n], rows)
        if n == "String":
            return [r.str().decode("utf-8", "surrogateescape") for _ in range(rows)]
        if n == "FixedString":
            return [r.take(int(a[0])) for _ in range(rows)]
        if n in ("Enum8", "Enum16"):
            return [self.labels[v] for v in r.fixed("<b" if n == "Enum8" else "<h", rows)]
        if n == "DateTime":
            return [_EPOCH + dt.timedelta(seconds=s) for s in r.fixed("<I", rows)]
        if n == "DateTime64":
            scale = 10 ** int(a[0])
            return [_EPOCH + dt.timedelta(microseconds=t * 1_000_000 // scale) for t in r.fixed("<q", rows)]
        if n in ("Date", "Date32"):
            return [dt.date(1970, 1, 1) + dt.timedelta(days=d) for d in r.fixed("<H" if n == "Date" else "<i", rows)]
        if n == "Decimal":
            precision, scale = int(a[0]), int(a[1])
            width = 4 if precision <= 9 else 8 if precision <= 18 else 16 if precision <= 38 else 32
            return [decimal.Decimal(r.int_le(width)).scaleb(-scale) for _ in range(rows)]
        if n == "UUID":
            return [uuid.UUID(bytes=(lambda b: b[7::-1] + b[:7:-1])(r.take(16))) for _ in range(rows)]
        if n == "IPv4":
            return [ipaddress.IPv4Address(v) for v in r.fixed("<I", rows)]
        if n == "Nothing":
            r.take(rows)
            return [None] * rows
        if n == "SimpleAggregateFunction":
            return self.inner.decode(r, rows)
        if n == "Nullable":
            nulls = r.take(rows)
            values = self.inner.decode(r, rows)
            return [None if nulls[i] else v for i, v in enumerate(values)]
        if n == "Array":
            offsets = r.fixed("<Q", rows)
            values = self.inner.decode(r, offsets[-1] if offsets else 0)
            return [values[s:e] for s, e in zip([0] + offsets[:-1], offsets)]
        if n == "Map":
            offsets = r.fixed("<Q", rows)
            size = offsets[-1] if offsets else 0
            keys, values = self.keys.decode(r, size), self.values.decode(r, size)
            return [dict(zip(keys[s:e], values[s:e])) for s, e in zip([0] + offsets[:-1], offsets)]
        if n == "Tuple":
            cols = [e.decode(r, rows) for e in self.elems]
            if self.elem_names:
                return [dict(zip(self.elem_names, (c[i] for c in cols))) for i in range(rows)]
            return [tuple(c[i] for c in cols) for i in range(rows)]
        if n == "LowCardinality":
            if rows == 0:
                return []
            kind = r.int_le(8, signed=False)
            if kind & (1 << 8):
                raise DecodeError("global dictionary is not supported")
            if not kind & (1 << 9):
                raise DecodeError("additional keys bit is missing")
            index_fmt = {0: "<B", 1: "<H", 2: "<I", 3: "<Q"}[kind & 0xFF]
            dictionary = self.dictionary.decode(r, r.int_le(8))
            positions = r.fixed(index_fmt, r.int_le(8))
            if len(positions) != rows:
                raise DecodeError(f"LowCardinality: {len(positions)} positions for {rows} rows")
            nullable = self.inner.name == "Nullable"
            return [None if nullable and p == 0 else dictionary[p] for p in positions]
        raise DecodeError(f"no decoder for type {self.type}")


@dataclass
class Block:
    names: list[str]
    types: list[str]
    columns: list[list] = field(default_factory=list)
    rows: int = 0


def decode_native(data: bytes, revision: int) -> list[Block]:
    """Every block of ``data``; raises DecodeError unless every byte is consumed by whole blocks."""
    r = Reader(data)
    blocks = []
    while r.pos < len(data):
        if revision > 0:  # decodeBlockInfo
            if r.uvarint() != 1:
                raise DecodeError("BlockInfo: expected field 1")
            r.take(1)
            if r.uvarint() != 2:
                raise DecodeError("BlockInfo: expected field 2")
            r.take(4)
            if r.uvarint() != 0:
                raise DecodeError("BlockInfo: expected the end marker 0")
        ncols, nrows = r.uvarint(), r.uvarint()
        block = Block([], [], [], nrows)
        for _ in range(ncols):
            name, type_name = r.str().decode(), r.str().decode()
            col = Column(type_name)
            if revision >= CUSTOM_SERIALIZATION_REVISION and r.take(1) != b"\x00":
                raise DecodeError(f"custom serialization for column {name}")
            values: list = []
            if nrows:
                col.prefix(r)
                values = col.decode(r, nrows)
            block.names.append(name)
            block.types.append(type_name)
            block.columns.append(values)
        blocks.append(block)
    if r.pos != len(data):
        raise DecodeError(f"{len(data) - r.pos} bytes left over")
    return blocks


def rows_of(blocks: list[Block]) -> tuple[list[str], list[str], list[tuple]]:
    """(names, types, rows) of all blocks, checking every block has the same columns."""
    if not blocks:
        return [], [], []
    names, types = blocks[0].names, blocks[0].types
    rows: list[tuple] = []
    for b in blocks:
        if (b.names, b.types) != (names, types):
            raise DecodeError(f"block columns changed: {b.names} {b.types} after {names} {types}")
        rows += list(zip(*b.columns)) if b.columns else []
    return names, types, rows
