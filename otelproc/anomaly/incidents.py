"""Incidents across services: findings of several services close in time are one incident, with a
probable origin and the ordered chain of services it reached.

Every finding belongs to its service's *episode* (findings of one service closer than ``cooldown`` in
event time: the anomaly engine's per-service key ``service@time``). An episode with a warning or
critical finding joins an open incident (one with such a finding less than ``gap`` ago in event time)
when its service is linked to one of the incident's services in the call graph, or, when the call graph
knows nothing about it (no call seen from or to it: time is then the only evidence), when its onset is
within ``join`` (5 min) of the incident's start; otherwise it starts an incident. Info findings (ordinary variation) never join services together. The incident's
id is the key of its first episode, so a single-service incident keeps the key it always had, and
every finding of the incident carries it as the ``incident`` label (one alert group per incident with
the shipped route ``group_by: [incident]``).

The call graph (:class:`CallGraph`) is learnt from the logs: a log of service A naming another
service in ``peer.service``, ``server.address``, ``net.peer.name`` or the host of ``url.full`` /
``http.url`` (its first DNS label, matched against service names) is a call A -> B; services logging
under one trace id are linked too, the one that logged first in the batch taken as the caller (a
request enters the system there). Counts decay; at most ``max_edges`` pairs are kept.

Origin: among the services whose onset (earliest finding time) is within ``origin_slack`` of the
earliest, the one most called by the incident's other services (failures travel from callee to
caller); ties go to the earliest onset. The chain lists the services by onset, callees first on ties.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import numpy as np

from otelproc.batch import AttrMap
from otelproc.findings import Finding, Severity

__all__ = ["CallGraph", "Correlator", "Incident", "PEER_KEYS", "INCIDENT_COLUMNS"]

NS = 1_000_000_000
PEER_KEYS = ("peer.service", "server.address", "net.peer.name", "url.full", "http.url")
_URL_KEYS = ("url.full", "http.url")
INCIDENT_COLUMNS = ("incident", "start", "updated", "origin", "origin_reason", "services", "chain", "findings",
                    "severity", "version")


class CallGraph:
    """Decayed counts of calls between services, learnt from log attributes and shared trace ids."""

    def __init__(self, max_edges: int = 100_000, half_life_batches: float = 10_000.0, min_calls: float = 3.0):
        self.edges: dict[tuple[str, str], float] = {}
        self.max_edges = max_edges
        self.min_calls = min_calls
        self._decay = 0.5 ** (1.0 / half_life_batches)
        # counts are stored divided by the decay so far (one multiplication per batch, not one per edge)
        self._scale = 1.0
        self._known: set[str] = set()
        self.names: set[str] = set()  # every service name seen (peer attributes are matched against them)

    def calls(self, a: str, b: str) -> bool:
        return self.edges.get((a, b), 0.0) * self._scale >= self.min_calls

    def linked(self, a: str, b: str) -> bool:
        return self.calls(a, b) or self.calls(b, a)

    def knows(self, svc: str) -> bool:
        """Whether any call from or to ``svc`` was seen."""
        return svc in self._known

    def add(self, services: list[str], service_index: np.ndarray, log_attrs: AttrMap, trace_id: np.ndarray,
            event_ns: np.ndarray) -> None:
        """Learn the calls one batch shows (``services``: the batch's service names, ``service_index``
        int[n] into them; ``trace_id`` uint8[n, 16])."""
        found: dict[tuple[str, str], float] = {}
        self.names.update(services)
        names = self.names
        if len(log_attrs.keys):
            self._from_attributes(services, service_index, log_attrs, names, found)
        if len(trace_id):
            self._from_traces(services, service_index, trace_id, event_ns, found)
        if not found:
            return
        self._scale *= self._decay
        if self._scale < 1e-200:  # renormalise (every ~660k batches at the default half-life)
            self.edges = {k: v * self._scale for k, v in self.edges.items()}
            self._scale = 1.0
        for k, c in found.items():
            self.edges[k] = self.edges.get(k, 0.0) + c / self._scale
            self._known.update(k)
        if len(self.edges) > self.max_edges:  # keep the busiest pairs
            keep = sorted(self.edges.items(), key=lambda kv: -kv[1])[: self.max_edges // 2]
            self.edges = dict(keep)

    def _from_attributes(self, services, service_index, log_attrs: AttrMap, names: set[str], found) -> None:
        keys = log_attrs.keys
        klen = np.diff(keys.off)
        # only entries whose key has the length of a peer key are decoded (cheap filter)
        cand = np.flatnonzero(np.isin(klen, [len(k) for k in PEER_KEYS]))
        if not len(cand):
            return
        owner = np.repeat(np.arange(len(log_attrs)), np.diff(log_attrs.off))
        pairs: dict[tuple[int, str], int] = {}
        for j, row in zip(cand.tolist(), owner[cand].tolist()):
            k = keys[j]
            if k not in PEER_KEYS:
                continue
            v = log_attrs.values[j]
            target = _service_of(v, k in _URL_KEYS, names)
            if target:
                key = (int(service_index[row]), target)
                pairs[key] = pairs.get(key, 0) + 1
        for (si, target), c in pairs.items():
            src = services[si]
            if src != target:
                found[(src, target)] = found.get((src, target), 0.0) + c

    @staticmethod
    def _from_traces(services, service_index, trace_id: np.ndarray, event_ns: np.ndarray, found) -> None:
        tid = np.ascontiguousarray(trace_id).view(np.uint64).reshape(len(trace_id), 2)
        key = tid[:, 0] ^ (tid[:, 1] * np.uint64(0x9E3779B97F4A7C15))
        has = np.flatnonzero(key != 0)
        if len(has) < 2:
            return
        svc = service_index[has].astype(np.int64)
        # traces that reach more than one service: sort by (trace, time)
        order = np.lexsort((event_ns[has], key[has]))
        k, s = key[has][order], svc[order]
        start = np.flatnonzero(np.r_[True, k[1:] != k[:-1]])
        end = np.r_[start[1:], len(k)]
        multi = np.flatnonzero((end - start) >= 2)
        if not len(multi):
            return
        firsts = s[start[multi]]
        counts: dict[tuple[int, int], int] = {}
        for f, a, b in zip(firsts.tolist(), start[multi].tolist(), end[multi].tolist()):
            for other in set(s[a:b].tolist()) - {f}:
                counts[(f, other)] = counts.get((f, other), 0) + 1
        for (a, b), c in counts.items():
            pair = (services[a], services[b])
            found[pair] = found.get(pair, 0.0) + c


def _service_of(value: str, is_url: bool, names: set[str]) -> str:
    """The service a peer attribute names: the value itself, or its host's first DNS label."""
    host = value
    if is_url:
        try:
            host = urlsplit(value).hostname or ""
        except ValueError:
            return ""
    if host in names:
        return host
    first = host.split(".", 1)[0].split(":", 1)[0]
    return first if first in names else ""


@dataclass
class Incident:
    id: str
    start: int                    # event time ns of its first finding
    last: int                     # of its latest warning / critical finding
    onsets: dict[str, int] = field(default_factory=dict)   # service -> earliest finding time
    first_kind: dict[str, str] = field(default_factory=dict)
    severity: dict[str, str] = field(default_factory=dict)  # service -> highest severity seen
    findings: int = 0
    origin: str = ""
    origin_reason: str = ""
    chain: list[str] = field(default_factory=list)
    version: int = 0


_RANK = {"info": 0, "warning": 1, "critical": 2}


class Correlator:
    """Groups service episodes into incidents (see the module docstring)."""

    def __init__(self, gap_s: float = 900.0, origin_slack_s: float = 120.0, graph: CallGraph | None = None,
                 max_open: int = 10_000, join_s: float = 300.0):
        self.gap = int(gap_s * NS)
        self.join = int(join_s * NS)
        self.slack = int(origin_slack_s * NS)
        self.graph = graph or CallGraph()
        self.episode: dict[str, str] = {}       # service episode key -> incident id
        self.incidents: dict[str, Incident] = {}
        self.max_open = max_open
        self._changed: dict[str, Incident] = {}

    def incident_of(self, f: Finding, episode_key: str) -> str:
        """The incident id of finding ``f`` whose service episode is ``episode_key``."""
        inc_id = self.episode.get(episode_key)
        alertable = f.severity != Severity.INFO
        if inc_id is None:
            if not alertable:
                return episode_key
            inc = self._join(f.service, f.time_ns)
            if inc is None:
                inc = Incident(episode_key, f.time_ns, f.time_ns)
                self.incidents[inc.id] = inc
            self.episode[episode_key] = inc.id
            self._prune(f.time_ns)
        else:
            inc = self.incidents[inc_id]
        self._update(inc, f, alertable)
        return inc.id

    def _join(self, svc: str, t: int) -> Incident | None:
        best = None
        for inc in self.incidents.values():
            if t - inc.last > self.gap or inc.start - t > self.gap:
                continue
            linked = svc in inc.onsets or any(self.graph.linked(svc, m) for m in inc.onsets)
            # without call evidence only an onset close to the incident's start joins (a failure spreads in
            # minutes; a long incident, a creep, must not absorb every later one)
            if linked or (not self.graph.knows(svc) and abs(t - inc.start) <= self.join):
                if best is None or inc.last > best.last:
                    best = inc
        return best

    def _update(self, inc: Incident, f: Finding, alertable: bool) -> None:
        svc, t = f.service, f.time_ns
        sev = f.severity.value if isinstance(f.severity, Severity) else str(f.severity)
        inc.findings += 1
        if alertable:
            inc.last = max(inc.last, t)
        if svc not in inc.onsets or t < inc.onsets[svc]:
            inc.onsets[svc] = t
            inc.first_kind[svc] = f.kind.value if hasattr(f.kind, "value") else str(f.kind)
        if _RANK.get(sev, 0) > _RANK.get(inc.severity.get(svc, "info"), -1) or svc not in inc.severity:
            inc.severity[svc] = sev
        inc.start = min(inc.start, t)
        self._order(inc)
        inc.version += 1
        self._changed[inc.id] = inc

    def _order(self, inc: Incident) -> None:
        g = self.graph
        members = list(inc.onsets)
        called = {m: sum(g.calls(o, m) for o in members if o != m) - sum(g.calls(m, o) for o in members if o != m)
                  for m in members}
        first = min(inc.onsets.values())
        cands = [m for m in members if inc.onsets[m] - first <= self.slack]
        origin = min(cands, key=lambda m: (-called[m], inc.onsets[m], m))
        if len(members) == 1:
            reason = "only service"
        elif called[origin] > 0:
            callers = sorted(o for o in members if o != origin and g.calls(o, origin))
            reason = f"called by {', '.join(callers)}; onset within {self.slack // NS} s of the earliest"
        else:
            reason = "earliest onset"
        inc.origin, inc.origin_reason = origin, reason
        inc.chain = sorted(members, key=lambda m: (m != origin, inc.onsets[m], -called[m], m))

    def _prune(self, now: int) -> None:
        """Forget incidents closed long ago (bounded memory)."""
        if len(self.incidents) <= self.max_open:
            return
        old = [i for i, inc in self.incidents.items() if now - inc.last > 4 * self.gap]
        for i in old:
            del self.incidents[i]
        live = set(self.incidents)
        self.episode = {k: v for k, v in self.episode.items() if v in live}

    def take_rows(self) -> dict[str, list]:
        """Rows for the ``incidents`` table of the incidents changed since the last call (one row per
        incident and change; the table keeps the latest version)."""
        rows: dict[str, list] = {c: [] for c in INCIDENT_COLUMNS}
        now = time.time_ns()
        for inc in self._changed.values():
            rows["incident"].append(inc.id)
            rows["start"].append(inc.start)
            rows["updated"].append(now)
            rows["origin"].append(inc.origin)
            rows["origin_reason"].append(inc.origin_reason)
            rows["services"].append(list(inc.onsets))
            rows["chain"].append([(m, inc.onsets[m], inc.first_kind[m], inc.severity.get(m, "info"))
                                  for m in inc.chain])
            rows["findings"].append(inc.findings)
            rows["severity"].append(max(inc.severity.values(), key=lambda s: _RANK.get(s, 0)))
            rows["version"].append(inc.version)
        self._changed = {}
        return rows
