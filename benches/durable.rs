//! The cost of the durable delivery state (issue 14): the event log's fsync policy and the
//! positions file, in events per second against the current path, in one run.
//!
//! 1. **Sync policy.** The library with only the event log on (`when_full: block`, so the
//!    caller runs at the rate the dispatcher writes), 200,000 `track_interaction` calls per
//!    run, with `logging.sync: flush` (the default: synced at `flush()`/`shutdown()` and at a
//!    rotation) and `logging.sync: batch` (`fdatasync` after every dispatch batch). The two
//!    alternate, 5 runs each; medians of events per second, and their ratio.
//! 2. **Positions.** `PositionFile::store` (a temporary file written and renamed over the
//!    old one), what the ClickHouse sink does once per acknowledged batch, timed over 2,000
//!    calls; its cost per event at the default `batch_size` (1,000) against the time per event
//!    of the event log in step 1.
//!
//! 3. **One small batch's sync**: a 400-byte append and `sync_data`, 200 times: what `sync:
//!    batch` adds to the dispatcher per batch when traffic is light (a batch of one event).
//!
//! One JSON line. `cargo bench --bench durable`; without `--bench` (`cargo test --benches`) a
//! smoke run of 2,000 events and 20 stores.

use std::time::{Duration, Instant};

use serphona_obs::config::{LogSync, WhenFull};
use serphona_obs::sinks::positions::{LogPosition, PositionFile};
use serphona_obs::types::*;
use serphona_obs::{Config, Observability};

/// Events per second through the event log with `sync`.
fn run(events: usize, sync: LogSync) -> f64 {
    let dir = tempfile::Builder::new().prefix("serphona-obs-bench-durable-").tempdir().unwrap();
    let mut config = Config { data_dir: dir.path().to_path_buf(), ..Config::default() };
    config.metrics.enabled = false;
    config.tracing.enabled = false;
    config.pipeline.when_full = WhenFull::Block;
    config.logging.sync = sync;
    let obs = Observability::init(config).unwrap();
    let conv = obs.start_conversation(ConversationStart::new("acme", "bot", "cust", Channel::Chat));
    let started = Instant::now();
    for i in 0..events {
        conv.track_interaction(Interaction::customer(format!("message {i} about my bill")));
    }
    obs.flush(Duration::from_secs(300)).unwrap();
    let rate = events as f64 / started.elapsed().as_secs_f64();
    conv.end(ConversationEnd::new(Resolution::Resolved));
    obs.shutdown(Duration::from_secs(60)).unwrap();
    let lines: usize = std::fs::read_dir(dir.path().join("events"))
        .unwrap()
        .map(|f| f.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .map(|p| std::fs::read(p).unwrap().iter().filter(|b| **b == b'\n').count())
        .sum();
    assert_eq!(lines, events + 2, "every event in the log (start and end included)");
    rate
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        return;
    }
    let bench = args.iter().any(|a| a == "--bench");
    let (events, runs, stores) = if bench { (200_000, 5, 2_000) } else { (2_000, 1, 20) };

    let (mut flush, mut batch) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        flush.push(run(events, LogSync::Flush));
        batch.push(run(events, LogSync::Batch));
    }
    let (flush, batch) = (median(flush), median(batch));

    let dir = tempfile::tempdir().unwrap();
    let file = PositionFile::new(dir.path(), "clickhouse");
    let started = Instant::now();
    for i in 0..stores {
        file.store(LogPosition { segment: 1, offset: i as u64 * 4096 }).unwrap();
    }
    let store_us = started.elapsed().as_secs_f64() * 1e6 / stores as f64;
    assert_eq!(file.load().unwrap(), Some(LogPosition { segment: 1, offset: (stores as u64 - 1) * 4096 }));
    // One small batch's write and sync, as `sync: batch` does at low traffic (one event a batch).
    let fsync_us = {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(dir.path().join("fsync.jsonl")).unwrap();
        let line = [b'x'; 400];
        let started = Instant::now();
        for _ in 0..stores / 10 {
            f.write_all(&line).unwrap();
            f.sync_data().unwrap();
        }
        started.elapsed().as_secs_f64() * 1e6 / (stores / 10) as f64
    };
    let event_us = 1e6 / flush;
    let per_event_at_1000 = store_us / 1000.0;

    println!(
        "{}",
        serde_json::json!({
            "events_per_run": events,
            "runs": runs,
            "sync_flush_events_per_s": flush.round(),
            "sync_batch_events_per_s": batch.round(),
            "batch_vs_flush": (batch / flush * 1000.0).round() / 1000.0,
            "write_and_fsync_us": fsync_us.round(),
            "position_store_us": (store_us * 10.0).round() / 10.0,
            "position_store_per_event_us_at_batch_1000": (per_event_at_1000 * 1000.0).round() / 1000.0,
            "event_log_us_per_event": (event_us * 1000.0).round() / 1000.0,
            "position_cost_vs_event_log": (per_event_at_1000 / event_us * 10000.0).round() / 10000.0,
        })
    );
}
