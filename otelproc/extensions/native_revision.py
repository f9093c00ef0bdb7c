"""Native output at a client protocol revision, as a ClickHouse server writes it over HTTP.

chDB writes ``Native`` at revision 0 (what clickhouse-connect reads). A client that sends
``client_protocol_version=N`` (clickhouse-go >= 2.37, and so Grafana's ClickHouse plugin, sends
54460) gets from a ClickHouse server the block layout of its TCP protocol at that revision
(``NativeWriter::write`` in ClickHouse's src/Formats/NativeWriter.cpp):

- before each block, its ``BlockInfo``: field 1 ``is_overflows`` (UInt8 0), field 2 ``bucket_num``
  (Int32 -1), from revision 54480 field 3 ``out_of_order_buckets`` (an empty vector), then 0;
- from revision 54454 (custom serialization), one byte after each column's type saying whether the
  column uses a custom serialization kind. A column converted from revision 0 uses the default
  serialization, so the byte is 0, which is what a server writes for a dense column;
- from revision 54337 a top-level ``DateTime('tz')`` column keeps its time zone in its type name (revision
  0 gets plain ``DateTime``): the caller passes the result's real type names for that;
- column data is the same bytes at every revision for the types handled here.

:func:`native_at_revision` rewrites revision-0 Native into that layout. Inserting bytes between a
column's type and its data needs the length of every column's data, so this module walks each type's
bulk serialization (fixed-width values, String, FixedString, Nullable, Array, Map, Tuple,
LowCardinality, Enum, Decimal, geo types, SimpleAggregateFunction). Types whose data cannot be
walked without their internal state (AggregateFunction, Dynamic, Variant, JSON, Object) raise
:class:`NativeFormatError`: the caller answers with an error naming the column and the way out
(cast it to String).
"""
from __future__ import annotations

import re
from functools import lru_cache
from typing import Callable

__all__ = ["NativeFormatError", "native_at_revision", "has_plain_datetime", "MIN_REVISION", "REVISION_CUSTOM_SERIALIZATION",
           "REVISION_OUT_OF_ORDER_BUCKETS"]

#: oldest revision with LowCardinality in Native (DBMS_MIN_REVISION_WITH_LOW_CARDINALITY_TYPE); older
#: clients get LowCardinality columns rewritten as their inner type, which this module does not do
MIN_REVISION = 54405
#: DBMS_MIN_REVISION_WITH_CUSTOM_SERIALIZATION: the serialization-kind byte after each column type
REVISION_CUSTOM_SERIALIZATION = 54454
#: DBMS_MIN_REVISION_WITH_OUT_OF_ORDER_BUCKETS_IN_AGGREGATION: BlockInfo field 3
REVISION_OUT_OF_ORDER_BUCKETS = 54480

# LowCardinality bulk serialization (SerializationLowCardinality.cpp)
_LC_SHARED_DICTIONARIES_WITH_ADDITIONAL_KEYS = 1
_LC_INDEX_TYPE_MASK = 0xFF
_LC_NEED_GLOBAL_DICTIONARY = 1 << 8
_LC_HAS_ADDITIONAL_KEYS = 1 << 9

_FIXED_WIDTH = {
    "UInt8": 1, "UInt16": 2, "UInt32": 4, "UInt64": 8, "UInt128": 16, "UInt256": 32,
    "Int8": 1, "Int16": 2, "Int32": 4, "Int64": 8, "Int128": 16, "Int256": 32,
    "Float32": 4, "Float64": 8, "BFloat16": 2, "Bool": 1,
    "Date": 2, "Date32": 4, "DateTime": 4, "DateTime64": 8, "Time": 4, "Time64": 8,
    "UUID": 16, "IPv4": 4, "IPv6": 16, "Enum8": 1, "Enum16": 2,
    "Decimal32": 4, "Decimal64": 8, "Decimal128": 16, "Decimal256": 32,
    "Nothing": 1,  # SerializationNothing writes one zero byte per row
}
_GEO_ALIASES = {
    "Point": "Tuple(Float64, Float64)", "Ring": "Array(Point)", "LineString": "Array(Point)",
    "MultiLineString": "Array(LineString)", "Polygon": "Array(Ring)", "MultiPolygon": "Array(Polygon)",
}
_STATEFUL_TYPES = ("AggregateFunction", "Dynamic", "Variant", "JSON", "Object", "QBit")
_NAMED_ELEMENT_RE = re.compile(r"^(`(?:[^`\\]|\\.)*`|[A-Za-z_][A-Za-z0-9_]*)\s+(\S.*)$", re.S)

# A walker of one type: prefix(buf, pos) -> pos after the state prefix;
# data(buf, pos, rows) -> pos after ``rows`` values
Prefix = Callable[[bytes, int], int]
Data = Callable[[bytes, int, int], int]


class NativeFormatError(ValueError):
    """The Native data cannot be rewritten (a type this module cannot walk, or malformed bytes)."""


def _uvarint(buf: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise NativeFormatError("malformed VarUInt")


def _split_type(type_name: str) -> tuple[str, list[str]]:
    """``Map(LowCardinality(String), String)`` -> ("Map", ["LowCardinality(String)", "String"])."""
    t = type_name.strip()
    i = t.find("(")
    if i < 0:
        return t, []
    if not t.endswith(")"):
        raise NativeFormatError(f"cannot parse type {type_name!r}")
    name, inner = t[:i].strip(), t[i + 1:-1]
    args, depth, start, quote, j = [], 0, 0, "", 0
    while j < len(inner):
        c = inner[j]
        if quote:
            if c == "\\":
                j += 1
            elif c == quote:
                quote = ""
        elif c in "'`\"":
            quote = c
        elif c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
        elif c == "," and depth == 0:
            args.append(inner[start:j].strip())
            start = j + 1
        j += 1
    args.append(inner[start:].strip())
    return name, args


def _element_type(arg: str) -> str:
    """A Tuple element: ``name Type`` or ``Type``."""
    paren = arg.find("(")
    head = arg if paren < 0 else arg[:paren]
    m = _NAMED_ELEMENT_RE.match(arg)
    if m and (" " in head.strip() or head.lstrip().startswith("`")):
        return m.group(2)
    return arg


def _no_prefix(buf: bytes, pos: int) -> int:
    return pos


def _fixed(width: int) -> Data:
    def data(buf: bytes, pos: int, rows: int) -> int:
        return pos + width * rows
    return data


def _strings(buf: bytes, pos: int, rows: int) -> int:
    for _ in range(rows):
        b = buf[pos]
        if b < 0x80:
            pos += 1 + b
        else:
            length, pos = _uvarint(buf, pos)
            pos += length
    return pos


def _last_offset(buf: bytes, pos: int, rows: int) -> int:
    return int.from_bytes(buf[pos + 8 * (rows - 1):pos + 8 * rows], "little") if rows else 0


@lru_cache(maxsize=512)
def walker(type_name: str) -> tuple[Prefix, Data]:
    """(prefix, data) walkers of one column type's bulk serialization."""
    name, args = _split_type(type_name)
    if name in _GEO_ALIASES and not args:
        return walker(_GEO_ALIASES[name])
    if name.startswith("Interval") and not args:
        return _no_prefix, _fixed(8)
    if name == "Decimal":
        precision = int(args[0])
        return _no_prefix, _fixed(4 if precision <= 9 else 8 if precision <= 18 else 16 if precision <= 38 else 32)
    if name in _FIXED_WIDTH:
        return _no_prefix, _fixed(_FIXED_WIDTH[name])
    if name == "String":
        return _no_prefix, _strings
    if name == "FixedString":
        return _no_prefix, _fixed(int(args[0]))
    if name == "SimpleAggregateFunction":
        return walker(args[-1])
    if name == "Nullable":
        inner_prefix, inner_data = walker(args[0])

        def nullable(buf: bytes, pos: int, rows: int) -> int:
            return inner_data(buf, pos + rows, rows)  # null map (one byte per row), then the values
        return inner_prefix, nullable
    if name in ("Array", "Map"):
        elems = [walker(a) for a in args] if name == "Map" else [walker(args[0])]

        def prefix(buf: bytes, pos: int) -> int:
            for p, _ in elems:
                pos = p(buf, pos)
            return pos

        def array(buf: bytes, pos: int, rows: int) -> int:
            total = _last_offset(buf, pos, rows)  # UInt64 end offsets, then the flattened values
            pos += 8 * rows
            for _, d in elems:
                pos = d(buf, pos, total)
            return pos
        return prefix, array
    if name == "Tuple":
        elems = [walker(_element_type(a)) for a in args]

        def tuple_prefix(buf: bytes, pos: int) -> int:
            for p, _ in elems:
                pos = p(buf, pos)
            return pos

        def tuple_data(buf: bytes, pos: int, rows: int) -> int:
            for _, d in elems:
                pos = d(buf, pos, rows)
            return pos
        return tuple_prefix, tuple_data
    if name == "LowCardinality":
        dict_type = args[0]
        inner_name, inner_args = _split_type(dict_type)
        if inner_name == "Nullable":  # the dictionary holds the plain type; index 0 is NULL
            dict_type = inner_args[0]
        _, dict_data = walker(dict_type)

        def lc_prefix(buf: bytes, pos: int) -> int:
            version = int.from_bytes(buf[pos:pos + 8], "little")
            if version != _LC_SHARED_DICTIONARIES_WITH_ADDITIONAL_KEYS:
                raise NativeFormatError(f"LowCardinality keys serialization version {version} is not supported")
            return pos + 8

        def lc_data(buf: bytes, pos: int, rows: int) -> int:
            while rows > 0:  # one granule per loop: flags, [dictionary], indexes
                flags = int.from_bytes(buf[pos:pos + 8], "little")
                pos += 8
                if flags & _LC_NEED_GLOBAL_DICTIONARY:
                    raise NativeFormatError("LowCardinality with a global dictionary is not supported")
                width = 1 << (flags & _LC_INDEX_TYPE_MASK)
                if flags & _LC_HAS_ADDITIONAL_KEYS:
                    keys = int.from_bytes(buf[pos:pos + 8], "little")
                    pos = dict_data(buf, pos + 8, keys)
                granule = int.from_bytes(buf[pos:pos + 8], "little")
                if granule == 0 or granule > rows:
                    raise NativeFormatError(f"LowCardinality granule of {granule} rows (expected 1..{rows})")
                pos += 8 + width * granule
                rows -= granule
            return pos
        return lc_prefix, lc_data
    if name in _STATEFUL_TYPES:
        raise NativeFormatError(f"type {type_name} cannot be sent at a client protocol revision by this endpoint")
    raise NativeFormatError(f"unknown type {type_name}")


def _block_info(revision: int) -> bytes:
    # (field 1) is_overflows = 0, (field 2) bucket_num = -1, [(field 3) out_of_order_buckets = []], end
    return (b"\x01\x00\x02\xff\xff\xff\xff" + (b"\x03\x00" if revision >= REVISION_OUT_OF_ORDER_BUCKETS else b"")
            + b"\x00")


def _uvarint_bytes(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def has_plain_datetime(data: bytes) -> bool:
    """Whether revision-0 Native ``data`` may hold a ``DateTime`` column whose time zone revision 0 dropped
    (the type name ``DateTime`` preceded by its length)."""
    return b"\x08DateTime" in data


def native_at_revision(data: bytes, revision: int, column_types: list[str] | None = None) -> bytes:
    """Revision-0 Native ``data`` (one or more blocks) rewritten at client protocol ``revision``.

    ``column_types``: the result's type names as the engine knows them (e.g. from ``DESCRIBE``), which
    restore the time zone of ``DateTime('tz')`` columns; without them such columns stay ``DateTime``.
    Raises NativeFormatError for a revision below :data:`MIN_REVISION` (other than 0), a column type
    that cannot be walked, or bytes that do not parse as Native.
    """
    if revision <= 0:
        return data
    if revision < MIN_REVISION:
        raise NativeFormatError(f"client_protocol_version {revision} is older than this endpoint supports "
                                f"(0, or {MIN_REVISION} and later)")
    info = _block_info(revision)
    kind_byte = b"\x00" if revision >= REVISION_CUSTOM_SERIALIZATION else b""
    view = memoryview(data)
    out: list = []
    pos, end = 0, len(data)
    column = "?"
    try:
        while pos < end:
            out.append(info)
            start = pos
            columns, pos = _uvarint(data, pos)
            rows, pos = _uvarint(data, pos)
            for i in range(columns):
                length, pos = _uvarint(data, pos)
                column = bytes(view[pos:pos + length]).decode("utf-8", "replace")
                type_start = pos + length
                length, pos = _uvarint(data, type_start)
                type_name = bytes(view[pos:pos + length]).decode("utf-8")
                pos += length
                real = column_types[i] if column_types is not None and i < len(column_types) else type_name
                if type_name == "DateTime" and real.startswith("DateTime("):
                    out.append(view[start:type_start])
                    out.append(_uvarint_bytes(len(real.encode())) + real.encode())
                else:
                    out.append(view[start:pos])
                out.append(kind_byte)
                start = pos
                if rows:
                    prefix, walk = walker(type_name)
                    pos = walk(data, prefix(data, pos), rows)
            out.append(view[start:pos])
    except NativeFormatError as e:
        raise NativeFormatError(f"column {column!r}: {e}; cast it to String (toString(...)) or query with "
                                f"client_protocol_version=0") from None
    except (IndexError, ValueError) as e:
        raise NativeFormatError(f"malformed Native data at byte {pos} (column {column!r}): {e}") from None
    if pos != end:
        raise NativeFormatError(f"malformed Native data: a column ends at byte {pos}, past the {end} bytes")
    return b"".join(out)
