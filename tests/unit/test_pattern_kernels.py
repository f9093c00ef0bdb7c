"""Pattern kernels: masking classes, odd bodies, and agreement with tests/reference.py."""
from __future__ import annotations

import random

import numpy as np
import pytest

from otelproc.batch import StringArray
from otelproc.kernels.cluster import KeyTable
from otelproc.kernels.tokenize import (FNV_OFFSET, gather_params_terminated, gather_spans, key_hashes, masked_text,
                                       param_spans)
from tests import reference
from tests.reference import fnv1a64, masked_key


def mask(*bodies: str | bytes) -> list[str]:
    sa = StringArray.from_pylist(list(bodies))
    b, o = masked_text(sa.buf, sa.off, np.arange(len(sa)))
    return StringArray(b, o).to_pylist()


@pytest.mark.parametrize("body, key", [
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
])
def test_masking_classes(body, key):
    assert mask(body) == [key]


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
    poff, s, e = param_spans(sa.buf, sa.off, np.zeros(3, np.uint64))
    vb, vo = gather_spans(sa.buf, s, e)
    assert poff.tolist() == [0, 2, 2, 2]
    assert StringArray(vb, vo).to_pylist() == ["84.102.20.2", "Sun Jul 24 02:38:22 2005"]
    # genmask bit 1: key token 1 ("no" ... "vars") taken whole
    poff, s, e = param_spans(sa.buf, sa.off, np.array([0, 2, 0], np.uint64))
    pb, po = gather_params_terminated(sa.buf, poff, s, e)
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
    h1, t1 = np.empty(n, np.uint64), np.empty(n, np.int32)
    h2, t2 = np.empty(n, np.uint64), np.empty(n, np.int32)
    T._key_hashes(sa.buf, sa.off, svc, seed, T.BYTE_CLASS, T.TIME_WORDS, h1, t1)
    reference._key_hashes_pieces(sa.buf, sa.off, svc, seed, T.BYTE_CLASS, T.TIME_WORDS, h2, t2)
    assert (h1 == h2).all() and (t1 == t2).all()
    rng = np.random.default_rng(5)
    for g in (np.zeros(n, np.uint64), rng.integers(0, 1 << 8, n).astype(np.uint64)):
        count_off, start, end = param_spans(sa.buf, sa.off, g)
        ref_off = np.empty(n + 1, np.int64)
        empty = np.empty(0, np.int64)
        total = reference._params(sa.buf, sa.off, g, T.BYTE_CLASS, T.TIME_WORDS, ref_off, empty, empty, True)
        ref_s, ref_e = np.empty(total, np.int64), np.empty(total, np.int64)
        reference._params(sa.buf, sa.off, g, T.BYTE_CLASS, T.TIME_WORDS, ref_off, ref_s, ref_e, False)
        assert (count_off == ref_off).all() and (start == ref_s).all() and (end == ref_e).all()


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
    from otelproc.kernels.tokenize import params_terminated

    bodies = ["connection from 84.102.20.2 () at Sun Jul 24 02:38:22 2005", "no vars", "",
              "key=a\x1fb id 12\x1f3 /var/log/x", "   ", "user=42 path /a/b/c took 3 ms", "10.0.0.1:80 up"]
    sa = StringArray.from_pylist(bodies)
    rng = np.random.default_rng(3)
    for genmask in (np.zeros(len(bodies), np.uint64), np.array([0, 2, 0, 4, 1, 8, 3], np.uint64),
                    rng.integers(0, 2**63, len(bodies)).astype(np.uint64)):
        poff, s, e = param_spans(sa.buf, sa.off, genmask)
        ref_buf, ref_off = gather_params_terminated(sa.buf, poff, s, e)
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
    # _line_key_spans is a copy of _line_key's walk plus span bookkeeping (kept apart for speed):
    # the two must agree on every key hash and token count
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
