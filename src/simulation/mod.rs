//! Synthetic conversations through the real library: what `demo` and `simulate` run.
//!
//! A small contact center — a few tenants with their agents, voice/chat/SMS/email — where each
//! conversation is a script drawn from its own seeded random stream: a greeting, the customer's
//! problem, intent detection, a few exchanges (with tool calls), sometimes an error or a
//! compliance violation, and an ending: resolved, transferred, escalated, unresolved or
//! abandoned, with a rating. A discrete-event scheduler interleaves the conversations on a
//! virtual clock (arrivals at `rate` per second, at most `concurrency` at once), so the same
//! seed gives the same conversations, durations and outcomes whether the run is paced in real
//! time or goes as fast as it can.
//!
//! Timestamps are never in the future. Before a run, the schedule is played once without
//! recording anything to find when its last step falls; the virtual clock is then anchored so
//! that this last step is dated no later than the moment it is recorded: a run as fast as it
//! can ends about now, and a paced run at `speed` is anchored `(speed - 1) / speed` of its
//! virtual length in the past, so every event is dated before the wall clock at the moment it
//! is written. A run stopped early ends its open conversations at the wall clock, which is
//! after every event they have.

mod script;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use time::OffsetDateTime;

use crate::observability::{Conversation, Observability};
use crate::types::{DecisionType, Resolution};

pub use script::{Action, Step};

/// The metadata key that marks a conversation with the run that simulated it.
pub const RUN_METADATA_KEY: &str = "simulation_run";

/// How fast virtual time runs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pace {
    /// As fast as the library takes it; timestamps still follow the virtual clock, ending
    /// about now.
    Fast,
    /// `speed` virtual seconds per real second (1.0 is real time).
    Realtime {
        /// Virtual seconds per real second.
        speed: f64,
        /// Waits between a conversation's steps are cut to this (a live demo does not wait
        /// hours for an email reply); `None` keeps them.
        max_gap: Option<Duration>,
    },
}

/// What to simulate.
#[derive(Debug, Clone, PartialEq)]
pub struct SimConfig {
    /// Conversations to run.
    pub conversations: usize,
    /// Seed of every random choice.
    pub seed: u64,
    /// New conversations per (virtual) second.
    pub rate: f64,
    /// Most conversations in progress at once.
    pub concurrency: usize,
    /// Real-time pacing or as fast as possible.
    pub pace: Pace,
    /// Marks every conversation's metadata (`simulation_run`); a new id when `None`.
    pub run_id: Option<String>,
}

/// A simulation that cannot run; names the setting.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{setting}: {message}")]
pub struct SimConfigError {
    /// `rate`, `concurrency`, `speed`, …
    pub setting: &'static str,
    /// What is wrong.
    pub message: String,
}

impl SimConfig {
    /// Checks the settings (the engine's time arithmetic relies on these bounds).
    pub fn validate(&self) -> Result<(), SimConfigError> {
        let err = |setting, message: String| Err(SimConfigError { setting, message });
        if !(self.rate.is_finite() && (0.001..=1_000_000.0).contains(&self.rate)) {
            return err("rate", format!("{} is not between 0.001 and 1000000 conversations per second", self.rate));
        }
        if self.conversations as f64 / self.rate > 10.0 * 365.0 * 86400.0 {
            return err("rate", format!("{} conversations at {} per second would span more than 10 years", self.conversations, self.rate));
        }
        if self.concurrency == 0 {
            return err("concurrency", "must be at least 1".into());
        }
        if let Pace::Realtime { speed, .. } = self.pace {
            if !(speed.is_finite() && speed > 0.0) {
                return err("speed", format!("{speed} is not a positive number"));
            }
        }
        Ok(())
    }
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig { conversations: 200, seed: 7, rate: 2.0, concurrency: 50, pace: Pace::Fast, run_id: None }
    }
}

/// Where a run is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    /// Conversations started.
    pub started: usize,
    /// Conversations ended.
    pub ended: usize,
    /// Events recorded.
    pub events: u64,
    /// Conversations to run in all.
    pub total: usize,
}

/// What a run did.
#[derive(Debug, Clone, PartialEq)]
pub struct SimReport {
    /// The run id in every conversation's metadata.
    pub run_id: String,
    /// Conversations started.
    pub conversations: usize,
    /// Conversations ended.
    pub ended: usize,
    /// Events recorded (the library emits exactly these).
    pub events: u64,
    /// Events by type name.
    pub events_by_type: BTreeMap<&'static str, u64>,
    /// Ended conversations by resolution.
    pub by_resolution: BTreeMap<Resolution, usize>,
    /// Real time taken.
    pub elapsed: Duration,
    /// True when stopped before the end.
    pub interrupted: bool,
}

struct Active {
    conv: Option<Conversation>,
    /// An error happened; the next turn's HTTP request fails.
    failing: bool,
}

/// A conversation's remaining steps on the schedule.
struct Planned {
    steps: VecDeque<Step>,
    start_ms: u64,
}

/// The discrete-event schedule: arrivals (exponential inter-arrival times at `rate`, waiting
/// for a free slot) and each conversation's steps at their offsets, in virtual milliseconds.
/// Deterministic for a config and run id, so it can be played once to measure it and again to
/// run it.
struct Schedule<'a> {
    config: &'a SimConfig,
    run_id: &'a str,
    arrivals: ChaCha8Rng,
    next_arrival_ms: u64,
    launched: usize,
    slots: Vec<Option<Planned>>,
    free_slots: Vec<usize>,
    queue: BinaryHeap<Reverse<(u64, u64, usize)>>,
    seq: u64,
    active: usize,
    now_ms: u64,
}

impl<'a> Schedule<'a> {
    fn new(config: &'a SimConfig, run_id: &'a str) -> Schedule<'a> {
        Schedule {
            config,
            run_id,
            arrivals: ChaCha8Rng::seed_from_u64(config.seed),
            next_arrival_ms: 0,
            launched: 0,
            slots: Vec::new(),
            free_slots: Vec::new(),
            queue: BinaryHeap::new(),
            seq: 0,
            active: 0,
            now_ms: 0,
        }
    }

    /// The next step: when (virtual ms), which conversation slot, and what; `None` when the
    /// run is over. Arrivals are handled on the way.
    fn next(&mut self) -> Option<(u64, usize, Step)> {
        loop {
            let can_launch = self.launched < self.config.conversations && self.active < self.config.concurrency;
            let next_step = self.queue.peek().map(|Reverse((due, _, _))| *due);
            // Arrivals wait for a free slot; then they start no earlier than now.
            let arrival = can_launch.then(|| self.next_arrival_ms.max(self.now_ms));
            let (due, is_arrival) = match (arrival, next_step) {
                (Some(a), Some(s)) if a <= s => (a, true),
                (Some(a), None) => (a, true),
                (_, Some(s)) => (s, false),
                (None, None) => return None,
            };
            self.now_ms = due;
            if is_arrival {
                self.arrive(due);
                continue;
            }
            let Reverse((_, _, slot)) = self.queue.pop().expect("peeked");
            let planned = self.slots[slot].as_mut().expect("scheduled slot is active");
            let step = planned.steps.pop_front().expect("scheduled conversation has a step");
            if let Some(next) = planned.steps.front() {
                self.queue.push(Reverse((planned.start_ms + next.offset_ms, self.seq, slot)));
                self.seq += 1;
            } else {
                self.slots[slot] = None;
                self.free_slots.push(slot);
                self.active -= 1;
            }
            return Some((due, slot, step));
        }
    }

    fn arrive(&mut self, due: u64) {
        let index = self.launched;
        self.launched += 1;
        // Exponential inter-arrival times.
        let u: f64 = self.arrivals.random_range(f64::EPSILON..1.0);
        // Float-to-int casts saturate; the sum cannot overflow within validated bounds.
        self.next_arrival_ms = due.saturating_add((-u.ln() / self.config.rate * 1000.0) as u64);
        let mut steps = script::generate(self.config.seed, index as u64, self.run_id);
        if let Pace::Realtime { max_gap: Some(max_gap), .. } = self.config.pace {
            compress_gaps(&mut steps, max_gap.as_millis() as u64);
        }
        let slot = self.free_slots.pop().unwrap_or_else(|| {
            self.slots.push(None);
            self.slots.len() - 1
        });
        self.slots[slot] = Some(Planned { steps: steps.into(), start_ms: due });
        self.active += 1;
        self.queue.push(Reverse((due, self.seq, slot)));
        self.seq += 1;
    }
}

/// Cuts every wait between consecutive steps to `max_gap_ms`.
fn compress_gaps(steps: &mut [Step], max_gap_ms: u64) {
    let mut shift = 0;
    let mut previous = 0;
    for step in steps {
        let gap = step.offset_ms - previous;
        previous = step.offset_ms;
        shift += gap.saturating_sub(max_gap_ms);
        step.offset_ms -= shift;
    }
}

/// When the schedule's last step falls (virtual ms), played without recording anything.
fn virtual_length_ms(config: &SimConfig, run_id: &str) -> u64 {
    let mut schedule = Schedule::new(config, run_id);
    let mut last = 0;
    while let Some((due, _, _)) = schedule.next() {
        last = due;
    }
    last
}

/// Runs a simulation through `obs`. `progress` is called after every step (cheap to ignore);
/// setting `stop` ends the run early (conversations in progress end as abandoned).
///
/// Besides the conversations, it records the HTTP requests of the simulated orchestrator's
/// API through [`Observability::record_http_request`]: `POST /v1/conversations` for a start,
/// `POST /v1/conversations/{id}/turns` for each turn (503 when the turn hit an error),
/// `POST /v1/conversations/{id}/end` for an end.
pub fn run(
    obs: &Observability,
    config: &SimConfig,
    stop: &AtomicBool,
    mut progress: impl FnMut(Progress),
) -> Result<SimReport, SimConfigError> {
    config.validate()?;
    let run_id = config.run_id.clone().unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    // Anchor the virtual clock so that nothing is dated in the future (see the module docs).
    let length = time::Duration::milliseconds(i64::try_from(virtual_length_ms(config, &run_id)).unwrap_or(i64::MAX));
    let started = Instant::now();
    let now = OffsetDateTime::now_utc();
    let base = match config.pace {
        Pace::Fast => now - length,
        Pace::Realtime { speed, .. } if speed > 1.0 => now - length * ((speed - 1.0) / speed),
        Pace::Realtime { .. } => now,
    };
    let mut schedule = Schedule::new(config, &run_id);
    let mut slots: Vec<Option<Active>> = Vec::new();
    let mut report = SimReport {
        run_id: run_id.clone(),
        conversations: 0,
        ended: 0,
        events: 0,
        events_by_type: BTreeMap::new(),
        by_resolution: BTreeMap::new(),
        elapsed: Duration::ZERO,
        interrupted: false,
    };

    loop {
        if stop.load(Ordering::Relaxed) {
            report.interrupted = true;
            break;
        }
        let Some((due, slot, step)) = schedule.next() else { break };
        if let Pace::Realtime { speed, .. } = config.pace {
            let target = Duration::from_secs_f64(due as f64 / 1000.0 / speed.max(1e-6));
            while let Some(wait) = target.checked_sub(started.elapsed()) {
                if stop.load(Ordering::Relaxed) || wait.is_zero() {
                    break;
                }
                std::thread::sleep(wait.min(Duration::from_millis(50)));
            }
            if stop.load(Ordering::Relaxed) {
                report.interrupted = true;
                break;
            }
        }
        if slots.len() <= slot {
            slots.resize_with(slot + 1, || None);
        }
        let entry = slots[slot].get_or_insert_with(|| Active { conv: None, failing: false });
        let at = base.saturating_add(time::Duration::milliseconds(i64::try_from(due).unwrap_or(i64::MAX)));
        if perform(obs, entry, step.action, at, &mut report) {
            slots[slot] = None;
        }
        progress(Progress { started: report.conversations, ended: report.ended, events: report.events, total: config.conversations });
    }
    // Stopped early: what is still open ends as abandoned (at the wall clock, after all its
    // events) when its handle drops.
    for entry in slots.iter_mut().flatten() {
        if entry.conv.take().is_some() {
            report.events += 1;
            *report.events_by_type.entry("conversation.ended").or_default() += 1;
            *report.by_resolution.entry(Resolution::Abandoned).or_default() += 1;
            report.ended += 1;
        }
    }
    report.elapsed = started.elapsed();
    Ok(report)
}

fn count(report: &mut SimReport, event_type: &'static str) {
    report.events += 1;
    *report.events_by_type.entry(event_type).or_default() += 1;
}

/// Carries out one step; true when the conversation ended.
fn perform(obs: &Observability, entry: &mut Active, action: Action, at: OffsetDateTime, report: &mut SimReport) -> bool {
    match action {
        Action::Start(start) => {
            obs.record_http_request("POST", "/v1/conversations", 201, Duration::from_millis(35));
            entry.conv = Some(obs.start_conversation(start.at(at)));
            report.conversations += 1;
            count(report, "conversation.started");
        }
        Action::Turn(interaction) => {
            let speaker = interaction.speaker;
            let took = interaction.latency.and_then(|l| l.response_ms).unwrap_or(120.0);
            let status = if std::mem::take(&mut entry.failing) { 503 } else { 200 };
            obs.record_http_request("POST", "/v1/conversations/{id}/turns", status, Duration::from_secs_f64(took / 1000.0));
            entry.conv.as_ref().expect("started").track_interaction(interaction.at(at));
            count(report, match speaker {
                crate::types::TurnSpeaker::Agent => "interaction.agent",
                crate::types::TurnSpeaker::Customer => "interaction.customer",
            });
        }
        Action::Decide(decision) => {
            let transfer = decision.decision_type == DecisionType::Transfer;
            entry.conv.as_ref().expect("started").track_decision(decision.at(at));
            count(report, "decision.made");
            if transfer {
                count(report, "transfer.initiated");
            }
        }
        Action::Error { error_type, message } => {
            entry.failing = true; // the next turn's request fails
            entry.conv.as_ref().expect("started").track_error_at(error_type, message, Some(at));
            count(report, "error.occurred");
        }
        Action::Violation { policy, severity, description } => {
            entry.conv.as_ref().expect("started").track_compliance_violation_at(policy, severity, description, Some(at));
            count(report, "compliance.violation");
        }
        Action::End(end) => {
            obs.record_http_request("POST", "/v1/conversations/{id}/end", 200, Duration::from_millis(20));
            let resolution = end.resolution;
            entry.conv.take().expect("started").end(end.at(at));
            count(report, "conversation.ended");
            report.ended += 1;
            *report.by_resolution.entry(resolution).or_default() += 1;
            return true;
        }
    }
    false
}
