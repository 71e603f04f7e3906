-- One row per turn (interaction.agent and interaction.customer events), with the voice
-- latency parts. ReplacingMergeTree on a key that ends in event_id: a row delivered twice
-- (which insert deduplication already prevents) still collapses to one on merge.
CREATE TABLE IF NOT EXISTS interactions
(
    tenant_id             LowCardinality(String),
    conversation_id       String,
    timestamp             DateTime64(6, 'UTC') CODEC(Delta, ZSTD(1)),
    event_id              UUID,
    agent_id              LowCardinality(String),
    service               LowCardinality(String),
    speaker_type          LowCardinality(String),
    turn                  UInt32,
    content               String CODEC(ZSTD(3)),
    sentiment             Nullable(Float64),
    intent                LowCardinality(Nullable(String)),
    confidence            Nullable(Float64),
    assertiveness         Nullable(Float64),
    response_time_seconds Nullable(Float64),
    duration_ms           Nullable(Float64),
    stt_ms                Nullable(Float64),
    end_of_utterance_ms   Nullable(Float64),
    llm_ttft_ms           Nullable(Float64),
    tts_ttfb_ms           Nullable(Float64),
    response_ms           Nullable(Float64),
    interrupted           Bool,
    trace_id              String,
    span_id               String,
    parent_span_id        String,
    metadata              Map(String, String)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(timestamp)
ORDER BY (tenant_id, conversation_id, timestamp, event_id)
TTL toDateTime(timestamp) + INTERVAL ${RETENTION_DAYS} DAY
SETTINGS non_replicated_deduplication_window = 10000;
