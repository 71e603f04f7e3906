//! `query` (issue 5): the real binary over the same data in the local event log and in ClickHouse
//! (the real engine, see support::clickhouse), usage errors, and the local store's id lookups
//! (which search the log for the id before parsing) against a full parse.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use serphona_obs::config::{Compression, Endpoint};
use serphona_obs::store::local::LocalStore;
use serphona_obs::store::{Store, StoreError};
use serphona_obs::types::*;
use serphona_obs::{Config, Observability};
use time::OffsetDateTime;

use crate::support::clickhouse::ClickHouse;

fn text(o: &Output) -> String {
    format!("status {:?}\nstdout:\n{}\nstderr:\n{}", o.status, String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
}

fn bin(ch: &ClickHouse, db: &str, data_dir: &Path) -> Command {
    ch.cli(db, data_dir)
}

/// The library's config writing both the event log in `data_dir` and ClickHouse's `db`.
fn both_sinks(ch: &ClickHouse, db: &str, data_dir: &Path) -> Config {
    let mut c = Config { data_dir: data_dir.to_path_buf(), ..Config::default() };
    c.metrics.enabled = false;
    c.tracing.enabled = false;
    c.clickhouse.enabled = true;
    c.clickhouse.endpoint = Endpoint::parse(&ch.url()).unwrap();
    c.clickhouse.database = db.to_string();
    c.clickhouse.compression = Compression::None;
    c.clickhouse.flush_interval = Duration::from_millis(200);
    c
}

/// The known conversation's id.
const KNOWN: &str = "conv-known-7";

/// A conversation with every kind of event at fixed offsets from `base`: turns with intents and
/// sentiment, decisions, an error and a violation in the middle, a transfer, an end with a
/// rating. Returns its trace id.
fn record_known(obs: &Observability, base: OffsetDateTime) -> String {
    let at = |ms: i64| base + time::Duration::milliseconds(ms);
    let conv = obs.start_conversation(
        ConversationStart::new("acme-telco", "billing-bot", "cust-42", Channel::Voice).id(KNOWN).meta("campaign", "spring").at(at(0)),
    );
    conv.track_interaction(
        Interaction::customer("My bill is twice what it should be.")
            .sentiment(-0.6)
            .intent("billing_dispute", 0.92)
            .duration_ms(1200.0)
            .at(at(1_000)),
    );
    conv.track_decision(
        Decision::new(DecisionType::IntentDetection, "billing_dispute", "the customer's first statement")
            .confidence(0.92)
            .duration_ms(120.0)
            .at(at(2_420)),
    );
    conv.track_interaction(Interaction::agent("I can see a duplicate charge; let me check it.").sentiment(0.3).duration_ms(2100.0).at(at(3_200)));
    conv.track_decision(
        Decision::new(DecisionType::ToolCall, "billing.lookup_invoice", "look up the invoice").confidence(0.97).duration_ms(800.0).at(at(6_000)),
    );
    conv.track_error_at("llm_timeout", "the model did not answer within 10 s", Some(at(35_100)));
    conv.track_interaction(Interaction::customer("Hello? Are you still there?").sentiment(-0.8).duration_ms(900.0).at(at(45_000)));
    conv.track_compliance_violation_at("pci_dss", "high", "card number read back to the customer", Some(at(50_000)));
    conv.track_interaction(Interaction::agent("Sorry about that. I will transfer you to a billing specialist.").sentiment(0.2).duration_ms(3000.0).at(at(52_000)));
    conv.track_decision(Decision::transfer("billing-humans", "refund above the agent's limit").confidence(0.88).at(at(240_000)));
    let trace_id = conv.trace_id().to_string();
    conv.end(ConversationEnd::new(Resolution::Transferred).rating(4).at(at(252_000)));
    trace_id
}

/// Rounds floats so sums taken in another order compare equal.
fn norm(v: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match v {
        Value::Number(n) if n.is_f64() => serde_json::json!((n.as_f64().unwrap() * 1e9).round() / 1e9),
        Value::Array(a) => Value::Array(a.into_iter().map(norm).collect()),
        Value::Object(o) => Value::Object(o.into_iter().map(|(k, v)| (k, norm(v))).collect()),
        other => other,
    }
}

#[test]
fn query_gives_the_same_answers_from_the_event_log_and_from_clickhouse() {
    let ch = ClickHouse::start();
    let db = ch.fresh_database();
    let data = tempfile::tempdir().unwrap();
    ch.apply_schema(&db, data.path());

    // 150 simulated conversations into both stores, through the binary …
    let sim = bin(&ch, &db, data.path())
        .env("SERPHONA_OBS_CLICKHOUSE_ENABLED", "true")
        .args(["simulate", "--conversations", "150", "--seed", "9"])
        .output()
        .unwrap();
    assert!(sim.status.success(), "{}", text(&sim));
    // … and the known one, through the library.
    let base = (OffsetDateTime::now_utc() - time::Duration::days(1)).replace_nanosecond(0).unwrap();
    let obs = Observability::init(both_sinks(&ch, &db, data.path())).unwrap();
    let trace_id = record_known(&obs, base);
    obs.shutdown(Duration::from_secs(30)).unwrap();

    let query = |source: &str, args: &[&str]| -> Output {
        let out = bin(&ch, &db, data.path()).args(["query"]).args(args).args(["--source", source]).output().unwrap();
        assert!(out.status.success(), "query {args:?} --source {source}: {}", text(&out));
        out
    };
    let same_json = |args: &[&str]| -> serde_json::Value {
        let local: serde_json::Value = serde_json::from_slice(&query("local", args).stdout).unwrap();
        let clickhouse: serde_json::Value = serde_json::from_slice(&query("clickhouse", args).stdout).unwrap();
        let (l, c) = (norm(local.clone()), norm(clickhouse));
        assert!(l == c, "query {args:?} differs:\nlocal      {l}\nclickhouse {c}");
        local
    };

    // conversations: every one, and filtered.
    let all = same_json(&["conversations", "--limit", "0", "--output", "json"]);
    let all = all.as_array().unwrap();
    assert_eq!(all.len(), 151);
    let tenant = all[0]["tenant_id"].as_str().unwrap().to_string();
    let since = all[60]["started_at"].as_str().unwrap().to_string();
    let until = all[5]["started_at"].as_str().unwrap().to_string();
    let some = same_json(&["conversations", "--tenant", &tenant, "--since", &since, "--until", &until, "-n", "7", "-o", "json"]);
    assert!(!some.as_array().unwrap().is_empty() && some.as_array().unwrap().len() <= 7, "{some}");
    assert!(some.as_array().unwrap().iter().all(|c| c["tenant_id"] == tenant.as_str()));
    let voice = same_json(&["conversations", "--channel", "voice", "--resolution", "resolved", "-n", "0", "-o", "json"]);
    assert!(voice.as_array().unwrap().iter().all(|c| c["channel"] == "voice" && c["resolution"] == "resolved"), "{voice}");
    // A simulated run ends now and starts as long before as its longest conversation (email
    // threads take hours), so its conversations started within the last 12 hours.
    let recent = same_json(&["conversations", "--since", "12h", "-n", "0", "-o", "json"]);
    assert_eq!(recent.as_array().unwrap().len(), 150, "the known conversation started a day ago");
    let known = same_json(&["conversations", "--meta", "campaign=spring", "-o", "json"]);
    assert_eq!(known.as_array().unwrap().len(), 1);
    assert_eq!(known[0]["conversation_id"], KNOWN);
    assert_eq!(known[0]["trace_id"], trace_id.as_str());

    // CSV: a header row and one row per conversation, from both sources alike.
    for source in ["local", "clickhouse"] {
        let csv_out = query(source, &["conversations", "--limit", "0", "--output", "csv"]);
        let mut reader = csv::Reader::from_reader(csv_out.stdout.as_slice());
        let header: Vec<String> = reader.headers().unwrap().iter().map(str::to_string).collect();
        assert_eq!(header[..3], ["conversation_id", "tenant_id", "agent_id"], "{header:?}");
        let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
        assert_eq!(rows.len(), 151, "{source}");
        let ids: BTreeSet<&str> = rows.iter().map(|r| r.get(0).unwrap()).collect();
        let json_ids: BTreeSet<&str> = all.iter().map(|c| c["conversation_id"].as_str().unwrap()).collect();
        assert_eq!(ids, json_ids);
    }
    let table = stdout(&query("local", &["conversations", "-n", "3"]));
    assert_eq!(table.lines().filter(|l| l.starts_with("│ 20")).count(), 3, "{table}");

    // stats, grouped and not.
    let by_channel = same_json(&["stats", "--by", "channel", "--output", "json"]);
    let groups: Vec<&str> = by_channel.as_array().unwrap().iter().map(|r| r["group"].as_str().unwrap()).collect();
    assert!(groups.contains(&"voice") && groups.contains(&"chat"), "{groups:?}");
    let total: u64 = by_channel.as_array().unwrap().iter().map(|r| r["conversations"].as_u64().unwrap()).sum();
    assert_eq!(total, 151);
    same_json(&["stats", "--output", "json"]);
    same_json(&["stats", "--by", "resolution", "--since", "7d", "-o", "json"]);
    let csv_out = query("clickhouse", &["stats", "--by", "tenant", "-o", "csv"]);
    let mut reader = csv::Reader::from_reader(csv_out.stdout.as_slice());
    assert!(reader.headers().unwrap().iter().any(|h| h == "duration_p95"));
    assert_eq!(reader.records().count(), all.iter().map(|c| c["tenant_id"].as_str().unwrap()).collect::<BTreeSet<_>>().len());
    let stats_table = stdout(&query("local", &["stats", "--by", "channel"]));
    assert!(stats_table.contains("duration p50") && stats_table.contains("voice"), "{stats_table}");

    // One conversation: the same view from both sources, with everything in it.
    let view = stdout(&query("local", &["conversation", KNOWN]));
    assert_eq!(view, stdout(&query("clickhouse", &["conversation", KNOWN])), "the two sources' views differ");
    for part in [
        "conversation conv-known-7",
        "acme-telco",
        "billing-bot",
        "cust-42",
        "voice, en-US",
        "transferred, rating 4",
        "2 customer, 2 agent",
        "campaign=spring",
        "transcript (4 turns)",
        "customer  My bill is twice what it should be.",
        "agent     I can see a duplicate charge",
        "intent billing_dispute 0.92",
        // Regression test for issue 12, item 11: the header said "decisions 3, 1 transfer" above
        // "decisions (4)"; both now give the same two counts.
        "decisions (3 made, 1 transfer initiated)",
        "decisions   3 made, 1 transfer initiated",
        "intent_detection → billing_dispute",
        "transfer initiated → billing-humans",
        "error llm_timeout",
        "violation pci_dss (high)",
        // Issue 16: dead air under the turn it came before, and the totals.
        "↳ dead air 39.7s before",
        "usage       tokens 0 in, 0 out, 0 cached; cost $0",
        "turn-taking interruptions 0 (0 by customer, 0 by agent; overlap 0s); dead air 2 × 45.8s (86.4% of talk and silence); talk agent 5.1s, customer 2.1s",
        &format!("trace {trace_id} (9 spans)"),
        "├─ interaction.customer",
        "└─ transfer.initiated",
    ] {
        assert!(view.contains(part), "{part:?} missing from\n{view}");
    }
    let detail = same_json(&["conversation", KNOWN, "--output", "json"]);
    assert_eq!(detail["conversation"]["conversation_id"], KNOWN);
    assert_eq!(detail["events"].as_array().unwrap().len(), 12);
    assert_eq!(detail["spans"].as_array().unwrap().len(), 9);
    let csv_out = query("clickhouse", &["conversation", KNOWN, "--output", "csv"]);
    let mut reader = csv::Reader::from_reader(csv_out.stdout.as_slice());
    assert_eq!(reader.headers().unwrap().get(2), Some("event_type"));
    assert_eq!(reader.records().count(), 12);

    // The trace: the same tree from both sources, as the snapshot has it.
    let tree = stdout(&query("local", &["trace", &trace_id]));
    assert_eq!(tree, stdout(&query("clickhouse", &["trace", &trace_id.to_uppercase()])));
    let redacted = tree.replace(&trace_id, "<trace_id>").replace(&rfc3339(base), "<start>");
    insta::assert_snapshot!("known_conversation_trace", redacted);
    let spans = same_json(&["trace", &trace_id, "--output", "json"]);
    let names: Vec<&str> = spans.as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(names[0], "conversation");
    assert_eq!(names.len(), 9);
    let csv_out = query("local", &["trace", &trace_id, "-o", "csv"]);
    let mut reader = csv::Reader::from_reader(csv_out.stdout.as_slice());
    assert_eq!(reader.headers().unwrap().get(1), Some("span_id"));
    assert_eq!(reader.records().count(), 9);
    // A simulated conversation's trace is the same from both sources too.
    let other = all[3]["trace_id"].as_str().unwrap();
    same_json(&["trace", other, "-o", "json"]);

    // Unknown ids: exit 1, saying so and where it looked.
    for source in ["local", "clickhouse"] {
        let out = bin(&ch, &db, data.path()).args(["query", "conversation", "no-such-conversation", "--source", source]).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
        assert!(stderr(&out).contains("no conversation \"no-such-conversation\""), "{}", text(&out));
        let out = bin(&ch, &db, data.path())
            .args(["query", "trace", "0123456789abcdef0123456789abcdef", "--source", source])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
        assert!(stderr(&out).contains("no spans of trace 0123456789abcdef0123456789abcdef"), "{}", text(&out));
    }

    // Hostile filter values: empty answers, exit 0, and nothing changes.
    let count = || ch.query(&format!("SELECT (SELECT count() FROM {db}.events), (SELECT count() FROM system.tables WHERE database = '{db}')"));
    let before = count();
    for hostile in ["'; DROP TABLE x --", "'; DROP TABLE conversations; --", "{p0:String}", "\\' OR 1=1 --"] {
        for source in ["local", "clickhouse"] {
            let rows = query(source, &["conversations", "--tenant", hostile, "--agent", hostile, "-o", "json"]);
            assert_eq!(serde_json::from_slice::<serde_json::Value>(&rows.stdout).unwrap(), serde_json::json!([]), "{hostile:?}");
            let stats = query(source, &["stats", "--tenant", hostile, "--by", "agent", "-o", "json"]);
            assert_eq!(serde_json::from_slice::<serde_json::Value>(&stats.stdout).unwrap(), serde_json::json!([]), "{hostile:?}");
            let out = bin(&ch, &db, data.path()).args(["query", "conversation", hostile, "--source", source]).output().unwrap();
            assert_eq!(out.status.code(), Some(1), "{}", text(&out));
        }
    }
    assert_eq!(before, count());

    // Without --source: ClickHouse when the config enables it (an empty data dir shows it).
    let empty = tempfile::tempdir().unwrap();
    let out = bin(&ch, &db, empty.path())
        .env("SERPHONA_OBS_CLICKHOUSE_ENABLED", "true")
        .args(["query", "conversations", "-n", "0", "-o", "json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap().as_array().unwrap().len(), 151);
    let out = bin(&ch, &db, empty.path()).args(["query", "conversations", "-o", "json"]).output().unwrap();
    assert_eq!(stdout(&out).trim(), "[]", "{}", text(&out));
}

/// `base` as the views print it (RFC 3339).
fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339).unwrap()
}

#[test]
fn a_clickhouse_that_is_down_is_exit_1_naming_the_server() {
    let down = format!("http://{}", crate::support::free_addr());
    for args in [&["query", "conversations"][..], &["query", "stats", "--by", "tenant"], &["query", "conversation", "c1"]] {
        let out = crate::support::bin()
            .env("SERPHONA_OBS_CLICKHOUSE_ENABLED", "true")
            .env("SERPHONA_OBS_CLICKHOUSE_ENDPOINT", &down)
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", text(&out));
        assert!(stderr(&out).contains(&down) && stderr(&out).contains("cannot reach ClickHouse"), "{}", text(&out));
    }
}

#[test]
fn usage_errors_exit_2_with_the_accepted_values() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let cases: [(&[&str], &[&str]); 8] = [
        (&["conversations", "--since", "5x"], &["--since", "5x", "15m, 2h, 7d", "RFC 3339"]),
        (&["stats", "--until", "yesterday"], &["--until", "15m, 2h, 7d"]),
        (&["stats", "--by", "nope"], &["--by", "tenant, agent, channel, resolution"]),
        (&["conversations", "--channel", "fax"], &["--channel", "voice, chat, sms, email"]),
        (&["conversations", "--resolution", "fixed"], &["resolved, transferred, escalated, unresolved, abandoned"]),
        (&["trace", "xyz"], &["TRACE_ID", "32 hexadecimal digits"]),
        (&["conversations", "--output", "xml"], &["table, json, csv"]),
        (&["conversations", "--since", "1h", "--until", "2h"], &["--since", "is not before --until"]),
    ];
    for (args, expected) in cases {
        let out = crate::support::bin().args(["query", "--data-dir", d]).args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out));
        for part in expected {
            assert!(stderr(&out).contains(part), "{args:?}: {part:?} missing from {}", stderr(&out));
        }
    }
    // An empty event log is no error: nothing matches.
    let out = crate::support::bin().args(["query", "--data-dir", d, "conversations", "-o", "json"]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(stdout(&out).trim(), "[]");
}

/// The local store's lookups search the log for the id as the log writes it, then parse: ids
/// that need JSON escapes, ids that are prefixes of others, rotated files, a corrupt line and a
/// line still being written must all come out as a full parse has them.
#[test]
fn local_lookups_by_id_match_a_full_parse() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config { data_dir: dir.path().to_path_buf(), ..Config::default() };
    config.metrics.enabled = false;
    config.tracing.enabled = false;
    config.logging.max_file_bytes = 8 * 1024; // many files
    let obs = Observability::init(config).unwrap();
    let ids = ["c-1", "c-10", "he said \"hi\" \\ back", "tab\there\nnewline", "ünïcødé 会話 🎧", "c-1\""];
    for (n, id) in ids.iter().enumerate() {
        let conv = obs.start_conversation(ConversationStart::new("t", "a", format!("cust-{n}"), Channel::Chat).id(*id));
        for i in 0..6 {
            // The content mentions other conversations' ids, escaped as content.
            let text = format!("turn {i} of \"conversation_id\":\"{}\" {id}", ids[(n + 1) % ids.len()]);
            conv.track_interaction(if i % 2 == 0 { Interaction::customer(text) } else { Interaction::agent(text) });
        }
        conv.track_decision(Decision::transfer("humans", "asked"));
        conv.end(ConversationEnd::new(Resolution::Transferred));
    }
    obs.shutdown(Duration::from_secs(10)).unwrap();
    let events_dir = dir.path().join("events");
    let files = serphona_obs::sinks::event_log::list_segments(&events_dir).unwrap();
    assert!(files.len() >= 3, "{} files", files.len());

    let store = LocalStore::open(dir.path());
    let everything = store.read_all().unwrap();
    let check = |store: &LocalStore| {
        for id in ids {
            let mut expected: Vec<Event> = everything.iter().filter(|e| &*e.conversation_id == id).cloned().collect();
            expected.sort_by_key(|e| e.timestamp);
            let detail = block_on(store.conversation(id)).unwrap().unwrap_or_else(|| panic!("{id:?} not found"));
            assert_eq!(detail.events, expected, "{id:?}");
            assert_eq!(detail.summary.agent_turns + detail.summary.customer_turns, 6);
            let trace_id = expected[0].trace.trace_id.to_string();
            let spans = block_on(store.trace(&trace_id.to_uppercase())).unwrap();
            // The root, six turns, the decision and the transfer.
            assert_eq!(spans.len(), 9, "{id:?}");
            let span_ids: BTreeSet<String> = spans.iter().map(|s| s.span_id.clone()).collect();
            let expected_ids: BTreeSet<String> = expected.iter().map(|e| e.trace.span_id.to_string()).collect();
            assert_eq!(span_ids, expected_ids, "{id:?}");
            assert!(spans.iter().all(|s| s.conversation_id == id && s.trace_id == trace_id));
            assert_eq!(spans.iter().filter(|s| s.parent_span_id.is_none()).count(), 1);
            assert!(spans.iter().all(|s| !s.events.is_empty()), "every span has its span events");
        }
        assert!(block_on(store.conversation("c-")).unwrap().is_none());
        assert!(block_on(store.conversation("")).unwrap().is_none());
        assert!(block_on(store.trace("ffffffffffffffffffffffffffffffff")).unwrap().is_empty());
        assert!(matches!(block_on(store.trace("not-a-trace")), Err(StoreError::BadTraceId(_))));
        assert!(matches!(block_on(store.trace(&"0".repeat(32))), Err(StoreError::BadTraceId(_))));
    };
    check(&store);

    // A corrupt line holding an id, and a line still being written: the first is skipped and
    // counted, the second waits until it is whole.
    let (_, newest) = files.last().unwrap().clone();
    let mut file = std::fs::OpenOptions::new().append(true).open(&newest).unwrap();
    writeln!(file, "{{\"conversation_id\":\"c-10\", broken").unwrap();
    let late = {
        let mut e = everything.iter().find(|e| &*e.conversation_id == "c-10").unwrap().clone();
        e.event_id = uuid::Uuid::now_v7();
        e.timestamp += time::Duration::hours(1);
        e.to_json().unwrap()
    };
    let (head, tail) = late.split_at(late.len() / 2 + 20);
    assert!(head.contains("\"conversation_id\":\"c-10\""));
    file.write_all(head.as_bytes()).unwrap();
    let store = LocalStore::open(dir.path());
    check(&store);
    assert!(store.skipped_lines() >= 1, "the corrupt line was not counted");
    file.write_all(tail.as_bytes()).unwrap();
    file.write_all(b"\n").unwrap();
    let detail = block_on(store.conversation("c-10")).unwrap().unwrap();
    assert_eq!(detail.events.len(), 11, "the completed line is read (10 events, and the late one)");
}

// Regression test for issue 12, item 9: the list shows 12-character ids, but
// `query conversation <12 chars>` failed.
/// A unique short id (8 or more characters: a prefix, or the end the live view shows) works in
/// `query conversation` and `query trace` over both stores; an ambiguous one lists its matches
/// and exits 2; a hostile one is a parameter, harmless.
#[test]
fn short_ids_resolve_in_both_stores_and_ambiguous_ones_exit_2_listing_the_matches() {
    let ch = ClickHouse::start();
    let db = ch.fresh_database();
    let data = tempfile::tempdir().unwrap();
    ch.apply_schema(&db, data.path());
    let obs = Observability::init(both_sinks(&ch, &db, data.path())).unwrap();
    let ids = ["0195f3a2-7c1e-7b3d-9a1f-42c8e5d7a901", "0195f3a2-7c1e-7b3d-9a1f-000000000002", "abcdef12-3456-7890-unique", "c-1", "c-10"];
    let mut traces = Vec::new();
    for id in ids {
        let conv = obs.start_conversation(ConversationStart::new("globex-bank", "billing-bot", "cust-1", Channel::Chat).id(id));
        conv.track_interaction(Interaction::customer("hello"));
        traces.push(conv.trace_id().to_string());
        conv.end(ConversationEnd::new(Resolution::Resolved));
    }
    obs.shutdown(Duration::from_secs(30)).unwrap();
    let run = |source: &str, args: &[&str]| bin(&ch, &db, data.path()).arg("query").args(args).args(["--source", source]).output().unwrap();
    let count = || ch.query(&format!("SELECT (SELECT count() FROM {db}.events), (SELECT count() FROM system.tables WHERE database = '{db}')"));
    let before = count();
    for source in ["local", "clickhouse"] {
        // A prefix, and the last 12 characters as the live view lists them.
        for (short, whole) in [("abcdef12", ids[2]), ("abcdef12-3456", ids[2]), ("42c8e5d7a901", ids[0]), ("000000000002", ids[1])] {
            let out = run(source, &["conversation", short]);
            assert!(out.status.success(), "{short} --source {source}: {}", text(&out));
            assert!(stdout(&out).starts_with(&format!("conversation {whole}\n")), "{short}: {}", text(&out));
            let json = run(source, &["conversation", short, "-o", "json"]);
            let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
            assert_eq!(v["conversation"]["conversation_id"], whole);
            assert_eq!(v["spans"].as_array().unwrap().len(), 2, "{v}");
        }
        // A whole id that begins another is that id.
        let out = run(source, &["conversation", "c-1", "-o", "json"]);
        assert!(out.status.success(), "{}", text(&out));
        assert_eq!(serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["conversation"]["conversation_id"], "c-1");
        // Ambiguous: both matches listed, exit 2.
        let out = run(source, &["conversation", "0195f3a2"]);
        assert_eq!(out.status.code(), Some(2), "{}", text(&out));
        let err = stderr(&out);
        assert!(err.contains("ambiguous") && err.contains(ids[0]) && err.contains(ids[1]) && !err.contains(ids[2]), "{err}");
        // Too short to be a short id, and no match.
        let out = run(source, &["conversation", "0195f3a"]);
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
        assert!(stderr(&out).contains("at least 8 characters"), "{}", text(&out));
        let out = run(source, &["conversation", "zzzzzzzzzz"]);
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
        // Hostile short ids: no match, nothing changes.
        for hostile in ["'); DROP TABLE events; --", "x' OR 1=1 --", "{short:String}", "%_%_%_%_%_"] {
            let out = run(source, &["conversation", hostile]);
            assert_eq!(out.status.code(), Some(1), "{hostile:?} --source {source}: {}", text(&out));
            assert!(stderr(&out).contains("no conversation"), "{}", text(&out));
        }
        // Trace ids: a prefix of 10, or the last 10, in either case; the same tree as the whole id.
        let whole = stdout(&run(source, &["trace", &traces[2]]));
        for short in [&traces[2][..10], &traces[2][22..], &traces[2][..10].to_uppercase()] {
            let out = run(source, &["trace", short]);
            assert!(out.status.success(), "{short}: {}", text(&out));
            assert_eq!(stdout(&out), whole);
        }
        let out = run(source, &["trace", "1234567"]);
        assert_eq!(out.status.code(), Some(2), "7 hex digits are a usage error: {}", text(&out));
    }
    assert_eq!(before, count());

    // Regression test for issue 12, item 10: tables were 138–173 columns wide. Piped output
    // keeps its full width unless COLUMNS says otherwise.
    for args in [&["conversations"][..], &["stats", "--by", "agent"]] {
        let full = bin(&ch, &db, data.path()).env_remove("COLUMNS").arg("query").args(args).args(["--source", "local"]).output().unwrap();
        assert!(full.status.success(), "{}", text(&full));
        assert!(stdout(&full).lines().any(|l| l.chars().count() > 80), "{}", text(&full));
        let fitted = bin(&ch, &db, data.path()).env("COLUMNS", "80").arg("query").args(args).args(["--source", "local"]).output().unwrap();
        assert!(fitted.status.success(), "{}", text(&fitted));
        let table = stdout(&fitted);
        assert!(table.lines().all(|l| l.chars().count() <= 80), "{args:?} wider than 80:\n{table}");
        if args[0] == "conversations" {
            assert!(!table.contains(ids[0]), "short ids when narrow:\n{table}");
        }
    }
}
