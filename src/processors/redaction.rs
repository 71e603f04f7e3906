//! Redaction of personal data, before anything leaves the process.
//!
//! The [`RedactionProcessor`] runs once per event on the dispatcher thread, before the fan-out,
//! so the event log, Loki, ClickHouse, Kafka and the live broadcast all receive the same
//! redacted event. Spans are built on the caller's thread before the event is queued; the
//! facade builds their caller-text attributes (decision and transfer reasons and options, the
//! intent) from [`Redactor::for_spans`], the same policy.
//!
//! What is searched: the turn content (also the message of errors and violations, and the text
//! of every other event), decision and transfer reasons, options and targets, the end's tags,
//! the metadata's intent and every string in its free-form values (nested ones included). Ids
//! (tenant, agent, customer, conversation, trace) are not searched.
//!
//! Built-in detectors ([`Detector`]):
//!
//! | name          | finds                                                                    |
//! |---------------|--------------------------------------------------------------------------|
//! | `card_number` | 13–19 digits, plain or in groups split by one space or dash (the same one throughout), Luhn-valid only |
//! | `email`       | `local@domain.tld`                                                       |
//! | `phone`       | E.164 (`+` and 7–15 digits, grouped or not) and common national formats: `(415) 555-0134`, `415-555-0134`, `415.555.0134`, `415 555 0134`, `0 2079 460958`-style trunk-prefixed numbers |
//! | `iban`        | 2 letters, 2 check digits, 11–30 letters/digits (grouped by 4 or not), mod-97 valid |
//! | `us_ssn`      | `123-45-6789` / `123 45 6789` with a valid area, group and serial          |
//!
//! A match becomes `[REDACTED:<name>]` (`mode: mask`) or `[HASH:<name>:<16 hex>]` (`mode:
//! hash`): the first 8 bytes of HMAC-SHA256 over the name and the normalized value (digits of
//! a card or phone, the lowercased email, the spaceless uppercased IBAN) with the configured
//! `privacy.hash_key`, or a key generated once into `<data_dir>/privacy.key` (mode 0600), so
//! equal values give equal tokens and can still be joined.
//!
//! Cost: a text is scanned once for digits, `@` and the start of an IBAN; a detector's regex
//! runs only when the scan says it could match (a turn without digits or `@` costs one pass
//! over its bytes). Custom rules go through one [`regex::RegexSet`] first.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, LazyLock};

use prometheus::IntCounterVec;
use regex::{Regex, RegexSet};
use serde::{Deserialize, Serialize};

use crate::config::{PrivacyConfig, RedactionMode, RedactionRule};
use crate::pipeline::Processor;
use crate::types::{Event, EventKind};

/// A built-in detector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Detector {
    /// Payment card numbers (Luhn-valid).
    CardNumber,
    /// Email addresses.
    Email,
    /// Phone numbers.
    Phone,
    /// International bank account numbers (mod-97 valid).
    Iban,
    /// US social security numbers.
    UsSsn,
}

impl Detector {
    /// Every built-in detector, in the order overlapping matches are preferred.
    pub const ALL: [Detector; 5] = [Detector::CardNumber, Detector::Iban, Detector::UsSsn, Detector::Email, Detector::Phone];

    /// The name: the `kind` label, and the name in tokens.
    pub fn as_str(self) -> &'static str {
        match self {
            Detector::CardNumber => "card_number",
            Detector::Email => "email",
            Detector::Phone => "phone",
            Detector::Iban => "iban",
            Detector::UsSsn => "us_ssn",
        }
    }

    /// Reads a name.
    pub fn parse(name: &str) -> Option<Detector> {
        Detector::ALL.into_iter().find(|d| d.as_str() == name)
    }

    /// The detectors on by default: all of them.
    pub fn defaults() -> Vec<Detector> {
        vec![Detector::CardNumber, Detector::Email, Detector::Phone, Detector::Iban, Detector::UsSsn]
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

impl std::fmt::Display for Detector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Setting up redaction failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RedactionError {
    /// A custom rule's pattern does not compile (the config's validation reports it first).
    #[error("config field `privacy.rules` (rule {name:?}): invalid pattern: {message}")]
    Pattern {
        /// The rule.
        name: String,
        /// Why (the regex compiler's message, which quotes the pattern, never data).
        message: String,
    },
    /// The generated hash key could not be read or written.
    #[error("privacy.hash_key is empty and the generated key {} cannot be {context}: {source}", path.display())]
    Key {
        /// The key file.
        path: std::path::PathBuf,
        /// `read` or `written`.
        context: &'static str,
        /// Why.
        source: std::io::Error,
    },
}

static EMAIL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"[A-Za-z0-9](?:[A-Za-z0-9._%+\-]{0,63})@[A-Za-z0-9](?:[A-Za-z0-9\-]{0,62})(?:\.[A-Za-z0-9](?:[A-Za-z0-9\-]{0,62}))*\.[A-Za-z]{2,24}(?-u:\b)")
        .expect("email pattern")
});

static PHONE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(concat!(
        // E.164: + country code and subscriber number, grouped by spaces, dashes or dots, or not.
        r"\+[1-9](?:[ .\-]?\(?[0-9]\)?){6,14}(?-u:\b)",
        // North American: (415) 555-0134, 415-555-0134, 415.555.0134, 415 555 0134, 1-415-555-0134.
        r"|(?:(?-u:\b)1[ .\-])?(?:\([0-9]{3}\) ?|(?-u:\b)[0-9]{3}[ .\-])[0-9]{3}[ .\-][0-9]{4}(?-u:\b)",
        // National with a trunk 0: 020 7946 0958, 07700 900123, 030 1234 5678, 0612-345678.
        r"|(?-u:\b)0[1-9][0-9]{1,3}[ \-/][0-9]{3,4}[ \-]?[0-9]{3,4}(?-u:\b)",
    ))
    .expect("phone pattern")
});

static IBAN: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?-u:\b)[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?(?-u:\b)").expect("iban pattern"));

static US_SSN: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?-u:\b)[0-9]{3}([ \-])[0-9]{2}[ \-][0-9]{4}(?-u:\b)").expect("ssn pattern"));

/// One kind of match: a built-in detector or a custom rule (index into the rules).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Builtin(Detector),
    Rule(usize),
}

/// What a text looks like, from one pass over its bytes.
#[derive(Debug, Default, Clone, Copy)]
struct Scan {
    /// The most digits in one run: digits joined by at most two of ` -.()/+` in a row (the
    /// separators of card numbers, phones and SSNs). A UUID's or an amount's digits are
    /// broken up by letters or `,`/`:`.
    run: usize,
    at: bool,
    iban_start: bool,
}

impl Scan {
    fn of(text: &str) -> Scan {
        let mut s = Scan::default();
        let b = text.as_bytes();
        let mut run = 0usize;
        let mut gap = 0usize;
        for (i, &c) in b.iter().enumerate() {
            if c.is_ascii_digit() {
                run = if gap <= 2 { run + 1 } else { 1 };
                gap = 0;
                if run > s.run {
                    s.run = run;
                }
                if !s.iban_start && i >= 2 && b[i - 1].is_ascii_uppercase() && b[i - 2].is_ascii_uppercase() {
                    s.iban_start = true;
                }
            } else if matches!(c, b' ' | b'-' | b'.' | b'(' | b')' | b'/' | b'+') {
                gap += 1;
            } else {
                if c == b'@' {
                    s.at = true;
                }
                run = 0;
                gap = usize::MAX / 2;
            }
        }
        s
    }

    fn may_match(self, set: u8) -> bool {
        let has = |d: Detector| set & d.bit() != 0;
        (has(Detector::CardNumber) && self.run >= 13)
            || (has(Detector::Email) && self.at)
            || (has(Detector::Phone) && self.run >= 7)
            || (has(Detector::Iban) && self.iban_start)
            || (has(Detector::UsSsn) && self.run >= 9)
    }
}

/// A compiled custom rule.
#[derive(Debug)]
struct Rule {
    name: Arc<str>,
    regex: Regex,
}

/// One policy (the default, or a tenant's).
#[derive(Debug)]
struct Policy {
    /// Built-in detectors on, as bits.
    builtins: u8,
    rules: Vec<Rule>,
    set: Option<RegexSet>,
    mode: RedactionMode,
}

impl Policy {
    fn new(redact: &[Detector], rules: &[RedactionRule], mode: RedactionMode) -> Result<Policy, RedactionError> {
        let compiled = rules
            .iter()
            .map(|r| {
                Regex::new(&r.pattern)
                    .map(|regex| Rule { name: Arc::from(r.name.as_str()), regex })
                    .map_err(|e| RedactionError::Pattern { name: r.name.clone(), message: e.to_string() })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let set = if compiled.is_empty() {
            None
        } else {
            Some(
                RegexSet::new(rules.iter().map(|r| r.pattern.as_str()))
                    .map_err(|e| RedactionError::Pattern { name: "(set)".into(), message: e.to_string() })?,
            )
        };
        Ok(Policy { builtins: redact.iter().fold(0, |bits, d| bits | d.bit()), rules: compiled, set, mode })
    }

    fn is_empty(&self) -> bool {
        self.builtins == 0 && self.rules.is_empty()
    }

    fn kind_name(&self, kind: Kind) -> &str {
        match kind {
            Kind::Builtin(d) => d.as_str(),
            Kind::Rule(i) => &self.rules[i].name,
        }
    }

    /// Whether some detector could match (the cheap pre-filter).
    fn may_match(&self, text: &str) -> bool {
        if self.is_empty() || text.is_empty() {
            return false;
        }
        (self.builtins != 0 && Scan::of(text).may_match(self.builtins))
            || self.set.as_ref().is_some_and(|set| set.is_match(text))
    }

    /// Every match, non-overlapping: the earliest wins; at the same start, the longest, then
    /// the first detector in [`Detector::ALL`] order, then the custom rules in their order.
    fn find(&self, text: &str) -> Vec<(usize, usize, Kind)> {
        let mut found: Vec<(usize, usize, Kind)> = Vec::new();
        if self.builtins != 0 {
            let scan = Scan::of(text);
            let on = |d: Detector| self.builtins & d.bit() != 0;
            if on(Detector::CardNumber) && scan.run >= 13 {
                found.extend(find_cards(text).into_iter().map(|(s, e)| (s, e, Kind::Builtin(Detector::CardNumber))));
            }
            if on(Detector::Iban) && scan.iban_start {
                for m in IBAN.find_iter(text) {
                    if iban_valid(m.as_str()) {
                        found.push((m.start(), m.end(), Kind::Builtin(Detector::Iban)));
                    }
                }
            }
            if on(Detector::UsSsn) && scan.run >= 9 {
                for m in US_SSN.find_iter(text) {
                    if ssn_valid(m.as_str()) {
                        found.push((m.start(), m.end(), Kind::Builtin(Detector::UsSsn)));
                    }
                }
            }
            if on(Detector::Email) && scan.at {
                found.extend(EMAIL.find_iter(text).map(|m| (m.start(), m.end(), Kind::Builtin(Detector::Email))));
            }
            if on(Detector::Phone) && scan.run >= 7 {
                for m in PHONE.find_iter(text) {
                    let digits = m.as_str().bytes().filter(u8::is_ascii_digit).count();
                    if (7..=15).contains(&digits) {
                        found.push((m.start(), m.end(), Kind::Builtin(Detector::Phone)));
                    }
                }
            }
        }
        if let Some(set) = &self.set {
            for i in set.matches(text).iter() {
                found.extend(
                    self.rules[i].regex.find_iter(text).filter(|m| !m.is_empty()).map(|m| (m.start(), m.end(), Kind::Rule(i))),
                );
            }
        }
        if found.len() > 1 {
            let rank = |k: Kind| match k {
                Kind::Builtin(d) => Detector::ALL.iter().position(|x| *x == d).unwrap_or(0),
                Kind::Rule(i) => Detector::ALL.len() + i,
            };
            found.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)).then(rank(a.2).cmp(&rank(b.2))));
            let mut kept: Vec<(usize, usize, Kind)> = Vec::with_capacity(found.len());
            for m in found {
                if kept.last().is_none_or(|last| m.0 >= last.1) {
                    kept.push(m);
                }
            }
            found = kept;
        }
        found
    }
}

/// Counts of redacted values by kind name.
pub type Counts = BTreeMap<String, u64>;

/// The compiled privacy policy: the default and each tenant's. Cheap to share (`Arc`), used
/// from any thread.
#[derive(Debug)]
pub struct Redactor {
    default: Policy,
    tenants: HashMap<String, Policy>,
    key: Vec<u8>,
}

impl Redactor {
    /// Compiles the policy of `config`. `data_dir` holds the generated hash key when hashing
    /// is on without a configured `hash_key`.
    pub fn new(config: &PrivacyConfig, data_dir: &Path) -> Result<Redactor, RedactionError> {
        let default = Policy::new(&config.redact, &config.rules, config.mode)?;
        let mut tenants = HashMap::new();
        for (tenant, t) in &config.tenants {
            let redact = t.redact.as_deref().unwrap_or(&config.redact);
            let mut rules = config.rules.clone();
            if let Some(extra) = &t.rules {
                rules.extend(extra.iter().cloned());
            }
            tenants.insert(tenant.clone(), Policy::new(redact, &rules, t.mode.unwrap_or(config.mode))?);
        }
        let hashing =
            default.mode == RedactionMode::Hash || tenants.values().any(|p| p.mode == RedactionMode::Hash);
        let key = if !hashing {
            Vec::new()
        } else if !config.hash_key.is_empty() {
            config.hash_key.as_bytes().to_vec()
        } else {
            generated_key(data_dir)?
        };
        Ok(Redactor { default, tenants, key })
    }

    /// A redactor of the built-in defaults, masking (for tests and benchmarks).
    pub fn with_defaults() -> Redactor {
        Redactor::new(&PrivacyConfig::default(), Path::new(".")).expect("the default policy compiles")
    }

    /// True when no tenant's policy redacts anything (the processor is then not installed).
    pub fn is_noop(&self) -> bool {
        self.default.is_empty() && self.tenants.values().all(Policy::is_empty)
    }

    fn policy(&self, tenant: &str) -> &Policy {
        self.tenants.get(tenant).unwrap_or(&self.default)
    }

    /// `text` with every match replaced, or `None` when nothing matched. Adds to `counts`.
    pub fn redact_text(&self, tenant: &str, text: &str, counts: &mut Counts) -> Option<String> {
        let policy = self.policy(tenant);
        if !policy.may_match(text) {
            return None;
        }
        self.apply(policy, text, counts)
    }

    fn apply(&self, policy: &Policy, text: &str, counts: &mut Counts) -> Option<String> {
        let found = policy.find(text);
        if found.is_empty() {
            return None;
        }
        let mut out = String::with_capacity(text.len() + 16 * found.len());
        let mut last = 0;
        for (start, end, kind) in found {
            out.push_str(&text[last..start]);
            let name = policy.kind_name(kind);
            match policy.mode {
                RedactionMode::Mask => {
                    out.push_str("[REDACTED:");
                    out.push_str(name);
                    out.push(']');
                }
                RedactionMode::Hash => {
                    let value = normalize(kind, &text[start..end]);
                    out.push_str("[HASH:");
                    out.push_str(name);
                    out.push(':');
                    out.push_str(&hash_token(&self.key, name, &value));
                    out.push(']');
                }
            }
            *counts.entry(name.to_string()).or_default() += 1;
            last = end;
        }
        out.push_str(&text[last..]);
        Some(out)
    }

    fn redact_in_place(&self, policy: &Policy, text: &mut String, counts: &mut Counts) -> bool {
        if !policy.may_match(text) {
            return false;
        }
        match self.apply(policy, text, counts) {
            Some(new) => {
                *text = new;
                true
            }
            None => false,
        }
    }

    fn redact_value(&self, policy: &Policy, value: &mut serde_json::Value, counts: &mut Counts) -> bool {
        match value {
            serde_json::Value::String(s) => self.redact_in_place(policy, s, counts),
            serde_json::Value::Array(items) => {
                items.iter_mut().fold(false, |changed, v| self.redact_value(policy, v, counts) | changed)
            }
            serde_json::Value::Object(map) => {
                map.values_mut().fold(false, |changed, v| self.redact_value(policy, v, counts) | changed)
            }
            _ => false,
        }
    }

    /// Redacts every caller-text field of `event` in place (see the module docs); true when
    /// something changed. Adds what it replaced to `counts`.
    pub fn redact_event(&self, event: &mut Event, counts: &mut Counts) -> bool {
        let policy = self.policy(&event.tenant_id);
        if policy.is_empty() {
            return false;
        }
        let mut changed = self.redact_in_place(policy, &mut event.content, counts);
        if let Some(intent) = &mut event.metadata.intent {
            changed |= self.redact_in_place(policy, intent, counts);
        }
        for value in event.metadata.extra.values_mut() {
            changed |= self.redact_value(policy, value, counts);
        }
        match &mut event.kind {
            EventKind::DecisionMade { option, reason, .. } => {
                changed |= self.redact_in_place(policy, option, counts);
                changed |= self.redact_in_place(policy, reason, counts);
            }
            EventKind::TransferInitiated { target, reason } => {
                changed |= self.redact_in_place(policy, target, counts);
                changed |= self.redact_in_place(policy, reason, counts);
            }
            EventKind::ConversationEnded { tags, .. } => {
                for tag in tags {
                    changed |= self.redact_in_place(policy, tag, counts);
                }
            }
            _ => {}
        }
        changed
    }

    /// The event as its spans may show it: `None` when the policy changes nothing in it (the
    /// common case, found without copying), else a redacted copy. Not counted: the event
    /// itself is counted once, by the processor.
    pub fn for_spans(&self, event: &Event) -> Option<Event> {
        let policy = self.policy(&event.tenant_id);
        let reasons = match &event.kind {
            EventKind::DecisionMade { option, reason, .. } => policy.may_match(option) || policy.may_match(reason),
            EventKind::TransferInitiated { target, reason } => policy.may_match(target) || policy.may_match(reason),
            EventKind::ConversationEnded { tags, .. } => tags.iter().any(|t| policy.may_match(t)),
            _ => false,
        };
        let intent = event.metadata.intent.as_deref().is_some_and(|i| policy.may_match(i));
        if !(reasons || intent || policy.may_match(&event.content) || !event.metadata.extra.is_empty()) {
            return None;
        }
        let mut copy = event.clone();
        self.redact_event(&mut copy, &mut Counts::new()).then_some(copy)
    }
}

/// The pipeline step: redacts every event with the [`Redactor`] and counts what it replaced in
/// `serphona_obs_redactions_total{kind}` (never the values: they are in no log line, error or
/// label).
pub struct RedactionProcessor {
    redactor: Arc<Redactor>,
    counter: IntCounterVec,
    counts: Counts,
}

impl RedactionProcessor {
    /// A processor over `redactor`, counting in `counter` (the `kind` label).
    pub fn new(redactor: Arc<Redactor>, counter: IntCounterVec) -> RedactionProcessor {
        RedactionProcessor { redactor, counter, counts: Counts::new() }
    }
}

impl Processor for RedactionProcessor {
    fn process(&mut self, mut event: Event) -> Option<Event> {
        if self.redactor.redact_event(&mut event, &mut self.counts) {
            for (kind, n) in std::mem::take(&mut self.counts) {
                self.counter.with_label_values(&[kind.as_str()]).inc_by(n);
            }
        }
        Some(event)
    }
}

/// The keyed hash token of a value: 16 hex digits of HMAC-SHA256(key, name ‖ 0 ‖ value).
pub fn hash_token(key: &[u8], name: &str, value: &str) -> String {
    let mut message = Vec::with_capacity(name.len() + 1 + value.len());
    message.extend_from_slice(name.as_bytes());
    message.push(0);
    message.extend_from_slice(value.as_bytes());
    let mac = hmac_sha256(key, &message);
    mac[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// HMAC-SHA256 (RFC 2104) over `sha2`.
fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    const BLOCK: usize = 64;
    let mut k = [0u8; BLOCK];
    if key.len() > BLOCK {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(k.map(|b| b ^ 0x36));
    inner.update(message);
    let inner = inner.finalize();
    let mut outer = Sha256::new();
    outer.update(k.map(|b| b ^ 0x5c));
    outer.update(inner);
    outer.finalize().into()
}

/// The value a hash token is made from: the same person's data in another format gives the
/// same token.
fn normalize(kind: Kind, value: &str) -> String {
    match kind {
        Kind::Builtin(Detector::CardNumber | Detector::Phone | Detector::UsSsn) => {
            value.chars().filter(char::is_ascii_digit).collect()
        }
        Kind::Builtin(Detector::Email) => value.to_lowercase(),
        Kind::Builtin(Detector::Iban) => value.chars().filter(|c| !c.is_whitespace()).collect::<String>().to_uppercase(),
        Kind::Rule(_) => value.to_string(),
    }
}

/// The key generated into `<data_dir>/privacy.key` (32 random bytes, hex), created once with
/// mode 0600.
fn generated_key(data_dir: &Path) -> Result<Vec<u8>, RedactionError> {
    let path = data_dir.join("privacy.key");
    match std::fs::read_to_string(&path) {
        Ok(text) if !text.trim().is_empty() => return Ok(text.trim().as_bytes().to_vec()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => return Err(RedactionError::Key { path, context: "read", source }),
    }
    let bytes: [u8; 32] = rand::random();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let written = (|| {
        crate::fsmode::create_private_dir_all(data_dir)?;
        crate::fsmode::write_private_new(&path, hex.as_bytes())
    })();
    match written {
        Ok(()) => Ok(hex.into_bytes()),
        // Another process created it first: use theirs.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => std::fs::read_to_string(&path)
            .map(|t| t.trim().as_bytes().to_vec())
            .map_err(|source| RedactionError::Key { path, context: "read", source }),
        Err(source) => Err(RedactionError::Key { path, context: "written", source }),
    }
}

/// Luhn's check over ASCII digits.
pub fn luhn_valid(digits: &[u8]) -> bool {
    let mut sum = 0u32;
    for (i, d) in digits.iter().rev().enumerate() {
        let mut v = u32::from(d - b'0');
        if i % 2 == 1 {
            v *= 2;
            if v > 9 {
                v -= 9;
            }
        }
        sum += v;
    }
    !digits.is_empty() && sum.is_multiple_of(10)
}

/// Card numbers in `text`: maximal runs of digits, split into groups by one separator (a space
/// or a dash, the same one throughout), of 13–19 digits in all, not glued to letters or other
/// digits, Luhn-valid.
fn find_cards(text: &str) -> Vec<(usize, usize)> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    let mut digits: Vec<u8> = Vec::with_capacity(19);
    while i < b.len() {
        if !b[i].is_ascii_digit() {
            i += 1;
            continue;
        }
        let start = i;
        // Glued to a letter, digit or `_` before: part of a longer token.
        let glued_before = start > 0 && (b[start - 1].is_ascii_alphanumeric() || b[start - 1] == b'_');
        let separated_token_before = start >= 2
            && matches!(b[start - 1], b'-' | b'.' | b'/')
            && (b[start - 2].is_ascii_alphanumeric());
        digits.clear();
        let mut sep: Option<u8> = None;
        let mut end = i;
        while i < b.len() {
            if b[i].is_ascii_digit() {
                digits.push(b[i]);
                i += 1;
                end = i;
                continue;
            }
            let c = b[i];
            if (c == b' ' || c == b'-') && i + 1 < b.len() && b[i + 1].is_ascii_digit() && sep.is_none_or(|s| s == c) {
                sep = Some(c);
                i += 1;
                continue;
            }
            // Anything else, or a change of separator, ends the run.
            break;
        }
        let glued_after = end < b.len() && (b[end].is_ascii_alphanumeric() || b[end] == b'_');
        let separated_token_after = end + 1 < b.len()
            && matches!(b[end], b'-' | b'.' | b'/')
            && b[end + 1].is_ascii_alphanumeric()
            // A sentence's full stop after the number is fine.
            && (b[end] != b'.' || b[end + 1].is_ascii_digit());
        if !glued_before
            && !glued_after
            && !separated_token_before
            && !separated_token_after
            && (13..=19).contains(&digits.len())
            && luhn_valid(&digits)
        {
            out.push((start, end));
        }
        i = end.max(i);
    }
    out
}

/// An IBAN's mod-97 check (ISO 13616), over the text without spaces; lengths 15–34.
pub fn iban_valid(text: &str) -> bool {
    let s: Vec<u8> = text.bytes().filter(|c| *c != b' ').collect();
    if !(15..=34).contains(&s.len()) || !s[..2].iter().all(u8::is_ascii_uppercase) || !s[2..4].iter().all(u8::is_ascii_digit) {
        return false;
    }
    let mut rem: u32 = 0;
    for &c in s[4..].iter().chain(&s[..4]) {
        let v = match c {
            b'0'..=b'9' => u32::from(c - b'0'),
            b'A'..=b'Z' => u32::from(c - b'A') + 10,
            _ => return false,
        };
        rem = if v >= 10 { (rem * 100 + v) % 97 } else { (rem * 10 + v) % 97 };
    }
    rem == 1
}

/// A US SSN's rules: area not 000, 666 or 9xx; group not 00; serial not 0000; one separator.
fn ssn_valid(text: &str) -> bool {
    let b = text.as_bytes();
    if b.len() != 11 || b[3] != b[6] {
        return false;
    }
    let area = &text[0..3];
    let group = &text[4..6];
    let serial = &text[7..11];
    area != "000" && area != "666" && !area.starts_with('9') && group != "00" && serial != "0000"
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{PrivacyConfig, RedactionMode, RedactionRule, TenantPrivacy};

    fn mask(text: &str) -> String {
        let r = Redactor::with_defaults();
        r.redact_text("t", text, &mut Counts::new()).unwrap_or_else(|| text.to_string())
    }

    #[test]
    fn luhn_and_iban_checks() {
        assert!(luhn_valid(b"4111111111111111"));
        assert!(!luhn_valid(b"4111111111111112"));
        assert!(iban_valid("GB82 WEST 1234 5698 7654 32"));
        assert!(iban_valid("DE89370400440532013000"));
        assert!(!iban_valid("DE89370400440532013001"));
    }

    #[test]
    fn card_numbers_are_masked_in_every_grouping_and_order_numbers_survive() {
        assert_eq!(mask("my card is 4111 1111 1111 1111 thanks"), "my card is [REDACTED:card_number] thanks");
        assert_eq!(mask("4111-1111-1111-1111."), "[REDACTED:card_number].");
        assert_eq!(mask("n=4111111111111111"), "n=[REDACTED:card_number]");
        assert_eq!(mask("order 4111111111111112 shipped"), "order 4111111111111112 shipped");
        assert_eq!(mask("uuid 4111-1111-1111-1111-abcdef"), "uuid 4111-1111-1111-1111-abcdef");
    }

    #[test]
    fn emails_phones_ibans_and_ssns() {
        assert_eq!(mask("write to Jane.Doe+x@example.co.uk now"), "write to [REDACTED:email] now");
        assert_eq!(mask("call +1 415 555 0134"), "call [REDACTED:phone]");
        assert_eq!(mask("call (415) 555-0134."), "call [REDACTED:phone].");
        assert_eq!(mask("IBAN DE89 3704 0044 0532 0130 00 ok"), "IBAN [REDACTED:iban] ok");
        assert_eq!(mask("ssn 123-45-6789"), "ssn [REDACTED:us_ssn]");
        assert_eq!(mask("nothing here, order 12345"), "nothing here, order 12345");
    }

    #[test]
    fn hash_mode_gives_equal_tokens_for_equal_values_in_any_format() {
        let config = PrivacyConfig { mode: RedactionMode::Hash, hash_key: "k".into(), ..PrivacyConfig::default() };
        let r = Redactor::new(&config, Path::new("/nonexistent")).unwrap();
        let a = r.redact_text("t", "card 4111 1111 1111 1111", &mut Counts::new()).unwrap();
        let b = r.redact_text("t", "card 4111-1111-1111-1111", &mut Counts::new()).unwrap();
        assert_eq!(a, b);
        assert!(a.starts_with("card [HASH:card_number:") && a.len() == "card [HASH:card_number:]".len() + 16, "{a}");
        let other = Redactor::new(&PrivacyConfig { hash_key: "other".into(), ..config }, Path::new("/x")).unwrap();
        assert_ne!(other.redact_text("t", "card 4111 1111 1111 1111", &mut Counts::new()).unwrap(), a);
    }

    #[test]
    fn the_generated_key_is_private_and_stable() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let config = PrivacyConfig { mode: RedactionMode::Hash, ..PrivacyConfig::default() };
        let a = Redactor::new(&config, &data).unwrap();
        let b = Redactor::new(&config, &data).unwrap();
        assert_eq!(a.key, b.key);
        let mode = std::fs::metadata(data.join("privacy.key")).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn tenants_have_their_own_policy_and_custom_rules_count_by_name() {
        let mut config = PrivacyConfig {
            rules: vec![RedactionRule { name: "order_id".into(), pattern: "ORD-[0-9]{6}".into() }],
            ..PrivacyConfig::default()
        };
        config.tenants.insert(
            "umbrella-health".into(),
            TenantPrivacy { redact: Some(vec![Detector::CardNumber]), rules: None, mode: None },
        );
        let r = Redactor::new(&config, Path::new(".")).unwrap();
        let mut counts = Counts::new();
        assert_eq!(
            r.redact_text("acme", "ORD-123456 a@b.io", &mut counts).unwrap(),
            "[REDACTED:order_id] [REDACTED:email]"
        );
        assert_eq!(counts.get("order_id"), Some(&1));
        assert_eq!(counts.get("email"), Some(&1));
        // The tenant keeps emails, still masks the order ids (rules are shared) and cards.
        assert_eq!(
            r.redact_text("umbrella-health", "ORD-123456 a@b.io 4111111111111111", &mut counts).unwrap(),
            "[REDACTED:order_id] a@b.io [REDACTED:card_number]"
        );
    }

    #[test]
    fn every_caller_text_field_of_an_event_is_redacted_and_ids_are_not() {
        let r = Redactor::with_defaults();
        let mut e = crate::types::test_event("card 4111 1111 1111 1111");
        e.metadata.extra.insert("note".into(), serde_json::json!({"deep": ["mail me at a@b.io"]}));
        e.metadata.intent = Some("call +44 20 7946 0958".into());
        e.tenant_id = "4111111111111111".into();
        let mut counts = Counts::new();
        assert!(r.redact_event(&mut e, &mut counts));
        let line = e.to_json().unwrap();
        assert!(!line.contains("4111 1111"), "{line}");
        assert!(!line.contains("a@b.io"), "{line}");
        assert!(!line.contains("7946 0958"), "{line}");
        assert_eq!(&*e.tenant_id, "4111111111111111");
        assert_eq!(counts.values().sum::<u64>(), 3);
        let mut d = crate::types::test_event("ok");
        d.kind = EventKind::DecisionMade {
            decision_type: crate::types::DecisionType::Transfer,
            option: "billing".into(),
            reason: "customer read out 4111 1111 1111 1111".into(),
            confidence: None,
            duration_ms: None,
            usage: None,
        };
        let view = r.for_spans(&d).expect("the reason is redacted for spans");
        assert!(matches!(&view.kind, EventKind::DecisionMade { reason, .. } if reason == "customer read out [REDACTED:card_number]"));
        assert!(r.for_spans(&crate::types::test_event("hello")).is_none());
    }
}
