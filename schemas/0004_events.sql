-- Every event of all eight types, as the event log has it: the common columns for filtering
-- and `payload`, the event's full JSON line, from which the store rebuilds it exactly.
-- `inserted_at` orders events for `tail --source clickhouse`.
CREATE TABLE IF NOT EXISTS events
(
    tenant_id       LowCardinality(String),
    conversation_id String,
    timestamp       DateTime64(6, 'UTC') CODEC(Delta, ZSTD(1)),
    event_id        UUID,
    event_type      LowCardinality(String),
    level           LowCardinality(String),
    service         LowCardinality(String),
    agent_id        LowCardinality(String),
    speaker         LowCardinality(String),
    content         String CODEC(ZSTD(3)),
    metadata        Map(String, String),
    trace_id        String,
    span_id         String,
    parent_span_id  String,
    payload         String CODEC(ZSTD(3)),
    inserted_at     DateTime64(6, 'UTC') DEFAULT now64(6)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(timestamp)
ORDER BY (tenant_id, conversation_id, timestamp, event_id)
TTL toDateTime(timestamp) + INTERVAL ${RETENTION_DAYS} DAY
SETTINGS non_replicated_deduplication_window = 10000;
