//! The library through its public API: the pipeline's delivery rules and the conversation
//! calls (issue 2).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, bounded};
use serphona_obs::config::WhenFull;
use serphona_obs::pipeline::{SharedEvent, Sink, SinkError};
use serphona_obs::types::*;
use serphona_obs::{Config, Observability};

/// Collects events; while `gate` is set, each write waits for a token on it.
struct TestSink {
    events: Arc<Mutex<Vec<Event>>>,
    gate: Option<Receiver<()>>,
}

impl Sink for TestSink {
    fn name(&self) -> &str {
        "test"
    }
    fn write(&mut self, events: &[SharedEvent]) -> Result<(), SinkError> {
        if let Some(gate) = &self.gate {
            // Blocks until the test opens the gate (sender dropped) or sends a token.
            let _ = gate.recv();
        }
        self.events.lock().unwrap().extend(events.iter().map(|e| Event::clone(e)));
        Ok(())
    }
}

fn quiet_config(capacity: usize, when_full: WhenFull) -> Config {
    let mut config = Config::default();
    config.logging.enabled = false;
    config.metrics.enabled = false;
    config.pipeline.queue_capacity = capacity;
    config.pipeline.when_full = when_full;
    config
}

type Collected = Arc<Mutex<Vec<Event>>>;

/// [`quiet_config`] with the local event log on, in `dir`.
fn logged_config(dir: &std::path::Path) -> Config {
    let mut config = quiet_config(1024, WhenFull::DropNewest);
    config.logging.enabled = true;
    config.data_dir = dir.to_path_buf();
    config
}

fn with_sink(config: Config, gated: bool) -> (Observability, Collected, Option<Sender<()>>) {
    let events = Arc::new(Mutex::new(Vec::new()));
    let (gate_tx, gate_rx) = bounded::<()>(0);
    let sink = TestSink { events: events.clone(), gate: gated.then_some(gate_rx) };
    let obs = Observability::builder(config).sink(sink).build().unwrap();
    (obs, events, gated.then_some(gate_tx))
}

/// Runs `f` on a thread and waits at most 30 s for it: a call that blocks forever fails the
/// test instead of hanging it.
fn finishes<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    let (tx, rx) = bounded(1);
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(30)).ok()
}

#[test]
fn queue_full_drop_newest_never_blocks_and_counts_drops() {
    let (obs, events, gate) = with_sink(quiet_config(8, WhenFull::DropNewest), true);
    let conv = obs.start_conversation(ConversationStart::new("t", "a", "c", Channel::Chat));
    let caller = obs.clone();
    // The sink is stuck, so at most the queue (8) plus the batch in the dispatcher's hands
    // can be accepted; the caller must still return.
    let emitted = finishes(move || {
        for i in 0..500 {
            conv.track_interaction(Interaction::customer(format!("turn {i}")));
        }
        conv.end(ConversationEnd::new(Resolution::Resolved));
        502 // start + 500 turns + end
    })
    .expect("with drop_newest the caller must not block on a stuck sink");
    let pipeline = &caller.metrics().pipeline;
    let dropped = pipeline.events_dropped.with_label_values(&["queue_full"]).get();
    let accepted = pipeline.events_accepted.get();
    assert!(dropped > 0, "a stuck sink with capacity 8 must drop some of 502 events");
    assert_eq!(accepted + dropped, emitted);
    assert!(accepted <= 8 + 1 + serphona_obs::pipeline::MAX_DISPATCH_BATCH as u64);
    assert!(caller.metrics().encode().contains("serphona_obs_events_dropped_total{reason=\"queue_full\"}"));
    drop(gate); // open the gate
    caller.shutdown(Duration::from_secs(10)).unwrap();
    assert_eq!(events.lock().unwrap().len() as u64, accepted, "everything accepted is delivered");
}

#[test]
fn queue_full_block_waits_and_drops_nothing() {
    let (obs, events, gate) = with_sink(quiet_config(4, WhenFull::Block), true);
    let progress = Arc::new(AtomicUsize::new(0));
    let conv = obs.start_conversation(ConversationStart::new("t", "a", "c", Channel::Voice));
    let seen = progress.clone();
    let (done_tx, done_rx) = bounded(1);
    std::thread::spawn(move || {
        for i in 0..200 {
            conv.track_interaction(Interaction::agent(format!("turn {i}")));
            seen.fetch_add(1, Ordering::SeqCst);
        }
        conv.end(ConversationEnd::new(Resolution::Resolved));
        let _ = done_tx.send(());
    });
    // While the sink is stuck the caller cannot get past queue + one in-flight batch.
    std::thread::sleep(Duration::from_millis(300));
    assert!(progress.load(Ordering::SeqCst) < 200, "block mode must wait for room");
    assert!(done_rx.try_recv().is_err());
    drop(gate);
    done_rx.recv_timeout(Duration::from_secs(30)).expect("the caller finishes once the sink moves");
    obs.shutdown(Duration::from_secs(10)).unwrap();
    assert_eq!(obs.metrics().pipeline.events_dropped.with_label_values(&["queue_full"]).get(), 0);
    assert_eq!(events.lock().unwrap().len(), 202);
}

#[test]
fn shutdown_delivers_everything_accepted() {
    let (obs, events, _) = with_sink(quiet_config(100_000, WhenFull::DropNewest), false);
    let mut ids = Vec::new();
    for n in 0..200 {
        let conv = obs.start_conversation(ConversationStart::new("t", format!("a{}", n % 7), "c", Channel::Chat));
        ids.push(conv.id().to_string());
        for i in 0..20 {
            conv.track_interaction(Interaction::customer(format!("{i}")));
        }
        conv.end(ConversationEnd::new(Resolution::Resolved).rating(5));
    }
    obs.shutdown(Duration::from_secs(30)).unwrap();
    let events = events.lock().unwrap();
    assert_eq!(events.len(), 200 * 22);
    assert_eq!(obs.metrics().pipeline.events_accepted.get(), 200 * 22);
    // After shutdown nothing more is accepted, and that is counted.
    let late = obs.start_conversation(ConversationStart::new("t", "a", "c", Channel::Chat));
    late.end(ConversationEnd::new(Resolution::Resolved));
    assert_eq!(obs.metrics().pipeline.events_dropped.with_label_values(&["shutdown"]).get(), 2);
    assert!(matches!(
        obs.shutdown(Duration::from_secs(1)),
        Err(serphona_obs::Error::Pipeline(serphona_obs::pipeline::PipelineError::Closed))
    ));
}

#[test]
fn flush_past_its_deadline_is_a_typed_timeout() {
    let (obs, _events, gate) = with_sink(quiet_config(16, WhenFull::DropNewest), true);
    let conv = obs.start_conversation(ConversationStart::new("t", "a", "c", Channel::Chat));
    conv.track_interaction(Interaction::agent("hello"));
    let err = obs.flush(Duration::from_millis(200)).unwrap_err();
    assert!(
        matches!(err, serphona_obs::Error::Pipeline(serphona_obs::pipeline::PipelineError::Timeout { op: "flush", .. })),
        "{err:?}"
    );
    drop(gate);
    obs.flush(Duration::from_secs(10)).unwrap();
    drop(conv);
    obs.shutdown(Duration::from_secs(10)).unwrap();
}

#[test]
fn conversation_events_share_one_trace_and_dropping_abandons() {
    let (obs, events, _) = with_sink(quiet_config(1024, WhenFull::DropNewest), false);
    let conv = obs.start_conversation(
        ConversationStart::new("acme", "bot", "cust", Channel::Voice).meta("campaign", "spring"),
    );
    let id = conv.id().to_string();
    conv.track_interaction(Interaction::customer("I want a human").sentiment(-0.4).duration_ms(1000.0));
    conv.track_decision(Decision::transfer("humans", "asked for a human").confidence(0.9));
    conv.track_error("llm_timeout", "the LLM timed out");
    conv.track_compliance_violation("pci_dss", "high", "read back a card number");
    drop(conv); // never ended
    obs.shutdown(Duration::from_secs(10)).unwrap();
    let events = events.lock().unwrap();
    let types: Vec<&str> = events.iter().map(|e| e.event_type().as_str()).collect();
    assert_eq!(
        types,
        [
            "conversation.started",
            "interaction.customer",
            "decision.made",
            "transfer.initiated",
            "error.occurred",
            "compliance.violation",
            "conversation.ended"
        ]
    );
    let root = events[0].trace.span_id;
    for e in events.iter() {
        assert_eq!(&*e.conversation_id, id);
        assert_eq!(e.trace.trace_id, events[0].trace.trace_id);
        // Turns, decisions and transfers are child spans of the conversation span.
        match e.event_type() {
            EventType::InteractionCustomer | EventType::DecisionMade | EventType::TransferInitiated => {
                assert_eq!(e.trace.parent_span_id, Some(root));
                assert_ne!(e.trace.span_id, root);
            }
            _ => assert_eq!(e.trace.span_id, root),
        }
    }
    match &events.last().unwrap().kind {
        EventKind::ConversationEnded { resolution, interaction_count, .. } => {
            assert_eq!(*resolution, Resolution::Abandoned);
            assert_eq!(*interaction_count, 1);
        }
        other => panic!("expected the end, got {other:?}"),
    }
    assert_eq!(events[0].metadata.extra["campaign"], "spring");
    let m = obs.metrics();
    assert_eq!(m.error_rate.with_label_values(&["agent-orchestrator", "llm_timeout"]).get(), 1);
    assert_eq!(m.resolution_rate.with_label_values(&["acme", "bot", "abandoned"]).get(), 1.0);
}

#[test]
fn agent_response_time_is_measured_from_the_customer_turn_end() {
    let (obs, events, _) = with_sink(quiet_config(1024, WhenFull::DropNewest), false);
    let t0 = time::OffsetDateTime::now_utc();
    let conv = obs.start_conversation(ConversationStart::new("t", "a", "c", Channel::Chat).at(t0));
    conv.track_interaction(Interaction::customer("hi").duration_ms(500.0).at(t0 + time::Duration::seconds(1)));
    conv.track_interaction(Interaction::agent("hello").at(t0 + time::Duration::milliseconds(2750)));
    conv.end(ConversationEnd::new(Resolution::Resolved).at(t0 + time::Duration::seconds(10)));
    obs.shutdown(Duration::from_secs(10)).unwrap();
    let events = events.lock().unwrap();
    let response = events.iter().find_map(|e| match e.kind {
        EventKind::AgentTurn { response_time_seconds, .. } => response_time_seconds,
        _ => None,
    });
    assert_eq!(response, Some(1.25));
    let h = obs.metrics().agent_response_time.with_label_values(&["a", "t"]);
    assert_eq!(h.get_sample_count(), 1);
    assert_eq!(h.get_sample_sum(), 1.25);
    let d = obs.metrics().conversation_duration.with_label_values(&["t", "a", "resolved"]);
    assert_eq!(d.get_sample_sum(), 10.0);
}

#[test]
fn a_conversation_joins_the_current_opentelemetry_trace() {
    use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
    let (obs, events, _) = with_sink(quiet_config(1024, WhenFull::DropNewest), false);
    let trace_id = TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap();
    let parent = SpanId::from_hex("00f067aa0ba902b7").unwrap();
    let cx = opentelemetry::Context::new().with_remote_span_context(SpanContext::new(
        trace_id,
        parent,
        TraceFlags::SAMPLED,
        true,
        TraceState::default(),
    ));
    let conv = {
        let _guard = cx.attach();
        obs.start_conversation(ConversationStart::new("t", "a", "c", Channel::Voice))
    };
    assert_eq!(conv.trace_id(), trace_id);
    conv.end(ConversationEnd::new(Resolution::Resolved));
    obs.shutdown(Duration::from_secs(10)).unwrap();
    let events = events.lock().unwrap();
    assert_eq!(events[0].trace.parent_span_id, Some(parent));
    assert!(events.iter().all(|e| e.trace.trace_id == trace_id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn works_from_inside_a_tokio_runtime_with_metrics_served() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config { data_dir: dir.path().to_path_buf(), ..Config::default() };
    config.metrics.listen = "127.0.0.1:0".parse().unwrap();
    let obs = Observability::init(config).unwrap();
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let obs = obs.clone();
            tokio::spawn(async move {
                let conv = obs.start_conversation(ConversationStart::new("t", format!("a{i}"), "c", Channel::Chat));
                conv.track_interaction(Interaction::customer("hi"));
                tokio::task::yield_now().await;
                conv.track_interaction(Interaction::agent("hello"));
                conv.end(ConversationEnd::new(Resolution::Resolved));
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let addr = obs.metrics_addr().unwrap();
    let body = tokio::task::spawn_blocking(move || {
        reqwest::blocking::get(format!("http://{addr}/metrics")).unwrap().text().unwrap()
    })
    .await
    .unwrap();
    let total: f64 = body
        .lines()
        .filter(|l| l.starts_with("conversation_total{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum();
    assert_eq!(total, 8.0);
    let obs2 = obs.clone();
    tokio::task::spawn_blocking(move || obs2.shutdown(Duration::from_secs(10))).await.unwrap().unwrap();
    let lines = std::fs::read_to_string(dir.path().join("events/events-000001.jsonl")).unwrap();
    assert_eq!(lines.lines().count(), 8 * 4);
}

#[test]
fn metrics_port_in_use_is_an_error_naming_the_address() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut config = quiet_config(16, WhenFull::DropNewest);
    config.metrics.enabled = true;
    config.metrics.listen = taken.local_addr().unwrap();
    let err = Observability::init(config).err().expect("port is taken");
    let msg = err.to_string();
    assert!(msg.contains(&taken.local_addr().unwrap().to_string()), "{msg}");
    assert!(msg.contains("metrics.listen"), "{msg}");
}

#[test]
fn free_functions_over_the_global_instance() {
    assert!(matches!(
        serphona_obs::track_interaction("nope", Interaction::agent("x")),
        Err(serphona_obs::Error::UnknownConversation(_)) | Err(serphona_obs::Error::NotInitialized)
    ));
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config { data_dir: dir.path().to_path_buf(), ..Config::default() };
    config.metrics.enabled = false;
    serphona_obs::init(config.clone()).unwrap();
    assert!(matches!(serphona_obs::init(config), Err(serphona_obs::Error::AlreadyInitialized)));
    let id = serphona_obs::start_conversation(ConversationStart::new("t", "a", "c", Channel::Sms)).unwrap();
    serphona_obs::track_interaction(&id, Interaction::customer("hi")).unwrap();
    serphona_obs::track_decision(&id, Decision::new(DecisionType::IntentDetection, "greeting", "said hi")).unwrap();
    serphona_obs::end_conversation(&id, ConversationEnd::new(Resolution::Resolved)).unwrap();
    assert!(matches!(
        serphona_obs::end_conversation(&id, ConversationEnd::new(Resolution::Resolved)),
        Err(serphona_obs::Error::UnknownConversation(_))
    ));
    let open = serphona_obs::start_conversation(ConversationStart::new("t", "a", "c", Channel::Sms)).unwrap();
    serphona_obs::shutdown(Duration::from_secs(10)).unwrap();
    let text = std::fs::read_to_string(dir.path().join("events/events-000001.jsonl")).unwrap();
    let events: Vec<Event> = text.lines().map(|l| Event::from_json(l).unwrap()).collect();
    assert_eq!(events.len(), 6);
    let last = events.iter().rev().find(|e| *e.conversation_id == *open).unwrap();
    assert!(matches!(last.kind, EventKind::ConversationEnded { resolution: Resolution::Abandoned, .. }));
}

/// Masks digits in turn content and drops a tenant's events entirely.
struct RedactDigitsDropTenant;

impl serphona_obs::pipeline::Processor for RedactDigitsDropTenant {
    fn process(&mut self, mut event: Event) -> Option<Event> {
        if &*event.tenant_id == "dropped-tenant" {
            return None;
        }
        event.content = event.content.chars().map(|c| if c.is_ascii_digit() { '#' } else { c }).collect();
        Some(event)
    }
}

#[test]
fn processors_run_once_before_every_sink() {
    let dir = tempfile::tempdir().unwrap();
    let config = logged_config(dir.path());
    let events = Arc::new(Mutex::new(Vec::new()));
    let obs = Observability::builder(config)
        .processor(RedactDigitsDropTenant)
        .sink(TestSink { events: events.clone(), gate: None })
        .build()
        .unwrap();
    let kept = obs.start_conversation(ConversationStart::new("kept-tenant", "a", "c", Channel::Chat));
    // The built-in redaction runs first (issue 15): the card is masked before this
    // processor sees it; the PIN is no detector's, so this processor masks it.
    kept.track_interaction(Interaction::customer("my card is 4111 1111 1111 1111, PIN 1234"));
    kept.end(ConversationEnd::new(Resolution::Resolved));
    let dropped = obs.start_conversation(ConversationStart::new("dropped-tenant", "a", "c", Channel::Chat));
    dropped.end(ConversationEnd::new(Resolution::Resolved));
    obs.shutdown(Duration::from_secs(10)).unwrap();

    let logged = std::fs::read_to_string(dir.path().join("events/events-000001.jsonl")).unwrap();
    let collected = events.lock().unwrap();
    assert_eq!(collected.len(), 3);
    assert_eq!(logged.lines().count(), 3);
    // Matched with their context: a bare "1234" or "4111" also turns up at random in
    // ids and timestamps (one CI run failed on that).
    assert!(!logged.contains("4111 1111") && !logged.contains("PIN 1234") && !logged.contains("dropped-tenant"));
    assert!(logged.contains("PIN ####"));
    assert_eq!(collected[1].content, "my card is [REDACTED:card_number], PIN ####");
}

#[test]
fn live_subscribers_see_every_event_in_order() {
    let (obs, _events, _) = with_sink(quiet_config(1024, WhenFull::DropNewest), false);
    let mut live = obs.subscribe();
    let conv = obs.start_conversation(ConversationStart::new("t", "a", "c", Channel::Voice));
    for i in 0..10 {
        conv.track_interaction(Interaction::agent(format!("turn {i}")));
    }
    conv.end(ConversationEnd::new(Resolution::Resolved));
    obs.flush(Duration::from_secs(10)).unwrap();
    let mut seen = Vec::new();
    while let Some(event) = live.try_recv() {
        seen.push(event.event_type());
    }
    assert_eq!(seen.len(), 12);
    assert_eq!(seen[0], EventType::ConversationStarted);
    assert_eq!(seen[11], EventType::ConversationEnded);
    obs.shutdown(Duration::from_secs(10)).unwrap();
}

#[test]
fn hostile_numbers_reserved_keys_and_huge_content_lose_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let config = logged_config(dir.path());
    let events = Arc::new(Mutex::new(Vec::new()));
    let obs = Observability::builder(config).sink(TestSink { events: events.clone(), gate: None }).build().unwrap();
    let conv = obs.start_conversation(ConversationStart::new("t", "a", "c", Channel::Voice));
    conv.track_interaction(Interaction::customer("nan").duration_ms(f64::NAN).sentiment(f64::NAN));
    conv.track_interaction(Interaction::customer("huge").duration_ms(1e300).compliance("p", f64::INFINITY).meta("sentiment", "very bad"));
    conv.track_interaction(
        Interaction::agent("x".repeat(5 << 20)).latency(TurnLatency { response_ms: Some(f64::NAN), stt_ms: Some(-1.0), ..Default::default() }),
    );
    conv.track_decision(
        Decision::new(DecisionType::IntentDetection, "billing", "keywords").meta("intent", "other").meta("source", "rules"),
    );
    // The gauge follows the customer's turns (issue 12, item 12): the agent's score is not it.
    conv.track_interaction(Interaction::customer("after").sentiment(0.25));
    conv.track_interaction(Interaction::agent("ok").sentiment(0.9));
    conv.end(ConversationEnd::new(Resolution::Resolved));
    obs.shutdown(Duration::from_secs(10)).unwrap();
    assert_eq!(events.lock().unwrap().len(), 8);
    // Every line of the event log reads back (no duplicate keys, no non-numbers in scores).
    let text = std::fs::read_to_string(dir.path().join("events/events-000001.jsonl")).unwrap();
    let logged: Vec<Event> = text.lines().map(|l| Event::from_json(l).unwrap_or_else(|e| panic!("{e}: {l:.200}"))).collect();
    assert_eq!(logged.len(), 8);
    assert_eq!(logged[3].content.len(), 5 << 20);
    assert_eq!(logged[4].metadata.intent.as_deref(), Some("billing"));
    assert_eq!(logged[4].metadata.extra["source"], "rules");
    assert!(logged[2].metadata.compliance.is_empty());
    // A reserved key's value that cannot be read as its type is kept beside it (issue 12).
    assert_eq!(logged[2].metadata.sentiment, None);
    assert_eq!(logged[2].metadata.extra["sentiment_raw"], "very bad");
    let m = obs.metrics();
    assert_eq!(m.sentiment.with_label_values(&["t", "a"]).get(), 0.25);
    assert!(m.encode().lines().filter(|l| !l.starts_with('#')).all(|l| !l.contains("NaN")));
}

#[test]
fn a_live_subscriber_that_falls_behind_skips_and_counts() {
    let (obs, _events, _) = with_sink(quiet_config(1 << 16, WhenFull::Block), false);
    let mut live = obs.subscribe();
    let conv = obs.start_conversation(ConversationStart::new("t", "a", "c", Channel::Chat));
    let total = serphona_obs::sinks::live::LIVE_CAPACITY + 500;
    for i in 0..total - 1 {
        conv.track_interaction(Interaction::customer(format!("{i}")));
    }
    obs.flush(Duration::from_secs(30)).unwrap();
    let mut seen = 0;
    while live.try_recv().is_some() {
        seen += 1;
    }
    assert!(live.skipped() > 0);
    assert_eq!(seen + live.skipped() as usize, total);
    assert_eq!(obs.metrics().pipeline.live_lagged.get(), live.skipped());
    drop(conv);
    obs.shutdown(Duration::from_secs(10)).unwrap();
}

#[test]
fn calls_after_the_end_are_counted_not_recorded() {
    let (obs, events, _) = with_sink(quiet_config(1024, WhenFull::DropNewest), false);
    let conv = obs.start_conversation(ConversationStart::new("t", "a", "c", Channel::Chat));
    let late = conv.clone();
    let mut end = ConversationEnd::new(Resolution::Resolved);
    end.rating = Some(9); // past the builder's clamp
    conv.end(end);
    late.track_interaction(Interaction::agent("too late"));
    late.track_decision(Decision::transfer("x", "y"));
    late.track_error("e", "m");
    obs.shutdown(Duration::from_secs(10)).unwrap();
    assert_eq!(events.lock().unwrap().len(), 2);
    assert_eq!(obs.metrics().pipeline.events_dropped.with_label_values(&["after_end"]).get(), 3);
    assert!(matches!(events.lock().unwrap()[1].kind, EventKind::ConversationEnded { rating: Some(5), .. }));
}

#[test]
fn a_panicking_sink_or_processor_does_not_stop_the_other_sinks() {
    struct Panics;
    impl Sink for Panics {
        fn name(&self) -> &str {
            "panics"
        }
        fn write(&mut self, _: &[SharedEvent]) -> Result<(), SinkError> {
            panic!("sink bug")
        }
    }
    struct PanicsOnAgent;
    impl serphona_obs::pipeline::Processor for PanicsOnAgent {
        fn process(&mut self, event: Event) -> Option<Event> {
            assert!(event.speaker != Speaker::Agent, "processor bug");
            Some(event)
        }
    }
    let events = Arc::new(Mutex::new(Vec::new()));
    let obs = Observability::builder(quiet_config(1024, WhenFull::Block))
        .processor(PanicsOnAgent)
        .sink(Panics)
        .sink(TestSink { events: events.clone(), gate: None })
        .build()
        .unwrap();
    let conv = obs.start_conversation(ConversationStart::new("t", "a", "c", Channel::Chat));
    conv.track_interaction(Interaction::agent("dropped by the panicking processor"));
    conv.track_interaction(Interaction::customer("kept"));
    conv.end(ConversationEnd::new(Resolution::Resolved));
    obs.shutdown(Duration::from_secs(10)).unwrap();
    assert_eq!(events.lock().unwrap().len(), 3);
    assert!(obs.metrics().pipeline.batches_failed.with_label_values(&["panics"]).get() >= 1);
}

#[test]
fn timestamps_outside_rfc3339_are_clamped_and_the_log_keeps_working() {
    let dir = tempfile::tempdir().unwrap();
    let config = logged_config(dir.path());
    let obs = Observability::init(config).unwrap();
    let far = time::OffsetDateTime::now_utc().replace_year(-5000).unwrap();
    let conv = obs.start_conversation(ConversationStart::new("t", "a", "c", Channel::Chat).at(far));
    // 9999-12-31 23:00 at UTC-05:00 is in the year 10000 in UTC.
    let past_the_end = time::macros::datetime!(9999-12-31 23:00 -05:00);
    conv.track_interaction(Interaction::customer("hi").at(past_the_end));
    // An offset with seconds, which RFC 3339 cannot write.
    let odd_offset = time::OffsetDateTime::now_utc().to_offset(time::UtcOffset::from_hms(1, 0, 30).unwrap());
    conv.track_interaction(Interaction::agent("hello").at(odd_offset));
    conv.end(ConversationEnd::new(Resolution::Resolved));
    let next = obs.start_conversation(ConversationStart::new("t", "a", "c", Channel::Chat));
    next.end(ConversationEnd::new(Resolution::Resolved));
    obs.shutdown(Duration::from_secs(10)).unwrap();
    let text = std::fs::read_to_string(dir.path().join("events/events-000001.jsonl")).unwrap();
    let events: Vec<Event> = text.lines().map(|l| Event::from_json(l).unwrap()).collect();
    assert_eq!(events.len(), 6);
    assert_eq!(events[0].timestamp.year(), 0);
    assert_eq!(events[1].timestamp.year(), 9999);
    assert_eq!(events[2].timestamp.offset(), time::UtcOffset::UTC);
}

#[test]
fn dropping_the_library_without_shutdown_still_delivers() {
    let (obs, events, _) = with_sink(quiet_config(1024, WhenFull::DropNewest), false);
    let conv = obs.start_conversation(ConversationStart::new("t", "a", "c", Channel::Chat));
    for i in 0..100 {
        conv.track_interaction(Interaction::customer(format!("{i}")));
    }
    conv.end(ConversationEnd::new(Resolution::Resolved));
    drop(obs); // the last handle: no shutdown call
    assert_eq!(events.lock().unwrap().len(), 102);
}

// Issue 16: usage is priced when recorded, and turn-taking is derived from the turn times:
// silence, dead air, an overlap nobody called an interruption, a barge-in the caller gave,
// talk time; the end carries the sums, and the metrics count each once.
#[test]
fn usage_is_priced_and_turn_taking_is_derived_from_turn_times() {
    let (obs, events, _) = with_sink(quiet_config(1024, WhenFull::DropNewest), false);
    let t0 = time::OffsetDateTime::now_utc() - time::Duration::minutes(5);
    let ms = |n: i64| t0 + time::Duration::milliseconds(n);
    let conv = obs.start_conversation(ConversationStart::new("t", "a", "c", Channel::Voice).at(t0));
    // The greeting at 800 ms: its latency is measured from the start.
    conv.track_interaction(Interaction::agent("hello").duration_ms(1000.0).at(ms(800)));
    // 3.2 s of silence after the greeting ended at 1.8 s: dead air (threshold 2 s).
    conv.track_interaction(
        Interaction::customer("my bill").duration_ms(2000.0).at(ms(5000)).usage(Usage::default().stt_seconds(2.0)),
    );
    // The agent starts 300 ms before the customer finished (7.0 s): talking over, derived.
    conv.track_interaction(
        Interaction::agent("let me look")
            .duration_ms(3000.0)
            .at(ms(6700))
            .usage(Usage::llm("gpt-4o-mini", 1000, 200).cached_tokens(400)),
    );
    // The customer barges in on the next agent turn; the caller says so, with the overlap. The
    // customer's turn overlaps it, but that interruption is already counted.
    conv.track_interaction(
        Interaction::agent("your bill is")
            .duration_ms(4000.0)
            .at(ms(10_000))
            .interrupted_by(TurnSpeaker::Customer, Some(600.0))
            .usage(Usage::llm("my-own-llm", 10, 10)),
    );
    conv.track_interaction(Interaction::customer("wait").duration_ms(500.0).at(ms(13_400)));
    conv.track_decision(Decision::new(DecisionType::LlmCall, "gpt-4o-mini", "summary").usage(Usage::llm("gpt-4o-mini", 100, 0)));
    conv.end(ConversationEnd::new(Resolution::Resolved).at(ms(20_000)));
    obs.shutdown(Duration::from_secs(10)).unwrap();
    let events = events.lock().unwrap();
    let turns: Vec<&Event> = events.iter().filter(|e| e.kind.turn_marks().is_some()).collect();
    assert_eq!(turns.len(), 5);
    let marks: Vec<TurnMarks> = turns.iter().map(|e| *e.kind.turn_marks().unwrap()).collect();
    assert_eq!(turns[0].kind.latency().and_then(|l| l.greeting_ms), Some(800.0));
    assert_eq!(marks[0].gap_ms, None);
    assert_eq!((marks[1].gap_ms, marks[1].dead_air_ms), (Some(3200.0), Some(3200.0)));
    assert_eq!(marks[2].gap_ms, Some(-300.0));
    assert_eq!(marks[2].interruption, Some(Interruption { by: TurnSpeaker::Agent, overlap_ms: Some(300.0), derived: true }));
    assert_eq!(marks[3].interruption, Some(Interruption { by: TurnSpeaker::Customer, overlap_ms: Some(600.0), derived: false }));
    assert!(turns[3].kind.latency().unwrap().interrupted, "a barge-in sets latency.interrupted");
    assert_eq!(marks[4].interruption, None, "the barge-in is counted once");
    // Costs: 600 fresh × 0.15 + 400 cached × 0.075 + 200 × 0.60 per 1M tokens.
    let llm = turns[2].kind.usage().unwrap();
    assert!((llm.cost_usd.unwrap() - 0.00024).abs() < 1e-12, "{llm:?}");
    let stt = turns[1].kind.usage().unwrap();
    assert!((stt.cost_usd.unwrap() - 2.0 / 60.0 * 0.0077).abs() < 1e-12);
    let unknown = turns[3].kind.usage().unwrap();
    assert_eq!((unknown.cost_usd, unknown.unpriced.clone()), (None, vec!["my-own-llm".to_string()]));
    let EventKind::ConversationEnded { usage: Some(total), turn_taking: Some(tt), .. } = &events.last().unwrap().kind else {
        panic!("the end carries the sums: {:?}", events.last());
    };
    assert_eq!((total.input_tokens, total.output_tokens, total.cached_tokens), (Some(1110), Some(210), Some(400)));
    let expected = 0.00024 + 2.0 / 60.0 * 0.0077 + 100.0 * 0.15 / 1e6;
    assert!((total.cost_usd.unwrap() - expected).abs() < 1e-12);
    assert_eq!(total.model, None, "two models: no one model");
    assert_eq!((tt.interruptions_by_customer, tt.interruptions_by_agent), (1, 1));
    assert_eq!((tt.overlap_ms, tt.dead_air_count, tt.dead_air_ms), (900.0, 1, 3200.0));
    assert_eq!((tt.agent_talk_ms, tt.customer_talk_ms), (8000.0, 2500.0));
    let m = obs.metrics();
    assert_eq!(m.llm_tokens.with_label_values(&["t", "gpt-4o-mini", "input"]).get(), 1100);
    assert_eq!(m.llm_tokens.with_label_values(&["t", "gpt-4o-mini", "cached"]).get(), 400);
    assert_eq!(m.usage_unpriced.with_label_values(&["t", "my-own-llm"]).get(), 1);
    let cost: f64 = ["gpt-4o-mini", "deepgram-nova-3"].iter().map(|n| m.cost_usd.with_label_values(&["t", n]).get()).sum();
    assert!((cost - expected).abs() < 1e-12);
    assert_eq!(m.interruptions.with_label_values(&["t", "customer"]).get(), 1);
    assert_eq!(m.interruptions.with_label_values(&["t", "agent"]).get(), 1);
    assert_eq!(m.dead_air.with_label_values(&["t"]).get(), 1);
    assert_eq!(m.talk_seconds.with_label_values(&["t", "agent"]).get(), 8.0);
    // The line reads back the same.
    for e in events.iter() {
        assert_eq!(&Event::from_json(&e.to_json().unwrap()).unwrap(), e);
    }
}
