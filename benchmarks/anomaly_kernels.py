#!/usr/bin/env python3
"""Throughput of the anomaly detector kernels, in series-points per second.

    python benchmarks/anomaly_kernels.py --series 10000 --steps 360

A "series-point" is one (time step, series) cell. Each kernel runs over a
float64[steps, series] matrix of count-like data (Poisson, Anscombe-transformed
where the processor does so) after a warm-up call that compiles it. Prints the
median of --repeats runs per kernel and for the processor's per-resolution
chain (baseline + SPOT + CUSUM + presence on counts).

The trend (creep) kernel runs on a tenth of the series (the latency series), from a
fresh state (its ring fills during the first 180 steps), in one call of --steps steps
and, on the next line, in one call per step (as the engine calls it: the wrapper's
fixed cost per call is included). With ``--trend-profile`` it is first fed 26 h
(untimed) so that every series' hour-of-day profile is learnt and the ring is full,
and the timed runs continue from a copy of that state (the persisted arrays, as after
a restart) with the seasonal adjustment active.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("NUMBA_CACHE_DIR", str(REPO / ".numba_cache"))

from otelproc.kernels import detectors as det  # noqa: E402
from otelproc.kernels import trend as tr  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--series", type=int, default=10_000)
    ap.add_argument("--steps", type=int, default=360)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--trend-profile", action="store_true",
                    help="time the trend kernel after 26 h of untimed warm-up (hour-of-day profile learnt)")
    args = ap.parse_args(argv)
    S, T = args.series, args.steps
    rng = np.random.default_rng(0)
    counts = rng.poisson(20, (T, S)).astype(np.float64)
    x = 2.0 * np.sqrt(counts + 0.375)
    slot = (np.arange(T) // 60) % 24
    lat = 50.0 * np.exp(rng.normal(0, 0.1, (T, S)))

    def k_baseline():
        det.robust_baseline(x, slot, det.BaselineState(S, 24))

    z = det.robust_baseline(x, slot, det.BaselineState(S, 24))[2]
    az = np.abs(z)

    def k_spot():
        det.spot_threshold(az, det.SpotState(S, 64))

    def k_cusum():
        det.cusum(np.nan_to_num(z), np.zeros(S), np.zeros(S))

    def k_presence():
        det.presence(counts, 0, det.PresenceState(S))

    def k_error_ratio():
        det.error_ratio(counts * 0.01, counts, np.zeros(S), np.zeros(S), np.zeros(S, dtype=np.int64))

    def k_chain():
        st = det.BaselineState(S, 24)
        _, _, zz = det.robust_baseline(x, slot, st)
        det.spot_threshold(np.abs(zz), det.SpotState(S, 64))
        det.cusum(np.nan_to_num(zz), np.zeros(S), np.zeros(S))
        det.presence(counts, 0, det.PresenceState(S))

    ts_series = max(1, S // 10)

    log_lat = np.log(lat[:, :ts_series])
    weight = rng.poisson(180, (T, ts_series)).astype(np.float64)  # ~3 lines/s per 1-minute bucket

    trend_start, trend_label, learnt = 0, f"trend W=60+120 ({ts_series} series)", None
    if args.trend_profile:
        # 26 h of the same kind of data first (own generator: the other kernels' inputs do not change)
        trend_start = 26 * 60
        wrng = np.random.default_rng(1)
        warm_lat = np.log(50.0) + wrng.normal(0, 0.1, (trend_start, ts_series))
        warm_weight = wrng.poisson(180, (trend_start, ts_series)).astype(np.float64)
        learnt = tr.TrendState(ts_series, 60)
        tr.trend(warm_lat, warm_weight, 0, learnt, steps_per_hour=60.0)
        if not (learnt.prof_days > 0).all():
            raise SystemExit("trend warm-up did not learn a profile for every series")
        trend_label = f"trend, profile on ({ts_series})"

    def new_trend_state() -> tr.TrendState:
        """A fresh state, or with --trend-profile the learnt one restarted from its persisted arrays."""
        st = tr.TrendState(ts_series, 60)
        if learnt is not None:
            for f in tr.TrendState.FIELDS:
                setattr(st, f, getattr(learnt, f).copy())
        return st

    # the state each run starts from, made before the timing: one per run of the two trend lines
    trend_states = [new_trend_state() for _ in range(2 * (args.repeats + 1))]
    step_rows = [(log_lat[t:t + 1].copy(), weight[t:t + 1].copy()) for t in range(T)]

    def k_trend():
        tr.trend(log_lat, weight, trend_start, trend_states.pop(), steps_per_hour=60.0)

    def k_trend_steps():
        # as the engine calls it: one call per closed 1-minute bucket
        st = trend_states.pop()
        for t, (lat_t, weight_t) in enumerate(step_rows):
            tr.trend(lat_t, weight_t, trend_start + t, st, steps_per_hour=60.0)

    print(f"{S} series x {T} steps = {S * T:,} series-points; median of {args.repeats} runs after warm-up")
    for name, fn, pts in (("robust_baseline", k_baseline, S * T), ("spot_threshold", k_spot, S * T),
                          ("cusum", k_cusum, S * T), ("presence", k_presence, S * T),
                          ("error_ratio", k_error_ratio, S * T), ("count chain (4 kernels)", k_chain, S * T),
                          (trend_label, k_trend, ts_series * T),
                          ("  same, 1 step per call", k_trend_steps, ts_series * T)):
        fn()
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        dt = float(np.median(times))
        print(f"{name:<28} {dt * 1e3:9.1f} ms  {pts / dt / 1e6:8.2f} M series-points/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
