"""Write-ahead log: what a receiver accepted survives a crash until every exporter confirmed it.

Each pipeline with a WAL appends every accepted batch to segment files *before* the client
gets its 200/OK, and the pipeline acknowledges a record only after every exporter of the
pipeline confirmed its insert. On start, records not acknowledged are replayed, in order,
through the processors and exporters again.

    exporters:
      clickhouse:
        wal:
          directory: ./wal          # one sub-directory per pipeline; "" (default) = no WAL
          fsync: interval           # always | interval | none
          fsync_interval: 200ms
          segment_size: 64MiB
          max_size: 2GiB            # un-acknowledged bytes on disk; above it receivers answer 429

Why on the exporter: the WAL exists to guarantee *that exporter* every accepted record (as a
Collector exporter's persistent ``sending_queue``). It sits at the pipeline's ingest queue,
in front of the processors, because that is where the client is answered; a pipeline gets a
WAL when any of its exporters configures one.

fsync policies (what a *machine* crash may lose; a process crash loses nothing acknowledged
under any policy, because records are written with ``os.write`` before the answer):

* ``always``   - fsync before answering (group commit: one fsync covers every writer waiting)
* ``interval`` - fsync every ``fsync_interval`` in the background (the default)
* ``none``     - leave it to the OS

Record layout (little-endian), one ``os.write`` per record::

    magic u16 'OW' | type u8 | pad u8 | payload_len u32 | seq u64 | aux u64 | crc32 u32 | payload

``crc32`` covers the 24 header bytes before it and the payload. Types:

* DATA  - seq = the record's sequence number, aux = its log record count, payload = the batch
          (:func:`encode_batch`)
* BATCH - seq..aux = the range of DATA records sent to the exporters as one batch; written
          before that batch is sent, so a replay re-forms the same batches and the exporters'
          deduplication tokens (derived from the range) match
* ACK   - every DATA record with seq <= this one is confirmed by every exporter
* META  - first record of each segment: seq = next sequence number when it was created

A torn or corrupt record ends its segment: the rest of that segment is skipped, logged, and
counted (``otelproc_wal_corrupt_records_total``). Segments are deleted oldest first once all
their DATA records are acknowledged.
"""
from __future__ import annotations

import json
import logging
import os
import struct
import threading
import time
import uuid
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Literal

import numpy as np

from otelproc.batch import AttrMap, LogBatch, StringArray
from otelproc.config import ByteSize, Duration, setting

__all__ = ["WalConfig", "WriteAheadLog", "WalFullError", "ReplayPlan", "encode_batch", "decode_batch", "batch_nbytes"]

log = logging.getLogger(__name__)

MIB = 1 << 20
DEFAULT_FSYNC_INTERVAL = Duration(0.2)
DEFAULT_SEGMENT_SIZE = ByteSize(64 * MIB)
DEFAULT_MAX_SIZE = ByteSize(2048 * MIB)

REC_DATA, REC_BATCH, REC_ACK, REC_META = 1, 2, 3, 4
_MAGIC = 0x574F  # b"OW" little-endian
_HEAD = struct.Struct("<HBxIQQ")   # magic, type, payload_len, seq, aux  (24 bytes)
_CRC = struct.Struct("<I")
HEADER_SIZE = _HEAD.size + _CRC.size
_MAX_PAYLOAD = 1 << 31
_SEGMENT_GLOB = "segment-*.wal"


@dataclass
class WalConfig:
    # where the log lives (a sub-directory per pipeline is made); "" = no write-ahead log
    directory: str = ""
    # when written records are forced to disk: always | interval | none
    fsync: Literal["always", "interval", "none"] = "interval"
    # how often the interval policy syncs
    fsync_interval: Duration = setting(DEFAULT_FSYNC_INTERVAL, gt=0)
    # a new segment file is started when the active one reaches this size
    segment_size: ByteSize = DEFAULT_SEGMENT_SIZE
    # most bytes kept on disk (acknowledged segments are deleted); above it receivers answer 429
    max_size: ByteSize = DEFAULT_MAX_SIZE

    def enabled(self) -> bool:
        return bool(self.directory)

    def validate(self) -> list[str]:
        out = []
        if self.segment_size < MIB:
            out.append(f"segment_size: must be >= 1MiB, got {int(self.segment_size)} bytes")
        if self.max_size < 2 * self.segment_size:
            out.append(f"max_size: must be >= 2 x segment_size ({2 * int(self.segment_size)} bytes), "
                       f"got {int(self.max_size)}")
        if self.directory:
            p = Path(self.directory)
            if p.exists() and not p.is_dir():
                out.append(f"directory: {self.directory} exists and is not a directory")
        return out


class WalFullError(Exception):
    """The log holds ``max_size`` bytes of unconfirmed records (exporters are behind or failing)."""


# --------------------------------------------------------------------------- batch codec

_ARRAY_FIELDS = ("time_ns", "observed_ns", "severity_number", "flags", "resource_index", "scope_index",
                 "service_index", "trace_id", "span_id")
_STRING_FIELDS_V1 = ("severity_text", "body", "resource_schema_url", "scope_name", "scope_version", "scope_schema_url")
_MAP_FIELDS = ("log_attrs", "resource_attrs", "scope_attrs")
# version 2 added event_name; version-1 records (written before) still decode, with event names ""
_CODEC_VERSION = 2
_STRING_FIELDS_BY_VERSION = {1: _STRING_FIELDS_V1, 2: _STRING_FIELDS_V1 + ("event_name",)}
_STRING_FIELDS = _STRING_FIELDS_BY_VERSION[_CODEC_VERSION]


def _batch_arrays(batch: LogBatch) -> list[tuple[str, np.ndarray]]:
    out = [(name, getattr(batch, name)) for name in _ARRAY_FIELDS]
    for name in _STRING_FIELDS:
        s = getattr(batch, name)
        out += [(f"{name}.buf", s.buf), (f"{name}.off", s.off)]
    for name in _MAP_FIELDS:
        m = getattr(batch, name)
        out += [(f"{name}.off", m.off), (f"{name}.keys.buf", m.keys.buf), (f"{name}.keys.off", m.keys.off),
                (f"{name}.values.buf", m.values.buf), (f"{name}.values.off", m.values.off)]
    return out


def encode_batch(batch: LogBatch) -> bytes:
    """The receiver-made part of a batch (records, resource/scope tables, services) as bytes.

    Processor columns, tables and findings are not encoded: the WAL holds batches before the
    processors see them. Layout: u32 header length, JSON header (codec version, services, per
    array: name, dtype, shape), then every array's bytes in header order.
    """
    arrays = [(n, np.ascontiguousarray(a)) for n, a in _batch_arrays(batch)]
    header = json.dumps({"v": _CODEC_VERSION, "services": list(batch.services),
                         "arrays": [[n, a.dtype.str, list(a.shape)] for n, a in arrays]},
                        separators=(",", ":")).encode()
    return b"".join([struct.pack("<I", len(header)), header] + [a.tobytes() for _, a in arrays])


def decode_batch(payload: bytes | bytearray | memoryview) -> LogBatch:
    """Inverse of :func:`encode_batch` (this and earlier codec versions). Raises ValueError on a
    payload it cannot read."""
    mv = memoryview(payload)
    try:
        (hlen,) = struct.unpack_from("<I", mv, 0)
        header = json.loads(bytes(mv[4:4 + hlen]))
        string_fields = _STRING_FIELDS_BY_VERSION.get(header.get("v"))
        if string_fields is None:
            raise ValueError(f"unknown batch codec version {header.get('v')!r}")
        pos = 4 + hlen
        arrays: dict[str, np.ndarray] = {}
        for name, dtype, shape in header["arrays"]:
            dt = np.dtype(dtype)
            count = int(np.prod(shape)) if shape else 1
            nbytes = count * dt.itemsize
            if pos + nbytes > len(mv):
                raise ValueError(f"array {name} runs past the end of the record")
            arrays[name] = np.frombuffer(mv[pos:pos + nbytes], dtype=dt).reshape(shape)
            pos += nbytes
        if pos != len(mv):
            raise ValueError(f"{len(mv) - pos} unexpected bytes after the last array")

        def strings(prefix: str) -> StringArray:
            return StringArray(arrays[f"{prefix}.buf"], arrays[f"{prefix}.off"])

        def amap(prefix: str) -> AttrMap:
            return AttrMap(arrays[f"{prefix}.off"], strings(f"{prefix}.keys"), strings(f"{prefix}.values"))

        batch = LogBatch(**{n: arrays[n] for n in _ARRAY_FIELDS}, **{n: strings(n) for n in string_fields},
                         **{n: amap(n) for n in _MAP_FIELDS}, services=list(header["services"]))
        batch.check()
        return batch
    except (KeyError, TypeError, struct.error, json.JSONDecodeError) as e:
        raise ValueError(f"unreadable batch record: {e}") from None


# --------------------------------------------------------------------------- the log

def _record(rtype: int, seq: int, aux: int, payload: bytes = b"") -> bytes:
    head = _HEAD.pack(_MAGIC, rtype, len(payload), seq, aux)
    crc = zlib.crc32(payload, zlib.crc32(head))
    return head + _CRC.pack(crc) + payload


@dataclass
class _Segment:
    path: Path
    index: int
    size: int = 0
    max_data_seq: int = 0  # highest DATA seq it holds (0: none)


@dataclass
class _Entry:
    seq: int
    count: int
    segment: Path
    offset: int    # of the payload
    length: int


class ReplayPlan:
    """What a restart must send again: DATA records not acknowledged, and the batch boundaries
    (BATCH records) recorded for them. Payloads are read lazily, one at a time."""

    def __init__(self, entries: list[_Entry], boundaries: list[tuple[int, int]], corrupt: int):
        self.entries = entries
        self.boundaries = boundaries
        self.corrupt = corrupt

    @property
    def records(self) -> int:
        """Log records (not WAL records) to replay."""
        return sum(e.count for e in self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def batches(self) -> Iterator[tuple[int, LogBatch]]:
        """(seq, batch) in sequence order; an unreadable payload is logged and skipped."""
        for e in self.entries:
            with open(e.segment, "rb") as f:
                f.seek(e.offset)
                data = bytearray(e.length)
                f.readinto(data)
            try:
                yield e.seq, decode_batch(data)
            except ValueError as err:
                log.error("WAL record %d in %s cannot be decoded, skipped: %s", e.seq, e.segment.name, err)


class WriteAheadLog:
    """One pipeline's log in ``directory``. Thread-safe.

    ``append()`` is called in queue order under the caller's lock (sequence order == processing
    order); ``ack()`` is called in the same order by the end of the pipeline.
    """

    def __init__(self, directory: str | os.PathLike, config: WalConfig, telemetry=None, name: str = ""):
        self.directory = Path(directory)
        self.config = config
        self.name = name or self.directory.name
        self._lock = threading.Lock()          # appends, acks, rotation
        self._sync_lock = threading.Lock()     # one fsync at a time
        self._segments: list[_Segment] = []
        self._fd: int | None = None
        self._next_seq = 1
        self._acked = 0
        self._written_seq = 0
        self._synced_seq = 0
        self._dirty = False
        self._total_bytes = 0
        self._stop = threading.Event()
        self._syncer: threading.Thread | None = None
        self.id = ""
        t = telemetry
        lbl = ("pipeline",)
        self._m_bytes = t.gauge("otelproc_wal_bytes", "Bytes of write-ahead-log segments on disk", lbl) if t else None
        self._m_pending = t.gauge("otelproc_wal_unacknowledged_records", "WAL records not yet confirmed by every exporter", lbl) if t else None
        self._m_appended = t.counter("otelproc_wal_appended_log_records", "Log records written to the WAL", lbl) if t else None
        self._m_replayed = t.counter("otelproc_wal_replayed_log_records", "Log records replayed from the WAL at start", lbl) if t else None
        self._m_corrupt = t.counter("otelproc_wal_corrupt_records", "Torn or corrupt WAL records skipped at start", lbl) if t else None
        self._m_fsync = t.histogram("otelproc_wal_fsync_duration_seconds", "Duration of one WAL fsync", lbl) if t else None

    # -- lifecycle -----------------------------------------------------------------------------

    def open(self) -> ReplayPlan:
        """Read what is on disk, start a new segment, return what must be replayed."""
        self.directory.mkdir(parents=True, exist_ok=True)
        id_file = self.directory / "wal.id"
        if id_file.exists():
            self.id = id_file.read_text().strip()
        if not self.id:
            # the id makes deduplication tokens unique even if the directory is wiped and seqs restart
            self.id = uuid.uuid4().hex[:16]
            tmp = id_file.with_suffix(".tmp")
            tmp.write_text(self.id)
            os.replace(tmp, id_file)
        plan = self._scan()
        self._new_segment()
        self._cleanup()
        if self.config.fsync == "interval":
            self._syncer = threading.Thread(target=self._sync_loop, name=f"wal-{self.name}-fsync", daemon=True)
            self._syncer.start()
        self._update_gauges()
        if len(plan):
            log.info("WAL %s: %d unacknowledged records (%d log records) to replay", self.directory,
                     len(plan), plan.records)
            if self._m_replayed:
                self._m_replayed.labels(self.name).inc(plan.records)
        return plan

    def close(self) -> None:
        """Sync and close (idempotent)."""
        self._stop.set()
        if self._syncer is not None:
            self._syncer.join()
            self._syncer = None
        with self._lock:
            if self._fd is not None:
                if self.config.fsync != "none":
                    os.fsync(self._fd)
                os.close(self._fd)
                self._fd = None

    # -- scanning ------------------------------------------------------------------------------

    def _scan(self) -> ReplayPlan:
        entries: list[_Entry] = []
        boundaries: dict[int, int] = {}
        corrupt = 0
        acked = 0
        max_seq = 0
        for path in sorted(self.directory.glob(_SEGMENT_GLOB)):
            try:
                index = int(path.stem.split("-", 1)[1])
            except ValueError:
                log.warning("WAL %s: ignoring unexpected file %s", self.directory, path.name)
                continue
            seg = _Segment(path, index)
            with open(path, "rb") as f:
                data = f.read()
            pos = 0
            while pos < len(data):
                bad = None
                if pos + HEADER_SIZE > len(data):
                    bad = "truncated header"
                else:
                    magic, rtype, plen, seq, aux = _HEAD.unpack_from(data, pos)
                    (crc,) = _CRC.unpack_from(data, pos + _HEAD.size)
                    end = pos + HEADER_SIZE + plen
                    if magic != _MAGIC or rtype not in (REC_DATA, REC_BATCH, REC_ACK, REC_META):
                        bad = "bad magic or type"
                    elif end > len(data):
                        bad = "truncated payload"
                    elif zlib.crc32(data[pos + HEADER_SIZE:end], zlib.crc32(data[pos:pos + _HEAD.size])) != crc:
                        bad = "checksum mismatch"
                if bad:
                    corrupt += 1
                    log.error("WAL %s: %s at byte %d of %s; the rest of this segment (%d bytes) is skipped",
                              self.directory, bad, pos, path.name, len(data) - pos)
                    break
                if rtype == REC_DATA:
                    entries.append(_Entry(seq, aux, path, pos + HEADER_SIZE, plen))
                    seg.max_data_seq = max(seg.max_data_seq, seq)
                    max_seq = max(max_seq, seq)
                elif rtype == REC_BATCH:
                    boundaries[seq] = aux
                elif rtype == REC_ACK:
                    acked = max(acked, seq)
                    max_seq = max(max_seq, seq)
                else:  # META
                    max_seq = max(max_seq, seq - 1)
                pos = end
            seg.size = len(data)
            self._segments.append(seg)
            self._total_bytes += seg.size
        if corrupt and self._m_corrupt:
            self._m_corrupt.labels(self.name).inc(corrupt)
        self._acked = acked
        self._next_seq = max_seq + 1
        self._written_seq = self._synced_seq = max_seq
        pending = sorted((e for e in entries if e.seq > acked), key=lambda e: e.seq)
        pending_seqs = {e.seq for e in pending}
        ranges = sorted((a, b) for a, b in boundaries.items() if b > acked and a in pending_seqs)
        return ReplayPlan(pending, ranges, corrupt)

    # -- writing -------------------------------------------------------------------------------

    def _new_segment(self) -> None:
        index = (self._segments[-1].index + 1) if self._segments else 1
        path = self.directory / f"segment-{index:010d}.wal"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        if self._fd is not None:
            if self.config.fsync != "none":
                os.fsync(self._fd)
            os.close(self._fd)
        self._fd = fd
        seg = _Segment(path, index)
        self._segments.append(seg)
        self._write(_record(REC_META, self._next_seq, 0))
        if self.config.fsync != "none":
            dfd = os.open(self.directory, os.O_RDONLY)
            try:
                os.fsync(dfd)  # the new file's directory entry
            finally:
                os.close(dfd)

    def _write(self, rec: bytes) -> None:
        view = memoryview(rec)
        while view:
            n = os.write(self._fd, view)
            view = view[n:]
        seg = self._segments[-1]
        seg.size += len(rec)
        self._total_bytes += len(rec)
        self._dirty = True

    def check_capacity(self) -> None:
        """Raise WalFullError when ``max_size`` bytes are on disk."""
        if self._total_bytes >= self.config.max_size:
            raise WalFullError(f"write-ahead log {self.directory} holds {self._total_bytes} bytes "
                               f"(max_size {int(self.config.max_size)}): exporters are behind")

    def append(self, payload: bytes, records: int) -> int:
        """Write one DATA record; return its sequence number. Durable per the fsync policy only
        after :meth:`sync` (``always``) or the next interval."""
        if len(payload) >= _MAX_PAYLOAD:
            raise ValueError(f"WAL record of {len(payload)} bytes is too large")
        with self._lock:
            if self._fd is None:
                raise RuntimeError(f"WAL {self.directory} is not open")
            self.check_capacity()
            if self._segments[-1].size >= self.config.segment_size:
                self._new_segment()
            seq = self._next_seq
            self._write(_record(REC_DATA, seq, records, payload))
            self._next_seq += 1
            self._written_seq = seq
            self._segments[-1].max_data_seq = seq
        if self._m_appended:
            self._m_appended.labels(self.name).inc(records)
            self._update_gauges()
        return seq

    def sync(self, seq: int) -> None:
        """Make records up to ``seq`` durable if the policy is ``always`` (group commit)."""
        if self.config.fsync == "always":
            self._fsync_through(seq)

    def _fsync_through(self, seq: int) -> None:
        with self._sync_lock:
            if self._synced_seq >= seq:
                return  # another writer's fsync covered this record
            with self._lock:
                fd, upto = self._fd, self._written_seq
                self._dirty = False
            if fd is None:
                return
            t0 = time.perf_counter()
            os.fsync(fd)
            if self._m_fsync:
                self._m_fsync.labels(self.name).observe(time.perf_counter() - t0)
            self._synced_seq = upto

    def _sync_loop(self) -> None:
        while not self._stop.wait(float(self.config.fsync_interval)):
            if self._dirty:
                try:
                    self._fsync_through(self._written_seq)
                except OSError as e:  # keep running: the next interval retries
                    log.error("WAL %s: fsync failed: %s", self.directory, e)

    def mark_batch(self, first: int, last: int) -> None:
        """Record that records first..last are sent to the exporters as one batch."""
        with self._lock:
            if self._fd is None:
                return
            self._write(_record(REC_BATCH, first, last))
        if self.config.fsync == "always":
            self._fsync_through(self._written_seq)

    def ack(self, last: int) -> None:
        """Every record with seq <= ``last`` is confirmed by every exporter."""
        with self._lock:
            if last <= self._acked or self._fd is None:
                return
            self._acked = last
            self._write(_record(REC_ACK, last, 0))
            self._cleanup()
        self._update_gauges()

    def _cleanup(self) -> None:
        """Delete the oldest segments whose DATA records are all acknowledged (never the active one)."""
        while len(self._segments) > 1 and self._segments[0].max_data_seq <= self._acked:
            seg = self._segments.pop(0)
            try:
                seg.path.unlink()
            except FileNotFoundError:
                pass
            self._total_bytes -= seg.size

    def _update_gauges(self) -> None:
        if self._m_bytes:
            self._m_bytes.labels(self.name).set(self._total_bytes)
            self._m_pending.labels(self.name).set(max(0, self._written_seq - self._acked))

    # -- introspection -------------------------------------------------------------------------

    @property
    def acked(self) -> int:
        return self._acked

    @property
    def last_seq(self) -> int:
        return self._next_seq - 1

    def segment_paths(self) -> list[Path]:
        return [s.path for s in self._segments]


def batch_nbytes(batch: LogBatch) -> int:
    """Bytes held by the receiver-made arrays of a batch (what an ingest queue holds per batch)."""
    return sum(int(a.nbytes) for _, a in _batch_arrays(batch))
