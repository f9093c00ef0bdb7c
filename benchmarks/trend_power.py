#!/usr/bin/env python3
"""Power and false-alarm rate of the creep (trend) kernel on synthetic per-minute buckets.

    python benchmarks/trend_power.py --series 400

The kernel alone (``otelproc.kernels.trend.trend``), no pipeline: per 1-minute bucket a Poisson number
of log-normal latencies (sigma 0.15, as ``otelproc.simulate``) is drawn, reduced to the count-weighted
trimmed mean of log(ms) the engine feeds the kernel (``aggregate_cells``' ``log_tmean``, 10 % trim), and
all series are tested at once. Scenarios:

* ``creep``    2 %/h from a start 75-90 min into the series (as in ``benchmarks/incidents.py``: the
               incident starts at 50-60 % of a 2.5 h run, so 75-90 min of history is all the reference
               there is), per rate in lines/s; reports the detection-delay distribution (first flag's
               bucket end - creep start) and the share detected within 60 min.
* ``mixture``  the incidents benchmark's mix: the creeping service's request rate (14, 4, 3, 5 or
               3 lines/s) times its daily factor 1 + 0.5 sin(...) at a random hour.
* ``null``     flat latency, request rate with the same daily cycle, 12 h per series: false trends
               per series-hour (flags counted as findings, i.e. at most one per 15 min cooldown).
* ``--calibrate 3.75,4,4.25``: per ``min_t``, false trends per series-hour on 2,000 x 12 h of flat null
               series and the within-60-min share of creeps, with a bucket's trimmed mean drawn from its
               normal approximation (fast; see ``_approx_buckets``).
* ``seasonal`` 4 days of 1-minute buckets per series: latency following the load (+-``--season-amp``
               over the day, peaking with traffic): false trends per series-hour on day 1 (no profile
               yet) and on days 2-4; flat latency with and without the hour-of-day adjustment (its cost
               in false trends); a 2 %/h creep starting on day 3 on the cycle, and on flat latency with
               and without the adjustment (its cost in delay, on identical data).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
from numba import njit

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("NUMBA_CACHE_DIR", str(REPO / ".numba_cache"))

from otelproc.kernels import trend as trk  # noqa: E402

SIGMA = 0.15
TRIM = 0.1
COOLDOWN_MIN = 15
BENCH_RATES = (14.0, 4.0, 3.0, 5.0, 3.0)  # otelproc.simulate request lines per service


@njit(cache=True)
def _trimmed_log_means(level, n, sigma, trim, seed):
    """level/n float64[T, S] -> trimmed mean of n draws of N(level, sigma) per cell (NaN where n = 0)."""
    np.random.seed(seed)
    T, S = level.shape
    out = np.full((T, S), np.nan)
    for t in range(T):
        for s in range(S):
            k = int(n[t, s])
            if k == 0:
                continue
            x = np.sort(level[t, s] + sigma * np.random.standard_normal(k))
            cut = int(trim * k)
            out[t, s] = x[cut:k - cut].mean()
    return out


def daily_factor(hour: np.ndarray, amplitude: float = 0.5) -> np.ndarray:
    """The simulator's load cycle: 1 + a sin(2 pi (hour - 9) / 24)."""
    return 1.0 + amplitude * np.sin(2 * np.pi * (hour - 9.0) / 24.0)


def buckets(rng: np.random.Generator, rate: np.ndarray, log_level: np.ndarray, seed: int, trim: float = TRIM
            ) -> tuple:
    """(loc, weight) float64[T, S] for lines/s ``rate`` and log-median ``log_level`` per minute (both [T, S])."""
    n = rng.poisson(rate * 60.0).astype(np.float64)
    loc = _trimmed_log_means(log_level, n, SIGMA, trim, seed)
    return loc, n


def run_kernel(loc: np.ndarray, n: np.ndarray, step0: int = 0, **kw) -> np.ndarray:
    """int8[T, S] flags of the kernel with the engine's defaults (1 h window, 2 h reference, 1-minute steps)."""
    st = trk.TrendState(loc.shape[1], 60, 120)
    out = trk.trend(loc, n, step0, st, steps_per_hour=60.0, **kw)
    return out["flag"]


def findings(flag: np.ndarray) -> np.ndarray:
    """Per series, the number of findings the engine would emit (one per 15-min cooldown)."""
    T, S = flag.shape
    count = np.zeros(S, dtype=np.int64)
    for s in range(S):
        last = -10**9
        for t in np.flatnonzero(flag[:, s]):
            if t - last >= COOLDOWN_MIN:
                count[s] += 1
                last = t
    return count


def creep_delays(rng, rate_fn, S: int, seed: int, hist_lo: float = 75, hist_hi: float = 90, after: int = 100,
                 **kw) -> np.ndarray:
    """Delays (minutes, inf = not within ``after``) of a 2 %/h creep starting at a uniform time in
    [hist_lo, hist_hi) minutes. ``rate_fn(hour[T, S])`` gives lines/s."""
    start = rng.uniform(hist_lo, hist_hi, S)
    T = int(hist_hi) + after
    minutes = np.arange(T)[:, None] + 0.5
    hour = (rng.uniform(0, 24, S)[None, :] + minutes / 60.0) % 24
    rate = rate_fn(hour)
    level = np.log(50.0) + np.log1p(0.02) * np.clip(minutes - start[None, :], 0, None) / 60.0
    loc, n = buckets(rng, rate, level, seed)
    flag = run_kernel(loc, n, **kw)
    delays = np.full(S, np.inf)
    for s in range(S):
        k = np.flatnonzero(flag[:, s])
        if len(k):
            delays[s] = k[0] + 1 - start[s]  # bucket end - start
    delays[delays < 0] = -1.0  # flagged before the creep: a false trend
    return delays


def summarize(name: str, d: np.ndarray) -> str:
    ok = d[np.isfinite(d) & (d >= 0)]
    early = int((d < 0).sum())
    within = float(np.mean((d >= 0) & (d <= 60)))
    q = np.percentile(ok, [50, 90, 99]) if len(ok) else [np.nan] * 3
    return (f"{name:<34} within 60 min {within:6.3f}  delay p50 {q[0]:5.1f}  p90 {q[1]:5.1f}  p99 {q[2]:5.1f}  "
            f"max {ok.max() if len(ok) else np.nan:5.1f}  missed {int(np.isinf(d).sum())}  early {early}")


def _approx_buckets(rng: np.random.Generator, rate: np.ndarray, log_level: np.ndarray) -> tuple:
    """Like :func:`buckets`, with the 10 % trimmed mean of n normals drawn as N(level, sigma² / (0.94 n))
    (its efficiency at the normal): fast enough for tens of thousands of null series-hours."""
    n = rng.poisson(rate * 60.0).astype(np.float64)
    z = rng.standard_normal(n.shape)
    loc = np.where(n > 0, log_level + SIGMA * z / np.sqrt(0.94 * np.maximum(n, 1.0)), np.nan)
    return loc, n


def calibrate(thresholds: list[float], S: int = 2000, hours: float = 12.0) -> None:
    """False trends per series-hour (flat latency, the simulator's rates and load cycle) and the share of
    2 %/h creeps found within 60 min, per ``min_t``, on approximate buckets (:func:`_approx_buckets`)."""
    rng = np.random.default_rng(11)
    T = int(hours * 60)
    base = np.asarray(BENCH_RATES)[rng.integers(0, len(BENCH_RATES), S)]
    hour = (rng.uniform(0, 24, S)[None, :] + (np.arange(T)[:, None] + 0.5) / 60.0) % 24
    loc, n = _approx_buckets(rng, base[None, :] * daily_factor(hour), np.full((T, S), np.log(50.0)))
    series_hours = S * (T - 60) / 60.0

    def delays(rate_fn, S2, min_t, seed):
        r = np.random.default_rng(seed)
        start = r.uniform(75, 90, S2)
        minutes = np.arange(190)[:, None] + 0.5
        hr = (r.uniform(0, 24, S2)[None, :] + minutes / 60) % 24
        lv = np.log(50.0) + np.log1p(0.02) * np.clip(minutes - start[None, :], 0, None) / 60.0
        lc, nn = _approx_buckets(r, rate_fn(hr), lv)
        fl = run_kernel(lc, nn, min_t=min_t)
        return np.array([np.flatnonzero(fl[:, s])[0] + 1 - start[s] if fl[:, s].any() else np.inf
                         for s in range(S2)])

    mix = np.asarray(BENCH_RATES)[np.random.default_rng(9).integers(0, len(BENCH_RATES), 3000)]
    for c in thresholds:
        f = findings(run_kernel(loc, n, min_t=c)).sum()
        within = [np.mean((d >= 0) & (d <= 60)) for d in
                  [delays(lambda h, r=r: np.full(h.shape, r), 2000, c, 5) for r in (1.5, 2.0, 3.0)]
                  + [delays(lambda h: mix[None, :] * daily_factor(h), 3000, c, 6)]]
        print(f"min_t {c:g}: {f} false trends in {series_hours:.0f} series-hours = {f / series_hours:.2e} per "
              f"series-hour; creep within 60 min at 1.5 / 2 / 3 lines/s {within[0]:.3f} / {within[1]:.3f} / "
              f"{within[2]:.3f}, incidents.py mix {within[3]:.4f}", flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--series", type=int, default=400, help="series per scenario")
    ap.add_argument("--null-hours", type=float, default=12.0)
    ap.add_argument("--season-amp", type=float, default=0.10)
    ap.add_argument("--min-t", type=float, default=None, help="override the kernel's min_t")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip", default="", help="comma list of scenarios to skip")
    ap.add_argument("--calibrate", default="", help="comma list of min_t values: false-trend rate and power of each "
                    "(approximate buckets, 22,000 null series-hours; runs instead of the scenarios)")
    args = ap.parse_args(argv)
    if args.calibrate:
        calibrate([float(x) for x in args.calibrate.split(",")])
        return 0
    kw = {} if args.min_t is None else {"min_t": args.min_t}
    skip = set(args.skip.split(","))
    rng = np.random.default_rng(args.seed)
    S = args.series
    tic = time.perf_counter()
    if "creep" not in skip:
        for r in (1.5, 2.0, 3.0, 5.0):
            d = creep_delays(rng, lambda h, r=r: np.full(h.shape, r), S, args.seed + int(10 * r), **kw)
            print(summarize(f"creep 2 %/h at {r:g} lines/s", d))
    if "mixture" not in skip:
        svc = rng.integers(0, len(BENCH_RATES), S)
        base = np.asarray(BENCH_RATES)[svc]
        d = creep_delays(rng, lambda h: base[None, :] * daily_factor(h), S, args.seed + 7, **kw)
        print(summarize("creep 2 %/h, incidents.py mix", d))
        slow = (base <= 3.0)
        print(f"{'':<34} of which 3-lines/s services: within 60 min {np.mean((d[slow] >= 0) & (d[slow] <= 60)):.3f}")
    if "null" not in skip:
        T = int(args.null_hours * 60)
        svc = rng.integers(0, len(BENCH_RATES), S)
        base = np.asarray(BENCH_RATES)[svc]
        h0 = rng.uniform(0, 24, S)
        hour = (h0[None, :] + (np.arange(T)[:, None] + 0.5) / 60.0) % 24
        loc, n = buckets(rng, base[None, :] * daily_factor(hour), np.full((T, S), np.log(50.0)), args.seed + 3)
        f = findings(run_kernel(loc, n, **kw))
        active_h = S * (T - 60) / 60.0  # the first hour has no testable ramp
        print(f"null (flat latency, daily load cycle): {int(f.sum())} false trends in {active_h:.0f} series-hours "
              f"= {f.sum() / active_h:.2e} per series-hour")
    if "seasonal" not in skip:
        days = 4
        T = days * 24 * 60
        Sx = max(50, S // 4)
        svc = rng.integers(0, len(BENCH_RATES), Sx)
        base = np.asarray(BENCH_RATES)[svc]
        hour = ((np.arange(T)[:, None] + 0.5) / 60.0) % 24 * np.ones((1, Sx))
        rate = base[None, :] * daily_factor(hour)
        cycle = np.log1p(args.season_amp * np.sin(2 * np.pi * (hour - 9.0) / 24.0))
        loc, n = buckets(rng, rate, np.log(50.0) + cycle, args.seed + 5)
        flag = run_kernel(loc, n, **kw)
        d1 = findings(flag[:1440]).sum()
        d2 = findings(flag[1440:]).sum()
        print(f"seasonal latency +-{100 * args.season_amp:g} % with load: false trends day 1 {d1} "
              f"({d1 / (Sx * 23):.2e}/series-h, no profile yet), days 2-{days} {d2} "
              f"({d2 / (Sx * 24 * (days - 1)):.2e}/series-h)")
        # flat latency under the same load cycle: what the adjustment costs in false trends
        loc0, n0 = buckets(rng, rate, np.full((T, Sx), np.log(50.0)), args.seed + 8)
        for season in (True, False):
            f0 = findings(run_kernel(loc0, n0, season=season, **kw)[1440:]).sum()
            print(f"flat latency, days 2-{days}, {'adjusted' if season else 'not adjusted'}: {f0} false trends "
                  f"({f0 / (Sx * 24 * (days - 1)):.2e}/series-h)")
        # a 2 %/h creep starting on day 3 at a random hour: on the cycle, and on flat latency with the
        # profile subtracted or not (identical data: the price of the adjustment is the profile's own noise)
        start = 2 * 1440 + rng.uniform(0, 1440 - 100, Sx)
        # and on day 1, from hour 6 on (no profile yet: the load covariate has to tell creep from cycle)
        start1 = rng.uniform(6 * 60, 1440 - 100, Sx)
        ramp1 = np.log1p(0.02) * np.clip(np.arange(1440)[:, None] + 0.5 - start1[None, :], 0, None) / 60.0
        loc1, n1 = buckets(rng, rate[:1440], np.log(50.0) + cycle[:1440] + ramp1, args.seed + 9)
        flag1 = run_kernel(loc1, n1, **kw)
        dl1 = np.full(Sx, np.inf)
        for s in range(Sx):
            k = np.flatnonzero(flag1[:, s])
            k = k[k >= int(start1[s])]
            if len(k):
                dl1[s] = k[0] + 1 - start1[s]
        print(summarize("creep on the cycle, day 1", dl1))
        ramp = np.log1p(0.02) * np.clip(np.arange(T)[:, None] + 0.5 - start[None, :], 0, None) / 60.0
        on_cycle = buckets(rng, rate, np.log(50.0) + cycle + ramp, args.seed + 6)
        on_flat = buckets(rng, rate, np.log(50.0) + ramp, args.seed + 7)
        for name, (loc2, n2), season in (("creep on the cycle, day 3", on_cycle, True),
                                         ("creep on flat, day 3, adjusted", on_flat, True),
                                         ("creep on flat, day 3, not adjusted", on_flat, False)):
            flag2 = run_kernel(loc2, n2, season=season, **kw)
            dl = np.full(Sx, np.inf)
            for s in range(Sx):
                k = np.flatnonzero(flag2[:, s])
                k = k[k >= int(start[s]) - 60]  # earlier flags belong to days 1-2 (counted above)
                if len(k):
                    dl[s] = k[0] + 1 - start[s]
            print(summarize(name, dl))
    print(f"({time.perf_counter() - tic:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
