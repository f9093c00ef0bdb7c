#!/usr/bin/env python3
"""Grouping accuracy of otelproc's pattern miner vs Drain3 on a Loghub-2k style directory.

    python benchmarks/pattern_accuracy.py --data ../shared/data/loghub2k \
        [--scorer ../shared/tools/grouping_accuracy.py] [--out DIR] [--systems A,B]

DIR layout: one folder per system with ``<Sys>_2k.log`` and ``<Sys>_2k.log_structured.csv``, plus
``formats.yaml`` (``systems: {<Sys>: {log_file, log_format}}``). The message content is cut out of each
raw line with the system's header format (LogPAI's rule: ``<Name>`` -> ``(?P<Name>.*?)``, spaces ->
``\\s+``, anchored); lines that do not match are skipped as LogPAI does. Both miners run with ONE
configuration for every system (ours: the defaults; Drain3: its defaults, no masking). Predictions are
written as ``LineId,ClusterId,Template`` and scored by the team's grouping_accuracy.py.
"""
from __future__ import annotations

import argparse
import csv
import importlib.util
import os
import re
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("NUMBA_CACHE_DIR", str(REPO / ".numba_cache"))

from otelproc.batch import StringArray  # noqa: E402
from otelproc.patterns import mine_lines  # noqa: E402


def header_regex(log_format: str) -> re.Pattern:
    """LogPAI's generate_logformat_regex."""
    splitters = re.split(r"(<[^<>]+>)", log_format)
    regex = ""
    for k, part in enumerate(splitters):
        if k % 2 == 0:
            regex += re.sub(" +", r"\\s+", part)
        else:
            regex += "(?P<%s>.*?)" % part.strip("<>")
    return re.compile("^" + regex + "$")


def read_contents(log_path: Path, log_format: str) -> list[str]:
    rx = header_regex(log_format)
    out = []
    with open(log_path, encoding="utf-8", errors="replace") as f:
        for line in f:
            m = rx.match(line.strip())
            if m:
                out.append(m.group("Content"))
    return out


def write_pred(path: Path, clusters: list, templates: list[str]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["LineId", "ClusterId", "Template"])
        for i, (c, t) in enumerate(zip(clusters, templates)):
            w.writerow([i + 1, c, t])


def run_ours(contents: list[str]) -> tuple[list, list[str], float]:
    t0 = time.perf_counter()
    miner, slots = mine_lines(StringArray.from_pylist(contents))
    dt = time.perf_counter() - t0
    ids = miner.p_id
    return [f"{int(ids[s]):016x}" for s in slots.tolist()], [miner.template(s) for s in slots.tolist()], dt


def run_drain3(contents: list[str]) -> tuple[list, list[str], float]:
    from drain3 import TemplateMiner
    from drain3.template_miner_config import TemplateMinerConfig

    cfg = TemplateMinerConfig()
    cfg.profiling_enabled = False
    tm = TemplateMiner(config=cfg)
    t0 = time.perf_counter()
    cids = [tm.add_log_message(c)["cluster_id"] for c in contents]
    dt = time.perf_counter() - t0
    by_id = {c.cluster_id: c.get_template() for c in tm.drain.clusters}
    return cids, [by_id[c] for c in cids], dt


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="Loghub-2k style directory")
    ap.add_argument("--scorer", default=str(REPO.parent / "shared" / "tools" / "grouping_accuracy.py"))
    ap.add_argument("--out", help="keep the prediction CSVs here (default: a temporary directory)")
    ap.add_argument("--systems", help="comma-separated subset")
    args = ap.parse_args(argv)

    spec = importlib.util.spec_from_file_location("grouping_accuracy", args.scorer)
    scorer = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(scorer)

    data = Path(args.data)
    formats = yaml.safe_load((data / "formats.yaml").read_text())["systems"]
    systems = [s for s in sorted(formats) if (data / s).is_dir()]
    if args.systems:
        systems = [s for s in systems if s in args.systems.split(",")]
    out_dir = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="pattern_acc_"))
    out_dir.mkdir(parents=True, exist_ok=True)

    hdr = f"{'system':<12} {'lines':>6} | {'GA':>6} {'PA':>6} {'FGA':>6} | {'D3 GA':>6} {'D3 PA':>6} {'D3 FGA':>6}"
    print(hdr)
    print("-" * len(hdr))
    sums = {"ours": [0.0, 0.0, 0.0], "drain3": [0.0, 0.0, 0.0]}
    scored = 0
    for s in systems:
        f = formats[s]
        contents = read_contents(data / s / f["log_file"], f["log_format"])
        truth = next((data / s).glob("*_structured.csv"))
        res = {}
        for name, fn in (("ours", run_ours), ("drain3", run_drain3)):
            clusters, templates, _ = fn(contents)
            pred = out_dir / name / f"{s}.csv"
            pred.parent.mkdir(exist_ok=True)
            write_pred(pred, clusters, templates)
            r = scorer.score_files(str(truth), str(pred))
            res[name] = (r["GA"], r.get("PA", float("nan")), r["FGA"])
            for k in range(3):
                sums[name][k] += res[name][k]
        scored += 1
        o, d = res["ours"], res["drain3"]
        print(f"{s:<12} {len(contents):>6} | {o[0]:6.3f} {o[1]:6.3f} {o[2]:6.3f} | {d[0]:6.3f} {d[1]:6.3f} {d[2]:6.3f}")
    if scored:
        o = [v / scored for v in sums["ours"]]
        d = [v / scored for v in sums["drain3"]]
        print("-" * len(hdr))
        print(f"{'mean':<12} {'':>6} | {o[0]:6.3f} {o[1]:6.3f} {o[2]:6.3f} | {d[0]:6.3f} {d[1]:6.3f} {d[2]:6.3f}")
    print(f"predictions: {out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
