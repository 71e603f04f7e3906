use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::Usage;

/// What kind of decision the agent made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum DecisionType {
    /// The agent classified the customer's intent; `option` is the intent.
    IntentDetection,
    /// Hand the conversation to another agent or queue; `option` is the target.
    /// Also emits `transfer.initiated`.
    Transfer,
    /// Escalate to a supervisor or ticket; `option` is the target.
    Escalation,
    /// Call a tool or API; `option` is the tool.
    ToolCall,
    /// Choose a response strategy or anything else.
    Response,
    /// Call an LLM; `option` is the model. Carries the call's [`Usage`] (its span is
    /// `chat <model>`, with the OpenTelemetry GenAI attributes).
    LlmCall,
}

impl DecisionType {
    /// The value used in logs and rows.
    pub fn as_str(self) -> &'static str {
        match self {
            DecisionType::IntentDetection => "intent_detection",
            DecisionType::Transfer => "transfer",
            DecisionType::Escalation => "escalation",
            DecisionType::ToolCall => "tool_call",
            DecisionType::Response => "response",
            DecisionType::LlmCall => "llm_call",
        }
    }
}

impl fmt::Display for DecisionType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A decision the agent made (what the platform's services call `Decision`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// What kind of decision.
    pub decision_type: DecisionType,
    /// The option chosen (intent, transfer target, tool, …).
    pub option: String,
    /// Why.
    pub reason: String,
    /// The model's confidence, 0–1.
    pub confidence: Option<f64>,
    /// Free-form attributes.
    pub metadata: BTreeMap<String, String>,
    /// How long deciding took, when known.
    pub duration_ms: Option<f64>,
    /// When it was made; now when `None`.
    pub at: Option<OffsetDateTime>,
    /// What it used (an LLM call's tokens); priced when recorded.
    pub usage: Option<Box<Usage>>,
}

impl Decision {
    /// A decision of a type with the chosen option and a reason.
    pub fn new(decision_type: DecisionType, option: impl Into<String>, reason: impl Into<String>) -> Self {
        Decision {
            decision_type,
            option: option.into(),
            reason: reason.into(),
            confidence: None,
            metadata: BTreeMap::new(),
            duration_ms: None,
            at: None,
            usage: None,
        }
    }

    /// A transfer to `target`.
    pub fn transfer(target: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::new(DecisionType::Transfer, target, reason)
    }

    /// Sets the confidence.
    pub fn confidence(mut self, confidence: f64) -> Self {
        self.confidence = Some(confidence);
        self
    }

    /// Adds a metadata entry.
    pub fn meta(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }

    /// Sets how long deciding took.
    pub fn duration_ms(mut self, ms: f64) -> Self {
        self.duration_ms = Some(ms);
        self
    }

    /// Sets the decision time.
    pub fn at(mut self, at: OffsetDateTime) -> Self {
        self.at = Some(at);
        self
    }

    /// Sets what the decision used (an LLM call's tokens); the library prices it.
    pub fn usage(mut self, usage: Usage) -> Self {
        self.usage = Some(Box::new(usage));
        self
    }
}
