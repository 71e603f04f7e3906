//! Scenario files (issue 16): errors name the file, the line and the field through the real
//! binary; latency parts come out with the file's p50/p95; incidents change the data as they
//! say; the real Prometheus counts the tokens and the cost the generator reports; the spans
//! of a simulated LLM call carry the GenAI attributes (official OTLP protobuf types).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use serphona_obs::simulation::{self, Pace, Scenario, SimConfig, SimReport};
use serphona_obs::store::local::LocalStore;
use serphona_obs::types::*;
use serphona_obs::{Config, Observability};

use crate::support::otlp::{Receiver, Transport};
use crate::support::prometheus::Prometheus;

const WAIT: Duration = Duration::from_secs(60);

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios").join(name)
}

#[allow(clippy::field_reassign_with_default)]
fn config(dir: &Path) -> Config {
    let mut config = Config::default();
    config.data_dir = dir.to_path_buf();
    config.metrics.enabled = false;
    config.tracing.enabled = false;
    config
}

/// Runs `scenario` as `simulate --scenario` does (its seed, its rate, the conversations of its
/// duration, no concurrency limit) through `obs`.
fn run(obs: &Observability, scenario: &Scenario) -> SimReport {
    let sim = SimConfig {
        conversations: simulation::conversations_in(scenario.duration, scenario.rate(), scenario.seed),
        seed: scenario.seed,
        rate: scenario.rate(),
        concurrency: usize::MAX,
        pace: Pace::Fast,
        run_id: None,
    };
    let report = simulation::run_scenario(obs, &sim, scenario, &AtomicBool::new(false), |_| {}).expect("simulate");
    assert_eq!(report.ended, report.conversations);
    report
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

/// The agent turns' latency parts, by part name.
fn parts(events: &[Event], keep: impl Fn(&Event) -> bool) -> BTreeMap<&'static str, Vec<f64>> {
    let mut by_part: BTreeMap<&'static str, Vec<f64>> = BTreeMap::new();
    for e in events.iter().filter(|e| keep(e)) {
        if let EventKind::AgentTurn { latency: Some(l), .. } = &e.kind {
            for (name, v) in l.parts() {
                if let Some(v) = v {
                    by_part.entry(name).or_default().push(v);
                }
            }
        }
    }
    for values in by_part.values_mut() {
        values.sort_by(f64::total_cmp);
    }
    by_part
}

// Issue 16: "a scenario's latency p50/p95 come out within 10% of the file's over 5,000 voice
// turns", read back from the event log.
#[test]
fn latency_parts_come_out_with_the_files_p50_and_p95() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = Scenario::load(&example("clean-day.yaml")).unwrap();
    let obs = Observability::init(config(dir.path())).unwrap();
    run(&obs, &scenario);
    obs.shutdown(WAIT).unwrap();
    let events = LocalStore::open(dir.path()).read_all().unwrap();
    let by_part = parts(&events, |_| true);
    let answers = by_part["response"].len();
    assert!(answers >= 5000, "{answers} voice answers");
    for part in [
        simulation::scenario::Part::Stt,
        simulation::scenario::Part::EndOfUtterance,
        simulation::scenario::Part::LlmTtft,
        simulation::scenario::Part::TtsTtfb,
        simulation::scenario::Part::Tool,
        simulation::scenario::Part::Greeting,
    ] {
        let want = scenario.latency_ms.get(part);
        let got = &by_part[part.as_str()];
        let (p50, p95) = (quantile(got, 0.5), quantile(got, 0.95));
        println!("{}: {} turns, p50 {p50:.0} (file {}), p95 {p95:.0} (file {})", part.as_str(), got.len(), want.p50, want.p95);
        assert!((p50 / want.p50 - 1.0).abs() <= 0.10, "{}: p50 {p50} vs {}", part.as_str(), want.p50);
        assert!((p95 / want.p95 - 1.0).abs() <= 0.10, "{}: p95 {p95} vs {}", part.as_str(), want.p95);
    }
    // Consistent within a turn: the response holds the parts it contains.
    for e in &events {
        if let EventKind::AgentTurn { latency: Some(l), .. } = &e.kind {
            if let Some(response) = l.response_ms {
                let sum: f64 = [l.stt_ms, l.end_of_utterance_ms, l.llm_ttft_ms, l.tts_ttfb_ms, l.tool_ms].iter().flatten().sum();
                assert!(response >= sum, "{l:?}");
            }
        }
    }
}

// Issue 16: "token and cost counters equal the simulator's own totals" (the real Prometheus
// scraping the library's /metrics), and "an incident changes the data as it says": llm_ttft
// p50 for the tenant inside the window against outside it, the errors and transfers of the
// others, each against what the generator reports.
#[test]
fn the_incident_scenario_changes_the_data_and_prometheus_counts_what_the_generator_reports() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = Scenario::load(&example("incidents.yaml")).unwrap();
    let mut config = config(dir.path());
    config.metrics.enabled = true;
    config.metrics.listen = "127.0.0.1:0".parse().unwrap();
    let obs = Observability::init(config).unwrap();
    let prometheus = Prometheus::start(&[obs.metrics_addr().expect("metrics are served")]);
    let report = run(&obs, &scenario);
    obs.flush(WAIT).unwrap();

    // The counters, as the real Prometheus scraped them, against the generator's totals.
    let u = &report.usage;
    assert!(u.input_tokens > 0 && u.output_tokens > 0 && u.cached_tokens > 0 && u.cost_usd > 0.0, "{u:?}");
    let tokens = |kind: &str| format!("sum(serphona_obs_llm_tokens_total{{kind=\"{kind}\"}})");
    let wanted = [
        (tokens("input"), u.input_tokens as f64),
        (tokens("output"), u.output_tokens as f64),
        (tokens("cached"), u.cached_tokens as f64),
    ];
    for (promql, want) in &wanted {
        prometheus.wait_for(&format!("{promql} = {want}"), WAIT, |p| p.value(promql) == Some(*want));
    }
    let cost = "sum(serphona_obs_cost_usd_total)";
    prometheus.wait_for(&format!("{cost} = {}", u.cost_usd), WAIT, |p| {
        p.value(cost).is_some_and(|v| (v - u.cost_usd).abs() <= 1e-9 * u.cost_usd.max(1.0))
    });
    println!("prometheus: {wanted:?}; cost {:?} = generator {}", prometheus.value(cost), u.cost_usd);
    obs.shutdown(WAIT).unwrap();
    drop(obs);

    let events = LocalStore::open(dir.path()).read_all().unwrap();
    let incident = |name: &str| report.incidents.iter().find(|i| i.name == name).unwrap();
    let inside = |e: &Event, name: &str| {
        let i = incident(name);
        i.start <= e.timestamp && e.timestamp < i.end
    };

    // llm-slow: llm_ttft ×4 for acme-telco, inside its window only.
    let slow = incident("llm-slow");
    let acme = |e: &Event| &*e.tenant_id == "acme-telco";
    let p50 = |by: BTreeMap<&str, Vec<f64>>| quantile(&by["llm_ttft"], 0.5);
    let p50_in = p50(parts(&events, |e| acme(e) && inside(e, "llm-slow")));
    let p50_out = p50(parts(&events, |e| acme(e) && !inside(e, "llm-slow")));
    let p50_others_in = p50(parts(&events, |e| !acme(e) && inside(e, "llm-slow")));
    println!("llm-slow: acme-telco llm_ttft p50 {p50_in:.0} inside, {p50_out:.0} outside; others inside {p50_others_in:.0}");
    assert!(p50_in / p50_out >= 3.0, "llm_ttft p50 inside {p50_in} vs outside {p50_out}");
    assert!((p50_others_in / p50_out - 1.0).abs() < 0.3, "the other tenants are not slowed: {p50_others_in}");
    assert!(slow.turns_slowed > 50 && slow.conversations > 50, "{slow:?}");

    // Every conversation an incident reports is in the log, of its tenant and agent.
    let started: BTreeMap<&str, &Event> = events
        .iter()
        .filter(|e| e.event_type() == EventType::ConversationStarted)
        .map(|e| (&*e.conversation_id, e))
        .collect();
    assert_eq!(started.len(), report.conversations);
    for i in &report.incidents {
        assert_eq!(i.conversations, i.conversation_ids.len());
        assert_eq!(i.conversation_ids.iter().collect::<BTreeSet<_>>().len(), i.conversations, "{}: ids are unique", i.name);
        for id in &i.conversation_ids {
            let start = started.get(id.as_str()).unwrap_or_else(|| panic!("{}: {id} is not in the log", i.name));
            assert!(i.tenant.as_deref().is_none_or(|t| t == &*start.tenant_id), "{}: {id}", i.name);
            assert!(i.agent.as_deref().is_none_or(|a| a == &*start.agent_id), "{}: {id}", i.name);
        }
    }

    // stt-outage: its errors, in its window, as many as it reports.
    let outage = events
        .iter()
        .filter(|e| matches!(&e.kind, EventKind::ErrorOccurred { error_type } if error_type == "stt_unavailable"))
        .collect::<Vec<_>>();
    assert_eq!(outage.len() as u64, incident("stt-outage").errors);
    assert!(outage.len() > 30, "{} stt_unavailable errors", outage.len());
    assert!(outage.iter().all(|e| inside(e, "stt-outage")), "every stt_unavailable error is inside the window");

    // resolution-drop: globex-bank's conversations that start inside its window end transferred
    // far more often than its others.
    let ends: BTreeMap<&str, Resolution> = events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::ConversationEnded { resolution, .. } => Some((&*e.conversation_id, *resolution)),
            _ => None,
        })
        .collect();
    let transferred_share = |keep: &dyn Fn(&Event) -> bool| {
        let ids: Vec<&str> = started.iter().filter(|(_, e)| keep(e)).map(|(id, _)| *id).collect();
        ids.iter().filter(|id| ends[*id] == Resolution::Transferred).count() as f64 / ids.len() as f64
    };
    let globex = |e: &Event| &*e.tenant_id == "globex-bank";
    let share_in = transferred_share(&|e| globex(e) && inside(e, "resolution-drop"));
    let share_out = transferred_share(&|e| globex(e) && !inside(e, "resolution-drop"));
    println!("resolution-drop: globex-bank transferred {share_in:.2} inside, {share_out:.2} outside");
    assert!(share_in >= 0.55 && share_out <= 0.25, "transferred {share_in} inside vs {share_out} outside");

    // billing-surge: acme-telco's intents shift to billing_dispute inside its window.
    let billing_share = |keep: &dyn Fn(&Event) -> bool| {
        let intents: Vec<&str> = events
            .iter()
            .filter(|e| e.event_type() == EventType::DecisionMade && keep(e))
            .filter_map(|e| match &e.kind {
                EventKind::DecisionMade { decision_type: DecisionType::IntentDetection, option, .. } => {
                    Some(option.as_str())
                }
                _ => None,
            })
            .collect();
        intents.iter().filter(|i| **i == "billing_dispute").count() as f64 / intents.len() as f64
    };
    let surge_in = billing_share(&|e| acme(e) && inside(e, "billing-surge"));
    let surge_out = billing_share(&|e| acme(e) && !inside(e, "billing-surge"));
    println!("billing-surge: acme-telco billing_dispute {surge_in:.2} inside, {surge_out:.2} outside");
    assert!(surge_in >= 0.65 && surge_out <= 0.45, "billing_dispute {surge_in} inside vs {surge_out} outside");

    // stt-slow-agent: one agent's stt ×3.
    let cards = |e: &Event| &*e.agent_id == "globex-cards-bot";
    let stt = |by: BTreeMap<&str, Vec<f64>>| quantile(&by["stt"], 0.5);
    let stt_in = stt(parts(&events, |e| cards(e) && inside(e, "stt-slow-agent")));
    let stt_out = stt(parts(&events, |e| cards(e) && !inside(e, "stt-slow-agent")));
    println!("stt-slow-agent: stt p50 {stt_in:.0} inside, {stt_out:.0} outside");
    assert!(stt_in / stt_out >= 2.3, "stt p50 {stt_in} inside vs {stt_out} outside");
}

// Issue 16: "the spans of a simulated LLM call carry the GenAI attributes, checked with the
// official OTLP protobuf types".
#[test]
fn the_spans_of_simulated_llm_and_tool_calls_carry_the_genai_attributes() {
    let receiver = Receiver::start(Transport::Grpc);
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.tracing.enabled = true;
    config.tracing.endpoint = serphona_obs::config::Endpoint::parse(&receiver.endpoint()).unwrap();
    config.tracing.protocol = receiver.protocol();
    let obs = Observability::init(config).unwrap();
    let sim = SimConfig { conversations: 20, seed: 3, rate: 50.0, concurrency: 20, pace: Pace::Fast, run_id: None };
    simulation::run(&obs, &sim, &AtomicBool::new(false), |_| {}).unwrap();
    obs.shutdown(WAIT).unwrap();
    let events = LocalStore::open(dir.path()).read_all().unwrap();
    let with_span = events.iter().filter(|e| serphona_obs::trace::tree::span_name(&e.kind).is_some()).count() + 20;
    let spans = receiver.wait_for(WAIT, &format!("{with_span} spans"), |s| s.len() >= with_span);
    let by_id: BTreeMap<String, _> = spans.iter().map(|s| (s.span_id(), s)).collect();
    let (mut llm_calls, mut answers, mut tools) = (0, 0, 0);
    for e in &events {
        let span = || by_id.get(&e.trace.span_id.to_string()).unwrap_or_else(|| panic!("no span for {:?}", e.kind));
        match &e.kind {
            EventKind::DecisionMade { decision_type: DecisionType::LlmCall, usage: Some(u), .. }
            | EventKind::AgentTurn { usage: Some(u), .. }
                if u.model.is_some() =>
            {
                let s = span();
                let model = u.model.clone().unwrap();
                if matches!(e.kind, EventKind::DecisionMade { .. }) {
                    assert_eq!(s.name(), format!("chat {model}"));
                    llm_calls += 1;
                } else {
                    answers += 1;
                }
                assert_eq!(s.attr("gen_ai.operation.name").as_deref(), Some("chat"), "{}", s.name());
                assert_eq!(s.attr("gen_ai.request.model"), Some(model));
                assert_eq!(s.attr("gen_ai.usage.input_tokens"), u.input_tokens.map(|n| n.to_string()));
                assert_eq!(s.attr("gen_ai.usage.output_tokens"), u.output_tokens.map(|n| n.to_string()));
                assert_eq!(s.attr("gen_ai.conversation.id").as_deref(), Some(&*e.conversation_id));
            }
            EventKind::DecisionMade { decision_type: DecisionType::ToolCall, option, .. } => {
                let s = span();
                assert_eq!(s.name(), format!("execute_tool {option}"));
                assert_eq!(s.attr("gen_ai.operation.name").as_deref(), Some("execute_tool"));
                assert_eq!(s.attr("gen_ai.tool.name").as_deref(), Some(option.as_str()));
                tools += 1;
            }
            _ => {}
        }
    }
    assert!(llm_calls >= 10 && answers >= 30 && tools >= 10, "{llm_calls} LLM calls, {answers} answers, {tools} tool calls");
}

/// A scenario file with `body` in a fresh directory; `simulate --scenario` on it.
fn simulate_file(body: &str) -> (std::process::Output, String) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.yaml");
    std::fs::write(&file, body).unwrap();
    let out = crate::support::bin()
        .args(["simulate", "--scenario", file.to_str().unwrap(), "--metrics-addr", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .env("SERPHONA_OBS_TRACING_ENABLED", "false")
        .output()
        .unwrap();
    (out, file.display().to_string())
}

const GOOD: &str = "seed: 3
duration: 10m
conversations_per_hour: 120
tenants:
  - {id: acme, share: 1, agents: [a1, a2]}
incidents:
  - name: slow
    start: 2m
    duration: 5m
    tenant: acme
    effect: {latency_ms: {llm_ttft: x4}}
";

// Issue 16: "a scenario file with a typo, a wrong type or an unknown effect fails with exit 2,
// naming the line and the field".
#[test]
fn a_typo_a_wrong_type_or_an_unknown_effect_exits_2_naming_the_line_and_the_field() {
    let cases = [
        (GOOD.replace("conversations_per_hour", "conversations_per_huor"), 3, "conversations_per_huor"),
        (GOOD.replace("120", "lots"), 3, "conversations_per_hour"),
        (GOOD.replace("{llm_ttft: x4}", "{llm_ttft: x4}, outage: true"), 11, "incidents[0].effect.outage"),
        (GOOD.replace("llm_ttft: x4", "llm_ttfb: x4"), 11, "incidents[0].effect.latency_ms.llm_ttfb"),
        (GOOD.replace("x4", "four times"), 11, "incidents[0].effect.latency_ms.llm_ttft"),
        (GOOD.replace("tenant: acme", "tenant: globex"), 10, "incidents[0].tenant"),
        (GOOD.replace("duration: 5m", "duration: 9m"), 9, "incidents[0].duration"),
        (GOOD.replace("share: 1", "share: 0.5"), 5, "tenants[].share"),
    ];
    for (body, line, field) in cases {
        let (out, file) = simulate_file(&body);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{field}: {stderr}");
        assert!(stderr.contains(&format!("{file}:{line}")), "{field}: the line {line} in {stderr}");
        assert!(stderr.contains(&format!("`{field}`")), "{field} in {stderr}");
    }
    let (out, _) = simulate_file(&GOOD.replace("tenant: acme", "tenant: globex"));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown tenant \"globex\""));
}

// Issue 16: "`simulate --scenario F --output json` reports what it generated, from the
// generator": per incident the conversations affected, and the totals of tokens and cost.
#[test]
fn simulate_reports_each_incidents_conversations_and_the_usage_it_generated() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("s.yaml");
    std::fs::write(&file, GOOD).unwrap();
    let out = crate::support::bin()
        .args(["simulate", "--scenario", file.to_str().unwrap(), "-o", "json", "--metrics-addr", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(dir.path())
        .env("SERPHONA_OBS_TRACING_ENABLED", "false")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let events = LocalStore::open(dir.path()).read_all().unwrap();
    let conversations: BTreeSet<&str> = events.iter().map(|e| &*e.conversation_id).collect();
    assert_eq!(report["conversations"].as_u64().unwrap() as usize, conversations.len());
    assert_eq!(report["events"].as_u64().unwrap() as usize, events.len());
    assert_eq!(report["seed"], 3);
    // 10 minutes at 120 an hour: about 20.
    assert!((8..=40).contains(&conversations.len()), "{}", conversations.len());
    let incident = &report["incidents"][0];
    assert_eq!(incident["name"], "slow");
    let ids: Vec<&str> = incident["conversation_ids"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert_eq!(incident["conversations"].as_u64().unwrap() as usize, ids.len());
    assert!(!ids.is_empty() && ids.iter().all(|id| conversations.contains(id)), "{incident}");
    let start = time::OffsetDateTime::parse(incident["start"].as_str().unwrap(), &time::format_description::well_known::Rfc3339).unwrap();
    let end = time::OffsetDateTime::parse(incident["end"].as_str().unwrap(), &time::format_description::well_known::Rfc3339).unwrap();
    assert_eq!(end - start, time::Duration::minutes(5));
    // The usage the generator reports is the usage in the event log.
    let mut input = 0;
    let mut cost = 0.0;
    for e in &events {
        let usage = match &e.kind {
            EventKind::AgentTurn { usage, .. } | EventKind::CustomerTurn { usage, .. } | EventKind::DecisionMade { usage, .. } => {
                usage.as_ref()
            }
            _ => None,
        };
        if let Some(u) = usage {
            input += u.input_tokens.unwrap_or(0);
            cost += u.cost_usd.unwrap_or(0.0);
        }
    }
    assert_eq!(report["usage"]["input_tokens"].as_u64().unwrap(), input);
    let reported = report["usage"]["cost_usd"].as_f64().unwrap();
    assert!((reported - cost).abs() < 1e-9, "{reported} vs {cost}");
}

// Issue 16: `demo --scenario FILE` draws from the file: its seed and the conversations of its
// duration, the same ones `simulate --scenario FILE` makes.
#[test]
fn demo_takes_a_scenario_file_too() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("s.yaml");
    std::fs::write(&file, GOOD).unwrap();
    let run = |command: &str, data: &str| -> serde_json::Value {
        let mut cmd = crate::support::bin();
        cmd.args([command, "--scenario", file.to_str().unwrap(), "-o", "json", "--metrics-addr", "127.0.0.1:0"]);
        if command == "demo" {
            cmd.arg("--no-tui");
        }
        let out = cmd.arg("--data-dir").arg(dir.path().join(data)).env("SERPHONA_OBS_TRACING_ENABLED", "false").output().unwrap();
        assert!(out.status.success(), "{command}: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let demo = run("demo", "demo");
    let simulate = run("simulate", "simulate");
    assert_eq!(demo["seed"], 3);
    assert_eq!(demo["conversations"], simulate["conversations"]);
    assert_eq!(demo["events"], simulate["events"]);
    assert_eq!(demo["usage"]["input_tokens"], simulate["usage"]["input_tokens"]);
}
