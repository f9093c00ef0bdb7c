-- An otel_logs table created earlier by the Collector's clickhouseexporter (or by an older
-- otelproc) lacks EventName and otelproc's enrichment columns. Add them; on a table created
-- from otel_logs.sql they already exist and every statement is a no-op.
ALTER TABLE ${database}.${table(otel_logs)} ${cluster}
    ADD COLUMN IF NOT EXISTS EventName String CODEC(ZSTD(1)),
    ADD COLUMN IF NOT EXISTS PatternId UInt64 DEFAULT 0 CODEC(ZSTD(1)),
    ADD COLUMN IF NOT EXISTS PatternTemplate LowCardinality(String) DEFAULT '' CODEC(ZSTD(1)),
    ADD COLUMN IF NOT EXISTS PatternParams Array(String) DEFAULT [] CODEC(ZSTD(1)),
    ADD COLUMN IF NOT EXISTS AnomalyScore Float32 DEFAULT 0 CODEC(ZSTD(1));

ALTER TABLE ${database}.${table(otel_logs)} ${cluster}
    ADD INDEX IF NOT EXISTS idx_pattern_id PatternId TYPE bloom_filter(0.01) GRANULARITY 1;
