//! The header's figures: events in all and per second, the agent response-time p95 per
//! second (the sparkline), data time, the ends of the last minute, the resolution mix, and
//! what the turns seen cost and how often someone was interrupted.
//! Updated by [`Stats::record`] (an applied event) and [`Stats::tick`] (wall time); read
//! through `&self`.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use time::OffsetDateTime;

use super::conversations::Applied;
use crate::types::{Event, EventKind, Resolution};

/// Samples of the response-time sparkline kept.
pub const SPARK_POINTS: usize = 120;

/// The header's figures.
#[derive(Debug, Clone, PartialEq)]
pub struct Stats {
    events_total: u64,
    bucket_start: Option<Instant>,
    bucket_events: u64,
    bucket_responses: Vec<f64>,
    events_per_second: f64,
    p95_history: VecDeque<Option<u64>>,
    data_now: Option<OffsetDateTime>,
    recent_ends: VecDeque<OffsetDateTime>,
    resolutions: [u64; Resolution::ALL.len()],
    cost_usd: f64,
    interruptions: u64,
}

impl Default for Stats {
    fn default() -> Self {
        Stats::new()
    }
}

impl Stats {
    /// Nothing seen yet.
    pub fn new() -> Stats {
        Stats {
            events_total: 0,
            bucket_start: None,
            bucket_events: 0,
            bucket_responses: Vec::new(),
            events_per_second: 0.0,
            p95_history: VecDeque::with_capacity(SPARK_POINTS),
            data_now: None,
            recent_ends: VecDeque::new(),
            resolutions: [0; Resolution::ALL.len()],
            cost_usd: 0.0,
            interruptions: 0,
        }
    }

    /// One event applied to the conversations, and what it changed there.
    pub fn record(&mut self, e: &Event, applied: Applied) {
        self.events_total += 1;
        self.bucket_events += 1;
        if self.data_now.is_none_or(|t| e.timestamp > t) {
            self.data_now = Some(e.timestamp);
        }
        if let EventKind::AgentTurn { response_time_seconds: Some(r), .. } = &e.kind {
            self.bucket_responses.push(*r);
        }
        // Turns and decisions carry their own cost; the end's is their sum (not counted again).
        if !matches!(e.kind, EventKind::ConversationEnded { .. }) {
            self.cost_usd += e.kind.usage().and_then(|u| u.cost_usd).unwrap_or(0.0);
        }
        let barge_in = e.kind.latency().is_some_and(|l| l.interrupted);
        if e.kind.turn_marks().is_some_and(|m| m.interruption.is_some()) || barge_in {
            self.interruptions += 1;
        }
        if let Some(resolution) = applied.ended {
            let i = Resolution::ALL.iter().position(|r| *r == resolution).unwrap_or(0);
            self.resolutions[i] += 1;
            self.recent_ends.push_back(e.timestamp);
        }
    }

    /// The passing of wall time: closes the events-per-second bucket and the sparkline point
    /// once a second has passed, and forgets ends more than a minute before data time.
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
        if let Some(now) = self.data_now {
            let minute_ago = now - time::Duration::MINUTE;
            while self.recent_ends.front().is_some_and(|t| *t <= minute_ago) {
                self.recent_ends.pop_front();
            }
        }
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

    /// Conversations that ended in the minute before data time.
    pub fn ended_last_minute(&self) -> usize {
        let Some(now) = self.data_now else { return 0 };
        let from = now - time::Duration::MINUTE;
        self.recent_ends.iter().filter(|t| **t > from).count()
    }

    /// What the turns and decisions seen cost, in US dollars.
    pub fn cost_usd(&self) -> f64 {
        self.cost_usd
    }

    /// Interruptions seen (either side).
    pub fn interruptions(&self) -> u64 {
        self.interruptions
    }

    /// Ended conversations per resolution since the view started ([`Resolution::ALL`] order).
    pub fn resolution_mix(&self) -> [(Resolution, u64); Resolution::ALL.len()] {
        std::array::from_fn(|i| (Resolution::ALL[i], self.resolutions[i]))
    }
}
