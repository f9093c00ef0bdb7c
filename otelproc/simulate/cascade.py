"""Cascading failures across services that call each other, with resource and log attributes.

A random call tree per seed (service i calls one or two services of higher index; the first is the
entry point): every request enters at the root and travels down the tree, each service logging one
line per request it handles (``GET <route> 200 in N ms``) and one per call it makes (``call to <peer>
ok in N ms``, log attribute ``peer.service``), all lines of a request under one trace id. Resources:
``service.name``, ``k8s.pod.name`` (3-6 pods per service), ``host.name`` (a node per pod),
``service.version`` (one or two versions, spread over the pods), ``cloud.region`` (two); log
attributes ``http.route`` and ``request.id`` (unique per line). Background errors: 0.5 % of lines.

An incident (:class:`Cascade`): from ``start_s`` one attribute value of the origin service (a pod,
a version or a region) makes ``fail_ratio`` of its requests fail; a caller's call to a failing request
fails too, and so does the caller's own request, after ``lag_s`` per hop from the origin (retries
and timeouts hide a failure for a while): the dependants degrade after a lag, their errors spread over
all their pods. Everything is a function of the seed.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

from otelproc.batch import AttrMap, LogBatch, StringArray

__all__ = ["Topology", "Cascade", "topology", "simulate_cascade"]

NS = 1_000_000_000
ROUTES = ("/api/cart", "/api/items", "/api/orders", "/api/users/me", "/api/search")
REASONS = ("connection refused", "deadline exceeded", "503 Service Unavailable", "reset by peer")
NAMES = ("frontend", "checkout", "payment", "inventory", "search", "shipping", "auth", "ledger", "catalog",
         "pricing", "fraud", "email")


@dataclass
class Topology:
    services: list[str]
    callees: list[list[int]]            # service index -> services it calls
    pods: list[list[str]]               # service -> pod names
    pod_attrs: list[list[dict]]         # service -> per pod resource attributes
    rate: float                         # requests per second at the root

    def depth_from(self, origin: int) -> dict[int, int]:
        """Hops from each (transitive) caller of ``origin`` up to it (origin itself: 0)."""
        out = {origin: 0}
        changed = True
        while changed:
            changed = False
            for s, cs in enumerate(self.callees):
                for c in cs:
                    if c in out and (s not in out or out[s] > out[c] + 1):
                        out[s] = out[c] + 1
                        changed = True
        return out


@dataclass
class Cascade:
    origin: int
    attribute: str          # k8s.pod.name | service.version | cloud.region
    value: str
    start_s: float
    end_s: float
    fail_ratio: float = 0.5
    lag_s: float = 60.0     # per hop from the origin


def topology(rng: np.random.Generator, n_services: int = 6, rate: float = 6.0) -> Topology:
    """A random call tree over ``n_services`` services (service 0 is the entry point)."""
    names = list(NAMES[:n_services]) if n_services <= len(NAMES) else [f"svc-{i}" for i in range(n_services)]
    callees: list[list[int]] = [[] for _ in range(n_services)]
    for i in range(1, n_services):  # every service has a caller of lower index
        callees[int(rng.integers(0, i))].append(i)
    pods, pod_attrs = [], []
    for i, name in enumerate(names):
        n_pods = int(rng.integers(3, 7))
        versions = ["1.4.1", "1.4.2"] if rng.random() < 0.5 else ["2.0.0"]
        ps = [f"{name}-{rng.integers(16**5):05x}-{j}" for j in range(n_pods)]
        pods.append(ps)
        pod_attrs.append([{"service.name": name, "k8s.pod.name": p, "host.name": f"node-{int(rng.integers(1, 40))}",
                           "service.version": versions[j % len(versions)], "cloud.region": ("eu-west-1", "us-east-1")[j % 2]}
                          for j, p in enumerate(ps)])
    return Topology(names, callees, pods, pod_attrs, rate)


def random_cascade(topo: Topology, rng: np.random.Generator, duration_s: float) -> Cascade:
    """An incident at a service that has callers, carried by one pod, version or region of it."""
    origin = int(rng.integers(1, len(topo.services)))
    kind = ("k8s.pod.name", "service.version", "cloud.region")[int(rng.integers(0, 3))]
    values = sorted({a[kind] for a in topo.pod_attrs[origin]})
    if len(values) < 2:
        kind, values = "k8s.pod.name", sorted(a["k8s.pod.name"] for a in topo.pod_attrs[origin])
    start = float(rng.uniform(0.55, 0.65) * duration_s)
    return Cascade(origin, kind, str(values[int(rng.integers(0, len(values)))]), start, duration_s,
                   fail_ratio=float(rng.uniform(0.3, 0.7)), lag_s=float(rng.uniform(30.0, 120.0)))


def simulate_cascade(topo: Topology, seed: int, duration_s: float, start_ns: int,
                     cascade: Cascade | None = None, batch_s: float = 5.0) -> Iterator[LogBatch]:
    """LogBatches (one per ``batch_s`` of event time) of the topology's traffic, with the cascade."""
    rng = np.random.default_rng(seed + 7919)
    n_svc = len(topo.services)
    parents = [-1] * n_svc
    for s, cs in enumerate(topo.callees):
        for c in cs:
            parents[c] = s
    order = []  # top-down
    frontier = [0]
    while frontier:
        s = frontier.pop(0)
        order.append(s)
        frontier += topo.callees[s]
    depth = topo.depth_from(cascade.origin) if cascade else {}
    res_rows = [a for s in range(n_svc) for a in topo.pod_attrs[s]]
    res_base = np.cumsum([0] + [len(p) for p in topo.pods])[:-1]
    resource_attrs = AttrMap.from_pylist(res_rows)
    bad_pods = {}
    if cascade:
        bad_pods = {j for j, a in enumerate(topo.pod_attrs[cascade.origin]) if a[cascade.attribute] == cascade.value}
    for k in range(int(np.ceil(duration_s / batch_s))):
        a = k * batch_s
        n_root = int(rng.poisson(topo.rate * batch_s))
        # requests per service, top-down: (time_s, parent request row or -1, trace id)
        req_t: dict[int, np.ndarray] = {}
        req_parent: dict[int, np.ndarray] = {}
        req_trace: dict[int, np.ndarray] = {}
        for s in order:
            if s == 0:
                t = np.sort(rng.uniform(a, a + batch_s, n_root))
                req_t[s], req_parent[s] = t, np.full(n_root, -1)
                req_trace[s] = rng.integers(1, 2**62, n_root)
            else:
                p = parents[s]
                called = np.flatnonzero(rng.random(len(req_t[p])) < 0.7)
                req_t[s] = req_t[p][called] + rng.uniform(0.001, 0.01, len(called))
                req_parent[s], req_trace[s] = called, req_trace[p][called]
        # errors, bottom-up
        req_err: dict[int, np.ndarray] = {}
        req_pod: dict[int, np.ndarray] = {}
        call_err: dict[int, np.ndarray] = {}  # per callee's request: the caller's call line failed
        for s in order:
            req_pod[s] = rng.integers(0, len(topo.pods[s]), len(req_t[s]))
        for s in reversed(order):
            t = req_t[s]
            err = rng.random(len(t)) < 0.005
            if cascade and cascade.start_s <= a < cascade.end_s:
                if s == cascade.origin:
                    err |= np.isin(req_pod[s], list(bad_pods)) & (rng.random(len(t)) < cascade.fail_ratio)
                for c in topo.callees[s]:
                    if c in depth and t.size and a >= cascade.start_s + depth.get(s, 0) * cascade.lag_s:
                        failed = np.zeros(len(t), dtype=bool)
                        failed[req_parent[c][req_err[c]]] = True
                        err |= failed
            for c in topo.callees[s]:
                call_err[c] = req_err[c] | (rng.random(len(req_t[c])) < 0.002)
            req_err[s] = err
        times, svc, pods, sev, bodies, attrs, traces = [], [], [], [], [], [], []
        for s in order:
            t, e, pod = req_t[s], req_err[s], req_pod[s]
            n = len(t)
            if not n:
                continue
            route = rng.integers(0, len(ROUTES), n)
            ms = rng.integers(3, 400, n)
            reason = rng.integers(0, len(REASONS), n)
            times.append(t)
            svc.append(np.full(n, s))
            pods.append(pod)
            sev.append(np.where(e, 17, 9))
            bodies += [f"GET {ROUTES[r]} 500 failed after {m} ms: {REASONS[x]}" if ee else
                       f"GET {ROUTES[r]} 200 in {m} ms" for r, m, x, ee in zip(route.tolist(), ms.tolist(),
                                                                             reason.tolist(), e.tolist())]
            rid = rng.integers(0, 2**40, n)
            attrs += [{"http.route": ROUTES[r], "request.id": f"{i:010x}"} for r, i in zip(route.tolist(), rid.tolist())]
            traces.append(req_trace[s])
            for c in topo.callees[s]:  # the call lines of s to c (at the callee's request time)
                ce = call_err[c]
                m = len(req_t[c])
                if not m:
                    continue
                cms = rng.integers(2, 300, m)
                times.append(req_t[c] - 0.0005)
                svc.append(np.full(m, s))
                pods.append(pod[req_parent[c]])
                sev.append(np.where(ce, 17, 9))
                peer = topo.services[c]
                bodies += [f"call to {peer} failed: upstream error after {x} ms" if ee else
                           f"call to {peer} ok in {x} ms" for x, ee in zip(cms.tolist(), ce.tolist())]
                attrs += [{"peer.service": peer}] * m
                traces.append(req_trace[c])
        if not times:
            continue
        tt = np.concatenate(times)
        o = np.argsort(tt, kind="stable")
        svc_a = np.concatenate(svc)[o]
        pod_a = np.concatenate(pods)[o]
        sev_a = np.concatenate(sev)[o].astype(np.uint8)
        trace = np.zeros((len(o), 16), dtype=np.uint8)
        trace[:, :8] = np.concatenate(traces)[o].astype(np.uint64).view(np.uint8).reshape(-1, 8)
        time_ns = start_ns + (tt[o] * NS).astype(np.int64)
        n = len(o)
        resource_index = (res_base[svc_a] + pod_a).astype(np.int32)
        yield LogBatch(
            time_ns=time_ns, observed_ns=time_ns.copy(), severity_number=sev_a,
            severity_text=StringArray.from_pylist(["INFO", "ERROR"]).take((sev_a >= 17).astype(np.int64)),
            body=StringArray.from_pylist([bodies[i] for i in o.tolist()]), trace_id=trace,
            span_id=np.zeros((n, 8), dtype=np.uint8), flags=np.zeros(n, dtype=np.uint32),
            log_attrs=AttrMap.from_pylist([attrs[i] for i in o.tolist()]), resource_index=resource_index,
            scope_index=np.zeros(n, dtype=np.int32), service_index=svc_a.astype(np.int32),
            resource_attrs=resource_attrs, resource_schema_url=StringArray.from_pylist([""] * len(res_rows)),
            scope_name=StringArray.from_pylist(["otelproc.simulate.cascade"]),
            scope_version=StringArray.from_pylist([""]), scope_schema_url=StringArray.from_pylist([""]),
            scope_attrs=AttrMap.empty(1), services=list(topo.services))
