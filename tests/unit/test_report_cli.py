"""`otelproc report`: the main dashboards drawn from a demo-filled store, without Grafana."""
import subprocess
import sys

import pytest

pytest.importorskip("matplotlib")


def test_report_cli_draws_every_main_dashboard(tmp_path):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(f"""
receivers: {{otlp: {{protocols: {{http: {{endpoint: "127.0.0.1:0"}}}}}}}}
exporters: {{clickhouse: {{endpoint: "chdb://{tmp_path / 'store'}", database: otel}}}}
service: {{pipelines: {{logs: {{receivers: [otlp], exporters: [clickhouse]}}}}}}
""")
    out = subprocess.run([sys.executable, "-m", "otelproc", "report", "--config", str(cfg), "--out",
                          str(tmp_path / "out"), "--demo", "--dashboards", "overview,anomalies"],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    assert "demo data loaded: otel_logs" in out.stdout
    for name in ("overview.png", "anomalies.png"):
        assert (tmp_path / "out" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert (tmp_path / "out" / name).stat().st_size > 20_000  # drawn panels, not an empty canvas
    html = (tmp_path / "out" / "index.html").read_text()
    assert "overview.png" in html and "anomalies.png" in html
    bad = subprocess.run([sys.executable, "-m", "otelproc", "report", "--config", str(cfg), "--dashboards", "nope"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "unknown dashboards nope" in bad.stderr
