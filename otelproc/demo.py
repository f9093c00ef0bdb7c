"""``otelproc demo``: the whole product on one machine in about a minute.

What it does, in order:

1. writes a demo directory (default ``./otelproc-demo``): ``otelproc.yaml`` (the pipeline
   ``otlp -> patterns -> anomaly -> alerting -> batch -> clickhouse`` on an embedded chDB store
   under ``store/``, the ``clickhouse_query`` extension, /metrics) and ``alerts.yaml`` (the rules
   and routes of the shipped ``alerts.yaml`` with every receiver pointed at a local webhook sink, so
   you see where each alert was routed without Alertmanager, Slack or SMTP);
2. starts a recording webhook sink and the real :class:`otelproc.pipeline.Service` from that
   config (the OTLP/HTTP receiver on a free port);
3. drives it with :mod:`otelproc.simulate` traffic (5 services, Loghub-like bodies, a daily
   rhythm) sent as real OTLP/HTTP protobuf requests, with event time compressed ``--speed``
   times, and scripted incidents: an error burst, a new error pattern, a latency creep and a
   traffic drop;
4. prints a refreshing progress line (logs/s, patterns, anomalies, alerts and their receivers);
5. drains and stops the pipeline, then reads the store back: a summary of what was found per
   incident, and the commands / SQL / URLs to look further. ``summary.json`` keeps it.

The event times of the run end at "now", so ``otelproc anomalies --since 3h`` and Grafana's
"last 3 hours" show the demo data. Everything is a function of ``--seed``.
"""
from __future__ import annotations

import http.client
import json
import logging
import math
import shutil
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TextIO

import numpy as np

from otelproc import defaults
from otelproc.batch import AttrMap, LogBatch, concat_batches

__all__ = ["DemoOptions", "DemoIncident", "IncidentResult", "DemoResult", "run_demo", "demo_incidents",
           "EXPECTED_FINDINGS", "BASE_RATE_PER_S", "DEFAULT_EVENT_SPAN_S"]

log = logging.getLogger("otelproc.demo")

NS = 1_000_000_000
# event time a default run covers: the anomaly warm-up (30 min) plus room for four incidents
DEFAULT_EVENT_SPAN_S = 3 * 3600.0
MIN_EVENT_SPAN_S = 2 * 3600.0
ANOMALY_WARMUP_S = 1800.0
# wall seconds between two OTLP requests of the generator
SEND_INTERVAL_S = 0.25
# event seconds per simulator step: fixed, so the traffic of a seed is the same at every --speed
# (a request carries as many steps as the speed puts into SEND_INTERVAL_S)
EVENT_STEP_S = 15.0
# the simulator's mean lines/s per instance of all services at the daily mean (sum of its rates)
BASE_RATE_PER_S = 41.0
# a latency creep the trend detector can see within the demo's few event hours (the simulator's
# default 2 %/hour needs most of a day to stand out of the noise)
DEMO_CREEP_PER_HOUR = 0.15

# finding kinds (anomalies.Kind) that count as detecting each incident kind
EXPECTED_FINDINGS: dict[str, tuple[str, ...]] = {
    "error_burst": ("error_ratio", "spike", "level_shift"),
    "new_error_pattern": ("new_pattern", "rare_pattern", "spike"),
    "traffic_drop": ("drop", "level_shift"),
    "latency_creep": ("trend", "value_anomaly"),
    "vanished_heartbeat": ("vanished_pattern",),
}


@dataclass(frozen=True)
class DemoIncident:
    """One scripted incident, placed as fractions of the run's event-time span."""

    kind: str
    service: str
    start_fraction: float
    length_s: float | None  # event seconds; None = until the end of the run


def demo_incidents() -> list[DemoIncident]:
    """The four scripted incidents, one per service so each is told apart in the store."""
    return [
        DemoIncident("latency_creep", "frontend", 0.30, None),
        DemoIncident("error_burst", "checkout", 0.45, 600.0),
        DemoIncident("new_error_pattern", "payment", 0.60, 600.0),
        DemoIncident("traffic_drop", "inventory", 0.72, 900.0),
    ]


@dataclass
class DemoOptions:
    # wall-clock seconds of traffic
    duration_s: float = 60.0
    # event seconds per wall second; 0 = cover DEFAULT_EVENT_SPAN_S of event time in duration_s
    speed: float = 0.0
    # target logs/s over OTLP; 0 = one instance of every service (about BASE_RATE_PER_S x speed).
    # Higher rates run more instances of each service (service.instance.id), each its own seed.
    rate: float = 0.0
    seed: int = 1
    directory: str = "otelproc-demo"
    rules_file: str = str(defaults.ALERT_RULES)
    # progress refresh in wall seconds
    progress_interval_s: float = 1.0

    def event_span_s(self) -> float:
        return self.duration_s * self.effective_speed()

    def effective_speed(self) -> float:
        return self.speed if self.speed > 0 else DEFAULT_EVENT_SPAN_S / self.duration_s

    def instances(self) -> int:
        if self.rate <= 0:
            return 1
        return max(1, int(round(self.rate / (BASE_RATE_PER_S * self.effective_speed()))))

    def problems(self) -> list[str]:
        out = []
        if not self.duration_s > 0:
            out.append(f"--duration: must be > 0 seconds, got {self.duration_s}")
        if self.speed < 0:
            out.append(f"--speed: must be >= 0 (0 = automatic), got {self.speed}")
        if self.rate < 0:
            out.append(f"--rate: must be >= 0 (0 = one instance per service), got {self.rate}")
        if not out and self.event_span_s() < MIN_EVENT_SPAN_S:
            out.append(f"--duration x --speed must cover at least {MIN_EVENT_SPAN_S / 3600:g} h of event time "
                       f"(30 min anomaly warm-up, then the incidents); got {self.event_span_s() / 3600:.2f} h: "
                       f"raise --speed or leave it at 0 (automatic)")
        if not Path(self.rules_file).is_file():
            out.append(f"--rules: alert rules file not found: {self.rules_file}")
        try:
            Path(self.directory).mkdir(parents=True, exist_ok=True)
        except OSError as e:
            out.append(f"--dir: cannot create the demo directory {self.directory}: {e.strerror}")
        return out


@dataclass
class IncidentResult:
    kind: str
    service: str
    start: str          # ISO event time
    end: str
    anomalies: int      # findings of the expected kinds for the service in [start - 1 min, end + 10 min]
    first_detection: str
    alerts: int         # alert notifications about the service sent in the same window
    receivers: list[str] = field(default_factory=list)


@dataclass
class DemoResult:
    directory: str
    config: str
    seconds: float
    logs_sent: int
    logs_stored: int
    patterns: int
    anomalies: int
    alerts_sent: int
    webhook_requests: dict[str, int]
    incidents: list[IncidentResult]
    errors: list[str]


# --------------------------------------------------------------------------- files

def _write_files(opts: DemoOptions, root: Path, sink_url: str) -> Path:
    import yaml

    if (root / "store").exists():  # a fresh store per run: old runs would mix into the summary
        shutil.rmtree(root / "store")
    root.mkdir(parents=True, exist_ok=True)
    rules = yaml.safe_load(Path(opts.rules_file).read_text()) or {}
    receiver_names = [r["name"] for r in rules.get("receivers", []) if isinstance(r, dict) and "name" in r]
    # same rules and routes; every receiver is a webhook to the local sink at /<receiver name>
    rules["receivers"] = [{"name": n, "webhook_configs": [{"url": f"{sink_url}/{n}"}]} for n in receiver_names]
    (root / "alerts.yaml").write_text(
        "# written by `otelproc demo`: the rules and routes of " + str(opts.rules_file) + ",\n"
        "# every receiver pointed at the demo's webhook sink (path = receiver name)\n"
        + yaml.safe_dump(rules, sort_keys=False))
    config = {
        "receivers": {"otlp": {"protocols": {"http": {"endpoint": "127.0.0.1:0"}}}},
        "processors": {
            "patterns": {},
            "anomaly": {"resolutions": ["10s", "1m"], "warmup": f"{ANOMALY_WARMUP_S:g}s"},
            "alerting": {"rules_file": str((root / "alerts.yaml").resolve())},
            "batch": {"send_batch_size": 20000, "timeout": "1s"},
        },
        "exporters": {"clickhouse": {"endpoint": f"chdb://{(root / 'store').resolve()}", "database": "otel"}},
        "extensions": {"clickhouse_query": {"endpoint": "127.0.0.1:0", "exporter": "clickhouse",
                                            "allow_anonymous": True}},
        "service": {
            "extensions": ["clickhouse_query"],
            "telemetry": {"logs": {"level": "warn"}, "metrics": {"address": "127.0.0.1:0"}},
            "pipelines": {"logs": {"receivers": ["otlp"],
                                   "processors": ["patterns", "anomaly", "alerting", "batch"],
                                   "exporters": ["clickhouse"]}},
        },
    }
    path = root / "otelproc.yaml"
    path.write_text("# written by `otelproc demo`; query the store after the demo with\n"
                    f"#   otelproc sql --config {path} \"SELECT count() FROM otel_logs\"\n"
                    + yaml.safe_dump(config, sort_keys=False))
    return path


# --------------------------------------------------------------------------- traffic

class _Traffic:
    """The simulated services: ``instances`` independent simulators whose batches are merged per window."""

    def __init__(self, opts: DemoOptions, end_ns: int):
        from otelproc.simulate import Incident, Scenario, simulate

        self.span_s = opts.event_span_s()
        self.step_s = EVENT_STEP_S
        # simulator steps per request: about SEND_INTERVAL_S of wall time each
        self.steps_per_request = max(1, int(round(opts.effective_speed() * SEND_INTERVAL_S / EVENT_STEP_S)))
        self.start_ns = end_ns - int(self.span_s * NS)
        self.incidents = []
        for inc in demo_incidents():
            start = inc.start_fraction * self.span_s
            end = self.span_s if inc.length_s is None else min(self.span_s, start + inc.length_s)
            self.incidents.append(Incident(inc.kind, inc.service, start, end))
        self._gens = []
        for i in range(opts.instances()):
            seed = opts.seed * 1000 + i
            sc = Scenario(seed=seed, duration_s=self.span_s, batch_seconds=self.step_s, incidents=self.incidents,
                          creep_rate=DEMO_CREEP_PER_HOUR, start_ns=self._scenario_start(seed))
            self._gens.append((i, simulate(sc)))
        self.windows = int(math.ceil(self.span_s / (self.step_s * self.steps_per_request)))

    def _scenario_start(self, seed: int) -> int:
        # simulate() shifts its start by a random hour drawn first from default_rng(seed), so the
        # daily cycle is seen at different phases; undo it so the run ends at end_ns
        hour = int(np.random.default_rng(seed).integers(0, 24))
        return self.start_ns - hour * 3600 * NS

    def next_window(self) -> LogBatch | None:
        """The records of the next request (``steps_per_request`` steps of every instance); None at the end."""
        parts = []
        for _ in range(self.steps_per_request):
            for i, gen in self._gens:
                b = next(gen, None)
                if b is None:
                    return concat_batches(parts) if parts else None
                if len(b):
                    parts.append(_with_instance(b, i))
        if not parts:
            return LogBatch.empty()
        batch = concat_batches(parts)
        if len(self._gens) > 1:  # instances interleave in time: keep the request in event-time order
            order = np.argsort(batch.time_ns, kind="stable")
            if np.any(np.diff(batch.time_ns) < 0):
                batch = batch.take(order)
        return batch


def _with_instance(b: LogBatch, instance: int) -> LogBatch:
    from dataclasses import replace

    rows = [{"service.name": s, "service.instance.id": f"{s}-{instance}", "host.name": f"node-{instance + 1}",
             "deployment.environment": "demo"} for s in b.services]
    return replace(b, resource_attrs=AttrMap.from_pylist(rows))


class _Sender:
    """POSTs protobuf ExportLogsServiceRequests to the receiver, honouring 429/503 Retry-After."""

    def __init__(self, port: int):
        self.port = port
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        self.sent = 0
        self.retries = 0
        self.refused = 0

    def send(self, batch: LogBatch, stop: threading.Event) -> None:
        from otelproc.encode import encode_protobuf

        data = encode_protobuf(batch)
        for attempt in range(100):
            try:
                self.conn.request("POST", "/v1/logs", body=data, headers={"Content-Type": "application/x-protobuf"})
                resp = self.conn.getresponse()
                resp.read()
            except (OSError, http.client.HTTPException):
                self.conn.close()
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
                if stop.wait(0.2):
                    return
                continue
            if resp.status == 200:
                self.sent += len(batch)
                return
            if resp.status in (429, 503):  # back-pressure: wait as told, then retry the same request
                self.retries += 1
                if stop.wait(min(float(resp.getheader("Retry-After") or 1.0), 2.0)):
                    return
                continue
            self.refused += len(batch)
            log.error("receiver answered %d to a demo request of %d records", resp.status, len(batch))
            return
        self.refused += len(batch)

    def close(self) -> None:
        self.conn.close()


# --------------------------------------------------------------------------- progress

class _Progress:
    def __init__(self, out: TextIO, service, sink, traffic: _Traffic, opts: DemoOptions):
        self.out, self.service, self.sink, self.traffic, self.opts = out, service, sink, traffic, opts
        self.tty = hasattr(out, "isatty") and out.isatty()
        self._last = (time.monotonic(), 0)
        self._rate = 0.0

    def routed(self) -> dict[str, int]:
        """Alerts delivered per receiver (from the sink: what really arrived where)."""
        out: dict[str, int] = {}
        for r in list(self.sink.requests):
            try:
                n = len(r.json.get("alerts", []))
            except ValueError:
                n = 1
            key = r.path.strip("/") or "?"
            out[key] = out.get(key, 0) + n
        return out

    def line(self, elapsed: float, sent: int, event_ns: int) -> str:
        tel = self.service.telemetry
        now = time.monotonic()
        t0, n0 = self._last
        if now - t0 >= 0.5:
            self._rate = (sent - n0) / (now - t0)
            self._last = (now, sent)
        patterns = int(tel.value("otelproc_patterns_active", processor="patterns"))
        anomalies = int(tel.total("otelproc_processor_anomaly_findings_total"))
        routed = self.routed()
        alerts = sum(routed.values())
        where = ", ".join(f"{k} {v}" for k, v in sorted(routed.items())) or "-"
        clock = time.strftime("%H:%M", time.gmtime(event_ns / NS)) if event_ns else "--:--"
        return (f"[{elapsed:5.1f}s/{self.opts.duration_s:g}s] event {clock}  logs {sent:,} ({self._rate:,.0f}/s)  "
                f"patterns {patterns}  anomalies {anomalies}  alerts {alerts} -> {where}")

    def show(self, text: str, final: bool = False) -> None:
        if self.tty:
            self.out.write("\r\x1b[2K" + text + ("\n" if final else ""))
        else:
            self.out.write(text + "\n")
        self.out.flush()


# --------------------------------------------------------------------------- run

def run_demo(opts: DemoOptions, out: TextIO | None = None) -> DemoResult:
    """Run the demo; raises ValueError with every problem of ``opts``."""
    from otelproc.alerting.sink import WebhookSink
    from otelproc.config import load_config
    from otelproc.pipeline import Service
    from otelproc.telemetry import MetricsServer
    from otelproc.warmup import warm_up

    out = out or sys.stdout
    problems = opts.problems()
    if problems:
        raise ValueError("; ".join(problems))
    warm_up(say=lambda line: (out.write(f"otelproc demo: {line}\n"), out.flush()))  # before the clock starts
    root = Path(opts.directory)
    sink = WebhookSink()
    errors: list[str] = []
    try:
        config_path = _write_files(opts, root, sink.url("").rstrip("/"))
        cfg = load_config(config_path)
        service = Service(cfg)
        service.start()
        metrics = MetricsServer(service.telemetry, cfg.service.telemetry.metrics.address, ready=lambda: service._started)
        try:
            receiver = service.receivers["otlp"]
            query = service.extensions["clickhouse_query"]
            qhost, qport = query.address
            # the last event is "now" when the run ends; on a whole minute, so the detectors' 10 s / 1 min
            # buckets fall on the same records in every run of a seed (the daily phase follows the clock)
            end_ns = (time.time_ns() + int(opts.duration_s * NS)) // (60 * NS) * (60 * NS)
            traffic = _Traffic(opts, end_ns)
            speed = opts.effective_speed()
            out.write(f"otelproc demo: {len(traffic.incidents)} incidents in {traffic.span_s / 3600:.1f} h of event time "
                      f"played in {opts.duration_s:g} s ({speed:g}x), {opts.instances()} instance(s) per service, "
                      f"seed {opts.seed}\n"
                      f"  OTLP/HTTP  http://127.0.0.1:{receiver.http_port}/v1/logs\n"
                      f"  metrics    http://127.0.0.1:{metrics.port}/metrics\n"
                      f"  SQL        http://{qhost}:{qport}/?query=SELECT+count()+FROM+otel.otel_logs\n"
                      f"  alerts  -> webhook sink {sink.url('/<receiver>')}\n")
            for inc in traffic.incidents:
                out.write(f"  scripted: {inc.kind:<18} {inc.service:<10} event +{inc.start_s / 60:5.0f} min "
                          f"to +{inc.end_s / 60:4.0f} min\n")
            out.flush()
            started = time.monotonic()
            sent = _drive(opts, service, sink, traffic, receiver.http_port, out)
            _wait_idle(service, timeout=60.0)
            # let the last notifications reach the sink before the alerting processor stops
            time.sleep(0.5)
        finally:
            service.shutdown()
            metrics.close()
        result = _summarize(opts, root, config_path, traffic, sent, sink, errors)
        result.seconds = round(time.monotonic() - started, 1)
        (root / "summary.json").write_text(json.dumps(asdict(result), indent=2))
        _print_summary(result, out, (qhost, qport))
        return result
    finally:
        sink.close()


def _drive(opts: DemoOptions, service, sink, traffic: _Traffic, port: int, out: TextIO) -> int:
    stop = threading.Event()
    sender = _Sender(port)
    progress = _Progress(out, service, sink, traffic, opts)
    t0 = time.monotonic()
    next_progress = t0
    last_event = 0
    try:
        for k in range(traffic.windows):
            due = t0 + k * SEND_INTERVAL_S  # pace to the wall clock; when behind, send at once
            while True:
                now = time.monotonic()
                if now >= next_progress:
                    out_line = progress.line(now - t0, sender.sent, last_event)
                    progress.show(out_line)
                    next_progress = now + opts.progress_interval_s
                if now >= due:
                    break
                time.sleep(min(due - now, max(0.0, next_progress - now), 0.05) or 0.001)
            batch = traffic.next_window()
            if batch is None:
                break
            if len(batch):
                sender.send(batch, stop)
                last_event = int(batch.time_ns[-1])
        progress.show(progress.line(time.monotonic() - t0, sender.sent, last_event), final=True)
    finally:
        sender.close()
    if sender.refused:
        log.error("%d demo records were refused by the receiver", sender.refused)
    return sender.sent


def _wait_idle(service, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not service.idle() and time.monotonic() < deadline:
        time.sleep(0.05)


# --------------------------------------------------------------------------- summary

def _summarize(opts: DemoOptions, root: Path, config_path: Path, traffic: _Traffic, sent: int, sink,
               errors: list[str]) -> DemoResult:
    from otelproc.store import open_store
    from otelproc import views

    store = open_store(f"chdb://{(root / 'store').resolve()}", "otel", create_database=False)
    try:
        logs_stored = views.scalar(store, "SELECT count() FROM otel_logs")
        patterns = views.scalar(store, "SELECT uniqExact(ServiceName, PatternId) FROM log_patterns")
        anomalies = views.scalar(store, "SELECT count() FROM anomalies")
        alerts_sent = views.scalar(store, "SELECT count() FROM alerts WHERE Outcome = 'sent' AND Status = 'firing'")
        incidents = []
        for inc in traffic.incidents:
            start_ns = traffic.start_ns + int(inc.start_s * NS)
            end_ns = traffic.start_ns + int(inc.end_s * NS)
            found = views.incident_evidence(store, inc.service, EXPECTED_FINDINGS[inc.kind], start_ns, end_ns)
            incidents.append(IncidentResult(kind=inc.kind, service=inc.service, start=views.iso(start_ns),
                                            end=views.iso(end_ns), **found))
    finally:
        store.close()
    routed: dict[str, int] = {}
    for r in list(sink.requests):
        key = r.path.strip("/") or "?"
        routed[key] = routed.get(key, 0) + 1
    return DemoResult(directory=str(root), config=str(config_path), seconds=0.0, logs_sent=sent,
                      logs_stored=logs_stored, patterns=patterns, anomalies=anomalies, alerts_sent=alerts_sent,
                      webhook_requests=routed, incidents=incidents, errors=errors)


def _print_summary(r: DemoResult, out: TextIO, query_address: tuple[str, int]) -> None:
    cfg = r.config
    w = out.write
    w(f"\nDone in {r.seconds:g} s: {r.logs_sent:,} logs sent over OTLP, {r.logs_stored:,} stored, "
      f"{r.patterns} patterns, {r.anomalies} anomalies, {r.alerts_sent} alert notifications sent\n")
    w("\nIncidents (scripted -> found in the store):\n")
    for i in r.incidents:
        mark = "detected" if i.anomalies else "MISSED  "
        where = ", ".join(i.receivers) or "-"
        w(f"  {mark} {i.kind:<18} {i.service:<10} {i.anomalies:3d} anomalies, first at {i.first_detection or '-':<19}  "
          f"{i.alerts:3d} alerts -> {where}\n")
    w("\nWebhook deliveries per receiver: "
      + (", ".join(f"{k} {v}" for k, v in sorted(r.webhook_requests.items())) or "none") + "\n")
    w(f"\nLook further (the store is in {r.directory}/store):\n"
      f"  otelproc patterns top --config {cfg} --since 6h\n"
      f"  otelproc anomalies    --config {cfg} --since 6h\n"
      f"  otelproc alerts       --config {cfg}\n"
      f"  otelproc tail         --config {cfg} --service payment -n 20\n"
      f"  otelproc sql --config {cfg} \"SELECT ServiceName, Kind, count() FROM anomalies GROUP BY ALL ORDER BY 3 DESC\"\n"
      f"  More SQL: README.md, section 'SQL cookbook'. Grafana: the dashboards in {defaults.DASHBOARDS} read the "
      f"store through the clickhouse_query extension, as the demo served it on "
      f"http://{query_address[0]}:{query_address[1]}.\n")
    out.flush()


def demo_main(duration_s: float, speed: float, rate: float, seed: int, directory: str, rules_file: str,
              check: bool, out: TextIO | None = None) -> int:
    """CLI entry: 0 on success (with ``check``: only when every incident was detected and alerted)."""
    opts = DemoOptions(duration_s=duration_s, speed=speed, rate=rate, seed=seed, directory=directory,
                       rules_file=rules_file)
    try:
        result = run_demo(opts, out)
    except ValueError as e:
        print(f"otelproc demo: {e}", file=sys.stderr)
        return 2
    if check and not all(i.anomalies and i.alerts for i in result.incidents):
        print("otelproc demo: --check: some incidents were not detected or not alerted", file=sys.stderr)
        return 1
    return 0

