"""Input limits applied to a decoded request, vectorised over the LogBatch arrays.

What the decoder accepted is made safe to store, or the request is refused:

* more than ``max_records_per_request`` records      -> the request is refused (413)
* a body longer than ``max_body_bytes``               -> cut at a UTF-8 boundary, ``TRUNCATION_MARKER`` appended
* an attribute value longer than ``max_attribute_value_bytes`` -> cut the same way
* more than ``max_attributes_per_record`` attributes  -> the first ones kept, the rest dropped
* invalid UTF-8 in any string                         -> invalid sequences replaced by U+FFFD
* time_unix_nano negative or further than ``max_future_skew`` ahead -> replaced by the observed time;
  an observed time that is unset, negative or in the future -> the time of receipt

Each fix is counted per reason (``Sanitized.counts``), which the receiver exports as
``otelproc_receiver_sanitized_log_records_total{reason}``. No Python loop runs per record
except to repair strings that actually hold invalid UTF-8 (the whole buffer is checked at C
speed first).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

import numpy as np

from otelproc.batch import AttrMap, LogBatch, StringArray
from otelproc.config import ByteSize, Duration, setting

__all__ = ["LimitsConfig", "Sanitized", "sanitize", "truncate_strings", "repair_utf8", "TRUNCATION_MARKER",
           "TooManyRecords"]

TRUNCATION_MARKER = "…[truncated]".encode()
DEFAULT_MAX_RECORDS = 100_000
DEFAULT_MAX_BODY = ByteSize(64 * 1024)
DEFAULT_MAX_ATTR_VALUE = ByteSize(8 * 1024)
DEFAULT_MAX_ATTRS = 128
DEFAULT_FUTURE_SKEW = Duration(24 * 3600.0)


@dataclass
class LimitsConfig:
    # records in one request; more -> 413 (0 = no limit)
    max_records_per_request: int = setting(DEFAULT_MAX_RECORDS, ge=0, hint="0 = no limit")
    # body bytes kept; longer bodies are cut and end with "…[truncated]" (0 = no limit)
    max_body_bytes: ByteSize = setting(DEFAULT_MAX_BODY, ge=0, hint="0 = no limit")
    # attribute value bytes kept (log, resource and scope attributes), cut the same way (0 = no limit)
    max_attribute_value_bytes: ByteSize = setting(DEFAULT_MAX_ATTR_VALUE, ge=0, hint="0 = no limit")
    # attributes kept per log record; the rest are dropped (0 = no limit)
    max_attributes_per_record: int = setting(DEFAULT_MAX_ATTRS, ge=0, hint="0 = no limit")
    # timestamps further ahead of the receiver's clock are replaced by the observed time (0 = no check)
    max_future_skew: Duration = setting(DEFAULT_FUTURE_SKEW, ge=0, hint="0 = no check")

    def validate(self) -> list[str]:
        out = []
        for key in ("max_body_bytes", "max_attribute_value_bytes"):
            v = getattr(self, key)
            if 0 < v <= len(TRUNCATION_MARKER):
                out.append(f"{key}: must be 0 or more than {len(TRUNCATION_MARKER)} bytes (the truncation marker), got {v}")
        return out


class TooManyRecords(Exception):
    """The request holds more records than ``max_records_per_request``."""


@dataclass
class Sanitized:
    batch: LogBatch
    counts: dict[str, int] = field(default_factory=dict)  # reason -> records (or attributes) fixed


def _lengths(s: StringArray) -> np.ndarray:
    return np.diff(s.off)


def _char_start_cut(buf: np.ndarray, start: np.ndarray, cut: np.ndarray) -> np.ndarray:
    """Move each cut (absolute byte position) back to the start of the UTF-8 character it falls in
    (at most 3 steps: a character has at most 3 continuation bytes)."""
    cut = cut.copy()
    for _ in range(3):
        inside = (cut > start) & (cut < len(buf))
        if not inside.any():
            break
        cont = np.zeros(len(cut), dtype=bool)
        cont[inside] = (buf[cut[inside]] & 0xC0) == 0x80
        if not cont.any():
            break
        cut[cont] -= 1
    return cut


def truncate_strings(s: StringArray, limit: int, marker: bytes = TRUNCATION_MARKER) -> tuple[StringArray, int]:
    """Strings longer than ``limit`` bytes cut to ``limit`` bytes in total, ending in ``marker``.

    Returns (strings, how many were cut). The cut never splits a UTF-8 character.
    """
    lens = _lengths(s)
    over = lens > limit
    n_over = int(over.sum())
    if not n_over:
        return s, 0
    start = s.off[:-1]
    keep = lens.copy()
    cut = _char_start_cut(s.buf, start[over], start[over] + (limit - len(marker)))
    keep[over] = cut - start[over]
    out_lens = keep + over * len(marker)
    off = np.zeros(len(lens) + 1, dtype=np.int64)
    np.cumsum(out_lens, out=off[1:])
    out = np.empty(int(off[-1]), dtype=np.uint8)
    # kept bytes of every string, gathered without a Python loop
    owner = np.repeat(np.arange(len(lens)), keep)
    pos_in = np.arange(int(keep.sum())) - np.repeat(np.cumsum(keep) - keep, keep)
    out[off[:-1][owner] + pos_in] = s.buf[start[owner] + pos_in]
    # then the marker after each cut string
    m = np.frombuffer(marker, dtype=np.uint8)
    dst = (off[:-1][over] + keep[over])[:, None] + np.arange(len(m))
    out[dst.ravel()] = np.tile(m, n_over)
    return StringArray(out, off), n_over


def repair_utf8(s: StringArray) -> tuple[StringArray, int]:
    """Invalid UTF-8 sequences replaced by U+FFFD. Returns (strings, how many were repaired).

    Fast path: the whole buffer decodes and every string starts on a character boundary, which
    together mean every string is valid.
    """
    data = s.buf.tobytes()
    starts = s.off[:-1][np.diff(s.off) > 0]
    try:
        data.decode("utf-8")
        if not ((s.buf[starts] & 0xC0) == 0x80).any():
            return s, 0
    except UnicodeDecodeError:
        pass
    # slow path, only for requests that carry invalid text
    values, repaired = [], 0
    off = s.off.tolist()
    for i in range(len(off) - 1):
        raw = data[off[i]:off[i + 1]]
        try:
            raw.decode("utf-8")
            values.append(raw)
        except UnicodeDecodeError:
            values.append(raw.decode("utf-8", "replace").encode("utf-8"))
            repaired += 1
    return StringArray.from_pylist(values), repaired


def _limit_attr_count(m: AttrMap, limit: int) -> tuple[AttrMap, int]:
    per_row = np.diff(m.off)
    over = per_row > limit
    if not over.any():
        return m, 0
    kept = np.minimum(per_row, limit)
    owner = np.repeat(np.arange(len(per_row)), kept)
    idx = m.off[:-1][owner] + (np.arange(int(kept.sum())) - np.repeat(np.cumsum(kept) - kept, kept))
    off = np.zeros(len(per_row) + 1, dtype=np.int64)
    np.cumsum(kept, out=off[1:])
    return AttrMap(off, m.keys.take(idx), m.values.take(idx)), int((per_row - kept).sum())


def _fix_map(m: AttrMap, cfg: LimitsConfig, counts: dict[str, int], count_attrs: bool) -> AttrMap:
    if count_attrs and cfg.max_attributes_per_record:
        m, dropped = _limit_attr_count(m, cfg.max_attributes_per_record)
        _add(counts, "attributes_dropped", dropped)
    keys, nk = repair_utf8(m.keys)
    values, nv = repair_utf8(m.values)
    _add(counts, "invalid_utf8", nk + nv)
    if cfg.max_attribute_value_bytes:
        values, cut = truncate_strings(values, int(cfg.max_attribute_value_bytes))
        _add(counts, "attribute_truncated", cut)
    if keys is m.keys and values is m.values:
        return m
    return AttrMap(m.off, keys, values)


def _add(counts: dict[str, int], reason: str, n: int) -> None:
    if n:
        counts[reason] = counts.get(reason, 0) + int(n)


def sanitize(batch: LogBatch, cfg: LimitsConfig, now_ns: int | None = None) -> Sanitized:
    """Apply the limits of ``cfg`` to a decoded batch. Raises TooManyRecords."""
    n = len(batch)
    if cfg.max_records_per_request and n > cfg.max_records_per_request:
        raise TooManyRecords(f"request has {n} log records, more than max_records_per_request "
                             f"{cfg.max_records_per_request}; send smaller batches")
    counts: dict[str, int] = {}
    if n == 0:
        return Sanitized(batch, counts)
    now = time.time_ns() if now_ns is None else now_ns
    changes: dict = {}

    # timestamps
    horizon = now + int(cfg.max_future_skew * 1e9) if cfg.max_future_skew else np.iinfo(np.int64).max
    observed = batch.observed_ns
    bad_obs = (observed <= 0) | (observed > max(now, horizon))
    if bad_obs.any():
        observed = np.where(bad_obs, np.int64(now), observed)
        changes["observed_ns"] = observed
        _add(counts, "observed_time_replaced", int(bad_obs.sum()))
    t = batch.time_ns
    bad_t = (t < 0) | (t > horizon)
    if bad_t.any():
        changes["time_ns"] = np.where(bad_t, observed, t)
        _add(counts, "timestamp_replaced", int(bad_t.sum()))

    # strings
    body, fixed = repair_utf8(batch.body)
    _add(counts, "invalid_utf8", fixed)
    if cfg.max_body_bytes:
        body, cut = truncate_strings(body, int(cfg.max_body_bytes))
        _add(counts, "body_truncated", cut)
    if body is not batch.body:
        changes["body"] = body
    for name in ("severity_text", "event_name", "resource_schema_url", "scope_name", "scope_version",
                 "scope_schema_url"):
        s, fixed = repair_utf8(getattr(batch, name))
        if fixed:
            _add(counts, "invalid_utf8", fixed)
            changes[name] = s
    for name, per_record in (("log_attrs", True), ("resource_attrs", False), ("scope_attrs", False)):
        m = _fix_map(getattr(batch, name), cfg, counts, per_record)
        if m is not getattr(batch, name):
            changes[name] = m
    services = [s.encode("utf-8", "replace").decode("utf-8", "replace") for s in batch.services]
    if services != batch.services:
        changes["services"] = services
    return Sanitized(replace(batch, **changes) if changes else batch, counts)
