"""Pattern kernels: masking classes, odd bodies, and agreement with tests/reference.py."""
from __future__ import annotations

import random

import numpy as np
import pytest
from numba import njit

from otelproc.batch import StringArray
from otelproc.kernels.cluster import KeyTable
from otelproc.kernels.mask import TIME_WORDS
from otelproc.kernels.tokenize import FNV_OFFSET, FNV_PRIME, _fnv_var, key_hashes, masked_text, params_terminated
from tests import reference
from tests.conftest import shared_path
from tests.reference import BYTE_CLASS, fnv1a64, masked_key


def mask(*bodies: str | bytes) -> list[str]:
    sa = StringArray.from_pylist(list(bodies))
    b, o = masked_text(sa.buf, sa.off, np.arange(len(sa)))
    return StringArray(b, o).to_pylist()


MASKING_CASES = [
    ("took 42 ms", "took <*> ms"),                                      # integer
    ("ratio -3.25e-4 ok", "ratio <*> ok"),                              # float
    ("addr 0x7ffe1a2b fault", "addr <*> fault"),                        # hex with 0x
    ("digest deadbeefcafebabedeadbeef end", "digest <*> end"),          # hex without digits (>= 16)
    ("req 123e4567-e89b-12d3-a456-426614174000 done", "req <*> done"),  # UUID
    ("from 10.251.71.240 ok", "from <*> ok"),                           # IPv4
    ("from fe80::1ff:fe23:4567:890a ok", "from <*> ok"),                # IPv6
    ("to 10.0.0.1:8080 ok", "to <*> ok"),                               # host:port (IP)
    ("to db-7:5432 ok", "to <*> ok"),                                   # host:port (name with digit)
    ("open /var/log/app.log now", "open <*> now"),                      # path
    ("get https://example.com/a?b=c now", "get <*> now"),               # URL
    ("mail bob@example.com sent", "mail <*> sent"),                     # e-mail
    ("at 2024-01-02T03:04:05.123Z done", "at <*> done"),                # ISO timestamp
    ("at Sun Jul 24 02:38:22 2005 done", "at <*> done"),                # syslog-style date, one <*>
    ("user 'alice' logged in", "user '<*>' logged in"),                 # quoted string
    ('say "hi" now', 'say "<*>" now'),                                  # double quoted
    ("login user=alice ok", "login user=<*> ok"),                       # key=value
    ("flag true set", "flag <*> set"),                                  # boolean
    ("node node-17 up", "node <*> up"),                                   # id with a digit
    ("Connection reset by peer", "Connection reset by peer"),           # nothing variable
]


@pytest.mark.parametrize("body, key", MASKING_CASES)
def test_masking_classes(body, key):
    assert mask(body) == [key]


@pytest.mark.parametrize("body, key", MASKING_CASES + [
    # the edges of each rule, as the one-pass walk tests them (class bits OR-ed per segment)
    ("on FRI and fri, not Fre", "on <*> and <*>, not Fre"),             # time words, any case
    ("v NULL nul fAlSe falsey TRUE", "v <*> nul <*> falsey <*>"),       # true / null / false only
    ("h deadbeefdeadbeef deadbeefdeadbee", "h <*> deadbeefdeadbee"),    # 16 hex letters, not 15
    ("m a@b.c @b.c ab@c a@b@c.d", "m <*> @b.c ab@c <*>"),               # e-mail: '@' not first, '.' after it
    ("p /x /xy ~/ ~/a a/b a// x://y", "p /x <*> ~/ <*> a/b <*>"),       # paths: "/x" is 2 bytes, one '/'
    ("k x=abc y= 'q' \"a b\" 'open", "k x=<*> y= '<*>' \"a b\" 'open"),  # key=value, quotes in one token
    ("c 1:2,3:a b:4 1::2", "c <*>:a b:<*> <*>"),                       # var ':' ',' var collapses
    ("run at 12 13 end 14", "run at <*> end <*>"),                       # a run of variables is one
])
def test_key_hash_is_the_fnv_of_the_masked_key(body, key):
    """The fused walk (key_hashes / hash_and_lookup) on hand-made bodies with known keys."""
    from otelproc.kernels.tokenize import hash_and_lookup

    sa = StringArray.from_pylist([body])
    seeds = np.array([int(FNV_OFFSET)], np.uint64)
    h, ntok = key_hashes(sa.buf, sa.off, np.zeros(1, np.int32), seeds)
    assert int(h[0]) == fnv1a64(key.encode(), int(FNV_OFFSET))
    assert ntok[0] == len(key.split(" "))
    t = KeyTable(16)
    t.insert(h, np.array([3]), np.array([5], np.uint64))
    fh, fntok, slot, vmask, misses = hash_and_lookup(sa.buf, sa.off, np.zeros(1, np.int32), seeds, t.key, t.val,
                                                     t.vmask)
    assert fh[0] == h[0] and fntok[0] == ntok[0] and slot[0] == 3 and vmask[0] == 5 and misses == 0


def test_empty_whitespace_unicode_and_invalid_utf8():
    got = mask("", "   \t ", "héllo wörld 12 ünïcode", b"bad \xff\xfe bytes 7", "日本語 ログ 42")
    assert got[0] == "" and got[1] == ""
    assert got[2] == "héllo wörld <*> ünïcode"
    assert got[3] == "bad \ufffd\ufffd bytes <*>"  # invalid bytes pass through as literal bytes
    assert got[4] == "日本語 ログ <*>"


def test_one_megabyte_body():
    body = ("word " * 100_000 + "id 123 " * 50_000).encode()[:1_048_576]
    sa = StringArray.from_pylist([body, b"x 1"])
    h, ntok = key_hashes(sa.buf, sa.off, np.zeros(2, np.int32), np.array([int(FNV_OFFSET)], np.uint64))
    b, o = masked_text(sa.buf, sa.off, np.arange(2))
    assert b[o[0]:o[1]].tobytes() == masked_key(body)
    assert ntok[0] == masked_key(body).count(b" ") + 1


def _random_bodies(n: int, seed: int) -> list[bytes]:
    rnd = random.Random(seed)
    alphabet = list(b"abcXYZ019 :=,/.-_()[]'\"@\t") + [0xC3, 0xA9, 0xFF]
    words = [b"user", b"10.0.0.1:80", b"/a/b", b"Jul", b"true", b"k=v", b"'q'", b"0x1f", b"a@b.c", b"(x)"]
    out = []
    for _ in range(n):
        if rnd.random() < 0.5:
            out.append(bytes(rnd.choice(alphabet) for _ in range(rnd.randint(0, 40))))
        else:
            out.append(b" ".join(rnd.choice(words) for _ in range(rnd.randint(0, 8))))
    return out


def test_kernels_agree_with_reference():
    bodies = _random_bodies(3000, seed=7) + [b"", b" ", b"a", b"::", b"1:2:3", b"a 1 2 b", b"'x", b"x'", b"=1"]
    sa = StringArray.from_pylist(bodies)
    b, o = masked_text(sa.buf, sa.off, np.arange(len(sa)))
    seed = np.array([int(FNV_OFFSET), 12345], dtype=np.uint64)
    svc = (np.arange(len(sa)) % 2).astype(np.int32)
    h, _ = key_hashes(sa.buf, sa.off, svc, seed)
    for i, body in enumerate(bodies):
        ref = masked_key(body)
        assert b[o[i]:o[i + 1]].tobytes() == ref, body
        assert int(h[i]) == fnv1a64(ref, int(seed[svc[i]])), body


def test_params_follow_the_variables():
    sa = StringArray.from_pylist(["connection from 84.102.20.2 () at Sun Jul 24 02:38:22 2005", "no vars", ""])
    pb, po = params_terminated(sa.buf, sa.off, np.zeros(3, np.uint64))
    assert StringArray(pb, po).to_pylist() == ["84.102.20.2\x1fSun Jul 24 02:38:22 2005\x1f", "", ""]
    # genmask bit 1: key token 1 ("no" ... "vars") taken whole
    pb, po = params_terminated(sa.buf, sa.off, np.array([0, 2, 0], np.uint64))
    assert StringArray(pb, po).to_pylist() == ["84.102.20.2\x1fSun Jul 24 02:38:22 2005\x1f", "vars\x1f", ""]


def test_bad_input_is_a_clear_error():
    with pytest.raises(TypeError, match="uint8"):
        key_hashes(np.zeros(3, np.int8), np.zeros(1, np.int64), np.zeros(0, np.int32), np.zeros(1, np.uint64))
    with pytest.raises(ValueError, match="off"):
        masked_text(np.zeros(3, np.uint8), np.array([0, 5], np.int64), np.array([0]))
    with pytest.raises(ValueError, match="service_index"):
        key_hashes(np.zeros(3, np.uint8), np.array([0, 3], np.int64), np.array([2], np.int32), np.zeros(1, np.uint64))


def test_key_table_lookup_insert_grow_remove():
    t = KeyTable(16)
    keys = np.arange(1, 2001, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    t.insert(keys, np.arange(2000) % 7, np.arange(2000))
    v, m, miss = t.lookup(keys)
    assert miss == 0 and (v == np.arange(2000) % 7).all() and (m == np.arange(2000)).all()
    t.rebuild_without(np.array([3], np.int32))
    v, _, miss = t.lookup(keys)
    assert miss == (np.arange(2000) % 7 == 3).sum() and (v[np.arange(2000) % 7 == 3] == -1).all()
    _, _, miss = t.lookup(np.array([0, 5], np.uint64))
    assert miss == 2


def test_fused_one_pass_matches_the_pieces_kernels():
    """The one-pass hash and parameter kernels give exactly what the multi-pass pieces walk gives."""
    from otelproc.kernels import tokenize as T

    bodies = _random_bodies(4000, seed=11) + [b"a:1:2:b", b"x 1 2 /p/q 3 y", b"'a' \"b\" c=d", b"~/x /y ab"]
    sa = StringArray.from_pylist(bodies)
    n = len(sa)
    svc = np.zeros(n, np.int32)
    seed = np.array([int(FNV_OFFSET)], np.uint64)
    h2, t2 = np.empty(n, np.uint64), np.empty(n, np.int32)
    h1, t1 = T.key_hashes(sa.buf, sa.off, svc, seed)
    reference._key_hashes_pieces(sa.buf, sa.off, svc, seed, reference.BYTE_CLASS, TIME_WORDS, h2, t2)
    assert (h1 == h2).all() and (t1 == t2).all()
    rng = np.random.default_rng(5)
    for g in (np.zeros(n, np.uint64), rng.integers(0, 1 << 8, n).astype(np.uint64)):
        out_buf, out_off = params_terminated(sa.buf, sa.off, g)
        ref_buf, ref_off = reference.params_terminated_pieces(sa.buf, sa.off, g)
        assert (out_off == ref_off).all() and out_buf.tobytes() == ref_buf.tobytes()
    # the key text printed from the walk's variables is the pieces' text
    b, o = masked_text(sa.buf, sa.off, np.arange(n))
    rb, ro = reference.masked_text_pieces(sa.buf, sa.off)
    assert (o == ro).all() and b.tobytes() == rb.tobytes()


def test_hash_and_lookup_agrees_with_key_table():
    from otelproc.kernels.tokenize import hash_and_lookup

    sa = StringArray.from_pylist(["took 1 ms", "took 2 ms", "other thing", "", "new 7 line"])
    seeds = np.array([int(FNV_OFFSET), 99], np.uint64)
    svc = np.array([0, 0, 0, 0, 1], np.int32)
    h, ntok = key_hashes(sa.buf, sa.off, svc, seeds)
    t = KeyTable(16)
    t.insert(h[[0, 2, 3]], np.array([4, 5, 6]), np.array([2, 0, 0]))
    fh, fntok, slot, vmask, misses = hash_and_lookup(sa.buf, sa.off, svc, seeds, t.key, t.val, t.vmask)
    assert (fh == h).all() and (fntok == ntok).all() and fntok.tolist() == [3, 3, 2, 0, 3]
    assert slot.tolist() == [4, 4, 5, 6, -1] and vmask.tolist() == [2, 2, 0, 0, 0] and misses == 1
    lv, lm, lmiss = t.lookup(h)
    assert (lv == slot).all() and (lm == vmask).all() and lmiss == misses
    with pytest.raises(ValueError, match="power-of-2"):
        hash_and_lookup(sa.buf, sa.off, svc, seeds, np.zeros(3, np.uint64), np.zeros(3, np.int32), np.zeros(3, np.uint64))


def test_key_table_remap_moves_merged_slots():
    t = KeyTable(16)
    keys = np.array([11, 22, 33, 44], np.uint64)
    t.insert(keys, np.array([1, 2, 3, 1]), np.zeros(4, np.uint64))
    assert t.remap(np.array([1, 3], np.int32), 7) == 3
    assert t.lookup(keys)[0].tolist() == [7, 2, 7, 7]


def test_params_terminated_is_spans_then_gather_in_one_pass():
    bodies = ["connection from 84.102.20.2 () at Sun Jul 24 02:38:22 2005", "no vars", "",
              "key=a\x1fb id 12\x1f3 /var/log/x", "   ", "user=42 path /a/b/c took 3 ms", "10.0.0.1:80 up"]
    sa = StringArray.from_pylist(bodies)
    rng = np.random.default_rng(3)
    for genmask in (np.zeros(len(bodies), np.uint64), np.array([0, 2, 0, 4, 1, 8, 3], np.uint64),
                    rng.integers(0, 2**63, len(bodies)).astype(np.uint64)):
        ref_buf, ref_off = reference.params_terminated_pieces(sa.buf, sa.off, genmask)
        out_buf, out_off = params_terminated(sa.buf, sa.off, genmask)
        assert out_off.tolist() == ref_off.tolist() and out_buf.tobytes() == ref_buf.tobytes()
    out = StringArray(*params_terminated(sa.buf, sa.off, np.zeros(len(bodies), np.uint64))).to_pylist()
    assert out[0] == "84.102.20.2\x1fSun Jul 24 02:38:22 2005\x1f" and out[1] == out[2] == ""
    # a 0x1f inside a value becomes a space: the terminator stays unambiguous (wholly variable
    # tokens in a row are one parameter)
    assert out[3].split("\x1f")[:-1] == ["a b", "12 3 /var/log/x"]
    with pytest.raises(ValueError, match="genmask"):
        params_terminated(sa.buf, sa.off, np.zeros(2, np.uint64))


def test_hash_lookup_params_is_lookup_then_params_for_cached_lines():
    from otelproc.kernels.tokenize import hash_and_lookup, hash_lookup_params, params_terminated
    from otelproc.patterns.miner import PatternMiner

    bodies = ["connection from 84.102.20.2 () at Sun Jul 24 02:38:22 2005", "no vars", "", "   ",
              "key=a\x1fb id 12\x1f3 /var/log/x", "user=42 path /a/b/c took 3 ms", "10.0.0.1:80 up",
              "job 7 stored as bytes", "job 8 stored as values", "job 9 stored as blocks", "1 2 3 /x /y z"]
    sa = StringArray.from_pylist(bodies)
    svc = np.arange(len(bodies), dtype=np.int32) % 2
    miner = PatternMiner()
    miner.learn(sa.buf, sa.off, svc, ["a", "b"])
    more = StringArray.from_pylist(bodies + ["never seen before 5"])
    svc2 = np.append(svc, 0).astype(np.int32)
    rng = np.random.default_rng(2)
    for tvmask in (miner.p_tvmask, rng.integers(0, 2**63, len(miner.p_tvmask)).astype(np.uint64)):
        ref = hash_and_lookup(more.buf, more.off, svc2, miner.seeds, miner.table.key, miner.table.val,
                              miner.table.vmask)
        h, t, slot, vmask, misses, genmask, pbuf, poff = hash_lookup_params(
            more.buf, more.off, svc2, miner.seeds, miner.table.key, miner.table.val, miner.table.vmask, tvmask)
        for a, b in zip((h, t, slot, vmask, misses), ref):
            assert np.array_equal(a, b)
        assert misses == 1 and slot[-1] == -1 and genmask[-1] == 0 and poff[-1] == poff[-2]  # the miss: no params
        expect = np.where(slot >= 0, tvmask[np.maximum(slot, 0)] & ~vmask, 0).astype(np.uint64)
        assert np.array_equal(genmask, expect)
        rbuf, roff = params_terminated(sa.buf, sa.off, genmask[:-1])  # the cached lines
        assert poff[:-1].tolist() == roff.tolist() and pbuf.tobytes() == rbuf.tobytes()
    with pytest.raises(ValueError, match="slot_tvmask"):
        hash_lookup_params(more.buf, more.off, svc2, miner.seeds, miner.table.key, miner.table.val,
                           miner.table.vmask, np.zeros(0, np.uint64))


def test_replace_strings():
    from otelproc.kernels.tokenize import replace_strings

    sa = StringArray.from_pylist(["a", "bb", "", "ccc"])
    sub = StringArray.from_pylist(["X", "yy"])
    buf, off = replace_strings(sa.buf, sa.off, np.array([0, 2]), sub.buf, sub.off)
    assert StringArray(buf, off).to_pylist() == ["X", "bb", "yy", "ccc"]
    buf, off = replace_strings(sa.buf, sa.off, np.zeros(0, np.int64), sub.buf[:0], np.zeros(1, np.int64))
    assert StringArray(buf, off).to_pylist() == sa.to_pylist()
    with pytest.raises(ValueError):
        replace_strings(sa.buf, sa.off, np.array([2, 0]), sub.buf, sub.off)


def test_hash_lookup_params_walk_gives_the_key_walks_hash_on_random_bodies():
    # one walk, compiled twice (with and without the variables' bookkeeping): the two must agree on
    # every key hash and token count
    from otelproc.kernels.cluster import KeyTable
    from otelproc.kernels.tokenize import hash_and_lookup, hash_lookup_params

    rng = np.random.default_rng(11)
    alphabet = list("ab Z09:,=/.@-_()[]\"'|<>x~\t") + ["0x1f", "10.0.0.1", "2024-01-02", "Jan", " /var/log", "::"]
    bodies = ["".join(rng.choice(alphabet, rng.integers(0, 25)).tolist()) for _ in range(3000)]
    sa = StringArray.from_pylist(bodies)
    svc = np.zeros(len(bodies), np.int32)
    seeds = np.array([12345], np.uint64)
    table = KeyTable()
    ref_h, ref_t, *_ = hash_and_lookup(sa.buf, sa.off, svc, seeds, table.key, table.val, table.vmask)
    h, t, *_ = hash_lookup_params(sa.buf, sa.off, svc, seeds, table.key, table.val, table.vmask,
                                  np.zeros(0, np.uint64))
    assert np.array_equal(h, ref_h) and np.array_equal(t, ref_t)


# ---------------------------------------------------------------- the previous one-pass kernels
# A verbatim copy of the fused kernels of otelproc/kernels/tokenize.py as they were before the
# 2026-11-29 speed-up of the one-pass walks, names prefixed with _prev, with the helpers that speed-up
# left unchanged (_segment_is_var, _line_params; _fnv_var is called from the package). The key hashes
# are the inputs of persisted pattern ids, so the rewritten kernels must give bit-identical hashes,
# token counts, cache slots, variable masks and parameters; the tests below compare them on Loghub-2k and on a
# self-contained fuzz corpus.

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


@njit(cache=True, nogil=True)
def _line_params(buf, s, e, cls, g, pstart, pend, q):
    """Append the parameter spans of buf[s:e] to pstart/pend from index q; return the new count.

    One pass, the same walk as :func:`_hash_and_lookup` (tests compare with the pieces version): a
    variable segment is a span, ``var:var`` extends the last span, a path token is one span, a
    wholly variable token after another extends the previous span, and a key token whose bit is
    set in ``g`` (generalised by the pattern) is one span from its first to its last byte.
    Capacity: the caller guarantees room for (e - s + 1) // 2 + 1 more spans.
    """
    tw = TIME_WORDS
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
def _prev_line_key(buf, s, e, cls, tw, seed):
    """FNV-1a 64 of the masked key of buf[s:e] and its token count, in ONE pass over the bytes.

    Same key as :func:`_pieces` + :func:`_hash_pieces` (tests compare them). Every byte is hashed
    as a literal while it is scanned; when its segment turns out to be a variable (or its token a
    path), the hash is rolled back to the checkpoint before it and ``<*>`` is hashed instead.
    Collapses roll back too: ``var:var`` / ``var,var`` inside a token to the state after the first
    variable, and a wholly variable token after another one to the state before its separator.
    """
    h = seed
    ntok = 0
    prev_full = False
    i = s
    while True:
        while i < e and (cls[buf[i]] & 1):
            i += 1
        if i >= e:
            break
        h_before_sep = h
        if ntok > 0:
            h = (h ^ np.uint64(32)) * FNV_PRIME
        ntok += 1
        h_tok = h
        ts = i
        slashes = 0
        nvar = 0
        has_lit = False
        # 0: no variable yet / something else since it; 1: right after a variable; 2: only ':' ',' since it
        since_var = 0
        h_after_var = h
        lit_after_var = False
        prev_delim = 0
        while i < e:
            b = buf[i]
            c = cls[b]
            if c & 1:
                break
            if c & 2:
                h = (h ^ np.uint64(b)) * FNV_PRIME
                has_lit = True
                if since_var != 0:
                    since_var = 2 if (b == 58 or b == 44) else 0
                prev_delim = b
                i += 1
                continue
            # a segment: hash it as literal while classifying it
            h_seg = h
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
                h = (h ^ np.uint64(b)) * FNV_PRIME
                i += 1
            var = _segment_is_var(buf, ss, i, e, acc, hexl, at, dot_after_at, prev_delim, tw)
            if var:
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
            prev_delim = 0
        tn = i - ts
        full = False
        if slashes > 0 and tn >= 2 and (slashes >= 2 or (tn > 2 and (buf[ts] == 47 or (buf[ts] == 126 and buf[ts + 1] == 47)))):
            h = _fnv_var(h_tok)  # a path or URL: the whole token is one variable
            full = True
        else:
            full = nvar == 1 and not has_lit
        if full and prev_full:
            # a run of wholly variable tokens is one variable
            h = h_before_sep
            ntok -= 1
        prev_full = full
    return h, ntok


@njit(cache=True, nogil=True)
def _prev_hash_and_lookup(buf, off, service_index, service_seed, cls, tw, tab_key, tab_val, tab_vmask,
                     out_hash, out_ntok, out_slot, out_vmask):
    """Fused per line: masked-key hash (one pass over the bytes), then the exact-key cache lookup."""
    n = len(off) - 1
    mask = np.uint64(len(tab_key) - 1)
    misses = 0
    for r in range(n):
        h, t = _prev_line_key(buf, off[r], off[r + 1], cls, tw, service_seed[service_index[r]])
        out_hash[r] = h
        out_ntok[r] = t
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


@njit(cache=True, nogil=True)
def _prev_line_key_spans(buf, s, e, cls, tw, seed, pstart, pend, tq, tts, tte):
    """:func:`_prev_line_key` and the parameter spans of :func:`_line_params` in the same walk.

    A copy of :func:`_prev_line_key`'s walk with the span bookkeeping added, on purpose: serving the
    key-only path (``hash_and_lookup``) from this function costs it ~28 % (4.62 -> 3.33 M lines/s,
    pattern_throughput.py, session 2). Tests check that both give the same hash and token count.

    The spans a line's pattern makes parameters depend on its genmask, known only after the
    cache lookup, so this records what both cases need: the variable spans (pstart/pend, as
    :func:`_line_params` with genmask 0) and, per key token k, where its spans start (tq[k]) and
    its byte range (tts[k], tte[k]; a run of wholly variable tokens is one key token).
    :func:`_prev_emit_params` then writes the parameters for any genmask. Capacity of every scratch
    array: (e - s + 1) // 2 + 2. Returns (hash, key token count, span count).
    """
    h = seed
    ntok = 0
    q = 0
    prev_full = False
    i = s
    while True:
        while i < e and (cls[buf[i]] & 1):
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
        slashes = 0
        nvar = 0
        has_lit = False
        since_var = 0
        h_after_var = h
        lit_after_var = False
        prev_delim = 0
        while i < e:
            b = buf[i]
            c = cls[b]
            if c & 1:
                break
            if c & 2:
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
                h = (h ^ np.uint64(b)) * FNV_PRIME
                i += 1
            if _segment_is_var(buf, ss, i, e, acc, hexl, at, dot_after_at, prev_delim, tw):
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
            prev_delim = 0
        tn = i - ts
        full = False
        if slashes > 0 and tn >= 2 and (slashes >= 2 or (tn > 2 and (buf[ts] == 47 or (buf[ts] == 126 and buf[ts + 1] == 47)))):
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
    return h, ntok, q


@njit(cache=True, nogil=True, inline="always")
def _prev_emit_one(buf, a, b, terminator, out_buf, pos):
    L = b - a
    dst = out_buf[pos:pos + L]
    dst[:] = buf[a:b]  # slice copy: a memcpy
    for j in range(L):
        if dst[j] == terminator:
            dst[j] = 32
    out_buf[pos + L] = terminator
    return pos + L + 1


@njit(cache=True, nogil=True)
def _prev_emit_params(buf, pstart, pend, tq, tts, tte, ntok, q, g, terminator, out_buf, pos):
    """Write the parameters of one line (see :func:`_prev_line_key_spans`) for genmask ``g``: a key
    token whose bit is set is one parameter from its first to its last byte, any other token
    gives its variable spans. Each value is followed by ``terminator`` (inside a value it becomes
    a space). Returns the new write position."""
    for k in range(ntok):
        if k < 64 and ((g >> np.uint64(k)) & np.uint64(1)) != 0:
            pos = _prev_emit_one(buf, tts[k], tte[k], terminator, out_buf, pos)
        else:
            hi = tq[k + 1] if k + 1 < ntok else q
            for m in range(tq[k], hi):
                pos = _prev_emit_one(buf, pstart[m], pend[m], terminator, out_buf, pos)
    return pos


@njit(cache=True, nogil=True)
def _prev_hash_lookup_params(buf, off, service_index, service_seed, cls, tw, tab_key, tab_val, tab_vmask, slot_tvmask,
                        terminator, pstart, pend, tq, tts, tte,
                        out_hash, out_ntok, out_slot, out_vmask, out_genmask, out_off, out_buf):
    """Fused per line: masked-key hash and parameter spans (one walk over the bytes), cache
    lookup, then the parameters for the genmask of the cached pattern (none on a miss)."""
    n = len(off) - 1
    mask = np.uint64(len(tab_key) - 1)
    misses = 0
    pos = 0
    for r in range(n):
        h, t, q = _prev_line_key_spans(buf, off[r], off[r + 1], cls, tw, service_seed[service_index[r]],
                                  pstart, pend, tq, tts, tte)
        out_hash[r] = h
        out_ntok[r] = t
        out_off[r] = pos
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
        if found:
            s = tab_val[j]
            if s < 0 or s >= len(slot_tvmask):
                raise ValueError("hash_lookup_params: the key table holds a slot beyond slot_tvmask")
            vm = tab_vmask[j]
            g = slot_tvmask[s] & ~vm
            out_slot[r] = s
            out_vmask[r] = vm
            out_genmask[r] = g
            pos = _prev_emit_params(buf, pstart, pend, tq, tts, tte, t, q, g, terminator, out_buf, pos)
        else:
            out_slot[r] = -1
            out_vmask[r] = 0
            out_genmask[r] = 0
            misses += 1
    out_off[n] = pos
    return misses, pos


@njit(cache=True, nogil=True)
def _prev_params_terminated(buf, off, genmask, cls, terminator, pstart, pend, out_off, out_buf):
    """Per line: its parameter spans (:func:`_line_params`, into the per-line scratch
    pstart/pend), then each value copied to out_buf followed by ``terminator`` (a terminator
    byte inside a value becomes a space). Returns the bytes written."""
    n = len(off) - 1
    pos = 0
    for r in range(n):
        out_off[r] = pos
        q = _line_params(buf, off[r], off[r + 1], cls, genmask[r], pstart, pend, 0)
        for k in range(q):
            a = pstart[k]
            L = pend[k] - a
            dst = out_buf[pos:pos + L]
            dst[:] = buf[a:a + L]  # slice copy: a memcpy
            for j in range(L):
                if dst[j] == terminator:
                    dst[j] = 32
            pos += L
            out_buf[pos] = terminator
            pos += 1
    out_off[n] = pos
    return pos


def _prev_outputs(sa: StringArray, svc: np.ndarray, seeds: np.ndarray, table: KeyTable, slot_tvmask: np.ndarray):
    """What the previous kernels give: hash_and_lookup's five outputs, then hash_lookup_params's eight."""
    n = len(sa)
    outs = [np.empty(n, np.uint64), np.empty(n, np.int32), np.empty(n, np.int32), np.empty(n, np.uint64)]
    misses = _prev_hash_and_lookup(sa.buf, sa.off, svc, seeds, BYTE_CLASS, TIME_WORDS, table.key, table.val,
                                   table.vmask, *outs)
    key = (*outs, misses)
    lens = np.diff(sa.off)
    scratch = int(lens.max()) // 2 + 2 if n else 2
    out_cap = int(sa.off[-1] - sa.off[0]) + int(((lens + 1) // 2 + 1).sum())
    p = [np.empty(n, np.uint64), np.empty(n, np.int32), np.empty(n, np.int32), np.empty(n, np.uint64),
         np.empty(n, np.uint64), np.empty(n + 1, np.int64), np.empty(out_cap, np.uint8)]
    pmisses, used = _prev_hash_lookup_params(
        sa.buf, sa.off, svc, seeds, BYTE_CLASS, TIME_WORDS, table.key, table.val, table.vmask, slot_tvmask,
        np.uint8(0x1F), *[np.empty(scratch, np.int64) for _ in range(5)], *p)
    params = (p[0], p[1], p[2], p[3], pmisses, p[4], p[6][:used], p[5])
    return key, params


def _assert_same_as_previous_kernels(bodies: list[bytes]) -> None:
    from otelproc.kernels.tokenize import hash_and_lookup, hash_lookup_params, params_terminated

    sa = StringArray.from_pylist(bodies)
    n = len(sa)
    seeds = np.array([int(FNV_OFFSET), 0x9E3779B97F4A7C15, 1], np.uint64)
    svc = (np.arange(n) % 3).astype(np.int32)
    h, ntok = key_hashes(sa.buf, sa.off, svc, seeds)
    rng = np.random.default_rng(17)
    uniq = np.unique(h)
    nslots = 50
    # every key cached, so that every line's parameters are written; then only half of them
    tables = [KeyTable(16), KeyTable(16)]
    tables[0].insert(uniq, rng.integers(0, nslots, len(uniq)), _bits64(rng, len(uniq)))
    half = uniq[rng.random(len(uniq)) < 0.5]
    tables[1].insert(half, rng.integers(0, nslots, len(half)), _bits64(rng, len(half)))
    names = ("hashes", "ntok", "slot", "vmask", "misses", "genmask", "params_buf", "params_off")
    for t, table in enumerate(tables):
        # genmask 0 for every line (variable spans only), then random whole-token parameters
        for slot_tvmask in (np.zeros(nslots, np.uint64), _bits64(rng, nslots)):
            prev_key, prev_params = _prev_outputs(sa, svc, seeds, table, slot_tvmask)
            if t == 0:
                assert _first_diff(h, prev_key[0]) is None and _first_diff(ntok, prev_key[1]) is None
            key = hash_and_lookup(sa.buf, sa.off, svc, seeds, table.key, table.val, table.vmask)
            params = hash_lookup_params(sa.buf, sa.off, svc, seeds, table.key, table.val, table.vmask, slot_tvmask)
            for kernel, outs, prev in (("hash_and_lookup", key, prev_key), ("hash_lookup_params", params, prev_params)):
                for name, new, old in zip(names, outs, prev):
                    i = _first_diff(new, old)
                    line = bodies[i] if i is not None and name != "params_buf" and i < n else None
                    assert i is None, f"{kernel} {name} differs at {i} (line {line!r})"
    # params_terminated, for a genmask per line: none, random bits, and the low key tokens
    lens = np.diff(sa.off)
    scratch = int(lens.max()) // 2 + 2 if n else 2
    for genmask in (np.zeros(n, np.uint64), _bits64(rng, n),
                    rng.integers(0, 16, n).astype(np.uint64)):
        prev_off = np.empty(n + 1, np.int64)
        prev_buf = np.empty(int(sa.off[-1] - sa.off[0]) + int(((lens + 1) // 2 + 1).sum()), np.uint8)
        used = _prev_params_terminated(sa.buf, sa.off, genmask, BYTE_CLASS, np.uint8(0x1F),
                                       np.empty(scratch, np.int64), np.empty(scratch, np.int64), prev_off, prev_buf)
        out_buf, out_off = params_terminated(sa.buf, sa.off, genmask)
        i = _first_diff(out_off, prev_off)
        assert i is None, f"params_terminated offsets differ at {i} (line {bodies[min(i, n - 1)]!r})"
        assert _first_diff(out_buf, prev_buf[:used]) is None, "params_terminated bytes differ"


def _bits64(rng: np.random.Generator, n: int) -> np.ndarray:
    """n random uint64 over all 64 bits (bit 63 too: a key token 63 can be generalised)."""
    return rng.integers(0, np.iinfo(np.uint64).max, n, dtype=np.uint64, endpoint=True)


def _first_diff(new, old) -> int | None:
    new, old = np.atleast_1d(new), np.atleast_1d(old)
    if new.shape != old.shape:
        return min(len(new), len(old))
    bad = np.flatnonzero(new != old)
    return int(bad[0]) if len(bad) else None


def _loghub_2k_lines() -> list[bytes]:
    import csv

    root = shared_path("data", "loghub2k")
    lines: list[bytes] = []
    for system in sorted(p for p in root.iterdir() if p.is_dir()):
        for structured in system.glob("*_2k.log_structured.csv"):
            with open(structured, encoding="utf-8", errors="replace", newline="") as f:
                lines += [r["Content"].encode() for r in csv.DictReader(f)]
        for raw in system.glob("*_2k.log"):  # the whole lines too: headers, timestamps, levels
            lines += raw.read_bytes().splitlines()
    assert len(lines) > 30_000
    return lines


def test_same_outputs_as_previous_kernels_on_loghub_2k():
    _assert_same_as_previous_kernels(_loghub_2k_lines())


def _fuzz_corpus(n: int, seed: int) -> list[bytes]:
    """Bodies that exercise every masking rule and its edges (the check must not need the shared data)."""
    rnd = random.Random(seed)

    def hexs(k: int, alphabet: str = "0123456789abcdef") -> str:
        return "".join(rnd.choice(alphabet) for _ in range(k))

    makers = [
        lambda: ".".join(str(rnd.randint(0, 255)) for _ in range(4)),                      # IPv4
        lambda: ".".join(str(rnd.randint(0, 255)) for _ in range(4)) + f":{rnd.randint(1, 65535)}",
        lambda: "fe80::" + ":".join(hexs(rnd.randint(1, 4)) for _ in range(rnd.randint(1, 4))),
        lambda: "0x" + hexs(rnd.randint(1, 16)),
        lambda: hexs(rnd.randint(12, 20), "abcdefABCDEF"),                                 # hex letters, around 16
        lambda: "-".join(hexs(k) for k in (8, 4, 4, 4, 12)),                               # UUID
        lambda: rnd.choice(["/", "//", "/x", "/xy", "~/", "~/a", "a/b", "a/b/c", "x://y", "hdfs://h:9000/a/b",
                            "/var/log/app.log", "a/", "/a/", "./a/b", "~x/y"]),
        lambda: rnd.choice(["'", '"']) + rnd.choice(["x", "a b", "", "1", "Jan"]) + rnd.choice(["'", '"', ""]),
        lambda: rnd.choice(["k", "user", "", "a.b"]) + "=" + rnd.choice(["v", "", "1", "x=y", "'q'", "=="]),
        lambda: rnd.choice(["Jan", "JUL", "mon", "Sun", "sep", "Sept", "ja", "true", "TRUE", "tru", "null", "nul",
                            "NULL", "False", "fAlSe", "falsey", "Fri", "fre", "thu"]),
        lambda: rnd.choice(["a@b.c", "@a.b", "a@b", "a@.b", "a@b@c.d", "bob@example.com", "x.y@z", "@", "a@b."]),
        lambda: rnd.choice(["::", "a,b", "1,2", "1:2:3", "a:1:2:b", "(x)", "[1]", "{a}", "<b>", "|", ";", "1::2",
                            "1:,2", "1,:a", "a=1,b=2", "(1)", "x[2]:3"]),
        lambda: rnd.choice(["héllo", "wörld", "日本語", "ログ", "😀", "naïve-1", "Ünïcode"]),
        lambda: str(rnd.randint(-10**12, 10**12)) + rnd.choice(["", "ms", ".5", "e-3", "%"]),
        lambda: rnd.choice(["blk_-1234", "node-17", "v1.2.3", "2005-07-24", "02:38:22", "2024-01-02T03:04:05.123Z"]),
        lambda: rnd.choice(["word", "Connection", "reset", "by", "peer", "the", "for", "and", "error", "x", "-", "_"]),
    ]
    separators = [" ", " ", " ", "  ", "\t", "", ",", ":", "=", "\r\n", "\x0b", "\x0c"]
    out: list[bytes] = [b"", b" ", b"\t \r\n", b"a", b"1", b"/", b"'", b"=", b"::", b"~/"]
    for _ in range(n):
        kind = rnd.random()
        if kind < 0.15:   # random bytes, any value
            out.append(bytes(rnd.randrange(256) for _ in range(rnd.randint(0, 60))))
        elif kind < 0.17:  # a long line
            out.append(" ".join(rnd.choice(makers)() for _ in range(rnd.randint(200, 1500))).encode())
        elif kind < 0.25:  # invalid UTF-8 and control bytes mixed in
            out.append(b"".join(rnd.choice(makers)().encode() + bytes([rnd.choice([0x80, 0xFF, 0xC3, 0, 0x1F, 0x7F])])
                                for _ in range(rnd.randint(1, 8))))
        else:
            parts = []
            for _ in range(rnd.randint(0, 12)):
                parts.append(rnd.choice(makers)())
                parts.append(rnd.choice(separators))
            out.append("".join(parts).encode())
    return out


def test_same_outputs_as_previous_kernels_on_a_fuzz_corpus():
    _assert_same_as_previous_kernels(_fuzz_corpus(20_000, seed=3) + _random_bodies(3000, seed=5))
