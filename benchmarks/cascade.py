#!/usr/bin/env python3
"""Cascading failures: is the origin named, and the attribute value that carries it? (issue 16)

    python benchmarks/cascade.py --seeds 20 --jobs 2              # cascades: origin / attribute scores
    python benchmarks/cascade.py --seeds 0 --quiet-seeds 4        # incident-free: explanations above p
    python benchmarks/cascade.py --seeds 0 --memory               # state at 1,000 services x 100 patterns x 20 attrs

Traffic: otelproc/simulate/cascade.py (a random call tree of 6 services per seed, 3-6 pods each, versions,
regions, trace ids, peer.service, unique request ids). Per seed one cascade: a random service with callers
fails on one of its pods, versions or regions (30-70 % of those requests), its callers after 30-120 s per
hop. The batches go through the shipped ``patterns`` and ``anomaly`` processors (default settings) in
process. Scores per seed:

* origin     the incident that holds the origin service's warning/critical findings names it as origin
* top-3      the origin's first warning/critical error-ratio / spike / new-pattern finding with an
             explanation has the injected value among its first 3 attribute entries (or their ``also``)
* quiet      incident-free runs: every 10 s bucket of every service (after warm-up) explained as if it
             were an error-ratio, spike and drop finding; entries reported (p <= explain_p) are false
"""
from __future__ import annotations

import argparse
import os
import sys
import time
import tracemalloc
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("NUMBA_CACHE_DIR", str(REPO / ".numba_cache"))

NS = 1_000_000_000
START_NS = 1_767_225_600 * NS


class _Collect:
    def __init__(self) -> None:
        self.findings = []

    def consume(self, batch) -> None:
        self.findings.extend(batch.findings)


def _pipeline():
    from otelproc.processors.anomaly import AnomalyProcessor, AnomalyProcessorConfig
    from otelproc.processors.patterns import PatternsProcessor, PatternsProcessorConfig

    sink = _Collect()
    an = AnomalyProcessor("anomaly", AnomalyProcessorConfig(), sink, None)
    pp = PatternsProcessor("patterns", PatternsProcessorConfig(), an, None)
    an.start()
    pp.start()
    return pp, an, sink


def run_seed(seed: int, hours: float, quiet: bool) -> dict:
    from otelproc.findings import Finding, FindingKind, Severity
    from otelproc.simulate.cascade import random_cascade, simulate_cascade, topology

    rng = np.random.default_rng(seed)
    topo = topology(rng)
    duration = hours * 3600.0
    cascade = None if quiet else random_cascade(topo, rng, duration)
    pp, an, sink = _pipeline()
    warm_ns = START_NS + int(an.config.warmup_s * NS)
    probes = hits = 0
    hit_examples: list[str] = []
    lines = 0
    cpu0 = time.process_time()
    for b in simulate_cascade(topo, seed, duration, START_NS, cascade):
        lines += len(b)
        pp.consume(b)
        if quiet:
            ex = an.explainer
            t = (ex.max_event_ns - 40 * NS) // (10 * NS) * (10 * NS)
            if t >= warm_ns:
                for code, svc in enumerate(an.engine.services):
                    for kind in (FindingKind.ERROR_RATIO, FindingKind.SPIKE, FindingKind.DROP):
                        got = ex.explain(Finding(time_ns=int(t), kind=kind, service=svc, score=1.0), code)
                        probes += 1
                        hits += len(got)
                        hit_examples += [f"{svc} {kind.value} {e['attribute']}={e['value']} p=1e{e['log10_p']:.1f}"
                                         for e in got[:1]]
    cpu = time.process_time() - cpu0
    pp.shutdown()
    an.shutdown()
    alertable = [f for f in sink.findings if f.severity != Severity.INFO]
    out = {"seed": seed, "lines": lines, "cpu_s": cpu, "findings": len(sink.findings), "alertable": len(alertable),
           "finding_entries": sum(len(f.explanation) for f in sink.findings)}
    if quiet:
        out.update(probes=probes, hits=hits, examples=hit_examples[:5])
        return out
    origin = topo.services[cascade.origin]
    start_ns = START_NS + int(cascade.start_s * NS)
    incs = [i for i in an.correlator.incidents.values() if origin in i.onsets and i.last >= start_ns - 60 * NS]
    inc = max(incs, key=lambda i: (len(i.onsets), -i.start)) if incs else None
    first = next((f for f in alertable if f.service == origin and f.time_ns >= start_ns - 60 * NS and f.explanation
                  and f.kind in (FindingKind.ERROR_RATIO, FindingKind.SPIKE, FindingKind.NEW_PATTERN)), None)
    attrs = [e for e in first.explanation if e["attribute"] != "log.pattern.id"][:3] if first else []
    target = f"{cascade.attribute}={cascade.value}"
    named = [f"{e['attribute']}={e['value']}" for e in attrs]
    in_top3 = any(n == target or target in e["also"] for n, e in zip(named, attrs))
    detected = [f for f in alertable if f.service == origin and f.time_ns >= start_ns - 60 * NS]
    out.update(origin=origin, injected=target, incident_origin=inc.origin if inc else "",
               chain=inc.chain if inc else [], origin_ok=bool(inc and inc.origin == origin), top3=in_top3,
               explained=named, origin_detected=bool(detected),
               delay_s=(detected[0].time_ns - start_ns) / NS if detected else float("nan"),
               reason=inc.origin_reason if inc else "")
    return out


def memory(services: int = 1000, patterns: int = 100, attrs: int = 20, batches: int = 30, batch_lines: int = 40_000,
           seed: int = 0) -> dict:
    """Explanation state at ``services`` x ``patterns`` x ``attrs`` (half resource, half log attributes,
    a handful of values each), after ``batches`` batches of 15 s of event time."""
    from otelproc.anomaly.explain import Explainer, ExplainParams
    from otelproc.batch import AttrMap, StringArray

    rng = np.random.default_rng(seed)
    n_res_keys = attrs // 2
    pods = 5
    res_rows = [{"service.name": f"svc-{s}", "k8s.pod.name": f"svc-{s}-pod-{p}", **{f"res.k{k}": f"v{(p + k) % 3}"
                 for k in range(n_res_keys - 1)}} for s in range(services) for p in range(pods)]
    resource_attrs = AttrMap.from_pylist(res_rows)
    log_keys = [f"attr.k{k}" for k in range(attrs - n_res_keys)]
    log_vals = [[f"value-{k}-{v}" for v in range(6)] for k in range(len(log_keys))]
    ex = Explainer(ExplainParams())
    tracemalloc.start()
    cpu = 0.0
    for i in range(batches):
        n = batch_lines
        ri = rng.integers(0, services * pods, n).astype(np.int32)
        svc = (ri // pods).astype(np.int64)
        pid = (svc.astype(np.uint64) * np.uint64(1000) + rng.integers(1, patterns + 1, n).astype(np.uint64))
        sev = np.where(rng.random(n) < 0.02, 17, 9).astype(np.uint8)
        choice = rng.integers(0, 6, (n, len(log_keys)))
        nk = len(log_keys)
        la = AttrMap(np.arange(0, n * nk + 1, nk, dtype=np.int64), StringArray.from_pylist(log_keys * n),
                     StringArray.from_pylist([log_vals[j][c] for row in choice.tolist() for j, c in enumerate(row)]))
        ev = START_NS + i * 15 * NS + np.sort(rng.integers(0, 15 * NS, n))
        t0 = time.process_time()
        ex.add(ev.astype(np.int64), svc, pid, sev, ri, resource_attrs, la)
        ex.advance()
        cpu += time.process_time() - t0
    current, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    # the cost of one explanation (inline, between the finding and its alert): error-ratio and spike
    # findings of random services at the latest closed bucket
    from otelproc.findings import Finding, FindingKind

    t = (ex.max_event_ns - 40 * NS) // (10 * NS) * (10 * NS)
    times = []
    for k in range(400):
        code = int(rng.integers(0, services))
        f = Finding(time_ns=int(t), kind=(FindingKind.ERROR_RATIO, FindingKind.SPIKE)[k % 2], service=f"svc-{code}",
                    score=1.0, pattern_id=int(code * 1000 + 1) if k % 2 else 0)
        t0 = time.perf_counter()
        ex.explain(f, code)
        times.append(time.perf_counter() - t0)
    return {"services": services, "patterns": patterns, "attributes": attrs, "lines": batches * batch_lines,
            "sketch_bytes": ex.memory_bytes(), "items_described": len(ex.meta),
            "python_heap_bytes": current, "us_per_line": 1e6 * cpu / (batches * batch_lines),
            "explain_ms_p50": 1e3 * float(np.percentile(times, 50)), "explain_ms_p99": 1e3 * float(np.percentile(times, 99))}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--quiet-seeds", type=int, default=0)
    ap.add_argument("--first-quiet-seed", type=int, default=10_000)
    ap.add_argument("--hours", type=float, default=1.5)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--memory", action="store_true")
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args(argv)
    from otelproc.warmup import warm_up

    warm_up()
    t0 = time.time()
    jobs = [(args.first_seed + s, args.hours, False) for s in range(args.seeds)]
    jobs += [(args.first_quiet_seed + s, args.hours, True) for s in range(args.quiet_seeds)]
    results = []
    if jobs:
        with ProcessPoolExecutor(max_workers=args.jobs) as pool:
            results = list(pool.map(run_seed, *zip(*jobs)))
    cas = [r for r in results if "origin" in r]
    quiet = [r for r in results if "probes" in r]
    for r in cas:
        if args.verbose or not (r["origin_ok"] and r["top3"]):
            print(f"seed {r['seed']}: origin {r['origin']} -> named {r['incident_origin'] or '-'} "
                  f"({r['reason']}; chain {' > '.join(r['chain'])}); injected {r['injected']} -> "
                  f"{r['explained']}; delay {r['delay_s']:.0f} s")
    if cas:
        n = len(cas)
        lines, cpu = sum(r["lines"] for r in cas), sum(r["cpu_s"] for r in cas)
        print(f"cascades: {n} seeds, {lines:,} lines ({1e6 * cpu / lines:.1f} us CPU per line, patterns + anomaly)")
        print(f"  origin named right:            {sum(r['origin_ok'] for r in cas)}/{n} = "
              f"{sum(r['origin_ok'] for r in cas) / n:.2f}")
        print(f"  injected value in top 3:       {sum(r['top3'] for r in cas)}/{n} = {sum(r['top3'] for r in cas) / n:.2f}")
        print(f"  origin detected:               {sum(r['origin_detected'] for r in cas)}/{n}; median delay "
              f"{np.nanmedian([r['delay_s'] for r in cas]):.0f} s")
    for r in quiet:
        if r["hits"] or args.verbose:
            print(f"quiet seed {r['seed']}: {r['hits']} entries in {r['probes']} probes {r['examples']}")
    if quiet:
        probes, hits = sum(r["probes"] for r in quiet), sum(r["hits"] for r in quiet)
        print(f"incident-free: {len(quiet)} runs, {probes:,} probed windows (every 10 s bucket x service x "
              f"error_ratio/spike/drop), {hits} entries reported at p <= 1e-4; "
              f"{sum(r['finding_entries'] for r in quiet)} entries on {sum(r['findings'] for r in quiet)} findings")
    if args.memory:
        m = memory()
        print(f"memory at {m['services']} services x {m['patterns']} patterns x {m['attributes']} attributes "
              f"({m['lines']:,} lines): sketches {m['sketch_bytes'] / 2**20:.1f} MiB, Python heap (item names, "
              f"state) {m['python_heap_bytes'] / 2**20:.1f} MiB, {m['items_described']:,} items described; "
              f"{m['us_per_line']:.2f} us CPU per line in add(); one explanation p50 {m['explain_ms_p50']:.2f} ms, "
              f"p99 {m['explain_ms_p99']:.2f} ms")
    print(f"wall {time.time() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
