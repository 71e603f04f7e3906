//! Traces over OTLP (issue 4): the span tree of simulated conversations as an OTLP receiver
//! built on `opentelemetry-proto` gets it, over gRPC and over HTTP, checked against the event
//! log's trace and span ids; and an endpoint that is down or hangs.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use serphona_obs::simulation::{self, Pace, SimConfig};
use serphona_obs::store::local::LocalStore;
use serphona_obs::types::*;
use serphona_obs::{Config, Observability};

use crate::support::otlp::{Receiver, Received, Transport};

const WAIT: Duration = Duration::from_secs(30);

#[allow(clippy::field_reassign_with_default)] // the way the crate docs show it
fn traced_config(dir: &std::path::Path, endpoint: String, protocol: serphona_obs::config::Protocol) -> Config {
    let mut config = Config::default();
    config.service_name = "trace-it".into();
    config.service_version = "9.8.7".into();
    config.environment = "ci".into();
    config.data_dir = dir.to_path_buf();
    config.metrics.enabled = false;
    config.tracing.endpoint = serphona_obs::config::Endpoint::parse(&endpoint).unwrap();
    config.tracing.protocol = protocol;
    config
}

fn simulate(obs: &Observability, conversations: usize, seed: u64) {
    let sim = SimConfig { conversations, seed, rate: 50.0, concurrency: 8, pace: Pace::Fast, run_id: None };
    let report = simulation::run(obs, &sim, &AtomicBool::new(false), |_| {}).expect("simulate");
    assert_eq!(report.ended, conversations);
}

fn nanos(t: time::OffsetDateTime) -> u64 {
    t.unix_timestamp_nanos() as u64
}

/// Runs 25 simulated conversations to `transport` and checks every trace against the event log.
fn check_simulated_traces(transport: Transport) {
    let receiver = Receiver::start(transport);
    let dir = tempfile::tempdir().unwrap();
    let obs = Observability::init(traced_config(dir.path(), receiver.endpoint(), receiver.protocol())).unwrap();
    simulate(&obs, 25, 11);
    obs.shutdown(WAIT).expect("shutdown delivers the spans");
    let events = LocalStore::open(dir.path()).read_all().unwrap();
    let with_span = events.iter().filter(|e| serphona_obs::trace::tree::span_name(&e.kind).is_some()).count();
    let expected = 25 + with_span;
    let spans = receiver.wait_for(WAIT, &format!("{expected} spans"), |s| s.len() >= expected);
    assert_eq!(spans.len(), expected, "one root per conversation plus one child per turn, decision and transfer");

    let by_id: HashMap<String, &Received> = spans.iter().map(|s| (s.span_id(), s)).collect();
    assert_eq!(by_id.len(), spans.len(), "span ids are unique");
    let mut by_conversation: BTreeMap<&str, Vec<&Event>> = BTreeMap::new();
    for e in &events {
        by_conversation.entry(&e.conversation_id).or_default().push(e);
    }
    assert_eq!(by_conversation.len(), 25);
    let mut rated = 0;
    for (id, events) in &by_conversation {
        let trace = events[0].trace.trace_id.to_string();
        assert!(events.iter().all(|e| e.trace.trace_id.to_string() == trace), "{id}: one trace id in every event");
        let in_trace: Vec<&Received> = spans.iter().filter(|s| s.trace_id() == trace).collect();
        let roots: Vec<&&Received> = in_trace.iter().filter(|s| s.parent_span_id().is_empty()).collect();
        assert_eq!(roots.len(), 1, "{id}: one root");
        let root = roots[0];
        assert_eq!(root.name(), "conversation");
        let start = events.iter().find(|e| e.event_type() == EventType::ConversationStarted).unwrap();
        let end = events.iter().find(|e| e.event_type() == EventType::ConversationEnded).unwrap();
        assert_eq!(root.span_id(), start.trace.span_id.to_string(), "{id}: the start event carries the root's id");
        assert_eq!(root.span_id(), end.trace.span_id.to_string(), "{id}: so does the end event");
        assert_eq!(root.span.start_time_unix_nano, nanos(start.timestamp));
        assert_eq!(root.span.end_time_unix_nano, nanos(end.timestamp));
        let EventKind::ConversationStarted { customer_id, channel, language } = &start.kind else { unreachable!() };
        let EventKind::ConversationEnded { resolution, rating, interaction_count, duration_seconds, .. } = &end.kind else {
            unreachable!()
        };
        let expect = [
            ("tenant_id", start.tenant_id.to_string()),
            ("conversation_id", id.to_string()),
            ("gen_ai.conversation.id", id.to_string()),
            ("agent_id", start.agent_id.to_string()),
            ("customer_id", customer_id.clone()),
            ("channel", channel.to_string()),
            ("language", language.clone()),
            ("interaction_count", interaction_count.to_string()),
            ("duration_seconds", duration_seconds.to_string()),
            ("resolution", resolution.to_string()),
        ];
        for (key, value) in expect {
            assert_eq!(root.attr(key).as_deref(), Some(value.as_str()), "{id}: root attribute {key}");
        }
        assert_eq!(root.attr("rating"), rating.map(|r| r.to_string()), "{id}: rating");
        rated += usize::from(rating.is_some());
        let root_events = root.event_names();
        assert_eq!(root_events.first().map(String::as_str), Some("conversation_started"));
        assert_eq!(root_events.last().map(String::as_str), Some("conversation_ended"));
        assert_eq!(root.resource.get("service.name").map(String::as_str), Some("trace-it"));
        assert_eq!(root.resource.get("service.version").map(String::as_str), Some("9.8.7"));
        assert_eq!(root.resource.get("deployment.environment").map(String::as_str), Some("ci"));

        // Every turn, decision and transfer: its own child of the root, the same ids as its event.
        let mut children = 0;
        for e in events {
            let Some(name) = serphona_obs::trace::tree::span_name(&e.kind) else { continue };
            children += 1;
            let span = by_id.get(&e.trace.span_id.to_string()).unwrap_or_else(|| panic!("{id}: no span for {:?}", e.kind));
            assert_eq!(span.trace_id(), trace);
            assert_eq!(span.parent_span_id(), root.span_id(), "{id}: {name} is a child of the conversation");
            assert_eq!(e.trace.parent_span_id.map(|p| p.to_string()), Some(root.span_id()));
            assert_eq!(span.name(), name);
            assert!(span.span.start_time_unix_nano <= span.span.end_time_unix_nano, "{id}: {name} starts before it ends");
            let (s, t) = serphona_obs::trace::tree::span_times(e);
            assert_eq!((span.span.start_time_unix_nano, span.span.end_time_unix_nano), (nanos(s), nanos(t)));
            let names = span.event_names();
            let first = match &e.kind {
                EventKind::AgentTurn { .. } => "agent_message",
                EventKind::CustomerTurn { .. } => "customer_message",
                EventKind::DecisionMade { decision_type: DecisionType::IntentDetection, .. } => "intent_classified",
                EventKind::DecisionMade { .. } => "decision_made",
                EventKind::TransferInitiated { .. } => "transfer_initiated",
                _ => unreachable!(),
            };
            assert_eq!(names.first().map(String::as_str), Some(first), "{id}: {name} events {names:?}");
            assert_eq!(span.attr("gen_ai.conversation.id").as_deref(), Some(*id));
        }
        assert_eq!(in_trace.len(), 1 + children, "{id}: nothing else in the trace");
    }
    assert!(rated > 0, "some conversations were rated (the rating attribute was checked on them)");
    let kinds: std::collections::BTreeSet<&str> = spans.iter().map(Received::name).collect();
    for name in ["conversation", "interaction.agent", "interaction.customer", "decision.intent_detection", "transfer.initiated"] {
        assert!(kinds.contains(name), "the simulation made a {name} span; got {kinds:?}");
    }
}

#[test]
fn simulated_conversations_arrive_as_one_trace_each_over_otlp_grpc() {
    check_simulated_traces(Transport::Grpc);
}

#[test]
fn simulated_conversations_arrive_as_one_trace_each_over_otlp_http() {
    check_simulated_traces(Transport::Http);
}

#[test]
fn a_helper_span_is_a_child_of_the_conversation_from_sync_and_async_code() {
    let receiver = Receiver::start(Transport::Grpc);
    let dir = tempfile::tempdir().unwrap();
    let obs = Observability::init(traced_config(dir.path(), receiver.endpoint(), receiver.protocol())).unwrap();
    let conv = obs.start_conversation(ConversationStart::new("t1", "bot", "c1", Channel::Chat));
    let answer = conv.in_span("llm.call", |cx| {
        use opentelemetry::trace::TraceContextExt;
        cx.span().set_attribute(opentelemetry::KeyValue::new("llm.model", "small"));
        // Inside, the current context is the helper span, and it knows its conversation.
        let current = obs.current_conversation().expect("the conversation is current");
        assert_eq!(current.id(), conv.id());
        42
    });
    assert_eq!(answer, 42);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let tool = rt.block_on(conv.in_span_async("tool.call", async {
        tokio::time::sleep(Duration::from_millis(20)).await;
        "done"
    }));
    assert_eq!(tool, "done");
    let trace = conv.trace_id().to_string();
    let root = conv.span_id().to_string();
    conv.end(ConversationEnd::new(Resolution::Resolved));
    obs.shutdown(WAIT).unwrap();
    let spans = receiver.wait_for(WAIT, "3 spans", |s| s.len() >= 3);
    let llm = spans.iter().find(|s| s.name() == "llm.call").expect("llm.call span");
    let tool = spans.iter().find(|s| s.name() == "tool.call").expect("tool.call span");
    for span in [llm, tool] {
        assert_eq!(span.trace_id(), trace);
        assert_eq!(span.parent_span_id(), root);
    }
    assert_eq!(llm.attr("llm.model").as_deref(), Some("small"));
    assert!(tool.span.end_time_unix_nano - tool.span.start_time_unix_nano >= 20_000_000, "the async span covers the await");
}

#[test]
fn a_dead_otlp_endpoint_costs_a_count_not_a_block_or_a_log_line_per_span() {
    // Connection refused: a port that was free a moment ago.
    let closed = crate::support::free_addr();
    let dir = tempfile::tempdir().unwrap();
    let obs =
        Observability::init(traced_config(dir.path(), format!("http://{closed}"), serphona_obs::config::Protocol::Grpc)).unwrap();
    simulate(&obs, 100, 3);
    obs.flush(WAIT).expect("a refused export is counted, not an error of flush");
    let m = &obs.metrics().pipeline;
    let failed = m.events_failed.with_label_values(&["otlp"]).get();
    let batches = m.batches_failed.with_label_values(&["otlp"]).get();
    assert!(failed > 0 && batches > 0, "failures counted: {failed} spans in {batches} batches");
    assert_eq!(m.events_exported.with_label_values(&["otlp"]).get(), 0);
    // The event log got everything regardless.
    obs.shutdown(WAIT).unwrap();
    let events = LocalStore::open(dir.path()).read_all().unwrap();
    assert_eq!(events.iter().filter(|e| e.event_type() == EventType::ConversationEnded).count(), 100);
}

#[test]
fn a_hanging_otlp_endpoint_does_not_hold_up_the_calls_or_shutdown() {
    // Accepts connections and never answers.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let held = std::thread::spawn(move || listener.incoming().take(64).filter_map(Result::ok).collect::<Vec<_>>());
    let dir = tempfile::tempdir().unwrap();
    let obs =
        Observability::init(traced_config(dir.path(), format!("http://{addr}"), serphona_obs::config::Protocol::Grpc)).unwrap();
    let done = std::sync::Arc::new(AtomicBool::new(false));
    let flag = done.clone();
    let worker = std::thread::spawn(move || {
        simulate(&obs, 200, 5);
        flag.store(true, std::sync::atomic::Ordering::SeqCst);
        // Shutdown gives up after its timeout (the export hangs), with a typed error.
        obs.shutdown(Duration::from_secs(1))
    });
    let deadline = std::time::Instant::now() + WAIT;
    while !worker.is_finished() {
        assert!(std::time::Instant::now() < deadline, "the calls or shutdown hung on the OTLP endpoint");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(done.load(std::sync::atomic::Ordering::SeqCst));
    let result = worker.join().unwrap();
    assert!(matches!(result, Ok(()) | Err(serphona_obs::Error::Trace(_))), "{result:?}");
    drop(held);
}

#[test]
fn simulate_with_a_dead_endpoint_warns_once() {
    let closed = crate::support::free_addr();
    let dir = tempfile::tempdir().unwrap();
    let out = crate::support::bin()
        .args(["--data-dir", dir.path().to_str().unwrap(), "simulate", "--conversations", "300", "--seed", "4"])
        .env("SERPHONA_OBS_TRACING_ENDPOINT", format!("http://{closed}"))
        .env("SERPHONA_OBS_METRICS_ENABLED", "false")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let warnings = stderr.lines().filter(|l| l.contains("OTLP span export to")).count();
    assert_eq!(warnings, 1, "one warning for the whole run, not one per span:\n{stderr}");
}

#[test]
fn conversation_lookup_by_id_forgets_ended_and_dropped_conversations() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = traced_config(dir.path(), "http://127.0.0.1:9".into(), serphona_obs::config::Protocol::Grpc);
    config.tracing.enabled = false;
    let obs = Observability::init(config).unwrap();
    let ended = obs.start_conversation(ConversationStart::new("t", "a", "c", Channel::Chat));
    let dropped = obs.start_conversation(ConversationStart::new("t", "a", "c", Channel::Chat));
    let (ended_id, dropped_id) = (ended.id().to_string(), dropped.id().to_string());
    let found = obs.conversation(&ended_id).expect("a live conversation is found by id");
    assert_eq!(found.trace_id(), ended.trace_id());
    assert!(!found.is_joined());
    drop(found);
    ended.end(ConversationEnd::new(Resolution::Resolved));
    drop(dropped);
    assert!(obs.conversation(&ended_id).is_none(), "ended");
    assert!(obs.conversation(&dropped_id).is_none(), "dropped (ended as abandoned)");
    // Ids still flow with tracing off: events of one conversation share a valid trace id.
    obs.shutdown(WAIT).unwrap();
    let events = LocalStore::open(dir.path()).read_all().unwrap();
    assert_eq!(events.len(), 4);
    let of_ended: Vec<_> = events.iter().filter(|e| *e.conversation_id == *ended_id).collect();
    assert!(of_ended.iter().all(|e| e.trace.trace_id == of_ended[0].trace.trace_id));
    assert_ne!(of_ended[0].trace.trace_id, opentelemetry::trace::TraceId::INVALID);
}

#[test]
fn a_joined_handle_on_a_context_without_a_span_keeps_its_spans_in_one_trace() {
    let receiver = Receiver::start(Transport::Grpc);
    let dir = tempfile::tempdir().unwrap();
    let obs = Observability::init(traced_config(dir.path(), receiver.endpoint(), receiver.protocol())).unwrap();
    // A context that names a conversation of another service but carries no span.
    let cx = opentelemetry::Context::new().with_value(serphona_obs::trace::ConversationRef {
        conversation_id: "remote-1".into(),
        tenant_id: "acme".into(),
        agent_id: "bot".into(),
        header: "x-conversation-id".into(),
    });
    let joined = obs.join_conversation(&cx).expect("the context names a conversation");
    assert!(joined.is_joined());
    joined.track_interaction(Interaction::customer("one"));
    joined.track_interaction(Interaction::agent("two"));
    let trace = joined.trace_id().to_string();
    drop(joined);
    obs.shutdown(WAIT).unwrap();
    let spans = receiver.wait_for(WAIT, "2 spans", |s| s.len() >= 2);
    assert_eq!(spans.len(), 2);
    for s in &spans {
        assert_eq!(s.trace_id(), trace, "{} is in the handle's trace", s.name());
    }
    let events = LocalStore::open(dir.path()).read_all().unwrap();
    assert_eq!(events.len(), 2, "a joined handle neither starts nor ends the conversation");
    assert!(events.iter().all(|e| e.trace.trace_id.to_string() == trace));
}
