#!/usr/bin/env python3
"""Incident detection benchmark: simulated multi-service traffic -> OTLP receiver -> patterns -> anomaly.

    python benchmarks/incidents.py --seeds 20 --hours 3 --jobs 2
    python benchmarks/incidents.py --kinds "" --seeds 4 --hours 72 --latency-daily-amplitude 0.1 --verbose
        (incident-free days: false findings per day, latency following the daily load cycle)

For every incident kind (error_burst, new_error_pattern, traffic_drop,
vanished_heartbeat, latency_creep) and seed, simulates ``--hours`` of traffic
(5 services, daily cycle, Loghub-like bodies) with one labelled incident, plus
``--seeds`` incident-free runs, and sends it through the real pipeline: an
``otelproc.pipeline.Service`` built from a config (OTLP/HTTP receiver on a free
port -> ingest queue -> ``patterns`` -> ``anomaly``, default settings -> export
stage), one protobuf ExportLogsServiceRequest per simulator batch (5 s of event
time), as a client would. Findings are read at the export stage (a collecting
exporter next to ``debug``). Prints per kind:

* recall     runs where a finding of the expected kind(s) for the incident's service fell in
             [start, end + grace]
* precision  findings of those kinds that match an incident (service and time window) /
             all findings of those kinds, over all runs
* delay      first matching finding's bucket end - incident start (median / max); with
             ``--verbose`` also per run, and the runs over the goal (creep: 3600 s)
* false alerts in the incident-free runs (any kind)
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))
os.environ.setdefault("NUMBA_CACHE_DIR", str(REPO / ".numba_cache"))

EXPECTED = {
    "error_burst": {"error_ratio", "spike"},
    "new_error_pattern": {"new_pattern"},
    "traffic_drop": {"drop", "level_shift"},
    "vanished_heartbeat": {"vanished_pattern"},
    "latency_creep": {"trend"},
    "latency_spike": {"value_anomaly"},
    "latency_spike_seconds": {"value_anomaly"},
    # not an incident: the kinds a detector would wrongly report for it (scored as false findings)
    "latency_drop": {"value_anomaly", "trend"},
}
NON_INCIDENT = {"latency_drop"}
GRACE_S = 600.0
# findings of one service closer than this in time are one event (one group) for precision
GROUP_GAP_S = 600.0
# detection-delay goals (issue 4: a 2 %/h creep within one hour of its start, in every run)
DELAY_GOAL_S = {"latency_creep": 3600.0, "latency_spike": 120.0, "latency_spike_seconds": 120.0}


class _Collect:
    def __init__(self) -> None:
        self.findings = []
        self.records = 0

    def consume(self, batch) -> None:
        self.findings.extend(batch.findings)
        self.records += len(batch)


PIPELINE_CONFIG = """
receivers:
  otlp: {protocols: {http: {endpoint: "127.0.0.1:0"}}}
processors:
  patterns: {}
  anomaly: {}
exporters:
  debug: {}
service:
  telemetry: {logs: {level: warn}, metrics: {address: ""}}
  pipelines:
    logs: {receivers: [otlp], processors: [patterns, anomaly], exporters: [debug]}
"""


def send_through_pipeline(batches, config: str = PIPELINE_CONFIG) -> dict:
    """Send every LogBatch of ``batches`` (one OTLP/HTTP protobuf request each) to a ``Service`` built from
    ``config``; returns the findings that reached the export stage, records, seconds and the first event time.

    ``batches`` may yield None (nothing to send for that step)."""
    import http.client
    import logging

    from otelproc.config import parse_config
    from otelproc.encode import encode_protobuf
    from otelproc.pipeline import Service

    logging.getLogger("otelproc").setLevel(logging.WARNING)
    svc = Service(parse_config(config))
    sink = _Collect()
    # observe what reaches the exporters: one more consumer at the pipeline's export stage
    svc.stages["logs"].exporters["findings"] = sink
    svc.start()
    conn = http.client.HTTPConnection("127.0.0.1", svc.receivers["otlp"].http_port, timeout=60)
    t0 = None
    sent = 0
    tic = time.perf_counter()
    try:
        for b in batches:
            if b is None or not len(b):
                continue
            if t0 is None:
                t0 = int(b.time_ns[0])
            _post(conn, encode_protobuf(b))
            sent += len(b)
        deadline = time.monotonic() + 120
        while not svc.idle() and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        conn.close()
        svc.shutdown()
    if sink.records != sent:
        raise RuntimeError(f"sent {sent} records, {sink.records} reached the exporters")
    return {"findings": sink.findings, "records": sink.records, "seconds": time.perf_counter() - tic, "t0": t0}


def finding_row(f, start_ns: int) -> tuple:
    """(kind, service, seconds after start, resolution s, description, severity, group key, observed, expected)
    of a Finding."""
    return (f.kind.value, f.service, (f.time_ns - start_ns) / 1e9, float(f.labels.get("resolution", "60s")[:-1]),
            f.description, f.severity.value, f.labels.get("incident", ""), f.observed, f.expected)


def _with_nuisance(sim_batches, n_services: int, seed: int, duration_s: float):
    """The simulator's batches, each followed by the nuisance generator's batch for the same 5 s (as a second
    client would send it); the nuisance traffic starts at the simulator's first hour."""
    from nuisance import NuisanceConfig, generate

    nz = None
    for b in sim_batches:
        if nz is None and len(b):
            start = (int(b.time_ns[0]) // 3600_000_000_000) * 3600_000_000_000
            nz = generate(NuisanceConfig(seed=seed, n_services=n_services, duration_s=duration_s, start_ns=start))
        yield b
        if nz is not None:
            yield next(nz, None)


def run_one(args: tuple) -> dict:
    kind, seed, hours, latency_daily_amplitude, nuisance_services = args
    from otelproc.simulate import Scenario, random_incident, simulate

    rng = np.random.default_rng(10_000 + seed)
    duration = hours * 3600.0
    incidents = [random_incident(kind, rng, duration)] if kind != "none" else []
    sc = Scenario(seed=seed, duration_s=duration, incidents=incidents, latency_daily_amplitude=latency_daily_amplitude)
    batches = simulate(sc)
    if nuisance_services:
        batches = _with_nuisance(batches, nuisance_services, seed, duration)
    res = send_through_pipeline(batches)
    t0 = res["t0"]
    # scenario start = the simulator's t0 (first record is within a second of it)
    start_ns = (t0 // 3600_000_000_000) * 3600_000_000_000 if t0 is not None else 0
    return {"kind": kind, "seed": seed, "incidents": [(i.kind, i.service, i.start_s, i.end_s) for i in incidents
                                                      if i.kind not in NON_INCIDENT],
            "non_incidents": [(i.kind, i.service, i.start_s, i.end_s) for i in incidents if i.kind in NON_INCIDENT],
            "findings": [finding_row(f, start_ns) for f in res["findings"]], "records": res["records"],
            "seconds": res["seconds"]}


def _post(conn, data: bytes) -> None:
    """One OTLP/HTTP protobuf request; retries while the receiver answers 429/503 (queue full), for up to
    10 minutes (a loaded box can keep the queue full for minutes)."""
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        conn.request("POST", "/v1/logs", body=data, headers={"Content-Type": "application/x-protobuf"})
        resp = conn.getresponse()
        body = resp.read()
        if resp.status == 200:
            return
        if resp.status not in (429, 503):
            raise RuntimeError(f"receiver answered {resp.status}: {body[:200]!r}")
        time.sleep(float(resp.getheader("Retry-After") or 0.05) / 10)
    raise RuntimeError("receiver stayed busy")


def matches(f, inc) -> bool:
    svc, t, res = f[1], f[2], f[3]
    ikind, isvc, s, e = inc
    return svc == isvc and s - res <= t <= e + GRACE_S


def _in_ms(k: str, f: tuple, inc: tuple) -> bool:
    """A latency finding's usual level is in ms: within x3 of the line's median (a value in seconds read as ms
    would be 1000 x off)."""
    if not k.startswith("latency_spike"):
        return True
    from otelproc.simulate import SLOW_LINES

    return SLOW_LINES[inc[1]][1] / 3 <= f[8] <= SLOW_LINES[inc[1]][1] * 3


def _score_kind(k: str, level: str, sevs: tuple, results: list, verbose: bool) -> None:
    """Recall / precision / delay of one incident kind, counting only findings of the severities ``sevs``."""
    runs = [r for r in results if r["kind"] == k]
    ours = lambda f: f[0] in EXPECTED[k] and f[5] in sevs  # noqa: E731
    if k in NON_INCIDENT:
        # no incident: every such finding about the service during the period (+ grace) is a false one
        false = [f for r in runs for f in r["findings"] if ours(f) and any(matches(f, i) for i in r["non_incidents"])]
        if verbose:
            for f in false:
                print(f"  false {k}: {f}")
        print(f"{k:<22} {level:<9} {'-':>7} {'-':>9} {'-':>11} {'-':>11} {len(false):>8}  (findings during the "
              f"{len(runs)} non-incidents: should be 0)")
        return
    detected, delays, per_run = 0, [], []
    for r in runs:
        inc = r["incidents"][0]
        hits = [f for f in r["findings"] if ours(f) and matches(f, inc) and _in_ms(k, f, inc)]
        if hits:
            detected += 1
            delays.append(min(f[2] + f[3] for f in hits) - inc[2])
            per_run.append(f"seed {r['seed']} {inc[1]} {delays[-1]:.0f}s")
        else:
            per_run.append(f"seed {r['seed']} {inc[1]} MISSED")
            if verbose:
                print(f"  missed {k} seed {r['seed']}: {inc}; findings: {r['findings'][:5]}")
    if verbose:
        print(f"  {k} delays: " + ", ".join(per_run))
        if k in DELAY_GOAL_S:
            late = sum(1 for d in delays if d > DELAY_GOAL_S[k]) + len(runs) - detected
            print(f"  {k}: {late} of {len(runs)} runs not detected within {DELAY_GOAL_S[k]:.0f} s")
    n_kind, n_true = 0, 0
    for r in results:
        for f in r["findings"]:
            if ours(f):
                n_kind += 1
                if any(matches(f, inc) for inc in r["incidents"]):
                    n_true += 1
                elif verbose:
                    print(f"  false {k}: seed {r['seed']} run {r['kind']} {f}")
    recall = detected / len(runs) if runs else float("nan")
    precision = n_true / n_kind if n_kind else float("nan")
    dmed = float(np.median(delays)) if delays else float("nan")
    dmax = float(np.max(delays)) if delays else float("nan")
    print(f"{k:<22} {level:<9} {recall:>7.2f} {precision:>9.2f} {dmed:>11.0f} {dmax:>11.0f} {n_kind:>8}")


SEVERITY_LEVELS = {"any": ("info", "warning", "critical"), "warning+": ("warning", "critical"),
                   "critical": ("critical",)}


def finding_groups(findings: list, severities=("info", "warning", "critical")) -> list[list]:
    """Findings of the given severities in groups, as someone reading the ``anomalies`` table would see
    events: same service, each within GROUP_GAP_S of the group's previous finding (the engine's own group
    label is not used, so the score does not depend on it)."""
    rows = sorted((f for f in findings if f[5] in severities), key=lambda f: (f[1], f[2]))
    groups: list[list] = []
    for f in rows:
        if groups and groups[-1][-1][1] == f[1] and f[2] - groups[-1][-1][2] <= GROUP_GAP_S:
            groups[-1].append(f)
        else:
            groups.append([f])
    return groups


def score(results: list, kinds: list, verbose: bool = False) -> None:
    """Per severity level: recall per kind (runs whose incident has a finding of an expected kind at that
    level) and precision over finding groups (every group of any kind counts; a group is true when one of its
    findings matches the run's incident). The per-finding table per kind is ``_score_kind``'s."""
    kinds = [k for k in kinds if k not in NON_INCIDENT]
    hours = sum(r["hours"] for r in results)
    for level, sevs in SEVERITY_LEVELS.items():
        groups = [(r, g) for r in results for g in finding_groups(r["findings"], sevs)]
        true = [any(matches(f, inc) for f in g for inc in r["incidents"]) for r, g in groups]
        cells = []
        for k in kinds:
            runs = [r for r in results if r["kind"] == k]
            hit = sum(any(f[0] in EXPECTED[k] and f[5] in sevs and matches(f, r["incidents"][0]) for f in r["findings"])
                      for r in runs)
            mine = [t for (r, g), t in zip(groups, true) if any(f[0] in EXPECTED[k] for f in g)]
            cells.append(f"{k} R {hit / len(runs) if runs else float('nan'):.2f} "
                         f"P {sum(mine) / len(mine) if mine else float('nan'):.2f}")
        n_false = len(true) - sum(true)
        print(f"  severity {level:<8}: groups {len(groups)}, precision "
              f"{sum(true) / len(groups) if groups else float('nan'):.2f}, false groups {n_false} "
              f"({n_false / max(hours, 1e-9):.3f} per run-hour); " + "; ".join(cells))
        if verbose and level == "warning+":
            for (r, g), t in zip(groups, true):
                if not t:
                    print(f"    false group: seed {r['seed']} run {r['kind']}: "
                          + "; ".join(f"{f[0]}/{f[5]} {f[1]} t={f[2]:.0f}s {f[4]}" for f in g[:4])
                          + (f" (+{len(g) - 4})" if len(g) > 4 else ""))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--seed-start", type=int, default=0, help="first seed (seeds seed-start .. seed-start + seeds - 1)")
    ap.add_argument("--tune-seeds", type=int, default=10,
                    help="seeds below this are the tuning part (parameters were chosen on them); the rest are "
                         "scored as held out")
    ap.add_argument("--hours", type=float, default=3.0)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--kinds", default=",".join(EXPECTED))
    ap.add_argument("--nuisance-services", type=int, default=6,
                    help="services of benchmarks/nuisance.py traffic (wobbles, rare templates, retry bursts, "
                         "restarts, deploys) sent beside the simulator's; 0 = none")
    ap.add_argument("--latency-daily-amplitude", type=float, default=0.0,
                    help="request latency follows the daily load cycle by this fraction (0.1 = +-10 %%)")
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args(argv)
    kinds = [k for k in args.kinds.split(",") if k]
    work = [(k, s, args.hours, args.latency_daily_amplitude, args.nuisance_services)
            for k in kinds + ["none"] for s in range(args.seed_start, args.seed_start + args.seeds)]
    tic = time.perf_counter()
    if args.jobs > 1:
        with ProcessPoolExecutor(args.jobs) as ex:
            results = list(ex.map(run_one, work))
    else:
        results = [run_one(w) for w in work]
    for r in results:
        r["hours"] = args.hours
    wall = time.perf_counter() - tic
    records = sum(r["records"] for r in results)
    print(f"{len(results)} runs x {args.hours:g} h, {records} records, {wall:.1f} s wall "
          f"({records / max(sum(r['seconds'] for r in results), 1e-9):,.0f} records/s per process incl. simulation)")
    parts = [("all seeds", results)]
    if args.seed_start < args.tune_seeds < args.seed_start + args.seeds:
        parts = [(f"tuning seeds 0-{args.tune_seeds - 1}", [r for r in results if r["seed"] < args.tune_seeds]),
                 (f"held-out seeds {args.tune_seeds}-{args.seed_start + args.seeds - 1}",
                  [r for r in results if r["seed"] >= args.tune_seeds])] + parts
    for name, part in parts:
        print(f"== {name} ==")
        score(part, kinds, args.verbose and name == "all seeds")
        # per kind and severity, on the findings of the kinds each incident expects (non-incidents: findings
        # during them, which should be none)
        print(f"{'kind':<22} {'severity':<9} {'recall':>7} {'precision':>9} {'delay_med_s':>11} {'delay_max_s':>11} "
              f"{'findings':>8}")
        for k in kinds:
            for level in ("any", "critical"):
                _score_kind(k, level, SEVERITY_LEVELS[level], part, args.verbose and name == "all seeds"
                            and level == "any")
    clean = [r for r in results if r["kind"] == "none"]
    false_clean = sum(len(r["findings"]) for r in clean)
    print(f"incident-free runs: {len(clean)}, findings in them: {false_clean}")
    if args.hours > 24:  # per simulated day: the first day has no seasonal profiles yet
        per_day = np.zeros(int(np.ceil(args.hours / 24)), dtype=np.int64)
        for r in clean:
            for f in r["findings"]:
                per_day[min(int(f[2] // 86400), len(per_day) - 1)] += 1
        print("  findings per simulated day (all incident-free runs): "
              + ", ".join(f"day {d + 1}: {n}" for d, n in enumerate(per_day.tolist())))
    if args.verbose:
        for r in clean:
            for f in r["findings"]:
                print(f"  clean seed {r['seed']}: {f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
