"""benchmarks/nab_eval.py: the NAB detector composition is causal and the script runs end to end."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import shared_path

REPO = Path(__file__).resolve().parents[2]


def _nab_eval():
    spec = importlib.util.spec_from_file_location("nab_eval", REPO / "benchmarks" / "nab_eval.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["nab_eval"] = mod
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("name", ["realKnownCause/nyc_taxi.csv", "artificialWithAnomaly/art_increase_spike_density.csv",
                                  "realAWSCloudwatch/ec2_cpu_utilization_24ae8d.csv"])
def test_scores_are_causal(name):
    # NAB's rule: the score of a row depends only on that row and earlier ones. Scoring a prefix of the
    # file must give exactly the first rows of scoring the whole file (past the 750 learning rows, whose
    # sampling interval and period every later row uses).
    path = shared_path("data", "nab", "data", *name.split("/"))
    nab = _nab_eval()
    _, values, hour, seconds = nab.read_series(path)
    full = nab.score_series(values, hour, seconds=seconds)
    assert full.shape == values.shape and np.all((full >= 0) & (full <= 1))
    assert full.max() > 0.5, "every one of these files has an anomaly the detector scores"
    for k in (800, len(values) // 2, len(values) - 1):
        part = nab.score_series(values[:k], hour[:k], seconds=seconds[:k])
        np.testing.assert_array_equal(part, full[:k])


def test_runs_on_a_directory_of_nab_layout(tmp_path, capsys):
    data = shared_path("data", "nab")
    nab = _nab_eval()
    sub = tmp_path / "data" / "realKnownCause"
    sub.mkdir(parents=True)
    (sub / "nyc_taxi.csv").write_bytes((data / "data" / "realKnownCause" / "nyc_taxi.csv").read_bytes())
    labels = tmp_path / "labels" / "windows.json"
    labels.parent.mkdir()
    import json

    windows = json.loads((data / "labels" / "combined_windows.json").read_text())
    labels.write_text(json.dumps({"realKnownCause/nyc_taxi.csv": windows["realKnownCause/nyc_taxi.csv"]}))
    scorer = shared_path("tools", "nab_score.py")
    rc = nab.main(["--data", str(tmp_path / "data"), "--labels", str(labels), "--out", str(tmp_path / "res"),
                   "--profiles", str(data / "profiles.json"), "--scorer", str(scorer)])
    assert rc == 0
    out = capsys.readouterr().out
    assert "standard" in out and "reward_low_FN_rate" in out
    rows = (tmp_path / "res" / "realKnownCause" / "nyc_taxi.csv").read_text().splitlines()
    assert rows[0] == "timestamp,value,anomaly_score" and len(rows) == 10321
