-- Spans, so `query trace` works without Tempo: the conversation's root span (written when it
-- ends) and one child span per turn, decision and transfer, with the same ids as the event log
-- and the OTLP export.
CREATE TABLE IF NOT EXISTS spans
(
    tenant_id       LowCardinality(String),
    trace_id        String,
    span_id         String,
    parent_span_id  String,
    conversation_id String,
    name            LowCardinality(String),
    service         LowCardinality(String),
    start_time      DateTime64(6, 'UTC') CODEC(Delta, ZSTD(1)),
    end_time        DateTime64(6, 'UTC') CODEC(Delta, ZSTD(1)),
    duration_ms     Float64,
    status          LowCardinality(String),
    attributes      Map(String, String),
    event_id        UUID
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(start_time)
ORDER BY (tenant_id, trace_id, span_id, event_id)
TTL toDateTime(start_time) + INTERVAL ${RETENTION_DAYS} DAY
SETTINGS non_replicated_deduplication_window = 10000;
