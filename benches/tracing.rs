//! The caller-thread cost of a tracked interaction with tracing on vs off (issue 4), in the
//! same run: tracing off is the baseline; "on" records the turn's child span through the
//! OpenTelemetry SDK into its batch span processor, exported over OTLP/HTTP to a receiver in
//! this process that answers 200; "on, unsampled" is `sample_ratio: 0` (ids only).
//!
//! `cargo bench --bench tracing`. See BENCHMARKS.md for figures.

mod support;

use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use serphona_obs::types::*;
use serphona_obs::{Config, Observability};

const CONTENT: &str = "I was charged twice this month and I want the second charge refunded.";

/// Batches that fit in the span queue (65,536), timed on the caller; an untimed flush exports
/// them between batches, so no span is dropped.
const BATCH: u64 = 20_000;

fn receiver(rt: &tokio::runtime::Runtime) -> String {
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(|body: axum::body::Bytes| async move {
            std::hint::black_box(body.len());
            ([("content-type", "application/x-protobuf")], Vec::<u8>::new())
        }),
    );
    rt.spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

#[allow(clippy::field_reassign_with_default)] // the way the crate docs show it
fn observability(dir: &std::path::Path, tracing: Option<(&str, f64)>) -> Observability {
    let mut config = Config::default();
    config.data_dir = dir.to_path_buf();
    config.metrics.enabled = false;
    config.logging.enabled = false; // the event path is benches/pipeline.rs; here only spans differ
    match tracing {
        Some((endpoint, ratio)) => {
            config.tracing.endpoint = serphona_obs::config::Endpoint::parse(endpoint).unwrap();
            config.tracing.protocol = serphona_obs::config::Protocol::Http;
            config.tracing.sample_ratio = ratio;
        }
        None => config.tracing.enabled = false,
    }
    Observability::init(config).unwrap()
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let endpoint = receiver(&rt);
    let mut group = c.benchmark_group("tracked_interaction");
    group.measurement_time(Duration::from_secs(5));
    let cases: [(&str, Option<(&str, f64)>); 3] = [
        ("tracing_off_baseline", None),
        ("tracing_on_otlp_http", Some((&endpoint, 1.0))),
        ("tracing_on_unsampled", Some((&endpoint, 0.0))),
    ];
    for (name, tracing) in cases {
        let dir = tempfile::tempdir().unwrap();
        let obs = observability(dir.path(), tracing);
        let conv = obs.start_conversation(ConversationStart::new("acme-telco", "acme-billing-bot", "cust-1", Channel::Voice));
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                support::timed_in_batches(&obs, iters, BATCH, || {
                    conv.track_interaction(
                        Interaction::customer(CONTENT).sentiment(-0.5).intent("billing_dispute", 0.93).duration_ms(1800.0),
                    )
                })
            })
        });
        drop(conv);
        obs.shutdown(Duration::from_secs(60)).unwrap();
        let m = &obs.metrics().pipeline;
        eprintln!(
            "{name}: spans exported {} failed {}, events accepted {}",
            m.events_exported.with_label_values(&["otlp"]).get(),
            m.events_failed.with_label_values(&["otlp"]).get(),
            m.events_accepted.get()
        );
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
