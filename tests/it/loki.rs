//! The Loki push sink against an in-test push receiver (issue 6): every event line arrives
//! once, in low-cardinality streams with the ids as structured metadata and each stream's
//! lines in time order; 5xx and 429 are retried, other 4xx are not; a Loki that is down,
//! hangs or rejects costs counters and one log line, never the caller or the event log.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use serphona_obs::config::{Endpoint, OptionalEndpoint};
use serphona_obs::sinks::event_log::{event_log_dir, list_segments};
use serphona_obs::simulation::{self, Pace, SimConfig};
use serphona_obs::types::*;
use serphona_obs::{Config, Observability};

use crate::support::loki::{Receiver, Reply};

const WAIT: Duration = Duration::from_secs(30);
const SINK: &str = "loki";

#[allow(clippy::field_reassign_with_default)] // the way the crate docs show it
fn loki_config(dir: &Path, endpoint: &str) -> Config {
    let mut config = Config::default();
    config.service_name = "loki-it".into();
    config.environment = "ci".into();
    config.data_dir = dir.to_path_buf();
    config.metrics.enabled = false;
    config.tracing.enabled = false;
    config.logging.loki_endpoint = OptionalEndpoint(Some(Endpoint::parse(endpoint).unwrap()));
    config.logging.loki_tenant = "acme-ops".into();
    config
}

fn simulate(obs: &Observability, conversations: usize, seed: u64) {
    let sim = SimConfig { conversations, seed, rate: 50.0, concurrency: 8, pace: Pace::Fast, run_id: None };
    let report = simulation::run(obs, &sim, &AtomicBool::new(false), |_| {}).expect("simulate");
    assert_eq!(report.ended, conversations);
}

/// Every line of the local event log, in file order.
fn local_lines(data_dir: &Path) -> Vec<String> {
    let mut lines = Vec::new();
    for (_, path) in list_segments(&event_log_dir(data_dir)).unwrap() {
        lines.extend(std::fs::read_to_string(path).unwrap().lines().map(str::to_string));
    }
    assert!(!lines.is_empty(), "the local event log is empty");
    let unique: BTreeSet<&String> = lines.iter().collect();
    assert_eq!(unique.len(), lines.len(), "the local event log has each event once");
    lines
}

fn sorted(mut lines: Vec<String>) -> Vec<String> {
    lines.sort();
    lines
}

/// The self-metric `name` with `sink="loki"`.
fn counter(obs: &Observability, name: &str) -> u64 {
    let m = &obs.metrics().pipeline;
    let vec = match name {
        "exported" => &m.events_exported,
        "failed" => &m.events_failed,
        "batches_failed" => &m.batches_failed,
        "delivered" => &m.events_delivered,
        "retries" => &m.export_retries,
        other => panic!("no counter {other}"),
    };
    vec.with_label_values(&[SINK]).get()
}

/// Waits until `done` holds (the sink's thread counts after the caller's call returned when a
/// deadline cut it short); panics with `what` after `WAIT`.
fn wait_until(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !done() {
        assert!(Instant::now() < deadline, "{what} did not happen within {WAIT:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `f` on a thread; fails the test if it has not returned within `limit`.
fn returns_within<T: Send + 'static>(limit: Duration, what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let worker = std::thread::spawn(f);
    let deadline = Instant::now() + limit;
    while !worker.is_finished() {
        assert!(Instant::now() < deadline, "{what} did not return within {limit:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
    worker.join().unwrap()
}

fn nanos(line: &serde_json::Value) -> String {
    let ts = line["timestamp"].as_str().unwrap();
    time::OffsetDateTime::parse(ts, &time::format_description::well_known::Rfc3339).unwrap().unix_timestamp_nanos().to_string()
}

#[test]
fn issue_6_every_line_arrives_once_in_low_cardinality_streams_with_the_ids_as_metadata() {
    let receiver = Receiver::start();
    let dir = tempfile::tempdir().unwrap();
    let obs = Observability::init(loki_config(dir.path(), &receiver.endpoint())).unwrap();

    // Turns recorded newest first: one push, whose stream must have them oldest first.
    let conv = obs.start_conversation(ConversationStart::new("order-tenant", "order-agent", "cust", Channel::Chat));
    let base = time::OffsetDateTime::now_utc() - time::Duration::minutes(5);
    for i in 0..5 {
        conv.track_interaction(Interaction::agent(format!("reply {i}")).at(base + time::Duration::seconds(10 - 2 * i)));
    }
    conv.end(ConversationEnd::new(Resolution::Resolved));
    obs.flush(WAIT).unwrap();
    let first = receiver.accepted();
    assert_eq!(first.len(), 1, "a flush pushes what is buffered, in one push");
    let replies: Vec<&str> = first[0]
        .streams
        .iter()
        .filter(|s| s.labels["event_type"] == "interaction.agent")
        .flat_map(|s| s.values.iter().map(|v| v.line.as_str()))
        .collect();
    let contents: Vec<String> =
        replies.iter().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["content"].as_str().unwrap().to_string()).collect();
    assert_eq!(contents, ["reply 4", "reply 3", "reply 2", "reply 1", "reply 0"], "each stream sorted by timestamp");

    simulate(&obs, 100, 6);
    obs.shutdown(WAIT).unwrap();

    let local = local_lines(dir.path());
    let received = receiver.accepted_lines();
    assert_eq!(received.len(), local.len(), "every line once: {} received, {} in the event log", received.len(), local.len());
    assert_eq!(sorted(received), sorted(local.clone()), "the pushed lines are the event log's lines");

    let label_keys: BTreeSet<&str> = ["service", "environment", "level", "event_type"].into();
    let mut streams = BTreeSet::new();
    for push in receiver.pushes() {
        assert_eq!(push.header("content-encoding"), Some("gzip"));
        assert_eq!(push.header("content-type"), Some("application/json"));
        assert_eq!(push.header("x-scope-orgid"), Some("acme-ops"), "logging.loki_tenant as X-Scope-OrgID");
        for stream in &push.streams {
            let keys: BTreeSet<&str> = stream.labels.keys().map(String::as_str).collect();
            assert_eq!(keys, label_keys, "stream labels are exactly these: {:?}", stream.labels);
            assert_eq!(stream.labels["service"], "loki-it");
            assert_eq!(stream.labels["environment"], "ci");
            streams.insert(stream.labels.clone());
            let ts: Vec<i64> = stream.values.iter().map(|v| v.ts.parse().unwrap()).collect();
            assert!(ts.windows(2).all(|w| w[0] <= w[1]), "lines of a stream in timestamp order within a push: {ts:?}");
            for value in &stream.values {
                let line: serde_json::Value = serde_json::from_str(&value.line).unwrap();
                assert_eq!(line["level"], stream.labels["level"].as_str());
                assert_eq!(line["event_type"], stream.labels["event_type"].as_str());
                assert_eq!(value.ts, nanos(&line), "the entry's timestamp is the event's, in nanoseconds");
                let expected: BTreeMap<String, String> = ["tenant_id", "conversation_id", "trace_id"]
                    .iter()
                    .map(|k| (k.to_string(), line[*k].as_str().unwrap().to_string()))
                    .collect();
                assert_eq!(value.metadata.as_ref(), Some(&expected), "structured metadata");
            }
        }
    }
    // Many tenants and conversations, few streams: one per level and event type.
    assert!(streams.len() <= 8 * 4 && streams.len() >= 6, "{} streams: {streams:?}", streams.len());

    assert_eq!(counter(&obs, "delivered"), local.len() as u64);
    assert_eq!(counter(&obs, "exported"), local.len() as u64);
    assert_eq!(counter(&obs, "failed"), 0);
    assert_eq!(counter(&obs, "retries"), 0);
}

#[test]
fn pushes_answered_5xx_or_429_are_retried_until_every_line_arrived_once() {
    let receiver = Receiver::start();
    receiver.script([
        Reply::Status(500, "internal error".into()),
        Reply::Status(429, "Ingestion rate limit exceeded".into()),
        Reply::Status(503, "ingester not ready".into()),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let obs = Observability::init(loki_config(dir.path(), &receiver.endpoint())).unwrap();
    simulate(&obs, 20, 7);
    obs.flush(WAIT).unwrap();
    let local = local_lines(dir.path());
    // The background retries deliver it: no shutdown needed.
    let received = receiver.wait_for_lines(WAIT, "every line", |lines| lines.len() >= local.len());
    obs.shutdown(WAIT).unwrap();

    assert_eq!(sorted(received), sorted(local.clone()), "every line once");
    assert_eq!(receiver.accepted_lines().len(), local.len(), "nothing more after shutdown");
    let pushes = receiver.pushes();
    let answered: Vec<u16> = pushes.iter().map(|p| p.answered).take(4).collect();
    assert_eq!(answered, [500, 429, 503, 204]);
    assert_eq!(pushes[0].streams, pushes[3].streams, "a retry sends the same batch");
    assert_eq!(counter(&obs, "retries"), 3, "each failed attempt is counted");
    assert_eq!(counter(&obs, "failed"), 0, "nothing was lost");
    assert_eq!(counter(&obs, "delivered"), local.len() as u64);
}

/// What a Loki that is down or hangs must not do: slow the calls or shutdown, or cost the
/// event log anything. The failures are counted, and shutdown finishes by its deadline.
fn check_loki_down(endpoint: String, flush: bool, before_shutdown: impl FnOnce()) {
    let dir = tempfile::tempdir().unwrap();
    let obs = Observability::init(loki_config(dir.path(), &endpoint)).unwrap();
    let calls = obs.clone();
    returns_within(WAIT, "recording conversations", move || {
        simulate(&calls, 50, 8);
        let conv = calls.start_conversation(ConversationStart::new("t", "a", "c", Channel::Voice));
        conv.track_interaction(Interaction::customer("is anyone there?"));
        conv.end(ConversationEnd::new(Resolution::Abandoned));
        if flush {
            calls.flush(WAIT).expect("a flush with Loki down is not an error");
        }
    });
    before_shutdown();
    let stopping = obs.clone();
    let result = returns_within(Duration::from_secs(10), "shutdown(2s)", move || stopping.shutdown(Duration::from_secs(2)));
    // Not a timeout: the sink gives up a push in flight at the deadline and counts the rest.
    assert!(result.is_ok(), "{result:?}");

    let local = local_lines(dir.path());
    let ended = local.iter().filter(|l| l.contains("\"conversation.ended\"")).count();
    assert_eq!(ended, 51, "the local event log has every conversation");
    let lines = local.len() as u64;
    // Issue 14: not dropped, kept in the event log past the sink's committed position.
    let pending = || obs.metrics().pipeline.events_pending.with_label_values(&[SINK]).get() as u64;
    wait_until("every line counted as kept for the next start", || pending() == lines);
    assert_eq!(counter(&obs, "failed"), 0, "nothing dropped: the event log keeps it");
    assert_eq!(counter(&obs, "delivered"), 0);
    drop(obs);

    // The next start, with Loki up, pushes them: each line once, byte for byte.
    let receiver = Receiver::start();
    let obs = Observability::init(loki_config(dir.path(), &receiver.endpoint())).unwrap();
    obs.shutdown(WAIT).unwrap();
    assert_eq!(sorted(receiver.accepted_lines()), sorted(local.clone()), "the next start pushed every kept line once");
    assert_eq!(counter(&obs, "delivered"), lines);
    assert_eq!(obs.metrics().pipeline.events_pending.with_label_values(&[SINK]).get(), 0);
    // And the one after has nothing left to push.
    let obs = Observability::init(loki_config(dir.path(), &receiver.endpoint())).unwrap();
    obs.shutdown(WAIT).unwrap();
    assert_eq!(receiver.accepted_lines().len(), local.len(), "a third start pushes nothing again");
}

#[test]
fn a_stopped_loki_costs_a_count_not_the_callers_time_or_the_event_log() {
    let mut receiver = Receiver::start();
    let endpoint = receiver.endpoint();
    receiver.stop(); // the port now refuses connections
    check_loki_down(endpoint, true, || {});
}

#[test]
fn a_hanging_loki_does_not_hold_up_the_calls_or_shutdown() {
    let receiver = Receiver::start();
    receiver.answer(Reply::Hang);
    // Shutdown comes while a push hangs (the batch is due a second after its first line).
    check_loki_down(receiver.endpoint(), false, || {
        let deadline = Instant::now() + WAIT;
        while receiver.pushes().is_empty() {
            assert!(Instant::now() < deadline, "no push reached the receiver");
            std::thread::sleep(Duration::from_millis(20));
        }
    });
}

#[test]
fn a_400_is_not_retried_but_counted() {
    let receiver = Receiver::start();
    receiver.answer(Reply::Status(400, "error at least one label pair is invalid".into()));
    let dir = tempfile::tempdir().unwrap();
    let obs = Observability::init(loki_config(dir.path(), &receiver.endpoint())).unwrap();
    simulate(&obs, 20, 9);
    obs.flush(WAIT).unwrap();
    simulate(&obs, 20, 10);
    obs.flush(WAIT).unwrap();
    obs.shutdown(WAIT).unwrap();

    let local = local_lines(dir.path());
    let pushes = receiver.pushes();
    let sent: Vec<String> = pushes.iter().flat_map(|p| p.values().map(|(_, v)| v.line.clone()).collect::<Vec<_>>()).collect();
    assert_eq!(sorted(sent), sorted(local.clone()), "each line was sent once: a 400 is not retried");
    assert!(pushes.len() >= 2, "two flushes, two pushes at least: {}", pushes.len());
    assert!(pushes.iter().all(|p| p.answered == 400));
    assert_eq!(counter(&obs, "retries"), 0);
    assert_eq!(counter(&obs, "failed"), local.len() as u64);
    assert_eq!(counter(&obs, "batches_failed"), pushes.len() as u64);
    assert_eq!(counter(&obs, "delivered"), 0);
}

#[test]
fn a_partial_400_counts_only_the_lines_loki_ignored() {
    let receiver = Receiver::start();
    receiver.script([Reply::Status(
        400,
        "entry with timestamp 2024-01-01 00:00:00 +0000 UTC ignored, reason: 'entry too far behind',\n\
         user 'acme-ops', total ignored: 2 out of 9 for stream: {event_type=\"decision.made\"}"
            .into(),
    )]);
    let dir = tempfile::tempdir().unwrap();
    let obs = Observability::init(loki_config(dir.path(), &receiver.endpoint())).unwrap();
    simulate(&obs, 10, 11);
    obs.shutdown(WAIT).unwrap();
    let lines = local_lines(dir.path()).len() as u64;
    assert_eq!(counter(&obs, "failed"), 2);
    assert_eq!(counter(&obs, "delivered"), lines - 2);
    assert_eq!(counter(&obs, "retries"), 0);
}

#[test]
fn a_loki_without_structured_metadata_gets_the_lines_without_it() {
    let receiver = Receiver::start();
    receiver.script([Reply::Status(
        400,
        "stream '{service=\"loki-it\"}' includes structured metadata, but this feature is disallowed. Please see \
         `limits_config.structured_metadata` or contact your Loki administrator to enable it."
            .into(),
    )]);
    let dir = tempfile::tempdir().unwrap();
    let obs = Observability::init(loki_config(dir.path(), &receiver.endpoint())).unwrap();
    simulate(&obs, 10, 12);
    obs.flush(WAIT).unwrap();
    simulate(&obs, 10, 13);
    obs.shutdown(WAIT).unwrap();
    let local = local_lines(dir.path());
    assert_eq!(sorted(receiver.accepted_lines()), sorted(local.clone()), "every line once");
    let pushes = receiver.pushes();
    assert!(pushes[0].values().all(|(_, v)| v.metadata.is_some()));
    assert!(pushes[1..].iter().all(|p| p.values().all(|(_, v)| v.metadata.is_none())), "no metadata after the refusal");
    assert_eq!(counter(&obs, "failed"), 0);
}

/// Runs `serphona-obs simulate` with its Loki at `endpoint`; returns its stderr, stdout and
/// data dir.
fn simulate_cli(endpoint: &str, conversations: usize) -> (String, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let out = crate::support::bin()
        .args(["--data-dir", dir.path().to_str().unwrap(), "simulate", "--conversations", &conversations.to_string(), "--seed", "4"])
        .env("SERPHONA_OBS_LOGGING_LOKI_ENDPOINT", endpoint)
        .env("SERPHONA_OBS_LOGGING_LOKI_TENANT", "cli-tenant")
        .env("SERPHONA_OBS_METRICS_ENABLED", "false")
        .env("SERPHONA_OBS_TRACING_ENABLED", "false")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    (stderr, String::from_utf8_lossy(&out.stdout).into_owned(), dir)
}

fn count_lines(text: &str, needle: &str) -> usize {
    text.lines().filter(|l| l.contains(needle)).count()
}

#[test]
fn simulate_with_a_dead_loki_warns_once() {
    let mut receiver = Receiver::start();
    let endpoint = receiver.endpoint();
    receiver.stop();
    let (stderr, stdout, dir) = simulate_cli(&endpoint, 300);
    assert_eq!(count_lines(&stderr, "Loki push to"), 1, "one warning for the whole run, not one per push:\n{stderr}");
    assert_eq!(count_lines(&stderr, "recovered"), 0, "{stderr}");
    // What Loki did not take is kept for the next start, and the summary says how much.
    let kept = format!("{} lines kept for Loki for the next start", local_lines(dir.path()).len());
    assert!(stdout.contains(&kept), "{kept:?} not in:\n{stdout}");
}

#[test]
fn simulate_with_a_loki_failing_once_warns_once_and_logs_the_recovery() {
    let receiver = Receiver::start();
    receiver.script([Reply::Status(503, "ingester not ready".into())]);
    let (stderr, _, dir) = simulate_cli(&receiver.endpoint(), 200);
    assert_eq!(count_lines(&stderr, "Loki push to"), 2, "one warning and one recovery line:\n{stderr}");
    assert_eq!(count_lines(&stderr, "recovered after"), 1, "{stderr}");
    assert_eq!(sorted(receiver.accepted_lines()), sorted(local_lines(dir.path())), "every line once");
    assert!(receiver.pushes().iter().all(|p| p.header("x-scope-orgid") == Some("cli-tenant")));
}

#[test]
fn simulate_with_a_rejecting_loki_logs_the_rejection_once_per_streak() {
    let receiver = Receiver::start();
    receiver.answer(Reply::Status(400, "error at least one label pair is invalid".into()));
    let (stderr, _, dir) = simulate_cli(&receiver.endpoint(), 300);
    let pushes = receiver.pushes();
    assert!(pushes.len() >= 2, "several batches were rejected: {}", pushes.len());
    assert_eq!(count_lines(&stderr, "Loki rejected a push"), 1, "logged once for the streak:\n{stderr}");
    assert!(stderr.contains("400") && stderr.contains("label pair is invalid"), "the status and Loki's message:\n{stderr}");
    let sent: usize = pushes.iter().map(|p| p.values().count()).sum();
    assert_eq!(sent, local_lines(dir.path()).len(), "each line sent once: no retries of a 400");
}

/// Issue 14: a kill -9 of the emitting process loses its in-memory Loki backlog no more. The
/// first push is taken, the second hangs, lines queue behind it; the process is killed; the
/// next start pushes every line of the event log that Loki had not acknowledged, from the
/// sink's positions file. A line already taken may be pushed again (its position not yet
/// committed): Loki drops such a copy (same stream, timestamp and line), so the lines are
/// compared as a set, and the copies are bounded by the first push.
#[test]
fn a_kill_9_of_the_emitter_loses_no_line_of_its_loki_backlog() {
    let receiver = Receiver::start();
    receiver.script([Reply::Ok, Reply::Hang]);
    let dir = tempfile::tempdir().unwrap();
    let scenario = dir.path().join("voice-chat.yaml");
    std::fs::write(
        &scenario,
        "duration: 60s\nconversations_per_hour: 7200\ntenants:\n  - {id: acme-telco, share: 1.0, agents: [acme-billing-bot]}\nchannels: {voice: 0.5, chat: 0.5}\n",
    )
    .unwrap();
    let data = dir.path().join("data");
    let emitter = |args: &[&str]| {
        let mut cmd = crate::support::bin();
        cmd.arg("--data-dir")
            .arg(&data)
            .args(args)
            .env("SERPHONA_OBS_LOGGING_LOKI_ENDPOINT", receiver.endpoint())
            .env("SERPHONA_OBS_METRICS_ENABLED", "false")
            .env("SERPHONA_OBS_TRACING_ENABLED", "false")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        cmd
    };
    let mut child = emitter(&["simulate", "--conversations", "40", "--rate", "80", "--speed", "50", "--concurrency", "20", "--seed", "3"])
        .arg("--scenario")
        .arg(&scenario)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + WAIT;
    while receiver.pushes().len() < 2 {
        assert!(Instant::now() < deadline, "the second push did not come");
        assert!(child.try_wait().unwrap().is_none(), "the emitter exited before its second push");
        std::thread::sleep(Duration::from_millis(10));
    }
    // Lines queue behind the hanging push for a moment.
    std::thread::sleep(Duration::from_millis(1500));
    let _ = child.kill();
    let _ = child.wait();
    let first_push = receiver.accepted_lines().len();
    let killed_at = local_lines(&data).len();
    assert!(first_push > 0 && first_push < killed_at, "a backlog at the kill: {first_push} of {killed_at} lines pushed");

    let out = emitter(&["simulate", "--conversations", "1", "--seed", "999"]).output().unwrap();
    assert!(out.status.success());
    let local = local_lines(&data);
    let received = receiver.accepted_lines();
    let unique: BTreeSet<&String> = received.iter().collect();
    let wanted: BTreeSet<&String> = local.iter().collect();
    let missing = wanted.difference(&unique).count();
    assert_eq!(missing, 0, "{missing} of {} lines of the event log never reached Loki", local.len());
    assert!(unique.is_subset(&wanted), "Loki got a line the event log does not have");
    let copies = received.len() - unique.len();
    assert!(copies <= first_push, "{copies} lines pushed twice, more than the first push ({first_push})");
    println!("kill -9 with {} lines unpushed: after a restart {} of {} lines in Loki, {copies} pushed twice", killed_at - first_push, unique.len(), local.len());
}
