"""Realistic multi-service log traffic with labelled incidents (benchmarks, demos, tests).

Several services emit Loghub-like lines (HTTP access with latencies, DB queries,
sshd auth, heartbeats, background errors) at Poisson rates that follow a daily
cycle. Incidents are injected and labelled with their kind, service and
event-time span:

* ``error_burst``        an existing error line of a service fires ~40x more often
* ``new_error_pattern``  a never-seen error line appears
* ``traffic_drop``       a service's traffic falls to 15 % (its heartbeat keeps going)
* ``vanished_heartbeat`` a service's periodic heartbeat line stops
* ``latency_creep``      a service's request latency grows by ``creep_rate`` per hour
* ``latency_spike``      a service's low-rate latency line (0.5-0.9 lines/s) is ``factor`` x slower
                         (3-5) for 5 minutes
* ``latency_spike_seconds``  the same on a service whose low-rate line writes its latency in seconds
* ``latency_drop``       a service's low-rate latency line is faster (x 0.3) for 10 minutes: no incident
                         (a detector should stay quiet)

Every service also has a low-rate line with its latency in another written form (``in 1.234s``,
``duration_seconds=0.12``, ``in 180 ms``, ``latency_ms=45``, Go's ``950.2ms`` / ``1.234s``): heavy-tailed
(log-normal, sigma ``slow_sigma``, plus 1 % of lines 5-20 x slower), at a steady 0.5-0.9 lines/s
(``Scenario.latency_templates``).

Request latencies are log-normal around a per-service median. With
``Scenario.latency_daily_amplitude`` > 0 the median follows the load cycle (busier hours are
slower, as queueing makes them in real services): median x (1 + a sin(...)) in phase with the
traffic. It is off by default so the incident benchmark's numbers stay comparable: its runs
are shorter than a day, and no detector can tell such a cycle from a creep before it has seen
one day of it.

:func:`simulate` yields :class:`~otelproc.batch.LogBatch` objects in event-time
order (one per ``batch_seconds``), built column-wise (no per-record dicts).
Everything is a function of the seed.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

from otelproc.batch import AttrMap, LogBatch, StringArray

__all__ = ["Incident", "Scenario", "INCIDENT_KINDS", "NON_INCIDENT_KINDS", "SLOW_LINES", "simulate", "random_incident",
           "daily_cycle"]

NS = 1_000_000_000
INCIDENT_KINDS = ("error_burst", "new_error_pattern", "traffic_drop", "vanished_heartbeat", "latency_creep",
                  "latency_spike", "latency_spike_seconds", "latency_drop")
# incidents that are not incidents: a detector should report nothing about them
NON_INCIDENT_KINDS = ("latency_drop",)

INFO, WARN, ERROR = 9, 13, 17

# service -> list of (template id, severity, base rate per second, kind, format)
# kind: "req" carries a latency (creep target), "hb" is a heartbeat (every 10 s), "err" the
# background error line (burst target), "" anything else.
SERVICES: dict[str, list[tuple[str, int, float, str, str]]] = {
    "frontend": [
        ("fe_get", INFO, 14.0, "req", "GET /api/{path} HTTP/1.1 200 took {lat}ms"),
        ("fe_session", INFO, 2.0, "", "User session {hex} refreshed for client {ip}"),
        ("fe_slow", WARN, 0.2, "", "Slow request to /api/{path}, retrying in {n} ms"),
        ("fe_err", ERROR, 0.1, "err", "upstream connect error or disconnect/reset before headers to {ip}:{port}"),
        ("fe_hb", INFO, 0.1, "hb", "Heartbeat ok from node-{node} uptime {n}s"),
    ],
    "checkout": [
        ("co_order", INFO, 4.0, "req", "Order {n} placed for customer {hex} latency={lat}ms"),
        ("co_cart", INFO, 3.0, "", "Cart {hex} updated with {small} items"),
        ("co_err", ERROR, 0.05, "err", "Failed to reserve stock for order {n}: timeout after {lat} ms"),
        ("co_hb", INFO, 0.1, "hb", "Heartbeat ok from node-{node} uptime {n}s"),
    ],
    "payment": [
        ("pay_auth", INFO, 3.0, "req", "Payment authorization for txn {hex} completed, duration: {lat} ms"),
        ("pay_refund", INFO, 0.3, "", "Refund {n} issued to account {hex}"),
        ("pay_err", ERROR, 0.05, "err", "Card processor returned error code {small} for txn {hex}"),
        ("pay_hb", INFO, 0.1, "hb", "Heartbeat ok from node-{node} uptime {n}s"),
    ],
    "inventory": [
        ("inv_query", INFO, 5.0, "req", "Query on table stock executed, elapsed {lat} ms, rows={small}"),
        ("inv_reserve", INFO, 2.0, "", "Reserved {small} items for order {n}"),
        ("inv_err", ERROR, 0.05, "err", "Deadlock found when trying to get lock; try restarting transaction {n}"),
        ("inv_hb", INFO, 0.1, "hb", "Heartbeat ok from node-{node} uptime {n}s"),
    ],
    "auth": [
        ("ssh_ok", INFO, 3.0, "req", "Accepted password for user{small} from {ip} port {port} ssh2 took {lat}ms"),
        ("ssh_sess", INFO, 3.0, "", "pam_unix(sshd:session): session opened for user user{small} by (uid=0)"),
        ("ssh_fail", WARN, 0.5, "", "Failed password for invalid user admin from {ip} port {port} ssh2"),
        ("auth_err", ERROR, 0.05, "err", "error: Received disconnect from {ip} port {port}:3: com.jcraft.jsch.JSchException: Auth fail"),
        ("auth_hb", INFO, 0.1, "hb", "Heartbeat ok from node-{node} uptime {n}s"),
    ],
}
# median latency (ms) per service of its "req" line
LATENCY_MS = {"frontend": 40.0, "checkout": 120.0, "payment": 250.0, "inventory": 15.0, "auth": 60.0}
# service -> (rate per second, median ms, format, written in seconds) of its low-rate latency line
SLOW_LINES: dict[str, tuple[float, float, str, bool]] = {
    "frontend": (0.8, 300.0, "Rendered page /{path} in {lat_s}s", True),
    "checkout": (0.6, 120.0, "tax quote {hex} done duration_seconds={lat_s}", True),
    "payment": (0.7, 180.0, "fraud check for txn {hex} completed in {lat} ms", False),
    "inventory": (0.5, 45.0, "replica sync batch={small} latency_ms={lat}", False),
    "auth": (0.9, 600.0, "LDAP bind for user{small} took {lat_go}", False),
}
NEW_ERROR_FORMAT = "FATAL: could not write to file pg_wal/xlogtemp.{n}: No space left on device"
PATHS = ("cart", "items", "users/me", "search", "checkout", "orders")


@dataclass
class Incident:
    kind: str
    service: str
    start_s: float   # seconds after the scenario start
    end_s: float
    factor: float = 1.0  # latency multiplier of latency_spike / latency_spike_seconds / latency_drop

    def __post_init__(self) -> None:
        if self.kind not in INCIDENT_KINDS:
            raise ValueError(f"incident kind must be one of {', '.join(INCIDENT_KINDS)}, got {self.kind!r}")
        if self.service not in SERVICES:
            raise ValueError(f"incident service must be one of {', '.join(SERVICES)}, got {self.service!r}")


@dataclass
class Scenario:
    seed: int = 0
    duration_s: float = 3 * 3600.0
    start_ns: int = 1_767_225_600 * NS  # 2026-01-01T00:00:00Z; the hour of day is shifted per seed
    batch_seconds: float = 5.0
    daily_amplitude: float = 0.5   # rate x (1 + a sin(...)), peak in the afternoon
    latency_sigma: float = 0.15    # log-normal spread of latencies
    creep_rate: float = 0.02       # relative growth per hour in a latency_creep incident
    latency_daily_amplitude: float = 0.0  # request latency median x (1 + a sin(...)), in phase with the load
    latency_templates: bool = True  # every service's low-rate latency line (SLOW_LINES)
    slow_sigma: float = 0.6         # log-normal spread of those lines' latencies
    incidents: list[Incident] = field(default_factory=list)


def daily_cycle(hour_of_day: float | np.ndarray) -> float | np.ndarray:
    """sin(2 pi (hour - 9) / 24): the phase of the daily cycle (peak at 15:00, trough at 03:00 UTC)."""
    return np.sin(2 * np.pi * (np.asarray(hour_of_day) - 9.0) / 24.0)


def random_incident(kind: str, rng: np.random.Generator, duration_s: float) -> Incident:
    """One incident of ``kind`` at a random service and time (after the first half of the run)."""
    services = [s for s, v in SLOW_LINES.items() if v[3]] if kind == "latency_spike_seconds" else list(SERVICES)
    svc = str(rng.choice(services))
    start = float(rng.uniform(0.5, 0.6) * duration_s)
    length = {"error_burst": 600.0, "new_error_pattern": 600.0, "traffic_drop": 900.0, "latency_spike": 300.0,
              "latency_spike_seconds": 300.0, "latency_drop": 600.0}.get(kind, duration_s - start)
    factor = float(rng.uniform(3.0, 5.0)) if kind.startswith("latency_spike") else 0.3 if kind == "latency_drop" \
        else 1.0
    return Incident(kind, svc, start, min(duration_s, start + length), factor)


def _format(fmt: str, n: int, rng: np.random.Generator, lat: np.ndarray | None) -> list[str]:
    """n bodies of one template (one vectorised draw per field, then one format per line)."""
    fields = {}
    if "{path}" in fmt:
        fields["path"] = np.asarray(PATHS)[rng.integers(0, len(PATHS), n)]
    if "{hex}" in fmt:
        fields["hex"] = [f"{v:012x}" for v in rng.integers(0, 2**48, n).tolist()]
    if "{ip}" in fmt:
        ip = rng.integers(1, 255, (n, 2)).tolist()
        fields["ip"] = [f"10.0.{a}.{b}" for a, b in ip]
    if "{port}" in fmt:
        fields["port"] = rng.integers(1024, 65535, n).tolist()
    if "{n}" in fmt:
        fields["n"] = rng.integers(1000, 999999, n).tolist()
    if "{small}" in fmt:
        fields["small"] = rng.integers(1, 20, n).tolist()
    if "{node}" in fmt:
        fields["node"] = [1] * n
    lat_ms = (lat if lat is not None else np.full(n, 10.0)).tolist()
    if "{lat}" in fmt:
        fields["lat"] = [f"{v:.1f}" for v in lat_ms]
    if "{lat_s}" in fmt:
        fields["lat_s"] = [f"{v / 1000:.4f}" for v in lat_ms]
    if "{lat_go}" in fmt:  # Go's time.Duration: 950.2ms, 1.234s
        fields["lat_go"] = [f"{v:.1f}ms" if v < 1000 else f"{v / 1000:.3f}s" for v in lat_ms]
    keys = list(fields)
    cols = [fields[k] for k in keys]
    return [fmt.format(**dict(zip(keys, vals))) for vals in zip(*cols)] if keys else [fmt] * n


def simulate(sc: Scenario) -> Iterator[LogBatch]:
    """LogBatches of the scenario in event-time order."""
    rng = np.random.default_rng(sc.seed)
    # a random hour of day per seed so the daily cycle is seen at different phases
    t0 = sc.start_ns + int(rng.integers(0, 24)) * 3600 * NS
    services = list(SERVICES)
    step = sc.batch_seconds
    n_steps = int(np.ceil(sc.duration_s / step))
    hb_phase = {s: float(rng.uniform(0, 10)) for s in services}
    for k in range(n_steps):
        a, b = k * step, min(sc.duration_s, (k + 1) * step)
        times, svcs, bodies, sev = [], [], [], []
        hour = ((t0 + a * NS) / (3600 * NS)) % 24
        phase = float(daily_cycle(hour))
        season = 1.0 + sc.daily_amplitude * phase
        latency_season = 1.0 + sc.latency_daily_amplitude * phase
        for si, svc in enumerate(services):
            active = [inc for inc in sc.incidents if inc.service == svc and inc.start_s <= a < inc.end_s]
            kinds = {inc.kind for inc in active}
            for tid, severity, rate, role, fmt in SERVICES[svc]:
                if role == "hb":
                    if "vanished_heartbeat" in kinds:
                        continue
                    first = hb_phase[svc] + 10.0 * np.ceil((a - hb_phase[svc]) / 10.0)
                    ts = np.arange(first, b, 10.0)
                    ts = ts[ts >= a]
                else:
                    lam = rate * season * (b - a)
                    if role == "err" and "error_burst" in kinds:
                        lam = max(lam * 40.0, 2.0 * (b - a))
                    if "traffic_drop" in kinds:
                        lam *= 0.15
                    ts = np.sort(rng.uniform(a, b, rng.poisson(lam)))
                n = len(ts)
                if n == 0:
                    continue
                lat = None
                if role == "req":
                    med = LATENCY_MS[svc] * latency_season
                    for inc in active:
                        if inc.kind == "latency_creep":
                            med *= (1.0 + sc.creep_rate) ** ((ts - inc.start_s) / 3600.0)
                    lat = np.exp(np.log(med) + sc.latency_sigma * rng.standard_normal(n))
                times.append(ts)
                svcs.append(np.full(n, si, dtype=np.int32))
                bodies.extend(_format(fmt, n, rng, lat))
                sev.append(np.full(n, severity, dtype=np.uint8))
            if sc.latency_templates:
                rate, med, fmt, _ = SLOW_LINES[svc]
                n = int(rng.poisson(rate * (b - a)))
                if n:
                    ts = np.sort(rng.uniform(a, b, n))
                    lat = np.exp(np.log(med) + sc.slow_sigma * rng.standard_normal(n))
                    # the heavy tail: 1 % of lines 5-20 x slower (retries, cold caches)
                    lat = np.where(rng.random(n) < 0.01, lat * rng.uniform(5.0, 20.0, n), lat)
                    for inc in active:
                        if inc.kind in ("latency_spike", "latency_spike_seconds", "latency_drop"):
                            lat = lat * inc.factor
                    times.append(ts)
                    svcs.append(np.full(n, si, dtype=np.int32))
                    bodies.extend(_format(fmt, n, rng, lat))
                    sev.append(np.full(n, INFO, dtype=np.uint8))
            if "new_error_pattern" in kinds:
                n = int(rng.poisson(0.5 * (b - a)))
                if n:
                    times.append(np.sort(rng.uniform(a, b, n)))
                    svcs.append(np.full(n, si, dtype=np.int32))
                    bodies.extend(_format(NEW_ERROR_FORMAT, n, rng, None))
                    sev.append(np.full(n, ERROR, dtype=np.uint8))
        yield _batch(t0, times, svcs, bodies, sev, services)


def _batch(t0: int, times, svcs, bodies, sev, services: list[str]) -> LogBatch:
    if not times:
        return LogBatch.empty()
    t = np.concatenate(times)
    order = np.argsort(t, kind="stable")
    time_ns = (t0 + (t[order] * NS).astype(np.int64)).astype(np.int64)
    service_index = np.concatenate(svcs)[order].astype(np.int32)
    severity = np.concatenate(sev)[order]
    body = StringArray.from_pylist([bodies[i] for i in order.tolist()])
    n = len(time_ns)
    sev_text = StringArray.from_pylist(["INFO", "WARN", "ERROR"]).take(np.searchsorted([INFO, WARN, ERROR], severity))
    return LogBatch(
        time_ns=time_ns, observed_ns=time_ns.copy(), severity_number=severity,
        severity_text=sev_text,
        body=body, trace_id=np.zeros((n, 16), dtype=np.uint8), span_id=np.zeros((n, 8), dtype=np.uint8),
        flags=np.zeros(n, dtype=np.uint32), log_attrs=AttrMap.empty(n), resource_index=service_index.copy(),
        scope_index=np.zeros(n, dtype=np.int32), service_index=service_index,
        resource_attrs=AttrMap.from_pylist([{"service.name": s} for s in services]),
        resource_schema_url=StringArray.from_pylist([""] * len(services)),
        scope_name=StringArray.from_pylist(["otelproc.simulate"]), scope_version=StringArray.from_pylist([""]),
        scope_schema_url=StringArray.from_pylist([""]), scope_attrs=AttrMap.empty(1), services=list(services))
