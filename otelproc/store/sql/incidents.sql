-- incidents: findings of several services close in time grouped into one incident by the anomaly
-- processor (otelproc/anomaly/incidents.py). One row per change of an incident; the row with the highest
-- Version is its current state (ReplacingMergeTree: use FINAL or argMax). IncidentId is the `incident`
-- label of its findings and alerts. Origin: the probable origin (earliest onset; among services within
-- 2 minutes of it, the one the others call), OriginReason says why. Chain: the services it reached, origin
-- first, then by onset (Service, Onset = earliest finding time, FirstKind, Severity = highest). Example:
--   SELECT IncidentId, Start, Origin, Chain.1 AS services FROM incidents FINAL
--   WHERE Start > now() - INTERVAL 1 DAY ORDER BY Start DESC
CREATE TABLE IF NOT EXISTS ${database}.${table} ${cluster} (
    IncidentId String,
    Start DateTime64(9) CODEC(Delta(8), ZSTD(1)),
    Updated DateTime64(9) CODEC(Delta(8), ZSTD(1)),
    Origin LowCardinality(String),
    OriginReason String CODEC(ZSTD(1)),
    Services Array(LowCardinality(String)),
    Chain Array(Tuple(Service String, Onset DateTime64(9), FirstKind String, Severity String)) CODEC(ZSTD(1)),
    Findings UInt32,
    Severity LowCardinality(String),
    Version UInt64
) ENGINE = ${engine(ReplacingMergeTree(Version))}
PARTITION BY toDate(Start)
ORDER BY IncidentId
${ttl(toDateTime(Start))};
