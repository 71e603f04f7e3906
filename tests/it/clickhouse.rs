//! ClickHouse (issue 3): migrations, the sink's delivery guarantees under faults, the store,
//! against the real ClickHouse engine (see support::clickhouse).

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use serphona_obs::config::Config;
use serphona_obs::analytics::schema::{self, Migrator, RenderOptions};
use serphona_obs::simulation::{self, Pace, SimConfig};
use serphona_obs::store::clickhouse::ClickHouseStore;
use serphona_obs::store::local::LocalStore;
use serphona_obs::store::{ConversationFilter, GroupBy, Store};
use serphona_obs::Observability;
use serphona_obs::types::{Channel, ConversationEnd, ConversationStart, Event, Interaction, Resolution};

use crate::support::clickhouse::ClickHouse;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

/// The library's config for `db` on `ch`, with the event log in `data_dir` as well.
fn ch_config(ch: &ClickHouse, db: &str, data_dir: &Path) -> Config {
    let mut c = ch.library_config(db, data_dir);
    c.clickhouse.batch_size = 500;
    c.clickhouse.request_timeout = Duration::from_secs(10);
    c
}

fn migrator(config: &Config) -> Migrator {
    let opts = RenderOptions {
        database: config.clickhouse.database.clone(),
        retention_days: config.clickhouse.retention_days,
        cluster: None,
    };
    Migrator::new(serphona_obs::analytics::client(&config.clickhouse), opts, schema::built_in())
}

fn apply_schema(config: &Config) {
    rt().block_on(migrator(config).apply()).expect("schema apply");
}

fn bin(ch: &ClickHouse, db: &str, data_dir: &Path) -> Command {
    ch.cli(db, data_dir)
}

fn text(o: &Output) -> String {
    format!("status {:?}\nstdout:\n{}\nstderr:\n{}", o.status, String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// Every event of the local event log.
fn logged(data_dir: &Path) -> Vec<Event> {
    LocalStore::open(data_dir).read_all().unwrap()
}

fn count_type(events: &[Event], t: &str) -> u64 {
    events.iter().filter(|e| e.event_type().as_str() == t).count() as u64
}

#[test]
fn schema_apply_is_idempotent_and_a_changed_migration_is_drift() {
    let ch = ClickHouse::start();
    let db = ch.fresh_database();
    let data = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| bin(&ch, &db, data.path()).args(args).output().unwrap();

    let first = run(&["schema", "apply", "--output", "json"]);
    assert!(first.status.success(), "{}", text(&first));
    let report: serde_json::Value = serde_json::from_slice(&first.stdout).unwrap();
    assert_eq!(report["applied"].as_array().unwrap().len(), schema::BUILT_IN.len(), "{report}");
    let tables = ch.query(&format!("SELECT name FROM system.tables WHERE database = '{db}' ORDER BY name"));
    for t in ["conversations", "interactions", "decisions", "events", "spans", "metrics_snapshots", "conversations_hourly", "schema_migrations"] {
        assert!(tables.lines().any(|l| l == t), "{t} missing from {tables}");
    }

    let second = run(&["schema", "apply", "--output", "json"]);
    assert!(second.status.success(), "{}", text(&second));
    let report: serde_json::Value = serde_json::from_slice(&second.stdout).unwrap();
    assert_eq!(report["applied"].as_array().unwrap().len(), 0, "{report}");
    assert_eq!(report["unchanged"], schema::BUILT_IN.len());
    assert_eq!(ch.query_u64(&format!("SELECT count() FROM {db}.schema_migrations FINAL")), schema::BUILT_IN.len() as u64);

    // The same files from a folder are the same migrations; then one of them changes.
    let dir = tempfile::tempdir().unwrap();
    for (file, body) in schema::BUILT_IN {
        std::fs::write(dir.path().join(file), body).unwrap();
    }
    let d = dir.path().to_str().unwrap();
    let status = run(&["schema", "status", "--dir", d, "--output", "json"]);
    assert!(status.status.success(), "{}", text(&status));
    std::fs::write(dir.path().join("0002_interactions.sql"), format!("{}\n-- edited\n", schema::BUILT_IN[1].1)).unwrap();
    // The next number after the built-in ones.
    let extra = format!("{:04}_extra.sql", schema::BUILT_IN.len() + 1);
    std::fs::write(dir.path().join(&extra), "CREATE TABLE IF NOT EXISTS extra (x UInt8) ENGINE = MergeTree ORDER BY x;\n")
        .unwrap();

    let status = run(&["schema", "status", "--dir", d, "--output", "json"]);
    assert_eq!(status.status.code(), Some(1), "{}", text(&status));
    let lines: Vec<serde_json::Value> = serde_json::from_slice(&status.stdout).unwrap();
    let states: BTreeMap<String, String> =
        lines.iter().map(|l| (l["file"].as_str().unwrap().to_string(), l["state"].as_str().unwrap().to_string())).collect();
    assert_eq!(states["0002_interactions.sql"], "drift", "{states:?}");
    assert_eq!(states["0001_conversations.sql"], "applied");
    assert_eq!(states[&extra], "pending");

    let apply = run(&["schema", "apply", "--dir", d]);
    assert_eq!(apply.status.code(), Some(1), "{}", text(&apply));
    let err = String::from_utf8_lossy(&apply.stderr);
    assert!(err.contains("drift") && err.contains("0002_interactions.sql"), "{err}");
    // Nothing was applied: not the drifted file, not the new one.
    assert_eq!(ch.query_u64(&format!("SELECT count() FROM system.tables WHERE database = '{db}' AND name = 'extra'")), 0);

    // The dry run prints the DDL of what is pending, and the cluster rendering.
    let dry = run(&["schema", "apply", "--dry-run"]);
    assert!(dry.status.success(), "{}", text(&dry));
    assert!(String::from_utf8_lossy(&dry.stdout).contains("nothing to apply"), "{}", text(&dry));
    let fresh = ch.fresh_database();
    let dry = bin(&ch, &fresh, data.path()).args(["schema", "apply", "--dry-run", "--cluster", "prod"]).output().unwrap();
    assert!(dry.status.success(), "{}", text(&dry));
    let ddl = String::from_utf8_lossy(&dry.stdout);
    assert!(ddl.contains(&format!("CREATE DATABASE IF NOT EXISTS {fresh} ON CLUSTER prod")), "{ddl}");
    assert!(ddl.contains("ENGINE = Distributed(prod, "), "{ddl}");
    // A dry run changes nothing.
    assert_eq!(ch.query_u64(&format!("SELECT count() FROM system.tables WHERE database = '{fresh}'")), 0);

    // A server error names the migration file and carries ClickHouse's code.
    let bad = tempfile::tempdir().unwrap();
    std::fs::write(bad.path().join("0001_broken.sql"), "CREATE TABLE IF NOT EXISTS broken (x Nope) ENGINE = MergeTree ORDER BY x;")
        .unwrap();
    let other_db = ch.fresh_database();
    let out = bin(&ch, &other_db, data.path()).args(["schema", "apply", "--dir", bad.path().to_str().unwrap()]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("0001_broken.sql: statement 1 failed: ClickHouse error 50"), "{err}");
}

#[test]
fn simulate_with_clickhouse_delivers_every_row_once_with_one_row_per_conversation() {
    let ch = ClickHouse::start();
    let db = ch.fresh_database();
    let data = tempfile::tempdir().unwrap();
    ch.apply_schema(&db, data.path());
    let sim = bin(&ch, &db, data.path())
        .env("SERPHONA_OBS_CLICKHOUSE_ENABLED", "true")
        .env("SERPHONA_OBS_CLICKHOUSE_BATCH_SIZE", "300")
        .args(["simulate", "--conversations", "300", "--seed", "11", "--output", "json"])
        .output()
        .unwrap();
    assert!(sim.status.success(), "{}", text(&sim));

    let events = logged(data.path());
    let started = count_type(&events, "conversation.started");
    assert_eq!(started, 300);
    let turns = count_type(&events, "interaction.agent") + count_type(&events, "interaction.customer");
    let decisions = count_type(&events, "decision.made");
    assert!(turns > 1000 && decisions > 0, "turns {turns}, decisions {decisions}");

    let q = |sql: &str| ch.query_u64(&sql.replace("DB", &db));
    assert_eq!(q("SELECT count() FROM DB.events"), events.len() as u64);
    assert_eq!(q("SELECT uniqExact(event_id) FROM DB.events"), events.len() as u64);
    assert_eq!(q("SELECT count() FROM DB.interactions"), turns);
    assert_eq!(q("SELECT count() FROM DB.decisions"), decisions);
    assert_eq!(q("SELECT count() FROM DB.conversations FINAL"), started);
    assert_eq!(q("SELECT countIf(status = 'ended') FROM DB.conversations FINAL"), started);
    // Once parts merge, one physical row per conversation is left.
    ch.query(&format!("OPTIMIZE TABLE {db}.conversations FINAL"));
    assert_eq!(q("SELECT count() FROM DB.conversations"), started);
    // The end row kept what only the start said.
    assert_eq!(q("SELECT countIf(customer_id = '' OR language = '') FROM DB.conversations"), 0);
    // The rollup counted each ended conversation once.
    assert_eq!(q("SELECT sum(conversations) FROM DB.conversations_hourly"), started);
    // Spans: a root per conversation, a child per turn, decision and transfer.
    let transfers = count_type(&events, "transfer.initiated");
    assert_eq!(q("SELECT count() FROM DB.spans"), started + turns + decisions + transfers);
    // Trace ids join rows to the event log.
    let one = &events[0];
    assert_eq!(
        ch.query(&format!("SELECT trace_id FROM {db}.events WHERE event_id = '{}'", one.event_id)).trim(),
        one.trace.trace_id.to_string()
    );
}

#[test]
fn the_peer_stopped_mid_run_loses_and_doubles_nothing() {
    let mut ch = ClickHouse::start();
    let db = ch.fresh_database();
    let data = tempfile::tempdir().unwrap();
    let mut config = ch_config(&ch, &db, data.path());
    config.clickhouse.batch_size = 200;
    apply_schema(&config);
    let obs = Observability::init(config).unwrap();

    let emit = |from: usize, to: usize| {
        for i in from..to {
            let conv = obs.start_conversation(ConversationStart::new("t1", "a1", "cust", Channel::Chat));
            for turn in 0..8 {
                let content = format!("message {i}/{turn}");
                conv.track_interaction(if turn % 2 == 0 { Interaction::customer(content) } else { Interaction::agent(content) });
            }
            conv.end(ConversationEnd::new(Resolution::Resolved));
            if i % 50 == 0 {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    };
    // 10 events per conversation: 600 conversations = 6,000 events.
    emit(0, 200);
    std::thread::sleep(Duration::from_millis(400));
    ch.stop();
    emit(200, 400);
    std::thread::sleep(Duration::from_millis(600));
    ch.restart();
    emit(400, 600);
    obs.shutdown(Duration::from_secs(60)).unwrap();

    let events = logged(data.path());
    assert_eq!(events.len(), 6000);
    let q = |sql: &str| ch.query_u64(&sql.replace("DB", &db));
    // On failure, say where the rows went: rejected as permanent, spooled, dropped from the spool.
    let m = &obs.metrics().pipeline;
    let gather = |vec: &prometheus::IntCounterVec| -> u64 {
        use prometheus::core::Collector;
        vec.collect().iter().flat_map(|f| f.get_metric().iter().map(|m| m.get_counter().get_value() as u64).collect::<Vec<_>>()).sum()
    };
    let rejected_file = serphona_obs::sinks::clickhouse::spool::spool_dir(data.path()).join("rejected.jsonl");
    let whereabouts = format!(
        "rows_rejected {} events_spooled {} spool_dropped {} rejected.jsonl lines {} spool bytes now {}",
        gather(&m.rows_rejected),
        gather(&m.events_spooled),
        gather(&m.spool_dropped),
        std::fs::read_to_string(&rejected_file).map(|t| t.lines().count()).unwrap_or(0),
        m.spool_bytes.with_label_values(&["clickhouse"]).get(),
    );
    assert_eq!(q("SELECT count() FROM DB.events"), 6000, "{whereabouts}\n{}", ch.log_tail());
    assert_eq!(q("SELECT uniqExact(event_id) FROM DB.events"), 6000, "{whereabouts}");
    assert_eq!(q("SELECT count() FROM DB.interactions"), 4800, "{whereabouts}");
    assert_eq!(q("SELECT count() FROM DB.conversations FINAL"), 600);
    let ids: HashSet<String> = ch.query(&format!("SELECT toString(event_id) FROM {db}.events")).lines().map(str::to_string).collect();
    let logged_ids: HashSet<String> = events.iter().map(|e| e.event_id.to_string()).collect();
    assert_eq!(ids, logged_ids);
    // It did go through the spool, and the spool is empty now.
    let m = obs.metrics().encode();
    assert!(metric(&m, "serphona_obs_events_spooled_total{sink=\"clickhouse\"}") > 0.0, "{m}");
    assert_eq!(metric(&m, "serphona_obs_spool_bytes{sink=\"clickhouse\"}"), 0.0, "{m}");
}

fn metric(exposition: &str, series: &str) -> f64 {
    exposition
        .lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
        .unwrap_or_else(|| panic!("no {series} in\n{exposition}"))
}

#[test]
fn batches_spooled_by_a_killed_process_are_delivered_on_the_next_start() {
    let mut ch = ClickHouse::start();
    let db = ch.fresh_database();
    let data = tempfile::tempdir().unwrap();
    ch.apply_schema(&db, data.path());
    ch.stop();

    let mut child = bin(&ch, &db, data.path())
        .env("SERPHONA_OBS_CLICKHOUSE_ENABLED", "true")
        .env("SERPHONA_OBS_CLICKHOUSE_BATCH_SIZE", "50")
        .env("SERPHONA_OBS_CLICKHOUSE_FLUSH_INTERVAL", "100ms")
        .args(["simulate", "--conversations", "100000", "--rate", "200", "--speed", "1000"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let spool = serphona_obs::sinks::clickhouse::spool::spool_dir(data.path());
    let store = serphona_obs::sinks::clickhouse::spool::Spool::open(spool.clone(), u64::MAX).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while store.entries().unwrap().len() < 5 {
        assert!(Instant::now() < deadline, "nothing was spooled in 60 s");
        assert!(child.try_wait().unwrap().is_none(), "simulate exited early");
        std::thread::sleep(Duration::from_millis(100));
    }
    child.kill().unwrap();
    child.wait().unwrap();

    let mut spooled = HashSet::new();
    for entry in store.entries().unwrap() {
        for e in store.read(&entry.path).unwrap().batch.events {
            spooled.insert(e.event_id.to_string());
        }
    }
    assert!(spooled.len() >= 250, "{} events spooled", spooled.len());

    ch.restart();
    // The next start (any run of the library with the same data dir) replays the spool.
    let next = bin(&ch, &db, data.path())
        .env("SERPHONA_OBS_CLICKHOUSE_ENABLED", "true")
        .args(["simulate", "--conversations", "1"])
        .output()
        .unwrap();
    assert!(next.status.success(), "{}", text(&next));
    assert!(store.entries().unwrap().is_empty(), "the spool was not emptied");
    let in_ch: Vec<String> = ch.query(&format!("SELECT toString(event_id) FROM {db}.events")).lines().map(str::to_string).collect();
    let unique: HashSet<&String> = in_ch.iter().collect();
    assert_eq!(unique.len(), in_ch.len(), "an event was delivered twice");
    let missing: Vec<_> = spooled.iter().filter(|id| !unique.contains(id)).collect();
    assert!(missing.is_empty(), "{} spooled events not delivered, e.g. {:?}", missing.len(), missing.first());
}

#[test]
fn a_row_the_table_rejects_is_counted_logged_with_its_code_and_not_retried() {
    let ch = ClickHouse::start();
    let db = ch.fresh_database();
    let data = tempfile::tempdir().unwrap();
    ch.apply_schema(&db, data.path());
    ch.query(&format!("ALTER TABLE {db}.interactions ADD CONSTRAINT no_third_turn CHECK turn != 3"));

    let sim = bin(&ch, &db, data.path())
        .env("SERPHONA_OBS_CLICKHOUSE_ENABLED", "true")
        .args(["simulate", "--conversations", "40", "--seed", "5"])
        .output()
        .unwrap();
    assert!(sim.status.success(), "{}", text(&sim));
    let events = logged(data.path());
    let turn = |e: &Event| match &e.kind {
        serphona_obs::types::EventKind::AgentTurn { turn, .. } | serphona_obs::types::EventKind::CustomerTurn { turn, .. } => Some(*turn),
        _ => None,
    };
    let turns = events.iter().filter(|e| turn(e).is_some()).count() as u64;
    let third = events.iter().filter(|e| turn(e) == Some(3)).count() as u64;
    assert!(third > 10, "{third}");
    // The good rows of the same batches went in; the rejected ones did not; nothing doubled.
    assert_eq!(ch.query_u64(&format!("SELECT count() FROM {db}.interactions")), turns - third);
    assert_eq!(ch.query_u64(&format!("SELECT count() FROM {db}.events")), events.len() as u64);
    // Logged with ClickHouse's code, and kept.
    let err = String::from_utf8_lossy(&sim.stderr);
    assert!(err.contains("rejected a row") && err.contains("469"), "{err}");
    let rejected = std::fs::read_to_string(serphona_obs::sinks::clickhouse::spool::spool_dir(data.path()).join("rejected.jsonl")).unwrap();
    assert_eq!(rejected.lines().count() as u64, third);
}

#[test]
fn the_rejection_is_counted_in_a_self_metric() {
    let ch = ClickHouse::start();
    let db = ch.fresh_database();
    let data = tempfile::tempdir().unwrap();
    let config = ch_config(&ch, &db, data.path());
    apply_schema(&config);
    ch.query(&format!("ALTER TABLE {db}.decisions ADD CONSTRAINT no_refunds CHECK option != 'refund'"));
    let obs = Observability::init(config).unwrap();
    let conv = obs.start_conversation(ConversationStart::new("t1", "a1", "c1", Channel::Voice));
    use serphona_obs::types::{Decision, DecisionType};
    conv.track_decision(Decision::new(DecisionType::ToolCall, "lookup", "order status"));
    conv.track_decision(Decision::new(DecisionType::ToolCall, "refund", "policy"));
    conv.track_decision(Decision::new(DecisionType::ToolCall, "lookup", "again"));
    conv.end(ConversationEnd::new(Resolution::Resolved));
    obs.flush(Duration::from_secs(30)).unwrap();
    let m = obs.metrics().encode();
    assert_eq!(metric(&m, "serphona_obs_rows_rejected_total{code=\"469\",sink=\"clickhouse\",table=\"decisions\"}"), 1.0, "{m}");
    assert_eq!(ch.query_u64(&format!("SELECT count() FROM {db}.decisions")), 2);
    // Not retried: the spool is empty and later rows still flow.
    assert_eq!(metric(&m, "serphona_obs_spool_bytes{sink=\"clickhouse\"}"), 0.0);
    obs.shutdown(Duration::from_secs(30)).unwrap();
}

/// Equal, with floats equal to 1e-9 relative (sums taken in another order differ in their
/// last bits, and rounding them first can fall on either side of a boundary).
fn approx(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    use serde_json::Value;
    match (a, b) {
        (Value::Number(x), Value::Number(y)) if x.is_f64() || y.is_f64() => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            (x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1e-3)
        }
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(a, b)| approx(a, b)),
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| approx(v, w)))
        }
        _ => a == b,
    }
}

fn same<T: serde::Serialize + std::fmt::Debug>(what: &str, local: &T, clickhouse: &T) {
    let (l, c) = (serde_json::to_value(local).unwrap(), serde_json::to_value(clickhouse).unwrap());
    assert!(approx(&l, &c), "{what} differ:\nlocal      {l}\nclickhouse {c}");
}

#[test]
fn the_clickhouse_store_answers_like_the_local_store_and_shrugs_off_hostile_filters() {
    let ch = ClickHouse::start();
    let db = ch.fresh_database();
    let data = tempfile::tempdir().unwrap();
    let config = ch_config(&ch, &db, data.path());
    apply_schema(&config);
    let obs = Observability::init(config.clone()).unwrap();
    let sim = SimConfig {
        conversations: 150,
        seed: 21,
        rate: 2.0,
        concurrency: 20,
        pace: Pace::Fast,
        run_id: Some("cmp".into()),
    };
    simulation::run(&obs, &sim, &AtomicBool::new(false), |_| {}).unwrap();
    // Two conversations still in progress.
    let open: Vec<_> = (0..2)
        .map(|i| {
            let c = obs.start_conversation(ConversationStart::new("acme", "agent-open", format!("cust-{i}"), Channel::Sms));
            c.track_interaction(Interaction::customer("hello?").sentiment(-0.25));
            c
        })
        .collect();
    obs.flush(Duration::from_secs(30)).unwrap();

    let local = LocalStore::open(data.path());
    let chs = ClickHouseStore::new(&config.clickhouse);
    let rt = rt();
    let all = rt.block_on(local.conversations(&ConversationFilter::default())).unwrap();
    assert_eq!(all.len(), 152);
    let tenant = all[0].tenant_id.clone();
    let filters = vec![
        ConversationFilter::default(),
        ConversationFilter { tenant: Some(tenant.clone()), limit: Some(7), ..Default::default() },
        ConversationFilter { channel: Some(Channel::Voice), resolution: Some(Resolution::Resolved), ..Default::default() },
        ConversationFilter { metadata: vec![("simulation_run".into(), "cmp".into())], ..Default::default() },
        ConversationFilter { since: Some(all[40].started_at), until: Some(all[10].started_at), ..Default::default() },
    ];
    for f in &filters {
        let (l, c) = (rt.block_on(local.conversations(f)).unwrap(), rt.block_on(chs.conversations(f)).unwrap());
        assert!(!l.is_empty(), "{f:?} matched nothing");
        same(&format!("conversations {f:?}"), &l, &c);
        for by in [None, Some(GroupBy::Tenant), Some(GroupBy::Agent), Some(GroupBy::Channel), Some(GroupBy::Resolution)] {
            let (l, c) = (rt.block_on(local.stats(f, by)).unwrap(), rt.block_on(chs.stats(f, by)).unwrap());
            same(&format!("stats {f:?} by {by:?}"), &l, &c);
        }
    }
    for s in all.iter().step_by(30).chain(all.iter().filter(|s| s.resolution.is_none())) {
        let (l, c) = (rt.block_on(local.conversation(&s.conversation_id)).unwrap(), rt.block_on(chs.conversation(&s.conversation_id)).unwrap());
        assert!(l.is_some());
        same(&format!("conversation {}", s.conversation_id), &l, &c);
    }
    // Reading the event stream in pages sees every event once.
    let (mut cursor, mut seen) = (None, Vec::new());
    loop {
        let (page, next) = rt.block_on(chs.events_since(cursor.as_ref(), 500)).unwrap();
        if page.is_empty() {
            break;
        }
        seen.extend(page.into_iter().map(|e| e.event_id));
        cursor = Some(next);
    }
    let logged = logged(data.path());
    assert_eq!(seen.len(), logged.len());
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), logged.len());

    // Hostile filter values: empty answers or clear errors, and nothing changes.
    // Counted with FINAL: a background merge may fold a conversation's start and end rows
    // into one between the two counts (seen once), which is not a change of the data.
    let counts = format!(
        "SELECT (SELECT count() FROM {db}.events FINAL), (SELECT count() FROM {db}.conversations FINAL), (SELECT count() FROM system.tables WHERE database = '{db}')"
    );
    let before = ch.query(&counts);
    let long = "x".repeat(10 * 1024);
    let hostile = [
        "'; DROP TABLE conversations; --",
        "`events`",
        "\\' OR 1=1 --",
        "{p0:String}",
        "a?b",
        "ünïcødé 会話 🎧",
        "\0nul",
        long.as_str(),
    ];
    for h in hostile {
        let f = ConversationFilter {
            tenant: Some(h.into()),
            agent: Some(h.into()),
            metadata: vec![(h.into(), h.into())],
            ..Default::default()
        };
        assert!(rt.block_on(chs.conversations(&f)).unwrap().is_empty(), "{h:?}");
        let stats = rt.block_on(chs.stats(&f, None)).unwrap();
        assert_eq!(stats[0].conversations, 0);
        assert!(rt.block_on(chs.stats(&f, Some(GroupBy::Tenant))).unwrap().is_empty());
        let only_tenant = ConversationFilter { tenant: Some(h.into()), ..Default::default() };
        assert!(rt.block_on(chs.conversations(&only_tenant)).unwrap().is_empty(), "{h:?}");
        assert!(rt.block_on(chs.conversation(h)).unwrap().is_none(), "{h:?}");
        let cursor = serphona_obs::store::Cursor(h.to_string());
        let err = rt.block_on(chs.events_since(Some(&cursor), 10)).unwrap_err();
        assert!(err.to_string().contains("invalid cursor"), "{err}");
    }
    let after = ch.query(&counts);
    assert_eq!(before, after);

    // ExportMetrics: a snapshot of the registry, one row per series.
    let rows = rt.block_on(obs.export_metrics()).unwrap();
    assert!(rows > 20, "{rows}");
    assert_eq!(ch.query_u64(&format!("SELECT count() FROM {db}.metrics_snapshots")), rows as u64);
    assert_eq!(
        ch.query_u64(&format!("SELECT sum(value) FROM {db}.metrics_snapshots WHERE metric = 'conversation_total'")),
        152
    );
    drop(open);
    obs.shutdown(Duration::from_secs(30)).unwrap();
}
