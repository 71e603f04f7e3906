//! The live view's state: pure data, updated by messages ([`State::push`] for events,
//! [`State::key`] for keys, [`State::tick`] for the passing of time). No I/O and no clock of
//! its own: callers pass the time in, so tests drive it exactly.
//!
//! Two clocks: *data time* is the newest event timestamp seen (durations of live
//! conversations, "ended in the last minute" — so a replayed log or a fast simulation looks
//! the way it happened); *wall time* is the [`Instant`] given to [`State::tick`] (events per
//! second, the response-time sparkline, and how long an ended conversation stays in view).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use time::OffsetDateTime;

use crate::types::{Channel, DecisionType, Event, EventKind, Resolution, Speaker};

/// Limits and pre-filters of the view.
#[derive(Debug, Clone)]
pub struct Options {
    /// What the header calls the source, e.g. `local .serphona-obs/events`.
    pub source: String,
    /// Only events of this tenant are kept at all.
    pub tenant: Option<String>,
    /// Only events of this agent.
    pub agent: Option<String>,
    /// Only conversations on this channel (known from their start or end event).
    pub channel: Option<Channel>,
    /// Ended conversations leave the view this long (wall time) after their end arrived.
    pub keep_ended: Duration,
    /// At most this many ended conversations are kept (the oldest ends go first).
    pub max_ended: usize,
    /// At most this many conversations in all; beyond it the least recently active go first.
    pub max_conversations: usize,
    /// Transcript entries kept per conversation (the oldest go first, and are counted).
    pub max_entries: usize,
    /// Events held while paused; more than this are dropped (and shown as dropped).
    pub max_paused: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            source: String::new(),
            tenant: None,
            agent: None,
            channel: None,
            keep_ended: Duration::from_secs(10 * 60),
            max_ended: 2_000,
            max_conversations: 20_000,
            max_entries: 1_000,
            max_paused: 200_000,
        }
    }
}

/// A key press, independent of the terminal library.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    /// ↑
    Up,
    /// ↓
    Down,
    /// Page up.
    PageUp,
    /// Page down.
    PageDown,
    /// Home.
    Home,
    /// End.
    End,
    /// ←
    Left,
    /// →
    Right,
    /// Enter.
    Enter,
    /// Escape.
    Esc,
    /// Backspace.
    Backspace,
    /// Ctrl-C.
    CtrlC,
    /// A printable character.
    Char(char),
}

/// What the app loop should do after a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Keep going.
    None,
    /// Leave the view.
    Quit,
}

/// Which pane the arrow keys move.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Focus {
    /// The conversation list.
    List,
    /// The transcript of the selected conversation.
    Transcript,
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
        /// The customer barged in.
        interrupted: bool,
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
#[derive(Debug, Clone)]
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
    /// The newest [`Options::max_entries`] transcript entries, in arrival order.
    pub entries: VecDeque<Entry>,
    /// Entries no longer kept.
    pub entries_dropped: u64,
    /// Arrival order of the first event (ties in the list).
    seq: u64,
    /// The tick at which the end was first seen (eviction clock).
    ended_seen: Option<Instant>,
    /// Lowercased transcript text, for the free-text filter (built on demand).
    haystack: String,
}

impl Conv {
    fn new(e: &Event, seq: u64) -> Conv {
        Conv {
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
            entries: VecDeque::new(),
            entries_dropped: 0,
            seq,
            ended_seen: None,
            haystack: String::new(),
        }
    }

    /// Whether the conversation has ended.
    pub fn is_ended(&self) -> bool {
        self.ended_at.is_some()
    }

    /// Seconds from start to end, or to `now` while live.
    pub fn duration(&self, now: OffsetDateTime) -> f64 {
        self.duration_seconds.unwrap_or_else(|| (now - self.started_at).as_seconds_f64().max(0.0))
    }
}

/// A parsed `/` filter: `tenant:X agent:Y channel:Z` and free text, all ANDed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filter {
    /// Tenant equals.
    pub tenant: Option<String>,
    /// Agent equals.
    pub agent: Option<String>,
    /// Channel equals.
    pub channel: Option<String>,
    /// Lowercased words that must each appear in the id, tenant, agent, customer or transcript.
    pub words: Vec<String>,
}

impl Filter {
    /// Parses the filter line.
    pub fn parse(text: &str) -> Filter {
        let mut f = Filter::default();
        for token in text.split_whitespace() {
            match token.split_once(':') {
                Some(("tenant", v)) if !v.is_empty() => f.tenant = Some(v.to_string()),
                Some(("agent", v)) if !v.is_empty() => f.agent = Some(v.to_string()),
                Some(("channel", v)) if !v.is_empty() => f.channel = Some(v.to_lowercase()),
                _ => f.words.push(token.to_lowercase()),
            }
        }
        f
    }

    /// Whether nothing is filtered.
    pub fn is_empty(&self) -> bool {
        *self == Filter::default()
    }

    fn matches(&self, c: &mut Conv) -> bool {
        if self.tenant.as_deref().is_some_and(|t| *c.tenant != *t)
            || self.agent.as_deref().is_some_and(|a| *c.agent != *a)
            || self.channel.as_deref().is_some_and(|ch| c.channel.map(Channel::as_str) != Some(ch))
        {
            return false;
        }
        if self.words.is_empty() {
            return true;
        }
        if c.haystack.is_empty() {
            let mut h = format!("{} {} {} {}", c.id, c.tenant, c.agent, c.customer);
            for e in &c.entries {
                if let EntryKind::Turn { text, .. } = &e.kind {
                    h.push(' ');
                    h.push_str(text);
                }
            }
            c.haystack = h.to_lowercase();
        }
        self.words.iter().all(|w| c.haystack.contains(w.as_str()))
    }
}

/// The `--tenant --agent --channel` pre-filter of `tail`, shared by the live view and
/// `--output json`. Only the start and end events carry the channel, so it remembers the
/// channel of each conversation between its start and its end; events of a conversation whose
/// start it has not seen pass (it may be on the channel).
#[derive(Debug, Default)]
pub struct Prefilter {
    tenant: Option<String>,
    agent: Option<String>,
    channel: Option<Channel>,
    channels: HashMap<Arc<str>, Channel>,
}

impl Prefilter {
    /// A filter; `None` lets everything through.
    pub fn new(tenant: Option<String>, agent: Option<String>, channel: Option<Channel>) -> Prefilter {
        Prefilter { tenant, agent, channel, channels: HashMap::new() }
    }

    /// Whether the event passes.
    pub fn admits(&mut self, e: &Event) -> bool {
        if self.tenant.as_deref().is_some_and(|t| *e.tenant_id != *t)
            || self.agent.as_deref().is_some_and(|a| *e.agent_id != *a)
        {
            return false;
        }
        let Some(want) = self.channel else { return true };
        match &e.kind {
            EventKind::ConversationStarted { channel, .. } => {
                self.channels.insert(e.conversation_id.clone(), *channel);
                *channel == want
            }
            EventKind::ConversationEnded { channel, .. } => {
                self.channels.remove(&*e.conversation_id);
                *channel == want
            }
            _ => self.channels.get(&*e.conversation_id).is_none_or(|c| *c == want),
        }
    }
}

/// Samples of the response-time sparkline kept.
pub const SPARK_POINTS: usize = 120;

/// The state of the live view.
#[derive(Debug)]
pub struct State {
    opts: Options,
    prefilter: Prefilter,
    convs: HashMap<Arc<str>, Conv>,
    /// Conversations in `convs` not ended.
    active: usize,
    seq: u64,
    // The list as shown: filtered and sorted ids, rebuilt lazily.
    list: Vec<Arc<str>>,
    list_dirty: bool,
    selected: Option<Arc<str>>,
    selected_index: usize,
    /// First row of the list on screen (kept by the view).
    pub list_offset: usize,
    /// The selected conversation and its row on screen in the last frame (kept by the view,
    /// so the selection stays where it is on screen while new conversations arrive above it).
    pub list_anchor: Option<(Arc<str>, usize)>,
    focus: Focus,
    follow: bool,
    paused: bool,
    show_ended: bool,
    help: bool,
    filter: Filter,
    filter_text: String,
    filter_input: Option<String>,
    /// Transcript lines scrolled up from the bottom (0: the newest at the bottom).
    pub transcript_scroll: usize,
    held: VecDeque<Event>,
    // Header figures.
    events_total: u64,
    bucket_start: Option<Instant>,
    bucket_events: u64,
    bucket_responses: Vec<f64>,
    events_per_second: f64,
    p95_history: VecDeque<Option<u64>>,
    data_now: Option<OffsetDateTime>,
    recent_ends: VecDeque<OffsetDateTime>,
    resolutions: [u64; Resolution::ALL.len()],
    dropped: u64,
    skipped: u64,
    evicted: u64,
    status: Option<String>,
}

impl State {
    /// An empty view.
    pub fn new(opts: Options) -> State {
        State {
            prefilter: Prefilter::new(opts.tenant.clone(), opts.agent.clone(), opts.channel),
            opts,
            convs: HashMap::new(),
            active: 0,
            seq: 0,
            list: Vec::new(),
            list_dirty: false,
            selected: None,
            selected_index: 0,
            list_offset: 0,
            list_anchor: None,
            focus: Focus::List,
            follow: false,
            paused: false,
            show_ended: true,
            help: false,
            filter: Filter::default(),
            filter_text: String::new(),
            filter_input: None,
            transcript_scroll: 0,
            held: VecDeque::new(),
            events_total: 0,
            bucket_start: None,
            bucket_events: 0,
            bucket_responses: Vec::new(),
            events_per_second: 0.0,
            p95_history: VecDeque::with_capacity(SPARK_POINTS),
            data_now: None,
            recent_ends: VecDeque::new(),
            resolutions: [0; Resolution::ALL.len()],
            dropped: 0,
            skipped: 0,
            evicted: 0,
            status: None,
        }
    }

    /// The options.
    pub fn options(&self) -> &Options {
        &self.opts
    }

    // ---- messages -------------------------------------------------------------------------

    /// One event. Held while paused (up to [`Options::max_paused`], then dropped and counted).
    pub fn push(&mut self, event: Event) {
        if !self.prefilter.admits(&event) {
            return;
        }
        if self.paused {
            if self.held.len() >= self.opts.max_paused {
                self.dropped += 1;
            } else {
                self.held.push_back(event);
            }
            return;
        }
        self.apply(&event);
    }

    /// Events lost before they reached the view (a full channel, a lagging broadcast).
    pub fn add_dropped(&mut self, n: u64) {
        self.dropped += n;
    }

    /// Input lines that were not events (the total so far).
    pub fn set_skipped(&mut self, n: u64) {
        self.skipped = n;
    }

    /// A line about the source for the header (e.g. "stdin closed", "ClickHouse: retrying").
    pub fn set_status(&mut self, status: Option<String>) {
        self.status = status;
    }

    /// The passing of wall time: closes the events-per-second bucket and the sparkline point
    /// once a second has passed, and evicts old ended conversations.
    pub fn tick(&mut self, now: Instant) {
        let start = *self.bucket_start.get_or_insert(now);
        let elapsed = now.saturating_duration_since(start);
        if elapsed >= Duration::from_secs(1) {
            self.events_per_second = self.bucket_events as f64 / elapsed.as_secs_f64();
            let mut responses = std::mem::take(&mut self.bucket_responses);
            responses.sort_by(f64::total_cmp);
            let p95 = crate::store::nearest_rank(&responses, 0.95).map(|s| (s * 1000.0).round() as u64);
            if self.p95_history.len() == SPARK_POINTS {
                self.p95_history.pop_front();
            }
            self.p95_history.push_back(p95);
            self.bucket_events = 0;
            self.bucket_start = Some(now);
        }
        self.evict(now);
    }

    /// A key press.
    pub fn key(&mut self, key: Key) -> Action {
        if key == Key::CtrlC {
            return Action::Quit;
        }
        self.refresh();
        if let Some(input) = &mut self.filter_input {
            match key {
                Key::Enter => self.filter_input = None,
                Key::Esc => {
                    self.filter_input = None;
                    self.set_filter(String::new());
                }
                Key::Backspace => {
                    input.pop();
                    let text = input.clone();
                    self.set_filter(text);
                }
                Key::Char(c) => {
                    input.push(c);
                    let text = input.clone();
                    self.set_filter(text);
                }
                _ => {}
            }
            return Action::None;
        }
        if self.help {
            // Any key closes the help; q still quits.
            self.help = false;
            return if key == Key::Char('q') { Action::Quit } else { Action::None };
        }
        match key {
            Key::Char('q') => return Action::Quit,
            Key::Char('?') => self.help = true,
            Key::Char('/') => {
                self.filter_input = Some(self.filter_text.clone());
            }
            Key::Char('p') | Key::Char(' ') => self.toggle_pause(),
            Key::Char('f') => {
                self.follow = !self.follow;
                if self.follow {
                    self.select_index(0);
                }
            }
            Key::Char('e') => {
                self.show_ended = !self.show_ended;
                self.list_dirty = true;
            }
            Key::Enter | Key::Right | Key::Char('l') if self.selected.is_some() => self.focus = Focus::Transcript,
            Key::Esc | Key::Left | Key::Char('h') => {
                self.focus = Focus::List;
                self.transcript_scroll = 0;
            }
            Key::Up | Key::Char('k') => self.scroll(-1),
            Key::Down | Key::Char('j') => self.scroll(1),
            Key::PageUp => self.scroll(-10),
            Key::PageDown => self.scroll(10),
            Key::Home | Key::Char('g') => self.scroll(isize::MIN / 2),
            Key::End | Key::Char('G') => self.scroll(isize::MAX / 2),
            _ => {}
        }
        Action::None
    }

    // ---- what the view reads --------------------------------------------------------------

    /// The conversations shown, in order (live and ended by start time, newest first).
    pub fn rows(&mut self) -> &[Arc<str>] {
        self.refresh();
        &self.list
    }

    /// A conversation by id.
    pub fn conversation(&self, id: &str) -> Option<&Conv> {
        self.convs.get(id)
    }

    /// The selected conversation.
    pub fn selected(&mut self) -> Option<&Conv> {
        self.refresh();
        self.selected.as_ref().and_then(|id| self.convs.get(id))
    }

    /// Index of the selected row in [`rows`](Self::rows).
    pub fn selected_index(&mut self) -> Option<usize> {
        self.refresh();
        self.selected.as_ref().map(|_| self.selected_index)
    }

    /// Which pane has the keys.
    pub fn focus(&self) -> Focus {
        self.focus
    }

    /// Following the newest conversation.
    pub fn following(&self) -> bool {
        self.follow
    }

    /// Paused, and how many events are held.
    pub fn paused(&self) -> Option<usize> {
        self.paused.then_some(self.held.len())
    }

    /// Ended conversations are listed.
    pub fn showing_ended(&self) -> bool {
        self.show_ended
    }

    /// The help overlay is open.
    pub fn help_open(&self) -> bool {
        self.help
    }

    /// The filter line being typed, when `/` is open.
    pub fn filter_input(&self) -> Option<&str> {
        self.filter_input.as_deref()
    }

    /// The applied filter text.
    pub fn filter_text(&self) -> &str {
        &self.filter_text
    }

    /// Events applied so far.
    pub fn events_total(&self) -> u64 {
        self.events_total
    }

    /// Events per second over the last closed bucket.
    pub fn events_per_second(&self) -> f64 {
        self.events_per_second
    }

    /// Agent response time p95 per second, milliseconds, oldest first (`None`: no agent turn
    /// in that second).
    pub fn p95_history(&self) -> &VecDeque<Option<u64>> {
        &self.p95_history
    }

    /// Data time: the newest event timestamp seen.
    pub fn data_now(&self) -> Option<OffsetDateTime> {
        self.data_now
    }

    /// Live (not ended) conversations held.
    pub fn active(&self) -> usize {
        self.active
    }

    /// Conversations held in all.
    pub fn held_conversations(&self) -> usize {
        self.convs.len()
    }

    /// Conversations that ended in the minute before data time.
    pub fn ended_last_minute(&self) -> usize {
        let Some(now) = self.data_now else { return 0 };
        let from = now - time::Duration::MINUTE;
        self.recent_ends.iter().filter(|t| **t > from).count()
    }

    /// Ended conversations per resolution since the view started ([`Resolution::ALL`] order).
    pub fn resolution_mix(&self) -> [(Resolution, u64); Resolution::ALL.len()] {
        std::array::from_fn(|i| (Resolution::ALL[i], self.resolutions[i]))
    }

    /// Events lost before the view.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Input lines that were not events.
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    /// Conversations evicted to keep memory bounded.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    /// The source's status line.
    pub fn status(&self) -> Option<&str> {
        self.status.as_deref()
    }

    // ---- internals ------------------------------------------------------------------------

    fn apply(&mut self, e: &Event) {
        self.events_total += 1;
        self.bucket_events += 1;
        if self.data_now.is_none_or(|t| e.timestamp > t) {
            self.data_now = Some(e.timestamp);
        }
        let seq = self.seq;
        let conv = match self.convs.get_mut(&*e.conversation_id) {
            Some(c) => c,
            None => {
                self.seq += 1;
                self.active += 1;
                self.list_dirty = true;
                self.convs.entry(e.conversation_id.clone()).or_insert_with(|| Conv::new(e, seq))
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
                conv.started_at = e.timestamp;
                self.list_dirty = true;
                EntryKind::Started { customer: customer_id.clone(), channel: *channel, language: language.clone() }
            }
            EventKind::AgentTurn { response_time_seconds, latency, .. } => {
                if let Some(r) = response_time_seconds {
                    self.bucket_responses.push(*r);
                }
                turn(conv, e, Speaker::Agent, *response_time_seconds, latency.as_ref().is_some_and(|l| l.interrupted))
            }
            EventKind::CustomerTurn { latency, .. } => {
                turn(conv, e, Speaker::Customer, None, latency.as_ref().is_some_and(|l| l.interrupted))
            }
            EventKind::DecisionMade { decision_type, option, reason, confidence, .. } => EntryKind::Decision {
                decision_type: *decision_type,
                option: option.clone(),
                reason: reason.clone(),
                confidence: *confidence,
            },
            EventKind::TransferInitiated { target, reason } => {
                conv.transfers += 1;
                EntryKind::Transfer { target: target.clone(), reason: reason.clone() }
            }
            EventKind::ConversationEnded { resolution, rating, channel, duration_seconds, .. } => {
                if conv.ended_at.is_none() {
                    self.active -= 1;
                    let i = Resolution::ALL.iter().position(|r| r == resolution).unwrap_or(0);
                    self.resolutions[i] += 1;
                    self.recent_ends.push_back(e.timestamp);
                }
                conv.ended_at = Some(e.timestamp);
                conv.duration_seconds = Some(*duration_seconds);
                conv.resolution = Some(*resolution);
                conv.rating = *rating;
                conv.channel.get_or_insert(*channel);
                self.list_dirty = true;
                EntryKind::Ended { resolution: *resolution, rating: *rating, duration_seconds: *duration_seconds }
            }
            EventKind::ErrorOccurred { error_type } => {
                conv.problems += 1;
                EntryKind::Error { error_type: error_type.clone(), message: e.content.clone() }
            }
            EventKind::ComplianceViolation { policy, severity } => {
                conv.problems += 1;
                EntryKind::Violation { policy: policy.clone(), severity: severity.clone() }
            }
            #[allow(unreachable_patterns)]
            _ => return,
        };
        if conv.entries.len() >= self.opts.max_entries.max(1) {
            conv.entries.pop_front();
            conv.entries_dropped += 1;
        }
        conv.entries.push_back(Entry { at: e.timestamp, kind });
        conv.haystack.clear();
        if !self.filter.words.is_empty() {
            // Its text changed: whether it matches may have too.
            self.list_dirty = true;
        }
    }

    fn toggle_pause(&mut self) {
        self.paused = !self.paused;
        if !self.paused {
            let held = std::mem::take(&mut self.held);
            for e in &held {
                self.apply(e);
            }
        }
    }

    fn set_filter(&mut self, text: String) {
        self.filter = Filter::parse(&text);
        self.filter_text = text;
        self.list_dirty = true;
        self.list_offset = 0;
    }

    fn select_index(&mut self, i: usize) {
        self.refresh();
        if self.list.is_empty() {
            self.selected = None;
            self.selected_index = 0;
            return;
        }
        let i = i.min(self.list.len() - 1);
        if self.selected.as_deref() != Some(&*self.list[i]) {
            self.transcript_scroll = 0;
        }
        self.selected_index = i;
        self.selected = Some(self.list[i].clone());
    }

    fn scroll(&mut self, by: isize) {
        match self.focus {
            Focus::List => {
                self.follow = false;
                self.refresh();
                let i = self.selected_index as isize + by;
                self.select_index(i.max(0) as usize);
            }
            Focus::Transcript => {
                // Up (negative) shows older lines; the view clamps to what exists.
                let s = self.transcript_scroll as isize - by;
                self.transcript_scroll = s.max(0) as usize;
            }
        }
    }

    /// Rebuilds the list when something it depends on changed, and keeps the selection on
    /// the same conversation (or the same row, when that conversation left the list).
    fn refresh(&mut self) {
        if !self.list_dirty {
            return;
        }
        self.list_dirty = false;
        let show_ended = self.show_ended;
        let filter = &self.filter;
        let want_channel = self.opts.channel;
        self.list.clear();
        for conv in self.convs.values_mut() {
            if (!show_ended && conv.is_ended())
                || want_channel.is_some_and(|w| conv.channel.is_some_and(|c| c != w))
                || !filter.matches(conv)
            {
                continue;
            }
            self.list.push(conv.id.clone());
        }
        // Sort keys taken out once: comparisons then touch no map.
        let mut keyed: Vec<(OffsetDateTime, u64, Arc<str>)> = self
            .list
            .drain(..)
            .map(|id| {
                let c = &self.convs[&id];
                (c.started_at, c.seq, id)
            })
            .collect();
        keyed.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(b.1.cmp(&a.1)));
        self.list.extend(keyed.into_iter().map(|(_, _, id)| id));
        if self.follow {
            self.selected = self.list.first().cloned();
            self.selected_index = 0;
            return;
        }
        match self.selected.as_ref().and_then(|id| self.list.iter().position(|x| x == id)) {
            Some(i) => self.selected_index = i,
            None if self.list.is_empty() => self.selected = None,
            None => {
                let i = if self.selected.is_none() { 0 } else { self.selected_index.min(self.list.len() - 1) };
                self.selected_index = i;
                self.selected = Some(self.list[i].clone());
                self.transcript_scroll = 0;
            }
        }
    }

    fn evict(&mut self, wall: Instant) {
        if let Some(now) = self.data_now {
            let minute_ago = now - time::Duration::MINUTE;
            while self.recent_ends.front().is_some_and(|t| *t <= minute_ago) {
                self.recent_ends.pop_front();
            }
        }
        let keep = self.opts.keep_ended;
        let before = self.convs.len();
        self.convs.retain(|_, c| {
            if c.ended_at.is_none() {
                return true;
            }
            let seen = *c.ended_seen.get_or_insert(wall);
            wall.saturating_duration_since(seen) < keep
        });
        // Ended ones are those not live (the retain above removed only ended ones); collected
        // and sorted only when there are too many, not on every tick.
        if self.convs.len() - self.active > self.opts.max_ended {
            let mut ended: Vec<(OffsetDateTime, u64, Arc<str>)> =
                self.convs.values().filter_map(|c| c.ended_at.map(|t| (t, c.seq, c.id.clone()))).collect();
            ended.sort_unstable();
            for (_, _, id) in &ended[..ended.len() - self.opts.max_ended] {
                self.convs.remove(id);
            }
        }
        if self.convs.len() > self.opts.max_conversations {
            let mut all: Vec<(OffsetDateTime, u64, Arc<str>)> =
                self.convs.values().map(|c| (c.last_at, c.seq, c.id.clone())).collect();
            all.sort_unstable();
            for (_, _, id) in &all[..all.len() - self.opts.max_conversations] {
                self.convs.remove(id);
            }
        }
        let gone = before - self.convs.len();
        if gone > 0 {
            self.active = self.convs.values().filter(|c| !c.is_ended()).count();
            self.evicted += gone as u64;
            self.list_dirty = true;
        }
    }
}

fn turn(conv: &mut Conv, e: &Event, speaker: Speaker, response: Option<f64>, interrupted: bool) -> EntryKind {
    conv.turns += 1;
    conv.last_speaker = Some(speaker);
    // The conversation's sentiment is the customer's: the agent's own turns do not count.
    if let Some(s) = e.metadata.sentiment_score.filter(|_| speaker == Speaker::Customer) {
        conv.sentiment_sum += s;
        conv.sentiment_n += 1;
        conv.sentiment = Some(conv.sentiment_sum / conv.sentiment_n as f64);
    }
    EntryKind::Turn {
        speaker,
        text: e.content.clone(),
        intent: e.metadata.intent.clone().map(|i| (i, e.metadata.confidence)),
        sentiment: e.metadata.sentiment_score,
        response,
        interrupted,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tui::testdata::{Conv as C, T0, contact_center};

    fn state() -> State {
        State::new(Options { source: "test".into(), ..Options::default() })
    }

    fn fed(events: Vec<Event>) -> State {
        let mut s = state();
        for e in events {
            s.push(e);
        }
        s
    }

    fn ids(s: &mut State) -> Vec<String> {
        s.rows().iter().map(|id| id.to_string()).collect()
    }

    #[test]
    fn the_list_is_newest_first_and_counts_turns_and_ends() {
        let mut s = fed(contact_center(6));
        assert_eq!(ids(&mut s), ["conv-0005", "conv-0004", "conv-0003", "conv-0002", "conv-0001", "conv-0000"]);
        // 0 and 3 transferred and ended, 5 resolved; 1, 2 and 4 live.
        assert_eq!(s.active(), 3);
        let c = s.conversation("conv-0003").unwrap();
        assert_eq!((c.turns, c.transfers, c.resolution), (2, 1, Some(Resolution::Transferred)));
        assert_eq!(c.last_speaker, Some(Speaker::Agent));
        assert_eq!(c.entries.len(), 6);
        let mix: HashMap<Resolution, u64> = s.resolution_mix().into_iter().collect();
        assert_eq!((mix[&Resolution::Transferred], mix[&Resolution::Resolved]), (2, 1));
        assert_eq!(s.events_total(), 6 * 4 + 2 + 2 + 1);
        assert_eq!(s.data_now(), Some(T0 + time::Duration::seconds(58)));
        // Ended within the minute before data time (58 s): all three ends.
        assert_eq!(s.ended_last_minute(), 3);
    }

    #[test]
    fn events_out_of_order_and_before_the_start_still_make_one_conversation() {
        let mut c = C::new(1, "acme", "bot");
        let start = c.start(10.0, Channel::Voice);
        let turn = c.customer(12.0, "hello", None, 0.0);
        let mut s = fed(vec![turn, start]);
        assert_eq!(ids(&mut s), ["conv-0001"]);
        let conv = s.conversation("conv-0001").unwrap();
        assert_eq!(conv.channel, Some(Channel::Voice));
        assert_eq!(conv.started_at, T0 + time::Duration::seconds(10));
        assert_eq!(conv.turns, 1);
    }

    #[test]
    fn the_selection_stays_on_its_conversation_when_new_ones_arrive() {
        let events = contact_center(10);
        let (first, rest) = events.split_at(12);
        let mut s = fed(first.to_vec());
        assert_eq!(s.selected().map(|c| c.id.to_string()).as_deref(), Some("conv-0002"));
        s.key(Key::Down);
        assert_eq!(s.selected().map(|c| c.id.to_string()).as_deref(), Some("conv-0001"));
        for e in rest {
            s.push(e.clone());
        }
        // conv-0001 is still selected, now further down the list.
        assert_eq!(s.selected().map(|c| c.id.to_string()).as_deref(), Some("conv-0001"));
        assert_eq!(s.selected_index(), Some(8));
        s.key(Key::Char('k'));
        assert_eq!(s.selected().map(|c| c.id.to_string()).as_deref(), Some("conv-0002"));
        s.key(Key::Char('g'));
        assert_eq!(s.selected_index(), Some(0));
        s.key(Key::End);
        assert_eq!(s.selected_index(), Some(9));
        s.key(Key::Down); // past the end stays at the end
        assert_eq!(s.selected_index(), Some(9));
    }

    #[test]
    fn follow_keeps_the_newest_selected_until_the_user_moves() {
        let events = contact_center(8);
        let mut s = fed(events[..8].to_vec());
        s.key(Key::Char('f'));
        assert!(s.following());
        for e in &events[8..] {
            s.push(e.clone());
        }
        assert_eq!(s.selected().map(|c| c.id.to_string()).as_deref(), Some("conv-0007"));
        s.key(Key::Down);
        assert!(!s.following(), "moving the selection stops following");
        assert_eq!(s.selected().map(|c| c.id.to_string()).as_deref(), Some("conv-0006"));
    }

    #[test]
    fn pause_holds_events_and_resume_applies_them_all() {
        let events = contact_center(4);
        let mut s = fed(events[..4].to_vec());
        s.key(Key::Char('p'));
        for e in &events[4..] {
            s.push(e.clone());
        }
        assert_eq!(s.paused(), Some(events.len() - 4));
        assert_eq!(s.events_total(), 4);
        assert_eq!(s.rows().len(), 1);
        s.key(Key::Char('p'));
        assert_eq!(s.paused(), None);
        assert_eq!(s.events_total(), events.len() as u64);
        assert_eq!(s.rows().len(), 4);
    }

    #[test]
    fn pause_drops_beyond_its_limit_and_counts_them() {
        let events = contact_center(10);
        let mut s = State::new(Options { max_paused: 5, ..Options::default() });
        s.key(Key::Char(' '));
        for e in &events {
            s.push(e.clone());
        }
        assert_eq!(s.paused(), Some(5));
        assert_eq!(s.dropped(), events.len() as u64 - 5);
    }

    #[test]
    fn filters_by_field_and_by_words_of_the_transcript() {
        let mut events = contact_center(9);
        let mut odd = C::new(99, "acme-telco", "billing-bot");
        events.push(odd.start(200.0, Channel::Chat));
        events.push(odd.customer(201.0, "Where is my parcel?", None, 0.0));
        let mut s = fed(events);
        for c in "tenant:globex-bank".chars() {
            s.key(Key::Char('/'));
            s.key(Key::Char(c));
            s.key(Key::Enter);
        }
        // Typing went into one filter line: "/" opens it with the current text.
        assert_eq!(s.filter_text(), "tenant:globex-bank");
        assert_eq!(ids(&mut s), ["conv-0007", "conv-0004", "conv-0001"]);
        s.key(Key::Char('/'));
        for c in " channel:chat".chars() {
            s.key(Key::Char(c));
        }
        assert_eq!(s.filter_input(), Some("tenant:globex-bank channel:chat"));
        assert_eq!(ids(&mut s), ["conv-0001"]);
        s.key(Key::Esc);
        assert_eq!(s.filter_text(), "");
        assert_eq!(s.rows().len(), 10);
        s.key(Key::Char('/'));
        for c in "PARCEL".chars() {
            s.key(Key::Char(c));
        }
        assert_eq!(ids(&mut s), ["conv-0099"]);
        for _ in 0..6 {
            s.key(Key::Backspace);
        }
        assert_eq!(s.rows().len(), 10);
        // While typing, q is text, not quit.
        assert_eq!(s.key(Key::Char('q')), Action::None);
        s.key(Key::Enter);
        assert_eq!(s.key(Key::Char('q')), Action::Quit);
    }

    #[test]
    fn the_prefilter_keeps_only_the_tenant_agent_and_channel_asked_for() {
        let mut s = State::new(Options { tenant: Some("acme-telco".into()), channel: Some(Channel::Voice), ..Options::default() });
        for e in contact_center(12) {
            s.push(e);
        }
        // acme-telco is every third (0, 3, 6, 9); voice every fourth (0, 4, 8): only 0.
        assert_eq!(ids(&mut s), ["conv-0000"]);
        assert_eq!(s.conversation("conv-0000").unwrap().entries.len(), 6, "turns after the start pass too");
    }

    #[test]
    fn hide_ended_and_eviction_by_time_and_count() {
        let events = contact_center(30);
        let mut s = State::new(Options { keep_ended: Duration::from_secs(60), max_ended: 5, ..Options::default() });
        for e in events {
            s.push(e);
        }
        let ended = s.held_conversations() - s.active();
        assert_eq!(ended, 14); // 10 transferred (i % 3 == 0) + 4 resolved (5, 10, 20, 25)
        s.key(Key::Char('e'));
        assert_eq!(s.rows().len(), s.active());
        s.key(Key::Char('e'));
        let t = Instant::now();
        s.tick(t);
        // Over the count: the oldest ends go first.
        assert_eq!(s.held_conversations() - s.active(), 5);
        assert_eq!(s.evicted(), 9);
        assert!(s.conversation("conv-0027").is_some() && s.conversation("conv-0000").is_none());
        // A minute of wall time later the rest go; live ones stay.
        s.tick(t + Duration::from_secs(61));
        assert_eq!(s.held_conversations(), s.active());
        assert_eq!(s.evicted(), 14);
        assert_eq!(s.rows().len(), s.active());
    }

    #[test]
    fn memory_is_bounded_with_conversations_that_never_end() {
        let mut s = State::new(Options { max_conversations: 100, max_entries: 3, ..Options::default() });
        for n in 0..1_000 {
            let mut c = C::new(n, "t", "a");
            s.push(c.start(n as f64, Channel::Chat));
            for k in 0..5 {
                s.push(c.customer(n as f64 + k as f64 * 0.1, "hi", None, 0.0));
            }
        }
        s.tick(Instant::now());
        assert_eq!(s.held_conversations(), 100);
        assert!(s.conversation("conv-0999").is_some() && s.conversation("conv-0000").is_none());
        let c = s.conversation("conv-0999").unwrap();
        assert_eq!((c.entries.len(), c.entries_dropped, c.turns), (3, 3, 5));
    }

    #[test]
    fn rates_and_the_p95_sparkline_come_from_ticks() {
        let mut s = state();
        let t = Instant::now();
        s.tick(t);
        for e in contact_center(20) {
            s.push(e);
        }
        s.tick(t + Duration::from_millis(500));
        assert_eq!(s.events_per_second(), 0.0, "no bucket closed yet");
        s.tick(t + Duration::from_secs(2));
        assert_eq!(s.events_per_second(), s.events_total() as f64 / 2.0);
        // Response times 1.2 + (i % 5) * 0.3: the largest, 2.4 s, is the p95 of 20.
        assert_eq!(s.p95_history().back(), Some(&Some(2400)));
        s.tick(t + Duration::from_secs(3));
        assert_eq!(s.p95_history().back(), Some(&None), "a second without agent turns");
        s.add_dropped(7);
        assert_eq!(s.dropped(), 7);
    }

    #[test]
    fn focus_moves_between_list_and_transcript_and_scrolls_it() {
        let mut s = fed(contact_center(3));
        assert_eq!(s.focus(), Focus::List);
        s.key(Key::Enter);
        assert_eq!(s.focus(), Focus::Transcript);
        s.key(Key::Up);
        s.key(Key::Up);
        assert_eq!(s.transcript_scroll, 2);
        assert_eq!(s.selected_index(), Some(0), "arrows scroll the transcript, not the list");
        s.key(Key::Left);
        assert_eq!((s.focus(), s.transcript_scroll), (Focus::List, 0));
        s.key(Key::Char('?'));
        assert!(s.help_open());
        assert_eq!(s.key(Key::Char('x')), Action::None);
        assert!(!s.help_open());
        assert_eq!(s.key(Key::CtrlC), Action::Quit);
    }
}
