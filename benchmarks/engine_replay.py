#!/usr/bin/env python3
"""Record what the anomaly engine is given on a quiet-days run, and replay it through another engine.

    python benchmarks/engine_replay.py record --seed 0 --days 3 --services 12 --out /tmp/quiet_s0.pkl
    python benchmarks/engine_replay.py replay /tmp/quiet_s0.pkl [--param error_confidence_z=3] [--verbose]

``record`` runs ``quiet_days.run_one`` (benchmarks/nuisance.py traffic -> OTLP/HTTP receiver -> patterns ->
anomaly, as quiet_days.py does) and keeps the arguments of every ``AnomalyEngine.ingest`` call (event times,
services, pattern ids, severities, durations with their units) and the findings of that run. ``replay`` feeds
the same calls to a fresh engine of the current code (``--param`` overrides EngineParams; every finding is
kept, info too) and prints findings per service-hour by severity, kind and day, beside the recorded run's: the
receiver and the pattern miner are not run again, so an engine change is measured on identical input in
minutes instead of the hour a 3-day run takes on a loaded box.
"""
from __future__ import annotations

import argparse
import collections
import pickle
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from otelproc.anomaly import engine as eng_mod  # noqa: E402


def record(seed: int, days: float, services: int, out: str) -> None:
    import quiet_days

    calls = []
    ingest = eng_mod.AnomalyEngine.ingest

    def keep(self, *args):
        calls.append(tuple(None if a is None else np.array(a, copy=True) for a in args))
        return ingest(self, *args)

    eng_mod.AnomalyEngine.ingest = keep
    try:
        r = quiet_days.run_one((seed, days, services))
    finally:
        eng_mod.AnomalyEngine.ingest = ingest
    with open(out, "wb") as f:
        pickle.dump({"seed": seed, "days": days, "services": services, "findings": r["findings"], "calls": calls},
                    f, protocol=4)
    print(f"{out}: {len(calls)} ingest calls, {r['records']} records, {len(r['findings'])} findings recorded")


def _summary(name: str, rows: list, service_hours: float, days: int) -> None:
    """rows: (kind, severity, seconds since start)."""
    sev = collections.Counter(s for _, s, _ in rows)
    warn = sev["warning"] + sev["critical"]
    no_trend = sum(1 for k, s, _ in rows if s != "info" and k != "trend")
    print(f"{name}: per service-hour all {len(rows) / service_hours:.4f} ({len(rows)}), warning+ "
          f"{warn / service_hours:.4f} ({warn}), warning+ without trend {no_trend / service_hours:.4f} ({no_trend}), "
          f"critical {sev['critical'] / service_hours:.4f} ({sev['critical']})")
    kinds = collections.Counter((k, s) for k, s, _ in rows)
    print("  by kind: " + ", ".join(f"{k}/{s} {n}" for (k, s), n in sorted(kinds.items())))
    per_day = collections.Counter((min(int(t // 86400), days - 1), k == "trend") for k, s, t in rows if s != "info")
    print("  warning+ per day (trend / other): " + ", ".join(
        f"day {d + 1}: {per_day[(d, True)]} / {per_day[(d, False)]}" for d in range(days)))


def replay(path: str, params: dict, verbose: bool) -> None:
    with open(path, "rb") as f:
        rec = pickle.load(f)
    eng = eng_mod.AnomalyEngine(eng_mod.EngineParams(**{"min_severity_stored": "info", **params}))
    # the recorded calls carry the engine's global service codes: give them names in that order
    eng.service_codes([f"service{i}" for i in range(256)])
    tic = time.process_time()
    found = []
    for call in rec["calls"]:
        found.extend(eng.ingest(*call).findings)
    start = 1_767_225_600 * 1_000_000_000  # NuisanceConfig.start_ns
    sh = rec["services"] * rec["days"] * 24.0
    days = int(np.ceil(rec["days"]))
    print(f"{path}: seed {rec['seed']}, {rec['days']:g} days x {rec['services']} services ({sh:.0f} service-hours), "
          f"replayed in {time.process_time() - tic:.0f} CPU-s; params {params or 'default'}")
    _summary("  recorded run", [(r[0], r[5], r[2]) for r in rec["findings"]], sh, days)
    now = [(f.kind.value, f.severity.value, (f.time_ns - start) / 1e9) for f in found]
    _summary("  replayed (current engine)", now, sh, days)
    if verbose:
        for f in found:
            if f.severity.value != "info":
                print(f"    {f.kind.value}/{f.severity.value} {(f.time_ns - start) / 3600e9:.2f} h {f.description}")


def _value(v: str):
    for cast in (int, float):
        try:
            return cast(v)
        except ValueError:
            pass
    return v


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("record")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--days", type=float, default=3.0)
    r.add_argument("--services", type=int, default=12)
    r.add_argument("--out", required=True)
    p = sub.add_parser("replay")
    p.add_argument("path")
    p.add_argument("--param", action="append", default=[], help="EngineParams field=value (repeatable)")
    p.add_argument("--verbose", action="store_true")
    args = ap.parse_args(argv)
    if args.cmd == "record":
        record(args.seed, args.days, args.services, args.out)
    else:
        replay(args.path, {k: _value(v) for k, v in (s.split("=", 1) for s in args.param)}, args.verbose)
    return 0


if __name__ == "__main__":
    sys.exit(main())
