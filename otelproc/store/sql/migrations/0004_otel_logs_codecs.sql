-- ResourceAttributes and ScopeName: LZ4 instead of ZSTD(1) (smaller and cheaper on these columns,
-- whose values repeat row after row in the table's order; see otel_logs.sql). New parts are
-- written with LZ4, existing parts change as merges rewrite them. A no-op on a table created
-- from the current otel_logs.sql.
ALTER TABLE ${database}.${table(otel_logs)} ${cluster}
    MODIFY COLUMN ResourceAttributes CODEC(LZ4),
    MODIFY COLUMN ScopeName CODEC(LZ4);
