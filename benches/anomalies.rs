//! `query anomalies` on the local store over a simulated day at 600 conversations an hour
//! (14,400 conversations), against reading the same log in the same run (issue 17).
//!
//! 1. `simulate`'s engine writes the day into a fresh event log through the library (only the
//!    event log on; `when_full: block`, so nothing is dropped).
//! 2. Hand-timed, median of 5 runs each, page cache warm:
//!    - `read_all_baseline`: `LocalStore::read_all`, every line parsed into an `Event`: the
//!      floor of anything that reads the whole log;
//!    - `stats`: `query stats` over the whole log (`LocalStore::stats`);
//!    - `anomalies`: what `query anomalies` runs: `Store::detection_series` (one pass over the
//!      log, folding into 5-minute buckets per tenant and agent) and `detect::detect`.
//!
//! 3. With `--bench`: the same events loaded into the chDB front of the tests (as the sink
//!    writes them), and `query anomalies` on the ClickHouse store (`GROUP BY` in the engine),
//!    timed the same way and checked to give the same incidents. Needs `target/chdb-venv`
//!    (scripts/test.sh).
//!
//! One JSON line with the medians and the ratios to the baseline. `cargo bench --bench
//! anomalies` (`-- --show` prints the incidents); without `--bench` (`cargo test --benches`) a smoke run of 200 conversations.

mod support;

use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use serphona_obs::config::WhenFull;
use serphona_obs::detect::{self, Params, Range};
use serphona_obs::simulation::{Pace, SimConfig};
use serphona_obs::store::clickhouse::ClickHouseStore;
use serphona_obs::store::local::LocalStore;
use serphona_obs::store::{ConversationFilter, Store};
use serphona_obs::{Config, Observability};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        return;
    }
    let bench = args.iter().any(|a| a == "--bench");
    let (conversations, runs) = if bench { (14_400, 5) } else { (200, 1) };

    let dir = tempfile::Builder::new().prefix("serphona-obs-bench-anomalies-").tempdir().unwrap();
    let mut config = Config { data_dir: dir.path().to_path_buf(), ..Config::default() };
    config.metrics.enabled = false;
    config.tracing.enabled = false;
    config.pipeline.when_full = WhenFull::Block;
    let obs = Observability::init(config).unwrap();
    let sim = SimConfig {
        conversations,
        seed: 17,
        rate: 600.0 / 3600.0,
        concurrency: 10_000,
        pace: Pace::Fast,
        run_id: Some("bench".into()),
    };
    let written = Instant::now();
    let report = serphona_obs::simulation::run(&obs, &sim, &AtomicBool::new(false), |_| {}).unwrap();
    obs.shutdown(Duration::from_secs(120)).unwrap();
    drop(obs);
    let written = written.elapsed();

    let store = LocalStore::open(dir.path());
    // The day is the conversations' starts: after the last one only the long conversations
    // (email threads) go on, which is a drop in volume, not the day.
    let last_start = store
        .read_all()
        .unwrap()
        .iter()
        .filter(|e| e.event_type() == serphona_obs::types::EventType::ConversationStarted)
        .map(|e| e.timestamp)
        .max()
        .unwrap();
    let range = Range { until: Some(last_start + time::Duration::seconds(1)), ..Range::default() };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let params = Params::default();
    let width = params.bucket.as_secs() as i64;
    let time = |f: &mut dyn FnMut()| -> Duration {
        let t = Instant::now();
        f();
        t.elapsed()
    };
    let (mut read_all, mut stats, mut anomalies) = (Vec::new(), Vec::new(), Vec::new());
    let mut lines = 0;
    let mut found = Vec::new();
    for _ in 0..runs {
        read_all.push(time(&mut || lines = store.read_all().unwrap().len()));
        stats.push(time(&mut || {
            rt.block_on(store.stats(&ConversationFilter::default(), None)).unwrap();
        }));
        anomalies.push(time(&mut || {
            let series = rt.block_on(store.detection_series(&range, width)).unwrap();
            found = detect::detect(&series, &params);
        }));
    }
    let (read_all, stats, anomalies) = (median(read_all), median(stats), median(anomalies));
    let engine = bench.then(|| {
        let front = support::chdb::Front::start();
        let config = front.database(&rt, "bench_anomalies");
        front.load(&rt, &config, &store.read_all().unwrap(), 100_000);
        let ch = ClickHouseStore::new(&config);
        let mut times = Vec::new();
        for _ in 0..runs {
            times.push(time(&mut || {
                let series = rt.block_on(ch.detection_series(&range, width)).unwrap();
                let incidents = detect::detect(&series, &params);
                let summary = |i: &[detect::Incident]| -> Vec<_> {
                    i.iter().map(|i| (i.tenant_id.clone(), i.start, i.end, i.cause_metric.clone(), i.signals.len())).collect()
                };
                assert_eq!(summary(&incidents), summary(&found), "ClickHouse and the local store disagree");
            }));
        }
        median(times)
    });
    let ms = |d: Duration| (d.as_secs_f64() * 1e4).round() / 10.0;
    println!(
        "{}",
        serde_json::json!({
            "conversations": report.conversations,
            "events": report.events,
            "lines_read": lines,
            "write_seconds": (written.as_secs_f64() * 10.0).round() / 10.0,
            "runs": runs,
            "read_all_baseline_ms": ms(read_all),
            "stats_ms": ms(stats),
            "anomalies_ms": ms(anomalies),
            "anomalies_vs_read_all": (anomalies.as_secs_f64() / read_all.as_secs_f64() * 100.0).round() / 100.0,
            "stats_vs_read_all": (stats.as_secs_f64() / read_all.as_secs_f64() * 100.0).round() / 100.0,
            "incidents": found.len(),
            "clickhouse_anomalies_ms": engine.map(ms),
        })
    );
    assert_eq!(lines as u64, report.events, "every event read back");
    if args.iter().any(|a| a == "--show") {
        println!("{}", serde_json::to_string_pretty(&found).unwrap());
    }
}
