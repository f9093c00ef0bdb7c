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


def test_every_third_party_import_is_a_declared_dependency():
    """What otelproc imports at run time is installed with it: `dependencies`, or the `report` extra
    (matplotlib, imported only by `otelproc report`)."""
    import ast
    import importlib.metadata
    import re
    import sys

    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    declared = project["dependencies"] + project["optional-dependencies"]["report"]
    names = {re.sub(r"[-_.]+", "-", re.match(r"[A-Za-z0-9_.\-]+", d).group(0)).lower() for d in declared}
    modules = set()
    for path in (REPO / "otelproc").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules.add(node.module.split(".")[0])
    # `compression` is the standard library's from Python 3.14 (zstd; the backport below it otherwise)
    third_party = sorted(modules - set(sys.stdlib_module_names) - {"otelproc", "__future__", "compression"})
    providers = importlib.metadata.packages_distributions()
    missing = [m for m in third_party
               if not {re.sub(r"[-_.]+", "-", d).lower() for d in providers.get(m, [])} & names]
    assert not missing, f"imported by otelproc/ but not declared in pyproject.toml: {missing}"
