"""Which log bodies are structured or multi-line, in one pass over the bytes (Numba).

The pattern miner mines most bodies as they are. Three kinds get a *mining view* first
(:mod:`otelproc.patterns.bodies`), and this kernel finds them so that plain text costs one byte
scan and nothing else:

* :data:`KIND_JSON`: the first and last non-blank bytes are ``{`` and ``}`` (a JSON object, also
  an OTLP kvlist body, which the receiver writes as JSON);
* :data:`KIND_LOGFMT`: a token (start of the body or after whitespace) begins with one of the
  message field names followed by ``=`` (``msg=...``);
* :data:`KIND_MULTILINE`: a line feed with a non-blank byte after it (a stack trace).

JSON wins over the others, a message field over multi-line.
"""
from __future__ import annotations

import numpy as np
from numba import njit

KIND_PLAIN = 0
KIND_JSON = 1
KIND_LOGFMT = 2
KIND_MULTILINE = 3


_BLANK = 1
_FIRST = 2   # the first byte of a message field name
_LF = 4


@njit(cache=True, nogil=True)
def _body_kinds(buf, off, names, name_off, tab, out):
    # one table load per byte answers "blank? could a name start here? line feed?" (as the key walk does)
    n_names = len(name_off) - 1
    for r in range(len(off) - 1):
        s = off[r]
        e = off[r + 1]
        a = s
        while a < e and (tab[buf[np.uint64(a)]] & _BLANK):
            a += 1
        z = e
        while z > a and (tab[buf[np.uint64(z - 1)]] & _BLANK):
            z -= 1
        if z - a >= 2 and buf[np.uint64(a)] == 123 and buf[np.uint64(z - 1)] == 125:
            out[r] = KIND_JSON
            continue
        kind = KIND_PLAIN
        newline = False
        prev_blank = True
        for i in range(a, z):
            c = tab[buf[np.uint64(i)]]
            if (c & _FIRST) and prev_blank:
                # a token starts with a name's first byte: one of the names followed by '='?
                for k in range(n_names):
                    ns = name_off[k]
                    L = name_off[k + 1] - ns
                    if i + L < z and buf[np.uint64(i + L)] == 61:
                        same = True
                        for j in range(L):
                            if buf[np.uint64(i + j)] != names[ns + j]:
                                same = False
                                break
                        if same:
                            kind = KIND_LOGFMT
                            break
                if kind == KIND_LOGFMT:
                    break
            if c & _LF:
                newline = True
            prev_blank = (c & _BLANK) != 0
        if kind == KIND_PLAIN and newline:
            kind = KIND_MULTILINE
        out[r] = kind


def body_kinds(buf: np.ndarray, off: np.ndarray, fields: list[str]) -> np.ndarray:
    """The kind of every body (``KIND_*``).

    Parameters
    ----------
    buf : uint8[total], off : int64[n + 1]
        The bodies.
    fields : list of str
        Message field names (``msg``, ``message``, ...) that make a body logfmt.

    Returns
    -------
    kinds : int8[n]
    """
    enc = [f.encode("utf-8") for f in fields if f]
    names = np.frombuffer(b"".join(enc), dtype=np.uint8).copy() if enc else np.zeros(0, np.uint8)
    name_off = np.zeros(len(enc) + 1, dtype=np.int64)
    if enc:
        np.cumsum([len(x) for x in enc], out=name_off[1:])
    tab = np.zeros(256, dtype=np.uint8)
    for b in b" \t\n\r\x0b\x0c":
        tab[b] |= _BLANK
    tab[10] |= _LF
    for x in enc:
        tab[x[0]] |= _FIRST
    out = np.zeros(len(off) - 1, dtype=np.int8)
    _body_kinds(buf, np.ascontiguousarray(off, dtype=np.int64), names, name_off, tab, out)
    return out
