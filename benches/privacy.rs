//! The redaction processor's cost per event, on realistic turns with and without personal data,
//! against the dispatcher's JSON encoding of the same event (`Event::to_json`, what
//! `SharedEvent::new` does once per event), in the same run.
//!
//! `cargo bench --bench privacy -- --measurement-time 3`. See BENCHMARKS.md for figures.

use std::sync::Arc;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use opentelemetry::trace::{SpanId, TraceId};
use serphona_obs::pipeline::Processor;
use serphona_obs::processors::{RedactionProcessor, Redactor};
use serphona_obs::types::*;

fn turn(content: &str) -> Event {
    let mut metadata = Metadata::from_strings([("sentiment", "negative"), ("intent", "billing_dispute"), ("confidence", "0.91")]);
    metadata.extra.insert("queue".into(), serde_json::json!("billing"));
    metadata.extra.insert("simulation_run".into(), serde_json::json!("5f0c7d1e-3b8a-4c55-9a51-0d6c7f1e2a44"));
    Event {
        event_id: uuid::Uuid::now_v7(),
        timestamp: time::OffsetDateTime::now_utc(),
        level: Level::Info,
        service: "agent-orchestrator".into(),
        tenant_id: "acme-telco".into(),
        conversation_id: new_conversation_id().into(),
        agent_id: "acme-billing-bot".into(),
        speaker: Speaker::Customer,
        content: content.to_string(),
        metadata,
        trace: TraceIds { trace_id: TraceId::from(0x5b8a_4c55_9a51u128), span_id: SpanId::from(0x9a51u64), parent_span_id: None },
        kind: EventKind::CustomerTurn { turn: 3, latency: None, duration_ms: Some(4210.0), turn_taking: Default::default(), usage: None },
    }
}

const TURNS: [(&str, &str); 4] = [
    ("no_pii", "I was charged twice this month and I want the second charge refunded, please."),
    ("digits_no_pii", "My order 48213 arrived on 12 March but the box was damaged; can you refund the $34.99 shipping?"),
    ("card", "There are purchases on my card I didn't make. My card number is 4539 1488 0343 6467."),
    ("email_phone", "You can email me at maria.garcia42@example.com or call me back on +1 415 555 0142."),
];

fn bench(c: &mut Criterion) {
    let redactor = Arc::new(Redactor::with_defaults());
    let counter =
        prometheus::IntCounterVec::new(prometheus::Opts::new("redactions_total", "bench"), &["kind"]).unwrap();
    let mut processor = RedactionProcessor::new(redactor, counter);
    let mut group = c.benchmark_group("privacy");
    for (name, content) in TURNS {
        let event = turn(content);
        group.bench_function(format!("encode_json/{name}"), |b| b.iter(|| std::hint::black_box(event.to_json().unwrap())));
        group.bench_function(format!("redact/{name}"), |b| {
            b.iter_batched(
                || event.clone(),
                |e| std::hint::black_box(processor.process(e)),
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
