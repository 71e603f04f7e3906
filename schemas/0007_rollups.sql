-- Hourly rollups for dashboards, filled by materialized views as rows arrive.
-- Read them with the -Merge combinators / sums, grouped by the key, e.g.
--   SELECT hour, sum(conversations), quantilesMerge(0.5, 0.95, 0.99)(duration_quantiles)
--   FROM conversations_hourly WHERE tenant_id = 'acme' GROUP BY hour ORDER BY hour
-- Retried inserts are deduplicated here too (the sink sends
-- deduplicate_blocks_in_dependent_materialized_views = 1).
CREATE TABLE IF NOT EXISTS conversations_hourly
(
    tenant_id            LowCardinality(String),
    agent_id             LowCardinality(String),
    channel              LowCardinality(String),
    resolution           LowCardinality(String),
    hour                 DateTime('UTC'),
    conversations        SimpleAggregateFunction(sum, UInt64),
    interactions         SimpleAggregateFunction(sum, UInt64),
    duration_seconds_sum SimpleAggregateFunction(sum, Float64),
    rating_sum           SimpleAggregateFunction(sum, UInt64),
    rated                SimpleAggregateFunction(sum, UInt64),
    duration_quantiles   AggregateFunction(quantiles(0.5, 0.95, 0.99), Float64)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(hour)
ORDER BY (tenant_id, agent_id, channel, resolution, hour)
TTL hour + INTERVAL ${RETENTION_DAYS} DAY
SETTINGS non_replicated_deduplication_window = 10000;

CREATE MATERIALIZED VIEW IF NOT EXISTS conversations_hourly_mv TO conversations_hourly AS
SELECT
    tenant_id,
    agent_id,
    channel,
    assumeNotNull(resolution) AS resolution,
    toStartOfHour(assumeNotNull(ended_at)) AS hour,
    count() AS conversations,
    sum(interaction_count) AS interactions,
    sum(assumeNotNull(duration_seconds)) AS duration_seconds_sum,
    sum(toUInt64(ifNull(rating, 0))) AS rating_sum,
    countIf(rating IS NOT NULL) AS rated,
    quantilesState(0.5, 0.95, 0.99)(assumeNotNull(duration_seconds)) AS duration_quantiles
FROM conversations
WHERE version = 2
GROUP BY tenant_id, agent_id, channel, resolution, hour;

CREATE TABLE IF NOT EXISTS interactions_hourly
(
    tenant_id           LowCardinality(String),
    agent_id            LowCardinality(String),
    speaker_type        LowCardinality(String),
    hour                DateTime('UTC'),
    turns               SimpleAggregateFunction(sum, UInt64),
    interrupted         SimpleAggregateFunction(sum, UInt64),
    sentiment_sum       SimpleAggregateFunction(sum, Float64),
    sentiment_scored    SimpleAggregateFunction(sum, UInt64),
    response_quantiles  AggregateFunction(quantiles(0.5, 0.95, 0.99), Float64),
    stt_quantiles       AggregateFunction(quantiles(0.5, 0.95, 0.99), Float64),
    llm_ttft_quantiles  AggregateFunction(quantiles(0.5, 0.95, 0.99), Float64),
    tts_ttfb_quantiles  AggregateFunction(quantiles(0.5, 0.95, 0.99), Float64)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(hour)
ORDER BY (tenant_id, agent_id, speaker_type, hour)
TTL hour + INTERVAL ${RETENTION_DAYS} DAY
SETTINGS non_replicated_deduplication_window = 10000;

CREATE MATERIALIZED VIEW IF NOT EXISTS interactions_hourly_mv TO interactions_hourly AS
SELECT
    tenant_id,
    agent_id,
    speaker_type,
    toStartOfHour(timestamp) AS hour,
    count() AS turns,
    countIf(interrupted) AS interrupted,
    sum(ifNull(sentiment, 0)) AS sentiment_sum,
    countIf(sentiment IS NOT NULL) AS sentiment_scored,
    quantilesStateIf(0.5, 0.95, 0.99)(assumeNotNull(response_time_seconds), response_time_seconds IS NOT NULL) AS response_quantiles,
    quantilesStateIf(0.5, 0.95, 0.99)(assumeNotNull(stt_ms), stt_ms IS NOT NULL) AS stt_quantiles,
    quantilesStateIf(0.5, 0.95, 0.99)(assumeNotNull(llm_ttft_ms), llm_ttft_ms IS NOT NULL) AS llm_ttft_quantiles,
    quantilesStateIf(0.5, 0.95, 0.99)(assumeNotNull(tts_ttfb_ms), tts_ttfb_ms IS NOT NULL) AS tts_ttfb_quantiles
FROM interactions
GROUP BY tenant_id, agent_id, speaker_type, hour;
