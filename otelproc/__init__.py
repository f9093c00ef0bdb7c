"""otelproc: OpenTelemetry-native log analysis engine."""

__version__ = "0.1.0"
