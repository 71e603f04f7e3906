//! The read side: the [`Store`] trait that `query`, `tail` and `demo`'s summary read through,
//! and its implementations ([`local::LocalStore`] over the event log,
//! [`clickhouse::ClickHouseStore`] over ClickHouse).
//!
//! Percentiles are nearest-rank: the smallest value with at least `q` of the values at or
//! below it, so both stores give the same number for the same data.
//!
//! Spans ([`Store::trace`]) are the ones [`crate::trace::tree`] defines: the conversation's root
//! span (recorded when the conversation ends) and one child span per turn, decision and
//! transfer, with their span events. Both stores build them with the same functions
//! ([`crate::trace::tree::span_of`] for the span, [`span_events`] for its events), so they
//! give identical spans for the same data.

#[cfg(feature = "clickhouse")]
pub mod clickhouse;
mod fold;
pub mod local;

use std::collections::BTreeMap;
use std::future::Future;
use std::str::FromStr;

use serde::Serialize;
use time::OffsetDateTime;

use crate::types::{Channel, Event, EventKind, Resolution, TurnTaking};

/// A read failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A file of the local event log could not be read.
    #[error("cannot read {}", path.display())]
    Io {
        /// The file or folder.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A ClickHouse query failed. (Not a `#[source]`: the message already says it, and
    /// `{:#}` would print it twice.)
    #[cfg(feature = "clickhouse")]
    #[error("ClickHouse store: {0}")]
    ClickHouse(crate::analytics::ClickHouseError),
    /// A stored event could not be read back.
    #[error("ClickHouse store: event {event_id} does not parse: {message}")]
    BadPayload {
        /// The event.
        event_id: String,
        /// Why.
        message: String,
    },
    /// A cursor from another store or a corrupted one.
    #[error("invalid cursor {0:?} (a cursor only works with the store that gave it: SEQ:OFFSET for the local event log, MICROS:EVENT_ID for ClickHouse)")]
    BadCursor(String),
    /// A trace id that is not 32 hexadecimal digits (or is all zeros).
    #[error("invalid trace id {0:?}: expected 32 hexadecimal digits, e.g. 4bf92f3577b34da6a3ce929d0e0e4736")]
    BadTraceId(String),
}

#[cfg(feature = "clickhouse")]
impl From<crate::analytics::ClickHouseError> for StoreError {
    fn from(e: crate::analytics::ClickHouseError) -> Self {
        StoreError::ClickHouse(e)
    }
}

/// Which conversations to read. Every filter is optional; they combine with AND.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConversationFilter {
    /// Only this tenant.
    pub tenant: Option<String>,
    /// Only this agent.
    pub agent: Option<String>,
    /// Only this channel.
    pub channel: Option<Channel>,
    /// Only conversations that ended this way.
    pub resolution: Option<Resolution>,
    /// Started at or after.
    pub since: Option<OffsetDateTime>,
    /// Started before.
    pub until: Option<OffsetDateTime>,
    /// Start metadata entries that must all match.
    pub metadata: Vec<(String, String)>,
    /// At most this many (the newest first).
    pub limit: Option<usize>,
}

/// One conversation, as a row.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConversationSummary {
    /// Id.
    pub conversation_id: String,
    /// Tenant.
    pub tenant_id: String,
    /// Agent.
    pub agent_id: String,
    /// Customer (empty when the start event is not in the store).
    pub customer_id: String,
    /// Channel.
    pub channel: Option<Channel>,
    /// Language tag.
    pub language: String,
    /// Start time (the first event's, when the start event is missing).
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
    /// End time, when ended.
    #[serde(with = "time::serde::rfc3339::option")]
    pub ended_at: Option<OffsetDateTime>,
    /// Seconds from start to end, when ended.
    pub duration_seconds: Option<f64>,
    /// How it ended; `None` while active.
    pub resolution: Option<Resolution>,
    /// Customer rating.
    pub rating: Option<u8>,
    /// Agent turns.
    pub agent_turns: u32,
    /// Customer turns.
    pub customer_turns: u32,
    /// Decisions made.
    pub decisions: u32,
    /// Transfers initiated.
    pub transfers: u32,
    /// Errors.
    pub errors: u32,
    /// Compliance violations.
    pub violations: u32,
    /// Mean sentiment score of the customer's scored turns (the agent's own turns do not count).
    pub mean_sentiment: Option<f64>,
    /// Who spoke last.
    pub last_speaker: Option<crate::types::Speaker>,
    /// Trace id (hex).
    pub trace_id: String,
    /// Start metadata.
    pub metadata: BTreeMap<String, String>,
    /// Tokens and cost of its turns and decisions, summed.
    pub usage: UsageTotals,
    /// Interruptions, dead air and talk time, summed over its turns (see [`TurnTaking`]; the
    /// same sums as `conversation.ended` carries, and for an active conversation so far).
    pub turn_taking: TurnTaking,
}

/// Tokens and cost, summed over turns and decisions (their `usage`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct UsageTotals {
    /// Prompt tokens, cached ones included.
    pub input_tokens: u64,
    /// Completion tokens.
    pub output_tokens: u64,
    /// Of the input tokens, those read from the prompt cache.
    pub cached_tokens: u64,
    /// US dollars, as priced when recorded (unpriced usage adds nothing).
    pub cost_usd: f64,
}

impl UsageTotals {
    /// Adds what an event's usage says (a turn's or a decision's; nothing for others).
    pub fn add(&mut self, usage: &crate::types::Usage) {
        self.input_tokens += usage.input_tokens.unwrap_or(0);
        self.output_tokens += usage.output_tokens.unwrap_or(0);
        self.cached_tokens += usage.cached_tokens.unwrap_or(0);
        self.cost_usd += usage.cost_usd.unwrap_or(0.0);
    }
}

impl ConversationSummary {
    /// Agent plus customer turns.
    pub fn interactions(&self) -> u32 {
        self.agent_turns + self.customer_turns
    }
}

/// One conversation with everything recorded about it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConversationDetail {
    /// The row.
    pub summary: ConversationSummary,
    /// Every event, in time order (turns, decisions, transfers, errors, start and end).
    pub events: Vec<Event>,
}

/// What to group stats by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum GroupBy {
    /// Tenant.
    Tenant,
    /// Agent.
    Agent,
    /// Channel.
    Channel,
    /// Resolution (`active` for conversations not ended).
    Resolution,
}

impl GroupBy {
    /// The accepted names.
    pub const NAMES: &'static str = "tenant, agent, channel, resolution";
}

impl FromStr for GroupBy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "tenant" => Ok(GroupBy::Tenant),
            "agent" => Ok(GroupBy::Agent),
            "channel" => Ok(GroupBy::Channel),
            "resolution" => Ok(GroupBy::Resolution),
            _ => Err(format!("unknown group {s:?} (accepted: {})", GroupBy::NAMES)),
        }
    }
}

/// p50, p95 and p99 of a set of values (nearest-rank).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Percentiles {
    /// Median.
    pub p50: Option<f64>,
    /// 95th percentile.
    pub p95: Option<f64>,
    /// 99th percentile.
    pub p99: Option<f64>,
}

impl Percentiles {
    /// From unsorted values.
    pub fn of(mut values: Vec<f64>) -> Percentiles {
        values.sort_by(f64::total_cmp);
        Percentiles {
            p50: nearest_rank(&values, 0.50),
            p95: nearest_rank(&values, 0.95),
            p99: nearest_rank(&values, 0.99),
        }
    }
}

/// The nearest-rank percentile of sorted values.
pub fn nearest_rank(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// Stats of one group of conversations.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StatsRow {
    /// The group's value (`all` without grouping).
    pub group: String,
    /// Conversations started.
    pub conversations: u64,
    /// Of which ended.
    pub ended: u64,
    /// Ended conversations per resolution.
    pub by_resolution: BTreeMap<String, u64>,
    /// Resolved / ended.
    pub resolution_rate: Option<f64>,
    /// Transferred (at least one transfer) / conversations.
    pub transfer_rate: Option<f64>,
    /// Agent plus customer turns.
    pub interactions: u64,
    /// Durations of ended conversations, seconds.
    pub duration_seconds: Percentiles,
    /// Agent response times, seconds.
    pub response_seconds: Percentiles,
    /// Mean customer rating.
    pub mean_rating: Option<f64>,
    /// Mean sentiment score of the customers' scored turns.
    pub mean_sentiment: Option<f64>,
    /// The voice latency parts of the turns, in milliseconds (nearest-rank, over every turn
    /// that has the part).
    pub latency_ms: LatencyPercentiles,
    /// Interruptions, by either side.
    pub interruptions: u64,
    /// Interruptions / conversations.
    pub interruptions_per_conversation: Option<f64>,
    /// Silences between turns over the dead-air threshold, in milliseconds, summed.
    pub dead_air_ms: f64,
    /// Dead air / (talk time of both sides + dead air); `None` without either (not voice).
    pub dead_air_share: Option<f64>,
    /// Tokens of the turns and decisions.
    pub tokens: TokenStats,
    /// Cost of the turns and decisions, in US dollars.
    pub cost_usd: CostStats,
}

/// Percentiles of each voice latency part (see [`crate::types::TurnLatency::parts`]), in ms.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct LatencyPercentiles {
    /// Speech-to-text.
    pub stt: Percentiles,
    /// End-of-utterance delay.
    pub end_of_utterance: Percentiles,
    /// LLM time to first token.
    pub llm_ttft: Percentiles,
    /// Text-to-speech time to first byte.
    pub tts_ttfb: Percentiles,
    /// Tool calls before the reply.
    pub tool: Percentiles,
    /// The greeting (call start to the agent's first audio).
    pub greeting: Percentiles,
    /// User-to-agent response latency.
    pub response: Percentiles,
}

impl LatencyPercentiles {
    /// From the values of each part, in the order of [`crate::types::TurnLatency::parts`].
    pub fn of(parts: [Vec<f64>; 7]) -> LatencyPercentiles {
        let [stt, end_of_utterance, llm_ttft, tts_ttfb, tool, greeting, response] = parts.map(Percentiles::of);
        LatencyPercentiles { stt, end_of_utterance, llm_ttft, tts_ttfb, tool, greeting, response }
    }

    /// The parts by name, in the order of [`crate::types::TurnLatency::parts`].
    pub fn parts(&self) -> [(&'static str, Percentiles); 7] {
        [
            ("stt", self.stt),
            ("end_of_utterance", self.end_of_utterance),
            ("llm_ttft", self.llm_ttft),
            ("tts_ttfb", self.tts_ttfb),
            ("tool", self.tool),
            ("greeting", self.greeting),
            ("response", self.response),
        ]
    }
}

/// Token totals of a group of conversations.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct TokenStats {
    /// Input (prompt) tokens.
    pub input: u64,
    /// Output (completion) tokens.
    pub output: u64,
    /// Cached input tokens (part of `input`).
    pub cached: u64,
    /// Input tokens / conversations.
    pub input_per_conversation: Option<f64>,
    /// Output tokens / conversations.
    pub output_per_conversation: Option<f64>,
}

/// Cost of a group of conversations.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct CostStats {
    /// US dollars, summed.
    pub total: f64,
    /// Total / conversations.
    pub per_conversation: Option<f64>,
}

/// The figures of [`StatsRow`] that come from turn-taking and usage, from per-group sums.
pub(crate) struct VoiceSums {
    pub(crate) conversations: u64,
    pub(crate) interruptions: u64,
    pub(crate) dead_air_ms: f64,
    pub(crate) talk_ms: f64,
    pub(crate) usage: UsageTotals,
}

impl VoiceSums {
    /// `(interruptions_per_conversation, dead_air_share, tokens, cost_usd)`.
    pub(crate) fn figures(&self) -> (Option<f64>, Option<f64>, TokenStats, CostStats) {
        let n = self.conversations;
        let per = |v: f64| (n > 0).then(|| v / n as f64);
        let whole = self.talk_ms + self.dead_air_ms;
        (
            per(self.interruptions as f64),
            (whole > 0.0).then(|| self.dead_air_ms / whole),
            TokenStats {
                input: self.usage.input_tokens,
                output: self.usage.output_tokens,
                cached: self.usage.cached_tokens,
                input_per_conversation: per(self.usage.input_tokens as f64),
                output_per_conversation: per(self.usage.output_tokens as f64),
            },
            CostStats { total: self.usage.cost_usd, per_conversation: per(self.usage.cost_usd) },
        )
    }
}

/// One span of a trace, as [`Store::trace`] returns it: the conversation's root span or the
/// child span of a turn, decision or transfer (see [`crate::trace::tree`] for names and times).
///
/// Serialized (e.g. by `query trace --output json`) with these field names; times are RFC 3339.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SpanRecord {
    /// The trace (32 hex digits).
    pub trace_id: String,
    /// The span (16 hex digits).
    pub span_id: String,
    /// The parent span; `None` for a root (the conversation span of a conversation that did
    /// not join a trace started elsewhere).
    pub parent_span_id: Option<String>,
    /// `conversation`, `interaction.agent`, `interaction.customer`, `decision.<type>` or
    /// `transfer.initiated`.
    pub name: String,
    /// The service that recorded it.
    pub service: String,
    /// The conversation it belongs to.
    pub conversation_id: String,
    /// The tenant.
    pub tenant_id: String,
    /// Start, to the microsecond.
    #[serde(with = "time::serde::rfc3339")]
    pub start: OffsetDateTime,
    /// End, to the microsecond.
    #[serde(with = "time::serde::rfc3339")]
    pub end: OffsetDateTime,
    /// The attributes the `spans` table keeps: `agent_id`, and `turn` (turns),
    /// `decision_type` and `option` (decisions), `target` (transfers), or `resolution`,
    /// `channel` and `interaction_count` (the conversation).
    pub attributes: BTreeMap<String, String>,
    /// Its span events, in time order (see [`span_events`]).
    pub events: Vec<SpanEvent>,
}

impl SpanRecord {
    /// End minus start, in seconds.
    pub fn duration_seconds(&self) -> f64 {
        (self.end - self.start).as_seconds_f64()
    }
}

/// A span event: something that happened at a moment of a span, e.g. `customer_message` or
/// `intent_classified` on a turn, `error_occurred` on the conversation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SpanEvent {
    /// The event's name, e.g. `intent_classified`.
    pub name: String,
    /// When, to the microsecond.
    #[serde(with = "time::serde::rfc3339")]
    pub time: OffsetDateTime,
    /// Its attributes as text, e.g. `intent` and `confidence`.
    pub attributes: BTreeMap<String, String>,
}

/// A trace id in the form the stores keep it (32 lowercase hex digits), from user input in
/// either case; [`StoreError::BadTraceId`] when it is not 32 hex digits or is all zeros.
pub fn normalize_trace_id(trace_id: &str) -> Result<String, StoreError> {
    let lower = trace_id.trim().to_ascii_lowercase();
    if lower.len() == 32 && lower.bytes().all(|b| b.is_ascii_hexdigit()) && lower.bytes().any(|b| b != b'0') {
        Ok(lower)
    } else {
        Err(StoreError::BadTraceId(trace_id.to_string()))
    }
}

/// `t` cut to whole microseconds, as ClickHouse's `DateTime64(6)` keeps it.
pub(crate) fn to_micros(t: OffsetDateTime) -> OffsetDateTime {
    t.replace_nanosecond(t.nanosecond() / 1000 * 1000).unwrap_or(t)
}

fn otel_event(e: opentelemetry::trace::Event) -> SpanEvent {
    SpanEvent {
        name: e.name.into_owned(),
        time: to_micros(OffsetDateTime::from(e.timestamp)),
        attributes: e.attributes.into_iter().map(|kv| (kv.key.as_str().to_string(), kv.value.as_str().into_owned())).collect(),
    }
}

/// The span events an event adds to its span (the span `event.trace.span_id` names), the
/// same names and attributes as the OTLP export (see [`crate::trace::tree`]):
/// `conversation_started`, `error_occurred`, `compliance_violation` and `conversation_ended`
/// on the conversation span; `agent_message` / `customer_message` (and `intent_classified`)
/// on a turn; `intent_classified` or `decision_made` on a decision; `transfer_initiated` on a
/// transfer.
pub fn span_events(e: &Event) -> Vec<SpanEvent> {
    use crate::trace::tree;
    match &e.kind {
        EventKind::ConversationStarted { channel, language, .. } => vec![SpanEvent {
            name: "conversation_started".into(),
            time: to_micros(e.timestamp),
            attributes: BTreeMap::from([
                ("channel".to_string(), channel.as_str().to_string()),
                ("language".to_string(), language.clone()),
            ]),
        }],
        EventKind::ConversationEnded { .. } => tree::root_end(e).map(|(_, ev)| otel_event(ev)).into_iter().collect(),
        EventKind::ErrorOccurred { .. } | EventKind::ComplianceViolation { .. } => {
            tree::root_event(e).map(|(ev, _)| otel_event(ev)).into_iter().collect()
        }
        _ => tree::child_builder(e)
            .and_then(|(builder, _)| builder.events)
            .map(|events| events.into_iter().map(otel_event).collect())
            .unwrap_or_default(),
    }
}

/// The span an event closes ([`crate::trace::tree::span_of`]), without its span events.
pub(crate) fn span_of(e: &Event) -> Option<SpanRecord> {
    let span = crate::trace::tree::span_of(e)?;
    Some(SpanRecord {
        trace_id: e.trace.trace_id.to_string(),
        span_id: e.trace.span_id.to_string(),
        parent_span_id: e.trace.parent_span_id.map(|p| p.to_string()),
        name: span.name.into_owned(),
        service: e.service.to_string(),
        conversation_id: e.conversation_id.to_string(),
        tenant_id: e.tenant_id.to_string(),
        start: to_micros(span.start),
        end: to_micros(span.end),
        attributes: span.attributes.into_iter().map(|(k, v)| (k.into_owned(), v.into_owned())).collect(),
        events: Vec::new(),
    })
}

/// A trace as both stores return it: one span per span id (the first kept), each with the span
/// events of `events` (which must be in `(timestamp, event_id)` order) on it, sorted by start,
/// then end, name and span id. Span events of spans not in the list (the root of a conversation
/// that has not ended) are dropped.
pub(crate) fn assemble_trace(spans: Vec<SpanRecord>, events: &[Event]) -> Vec<SpanRecord> {
    let mut by_id: BTreeMap<String, SpanRecord> = BTreeMap::new();
    for span in spans {
        by_id.entry(span.span_id.clone()).or_insert(span);
    }
    for e in events {
        let span_id = e.trace.span_id.to_string();
        if let Some(span) = by_id.get_mut(&span_id) {
            span.events.extend(span_events(e));
        }
    }
    let mut out: Vec<SpanRecord> = by_id.into_values().collect();
    for span in &mut out {
        span.events.sort_by_key(|ev| ev.time);
    }
    out.sort_by(|a, b| {
        (a.start, a.end, &a.name, &a.span_id).cmp(&(b.start, b.end, &b.name, &b.span_id))
    });
    out
}

/// The fewest characters a short id may have: shorter text is looked up as a whole id only
/// (see [`Store::ids_matching`]).
pub const MIN_SHORT_ID: usize = 8;

/// Which ids [`Store::ids_matching`] looks among.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdKind {
    /// Conversation ids.
    Conversation,
    /// Trace ids (32 lowercase hex digits; a short one is matched in lowercase).
    Trace,
}

impl IdKind {
    /// A short id as the stores match it (a trace's in lowercase); `None` when empty.
    pub(crate) fn normalize(self, short: &str) -> Option<String> {
        let short = match self {
            IdKind::Conversation => short.to_string(),
            IdKind::Trace => short.to_ascii_lowercase(),
        };
        (!short.is_empty()).then_some(short)
    }
}

/// A position in the event stream, for [`Store::events_since`]. Opaque; only the store that
/// gave it understands it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Cursor(pub String);

/// The read side of a conversation store.
pub trait Store: Send + Sync {
    /// Conversations matching the filter, newest first.
    fn conversations(
        &self,
        filter: &ConversationFilter,
    ) -> impl Future<Output = Result<Vec<ConversationSummary>, StoreError>> + Send;

    /// One conversation with all its events; `None` when unknown.
    fn conversation(&self, id: &str) -> impl Future<Output = Result<Option<ConversationDetail>, StoreError>> + Send;

    /// Stats of the conversations matching the filter, in one row or one per group.
    fn stats(
        &self,
        filter: &ConversationFilter,
        by: Option<GroupBy>,
    ) -> impl Future<Output = Result<Vec<StatsRow>, StoreError>> + Send;

    /// The spans of a trace (see [`SpanRecord`]), sorted by start; empty when the store has
    /// none. `trace_id` is 32 hex digits in either case ([`StoreError::BadTraceId`] otherwise).
    fn trace(&self, trace_id: &str) -> impl Future<Output = Result<Vec<SpanRecord>, StoreError>> + Send;

    /// The stored conversation or trace ids that begin with `short` or end with it, sorted, at
    /// most `limit` — to resolve a short id as the list shows it (a prefix, or the last 12
    /// characters the live view shows). Callers ask only for `short` of [`MIN_SHORT_ID`] or
    /// more characters; `short` is text to match, never SQL.
    fn ids_matching(
        &self,
        kind: IdKind,
        short: &str,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<String>, StoreError>> + Send;

    /// Events after `cursor` (from the beginning when `None`), at most `limit`, and the cursor
    /// to continue from. No event is returned twice and none is skipped across calls.
    fn events_since(
        &self,
        cursor: Option<&Cursor>,
        limit: usize,
    ) -> impl Future<Output = Result<(Vec<Event>, Cursor), StoreError>> + Send;

    /// The anomaly-detection series ([`crate::detect`]) of the events in `range`, in buckets
    /// of `bucket_seconds`: folded from the log by the local store, computed in SQL by
    /// ClickHouse; the same buckets from the same events.
    fn detection_series(
        &self,
        range: &crate::detect::Range,
        bucket_seconds: i64,
    ) -> impl Future<Output = Result<Vec<crate::detect::Series>, StoreError>> + Send;
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::SpanId;

    use super::*;
    use crate::types::{DecisionType, test_event};

    #[test]
    fn voice_figures_divide_by_conversations_and_are_none_without_any() {
        let usage = UsageTotals { input_tokens: 300, output_tokens: 30, cached_tokens: 100, cost_usd: 1.5 };
        let sums = VoiceSums { conversations: 3, interruptions: 2, dead_air_ms: 1000.0, talk_ms: 9000.0, usage };
        let (ipc, share, tokens, cost) = sums.figures();
        assert_eq!((ipc, share), (Some(2.0 / 3.0), Some(0.1)));
        assert_eq!((tokens.input, tokens.cached, tokens.input_per_conversation), (300, 100, Some(100.0)));
        assert_eq!((cost.total, cost.per_conversation), (1.5, Some(0.5)));
        let none = VoiceSums { conversations: 0, interruptions: 0, dead_air_ms: 0.0, talk_ms: 0.0, usage: UsageTotals::default() };
        let (ipc, share, tokens, cost) = none.figures();
        assert_eq!((ipc, share, tokens.output_per_conversation, cost.per_conversation), (None, None, None, None));
        let parts = LatencyPercentiles::of([vec![1.0, 3.0, 2.0], vec![], vec![], vec![], vec![], vec![], vec![5.0]]);
        assert_eq!((parts.stt.p50, parts.stt.p95, parts.end_of_utterance.p50, parts.response.p99), (Some(2.0), Some(3.0), None, Some(5.0)));
        assert_eq!(parts.parts().map(|(name, _)| name), crate::types::TurnLatency::default().parts().map(|(name, _)| name));
    }

    #[test]
    fn trace_ids_are_32_hex_digits_in_either_case() {
        assert_eq!(normalize_trace_id(" 4BF92F3577B34DA6A3CE929D0E0E4736 ").unwrap(), "4bf92f3577b34da6a3ce929d0e0e4736");
        for bad in ["", "4bf92f", "4bf92f3577b34da6a3ce929d0e0e473g", &"0".repeat(32), &"a".repeat(33), "'; DROP TABLE spans --"] {
            assert!(matches!(normalize_trace_id(bad), Err(StoreError::BadTraceId(_))), "{bad:?}");
        }
    }

    #[test]
    fn a_trace_is_one_span_per_id_with_its_span_events_in_time_order() {
        let root = SpanId::from(1u64);
        let mut start = test_event("start");
        start.trace.span_id = root;
        start.kind = EventKind::ConversationStarted { customer_id: "c".into(), channel: Channel::Voice, language: "en".into() };
        let mut turn = test_event("hello");
        turn.trace.span_id = SpanId::from(2u64);
        turn.trace.parent_span_id = Some(root);
        turn.timestamp = start.timestamp + time::Duration::seconds(1);
        turn.metadata.intent = Some("billing".into());
        turn.kind = EventKind::CustomerTurn { turn: 1, latency: None, duration_ms: Some(1500.5), turn_taking: Default::default(), usage: None };
        let mut decision = test_event("decided");
        decision.trace.span_id = SpanId::from(3u64);
        decision.trace.parent_span_id = Some(root);
        decision.timestamp = start.timestamp + time::Duration::seconds(3);
        decision.kind = EventKind::DecisionMade {
            decision_type: DecisionType::ToolCall,
            option: "lookup".into(),
            reason: "r".into(),
            confidence: None,
            duration_ms: Some(250.0),
            usage: None,
        };
        let mut end = test_event("end");
        end.trace.span_id = root;
        end.timestamp = start.timestamp + time::Duration::seconds(5);
        end.kind = EventKind::ConversationEnded {
            resolution: Resolution::Resolved,
            rating: Some(5),
            tags: vec![],
            channel: Channel::Voice,
            duration_seconds: 5.0,
            interaction_count: 1,
            agent_turns: 0,
            customer_turns: 1,
            customer_id: "c".into(),
            language: "en".into(),
            started_at: Some(start.timestamp),
            usage: None,
            turn_taking: None,

        };
        let events = [start.clone(), turn.clone(), decision.clone(), end.clone()];
        // A span given twice is kept once.
        let spans: Vec<SpanRecord> = events.iter().chain([&turn]).filter_map(span_of).collect();
        let trace = assemble_trace(spans, &events);
        let names: Vec<&str> = trace.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["conversation", "interaction.customer", "execute_tool lookup"]);
        let event_names = |i: usize| trace[i].events.iter().map(|e| e.name.as_str()).collect::<Vec<_>>();
        assert_eq!(event_names(0), ["conversation_started", "conversation_ended"]);
        assert_eq!(event_names(1), ["customer_message", "intent_classified"]);
        assert_eq!(event_names(2), ["decision_made"]);
        assert_eq!(trace[0].parent_span_id, None);
        assert_eq!(trace[1].parent_span_id.as_deref(), Some(root.to_string().as_str()));
        // Times are whole microseconds, as ClickHouse keeps them.
        assert_eq!(trace[1].end.nanosecond() % 1000, 0);
        assert_eq!(trace[1].events[1].attributes["intent"], "billing");
        assert_eq!(trace[0].events[1].attributes["rating"], "5");
        // The root's span events are dropped when the root span is not there (not ended).
        let open = assemble_trace(events[..3].iter().filter_map(span_of).collect(), &events[..3]);
        assert_eq!(open.len(), 2);
    }
}
