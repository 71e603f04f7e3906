//! What a turn or a decision used of paid services (tokens, audio, characters, minutes) and
//! what it cost; who talked over whom, and the silences between turns.

use serde::{Deserialize, Serialize};

use super::TurnSpeaker;

/// What a turn or a decision used of an LLM and of the voice services, and what it cost.
///
/// The caller fills in the quantities it knows; the library computes `cost_usd` when the
/// turn or decision is recorded, from the price table ([`crate::pricing::Prices`]: the
/// built-in one, or the file named by `usage.prices`). A quantity whose model is not in the
/// table is counted (`serphona_obs_usage_unpriced_total`) and named in `unpriced`; its cost is
/// not guessed. A `cost_usd` the caller set (a provider that reports its own cost) is kept.
///
/// In the event log it is the turn's or decision's `usage` object:
/// `{"model":"gpt-4o-mini","input_tokens":812,"output_tokens":64,"cost_usd":0.00016}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Usage {
    /// The LLM (`gpt-4o-mini`); the name the price table knows it by.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Prompt tokens, cached ones included.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input_tokens: Option<u64>,
    /// Completion tokens.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_tokens: Option<u64>,
    /// Of the input tokens, those read from the provider's prompt cache.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cached_tokens: Option<u64>,
    /// Audio tokens (a speech-to-speech model's audio in and out).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audio_tokens: Option<u64>,
    /// Seconds of audio sent to speech-to-text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stt_seconds: Option<f64>,
    /// The speech-to-text model; the price table's default when `None`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stt_model: Option<String>,
    /// Characters sent to text-to-speech.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tts_characters: Option<u64>,
    /// The text-to-speech voice or model; the price table's default when `None`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tts_model: Option<String>,
    /// Seconds of the phone call this turn accounts for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub telephony_seconds: Option<f64>,
    /// The telephony provider; the price table's default when `None`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub telephony: Option<String>,
    /// What it cost, in US dollars (computed when recorded, unless the caller set it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost_usd: Option<f64>,
    /// Models or services used here that the price table does not know (their cost is not in
    /// `cost_usd`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unpriced: Vec<String>,
}

impl Usage {
    /// Usage of an LLM.
    pub fn llm(model: impl Into<String>, input_tokens: u64, output_tokens: u64) -> Usage {
        Usage {
            model: Some(model.into()),
            input_tokens: Some(input_tokens),
            output_tokens: Some(output_tokens),
            ..Usage::default()
        }
    }

    /// Sets the cached input tokens.
    pub fn cached_tokens(mut self, n: u64) -> Usage {
        self.cached_tokens = Some(n);
        self
    }

    /// Sets the audio tokens.
    pub fn audio_tokens(mut self, n: u64) -> Usage {
        self.audio_tokens = Some(n);
        self
    }

    /// Sets the seconds of speech-to-text audio.
    pub fn stt_seconds(mut self, seconds: f64) -> Usage {
        self.stt_seconds = Some(seconds);
        self
    }

    /// Sets the characters of text-to-speech.
    pub fn tts_characters(mut self, n: u64) -> Usage {
        self.tts_characters = Some(n);
        self
    }

    /// Sets the telephony seconds.
    pub fn telephony_seconds(mut self, seconds: f64) -> Usage {
        self.telephony_seconds = Some(seconds);
        self
    }

    /// Sets the cost, when the provider reported it (the library then does not compute it).
    pub fn cost_usd(mut self, usd: f64) -> Usage {
        self.cost_usd = Some(usd);
        self
    }

    /// True when nothing is set.
    pub fn is_empty(&self) -> bool {
        *self == Usage::default()
    }

    /// Drops quantities that are not finite, non-negative numbers (JSON cannot carry NaN, and
    /// a negative duration is a caller's bug, not a refund).
    pub(crate) fn sanitize(&mut self) {
        for v in [&mut self.stt_seconds, &mut self.telephony_seconds, &mut self.cost_usd] {
            if v.is_some_and(|x| !(x.is_finite() && x >= 0.0)) {
                *v = None;
            }
        }
    }

    /// Adds `other` into this sum: quantities and costs add up, `model` stays only while every
    /// part named the same one, `unpriced` collects the names.
    pub fn add(&mut self, other: &Usage) {
        fn sum_u(a: &mut Option<u64>, b: Option<u64>) {
            if let Some(b) = b {
                *a = Some(a.unwrap_or(0).saturating_add(b));
            }
        }
        fn sum_f(a: &mut Option<f64>, b: Option<f64>) {
            if let Some(b) = b {
                *a = Some(a.unwrap_or(0.0) + b);
            }
        }
        fn same(a: &mut Option<String>, b: &Option<String>, first: bool) {
            match (first, b) {
                (true, _) => a.clone_from(b),
                (false, Some(b)) if a.as_deref() != Some(b) => *a = None,
                _ => {}
            }
        }
        let first = self.is_empty();
        same(&mut self.model, &other.model, first);
        same(&mut self.stt_model, &other.stt_model, first);
        same(&mut self.tts_model, &other.tts_model, first);
        same(&mut self.telephony, &other.telephony, first);
        sum_u(&mut self.input_tokens, other.input_tokens);
        sum_u(&mut self.output_tokens, other.output_tokens);
        sum_u(&mut self.cached_tokens, other.cached_tokens);
        sum_u(&mut self.audio_tokens, other.audio_tokens);
        sum_u(&mut self.tts_characters, other.tts_characters);
        sum_f(&mut self.stt_seconds, other.stt_seconds);
        sum_f(&mut self.telephony_seconds, other.telephony_seconds);
        sum_f(&mut self.cost_usd, other.cost_usd);
        for name in &other.unpriced {
            if !self.unpriced.contains(name) {
                self.unpriced.push(name.clone());
            }
        }
    }
}

/// One side talking over the other.
///
/// On a turn, it says that this turn was cut in on: `by` is who interrupted. A customer
/// barge-in is `by: customer` on the agent's turn; the agent talking over is `by: agent` on
/// the customer's turn. When the caller says nothing and the turn times show this turn started
/// before the other side's previous turn ended, the library records the overlap on this turn
/// as an interruption by its own speaker (`derived: true`), unless the previous turn already
/// said it was interrupted. Either way each interruption is counted once.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Interruption {
    /// Who interrupted.
    pub by: TurnSpeaker,
    /// How long both talked at once, in milliseconds, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overlap_ms: Option<f64>,
    /// True when the library derived it from the turn times.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub derived: bool,
}

/// A conversation's turn-taking, summed over its turns (on `conversation.ended`).
///
/// Talk time is the sum of the turns' `duration_ms`; dead air, the silences between turns of
/// at least `voice.dead_air_threshold` (2 s by default), both only where turn durations are
/// known (voice).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TurnTaking {
    /// Interruptions by the customer (barge-ins).
    pub interruptions_by_customer: u32,
    /// Interruptions by the agent (talking over the customer).
    pub interruptions_by_agent: u32,
    /// Milliseconds both sides talked at once.
    pub overlap_ms: f64,
    /// Silences between turns of at least the threshold.
    pub dead_air_count: u32,
    /// Their total length, in milliseconds.
    pub dead_air_ms: f64,
    /// The agent's speaking time, in milliseconds.
    pub agent_talk_ms: f64,
    /// The customer's speaking time, in milliseconds.
    pub customer_talk_ms: f64,
}

impl TurnTaking {
    /// Interruptions by either side.
    pub fn interruptions(&self) -> u32 {
        self.interruptions_by_customer + self.interruptions_by_agent
    }

    /// Dead air as a share of the conversation's talk and dead air; `None` without either.
    pub fn dead_air_share(&self) -> Option<f64> {
        let whole = self.agent_talk_ms + self.customer_talk_ms + self.dead_air_ms;
        (whole > 0.0).then(|| self.dead_air_ms / whole)
    }

    /// True when nothing was recorded.
    pub fn is_empty(&self) -> bool {
        *self == TurnTaking::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_keep_a_shared_model_and_drop_a_mixed_one() {
        let mut total = Usage::default();
        total.add(&Usage::llm("m1", 100, 10).cost_usd(0.5));
        total.add(&Usage::llm("m1", 50, 5).cached_tokens(20));
        assert_eq!(total.model.as_deref(), Some("m1"));
        assert_eq!((total.input_tokens, total.output_tokens, total.cached_tokens), (Some(150), Some(15), Some(20)));
        assert_eq!(total.cost_usd, Some(0.5));
        total.add(&Usage { unpriced: vec!["m2".into()], ..Usage::llm("m2", 1, 1) });
        assert_eq!(total.model, None);
        assert_eq!(total.unpriced, vec!["m2".to_string()]);
    }

    #[test]
    fn usage_reads_back_what_it_writes_and_omits_what_is_unset() {
        let u = Usage::llm("gpt-4o-mini", 812, 64).stt_seconds(3.5);
        let line = serde_json::to_string(&u).unwrap();
        assert_eq!(line, r#"{"model":"gpt-4o-mini","input_tokens":812,"output_tokens":64,"stt_seconds":3.5}"#);
        assert_eq!(serde_json::from_str::<Usage>(&line).unwrap(), u);
        let mut bad = Usage { stt_seconds: Some(f64::NAN), telephony_seconds: Some(-1.0), ..Usage::default() };
        bad.sanitize();
        assert!(bad.is_empty());
    }
}
