-- One row per agent decision (decision.made); a transfer decision is also in events as
-- transfer.initiated.
CREATE TABLE IF NOT EXISTS decisions
(
    tenant_id       LowCardinality(String),
    conversation_id String,
    timestamp       DateTime64(6, 'UTC') CODEC(Delta, ZSTD(1)),
    event_id        UUID,
    agent_id        LowCardinality(String),
    decision_type   LowCardinality(String),
    option          String,
    reason          String CODEC(ZSTD(3)),
    confidence      Nullable(Float64),
    duration_ms     Nullable(Float64),
    trace_id        String,
    span_id         String,
    metadata        Map(String, String)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(timestamp)
ORDER BY (tenant_id, conversation_id, timestamp, event_id)
TTL toDateTime(timestamp) + INTERVAL ${RETENTION_DAYS} DAY
SETTINGS non_replicated_deduplication_window = 10000;
