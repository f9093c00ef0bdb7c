"""PatternMiner: stable ids, restarts, two instances, services, memory cap, generalisation, mine_file."""
from __future__ import annotations

import csv

import numpy as np
import pytest

from otelproc.batch import StringArray
from otelproc.patterns import ChangeType, PatternMiner, mine_file, pattern_id, read_lines
from otelproc.patterns.miner import STATE_FILE
from tests.conftest import shared_path

LINES = [
    "Invalid user admin from 103.207.39.212",
    "Invalid user test from 10.0.0.7",
    "Invalid user oracle from 10.0.0.8",
    "Accepted password for root from 10.0.0.9 port 22 ssh2",
    "Accepted password for bob from 10.0.0.1 port 2201 ssh2",
    "session opened for user root by (uid=0)",
    "Connection closed by 10.0.0.3 [preauth]",
    "Connection closed by 10.0.0.4 [preauth]",
]


def learn(miner: PatternMiner, lines: list[str], services: list[str] | None = None, svc_index=None):
    sa = StringArray.from_pylist(lines)
    services = services or [""]
    idx = np.zeros(len(lines), np.int32) if svc_index is None else np.asarray(svc_index, np.int32)
    return miner.learn(sa.buf, sa.off, idx, services, np.arange(len(lines), dtype=np.int64) + 1)


def ids_of(miner, res):
    return miner.p_id[res.slot].tolist()


def test_templates_and_generalisation_keeps_alias():
    m = PatternMiner()
    r1 = learn(m, LINES[:1])
    first_id = int(m.p_id[r1.slot[0]])
    assert m.template(r1.slot[0]) == "Invalid user admin from <*>"
    assert first_id == pattern_id("", "Invalid user admin from <*>")
    # two values at a position may be two templates ("Failed password/none"): not merged yet
    r2 = learn(m, LINES[1:2])
    assert r2.slot[0] != r1.slot[0] and m.template(r2.slot[0]) == "Invalid user test from <*>"
    second_id = int(m.p_id[r2.slot[0]])
    # the third distinct value makes the position a variable: both earlier patterns merge into one
    r3 = learn(m, LINES[2:3])
    assert r3.slot[0] == r1.slot[0]
    assert m.template(r3.slot[0]) == "Invalid user <*> from <*>"
    assert {first_id, second_id} <= set(m.p_aliases[r3.slot[0]])
    assert not m.p_alive[r2.slot[0]] and m.pattern_count == 1 and m.p_count[r3.slot[0]] == 3
    merged = [c for c in r3.changes if c.kind == ChangeType.MERGED]
    assert [(c.slot, c.into, c.old_id) for c in merged] == [(r2.slot[0], r1.slot[0], second_id)]
    # lines of the absorbed pattern now find the merged one through the key cache
    assert learn(m, LINES[1:2]).slot[0] == r1.slot[0]
    # the generalised token is a parameter
    sa = StringArray.from_pylist(LINES[1:2])
    res = m.learn(sa.buf, sa.off, np.zeros(1, np.int32), [""], with_params=True)
    assert res.params.to_pylist() == ["test\x1f10.0.0.7\x1f"]


def test_two_alternatives_stay_two_templates_and_masked_tokens_merge():
    m = PatternMiner()
    lines = ([f"Block rdd_{i} stored as bytes in memory (size {i} KB)" for i in range(5)]
             + [f"Block rdd_{i} stored as values in memory (size {i} KB)" for i in range(5)]
             + [f"connection from 10.0.0.{i} (host-{i}) at 10:0{i}" for i in range(3)]
             + ["connection from 10.0.0.9 () at 11:00"]
             + ["session opened for user root by (uid=0)"] * 3 + ["session opened for user root by LOGIN(uid=0)"])
    res = learn(m, lines)
    t = [m.template(s) for s in res.slot]
    assert t[0] == "Block <*> stored as bytes in memory (size <*> KB)"
    assert t[5] == "Block <*> stored as values in memory (size <*> KB)"
    # "(<*>)" and "()" differ only in the variable: one template, which keeps the parentheses
    assert len(set(res.slot[10:14].tolist())) == 1 and t[10] == "connection from <*> (<*>) at <*>"
    # "(uid=<*>)" and "LOGIN(uid=<*>)" differ in literal text: two templates
    assert res.slot[14] != res.slot[17] and t[17] == "session opened for user root by LOGIN(uid=<*>)"


def test_mine_lines_follows_merges_across_chunks(monkeypatch):
    import otelproc.patterns as patterns
    monkeypatch.setattr(patterns, "_CHUNK", 1)
    lines = StringArray.from_pylist([f"stopping service {c} now" for c in ("alpha", "beta", "gamma", "delta")]
                                    + ["other line here"])
    miner, slots = patterns.mine_lines(lines)
    assert len(set(slots[:4].tolist())) == 1 and miner.template(slots[0]) == "stopping service <*> now"
    assert slots[4] != slots[0] and miner.p_alive[slots].all()


def test_similarity_needs_shared_literals():
    # a template made of variables must not absorb unrelated lines of the same length
    m = PatternMiner()
    res = learn(m, ["Version 1.2 Starting", "L2 cache: 1024K", "RNG not detected", "portmap startup succeeded"])
    assert len(set(res.slot.tolist())) == 4

def _bo(lines):
    sa = StringArray.from_pylist(lines)
    return sa.buf, sa.off


def test_same_ids_across_restart_and_instances(tmp_path):
    a = PatternMiner()
    ra = learn(a, LINES)
    a.save(tmp_path)
    assert (tmp_path / STATE_FILE).exists()
    b = PatternMiner.load(tmp_path)
    rb = learn(b, LINES)
    assert ids_of(a, ra) == ids_of(b, rb)
    assert b.pattern_count == a.pattern_count
    assert (b.p_count[rb.slot] == 2 * a.p_count[ra.slot]).all()
    # a second instance fed the same data from scratch agrees
    c = PatternMiner()
    rc = learn(c, LINES)
    assert ids_of(c, rc) == ids_of(a, ra)


def test_load_rejects_foreign_file_and_missing_dir_gives_fresh(tmp_path):
    assert PatternMiner.load(tmp_path / "none").pattern_count == 0
    np.savez(tmp_path / STATE_FILE, meta=np.frombuffer(b'{"format": "x"}', dtype=np.uint8))
    with pytest.raises(ValueError, match="not an otelproc pattern state"):
        PatternMiner.load(tmp_path)


def test_services_never_share_patterns():
    m = PatternMiner()
    res = learn(m, ["disk full on sda", "disk full on sda"], services=["api", "db"], svc_index=[0, 1])
    assert res.slot[0] != res.slot[1]
    assert m.service_of(res.slot[0]) == "api" and m.service_of(res.slot[1]) == "db"
    assert m.p_id[res.slot[0]] != m.p_id[res.slot[1]]
    assert m.template(res.slot[0]) == m.template(res.slot[1])


def test_memory_cap_evicts_least_recent_and_ids_come_back():
    distinct = [f"event kind{chr(97 + i)}{chr(97 + j)} happened" for i in range(6) for j in range(6)]
    # every line differs only in a letters-only word: force distinct patterns with similarity 1.0
    m = PatternMiner(max_patterns_per_service=16, similarity=1.0)
    first = learn(m, distinct[:1])
    first_id = int(m.p_id[first.slot[0]])
    for k in range(1, len(distinct)):
        learn(m, [distinct[k]])
        assert m.pattern_count <= 16
    assert first_id not in m.p_id[m.p_alive].tolist()   # the oldest was evicted
    again = learn(m, distinct[:1])
    assert int(m.p_id[again.slot[0]]) == first_id          # and returns with the same id
    other = learn(m, ["x 1"], services=["other"])
    assert m.service_of(other.slot[0]) == "other"


def test_empty_batch_and_empty_bodies():
    m = PatternMiner()
    res = learn(m, [])
    assert len(res.slot) == 0
    res = learn(m, ["", "   ", "a"])
    assert res.slot[0] == res.slot[1] and m.template(res.slot[0]) == ""


def test_mine_file_csv(tmp_path):
    p = tmp_path / "in.log"
    p.write_bytes(("\r\n".join(LINES) + "\n").encode())
    out = mine_file(p, tmp_path / "out.csv")
    assert sum(c for _, c in out) == len(LINES)
    assert ("Invalid user <*> from <*>", 3) in out
    rows = list(csv.DictReader(open(tmp_path / "out.csv")))
    assert [r["LineId"] for r in rows] == [str(i + 1) for i in range(len(LINES))]
    assert rows[0]["ClusterId"] == rows[2]["ClusterId"] and rows[0]["Template"] == "Invalid user <*> from <*>"
    assert len(read_lines(p)) == len(LINES)


def test_loghub_hdfs_grouping_is_exact():
    sys_dir = shared_path("data", "loghub2k", "HDFS")
    rows = list(csv.DictReader(open(sys_dir / "HDFS_2k.log_structured.csv")))
    m = PatternMiner()
    res = learn(m, [r["Content"] for r in rows])
    by_truth: dict[str, set] = {}
    for r, s in zip(rows, res.slot.tolist()):
        by_truth.setdefault(r["EventTemplate"], set()).add(s)
    assert all(len(v) == 1 for v in by_truth.values())
    assert len({s for v in by_truth.values() for s in v}) == len(by_truth)


def test_shape_index_matches_the_pairwise_reference():
    # the vectorised candidate search gives, row by row, the pairwise reference measures
    from otelproc.patterns.miner import VAR, _ShapeIndex
    from tests.reference import ref_match_literals, ref_similarity

    rng = np.random.default_rng(7)
    words = ["a", "b", "c", "d", VAR]
    for ntok in (0, 1, 2, 5):
        m = PatternMiner()
        index = _ShapeIndex(ntok)
        templates = [tuple(rng.choice(words, ntok).tolist()) for _ in range(40)]
        for slot, t in enumerate(templates):
            index.put(slot, m._token_ids(t, add=True))
        for slot in range(0, 40, 3):      # removal moves the last row into the hole
            index.remove(slot)
        kept = [s for s in range(40) if s % 3]
        assert sorted(index.slots[:index.n].tolist()) == kept
        for _ in range(50):
            key = tuple(rng.choice(words + ["zz"], ntok).tolist())
            ids = m._token_ids(key)
            lits, sims = index.scores(ids)
            covered = index.covered_by(m._token_ids(key, add=True))
            for row, slot in enumerate(index.slots[:index.n].tolist()):
                assert lits[row] == ref_match_literals(templates[slot], key)
                assert covered[row] == (ref_match_literals(key, templates[slot]) >= 0)
                assert sims[row] == pytest.approx(ref_similarity(templates[slot], key))


def test_learn_with_params_equals_learn_then_params():
    """learn(with_params=True) takes the parameters in the key walk for cached lines and redoes
    misses and lines whose pattern a merge generalised: the result is params_terminated with the
    final genmask, batch after batch, through merges and evictions."""
    import random

    from otelproc.batch import StringArray
    from otelproc.kernels.tokenize import params_terminated

    rng = random.Random(4)
    words = ["bytes", "values", "blocks", "rows", "pages", "keys"]
    for cap in (1000, 4):
        m1, m2 = PatternMiner(max_patterns_per_service=cap), PatternMiner(max_patterns_per_service=cap)
        for _ in range(8):
            bodies = [rng.choice([f"job {rng.randrange(99)} stored as {rng.choice(words)}",
                                  f"user u{rng.randrange(5)} logged in from 10.0.0.{rng.randrange(9)}",
                                  f"GET /api/{rng.choice(words)} took {rng.randrange(500)} ms",
                                  f"{rng.choice(words)} cache {rng.choice(words)} flushed", ""])
                      for _ in range(rng.choice([1, 40, 300]))]
            sa = StringArray.from_pylist(bodies)
            svc = np.asarray([rng.randrange(2) for _ in bodies], np.int32)
            r1 = m1.learn(sa.buf, sa.off, svc, ["a", "b"], with_params=True)
            r2 = m2.learn(sa.buf, sa.off, svc, ["a", "b"])
            assert np.array_equal(r1.slot, r2.slot) and np.array_equal(r1.genmask, r2.genmask)
            pbuf, poff = params_terminated(sa.buf, sa.off, r2.genmask)
            assert r1.params.off.tolist() == poff.tolist() and r1.params.buf.tobytes() == pbuf.tobytes()
            assert r2.params is None


def test_lines_that_hit_keep_their_pattern_when_the_key_cache_is_cleared():
    """A batch whose new keys overflow max_keys clears the cache after the lookup: the lines that
    hit keep the pattern they hit (they used to get the slot of an unrelated new key)."""
    known = ["alpha one", "beta two", "gamma three"]
    miner = PatternMiner(max_keys=3)
    first = learn(miner, known)
    res = learn(miner, known + ["delta four five"])
    assert res.slot[:3].tolist() == first.slot.tolist()
    assert [miner.template(s) for s in res.slot.tolist()] == known + ["delta four five"]


def test_template_dictionary_holds_each_text_once():
    miner = PatternMiner(max_patterns_per_service=1)
    res = learn(miner, ["GET /users/5 took 5 ms", "GET /users/7 took 7 ms"], ["api", "web"], [0, 1])
    dictionary, code_of_slot = miner.template_dictionary()
    assert dictionary.to_pylist() == ["GET <*> took <*> ms"]
    assert code_of_slot[res.slot].tolist() == [0, 0] and len(set(res.slot.tolist())) == 2
    assert miner.template_dictionary()[0] is dictionary  # the same object while no template changes
    learn(miner, ["cache miss"], ["api"])  # evicts api's pattern (cap 1): its slot is reused
    dictionary2, codes2 = miner.template_dictionary()
    assert dictionary2 is not dictionary
    assert [dictionary2[c] for c in codes2.tolist()] == [miner.templates_array()[s] for s in range(len(codes2))]


def test_template_dictionary_stays_bounded_while_templates_come_and_go():
    miner = PatternMiner(max_patterns_per_service=16)
    def word(k: int) -> str:   # a distinct word of letters (no digit: it is not masked)
        out = "w"
        while k:
            k, d = divmod(k, 26)
            out += "abcdefghijklmnopqrstuvwxyz"[d]
        return out

    for k in range(30):   # 3000 distinct templates through 16 slots: evicted slots are reused
        learn(miner, [f"{word(100 * k + i)}z started now" for i in range(100)], ["api"])
        dictionary, codes = miner.template_dictionary()
        assert len(dictionary) <= 2 * len(miner.p_display) + 1024
        assert [dictionary[c] for c in codes.tolist()] == miner.p_display
    assert len(miner.p_display) <= 200 and len(dictionary) <= 2 * 200 + 1024   # 3000 texts were shown


def test_eviction_inside_a_batch_keeps_every_line_on_its_own_pattern():
    # cap 16 (one eviction takes 1): a batch that hits 8 known patterns and brings 20 new ones evicts
    # some of them while it is being learned. Every line must keep the id of its own template, and the
    # patterns seen in this batch go last: the older ones are evicted first.
    words = [f"kind{chr(97 + i)}{chr(97 + j)}" for i in range(6) for j in range(6)]
    m = PatternMiner(max_patterns_per_service=16, similarity=1.0)
    old = [f"event {w} happened" for w in words[:16]]
    learn(m, old)
    known, new = old[8:], [f"event {w} happened" for w in words[16:36]]
    batch = known + new
    res = learn(m, batch)
    assert m.pattern_count <= 16
    for line, s in zip(batch, res.slot.tolist()):
        assert m.template(s) == line and int(m.p_id[s]) == pattern_id("", line)
    alive = {m.template(s) for s in np.flatnonzero(m.p_alive).tolist()}
    assert not alive & set(old[:8])                # patterns not seen in the batch went first
    # slots freed during the batch are reused afterwards
    before = len(m.p_id)
    learn(m, ["something else entirely here"])
    assert len(m.p_id) == before


def test_a_varying_position_keeps_the_text_its_values_share():
    from otelproc.patterns.miner import _generalise
    assert _generalise(["(<*>)", "()"]) == "(<*>)"
    assert _generalise(["<*>,", "LOCAL(<*>),"]) == "<*>,"
    assert _generalise(["<*>:<*>", "<*>"]) == "<*>"
    assert _generalise(["alpha", "beta", "gamma"]) == "<*>"
    assert _generalise(["rhost=<*>", "rhost="]) == "rhost=<*>"
    assert _generalise(["[a]", "[bb]", "[c]"]) == "[<*>]"
    m = PatternMiner()
    lines = [f"synchronized to {h}, stratum {i}" for i, h in enumerate(["10.0.0.1", "LOCAL(0)", "10.0.0.2"])]
    res = learn(m, lines)
    assert len(set(res.slot.tolist())) == 1 and m.template(res.slot[0]) == "synchronized to <*>, stratum <*>"


def test_categorical_values_that_all_recur_stay_apart_variables_merge():
    """Cardinality against frequency: three states seen 30 times each are three events; three
    user names seen once each are one variable."""
    m = PatternMiner(max_repeat=20)
    states = [f"job {i} entered the {s} state now" for s in ("Started", "Paused", "Resumed") for i in range(30)]
    res = learn(m, states)
    assert sorted({m.template(s) for s in res.slot}) == [f"job <*> entered the {s} state now"
                                                          for s in ("Paused", "Resumed", "Started")]
    users = [f"job {i} entered by {u} user now" for i, u in enumerate(["alice", "bob", "carol"])]
    res = learn(m, users)
    assert {m.template(s) for s in res.slot} == {"job <*> entered by <*> user now"}
    # the same states seen once each are no evidence of a category: they merge as before
    m = PatternMiner(max_repeat=20)
    res = learn(m, [f"job 1 entered the {s} state now" for s in ("Started", "Paused", "Resumed")])
    assert {m.template(s) for s in res.slot} == {"job <*> entered the <*> state now"}


def test_a_version_1_state_loads_with_its_ids_and_learns_on(tmp_path):
    """State v2 adds p_genpos and max_repeat; a v1 file (without them) keeps every pattern and id."""
    import json
    m = PatternMiner()
    learn(m, LINES)
    path = m.save(tmp_path)
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files if k != "p_genpos"}
    meta = json.loads(arrays["meta"].tobytes().decode())
    meta["version"] = 1
    del meta["max_repeat"], meta["min_constant_lines"]
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    with open(path, "wb") as f:
        np.savez(f, **arrays)
    back = PatternMiner.load(tmp_path)
    alive = np.flatnonzero(m.p_alive)
    assert back.p_id[alive].tolist() == m.p_id[alive].tolist()
    assert [back.template(s) for s in alive] == [m.template(s) for s in alive]
    # the same lines find the same ids, a new value generalises as before
    assert ids_of(back, learn(back, LINES)) == ids_of(m, learn(m, LINES))


def test_masking_rules_and_pinned_templates_keep_the_ids_of_the_other_patterns(tmp_path):
    lines = ["payment p-17 declined: card expired", "payment p-18 declined: insufficient funds",
             "order order-1a2b3c4d shipped to warehouse 3", "order order-ffee0011 shipped to warehouse 9",
             "cache warmed in 12 ms", "cache warmed in 15 ms"]
    m = PatternMiner()
    before = {m.template(s): int(m.p_id[s]) for s in learn(m, lines).slot.tolist()}
    m.save(tmp_path)
    ruled = PatternMiner.load(tmp_path, masking=[(r"order-[0-9a-f]{8}", "ORDER")],
                              pinned=["payment <*> declined: <*>"])
    # the pinned template took over the mined payment patterns: their ids are aliases of it
    pin = [s for s in np.flatnonzero(ruled.p_alive) if ruled.template(s) == "payment <*> declined: <*>"]
    assert len(pin) == 1 and ruled.p_pinned[pin[0]]
    assert {before[t] for t in before if t.startswith("payment")} <= set(ruled.p_aliases[pin[0]])
    res = learn(ruled, lines + ["payment p-19 declined: do not honor"])
    t = [ruled.template(s) for s in res.slot]
    assert t[0] == t[1] == t[6] == "payment <*> declined: <*>"
    # masked lines whose pattern already had <*> there keep that pattern and its id; a fresh miner shows <ORDER>
    assert int(ruled.p_id[res.slot[2]]) == before["order <*> shipped to warehouse <*>"] and t[2] == t[3]
    fresh = PatternMiner(masking=[(r"order-[0-9a-f]{8}", "ORDER")])
    assert {fresh.template(s) for s in learn(fresh, lines[2:4]).slot} == {"order <ORDER> shipped to warehouse <*>"}
    # a pattern no rule touches keeps its id
    assert int(ruled.p_id[res.slot[4]]) == before["cache warmed in <*> ms"]
    # the pinned template is not mined away: a similar line of another shape stays its own pattern
    assert ruled.template(learn(ruled, ["payment declined for p-20"]).slot[0]) != "payment <*> declined: <*>"
    # pins survive a restart with the same config, and are released when the config drops them
    ruled.save(tmp_path)
    again = PatternMiner.load(tmp_path, pinned=["payment <*> declined: <*>"])
    assert again.p_pinned[pin[0]] and again.template(learn(again, lines[:1]).slot[0]) == "payment <*> declined: <*>"
    dropped = PatternMiner.load(tmp_path)
    assert not dropped.p_pinned.any()


def test_variables_that_span_a_varying_number_of_tokens_do_not_split_an_event():
    lines = ["proxy:5070 close, 1190 bytes (1.16 KB) sent, 1671 bytes (1.63 KB) received, lifetime 00:01",
             "proxy:5070 close, 403 bytes sent, 426 bytes received, lifetime <1 sec",
             "proxy:5070 close, 451 bytes sent, 18578 bytes (18.1 KB) received, lifetime 00:02",
             "proxy:5070 close, 7 bytes sent, 9 bytes received, lifetime 00:03"]
    for order in (lines, lines[::-1]):
        m = PatternMiner()
        res = learn(m, order)
        assert len(set(res.slot.tolist())) == 1, [m.template(s) for s in res.slot]
        assert m.template(res.slot[0]) == "proxy:<*> close, <*> bytes <*> sent, <*> bytes <*> received, lifetime <*>"
    # an optional field or a word after a variable is another event, not a varying span
    m = PatternMiner()
    res = learn(m, [f"failure; rhost=10.0.0.{i}" for i in range(3)] + [f"failure; rhost=10.0.0.{i} user=u{i}" for i in range(3)]
                + [f"Connection closed by 10.0.0.{i}" for i in range(3)] + [f"Connection closed by 10.0.0.{i} [preauth]"
                                                                           for i in range(3)])
    assert len(set(res.slot.tolist())) == 4


def test_single_token_messages_are_not_one_pattern():
    """A template without text ("<*>") takes no key with text, and its lines are told apart by their
    words: name2 / name7 are one event, other3 another, a bare number stays "<*>"."""
    lines = ["name(true)", "name2", "name3,index:4", "name(false)", "name7", "other3", "12345", "67890",
             "name5,index:6"]
    for order in (lines, lines[::-1]):
        m = PatternMiner()
        res = learn(m, order)
        got = {line: m.template(s) for line, s in zip(order, res.slot.tolist())}
        assert got == {"name(true)": "name(<*>)", "name(false)": "name(<*>)", "name2": "name<*>", "name7": "name<*>",
                       "other3": "other<*>", "12345": "<*>", "67890": "<*>", "name3,index:4": "<*>,index:<*>",
                       "name5,index:6": "<*>,index:<*>"}, got
        # the refined patterns are found again after a restart, with the same ids
        ids = {line: int(m.p_id[s]) for line, s in zip(order, res.slot.tolist())}
        import tempfile
        with tempfile.TemporaryDirectory() as d:
            m.save(d)
            back = PatternMiner.load(d)
            assert {line: int(back.p_id[s]) for line, s in zip(order, learn(back, order).slot.tolist())} == ids


def test_masking_rules_run_only_where_their_literal_text_can_match():
    import re

    from otelproc.patterns.miner import _required_literal

    assert _required_literal(re.compile(r"blk_-?\d+")) == b"blk_"
    assert _required_literal(re.compile(r"(req-)\d+ msec")) == b" msec"   # the longest run, groups too
    assert _required_literal(re.compile(r"(\d+\.){3}\d+")) == b"."
    for no_literal in (r"foo|bar", r"(?i)blk_\d+", r"\d+", r"(x)?\d"):
        assert _required_literal(re.compile(no_literal)) is None
    # the result is the rules applied to every line in order, also when a rule's replacement holds the
    # next rule's text and with bodies that are views into a larger buffer
    rules = [(r"blk_-?\d+", "BLK"), (r"<BLK> ok", "DONE"), (r"\d+ms", "DUR"), (r"(?i)user\s\w+", "USER")]
    rng = np.random.default_rng(4)
    words = ["blk_-12", "blk_7", "ok", "4ms", "User bob", "x", "blk_", "<BLK>", "é", "12"]
    lines = [" ".join(rng.choice(words, rng.integers(0, 6))) for _ in range(500)]
    sa = StringArray.from_pylist(["padding line"] + lines)
    buf, off = sa.buf, sa.off[1:]
    miner = PatternMiner(masking=rules)
    got = StringArray(*miner._mask(buf, off)).to_pylist()
    want = []
    for line in lines:
        for rx, name in rules:
            line = re.sub(rx, f"<{name}>", line)
        want.append(line)
    assert got == want and any("<DONE>" in t for t in got) and any("<USER>" in t for t in got)
