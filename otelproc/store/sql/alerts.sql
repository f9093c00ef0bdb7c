-- alerts: every notification the alerting processor sent, failed to send or dropped
-- (one row per alert per receiver integration per outcome). Written through batch.tables
-- by the clickhouse exporter; the rows are built by otelproc.alerting.engine.outcomes_to_arrow.
-- Outcome: sent | failed (gave up after retries, or a permanent error) | dropped (queue full).
-- Status: firing | resolved. LatencyMs: rule match -> delivery finished (NaN for resolves).
-- EndsAt is 0 (1970) for firing alerts. Example:
--   SELECT Timestamp, AlertName, ServiceName, Receiver, Outcome, Attempts, Error FROM alerts
--   WHERE Timestamp > now() - INTERVAL 1 DAY AND Outcome != 'sent' ORDER BY Timestamp DESC
CREATE TABLE IF NOT EXISTS ${database}.${table} ${cluster} (
    Timestamp DateTime64(9) CODEC(Delta(8), ZSTD(1)),
    AlertName LowCardinality(String),
    Fingerprint String,
    Status LowCardinality(String),
    Outcome LowCardinality(String),
    Receiver LowCardinality(String),
    Integration LowCardinality(String),
    ServiceName LowCardinality(String),
    Severity LowCardinality(String),
    GroupKey String CODEC(ZSTD(1)),
    Attempts UInt16,
    Error String CODEC(ZSTD(1)),
    LatencyMs Float64,
    StartsAt DateTime64(9),
    EndsAt DateTime64(9),
    EventTime DateTime64(9),
    Labels Map(LowCardinality(String), String) CODEC(ZSTD(1)),
    Annotations Map(LowCardinality(String), String) CODEC(ZSTD(1))
) ENGINE = ${engine}
PARTITION BY toDate(Timestamp)
ORDER BY (ServiceName, AlertName, Timestamp)
${ttl(toDateTime(Timestamp))};
