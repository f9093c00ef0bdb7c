#!/usr/bin/env python3
"""Run otelproc's streaming detectors over a NAB-layout directory and score them.

    python benchmarks/nab_eval.py --data ../shared/data/nab/data \
        --labels ../shared/data/nab/labels/combined_windows.json --out /tmp/nab_results

Writes ``OUT/<folder>/<file>.csv`` (timestamp,value,anomaly_score) for every CSV
under DATA, then scores them with ``nab_score.py`` (``--scorer``; by default
../shared/tools/nab_score.py) and the profiles next to the labels
(``--profiles``), printing the standard / low-FP / low-FN scores and window F1.

The detector is causal (a row's score uses that row and earlier rows only) and
uses the same parameters for every file (``DETECTOR_PARAMS``); it never reads
the labels. It is the same kernel code the ``anomaly`` processor runs:
robust seasonal baseline -> DSPOT tail probability (time scales in
``scales``), plus a CUSUM change-point term, max-combined with the DSPOT score of the
sustained error of a seasonal (daily / weekly, detected) Holt-Winters forecast; a point whose |z| is no larger
than what the same time of day showed on earlier days (``recurrence``: a
daily job, not an anomaly) has its score damped; a 2-hour window whose mean
|z| is a record (twice anything seen before: ``multiscale.window_evidence`` +
``record_high``) scores too.
"""
from __future__ import annotations

import argparse
import csv
import importlib.util
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("NUMBA_CACHE_DIR", str(REPO / ".numba_cache"))

from otelproc.kernels.detectors import (BaselineState, RecurrenceState, SpotState, cusum, recurrence,  # noqa: E402
                                        robust_baseline, spot_threshold)
from otelproc.kernels.forecast import ForecastState, detect_period, seasonal_forecast  # noqa: E402
from otelproc.kernels.multiscale import RecordState, WindowEvidenceState, record_high, window_evidence  # noqa: E402

# One configuration for every file (NAB rule: no per-file tuning).
DETECTOR_PARAMS = dict(
    scales=((0.02, 0.005),),  # (alpha, beta) of the robust baseline(s); several = max over time scales
    huber_c=4.0,              # residuals beyond 4 scales are clipped before updating the baseline
    gamma=0.05,               # seasonal (hour-of-day) offset learning rate
    season_warmup=300,        # points before the seasonal offsets are used
    warmup=30,                # points before z-scores are emitted
    relevel_after=5,          # 5 consecutive same-side outliers = new level (accepted)
    spot_init=2.5,            # SPOT peaks are |z| excesses over 2.5
    spot_q=1e-4,              # SPOT tail probability of the threshold; score 0.5 at z_q
    cusum_k=1.0,
    cusum_h=12.0,
    cusum_score=0.0,          # CUSUM alarms did not help on NAB (kept for experiments)
    # after a row at or above this score, later rows are damped (one alarm per event):
    # NAB charges every alerting row outside a window
    suppress_level=0.6,
    suppress_rows=0.1,        # damping lasts 10 % of the rows seen so far ...
    suppress_cap=1000,        # ... at most 1000 rows
    suppress_factor=0.5,
    novelty_margin=0.02,      # a value 2 % of the range outside everything seen before ...
    novelty_warmup=750,       # ... after 750 rows (NAB's longest probation) ...
    novelty_score=0.8,        # ... scores 0.8
    # a spike no larger than 1/0.7 x the largest |z| seen at the same time of day (+-30 min) on earlier
    # days (memory decays by 0.8 per day) recurs daily (backup, cron job): its score is damped
    recur_period_s=86400,
    recur_tol_s=1800,
    recur_decay=0.8,
    recur_ratio=0.7,
    recur_factor=0.5,
    # seasonal forecaster (round 4): a period of one day or one week is looked for in the first 750 rows
    # (lag correlation >= 0.3, at least 2 cycles seen); with one, a robust Holt-Winters model forecasts
    # every row and the EW mean of its z-scores over ~48 rows, in units of its own typical size, is a
    # second |z| -> SPOT -> 0-1 score (the SPOT tail model starts after the 750 learning rows, so the
    # model's start-up transient is not in it), max-combined with the one above (no weight). Catches a
    # day that has the wrong shape for its weekday (holidays) and long modest deviations. 0 rows = off.
    forecast_learn=750,
    forecast_periods_s=(86400, 7 * 86400),
    forecast_min_corr=0.3,
    forecast_alpha=0.01,      # level memory ~100 rows: a day-long deviation is not absorbed before it is seen
    forecast_gamma=0.2,       # seasonal offset weight per visit of a phase step
    forecast_acc_rows=48,     # time scale (rows) of the accumulated forecast error
    # multi-scale evidence (kernels/multiscale): over the last ms_window rows (2 h at 5 min), the mean |z|
    # (clipped at ms_clip), standardised to N(0, 1) for independent N(0, 1) residuals ("spread": the
    # residuals became larger -- a burst of spikes, a variance change -- although no single point is
    # extreme); a record of it, more than (1 + ms_record_margin) x the largest value of the earlier,
    # non-overlapping windows (after novelty_warmup values), scores ms_weight. ms_level adds the same for
    # |sqrt(k) x mean z| (drift / shift): it found no new window on NAB and added one FP, so off.
    # ms_window=0 disables the term.
    ms_window=24,
    ms_clip=4.0,
    ms_record_margin=1.0,
    ms_weight=0.75,
    ms_level=False,
)


def read_series(path: Path) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """timestamps (as written), values float64[n], hour-of-day int64[n], seconds since the epoch int64[n]."""
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
    t64 = np.array([t.strip().replace(" ", "T") for t in ts], dtype="datetime64[s]")
    hour = ((t64 - t64.astype("datetime64[D]")).astype(np.int64) // 3600).astype(np.int64)
    return ts, np.asarray(vals, dtype=np.float64), hour, t64.astype(np.int64)


def phase_slots(seconds: np.ndarray, period_s: int, warmup: int) -> tuple[np.ndarray, int]:
    """Phase slot of every row within ``period_s`` at the sampling interval of the first ``warmup`` rows
    (causal): (slot int64[n], number of slots). One slot when the period is under 4 samples."""
    step = float(np.median(np.diff(seconds[: warmup + 1]))) if len(seconds) > 1 else 0.0
    if step <= 0 or period_s / step < 4:
        return np.zeros(len(seconds), dtype=np.int64), 1
    n_slots = int(round(period_s / step))
    return ((seconds % period_s) // step).astype(np.int64) % n_slots, n_slots


def score_series(values: np.ndarray, hour: np.ndarray, p: dict = DETECTOR_PARAMS,
                 seconds: np.ndarray | None = None) -> np.ndarray:
    """Anomaly score in [0, 1] per row (causal). ``seconds`` (epoch seconds per row) enables the
    periodic-recurrence damping."""
    n = len(values)
    x = values.reshape(n, 1).copy()
    # scale-free input: divide by a robust spread of the data seen in warm-up only (causal)
    w = min(n, p["warmup"])
    spread = np.nanmedian(np.abs(x[:w] - np.nanmedian(x[:w]))) * 1.4826
    rng = np.nanmax(x[:w]) - np.nanmin(x[:w])
    unit = spread if spread > 0 else (rng if rng > 0 else max(1.0, abs(float(np.nanmedian(x[:w])))))
    x = x / unit
    combined = np.zeros(n)
    for alpha, beta in p["scales"]:
        st = BaselineState(1, 24)
        _, _, z = robust_baseline(x, hour, st, alpha=alpha, gamma=p["gamma"], beta=beta, huber_c=p["huber_c"],
                                  min_scale=0.05, warmup=p["warmup"], season_warmup=p["season_warmup"],
                                  relevel_after=p["relevel_after"])
        a = np.abs(z)
        sp = SpotState(1, 128)
        _, tail = spot_threshold(a, sp, init_threshold=p["spot_init"], q=p["spot_q"])
        with np.errstate(divide="ignore"):
            s = np.clip(np.log(np.maximum(tail[:, 0], 1e-300)) / np.log(p["spot_q"]) * 0.5, 0, 1)
        s = np.nan_to_num(s)
        if seconds is not None and p["recur_factor"] < 1.0:
            slot, n_slots = phase_slots(seconds, p["recur_period_s"], p["warmup"])
            if n_slots > 1:
                step = p["recur_period_s"] / n_slots
                tol = min(n_slots - 1, int(round(p["recur_tol_s"] / step)))
                mem = recurrence(np.nan_to_num(a), slot, RecurrenceState(1, n_slots), tol=tol,
                                 decay=p["recur_decay"])[:, 0]
                recurring = (a[:, 0] > 0) & (mem >= p["recur_ratio"] * a[:, 0])
                s = np.where(recurring, s * p["recur_factor"], s)
        combined = np.maximum(combined, s)
        if p["ms_window"] > 0:
            level, spread = window_evidence(z, WindowEvidenceState(1, p["ms_window"]), clip=p["ms_clip"])
            for stat_k in ([spread, np.abs(level)] if p["ms_level"] else [spread]):
                record = record_high(stat_k, RecordState(1, delay=p["ms_window"]), margin=p["ms_record_margin"],
                                     warmup=p["novelty_warmup"])
                combined = np.maximum(combined, p["ms_weight"] * np.nan_to_num(record[:, 0]))
        gu, gd = np.zeros(1), np.zeros(1)
        stat, alarm = cusum(np.nan_to_num(z), gu, gd, k=p["cusum_k"], h=p["cusum_h"])
        combined = np.maximum(combined, p["cusum_score"] * (alarm[:, 0] != 0))
    if seconds is not None and p["forecast_learn"] > 0:
        combined = np.maximum(combined, forecast_score(values, seconds, p))
    if p["novelty_margin"] >= 0:
        combined = np.maximum(combined, p["novelty_score"] * range_novelty(values, p["novelty_warmup"],
                                                                           p["novelty_margin"]))
    # one alarm per event: NAB charges every alerting row outside a window
    out = np.zeros(n)
    quiet_until = -1
    for i in range(n):
        sc = combined[i]
        if i < quiet_until:
            sc *= p["suppress_factor"]
        elif sc >= p["suppress_level"]:
            quiet_until = i + int(min(p["suppress_cap"], max(10, p["suppress_rows"] * i)))
        out[i] = sc
    return out


def forecast_score(values: np.ndarray, seconds: np.ndarray, p: dict = DETECTOR_PARAMS) -> np.ndarray:
    """0-1 score of a sustained seasonal-forecast error per row (causal): 0 for the first
    ``forecast_learn`` rows (they choose the period, ``detect_period``, and fit the model) and for a series
    without a period; after that the tail probability (DSPOT, fitted from row ``forecast_learn`` on) of
    |sustained deviation| of ``seasonal_forecast``, mapped to 0-1 like the main score."""
    n = len(values)
    learn = min(n, int(p["forecast_learn"]))
    out = np.zeros(n)
    if learn < 8:
        return out
    step_s = float(np.median(np.diff(seconds[:learn])))
    if step_s <= 0:
        return out
    cands = np.array(sorted({int(round(ps / step_s)) for ps in p["forecast_periods_s"]}), dtype=np.int64)
    x = values.reshape(n, 1).astype(np.float64)
    period, _ = detect_period(x[:learn], cands, min_corr=p["forecast_min_corr"])
    if period[0] < 2:
        return out
    step = ((seconds - seconds[0]) + step_s / 2) // step_s
    st = ForecastState(period)
    _, _, sustained = seasonal_forecast(x, step.astype(np.int64), st, alpha=p["forecast_alpha"],
                                        gamma=p["forecast_gamma"], acc_alpha=1.0 / p["forecast_acc_rows"])
    a = np.abs(sustained)
    a[:learn] = np.nan        # the tail model starts after the learning rows (no start-up transient in it)
    _, tail = spot_threshold(a, SpotState(1, 128), init_threshold=p["spot_init"], q=p["spot_q"])
    with np.errstate(divide="ignore"):
        s = np.clip(np.log(np.maximum(tail[:, 0], 1e-300)) / np.log(p["spot_q"]) * 0.5, 0, 1)
    out[learn:] = np.nan_to_num(s[learn:])
    return out


def range_novelty(values: np.ndarray, warmup: int, margin: float) -> np.ndarray:
    """1.0 where a value leaves the range of everything seen before by more than ``margin`` x that range
    (causal; 0 during the first ``warmup`` rows)."""
    n = len(values)
    v = np.where(np.isnan(values), np.nan, values)
    hi = np.fmax.accumulate(np.concatenate([[-np.inf], v[:-1]]))
    lo = np.fmin.accumulate(np.concatenate([[np.inf], v[:-1]]))
    span = hi - lo
    with np.errstate(invalid="ignore"):
        out = ((v > hi + margin * span) | (v < lo - margin * span)).astype(np.float64)
    out[: min(n, warmup)] = 0.0
    return out


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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, type=Path, help="NAB data dir (<folder>/<file>.csv)")
    ap.add_argument("--labels", required=True, type=Path, help="combined_windows.json")
    ap.add_argument("--out", required=True, type=Path, help="results dir to write")
    ap.add_argument("--profiles", type=Path, help="profiles.json (default: next to the labels' folder)")
    ap.add_argument("--scorer", type=Path, default=REPO.parent / "shared" / "tools" / "nab_score.py")
    ap.add_argument("--json", help="write the full score report here")
    args = ap.parse_args(argv)

    files = sorted(args.data.rglob("*.csv"))
    if not files:
        print(f"no CSV files under {args.data}", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    points = 0
    for f in files:
        ts, values, hour, seconds = read_series(f)
        score = score_series(values, hour, seconds=seconds)
        points += len(values)
        write_result(args.out / f.relative_to(args.data), ts, values, score)
    dt = time.perf_counter() - t0
    print(f"scored {len(files)} files, {points} points in {dt:.2f} s (incl. CSV I/O)")

    profiles = args.profiles or args.labels.parent.parent / "profiles.json"
    if not args.scorer.exists():
        print(f"scorer {args.scorer} not found; results written to {args.out}", file=sys.stderr)
        return 0
    ns = load_scorer(args.scorer)
    corpus = ns.load_corpus(str(args.data), str(args.labels))
    res = ns.score_detector(corpus, ns.load_results(str(args.out), corpus), ns.load_profiles(str(profiles)))
    print(ns.format_report(res))
    if args.json:
        import json

        Path(args.json).write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
