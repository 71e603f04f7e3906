use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::{Interruption, Speaker, Usage};

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

/// The sentiment label of a turn: `positive`, `neutral` or `negative`.
///
/// Scores and labels convert one way with fixed thresholds, and back with one fixed score per
/// label; both live here and nowhere else (the ClickHouse migration
/// `0008_seed_columns.sql` labels stored scores with the same thresholds):
///
/// | score (-1 to 1)        | label      | the score a label alone is given |
/// |------------------------|------------|----------------------------------|
/// | `score >= 0.25`        | `positive` | `0.5`                            |
/// | `-0.25 < score < 0.25` | `neutral`  | `0.0`                            |
/// | `score <= -0.25`       | `negative` | `-0.5`                           |
///
/// The score given to a label alone is the middle of its band, so that
/// `conversation_sentiment_score` and the mean sentiments stay on the same -1..1 scale when
/// some callers send labels and others scores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Sentiment {
    /// Score at or above [`Sentiment::POSITIVE_FROM`].
    Positive,
    /// Between the two thresholds.
    Neutral,
    /// Score at or below [`Sentiment::NEGATIVE_TO`].
    Negative,
}

impl Sentiment {
    /// The lowest score labelled `positive`.
    pub const POSITIVE_FROM: f64 = 0.25;
    /// The highest score labelled `negative`.
    pub const NEGATIVE_TO: f64 = -0.25;

    /// The label of a score (`None` for a score that is not a finite number).
    pub fn from_score(score: f64) -> Option<Sentiment> {
        if !score.is_finite() {
            None
        } else if score >= Self::POSITIVE_FROM {
            Some(Sentiment::Positive)
        } else if score <= Self::NEGATIVE_TO {
            Some(Sentiment::Negative)
        } else {
            Some(Sentiment::Neutral)
        }
    }

    /// The score that stands for this label when no score was given: the middle of its band.
    pub fn score(self) -> f64 {
        match self {
            Sentiment::Positive => 0.5,
            Sentiment::Neutral => 0.0,
            Sentiment::Negative => -0.5,
        }
    }

    /// The label as the event log and ClickHouse write it.
    pub fn as_str(self) -> &'static str {
        match self {
            Sentiment::Positive => "positive",
            Sentiment::Neutral => "neutral",
            Sentiment::Negative => "negative",
        }
    }

    /// Reads a label, in any case (`"Positive"`, `" negative "`); `None` for anything else.
    pub fn parse(label: &str) -> Option<Sentiment> {
        match label.trim().to_ascii_lowercase().as_str() {
            "positive" => Some(Sentiment::Positive),
            "neutral" => Some(Sentiment::Neutral),
            "negative" => Some(Sentiment::Negative),
            _ => None,
        }
    }
}

impl std::fmt::Display for Sentiment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Scores and labels attached to an event; serialized as the log line's `metadata` object.
///
/// The known keys are typed; anything else goes in `extra` and is written beside them.
/// `sentiment` is the label and `sentiment_score` the number (-1 to 1); when only one of the
/// two is given, the other is derived from it (see [`Sentiment`]).
///
/// Values for the typed keys may also come as strings, the way services send a
/// `map[string]string` ([`Metadata::insert`], [`Metadata::from_strings`]): `"sentiment":
/// "neutral"`, `"confidence": "0.95"`. A value that cannot be read as its type (`"sentiment":
/// "very bad"`) is kept, in `extra` under the key with `_raw` appended, not dropped.
/// When reading a log line, a numeric `sentiment` (written by earlier versions) is read as the
/// score.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Metadata {
    /// The sentiment label.
    pub sentiment: Option<Sentiment>,
    /// The sentiment score, from -1 (negative) to 1 (positive).
    pub sentiment_score: Option<f64>,
    /// The detected intent.
    pub intent: Option<String>,
    /// Confidence of the intent or decision, 0–1.
    pub confidence: Option<f64>,
    /// How assertive the agent's turn was, 0–1.
    pub assertiveness: Option<f64>,
    /// Compliance scores per policy, 0–1.
    pub compliance: BTreeMap<String, f64>,
    /// Anything else.
    pub extra: BTreeMap<String, serde_json::Value>,
}

impl Serialize for Metadata {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(None)?;
        if let Some(v) = self.sentiment {
            map.serialize_entry("sentiment", v.as_str())?;
        }
        if let Some(v) = self.sentiment_score {
            map.serialize_entry("sentiment_score", &v)?;
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

impl<'de> Deserialize<'de> for Metadata {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let entries = BTreeMap::<String, serde_json::Value>::deserialize(deserializer)?;
        let mut m = Metadata::default();
        for (k, v) in entries {
            m.insert(k, v);
        }
        m.complete_sentiment();
        Ok(m)
    }
}

/// A number, or a string holding one (`"0.95"`).
fn number(v: &serde_json::Value) -> Option<f64> {
    match v {
        serde_json::Value::Number(n) => n.as_f64(),
        serde_json::Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    }
}

impl Metadata {
    /// The names of the typed fields, which `extra` cannot use.
    pub const RESERVED: [&'static str; 6] =
        ["sentiment", "sentiment_score", "intent", "confidence", "assertiveness", "compliance"];

    /// Metadata from string pairs, the way services send a `map[string]string`: the typed keys
    /// are read as their types (see [`Metadata::insert`]).
    pub fn from_strings<K: Into<String>, V: Into<String>>(pairs: impl IntoIterator<Item = (K, V)>) -> Metadata {
        let mut m = Metadata::default();
        for (k, v) in pairs {
            m.insert(k.into(), serde_json::Value::String(v.into()));
        }
        m.complete_sentiment();
        m
    }

    /// Sets one entry. A typed key is read as its type, from a string too: `sentiment` as a
    /// label (or, when it is a number, as the score, as earlier versions wrote it),
    /// `sentiment_score`, `confidence` and `assertiveness` as numbers, `intent` as text,
    /// `compliance` as an object of policy scores. A value that cannot be read so is kept in
    /// `extra` under `<key>_raw`. Any other key goes to `extra` as it is.
    pub fn insert(&mut self, key: impl Into<String>, value: impl Into<serde_json::Value>) {
        use serde_json::Value;
        let key = key.into();
        let value = value.into();
        let typed = match key.as_str() {
            "sentiment" => match &value {
                Value::String(s) => match Sentiment::parse(s) {
                    Some(label) => {
                        self.sentiment = Some(label);
                        true
                    }
                    // A number as text: a score.
                    None => number(&value).map(|n| self.sentiment_score = Some(n)).is_some(),
                },
                Value::Number(_) => number(&value).map(|n| self.sentiment_score = Some(n)).is_some(),
                _ => false,
            },
            "sentiment_score" => number(&value).map(|n| self.sentiment_score = Some(n)).is_some(),
            "confidence" => number(&value).map(|n| self.confidence = Some(n)).is_some(),
            "assertiveness" => number(&value).map(|n| self.assertiveness = Some(n)).is_some(),
            "intent" => match &value {
                Value::String(s) => {
                    self.intent = Some(s.clone());
                    true
                }
                Value::Null => true,
                other => {
                    self.intent = Some(other.to_string());
                    true
                }
            },
            "compliance" => match &value {
                Value::Object(scores) => {
                    for (policy, score) in scores {
                        match number(score) {
                            Some(n) => {
                                self.compliance.insert(policy.clone(), n);
                            }
                            None => {
                                self.extra.insert(format!("compliance.{policy}_raw"), score.clone());
                            }
                        }
                    }
                    true
                }
                _ => false,
            },
            _ => {
                self.extra.insert(key, value);
                return;
            }
        };
        if !typed && !value.is_null() {
            self.extra.insert(format!("{key}_raw"), value);
        }
    }

    /// Fills in the sentiment label from the score, or the score from the label, when only
    /// one of them is set (see [`Sentiment`]).
    pub fn complete_sentiment(&mut self) {
        match (self.sentiment, self.sentiment_score) {
            (None, Some(score)) => self.sentiment = Sentiment::from_score(score),
            (Some(label), None) => self.sentiment_score = Some(label.score()),
            _ => {}
        }
    }

    /// Drops scores that are not finite numbers (JSON cannot carry them), then completes the
    /// sentiment label or score.
    pub(crate) fn sanitize(&mut self) {
        for score in [&mut self.sentiment_score, &mut self.confidence, &mut self.assertiveness] {
            if score.is_some_and(|v| !v.is_finite()) {
                *score = None;
            }
        }
        self.compliance.retain(|_, v| v.is_finite());
        self.complete_sentiment();
    }

    /// True when nothing is set.
    pub fn is_empty(&self) -> bool {
        self.sentiment.is_none()
            && self.sentiment_score.is_none()
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
    /// Time spent in tool calls before the reply (part of `response_ms`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_ms: Option<f64>,
    /// For the agent's greeting: from the call's start to the agent's first audio. The library
    /// measures it for the first agent turn that answers no customer turn, when not given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub greeting_ms: Option<f64>,
    /// Whether the customer interrupted (barged in on) this turn. Setting it is the same as
    /// [`Interaction::interrupted_by`] the customer, without the overlap.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub interrupted: bool,
}

impl TurnLatency {
    /// The parts by their names in metrics, rows and `query stats` (`stt`,
    /// `end_of_utterance`, `llm_ttft`, `tts_ttfb`, `tool`, `greeting`, `response`), in that order.
    pub fn parts(&self) -> [(&'static str, Option<f64>); 7] {
        [
            ("stt", self.stt_ms),
            ("end_of_utterance", self.end_of_utterance_ms),
            ("llm_ttft", self.llm_ttft_ms),
            ("tts_ttfb", self.tts_ttfb_ms),
            ("tool", self.tool_ms),
            ("greeting", self.greeting_ms),
            ("response", self.response_ms),
        ]
    }
}

/// One turn of a conversation (`Interaction` in the platform's other services).
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
    /// What producing the turn used (an agent turn's LLM call, speech-to-text of the
    /// customer's audio, …); priced when recorded.
    pub usage: Option<Box<Usage>>,
    /// This turn was cut in on (see [`Interruption`]).
    pub interruption: Option<Interruption>,
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
            usage: None,
            interruption: None,
        }
    }

    /// Sets the sentiment score (-1 to 1); the label is derived from it (see [`Sentiment`]).
    pub fn sentiment(mut self, score: f64) -> Self {
        self.metadata.sentiment_score = Some(score);
        self
    }

    /// Sets the sentiment label; when no score is set, the label's score stands for it (see
    /// [`Sentiment`]).
    pub fn sentiment_label(mut self, label: Sentiment) -> Self {
        self.metadata.sentiment = Some(label);
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

    /// Adds a metadata entry. The typed keys ([`Metadata::RESERVED`]) are read as their types,
    /// from strings too, as services that pass a `map[string]string` send them: `.meta("sentiment",
    /// "neutral")`, `.meta("confidence", "0.95")` (see [`Metadata::insert`]).
    pub fn meta(mut self, key: impl Into<String>, value: impl Into<serde_json::Value>) -> Self {
        self.metadata.insert(key, value);
        self
    }

    /// Adds string metadata entries, as a `map[string]string` (see [`Metadata::insert`]).
    pub fn metadata<K: Into<String>, V: Into<String>>(mut self, pairs: impl IntoIterator<Item = (K, V)>) -> Self {
        for (k, v) in pairs {
            self.metadata.insert(k.into(), serde_json::Value::String(v.into()));
        }
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

    /// Sets what the turn used (tokens, audio, characters); the library prices it.
    pub fn usage(mut self, usage: Usage) -> Self {
        self.usage = Some(Box::new(usage));
        self
    }

    /// Says that `by` cut in on this turn, with how long both talked at once when known.
    pub fn interrupted_by(mut self, by: TurnSpeaker, overlap_ms: Option<f64>) -> Self {
        self.interruption = Some(Interruption { by, overlap_ms, derived: false });
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    // Issue 12, section 1: the event log's `metadata.sentiment` is the seed's label and the
    // number is `metadata.sentiment_score`; either one given alone completes the other.
    #[test]
    fn sentiment_is_written_as_the_label_beside_the_score() {
        let mut m = Metadata { sentiment_score: Some(-0.6), ..Metadata::default() };
        m.sanitize();
        assert_eq!(serde_json::to_value(&m).unwrap(), json!({"sentiment": "negative", "sentiment_score": -0.6}));
        let mut m = Metadata { sentiment: Some(Sentiment::Positive), ..Metadata::default() };
        m.sanitize();
        assert_eq!(serde_json::to_value(&m).unwrap(), json!({"sentiment": "positive", "sentiment_score": 0.5}));
        // Both given: both kept as they are, even when they disagree.
        let mut m = Metadata { sentiment: Some(Sentiment::Neutral), sentiment_score: Some(0.9), ..Metadata::default() };
        m.sanitize();
        assert_eq!((m.sentiment, m.sentiment_score), (Some(Sentiment::Neutral), Some(0.9)));
    }

    #[test]
    fn thresholds_cut_the_scale_where_the_docs_say() {
        let label = |s: f64| Sentiment::from_score(s);
        assert_eq!(label(0.25), Some(Sentiment::Positive));
        assert_eq!(label(0.2499), Some(Sentiment::Neutral));
        assert_eq!(label(-0.2499), Some(Sentiment::Neutral));
        assert_eq!(label(-0.25), Some(Sentiment::Negative));
        assert_eq!(label(f64::NAN), None);
        // A label's own score falls in its band.
        for s in [Sentiment::Positive, Sentiment::Neutral, Sentiment::Negative] {
            assert_eq!(label(s.score()), Some(s));
        }
    }

    // Issue 12, section 1: the seed's style of metadata (`map[string]string`) is typed, not
    // refused or dropped.
    #[test]
    fn string_metadata_in_the_seeds_style_is_typed() {
        let m = Metadata::from_strings([
            ("sentiment", "Neutral"),
            ("intent", "greeting"),
            ("confidence", "0.95"),
            ("assertiveness", " 0.4 "),
            ("locale", "en-US"),
        ]);
        assert_eq!(m.sentiment, Some(Sentiment::Neutral));
        assert_eq!(m.sentiment_score, Some(0.0));
        assert_eq!(m.intent.as_deref(), Some("greeting"));
        assert_eq!(m.confidence, Some(0.95));
        assert_eq!(m.assertiveness, Some(0.4));
        assert_eq!(m.extra, BTreeMap::from([("locale".to_string(), json!("en-US"))]));
        // A number as text in `sentiment` is a score; what cannot be read is kept beside.
        let m = Metadata::from_strings([("sentiment", "-0.7"), ("confidence", "high")]);
        assert_eq!((m.sentiment, m.sentiment_score), (Some(Sentiment::Negative), Some(-0.7)));
        assert_eq!(m.confidence, None);
        assert_eq!(m.extra["confidence_raw"], json!("high"));
        let m = Metadata::from_strings([("sentiment", "very bad")]);
        assert_eq!((m.sentiment, m.sentiment_score), (None, None));
        assert_eq!(m.extra["sentiment_raw"], json!("very bad"));
        // The builder's `meta` takes the same path.
        let turn = Interaction::customer("hi").meta("sentiment", "positive").meta("confidence", "0.5");
        assert_eq!(turn.metadata.sentiment, Some(Sentiment::Positive));
        assert_eq!(turn.metadata.confidence, Some(0.5));
        let turn = Interaction::customer("hi").metadata([("sentiment", "negative"), ("intent", "billing")]);
        assert_eq!(turn.metadata.sentiment, Some(Sentiment::Negative));
        assert_eq!(turn.metadata.intent.as_deref(), Some("billing"));
    }

    // Issue 12, section 1: older logs with a numeric `sentiment` still read, as the score.
    #[test]
    fn an_older_log_line_with_a_numeric_sentiment_reads_as_the_score() {
        let m: Metadata = serde_json::from_value(json!({"sentiment": 0.4, "intent": "billing", "confidence": 0.9})).unwrap();
        assert_eq!(m.sentiment_score, Some(0.4));
        assert_eq!(m.sentiment, Some(Sentiment::Positive));
        assert_eq!(m.intent.as_deref(), Some("billing"));
        let m: Metadata =
            serde_json::from_value(json!({"sentiment": "negative", "sentiment_score": -0.3, "confidence": "0.95"})).unwrap();
        assert_eq!((m.sentiment, m.sentiment_score, m.confidence), (Some(Sentiment::Negative), Some(-0.3), Some(0.95)));
        // What is written reads back the same.
        let back: Metadata = serde_json::from_str(&serde_json::to_string(&m).unwrap()).unwrap();
        assert_eq!(back, m);
    }
}
