//! Scenario files: the contact center a simulation draws from (tenants, channels, intents,
//! latency distributions, models per tenant) and the incidents it plays out.
//!
//! A file is read with [`Scenario::parse`] (or [`Scenario::load`]): unknown fields, wrong
//! types and unknown effects fail with the file, the line and the field
//! ([`crate::yaml::from_str`]); the meaning is checked after (shares, percentiles, windows,
//! tenants and agents that incidents name), with the field and, where it can be found, the
//! line. The format is described in `docs/scenarios.md`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rand_distr::LogNormal;
use serde::Deserialize;

use crate::types::{Channel, Resolution};

/// The built-in scenario: the demo's small contact center (`scenarios/demo.yaml`).
pub const BUILT_IN: &str = include_str!("../../scenarios/demo.yaml");

/// How far a set of shares may be from 1 before it is an error (within it, they are
/// normalized to sum to exactly 1).
pub const SHARE_TOLERANCE: f64 = 0.02;

/// z of the 95th percentile of the standard normal distribution.
const Z95: f64 = 1.6448536269514722;

/// A scenario file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Seed of every random choice (the `--seed` flag overrides it).
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Data time covered, ending now (`6h`, `90m`).
    #[serde(with = "humantime_serde")]
    pub duration: Duration,
    /// Mean arrival rate: conversations start as a Poisson process at this rate.
    pub conversations_per_hour: f64,
    /// Tenants with their share of the conversations and their agents.
    pub tenants: Vec<TenantSpec>,
    /// Share of each channel (`voice`, `chat`, `sms`, `email`).
    #[serde(default = "default_channels")]
    pub channels: BTreeMap<Key<Channel>, f64>,
    /// Share of each intent; empty: every intent alike.
    #[serde(default)]
    pub intents: BTreeMap<String, f64>,
    /// The latency parts' distributions (log-normal, given by p50 and p95).
    #[serde(default)]
    pub latency_ms: LatencySpec,
    /// The LLM per tenant id; `default` for the others.
    #[serde(default)]
    pub models: BTreeMap<String, String>,
    /// Share of the agent's voice answers the customer barges in on.
    #[serde(default = "default_barge_in")]
    pub barge_in_rate: f64,
    /// What goes wrong, when, and for whom.
    #[serde(default)]
    pub incidents: Vec<Incident>,
}

fn default_seed() -> u64 {
    1
}

fn default_barge_in() -> f64 {
    0.06
}

fn default_channels() -> BTreeMap<Key<Channel>, f64> {
    BTreeMap::from([
        (Key(Channel::Voice), 0.5),
        (Key(Channel::Chat), 0.35),
        (Key(Channel::Sms), 0.1),
        (Key(Channel::Email), 0.05),
    ])
}

/// A map key read as text, then as `T` (so an error names the key: `latency_ms.llm_ttfb`, not
/// `latency_ms.?`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key<T>(pub T);

impl<'de, T: serde::de::DeserializeOwned> Deserialize<'de> for Key<T> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        serde_json::from_value(serde_json::Value::String(text)).map(Key).map_err(serde::de::Error::custom)
    }
}

/// The model of tenants that `models` does not name.
pub const DEFAULT_MODEL: &str = "gpt-4o-mini";

/// A tenant.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantSpec {
    /// The tenant id.
    pub id: String,
    /// Its share of the conversations.
    pub share: f64,
    /// Its agents (each of its conversations goes to one, alike).
    pub agents: Vec<String>,
    /// The name the greeting says; the id when absent.
    #[serde(default)]
    pub name: Option<String>,
    /// The compliance policy its agent turns are scored against.
    #[serde(default)]
    pub policy: Option<String>,
    /// The intents its customers call about (weighted by the scenario's `intents`); every
    /// intent of the scenario when absent.
    #[serde(default)]
    pub intents: Option<Vec<String>>,
}

/// A log-normal distribution given by its median and 95th percentile, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dist {
    /// Median.
    pub p50: f64,
    /// 95th percentile.
    pub p95: f64,
}

impl Dist {
    /// `(mu, sigma)` of the log-normal: `mu = ln p50`, `sigma = (ln p95 - ln p50) / 1.645`.
    pub fn mu_sigma(&self) -> (f64, f64) {
        (self.p50.ln(), (self.p95.ln() - self.p50.ln()) / Z95)
    }

    pub(crate) fn log_normal(&self) -> LogNormal<f64> {
        let (mu, sigma) = self.mu_sigma();
        LogNormal::new(mu, sigma).expect("a checked distribution")
    }
}

/// The latency parts of a voice turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Part {
    /// Speech-to-text.
    Stt,
    /// End-of-utterance detection.
    EndOfUtterance,
    /// LLM time to first token.
    LlmTtft,
    /// Text-to-speech time to first byte.
    TtsTtfb,
    /// A tool call.
    Tool,
    /// From the call's start to the greeting's first audio.
    Greeting,
}

impl Part {
    /// Every part, in the order of [`LatencySpec::get`]'s index.
    pub const ALL: [Part; 6] = [Part::Stt, Part::EndOfUtterance, Part::LlmTtft, Part::TtsTtfb, Part::Tool, Part::Greeting];

    /// The name in files, metrics and `query stats`.
    pub fn as_str(self) -> &'static str {
        match self {
            Part::Stt => "stt",
            Part::EndOfUtterance => "end_of_utterance",
            Part::LlmTtft => "llm_ttft",
            Part::TtsTtfb => "tts_ttfb",
            Part::Tool => "tool",
            Part::Greeting => "greeting",
        }
    }

    pub(crate) fn index(self) -> usize {
        Part::ALL.iter().position(|p| *p == self).expect("listed")
    }
}

/// The latency distributions; a part left out takes its default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LatencySpec {
    /// Default p50 150, p95 260.
    #[serde(default)]
    pub stt: Option<Dist>,
    /// Default p50 350, p95 600.
    #[serde(default)]
    pub end_of_utterance: Option<Dist>,
    /// Default p50 500, p95 900.
    #[serde(default)]
    pub llm_ttft: Option<Dist>,
    /// Default p50 120, p95 220.
    #[serde(default)]
    pub tts_ttfb: Option<Dist>,
    /// Default p50 400, p95 1400.
    #[serde(default)]
    pub tool: Option<Dist>,
    /// Default p50 900, p95 1600.
    #[serde(default)]
    pub greeting: Option<Dist>,
}

impl LatencySpec {
    /// The defaults of the parts, in [`Part::ALL`]'s order.
    pub const DEFAULTS: [Dist; 6] = [
        Dist { p50: 150.0, p95: 260.0 },
        Dist { p50: 350.0, p95: 600.0 },
        Dist { p50: 500.0, p95: 900.0 },
        Dist { p50: 120.0, p95: 220.0 },
        Dist { p50: 400.0, p95: 1400.0 },
        Dist { p50: 900.0, p95: 1600.0 },
    ];

    /// A part's distribution (the file's or the default).
    pub fn get(&self, part: Part) -> Dist {
        let given = match part {
            Part::Stt => self.stt,
            Part::EndOfUtterance => self.end_of_utterance,
            Part::LlmTtft => self.llm_ttft,
            Part::TtsTtfb => self.tts_ttfb,
            Part::Tool => self.tool,
            Part::Greeting => self.greeting,
        };
        given.unwrap_or(Self::DEFAULTS[part.index()])
    }
}

/// Something that goes wrong for a while.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Incident {
    /// Its name in the report.
    pub name: String,
    /// When it starts, from the start of the scenario's time.
    #[serde(with = "humantime_serde")]
    pub start: Duration,
    /// How long it lasts.
    #[serde(with = "humantime_serde")]
    pub duration: Duration,
    /// Only this tenant's conversations; every tenant when absent.
    #[serde(default)]
    pub tenant: Option<String>,
    /// Only this agent's conversations; every agent when absent.
    #[serde(default)]
    pub agent: Option<String>,
    /// What it does.
    pub effect: Effect,
}

/// What an incident does.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Effect {
    /// Latency parts multiplied (`llm_ttft: x4`) for agent answers inside the window.
    #[serde(default)]
    pub latency_ms: BTreeMap<Key<Part>, Factor>,
    /// Errors before agent answers inside the window.
    #[serde(default)]
    pub errors: Option<ErrorEffect>,
    /// Outcomes forced, with their probability, on conversations that start inside the window
    /// (`transferred: 0.6`); the rest end as usual.
    #[serde(default)]
    pub resolution: BTreeMap<Key<Resolution>, f64>,
    /// Intents drawn, with their probability, for conversations that start inside the window
    /// (an intent shift); the rest draw from the usual mix.
    #[serde(default)]
    pub intents: BTreeMap<String, f64>,
}

/// Errors an incident causes.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorEffect {
    /// Share of agent answers inside the window that hit the error first.
    pub rate: f64,
    /// The error type (`stt_unavailable`).
    #[serde(rename = "type")]
    pub error_type: String,
    /// The error message; one is made up from the type when absent.
    #[serde(default)]
    pub message: Option<String>,
}

/// A multiplier: `x4`, `×4`, `4x` or a number.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Factor(pub f64);

impl<'de> Deserialize<'de> for Factor {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Factor;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a factor such as x4, x0.5 or 4")
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Factor, E> {
                check_factor(v).map_err(E::custom)
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Factor, E> {
                self.visit_f64(v as f64)
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Factor, E> {
                self.visit_f64(v as f64)
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Factor, E> {
                let t = v.trim();
                let number = t
                    .strip_prefix('x')
                    .or_else(|| t.strip_prefix('×'))
                    .or_else(|| t.strip_suffix('x'))
                    .or_else(|| t.strip_suffix('×'))
                    .unwrap_or(t);
                match number.trim().parse::<f64>() {
                    Ok(n) => check_factor(n).map_err(E::custom),
                    Err(_) => Err(E::custom(format!("{v:?} is not a factor (write x4, x0.5 or 4)"))),
                }
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

fn check_factor(v: f64) -> Result<Factor, String> {
    if v.is_finite() && v > 0.0 && v <= 1000.0 {
        Ok(Factor(v))
    } else {
        Err(format!("{v} is not a factor between 0 and 1000 (exclusive of 0)"))
    }
}

/// A scenario that cannot be read or makes no sense; names the file, the field and the line
/// when it is known.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// The file cannot be read.
    #[error("cannot read scenario file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// It does not parse into the shape (a typo, a wrong type, an unknown effect).
    #[error(transparent)]
    Parse(#[from] crate::yaml::YamlError),
    /// It parses but makes no sense.
    #[error("{}{}: field `{field}`: {message}", origin.display(), crate::yaml::location(*line, None))]
    Invalid {
        /// The file.
        origin: PathBuf,
        /// The field, e.g. `incidents[0].tenant`.
        field: String,
        /// 1-based line, when found.
        line: Option<usize>,
        /// What is wrong.
        message: String,
    },
}

impl Scenario {
    /// The built-in scenario (`scenarios/demo.yaml`).
    pub fn built_in() -> Scenario {
        Scenario::parse(BUILT_IN, Path::new("scenarios/demo.yaml (built in)")).expect("the built-in scenario is valid")
    }

    /// Reads and checks a scenario file.
    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ScenarioError::Read { path: path.to_path_buf(), source })?;
        Scenario::parse(&text, path)
    }

    /// Parses and checks a scenario; `origin` names the file in errors.
    pub fn parse(text: &str, origin: &Path) -> Result<Scenario, ScenarioError> {
        let mut scenario: Scenario = crate::yaml::from_str(text, origin)?;
        scenario.check().map_err(|(field, message)| ScenarioError::Invalid {
            origin: origin.to_path_buf(),
            line: locate(text, &field),
            field,
            message,
        })?;
        Ok(scenario)
    }

    /// Sets the duration (the `--duration` flag) and checks that the incidents still fit.
    pub fn with_duration(mut self, duration: Duration, origin: &Path) -> Result<Scenario, ScenarioError> {
        self.duration = duration;
        self.check().map_err(|(field, message)| ScenarioError::Invalid {
            origin: origin.to_path_buf(),
            field: if field == "duration" { "--duration".into() } else { field },
            line: None,
            message: format!("{message} (with --duration {})", humantime::format_duration(duration)),
        })?;
        Ok(self)
    }

    /// The model of a tenant.
    pub fn model_of(&self, tenant: &str) -> &str {
        self.models.get(tenant).or_else(|| self.models.get("default")).map_or(DEFAULT_MODEL, String::as_str)
    }

    /// Arrivals per second.
    pub fn rate(&self) -> f64 {
        self.conversations_per_hour / 3600.0
    }

    /// Checks the meaning and normalizes the shares; `(field, message)` on the first problem.
    fn check(&mut self) -> Result<(), (String, String)> {
        let err = |field: String, message: String| Err((field, message));
        let secs = self.duration.as_secs_f64();
        if !(1.0..=366.0 * 86400.0).contains(&secs) {
            return err("duration".into(), "must be between 1s and 366 days".into());
        }
        let cph = self.conversations_per_hour;
        if !(cph.is_finite() && cph > 0.0) {
            return err("conversations_per_hour".into(), format!("{cph} is not a positive number"));
        }
        let expected = cph * secs / 3600.0;
        if expected > 10_000_000.0 {
            return err(
                "conversations_per_hour".into(),
                format!("{expected:.0} conversations over the duration is more than 10,000,000"),
            );
        }
        if self.tenants.is_empty() {
            return err("tenants".into(), "name at least one tenant".into());
        }
        let known = super::script::intent_names();
        let known_list = known.join(", ");
        let mut ids = BTreeSet::new();
        let mut agents = BTreeMap::new();
        for (i, t) in self.tenants.iter().enumerate() {
            if t.id.trim().is_empty() {
                return err(format!("tenants[{i}].id"), "is empty".into());
            }
            if !ids.insert(t.id.clone()) {
                return err(format!("tenants[{i}].id"), format!("tenant {:?} is listed twice", t.id));
            }
            if t.agents.is_empty() {
                return err(format!("tenants[{i}].agents"), format!("tenant {:?} has no agents", t.id));
            }
            for a in &t.agents {
                agents.insert(a.clone(), t.id.clone());
            }
            for (k, name) in t.intents.iter().flatten().enumerate() {
                if !known.contains(&name.as_str()) {
                    return err(format!("tenants[{i}].intents[{k}]"), format!("unknown intent {name:?}; known: {known_list}"));
                }
            }
        }
        let shares: Vec<f64> = self.tenants.iter().map(|t| t.share).collect();
        let normalized = normalize("tenants[].share", &shares)?;
        for (t, s) in self.tenants.iter_mut().zip(normalized) {
            t.share = s;
        }
        let channels: Vec<f64> = self.channels.values().copied().collect();
        let normalized = normalize("channels", &channels)?;
        for (v, s) in self.channels.values_mut().zip(normalized) {
            *v = s;
        }
        for name in self.intents.keys() {
            if !known.contains(&name.as_str()) {
                return err(format!("intents.{name}"), format!("unknown intent {name:?}; known: {known_list}"));
            }
        }
        if !self.intents.is_empty() {
            let weights: Vec<f64> = self.intents.values().copied().collect();
            let normalized = normalize("intents", &weights)?;
            for (v, s) in self.intents.values_mut().zip(normalized) {
                *v = s;
            }
        }
        for (i, t) in self.tenants.iter().enumerate() {
            if let Some(list) = &t.intents {
                if !list.iter().any(|n| self.intents.is_empty() || self.intents.get(n).is_some_and(|w| *w > 0.0)) {
                    return err(
                        format!("tenants[{i}].intents"),
                        format!("none of tenant {:?}'s intents has a share in `intents`", t.id),
                    );
                }
            }
        }
        for part in Part::ALL {
            let d = self.latency_ms.get(part);
            let field = format!("latency_ms.{}", part.as_str());
            if !(d.p50.is_finite() && d.p50 > 0.0) {
                return err(format!("{field}.p50"), format!("{} is not a positive number of milliseconds", d.p50));
            }
            if !(d.p95.is_finite() && d.p95 >= d.p50) {
                return err(format!("{field}.p95"), format!("{} is below p50 ({})", d.p95, d.p50));
            }
        }
        for tenant in self.models.keys() {
            if tenant != "default" && !ids.contains(tenant) {
                return err(format!("models.{tenant}"), format!("unknown tenant {tenant:?} (a tenant id or `default`)"));
            }
        }
        if !(0.0..=1.0).contains(&self.barge_in_rate) {
            return err("barge_in_rate".into(), format!("{} is not between 0 and 1", self.barge_in_rate));
        }
        let mut names = BTreeSet::new();
        for (i, inc) in self.incidents.iter().enumerate() {
            let f = |field: &str| format!("incidents[{i}].{field}");
            if inc.name.trim().is_empty() {
                return err(f("name"), "is empty".into());
            }
            if !names.insert(inc.name.clone()) {
                return err(f("name"), format!("incident {:?} is listed twice", inc.name));
            }
            if inc.duration.is_zero() {
                return err(f("duration"), "must be more than 0".into());
            }
            if inc.start + inc.duration > self.duration {
                return err(
                    f("duration"),
                    format!(
                        "incident {:?} ends at {}, after the scenario's duration ({})",
                        inc.name,
                        humantime::format_duration(inc.start + inc.duration),
                        humantime::format_duration(self.duration)
                    ),
                );
            }
            if let Some(t) = &inc.tenant {
                if !ids.contains(t) {
                    return err(f("tenant"), format!("unknown tenant {t:?}; the scenario's tenants: {}", join(&ids)));
                }
            }
            if let Some(a) = &inc.agent {
                match (agents.get(a), &inc.tenant) {
                    (None, _) => return err(f("agent"), format!("unknown agent {a:?}; no tenant lists it")),
                    (Some(owner), Some(t)) if owner != t => {
                        return err(f("agent"), format!("agent {a:?} belongs to tenant {owner:?}, not {t:?}"));
                    }
                    _ => {}
                }
            }
            let e = &inc.effect;
            if e.latency_ms.is_empty() && e.errors.is_none() && e.resolution.is_empty() && e.intents.is_empty() {
                return err(f("effect"), "has no effect (latency_ms, errors, resolution or intents)".into());
            }
            if let Some(errors) = &e.errors {
                if !(0.0..=1.0).contains(&errors.rate) {
                    return err(f("effect.errors.rate"), format!("{} is not between 0 and 1", errors.rate));
                }
                if errors.error_type.trim().is_empty() {
                    return err(f("effect.errors.type"), "is empty".into());
                }
            }
            let probabilities = |what: &str, values: Vec<f64>| -> Result<(), (String, String)> {
                if values.iter().any(|p| !(0.0..=1.0).contains(p)) || values.iter().sum::<f64>() > 1.0 + 1e-9 {
                    return Err((f(&format!("effect.{what}")), "probabilities between 0 and 1 that sum to 1 at most".into()));
                }
                Ok(())
            };
            probabilities("resolution", e.resolution.values().copied().collect())?;
            probabilities("intents", e.intents.values().copied().collect())?;
            for name in e.intents.keys() {
                if !known.contains(&name.as_str()) {
                    return err(f(&format!("effect.intents.{name}")), format!("unknown intent {name:?}; known: {known_list}"));
                }
            }
        }
        Ok(())
    }
}

fn join(ids: &BTreeSet<String>) -> String {
    ids.iter().cloned().collect::<Vec<_>>().join(", ")
}

/// Shares that sum to 1 within [`SHARE_TOLERANCE`], scaled to sum to exactly 1.
fn normalize(field: &str, shares: &[f64]) -> Result<Vec<f64>, (String, String)> {
    if let Some(bad) = shares.iter().find(|s| !(s.is_finite() && **s >= 0.0)) {
        return Err((field.to_string(), format!("share {bad} is not a number between 0 and 1")));
    }
    let sum: f64 = shares.iter().sum();
    if (sum - 1.0).abs() > SHARE_TOLERANCE {
        return Err((field.to_string(), format!("the shares sum to {sum}, not 1")));
    }
    Ok(shares.iter().map(|s| s / sum).collect())
}

/// The line of a field given as `a.b[2].c`, searched in the YAML text (block or flow style);
/// `None` when it cannot be found.
fn locate(text: &str, field: &str) -> Option<usize> {
    let lines: Vec<&str> = text.lines().collect();
    let indent = |l: &str| l.len() - l.trim_start().len();
    let mut segments = Vec::new();
    for part in field.split('.') {
        let (key, rest) = part.split_once('[').map_or((part, ""), |(k, r)| (k, r));
        segments.push((key.to_string(), None));
        for index in rest.split('[').filter(|s| !s.is_empty()) {
            let i = index.trim_end_matches(']').parse::<usize>().ok();
            segments.push((String::new(), i));
        }
    }
    // (line index, indent) of the current node.
    let (mut at, mut node_indent, mut found) = (0usize, None::<usize>, None);
    for (key, index) in segments {
        let end = lines[at..]
            .iter()
            .enumerate()
            .skip(1)
            .find(|(_, l)| node_indent.is_some_and(|n| !l.trim().is_empty() && indent(l) <= n && !l.trim_start().starts_with('#')))
            .map_or(lines.len(), |(k, _)| at + k);
        let start = if node_indent.is_some() { at } else { 0 };
        if let Some(i) = index {
            // The i-th list item below the node.
            let items: Vec<usize> = (start..end)
                .filter(|k| {
                    let t = lines[*k].trim_start();
                    (t.starts_with("- ") || t == "-") && node_indent.is_none_or(|n| indent(lines[*k]) >= n)
                })
                .collect();
            let min = items.iter().map(|k| indent(lines[*k])).min()?;
            let items: Vec<usize> = items.into_iter().filter(|k| indent(lines[*k]) == min).collect();
            at = *items.get(i)?;
            node_indent = Some(indent(lines[at]));
            found = Some(at);
            continue;
        }
        if key.is_empty() {
            continue;
        }
        let pattern = format!("{key}:");
        let k = (start..end).find(|k| {
            let l = lines[*k];
            l.contains(&pattern)
                && (l.trim_start().trim_start_matches("- ").starts_with(&pattern)
                    || l.contains(&format!("{{{pattern}"))
                    || l.contains(&format!(" {pattern}"))
                    || l.contains(&format!(",{pattern}")))
        })?;
        at = k;
        node_indent = Some(indent(lines[k]));
        found = Some(k);
    }
    found.map(|k| k + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_scenario_and_the_examples_are_valid() {
        let s = Scenario::built_in();
        assert!(!s.tenants.is_empty());
        for file in ["clean-day.yaml", "incidents.yaml"] {
            let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios").join(file);
            Scenario::load(&path).unwrap_or_else(|e| panic!("{e}"));
        }
    }

    fn parse(text: &str) -> Result<Scenario, ScenarioError> {
        Scenario::parse(text, Path::new("s.yaml"))
    }

    const BASE: &str = "duration: 6h\nconversations_per_hour: 600\ntenants:\n  - {id: acme, share: 0.6, agents: [a1, a2]}\n  - id: globex\n    share: 0.4\n    agents: [g1]\n";

    #[test]
    fn factors_parse_in_every_spelling() {
        for (text, f) in [("x4", 4.0), ("×2.5", 2.5), ("3x", 3.0), ("0.5", 0.5)] {
            let s = parse(&format!(
                "{BASE}incidents:\n  - {{name: n, start: 1h, duration: 30m, effect: {{latency_ms: {{llm_ttft: {text}}}}}}}\n"
            ))
            .unwrap();
            assert_eq!(s.incidents[0].effect.latency_ms[&Key(Part::LlmTtft)], Factor(f));
        }
        let e = parse(&format!("{BASE}incidents:\n  - {{name: n, start: 1h, duration: 30m, effect: {{latency_ms: {{llm_ttft: fast}}}}}}\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("s.yaml:9") && e.contains("incidents[0].effect.latency_ms.llm_ttft"), "{e}");
    }

    #[test]
    fn meaning_errors_name_the_field_and_line() {
        let e = parse(&format!(
            "{BASE}incidents:\n  - name: n\n    start: 1h\n    duration: 30m\n    tenant: initech\n    effect: {{errors: {{rate: 0.3, type: x}}}}\n"
        ))
        .unwrap_err();
        let ScenarioError::Invalid { field, line, message, .. } = &e else { panic!("{e}") };
        assert_eq!(field, "incidents[0].tenant");
        assert_eq!(*line, Some(12), "{e}");
        assert!(message.contains("initech") && message.contains("acme, globex"), "{message}");
        let e = parse(&format!("{BASE}incidents:\n  - {{name: n, start: 5h, duration: 2h, effect: {{resolution: {{transferred: 0.5}}}}}}\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("incidents[0].duration") && e.contains("s.yaml:9"), "{e}");
        let e = parse(&format!("{BASE}latency_ms:\n  stt: {{p50: 300, p95: 200}}\n")).unwrap_err().to_string();
        assert!(e.contains("latency_ms.stt.p95") && e.contains("s.yaml:9"), "{e}");
        let e = parse(&BASE.replace("0.4", "0.6")).unwrap_err().to_string();
        assert!(e.contains("sum to 1.2"), "{e}");
        // Within the tolerance: normalized.
        let s = parse(&BASE.replace("0.4", "0.41")).unwrap();
        assert!((s.tenants.iter().map(|t| t.share).sum::<f64>() - 1.0).abs() < 1e-12);
    }
}
