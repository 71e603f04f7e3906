-- Usage and cost, the latency parts added in wave 2, and turn-taking (issue 16).
--
--   interactions  what the turn used (model, tokens, audio seconds, characters, call seconds) and
--                 its cost in USD; the tool and greeting latency parts; the silence (gap_ms > 0)
--                 or overlap (gap_ms < 0) since the previous turn, dead air (a gap of at least
--                 voice.dead_air_threshold), and who interrupted ('customer', 'agent' or '')
--   decisions     what the decision used (an LLM call's tokens) and its cost
--   conversations the conversation's totals, from conversation.ended (0 on the start's row,
--                 version 1, which FINAL replaces): tokens, cost, interruptions, dead air, talk
--                 time per side
--
-- cost_usd is computed by the library when the turn is recorded, from its price table
-- (prices.yaml); a model the table does not know leaves cost_usd NULL on the turn and adds
-- nothing to the conversation's total.
ALTER TABLE interactions
    ADD COLUMN IF NOT EXISTS model LowCardinality(Nullable(String)),
    ADD COLUMN IF NOT EXISTS input_tokens Nullable(UInt64),
    ADD COLUMN IF NOT EXISTS output_tokens Nullable(UInt64),
    ADD COLUMN IF NOT EXISTS cached_tokens Nullable(UInt64),
    ADD COLUMN IF NOT EXISTS audio_tokens Nullable(UInt64),
    ADD COLUMN IF NOT EXISTS stt_seconds Nullable(Float64),
    ADD COLUMN IF NOT EXISTS tts_characters Nullable(UInt64),
    ADD COLUMN IF NOT EXISTS telephony_seconds Nullable(Float64),
    ADD COLUMN IF NOT EXISTS cost_usd Nullable(Float64),
    ADD COLUMN IF NOT EXISTS tool_ms Nullable(Float64),
    ADD COLUMN IF NOT EXISTS greeting_ms Nullable(Float64),
    ADD COLUMN IF NOT EXISTS gap_ms Nullable(Float64),
    ADD COLUMN IF NOT EXISTS dead_air_ms Nullable(Float64),
    ADD COLUMN IF NOT EXISTS interrupted_by LowCardinality(String) DEFAULT '',
    ADD COLUMN IF NOT EXISTS overlap_ms Nullable(Float64);

ALTER TABLE decisions
    ADD COLUMN IF NOT EXISTS model LowCardinality(Nullable(String)),
    ADD COLUMN IF NOT EXISTS input_tokens Nullable(UInt64),
    ADD COLUMN IF NOT EXISTS output_tokens Nullable(UInt64),
    ADD COLUMN IF NOT EXISTS cached_tokens Nullable(UInt64),
    ADD COLUMN IF NOT EXISTS cost_usd Nullable(Float64);

ALTER TABLE conversations
    ADD COLUMN IF NOT EXISTS input_tokens UInt64 DEFAULT 0,
    ADD COLUMN IF NOT EXISTS output_tokens UInt64 DEFAULT 0,
    ADD COLUMN IF NOT EXISTS cached_tokens UInt64 DEFAULT 0,
    ADD COLUMN IF NOT EXISTS audio_tokens UInt64 DEFAULT 0,
    ADD COLUMN IF NOT EXISTS cost_usd Float64 DEFAULT 0,
    ADD COLUMN IF NOT EXISTS interruptions_by_customer UInt32 DEFAULT 0,
    ADD COLUMN IF NOT EXISTS interruptions_by_agent UInt32 DEFAULT 0,
    ADD COLUMN IF NOT EXISTS overlap_ms Float64 DEFAULT 0,
    ADD COLUMN IF NOT EXISTS dead_air_count UInt32 DEFAULT 0,
    ADD COLUMN IF NOT EXISTS dead_air_ms Float64 DEFAULT 0,
    ADD COLUMN IF NOT EXISTS agent_talk_ms Float64 DEFAULT 0,
    ADD COLUMN IF NOT EXISTS customer_talk_ms Float64 DEFAULT 0;
