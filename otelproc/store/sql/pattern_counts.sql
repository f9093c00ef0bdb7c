-- pattern_counts: lines per minute, service, pattern and severity. The patterns processor
-- inserts per-batch partial counts; SummingMergeTree adds rows with the same key on merge, so
-- always read with sum(Count) ... GROUP BY.
CREATE TABLE IF NOT EXISTS ${database}.${table} ${cluster} (
    Minute DateTime CODEC(Delta(4), ZSTD(1)),
    ServiceName LowCardinality(String),
    PatternId UInt64,
    SeverityNumber UInt8,
    Count UInt64
) ENGINE = ${engine(SummingMergeTree(Count))}
PARTITION BY toDate(Minute)
ORDER BY (ServiceName, PatternId, SeverityNumber, Minute);
