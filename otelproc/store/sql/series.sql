-- series: observed value and expected band per closed bucket (coarsest resolution) for
-- dashboards: log_count per service (PatternId 0 = all logs), error_ratio per service,
-- p50_ms[k] per (service, pattern, duration parameter k). Example (Grafana time series):
--   SELECT Timestamp, Observed, Expected, Lower, Upper FROM series
--   WHERE ServiceName = 'checkout' AND Series = 'log_count' AND $__timeFilter(Timestamp)
--   ORDER BY Timestamp
CREATE TABLE IF NOT EXISTS ${database}.${table} ${cluster} (
    Timestamp DateTime64(9) CODEC(Delta(8), ZSTD(1)),
    ServiceName LowCardinality(String),
    PatternId UInt64,
    Series LowCardinality(String),
    ResolutionSeconds Float32,
    Observed Float64,
    Expected Float64,
    Lower Float64,
    Upper Float64,
    Score Float32
) ENGINE = ${engine}
PARTITION BY toDate(Timestamp)
ORDER BY (ServiceName, Series, PatternId, Timestamp)
${ttl(toDateTime(Timestamp))};
