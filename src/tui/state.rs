//! The live view's data: what the events said, and nothing about how it is shown (the
//! selection, focus, scrolling, help and filter are the view's: [`ViewState`]). Pure data,
//! updated by messages ([`State::push`] for events, [`State::tick`] for the passing of time,
//! [`State::toggle_pause`]); every read takes `&self` and changes nothing, since whatever is
//! derived from the events is brought up to date when they arrive. No I/O and no clock of its
//! own: callers pass the time in, so tests drive it exactly.
//!
//! Per entity, as in tokio-console: [`conversations`] holds each conversation ([`Conv`]: its
//! transcript and the figures derived from it) and the collection of them ([`Conversations`]);
//! [`stats`] the figures of the header (rates, the response-time sparkline, the resolution
//! mix); [`prefilter`] which events are kept at all. [`State`] puts them together with the
//! events held while paused and the source's counters (dropped, skipped, status).
//!
//! Two clocks: *data time* is the newest event timestamp seen (durations of live
//! conversations, "ended in the last minute" — so a replayed log or a fast simulation looks
//! the way it happened); *wall time* is the [`Instant`] given to [`State::tick`] (events per
//! second, the response-time sparkline, and how long an ended conversation stays in view).
//!
//! [`ViewState`]: super::view::ViewState

pub mod conversations;
pub mod incidents;
pub mod prefilter;
pub mod stats;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use time::OffsetDateTime;

use crate::types::{Channel, Event, Resolution};

pub use conversations::{Conv, Conversations, Entry, EntryKind, LatencyBar, Part};
pub use prefilter::Prefilter;
pub use stats::{SPARK_POINTS, Stats};

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

/// The data of the live view: the conversations and the header's figures.
#[derive(Debug)]
pub struct State {
    opts: Options,
    prefilter: Prefilter,
    conversations: Conversations,
    stats: Stats,
    incidents: incidents::Incidents,
    paused: bool,
    held: VecDeque<Event>,
    // The source's figures.
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
            conversations: Conversations::new(),
            stats: Stats::new(),
            incidents: incidents::Incidents::default(),
            paused: false,
            held: VecDeque::new(),
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

    /// Pauses (events are held, see [`push`](Self::push)), or resumes and applies the events
    /// held, in order.
    pub fn toggle_pause(&mut self) {
        self.paused = !self.paused;
        if !self.paused {
            let held = std::mem::take(&mut self.held);
            for e in &held {
                self.apply(e);
            }
        }
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
    /// once a second has passed, evicts old ended conversations, and runs anomaly detection
    /// over the data (at most every [`incidents::Incidents::EVERY`]).
    pub fn tick(&mut self, now: Instant) {
        self.stats.tick(now);
        self.incidents.tick(now);
        let o = &self.opts;
        let gone = self.conversations.evict(now, o.keep_ended, o.max_ended, o.max_conversations);
        self.evicted += gone as u64;
    }

    // ---- reads ----------------------------------------------------------------------------

    /// The incidents going on (see [`crate::detect`]), as of the last tick.
    pub fn incidents(&self) -> &[crate::detect::Incident] {
        self.incidents.open()
    }

    /// The conversations held.
    pub fn conversations(&self) -> &Conversations {
        &self.conversations
    }

    /// The header's figures.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// A conversation by id.
    pub fn conversation(&self, id: &str) -> Option<&Conv> {
        self.conversations.get(id)
    }

    /// Paused, and how many events are held.
    pub fn paused(&self) -> Option<usize> {
        self.paused.then_some(self.held.len())
    }

    /// Events applied so far.
    pub fn events_total(&self) -> u64 {
        self.stats.events_total()
    }

    /// Events per second over the last closed bucket.
    pub fn events_per_second(&self) -> f64 {
        self.stats.events_per_second()
    }

    /// Agent response time p95 per second, milliseconds, oldest first (`None`: no agent turn
    /// in that second).
    pub fn p95_history(&self) -> &VecDeque<Option<u64>> {
        self.stats.p95_history()
    }

    /// Data time: the newest event timestamp seen.
    pub fn data_now(&self) -> Option<OffsetDateTime> {
        self.stats.data_now()
    }

    /// Live (not ended) conversations held.
    pub fn active(&self) -> usize {
        self.conversations.live()
    }

    /// Conversations held in all.
    pub fn held_conversations(&self) -> usize {
        self.conversations.len()
    }

    /// Conversations that ended in the minute before data time.
    pub fn ended_last_minute(&self) -> usize {
        self.stats.ended_last_minute()
    }

    /// Ended conversations per resolution since the view started ([`Resolution::ALL`] order).
    pub fn resolution_mix(&self) -> [(Resolution, u64); Resolution::ALL.len()] {
        self.stats.resolution_mix()
    }

    /// What the turns and decisions seen cost, in US dollars.
    pub fn cost_usd(&self) -> f64 {
        self.stats.cost_usd()
    }

    /// Interruptions seen (either side).
    pub fn interruptions(&self) -> u64 {
        self.stats.interruptions()
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
        let applied = self.conversations.apply(e, self.opts.max_entries);
        self.stats.record(e, applied);
        self.incidents.apply(e);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::tui::testdata::{Conv as C, T0, contact_center};
    use crate::tui::view::ViewState;
    use crate::types::Speaker;

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

    /// The list a fresh view shows of the data.
    fn ids(s: &mut State) -> Vec<String> {
        let mut view = ViewState::new();
        view.update(s);
        view.rows().iter().map(|id| id.to_string()).collect()
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

    // Issue 16: what a voice call's events say is kept per turn (the latency bar's parts, the
    // interruption, dead air, tokens and cost) and summed per conversation and in the header.
    #[test]
    fn a_voice_call_keeps_its_latency_parts_interruptions_and_cost() {
        use crate::tui::state::{LatencyBar, Part};
        use crate::types::TurnSpeaker;
        let events = crate::tui::testdata::voice_call(20, 200.0);
        let (before_end, end) = events.split_at(events.len() - 1);
        let mut s = fed(before_end.to_vec());
        let c = s.conversation("conv-0020").unwrap();
        assert_eq!((c.interruptions, c.problems, c.transfers), (1, 1, 1));
        assert_eq!((c.input_tokens, c.output_tokens), (380 + 812 + 1204, 12 + 64 + 96));
        assert!((c.cost_usd.unwrap() - (0.000064 + 0.00016 + 0.00024)).abs() < 1e-12);
        let turns: Vec<&EntryKind> =
            c.entries.iter().map(|e| &e.kind).filter(|k| matches!(k, EntryKind::Turn { .. })).collect();
        let EntryKind::Turn { latency: Some(greeting), .. } = turns[0] else { panic!("{:?}", turns[0]) };
        assert_eq!(greeting, &LatencyBar { parts: vec![(Part::Llm, 420.0), (Part::Tts, 230.0)], total_ms: 900.0, greeting: true });
        let EntryKind::Turn { latency: Some(bar), usage: Some(u), .. } = turns[2] else { panic!("{:?}", turns[2]) };
        assert_eq!(
            bar.parts,
            [(Part::Stt, 180.0), (Part::Eou, 320.0), (Part::Llm, 610.0), (Part::Tool, 240.0), (Part::Tts, 210.0)]
        );
        assert_eq!((bar.total_ms, bar.greeting, bar.rest_ms()), (1620.0, false, 60.0));
        assert_eq!((u.input_tokens, u.cost_usd), (Some(812), Some(0.00016)));
        let EntryKind::Turn { interruption: Some(i), .. } = turns[3] else { panic!("{:?}", turns[3]) };
        assert_eq!((i.by, i.overlap_ms), (TurnSpeaker::Customer, Some(600.0)));
        let EntryKind::Turn { dead_air_ms, .. } = turns[5] else { unreachable!() };
        assert_eq!(*dead_air_ms, Some(3100.0));
        // The end's sums replace the running ones (they cover turns this view never saw).
        s.push(end[0].clone());
        let c = s.conversation("conv-0020").unwrap();
        assert_eq!((c.cost_usd, c.input_tokens, c.output_tokens), (Some(0.000464), 2396, 172));
        assert_eq!(s.interruptions(), 1);
        assert!((s.cost_usd() - (0.000064 + 0.00016 + 0.00024)).abs() < 1e-12, "the end's sum is not counted again");
        // Parts that are not finite are left out; a part larger than the response widens it.
        let odd = crate::types::TurnLatency { stt_ms: Some(f64::NAN), llm_ttft_ms: Some(900.0), response_ms: Some(500.0), ..Default::default() };
        assert_eq!(LatencyBar::of(&odd, None), Some(LatencyBar { parts: vec![(Part::Llm, 900.0)], total_ms: 900.0, greeting: false }));
        assert_eq!(LatencyBar::of(&crate::types::TurnLatency { response_ms: Some(500.0), ..Default::default() }, None), None);
    }
}
