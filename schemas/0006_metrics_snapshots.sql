-- Point-in-time copies of the Prometheus registry (the library's `export_metrics`): one row
-- per series (histograms as _bucket/_sum/_count series, as Prometheus exposes them).
CREATE TABLE IF NOT EXISTS metrics_snapshots
(
    service     LowCardinality(String),
    taken_at    DateTime64(3, 'UTC') CODEC(Delta, ZSTD(1)),
    snapshot_id UUID,
    metric      LowCardinality(String),
    kind        LowCardinality(String),
    labels      Map(LowCardinality(String), String),
    value       Float64 CODEC(Gorilla, ZSTD(1))
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(taken_at)
ORDER BY (service, metric, taken_at, snapshot_id, labels)
TTL toDateTime(taken_at) + INTERVAL ${RETENTION_DAYS} DAY
SETTINGS non_replicated_deduplication_window = 10000;
