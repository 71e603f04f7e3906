//! Sustained pipeline throughput with the event log, Loki and ClickHouse all on, `when_full:
//! block`: how many events per second the library delivers end to end, and how many bytes it
//! allocates (serialization buffers, copies) per event on the way.
//!
//! Loki pushes go to an in-process receiver that answers 204. ClickHouse inserts go to an
//! in-process HTTP server that answers 200 and counts the body; the one query the client sends
//! before its first insert into a table (`DESCRIBE TABLE`, for its row validation) is passed on
//! to the chDB front of the tests, where `serphona-obs schema apply` created the tables, and its
//! answer kept. An untimed warm-up run fills that cache; then the front is stopped (its Python
//! process took a third of the CPU while idle) and the measured run's DESCRIBEs are answered
//! from the cache. So the servers cost next to nothing and what is measured is the library.
//!
//! One run is one process and one measurement; it prints one JSON line. The same file builds
//! against an older commit, so `scripts/bench-sinks.sh` runs this one and the one before the
//! sinks restructure alternately, in one invocation, and prints the ratios (BENCHMARKS.md).
//!
//! `cargo bench --bench sinks` (add `-- --conversations N` to change the size, `--event-log-only`
//! for the event log alone). Without
//! `--bench` (`cargo test --benches`) it is a smoke run of 100 conversations.

mod support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use serphona_obs::config::{Compression, Endpoint, OptionalEndpoint, WhenFull};
use serphona_obs::types::*;
use serphona_obs::{Config, Observability};

/// Counts the bytes allocated (a realloc counts its growth), process-wide.
struct Counting;

static ALLOCATED: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATED.fetch_add(layout.size() as u64, Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATED.fetch_add(new_size.saturating_sub(layout.size()) as u64, Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// What the in-process servers received.
#[derive(Default)]
struct Received {
    loki_pushes: AtomicU64,
    loki_bytes: AtomicU64,
    clickhouse_inserts: AtomicU64,
    clickhouse_bytes: AtomicU64,
    proxied: AtomicU64,
    /// The front's answers, by query and body.
    answers: std::sync::Mutex<std::collections::HashMap<(String, Bytes), Answer>>,
}

/// A response of the chDB front: status, headers, body.
type Answer = (u16, Vec<(String, String)>, Bytes);

const CUSTOMER: [&str; 4] = [
    "I was charged twice this month and I want the second charge refunded.",
    "My internet keeps dropping every evening around eight, can you check the line?",
    "I'd like to move my plan to the cheaper one you advertised last week.",
    "Why does my bill show a roaming fee when I never left the country?",
];
const AGENT: [&str; 4] = [
    "I'm sorry about that. I can see two charges of 49.99 on the 3rd; let me reverse the second one.",
    "Let me run a line test. I can see intermittent drops, so I'll open a repair ticket for you.",
    "Sure. The Basic 20 plan is 19.99 a month; switching takes effect at your next billing date.",
    "I see a roaming charge from a network handover near the border. I'll remove it as a goodwill credit.",
];

fn main() {
    // `cargo test --benches` runs this without `--bench`: a smoke run of 100 conversations.
    let bench = std::env::args().any(|a| a == "--bench");
    let mut conversations = if bench { 4_000usize } else { 100 };
    let mut turns = 25usize;
    let mut remote = true;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--conversations" => conversations = args.next().and_then(|v| v.parse().ok()).expect("--conversations N"),
            "--turns" => turns = args.next().and_then(|v| v.parse().ok()).expect("--turns N"),
            "--event-log-only" => remote = false,
            _ => {}
        }
    }

    let front = support::chdb::Front::start();
    let dir = tempfile::tempdir().unwrap();
    apply_schema(&front.url, dir.path());

    let received = Arc::new(Received::default());
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let addr = rt.block_on(serve(received.clone(), front.url.clone()));

    let config = |data: &str| {
        let mut config = Config { data_dir: dir.path().join(data), ..Config::default() };
        config.metrics.enabled = false; // the registry is still updated; nothing is served
        config.tracing.enabled = false; // benches/tracing.rs measures spans
        config.logging.enabled = true;
        if remote {
            config.logging.loki_endpoint = OptionalEndpoint(Some(Endpoint::parse(&format!("http://{addr}")).unwrap()));
        }
        config.clickhouse.enabled = remote;
        config.clickhouse.endpoint = Endpoint::parse(&format!("http://{addr}")).unwrap();
        config.clickhouse.database = "default".into();
        config.clickhouse.compression = Compression::None; // the chDB front answers DESCRIBE uncompressed
        config.pipeline.when_full = WhenFull::Block;
        config
    };
    // Warm-up (untimed): fills the DESCRIBE cache; then the front is stopped.
    let warm = Observability::init(config("warm-up")).unwrap();
    emit(&warm, 3, 2);
    warm.shutdown(Duration::from_secs(60)).unwrap();
    if remote {
        assert_eq!(warm.metrics().pipeline.events_delivered.with_label_values(&["clickhouse"]).get(), 18, "warm-up delivered");
    }
    drop(front);
    received.clickhouse_bytes.store(0, Relaxed);
    received.clickhouse_inserts.store(0, Relaxed);
    received.loki_bytes.store(0, Relaxed);
    received.loki_pushes.store(0, Relaxed);

    let obs = Observability::init(config("data")).unwrap();
    let allocated_before = ALLOCATED.load(Relaxed);
    let started = Instant::now();
    emit(&obs, conversations, turns);
    let emitted = started.elapsed();
    obs.shutdown(Duration::from_secs(300)).unwrap();
    let elapsed = started.elapsed();
    let allocated = ALLOCATED.load(Relaxed) - allocated_before;

    let pipeline = &obs.metrics().pipeline;
    let accepted = pipeline.events_accepted.get();
    // With the event log alone, what it wrote stands for both remote sinks' figures.
    let delivered = |sink: &str| if remote { pipeline.events_delivered.with_label_values(&[sink]).get() } else { accepted };
    let failed = |sink: &str| pipeline.events_failed.with_label_values(&[sink]).get();
    let dropped: u64 = ["queue_full", "shutdown", "sink_error"]
        .iter()
        .map(|r| pipeline.events_dropped.with_label_values(&[r]).get())
        .sum();
    let log_bytes: u64 = walk_bytes(&dir.path().join("data"), "jsonl");
    let per = |n: u64| n as f64 / accepted as f64;
    println!(
        "{}",
        serde_json::json!({
            "events": accepted,
            "dropped": dropped,
            "delivered": {"loki": delivered("loki"), "clickhouse": delivered("clickhouse")},
            "failed": {"loki": failed("loki"), "clickhouse": failed("clickhouse")},
            "seconds": elapsed.as_secs_f64(),
            "emit_seconds": emitted.as_secs_f64(),
            "events_per_second": accepted as f64 / elapsed.as_secs_f64(),
            "allocated_bytes_per_event": per(allocated),
            "written_bytes_per_event": {
                "event_log": per(log_bytes),
                "loki": per(received.loki_bytes.load(Relaxed)),
                "clickhouse": per(received.clickhouse_bytes.load(Relaxed)),
            },
            "requests": {
                "loki_pushes": received.loki_pushes.load(Relaxed),
                "clickhouse_inserts": received.clickhouse_inserts.load(Relaxed),
                "proxied_to_chdb": received.proxied.load(Relaxed),
            },
        })
    );
    assert_eq!(dropped, 0, "no event may be dropped with when_full: block");
    // Loki's sink never waits on the network: when its buffer (32,768 lines) is full it drops
    // and counts (`failed`), so a Loki that falls behind shows here, not as a failure.
    if remote {
        assert_eq!(delivered("clickhouse"), accepted, "every event reaches ClickHouse");
    }
}

/// `conversations` voice conversations of `turns` customer and agent turns each, one after
/// the other.
fn emit(obs: &Observability, conversations: usize, turns: usize) {
    for c in 0..conversations {
        let tenant = ["acme-telco", "globex-bank", "initech-energy"][c % 3];
        let conv = obs.start_conversation(ConversationStart::new(tenant, "billing-bot", format!("cust-{c}"), Channel::Voice));
        for t in 0..turns {
            let i = (c + t) % 4;
            conv.track_interaction(Interaction::customer(CUSTOMER[i]).sentiment(-0.4).intent("billing_dispute", 0.91));
            let latency = TurnLatency {
                stt_ms: Some(180.0),
                end_of_utterance_ms: Some(240.0),
                llm_ttft_ms: Some(620.0),
                tts_ttfb_ms: Some(150.0),
                response_ms: Some(1_250.0),
                interrupted: t % 7 == 3,
                ..TurnLatency::default()
            };
            conv.track_interaction(Interaction::agent(AGENT[i]).sentiment(0.3).latency(latency));
        }
        conv.end(ConversationEnd::new(Resolution::Resolved).rating(4));
    }
}

/// `serphona-obs schema apply` on the front's `default` database.
fn apply_schema(url: &str, data_dir: &std::path::Path) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_serphona-obs"))
        .args(["schema", "apply"])
        .env("SERPHONA_OBS_DATA_DIR", data_dir)
        .env("SERPHONA_OBS_CLICKHOUSE_ENDPOINT", url)
        .env("SERPHONA_OBS_CLICKHOUSE_DATABASE", "default")
        .env("SERPHONA_OBS_CLICKHOUSE_COMPRESSION", "none")
        .env("SERPHONA_OBS_METRICS_ENABLED", "false")
        .env("SERPHONA_OBS_TRACING_ENABLED", "false")
        .output()
        .expect("run serphona-obs schema apply");
    assert!(out.status.success(), "schema apply failed:\n{}", String::from_utf8_lossy(&out.stderr));
}

/// The total size of the files under `dir` whose name contains `ext`.
fn walk_bytes(dir: &std::path::Path, ext: &str) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .map(|e| {
            let path = e.path();
            if path.is_dir() {
                walk_bytes(&path, ext)
            } else if path.file_name().is_some_and(|n| n.to_string_lossy().contains(ext)) {
                e.metadata().map(|m| m.len()).unwrap_or(0)
            } else {
                0
            }
        })
        .sum()
}

/// Loki's push endpoint (204) and a ClickHouse HTTP interface whose inserts answer 200 and
/// whose other queries go to the chDB front.
async fn serve(received: Arc<Received>, front: String) -> std::net::SocketAddr {
    use axum::body::Body;
    use axum::extract::{RawQuery, State};
    use axum::http::{HeaderMap, Method, StatusCode};
    use axum::response::Response;

    type Shared = (Arc<Received>, String, reqwest::Client);

    async fn loki(State((received, _, _)): State<Shared>, body: Bytes) -> StatusCode {
        received.loki_pushes.fetch_add(1, Relaxed);
        received.loki_bytes.fetch_add(body.len() as u64, Relaxed);
        StatusCode::NO_CONTENT
    }

    async fn clickhouse(
        State((received, front, client)): State<Shared>,
        method: Method,
        RawQuery(query): RawQuery,
        headers: HeaderMap,
        body: Bytes,
    ) -> Response {
        let query = query.unwrap_or_default();
        let decoded: String = url::form_urlencoded::parse(query.as_bytes())
            .find(|(k, _)| k == "query")
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default();
        if decoded.trim_start().to_ascii_uppercase().starts_with("INSERT") {
            received.clickhouse_inserts.fetch_add(1, Relaxed);
            received.clickhouse_bytes.fetch_add(body.len() as u64, Relaxed);
            return Response::new(Body::empty());
        }
        received.proxied.fetch_add(1, Relaxed);
        let key = (query.clone(), body.clone());
        if let Some((status, headers, bytes)) = received.answers.lock().unwrap().get(&key).cloned() {
            let mut response = Response::builder().status(status);
            for (name, value) in headers {
                response = response.header(name, value);
            }
            return response.body(Body::from(bytes)).unwrap();
        }
        let mut request = client.request(method, format!("{front}/?{query}")).body(body);
        for (name, value) in &headers {
            if name != "host" && name != "content-length" {
                request = request.header(name, value);
            }
        }
        let answer = request.send().await.expect("the chDB front answers (it is stopped after the warm-up)");
        let status = answer.status().as_u16();
        let headers: Vec<(String, String)> = answer
            .headers()
            .iter()
            .filter(|(name, _)| *name != "content-length" && *name != "transfer-encoding")
            .map(|(n, v)| (n.to_string(), v.to_str().unwrap_or_default().to_string()))
            .collect();
        let bytes = answer.bytes().await.unwrap();
        received.answers.lock().unwrap().insert(key, (status, headers.clone(), bytes.clone()));
        let mut response = Response::builder().status(status);
        for (name, value) in headers {
            response = response.header(name, value);
        }
        response.body(Body::from(bytes)).unwrap()
    }

    let state: Shared = (received, front, reqwest::Client::new());
    let app = axum::Router::new()
        .route("/loki/api/v1/push", axum::routing::post(loki))
        .fallback(clickhouse)
        .with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}
