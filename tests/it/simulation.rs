//! The simulation's clock (issue 12, item 1): no event is dated after the wall clock at the
//! moment it is recorded, no event of a conversation is dated after its end, and a
//! conversation's recorded duration is its end minus its start, in fast, paced and
//! interrupted runs alike.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::Value;
use serphona_obs::simulation::{self, Pace, SimConfig};
use serphona_obs::{Config, Observability};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

#[allow(clippy::field_reassign_with_default)]
fn observability(dir: &std::path::Path) -> Observability {
    let mut config = Config::default();
    config.data_dir = dir.to_path_buf();
    config.metrics.enabled = false;
    config.tracing.enabled = false;
    Observability::init(config).expect("init")
}

/// Runs `sim`, stopping it after `stop_after` events when given; returns every event with
/// the wall-clock time it reached the live broadcast (after it was recorded).
fn run(sim: &SimConfig, stop_after: Option<u64>) -> (Vec<(Value, OffsetDateTime)>, simulation::SimReport) {
    let dir = tempfile::tempdir().unwrap();
    let obs = observability(dir.path());
    let mut receiver = obs.subscribe();
    let collector = std::thread::spawn(move || {
        let mut seen = Vec::new();
        while let Some(event) = receiver.blocking_recv() {
            let received = OffsetDateTime::now_utc();
            seen.push((serde_json::to_value(&*event).unwrap(), received));
        }
        seen
    });
    let stop = AtomicBool::new(false);
    let report = simulation::run(&obs, sim, &stop, |p| {
        if stop_after.is_some_and(|n| p.events >= n) {
            stop.store(true, Ordering::Relaxed);
        }
    })
    .expect("simulate");
    obs.shutdown(Duration::from_secs(30)).expect("shutdown");
    drop(obs);
    let seen = collector.join().unwrap();
    assert_eq!(seen.len() as u64, report.events, "the live broadcast saw every event");
    (seen, report)
}

fn ts(v: &Value, field: &str) -> OffsetDateTime {
    OffsetDateTime::parse(v[field].as_str().unwrap_or_else(|| panic!("no {field} in {v}")), &Rfc3339).unwrap()
}

/// The clock's rules over the events of one run.
fn check_clock(events: &[(Value, OffsetDateTime)]) {
    let mut by_conversation: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
    for (event, received) in events {
        let at = ts(event, "timestamp");
        assert!(at <= *received, "event dated {at}, after the moment it was recorded ({received}): {event}");
        by_conversation.entry(event["conversation_id"].as_str().unwrap().to_string()).or_default().push(event);
    }
    for (id, events) in &by_conversation {
        let started = events.iter().find(|e| e["event_type"] == "conversation.started").expect("a start");
        let ended = events
            .iter()
            .find(|e| e["event_type"] == "conversation.ended")
            .unwrap_or_else(|| panic!("{id} never ended"));
        let (start, end) = (ts(started, "timestamp"), ts(ended, "timestamp"));
        for e in events {
            let at = ts(e, "timestamp");
            assert!(
                start <= at && at <= end,
                "{id}: {} at {at} outside its start {start} and end {end}",
                e["event_type"]
            );
        }
        let duration = ended["duration_seconds"].as_f64().unwrap();
        assert!(
            (duration - (end - start).as_seconds_f64()).abs() < 0.002,
            "{id}: duration {duration} is not end - start"
        );
        assert_eq!(ts(ended, "started_at"), start, "{id}");
    }
}

// Regression test for issue 12, item 1: `simulate` without --rate wrote email turns up to 3
// hours in the future.
#[test]
fn a_fast_simulation_dates_nothing_in_the_future_and_nothing_after_a_conversations_end() {
    let sim = SimConfig { conversations: 120, seed: 5, rate: 2.0, concurrency: 50, pace: Pace::Fast, run_id: None };
    let (events, report) = run(&sim, None);
    assert!(!report.interrupted);
    assert!(events.iter().any(|(e, _)| e["channel"] == "email"), "the run has an email thread");
    check_clock(&events);
}

// Regression test for issue 12, item 1: the paced demo stamped events on a virtual clock
// ahead of the wall clock, and on quit ended open conversations before their own turns.
#[test]
fn an_interrupted_paced_run_ends_open_conversations_after_their_own_events() {
    let sim = SimConfig {
        conversations: 40,
        seed: 7,
        rate: 4.0,
        concurrency: 50,
        pace: Pace::Realtime { speed: 40.0, max_gap: Some(Duration::from_secs(60)) },
        run_id: None,
    };
    let (events, report) = run(&sim, Some(150));
    assert!(report.interrupted);
    let interrupted = events
        .iter()
        .filter(|(e, _)| e["tags"].as_array().is_some_and(|t| t.iter().any(|t| t == "interrupted")))
        .count();
    assert!(interrupted > 0, "some conversations were open when the run stopped");
    assert_eq!(report.ended, report.conversations, "every started conversation ended");
    check_clock(&events);
}
