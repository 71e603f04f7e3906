//! How well detection finds the incidents a scenario injected: the ground truth is the
//! generator's own report ([`SimReport::incidents`]), not the sinks.
//!
//! **Scoring** (issue 17). Each injected incident becomes one *case* per tenant it touched (an
//! incident without a tenant or agent touches every tenant of the scenario; one limited to an
//! agent, that agent's tenant). A case is **found** when a detected incident names its tenant
//! and holds a signal of one of the case's families (an injected latency effect: `latency`;
//! errors: `errors`; a forced resolution: `resolution`; an intent mix: `intents`) whose window
//! overlaps the injected window. Recall is found cases over cases.
//!
//! A detected incident is **false** when it overlaps no injected window of its tenant. On a
//! clean scenario every detected incident is false.
//!
//! [`trial`] runs one seed of a scenario end to end the way a user would: the library writes
//! the simulated traffic to a fresh event log, and the local store's
//! [`detection_series`](crate::store::Store::detection_series) and [`detect`](super::detect)
//! find the incidents, as `query anomalies` does.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use serde::Serialize;
use time::OffsetDateTime;

use super::{Family, Incident, Params, Range};
use crate::simulation::scenario::{Effect, Scenario};
use crate::simulation::{IncidentReport, Pace, SimConfig, SimReport};

/// One injected incident as seen by one tenant.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Case {
    /// The incident's name in the scenario.
    pub name: String,
    /// The tenant.
    pub tenant_id: String,
    /// The agent the incident is limited to.
    pub agent_id: Option<String>,
    /// The families of signal its effect should move.
    pub families: Vec<Family>,
    /// The metrics it injects, as prefixes (`latency.llm_ttft.`, `errors.stt_unavailable.`,
    /// `resolution.`, `intents.`): what a right suspected cause names.
    pub causes: Vec<String>,
    /// Its window.
    #[serde(with = "time::serde::rfc3339")]
    pub start: OffsetDateTime,
    /// Its end.
    #[serde(with = "time::serde::rfc3339")]
    pub end: OffsetDateTime,
}

/// Whether a case was found, and how well.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Outcome {
    /// The case.
    pub case: Case,
    /// A detected incident names its tenant with a signal of its family in its window.
    pub found: bool,
    /// That incident's suspected cause is one of the injected metrics (the part or error
    /// type itself, not a family sibling such as the response time for a slow LLM).
    pub cause_right: bool,
    /// For a case limited to an agent: a matching signal names that agent.
    pub agent_named: bool,
    /// Detected incidents that match it (more than one: the incident was reported in pieces).
    pub incidents: usize,
    /// From the injected start to when the earliest matching signal could first be reported:
    /// the end of its [`Params::min_windows`]-th flagged window.
    pub delay_minutes: Option<f64>,
}

/// A scenario run's score.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Score {
    /// Every case, found or not.
    pub outcomes: Vec<Outcome>,
    /// Detected incidents that overlap no injected window of their tenant.
    pub false_incidents: Vec<Incident>,
}

impl Score {
    /// Found cases.
    pub fn found(&self) -> usize {
        self.outcomes.iter().filter(|o| o.found).count()
    }

    /// Found cases over cases (1 when there are none).
    pub fn recall(&self) -> f64 {
        if self.outcomes.is_empty() { 1.0 } else { self.found() as f64 / self.outcomes.len() as f64 }
    }
}

/// The families of signal an effect moves.
pub fn families(effect: &Effect) -> Vec<Family> {
    let mut f = BTreeSet::new();
    if !effect.latency_ms.is_empty() {
        f.insert(Family::Latency);
    }
    if effect.errors.is_some() {
        f.insert(Family::Errors);
    }
    if !effect.resolution.is_empty() {
        f.insert(Family::Resolution);
    }
    if !effect.intents.is_empty() {
        f.insert(Family::Intents);
    }
    f.into_iter().collect()
}

/// The metrics an effect injects, as prefixes (see [`Case::causes`]).
pub fn causes(effect: &Effect) -> Vec<String> {
    let mut out: Vec<String> = effect.latency_ms.keys().map(|k| format!("latency.{}.", k.0.as_str())).collect();
    out.extend(effect.errors.iter().map(|e| format!("errors.{}.", e.error_type)));
    if !effect.resolution.is_empty() {
        out.push("resolution.".into());
    }
    if !effect.intents.is_empty() {
        out.push("intents.".into());
    }
    out
}

/// The cases of a run: its incidents (as the generator dated them) per tenant they touched.
pub fn cases(scenario: &Scenario, incidents: &[IncidentReport]) -> Vec<Case> {
    let mut out = Vec::new();
    for (spec, report) in scenario.incidents.iter().zip(incidents) {
        let tenants: Vec<&str> = match (&report.tenant, &report.agent) {
            (Some(t), _) => vec![t.as_str()],
            (None, Some(agent)) => {
                scenario.tenants.iter().filter(|t| t.agents.contains(agent)).map(|t| t.id.as_str()).collect()
            }
            (None, None) => scenario.tenants.iter().map(|t| t.id.as_str()).collect(),
        };
        for tenant in tenants {
            out.push(Case {
                name: report.name.clone(),
                tenant_id: tenant.to_string(),
                agent_id: report.agent.clone(),
                families: families(&spec.effect),
                causes: causes(&spec.effect),
                start: report.start,
                end: report.end,
            });
        }
    }
    out
}

fn overlaps(a: (OffsetDateTime, OffsetDateTime), b: (OffsetDateTime, OffsetDateTime)) -> bool {
    a.0 < b.1 && b.0 < a.1
}

/// Scores detected incidents against the cases (see the module docs).
pub fn score(cases: &[Case], detected: &[Incident], params: &Params) -> Score {
    // A signal exists once `min_windows` consecutive windows are flagged: the first window's
    // end and one bucket per further window.
    let reportable_after = time::Duration::try_from(params.bucket * (params.window_buckets + params.min_windows.saturating_sub(1)) as u32)
        .unwrap_or(time::Duration::ZERO);
    let outcomes = cases
        .iter()
        .map(|case| {
            let mut found = false;
            let mut pieces = 0;
            let mut cause_right = false;
            let mut agent_named = false;
            let mut first: Option<OffsetDateTime> = None;
            for incident in detected.iter().filter(|i| i.tenant_id == case.tenant_id) {
                let matching: Vec<_> = incident
                    .signals
                    .iter()
                    .filter(|s| case.families.contains(&s.family) && overlaps((s.start, s.end), (case.start, case.end)))
                    .collect();
                if matching.is_empty() {
                    continue;
                }
                found = true;
                pieces += 1;
                cause_right |= case.causes.iter().any(|p| incident.cause_metric.starts_with(p.as_str()));
                agent_named |= case.agent_id.is_some() && matching.iter().any(|s| s.agent_id == case.agent_id);
                for s in matching {
                    let reportable = s.start + reportable_after;
                    first = Some(first.map_or(reportable, |f| f.min(reportable)));
                }
            }
            Outcome {
                case: case.clone(),
                found,
                cause_right,
                agent_named,
                incidents: pieces,
                delay_minutes: first.map(|f| (f - case.start).as_seconds_f64() / 60.0),
            }
        })
        .collect();
    // False: no signal of the incident is one a case explains (its tenant, its family, its
    // window).
    let false_incidents = detected
        .iter()
        .filter(|i| {
            !i.signals.iter().any(|s| {
                cases.iter().any(|c| {
                    c.tenant_id == i.tenant_id && c.families.contains(&s.family) && overlaps((s.start, s.end), (c.start, c.end))
                })
            })
        })
        .cloned()
        .collect();
    Score { outcomes, false_incidents }
}

/// One seed of a scenario, run and scored.
#[derive(Debug, Clone)]
pub struct Trial {
    /// What the generator did.
    pub report: SimReport,
    /// What detection found.
    pub incidents: Vec<Incident>,
    /// How that compares.
    pub score: Score,
    /// Hours of data time tested (the scenario's arrivals, in whole buckets).
    pub hours: f64,
}

/// Why a trial could not run.
#[derive(Debug, thiserror::Error)]
pub enum TrialError {
    /// The library would not start on the trial's directory.
    #[error("cannot start the library on {dir}: {source}")]
    Init {
        /// The directory.
        dir: std::path::PathBuf,
        /// Why.
        source: Box<crate::Error>,
    },
    /// The library did not write every event by its shutdown deadline: the data scored would
    /// be short.
    #[error("the library did not finish writing the trial's events: {0}")]
    Shutdown(#[source] Box<crate::Error>),
    /// The simulation's settings were refused.
    #[error(transparent)]
    Simulation(#[from] crate::simulation::SimConfigError),
    /// The event log could not be read back.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// The runtime for the store would not start.
    #[error("cannot start a runtime: {0}")]
    Runtime(#[source] std::io::Error),
}

/// Runs `scenario` with `seed` into a fresh event log under `dir` (only the event log on,
/// nothing dropped), finds its incidents with `params` on the local store, and scores them.
pub fn trial(scenario: &Scenario, seed: u64, dir: &Path, params: &Params) -> Result<Trial, TrialError> {
    use crate::store::Store;

    let mut config = crate::Config { data_dir: dir.to_path_buf(), ..crate::Config::default() };
    config.metrics.enabled = false;
    config.tracing.enabled = false;
    config.pipeline.when_full = crate::config::WhenFull::Block;
    let obs = crate::Observability::init(config).map_err(|source| TrialError::Init { dir: dir.to_path_buf(), source: Box::new(source) })?;
    let rate = scenario.rate();
    let sim = SimConfig {
        conversations: crate::simulation::conversations_in(scenario.duration, rate, seed),
        seed,
        rate,
        concurrency: usize::MAX,
        pace: Pace::Fast,
        run_id: Some(format!("trial-{seed}")),
    };
    let report = crate::simulation::run_scenario(&obs, &sim, scenario, &AtomicBool::new(false), |_| {});
    let shutdown = obs.shutdown(Duration::from_secs(300));
    drop(obs);
    let report = report?;
    shutdown.map_err(|source| TrialError::Shutdown(Box::new(source)))?;

    // The arrivals' span in whole buckets: after the last arrival only the long conversations
    // go on, a drop in volume that is the scenario's end, not an incident.
    let width = params.bucket.as_secs() as i64;
    let end = report.window.0 + time::Duration::try_from(scenario.duration).unwrap_or(time::Duration::ZERO);
    let until = OffsetDateTime::from_unix_timestamp(super::series::bucket_of(end, width)).unwrap_or(end);
    let range = Range { since: None, until: Some(until), tenant: None };
    let store = crate::store::local::LocalStore::open(dir);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(TrialError::Runtime)?;
    let series = runtime.block_on(store.detection_series(&range, width))?;
    let incidents = super::detect(&series, params);
    let score = score(&cases(scenario, &report.incidents), &incidents, params);
    let hours = (until - report.window.0).as_seconds_f64() / 3600.0;
    Ok(Trial { report, incidents, score, hours })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::{Direction, Signal};

    fn at(minutes: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_700_000_000 + minutes * 60).unwrap()
    }

    fn signal(tenant: &str, agent: Option<&str>, family: Family, from: i64, to: i64) -> Signal {
        let metric = match family {
            Family::Latency => "latency.stt.p95",
            Family::Errors => "errors.x.rate",
            Family::Resolution => "resolution.transferred.share",
            _ => "intents.divergence",
        };
        Signal {
            metric: metric.into(),
            family,
            tenant_id: tenant.into(),
            agent_id: agent.map(Into::into),
            start: at(from),
            end: at(to),
            observed: 2.0,
            expected: 1.0,
            score: 9.0,
            direction: Direction::Up,
        }
    }

    fn incident(signals: Vec<Signal>) -> Incident {
        Incident {
            start: signals.iter().map(|s| s.start).min().unwrap(),
            end: signals.iter().map(|s| s.end).max().unwrap(),
            tenant_id: signals[0].tenant_id.clone(),
            suspected_cause: String::new(),
            cause_metric: signals[0].metric.clone(),
            signals,
        }
    }

    fn case(tenant: &str, agent: Option<&str>, families: Vec<Family>, from: i64, to: i64) -> Case {
        let causes = families
            .iter()
            .map(|f| match f {
                Family::Latency => "latency.stt.".to_string(),
                Family::Errors => "errors.x.".into(),
                Family::Resolution => "resolution.".into(),
                _ => "intents.".into(),
            })
            .collect();
        Case { name: "x".into(), tenant_id: tenant.into(), agent_id: agent.map(Into::into), families, causes, start: at(from), end: at(to) }
    }

    #[test]
    fn a_case_needs_its_tenant_its_family_and_an_overlapping_signal() {
        let params = Params::default();
        let cases = [
            case("a", None, vec![Family::Latency], 100, 130),
            case("b", None, vec![Family::Errors], 100, 130),
            case("c", Some("c-bot"), vec![Family::Latency], 100, 130),
            case("d", None, vec![Family::Resolution], 100, 130),
        ];
        let detected = vec![
            // a: found, with the resolution signal it caused as the cause; late in the window.
            incident(vec![signal("a", None, Family::Resolution, 90, 140), signal("a", None, Family::Latency, 110, 140)]),
            // b: right tenant, wrong family.
            incident(vec![signal("b", None, Family::Latency, 100, 130)]),
            // c: the agent's signal.
            incident(vec![signal("c", Some("c-bot"), Family::Latency, 95, 130)]),
            // d: right family, but after the window.
            incident(vec![signal("d", None, Family::Resolution, 130, 160)]),
            // e: nothing injected there.
            incident(vec![signal("e", None, Family::Latency, 0, 30)]),
        ];
        let s = score(&cases, &detected, &params);
        let found: Vec<bool> = s.outcomes.iter().map(|o| o.found).collect();
        assert_eq!(found, [true, false, true, false]);
        assert!(!s.outcomes[0].cause_right && s.outcomes[2].cause_right && s.outcomes[2].agent_named);
        // Reportable at the end of the second flagged window: start + 20 minutes.
        assert_eq!(s.outcomes[0].delay_minutes, Some(30.0));
        assert_eq!(s.outcomes.iter().map(|o| o.incidents).collect::<Vec<_>>(), [1, 0, 1, 0]);
        assert_eq!(s.outcomes[2].delay_minutes, Some(15.0));
        assert_eq!(s.recall(), 0.5);
        // b's incident overlaps its tenant's window but with another family: false, like d's
        // (after the window) and e's (nothing injected).
        let false_tenants: Vec<&str> = s.false_incidents.iter().map(|i| i.tenant_id.as_str()).collect();
        assert_eq!(false_tenants, ["b", "d", "e"]);
    }

    #[test]
    fn an_incident_for_everyone_is_a_case_per_tenant_and_an_agents_is_its_tenants() {
        let scenario = Scenario::parse(
            "duration: 2h\nconversations_per_hour: 10\ntenants:\n  - {id: a, share: 0.5, agents: [a1]}\n  - {id: b, share: 0.5, agents: [b1, b2]}\n\
             incidents:\n  - {name: out, start: 1h, duration: 10m, effect: {errors: {rate: 0.3, type: x}, latency_ms: {stt: x2}}}\n  \
             - {name: slow, start: 1h, duration: 10m, agent: b2, effect: {latency_ms: {stt: x3}}}\n",
            Path::new("s.yaml"),
        )
        .unwrap();
        let report = |name: &str, agent: Option<&str>| IncidentReport {
            name: name.into(),
            tenant: None,
            agent: agent.map(Into::into),
            start: at(60),
            end: at(70),
            conversations: 0,
            conversation_ids: vec![],
            turns_slowed: 0,
            errors: 0,
            resolutions_forced: 0,
            intents_shifted: 0,
        };
        let c = cases(&scenario, &[report("out", None), report("slow", Some("b2"))]);
        assert_eq!(c[0].causes, ["latency.stt.", "errors.x."]);
        let seen: Vec<(&str, &str, Vec<Family>)> = c.iter().map(|c| (c.name.as_str(), c.tenant_id.as_str(), c.families.clone())).collect();
        assert_eq!(
            seen,
            [
                ("out", "a", vec![Family::Errors, Family::Latency]),
                ("out", "b", vec![Family::Errors, Family::Latency]),
                ("slow", "b", vec![Family::Latency]),
            ]
        );
    }
}
