"""Tokenise + mask + hash log bodies, column-wise (Numba).

Every body ``buf[off[i]:off[i+1]]`` is turned into its *masked key*: the
whitespace tokens with variable segments replaced by ``<*>`` (rules in
:mod:`otelproc.kernels.mask`), joined by single spaces, where a run of
tokens that are entirely variable collapses into one ``<*>`` (so
``at Sun Jul 24 02:38:22 2005`` and ``at 1122172702`` give the same key).
The key is hashed with FNV-1a 64 seeded per service; the pattern miner
caches key hash -> pattern, so most lines never leave this kernel.

Internally a line is described by *pieces* ``(start, end, kind)`` into the
body buffer: kind 0 literal bytes, 1 a variable (printed ``<*>``, its raw
bytes are the parameter value), 2 a token separator (printed as one space).
Printing the key (the miner's slow path) walks the pieces; the hot paths
(:func:`hash_and_lookup`, :func:`hash_lookup_params`) hash and take
parameters in one pass over the bytes, and the tests check that they give
what the pieces give.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from otelproc.kernels.mask import (BYTE_CLASS, KC_AT, KC_DELIM, KC_DIGIT, KC_DOT, KC_NOT_ALPHA, KC_NOT_HEX,
                                  KC_SLASH, KC_SPACE, KEY_CLASS, TIME_WORD_BITS, TIME_WORDS, _is_path_token,
                                  _is_var_segment)

FNV_OFFSET = np.uint64(0xCBF29CE484222325)
FNV_PRIME = np.uint64(0x100000001B3)
PIECE_LIT = 0
PIECE_VAR = 1
PIECE_SEP = 2
VAR_TEXT = np.frombuffer(b"<*>", dtype=np.uint8).copy()
_TW = TIME_WORDS  # a global array: Numba freezes it into the compiled code


@njit(cache=True, nogil=True)
def _only_colon_comma(buf, s, e) -> bool:
    for i in range(s, e):
        if buf[i] != 58 and buf[i] != 44:
            return False
    return e > s


@njit(cache=True, nogil=True)
def _pieces(buf, s, e, cls, tw, ps, pe, pk) -> int:
    """Split buf[s:e] into pieces written to ps/pe/pk (capacity >= 2*(e-s)+2). Returns the count."""
    n = 0
    prev_token_full_var = False
    have_token = False
    i = s
    while i < e:
        while i < e and (cls[buf[i]] & 1):
            i += 1
        if i >= e:
            break
        ts = i
        slashes = 0
        while i < e and not (cls[buf[i]] & 1):
            if buf[i] == 47:
                slashes += 1
            i += 1
        te = i
        if have_token:
            ps[n] = ts
            pe[n] = ts
            pk[n] = 2
            n += 1
        token_first = n
        # only tokens with a '/' can be paths or URLs: skip that scan for the rest
        if slashes > 0 and _is_path_token(buf, ts, te):
            ps[n] = ts
            pe[n] = te
            pk[n] = 1
            n += 1
        else:
            j = ts
            prev_delim = 0
            while j < te:
                b = buf[j]
                if cls[b] & 2:
                    # a delimiter byte: literal; merge with a preceding literal piece
                    if n > token_first and pk[n - 1] == 0 and pe[n - 1] == j:
                        pe[n - 1] = j + 1
                    else:
                        ps[n] = j
                        pe[n] = j + 1
                        pk[n] = 0
                        n += 1
                    prev_delim = b
                    j += 1
                    continue
                ss = j
                acc = 0
                while j < te and not (cls[buf[j]] & 2):
                    acc |= cls[buf[j]]
                    j += 1
                se = j
                quoted = (prev_delim == 34 or prev_delim == 39) and se < te and buf[se] == prev_delim
                # a digit decides at once; the other rules need the segment scan
                var = (acc & 4) != 0 or _is_var_segment(buf, ss, se, cls, tw, prev_delim, quoted)
                if var:
                    # var ':' var, var '::' var and var ',' var (host:port, IPv6, a,b,c) collapse into one variable
                    if (n - token_first >= 2 and pk[n - 1] == 0 and pk[n - 2] == 1 and pe[n - 1] == ss
                            and _only_colon_comma(buf, ps[n - 1], pe[n - 1])):
                        n -= 1
                        pe[n - 1] = se
                    else:
                        ps[n] = ss
                        pe[n] = se
                        pk[n] = 1
                        n += 1
                else:
                    if n > token_first and pk[n - 1] == 0 and pe[n - 1] == ss:
                        pe[n - 1] = se
                    else:
                        ps[n] = ss
                        pe[n] = se
                        pk[n] = 0
                        n += 1
                prev_delim = 0
        full_var = (n - token_first == 1) and pk[token_first] == 1
        if full_var and prev_token_full_var:
            # a run of wholly variable tokens is one variable (with its inner spaces):
            # drop this token and its separator, extend the previous variable
            n = token_first - 1
            pe[n - 1] = te
        have_token = True
        prev_token_full_var = full_var
    return n


@njit(cache=True, nogil=True)
def _hash_pieces(buf, ps, pe, pk, n, seed):
    h = seed
    for p in range(n):
        k = pk[p]
        if k == 0:
            for i in range(ps[p], pe[p]):
                h = (h ^ np.uint64(buf[i])) * FNV_PRIME
        elif k == 1:
            h = (h ^ np.uint64(60)) * FNV_PRIME
            h = (h ^ np.uint64(42)) * FNV_PRIME
            h = (h ^ np.uint64(62)) * FNV_PRIME
        else:
            h = (h ^ np.uint64(32)) * FNV_PRIME
    return h


@njit(cache=True, nogil=True)
def _max_len(off):
    m = 0
    for i in range(len(off) - 1):
        d = off[i + 1] - off[i]
        if d > m:
            m = d
    return m


@njit(cache=True, nogil=True, inline="always")
def _fnv_var(h):
    h = (h ^ np.uint64(60)) * FNV_PRIME
    h = (h ^ np.uint64(42)) * FNV_PRIME
    return (h ^ np.uint64(62)) * FNV_PRIME


@njit(cache=True, nogil=True)
def _is_time_word(packed, tw) -> bool:
    lo = 0
    hi = len(tw)
    while lo < hi:
        mid = (lo + hi) // 2
        if tw[mid] < packed:
            lo = mid + 1
        else:
            hi = mid
    return lo < len(tw) and tw[lo] == packed


@njit(cache=True, nogil=True)
def _segment_is_var(buf, ss, se, e, acc, hexl, at, dot_after_at, prev_delim, tw) -> bool:
    """Variable test of the segment buf[ss:se] from the facts gathered while scanning it (the
    rules of :func:`otelproc.kernels.mask._is_var_segment`, which the tests compare with)."""
    if (acc & 4) != 0 or prev_delim == 61:   # a digit; the value of key=value
        return True
    if (prev_delim == 34 or prev_delim == 39) and se < e and buf[se] == prev_delim:   # 'quoted'
        return True
    n = se - ss
    if hexl == n and n >= 16:
        return True
    if at > ss and dot_after_at:   # e-mail
        return True
    if 3 <= n <= 5 and (acc & 16):
        # month / weekday names, true / null / false: pack the lower-cased bytes
        packed = np.int64(0)
        for q in range(ss, se):
            lb = buf[q]
            if 65 <= lb <= 90:
                lb += 32
            packed = (packed << 8) | np.int64(lb)
        if n == 3:
            return _is_time_word(packed, tw)
        if n == 4:
            return packed == 0x74727565 or packed == 0x6E756C6C  # true, null
        return packed == 0x66616C7365  # false
    return False


# How the one-pass walks below (_hash_and_lookup, _hash_lookup_params) got ~2x faster than the
# previous _line_key / _line_key_spans (same outputs; benchmarks/pattern_throughput.py, 2026-11-29):
# * the walk is written out inside the per-line loop, not called per line: Numba increfs and
#   decrefs every array argument of a call with atomic instructions (NRT_incref/NRT_decref), which
#   cost more than the tokenising itself at ~60 bytes a line; for the same reason there is no helper
#   call per segment and no array slice per parameter;
# * one class load per byte answers every question (KEY_CLASS bits are OR-ed per segment) instead
#   of counters and branches per byte; a segment stops being hashed at its first digit (it is a
#   variable then) and a value after '=' is not hashed at all: only literal bytes feed the FNV
#   chain (4 cycles a byte, the critical path);
# * bytes are read through an unsigned index (``buf[np.uint64(i)]``): with a signed one Numba adds
#   its negative-index wraparound, three more instructions per byte.


@njit(cache=True, nogil=True)
def _hash_and_lookup(buf, off, service_index, service_seed, kc, word_bits, tab_key, tab_val, tab_vmask,
                     out_hash, out_ntok, out_slot, out_vmask):
    """Per line: FNV-1a 64 of its masked key and its key token count in ONE pass over the bytes,
    then the exact-key cache lookup.

    The key is the one of :func:`_pieces` + :func:`_hash_pieces` (the tests compare them). Literal
    bytes are hashed while they are scanned; when a segment turns out to be a variable (or its token
    a path) the hash goes back to the checkpoint before it and ``<*>`` is hashed instead. Collapses
    go back too: ``var:var`` / ``var,var`` inside a token to the state after the first variable,
    and a wholly variable token after another one to the state before its separator.

    Parameters
    ----------
    buf : uint8[total_bytes], off : int64[n + 1]
        The bodies.
    service_index : int32[n], service_seed : uint64[s]
        Each line's service and the FNV start value per service.
    kc : uint8[256]
        :data:`otelproc.kernels.mask.KEY_CLASS`.
    word_bits : uint8[2197]
        :data:`otelproc.kernels.mask.TIME_WORD_BITS`.
    tab_key : uint64[cap], tab_val : int32[cap], tab_vmask : uint64[cap]
        The key cache (see :func:`hash_and_lookup`); cap 0: every line misses.
    out_hash : uint64[n], out_ntok : int32[n], out_slot : int32[n], out_vmask : uint64[n]
        Written: key hash, key token count, cached slot and variable mask (-1 and 0 on a miss).

    Returns
    -------
    misses : int
        Lines whose key is not in the cache.
    """
    n = len(off) - 1
    mask = np.uint64(max(len(tab_key), 1) - 1)  # (unused when the table is empty)
    misses = 0
    for r in range(n):
        i = off[r]
        e = off[r + 1]
        h = service_seed[service_index[r]]
        ntok = 0
        prev_full = False
        while True:
            while i < e and (kc[buf[np.uint64(i)]] & KC_SPACE):
                i += 1
            if i >= e:
                break
            h_before_sep = h
            if ntok > 0:
                h = (h ^ np.uint64(32)) * FNV_PRIME
            ntok += 1
            h_tok = h
            ts = i
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
                        # digit-free and whole: the other rules of mask._is_var_segment
                        seg_len = i - ss
                        var = False
                        if prev_delim == 34 or prev_delim == 39:  # 'quoted' / "quoted"
                            var = i < e and buf[np.uint64(i)] == prev_delim
                        if not var and seg_len >= 16 and (acc & KC_NOT_HEX) == 0:
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
                    else:
                        lit_after_var = has_lit
                        h = _fnv_var(h_seg)
                        h_after_var = h
                        nvar += 1
                    since_var = 1
                else:
                    has_lit = True
                    since_var = 0
                acc_tok |= acc
                prev_delim = 0
            full = False
            if (acc_tok & KC_SLASH) != 0 and i - ts >= 2:
                # a path or URL (mask._is_path_token: "/x", "~/x" or a second '/'; "://" has two)
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
            else:
                full = nvar == 1 and not has_lit
            if full and prev_full:
                # a run of wholly variable tokens is one variable
                h = h_before_sep
                ntok -= 1
            prev_full = full
        out_hash[r] = h
        out_ntok[r] = ntok
        if len(tab_key) == 0:
            out_slot[r] = -1
            out_vmask[r] = 0
            misses += 1
            continue
        k = h if h != np.uint64(0) else np.uint64(1)
        j = np.int64((k ^ (k >> np.uint64(29))) & mask)
        while True:
            tk = tab_key[j]
            if tk == k:
                out_slot[r] = tab_val[j]
                out_vmask[r] = tab_vmask[j]
                break
            if tk == np.uint64(0):
                out_slot[r] = -1
                out_vmask[r] = 0
                misses += 1
                break
            j = (j + 1) & np.int64(mask)
    return misses


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
    _check(buf, off)
    service_index = np.ascontiguousarray(service_index, dtype=np.int32)
    service_seed = np.ascontiguousarray(service_seed, dtype=np.uint64)
    n = len(off) - 1
    if len(service_index) != n:
        raise ValueError(f"service_index has {len(service_index)} rows, expected {n}")
    if n and (service_index.min() < 0 or service_index.max() >= len(service_seed)):
        raise ValueError("service_index out of range of service_seed")
    cap = len(tab_key)
    if cap & (cap - 1) or len(tab_val) != cap or len(tab_vmask) != cap:
        raise ValueError("tab_key/tab_val/tab_vmask must have the same power-of-2 length")
    out_hash = np.empty(n, dtype=np.uint64)
    out_ntok = np.empty(n, dtype=np.int32)
    out_slot = np.empty(n, dtype=np.int32)
    out_vmask = np.empty(n, dtype=np.uint64)
    misses = _hash_and_lookup(buf, off, service_index, service_seed, KEY_CLASS, TIME_WORD_BITS,
                              tab_key, tab_val, tab_vmask, out_hash, out_ntok, out_slot, out_vmask)
    return out_hash, out_ntok, out_slot, out_vmask, int(misses)


@njit(cache=True, nogil=True)
def _key_hashes(buf, off, service_index, service_seed, kc, word_bits, out_hash, out_ntok):
    """:func:`_hash_and_lookup` with an empty key table (the same walk; every line misses)."""
    n = len(off) - 1
    _hash_and_lookup(buf, off, service_index, service_seed, kc, word_bits, np.empty(0, np.uint64),
                     np.empty(0, np.int32), np.empty(0, np.uint64), out_hash, out_ntok,
                     np.empty(n, np.int32), np.empty(n, np.uint64))


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
    _check(buf, off)
    service_index = np.ascontiguousarray(service_index, dtype=np.int32)
    service_seed = np.ascontiguousarray(service_seed, dtype=np.uint64)
    n = len(off) - 1
    if len(service_index) != n:
        raise ValueError(f"service_index has {len(service_index)} rows, expected {n}")
    if n and (service_index.min() < 0 or service_index.max() >= len(service_seed)):
        raise ValueError("service_index out of range of service_seed")
    out_hash = np.empty(n, dtype=np.uint64)
    out_ntok = np.empty(n, dtype=np.int32)
    _key_hashes(buf, off, service_index, service_seed, KEY_CLASS, TIME_WORD_BITS, out_hash, out_ntok)
    return out_hash, out_ntok


@njit(cache=True, nogil=True)
def _masked_text(buf, off, rows, cls, tw, var_text, out_off, out_buf, write):
    cap = 2 * _max_len(off) + 4
    ps = np.empty(cap, dtype=np.int64)
    pe = np.empty(cap, dtype=np.int64)
    pk = np.empty(cap, dtype=np.uint8)
    pos = 0
    for q in range(len(rows)):
        r = rows[q]
        out_off[q] = pos
        m = _pieces(buf, off[r], off[r + 1], cls, tw, ps, pe, pk)
        for p in range(m):
            k = pk[p]
            if k == 0:
                L = pe[p] - ps[p]
                if write:
                    out_buf[pos:pos + L] = buf[ps[p]:pe[p]]
                pos += L
            elif k == 1:
                if write:
                    out_buf[pos:pos + 3] = var_text
                pos += 3
            else:
                if write:
                    out_buf[pos] = 32
                pos += 1
    out_off[len(rows)] = pos
    return pos


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
    out_off = np.empty(len(rows) + 1, dtype=np.int64)
    total = _masked_text(buf, off, rows, BYTE_CLASS, TIME_WORDS, VAR_TEXT, out_off, np.empty(0, np.uint8), False)
    out_buf = np.empty(total, dtype=np.uint8)
    _masked_text(buf, off, rows, BYTE_CLASS, TIME_WORDS, VAR_TEXT, out_off, out_buf, True)
    return out_buf, out_off


@njit(cache=True, nogil=True)
def _line_params(buf, s, e, cls, g, pstart, pend, q):
    """Append the parameter spans of buf[s:e] to pstart/pend from index q; return the new count.

    One pass, the same walk as :func:`_hash_and_lookup` (tests compare with the pieces version): a
    variable segment is a span, ``var:var`` extends the last span, a path token is one span, a
    wholly variable token after another extends the previous span, and a key token whose bit is
    set in ``g`` (generalised by the pattern) is one span from its first to its last byte.
    Capacity: the caller guarantees room for (e - s + 1) // 2 + 1 more spans.
    """
    tw = _TW
    ntok = 0
    prev_full = False
    i = s
    while True:
        while i < e and (cls[buf[i]] & 1):
            i += 1
        if i >= e:
            break
        tok = ntok
        ntok += 1
        ts = i
        q_tok = q
        slashes = 0
        nvar = 0
        has_lit = False
        since_var = 0
        lit_after_var = False
        prev_delim = 0
        while i < e:
            b = buf[i]
            c = cls[b]
            if c & 1:
                break
            if c & 2:
                has_lit = True
                if since_var != 0:
                    since_var = 2 if (b == 58 or b == 44) else 0
                prev_delim = b
                i += 1
                continue
            ss = i
            acc = 0
            hexl = 0
            at = -1
            dot_after_at = False
            while i < e:
                b = buf[i]
                c = cls[b]
                if c & 3:
                    break
                acc |= c
                hexl += (c >> 3) & 1
                if c & 32:
                    if b == 47:
                        slashes += 1
                    elif b == 64:
                        if at < 0:
                            at = i
                    elif at >= 0:
                        dot_after_at = True
                i += 1
            if _segment_is_var(buf, ss, i, e, acc, hexl, at, dot_after_at, prev_delim, tw):
                if since_var == 2:
                    pend[q - 1] = i
                    has_lit = lit_after_var
                else:
                    lit_after_var = has_lit
                    pstart[q] = ss
                    pend[q] = i
                    q += 1
                    nvar += 1
                since_var = 1
            else:
                has_lit = True
                since_var = 0
            prev_delim = 0
        tn = i - ts
        full = False
        if slashes > 0 and tn >= 2 and (slashes >= 2 or (tn > 2 and (buf[ts] == 47 or (buf[ts] == 126 and buf[ts + 1] == 47)))):
            q = q_tok
            pstart[q] = ts
            pend[q] = i
            q += 1
            full = True
        else:
            full = nvar == 1 and not has_lit
        if full and prev_full:
            q = q_tok
            pend[q - 1] = i
            ntok -= 1
        elif tok < 64 and ((g >> np.uint64(tok)) & np.uint64(1)) != 0:
            q = q_tok
            pstart[q] = ts
            pend[q] = i
            q += 1
        prev_full = full
    return q


@njit(cache=True, nogil=True)
def _params_one_pass(buf, off, genmask, cls, count_off, pstart, pend):
    n = len(off) - 1
    q = 0
    for r in range(n):
        count_off[r] = q
        need = q + (off[r + 1] - off[r] + 1) // 2 + 1
        if need > len(pstart):
            cap = max(2 * len(pstart), need)
            ns = np.empty(cap, dtype=np.int64)
            ne = np.empty(cap, dtype=np.int64)
            ns[:q] = pstart[:q]
            ne[:q] = pend[:q]
            pstart = ns
            pend = ne
        q = _line_params(buf, off[r], off[r + 1], cls, genmask[r], pstart, pend, q)
    count_off[n] = q
    return pstart[:q], pend[:q]


def param_spans(buf: np.ndarray, off: np.ndarray, genmask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Byte spans of the template parameters of every body.

    Parameters
    ----------
    buf : uint8[total_bytes], off : int64[n + 1]
        The bodies.
    genmask : uint64[n]
        Bit j set: key token j is ``<*>`` in the line's pattern template although the
        masker kept it (the pattern generalised it), so the whole token is a parameter.

    Returns
    -------
    param_off : int64[n + 1]
        Parameters of line i are entries ``param_off[i]:param_off[i+1]``.
    start, end : int64[p]
        Byte span of each parameter value in ``buf``.
    """
    _check(buf, off)
    genmask = np.ascontiguousarray(genmask, dtype=np.uint64)
    if len(genmask) != len(off) - 1:
        raise ValueError(f"genmask has {len(genmask)} rows, expected {len(off) - 1}")
    count_off = np.empty(len(off), dtype=np.int64)
    guess = 2 * (len(off) - 1) + 16
    start, end = _params_one_pass(buf, off, genmask, BYTE_CLASS, count_off,
                                  np.empty(guess, dtype=np.int64), np.empty(guess, dtype=np.int64))
    return count_off, start, end


@njit(cache=True, nogil=True)
def _gather(buf, start, end, out_off, out_buf):
    pos = 0
    out_off[0] = 0
    for i in range(len(start)):
        L = end[i] - start[i]
        out_buf[pos:pos + L] = buf[start[i]:end[i]]
        pos += L
        out_off[i + 1] = pos


def gather_spans(buf: np.ndarray, start: np.ndarray, end: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Copy byte spans into one contiguous StringArray-style (buf uint8, off int64[m+1])."""
    start = np.ascontiguousarray(start, dtype=np.int64)
    end = np.ascontiguousarray(end, dtype=np.int64)
    out_off = np.empty(len(start) + 1, dtype=np.int64)
    out_buf = np.empty(int((end - start).sum()) if len(start) else 0, dtype=np.uint8)
    _gather(buf, start, end, out_off, out_buf)
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


@njit(cache=True, nogil=True)
def _gather_terminated(buf, start, end, param_off, terminator, out_buf, out_off):
    pos = 0
    n = len(param_off) - 1
    for r in range(n):
        out_off[r] = pos
        for q in range(param_off[r], param_off[r + 1]):
            L = end[q] - start[q]
            out_buf[pos:pos + L] = buf[start[q]:end[q]]
            pos += L
            out_buf[pos] = terminator
            pos += 1
    out_off[n] = pos


def gather_params_terminated(buf: np.ndarray, param_off: np.ndarray, start: np.ndarray, end: np.ndarray,
                             terminator: int = 0x1F) -> tuple[np.ndarray, np.ndarray]:
    """One string per line holding its parameters, each followed by ``terminator``
    (the ``pattern_params`` layout of otelproc.store.arrow).

    Returns (uint8 buf, int64 off[n + 1]). A terminator byte inside a value becomes a space.
    """
    n = len(param_off) - 1
    total = int((end - start).sum()) + len(start)
    out_buf = np.empty(total, dtype=np.uint8)
    out_off = np.empty(n + 1, dtype=np.int64)
    _gather_terminated(buf, start, end, param_off, np.uint8(terminator), out_buf, out_off)
    # values cannot contain the terminator: replace any that came from the body by a space
    inner = np.ones(total, dtype=bool)
    if len(start):
        ends_at = np.cumsum((end - start) + 1) - 1
        inner[ends_at] = False
    out_buf[inner & (out_buf == terminator)] = 32
    return out_buf, out_off


def params_terminated(buf: np.ndarray, off: np.ndarray, genmask: np.ndarray,
                      terminator: int = 0x1F) -> tuple[np.ndarray, np.ndarray]:
    """The template parameters of every body as one string per line, each parameter followed by
    ``terminator`` (the ``pattern_params`` layout of otelproc.store.arrow), in one pass.

    The same result as :func:`param_spans` then :func:`gather_params_terminated`, without the
    intermediate span arrays: the walk of :func:`hash_lookup_params` with the genmask given.

    Parameters
    ----------
    buf : uint8[total_bytes], off : int64[n + 1]
        The bodies.
    genmask : uint64[n]
        Key tokens generalised by each line's pattern (see :func:`param_spans`).
    terminator : int
        Byte written after every parameter; inside a value it is replaced by a space.

    Returns
    -------
    out_buf : uint8[m]
        Parameter bytes and terminators (a view of a buffer sized for the worst case).
    out_off : int64[n + 1]
        Line i's parameters are out_buf[out_off[i]:out_off[i + 1]].
    """
    _check(buf, off)
    genmask = np.ascontiguousarray(genmask, dtype=np.uint64)
    n = len(off) - 1
    if len(genmask) != n:
        raise ValueError(f"genmask has {len(genmask)} rows, expected {n}")
    # a line of L bytes has at most (L + 1) // 2 + 1 parameters (spans are non-empty and separated)
    # holding at most L bytes, each followed by one terminator
    lens = np.diff(off)
    max_len = int(lens.max()) if n else 0
    cap = int(off[-1] - off[0]) + int(((lens + 1) // 2 + 1).sum()) if n else 0
    scratch = max_len // 2 + 2
    out_buf = np.empty(cap, dtype=np.uint8)
    out_off = np.empty(n + 1, dtype=np.int64)
    # the outputs of the key walk are not needed here: throw-away arrays (genmask given: no lookup)
    unused_u64, unused_i32 = np.empty(n, dtype=np.uint64), np.empty(n, dtype=np.int32)
    no_keys = np.empty(0, dtype=np.uint64)
    _, used = _hash_lookup_params(
        buf, off, np.zeros(n, dtype=np.int32), np.array([FNV_OFFSET], dtype=np.uint64), KEY_CLASS, TIME_WORD_BITS,
        no_keys, np.empty(0, dtype=np.int32), no_keys, no_keys, genmask, np.uint8(terminator),
        *[np.empty(scratch, dtype=np.int64) for _ in range(5)],
        unused_u64, unused_i32, unused_i32, unused_u64, unused_u64, out_off, out_buf)
    return out_buf[:used], out_off


@njit(cache=True, nogil=True)
def _hash_lookup_params(buf, off, service_index, service_seed, kc, word_bits, tab_key, tab_val, tab_vmask,
                        slot_tvmask, line_genmask, terminator, pstart, pend, tq, tts, tte,
                        out_hash, out_ntok, out_slot, out_vmask, out_genmask, out_off, out_buf):
    """Per line: masked-key hash and parameter spans in one walk over the bytes, the cache lookup,
    then the parameters for the genmask of the cached pattern (none on a miss).

    The walk is :func:`_hash_and_lookup`'s (a copy on purpose: the span bookkeeping would slow the
    key-only path; the tests check that both give the same hashes and token counts) plus what the
    parameters need for any genmask, which is known only after the lookup: the variable spans
    (pstart/pend, as :func:`_line_params` with genmask 0) and, per key token k, the index of its
    first span (tq[k]) and its byte range (tts[k], tte[k]; a run of wholly variable tokens is one
    key token). A key token whose genmask bit is set is then one parameter from its first to its
    last byte, any other gives its variable spans; each value is followed by ``terminator`` (a
    terminator inside a value becomes a space).

    Parameters
    ----------
    buf, off, service_index, service_seed, kc, word_bits, tab_key, tab_val, tab_vmask
        As :func:`_hash_and_lookup`.
    slot_tvmask : uint64[slots]
        Template variable mask per pattern slot (see :func:`hash_lookup_params`).
    line_genmask : uint64[n] or uint64[0]
        Empty: look every line up (:func:`hash_lookup_params`). Else the genmask of every line, as
        :func:`params_terminated` takes it: no lookup, every line gets its parameters, and
        out_slot / out_vmask / out_genmask are left unwritten.
    terminator : uint8
        Byte written after every parameter.
    pstart, pend, tq, tts, tte : int64[longest body // 2 + 2]
        Per-line scratch (a body of L bytes has at most (L + 1) // 2 spans and tokens).
    out_hash, out_ntok, out_slot, out_vmask : as :func:`_hash_and_lookup`
    out_genmask : uint64[n]
        Written: ``slot_tvmask[slot] & ~vmask`` of a cached line, 0 for a miss.
    out_off : int64[n + 1], out_buf : uint8[bytes + parameters bound]
        Written: line i's parameters are out_buf[out_off[i]:out_off[i + 1]] (none for a miss).

    Returns
    -------
    misses : int
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
            acc_tok = 0
            nvar = 0
            has_lit = False
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
                h_seg = h
                ss = i
                acc = 0
                var = True
                if prev_delim != 61:
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
                        seg_len = i - ss
                        var = False
                        if prev_delim == 34 or prev_delim == 39:
                            var = i < e and buf[np.uint64(i)] == prev_delim
                        if not var and seg_len >= 16 and (acc & KC_NOT_HEX) == 0:
                            var = True
                        if not var and (acc & KC_AT) and (acc & KC_DOT):
                            at = ss
                            while buf[np.uint64(at)] != 64:
                                at += 1
                            if at > ss:
                                p = at + 1
                                while p < i and buf[np.uint64(p)] != 46:
                                    p += 1
                                var = p < i
                        if not var and (acc & KC_NOT_ALPHA) == 0 and 3 <= seg_len <= 5:
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
                                    var = packed == 0x74727565 or packed == 0x6E756C6C
                                else:
                                    var = packed == 0x66616C7365
                if var:
                    while i < e:
                        c = kc[buf[np.uint64(i)]]
                        if c & (KC_SPACE | KC_DELIM):
                            break
                        acc |= c
                        i += 1
                    if since_var == 2:
                        h = h_after_var
                        has_lit = lit_after_var
                        pend[q - 1] = i
                    else:
                        lit_after_var = has_lit
                        h = _fnv_var(h_seg)
                        h_after_var = h
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
                h = _fnv_var(h_tok)
                q = q_tok
                pstart[q] = ts
                pend[q] = i
                q += 1
                full = True
            else:
                full = nvar == 1 and not has_lit
            if full and prev_full:
                h = h_before_sep
                ntok -= 1
                q = q_tok
                pend[q - 1] = i
                tte[ntok - 1] = i
            else:
                tq[tok] = q_tok
                tts[tok] = ts
                tte[tok] = i
            prev_full = full
        out_hash[r] = h
        out_ntok[r] = ntok
        out_off[r] = pos
        if len(line_genmask) != 0:
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
                out_genmask[r] = 0
                misses += 1
                continue
            slot = tab_val[j]
            if slot < 0 or slot >= len(slot_tvmask):
                raise ValueError("hash_lookup_params: the key table holds a slot beyond slot_tvmask")
            vm = tab_vmask[j]
            g = slot_tvmask[slot] & ~vm
            out_slot[r] = slot
            out_vmask[r] = vm
            out_genmask[r] = g
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
    service_index = np.ascontiguousarray(service_index, dtype=np.int32)
    service_seed = np.ascontiguousarray(service_seed, dtype=np.uint64)
    slot_tvmask = np.ascontiguousarray(slot_tvmask, dtype=np.uint64)
    n = len(off) - 1
    if len(service_index) != n:
        raise ValueError(f"service_index has {len(service_index)} rows, expected {n}")
    if n and (service_index.min() < 0 or service_index.max() >= len(service_seed)):
        raise ValueError("service_index out of range of service_seed")
    cap = len(tab_key)
    if cap & (cap - 1) or len(tab_val) != cap or len(tab_vmask) != cap:
        raise ValueError("tab_key/tab_val/tab_vmask must have the same power-of-2 length")
    lens = np.diff(off)
    max_len = int(lens.max()) if n else 0
    scratch = max_len // 2 + 2
    out_cap = int(off[-1] - off[0]) + int(((lens + 1) // 2 + 1).sum()) if n else 0
    out_hash = np.empty(n, dtype=np.uint64)
    out_ntok = np.empty(n, dtype=np.int32)
    out_slot = np.empty(n, dtype=np.int32)
    out_vmask = np.empty(n, dtype=np.uint64)
    out_genmask = np.empty(n, dtype=np.uint64)
    out_off = np.empty(n + 1, dtype=np.int64)
    out_buf = np.empty(out_cap, dtype=np.uint8)
    misses, used = _hash_lookup_params(
        buf, off, service_index, service_seed, KEY_CLASS, TIME_WORD_BITS, tab_key, tab_val, tab_vmask, slot_tvmask,
        np.empty(0, dtype=np.uint64), np.uint8(terminator), np.empty(scratch, dtype=np.int64), np.empty(scratch, dtype=np.int64),
        np.empty(scratch, dtype=np.int64), np.empty(scratch, dtype=np.int64), np.empty(scratch, dtype=np.int64),
        out_hash, out_ntok, out_slot, out_vmask, out_genmask, out_off, out_buf)
    return out_hash, out_ntok, out_slot, out_vmask, int(misses), out_genmask, out_buf[:used], out_off


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
