-- The seed's column names and types, beside ours, for the platform's services that query
-- `conversations` and `interactions` by them:
--
--   conversations: start_time, end_time    (ALIAS of started_at, ended_at)
--   interactions:  interaction_id          (ALIAS of the event id, as text: unique per row)
--                  sentiment               the label positive | neutral | negative, or '' when
--                                          unknown; the number it was before is now
--                                          sentiment_score
--
-- Rows stored before this migration keep their score (the column is renamed, not rewritten)
-- and get their label from it with the thresholds of the library's `Sentiment` type
-- (score >= 0.25 positive, <= -0.25 negative, else neutral; no score: ''). New rows carry the
-- label the event has.
--
-- The hourly rollup's view reads the score, so it is dropped for the rename and created again
-- over sentiment_score (rows inserted while this migration runs are not rolled up).
-- The rename and the new column are one ALTER: run it twice and the second fails with
-- DUPLICATE_COLUMN, which leaves the table as it should be.
DROP VIEW IF EXISTS interactions_hourly_mv;

ALTER TABLE interactions
    RENAME COLUMN sentiment TO sentiment_score,
    ADD COLUMN sentiment LowCardinality(String)
        DEFAULT multiIf(sentiment_score IS NULL, '', sentiment_score >= 0.25, 'positive', sentiment_score <= -0.25, 'negative', 'neutral')
        AFTER content;

ALTER TABLE interactions
    ADD COLUMN IF NOT EXISTS interaction_id String ALIAS toString(event_id);

ALTER TABLE conversations
    ADD COLUMN IF NOT EXISTS start_time DateTime64(6, 'UTC') ALIAS started_at,
    ADD COLUMN IF NOT EXISTS end_time Nullable(DateTime64(6, 'UTC')) ALIAS ended_at;

CREATE MATERIALIZED VIEW IF NOT EXISTS interactions_hourly_mv TO interactions_hourly AS
SELECT
    tenant_id,
    agent_id,
    speaker_type,
    toStartOfHour(timestamp) AS hour,
    count() AS turns,
    countIf(interrupted) AS interrupted,
    sum(ifNull(sentiment_score, 0)) AS sentiment_sum,
    countIf(sentiment_score IS NOT NULL) AS sentiment_scored,
    quantilesStateIf(0.5, 0.95, 0.99)(assumeNotNull(response_time_seconds), response_time_seconds IS NOT NULL) AS response_quantiles,
    quantilesStateIf(0.5, 0.95, 0.99)(assumeNotNull(stt_ms), stt_ms IS NOT NULL) AS stt_quantiles,
    quantilesStateIf(0.5, 0.95, 0.99)(assumeNotNull(llm_ttft_ms), llm_ttft_ms IS NOT NULL) AS llm_ttft_quantiles,
    quantilesStateIf(0.5, 0.95, 0.99)(assumeNotNull(tts_ttfb_ms), tts_ttfb_ms IS NOT NULL) AS tts_ttfb_quantiles
FROM interactions
GROUP BY tenant_id, agent_id, speaker_type, hour;
