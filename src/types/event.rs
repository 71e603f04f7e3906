use std::fmt;
use std::sync::Arc;

use opentelemetry::trace::{SpanId, TraceId};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use super::{Channel, DecisionType, Interruption, Metadata, Resolution, TurnLatency, TurnTaking, Usage};

/// Who produced an event's content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Speaker {
    /// The AI agent.
    Agent,
    /// The customer.
    Customer,
    /// The platform (starts, ends, errors).
    System,
}

impl Speaker {
    /// The label value (`agent`, `customer`, `system`).
    pub fn as_str(self) -> &'static str {
        match self {
            Speaker::Agent => "agent",
            Speaker::Customer => "customer",
            Speaker::System => "system",
        }
    }
}

impl fmt::Display for Speaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Log level of an event line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Debug detail.
    Debug,
    /// Normal conversation activity.
    Info,
    /// Something to look at (compliance violations).
    Warn,
    /// Errors.
    Error,
}

impl Level {
    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        }
    }
}

/// The trace and span of an event, as W3C hex ids (`trace_id` 32 hex digits, `span_id` 16).
///
/// A conversation is one trace whose root is the conversation span: the start, end, error and
/// compliance events carry the root span id; each interaction, decision and transfer carries
/// its own child span id, with the root as parent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TraceIds {
    /// The conversation's trace.
    #[serde(with = "hex_trace_id")]
    pub trace_id: TraceId,
    /// The span this event belongs to.
    #[serde(with = "hex_span_id")]
    pub span_id: SpanId,
    /// The parent of `span_id` (the conversation span for child spans; absent on the root, or
    /// the upstream span when the conversation joined a trace started elsewhere).
    #[serde(default, with = "hex_opt_span_id", skip_serializing_if = "Option::is_none")]
    pub parent_span_id: Option<SpanId>,
}

/// The eight event types (a fixed contract: other services read them by these names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventType {
    /// `conversation.started`
    ConversationStarted,
    /// `interaction.agent`
    InteractionAgent,
    /// `interaction.customer`
    InteractionCustomer,
    /// `decision.made`
    DecisionMade,
    /// `transfer.initiated`
    TransferInitiated,
    /// `conversation.ended`
    ConversationEnded,
    /// `error.occurred`
    ErrorOccurred,
    /// `compliance.violation`
    ComplianceViolation,
}

impl EventType {
    /// All eight, in lifecycle order.
    pub const ALL: [EventType; 8] = [
        EventType::ConversationStarted,
        EventType::InteractionAgent,
        EventType::InteractionCustomer,
        EventType::DecisionMade,
        EventType::TransferInitiated,
        EventType::ConversationEnded,
        EventType::ErrorOccurred,
        EventType::ComplianceViolation,
    ];

    /// The wire name, e.g. `interaction.agent`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::ConversationStarted => "conversation.started",
            EventType::InteractionAgent => "interaction.agent",
            EventType::InteractionCustomer => "interaction.customer",
            EventType::DecisionMade => "decision.made",
            EventType::TransferInitiated => "transfer.initiated",
            EventType::ConversationEnded => "conversation.ended",
            EventType::ErrorOccurred => "error.occurred",
            EventType::ComplianceViolation => "compliance.violation",
        }
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A turn's place in the turn-taking: the silence or overlap since the previous turn, and
/// whether it was cut in on (or cut in). Written flat into the turn's line; all optional.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct TurnMarks {
    /// From the end of the previous turn (its start + `duration_ms`) to this turn's start, in
    /// milliseconds: positive is silence, negative is overlap. Only when the previous turn's
    /// duration is known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gap_ms: Option<f64>,
    /// The gap, when it is silence of at least `voice.dead_air_threshold`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_air_ms: Option<f64>,
    /// An interruption (see [`Interruption`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interruption: Option<Interruption>,
}

impl EventKind {
    /// The usage a turn, decision or end carries (boxed in the event: most events have none,
    /// and the event stays small).
    pub fn usage(&self) -> Option<&Usage> {
        match self {
            EventKind::AgentTurn { usage, .. }
            | EventKind::CustomerTurn { usage, .. }
            | EventKind::DecisionMade { usage, .. }
            | EventKind::ConversationEnded { usage, .. } => usage.as_deref(),
            _ => None,
        }
    }

    /// A turn's latency parts.
    pub fn latency(&self) -> Option<&TurnLatency> {
        match self {
            EventKind::AgentTurn { latency, .. } | EventKind::CustomerTurn { latency, .. } => latency.as_ref(),
            _ => None,
        }
    }

    /// A turn's turn-taking marks.
    pub fn turn_marks(&self) -> Option<&TurnMarks> {
        match self {
            EventKind::AgentTurn { turn_taking, .. } | EventKind::CustomerTurn { turn_taking, .. } => Some(turn_taking),
            _ => None,
        }
    }
}

/// What happened, with the fields particular to each event type.
///
/// Serialized flat into the log line, with `event_type` as the tag.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event_type")]
#[non_exhaustive]
pub enum EventKind {
    /// A conversation began.
    #[serde(rename = "conversation.started")]
    ConversationStarted {
        /// The end customer.
        customer_id: String,
        /// Voice, chat, …
        channel: Channel,
        /// BCP 47 language tag.
        language: String,
    },
    /// The agent spoke (`interaction.agent`).
    #[serde(rename = "interaction.agent")]
    AgentTurn {
        /// 1-based turn number within the conversation.
        turn: u32,
        /// Voice latency parts.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        latency: Option<TurnLatency>,
        /// Agent response time in seconds (from `latency.response_ms`, or measured from the
        /// previous customer turn).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        response_time_seconds: Option<f64>,
        /// Speaking time.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        duration_ms: Option<f64>,
        /// Silence or overlap since the previous turn, and interruptions.
        #[serde(flatten)]
        turn_taking: TurnMarks,
        /// What the turn used, priced.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        usage: Option<Box<Usage>>,
    },
    /// The customer spoke (`interaction.customer`).
    #[serde(rename = "interaction.customer")]
    CustomerTurn {
        /// 1-based turn number within the conversation.
        turn: u32,
        /// Voice latency parts (e.g. speech-to-text of the customer's audio).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        latency: Option<TurnLatency>,
        /// Speaking time.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        duration_ms: Option<f64>,
        /// Silence or overlap since the previous turn, and interruptions.
        #[serde(flatten)]
        turn_taking: TurnMarks,
        /// What the turn used, priced.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        usage: Option<Box<Usage>>,
    },
    /// The agent made a decision.
    #[serde(rename = "decision.made")]
    DecisionMade {
        /// What kind.
        decision_type: DecisionType,
        /// The chosen option.
        option: String,
        /// Why.
        reason: String,
        /// Confidence 0–1.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        confidence: Option<f64>,
        /// How long deciding took.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        duration_ms: Option<f64>,
        /// What the decision used (an LLM call's tokens), priced.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        usage: Option<Box<Usage>>,
    },
    /// A transfer decision was carried out.
    #[serde(rename = "transfer.initiated")]
    TransferInitiated {
        /// Where to.
        target: String,
        /// Why.
        reason: String,
    },
    /// A conversation ended.
    #[serde(rename = "conversation.ended")]
    ConversationEnded {
        /// How it ended.
        resolution: Resolution,
        /// Customer rating 1–5.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rating: Option<u8>,
        /// Tags.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        tags: Vec<String>,
        /// The channel (repeated from the start so the end stands alone).
        channel: Channel,
        /// Seconds from start to end.
        duration_seconds: f64,
        /// Number of agent plus customer turns.
        interaction_count: u32,
        /// Number of agent turns.
        agent_turns: u32,
        /// Number of customer turns.
        customer_turns: u32,
        /// The end customer (repeated from the start).
        #[serde(default)]
        customer_id: String,
        /// The language tag (repeated from the start).
        #[serde(default)]
        language: String,
        /// When the conversation started (repeated from the start, so that ClickHouse's
        /// conversation row written at the end is complete and lands in the start's partition).
        #[serde(default, with = "time::serde::rfc3339::option", skip_serializing_if = "Option::is_none")]
        started_at: Option<OffsetDateTime>,
        /// The usage of all its turns and decisions, summed, with the total cost.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        usage: Option<Box<Usage>>,
        /// Interruptions, dead air and talk time, summed over its turns.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        turn_taking: Option<TurnTaking>,
    },
    /// Something failed during the conversation.
    #[serde(rename = "error.occurred")]
    ErrorOccurred {
        /// A short, low-cardinality class, e.g. `llm_timeout`.
        error_type: String,
    },
    /// A compliance policy was violated.
    #[serde(rename = "compliance.violation")]
    ComplianceViolation {
        /// The policy, e.g. `pci_dss`.
        policy: String,
        /// `low`, `medium`, `high`, `critical`.
        severity: String,
    },
}

impl EventKind {
    /// The event type of this kind.
    pub fn event_type(&self) -> EventType {
        match self {
            EventKind::ConversationStarted { .. } => EventType::ConversationStarted,
            EventKind::AgentTurn { .. } => EventType::InteractionAgent,
            EventKind::CustomerTurn { .. } => EventType::InteractionCustomer,
            EventKind::DecisionMade { .. } => EventType::DecisionMade,
            EventKind::TransferInitiated { .. } => EventType::TransferInitiated,
            EventKind::ConversationEnded { .. } => EventType::ConversationEnded,
            EventKind::ErrorOccurred { .. } => EventType::ErrorOccurred,
            EventKind::ComplianceViolation { .. } => EventType::ComplianceViolation,
        }
    }
}

/// One event: the unit every sink receives, serialized as one JSON log line.
///
/// The common fields are the platform's log structure (`timestamp, level, service, tenant_id,
/// conversation_id, event_type, speaker, content, metadata, trace_id, span_id`) plus
/// `event_id` (UUIDv7, the deduplication key downstream), `agent_id` and the fields of the
/// [`EventKind`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Unique id (UUIDv7); sinks use it to deduplicate retried deliveries.
    pub event_id: Uuid,
    /// When it happened (RFC 3339, UTC).
    #[serde(with = "time::serde::rfc3339")]
    pub timestamp: OffsetDateTime,
    /// Severity of the line.
    pub level: Level,
    /// The emitting service's `service_name`.
    pub service: Arc<str>,
    /// The tenant.
    pub tenant_id: Arc<str>,
    /// The conversation.
    pub conversation_id: Arc<str>,
    /// The agent handling the conversation.
    pub agent_id: Arc<str>,
    /// Who produced `content`.
    pub speaker: Speaker,
    /// The transcript text for turns; a human-readable message for other events.
    pub content: String,
    /// Sentiment, intent, confidence, scores and free-form attributes.
    #[serde(default)]
    pub metadata: Metadata,
    /// Trace and span ids.
    #[serde(flatten)]
    pub trace: TraceIds,
    /// The event type and its own fields.
    #[serde(flatten)]
    pub kind: EventKind,
}

impl Event {
    /// The event type.
    pub fn event_type(&self) -> EventType {
        self.kind.event_type()
    }

    /// One JSON line (without the newline). Events built by the library always serialize;
    /// one assembled by hand with a timestamp RFC 3339 cannot express (year outside
    /// 0000–9999) does not.
    pub fn to_json(&self) -> Result<String, serde_json::Error> {
        serde_json::to_string(self)
    }

    /// Appends this event as one JSON line, newline included; on error `buf` is unchanged.
    pub fn write_json_line(&self, buf: &mut Vec<u8>) -> Result<(), serde_json::Error> {
        let start = buf.len();
        match serde_json::to_writer(&mut *buf, self) {
            Ok(()) => {
                buf.push(b'\n');
                Ok(())
            }
            Err(e) => {
                buf.truncate(start);
                Err(e)
            }
        }
    }

    /// Parses one JSON line.
    pub fn from_json(line: &str) -> Result<Event, serde_json::Error> {
        serde_json::from_str(line)
    }
}

mod hex_trace_id {
    use opentelemetry::trace::TraceId;
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(id: &TraceId, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(id)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<TraceId, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        super::parse_trace_id(&s).ok_or_else(|| D::Error::custom(format!("invalid trace_id {s:?}")))
    }
}

mod hex_span_id {
    use opentelemetry::trace::SpanId;
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(id: &SpanId, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(id)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SpanId, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        super::parse_span_id(&s).ok_or_else(|| D::Error::custom(format!("invalid span_id {s:?}")))
    }
}

mod hex_opt_span_id {
    use opentelemetry::trace::SpanId;
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(id: &Option<SpanId>, s: S) -> Result<S::Ok, S::Error> {
        match id {
            Some(id) => super::hex_span_id::serialize(id, s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SpanId>, D::Error> {
        super::hex_span_id::deserialize(d).map(Some)
    }
}

/// A timestamp every sink can represent the same: in UTC, with the year clamped to 0000–9999
/// (what RFC 3339 and ClickHouse's DateTime64 can hold), to whole microseconds (ClickHouse's
/// DateTime64(6)), so the event log and ClickHouse rows carry the very same instant.
pub(crate) fn normalize_timestamp(at: OffsetDateTime) -> OffsetDateTime {
    use time::macros::datetime;
    const MIN: OffsetDateTime = datetime!(0000-01-01 00:00:00 UTC);
    const MAX: OffsetDateTime = datetime!(9999-12-31 23:59:59.999_999 UTC);
    let clamped = match at.checked_to_offset(time::UtcOffset::UTC) {
        Some(utc) => utc.clamp(MIN, MAX),
        None if at < MIN => MIN,
        None => MAX,
    };
    let micros = clamped.nanosecond() / 1000 * 1000;
    clamped.replace_nanosecond(micros).unwrap_or(clamped)
}

/// Parses a 32-digit hex trace id; `None` when malformed or all zero.
pub(crate) fn parse_trace_id(s: &str) -> Option<TraceId> {
    if s.len() != 32 {
        return None;
    }
    TraceId::from_hex(s).ok().filter(|id| *id != TraceId::INVALID)
}

/// Parses a 16-digit hex span id; `None` when malformed or all zero.
pub(crate) fn parse_span_id(s: &str) -> Option<SpanId> {
    if s.len() != 16 {
        return None;
    }
    SpanId::from_hex(s).ok().filter(|id| *id != SpanId::INVALID)
}
