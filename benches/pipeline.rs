//! The caller-thread cost of `track_interaction` with the local event log sink on, against a
//! `tracing::info!` JSON event with the same fields (the baseline), in the same run.
//!
//! `cargo bench --bench pipeline`. See BENCHMARKS.md for figures.

mod support;

use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use serphona_obs::config::WhenFull;
use serphona_obs::types::*;
use serphona_obs::{Config, Observability};

const CONTENT: &str = "I was charged twice this month and I want the second charge refunded.";

fn report(name: &str, obs: &Observability) {
    let pipeline = &obs.metrics().pipeline;
    eprintln!(
        "{name}: accepted {} dropped {} (queue_full)",
        pipeline.events_accepted.get(),
        pipeline.events_dropped.with_label_values(&["queue_full"]).get()
    );
}

fn observability(dir: &std::path::Path, when_full: WhenFull, capacity: usize) -> Observability {
    let mut config = Config::default();
    config.pipeline.queue_capacity = capacity;
    config.data_dir = dir.to_path_buf();
    config.metrics.enabled = false; // the registry is still updated; nothing is served
    config.pipeline.when_full = when_full;
    // Spans cost the caller too; benches/tracing.rs measures that. This bench is the event path.
    config.tracing.enabled = false;
    Observability::init(config).unwrap()
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("track_interaction");
    group.measurement_time(Duration::from_secs(5));

    // Baseline: tracing's JSON formatter, formatting on the caller thread into a sink writer
    // (no file I/O at all, which favours the baseline).
    let subscriber = tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_writer(std::io::sink)
        .with_max_level(tracing::Level::INFO)
        .finish();
    tracing::subscriber::with_default(subscriber, || {
        let conversation_id = new_conversation_id();
        group.bench_function("tracing_info_json_baseline", |b| {
            b.iter(|| {
                tracing::info!(
                    service = "agent-orchestrator",
                    tenant_id = "acme-telco",
                    conversation_id = %conversation_id,
                    agent_id = "acme-billing-bot",
                    event_type = "interaction.customer",
                    speaker = "customer",
                    content = CONTENT,
                    sentiment = -0.5,
                    intent = "billing_dispute",
                    confidence = 0.93,
                    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736",
                    span_id = "00f067aa0ba902b7",
                    "interaction"
                );
            })
        });
    });

    // The caller-thread cost: batches that fit in the queue, timed on the caller only; the
    // dispatcher writes them out (untimed flush) between samples, so nothing is dropped.
    {
        let dir = tempfile::tempdir().unwrap();
        let obs = observability(dir.path(), WhenFull::DropNewest, 1 << 17);
        let conv = obs.start_conversation(ConversationStart::new("acme-telco", "acme-billing-bot", "cust-1", Channel::Voice));
        group.bench_function("serphona_obs_event_log_caller", |b| {
            b.iter_custom(|iters| {
                support::timed_in_batches(&obs, iters, 50_000, || {
                    conv.track_interaction(Interaction::customer(CONTENT).sentiment(-0.5).intent("billing_dispute", 0.93))
                })
            })
        });
        drop(conv);
        obs.shutdown(Duration::from_secs(60)).unwrap();
        report("serphona_obs_event_log_caller", &obs);
    }

    // Sustained: `when_full: block` with the default queue, so the caller runs at the speed the
    // dispatcher serializes and writes lines (the pipeline's throughput bound).
    {
        let dir = tempfile::tempdir().unwrap();
        let obs = observability(dir.path(), WhenFull::Block, 65536);
        let conv = obs.start_conversation(ConversationStart::new("acme-telco", "acme-billing-bot", "cust-1", Channel::Voice));
        group.bench_function("serphona_obs_event_log_sustained_block", |b| {
            b.iter(|| {
                conv.track_interaction(
                    Interaction::customer(CONTENT).sentiment(-0.5).intent("billing_dispute", 0.93),
                );
            })
        });
        drop(conv);
        obs.shutdown(Duration::from_secs(60)).unwrap();
        report("serphona_obs_event_log_sustained_block", &obs);
    }
    group.finish();

    // What the dispatcher pays per event for the event log line (the sink's main cost).
    let dir = tempfile::tempdir().unwrap();
    let events = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut config = Config { data_dir: dir.path().to_path_buf(), ..Config::default() };
    config.metrics.enabled = false;
    config.logging.enabled = false;
    let obs = Observability::builder(config).sink(Collect(events.clone())).build().unwrap();
    let conv = obs.start_conversation(ConversationStart::new("acme-telco", "acme-billing-bot", "cust-1", Channel::Voice));
    conv.track_interaction(Interaction::customer(CONTENT).sentiment(-0.5).intent("billing_dispute", 0.93));
    obs.shutdown(Duration::from_secs(10)).unwrap();
    let event = events.lock().unwrap().last().cloned().unwrap();
    let mut buf = Vec::with_capacity(4096);
    c.bench_function("dispatcher/event_to_json_line", |b| {
        b.iter(|| {
            buf.clear();
            event.write_json_line(&mut buf).unwrap();
        })
    });
}

/// Keeps the events it is given.
struct Collect(std::sync::Arc<std::sync::Mutex<Vec<Event>>>);

impl serphona_obs::pipeline::Sink for Collect {
    fn name(&self) -> &str {
        "collect"
    }
    fn write(&mut self, events: &[serphona_obs::pipeline::SharedEvent]) -> Result<(), serphona_obs::pipeline::SinkError> {
        self.0.lock().unwrap().extend(events.iter().map(|e| Event::clone(e)));
        Ok(())
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
