-- anomalies: one row per finding of the anomaly processor (spike, drop, level_shift,
-- new_pattern, rare_pattern, vanished_pattern, error_ratio, value_anomaly, trend).
-- Timestamp is the event-time start of the bucket the finding is about; Observed/Expected/
-- Lower/Upper are in the unit of Series (log_count: lines per bucket, error_ratio: 0-1,
-- p50_ms: milliseconds). Labels holds the finding's structured details, e.g. for Kind 'trend':
-- slope_pct_per_hour, hours_to_threshold ('inf' when not rising), t_stat, ramp_minutes; for every
-- kind: resolution, series (and parameter for duration series). Explanation: the attribute values
-- (Attribute 'log.pattern.id' for patterns) whose share of the finding's lines (Population: errors,
-- pattern errors, lines) in its bucket differs most from before: Share vs BaselineShare, Lift, Log10P
-- (Bonferroni-adjusted), Also (values with the same lines, e.g. a pod's host). Example:
--   SELECT Timestamp, ServiceName, Kind, Score, Description FROM anomalies
--   WHERE Timestamp > now() - INTERVAL 1 HOUR ORDER BY Score DESC LIMIT 20
--   SELECT ServiceName, toFloat64OrNull(Labels['slope_pct_per_hour']) AS pct_per_hour,
--          toFloat64OrNull(Labels['hours_to_threshold']) AS hours_left FROM anomalies WHERE Kind = 'trend'
CREATE TABLE IF NOT EXISTS ${database}.${table} ${cluster} (
    Timestamp DateTime64(9) CODEC(Delta(8), ZSTD(1)),
    ServiceName LowCardinality(String),
    PatternId UInt64,
    Kind LowCardinality(String),
    Score Float32,
    Observed Float64,
    Expected Float64,
    Lower Float64,
    Upper Float64,
    Severity LowCardinality(String),
    Description String CODEC(ZSTD(1)),
    ResolutionSeconds Float32,
    Series LowCardinality(String),
    Template String CODEC(ZSTD(1)),
    Labels Map(LowCardinality(String), String) CODEC(ZSTD(1)),
    Explanation Array(Tuple(Attribute String, Value String, Count Float64, BaselineCount Float64, Share Float64,
        BaselineShare Float64, Lift Float64, Log10P Float64, Also Array(String), Population String)) CODEC(ZSTD(1))
) ENGINE = ${engine}
PARTITION BY toDate(Timestamp)
ORDER BY (ServiceName, Kind, Timestamp)
${ttl(toDateTime(Timestamp))};
