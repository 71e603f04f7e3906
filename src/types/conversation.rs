use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// The channel a conversation runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Channel {
    /// A phone or WebRTC voice call.
    Voice,
    /// Web or in-app chat.
    Chat,
    /// Text messages.
    Sms,
    /// Email threads.
    Email,
}

impl Channel {
    /// Every channel, in display order.
    pub const ALL: [Channel; 4] = [Channel::Voice, Channel::Chat, Channel::Sms, Channel::Email];

    /// The label value used in metrics, logs and rows.
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Voice => "voice",
            Channel::Chat => "chat",
            Channel::Sms => "sms",
            Channel::Email => "email",
        }
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Channel {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Channel::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| format!("unknown channel {s:?} (expected one of: voice, chat, sms, email)"))
    }
}

/// How a conversation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Resolution {
    /// The agent solved the customer's problem.
    Resolved,
    /// Handed to another agent or a human queue.
    Transferred,
    /// Escalated to a supervisor or a ticket.
    Escalated,
    /// Ended without a resolution.
    Unresolved,
    /// The customer left, or the handle was dropped without an end.
    Abandoned,
}

impl Resolution {
    /// Every resolution, in display order.
    pub const ALL: [Resolution; 5] = [
        Resolution::Resolved,
        Resolution::Transferred,
        Resolution::Escalated,
        Resolution::Unresolved,
        Resolution::Abandoned,
    ];

    /// The label value used in metrics, logs and rows.
    pub fn as_str(self) -> &'static str {
        match self {
            Resolution::Resolved => "resolved",
            Resolution::Transferred => "transferred",
            Resolution::Escalated => "escalated",
            Resolution::Unresolved => "unresolved",
            Resolution::Abandoned => "abandoned",
        }
    }
}

impl fmt::Display for Resolution {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Resolution {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Resolution::ALL.into_iter().find(|r| r.as_str() == s).ok_or_else(|| {
            format!(
                "unknown resolution {s:?} (expected one of: resolved, transferred, escalated, unresolved, abandoned)"
            )
        })
    }
}

/// The start of a conversation (`ConversationStart` in the platform's other services).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConversationStart {
    /// Explicit conversation id; a UUIDv7 is generated when `None`.
    pub conversation_id: Option<String>,
    /// The tenant (Serphona customer) this conversation belongs to.
    pub tenant_id: String,
    /// The AI agent handling the conversation.
    pub agent_id: String,
    /// The end customer.
    pub customer_id: String,
    /// Voice, chat, …
    pub channel: Channel,
    /// BCP 47 language tag, e.g. `en-US`.
    pub language: String,
    /// Free-form attributes (campaign, queue, …).
    pub metadata: BTreeMap<String, String>,
    /// When it started; now when `None` (set it to replay or simulate).
    pub at: Option<OffsetDateTime>,
}

impl ConversationStart {
    /// A start with the required fields; language defaults to `en-US`.
    pub fn new(
        tenant_id: impl Into<String>,
        agent_id: impl Into<String>,
        customer_id: impl Into<String>,
        channel: Channel,
    ) -> Self {
        ConversationStart {
            conversation_id: None,
            tenant_id: tenant_id.into(),
            agent_id: agent_id.into(),
            customer_id: customer_id.into(),
            channel,
            language: "en-US".into(),
            metadata: BTreeMap::new(),
            at: None,
        }
    }

    /// Sets the language tag.
    pub fn language(mut self, language: impl Into<String>) -> Self {
        self.language = language.into();
        self
    }

    /// Sets an explicit conversation id (e.g. one received from another service).
    pub fn id(mut self, conversation_id: impl Into<String>) -> Self {
        self.conversation_id = Some(conversation_id.into());
        self
    }

    /// Adds a metadata entry.
    pub fn meta(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }

    /// Sets the start time.
    pub fn at(mut self, at: OffsetDateTime) -> Self {
        self.at = Some(at);
        self
    }
}

/// The end of a conversation (`ConversationEnd` in the platform's other services).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConversationEnd {
    /// How it ended.
    pub resolution: Resolution,
    /// Customer rating 1–5, when the customer gave one.
    pub rating: Option<u8>,
    /// Free-form tags (e.g. `billing`, `vip`).
    pub tags: Vec<String>,
    /// When it ended; now when `None`.
    pub at: Option<OffsetDateTime>,
}

impl ConversationEnd {
    /// An end with a resolution and nothing else.
    pub fn new(resolution: Resolution) -> Self {
        ConversationEnd { resolution, rating: None, tags: Vec::new(), at: None }
    }

    /// Sets the customer rating (1–5; values outside are clamped).
    pub fn rating(mut self, rating: u8) -> Self {
        self.rating = Some(rating.clamp(1, 5));
        self
    }

    /// Adds a tag.
    pub fn tag(mut self, tag: impl Into<String>) -> Self {
        self.tags.push(tag.into());
        self
    }

    /// Sets the end time.
    pub fn at(mut self, at: OffsetDateTime) -> Self {
        self.at = Some(at);
        self
    }
}
