"""CLI views over the store (otelproc.views) and their CLI wiring (patterns FILE | top, anomalies,
alerts, tail; table / json / csv)."""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from otelproc import cli, views
from otelproc.batch import LogBatch
from otelproc.exporters.clickhouse import ClickHouseExporter, ClickHouseExporterConfig
from otelproc.component import Context
from otelproc.processors.patterns import PatternsProcessor, PatternsProcessorConfig
from otelproc.store import open_store
from otelproc.telemetry import Telemetry

NS = 1_000_000_000


class _Sink:
    def __init__(self, exporter):
        self.exporter = exporter

    def consume(self, batch):
        self.exporter.consume(batch)


@pytest.fixture
def store(chdb_path, chdb_database):
    """A store filled through the real patterns processor and clickhouse exporter, with recent
    timestamps (views filter relative to now())."""
    cfg = ClickHouseExporterConfig(endpoint=f"chdb://{chdb_path}", database=chdb_database)
    exporter = ClickHouseExporter("clickhouse", cfg, Context(telemetry=Telemetry(process_metrics=False)))
    exporter.start()
    patterns = PatternsProcessor("patterns", PatternsProcessorConfig(), _Sink(exporter), None)
    patterns.start()
    now = (int(__import__("time").time()) - 600) * NS
    recs = []
    for i in range(60):  # 10 minutes ago, 1 per 5 s: checkout logins and payment errors
        recs.append({"time_ns": now + i * 5 * NS, "service": "checkout", "severity_number": 9,
                     "severity_text": "INFO", "body": f"user {i} logged in from 10.0.0.{i}"})
        if i % 3 == 0:
            recs.append({"time_ns": now + i * 5 * NS + 1, "service": "payment", "severity_number": 17,
                         "severity_text": "ERROR", "body": f"card {1000 + i} declined: code {i % 7}"})
    old = (int(__import__("time").time()) - 3 * 86400) * NS
    recs.append({"time_ns": old, "service": "checkout", "severity_number": 13, "severity_text": "WARN",
                 "body": "cache warmup took 3 days ago"})
    recs.sort(key=lambda r: r["time_ns"])
    patterns.consume(LogBatch.from_records(recs))
    ts = pa.array(np.array([now + 30 * NS, now + 90 * NS], dtype="datetime64[ns]"), pa.timestamp("ns"))
    exporter.consume(LogBatch.empty().with_table("anomalies", pa.table({
        "Timestamp": ts, "ServiceName": ["payment", "checkout"], "PatternId": pa.array([0, 0], pa.uint64()),
        "Kind": ["error_ratio", "spike"], "Score": pa.array([0.97, 0.85], pa.float32()),
        "Observed": [0.4, 120.0], "Expected": [0.01, 30.0], "Lower": [0.0, 10.0], "Upper": [0.05, 50.0],
        "Severity": ["critical", "warning"], "Description": ["error ratio 40%", "rate spike"],
        "ResolutionSeconds": pa.array([60.0, 10.0], pa.float32()), "Series": ["error_ratio", "log_count"],
        "Template": ["", ""]})).with_table("alerts", pa.table({
            "Timestamp": ts, "AlertName": ["ErrorRatioJump", "LogRateSpike"], "Fingerprint": ["a", "b"],
            "Status": ["firing", "firing"], "Outcome": ["sent", "failed"], "Receiver": ["oncall", "default"],
            "Integration": ["webhook", "webhook"], "ServiceName": ["payment", "checkout"],
            "Severity": ["critical", "warning"], "Attempts": pa.array([1, 5], pa.uint16()),
            "Error": ["", "connection refused"], "EventTime": ts,
            "Annotations": pa.array([[("summary", "payment: error ratio 40%")], [("summary", "spike")]],
                                    pa.map_(pa.string(), pa.string()))})))
    patterns.shutdown()
    exporter.shutdown()
    s = open_store(f"chdb://{chdb_path}", chdb_database)
    yield s
    s.close()


def test_parse_since_and_pattern_id():
    assert views.parse_since("1h") == 3600 and views.parse_since("15m") == 900 and views.parse_since("90") == 90
    assert views.parse_since("all") == 0 and views.parse_since(None) == 0
    with pytest.raises(ValueError, match="--since"):
        views.parse_since("yesterday")
    assert views.parse_pattern_id("00000000000000ff") == 255
    assert views.parse_pattern_id("0xff") == 255 and views.parse_pattern_id("255") == 255
    with pytest.raises(ValueError, match="--pattern"):
        views.parse_pattern_id("zz")
    with pytest.raises(ValueError, match="--limit"):
        views.check_limit(0)


def test_patterns_top_counts_shares_and_windows(store):
    rows = views.patterns_top(store)
    cols = rows.column_names
    assert cols == ("service", "pattern_id", "count", "pct", "errors", "first_minute", "last_minute", "template")
    got = [dict(zip(cols, r)) for r in rows]
    assert [(r["service"], r["count"]) for r in got] == [("checkout", 60), ("payment", 20), ("checkout", 1)]
    assert got[0]["template"] == "user <*> logged in from <*>"
    assert got[1]["errors"] == 20 and got[0]["errors"] == 0
    assert abs(sum(r["pct"] for r in got) - 100.0) < 0.05
    assert all(len(r["pattern_id"]) == 16 for r in got)
    # the 3-day-old line is outside the last hour; --service filters
    assert [r[2] for r in views.patterns_top(store, since_s=3600)] == [60, 20]
    assert [r[0] for r in views.patterns_top(store, service="payment")] == ["payment"]
    assert len(views.patterns_top(store, limit=1)) == 1


def test_anomalies_alerts_and_tail(store):
    an = [dict(zip(views.anomalies(store).column_names, r)) for r in views.anomalies(store)]
    assert [a["kind"] for a in an] == ["spike", "error_ratio"]  # newest first
    assert an[1]["score"] == pytest.approx(0.97, abs=1e-3)
    assert [r[2] for r in views.anomalies(store, service="payment")] == ["error_ratio"]
    assert len(views.anomalies(store, kind="spike")) == 1
    al = views.alerts(store, outcome="failed")
    rec = dict(zip(al.column_names, al[0]))
    assert len(al) == 1 and rec["receiver"] == "default" and rec["error"] == "connection refused"
    assert dict(zip(al.column_names, views.alerts(store, service="payment")[0]))["summary"] == "payment: error ratio 40%"
    pid = dict(zip(("service", "pattern_id"), views.patterns_top(store, service="payment")[0][:2]))["pattern_id"]
    lines = views.tail(store, pattern_id=views.parse_pattern_id(pid), limit=5)
    assert len(lines) == 5 and all(r[1] == "payment" and r[3] == pid for r in lines)
    times = [r[0] for r in lines]
    assert times == sorted(times)  # the last five, oldest of them first
    assert lines[-1][5] == "card 1057 declined: code 1"
    assert len(views.tail(store, since_s=3600, limit=1000)) == 80


def test_incident_evidence(store):
    now_ns = int(__import__("time").time()) * NS
    ev = views.incident_evidence(store, "payment", ["error_ratio"], now_ns - 700 * NS, now_ns)
    assert ev["anomalies"] == 1 and ev["alerts"] == 1 and ev["receivers"] == ["oncall"] and ev["first_detection"]
    assert views.incident_evidence(store, "payment", ["drop"], now_ns - 700 * NS, now_ns)["anomalies"] == 0


@pytest.fixture
def cli_config(tmp_path, chdb_path, chdb_database, store) -> str:
    p = tmp_path / "otelproc.yaml"
    p.write_text(f"""
receivers: {{otlp: {{protocols: {{http: {{endpoint: 127.0.0.1:0}}}}}}}}
exporters: {{clickhouse: {{endpoint: "chdb://{chdb_path}", database: {chdb_database}}}}}
service: {{pipelines: {{logs: {{receivers: [otlp], exporters: [clickhouse]}}}}}}
""")
    store.close()  # the CLI opens its own handle on the same path
    return str(p)


def test_cli_views_in_three_formats(cli_config, capsys):
    assert cli.main(["patterns", "top", "--config", cli_config, "--format", "json"]) == 0
    rows = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert rows[0]["service"] == "checkout" and rows[0]["count"] == 60
    assert cli.main(["anomalies", "--config", cli_config, "--format", "csv", "--since", "1d"]) == 0
    parsed = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [r["kind"] for r in parsed] == ["spike", "error_ratio"]
    assert cli.main(["alerts", "--config", cli_config]) == 0
    table = capsys.readouterr().out
    assert table.splitlines()[0].startswith("time") and "(2 rows)" in table and "oncall" in table
    assert cli.main(["tail", "--config", cli_config, "--service", "payment", "-n", "3"]) == 0
    assert "(3 rows)" in capsys.readouterr().out


def test_cli_view_errors_are_clear(cli_config, capsys):
    assert cli.main(["anomalies", "--config", cli_config, "--since", "soon"]) == 2
    assert "--since" in capsys.readouterr().err
    assert cli.main(["tail", "--config", cli_config, "--pattern", "xyz"]) == 2
    assert "--pattern" in capsys.readouterr().err
    assert cli.main(["patterns", "--config", cli_config]) == 2
    assert "FILE" in capsys.readouterr().err


def test_patterns_file_mode_still_works(tmp_path, capsys, monkeypatch):
    f = tmp_path / "lines.txt"
    f.write_text("".join(f"connection {i} closed by peer\n" for i in range(20)) + "server started\n")
    assert cli.main(["patterns", str(f), "--format", "json"]) == 0
    rows = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert {r["template"]: r["count"] for r in rows}["connection <*> closed by peer"] == 20
    # a file literally named "top" is mined, not taken for the view
    monkeypatch.chdir(tmp_path)
    Path("top").write_text("hello world\n")
    assert cli.main(["patterns", "top", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[0])["template"] == "hello world"


@pytest.fixture
def diff_config(tmp_path, chdb_path, chdb_database) -> tuple[str, int]:
    """Three hours of one service through the real patterns processor into chDB: the last hour has a
    new error line, a gone heartbeat and cache misses up 4x; requests stay as they were."""
    cfg = ClickHouseExporterConfig(endpoint=f"chdb://{chdb_path}", database=chdb_database)
    exporter = ClickHouseExporter("clickhouse", cfg, Context(telemetry=Telemetry(process_metrics=False)))
    exporter.start()
    patterns = PatternsProcessor("patterns", PatternsProcessorConfig(), _Sink(exporter), None)
    patterns.start()
    end = int(__import__("time").time()) // 60 * 60
    rng = np.random.default_rng(4)
    recs = []
    for minute in range(180):
        t = (end - (180 - minute) * 60) * NS
        window = minute >= 120
        lines = [(f"GET /items/{rng.integers(1000)} 200 in {rng.integers(5, 50)} ms", 9)] * 20
        lines += [(f"cache miss for key user:{rng.integers(10**6)}", 9)] * (20 if window else 5)
        if not window:
            lines += [("heartbeat ok", 9)] * 2
        else:
            lines += [(f"db pool exhausted after {rng.integers(100, 900)} ms waiting", 17)] * 5
        recs += [{"time_ns": t + i * 1000, "service": "api", "severity_number": sev, "body": body}
                 for i, (body, sev) in enumerate(lines)]
    patterns.consume(LogBatch.from_records(recs))
    patterns.shutdown()
    exporter.shutdown()
    p = tmp_path / "diff.yaml"
    p.write_text(f"""
receivers: {{otlp: {{protocols: {{http: {{endpoint: 127.0.0.1:0}}}}}}}}
exporters: {{clickhouse: {{endpoint: "chdb://{chdb_path}", database: {chdb_database}}}}}
service: {{pipelines: {{logs: {{receivers: [otlp], exporters: [clickhouse]}}}}}}
""")
    return str(p), end


def test_pattern_diff_new_gone_and_shifted(diff_config, chdb_path, chdb_database, capsys):
    path, end = diff_config
    s = open_store(f"chdb://{chdb_path}", chdb_database)
    try:
        rows = views.pattern_diff(s, window_s=3600, baseline_s=7200, end_s=end)
        got = {r["template"]: r for r in (dict(zip(rows.column_names, x)) for x in rows)}
        new = got["db pool exhausted after <*> ms waiting"]
        assert new["status"] == "new" and new["count_window"] == 300 and new["count_baseline"] == 0
        gone = got["heartbeat ok"]
        assert gone["status"] == "gone" and gone["count_baseline"] == 240 and gone["pct_window"] == 0
        up = got["cache miss for key user:<*>"]
        assert up["status"] == "up" and up["count_window"] == 1200 and up["count_baseline"] == 600
        assert up["pct_window"] == pytest.approx(100 * 1200 / 2700, abs=1e-3)
        assert up["pct_baseline"] == pytest.approx(100 * 600 / 3240, abs=1e-3)
        assert up["lift"] == pytest.approx((1200.5 / 2700.5) / (600.5 / 3240.5), abs=1e-3) and up["log10_p"] < -50
        # requests: the same rate, a smaller share (diluted by the new lines) -> down, but that is what shares do
        assert all(r["log10_p"] <= -3 for r in got.values())
        # a baseline equal to the window: nothing changed
        assert len(views.pattern_diff(s, window_s=3600, baseline_s=3600, end_s=end, baseline_end_s=end)) == 0
        # the baseline's first hour against its second: no change is significant
        assert len(views.pattern_diff(s, window_s=3600, baseline_s=3600, end_s=end - 3600)) == 0
    finally:
        s.close()
    assert cli.main(["patterns", "diff", "--config", path, "--window", "1h", "--baseline", "2h",
                     "--end", __import__("datetime").datetime.fromtimestamp(end, __import__("datetime").timezone.utc)
                     .isoformat(), "--format", "json"]) == 0
    out = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert {r["status"] for r in out} >= {"new", "gone", "up"}
    assert cli.main(["patterns", "diff", "--config", path, "--format", "csv", "--baseline-end", "1h"]) == 0
    assert capsys.readouterr().out.splitlines()[0].startswith("service,pattern_id,status,count_window")
    assert cli.main(["patterns", "diff", "--config", path, "--window", "0m"]) == 2
    assert "--window" in capsys.readouterr().err
    assert cli.main(["patterns", "diff", "--config", path, "--end", "yesterday"]) == 2
    assert "--end" in capsys.readouterr().err
