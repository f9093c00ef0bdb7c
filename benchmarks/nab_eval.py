#!/usr/bin/env python3
"""Score the shipped anomaly engine on a NAB-layout directory (the ``patterns`` -> ``anomaly`` processors).

    python benchmarks/nab_eval.py --data ../shared/data/nab/data \
        --labels ../shared/data/nab/labels/combined_windows.json --out /tmp/nab_res [--cv]

Every NAB row becomes one log record of a service named after the file, timestamped with the row's
time, whose body carries the value as a duration (``took <value> ms``). The records go, in batches,
through the same two processors ``otelproc serve`` runs (``patterns`` -> ``anomaly``, built from their
factories with a YAML-style config: :data:`ANOMALY_CONFIG`, the shipped defaults unless ``--set`` or
``--cv`` says otherwise). The engine turns them into a duration series of that template and runs its
own detectors; the harness adds no detector and no post-processing. The score of a row is the largest
Score of the ``anomalies`` rows (every kind) whose bucket holds the row, 0 where there is none: what the
processor alerts on. A bucket's findings are known when the watermark passes it (the next row, here);
they are put on the row whose value they judged, so the score of a row depends on that row and earlier
rows only (NAB's rule; ``tests/unit/test_nab_eval.py`` checks it). Values the engine's duration path
cannot hold (negative numbers; 0 has no logarithm) are records without a duration, as in a log.

Writes ``OUT/<folder>/<file>.csv`` (timestamp,value,anomaly_score) and scores it with ``nab_score.py``
(``--scorer``, default ../shared/tools/nab_score.py; threshold per profile optimised by the scorer, as
NAB does). ``--cv`` also runs every configuration of :func:`grid_configs` and reports
leave-one-category-out cross-validation: for each NAB folder, the configuration and the threshold are
chosen on the other folders and applied to that folder's files; the pooled held-out outputs are scored at
those thresholds (nothing chosen on the files scored), beside the best configuration on all files
(in-sample, optimistic).
"""
from __future__ import annotations

import argparse
import csv
import importlib.util
import itertools
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("NUMBA_CACHE_DIR", str(REPO / ".numba_cache"))

from otelproc.batch import LogBatch  # noqa: E402
from otelproc.config import decode  # noqa: E402
from otelproc.processors import anomaly as anomaly_processor  # noqa: E402
from otelproc.processors import patterns as patterns_processor  # noqa: E402

NS = 1_000_000_000

# The anomaly processor's YAML keys for NAB: none, i.e. the defaults `otelproc serve` ships with.
ANOMALY_CONFIG: dict = {}

# Candidates for cross-validation: the shipped defaults plus every combination below (YAML keys of the
# anomaly processor). A duration series of one value per 5 minutes (NAB) is tested on its last
# `latency_min_values` values against a baseline of >= `latency_min_history` of its values (the memory of a
# sparse series is counted in its own values); the grid varies the evidence count, the z and ratio a flag
# needs, and whether lower values count. Chosen per held-out NAB folder on the other folders, never on the
# files scored.
# Set in every grid candidate (not chosen): what counts as a silence that restarts continuity-based state. The
# default (1 h) cuts a series of one row per 30-60 min at every row, and the engine closes its buckets in
# chunks of max_gap: with 1 d the runs take a quarter of the CPU (identical scores on 5-minute files without
# gaps, e.g. ec2_cpu_utilization_fe7f93).
CV_FIXED = {"max_gap": "1d"}
CV_GRID = {
    "latency_min_values": [6, 16],
    "value_z": [3.0, 5.0],
    "value_min_ratio": [1.2, 1.5],
    "latency_lower": [False, True],
}


def read_series(path: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    """timestamps (as written), values float64[n], event time int64[n] ns (the timestamps read as UTC)."""
    ts, vals = [], []
    with open(path, newline="") as fh:
        r = csv.reader(fh)
        header = [h.strip() for h in next(r)]
        it, iv = header.index("timestamp"), header.index("value")
        for row in r:
            if not row:
                continue
            ts.append(row[it])
            vals.append(float(row[iv]))
    t64 = np.array([t.strip().replace(" ", "T") for t in ts], dtype="datetime64[ns]")
    return ts, np.asarray(vals, dtype=np.float64), t64.astype(np.int64)


def log_records(service: str, event_ns: np.ndarray, values: np.ndarray) -> LogBatch:
    """One INFO log record per row: ``took <value> ms`` (the value written out in full, no exponent)."""
    return LogBatch.from_records([
        {"time_ns": int(t), "observed_ns": int(t), "service": service, "severity_number": 9,
         "body": f"took {np.format_float_positional(v, trim='-')} ms"}
        for t, v in zip(event_ns.tolist(), values.tolist())])


class _Collect:
    """The consumer after the anomaly processor: keeps its ``anomalies`` tables."""

    def __init__(self) -> None:
        self.anomalies: list = []

    def consume(self, batch: LogBatch) -> None:
        if "anomalies" in batch.tables:
            self.anomalies.append(batch.tables["anomalies"])


def _processor(factory, config: dict, next_consumer):
    errors: list[str] = []
    cfg = decode(factory.config_class, config, f"processors::{factory.type}", errors)
    if errors:
        raise ValueError("; ".join(errors))
    return factory.create(factory.type, cfg, next_consumer, None)


def engine_scores(event_ns: np.ndarray, values: np.ndarray, config: dict | None = None, service: str = "nab",
                  batch_rows: int = 2000) -> np.ndarray:
    """Per-row score of the shipped processors on one series (see the module doc)."""
    sink = _Collect()
    anomaly = _processor(anomaly_processor.factory, {**ANOMALY_CONFIG, **(config or {})}, sink)
    patterns = _processor(patterns_processor.factory, {}, anomaly)
    for p in (anomaly, patterns):
        p.start()
    for i in range(0, len(values), batch_rows):
        patterns.consume(log_records(service, event_ns[i:i + batch_rows], values[i:i + batch_rows]))
    for p in (patterns, anomaly):
        p.shutdown()
    return _bucket_max(event_ns, sink.anomalies)


def _bucket_max(event_ns: np.ndarray, tables: list) -> np.ndarray:
    """Per row, the largest Score of the ``anomalies`` rows whose bucket holds the row (0 where none)."""
    score = np.zeros(len(event_ns))
    for t in tables:
        start = t["Timestamp"].to_numpy().astype("datetime64[ns]").astype(np.int64)
        width = (t["ResolutionSeconds"].to_numpy().astype(np.float64) * NS).round().astype(np.int64)
        sc = np.nan_to_num(t["Score"].to_numpy().astype(np.float64))
        for w in np.unique(width):
            m = width == w
            # rows are in time order: the rows of bucket [start, start + w) are a contiguous range
            lo = np.searchsorted(event_ns, start[m], side="left")
            hi = np.searchsorted(event_ns, start[m] + w, side="left")
            for a, b, s in zip(lo.tolist(), hi.tolist(), sc[m].tolist()):
                if b > a:
                    np.maximum(score[a:b], s, out=score[a:b])
    return score


def _score_file(args: tuple) -> np.ndarray:
    data, name, config = args
    _, values, event_ns = read_series(data / name)
    return engine_scores(event_ns, values, config, service=Path(name).stem)


def score_files(data: Path, names: list[str], config: dict, jobs: int = 1) -> list[np.ndarray]:
    """Per-file scores; files in ``jobs`` processes (each file is its own engine: the results do not depend on it)."""
    work = [(data, name, config) for name in names]
    if jobs <= 1:
        return [_score_file(w) for w in work]
    with ProcessPoolExecutor(jobs) as pool:
        return list(pool.map(_score_file, work))


def write_result(path: Path, ts: list[str], values: np.ndarray, score: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["timestamp", "value", "anomaly_score"])
        for t, v, s in zip(ts, values, score):
            w.writerow([t, repr(float(v)), f"{float(s):.6f}"])


def load_scorer(path: Path):
    spec = importlib.util.spec_from_file_location("nab_score", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["nab_score"] = mod
    spec.loader.exec_module(mod)
    return mod


def grid_configs(grid: dict = CV_GRID) -> list[dict]:
    """The shipped defaults ({}) and every combination of ``grid`` (with :data:`CV_FIXED`)."""
    keys = sorted(grid)
    return [{}] + [{**CV_FIXED, **dict(zip(keys, combo))} for combo in itertools.product(*(grid[k] for k in keys))]


def cross_validate(ns, corpus, profiles, candidates: dict[str, list[np.ndarray]]) -> dict:
    """Leave-one-category-out over the corpus' folders, per profile.

    candidates: name -> per-file scores (corpus file order). For each folder the candidate and its
    threshold with the best normalised score on the *other* folders are applied to the folder's files;
    the pooled held-out scores are then scored (the scorer's fixed-threshold mode, each folder at its
    own threshold: scores are shifted by it so that "score >= threshold" is "shifted >= 0").
    """
    files = corpus.files
    folders = sorted({f.name.split("/")[0] for f in files})
    report: dict = {"profiles": {}, "picks": {}}
    for prof in profiles:
        pooled: list = [None] * len(files)
        for folder in folders:
            test = [i for i, f in enumerate(files) if f.name.split("/")[0] == folder]
            train = [i for i in range(len(files)) if i not in test]
            sub = ns.Corpus([files[i] for i in train], corpus.probation_percent).build()
            null, perfect = ns.null_score(sub, prof), ns.perfect_score(sub, prof)
            best = None
            for name, scores in candidates.items():
                thr, raw = ns.sweep(sub, ns.scorable_scores(sub, [scores[i] for i in train]), prof).best()
                norm = ns.normalize(raw, null, perfect)
                if best is None or norm > best[0] + 1e-9:
                    best = (norm, name, thr)
            norm, name, thr = best
            report["picks"].setdefault(prof.name, {})[folder] = {"candidate": name, "threshold": thr,
                                                                  "train_score": round(norm, 2)}
            for i in test:
                pooled[i] = candidates[name][i] - thr
        res = ns.score_detector(corpus, pooled, [prof], threshold=0.0)
        report["profiles"][prof.name] = res["profiles"][prof.name]
    return report


def _score_config(args: tuple) -> tuple[str, list[np.ndarray]]:
    data, names, config = args
    return json.dumps(config, sort_keys=True), score_files(data, names, config)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, type=Path, help="NAB data dir (<folder>/<file>.csv)")
    ap.add_argument("--labels", required=True, type=Path, help="combined_windows.json")
    ap.add_argument("--out", required=True, type=Path, help="results dir to write")
    ap.add_argument("--profiles", type=Path, help="profiles.json (default: next to the labels' folder)")
    ap.add_argument("--scorer", type=Path, default=REPO.parent / "shared" / "tools" / "nab_score.py")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=YAML",
                    help="anomaly processor setting for the OUT run (repeatable), e.g. --set spot_q=1e-3")
    ap.add_argument("--cv", action="store_true", help="also run CV_GRID and report leave-one-folder-out CV")
    ap.add_argument("--jobs", type=int, default=1, help="processes (files of the OUT run, configurations of --cv)")
    ap.add_argument("--json", help="write the full score report here")
    args = ap.parse_args(argv)

    import yaml

    config = {k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in args.set)}
    if not args.scorer.exists():
        print(f"scorer {args.scorer} not found (--scorer PATH)", file=sys.stderr)
        return 2
    ns = load_scorer(args.scorer)
    corpus = ns.load_corpus(str(args.data), str(args.labels))
    profiles = ns.load_profiles(str(args.profiles or args.labels.parent.parent / "profiles.json"))
    names = [f.name for f in corpus.files]
    if not names:
        print(f"no files named in {args.labels}", file=sys.stderr)
        return 2

    t0 = time.perf_counter()
    scores = score_files(args.data, names, config, args.jobs)
    points = 0
    for name, s in zip(names, scores):
        ts, values, _ = read_series(args.data / name)
        points += len(values)
        write_result(args.out / name, ts, values, s)
    print(f"scored {len(names)} files, {points} points through patterns -> anomaly in "
          f"{time.perf_counter() - t0:.1f} s (incl. CSV I/O); config {json.dumps(config) or '{}'}")
    res = ns.score_detector(corpus, scores, profiles)
    report: dict = {"config": config, "all_files": res}
    print(ns.format_report(res))

    if args.cv:
        # the OUT run's scores are reused if its configuration is a candidate
        candidates_all = grid_configs()
        configs = [c for c in candidates_all if c != config]
        t0 = time.perf_counter()
        with ProcessPoolExecutor(max(1, args.jobs)) as pool:
            runs = {json.dumps(config, sort_keys=True): scores} if config in candidates_all else {}
            runs.update(pool.map(_score_config, [(args.data, names, c) for c in configs]))
        print(f"\nCV: {len(runs)} configurations ({len(configs)} run here) in {time.perf_counter() - t0:.0f} s")
        candidates = runs
        in_sample = {}
        for name, cand in candidates.items():
            res = ns.score_detector(corpus, cand, profiles)
            in_sample[name] = {p: e["normalized_score"] for p, e in res["profiles"].items()}
        cv = cross_validate(ns, corpus, profiles, candidates)
        report["cv"] = cv
        report["in_sample"] = in_sample
        print("\n== leave-one-folder-out CV (configuration and threshold chosen on the other folders)")
        print(f"{'profile':<20} {'CV NAB':>7} {'best on all files (in-sample)':>30} {'win_P':>6} {'win_R':>6}")
        for p in profiles:
            e = cv["profiles"][p.name]
            top = max(in_sample.values(), key=lambda d: d[p.name])[p.name]
            wm = e["window_metrics"]
            print(f"{p.name:<20} {e['normalized_score']:>7.2f} {top:>30.2f} {wm['precision']:>6.2f} "
                  f"{wm['recall']:>6.2f}")
        for p in profiles:
            for folder, pick in cv["picks"][p.name].items():
                print(f"  {p.name:<20} held out {folder:<22} chose {pick['candidate']} thr {pick['threshold']:.4g} "
                      f"(train {pick['train_score']})")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
