"""The files the package ships (otelproc/defaults) are the repository's examples, byte for byte:
config/otelproc.yaml, config/alerts.yaml and grafana/dashboards/*.json. Edit either copy, then copy
it over the other (dashboards: `python grafana/build_dashboards.py` writes both)."""
from __future__ import annotations

from pathlib import Path

import pytest

from otelproc import defaults
from otelproc.config import ConfigError, load_config, parse_config

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("packaged, example", [
    (defaults.CONFIG, REPO / "config" / "otelproc.yaml"),
    (defaults.ALERT_RULES, REPO / "config" / "alerts.yaml"),
])
def test_packaged_config_files_equal_the_examples(packaged: Path, example: Path):
    assert packaged.read_bytes() == example.read_bytes(), \
        f"{example.relative_to(REPO)} and {packaged.relative_to(REPO)} differ: copy the edited one over the other"


def test_packaged_dashboards_equal_grafana_dashboards():
    shipped = {p.name: p.read_bytes() for p in defaults.DASHBOARDS.glob("*.json")}
    examples = {p.name: p.read_bytes() for p in (REPO / "grafana" / "dashboards").glob("*.json")}
    assert shipped and set(shipped) == set(examples), "run python grafana/build_dashboards.py"
    for name, data in examples.items():
        assert shipped[name] == data, f"{name} differs from the packaged copy: run python grafana/build_dashboards.py"


def test_embedded_default_finds_its_rules_beside_it_from_any_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("OTELPROC_ALERT_RULES", raising=False)
    monkeypatch.setenv("OTELPROC_HOME", str(tmp_path / "home"))
    cfg = load_config(defaults.CONFIG)
    assert cfg.processors["alerting"].rules_path() == str(defaults.ALERT_RULES)
    assert cfg.processors["patterns"].state_dir == f"{tmp_path}/home/patterns"
    assert cfg.exporters["clickhouse"].endpoint == f"chdb://{tmp_path}/home"


def test_relative_rules_file_is_relative_to_the_config_file(tmp_path, monkeypatch):
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "rules.yaml").write_bytes(defaults.ALERT_RULES.read_bytes())
    text = defaults.CONFIG.read_text().replace("${env:OTELPROC_ALERT_RULES:-alerts.yaml}", "rules.yaml")
    (tmp_path / "conf" / "otelproc.yaml").write_text(text)
    monkeypatch.chdir(tmp_path)
    cfg = load_config("conf/otelproc.yaml")
    assert cfg.processors["alerting"].rules_path() == str(tmp_path / "conf" / "rules.yaml")
    # the same text without a file: relative to the working directory
    with pytest.raises(ConfigError, match="rules_file: rules.yaml: cannot read"):
        parse_config(text)
