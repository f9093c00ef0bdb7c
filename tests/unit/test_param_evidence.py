"""kernels.param_evidence against a slow pure-Python reference, and what the miner shows with it."""
from __future__ import annotations

import numpy as np

from otelproc.batch import StringArray
from otelproc.kernels.param_evidence import FULL_LINES, SAMPLE_STRIDE, SHAPE_VARIED, param_evidence
from otelproc.patterns import PatternMiner, mine_lines

K, W, H = 3, 2, 5
SPACE = b" \t\n\r\x0b\x0c"


def _fnv(word: bytes) -> int:
    h = 0xCBF29CE484222325
    for c in word:
        h = ((h ^ c) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def _reference(lines: list[list[bytes]], slot: list[int], nvar: list[int], state: dict) -> tuple[list, list]:
    """The evidence rules written plainly: one line at a time, one parameter at a time."""
    n_slots = len(nvar)
    first_row = [-1] * n_slots
    changed = [False] * n_slots
    for r, (values, s) in enumerate(zip(lines, slot)):
        state["seen"][s] += 1
        if state["irregular"][s] or (state["lines"][s] >= FULL_LINES and state["seen"][s] % SAMPLE_STRIDE):
            continue
        if len(values) != nvar[s]:
            state["irregular"][s] = True
            changed[s] = True
            continue
        first = state["lines"][s] == 0
        if first:
            first_row[s] = r
        for k, v in enumerate(values[:K]):
            words = [w for w in bytes(b if b not in SPACE else 32 for b in v).split(b" ") if w]
            if first:
                state["words"][s][k] = len(words)
                state["hash"][s][k] = [_fnv(w) for w in words[:W]] + [0] * (W - len(words[:W]))
                state["head"][s][k] = v[:H]
                state["prefix"][s][k] = len(v[:H])
                state["tail"][s][k] = v[-H:] if v else b""
                state["suffix"][s][k] = len(v[-H:]) if v else 0
                continue
            for w, word in enumerate(words[:W]):
                if state["hash"][s][k][w] != _fnv(word) and not state["varied"][s][k] >> w & 1:
                    state["varied"][s][k] |= 1 << w
                    changed[s] = True
            if len(words) != state["words"][s][k] and not state["varied"][s][k] & SHAPE_VARIED:
                state["varied"][s][k] |= SHAPE_VARIED
                changed[s] = True
            p = 0
            while p < state["prefix"][s][k] and p < len(v) and v[p] == state["head"][s][k][p]:
                p += 1
            if p < state["prefix"][s][k]:
                state["prefix"][s][k] = p
                changed[s] = True
            q, tail = 0, state["tail"][s][k]
            while q < state["suffix"][s][k] and q < len(v) and v[len(v) - 1 - q] == tail[len(tail) - 1 - q]:
                q += 1
            if q < state["suffix"][s][k]:
                state["suffix"][s][k] = q
                changed[s] = True
        state["lines"][s] += 1
    return first_row, changed


def test_kernel_agrees_with_the_reference_on_random_parameters():
    rng = np.random.default_rng(11)
    alphabet = [b"a", b"b", b"1", b" ", b"\t", b"-", b"x"]
    n_slots = 6
    nvar = rng.integers(0, 5, n_slots).tolist()
    ref = {"seen": [0] * n_slots, "lines": [0] * n_slots, "irregular": [False] * n_slots, "words": [[0] * K for _ in range(n_slots)],
           "hash": [[[0] * W for _ in range(K)] for _ in range(n_slots)], "varied": [[0] * K for _ in range(n_slots)],
           "head": [[b""] * K for _ in range(n_slots)], "prefix": [[0] * K for _ in range(n_slots)],
           "tail": [[b""] * K for _ in range(n_slots)], "suffix": [[0] * K for _ in range(n_slots)]}
    seen = np.zeros(n_slots, np.int64)
    lines_ = np.zeros(n_slots, np.int64)
    irregular = np.zeros(n_slots, np.bool_)
    words = np.zeros((n_slots, K), np.int32)
    ev_hash = np.zeros((n_slots, K, W), np.uint64)
    varied = np.zeros((n_slots, K), np.uint16)
    head = np.zeros((n_slots, K, H), np.uint8)
    prefix = np.zeros((n_slots, K), np.int32)
    tail = np.zeros((n_slots, K, H), np.uint8)
    suffix = np.zeros((n_slots, K), np.int32)
    for _batch in range(4):
        n = 300
        slot = rng.integers(0, n_slots, n).tolist()
        batch = []
        for s in slot:
            count = nvar[s] if rng.random() > 0.02 else nvar[s] + 1
            # few distinct values, so some words stay constant and some vary
            batch.append([b"".join(alphabet[i] for i in rng.integers(0, len(alphabet), rng.integers(0, 4)))
                          if rng.random() < 0.3 else b"ab 1" for _ in range(count)])
        sa = StringArray.from_pylist([b"".join(v + b"\x1f" for v in vals) for vals in batch])
        got_first, got_changed = param_evidence(sa.buf, sa.off, np.asarray(slot, np.int32), np.asarray(nvar, np.int32),
                                                seen, lines_, irregular, words, ev_hash, varied, head, prefix,
                                                tail, suffix)
        want_first, want_changed = _reference(batch, slot, nvar, ref)
        assert got_first.tolist() == want_first and got_changed.tolist() == want_changed
        assert seen.tolist() == ref["seen"] and lines_.tolist() == ref["lines"] and irregular.tolist() == ref["irregular"]
        assert varied.tolist() == ref["varied"] and prefix.tolist() == ref["prefix"]
        assert suffix.tolist() == ref["suffix"]
        for s in range(n_slots):
            if ref["lines"][s] and not ref["irregular"][s]:
                for k in range(min(nvar[s], K)):
                    assert words[s, k] == ref["words"][s][k]
                    assert ev_hash[s, k].tolist() == ref["hash"][s][k]
                    assert bytes(head[s, k, :ref["prefix"][s][k]]) == ref["head"][s][k][:ref["prefix"][s][k]]
                    q = ref["suffix"][s][k]
                    assert bytes(tail[s, k, H - q:]) == ref["tail"][s][k][len(ref["tail"][s][k]) - q:]


def _templates(lines: list[str]) -> list[str]:
    miner, slots = mine_lines(StringArray.from_pylist(lines))
    return [miner.template(s) for s in slots]


def test_constant_names_are_shown_numbers_addresses_and_timestamps_stay_variables():
    lines = [f"Failed password for {u} from 10.0.{i}.1 port {4000 + i} ssh2" for i, u in
             enumerate(["root", "admin", "guest", "root"])]
    assert set(_templates(lines)) == {"Failed password for <*> from <*> port <*> ssh2"}
    # a constant path, host:port, long id or timestamp is not a name: it stays <*>
    lines = [f"worker {i} ok /etc/app/workers2.properties at Sun Jul 24 02:38:2{i} 2005 via db-1:8030"
             for i in range(4)]
    assert set(_templates(lines)) == {"worker <*> ok <*> at <*> via <*>"}
    # one line is no evidence that a word is constant
    assert _templates(["child jk2_init() ready"])[0] == "child <*>() ready"
    assert set(_templates(["child jk2_init() ready"] * 3)) == {"child jk2_init() ready"}
    # a word that varies is a variable again; a shared head of letters is kept (node-<*>)
    lines = [f"served by node node-{i}" for i in range(5)] + [f"link tty=eth{i} up" for i in (1, 1, 2)]
    assert _templates(lines)[0] == "served by node node-<*>" and _templates(lines)[-1] == "link tty=<*> up"
    # ... and a shared closing tail: a masked path that swallowed its punctuation
    lines = [f"Error loading /apps/run{i}/prog{i}: no such file" for i in range(4)]
    lines += [f"LOGIN chdir(/home/u{i}/work) failed" for i in range(4)]
    assert set(_templates(lines)) == {"Error loading <*>: no such file", "LOGIN chdir(<*>) failed"}


def test_the_shown_template_does_not_change_the_pattern_id():
    m = PatternMiner()
    sa = StringArray.from_pylist(["child jk2_init() ready"] * 3)
    res = m.learn(sa.buf, sa.off, np.zeros(3, np.int32), [""], with_params=True)
    s = int(res.slot[0])
    assert m.template(s) == "child jk2_init() ready" and " ".join(m.p_tokens[s]) == "child <*>() ready"
    from otelproc.patterns import pattern_id
    assert int(m.p_id[s]) == pattern_id("", "child <*>() ready")
    assert m.templates_array().to_pylist()[s] == "child jk2_init() ready"


def test_a_variable_of_a_fixed_word_count_shows_one_placeholder_per_word():
    lines = [f"Fan speeds ( {3500 + i} {3400 + 2 * i} {3300 + i} **** {3200 + i} )" for i in range(5)]
    assert set(_templates(lines)) == {"Fan speeds ( <*> <*> <*> **** <*> )"}
    # a value whose word count varies, or a timestamp, stays one <*>
    lines = [f"job done in {' '.join(['7'] * (1 + i % 3))} steps" for i in range(6)]
    assert set(_templates(lines)) == {"job done in <*> steps"}
    lines = [f"user timed out at Sun Jul 10 0{i}:12:34 2005" for i in range(4)]
    assert set(_templates(lines)) == {"user timed out at <*>"}


def test_punctuation_and_names_around_a_variable_are_shown():
    # a constant value keeps its closing punctuation and its quotes; a number after punctuation is a variable
    lines = [f"connect to server: 10.0.0.5. Already tried {i} times" for i in range(4)]
    assert set(_templates(lines)) == {"connect to server: <*>. Already tried <*> times"}
    lines = [f"removing device node '/dev/vcs{i}'" for i in range(3)] * 2
    assert set(_templates(lines)) == {"removing device node '<*>'"}
    lines = ["auxiliary processor.............0"] * 3
    assert set(_templates(lines)) == {"auxiliary processor.............<*>"}
    # one line: a name with a short index (L3, C1, eth0) is shown, numbers, versions and hex stay masked
    assert _templates(["warning for tree C1 wire at L3 cache"])[0] == "warning for tree C1 wire at L3 cache"
    assert _templates(["driver v1.0.2 loaded with 16K"])[0] == "driver <*> loaded with <*>"
    assert _templates(["arg(ffffda44) rejected"])[0] == "arg(<*>) rejected"
    # ... and a name with a number after punctuation, unless the number looks like an id (3+ digits)
    assert _templates(["Initializing CPU#0 of cache.........1"])[0] == "Initializing CPU#<*> of cache.........<*>"
    assert _templates(["replicate blk_-3456 to datanode"])[0] == "replicate <*> to datanode"
