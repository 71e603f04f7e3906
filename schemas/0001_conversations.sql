-- One row per conversation.
--
-- The start writes version 1 (status 'active'); the end writes version 2 with every column
-- (conversation.ended repeats the start's customer, language, start time and metadata), so
-- ReplacingMergeTree(version) keeps only the end row once parts merge. The start time is the
-- partition key and both rows carry the same one, so they always land in the same partition.
--
-- Merges run in the background: until they do, both rows exist. Read with FINAL
-- (`SELECT … FROM conversations FINAL`), which is what serphona-obs's store does, or with
-- `argMax(column, version) … GROUP BY tenant_id, conversation_id`. Never count rows without one of these.
CREATE TABLE IF NOT EXISTS conversations
(
    tenant_id         LowCardinality(String),
    conversation_id   String,
    agent_id          LowCardinality(String),
    customer_id       String,
    channel           LowCardinality(String),
    language          LowCardinality(String),
    service           LowCardinality(String),
    status            LowCardinality(String),
    started_at        DateTime64(6, 'UTC') CODEC(Delta, ZSTD(1)),
    ended_at          Nullable(DateTime64(6, 'UTC')),
    duration_seconds  Nullable(Float64),
    resolution        LowCardinality(Nullable(String)),
    rating            Nullable(UInt8),
    interaction_count UInt32,
    agent_turns       UInt32,
    customer_turns    UInt32,
    tags              Array(LowCardinality(String)),
    trace_id          String,
    span_id           String,
    metadata          Map(String, String),
    event_id          UUID,
    version           UInt8
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(started_at)
ORDER BY (tenant_id, conversation_id)
TTL toDateTime(started_at) + INTERVAL ${RETENTION_DAYS} DAY
SETTINGS non_replicated_deduplication_window = 10000;
