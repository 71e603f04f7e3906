//! The live view (issue 5): how fast its state takes events, and what one frame costs with
//! 10,000 live conversations. Events come from the real simulator through the library into
//! an event log in a temp dir, read back with the local store.
//!
//! - `state_update/*`: every event of a simulated contact center pushed into a fresh
//!   `tui::State` (the ended ones evicted only on ticks, as in the app). Baseline in the same
//!   run: the floor any view pays, each event cloned and counted per conversation in a
//!   `HashMap`. Target ≥ 200,000 events/s.
//! - `frame/*`: one 160×48 frame on ratatui's `TestBackend`, with the list re-sorted each
//!   frame (as when a conversation starts between frames, the worst case), for 10,000 live conversations
//!   and for 100 (the baseline: what a frame costs when the list is small). Target < 16 ms.
//!
//! `cargo bench --bench tail`. Without `--bench` (`cargo test --benches`) it runs once on a
//! small simulation. See BENCHMARKS.md for figures.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BatchSize, Criterion, Throughput};
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use serphona_obs::simulation::{self, Pace, SimConfig};
use serphona_obs::store::local::LocalStore;
use serphona_obs::tui::{Key, Options, State, ViewState, view};
use serphona_obs::types::{Event, EventKind};
use serphona_obs::{Config, Observability};

/// Simulated conversations through the library, read back from the event log.
fn simulate(conversations: usize, seed: u64) -> Vec<Event> {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config { data_dir: dir.path().to_path_buf(), ..Config::default() };
    config.metrics.enabled = false;
    config.tracing.enabled = false;
    config.pipeline.queue_capacity = 1 << 20;
    let obs = Observability::init(config).unwrap();
    let sim = SimConfig { conversations, seed, rate: 50.0, concurrency: 10_000, pace: Pace::Fast, run_id: None };
    let stop = std::sync::atomic::AtomicBool::new(false);
    simulation::run(&obs, &sim, &stop, |_| {}).unwrap();
    obs.shutdown(Duration::from_secs(120)).unwrap();
    LocalStore::open(dir.path()).read_all().unwrap()
}

fn fed(events: &[Event]) -> State {
    let mut s = State::new(Options { source: "bench".into(), max_conversations: 100_000, ..Options::default() });
    for e in events {
        s.push(e.clone());
    }
    s.tick(Instant::now());
    s
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let (contact_center, live) = if bench { (5_000, 10_000) } else { (200, 500) };
    let mut c = Criterion::default().configure_from_args();

    let events = simulate(contact_center, 1);
    eprintln!("state_update: {} events of {contact_center} conversations", events.len());
    let mut group = c.benchmark_group("state_update");
    group.throughput(Throughput::Elements(events.len() as u64));
    group.bench_function("baseline_clone_and_count", |b| {
        b.iter_batched(
            HashMap::<Arc<str>, u64>::new,
            |mut counts| {
                for e in &events {
                    let e = e.clone();
                    *counts.entry(e.conversation_id.clone()).or_insert(0) += 1;
                    std::hint::black_box(&e);
                }
                counts
            },
            BatchSize::LargeInput,
        )
    });
    group.bench_function("tui_state_push", |b| {
        b.iter_batched(
            || State::new(Options { source: "bench".into(), ..Options::default() }),
            |mut state| {
                for e in &events {
                    state.push(e.clone());
                }
                state
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();

    // Live conversations: everything but the ends.
    let many: Vec<Event> = simulate(live, 2)
        .into_iter()
        .filter(|e| !matches!(e.kind, EventKind::ConversationEnded { .. }))
        .collect();
    let mut group = c.benchmark_group("frame_160x48");
    let conversations_of = |events: &[Event]| {
        let state = fed(events);
        let mut view_state = ViewState::new();
        view_state.update(&state);
        let n = view_state.rows().len();
        (state, view_state, n)
    };
    let (big, mut big_view, big_n) = conversations_of(&many);
    let few_ids: std::collections::HashSet<Arc<str>> = many.iter().map(|e| e.conversation_id.clone()).take(2_000).collect();
    let mut few_ids_sorted: Vec<_> = few_ids.into_iter().collect();
    few_ids_sorted.sort();
    few_ids_sorted.truncate(100);
    let few_set: std::collections::HashSet<_> = few_ids_sorted.into_iter().collect();
    let few_events: Vec<Event> = many.iter().filter(|e| few_set.contains(&e.conversation_id)).cloned().collect();
    let (small, mut small_view, small_n) = conversations_of(&few_events);
    eprintln!("frame: {big_n} live conversations ({} events) vs {small_n}", many.len());
    assert_eq!(small_n, 100.min(big_n));
    for (name, state, view_state) in [("live_100_baseline", &small, &mut small_view), ("live_10000", &big, &mut big_view)] {
        let mut terminal = Terminal::new(TestBackend::new(160, 48)).unwrap();
        group.bench_function(name, |b| {
            b.iter(|| {
                // Hiding and showing ended conversations marks the list changed, as a new
                // conversation would: every frame rebuilds and re-sorts it (the worst case).
                view_state.key(state, Key::Char('e'));
                view_state.key(state, Key::Char('e'));
                terminal.draw(|f| view::render(f, state, view_state)).unwrap();
            })
        });
    }
    group.finish();
    c.final_summary();
}
