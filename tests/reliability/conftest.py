"""Reliability tests run `otelproc serve` as a real process (kill -9, outages, hostile input)."""
from tests.e2e.conftest import OtelprocProcess, free_port, otelcol, otelproc_server  # noqa: F401 - fixtures
