//! The simulation's clock (issue 12, item 1): nothing it records is dated in the future, and
//! nothing of a conversation is dated after its end, whether the run goes as fast as it can,
//! is paced, or is stopped early.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serphona_obs::pipeline::{SharedEvent, Sink, SinkError};
use serphona_obs::simulation::{self, Pace, SimConfig};
use serphona_obs::types::{Event, EventKind};
use serphona_obs::{Config, Observability};
use time::OffsetDateTime;

/// Keeps every event with the wall-clock time it reached the sink.
struct Stamped(Arc<Mutex<Vec<(OffsetDateTime, Event)>>>);

impl Sink for Stamped {
    fn name(&self) -> &str {
        "stamped"
    }
    fn write(&mut self, events: &[SharedEvent]) -> Result<(), SinkError> {
        let now = OffsetDateTime::now_utc();
        self.0.lock().unwrap().extend(events.iter().map(|e| (now, Event::clone(e))));
        Ok(())
    }
}

fn run(sim: &SimConfig, stop_after: Option<Duration>) -> Vec<(OffsetDateTime, Event)> {
    let mut config = Config::default();
    config.logging.enabled = false;
    config.metrics.enabled = false;
    config.tracing.enabled = false;
    config.pipeline.when_full = serphona_obs::config::WhenFull::Block;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let obs = Observability::builder(config).sink(Stamped(seen.clone())).build().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let stopper = stop_after.map(|after| {
        let stop = stop.clone();
        std::thread::spawn(move || {
            std::thread::sleep(after);
            stop.store(true, Ordering::Relaxed);
        })
    });
    let report = simulation::run(&obs, sim, &stop, |_| {}).unwrap();
    if let Some(t) = stopper {
        t.join().unwrap();
        assert!(report.interrupted, "the run was meant to be stopped early");
    }
    obs.shutdown(Duration::from_secs(30)).unwrap();
    let events = std::mem::take(&mut *seen.lock().unwrap());
    assert_eq!(events.len() as u64, report.events, "every event the report counts reached the sink");
    events
}

/// No event dated after it was written; none after its conversation's end; the end's
/// duration is its end minus its start.
fn check_clock(events: &[(OffsetDateTime, Event)]) {
    let mut ends: HashMap<&str, (OffsetDateTime, f64)> = HashMap::new();
    let mut starts: HashMap<&str, OffsetDateTime> = HashMap::new();
    for (written, e) in events {
        assert!(e.timestamp <= *written, "{} {} is dated {} but was written at {}", e.event_type(), e.event_id, e.timestamp, written);
        match &e.kind {
            EventKind::ConversationEnded { duration_seconds, .. } => {
                ends.insert(&e.conversation_id, (e.timestamp, *duration_seconds));
            }
            EventKind::ConversationStarted { .. } => {
                starts.insert(&e.conversation_id, e.timestamp);
            }
            _ => {}
        }
    }
    assert!(!ends.is_empty());
    for (_, e) in events {
        let (end, duration) = ends[&*e.conversation_id];
        assert!(e.timestamp <= end, "{} of {} is dated after the conversation's end ({} > {end})", e.event_type(), e.conversation_id, e.timestamp);
        let start = starts[&*e.conversation_id];
        assert!(((end - start).as_seconds_f64() - duration).abs() < 0.002, "duration {duration} is not end − start");
    }
}

// Regression test for issue 12, item 1: `simulate` without pacing wrote email turns up to 3
// hours in the future. The whole run, email threads included, is now dated before the wall
// clock.
#[test]
fn a_fast_run_dates_nothing_in_the_future() {
    let sim = SimConfig { conversations: 120, seed: 3, rate: 2.0, concurrency: 50, pace: Pace::Fast, run_id: None };
    let events = run(&sim, None);
    let emails = events.iter().filter(|(_, e)| matches!(&e.kind, EventKind::ConversationStarted { channel, .. } if channel.as_str() == "email")).count();
    assert!(emails > 0, "the run has email threads (hours long)");
    check_clock(&events);
}

// Regression test for issue 12, item 1: the paced demo's clock ran ahead of the wall clock,
// and quitting ended open conversations before their own turns. A paced run stopped after 2 s
// dates nothing in the future and nothing after an end.
#[test]
fn a_paced_run_stopped_early_dates_nothing_in_the_future_or_after_an_end() {
    let sim = SimConfig {
        conversations: 60,
        seed: 5,
        rate: 4.0,
        concurrency: 40,
        pace: Pace::Realtime { speed: 20.0, max_gap: Some(Duration::from_secs(30)) },
        run_id: None,
    };
    let events = run(&sim, Some(Duration::from_secs(2)));
    let abandoned_open = events
        .iter()
        .filter(|(_, e)| matches!(&e.kind, EventKind::ConversationEnded { resolution, .. } if resolution.as_str() == "abandoned"))
        .count();
    assert!(abandoned_open > 0, "conversations were open when the run stopped");
    check_clock(&events);
}
