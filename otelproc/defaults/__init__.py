"""The files otelproc ships and uses when none is given.

* ``otelproc.yaml``: the embedded default config (``otelproc serve`` without ``--config``);
* ``alerts.yaml``: the alert rules, routes and receivers (``processors::alerting::rules_file`` empty,
  ``otelproc demo`` without ``--rules``);
* ``dashboards/*.json``: the Grafana dashboards, drawn by ``otelproc report``.

The repository's ``config/`` and ``grafana/dashboards/`` hold the same files as examples;
``tests/unit/test_packaged_files.py`` keeps each pair byte-equal.
"""
from __future__ import annotations

from pathlib import Path

__all__ = ["DIRECTORY", "CONFIG", "ALERT_RULES", "DASHBOARDS"]

DIRECTORY = Path(__file__).resolve().parent
CONFIG = DIRECTORY / "otelproc.yaml"
ALERT_RULES = DIRECTORY / "alerts.yaml"
DASHBOARDS = DIRECTORY / "dashboards"
