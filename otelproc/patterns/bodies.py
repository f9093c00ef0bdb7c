"""The text the miner mines for a structured or multi-line body (its *mining view*).

A JSON body, an OTLP kvlist body (the receiver writes it as JSON) or a logfmt body is mined on
its message: the first of ``message_fields`` (default ``msg``, ``message``, ``log``, ``event``)
that holds a string. Key order, optional keys (``trace_id``) and the other fields' values then
do not split an event, and the template shows the message; the body itself is stored unchanged,
so the other fields stay queryable (``JSONExtractString(Body, 'user')``,
``extractKeyValuePairs(Body)``). A JSON object without a message field is mined as its sorted
``key=value`` pairs (values are masked as any ``key=value`` value is).

A multi-line body that is a stack trace is mined on its exception and its ``trace_frames``
frames nearest to where it was thrown, so traces of one exception whose depth varies below those
frames are one pattern:

* Python (``Traceback (most recent call last):``): the lines before it, the LAST frames (the
  most recent call is last) and the exception line;
* Java and the JVM languages (frames ``at pkg.Class.method(File.java:12)``): the exception
  line(s) before the first frame, the FIRST frames, each ``Caused by:`` line;
* Go (``panic:`` ... ``goroutine N [running]:``): the lines up to the goroutine header and the
  FIRST frames (a function line and its ``\\tfile:line`` line each).

Other multi-line bodies are mined as they are. Everything here runs once per structured row;
plain text rows are found by one Numba pass (:mod:`otelproc.kernels.body_kind`) and left alone.
"""
from __future__ import annotations

import json
import re

import numpy as np

from otelproc.kernels.body_kind import KIND_JSON, KIND_LOGFMT, KIND_MULTILINE, KIND_PLAIN, body_kinds

DEFAULT_MESSAGE_FIELDS = ("msg", "message", "log", "event")
DEFAULT_TRACE_FRAMES = 3

_LOGFMT_PAIR = re.compile(r'\s*([^\s="]+)=("(?:[^"\\]|\\.)*"|[^\s"]*)')
_JAVA_FRAME = re.compile(r"^\s+at \S")
_JAVA_MORE = re.compile(r"^\s+\.\.\. \d+ (more|common frames omitted)")
_PY_FRAME = re.compile(r'^\s+File "')
_GO_GOROUTINE = re.compile(r"^goroutine \d+ \[[^\]]*\]:\s*$")


def mining_view(buf: np.ndarray, off: np.ndarray, message_fields: tuple[str, ...] | list[str],
                trace_frames: int = DEFAULT_TRACE_FRAMES) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The bodies as the miner should see them.

    Returns (buf, off, rows): the same arrays when no body needs a view (rows empty), else new
    ones in which the bodies at ``rows`` (int64, ascending) are replaced by their views.
    """
    kinds = body_kinds(buf, off, list(message_fields))
    rows = np.flatnonzero(kinds != KIND_PLAIN)
    if len(rows) == 0:
        return buf, off, rows
    texts: list[bytes] = []
    changed: list[int] = []
    for r in rows.tolist():
        raw = buf[off[r]:off[r + 1]].tobytes()
        view = _view(raw, int(kinds[r]), message_fields, trace_frames)
        if view is not None and view != raw:
            texts.append(view)
            changed.append(r)
    if not changed:
        return buf, off, np.zeros(0, dtype=np.int64)
    from otelproc.kernels.tokenize import replace_strings
    sub_off = np.zeros(len(texts) + 1, dtype=np.int64)
    np.cumsum([len(t) for t in texts], out=sub_off[1:])
    sub_buf = np.frombuffer(b"".join(texts), dtype=np.uint8)
    rows = np.asarray(changed, dtype=np.int64)
    out_buf, out_off = replace_strings(buf, off, rows, sub_buf, sub_off)
    return out_buf, out_off, rows


def _view(raw: bytes, kind: int, fields, trace_frames: int) -> bytes | None:
    text = raw.decode("utf-8", "surrogateescape")
    if kind == KIND_JSON:
        out = json_view(text, fields)
    elif kind == KIND_LOGFMT:
        out = logfmt_view(text, fields)
        if out is None and "\n" in text.strip():
            out = trace_view(text, trace_frames)
    elif kind == KIND_MULTILINE:
        out = trace_view(text, trace_frames)
    else:
        out = None
    return None if out is None else out.encode("utf-8", "surrogateescape")


def json_view(text: str, fields) -> str | None:
    """The message of a JSON object body, else its sorted ``key=value`` pairs; None if it is not a
    JSON object."""
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError):
        return None
    if not isinstance(obj, dict):
        return None
    for f in fields:
        v = obj.get(f)
        if isinstance(v, str):
            return v
    return " ".join(f"{k}={_scalar(obj[k])}" for k in sorted(obj))


def _scalar(v) -> str:
    if isinstance(v, str):
        return v
    return json.dumps(v, separators=(",", ":"), sort_keys=True)


def logfmt_view(text: str, fields) -> str | None:
    """The message of a logfmt body (every token a ``key=value`` pair), else None."""
    pairs: dict[str, str] = {}
    pos = 0
    body = text.strip()
    while pos < len(body):
        m = _LOGFMT_PAIR.match(body, pos)
        if m is None or m.end() == pos:
            return None   # free text between the pairs: not logfmt
        value = m.group(2)
        if value.startswith('"'):
            try:
                value = json.loads(value)
            except ValueError:
                value = value[1:-1]
        pairs.setdefault(m.group(1), value)
        pos = m.end()
        while pos < len(body) and body[pos].isspace():
            pos += 1
    for f in fields:
        if f in pairs:
            return pairs[f]
    return None


def trace_view(text: str, frames: int) -> str | None:
    """A stack trace cut to its exception and ``frames`` frames nearest to the throw; None when the
    body is not a Python, JVM or Go trace."""
    lines = [ln.rstrip("\r") for ln in text.split("\n")]
    for i, ln in enumerate(lines):
        if ln.strip() == "Traceback (most recent call last):":
            return _python(lines, i, frames)
    if any(_JAVA_FRAME.match(ln) for ln in lines):
        return _java(lines, frames)
    for i, ln in enumerate(lines):
        if _GO_GOROUTINE.match(ln) and any(x.startswith("panic: ") or x.startswith("fatal error: ") for x in lines[:i]):
            return _go(lines, i, frames)
    return None


def _python(lines: list[str], start: int, frames: int) -> str:
    # frame = a 'File "...", line N, in f' line and the indented source lines under it
    frame_starts = [j for j in range(start + 1, len(lines)) if _PY_FRAME.match(lines[j])]
    if not frame_starts:
        return "\n".join(lines)
    last = frame_starts[-1]
    end = last + 1
    while end < len(lines) and lines[end].startswith(" ") and not _PY_FRAME.match(lines[end]):
        end += 1
    keep = lines[:start + 1]
    for j in frame_starts[-frames:] if frames else []:
        k = j + 1
        while k < len(lines) and k < end and lines[k].startswith(" ") and not _PY_FRAME.match(lines[k]):
            k += 1
        keep.extend(lines[j:k])
    keep.extend(ln for ln in lines[end:] if ln.strip())
    return "\n".join(keep)


def _java(lines: list[str], frames: int) -> str:
    keep: list[str] = []
    in_first = True
    seen_frames = 0
    for ln in lines:
        if _JAVA_FRAME.match(ln):
            if in_first and seen_frames < frames:
                keep.append(ln)
            seen_frames += 1
            continue
        if _JAVA_MORE.match(ln) or not ln.strip():
            continue
        if seen_frames:
            in_first = False   # a 'Caused by:' line after the first frames: keep its header only
        keep.append(ln)
    return "\n".join(keep)


def _go(lines: list[str], header: int, frames: int) -> str:
    keep = [ln for ln in lines[:header + 1] if ln.strip()]
    j = header + 1
    taken = 0
    while j < len(lines) and taken < frames and lines[j].strip():
        keep.append(lines[j])   # the function line
        j += 1
        if j < len(lines) and lines[j].startswith("\t"):
            keep.append(lines[j])   # its file:line
            j += 1
        taken += 1
    return "\n".join(keep)
