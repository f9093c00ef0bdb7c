"""benchmarks/nab_eval.py: NAB is scored through the shipped processors, causally, and cross-validated
without looking at the held-out folder."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import shared_path

REPO = Path(__file__).resolve().parents[2]
NS = 10**9
T0 = 1_700_000_000 * NS
# anomaly-processor settings for a duration series of one value per 5 minutes (the defaults test a series
# only with >= 16 values in 5 min)
LOW_RATE = {"latency_window": "30m", "latency_min_values": 4, "latency_memory": "1d", "latency_min_history": 20}


def _nab_eval():
    spec = importlib.util.spec_from_file_location("nab_eval", REPO / "benchmarks" / "nab_eval.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["nab_eval"] = mod
    spec.loader.exec_module(mod)
    return mod


def _metric(n: int = 1500, shift_at: int = 1200, rows: int = 24, factor: float = 3.0, seed: int = 1):
    """A 5-minute metric around 40 with 5 % noise; ``factor`` x the usual value for ``rows`` rows."""
    rng = np.random.default_rng(seed)
    values = 40.0 * np.exp(rng.normal(0.0, 0.05, n))
    values[shift_at:shift_at + rows] *= factor
    return T0 + np.arange(n, dtype=np.int64) * 300 * NS, values


def test_a_shift_is_scored_by_the_engine_and_nothing_before_it():
    nab = _nab_eval()
    event_ns, values = _metric()
    s = nab.engine_scores(event_ns, values, LOW_RATE)
    hits = np.flatnonzero(s > 0)
    assert len(hits) and 1200 <= hits[0] <= 1206 and s[hits[0]] >= 0.5, hits
    assert hits.max() < 1224 + 12, "one shift, reported while it lasts"


def test_the_shipped_defaults_test_a_five_minute_metric():
    # one value per 5 min: the shipped defaults test it on its last 16 values (no low-rate settings needed);
    # a x3 shift for 2 h is found once most of the window is shifted, the same metric without it gives nothing
    nab = _nab_eval()
    event_ns, values = _metric()
    hits = np.flatnonzero(nab.engine_scores(event_ns, values) > 0)
    assert len(hits) and 1200 <= hits[0] <= 1212 and hits.max() < 1224, hits
    event_ns, values = _metric(factor=1.0)
    assert not nab.engine_scores(event_ns, values).any()


def test_the_config_reaches_the_processor():
    nab = _nab_eval()
    event_ns, values = _metric()
    # a shift needs z >= value_z: at 1000 it is no finding any more
    assert not nab.engine_scores(event_ns, values, {**LOW_RATE, "value_z": 1000.0}).any()
    with pytest.raises(ValueError, match="value_zz: unknown key"):
        nab.engine_scores(event_ns, values, {"value_zz": 3})


def test_scores_are_causal_and_do_not_depend_on_batching():
    # NAB's rule: a row's score depends only on that row and earlier ones. A prefix scores exactly the
    # first rows of the whole file (the prefix's last bucket is still open: it has no score yet), and
    # cutting the stream into other batches changes nothing (the engine works on event time).
    path = shared_path("data", "nab", "data", "artificialWithAnomaly", "art_daily_jumpsup.csv")
    nab = _nab_eval()
    _, values, event_ns = nab.read_series(path)
    full = nab.engine_scores(event_ns, values, LOW_RATE)
    assert full.shape == values.shape and (full > 0).any()
    for k in (900, 2500):
        part = nab.engine_scores(event_ns[:k], values[:k], LOW_RATE, batch_rows=333)
        np.testing.assert_array_equal(part[: k - 1], full[: k - 1])


def test_cross_validation_chooses_on_the_other_folders_only():
    data = shared_path("data", "nab")
    nab = _nab_eval()
    ns = nab.load_scorer(shared_path("tools", "nab_score.py"))
    corpus = ns.load_corpus(str(data / "data"), str(data / "labels" / "combined_windows.json"))
    profiles = ns.load_profiles(str(data / "profiles.json"))
    folder = [f.name.split("/")[0] for f in corpus.files]
    # "cheat_<F>" alerts on the first row of every window of folder F and nowhere else: perfect on F,
    # the null detector elsewhere. Chosen on the other folders, F never gets its own cheat.
    cands = {}
    for fo in sorted(set(folder)):
        per_file = []
        for f, fname in zip(corpus.files, folder):
            s = np.zeros(f.n_rows)
            if fname == fo:
                for a, _ in f.windows:
                    s[a] = 1.0
            per_file.append(s)
        cands[f"cheat_{fo}"] = per_file
    rep = nab.cross_validate(ns, corpus, profiles, cands)
    for prof, picks in rep["picks"].items():
        for fo, pick in picks.items():
            assert pick["candidate"] != f"cheat_{fo}", (prof, fo, pick)
    in_sample = max(ns.score_detector(corpus, c, profiles[:1])["profiles"]["standard"]["normalized_score"]
                    for c in cands.values())
    assert rep["profiles"]["standard"]["normalized_score"] < in_sample


def test_runs_on_a_directory_of_nab_layout(tmp_path, capsys):
    data = shared_path("data", "nab")
    nab = _nab_eval()
    name = "artificialWithAnomaly/art_daily_jumpsup.csv"
    (tmp_path / "data" / name).parent.mkdir(parents=True)
    (tmp_path / "data" / name).write_bytes((data / "data" / name).read_bytes())
    labels = tmp_path / "labels" / "windows.json"
    labels.parent.mkdir()
    windows = json.loads((data / "labels" / "combined_windows.json").read_text())
    labels.write_text(json.dumps({name: windows[name]}))
    rc = nab.main(["--data", str(tmp_path / "data"), "--labels", str(labels), "--out", str(tmp_path / "res"),
                   "--profiles", str(data / "profiles.json"), "--scorer", str(shared_path("tools", "nab_score.py")),
                   "--json", str(tmp_path / "r.json")])
    assert rc == 0
    out = capsys.readouterr().out
    assert "standard" in out and "reward_low_FN_rate" in out and "patterns -> anomaly" in out
    rows = (tmp_path / "res" / name).read_text().splitlines()
    assert rows[0] == "timestamp,value,anomaly_score" and len(rows) == 4033
    rep = json.loads((tmp_path / "r.json").read_text())
    assert set(rep["all_files"]["profiles"]) == {"standard", "reward_low_FP_rate", "reward_low_FN_rate"}
