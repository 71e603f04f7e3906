//! Issue 12, section 1: the platform's services query `conversations` and `interactions` by the
//! column names and types of the old library's schema, and read `metadata.sentiment` of the
//! event log as a label. These tests run those column lists against the ClickHouse engine (see
//! support::clickhouse) and compare what they select with what the event log says.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use serphona_obs::Observability;
use serphona_obs::analytics::schema::{self, Migrator, RenderOptions};
use serphona_obs::types::{Channel, ConversationEnd, ConversationStart, Interaction, Resolution};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::support::clickhouse::ClickHouse;

/// The old library's `conversations` columns, in its order.
const SEED_CONVERSATIONS: &str = "conversation_id, tenant_id, agent_id, customer_id, channel, start_time, end_time, \
     duration_seconds, interaction_count, resolution, rating, tags, metadata";
/// The old library's `interactions` columns, in its order.
const SEED_INTERACTIONS: &str =
    "interaction_id, conversation_id, tenant_id, timestamp, speaker_type, content, sentiment, intent, confidence, metadata";

fn text(o: &std::process::Output) -> String {
    format!("status {:?}\nstdout:\n{}\nstderr:\n{}", o.status, String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// The rows of a query as JSON objects.
fn rows(ch: &ClickHouse, sql: &str) -> Vec<Value> {
    ch.query(&format!("{sql} FORMAT JSONEachRow SETTINGS output_format_json_quote_64bit_integers = 0"))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// Every line of the event log, as JSON.
fn log_lines(data_dir: &Path) -> Vec<Value> {
    let mut files: Vec<_> = std::fs::read_dir(data_dir.join("events")).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    files
        .iter()
        .flat_map(|f| std::fs::read_to_string(f).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect::<Vec<Value>>())
        .collect()
}

/// Microseconds since the epoch of an RFC 3339 time (the event log's) or of ClickHouse's
/// `YYYY-MM-DD hh:mm:ss.ffffff` (UTC).
fn micros(v: &Value) -> i128 {
    let s = v.as_str().unwrap_or_else(|| panic!("not a time: {v}"));
    let t = OffsetDateTime::parse(s, &Rfc3339).unwrap_or_else(|_| {
        let f = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second].[subsecond]");
        time::PrimitiveDateTime::parse(s, &f).unwrap_or_else(|e| panic!("{e}: {s}")).assume_utc()
    });
    t.unix_timestamp_nanos() / 1000
}

/// A metadata object as ClickHouse's `Map(String, String)` holds it: every value as text.
fn string_map(m: &Value) -> BTreeMap<String, String> {
    m.as_object()
        .map(|o| o.iter().map(|(k, v)| (k.clone(), v.as_str().map_or_else(|| v.to_string(), str::to_string))).collect())
        .unwrap_or_default()
}

// Issue 12, section 1: after a simulate run, the seed's own column lists select cleanly from
// `conversations FINAL` and `interactions FINAL`, and every value equals the event log's.
#[test]
fn the_seeds_column_lists_select_what_the_event_log_says() {
    let ch = ClickHouse::start();
    let db = ch.fresh_database();
    let data = tempfile::tempdir().unwrap();
    ch.apply_schema(&db, data.path());
    let sim = ch
        .cli(&db, data.path())
        .env("SERPHONA_OBS_CLICKHOUSE_ENABLED", "true")
        .args(["simulate", "--conversations", "60", "--seed", "5", "-q"])
        .output()
        .unwrap();
    assert!(sim.status.success(), "{}", text(&sim));
    let log = log_lines(data.path());

    // conversations: one row per conversation, as its `conversation.ended` line says.
    let ended: HashMap<&str, &Value> = log
        .iter()
        .filter(|l| l["event_type"] == "conversation.ended")
        .map(|l| (l["conversation_id"].as_str().unwrap(), l))
        .collect();
    assert_eq!(ended.len(), 60);
    let convs = rows(&ch, &format!("SELECT {SEED_CONVERSATIONS} FROM {db}.conversations FINAL"));
    assert_eq!(convs.len(), 60);
    for row in &convs {
        let id = row["conversation_id"].as_str().unwrap();
        let end = ended[id];
        assert_eq!(row["tenant_id"], end["tenant_id"], "{id}");
        assert_eq!(row["agent_id"], end["agent_id"], "{id}");
        assert_eq!(row["customer_id"], end["customer_id"], "{id}");
        assert_eq!(row["channel"], end["channel"], "{id}");
        assert_eq!(micros(&row["start_time"]), micros(&end["started_at"]), "{id}");
        assert_eq!(micros(&row["end_time"]), micros(&end["timestamp"]), "{id}");
        assert_eq!(row["duration_seconds"], end["duration_seconds"], "{id}");
        assert_eq!(row["interaction_count"], end["interaction_count"], "{id}");
        assert_eq!(row["resolution"], end["resolution"], "{id}");
        assert_eq!(row["rating"], end["rating"], "{id}");
        assert_eq!(row["tags"], end.get("tags").cloned().unwrap_or(json!([])), "{id}");
        assert_eq!(string_map(&row["metadata"]), string_map(&end["metadata"]), "{id}");
    }

    // interactions: one row per turn line; the seed's `sentiment` is the log's label.
    let turns: HashMap<&str, &Value> = log
        .iter()
        .filter(|l| l["event_type"] == "interaction.agent" || l["event_type"] == "interaction.customer")
        .map(|l| (l["event_id"].as_str().unwrap(), l))
        .collect();
    let its = rows(&ch, &format!("SELECT {SEED_INTERACTIONS} FROM {db}.interactions FINAL"));
    assert_eq!(its.len(), turns.len());
    let ids: BTreeSet<&str> = its.iter().map(|r| r["interaction_id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), its.len(), "interaction_id is unique per row");
    let mut labels = BTreeMap::<String, usize>::new();
    for row in &its {
        let id = row["interaction_id"].as_str().unwrap();
        let turn = turns.get(id).unwrap_or_else(|| panic!("interaction_id {id} is no turn's event_id"));
        assert_eq!(row["conversation_id"], turn["conversation_id"], "{id}");
        assert_eq!(row["tenant_id"], turn["tenant_id"], "{id}");
        assert_eq!(micros(&row["timestamp"]), micros(&turn["timestamp"]), "{id}");
        assert_eq!(row["speaker_type"], turn["speaker"], "{id}");
        assert_eq!(row["content"], turn["content"], "{id}");
        let m = &turn["metadata"];
        assert_eq!(row["sentiment"], m.get("sentiment").cloned().unwrap_or(json!("")), "{id}");
        assert_eq!(row["intent"], m.get("intent").cloned().unwrap_or(Value::Null), "{id}");
        assert_eq!(row["confidence"], m.get("confidence").cloned().unwrap_or(Value::Null), "{id}");
        *labels.entry(row["sentiment"].as_str().unwrap().to_string()).or_default() += 1;
    }
    // Only the seed's labels, or empty; and the simulation gives all three.
    assert!(labels.keys().all(|l| ["", "positive", "neutral", "negative"].contains(&l.as_str())), "{labels:?}");
    for l in ["positive", "neutral", "negative"] {
        assert!(labels.get(l).copied().unwrap_or(0) > 0, "no {l} turn: {labels:?}");
    }
    // The seed's types: DateTime for the times, String for the label.
    let types: BTreeMap<String, String> = rows(
        &ch,
        &format!(
            "SELECT concat(table, '.', name) AS c, type FROM system.columns WHERE database = '{db}' \
             AND table IN ('conversations', 'interactions') AND name IN ('start_time', 'end_time', 'timestamp', 'sentiment', 'interaction_id')"
        ),
    )
    .into_iter()
    .map(|r| (r["c"].as_str().unwrap().to_string(), r["type"].as_str().unwrap().to_string()))
    .collect();
    assert_eq!(types["conversations.start_time"], "DateTime64(6, 'UTC')");
    assert_eq!(types["conversations.end_time"], "Nullable(DateTime64(6, 'UTC'))");
    assert_eq!(types["interactions.timestamp"], "DateTime64(6, 'UTC')");
    assert_eq!(types["interactions.sentiment"], "LowCardinality(String)");
    assert_eq!(types["interactions.interaction_id"], "String");
}

// Issue 12, section 1: a database made by the migrations before the seed columns, holding
// rows, reaches the new shape through `schema apply`; its old rows keep their score and get
// their label from it, and new rows written after are read through the same column lists.
#[test]
fn an_existing_database_upgrades_and_its_old_rows_read_through_the_seed_columns() {
    let ch = ClickHouse::start();
    let db = ch.fresh_database();
    let data = tempfile::tempdir().unwrap();
    let config = ch.library_config(&db, data.path());
    let old: Vec<_> = schema::built_in().into_iter().filter(|m| m.version <= 7).collect();
    assert_eq!(old.len(), 7);
    let opts = RenderOptions { database: db.clone(), retention_days: 30, cluster: None };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(Migrator::new(serphona_obs::analytics::client(&config.clickhouse), opts, old).apply()).unwrap();

    // Rows in the old shape: `sentiment` is the score.
    ch.query(&format!(
        "INSERT INTO {db}.conversations (tenant_id, conversation_id, agent_id, customer_id, channel, language, service, status, \
         started_at, ended_at, duration_seconds, resolution, rating, interaction_count, agent_turns, customer_turns, tags, trace_id, \
         span_id, metadata, event_id, version) VALUES \
         ('acme', 'old-conv', 'bot', 'cust-1', 'voice', 'en-US', 'svc', 'ended', '2026-11-30 10:00:00.000000', \
         '2026-11-30 10:02:00.500000', 120.5, 'resolved', 5, 4, 2, 2, ['billing'], 't', 's', {{'queue': 'q1'}}, generateUUIDv7(), 2)"
    ));
    ch.query(&format!(
        "INSERT INTO {db}.interactions (tenant_id, conversation_id, timestamp, event_id, agent_id, service, speaker_type, turn, \
         content, sentiment, intent, confidence, interrupted, trace_id, span_id, parent_span_id, metadata) VALUES \
         ('acme', 'old-conv', '2026-11-30 10:00:01.000000', '01000000-0000-7000-8000-000000000001', 'bot', 'svc', 'customer', 1, 'hi', 0.6, 'greeting', 0.9, false, 't', 's1', 's', {{}}), \
         ('acme', 'old-conv', '2026-11-30 10:00:02.000000', '01000000-0000-7000-8000-000000000002', 'bot', 'svc', 'customer', 2, 'bad', -0.5, NULL, NULL, false, 't', 's2', 's', {{}}), \
         ('acme', 'old-conv', '2026-11-30 10:00:03.000000', '01000000-0000-7000-8000-000000000003', 'bot', 'svc', 'customer', 3, 'meh', 0.1, NULL, NULL, false, 't', 's3', 's', {{}}), \
         ('acme', 'old-conv', '2026-11-30 10:00:04.000000', '01000000-0000-7000-8000-000000000004', 'bot', 'svc', 'agent', 4, 'ok', NULL, NULL, NULL, false, 't', 's4', 's', {{}})"
    ));
    let rolled_before = ch.query_u64(&format!("SELECT sum(turns) FROM {db}.interactions_hourly"));
    assert_eq!(rolled_before, 4);

    // `schema status` lists the new migrations as pending, `schema apply` applies them alone.
    let status = ch.cli(&db, data.path()).args(["schema", "status", "--output", "json"]).output().unwrap();
    let states: Vec<Value> = serde_json::from_slice(&status.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&status)));
    let seed = states.iter().find(|s| s["file"] == "0008_seed_columns.sql").unwrap_or_else(|| panic!("{states:?}"));
    assert_eq!(seed["state"], "pending");
    let apply = ch.cli(&db, data.path()).args(["schema", "apply", "--output", "json"]).output().unwrap();
    assert!(apply.status.success(), "{}", text(&apply));
    let report: Value = serde_json::from_slice(&apply.stdout).unwrap();
    assert_eq!(report["applied"], json!(["0008_seed_columns.sql", "0009_usage_turn_taking.sql"]), "{report}");
    let status = ch.cli(&db, data.path()).args(["schema", "status", "--output", "json"]).output().unwrap();
    let states: Vec<Value> = serde_json::from_slice(&status.stdout).unwrap();
    assert!(states.iter().all(|s| s["state"] == "applied"), "{states:?}");

    // New rows, through the library, with the seed's string metadata on one turn.
    let obs = Observability::init(config).unwrap();
    let conv = obs.start_conversation(ConversationStart::new("acme", "bot", "cust-2", Channel::Chat).meta("queue", "q2"));
    conv.track_interaction(Interaction::customer("this is the third time I call").metadata([
        ("sentiment", "negative"),
        ("intent", "complaint"),
        ("confidence", "0.95"),
    ]));
    conv.track_interaction(Interaction::agent("I am sorry; let me fix it now.").sentiment(0.4));
    let new_id = conv.id().to_string();
    conv.end(ConversationEnd::new(Resolution::Resolved).rating(4));
    obs.shutdown(Duration::from_secs(20)).unwrap();

    let its = rows(&ch, &format!("SELECT {SEED_INTERACTIONS}, sentiment_score FROM {db}.interactions FINAL ORDER BY timestamp"));
    let got: Vec<(String, Value, Value)> = its
        .iter()
        .map(|r| (r["content"].as_str().unwrap().to_string(), r["sentiment"].clone(), r["sentiment_score"].clone()))
        .collect();
    assert_eq!(
        got,
        vec![
            ("hi".to_string(), json!("positive"), json!(0.6)),
            ("bad".to_string(), json!("negative"), json!(-0.5)),
            ("meh".to_string(), json!("neutral"), json!(0.1)),
            ("ok".to_string(), json!(""), Value::Null),
            ("this is the third time I call".to_string(), json!("negative"), json!(-0.5)),
            ("I am sorry; let me fix it now.".to_string(), json!("positive"), json!(0.4)),
        ]
    );
    assert_eq!(its[0]["interaction_id"], "01000000-0000-7000-8000-000000000001");
    assert_eq!(its[0]["intent"], "greeting");
    assert_eq!(its[4]["intent"], "complaint");
    assert_eq!(its[4]["confidence"], json!(0.95));

    let convs = rows(&ch, &format!("SELECT {SEED_CONVERSATIONS} FROM {db}.conversations FINAL ORDER BY start_time"));
    assert_eq!(convs.len(), 2);
    assert_eq!(convs[0]["conversation_id"], "old-conv");
    assert_eq!(convs[0]["start_time"], "2026-11-30 10:00:00.000000");
    assert_eq!(convs[0]["end_time"], "2026-11-30 10:02:00.500000");
    assert_eq!(convs[0]["duration_seconds"], json!(120.5));
    assert_eq!(convs[0]["metadata"], json!({"queue": "q1"}));
    assert_eq!(convs[1]["conversation_id"], new_id.as_str());
    assert_eq!(convs[1]["interaction_count"], json!(2));
    assert_eq!(convs[1]["rating"], json!(4));
    assert_eq!(convs[1]["metadata"], json!({"queue": "q2"}));

    // The hourly rollup is fed again after the migration, from the renamed score.
    assert_eq!(ch.query_u64(&format!("SELECT sum(turns) FROM {db}.interactions_hourly")), rolled_before + 2);
    let scored = ch.query(&format!("SELECT sum(sentiment_scored), round(sum(sentiment_sum), 3) FROM {db}.interactions_hourly"));
    assert_eq!(scored.trim(), "5\t0.1", "3 old scores (0.6, -0.5, 0.1) and 2 new (-0.5, 0.4)");
}
