//! Issue 16: usage, cost and turn-taking shown by `query`, over both stores. Conversations
//! recorded through the library into the event log and ClickHouse (the real engine, see
//! support::clickhouse); the real binary's `query stats` and `query conversation` read them
//! back, and every total is checked against the sums taken from the event log itself.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Output;
use std::time::Duration;

use serde_json::Value;
use serphona_obs::Observability;
use serphona_obs::store::local::LocalStore;
use serphona_obs::types::*;
use time::OffsetDateTime;

use crate::support::clickhouse::ClickHouse;

fn text(o: &Output) -> String {
    format!("status {:?}\nstdout:\n{}\nstderr:\n{}", o.status, String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// A small deterministic generator (no dependency on the simulator, which others change).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        self.0 >> 33
    }

    /// A value in `lo..hi` (whole milliseconds, or whatever unit).
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo)
    }
}

/// The known conversation of the view test.
const KNOWN: &str = "conv-voice-known";

/// A voice conversation with every mark: latency parts on both turns, an agent turn the
/// customer barged in on (400 ms), dead air (3 s), the agent talking over the customer
/// (derived from the turn times, 250 ms), a priced LLM tool call, and an unpriced model.
fn record_known(obs: &Observability, base: OffsetDateTime) {
    let at = |ms: i64| base + time::Duration::milliseconds(ms);
    let conv = obs.start_conversation(ConversationStart::new("acme-telco", "voice-bot", "cust-1", Channel::Voice).id(KNOWN).at(at(0)));
    conv.track_interaction(Interaction::agent("Hi, this is Acme. How can I help?").duration_ms(2000.0).at(at(900)));
    conv.track_interaction(
        Interaction::customer("My bill doubled.")
            .duration_ms(1500.0)
            .latency(TurnLatency { stt_ms: Some(180.0), end_of_utterance_ms: Some(300.0), ..TurnLatency::default() })
            .usage(Usage::default().stt_seconds(1.5))
            .at(at(3_400)),
    );
    conv.track_decision(
        Decision::new(DecisionType::ToolCall, "billing.lookup_invoice", "look up the invoice")
            .duration_ms(800.0)
            .usage(Usage::llm("gpt-4o-mini", 1000, 40))
            .at(at(5_000)),
    );
    // 5,900 to 9,300; the customer barges in 400 ms before its end.
    conv.track_interaction(
        Interaction::agent("I see a duplicate charge of 42 dollars on your March invoice, which I can")
            .duration_ms(3400.0)
            .latency(TurnLatency {
                stt_ms: Some(180.0),
                end_of_utterance_ms: Some(300.0),
                llm_ttft_ms: Some(620.0),
                tts_ttfb_ms: Some(150.0),
                tool_ms: Some(800.0),
                response_ms: Some(2100.0),
                ..TurnLatency::default()
            })
            .usage(Usage::llm("gpt-4o-mini", 1500, 64).cached_tokens(1000).tts_characters(80))
            .interrupted_by(TurnSpeaker::Customer, Some(400.0))
            .at(at(5_900)),
    );
    // The customer's barge-in: starts 400 ms before the agent's turn ended.
    conv.track_interaction(Interaction::customer("Yes, refund it please.").duration_ms(1200.0).at(at(8_900)));
    // 3 s of silence, then the agent; then the agent talks over the customer's next turn.
    conv.track_interaction(
        Interaction::agent("Done: the refund is on its way.")
            .duration_ms(1800.0)
            .latency(TurnLatency { llm_ttft_ms: Some(700.0), tts_ttfb_ms: Some(160.0), response_ms: Some(3000.0), ..TurnLatency::default() })
            .usage(Usage::llm("some-unknown-model", 500, 20))
            .at(at(13_100)),
    );
    conv.track_interaction(Interaction::customer("Thanks, and also my").duration_ms(1000.0).at(at(15_400)));
    conv.track_interaction(Interaction::agent("Anything else today?").duration_ms(1200.0).at(at(16_150)));
    conv.end(ConversationEnd::new(Resolution::Resolved).rating(5).at(at(20_000)));
}

/// `n` conversations over two tenants, voice and chat, with latency parts, usage on turns and
/// tool calls, interruptions and dead air drawn from `rng`; the last one stays active.
fn record_many(obs: &Observability, base: OffsetDateTime, n: usize, rng: &mut Lcg) {
    let models = ["gpt-4o-mini", "gpt-4o", "claude-3-5-haiku"];
    for i in 0..n {
        let tenant = if i % 3 == 0 { "globex-bank" } else { "acme-telco" };
        let agent = format!("{tenant}-bot-{}", i % 2);
        let voice = i % 4 != 3;
        let channel = if voice { Channel::Voice } else { Channel::Chat };
        let start = base + time::Duration::seconds(i as i64 * 120);
        let conv = obs.start_conversation(ConversationStart::new(tenant, agent, format!("cust-{i}"), channel).at(start));
        let model = models[i % models.len()];
        // Time in ms from the start; `end` is where the last turn ended.
        let mut t = 500i64;
        for turn in 0..rng.range(2, 6) {
            let customer_ms = rng.range(600, 3000) as f64;
            let mut customer = Interaction::customer(format!("customer turn {turn}")).at(start + time::Duration::milliseconds(t));
            if voice {
                customer = customer
                    .duration_ms(customer_ms)
                    .latency(TurnLatency { stt_ms: Some(rng.range(80, 400) as f64), ..TurnLatency::default() })
                    .usage(Usage::default().stt_seconds(customer_ms / 1000.0));
                if rng.range(0, 5) == 0 {
                    customer = customer.interrupted_by(TurnSpeaker::Agent, Some(rng.range(100, 600) as f64));
                }
            }
            conv.track_interaction(customer);
            t += customer_ms as i64;
            let mut tool = None;
            if rng.range(0, 3) == 0 {
                let tool_ms = rng.range(100, 900);
                tool = Some(tool_ms as f64);
                conv.track_decision(
                    Decision::new(DecisionType::ToolCall, "crm.lookup", "look it up")
                        .duration_ms(tool_ms as f64)
                        .usage(Usage::llm(model, rng.range(200, 900), rng.range(5, 40)))
                        .at(start + time::Duration::milliseconds(t + 10)),
                );
            }
            // The reply: after a short pause, sometimes dead air, sometimes cutting in.
            let gap = match rng.range(0, 6) {
                0 => rng.range(2500, 6000) as i64,
                1 => -(rng.range(100, 500) as i64),
                _ => rng.range(200, 1500) as i64,
            };
            t += gap;
            let agent_ms = rng.range(800, 4000) as f64;
            let usage = Usage::llm(model, rng.range(300, 2500), rng.range(10, 120)).cached_tokens(rng.range(0, 200));
            let mut agent = Interaction::agent(format!("agent turn {turn}")).usage(usage).at(start + time::Duration::milliseconds(t));
            if voice {
                let eou = rng.range(100, 600) as f64;
                let llm = rng.range(250, 1500) as f64;
                let tts = rng.range(80, 300) as f64;
                agent = agent.duration_ms(agent_ms).latency(TurnLatency {
                    stt_ms: Some(rng.range(80, 400) as f64),
                    end_of_utterance_ms: Some(eou),
                    llm_ttft_ms: Some(llm),
                    tts_ttfb_ms: Some(tts),
                    tool_ms: tool,
                    response_ms: Some(eou + llm + tts + tool.unwrap_or(0.0) + rng.range(0, 200) as f64),
                    ..TurnLatency::default()
                });
                if rng.range(0, 5) == 0 {
                    agent = agent.interrupted_by(TurnSpeaker::Customer, Some(rng.range(100, 800) as f64));
                }
            }
            conv.track_interaction(agent);
            t += agent_ms as i64 + rng.range(300, 2500) as i64;
        }
        if i + 1 == n {
            std::mem::forget(conv); // active
            continue;
        }
        let resolution = [Resolution::Resolved, Resolution::Transferred, Resolution::Abandoned][i % 3];
        conv.end(ConversationEnd::new(resolution).at(start + time::Duration::milliseconds(t + 1000)));
    }
}

/// The sums the event log itself gives, over every turn and decision (not the ends, whose
/// usage is their sum).
#[derive(Debug, Default)]
struct LogSums {
    conversations: u64,
    input: u64,
    output: u64,
    cached: u64,
    cost: f64,
    interruptions: u64,
    dead_air_ms: f64,
    talk_ms: f64,
}

fn log_sums(events: &[Event]) -> LogSums {
    let mut s = LogSums::default();
    let mut ids = std::collections::BTreeSet::new();
    for e in events {
        ids.insert(e.conversation_id.to_string());
        if matches!(e.kind, EventKind::ConversationEnded { .. }) {
            continue;
        }
        if let Some(u) = e.kind.usage() {
            s.input += u.input_tokens.unwrap_or(0);
            s.output += u.output_tokens.unwrap_or(0);
            s.cached += u.cached_tokens.unwrap_or(0);
            s.cost += u.cost_usd.unwrap_or(0.0);
        }
        if let Some(m) = e.kind.turn_marks() {
            s.interruptions += u64::from(m.interruption.is_some());
            s.dead_air_ms += m.dead_air_ms.unwrap_or(0.0);
        }
        if let EventKind::AgentTurn { duration_ms: Some(d), .. } | EventKind::CustomerTurn { duration_ms: Some(d), .. } = e.kind {
            s.talk_ms += d;
        }
    }
    s.conversations = ids.len() as u64;
    s
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * (1.0 + a.abs().max(b.abs()))
}

/// Rounds floats so sums taken in another order compare equal (as in query.rs).
fn norm(v: Value) -> Value {
    match v {
        Value::Number(n) if n.is_f64() => serde_json::json!((n.as_f64().unwrap() * 1e9).round() / 1e9),
        Value::Array(a) => Value::Array(a.into_iter().map(norm).collect()),
        Value::Object(o) => Value::Object(o.into_iter().map(|(k, v)| (k, norm(v))).collect()),
        other => other,
    }
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

/// Records the data into both stores and returns the ClickHouse peer, its database and the
/// data dir.
fn recorded() -> (ClickHouse, String, tempfile::TempDir) {
    let ch = ClickHouse::start();
    let db = ch.fresh_database();
    let data = tempfile::tempdir().unwrap();
    ch.apply_schema(&db, data.path());
    let mut config = ch.library_config(&db, data.path());
    config.tracing.enabled = false;
    let obs = Observability::init(config).unwrap();
    let base = (OffsetDateTime::now_utc() - time::Duration::hours(6)).replace_nanosecond(0).unwrap();
    record_known(&obs, base - time::Duration::hours(1));
    record_many(&obs, base, 48, &mut Lcg(16));
    obs.shutdown(Duration::from_secs(30)).unwrap();
    (ch, db, data)
}

fn query(ch: &ClickHouse, db: &str, data: &Path, source: &str, args: &[&str]) -> Output {
    let out = ch.cli(db, data).arg("query").args(args).args(["--source", source]).output().unwrap();
    assert!(out.status.success(), "query {args:?} --source {source}: {}", text(&out));
    out
}

#[test]
fn cost_and_turn_taking_per_conversation_equal_the_event_logs_in_both_stores() {
    let (ch, db, data) = recorded();
    let events = LocalStore::open(data.path()).read_all().unwrap();

    // ClickHouse's conversation rows carry the totals of `conversation.ended`, exactly.
    let ended: BTreeMap<String, (f64, u64, u64, u64, TurnTaking)> = events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::ConversationEnded { usage, turn_taking, .. } => {
                let u = usage.clone().unwrap_or_default();
                Some((
                    e.conversation_id.to_string(),
                    (
                        u.cost_usd.unwrap_or(0.0),
                        u.input_tokens.unwrap_or(0),
                        u.output_tokens.unwrap_or(0),
                        u.cached_tokens.unwrap_or(0),
                        turn_taking.unwrap_or_default(),
                    ),
                ))
            }
            _ => None,
        })
        .collect();
    assert_eq!(ended.len(), 48, "47 simulated and the known one ended");
    let rows = ch.query(&format!(
        "SELECT conversation_id, cost_usd, input_tokens, output_tokens, cached_tokens, interruptions_by_customer, \
         interruptions_by_agent, dead_air_count FROM {db}.conversations FINAL WHERE status = 'ended' \
         ORDER BY conversation_id FORMAT JSONEachRow SETTINGS output_format_json_quote_64bit_integers = 0"
    ));
    let mut seen = 0;
    for line in rows.lines() {
        let row: Value = serde_json::from_str(line).unwrap();
        let id = row["conversation_id"].as_str().unwrap();
        let (cost, input, output, cached, tt) = ended[id];
        assert_eq!(f(&row["cost_usd"]), cost, "{id}: cost_usd");
        assert_eq!(row["input_tokens"].as_u64(), Some(input), "{id}");
        assert_eq!(row["output_tokens"].as_u64(), Some(output), "{id}");
        assert_eq!(row["cached_tokens"].as_u64(), Some(cached), "{id}");
        assert_eq!(row["interruptions_by_customer"].as_u64(), Some(u64::from(tt.interruptions_by_customer)), "{id}");
        assert_eq!(row["interruptions_by_agent"].as_u64(), Some(u64::from(tt.interruptions_by_agent)), "{id}");
        assert_eq!(row["dead_air_count"].as_u64(), Some(u64::from(tt.dead_air_count)), "{id}");
        seen += 1;
    }
    assert_eq!(seen, ended.len());
    assert!(ended.values().any(|v| v.0 > 0.0) && ended.values().any(|v| v.4.interruptions() > 0) && ended.values().any(|v| v.4.dead_air_count > 0));

    // `query conversations -o json`: each conversation's usage and turn_taking, the same from
    // both stores, equal to what its end carries.
    let local: Value = serde_json::from_slice(&query(&ch, &db, data.path(), "local", &["conversations", "-n", "0", "-o", "json"]).stdout).unwrap();
    let clickhouse: Value =
        serde_json::from_slice(&query(&ch, &db, data.path(), "clickhouse", &["conversations", "-n", "0", "-o", "json"]).stdout).unwrap();
    assert_eq!(norm(local.clone()), norm(clickhouse), "the two stores' conversations differ");
    for c in local.as_array().unwrap() {
        let id = c["conversation_id"].as_str().unwrap();
        let Some((cost, input, output, cached, tt)) = ended.get(id) else { continue };
        assert!(close(f(&c["usage"]["cost_usd"]), *cost), "{id}: {} vs {cost}", c["usage"]);
        assert_eq!(c["usage"]["input_tokens"].as_u64(), Some(*input), "{id}");
        assert_eq!(c["usage"]["output_tokens"].as_u64(), Some(*output), "{id}");
        assert_eq!(c["usage"]["cached_tokens"].as_u64(), Some(*cached), "{id}");
        let got: TurnTaking = serde_json::from_value(c["turn_taking"].clone()).unwrap();
        assert_eq!((got.interruptions_by_customer, got.interruptions_by_agent, got.dead_air_count), (tt.interruptions_by_customer, tt.interruptions_by_agent, tt.dead_air_count), "{id}");
        for (a, b) in [(got.overlap_ms, tt.overlap_ms), (got.dead_air_ms, tt.dead_air_ms), (got.agent_talk_ms, tt.agent_talk_ms), (got.customer_talk_ms, tt.customer_talk_ms)] {
            assert!(close(a, b), "{id}: {got:?} vs {tt:?}");
        }
    }
}

#[test]
fn stats_json_has_the_documented_fields_with_p95_over_p50_and_the_event_logs_totals() {
    let (ch, db, data) = recorded();
    let events = LocalStore::open(data.path()).read_all().unwrap();
    let sums = log_sums(&events);
    assert_eq!(sums.conversations, 49);
    assert!(sums.interruptions > 0 && sums.dead_air_ms > 0.0 && sums.cost > 0.0, "{sums:?}");

    for by in [None, Some("tenant"), Some("agent"), Some("channel"), Some("resolution")] {
        let mut args = vec!["stats", "-o", "json"];
        if let Some(by) = by {
            args.extend(["--by", by]);
        }
        let local: Value = serde_json::from_slice(&query(&ch, &db, data.path(), "local", &args).stdout).unwrap();
        let clickhouse: Value = serde_json::from_slice(&query(&ch, &db, data.path(), "clickhouse", &args).stdout).unwrap();
        // Both stores compute exact nearest-rank percentiles: the same figures (floats
        // rounded to 1e-9 for sums taken in another order).
        assert_eq!(norm(local.clone()), norm(clickhouse.clone()), "stats --by {by:?}: the two stores differ");
        for (source, rows) in [("local", &local), ("clickhouse", &clickhouse)] {
            let rows = rows.as_array().unwrap();
            let (mut input, mut output, mut cached, mut cost, mut interruptions, mut conversations) = (0, 0, 0, 0.0, 0, 0);
            for r in rows {
                let ctx = format!("{source} --by {by:?} group {}", r["group"]);
                for part in ["stt", "end_of_utterance", "llm_ttft", "tts_ttfb", "response", "tool", "greeting"] {
                    let p = &r["latency_ms"][part];
                    assert!(p.get("p50").is_some() && p.get("p95").is_some(), "{ctx}: latency_ms.{part} is {p}");
                    if let (Some(p50), Some(p95)) = (p["p50"].as_f64(), p["p95"].as_f64()) {
                        assert!(p95 >= p50, "{ctx}: latency_ms.{part}: p95 {p95} < p50 {p50}");
                    }
                }
                for key in ["interruptions_per_conversation", "dead_air_share"] {
                    assert!(r.get(key).is_some(), "{ctx}: no {key}");
                }
                assert!(r["cost_usd"].get("per_conversation").is_some(), "{ctx}");
                input += r["tokens"]["input"].as_u64().unwrap();
                output += r["tokens"]["output"].as_u64().unwrap();
                cached += r["tokens"]["cached"].as_u64().unwrap();
                cost += f(&r["cost_usd"]["total"]);
                interruptions += r["interruptions"].as_u64().unwrap();
                let n = r["conversations"].as_u64().unwrap();
                conversations += n;
                assert!(close(f(&r["interruptions_per_conversation"]), r["interruptions"].as_u64().unwrap() as f64 / n as f64), "{ctx}");
                assert!(close(f(&r["cost_usd"]["per_conversation"]), f(&r["cost_usd"]["total"]) / n as f64), "{ctx}");
            }
            let ctx = format!("{source} --by {by:?}");
            assert_eq!((input, output, cached), (sums.input, sums.output, sums.cached), "{ctx}: tokens");
            assert_eq!(interruptions, sums.interruptions, "{ctx}");
            assert_eq!(conversations, sums.conversations, "{ctx}");
            assert!(close(cost, sums.cost), "{ctx}: cost {cost} vs the log's {}", sums.cost);
            if by.is_none() {
                let all = &rows[0];
                for part in ["stt", "end_of_utterance", "llm_ttft", "tts_ttfb", "response", "tool", "greeting"] {
                    assert!(all["latency_ms"][part]["p50"].is_number(), "{ctx}: no {part} p50 in {all}");
                }
                let share = sums.dead_air_ms / (sums.dead_air_ms + sums.talk_ms);
                assert!(close(f(&all["dead_air_share"]), share), "{ctx}: dead_air_share {} vs {share}", all["dead_air_share"]);
            }
        }
    }

    // The latency parts' nearest-rank p50 over the log's own values.
    let mut llm: Vec<f64> = events.iter().filter_map(|e| e.kind.latency().and_then(|l| l.llm_ttft_ms)).collect();
    llm.sort_by(f64::total_cmp);
    let p50 = llm[(llm.len() as f64 * 0.5).ceil() as usize - 1];
    let all: Value = serde_json::from_slice(&query(&ch, &db, data.path(), "clickhouse", &["stats", "-o", "json"]).stdout).unwrap();
    assert_eq!(all[0]["latency_ms"]["llm_ttft"]["p50"].as_f64(), Some(p50));

    // Table and CSV carry them too.
    let table = String::from_utf8(query(&ch, &db, data.path(), "local", &["stats", "--by", "channel"]).stdout).unwrap();
    for part in ["voice latency, p50 / p95", "llm ttft", "turn-taking and usage", "dead-air share", "cost/conv"] {
        assert!(table.contains(part), "{part:?} missing from\n{table}");
    }
    let csv_out = query(&ch, &db, data.path(), "local", &["conversations", "-n", "0", "-o", "csv"]);
    let mut reader = csv::Reader::from_reader(csv_out.stdout.as_slice());
    let header: Vec<String> = reader.headers().unwrap().iter().map(str::to_string).collect();
    let col = header.iter().position(|h| h == "input_tokens").unwrap_or_else(|| panic!("{header:?}"));
    let csv_input: u64 = reader.records().map(|r| r.unwrap()[col].parse::<u64>().unwrap()).sum();
    assert_eq!(csv_input, sums.input);
    let csv_out = query(&ch, &db, data.path(), "clickhouse", &["stats", "-o", "csv"]);
    let mut reader = csv::Reader::from_reader(csv_out.stdout.as_slice());
    let header: Vec<String> = reader.headers().unwrap().iter().map(str::to_string).collect();
    for column in ["llm_ttft_ms_p50", "response_ms_p95", "interruptions_per_conversation", "dead_air_share", "tokens_input", "cost_usd_total"] {
        assert!(header.iter().any(|h| h == column), "{column} not in {header:?}");
    }
}

#[test]
fn query_conversation_shows_the_voice_breakdown_interruptions_and_totals() {
    let (ch, db, data) = recorded();
    let view = String::from_utf8(query(&ch, &db, data.path(), "local", &["conversation", KNOWN]).stdout).unwrap();
    let from_clickhouse = String::from_utf8(query(&ch, &db, data.path(), "clickhouse", &["conversation", KNOWN]).stdout).unwrap();
    assert_eq!(view, from_clickhouse, "the two stores' views differ");
    for part in [
        "latency  stt 180ms · eou 300ms · llm 620ms · tts 150ms · tool 800ms · total 2.1s",
        "interrupted by customer, overlap 400ms",
        "dead air 3.0s before",
        "interrupted by agent, overlap 250ms, from the turn times",
        "usage    tokens 1500 in / 64 out (1000 cached), gpt-4o-mini, tts 80 chars, $",
        "unpriced: some-unknown-model",
        "tool_call → billing.lookup_invoice [took 800ms, tokens 1000 in / 40 out, gpt-4o-mini, $0.000174]",
        "totals",
        "usage       tokens 3000 in, 124 out, 1000 cached; cost $",
        "turn-taking interruptions 2 (1 by customer, 1 by agent; overlap 650ms); dead air 1 × 3.0s",
        "talk agent 8.4s, customer 3.7s",
    ] {
        assert!(view.contains(part), "{part:?} missing from\n{view}");
    }
    // The transcript and totals as a person reads them.
    let start = view.find("transcript").unwrap();
    let end = view.find("\ndecisions").unwrap();
    insta::assert_snapshot!("voice_conversation_transcript_and_totals", &view[start..end]);

    // JSON: the totals on the conversation, each turn's parts, marks and usage on its event.
    let json: Value = serde_json::from_slice(&query(&ch, &db, data.path(), "clickhouse", &["conversation", KNOWN, "-o", "json"]).stdout).unwrap();
    let c = &json["conversation"];
    assert_eq!(c["usage"]["input_tokens"], 3000);
    assert_eq!(c["turn_taking"]["interruptions_by_customer"], 1);
    assert_eq!(c["turn_taking"]["interruptions_by_agent"], 1);
    assert_eq!(c["turn_taking"]["dead_air_count"], 1);
    let ended = json["events"].as_array().unwrap().iter().find(|e| e["event_type"] == "conversation.ended").unwrap();
    assert!(close(f(&c["usage"]["cost_usd"]), f(&ended["usage"]["cost_usd"])), "{c} vs {ended}");
    let barged = json["events"].as_array().unwrap().iter().find(|e| e["interruption"]["by"] == "customer").unwrap();
    assert_eq!(barged["latency"]["llm_ttft_ms"], 620.0);
    // CSV: a row per event with the parts and usage.
    let csv_out = query(&ch, &db, data.path(), "local", &["conversation", KNOWN, "-o", "csv"]);
    let mut reader = csv::Reader::from_reader(csv_out.stdout.as_slice());
    let header: Vec<String> = reader.headers().unwrap().iter().map(str::to_string).collect();
    let col = |name: &str| header.iter().position(|h| h == name).unwrap_or_else(|| panic!("{name} not in {header:?}"));
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    let barged = rows.iter().find(|r| &r[col("interrupted_by")] == "customer").unwrap();
    assert_eq!((&barged[col("llm_ttft_ms")], &barged[col("overlap_ms")], &barged[col("input_tokens")]), ("620", "400", "1500"));
}
