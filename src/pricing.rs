//! The price table: what a model or voice service costs, and the cost of a [`Usage`].
//!
//! One table is built in (`prices.yaml` at the root of the repository, dated); a file of the
//! user's (config `usage.prices`) is laid over it, entry by entry. Costs are computed when a
//! turn or decision is recorded ([`Prices::price`]), so every sink, and every later reader,
//! sees the same figure.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::types::Usage;
use crate::yaml::YamlError;

/// The built-in table's text.
pub const BUILT_IN: &str = include_str!("../prices.yaml");

/// What one model or service costs, in US dollars; every unit is optional.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    /// Per 1,000,000 input tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<f64>,
    /// Per 1,000,000 cached input tokens (the input price when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_input: Option<f64>,
    /// Per 1,000,000 output tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<f64>,
    /// Per 1,000,000 audio tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audio: Option<f64>,
    /// Per minute of speech-to-text audio.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stt_per_minute: Option<f64>,
    /// Per 1,000,000 characters of text-to-speech.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tts_per_million_chars: Option<f64>,
    /// Per minute of call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub telephony_per_minute: Option<f64>,
}

/// The services a usage is priced by when it names none.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Defaults {
    /// Speech-to-text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stt: Option<String>,
    /// Text-to-speech.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tts: Option<String>,
    /// Telephony.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub telephony: Option<String>,
}

/// A price table file (`prices.yaml`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceFile {
    /// When the prices were checked (`2025-06-01`).
    #[serde(default)]
    pub as_of: Option<String>,
    /// Only `USD`.
    #[serde(default)]
    pub currency: Option<String>,
    /// The services that price unnamed voice usage.
    #[serde(default)]
    pub defaults: Defaults,
    /// Model or service name → its price.
    #[serde(default)]
    pub models: BTreeMap<String, Price>,
}

/// A price table that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PricesError {
    /// The file cannot be read.
    #[error("cannot read the price table {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// It does not parse.
    #[error(transparent)]
    Parse(#[from] YamlError),
    /// A value is out of range.
    #[error("{}: field `{field}`: {message}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The field.
        field: String,
        /// What is wrong.
        message: String,
    },
}

/// The priced parts of a usage.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Costing {
    /// (model or service, US dollars), one entry per priced name.
    pub lines: Vec<(String, f64)>,
    /// Names the table does not price (or does not price for the unit used).
    pub unpriced: Vec<String>,
}

impl Costing {
    /// The sum of the lines; `None` when nothing was priced.
    pub fn total(&self) -> Option<f64> {
        (!self.lines.is_empty()).then(|| self.lines.iter().map(|(_, usd)| usd).sum())
    }
}

/// The effective price table.
#[derive(Debug, Clone, PartialEq)]
pub struct Prices {
    file: PriceFile,
}

impl Default for Prices {
    /// The built-in table.
    fn default() -> Prices {
        Prices::built_in()
    }
}

impl Prices {
    /// The built-in table.
    pub fn built_in() -> Prices {
        let file = Self::parse(BUILT_IN, Path::new("prices.yaml (built in)")).expect("the built-in price table parses");
        Prices { file }
    }

    /// The built-in table with `path`'s entries laid over it (`None`: the built-in alone).
    pub fn load(path: Option<&Path>) -> Result<Prices, PricesError> {
        let mut prices = Prices::built_in();
        if let Some(path) = path {
            let text = std::fs::read_to_string(path).map_err(|source| PricesError::Read { path: path.to_path_buf(), source })?;
            let user = Self::parse(&text, path)?;
            prices.overlay(user);
        }
        Ok(prices)
    }

    /// Parses and checks a table.
    pub fn parse(text: &str, origin: &Path) -> Result<PriceFile, PricesError> {
        let file: PriceFile = if text.trim().is_empty() { PriceFile::default() } else { crate::yaml::from_str(text, origin)? };
        let invalid = |field: String, message: String| PricesError::Invalid { path: origin.to_path_buf(), field, message };
        if let Some(c) = file.currency.as_deref().filter(|c| !c.eq_ignore_ascii_case("usd")) {
            return Err(invalid("currency".into(), format!("{c:?}: only USD prices are supported")));
        }
        for (name, p) in &file.models {
            let units = [
                ("input", p.input),
                ("cached_input", p.cached_input),
                ("output", p.output),
                ("audio", p.audio),
                ("stt_per_minute", p.stt_per_minute),
                ("tts_per_million_chars", p.tts_per_million_chars),
                ("telephony_per_minute", p.telephony_per_minute),
            ];
            for (unit, v) in units {
                if let Some(v) = v.filter(|v| !(v.is_finite() && *v >= 0.0)) {
                    return Err(invalid(format!("models.{name}.{unit}"), format!("{v} is not a price (a number, 0 or more)")));
                }
            }
        }
        Ok(file)
    }

    fn overlay(&mut self, user: PriceFile) {
        if user.as_of.is_some() {
            self.file.as_of = user.as_of;
        }
        let d = &mut self.file.defaults;
        d.stt = user.defaults.stt.or(d.stt.take());
        d.tts = user.defaults.tts.or(d.tts.take());
        d.telephony = user.defaults.telephony.or(d.telephony.take());
        self.file.models.extend(user.models);
    }

    /// The table as read (for `--help` texts and docs).
    pub fn file(&self) -> &PriceFile {
        &self.file
    }

    /// The price of a model or service.
    pub fn get(&self, name: &str) -> Option<&Price> {
        self.file.models.get(name)
    }

    /// The cost of a usage, line by line. Tokens are priced by `usage.model`; speech-to-text,
    /// text-to-speech and telephony by the service the usage names or the table's default.
    pub fn price(&self, usage: &Usage) -> Costing {
        let mut costing = Costing::default();
        let unpriced = |name: &str, costing: &mut Costing| {
            if !costing.unpriced.iter().any(|n| n == name) {
                costing.unpriced.push(name.to_string());
            }
        };
        let tokens = [usage.input_tokens, usage.output_tokens, usage.cached_tokens, usage.audio_tokens];
        if tokens.iter().any(|t| t.is_some_and(|n| n > 0)) {
            let name = usage.model.as_deref().unwrap_or("unknown");
            match self.get(name) {
                Some(p) => {
                    let per = |n: Option<u64>, price: Option<f64>| -> Option<Option<f64>> {
                        match n.filter(|n| *n > 0) {
                            None => Some(Some(0.0)),
                            Some(n) => price.map(|p| Some(n as f64 * p / 1e6)).or(Some(None)),
                        }
                    };
                    let cached = usage.cached_tokens.unwrap_or(0).min(usage.input_tokens.unwrap_or(0));
                    let fresh = usage.input_tokens.map(|n| n - cached);
                    let parts = [
                        per(fresh, p.input),
                        per(Some(cached), p.cached_input.or(p.input)),
                        per(usage.output_tokens, p.output),
                        per(usage.audio_tokens, p.audio),
                    ];
                    let mut usd = 0.0;
                    let mut all = true;
                    for part in parts.into_iter().flatten() {
                        match part {
                            Some(v) => usd += v,
                            None => all = false,
                        }
                    }
                    costing.lines.push((name.to_string(), usd));
                    if !all {
                        unpriced(name, &mut costing);
                    }
                }
                None => unpriced(name, &mut costing),
            }
        }
        let d = &self.file.defaults;
        // (quantity, the service named, the default service, its unit price, units per quantity)
        type Service<'a> = (Option<f64>, Option<&'a str>, Option<&'a str>, fn(&Price) -> Option<f64>, f64);
        let services: [Service<'_>; 3] = [
            (usage.stt_seconds, usage.stt_model.as_deref(), d.stt.as_deref(), |p| p.stt_per_minute, 1.0 / 60.0),
            (usage.tts_characters.map(|n| n as f64), usage.tts_model.as_deref(), d.tts.as_deref(), |p| p.tts_per_million_chars, 1e-6),
            (usage.telephony_seconds, usage.telephony.as_deref(), d.telephony.as_deref(), |p| p.telephony_per_minute, 1.0 / 60.0),
        ];
        for (quantity, named, default, unit, scale) in services {
            let Some(q) = quantity.filter(|q| q.is_finite() && *q > 0.0) else { continue };
            let name = named.or(default).unwrap_or("unknown");
            match self.get(name).and_then(unit) {
                Some(price) => {
                    let usd = q * scale * price;
                    match costing.lines.iter_mut().find(|(n, _)| n == name) {
                        Some(line) => line.1 += usd,
                        None => costing.lines.push((name.to_string(), usd)),
                    }
                }
                None => unpriced(name, &mut costing),
            }
        }
        costing
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_table_prices_tokens_and_voice() {
        let prices = Prices::built_in();
        let usage = Usage::llm("gpt-4o-mini", 1_000_000, 100_000).cached_tokens(400_000).stt_seconds(60.0).tts_characters(1000);
        let c = prices.price(&usage);
        // 600k fresh × 0.15 + 400k cached × 0.075 + 100k out × 0.60 = 0.09 + 0.03 + 0.06
        let llm = c.lines.iter().find(|(n, _)| n == "gpt-4o-mini").unwrap().1;
        assert!((llm - 0.18).abs() < 1e-12, "{llm}");
        let stt = c.lines.iter().find(|(n, _)| n == "deepgram-nova-3").unwrap().1;
        assert!((stt - 0.0077).abs() < 1e-12);
        let tts = c.lines.iter().find(|(n, _)| n == "openai-tts-1").unwrap().1;
        assert!((tts - 0.015).abs() < 1e-12);
        assert!(c.unpriced.is_empty());
        assert!((c.total().unwrap() - (0.18 + 0.0077 + 0.015)).abs() < 1e-12);
    }

    #[test]
    fn an_unknown_model_is_named_not_guessed() {
        let c = Prices::built_in().price(&Usage::llm("my-own-llm", 100, 10).telephony_seconds(60.0));
        assert_eq!(c.unpriced, vec!["my-own-llm".to_string()]);
        assert_eq!(c.lines, vec![("twilio-voice".to_string(), 0.0085)]);
        // Audio tokens on a model without an audio price: the rest is priced, the model named.
        let c = Prices::built_in().price(&Usage::llm("gpt-4o-mini", 1_000_000, 0).audio_tokens(10));
        assert_eq!(c.unpriced, vec!["gpt-4o-mini".to_string()]);
        assert!((c.total().unwrap() - 0.15).abs() < 1e-12);
        assert_eq!(Prices::built_in().price(&Usage::default()), Costing::default());
    }

    #[test]
    fn a_user_file_overrides_entry_by_entry_and_bad_values_name_the_field() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("prices.yaml");
        std::fs::write(&path, "models:\n  gpt-4o-mini: {input: 1.0, output: 2.0}\n  mine: {input: 0.5}\n").unwrap();
        let p = Prices::load(Some(&path)).unwrap();
        assert_eq!(p.get("gpt-4o-mini").unwrap().input, Some(1.0));
        assert_eq!(p.get("mine").unwrap().input, Some(0.5));
        assert!(p.get("gpt-4o").is_some());
        std::fs::write(&path, "models:\n  mine: {input: -1}\n").unwrap();
        let e = Prices::load(Some(&path)).unwrap_err().to_string();
        assert!(e.contains("models.mine.input"), "{e}");
        std::fs::write(&path, "models:\n  mine: {inptu: 1}\n").unwrap();
        let e = Prices::load(Some(&path)).unwrap_err().to_string();
        assert!(e.contains(":2:") && e.contains("inptu"), "{e}");
    }
}
