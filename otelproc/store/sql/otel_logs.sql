-- otel_logs: the OpenTelemetry Collector contrib clickhouseexporter logs table
-- (exporter/clickhouseexporter/internal/sqltemplates/logs_table.sql), column for column,
-- so Grafana dashboards and queries written for it work unchanged; plus otelproc's
-- enrichment columns appended at the end (all with defaults, so rows from other writers fit).
-- Codecs are ours (names and types are the Collector's): ResourceAttributes and ScopeName repeat
-- row after row in the (ServiceName, time) order, where LZ4 is both smaller and cheaper than
-- ZSTD(1) (1M logs: 0.28 vs 1.95 MiB, 0.08 vs 0.25 MiB; store CPU -16 %, benchmarks/README.md
-- "Issue 19"); the other columns keep ZSTD(1), which halves them against LZ4.
CREATE TABLE IF NOT EXISTS ${database}.${table} ${cluster} (
    Timestamp DateTime64(9) CODEC(Delta(8), ZSTD(1)),
    TimestampTime DateTime DEFAULT toDateTime(Timestamp),
    TraceId String CODEC(ZSTD(1)),
    SpanId String CODEC(ZSTD(1)),
    TraceFlags UInt8,
    SeverityText LowCardinality(String) CODEC(ZSTD(1)),
    SeverityNumber UInt8,
    ServiceName LowCardinality(String) CODEC(ZSTD(1)),
    Body String CODEC(ZSTD(1)),
    ResourceSchemaUrl LowCardinality(String) CODEC(ZSTD(1)),
    ResourceAttributes Map(LowCardinality(String), String) CODEC(LZ4),
    ScopeSchemaUrl LowCardinality(String) CODEC(ZSTD(1)),
    ScopeName String CODEC(LZ4),
    ScopeVersion LowCardinality(String) CODEC(ZSTD(1)),
    ScopeAttributes Map(LowCardinality(String), String) CODEC(ZSTD(1)),
    LogAttributes Map(LowCardinality(String), String) CODEC(ZSTD(1)),
    EventName String CODEC(ZSTD(1)),
    PatternId UInt64 DEFAULT 0 CODEC(ZSTD(1)),
    PatternTemplate LowCardinality(String) DEFAULT '' CODEC(ZSTD(1)),
    PatternParams Array(String) DEFAULT [] CODEC(ZSTD(1)),
    AnomalyScore Float32 DEFAULT 0 CODEC(ZSTD(1)),

    INDEX idx_trace_id TraceId TYPE bloom_filter(0.001) GRANULARITY 1,
    INDEX idx_res_attr_key mapKeys(ResourceAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_res_attr_value mapValues(ResourceAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_scope_attr_key mapKeys(ScopeAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_scope_attr_value mapValues(ScopeAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_log_attr_key mapKeys(LogAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_log_attr_value mapValues(LogAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_body Body TYPE tokenbf_v1(32768, 3, 0) GRANULARITY 8,
    INDEX idx_pattern_id PatternId TYPE bloom_filter(0.01) GRANULARITY 1
) ENGINE = ${engine}
PARTITION BY toDate(TimestampTime)
PRIMARY KEY (ServiceName, TimestampTime)
ORDER BY (ServiceName, TimestampTime, Timestamp)
${ttl(TimestampTime)}
SETTINGS index_granularity = 8192, ttl_only_drop_parts = 1
