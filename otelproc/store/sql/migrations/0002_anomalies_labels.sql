-- anomalies gained a Labels map (the finding's structured details: slope_pct_per_hour and
-- hours_to_threshold of a trend, resolution, series, parameter). A table created from an older
-- anomalies.sql lacks it; on a table created from the current file this is a no-op.
ALTER TABLE ${database}.${table(anomalies)} ${cluster}
    ADD COLUMN IF NOT EXISTS Labels Map(LowCardinality(String), String) CODEC(ZSTD(1));
