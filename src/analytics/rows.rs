//! The rows of each ClickHouse table, built from events without copying their strings.
//!
//! Column names and types follow `schemas/`; the client checks them against the server's
//! schema on the first insert into each table. The fields are the columns; their meaning is
//! documented in the migration files, so they carry no doc comments of their own here.
#![allow(missing_docs)]

use std::borrow::Cow;

use clickhouse::Row;
use serde::Serialize;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::trace::tree;
use crate::pipeline::SharedEvent;
use crate::types::{Event, EventKind, Metadata, TurnLatency, TurnMarks, TurnSpeaker, TurnTaking, Usage};

/// A table the sink writes. Which events it takes is said once, by its row builder
/// ([`event_row`], [`conversation_row`], [`interaction_row`], [`decision_row`],
/// [`span_row`]): an event has a row in the table exactly when the builder returns one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Table {
    /// Every event, with its JSON line.
    Events,
    /// Starts and ends.
    Conversations,
    /// Turns.
    Interactions,
    /// Decisions.
    Decisions,
    /// The spans of ends, turns, decisions and transfers.
    Spans,
}

impl Table {
    /// The tables, in the order a batch is inserted.
    pub const ALL: [Table; 5] = [Table::Events, Table::Conversations, Table::Interactions, Table::Decisions, Table::Spans];

    /// The table's name.
    pub fn name(self) -> &'static str {
        match self {
            Table::Events => "events",
            Table::Conversations => "conversations",
            Table::Interactions => "interactions",
            Table::Decisions => "decisions",
            Table::Spans => "spans",
        }
    }
}

/// A `Map(String, String)` column.
pub type StrMap<'a> = Vec<(Cow<'a, str>, Cow<'a, str>)>;

/// A row of `events`.
#[derive(Debug, Row, Serialize)]
pub struct EventRow<'a> {
    pub tenant_id: &'a str,
    pub conversation_id: &'a str,
    #[serde(with = "clickhouse::serde::time::datetime64::micros")]
    pub timestamp: OffsetDateTime,
    #[serde(with = "clickhouse::serde::uuid")]
    pub event_id: Uuid,
    pub event_type: &'static str,
    pub level: &'static str,
    pub service: &'a str,
    pub agent_id: &'a str,
    pub speaker: &'static str,
    pub content: &'a str,
    pub metadata: StrMap<'a>,
    pub trace_id: String,
    pub span_id: String,
    pub parent_span_id: String,
    pub payload: &'a str,
}

/// A row of `conversations` (version 1 from the start, 2 from the end).
#[derive(Debug, Row, Serialize)]
pub struct ConversationRow<'a> {
    pub tenant_id: &'a str,
    pub conversation_id: &'a str,
    pub agent_id: &'a str,
    pub customer_id: &'a str,
    pub channel: &'static str,
    pub language: &'a str,
    pub service: &'a str,
    pub status: &'static str,
    #[serde(with = "clickhouse::serde::time::datetime64::micros")]
    pub started_at: OffsetDateTime,
    #[serde(with = "clickhouse::serde::time::datetime64::micros::option")]
    pub ended_at: Option<OffsetDateTime>,
    pub duration_seconds: Option<f64>,
    pub resolution: Option<&'static str>,
    pub rating: Option<u8>,
    pub interaction_count: u32,
    pub agent_turns: u32,
    pub customer_turns: u32,
    pub tags: &'a [String],
    pub trace_id: String,
    pub span_id: String,
    pub metadata: StrMap<'a>,
    #[serde(with = "clickhouse::serde::uuid")]
    pub event_id: Uuid,
    pub version: u8,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cached_tokens: u64,
    pub audio_tokens: u64,
    pub cost_usd: f64,
    pub interruptions_by_customer: u32,
    pub interruptions_by_agent: u32,
    pub overlap_ms: f64,
    pub dead_air_count: u32,
    pub dead_air_ms: f64,
    pub agent_talk_ms: f64,
    pub customer_talk_ms: f64,
}

/// A row of `interactions`.
#[derive(Debug, Row, Serialize)]
pub struct InteractionRow<'a> {
    pub tenant_id: &'a str,
    pub conversation_id: &'a str,
    #[serde(with = "clickhouse::serde::time::datetime64::micros")]
    pub timestamp: OffsetDateTime,
    #[serde(with = "clickhouse::serde::uuid")]
    pub event_id: Uuid,
    pub agent_id: &'a str,
    pub service: &'a str,
    pub speaker_type: &'static str,
    pub turn: u32,
    pub content: &'a str,
    pub sentiment_score: Option<f64>,
    pub sentiment: &'static str,
    pub intent: Option<&'a str>,
    pub confidence: Option<f64>,
    pub assertiveness: Option<f64>,
    pub response_time_seconds: Option<f64>,
    pub duration_ms: Option<f64>,
    pub stt_ms: Option<f64>,
    pub end_of_utterance_ms: Option<f64>,
    pub llm_ttft_ms: Option<f64>,
    pub tts_ttfb_ms: Option<f64>,
    pub response_ms: Option<f64>,
    pub interrupted: bool,
    pub trace_id: String,
    pub span_id: String,
    pub parent_span_id: String,
    pub metadata: StrMap<'a>,
    pub model: Option<&'a str>,
    pub input_tokens: Option<u64>,
    pub output_tokens: Option<u64>,
    pub cached_tokens: Option<u64>,
    pub audio_tokens: Option<u64>,
    pub stt_seconds: Option<f64>,
    pub tts_characters: Option<u64>,
    pub telephony_seconds: Option<f64>,
    pub cost_usd: Option<f64>,
    pub tool_ms: Option<f64>,
    pub greeting_ms: Option<f64>,
    pub gap_ms: Option<f64>,
    pub dead_air_ms: Option<f64>,
    pub interrupted_by: &'static str,
    pub overlap_ms: Option<f64>,
}

/// A row of `decisions`.
#[derive(Debug, Row, Serialize)]
pub struct DecisionRow<'a> {
    pub tenant_id: &'a str,
    pub conversation_id: &'a str,
    #[serde(with = "clickhouse::serde::time::datetime64::micros")]
    pub timestamp: OffsetDateTime,
    #[serde(with = "clickhouse::serde::uuid")]
    pub event_id: Uuid,
    pub agent_id: &'a str,
    pub decision_type: &'static str,
    pub option: &'a str,
    pub reason: &'a str,
    pub confidence: Option<f64>,
    pub duration_ms: Option<f64>,
    pub trace_id: String,
    pub span_id: String,
    pub metadata: StrMap<'a>,
    pub model: Option<&'a str>,
    pub input_tokens: Option<u64>,
    pub output_tokens: Option<u64>,
    pub cached_tokens: Option<u64>,
    pub cost_usd: Option<f64>,
}

/// A row of `spans`.
#[derive(Debug, Row, Serialize)]
pub struct SpanRow<'a> {
    pub tenant_id: &'a str,
    pub trace_id: String,
    pub span_id: String,
    pub parent_span_id: String,
    pub conversation_id: &'a str,
    pub name: Cow<'static, str>,
    pub service: &'a str,
    #[serde(with = "clickhouse::serde::time::datetime64::micros")]
    pub start_time: OffsetDateTime,
    #[serde(with = "clickhouse::serde::time::datetime64::micros")]
    pub end_time: OffsetDateTime,
    pub duration_ms: f64,
    pub status: &'static str,
    pub attributes: StrMap<'a>,
    #[serde(with = "clickhouse::serde::uuid")]
    pub event_id: Uuid,
}

/// Metadata as a string map: the typed scores as decimal text, `extra` values as they are
/// (strings) or as JSON text (anything else).
pub fn metadata_map(m: &Metadata, typed: bool) -> StrMap<'_> {
    let mut out: StrMap<'_> = Vec::with_capacity(m.extra.len() + 4);
    if typed {
        if let Some(label) = m.sentiment {
            out.push((Cow::Borrowed("sentiment"), Cow::Borrowed(label.as_str())));
        }
        let scores =
            [("sentiment_score", m.sentiment_score), ("confidence", m.confidence), ("assertiveness", m.assertiveness)];
        for (k, v) in scores {
            if let Some(v) = v {
                out.push((Cow::Borrowed(k), Cow::Owned(v.to_string())));
            }
        }
        if let Some(intent) = &m.intent {
            out.push((Cow::Borrowed("intent"), Cow::Borrowed(intent)));
        }
    }
    for (policy, score) in &m.compliance {
        out.push((Cow::Owned(format!("compliance.{policy}")), Cow::Owned(score.to_string())));
    }
    for (k, v) in &m.extra {
        if Metadata::RESERVED.contains(&k.as_str()) {
            continue;
        }
        let v = match v {
            serde_json::Value::String(s) => Cow::Borrowed(s.as_str()),
            other => Cow::Owned(other.to_string()),
        };
        out.push((Cow::Borrowed(k.as_str()), v));
    }
    out
}

fn parent_hex(e: &Event) -> String {
    e.trace.parent_span_id.map(|p| p.to_string()).unwrap_or_default()
}

/// The `events` row of an event; `None` when the event cannot be serialized (a timestamp
/// outside what JSON and DateTime64 can hold, which the library never produces).
pub fn event_row(e: &SharedEvent) -> Option<EventRow<'_>> {
    Some(EventRow {
        tenant_id: &e.tenant_id,
        conversation_id: &e.conversation_id,
        timestamp: e.timestamp,
        event_id: e.event_id,
        event_type: e.event_type().as_str(),
        level: e.level.as_str(),
        service: &e.service,
        agent_id: &e.agent_id,
        speaker: e.speaker.as_str(),
        content: &e.content,
        metadata: metadata_map(&e.metadata, true),
        trace_id: e.trace.trace_id.to_string(),
        span_id: e.trace.span_id.to_string(),
        parent_span_id: parent_hex(e),
        payload: e.line()?,
    })
}

/// The `conversations` row of a start or end event.
pub fn conversation_row(e: &Event) -> Option<ConversationRow<'_>> {
    let base = |customer_id: &'static str| ConversationRow {
        tenant_id: &e.tenant_id,
        conversation_id: &e.conversation_id,
        agent_id: &e.agent_id,
        customer_id,
        channel: "",
        language: "",
        service: &e.service,
        status: "active",
        started_at: e.timestamp,
        ended_at: None,
        duration_seconds: None,
        resolution: None,
        rating: None,
        interaction_count: 0,
        agent_turns: 0,
        customer_turns: 0,
        tags: &[],
        trace_id: e.trace.trace_id.to_string(),
        span_id: e.trace.span_id.to_string(),
        metadata: metadata_map(&e.metadata, false),
        event_id: e.event_id,
        version: 1,
        input_tokens: 0,
        output_tokens: 0,
        cached_tokens: 0,
        audio_tokens: 0,
        cost_usd: 0.0,
        interruptions_by_customer: 0,
        interruptions_by_agent: 0,
        overlap_ms: 0.0,
        dead_air_count: 0,
        dead_air_ms: 0.0,
        agent_talk_ms: 0.0,
        customer_talk_ms: 0.0,
    };
    match &e.kind {
        EventKind::ConversationStarted { customer_id, channel, language } => {
            Some(ConversationRow { customer_id, channel: channel.as_str(), language, ..base("") })
        }
        EventKind::ConversationEnded {
            resolution,
            rating,
            tags,
            channel,
            duration_seconds,
            interaction_count,
            agent_turns,
            customer_turns,
            customer_id,
            language,
            started_at,
            usage,
            turn_taking,
        } => Some({
            let u = usage.as_deref();
            let tt = turn_taking.unwrap_or_default();
            let TurnTaking {
                interruptions_by_customer,
                interruptions_by_agent,
                overlap_ms,
                dead_air_count,
                dead_air_ms,
                agent_talk_ms,
                customer_talk_ms,
            } = tt;
            ConversationRow {
                customer_id,
                channel: channel.as_str(),
                language,
                status: "ended",
                // Events from before the end repeated the start time: derive it.
                started_at: started_at.unwrap_or_else(|| tree::span_times(e).0),
                ended_at: Some(e.timestamp),
                duration_seconds: Some(*duration_seconds),
                resolution: Some(resolution.as_str()),
                rating: *rating,
                interaction_count: *interaction_count,
                agent_turns: *agent_turns,
                customer_turns: *customer_turns,
                tags,
                version: 2,
                input_tokens: u.and_then(|u| u.input_tokens).unwrap_or(0),
                output_tokens: u.and_then(|u| u.output_tokens).unwrap_or(0),
                cached_tokens: u.and_then(|u| u.cached_tokens).unwrap_or(0),
                audio_tokens: u.and_then(|u| u.audio_tokens).unwrap_or(0),
                cost_usd: u.and_then(|u| u.cost_usd).unwrap_or(0.0),
                interruptions_by_customer,
                interruptions_by_agent,
                overlap_ms,
                dead_air_count,
                dead_air_ms,
                agent_talk_ms,
                customer_talk_ms,
                ..base("")
            }
        }),
        _ => None,
    }
}

/// The `interactions` row of a turn.
pub fn interaction_row(e: &Event) -> Option<InteractionRow<'_>> {
    let (speaker_type, turn, latency, response_time_seconds, duration_ms, marks, usage) = match &e.kind {
        EventKind::AgentTurn { turn, latency, response_time_seconds, duration_ms, turn_taking, usage } => {
            ("agent", *turn, latency, *response_time_seconds, *duration_ms, turn_taking, usage)
        }
        EventKind::CustomerTurn { turn, latency, duration_ms, turn_taking, usage } => {
            ("customer", *turn, latency, None, *duration_ms, turn_taking, usage)
        }
        _ => return None,
    };
    let l = latency.unwrap_or_default();
    let TurnLatency { stt_ms, end_of_utterance_ms, llm_ttft_ms, tts_ttfb_ms, tool_ms, greeting_ms, response_ms, interrupted } = l;
    let TurnMarks { gap_ms, dead_air_ms, interruption } = *marks;
    let u = usage.as_deref();
    Some(InteractionRow {
        tenant_id: &e.tenant_id,
        conversation_id: &e.conversation_id,
        timestamp: e.timestamp,
        event_id: e.event_id,
        agent_id: &e.agent_id,
        service: &e.service,
        speaker_type,
        turn,
        content: &e.content,
        sentiment_score: e.metadata.sentiment_score,
        sentiment: e.metadata.sentiment.map_or("", |s| s.as_str()),
        intent: e.metadata.intent.as_deref(),
        confidence: e.metadata.confidence,
        assertiveness: e.metadata.assertiveness,
        response_time_seconds,
        duration_ms,
        stt_ms,
        end_of_utterance_ms,
        llm_ttft_ms,
        tts_ttfb_ms,
        response_ms,
        interrupted,
        trace_id: e.trace.trace_id.to_string(),
        span_id: e.trace.span_id.to_string(),
        parent_span_id: parent_hex(e),
        metadata: metadata_map(&e.metadata, false),
        model: u.and_then(|u| u.model.as_deref()),
        input_tokens: u.and_then(|u| u.input_tokens),
        output_tokens: u.and_then(|u| u.output_tokens),
        cached_tokens: u.and_then(|u| u.cached_tokens),
        audio_tokens: u.and_then(|u| u.audio_tokens),
        stt_seconds: u.and_then(|u| u.stt_seconds),
        tts_characters: u.and_then(|u| u.tts_characters),
        telephony_seconds: u.and_then(|u| u.telephony_seconds),
        cost_usd: u.and_then(|u| u.cost_usd),
        tool_ms,
        greeting_ms,
        gap_ms,
        dead_air_ms,
        interrupted_by: match interruption.map(|i| i.by) {
            Some(TurnSpeaker::Customer) => "customer",
            Some(TurnSpeaker::Agent) => "agent",
            None => "",
        },
        overlap_ms: interruption.and_then(|i| i.overlap_ms),
    })
}

/// The `decisions` row of a decision.
pub fn decision_row(e: &Event) -> Option<DecisionRow<'_>> {
    let EventKind::DecisionMade { decision_type, option, reason, confidence, duration_ms, usage } = &e.kind else {
        return None;
    };
    let u: Option<&Usage> = usage.as_deref();
    Some(DecisionRow {
        tenant_id: &e.tenant_id,
        conversation_id: &e.conversation_id,
        timestamp: e.timestamp,
        event_id: e.event_id,
        agent_id: &e.agent_id,
        decision_type: decision_type.as_str(),
        option,
        reason,
        confidence: *confidence,
        duration_ms: *duration_ms,
        trace_id: e.trace.trace_id.to_string(),
        span_id: e.trace.span_id.to_string(),
        metadata: metadata_map(&e.metadata, false),
        model: u.and_then(|u| u.model.as_deref()),
        input_tokens: u.and_then(|u| u.input_tokens),
        output_tokens: u.and_then(|u| u.output_tokens),
        cached_tokens: u.and_then(|u| u.cached_tokens),
        cost_usd: u.and_then(|u| u.cost_usd),
    })
}

/// The `spans` row of the span an event closes ([`tree::span_of`]).
pub fn span_row(e: &Event) -> Option<SpanRow<'_>> {
    let span = tree::span_of(e)?;
    Some(SpanRow {
        tenant_id: &e.tenant_id,
        trace_id: e.trace.trace_id.to_string(),
        span_id: e.trace.span_id.to_string(),
        parent_span_id: parent_hex(e),
        conversation_id: &e.conversation_id,
        name: span.name,
        service: &e.service,
        start_time: span.start,
        end_time: span.end,
        duration_ms: (span.end - span.start).as_seconds_f64() * 1000.0,
        status: "ok",
        attributes: span.attributes,
        event_id: e.event_id,
    })
}

/// A row of `metrics_snapshots`.
#[derive(Debug, Row, Serialize)]
pub struct MetricRow<'a> {
    pub service: &'a str,
    #[serde(with = "clickhouse::serde::time::datetime64::millis")]
    pub taken_at: OffsetDateTime,
    #[serde(with = "clickhouse::serde::uuid")]
    pub snapshot_id: Uuid,
    pub metric: String,
    pub kind: &'static str,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

/// The rows of a registry snapshot: one per series, histograms and summaries expanded the way
/// Prometheus exposes them.
pub fn metric_rows<'a>(
    families: &[prometheus::proto::MetricFamily],
    service: &'a str,
    taken_at: OffsetDateTime,
    snapshot_id: Uuid,
) -> Vec<MetricRow<'a>> {
    use prometheus::proto::MetricType;
    let mut out = Vec::new();
    for family in families {
        let name = family.name();
        for m in family.get_metric() {
            let labels: Vec<(String, String)> =
                m.get_label().iter().map(|l| (l.name().to_string(), l.value().to_string())).collect();
            let mut push = |metric: String, kind: &'static str, extra: Option<(&str, String)>, value: f64| {
                let mut labels = labels.clone();
                if let Some((k, v)) = extra {
                    labels.push((k.to_string(), v));
                }
                out.push(MetricRow { service, taken_at, snapshot_id, metric, kind, labels, value });
            };
            match family.get_field_type() {
                MetricType::COUNTER => push(name.to_string(), "counter", None, m.get_counter().get_value()),
                MetricType::GAUGE => push(name.to_string(), "gauge", None, m.get_gauge().get_value()),
                // The library registers no untyped metrics.
                MetricType::UNTYPED => {}
                MetricType::HISTOGRAM => {
                    let h = m.get_histogram();
                    for b in h.get_bucket() {
                        let le = b.upper_bound().to_string();
                        push(format!("{name}_bucket"), "histogram", Some(("le", le)), b.cumulative_count() as f64);
                    }
                    push(format!("{name}_bucket"), "histogram", Some(("le", "+Inf".into())), h.get_sample_count() as f64);
                    push(format!("{name}_sum"), "histogram", None, h.get_sample_sum());
                    push(format!("{name}_count"), "histogram", None, h.get_sample_count() as f64);
                }
                MetricType::SUMMARY => {
                    let s = m.get_summary();
                    for q in s.get_quantile() {
                        push(name.to_string(), "summary", Some(("quantile", q.quantile().to_string())), q.value());
                    }
                    push(format!("{name}_sum"), "summary", None, s.sample_sum());
                    push(format!("{name}_count"), "summary", None, s.sample_count() as f64);
                }
            }
        }
    }
    out
}
