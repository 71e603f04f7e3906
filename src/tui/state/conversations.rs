//! The conversations the live view holds, one entity each: [`Conv`] (what happened in one
//! conversation, its transcript and the figures derived from it) and [`Conversations`] (all
//! of them, live and ended). Both change only in [`Conversations::apply`] (an event) and
//! [`Conversations::evict`] (the passing of wall time); every figure derived from the events,
//! the filter's search text included, is brought up to date there, so reading is pure.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use time::OffsetDateTime;

use crate::types::{
    Channel, DecisionType, Event, EventKind, Interruption, Resolution, Speaker, TurnLatency, TurnMarks, TurnSpeaker, Usage,
};

/// One part of a voice turn's latency, in the order the bar lays them end to end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// Speech-to-text (`latency.stt_ms`).
    Stt,
    /// End-of-utterance detection (`latency.end_of_utterance_ms`).
    Eou,
    /// LLM time to first token (`latency.llm_ttft_ms`).
    Llm,
    /// Tool calls before the reply (`latency.tool_ms`).
    Tool,
    /// Text-to-speech time to first byte (`latency.tts_ttfb_ms`).
    Tts,
}

impl Part {
    /// The bar's order.
    pub const ALL: [Part; 5] = [Part::Stt, Part::Eou, Part::Llm, Part::Tool, Part::Tts];

    /// The short name the bar's legend shows (`stt`, `eou`, `llm`, `tool`, `tts`).
    pub fn label(self) -> &'static str {
        match self {
            Part::Stt => "stt",
            Part::Eou => "eou",
            Part::Llm => "llm",
            Part::Tool => "tool",
            Part::Tts => "tts",
        }
    }

    fn of(self, l: &TurnLatency) -> Option<f64> {
        match self {
            Part::Stt => l.stt_ms,
            Part::Eou => l.end_of_utterance_ms,
            Part::Llm => l.llm_ttft_ms,
            Part::Tool => l.tool_ms,
            Part::Tts => l.tts_ttfb_ms,
        }
    }
}

/// A voice turn's latency laid out for the bar (a small waterfall): derived when the turn
/// arrives, so rendering only scales it to the width it has.
#[derive(Debug, Clone, PartialEq)]
pub struct LatencyBar {
    /// The parts given (finite, non-negative), in [`Part::ALL`] order, in milliseconds.
    pub parts: Vec<(Part, f64)>,
    /// The whole the parts are part of: the response latency (`latency.response_ms`, else the
    /// measured response time), or the greeting's; never less than the parts' sum.
    pub total_ms: f64,
    /// The whole is the greeting latency (from the call's start), not a response.
    pub greeting: bool,
}

impl LatencyBar {
    /// The bar of a turn, when it has at least one part.
    pub fn of(latency: &TurnLatency, response_seconds: Option<f64>) -> Option<LatencyBar> {
        let ok = |v: Option<f64>| v.filter(|v| v.is_finite() && *v >= 0.0);
        let parts: Vec<(Part, f64)> = Part::ALL.iter().filter_map(|p| ok(p.of(latency)).map(|ms| (*p, ms))).collect();
        if parts.is_empty() {
            return None;
        }
        let sum: f64 = parts.iter().map(|(_, ms)| ms).sum();
        let response = ok(latency.response_ms).or(ok(response_seconds.map(|s| s * 1000.0)));
        let greeting = response.is_none() && ok(latency.greeting_ms).is_some();
        let whole = response.or(ok(latency.greeting_ms)).unwrap_or(sum);
        Some(LatencyBar { parts, total_ms: whole.max(sum), greeting })
    }

    /// The part of the whole no part accounts for, in milliseconds.
    pub fn rest_ms(&self) -> f64 {
        (self.total_ms - self.parts.iter().map(|(_, ms)| ms).sum::<f64>()).max(0.0)
    }
}

/// One line of a transcript.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// When.
    pub at: OffsetDateTime,
    /// What.
    pub kind: EntryKind,
}

/// What a transcript line shows.
#[derive(Debug, Clone, PartialEq)]
pub enum EntryKind {
    /// The conversation started.
    Started {
        /// Customer id.
        customer: String,
        /// Channel.
        channel: Channel,
        /// Language tag.
        language: String,
    },
    /// A turn.
    Turn {
        /// Agent or customer.
        speaker: Speaker,
        /// What was said.
        text: String,
        /// Detected intent and its confidence.
        intent: Option<(String, Option<f64>)>,
        /// Sentiment −1…1.
        sentiment: Option<f64>,
        /// Agent response time, seconds.
        response: Option<f64>,
        /// The voice latency parts, laid out for the bar.
        latency: Option<LatencyBar>,
        /// This turn was cut in on, or cut in (see [`Interruption`]).
        interruption: Option<Interruption>,
        /// Silence of at least the dead-air threshold before this turn, milliseconds.
        dead_air_ms: Option<f64>,
        /// What the turn used (tokens) and cost (boxed: most turns have none).
        usage: Option<Box<Usage>>,
    },
    /// A decision.
    Decision {
        /// Kind.
        decision_type: DecisionType,
        /// Chosen option.
        option: String,
        /// Why.
        reason: String,
        /// Confidence.
        confidence: Option<f64>,
    },
    /// A transfer was carried out.
    Transfer {
        /// Where to.
        target: String,
        /// Why.
        reason: String,
    },
    /// An error.
    Error {
        /// Its class.
        error_type: String,
        /// The message.
        message: String,
    },
    /// A compliance violation.
    Violation {
        /// Policy.
        policy: String,
        /// Severity.
        severity: String,
    },
    /// The end.
    Ended {
        /// How.
        resolution: Resolution,
        /// Customer rating.
        rating: Option<u8>,
        /// Seconds from start to end.
        duration_seconds: f64,
    },
}

/// One conversation as the view knows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Conv {
    /// Id.
    pub id: Arc<str>,
    /// Tenant.
    pub tenant: Arc<str>,
    /// Agent.
    pub agent: Arc<str>,
    /// Customer (empty until the start event is seen).
    pub customer: String,
    /// Channel, once known.
    pub channel: Option<Channel>,
    /// Start (the first event's time when the start was not seen).
    pub started_at: OffsetDateTime,
    /// The latest event's time.
    pub last_at: OffsetDateTime,
    /// End, once ended.
    pub ended_at: Option<OffsetDateTime>,
    /// Duration from the end event.
    pub duration_seconds: Option<f64>,
    /// How it ended.
    pub resolution: Option<Resolution>,
    /// Rating.
    pub rating: Option<u8>,
    /// Agent plus customer turns.
    pub turns: u32,
    /// Who spoke last.
    pub last_speaker: Option<Speaker>,
    /// Mean sentiment of the scored turns.
    pub sentiment: Option<f64>,
    sentiment_sum: f64,
    sentiment_n: u32,
    /// Transfers made.
    pub transfers: u32,
    /// Errors and violations.
    pub problems: u32,
    /// Interruptions, by either side.
    pub interruptions: u32,
    /// What its turns and decisions cost so far, in US dollars (the end's total once it
    /// arrived); `None` while nothing priced was seen.
    pub cost_usd: Option<f64>,
    /// LLM input tokens of its turns and decisions (the end's total once it arrived).
    pub input_tokens: u64,
    /// LLM output tokens.
    pub output_tokens: u64,
    /// Error classes and violated policies seen, each once, in arrival order
    /// (`error:llm_timeout`, `violation:pci_dss`).
    pub problem_tags: Vec<String>,
    /// Transfer targets seen, each once.
    pub transfer_targets: Vec<String>,
    /// The newest [`Options::max_entries`](super::Options::max_entries) transcript entries,
    /// in arrival order.
    pub entries: VecDeque<Entry>,
    /// Entries no longer kept.
    pub entries_dropped: u64,
    /// Arrival order of the first event (ties in the list).
    seq: u64,
    /// The tick at which the end was first seen (eviction clock).
    ended_seen: Option<Instant>,
    /// Lowercased `id tenant agent customer` and the tags (`channel:voice`,
    /// `resolution:transferred`, `error:llm_timeout`, `violation:pci_dss`,
    /// `transfer:human-billing`, `interrupted`), then ` text` of each turn kept: what the
    /// free-text filter searches. Kept up to date as events come and entries go.
    search: String,
    /// Bytes of `search` before the first turn's text.
    search_header: usize,
}

impl Conv {
    fn new(e: &Event, seq: u64) -> Conv {
        let mut c = Conv {
            id: e.conversation_id.clone(),
            tenant: e.tenant_id.clone(),
            agent: e.agent_id.clone(),
            customer: String::new(),
            channel: None,
            started_at: e.timestamp,
            last_at: e.timestamp,
            ended_at: None,
            duration_seconds: None,
            resolution: None,
            rating: None,
            turns: 0,
            last_speaker: None,
            sentiment: None,
            sentiment_sum: 0.0,
            sentiment_n: 0,
            transfers: 0,
            problems: 0,
            interruptions: 0,
            cost_usd: None,
            input_tokens: 0,
            output_tokens: 0,
            problem_tags: Vec::new(),
            transfer_targets: Vec::new(),
            entries: VecDeque::new(),
            entries_dropped: 0,
            seq,
            ended_seen: None,
            search: String::new(),
            search_header: 0,
        };
        c.set_search_header();
        c
    }

    /// Whether the conversation has ended.
    pub fn is_ended(&self) -> bool {
        self.ended_at.is_some()
    }

    /// Seconds from start to end, or to `now` while live.
    pub fn duration(&self, now: OffsetDateTime) -> f64 {
        self.duration_seconds.unwrap_or_else(|| (now - self.started_at).as_seconds_f64().max(0.0))
    }

    /// Arrival order of the conversation's first event: the list's tie-break.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// What the free-text filter searches, lowercased: the id, tenant, agent and customer, the
    /// tags (`channel:voice`, `resolution:transferred`, `error:llm_timeout`,
    /// `violation:pci_dss`, `transfer:human-billing`, `interrupted`), then the text of each
    /// turn kept, separated by spaces.
    pub fn search_text(&self) -> &str {
        &self.search
    }

    /// Rewrites the id, tenant, agent, customer and the tags at the front of the search text.
    fn set_search_header(&mut self) {
        let mut header = format!("{} {} {} {}", self.id, self.tenant, self.agent, self.customer);
        if let Some(ch) = self.channel {
            header.push_str(" channel:");
            header.push_str(ch.as_str());
        }
        if let Some(r) = self.resolution {
            header.push_str(" resolution:");
            header.push_str(r.as_str());
        }
        for tag in &self.problem_tags {
            header.push(' ');
            header.push_str(tag);
        }
        for target in &self.transfer_targets {
            header.push_str(" transfer:");
            header.push_str(target);
        }
        if self.interruptions > 0 {
            header.push_str(" interrupted");
        }
        let header = header.to_lowercase();
        self.search.replace_range(..self.search_header, &header);
        self.search_header = header.len();
    }

    fn add_problem_tag(&mut self, tag: String) {
        if !self.problem_tags.contains(&tag) {
            self.problem_tags.push(tag);
            self.set_search_header();
        }
    }

    /// Keeps at most `max_entries` entries (the oldest go first, and are counted).
    fn push_entry(&mut self, entry: Entry, max_entries: usize) {
        if self.entries.len() >= max_entries.max(1) {
            if let Some(old) = self.entries.pop_front() {
                if let EntryKind::Turn { text, .. } = &old.kind {
                    // The same bytes as when it was added: " " and the text lowercased.
                    let n = 1 + text.to_lowercase().len();
                    self.search.replace_range(self.search_header..self.search_header + n, "");
                }
            }
            self.entries_dropped += 1;
        }
        if let EntryKind::Turn { text, .. } = &entry.kind {
            self.search.push(' ');
            self.search.push_str(&text.to_lowercase());
        }
        self.entries.push_back(entry);
    }

    /// Adds a turn's or decision's usage to the conversation's sums (until the end's totals).
    fn add_usage(&mut self, usage: Option<&Usage>) {
        let Some(u) = usage else { return };
        if self.ended_at.is_some() {
            return;
        }
        if let Some(c) = u.cost_usd {
            self.cost_usd = Some(self.cost_usd.unwrap_or(0.0) + c);
        }
        self.input_tokens += u.input_tokens.unwrap_or(0);
        self.output_tokens += u.output_tokens.unwrap_or(0);
    }

    fn turn(&mut self, e: &Event, speaker: Speaker, response: Option<f64>) -> EntryKind {
        let latency = e.kind.latency();
        let marks = e.kind.turn_marks().copied().unwrap_or_default();
        // An older line says only `latency.interrupted` (a customer barge-in on this turn).
        let interruption = marks.interruption.or_else(|| {
            latency
                .is_some_and(|l| l.interrupted)
                .then_some(Interruption { by: TurnSpeaker::Customer, overlap_ms: None, derived: false })
        });
        if interruption.is_some() {
            self.interruptions += 1;
            if self.interruptions == 1 {
                self.set_search_header();
            }
        }
        let usage = e.kind.usage();
        self.add_usage(usage);
        let TurnMarks { dead_air_ms, .. } = marks;
        self.turns += 1;
        self.last_speaker = Some(speaker);
        // The conversation's sentiment is the customer's: the agent's own turns do not count.
        if let Some(s) = e.metadata.sentiment_score.filter(|_| speaker == Speaker::Customer) {
            self.sentiment_sum += s;
            self.sentiment_n += 1;
            self.sentiment = Some(self.sentiment_sum / self.sentiment_n as f64);
        }
        EntryKind::Turn {
            speaker,
            text: e.content.clone(),
            intent: e.metadata.intent.clone().map(|i| (i, e.metadata.confidence)),
            sentiment: e.metadata.sentiment_score,
            response,
            latency: latency.and_then(|l| LatencyBar::of(l, response)),
            interruption,
            dead_air_ms,
            usage: usage.cloned().map(Box::new),
        }
    }
}

/// What one event changed, for the figures kept outside the conversations.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Applied {
    /// The event was the conversation's first end, with this resolution.
    pub ended: Option<Resolution>,
}

/// All conversations held, live and ended, by id.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Conversations {
    by_id: HashMap<Arc<str>, Conv>,
    /// Conversations in `by_id` not ended.
    live: usize,
    /// Arrival counter (each conversation's `seq`).
    seq: u64,
    /// Bumped when what a list of them shows may have changed: a conversation came or went,
    /// started or ended.
    list_version: u64,
    /// Bumped when any transcript changed.
    text_version: u64,
}

impl Conversations {
    /// None yet.
    pub fn new() -> Conversations {
        Conversations::default()
    }

    /// A conversation by id.
    pub fn get(&self, id: &str) -> Option<&Conv> {
        self.by_id.get(id)
    }

    /// All of them, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &Conv> {
        self.by_id.values()
    }

    /// How many are held, live and ended.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Whether none are held.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// How many are live (not ended).
    pub fn live(&self) -> usize {
        self.live
    }

    /// How many have ended (and are still held).
    pub fn ended(&self) -> usize {
        self.by_id.len() - self.live
    }

    /// Changes whenever which conversations there are, or their start or end, changes: a
    /// view keeping a sorted, filtered list of them rebuilds it when this moved.
    pub fn list_version(&self) -> u64 {
        self.list_version
    }

    /// Changes whenever a transcript changes (what the free-text filter searches).
    pub fn text_version(&self) -> u64 {
        self.text_version
    }

    /// One event into its conversation (created on its first event), keeping at most
    /// `max_entries` transcript entries per conversation.
    pub fn apply(&mut self, e: &Event, max_entries: usize) -> Applied {
        let mut applied = Applied::default();
        let seq = self.seq;
        let conv = match self.by_id.get_mut(&*e.conversation_id) {
            Some(c) => c,
            None => {
                self.seq += 1;
                self.live += 1;
                self.list_version += 1;
                self.by_id.entry(e.conversation_id.clone()).or_insert_with(|| Conv::new(e, seq))
            }
        };
        if e.timestamp > conv.last_at {
            conv.last_at = e.timestamp;
        }
        if e.timestamp < conv.started_at && conv.channel.is_none() {
            conv.started_at = e.timestamp;
        }
        let kind = match &e.kind {
            EventKind::ConversationStarted { customer_id, channel, language } => {
                conv.customer = customer_id.clone();
                conv.channel = Some(*channel);
                conv.set_search_header();
                conv.started_at = e.timestamp;
                self.list_version += 1;
                EntryKind::Started { customer: customer_id.clone(), channel: *channel, language: language.clone() }
            }
            EventKind::AgentTurn { response_time_seconds, .. } => conv.turn(e, Speaker::Agent, *response_time_seconds),
            EventKind::CustomerTurn { .. } => conv.turn(e, Speaker::Customer, None),
            EventKind::DecisionMade { decision_type, option, reason, confidence, usage, .. } => {
                conv.add_usage(usage.as_deref());
                EntryKind::Decision {
                    decision_type: *decision_type,
                    option: option.clone(),
                    reason: reason.clone(),
                    confidence: *confidence,
                }
            }
            EventKind::TransferInitiated { target, reason } => {
                conv.transfers += 1;
                if !conv.transfer_targets.contains(target) {
                    conv.transfer_targets.push(target.clone());
                    conv.set_search_header();
                }
                EntryKind::Transfer { target: target.clone(), reason: reason.clone() }
            }
            EventKind::ConversationEnded { resolution, rating, channel, duration_seconds, usage, .. } => {
                if conv.ended_at.is_none() {
                    self.live -= 1;
                    applied.ended = Some(*resolution);
                }
                conv.ended_at = Some(e.timestamp);
                conv.duration_seconds = Some(*duration_seconds);
                conv.resolution = Some(*resolution);
                conv.rating = *rating;
                conv.channel.get_or_insert(*channel);
                // The end's sums cover every turn and decision, also those not seen here.
                if let Some(u) = usage {
                    if u.cost_usd.is_some() {
                        conv.cost_usd = u.cost_usd;
                    }
                    conv.input_tokens = conv.input_tokens.max(u.input_tokens.unwrap_or(0));
                    conv.output_tokens = conv.output_tokens.max(u.output_tokens.unwrap_or(0));
                }
                conv.set_search_header();
                self.list_version += 1;
                EntryKind::Ended { resolution: *resolution, rating: *rating, duration_seconds: *duration_seconds }
            }
            EventKind::ErrorOccurred { error_type } => {
                conv.problems += 1;
                conv.add_problem_tag(format!("error:{error_type}"));
                EntryKind::Error { error_type: error_type.clone(), message: e.content.clone() }
            }
            EventKind::ComplianceViolation { policy, severity } => {
                conv.problems += 1;
                conv.add_problem_tag(format!("violation:{policy}"));
                EntryKind::Violation { policy: policy.clone(), severity: severity.clone() }
            }
            #[allow(unreachable_patterns)]
            _ => return applied,
        };
        conv.push_entry(Entry { at: e.timestamp, kind }, max_entries);
        self.text_version += 1;
        applied
    }

    /// Evicts ended conversations `keep` (wall time) after their end was first seen here,
    /// then the oldest ends beyond `max_ended`, then the least recently active beyond
    /// `max_conversations`. Returns how many went.
    pub fn evict(&mut self, wall: Instant, keep: Duration, max_ended: usize, max_conversations: usize) -> usize {
        let before = self.by_id.len();
        self.by_id.retain(|_, c| {
            if c.ended_at.is_none() {
                return true;
            }
            let seen = *c.ended_seen.get_or_insert(wall);
            wall.saturating_duration_since(seen) < keep
        });
        // Ended ones are those not live (the retain above removed only ended ones); collected
        // and sorted only when there are too many, not on every tick.
        if self.by_id.len() - self.live > max_ended {
            let mut ended: Vec<(OffsetDateTime, u64, Arc<str>)> =
                self.by_id.values().filter_map(|c| c.ended_at.map(|t| (t, c.seq, c.id.clone()))).collect();
            ended.sort_unstable();
            for (_, _, id) in &ended[..ended.len() - max_ended] {
                self.by_id.remove(id);
            }
        }
        if self.by_id.len() > max_conversations {
            let mut all: Vec<(OffsetDateTime, u64, Arc<str>)> =
                self.by_id.values().map(|c| (c.last_at, c.seq, c.id.clone())).collect();
            all.sort_unstable();
            for (_, _, id) in &all[..all.len() - max_conversations] {
                self.by_id.remove(id);
            }
        }
        let gone = before - self.by_id.len();
        if gone > 0 {
            self.live = self.by_id.values().filter(|c| !c.is_ended()).count();
            self.list_version += 1;
        }
        gone
    }
}
