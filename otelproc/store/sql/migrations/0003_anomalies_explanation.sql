-- anomalies gained an Explanation column (the attribute values and patterns that carry a finding,
-- otelproc/anomaly/explain.py). A table created from an older anomalies.sql lacks it; on a table
-- created from the current file this is a no-op. Old rows read as [].
ALTER TABLE ${database}.${table(anomalies)} ${cluster}
    ADD COLUMN IF NOT EXISTS Explanation Array(Tuple(Attribute String, Value String, Count Float64,
        BaselineCount Float64, Share Float64, BaselineShare Float64, Lift Float64, Log10P Float64,
        Also Array(String), Population String)) CODEC(ZSTD(1));
