//! The conversation model: what a service tells the library, and the events it becomes.
//!
//! The four input types are the platform's conversation API: [`ConversationStart`], [`Interaction`],
//! [`Decision`] and [`ConversationEnd`]. Each call on a conversation becomes one or more
//! [`Event`]s, which every sink receives in the same shape.

mod conversation;
mod decision;
pub(crate) mod event;
mod interaction;
mod usage;

pub use conversation::{Channel, ConversationEnd, ConversationStart, Resolution};
pub use decision::{Decision, DecisionType};
pub use event::{Event, EventKind, EventType, Level, Speaker, TraceIds, TurnMarks};
pub use interaction::{Interaction, Metadata, Sentiment, TurnLatency, TurnSpeaker};
pub use usage::{Interruption, TurnTaking, Usage};

/// Returns a new conversation id: a UUIDv7 string (time-ordered, so ids sort by start time).
pub fn new_conversation_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// An agent turn for unit tests.
#[cfg(test)]
pub(crate) fn test_event(content: &str) -> Event {
    use opentelemetry::trace::{SpanId, TraceId};
    Event {
        event_id: uuid::Uuid::now_v7(),
        timestamp: time::OffsetDateTime::now_utc(),
        level: Level::Info,
        service: "svc".into(),
        tenant_id: "t1".into(),
        conversation_id: "c1".into(),
        agent_id: "a1".into(),
        speaker: Speaker::Agent,
        content: content.to_string(),
        metadata: Metadata::default(),
        trace: TraceIds { trace_id: TraceId::from(7u128), span_id: SpanId::from(9u64), parent_span_id: None },
        kind: EventKind::AgentTurn {
            turn: 1,
            latency: None,
            response_time_seconds: None,
            duration_ms: None,
            turn_taking: Default::default(),
            usage: None,
        },
    }
}
