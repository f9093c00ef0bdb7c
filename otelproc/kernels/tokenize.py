"""Tokenise + mask + hash log bodies, column-wise (Numba).

Every body ``buf[off[i]:off[i+1]]`` is turned into its *masked key*: the
whitespace tokens with variable segments replaced by ``<*>`` (rules in
:mod:`otelproc.kernels.mask`), joined by single spaces, where a run of
tokens that are entirely variable collapses into one ``<*>`` (so
``at Sun Jul 24 02:38:22 2005`` and ``at 1122172702`` give the same key).
The key is hashed with FNV-1a 64 seeded per service; the pattern miner
caches key hash -> pattern, so most lines never leave this kernel.

There is ONE walk over a body's bytes, with the masking rules of
:mod:`otelproc.kernels.mask` written inside it (:func:`_walk_lines`); every
function here runs it: the hot paths (:func:`hash_and_lookup`,
:func:`hash_lookup_params`) hash, look up and take parameters in that one
pass, :func:`params_terminated` takes parameters for a given genmask, and
:func:`masked_text` (the miner's slow path) prints the key from the
variables the walk found. The tests compare them with slower multi-pass
references (tests/reference.py).
"""
from __future__ import annotations

import numpy as np
from numba import njit

from otelproc.kernels.mask import (KC_AT, KC_DELIM, KC_DIGIT, KC_DOT, KC_NOT_ALPHA, KC_NOT_HEX, KC_SLASH, KC_SPACE,
                                  KEY_CLASS, TIME_WORD_BITS)

FNV_OFFSET = np.uint64(0xCBF29CE484222325)
FNV_PRIME = np.uint64(0x100000001B3)
_NO_U64 = np.empty(0, dtype=np.uint64)
# what _walk_lines does with each line's walk (see there)
MODE_LOOKUP = 0
MODE_PARAMS = 1
MODE_GIVEN_GENMASK = 2
MODE_KEY_TEXT = 3


@njit(cache=True, nogil=True, inline="always")
def _fnv_var(h):
    h = (h ^ np.uint64(60)) * FNV_PRIME
    h = (h ^ np.uint64(42)) * FNV_PRIME
    return (h ^ np.uint64(62)) * FNV_PRIME


# Why the walk is fast (benchmarks/pattern_throughput.py, 2026-11-29 and README "Session 5"):
# * it and the rules are written inside the per-line loop of one function, never called per line or
#   segment: Numba increfs and decrefs every array argument of a call with atomic instructions
#   (NRT_incref/NRT_decref), which cost more than the tokenising itself at ~60 bytes a line, and an
#   inline="always" function's array arguments as well; for the same reason there is no array slice
#   per parameter;
# * one class load per byte answers every question (KEY_CLASS bits are OR-ed per segment) instead
#   of counters and branches per byte; a segment stops being hashed at its first digit (it is a
#   variable then) and a value after '=' is not hashed at all: only literal bytes feed the FNV
#   chain (4 cycles a byte, the critical path);
# * bytes are read through an unsigned index (``buf[np.uint64(i)]``): with a signed one Numba adds
#   its negative-index wraparound, three more instructions per byte.


@njit(cache=True, nogil=True)
def _walk_lines(buf, off, service_index, service_seed, kc, word_bits, mode, tab_key, tab_val, tab_vmask,
                slot_tvmask, line_genmask, terminator, pstart, pend, tq, tts, tte,
                out_hash, out_ntok, out_slot, out_vmask, out_genmask, out_off, out_buf):
    """THE walk over the bytes of every body, and what each caller does with it per line.

    The walk (one pass per body): FNV-1a 64 of the masked key and its key token count. Literal
    bytes are hashed while they are scanned; a segment is hashed up to its first digit, a value
    after ``=`` not at all. When a segment turns out to be a variable (the rules of
    :mod:`otelproc.kernels.mask`, written here once) the hash goes back to the checkpoint before
    it and ``<*>`` is hashed instead, and the same when its token is a path (the whole token is
    one variable). Collapses go back too: ``var:var`` / ``var,var`` inside a token (host:port,
    IPv6, a,b) to the state after the first variable, and a wholly variable token after another
    one to the state before its separator (a run of wholly variable tokens is one ``<*>``). Unless
    ``pstart`` is None it also keeps where the variables are: pstart/pend[q] the byte range of
    variable q (a collapse extends the last one) and, per key token k, tq[k] its first variable and
    tts/tte[k] its byte range (a collapsed run is one key token).

    Then, by ``mode``:

    * MODE_LOOKUP: the exact-key cache lookup (tab_key/tab_val/tab_vmask, cap 0: every line
      misses): out_slot / out_vmask, -1 and 0 on a miss;
    * MODE_PARAMS: the lookup, then the parameters for the genmask of the cached pattern
      (``slot_tvmask[slot] & ~vmask``, out_genmask; none and 0 for a miss);
    * MODE_GIVEN_GENMASK: the parameters for ``line_genmask`` (no lookup);
    * MODE_KEY_TEXT: the key text into out_buf/out_off (each key token's bytes with its variables
      printed ``<*>``, tokens joined by one space).

    Parameters are the variables in order, except that a key token whose genmask bit is set (the
    pattern generalised it) is one parameter from its first to its last byte; each value is
    followed by ``terminator`` (a terminator inside a value becomes a space).

    Why one function and the rules written inside its loops: a call between jitted functions, and
    an inlined one too (inline="always" binds its array arguments to new variables), costs atomic
    reference-count operations per array argument, more than the tokenising itself at ~60 bytes a
    line (session 5: the kernel went from 7.6 to 3.6 M lines/s when the walk was an inlined
    function). ``pstart`` None (MODE_LOOKUP) compiles a version without the variables' bookkeeping
    (Numba prunes ``is None`` branches on an argument's type: 6.3 -> 7.5 M lines/s); ``mode`` is
    tested per line, never per byte.

    Parameters
    ----------
    buf : uint8[total_bytes], off : int64[n + 1]
        The bodies.
    service_index : int32[n], service_seed : uint64[s]
        Each line's service and the FNV start value per service.
    kc : uint8[256], word_bits : uint8[2197]
        :data:`otelproc.kernels.mask.KEY_CLASS`, :data:`otelproc.kernels.mask.TIME_WORD_BITS`.
    tab_key : uint64[cap], tab_val : int32[cap], tab_vmask : uint64[cap]
        The key cache (:class:`otelproc.kernels.cluster.KeyTable`).
    slot_tvmask : uint64[slots]
        Template variable mask per pattern slot (MODE_PARAMS).
    line_genmask : uint64[n]
        MODE_GIVEN_GENMASK: every line's genmask.
    terminator : uint8
        Byte written after every parameter.
    pstart, pend, tq, tts, tte : int64[longest body // 2 + 2] or None
        Per-line scratch (a body of L bytes has at most (L + 1) // 2 variables and tokens); None
        for MODE_LOOKUP.
    out_hash : uint64[n], out_ntok : int32[n]
        Written: key hash and key token count.
    out_slot : int32[n], out_vmask : uint64[n], out_genmask : uint64[n]
        Written by the lookup modes.
    out_off : int64[n + 1], out_buf : uint8[bound]
        Written by the parameter and key text modes: line i's output is out_buf[out_off[i]:out_off[i + 1]].

    Returns
    -------
    misses : int
        Lines whose key is not cached (lookup modes).
    used : int
        Bytes written to out_buf.
    """
    n = len(off) - 1
    mask = np.uint64(max(len(tab_key), 1) - 1)  # (unused when the table is empty)
    misses = 0
    pos = 0
    for r in range(n):
        i = off[r]
        e = off[r + 1]
        h = service_seed[service_index[r]]
        ntok = 0
        q = 0
        prev_full = False
        while True:
            while i < e and (kc[buf[np.uint64(i)]] & KC_SPACE):
                i += 1
            if i >= e:
                break
            h_before_sep = h
            if ntok > 0:
                h = (h ^ np.uint64(32)) * FNV_PRIME
            tok = ntok
            ntok += 1
            h_tok = h
            ts = i
            q_tok = q
            acc_tok = 0         # OR of the classes of the token's segment bytes
            nvar = 0
            has_lit = False
            # 0: no variable yet / something else since it; 1: right after a variable; 2: only ':' ',' since it
            since_var = 0
            h_after_var = h
            lit_after_var = False
            prev_delim = 0
            while i < e:
                b = buf[np.uint64(i)]
                c = kc[b]
                if c & KC_SPACE:
                    break
                if c & KC_DELIM:
                    h = (h ^ np.uint64(b)) * FNV_PRIME
                    has_lit = True
                    if since_var != 0:
                        since_var = 2 if (b == 58 or b == 44) else 0
                    prev_delim = b
                    i += 1
                    continue
                # a segment: hashed as a literal while it is scanned, up to its first digit
                h_seg = h
                ss = i
                acc = 0
                var = True
                if prev_delim != 61:  # (the value of key=value is a variable whatever its bytes)
                    c = 0
                    while i < e:
                        b = buf[np.uint64(i)]
                        c = kc[b]
                        if c & (KC_SPACE | KC_DELIM | KC_DIGIT):
                            break
                        acc |= c
                        h = (h ^ np.uint64(b)) * FNV_PRIME
                        i += 1
                    if (c & KC_DIGIT) == 0:
                        # digit-free, whole, not a key=value value: the other rules (mask.py's list)
                        seg_len = i - ss
                        var = False
                        if prev_delim == 34 or prev_delim == 39:  # 'quoted' / "quoted" within its token
                            var = i < e and buf[np.uint64(i)] == prev_delim
                        if not var and seg_len >= 16 and (acc & KC_NOT_HEX) == 0:   # a long run of hex letters
                            var = True
                        if not var and (acc & KC_AT) and (acc & KC_DOT):
                            # e-mail: a '.' after the first '@', which is not the first byte
                            at = ss
                            while buf[np.uint64(at)] != 64:
                                at += 1
                            if at > ss:
                                p = at + 1
                                while p < i and buf[np.uint64(p)] != 46:
                                    p += 1
                                var = p < i
                        if not var and (acc & KC_NOT_ALPHA) == 0 and 3 <= seg_len <= 5:
                            # month / weekday names, true / null / false ('| 32' lower-cases a letter)
                            if seg_len == 3:
                                w = ((np.int64(buf[np.uint64(ss)] | 32) - 97) * 676
                                     + (np.int64(buf[np.uint64(ss + 1)] | 32) - 97) * 26
                                     + (np.int64(buf[np.uint64(ss + 2)] | 32) - 97))
                                var = ((word_bits[w >> 3] >> (w & 7)) & 1) != 0
                            else:
                                packed = np.int64(0)
                                for p in range(ss, i):
                                    packed = (packed << 8) | np.int64(buf[np.uint64(p)] | 32)
                                if seg_len == 4:
                                    var = packed == 0x74727565 or packed == 0x6E756C6C  # true, null
                                else:
                                    var = packed == 0x66616C7365  # false
                if var:
                    # the rest of a variable segment is scanned, not hashed
                    while i < e:
                        c = kc[buf[np.uint64(i)]]
                        if c & (KC_SPACE | KC_DELIM):
                            break
                        acc |= c
                        i += 1
                    if since_var == 2:
                        # var ':' var (host:port, IPv6, a,b): one variable, drop the delimiters
                        h = h_after_var
                        has_lit = lit_after_var
                        if pstart is not None:
                            pend[q - 1] = i
                    else:
                        lit_after_var = has_lit
                        h = _fnv_var(h_seg)
                        h_after_var = h
                        if pstart is not None:
                            pstart[q] = ss
                            pend[q] = i
                            q += 1
                        nvar += 1
                    since_var = 1
                else:
                    has_lit = True
                    since_var = 0
                acc_tok |= acc
                prev_delim = 0
            full = False
            if (acc_tok & KC_SLASH) != 0 and i - ts >= 2:
                # a path or URL: "/x", "~/x" (3+ bytes) or a second '/' ("://" has two)
                b = buf[np.uint64(ts)]
                full = i - ts > 2 and (b == 47 or (b == 126 and buf[np.uint64(ts + 1)] == 47))
                if not full:
                    p = ts
                    while buf[np.uint64(p)] != 47:
                        p += 1
                    p += 1
                    while p < i and buf[np.uint64(p)] != 47:
                        p += 1
                    full = p < i
            if full:
                h = _fnv_var(h_tok)  # the whole token is one variable
                if pstart is not None:
                    q = q_tok
                    pstart[q] = ts
                    pend[q] = i
                    q += 1
            else:
                full = nvar == 1 and not has_lit
            if full and prev_full:
                # a run of wholly variable tokens is one variable
                h = h_before_sep
                ntok -= 1
                if pstart is not None:
                    q = q_tok
                    pend[q - 1] = i
                    tte[ntok - 1] = i
            elif pstart is not None:
                tq[tok] = q_tok
                tts[tok] = ts
                tte[tok] = i
            prev_full = full
        out_hash[r] = h
        out_ntok[r] = ntok
        if pstart is not None:
            out_off[r] = pos
            if mode == MODE_KEY_TEXT:
                for t in range(ntok):
                    if t:
                        out_buf[np.uint64(pos)] = 32
                        pos += 1
                    a = tts[t]
                    m_end = tq[t + 1] if t + 1 < ntok else q
                    for m in range(tq[t], m_end + 1):
                        z = pstart[m] if m < m_end else tte[t]   # literal bytes up to the next variable or the token's end
                        for p in range(a, z):
                            out_buf[np.uint64(pos)] = buf[np.uint64(p)]
                            pos += 1
                        if m < m_end:
                            out_buf[np.uint64(pos)] = 60   # <*>
                            out_buf[np.uint64(pos + 1)] = 42
                            out_buf[np.uint64(pos + 2)] = 62
                            pos += 3
                            a = pend[m]
                continue
        if mode == MODE_GIVEN_GENMASK:
            g = line_genmask[r]
        else:
            found = False
            if len(tab_key) != 0:
                k = h if h != np.uint64(0) else np.uint64(1)
                j = np.int64((k ^ (k >> np.uint64(29))) & mask)
                while True:
                    tk = tab_key[j]
                    if tk == k:
                        found = True
                        break
                    if tk == np.uint64(0):
                        break
                    j = (j + 1) & np.int64(mask)
            if not found:
                out_slot[r] = -1
                out_vmask[r] = 0
                misses += 1
                if mode == MODE_PARAMS:
                    out_genmask[r] = 0
                continue
            slot = tab_val[j]
            vm = tab_vmask[j]
            out_slot[r] = slot
            out_vmask[r] = vm
            if mode == MODE_LOOKUP:
                continue
            if slot < 0 or slot >= len(slot_tvmask):
                raise ValueError("hash_lookup_params: the key table holds a slot beyond slot_tvmask")
            g = slot_tvmask[slot] & ~vm
            out_genmask[r] = g
        if pstart is None:
            continue
        # the parameters: byte loops, not slice copies (a slice is a new array: two atomic refcounts)
        if g == 0:
            # nothing generalised (most lines): the variable spans in order
            for m in range(q):
                for p in range(pstart[m], pend[m]):
                    v = buf[np.uint64(p)]
                    out_buf[np.uint64(pos)] = v if v != terminator else np.uint8(32)
                    pos += 1
                out_buf[np.uint64(pos)] = terminator
                pos += 1
            continue
        for t in range(ntok):
            whole = t < 64 and ((g >> np.uint64(t)) & np.uint64(1)) != 0
            m = tq[t]
            m_end = m + 1 if whole else (tq[t + 1] if t + 1 < ntok else q)
            while m < m_end:
                if whole:   # a generalised key token: one parameter from its first to its last byte
                    a = tts[t]
                    z = tte[t]
                else:
                    a = pstart[m]
                    z = pend[m]
                m += 1
                for p in range(a, z):
                    v = buf[np.uint64(p)]
                    out_buf[np.uint64(pos)] = v if v != terminator else np.uint8(32)
                    pos += 1
                out_buf[np.uint64(pos)] = terminator
                pos += 1
    out_off[n] = pos
    return misses, pos


def _walk(buf: np.ndarray, off: np.ndarray, mode: int, service_index: np.ndarray | None = None,
          service_seed: np.ndarray | None = None, table: tuple = (), slot_tvmask: np.ndarray = _NO_U64,
          genmask: np.ndarray = _NO_U64, terminator: int = 0x1F, out_cap: int = 0) -> tuple:
    """Check the inputs and run :func:`_walk_lines` in ``mode``: (hash, ntok, slot, vmask, misses,
    genmask, out_buf, out_off)."""
    _check(buf, off)
    n = len(off) - 1
    if service_index is None:   # (the parameter and key text modes: any seed, the hash is not used)
        service_index, service_seed = np.zeros(n, dtype=np.int32), np.array([FNV_OFFSET], dtype=np.uint64)
    service_index = np.ascontiguousarray(service_index, dtype=np.int32)
    service_seed = np.ascontiguousarray(service_seed, dtype=np.uint64)
    if len(service_index) != n:
        raise ValueError(f"service_index has {len(service_index)} rows, expected {n}")
    if n and (service_index.min() < 0 or service_index.max() >= len(service_seed)):
        raise ValueError("service_index out of range of service_seed")
    tab_key, tab_val, tab_vmask = table or (_NO_U64, np.empty(0, dtype=np.int32), _NO_U64)
    cap = len(tab_key)
    if cap & (cap - 1) or len(tab_val) != cap or len(tab_vmask) != cap:
        raise ValueError("tab_key/tab_val/tab_vmask must have the same power-of-2 length")
    scratch = int(np.diff(off).max()) // 2 + 2 if n else 2
    out_hash = np.empty(n, dtype=np.uint64)
    out_ntok = np.empty(n, dtype=np.int32)
    out_slot = np.empty(n, dtype=np.int32)
    out_vmask = np.empty(n, dtype=np.uint64)
    out_genmask = np.empty(n if mode == MODE_PARAMS else 0, dtype=np.uint64)
    out_off = np.empty(n + 1, dtype=np.int64)
    out_buf = np.empty(out_cap, dtype=np.uint8)
    misses, used = _walk_lines(buf, off, service_index, service_seed, KEY_CLASS, TIME_WORD_BITS, mode, tab_key, tab_val,
                               tab_vmask, np.ascontiguousarray(slot_tvmask, dtype=np.uint64), genmask,
                               np.uint8(terminator),
                               *([None] * 5 if mode == MODE_LOOKUP else [np.empty(scratch, dtype=np.int64) for _ in range(5)]),
                               out_hash, out_ntok, out_slot, out_vmask, out_genmask, out_off, out_buf)
    return out_hash, out_ntok, out_slot, out_vmask, int(misses), out_genmask, out_buf[:used], out_off


def _params_cap(off: np.ndarray) -> int:
    """Bytes the parameters of the bodies can take: a body of L bytes has at most (L + 1) // 2 + 1
    parameters (spans are non-empty and separated) holding at most L bytes, each followed by one
    terminator."""
    lens = np.diff(off)
    return int(off[-1] - off[0]) + int(((lens + 1) // 2 + 1).sum()) if len(lens) else 0


def hash_and_lookup(buf: np.ndarray, off: np.ndarray, service_index: np.ndarray, service_seed: np.ndarray,
                    tab_key: np.ndarray, tab_val: np.ndarray, tab_vmask: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """Masked-key hash of every body and its pattern slot in a key cache, in one fused pass.

    Parameters
    ----------
    buf : uint8[total_bytes], off : int64[n + 1]
        The bodies.
    service_index : int32[n], service_seed : uint64[s]
        As in :func:`key_hashes`.
    tab_key : uint64[cap], tab_val : int32[cap], tab_vmask : uint64[cap]
        The open-addressing table of :class:`otelproc.kernels.cluster.KeyTable` (cap a power of 2;
        key 0 = empty, a hash of 0 is stored as 1).

    Returns
    -------
    hashes : uint64[n], ntok : int32[n]
        As :func:`key_hashes`.
    slot : int32[n], vmask : uint64[n]
        The cached pattern slot and variable mask of each line's key (-1 and 0 on a miss).
    misses : int
        Number of lines whose key is not cached.
    """
    h, ntok, slot, vmask, misses, *_ = _walk(buf, off, MODE_LOOKUP, service_index, service_seed,
                                            (tab_key, tab_val, tab_vmask))
    return h, ntok, slot, vmask, misses


def key_hashes(buf: np.ndarray, off: np.ndarray, service_index: np.ndarray,
               service_seed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Masked-key hash and key token count of every body.

    Parameters
    ----------
    buf : uint8[total_bytes]
        Body bytes (UTF-8 or anything: bytes >= 0x80 are ordinary literal bytes).
    off : int64[n + 1]
        Body i is ``buf[off[i]:off[i+1]]``.
    service_index : int32[n]
        Service of each body, an index into ``service_seed``.
    service_seed : uint64[s]
        FNV start value per service (so equal keys of two services never collide).

    Returns
    -------
    hashes : uint64[n]
        FNV-1a 64 of the masked key text, seeded with the service's seed.
    ntok : int32[n]
        Number of key tokens (0 for an empty / all-whitespace body).
    """
    h, ntok, *_ = _walk(buf, off, MODE_LOOKUP, service_index, service_seed)
    return h, ntok


def masked_text(buf: np.ndarray, off: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The masked key text of the bodies at ``rows`` (the miner's slow path; tests).

    Parameters
    ----------
    buf : uint8[total_bytes], off : int64[n + 1]
        The bodies.
    rows : int64[m]
        Which bodies.

    Returns
    -------
    text_buf : uint8[bytes], text_off : int64[m + 1]
        Key i is ``text_buf[text_off[i]:text_off[i+1]]`` (ASCII ``<*>`` and single spaces,
        literal bytes copied unchanged).
    """
    _check(buf, off)
    rows = np.ascontiguousarray(rows, dtype=np.int64)
    if len(rows) and (rows.min() < 0 or rows.max() >= len(off) - 1):
        raise ValueError("rows out of range")
    # the bodies at rows, contiguous (the slow path: a few rows per batch)
    lens = off[rows + 1] - off[rows]
    sub_off = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum(lens, out=sub_off[1:])
    sub_buf = buf[np.repeat(off[rows] - sub_off[:-1], lens) + np.arange(sub_off[-1])]
    # a variable of one byte prints as three ("<*>"), a run of spaces as one
    *_, out_buf, out_off = _walk(sub_buf, sub_off, MODE_KEY_TEXT, out_cap=3 * int(sub_off[-1]))
    return out_buf, out_off


def _check(buf: np.ndarray, off: np.ndarray) -> None:
    if not isinstance(buf, np.ndarray) or buf.dtype != np.uint8 or buf.ndim != 1:
        raise TypeError(f"buf must be a 1-d uint8 array, got {getattr(buf, 'dtype', type(buf))}; use .astype(np.uint8)")
    if not isinstance(off, np.ndarray) or off.dtype != np.int64 or off.ndim != 1:
        raise TypeError(f"off must be a 1-d int64 array, got {getattr(off, 'dtype', type(off))}; use .astype(np.int64)")
    if len(off) == 0:
        raise ValueError("off must have n + 1 >= 1 entries")
    if len(off) > 1 and (off[0] < 0 or off[-1] > len(buf) or np.any(np.diff(off) < 0)):
        raise ValueError("off must be non-decreasing and within buf")


def params_terminated(buf: np.ndarray, off: np.ndarray, genmask: np.ndarray,
                      terminator: int = 0x1F) -> tuple[np.ndarray, np.ndarray]:
    """The template parameters of every body as one string per line, each parameter followed by
    ``terminator`` (the ``pattern_params`` layout of otelproc.store.arrow), in one pass: the
    variables of the key walk in order, except that a key token whose ``genmask`` bit is set (the
    pattern generalised it) is one parameter from its first to its last byte. The walk of
    :func:`hash_lookup_params` with the genmask given.

    Parameters
    ----------
    buf : uint8[total_bytes], off : int64[n + 1]
        The bodies.
    genmask : uint64[n]
        Bit j set: key token j is ``<*>`` in the line's pattern template although the masker kept
        it (the pattern generalised it), so the whole token is a parameter.
    terminator : int
        Byte written after every parameter; inside a value it is replaced by a space.

    Returns
    -------
    out_buf : uint8[m]
        Parameter bytes and terminators (a view of a buffer sized for the worst case).
    out_off : int64[n + 1]
        Line i's parameters are out_buf[out_off[i]:out_off[i + 1]].
    """
    genmask = np.ascontiguousarray(genmask, dtype=np.uint64)
    if len(genmask) != len(off) - 1:
        raise ValueError(f"genmask has {len(genmask)} rows, expected {len(off) - 1}")
    *_, out_buf, out_off = _walk(buf, off, MODE_GIVEN_GENMASK, genmask=genmask, terminator=terminator,
                                 out_cap=_params_cap(off))
    return out_buf, out_off


def hash_lookup_params(buf: np.ndarray, off: np.ndarray, service_index: np.ndarray, service_seed: np.ndarray,
                       tab_key: np.ndarray, tab_val: np.ndarray, tab_vmask: np.ndarray, slot_tvmask: np.ndarray,
                       terminator: int = 0x1F):
    """:func:`hash_and_lookup` plus the ``pattern_params`` of every line whose key is cached, in
    one walk over the bytes (the parameters of a line need its pattern's genmask, so
    :func:`params_terminated` walked every body a second time).

    Parameters
    ----------
    buf, off, service_index, service_seed, tab_key, tab_val, tab_vmask
        As :func:`hash_and_lookup`.
    slot_tvmask : uint64[slots]
        Per pattern slot, bit j set when template token j is ``<*>`` (every cached slot must be in range).
    terminator : int
        Byte after every parameter (see :func:`params_terminated`).

    Returns
    -------
    hashes : uint64[n], ntok : int32[n], slot : int32[n], vmask : uint64[n], misses : int
        As :func:`hash_and_lookup`.
    genmask : uint64[n]
        ``slot_tvmask[slot] & ~vmask`` for a cached line, 0 for a miss.
    params_buf : uint8[m], params_off : int64[n + 1]
        Line i's parameters, each followed by ``terminator``: what :func:`params_terminated` gives
        with ``genmask``, except that a missed line has none (the caller fills those in once it
        knows their pattern).
    """
    _check(buf, off)
    return _walk(buf, off, MODE_PARAMS, service_index, service_seed, (tab_key, tab_val, tab_vmask), slot_tvmask,
                 terminator=terminator, out_cap=_params_cap(off))


@njit(cache=True, nogil=True)
def _splice(buf, off, rows, sub_buf, sub_off, out_buf, out_off):
    n = len(off) - 1
    pos = 0
    k = 0
    for r in range(n):
        out_off[r] = pos
        if k < len(rows) and rows[k] == r:
            a = sub_off[k]
            L = sub_off[k + 1] - a
            out_buf[pos:pos + L] = sub_buf[a:a + L]
            k += 1
        else:
            a = off[r]
            L = off[r + 1] - a
            out_buf[pos:pos + L] = buf[a:a + L]
        pos += L
    out_off[n] = pos


def replace_strings(buf: np.ndarray, off: np.ndarray, rows: np.ndarray, sub_buf: np.ndarray,
                    sub_off: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A StringArray (buf, off) with the strings at ``rows`` replaced.

    Parameters
    ----------
    buf : uint8[b], off : int64[n + 1]
        The strings.
    rows : int64[k]
        Strictly increasing positions in [0, n).
    sub_buf : uint8[c], sub_off : int64[k + 1]
        The new string of each of ``rows``.

    Returns
    -------
    out_buf : uint8[...], out_off : int64[n + 1]
    """
    rows = np.ascontiguousarray(rows, dtype=np.int64)
    n = len(off) - 1
    if len(sub_off) != len(rows) + 1:
        raise ValueError(f"sub_off has {len(sub_off)} entries, expected {len(rows) + 1}")
    if len(rows) and (rows[0] < 0 or rows[-1] >= n or np.any(np.diff(rows) <= 0)):
        raise ValueError("rows must be strictly increasing positions in [0, n)")
    lens = np.diff(off)
    total = int(lens.sum() - lens[rows].sum() + (sub_off[-1] - sub_off[0]))
    out_buf = np.empty(total, dtype=np.uint8)
    out_off = np.empty(n + 1, dtype=np.int64)
    _splice(buf, off, rows, sub_buf, sub_off, out_buf, out_off)
    return out_buf, out_off
