"""LogBatch -> pyarrow.Table with the ``otel_logs`` columns, built from the numpy columns without
any per-record Python: strings are zero-copy LargeString views of the batch buffers, maps are
MapArrays over the AttrMap offsets, resource/scope values are gathered with ``take``.

Column semantics (the Collector clickhouseexporter's, plus otelproc's enrichment):

  Timestamp          timestamp[ns, UTC] = ``batch.event_ns``: the record's time_unix_nano, or its
                     observed_time_unix_nano when the record has no time (as filelog sends them);
                     0 only when both are unset. (TimestampTime is a DEFAULT of the table.)
  TraceId / SpanId   lowercase hex of the 16/8 id bytes, "" when all zero (unset)
  TraceFlags         flags & 0xff (the W3C trace flags byte)
  ServiceName        the resource's service.name (``services[service_index]``), dictionary-encoded
  Resource*/Scope*   from the per-resource / per-scope tables via resource_index / scope_index
  EventName          ``batch.event_name``: LogRecord.event_name, "" when unset
  PatternId          ``columns["pattern_id"]`` uint64, else 0
  PatternTemplate    ``columns["pattern_template"]`` StringArray, else ""; a DictStringArray (what the
                     patterns processor makes) goes as an Arrow dictionary column (LowCardinality)
  PatternParams      ``columns["pattern_params"]``, else []: see below
  AnomalyScore       ``columns["anomaly_score"]`` float32, else 0

``pattern_params`` representation: a :class:`~otelproc.batch.StringArray` with one string per
record holding that record's parameters, EACH followed by the byte 0x1f (ASCII unit separator):
``["GET", "/x"]`` is ``"GET\\x1f/x\\x1f"``, ``[]`` is ``""`` and ``[""]`` is ``"\\x1f"``. Being a
plain StringArray it survives ``LogBatch.with_columns`` and ``concat_batches`` unchanged, a Numba
kernel can write it directly (parameter bytes, then 0x1f), and :func:`params_to_arrow` turns it
into ``list<string>`` with a few vectorised numpy passes. A pyarrow list<string> array is also
accepted. A 0x1f byte cannot occur inside a parameter; :func:`encode_params` replaces it by a space.
"""
from __future__ import annotations

from typing import Any, Iterable, Sequence

import numpy as np
import pyarrow as pa

from otelproc.batch import DictStringArray, LogBatch, StringArray

__all__ = [
    "PARAM_TERMINATOR", "OTEL_LOGS_COLUMNS", "logs_to_arrow", "hex_ids", "encode_params",
    "params_to_arrow", "params_to_pylist",
]

PARAM_TERMINATOR = 0x1F

#: otel_logs columns logs_to_arrow produces, in table order (TimestampTime is a table DEFAULT)
OTEL_LOGS_COLUMNS = (
    "Timestamp", "TraceId", "SpanId", "TraceFlags", "SeverityText", "SeverityNumber", "ServiceName", "Body",
    "ResourceSchemaUrl", "ResourceAttributes", "ScopeSchemaUrl", "ScopeName", "ScopeVersion", "ScopeAttributes",
    "LogAttributes", "EventName", "PatternId", "PatternTemplate", "PatternParams", "AnomalyScore",
)

# "00".."ff" as 256 two-byte uint16 cells: hex of an id is one fancy-index (one uint16 per input
# byte, 4x faster than gathering a (256, 2) byte table), no loop
_HEX16 = np.frombuffer(b"".join(b"%02x" % i for i in range(256)), dtype=np.uint16).copy()


def hex_ids(ids: np.ndarray) -> StringArray:
    """Lowercase hex strings of fixed-width ids; "" for an all-zero (unset) id.

    Parameters
    ----------
    ids : uint8[n, w]
        One id per row (w = 16 for trace ids, 8 for span ids).

    Returns
    -------
    StringArray
        n strings of 2*w hex digits or empty.
    """
    if ids.dtype != np.uint8 or ids.ndim != 2:
        raise TypeError(f"hex_ids needs a uint8[n, w] array, got {ids.dtype}{list(ids.shape)}")
    n, w = ids.shape
    if w % 8 == 0 and ids.flags.c_contiguous:
        present = ids.view(np.uint64).reshape(n, w // 8).any(axis=1)  # 8 bytes per compare
    else:
        present = ids.any(axis=1)
    digits = _HEX16[ids[present]].view(np.uint8).reshape(-1)  # (k, w) uint16 -> k*2w bytes
    off = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.where(present, 2 * w, 0), out=off[1:])
    return StringArray(np.ascontiguousarray(digits), off)


def encode_params(rows: Iterable[Sequence[str]]) -> StringArray:
    """The ``pattern_params`` StringArray for lists of parameters (tests, Python-side producers)."""
    sep = chr(PARAM_TERMINATOR)
    return StringArray.from_pylist(["".join(p.replace(sep, " ") + sep for p in params) for params in rows])


def params_to_arrow(params: StringArray) -> pa.LargeListArray:
    """``large_list<large_string>`` from the 0x1f-terminated ``pattern_params`` encoding (vectorised).

    Raises ValueError naming the first record whose text does not end with 0x1f.
    """
    off = params.off - params.off[0]
    buf = params.buf[params.off[0]:params.off[-1]]
    ends = off[1:]
    nonempty = ends > off[:-1]
    bad = np.flatnonzero(nonempty & (buf[np.maximum(ends - 1, 0)] != PARAM_TERMINATOR)) if len(buf) else []
    if len(bad):
        i = int(bad[0])
        raise ValueError(f"pattern_params: record {i} ({params[i]!r}) does not end with the 0x1f terminator; "
                         f"build it with otelproc.store.arrow.encode_params or end every parameter with 0x1f")
    is_term = buf == PARAM_TERMINATOR
    term = np.flatnonzero(is_term)
    # list i holds the parameters whose terminator lies in [off[i], off[i+1])
    list_off = np.searchsorted(term, off, side="left").astype(np.int64)
    # removing the terminators shifts parameter k's end from term[k] to term[k] - k
    value_off = np.zeros(len(term) + 1, dtype=np.int64)
    value_off[1:] = term - np.arange(len(term), dtype=np.int64)
    values = StringArray(np.ascontiguousarray(buf[~is_term]), value_off)
    return pa.LargeListArray.from_arrays(pa.array(list_off, type=pa.int64()), values.to_arrow())


def params_to_pylist(params: StringArray) -> list[list[str]]:
    """The parameters per record as Python lists (tests, small outputs)."""
    return params_to_arrow(params).to_pylist()


def _string_column(batch: LogBatch, name: str, n: int) -> pa.Array:
    col = batch.columns.get(name)
    if col is None:
        return StringArray.empty(n).to_arrow()
    if isinstance(col, DictStringArray):
        # LowCardinality(String) in otel_logs: the dictionary goes as it is, no per-record copy
        return col.to_arrow_dictionary()
    if isinstance(col, StringArray):
        return col.to_arrow()
    if isinstance(col, (pa.Array, pa.ChunkedArray)) and (pa.types.is_string(col.type)
                                                         or pa.types.is_large_string(col.type)):
        return col
    raise TypeError(f"column {name!r} must be a StringArray, got {type(col).__name__}")


def _numeric_column(batch: LogBatch, name: str, dtype: Any, n: int) -> pa.Array:
    col = batch.columns.get(name)
    if col is None:
        return pa.array(np.zeros(n, dtype=dtype))
    arr = np.asarray(col)
    if arr.dtype != dtype:
        kind = np.dtype(dtype).kind
        ok = arr.dtype.kind in ("iu" if kind in "iu" else "iuf")
        if not ok:
            raise TypeError(f"column {name!r} must be {np.dtype(dtype).name}, got {arr.dtype}")
        arr = arr.astype(dtype)
    return pa.array(arr)


def _params_column(batch: LogBatch, n: int) -> pa.Array:
    col = batch.columns.get("pattern_params")
    if col is None:
        return pa.LargeListArray.from_arrays(pa.array(np.zeros(n + 1, dtype=np.int64)),
                                             StringArray.empty(0).to_arrow())
    if isinstance(col, StringArray):
        return params_to_arrow(col)
    if isinstance(col, (pa.Array, pa.ChunkedArray)) and (pa.types.is_list(col.type) or pa.types.is_large_list(col.type)):
        return col
    raise TypeError(f"column 'pattern_params' must be a StringArray (0x1f-terminated parameters) or a "
                    f"pyarrow list<string> array, got {type(col).__name__}")


def logs_to_arrow(batch: LogBatch) -> pa.Table:
    """The otel_logs rows of ``batch`` as a pyarrow Table (columns :data:`OTEL_LOGS_COLUMNS`).

    No per-record Python: cost is a few numpy/Arrow passes over the buffers (see
    benchmarks/insert_throughput.py). Raises TypeError/ValueError for malformed processor columns.
    """
    n = len(batch)
    res_idx = pa.array(batch.resource_index.astype(np.int32, copy=False))
    scope_idx = pa.array(batch.scope_index.astype(np.int32, copy=False))
    services = pa.array(batch.services if batch.services else [""], type=pa.large_string())
    service = pa.DictionaryArray.from_arrays(pa.array(batch.service_index.astype(np.int32, copy=False)), services)
    timestamp = pa.array(batch.event_ns.astype(np.int64, copy=False), type=pa.timestamp("ns", tz="UTC"))
    columns = {
        "Timestamp": timestamp,
        "TraceId": hex_ids(batch.trace_id).to_arrow(),
        "SpanId": hex_ids(batch.span_id).to_arrow(),
        "TraceFlags": pa.array((batch.flags & 0xFF).astype(np.uint8)),
        "SeverityText": batch.severity_text.to_arrow(),
        "SeverityNumber": pa.array(batch.severity_number.astype(np.uint8, copy=False)),
        "ServiceName": service,
        "Body": batch.body.to_arrow(),
        "ResourceSchemaUrl": batch.resource_schema_url.to_arrow().take(res_idx),
        "ResourceAttributes": batch.resource_attrs.to_arrow().take(res_idx),
        "ScopeSchemaUrl": batch.scope_schema_url.to_arrow().take(scope_idx),
        "ScopeName": batch.scope_name.to_arrow().take(scope_idx),
        "ScopeVersion": batch.scope_version.to_arrow().take(scope_idx),
        "ScopeAttributes": batch.scope_attrs.to_arrow().take(scope_idx),
        "LogAttributes": batch.log_attrs.to_arrow(),
        "EventName": batch.event_name.to_arrow(),
        "PatternId": _numeric_column(batch, "pattern_id", np.uint64, n),
        "PatternTemplate": _string_column(batch, "pattern_template", n),
        "PatternParams": _params_column(batch, n),
        "AnomalyScore": _numeric_column(batch, "anomaly_score", np.float32, n),
    }
    for name, col in columns.items():
        if len(col) != n:
            raise ValueError(f"otel_logs column {name} has {len(col)} rows, batch has {n}")
    return pa.table(columns)
