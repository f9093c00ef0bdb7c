"""Incident-free traffic with the nuisance real services have (quiet_days.py, incidents.py).

Written apart from ``otelproc/simulate`` on purpose: an evaluator with their own generator will score
the detectors, so this one shares neither vocabulary nor rate model with it.

* vocabulary: key=value, JSON, access-log and prose lines of a dozen made-up services, durations in
  ms, s, µs and bare numbers (``in 12.3 ms``, ``took 0.41s``, ``duration=87``, ``"latency_ms":5.2``,
  ``elapsed: 33``, ``time: 8``);
* load: a business-hours plateau (ramp up, lunch dip, evening ramp down, night floor) in a per-service
  time zone, not a sinusoid;
* rate wobbles: the whole service's rate steps to x0.7..1.3 for 2-10 min at a time;
* over-dispersed counts: every template's rate per 5 s is Gamma-distributed around its mean (shape
  2..50 per template), so counts are negative binomial, not Poisson;
* rare templates: a few per hour (config reloads, cert renewals, background errors), some hourly jobs;
* heartbeats / periodic jobs with jitter (15 s .. 5 min);
* retry bursts: a WARN retry line at a few per hour, bursting to 20-200 lines in 10-60 s once or twice
  a day, with a few ERROR "giving up" lines;
* restarts and deploys: the service goes silent for 10-90 s, logs its shutdown and startup lines; a
  deploy also changes the wording of one request line (the new version's pattern replaces the old);
* latency: log-normal (sigma 0.3-0.8) around a per-template median that follows the load with a
  per-template elasticity, plus a Pareto tail (1 % of requests).

:func:`generate` yields one :class:`~otelproc.batch.LogBatch` per ``step_s`` of event time;
everything is a function of the seed.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

from otelproc.batch import AttrMap, LogBatch, StringArray

__all__ = ["NuisanceConfig", "generate", "service_names"]

NS = 1_000_000_000
DEBUG, INFO, WARN, ERROR = 5, 9, 13, 17
_SEV_TEXT = {DEBUG: "DEBUG", INFO: "INFO", WARN: "WARN", ERROR: "ERROR"}

NAMES = ("ledger", "search-api", "mailer", "geo", "thumbnailer", "billing-cron", "gateway", "recommender",
         "notifier", "pricing", "session-store", "media-upload", "audit", "feature-flags", "quota", "webhooks")

# request lines: (wording of version A, wording of version B, unit of {dur})
REQUEST = (
    ('served {method} /v2/{route} status={status} in {dur}', 'request {method} /v2/{route} -> {status} in {dur}', "ms"),
    ('level=info msg="query done" table={table} rows={n} duration={dur}',
     'level=info msg="query finished" table={table} rows={n} shard={k} duration={dur}', "bare"),
    ('{{"event":"rpc","method":"{rpc}","peer":"{ip}","latency_ms":{dur}}}',
     '{{"event":"rpc_done","method":"{rpc}","peer":"{ip}","ok":true,"latency_ms":{dur}}}', "bare"),
    ('cache refresh of {n} keys took {dur}', 'refreshed cache ({n} keys) took {dur}', "s"),
    ('upload {hexid} stored ({bytes} bytes), elapsed: {dur}', 'object {hexid} persisted, {bytes} bytes, elapsed: {dur}',
     "bare"),
    ('batch {id} committed to {topic}, time: {dur}', 'committed batch {id} ({k} msgs) to {topic}, time: {dur}', "bare"),
    ('rendered template {route} for tenant {n} in {dur}', 'template {route} rendered (tenant {n}) in {dur}', "us"),
    ('{ip} "{method} /api/{route}" {status} {bytes}b took {dur}', '{ip} "{method} /api/v3/{route}" {status} {bytes}b took {dur}',
     "ms_compact"),
)
PLAIN = (
    'user {user} logged in via {idp}', 'enqueued message {hexid} to topic {topic}',
    'feature flag {flag} evaluated to {bool} for tenant {n}', 'connection pool stats active={k} idle={k} waiting=0',
    'session {hexid} extended by {k} minutes', 'level=debug msg="lookup" key={hexid} hit={bool}',
    'scheduled {k} notifications for {user}', 'geo lookup for {ip} resolved to region {region}',
)
RARE = (  # (format, severity): a few per hour
    ('config reload requested by {user}', INFO), ('certificate for {host} renewed, valid for {k} days', INFO),
    ('slow consumer on topic {topic}, lag {n} messages', WARN), ('tenant {n} exceeded its soft quota', WARN),
    ('failed to publish event {hexid}: broker unavailable', ERROR),
    ('could not parse header X-Request-Id from {ip}', WARN), ('evicted {k} entries from the LRU', DEBUG),
)
HEARTBEAT = ('liveness probe ok ({k} goroutines)', 'metrics flushed: {n} series', 'lease renewed for {host}')
PERIODIC = ('compaction of segment {n} finished, {k} files merged', 'hourly usage report generated for {k} tenants')
RETRY = ('upstream {host} timed out after {n}ms, retry {k}/5', WARN)
GIVE_UP = ('giving up on request {hexid} after 5 retries', ERROR)
SHUTDOWN = ('received SIGTERM, draining {k} connections', 'shutdown complete')
STARTUP = ('starting {svc} version {ver}', 'listening on 0.0.0.0:{port}', 'connected to database {host}:5432',
           'loaded {k} routes')

_WORDS = {
    "method": ("GET", "GET", "GET", "POST", "PUT", "DELETE"),
    "route": ("orders", "items/search", "users/me", "carts", "invoices", "health", "catalog/top"),
    "status": ("200", "200", "200", "200", "201", "204", "304", "404"),
    "table": ("orders", "events", "tenants", "audit_log"), "rpc": ("Get", "List", "Put", "Watch"),
    "topic": ("events", "billing", "emails", "audit"), "idp": ("password", "sso", "oauth", "token"),
    "flag": ("new_checkout", "dark_mode", "beta_search"), "bool": ("true", "false"),
    "region": ("eu-west", "us-east", "ap-south"), "host": ("db-1.internal", "cache-2.internal", "api.partner.io"),
}


@dataclass
class NuisanceConfig:
    seed: int = 0
    n_services: int = 12
    duration_s: float = 3 * 86400.0
    start_ns: int = 1_767_225_600 * NS   # 2026-01-01T00:00:00Z
    step_s: float = 5.0
    rate_scale: float = 1.0              # multiplies every service's line rate
    restarts_per_day: float = 0.7
    deploys_per_day: float = 0.8
    retry_bursts_per_day: float = 1.5
    names: tuple = field(default_factory=tuple)  # service names (default: the first n_services of NAMES)


def service_names(cfg: NuisanceConfig) -> list[str]:
    return list(cfg.names) if cfg.names else list(NAMES[:cfg.n_services])


@dataclass
class _Tpl:
    kind: str                 # request | plain | rare | heartbeat | periodic | retry
    fmts: tuple               # wordings (request: version A, B)
    severity: int
    rate: float               # mean lines/s at load 1 (heartbeat / periodic: 1 / period)
    shape: float = 1e9        # Gamma shape of the per-step rate (over-dispersion)
    unit: str = ""
    median_ms: float = 0.0
    sigma: float = 0.0
    elasticity: float = 0.0
    phase: float = 0.0
    wording: int = 0


@dataclass
class _Svc:
    name: str
    tz_h: float
    night: float
    tpls: list
    wobble_t: np.ndarray       # start times of wobble segments
    wobble_f: np.ndarray       # rate factor per segment
    outages: list              # (start_s, end_s, is_deploy)
    bursts: list               # (start_s, end_s, lines)
    version: int = 1


def _plateau(h: np.ndarray) -> np.ndarray:
    """Business-hours load in [0, 1] by local hour: ramp 7-9, lunch dip 12-14, ramp down 17-21."""
    xs = np.array([0, 7, 9, 12, 13, 14, 17, 21, 24.0])
    ys = np.array([0, 0, 1, 1, 0.8, 1, 1, 0, 0.0])
    return np.interp(h % 24.0, xs, ys)


def _build(cfg: NuisanceConfig, rng: np.random.Generator) -> list[_Svc]:
    out = []
    days = cfg.duration_s / 86400.0
    for name in service_names(cfg):
        total = float(np.exp(rng.uniform(np.log(0.4), np.log(6.0)))) * cfg.rate_scale
        tpls = []
        req = rng.choice(len(REQUEST), size=int(rng.integers(1, 4)), replace=False)
        plain = rng.choice(len(PLAIN), size=int(rng.integers(1, 4)), replace=False)
        weights = rng.dirichlet(np.ones(len(req) + len(plain)))
        for i, w in zip(list(req) + list(plain), weights[:len(req)].tolist() + weights[len(req):].tolist()):
            shape = float(np.exp(rng.uniform(np.log(2.0), np.log(50.0))))
            if len(tpls) < len(req):
                a, b, unit = REQUEST[i]
                tpls.append(_Tpl("request", (a, b), INFO, total * w, shape, unit,
                                 median_ms=float(np.exp(rng.uniform(np.log(2.0), np.log(800.0)))),
                                 sigma=float(rng.uniform(0.3, 0.8)), elasticity=float(rng.uniform(0.0, 0.6))))
            else:
                tpls.append(_Tpl("plain", (PLAIN[i],), DEBUG if "debug" in PLAIN[i] else INFO, total * w, shape))
        for i in rng.choice(len(RARE), size=int(rng.integers(1, 4)), replace=False):
            fmt, sev = RARE[i]
            tpls.append(_Tpl("rare", (fmt,), sev, float(rng.uniform(1.0, 8.0)) / 3600.0))
        hb = HEARTBEAT[int(rng.integers(0, len(HEARTBEAT)))]
        tpls.append(_Tpl("heartbeat", (hb,), INFO, 1.0 / float(rng.choice([15.0, 30.0, 60.0])),
                         phase=float(rng.uniform(0, 60))))
        if rng.random() < 0.6:
            tpls.append(_Tpl("periodic", (PERIODIC[int(rng.integers(0, len(PERIODIC)))],), INFO,
                             1.0 / float(rng.choice([300.0, 900.0, 3600.0])), phase=float(rng.uniform(0, 300))))
        tpls.append(_Tpl("retry", (RETRY[0],), RETRY[1], float(rng.uniform(1.0, 4.0)) / 3600.0))
        # wobbles: segments of 2-10 min, half of them at x0.7..1.3
        seg = rng.uniform(120.0, 600.0, int(cfg.duration_s / 120.0) + 2)
        wob_t = np.concatenate([[0.0], np.cumsum(seg)])
        wob_f = np.where(rng.random(len(wob_t)) < 0.5, 1.0, np.exp(rng.uniform(np.log(0.7), np.log(1.3), len(wob_t))))
        outages = []
        for is_deploy, per_day in ((False, cfg.restarts_per_day), (True, cfg.deploys_per_day)):
            for t in rng.uniform(0.0, cfg.duration_s, rng.poisson(per_day * days)).tolist():
                outages.append((t, t + float(rng.uniform(10.0, 90.0)), is_deploy))
        outages.sort()
        bursts = []
        for t in rng.uniform(0.0, cfg.duration_s, rng.poisson(cfg.retry_bursts_per_day * days)).tolist():
            bursts.append((t, t + float(rng.uniform(10.0, 60.0)), int(rng.integers(20, 200))))
        out.append(_Svc(name, float(rng.uniform(-3.0, 3.0)), float(rng.uniform(0.15, 0.5)), tpls, wob_t, wob_f,
                        outages, bursts))
    return out


def _fields(fmt: str, n: int, rng: np.random.Generator, svc: _Svc, dur: np.ndarray | None, unit: str) -> list[str]:
    f: dict = {}
    for key, words in _WORDS.items():
        if "{" + key + "}" in fmt:
            f[key] = np.asarray(words)[rng.integers(0, len(words), n)].tolist()
    if "{ip}" in fmt:
        f["ip"] = [f"172.16.{a}.{b}" for a, b in rng.integers(0, 256, (n, 2)).tolist()]
    if "{hexid}" in fmt:
        f["hexid"] = [f"{v:x}" for v in rng.integers(2**40, 2**56, n).tolist()]
    if "{user}" in fmt:
        f["user"] = [f"u{v}" for v in rng.integers(100, 99999, n).tolist()]
    for key, lo, hi in (("id", 10_000, 10_000_000), ("n", 1, 100_000), ("k", 1, 64), ("bytes", 200, 2_000_000),
                        ("port", 8000, 9000)):
        if "{" + key + "}" in fmt:
            f[key] = rng.integers(lo, hi, n).tolist()
    if "{svc}" in fmt:
        f["svc"] = [svc.name] * n
    if "{ver}" in fmt:
        f["ver"] = [f"1.{svc.version}.{int(rng.integers(0, 9))}"] * n
    if "{dur}" in fmt:
        ms = dur if dur is not None else np.full(n, 10.0)
        if unit == "ms":
            f["dur"] = [f"{v:.1f} ms" for v in ms.tolist()]
        elif unit == "ms_compact":
            f["dur"] = [f"{v:.0f}ms" for v in ms.tolist()]
        elif unit == "s":
            f["dur"] = [f"{v / 1000.0:.3f}s" for v in ms.tolist()]
        elif unit == "us":
            f["dur"] = [f"{v * 1000.0:.0f}µs" for v in ms.tolist()]
        else:
            f["dur"] = [f"{v:.2f}" for v in ms.tolist()]
    keys = list(f)
    if not keys:
        return [fmt] * n
    cols = [f[k] for k in keys]
    return [fmt.format(**dict(zip(keys, vals))) for vals in zip(*cols)]


def generate(cfg: NuisanceConfig) -> Iterator[LogBatch]:
    """LogBatches of incident-free traffic in event-time order, one per ``cfg.step_s``."""
    rng = np.random.default_rng(cfg.seed + 7_919)
    services = _build(cfg, rng)
    names = [s.name for s in services]
    step = cfg.step_s
    for k in range(int(np.ceil(cfg.duration_s / step))):
        a, b = k * step, min(cfg.duration_s, (k + 1) * step)
        times, svc_idx, bodies, sev = [], [], [], []

        def put(si: int, ts: np.ndarray, fmt: str, severity: int, svc: _Svc, dur=None, unit="") -> None:
            if len(ts):
                times.append(ts)
                svc_idx.append(np.full(len(ts), si, dtype=np.int32))
                bodies.extend(_fields(fmt, len(ts), rng, svc, dur, unit))
                sev.append(np.full(len(ts), severity, dtype=np.uint8))

        hour_utc = ((cfg.start_ns / NS + a) / 3600.0) % 24.0
        for si, svc in enumerate(services):
            down = [o for o in svc.outages if o[0] < b and o[1] > a]
            if down:
                o = down[0]
                if o[0] >= a:   # the step the outage starts: shutdown lines
                    put(si, np.array([o[0], o[0] + 0.5]), SHUTDOWN[0], INFO, svc)
                    put(si, np.array([o[0] + 1.0]), SHUTDOWN[1], INFO, svc)
                    if o[2]:
                        svc.version += 1
                        req = [t for t in svc.tpls if t.kind == "request"]
                        chosen = req[int(rng.integers(0, len(req)))]
                        chosen.wording = 1 - chosen.wording
                continue
            back = [o for o in svc.outages if a <= o[1] < b]
            if back:
                t = back[0][1]
                for i, fmt in enumerate(STARTUP):
                    put(si, np.array([t + 0.1 * i]), fmt, INFO, svc)
            load = svc.night + (1.0 - svc.night) * float(_plateau(np.array([hour_utc + svc.tz_h]))[0])
            wob = float(svc.wobble_f[np.searchsorted(svc.wobble_t, a, side="right") - 1])
            for tpl in svc.tpls:
                fmt = tpl.fmts[tpl.wording]
                if tpl.kind in ("heartbeat", "periodic"):
                    period = 1.0 / tpl.rate
                    first = tpl.phase + period * np.ceil((a - tpl.phase) / period)
                    ts = np.arange(first, b, period)
                    ts = ts[ts >= a] + rng.uniform(-0.3, 0.3, len(ts)).clip(-period / 4, period / 4)
                    put(si, np.clip(ts, a, np.nextafter(b, a)), fmt, tpl.severity, svc)
                    continue
                if tpl.kind in ("rare", "retry"):
                    lam = tpl.rate * (b - a)
                else:
                    lam = tpl.rate * load * wob * (b - a) * rng.gamma(tpl.shape, 1.0 / tpl.shape)
                ts = np.sort(rng.uniform(a, b, rng.poisson(lam)))
                dur = None
                if tpl.kind == "request" and len(ts):
                    med = tpl.median_ms * (load * wob) ** tpl.elasticity
                    dur = np.exp(np.log(med) + tpl.sigma * rng.standard_normal(len(ts)))
                    tail = rng.random(len(ts)) < 0.01
                    dur[tail] *= 1.0 + rng.pareto(1.5, int(tail.sum()))
                put(si, ts, fmt, tpl.severity, svc, dur, tpl.unit)
            for s0, s1, lines in svc.bursts:
                lo, hi = max(a, s0), min(b, s1)
                if hi > lo:
                    n = int(rng.poisson(lines * (hi - lo) / (s1 - s0)))
                    put(si, np.sort(rng.uniform(lo, hi, n)), RETRY[0], RETRY[1], svc)
                    put(si, np.sort(rng.uniform(lo, hi, int(rng.poisson(0.05 * n)))), GIVE_UP[0], GIVE_UP[1], svc)
        yield _to_batch(cfg.start_ns, times, svc_idx, bodies, sev, names)


def _to_batch(t0: int, times, svc_idx, bodies, sev, services: list[str]) -> LogBatch:
    if not times:
        return LogBatch.empty()
    t = np.concatenate(times)
    order = np.argsort(t, kind="stable")
    time_ns = (t0 + np.round(t[order] * NS).astype(np.int64)).astype(np.int64)
    service_index = np.concatenate(svc_idx)[order]
    severity = np.concatenate(sev)[order]
    n = len(time_ns)
    return LogBatch(
        time_ns=time_ns, observed_ns=time_ns.copy(), severity_number=severity,
        severity_text=StringArray.from_pylist([_SEV_TEXT[int(s)] for s in severity.tolist()]),
        body=StringArray.from_pylist([bodies[i] for i in order.tolist()]),
        trace_id=np.zeros((n, 16), dtype=np.uint8), span_id=np.zeros((n, 8), dtype=np.uint8),
        flags=np.zeros(n, dtype=np.uint32), log_attrs=AttrMap.empty(n), resource_index=service_index.copy(),
        scope_index=np.zeros(n, dtype=np.int32), service_index=service_index,
        resource_attrs=AttrMap.from_pylist([{"service.name": s} for s in services]),
        resource_schema_url=StringArray.from_pylist([""] * len(services)),
        scope_name=StringArray.from_pylist(["nuisance"]), scope_version=StringArray.from_pylist([""]),
        scope_schema_url=StringArray.from_pylist([""]), scope_attrs=AttrMap.empty(1), services=list(services))
