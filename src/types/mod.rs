//! The conversation model: what a service tells the library, and the events it becomes.
//!
//! The four input types mirror the seed's API: [`ConversationStart`], [`Interaction`],
//! [`Decision`] and [`ConversationEnd`]. Each call on a conversation becomes one or more
//! [`Event`]s, which every sink receives in the same shape.

mod conversation;
mod decision;
pub(crate) mod event;
mod interaction;

pub use conversation::{Channel, ConversationEnd, ConversationStart, Resolution};
pub use decision::{Decision, DecisionType};
pub use event::{Event, EventKind, EventType, Level, Speaker, TraceIds};
pub use interaction::{Interaction, Metadata, TurnLatency, TurnSpeaker};

/// Returns a new conversation id: a UUIDv7 string (time-ordered, so ids sort by start time).
pub fn new_conversation_id() -> String {
    uuid::Uuid::now_v7().to_string()
}
