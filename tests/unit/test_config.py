"""Config loading: env substitution, typed decoding, every error with its key path."""
from pathlib import Path

import pytest

from otelproc.config import ConfigError, load_config, parse_config, parse_bytes, parse_duration

REPO = Path(__file__).resolve().parents[2]

MINIMAL = """
receivers:
  otlp:
    protocols:
      http:
processors:
  batch: {send_batch_size: 100, timeout: 200ms}
exporters:
  debug:
service:
  pipelines:
    logs: {receivers: [otlp], processors: [batch], exporters: [debug]}
"""


def errors_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as ei:
        parse_config(text)
    return ei.value.errors


@pytest.mark.parametrize("name", ["otelproc.yaml", "clickhouse-server.yaml"])
def test_shipped_configs_are_valid(name):
    cfg = load_config(REPO / "config" / name)
    assert "logs" in cfg.service.pipelines


def test_minimal_config_decodes_into_typed_dataclasses():
    cfg = parse_config(MINIMAL)
    otlp = cfg.receivers["otlp"]
    assert otlp.protocols.grpc is None                       # absent: off
    assert otlp.protocols.http.endpoint == "localhost:4318"  # present but empty: on, defaults
    assert cfg.processors["batch"].send_batch_size == 100
    assert cfg.processors["batch"].timeout == pytest.approx(0.2)
    assert cfg.service.pipelines["logs"].exporters == ["debug"]


def test_env_substitution_with_defaults_and_types(monkeypatch):
    monkeypatch.setenv("OTP_SIZE", "321")
    monkeypatch.setenv("OTP_EP", "127.0.0.1:9999")
    cfg = parse_config(MINIMAL.replace("send_batch_size: 100", "send_batch_size: '${env:OTP_SIZE}'")
                       .replace("http:\n", "http: {endpoint: '${env:OTP_EP}'}\n")
                       .replace("timeout: 200ms", "timeout: '${env:OTP_UNSET:-3s}'"))
    assert cfg.processors["batch"].send_batch_size == 321
    assert cfg.receivers["otlp"].protocols.http.endpoint == "127.0.0.1:9999"
    assert cfg.processors["batch"].timeout == 3.0


def test_missing_env_var_is_reported_with_its_path():
    errs = errors_of(MINIMAL.replace("send_batch_size: 100", "send_batch_size: '${env:OTP_DEFINITELY_UNSET}'"))
    assert any(e.startswith("processors::batch::send_batch_size: environment variable OTP_DEFINITELY_UNSET") for e in errs)


def test_every_error_is_reported_with_key_path():
    bad = """
receivers:
  otlp:
    protocols:
      http: {endpoint: "nonsense", max_request_body_size: lots}
      grcp: {}
processors:
  batch: {send_batch_size: -1, timeout: soon, extra: 1}
exporters:
  debug: {verbosity: loud}
  nosuch: {}
service:
  pipelines:
    logs: {receivers: [otlp], processors: [batch, memory_limiter], exporters: [debug]}
    metrics: {receivers: [otlp], exporters: [debug]}
"""
    errs = errors_of(bad)
    expected_prefixes = [
        "receivers::otlp::protocols::http::endpoint:",
        "receivers::otlp::protocols::http::max_request_body_size:",
        "receivers::otlp::protocols::grcp: unknown key",
        "processors::batch::send_batch_size: must be >= 1, got -1",
        "processors::batch::timeout:",
        "processors::batch::extra: unknown key",
        "exporters::debug::verbosity: must be one of",
        "exporters::nosuch: unknown exporter type 'nosuch'",
        "service::pipelines::logs::processors[1]: 'memory_limiter' is not configured",
        "service::pipelines::metrics: only logs pipelines",
    ]
    for prefix in expected_prefixes:
        assert any(e.startswith(prefix) for e in errs), (prefix, errs)


def test_unknown_top_level_key_and_bad_yaml():
    assert any(e.startswith("recievers: unknown top-level key") for e in errors_of("recievers: {}\n" + MINIMAL))
    assert "not valid YAML" in errors_of("receivers: [unclosed")[0]


def test_pipeline_needs_receivers_and_exporters():
    errs = errors_of(MINIMAL.replace("exporters: [debug]}", "exporters: []}"))
    assert "service::pipelines::logs::exporters: a pipeline needs at least one exporter" in errs


def test_named_components_type_slash_name():
    cfg = parse_config(MINIMAL.replace("  debug:\n", "  debug:\n  debug/verbose: {verbosity: detailed}\n")
                       .replace("exporters: [debug]}", "exporters: [debug, debug/verbose]}"))
    assert cfg.exporters["debug/verbose"].verbosity == "detailed"


def test_durations_and_sizes():
    assert parse_duration("200ms") == pytest.approx(0.2)
    assert parse_duration("1h") == 3600
    assert parse_duration(5) == 5
    assert parse_bytes("4MiB") == 4 << 20
    assert parse_bytes(1000) == 1000
    with pytest.raises(ValueError):
        parse_duration("5 parsecs")


def test_unreadable_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "missing.yaml")


def test_secret_never_prints():
    from otelproc.config import Secret
    s = Secret("hunter2")
    assert "hunter2" not in repr(s)
    assert s == "hunter2"
