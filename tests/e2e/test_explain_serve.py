"""`otelproc serve`: OTLP/HTTP in (requests built with the protobuf library)
from four pods of one service, one of them starts failing; the webhook payload names that pod and
carries the incident id, and the anomalies table holds the explanation."""
from __future__ import annotations

import urllib.request

import numpy as np
import pytest

from otelproc.alerting.sink import WebhookSink
from tests.e2e.conftest import free_port
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
from tests.otlp_util import kv

pytestmark = pytest.mark.e2e

T0 = 1_767_225_600 * 10**9  # event time in the past: detection runs on event time
NS = 10**9
PODS = 4
BAD_POD = 2
FAIL_AT_S = 1500
END_S = 1800


RULES = """
rules:
  - alert: ErrorRatioJump
    kinds: [error_ratio]
    severities: [warning, critical]
    annotations:
      summary: '{{ service }}: error ratio {{ observed:.1%}} (expected {{ expected:.1%}})'
route:
  receiver: hook
  group_by: [incident]
  group_wait: 0s
receivers:
  - name: hook
    webhook_configs: [{url: "${env:EXPLAIN_E2E_WEBHOOK}"}]
"""


def config(http_port: int, data_dir: str) -> str:
    return f"""
receivers:
  otlp: {{protocols: {{http: {{endpoint: "127.0.0.1:{http_port}"}}}}}}
processors:
  patterns: {{}}
  anomaly: {{warmup: 10m}}
  alerting: {{rules_file: alerts.yaml}}
exporters:
  clickhouse: {{endpoint: "chdb://{data_dir}", database: otel, ttl: 0s}}
service:
  telemetry: {{logs: {{level: info}}, metrics: {{address: ""}}}}
  pipelines:
    logs: {{receivers: [otlp], processors: [patterns, anomaly, alerting], exporters: [clickhouse]}}
"""


def request(start_s: int, seconds: int, rng: np.random.Generator) -> bytes:
    """One ExportLogsServiceRequest: a ResourceLogs per pod (k8s.pod.name, host.name, service.version)."""
    req = ExportLogsServiceRequest()
    for pod in range(PODS):
        rl = req.resource_logs.add()
        rl.resource.attributes.extend([kv("service.name", "shop"), kv("k8s.pod.name", f"shop-7f9c-{pod}"),
                                       kv("host.name", f"node-{pod}"), kv("service.version", "1.4.2")])
        sl = rl.scope_logs.add()
        n = int(rng.poisson(8 * seconds))
        t = np.sort(rng.integers(0, seconds * NS, n)) + T0 + start_s * NS
        bad = pod == BAD_POD and start_s >= FAIL_AT_S
        err = rng.random(n) < (0.4 if bad else 0.005)
        for i in range(n):
            order = int(rng.integers(10_000, 99_999))
            if err[i]:
                body, sev, text = f"order {order} failed: upstream payment timeout after 3000 ms", 17, "ERROR"
            else:
                body, sev, text = f"order {order} placed in {rng.integers(5, 90)} ms", 9, "INFO"
            rec = LogRecord(time_unix_nano=int(t[i]), severity_number=sev, severity_text=text,
                            body=AnyValue(string_value=body))
            rec.attributes.extend([kv("http.route", ["/cart", "/checkout", "/orders"][int(rng.integers(3))]),
                                   kv("request.id", f"{int(rng.integers(1 << 40)):x}")])
            sl.log_records.append(rec)
    return req.SerializeToString()


def test_webhook_names_the_failing_pod_and_the_incident(otelproc_server, tmp_path, monkeypatch):
    sink = WebhookSink()
    try:
        # a rules file beside the config: error-ratio findings to the webhook, grouped by incident (as the
        # shipped route); the explanation annotation is added to every findings alert
        monkeypatch.setenv("EXPLAIN_E2E_WEBHOOK", sink.url("/hook"))
        (tmp_path / "alerts.yaml").write_text(RULES)
        http_port = free_port()
        server = otelproc_server(config(http_port, str(tmp_path / "data")))
        rng = np.random.default_rng(11)
        for s in range(0, END_S, 5):
            body = request(s, 5, rng)
            req = urllib.request.Request(f"http://127.0.0.1:{http_port}/v1/logs", data=body, method="POST",
                                         headers={"Content-Type": "application/x-protobuf"})
            with urllib.request.urlopen(req, timeout=30) as resp:
                assert resp.status == 200
        hooks = sink.wait_for(1, timeout=120, path="/hook")
        payload = hooks[0].json
        alert = next(a for a in payload["alerts"] if a["labels"]["alertname"] == "ErrorRatioJump")
        assert alert["labels"]["service"] == "shop"
        incident = alert["labels"]["incident"]
        assert incident.startswith("shop@") and payload["groupLabels"] == {"incident": incident}
        explanation = alert["annotations"]["explanation"]
        assert explanation.startswith(f"k8s.pod.name=shop-7f9c-{BAD_POD} (also host.name=node-{BAD_POD}): "), \
            explanation
        assert "request.id" not in explanation and "service.version" not in explanation
        assert server.stop() == 0
        rows = server.sql("SELECT Kind, tupleElement(Explanation[1], 'Value') AS value FROM anomalies "
                          "WHERE Kind = 'error_ratio' ORDER BY Timestamp")
        assert rows and rows[0]["value"] == f"shop-7f9c-{BAD_POD}"
    finally:
        sink.close()
