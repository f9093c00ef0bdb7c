-- log_patterns: one row per (service, pattern) after merges. The patterns processor inserts
-- DELTA rows (this batch's count, min/max time, a sample), so many instances and restarts add
-- up correctly: AggregatingMergeTree with SimpleAggregateFunction columns merges them.
-- Read with GROUP BY (or FINAL), e.g.
--   SELECT ServiceName, PatternId, any(Template), min(FirstSeen), max(LastSeen), sum(Count)
--   FROM log_patterns GROUP BY ServiceName, PatternId
-- Aliases: ids this pattern had before it generalised (a token became <*>), so history that
-- carries an old PatternId joins via arrayJoin(Aliases).
CREATE TABLE IF NOT EXISTS ${database}.${table} ${cluster} (
    ServiceName LowCardinality(String),
    PatternId UInt64,
    Template SimpleAggregateFunction(any, String),
    FirstSeen SimpleAggregateFunction(min, DateTime64(9)),
    LastSeen SimpleAggregateFunction(max, DateTime64(9)),
    Count SimpleAggregateFunction(sum, UInt64),
    SampleBody SimpleAggregateFunction(any, String),
    -- severity mix: counts by class of SeverityNumber (0 unset, 1-8 trace/debug, 9-12 info, 13-16 warn, 17-24 error/fatal)
    CountUnset SimpleAggregateFunction(sum, UInt64),
    CountDebug SimpleAggregateFunction(sum, UInt64),
    CountInfo SimpleAggregateFunction(sum, UInt64),
    CountWarn SimpleAggregateFunction(sum, UInt64),
    CountError SimpleAggregateFunction(sum, UInt64),
    Aliases SimpleAggregateFunction(groupUniqArrayArray, Array(UInt64))
) ENGINE = ${engine(AggregatingMergeTree)}
ORDER BY (ServiceName, PatternId);
