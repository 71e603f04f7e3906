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

pub mod scenario;
mod script;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use time::OffsetDateTime;

use crate::observability::{Conversation, Observability};
use crate::types::{ConversationEnd, DecisionType, Resolution, Usage};

pub use scenario::{Scenario, ScenarioError};
pub use script::{Action, Hit, Model, Step};

/// The metadata key that marks a conversation with the run that simulated it.
pub const RUN_METADATA_KEY: &str = "simulation_run";

/// The longest pause within a conversation of a [`Pace::Fast`] run: an email thread's replies
/// come within 15 minutes, so a run placed to end now starts within the last two hours or so.
pub const FAST_MAX_GAP: Duration = Duration::from_secs(15 * 60);

/// How long after the last arrival a [`Pace::Fast`] run's conversations may go on: the ones
/// that would run longer (email threads that start in the last hour) have their pauses
/// shortened to end by then. Without it the data's last hour would hold no new conversations,
/// which `query anomalies` rightly reports as a drop in volume. Only when no arrival waits for
/// a slot (a scenario's run, unless `--concurrency` limits it): then the last arrival is known.
pub const FAST_TAIL: Duration = Duration::from_secs(5 * 60);

/// How a run's script time maps to the wall clock.
///
/// Whatever the pace, no event is ever dated after the wall clock at the moment it is recorded,
/// and no event of a conversation is dated after its end.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pace {
    /// As fast as the library takes it. The whole schedule is laid out first and placed so its
    /// last event is at the moment the run starts: timestamps keep the scripts' spacing (pauses
    /// capped at [`FAST_MAX_GAP`], and shortened further for conversations that would go on
    /// more than [`FAST_TAIL`] past the last arrival) and all lie in the past.
    Fast,
    /// Each event is recorded when the wall clock reaches its time, and dated then: the scripts'
    /// time is compressed `speed` times (at 10, a 60 s call takes 6 real seconds and is recorded
    /// as lasting 6 s, so the live view, the event log, `query` and ClickHouse agree).
    Realtime {
        /// Script seconds per real second (1.0 is real time).
        speed: f64,
        /// The longest pause between two steps of one conversation, in script time; longer
        /// pauses (an email thread's hours) are shortened to it. `None` keeps them.
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
            return err(
                "rate",
                format!(
                    "{} conversations at {} per second would span more than 10 years",
                    self.conversations, self.rate
                ),
            );
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
    /// Personal data the customers said, by kind (`card_number`, `email`, `phone`,
    /// `date_of_birth`): what the privacy policy should have redacted.
    pub planted: BTreeMap<&'static str, u64>,
    /// The values themselves, as (kind, value), in the order they were said.
    pub planted_values: Vec<(&'static str, String)>,
    /// What the generator sent as usage (turns and LLM calls), summed, with the cost the
    /// price table gives it.
    pub usage: UsageTotals,
    /// Each incident of the scenario: its window and the conversations it touched.
    pub incidents: Vec<IncidentReport>,
    /// When the first conversation started and when the schedule ends (as placed at the start
    /// of the run).
    pub window: (OffsetDateTime, OffsetDateTime),
}

/// What the generator sent as usage, summed over the steps it performed.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct UsageTotals {
    /// LLM calls (agent answers and tool-choosing calls).
    pub llm_calls: u64,
    /// Input tokens (cached ones included).
    pub input_tokens: u64,
    /// Output tokens.
    pub output_tokens: u64,
    /// Cached input tokens.
    pub cached_tokens: u64,
    /// Seconds of speech-to-text.
    pub stt_seconds: f64,
    /// Characters of text-to-speech.
    pub tts_characters: u64,
    /// Seconds of telephony.
    pub telephony_seconds: f64,
    /// US dollars, priced with the effective price table.
    pub cost_usd: f64,
    /// Voice answers the customer barged in on.
    pub barge_ins: u64,
    /// Voice turns recorded (agent and customer).
    pub voice_turns: u64,
}

/// One incident of a run's scenario: when it was, and what it did.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct IncidentReport {
    /// Its name in the scenario.
    pub name: String,
    /// The tenant it is limited to.
    pub tenant: Option<String>,
    /// The agent it is limited to.
    pub agent: Option<String>,
    /// Its start, as the run dated it.
    #[serde(with = "time::serde::rfc3339")]
    pub start: OffsetDateTime,
    /// Its end.
    #[serde(with = "time::serde::rfc3339")]
    pub end: OffsetDateTime,
    /// Conversations of its tenant and agent that started or had an agent answer inside the
    /// window.
    pub conversations: usize,
    /// Their ids.
    pub conversation_ids: Vec<String>,
    /// Voice answers whose latency parts it multiplied.
    pub turns_slowed: u64,
    /// Errors it caused.
    pub errors: u64,
    /// Conversations whose outcome it chose.
    pub resolutions_forced: u64,
    /// Conversations whose intent it chose.
    pub intents_shifted: u64,
}

struct Active {
    conv: Option<Conversation>,
    /// An error happened; the next turn's HTTP request fails.
    failing: bool,
    /// When its latest event was dated.
    last_at: OffsetDateTime,
}

/// One conversation's remaining script in the scheduler.
struct Slot {
    steps: VecDeque<Step>,
    start_ms: u64,
    /// The incidents the conversation ran into; handed over with its first step.
    hits: Option<BTreeMap<usize, Hit>>,
}

/// Walks the run's schedule in time order (arrivals at `rate`, at most `concurrency`
/// conversations at once), calling `on_step(due_ms, slot, step)`; a slot is reused once its
/// conversation ended. `on_step` returns false to stop. True when the walk was stopped early.
fn walk(
    config: &SimConfig,
    model: &Model,
    run_id: &str,
    stop: &AtomicBool,
    mut on_step: impl FnMut(u64, usize, Step, Option<BTreeMap<usize, Hit>>) -> bool,
) -> bool {
    let max_gap = match config.pace {
        Pace::Realtime { max_gap, .. } => max_gap,
        Pace::Fast => Some(FAST_MAX_GAP),
    };
    let max_gap_ms = max_gap.map(|gap| u64::try_from(gap.as_millis()).unwrap_or(u64::MAX).max(1));
    let mut arrivals = ChaCha8Rng::seed_from_u64(config.seed);
    // Fast, with no arrival waiting for a slot: when the last conversation arrives (the same
    // draws as the loop below), and so when every conversation should have ended. When
    // arrivals can wait, their times are not known ahead, and nothing is shortened.
    let end_by_ms = (matches!(config.pace, Pace::Fast) && config.concurrency >= config.conversations).then(|| {
        let mut draws = arrivals.clone();
        let last = (1..config.conversations).fold(0u64, |at, _| {
            at.saturating_add((-draws.random_range(f64::EPSILON..1.0).ln() / config.rate * 1000.0) as u64)
        });
        last.saturating_add(FAST_TAIL.as_millis() as u64)
    });
    let mut next_arrival_ms: u64 = 0;
    let mut launched = 0usize;
    let mut slots: Vec<Option<Slot>> = Vec::new();
    let mut free_slots: Vec<usize> = Vec::new();
    let mut queue: BinaryHeap<Reverse<(u64, u64, usize)>> = BinaryHeap::new();
    let mut seq = 0u64;
    let mut active = 0usize;
    let mut now_ms: u64 = 0;
    loop {
        if stop.load(Ordering::Relaxed) {
            return true;
        }
        let can_launch = launched < config.conversations && active < config.concurrency;
        let next_step = queue.peek().map(|Reverse((due, _, _))| *due);
        // Arrivals wait for a free slot; then they start no earlier than now.
        let arrival = can_launch.then(|| next_arrival_ms.max(now_ms));
        let (due, is_arrival) = match (arrival, next_step) {
            (Some(a), Some(s)) if a <= s => (a, true),
            (Some(a), None) => (a, true),
            (_, Some(s)) => (s, false),
            (None, None) => return false,
        };
        now_ms = due;
        if is_arrival {
            let index = launched;
            launched += 1;
            // Exponential inter-arrival times.
            let u: f64 = arrivals.random_range(f64::EPSILON..1.0);
            // Float-to-int casts saturate; the sum cannot overflow within validated bounds.
            next_arrival_ms = due.saturating_add((-u.ln() / config.rate * 1000.0) as u64);
            let script = script::generate(model, config.seed, index as u64, run_id, due, max_gap_ms);
            let mut steps = script.steps;
            if let Some(cap) = max_gap_ms {
                script::cap_gaps(&mut steps, cap);
            }
            if let (Some(end_by), Some(span)) = (end_by_ms, steps.last().map(|s| s.offset_ms)) {
                let room = end_by.saturating_sub(due);
                if span > room {
                    let cap = (room / steps.len() as u64).max(1000);
                    script::cap_gaps(&mut steps, cap);
                }
            }
            let slot = free_slots.pop().unwrap_or_else(|| {
                slots.push(None);
                slots.len() - 1
            });
            slots[slot] = Some(Slot { steps: steps.into(), start_ms: due, hits: Some(script.hits) });
            active += 1;
            queue.push(Reverse((due, seq, slot)));
            seq += 1;
            continue;
        }
        let Reverse((_, _, slot)) = queue.pop().expect("peeked");
        let entry = slots[slot].as_mut().expect("scheduled slot is active");
        let step = entry.steps.pop_front().expect("scheduled conversation has a step");
        let hits = entry.hits.take();
        match entry.steps.front() {
            Some(next) => {
                queue.push(Reverse((entry.start_ms + next.offset_ms, seq, slot)));
                seq += 1;
            }
            None => {
                slots[slot] = None;
                free_slots.push(slot);
                active -= 1;
            }
        }
        if !on_step(due, slot, step, hits) {
            return true;
        }
    }
}

/// How long the run's schedule is, in script time (from the first arrival to the last end).
/// The same for every pace except for a `max_gap`; a paced run takes this divided by its speed.
pub fn schedule_length(config: &SimConfig) -> Duration {
    schedule_length_of(config, &Model::new(&Scenario::built_in()))
}

/// [`schedule_length`] of a scenario's run.
pub fn schedule_length_of(config: &SimConfig, model: &Model) -> Duration {
    let never = AtomicBool::new(false);
    let mut last = 0u64;
    walk(config, model, "", &never, |due, _, _, _| {
        last = due;
        true
    });
    Duration::from_millis(last)
}

/// Runs a simulation through `obs`. `progress` is called after every step (cheap to ignore);
/// setting `stop` ends the run early: conversations in progress end as abandoned, dated at the
/// moment they are ended (never before their own events).
///
/// Besides the conversations, it records the HTTP requests of the simulated orchestrator's
/// API through [`Observability::record_http_request`]: `POST /v1/conversations` for a start,
/// `POST /v1/conversations/{id}/turns` for each turn (503 when the turn hit an error),
/// `POST /v1/conversations/{id}/end` for an end.
pub fn run(
    obs: &Observability,
    config: &SimConfig,
    stop: &AtomicBool,
    progress: impl FnMut(Progress),
) -> Result<SimReport, SimConfigError> {
    run_scenario(obs, config, &Scenario::built_in(), stop, progress)
}

/// The number of conversations that arrive within `duration` at `rate` per second with
/// `seed`: a [`run_scenario`] with that many conversations at that rate has its arrivals
/// inside the duration (the same draws).
pub fn conversations_in(duration: Duration, rate: f64, seed: u64) -> usize {
    let mut arrivals = ChaCha8Rng::seed_from_u64(seed);
    let window_ms = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
    let (mut at, mut n) = (0u64, 0usize);
    while at <= window_ms {
        n += 1;
        if !(rate.is_finite() && rate > 0.0) {
            break;
        }
        let u: f64 = arrivals.random_range(f64::EPSILON..1.0);
        at = at.saturating_add((-u.ln() / rate * 1000.0) as u64);
    }
    n
}

/// [`run`] with the conversations drawn from `scenario` (tenants, channels, intents,
/// latency, models, incidents). `config` says how many, how fast and with which seed (see
/// [`conversations_in`] and [`Scenario::rate`] for the scenario's own); incidents are placed
/// by the script clock from the first arrival.
pub fn run_scenario(
    obs: &Observability,
    config: &SimConfig,
    scenario: &Scenario,
    stop: &AtomicBool,
    mut progress: impl FnMut(Progress),
) -> Result<SimReport, SimConfigError> {
    config.validate()?;
    let model = Model::new(scenario);
    let prices = crate::pricing::Prices::load(obs.config().usage.prices.as_deref()).unwrap_or_default();
    let started = Instant::now();
    let run_id = config.run_id.clone().unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    // Fast: the schedule ends at the moment the run starts. Paced: it starts then.
    let (base, speed, length) = match config.pace {
        Pace::Fast => {
            let length = schedule_length_of(config, &model);
            (OffsetDateTime::now_utc() - length, None, length)
        }
        Pace::Realtime { speed, .. } => {
            (OffsetDateTime::now_utc(), Some(speed), schedule_length_of(config, &model).div_f64(speed))
        }
    };
    let date = |ms: u64| match speed {
        Some(speed) => base.saturating_add(time::Duration::saturating_seconds_f64(ms as f64 / 1000.0 / speed)),
        None => base.saturating_add(time::Duration::milliseconds(i64::try_from(ms).unwrap_or(i64::MAX))),
    };
    let incidents = model
        .incidents
        .iter()
        .zip(&scenario.incidents)
        .map(|(m, s)| IncidentReport {
            name: s.name.clone(),
            tenant: s.tenant.clone(),
            agent: s.agent.clone(),
            start: date(m.start_ms),
            end: date(m.end_ms),
            conversations: 0,
            conversation_ids: Vec::new(),
            turns_slowed: 0,
            errors: 0,
            resolutions_forced: 0,
            intents_shifted: 0,
        })
        .collect();
    let mut report = SimReport {
        run_id: run_id.clone(),
        conversations: 0,
        ended: 0,
        events: 0,
        events_by_type: BTreeMap::new(),
        by_resolution: BTreeMap::new(),
        elapsed: Duration::ZERO,
        interrupted: false,
        planted: BTreeMap::new(),
        planted_values: Vec::new(),
        usage: UsageTotals::default(),
        incidents,
        window: (base, base + length),
    };
    let mut open: Vec<Option<Active>> = Vec::new();
    report.interrupted = walk(config, &model, &run_id, stop, |due, slot, step, hits| {
        let scheduled = match speed {
            Some(speed) => {
                let target = Duration::from_secs_f64(due as f64 / 1000.0 / speed);
                while let Some(wait) = target.checked_sub(started.elapsed()) {
                    if stop.load(Ordering::Relaxed) {
                        return false;
                    }
                    if wait.is_zero() {
                        break;
                    }
                    std::thread::sleep(wait.min(Duration::from_millis(50)));
                }
                base.saturating_add(time::Duration::saturating_seconds_f64(target.as_secs_f64()))
            }
            None => base.saturating_add(time::Duration::milliseconds(i64::try_from(due).unwrap_or(i64::MAX))),
        };
        // Never in the future, even when the clock was adjusted under a run.
        let at = scheduled.min(OffsetDateTime::now_utc());
        if open.len() <= slot {
            open.resize_with(slot + 1, || None);
        }
        let entry = open[slot].get_or_insert_with(|| Active { conv: None, failing: false, last_at: at });
        let at = at.max(entry.last_at);
        entry.last_at = at;
        for (kind, value) in step.planted {
            *report.planted.entry(kind).or_default() += 1;
            report.planted_values.push((kind, value));
        }
        let started = matches!(step.action, Action::Start(_));
        let done = perform(obs, entry, step.action, at, &mut report, &prices);
        if started {
            if let (Some(conv), Some(hits)) = (entry.conv.as_ref(), hits) {
                for (i, hit) in hits {
                    let incident = &mut report.incidents[i];
                    incident.conversations += 1;
                    incident.conversation_ids.push(conv.id().to_string());
                    incident.turns_slowed += u64::from(hit.turns);
                    incident.errors += u64::from(hit.errors);
                    incident.resolutions_forced += u64::from(hit.resolution_forced);
                    incident.intents_shifted += u64::from(hit.intent_shifted);
                }
            }
        }
        if done {
            open[slot] = None;
        }
        progress(Progress {
            started: report.conversations,
            ended: report.ended,
            events: report.events,
            total: config.conversations,
        });
        true
    });
    // Stopped early: what is still open ends as abandoned, now (after its own events).
    for entry in open.iter_mut().flatten() {
        if let Some(conv) = entry.conv.take() {
            let at = OffsetDateTime::now_utc().max(entry.last_at);
            obs.record_http_request("POST", "/v1/conversations/{id}/end", 200, Duration::from_millis(20));
            conv.end(ConversationEnd::new(Resolution::Abandoned).tag("interrupted").at(at));
            count(&mut report, "conversation.ended");
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
fn perform(
    obs: &Observability,
    entry: &mut Active,
    action: Action,
    at: OffsetDateTime,
    report: &mut SimReport,
    prices: &crate::pricing::Prices,
) -> bool {
    let mut add = |usage: &Usage, llm: bool| {
        let t = &mut report.usage;
        t.llm_calls += u64::from(llm);
        t.input_tokens += usage.input_tokens.unwrap_or(0);
        t.output_tokens += usage.output_tokens.unwrap_or(0);
        t.cached_tokens += usage.cached_tokens.unwrap_or(0);
        t.stt_seconds += usage.stt_seconds.unwrap_or(0.0);
        t.tts_characters += usage.tts_characters.unwrap_or(0);
        t.telephony_seconds += usage.telephony_seconds.unwrap_or(0.0);
        t.cost_usd += prices.price(usage).total().unwrap_or(0.0);
    };
    match &action {
        Action::Turn(turn) => {
            if let Some(usage) = &turn.usage {
                add(usage, usage.model.is_some());
            }
            if turn.duration_ms.is_some() {
                report.usage.voice_turns += 1;
            }
            if turn.interruption.is_some() {
                report.usage.barge_ins += 1;
            }
        }
        Action::Decide(decision) => {
            if let Some(usage) = &decision.usage {
                add(usage, usage.model.is_some());
            }
        }
        _ => {}
    }
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
            obs.record_http_request(
                "POST",
                "/v1/conversations/{id}/turns",
                status,
                Duration::from_secs_f64(took / 1000.0),
            );
            entry.conv.as_ref().expect("started").track_interaction(interaction.at(at));
            count(
                report,
                match speaker {
                    crate::types::TurnSpeaker::Agent => "interaction.agent",
                    crate::types::TurnSpeaker::Customer => "interaction.customer",
                },
            );
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
            entry.conv.as_ref().expect("started").track_error_at(&error_type, message, Some(at));
            count(report, "error.occurred");
        }
        Action::Violation { policy, severity, description } => {
            entry.conv.as_ref().expect("started").track_compliance_violation_at(
                &policy,
                severity,
                description,
                Some(at),
            );
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
