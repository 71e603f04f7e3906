use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::Speaker;

/// Who takes a turn: the agent or the customer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TurnSpeaker {
    /// The AI agent (`interaction.agent`).
    Agent,
    /// The customer (`interaction.customer`).
    Customer,
}

impl From<TurnSpeaker> for Speaker {
    fn from(s: TurnSpeaker) -> Speaker {
        match s {
            TurnSpeaker::Agent => Speaker::Agent,
            TurnSpeaker::Customer => Speaker::Customer,
        }
    }
}

/// Scores and labels attached to an event; serialized as the log line's `metadata` object.
///
/// The known keys are typed; anything else goes in `extra` and is written beside them. The
/// typed names ([`Metadata::RESERVED`]) are reserved: an `extra` entry with one of them is not
/// written (it would collide with the typed field); set the typed field instead.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct Metadata {
    /// Sentiment from -1 (negative) to 1 (positive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sentiment: Option<f64>,
    /// The detected intent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intent: Option<String>,
    /// Confidence of the intent or decision, 0–1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confidence: Option<f64>,
    /// How assertive the agent's turn was, 0–1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assertiveness: Option<f64>,
    /// Compliance scores per policy, 0–1.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub compliance: BTreeMap<String, f64>,
    /// Anything else.
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

impl Serialize for Metadata {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(None)?;
        if let Some(v) = self.sentiment {
            map.serialize_entry("sentiment", &v)?;
        }
        if let Some(v) = &self.intent {
            map.serialize_entry("intent", v)?;
        }
        if let Some(v) = self.confidence {
            map.serialize_entry("confidence", &v)?;
        }
        if let Some(v) = self.assertiveness {
            map.serialize_entry("assertiveness", &v)?;
        }
        if !self.compliance.is_empty() {
            map.serialize_entry("compliance", &self.compliance)?;
        }
        for (k, v) in &self.extra {
            if !Metadata::RESERVED.contains(&k.as_str()) {
                map.serialize_entry(k, v)?;
            }
        }
        map.end()
    }
}

impl Metadata {
    /// The names of the typed fields, which `extra` cannot use.
    pub const RESERVED: [&'static str; 5] = ["sentiment", "intent", "confidence", "assertiveness", "compliance"];

    /// Drops scores that are not finite numbers (JSON cannot carry them).
    pub(crate) fn sanitize(&mut self) {
        for score in [&mut self.sentiment, &mut self.confidence, &mut self.assertiveness] {
            if score.is_some_and(|v| !v.is_finite()) {
                *score = None;
            }
        }
        self.compliance.retain(|_, v| v.is_finite());
    }

    /// True when nothing is set.
    pub fn is_empty(&self) -> bool {
        self.sentiment.is_none()
            && self.intent.is_none()
            && self.confidence.is_none()
            && self.assertiveness.is_none()
            && self.compliance.is_empty()
            && self.extra.is_empty()
    }
}

/// The latency parts of a voice turn, in milliseconds (all optional).
///
/// For an agent turn, `response_ms` is the user-to-agent response latency: from the end of
/// the customer's speech to the first audio of the agent. When it is missing, the library
/// measures the agent response time from the previous customer turn's timestamp.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct TurnLatency {
    /// Speech-to-text time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stt_ms: Option<f64>,
    /// End-of-utterance detection delay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_of_utterance_ms: Option<f64>,
    /// LLM time to first token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub llm_ttft_ms: Option<f64>,
    /// Text-to-speech time to first byte.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tts_ttfb_ms: Option<f64>,
    /// User-to-agent response latency.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_ms: Option<f64>,
    /// Whether the customer interrupted (barged in on) this turn.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub interrupted: bool,
}

/// One turn of a conversation (the seed's `Interaction`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Interaction {
    /// Who spoke.
    pub speaker: TurnSpeaker,
    /// What was said (transcript text).
    pub content: String,
    /// Sentiment, intent, confidence, quality scores, anything else.
    pub metadata: Metadata,
    /// Voice latency parts.
    pub latency: Option<TurnLatency>,
    /// How long the turn took (speaking time), when known.
    pub duration_ms: Option<f64>,
    /// When the turn started; now when `None`.
    pub at: Option<OffsetDateTime>,
}

impl Interaction {
    /// An agent turn.
    pub fn agent(content: impl Into<String>) -> Self {
        Self::new(TurnSpeaker::Agent, content)
    }

    /// A customer turn.
    pub fn customer(content: impl Into<String>) -> Self {
        Self::new(TurnSpeaker::Customer, content)
    }

    fn new(speaker: TurnSpeaker, content: impl Into<String>) -> Self {
        Interaction {
            speaker,
            content: content.into(),
            metadata: Metadata::default(),
            latency: None,
            duration_ms: None,
            at: None,
        }
    }

    /// Sets the sentiment score (-1 to 1).
    pub fn sentiment(mut self, score: f64) -> Self {
        self.metadata.sentiment = Some(score);
        self
    }

    /// Sets the detected intent and its confidence.
    pub fn intent(mut self, intent: impl Into<String>, confidence: f64) -> Self {
        self.metadata.intent = Some(intent.into());
        self.metadata.confidence = Some(confidence);
        self
    }

    /// Sets the agent's assertiveness score (0–1).
    pub fn assertiveness(mut self, score: f64) -> Self {
        self.metadata.assertiveness = Some(score);
        self
    }

    /// Sets a compliance score (0–1) for a policy.
    pub fn compliance(mut self, policy: impl Into<String>, score: f64) -> Self {
        self.metadata.compliance.insert(policy.into(), score);
        self
    }

    /// Adds a free-form metadata entry (not one of [`Metadata::RESERVED`]: use the typed
    /// setters for those).
    pub fn meta(mut self, key: impl Into<String>, value: impl Into<serde_json::Value>) -> Self {
        self.metadata.extra.insert(key.into(), value.into());
        self
    }

    /// Sets the voice latency parts.
    pub fn latency(mut self, latency: TurnLatency) -> Self {
        self.latency = Some(latency);
        self
    }

    /// Sets how long the turn took.
    pub fn duration_ms(mut self, ms: f64) -> Self {
        self.duration_ms = Some(ms);
        self
    }

    /// Sets the turn's start time.
    pub fn at(mut self, at: OffsetDateTime) -> Self {
        self.at = Some(at);
        self
    }
}
