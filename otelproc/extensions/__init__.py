"""Extensions: components outside the data path, started before the pipelines (see component.Extension).

``clickhouse_query`` (:mod:`otelproc.extensions.query_endpoint`) serves the embedded chDB store
over a read-only ClickHouse-compatible HTTP interface, so Grafana and clickhouse-connect can
query a store that has no server.
"""
