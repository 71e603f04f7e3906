//! `query conversation ID` over an event log of 1,000,000 interactions (issue 5), against
//! baselines of the same run, and the same lookups in the ClickHouse engine.
//!
//! `cargo bench --bench query`. See BENCHMARKS.md for figures.
//!
//! 1. **The event log.** 125,000 conversations of 8 turns (1,000,000 interactions) go through
//!    the library (`Observability` with only the local event log; metrics and tracing off;
//!    `when_full: block`, so nothing is dropped) with fixed timestamps: each has a start, 8
//!    turns with sentiment (and an intent on the first), an intent detection and a tool call,
//!    every tenth a transfer, and an end: about 1.5 M lines, ~1 GB, in 64 MiB files (the
//!    default `logging.max_file_bytes`). The page cache is warm (the files were just written).
//! 2. **Local lookups** (hand-timed, median of several runs, the conversation in the middle
//!    of the log; the lookups run before the full parse, so the peak RSS printed after them is
//!    theirs and the log writing's):
//!    - `read_bytes_floor`: reading every file through a 1 MiB buffer (as the lookups do) and
//!      nothing else, the floor of any lookup that reads the log;
//!    - `full_parse_baseline`: what `LocalStore::conversation` did before this change:
//!      `read_all` (every line parsed) and a filter by id;
//!    - `conversation`: `LocalStore::conversation(id)`, which searches the files for
//!      `"conversation_id":"<id>"` and parses only those lines;
//!    - `trace`: `LocalStore::trace(trace_id)` (the same search for the trace id, then the
//!      spans and span events);
//!    - `conversation_unknown_id`: an id that is not in the log (every file read, no hit).
//! 3. **ClickHouse.** The same events, as the sink writes them (`events`, `conversations`,
//!    `interactions`, `decisions` and `spans` rows, 100,000 rows per insert) into the chDB front
//!    of the tests (`tests/it/support/chdb_front.py`, from `target/chdb-venv`; panics, saying
//!    to run `scripts/test.sh`, when that venv is missing); then `ClickHouseStore::conversation`
//!    and `trace` for the same ids, timed the same way, and checked to find what the local store
//!    found.
//!
//! Without `--bench` (`cargo test --benches`): 2,000 interactions and one run of each, as a
//! smoke test.

mod support;

use support::chdb::Front;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::time::{Duration, Instant};

use serphona_obs::config::WhenFull;
use serphona_obs::store::Store;
use serphona_obs::store::clickhouse::ClickHouseStore;
use serphona_obs::store::local::LocalStore;
use serphona_obs::types::*;
use serphona_obs::{Config, Observability};
use time::OffsetDateTime;

/// Turns per conversation.
const TURNS: usize = 8;
/// Rows per ClickHouse insert.
const INSERT_ROWS: usize = 100_000;

const CUSTOMER: [&str; 4] = [
    "I was charged twice on my March bill and I would like the second charge refunded.",
    "My internet keeps dropping every evening around eight, can someone check the line?",
    "I want to move to the cheaper plan you advertised last week, without any extra fees.",
    "Great, that works for me. Can you also send me the confirmation by email, please?",
];

const AGENT: [&str; 4] = [
    "I can see the duplicate charge of 49.99 from March 3rd; I will start the refund now.",
    "Thanks for waiting. There is an outage in your area and it should be fixed tonight.",
    "Sure, the Basic 20 plan is 29 euros a month and I can switch you at no extra cost.",
    "Done. The confirmation is on its way to your email address. Anything else for today?",
];

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        return;
    }
    let bench = args.iter().any(|a| a == "--bench");
    let (interactions, runs, slow_runs) = if bench { (1_000_000, 7, 3) } else { (2_000, 1, 1) };

    let dir = tempfile::Builder::new().prefix("serphona-obs-bench-query-").tempdir().unwrap();
    let started = Instant::now();
    let log = build_log(dir.path(), interactions);
    println!(
        "event log: {} conversations, {} interactions, {} events in {} files, {:.1} MiB, written in {:.1} s",
        log.conversations,
        interactions,
        log.events,
        log.files,
        log.bytes as f64 / (1 << 20) as f64,
        started.elapsed().as_secs_f64()
    );

    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let store = LocalStore::open(dir.path());
    let events_dir = serphona_obs::sinks::event_log::event_log_dir(dir.path());
    let (id, trace_id) = (log.target.0.as_str(), log.target.1.as_str());

    let mut buf = vec![0u8; 1 << 20];
    let floor = timed("read_bytes_floor", runs, || {
        let mut bytes = 0;
        for (_, path) in serphona_obs::sinks::event_log::list_segments(&events_dir).unwrap() {
            let mut file = std::fs::File::open(path).unwrap();
            loop {
                match file.read(&mut buf).unwrap() {
                    0 => break,
                    n => bytes += std::hint::black_box(&buf[..n]).len(),
                }
            }
        }
        assert_eq!(bytes as u64, log.bytes);
    });
    let mut found = None;
    let lookup = timed("conversation", runs, || found = rt.block_on(store.conversation(id)).unwrap());
    let found = found.expect("the target conversation is in the log");
    assert_eq!(found.events.len(), log.events_of_target);
    let mut spans = Vec::new();
    let trace = timed("trace", runs, || spans = rt.block_on(store.trace(trace_id)).unwrap());
    assert_eq!(spans.len(), log.spans_of_target);
    // An id as the library makes them (a UUIDv7 of now), not in the log.
    let unknown_id = uuid::Uuid::now_v7().to_string();
    let unknown = timed("conversation_unknown_id", runs, || {
        assert!(rt.block_on(store.conversation(&unknown_id)).unwrap().is_none())
    });
    let rss_lookups = support::proc_status_mib("self", "VmHWM");
    let mut expected = Vec::new();
    let full = timed("full_parse_baseline", slow_runs, || {
        let events = store.read_all().unwrap();
        expected = events.into_iter().filter(|e| &*e.conversation_id == id).collect::<Vec<_>>();
    });
    assert_eq!(found.events, {
        let mut e = expected.clone();
        e.sort_by_key(|e| e.timestamp);
        e
    });
    let mib_s = |d: Duration| log.bytes as f64 / (1 << 20) as f64 / d.as_secs_f64();
    println!(
        "local: conversation {:.3} s ({:.0} MiB/s): {:.1}x faster than the full parse ({:.3} s), {:.2}x the read-bytes floor \
         ({:.3} s); trace {:.3} s ({:.2}x the floor); unknown id {:.3} s",
        lookup.as_secs_f64(),
        mib_s(lookup),
        full.as_secs_f64() / lookup.as_secs_f64(),
        full.as_secs_f64(),
        lookup.as_secs_f64() / floor.as_secs_f64(),
        floor.as_secs_f64(),
        trace.as_secs_f64(),
        trace.as_secs_f64() / floor.as_secs_f64(),
        unknown.as_secs_f64(),
    );
    println!(
        "peak RSS of the bench process: {rss_lookups:.0} MiB after writing the log and the lookups, {:.0} MiB after the full \
         parse (which holds every event)",
        support::proc_status_mib("self", "VmHWM")
    );

    // The same lookups in the ClickHouse engine.
    let all = store.read_all().unwrap();
    clickhouse(&rt, &all, id, trace_id, &found, spans.len(), runs, lookup);
}

/// What the log holds and the conversation looked up.
struct Log {
    conversations: usize,
    events: u64,
    bytes: u64,
    files: usize,
    /// (conversation id, trace id) of the conversation in the middle.
    target: (String, String),
    events_of_target: usize,
    spans_of_target: usize,
}

/// Writes `interactions` turns through the library into the event log under `data_dir`.
fn build_log(data_dir: &Path, interactions: usize) -> Log {
    let mut config = Config { data_dir: data_dir.to_path_buf(), ..Config::default() };
    config.metrics.enabled = false;
    config.tracing.enabled = false;
    config.pipeline.when_full = WhenFull::Block;
    let obs = Observability::init(config).unwrap();
    let conversations = interactions / TURNS;
    let base = OffsetDateTime::now_utc() - time::Duration::days(2);
    let mut target = (String::new(), String::new());
    let mut events_of_target = 0;
    let mut spans_of_target = 0;
    for c in 0..conversations {
        // A new conversation every 0.5 s, turns 4 s apart.
        let t0 = base + time::Duration::milliseconds(500 * c as i64);
        let at = |ms: i64| t0 + time::Duration::milliseconds(ms);
        let channel = Channel::ALL[c % Channel::ALL.len()];
        let conv = obs.start_conversation(
            ConversationStart::new(format!("tenant-{}", c % 4), format!("agent-{}", c % 20), format!("cust-{c}"), channel)
                .meta("queue", "billing")
                .at(at(0)),
        );
        let mut events = 1;
        for i in 0..TURNS {
            let ms = 1_000 + 4_000 * i as i64;
            let turn = if i % 2 == 0 {
                let t = Interaction::customer(CUSTOMER[(i / 2) % 4]).sentiment(-0.4 + 0.1 * i as f64).duration_ms(2_500.0);
                if i == 0 { t.intent("billing_dispute", 0.91) } else { t }
            } else {
                Interaction::agent(AGENT[(i / 2) % 4]).sentiment(0.3).duration_ms(3_000.0)
            };
            conv.track_interaction(turn.at(at(ms)));
            events += 1;
            if i == 0 {
                conv.track_decision(
                    Decision::new(DecisionType::IntentDetection, "billing_dispute", "first statement").confidence(0.91).at(at(3_600)),
                );
                conv.track_decision(Decision::new(DecisionType::ToolCall, "billing.lookup_invoice", "look it up").at(at(4_200)));
                events += 2;
            }
        }
        if c % 10 == 0 {
            conv.track_decision(Decision::transfer("billing-humans", "refund above limit").at(at(34_000)));
            events += 2;
        }
        if c == conversations / 2 {
            target = (conv.id().to_string(), conv.trace_id().to_string());
            events_of_target = events + 1;
            spans_of_target = events; // a span per event, the start and the end sharing the root
        }
        let resolution = if c % 10 == 0 { Resolution::Transferred } else { Resolution::Resolved };
        conv.end(ConversationEnd::new(resolution).rating((c % 5 + 1) as u8).at(at(36_000)));
    }
    obs.shutdown(Duration::from_secs(600)).unwrap();
    let files = serphona_obs::sinks::event_log::list_segments(&serphona_obs::sinks::event_log::event_log_dir(data_dir)).unwrap();
    let bytes = files.iter().map(|(_, p)| std::fs::metadata(p).unwrap().len()).sum();
    let events = files.iter().map(|(_, p)| BufReader::new(std::fs::File::open(p).unwrap()).lines().count() as u64).sum();
    Log { conversations, events, bytes, files: files.len(), target, events_of_target, spans_of_target }
}

/// Runs `f` `runs` times; prints and returns the median.
fn timed(name: &str, runs: usize, mut f: impl FnMut()) -> Duration {
    let mut times: Vec<Duration> = (0..runs)
        .map(|_| {
            let started = Instant::now();
            f();
            started.elapsed()
        })
        .collect();
    times.sort();
    let median = times[times.len() / 2];
    println!(
        "{name:<28} median {:>9.3} ms  (min {:.3} ms, max {:.3} ms, {runs} runs)",
        median.as_secs_f64() * 1e3,
        times[0].as_secs_f64() * 1e3,
        times[times.len() - 1].as_secs_f64() * 1e3
    );
    median
}


// --- ClickHouse ---------------------------------------------------------------------------

/// Loads `events` into the chDB front as the sink writes them, then times the store's lookups.
#[allow(clippy::too_many_arguments)]
fn clickhouse(
    rt: &tokio::runtime::Runtime,
    events: &[Event],
    id: &str,
    trace_id: &str,
    local: &serphona_obs::store::ConversationDetail,
    local_spans: usize,
    runs: usize,
    local_lookup: Duration,
) {
    let front = Front::start();
    let db = format!("bench_query_{}", std::process::id());
    let config = Config { clickhouse: front.database(rt, &db), ..Config::default() };
    let started = Instant::now();
    front.load(rt, &config.clickhouse, events, INSERT_ROWS);
    println!(
        "clickhouse: loaded {} events (all five tables) in {:.1} s; chDB front RSS {:.0} MiB",
        events.len(),
        started.elapsed().as_secs_f64(),
        support::proc_status_mib(&front.child.id().to_string(), "VmRSS")
    );

    let store = ClickHouseStore::new(&config.clickhouse);
    let mut found = None;
    let lookup = timed("clickhouse_conversation", runs, || found = rt.block_on(store.conversation(id)).unwrap());
    assert_eq!(found.expect("found in ClickHouse").events.len(), local.events.len());
    let mut spans = Vec::new();
    let trace = timed("clickhouse_trace", runs, || spans = rt.block_on(store.trace(trace_id)).unwrap());
    assert_eq!(spans.len(), local_spans);
    println!(
        "clickhouse (chDB front): conversation {:.3} s ({:.2}x the local store's {:.3} s), trace {:.3} s",
        lookup.as_secs_f64(),
        lookup.as_secs_f64() / local_lookup.as_secs_f64(),
        local_lookup.as_secs_f64(),
        trace.as_secs_f64()
    );
}

