//! `dashboards lint` and `dashboards provision` (issue 6): the built-in dashboards hold the
//! panels the issue asks for and pass the structure lint; a broken copy fails it naming each
//! problem; every panel's queries run without error against the real Prometheus (scraping the
//! real `demo`) and the real ClickHouse engine (after `simulate`), with data on at least 90% of
//! the panels; `provision` upserts the folder and dashboards into a stand-in for Grafana's API,
//! idempotently, and says what to do on a 401 or when Grafana is down.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::clickhouse::ClickHouse;
use crate::support::grafana::{self, Grafana};
use crate::support::prometheus::Prometheus;

const DASHBOARDS: [(&str, &str); 3] = [
    ("conversations.json", "serphona-conversations"),
    ("quality.json", "serphona-quality"),
    ("performance.json", "serphona-performance"),
];

/// Where the lint report of the peers test is saved (for the release notes).
const REPORT: &str = "/tmp/dashboards-lint-report.txt";

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The binary without the developer's Grafana settings either.
fn bin() -> Command {
    let mut cmd = crate::support::bin();
    for key in ["GRAFANA_URL", "GRAFANA_TOKEN", "GRAFANA_USER", "GRAFANA_PASSWORD"] {
        cmd.env_remove(key);
    }
    cmd
}

fn repo_dashboards() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("dashboards")
}

fn read(name: &str) -> Value {
    let path = repo_dashboards().join(name);
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn json_out(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", text(o)))
}

fn panels(d: &Value) -> Vec<&Value> {
    d["panels"].as_array().unwrap().iter().filter(|p| p["type"] != "row").collect()
}

fn all_queries(d: &Value) -> String {
    let mut out = String::new();
    for p in panels(d) {
        for t in p["targets"].as_array().into_iter().flatten() {
            for k in ["expr", "rawSql"] {
                if let Some(q) = t[k].as_str() {
                    out.push_str(q);
                    out.push('\n');
                }
            }
        }
    }
    out
}

/// The issue's panels, variables, datasource uids and metric names are in the files.
#[test]
fn the_dashboards_have_the_panels_variables_and_datasources_of_the_issue() {
    let want: [(&str, &[&str]); 3] = [
        (
            "conversations.json",
            &[
                "Active conversations in real time",
                "Conversation rate per hour",
                "Average duration per channel",
                "Resolution distribution",
                "Top agents by volume",
                "Satisfaction rate",
            ],
        ),
        (
            "quality.json",
            &[
                "Average sentiment per tenant",
                "Compliance score",
                "Average response time",
                "Transfer rate",
                "Top detected intents",
                "Policy violations",
            ],
        ),
        (
            "performance.json",
            &[
                "HTTP latency p50 / p95 / p99",
                "Error rate",
                "Request throughput",
                "Resource utilization",
                "SLA tracking",
                "Voice turn latency p95 by part",
                "STT p95",
                "End of utterance p95",
                "LLM time to first token p95",
                "TTS time to first byte p95",
                "Voice response latency p50 / p95 / p99",
                "Interruptions",
                // Issue 16: a panel per latency part, cost, tokens and turn-taking.
                "Speech-to-text p50 / p95",
                "End of utterance p50 / p95",
                "LLM time to first token p50 / p95",
                "Tool calls p50 / p95",
                "TTS time to first byte p50 / p95",
                "Greeting p50 / p95",
                "Cost by tenant and model",
                "LLM tokens by model and kind",
                "Interruptions per conversation",
                "Dead-air share",
                "Cost and turn-taking per tenant",
            ],
        ),
    ];
    let uids: BTreeSet<&str> = ["serphona-prometheus", "serphona-loki", "serphona-tempo", "serphona-clickhouse"].into();
    let mut used = BTreeSet::new();
    for ((file, uid), (_, titles)) in DASHBOARDS.iter().zip(want) {
        let d = read(file);
        assert_eq!(d["uid"], *uid, "{file}");
        assert_eq!(d["tags"], json!(["serphona"]), "{file}");
        assert!(d["schemaVersion"].as_i64().unwrap() >= 39, "{file}");
        let have: BTreeSet<&str> = panels(&d).iter().map(|p| p["title"].as_str().unwrap()).collect();
        for t in titles {
            assert!(have.contains(t), "{file} has no panel {t:?}; it has {have:?}");
        }
        // tenant, agent and channel: Prometheus label_values with All and multi.
        let vars = d["templating"]["list"].as_array().unwrap();
        let names: Vec<&str> = vars.iter().map(|v| v["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["tenant", "agent", "channel"], "{file}");
        for v in vars {
            assert_eq!(
                v["datasource"],
                json!({"type": "prometheus", "uid": "serphona-prometheus"}),
                "{file} {}",
                v["name"]
            );
            assert!(v["definition"].as_str().unwrap().starts_with("label_values("), "{file} {}", v["name"]);
            assert_eq!((&v["includeAll"], &v["multi"]), (&json!(true), &json!(true)), "{file} {}", v["name"]);
        }
        // Every datasource reference is a provisioned uid with its type.
        let text = d.to_string();
        for (u, kind) in [
            ("serphona-prometheus", "prometheus"),
            ("serphona-clickhouse", "grafana-clickhouse-datasource"),
            ("serphona-loki", "loki"),
        ] {
            if text.contains(&format!("\"uid\":\"{u}\"")) {
                used.insert(u);
                assert!(
                    text.contains(&format!("{{\"type\":\"{kind}\",\"uid\":\"{u}\"}}")),
                    "{file}: {u} without its type {kind}"
                );
            }
        }
        if text.contains("\"datasourceUid\":\"serphona-tempo\"") {
            used.insert("serphona-tempo");
        }
    }
    assert_eq!(used, uids, "the dashboards use every provisioned datasource");

    // The seed's metric names, exactly, and the ClickHouse plugin's macros.
    let all: String = DASHBOARDS.iter().map(|(f, _)| all_queries(&read(f))).collect();
    for name in [
        "conversation_total",
        "conversation_duration_seconds_count",
        "conversation_customer_rating_bucket",
        "conversation_interactions_total_sum",
        "conversation_resolution_rate",
        "agent_response_time_seconds_bucket",
        "http_request_duration_seconds_bucket",
        "error_rate",
        "conversation_sentiment_score",
        "agent_assertiveness_score",
        "conversation_compliance_score",
        "serphona_obs_voice_turn_latency_seconds_bucket",
        "serphona_obs_active_conversations",
        "serphona_obs_cost_usd_total",
        "serphona_obs_llm_tokens_total",
        "serphona_obs_interruptions_total",
        "serphona_obs_dead_air_seconds_total",
        "serphona_obs_talk_seconds_total",
        "part=\"tool\"",
        "part=\"greeting\"",
        "$__timeFilter(",
        "$__timeInterval(",
        "$__conditionalAll(tenant_id IN (${tenant:singlequote}), $tenant)",
    ] {
        assert!(all.contains(name), "no query uses {name}");
    }
}

/// The built-in dashboards pass the structure lint (no servers).
#[test]
fn dashboards_lint_passes_on_the_built_in_dashboards() {
    let out = bin().args(["dashboards", "lint", "--output", "json"]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let report = json_out(&out);
    let s = &report["summary"];
    assert_eq!(
        (s["dashboards"].as_u64(), s["errors"].as_u64(), s["dashboard_problems"].as_u64()),
        (Some(3), Some(0), Some(0)),
        "{s}"
    );
    assert!(s["panels"].as_u64().unwrap() >= 40, "{s}");
    let files: Vec<&str> =
        report["dashboards"].as_array().unwrap().iter().map(|d| d["file"].as_str().unwrap()).collect();
    assert_eq!(files, ["dashboards/conversations.json", "dashboards/performance.json", "dashboards/quality.json"]);
    // The same from the files on disk, as a table.
    let out = bin().args(["dashboards", "lint", "--assets-dir", env!("CARGO_MANIFEST_DIR")]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.starts_with("╭") && table.contains("│ quality.json "), "{table}");
    assert!(table.contains(" ok, 0 no data, 0 errors, 0 not run; 0 dashboard problems, 0 variable errors"), "{table}");
}

/// A copy with a duplicate panel id, overlapping panels, an unknown datasource uid and an
/// undefined variable fails with exit 1 and names each problem.
#[test]
fn dashboards_lint_names_each_problem_of_a_broken_copy() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("dashboards")).unwrap();
    let mut d = read("quality.json");
    {
        let panels = d["panels"].as_array_mut().unwrap();
        let ids: Vec<i64> = panels.iter().map(|p| p["id"].as_i64().unwrap()).collect();
        // Panel "Compliance score" takes the id of "Average sentiment".
        let sentiment = panels.iter().position(|p| p["title"] == "Average sentiment").unwrap();
        let compliance = panels.iter().position(|p| p["title"] == "Compliance score").unwrap();
        panels[compliance]["id"] = json!(ids[sentiment]);
        // "Transfer rate" moves onto "Average response time".
        let transfer = panels.iter().position(|p| p["title"] == "Transfer rate").unwrap();
        panels[transfer]["gridPos"]["x"] = json!(14);
        // "Top detected intents" goes to a datasource nobody provisions.
        let intents = panels.iter().position(|p| p["title"] == "Top detected intents").unwrap();
        panels[intents]["targets"][0]["datasource"]["uid"] = json!("my-clickhouse");
        // "Policy violations" filters by a variable the dashboard does not define.
        let violations = panels.iter().position(|p| p["title"] == "Policy violations").unwrap();
        let expr = panels[violations]["targets"][0]["expr"]
            .as_str()
            .unwrap()
            .replace("tenant_id=~\"$tenant\"", "tenant_id=~\"$customer\"");
        panels[violations]["targets"][0]["expr"] = json!(expr);
    }
    std::fs::write(dir.path().join("dashboards/quality.json"), serde_json::to_string_pretty(&d).unwrap()).unwrap();

    let out = bin().args(["dashboards", "lint", "--assets-dir"]).arg(dir.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let table = String::from_utf8_lossy(&out.stdout);
    let sentiment_id =
        read("quality.json")["panels"].as_array().unwrap().iter().find(|p| p["title"] == "Average sentiment").unwrap()
            ["id"]
            .clone();
    for part in [
        format!("duplicate panel id {sentiment_id}: used by 2 panels (\"Average sentiment\", \"Compliance score\")"),
        "panel 5 \"Transfer rate\" (x=14 y=1 w=6 h=5) overlaps panel 4 \"Average response time\" (x=12 y=1 w=6 h=5)"
            .to_string(),
        "query A: datasource: uid \"my-clickhouse\" is not a provisioned datasource".to_string(),
        "query A: $customer is not a template variable of the dashboard (defined: agent, channel, tenant)".to_string(),
    ] {
        assert!(table.contains(&part), "the report does not say {part:?}:\n{}", text(&out));
    }
    assert!(String::from_utf8_lossy(&out.stderr).contains("dashboards lint found problems"), "{}", text(&out));

    // The JSON report: the four panels in error, the others fine.
    let out = bin().args(["dashboards", "lint", "--output", "json", "--assets-dir"]).arg(dir.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let report = json_out(&out);
    let errors: BTreeSet<&str> = report["dashboards"][0]["panels"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["status"] == "error")
        .map(|p| p["title"].as_str().unwrap())
        .collect();
    assert_eq!(
        errors,
        BTreeSet::from([
            "Average sentiment",
            "Compliance score",
            "Transfer rate",
            "Top detected intents",
            "Policy violations"
        ]),
        "{}",
        report["dashboards"][0]
    );
    assert_eq!(report["summary"]["errors"], 5);

    // Not JSON at all is an error too.
    std::fs::write(dir.path().join("dashboards/quality.json"), "{ not json").unwrap();
    let out = bin().args(["dashboards", "lint", "--assets-dir"]).arg(dir.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("not valid JSON"), "{}", text(&out));
}

/// Kills a child process on drop.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Voice calls recorded through the library, one every 200 ms until dropped, with every
/// latency part (tool and greeting too), priced LLM usage, a customer barge-in, an
/// interruption the library derives from overlapping turn times, and dead air; their metrics
/// served on `addr` for Prometheus to scrape. (Until `simulate` and `demo` produce usage and
/// turn-taking, this is what gives the issue 16 panels their data.)
struct VoiceCalls {
    addr: std::net::SocketAddr,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl VoiceCalls {
    fn start() -> VoiceCalls {
        use serphona_obs::types::*;
        let mut config = serphona_obs::Config::default();
        config.logging.enabled = false;
        config.tracing.enabled = false;
        config.metrics.listen = "127.0.0.1:0".parse().unwrap();
        let obs = serphona_obs::Observability::builder(config).build().unwrap();
        let addr = obs.metrics_addr().expect("metrics served");
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut n = 0u64;
            while !stopped.load(std::sync::atomic::Ordering::Relaxed) {
                n += 1;
                let t0 = time::OffsetDateTime::now_utc() - time::Duration::seconds(30);
                let at = |ms: i64| t0 + time::Duration::milliseconds(ms);
                let call = obs.start_conversation(
                    ConversationStart::new("acme-telco", "acme-voice-bot", format!("caller-{n}"), Channel::Voice).at(t0),
                );
                // The greeting (its latency measured from the start).
                call.track_interaction(
                    Interaction::agent("Thanks for calling.")
                        .duration_ms(1500.0)
                        .at(at(800))
                        .latency(TurnLatency { llm_ttft_ms: Some(300.0), tts_ttfb_ms: Some(200.0), ..TurnLatency::default() })
                        .usage(Usage::llm("gpt-4o-mini", 300, 10)),
                );
                // 2.7 s of dead air before the customer speaks.
                call.track_interaction(
                    Interaction::customer("My bill is wrong.")
                        .duration_ms(2000.0)
                        .at(at(5000))
                        .latency(TurnLatency { stt_ms: Some(150.0), ..TurnLatency::default() }),
                );
                call.track_interaction(
                    Interaction::agent("Let me look at your invoice.")
                        .duration_ms(3000.0)
                        .at(at(8000))
                        .latency(TurnLatency {
                            stt_ms: Some(180.0 + (n % 7) as f64 * 10.0),
                            end_of_utterance_ms: Some(300.0),
                            llm_ttft_ms: Some(600.0 + (n % 5) as f64 * 100.0),
                            tool_ms: Some(250.0),
                            tts_ttfb_ms: Some(200.0),
                            response_ms: Some(1700.0),
                            ..TurnLatency::default()
                        })
                        .usage(Usage::llm("gpt-4o-mini", 800, 60).cached_tokens(200)),
                );
                // The customer starts 500 ms before the agent finished: an interruption the
                // library derives from the turn times.
                call.track_interaction(Interaction::customer("No, the other one.").duration_ms(1000.0).at(at(10_500)));
                // A barge-in the caller reports.
                call.track_interaction(
                    Interaction::agent("The March invoice shows")
                        .duration_ms(2000.0)
                        .at(at(12_500))
                        .interrupted_by(TurnSpeaker::Customer, Some(400.0))
                        .usage(Usage::llm("gpt-4o-mini", 900, 40)),
                );
                call.end(ConversationEnd::new(Resolution::Resolved).at(at(16_000)));
                std::thread::sleep(Duration::from_millis(200));
            }
            let _ = obs.shutdown(Duration::from_secs(5));
        });
        VoiceCalls { addr, stop, thread: Some(thread) }
    }
}

impl Drop for VoiceCalls {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Every query of every panel against the real Prometheus scraping the real `demo` (which
/// also writes to ClickHouse, so the sink's self-metrics exist) and the real ClickHouse engine
/// after `simulate`: no errors, data on at least 90% of the panels.
#[test]
fn dashboards_lint_runs_every_panel_against_prometheus_and_clickhouse() {
    let ch = ClickHouse::start();
    let db = ch.fresh_database();
    let data = tempfile::tempdir().unwrap();
    ch.apply_schema(&db, data.path());
    let sim = ch
        .cli(&db, data.path())
        .env("SERPHONA_OBS_CLICKHOUSE_ENABLED", "true")
        .args(["simulate", "--conversations", "150", "--seed", "11"])
        .output()
        .unwrap();
    assert!(sim.status.success(), "{}", text(&sim));

    // The demo, paced so that Prometheus sees it happen: a conversation every 100 virtual
    // seconds at 1000 virtual seconds per real second.
    let addr = crate::support::free_addr();
    let demo_dir = tempfile::tempdir().unwrap();
    let demo = ch
        .cli(&db, demo_dir.path())
        .env("SERPHONA_OBS_CLICKHOUSE_ENABLED", "true")
        .args([
            "demo",
            "--no-tui",
            "--conversations",
            "600",
            "--rate",
            "0.01",
            "--speed",
            "1000",
            "--keep-serving",
            "300",
        ])
        .args(["--metrics-addr", &addr.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("run serphona-obs demo");
    let _demo = Child(demo);
    let calls = VoiceCalls::start();
    let prom = Prometheus::start(&[addr, calls.addr]);
    prom.wait_for("80 ended conversations and a compliance violation from the demo", Duration::from_secs(90), |p| {
        p.value("sum(conversation_duration_seconds_count)").is_some_and(|n| n >= 80.0)
            && p.value("sum(serphona_obs_compliance_violations_total)").is_some_and(|n| n >= 1.0)
            && p.value("sum(serphona_obs_cost_usd_total)").is_some_and(|n| n > 0.0)
    });
    prom.wait_for_scrapes(10, Duration::from_secs(60));

    let lint = |format: &str| {
        bin()
            .args([
                "dashboards",
                "lint",
                "--prometheus-url",
                prom.url(),
                "--clickhouse-url",
                &ch.url(),
                "--clickhouse-database",
                &db,
            ])
            .args(["--range", "15m", "--output", format])
            .output()
            .unwrap()
    };
    let out = lint("table");
    let table = String::from_utf8_lossy(&out.stdout).into_owned();
    println!("{table}");
    std::fs::write(REPORT, &table).unwrap_or_else(|e| panic!("cannot save the report to {REPORT}: {e}"));
    assert!(out.status.success(), "{}", text(&out));

    let out = lint("json");
    assert!(out.status.success(), "{}", text(&out));
    let report = json_out(&out);
    let s = &report["summary"];
    assert_eq!(
        (s["errors"].as_u64(), s["dashboard_problems"].as_u64(), s["variable_errors"].as_u64()),
        (Some(0), Some(0), Some(0)),
        "{s}"
    );
    let mut errors = Vec::new();
    for d in report["dashboards"].as_array().unwrap() {
        for p in d["panels"].as_array().unwrap() {
            for q in p["queries"].as_array().unwrap() {
                if q["status"] == "error" {
                    errors.push(format!("{} {}: {}", d["file"], p["title"], q["detail"]));
                }
            }
        }
        for v in d["variables"].as_array().unwrap() {
            assert_eq!(v["status"], "ok", "variable {v} of {}", d["file"]);
        }
    }
    assert!(errors.is_empty(), "queries failed:\n{}", errors.join("\n"));
    let (panels, ok) = (s["panels"].as_u64().unwrap(), s["ok"].as_u64().unwrap());
    assert!(ok * 10 >= panels * 9, "data on {ok} of {panels} panels, fewer than 90%:\n{table}");
    // Both datasources answered with data.
    let kinds: BTreeSet<&str> = report["dashboards"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|d| d["panels"].as_array().unwrap())
        .flat_map(|p| p["queries"].as_array().unwrap())
        .filter(|q| q["status"] == "ok")
        .filter_map(|q| q["datasource"].as_str())
        .collect();
    assert_eq!(kinds, BTreeSet::from(["clickhouse", "prometheus"]));
}

/// A query the server refuses is an error with the server's message, and exit 1.
#[test]
fn dashboards_lint_reports_the_servers_error_for_a_bad_query() {
    let ch = ClickHouse::start();
    let db = ch.fresh_database();
    let data = tempfile::tempdir().unwrap();
    ch.apply_schema(&db, data.path());
    let prom = Prometheus::start(&["127.0.0.1:1"]);

    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("dashboards")).unwrap();
    let mut d = read("conversations.json");
    {
        let panels = d["panels"].as_array_mut().unwrap();
        let rate = panels.iter().position(|p| p["title"] == "Conversation rate per hour").unwrap();
        panels[rate]["targets"][0]["expr"] = json!("sum(rate(conversation_total[$__rate_interval])");
        let duration = panels.iter().position(|p| p["title"] == "Average duration per channel").unwrap();
        let sql =
            panels[duration]["targets"][0]["rawSql"].as_str().unwrap().replace("conversations_hourly", "no_such_table");
        panels[duration]["targets"][0]["rawSql"] = json!(sql);
        let recent = panels.iter().position(|p| p["title"] == "Recent conversations").unwrap();
        let sql = panels[recent]["targets"][0]["rawSql"]
            .as_str()
            .unwrap()
            .replace("$__timeFilter(started_at)", "$__timeFiltr(started_at)");
        panels[recent]["targets"][0]["rawSql"] = json!(sql);
    }
    std::fs::write(dir.path().join("dashboards/conversations.json"), serde_json::to_string(&d).unwrap()).unwrap();
    let out = bin()
        .args([
            "dashboards",
            "lint",
            "--prometheus-url",
            prom.url(),
            "--clickhouse-url",
            &ch.url(),
            "--clickhouse-database",
            &db,
        ])
        .args(["--output", "json", "--assets-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let report = json_out(&out);
    let detail = |title: &str| -> String {
        let p = report["dashboards"][0]["panels"].as_array().unwrap().iter().find(|p| p["title"] == title).unwrap();
        assert_eq!(p["status"], "error", "{p}");
        p["detail"].as_str().unwrap().to_string()
    };
    assert!(detail("Conversation rate per hour").contains("bad_data"), "{}", detail("Conversation rate per hour"));
    assert!(detail("Average duration per channel").contains("Code: 60"), "{}", detail("Average duration per channel"));
    // A misspelt macro is caught before the query runs.
    assert!(
        detail("Recent conversations").contains("$__timeFiltr is not a Grafana built-in variable or ClickHouse macro"),
        "{}",
        detail("Recent conversations")
    );
    // Nothing is scraped: the other Prometheus panels have no data, which is not an error.
    let active = report["dashboards"][0]["panels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["title"] == "Active conversations")
        .unwrap();
    assert_eq!(active["status"], "no data", "{active}");

    // A server that is down stops the lint, naming it.
    let down = format!("http://{}", crate::support::free_addr());
    let out = bin().args(["dashboards", "lint", "--prometheus-url", &down]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&format!("cannot reach Prometheus at {down}/ (--prometheus-url)")), "{}", text(&out));
}

fn provision(g: &Grafana, args: &[&str]) -> Output {
    bin().args(["dashboards", "provision", "--grafana-url", &g.url(), "--output", "json"]).args(args).output().unwrap()
}

fn actions(o: &Output) -> Vec<(String, String)> {
    json_out(o)
        .as_array()
        .unwrap()
        .iter()
        .map(|x| (x["uid"].as_str().unwrap().to_string(), x["action"].as_str().unwrap().to_string()))
        .collect()
}

fn writes(requests: &[grafana::Request]) -> Vec<String> {
    requests.iter().filter(|r| r.method != "GET").map(|r| format!("{} {}", r.method, r.path)).collect()
}

/// The folder and the three dashboards are upserted; a second run writes nothing; a changed
/// dashboard is updated alone.
#[test]
fn dashboards_provision_upserts_the_folder_and_dashboards_idempotently() {
    let g = Grafana::start();
    let out = provision(&g, &["--token", grafana::TOKEN]);
    assert!(out.status.success(), "{}", text(&out));
    let first: Vec<(String, String)> = [
        ("serphona", "created"),
        ("serphona-conversations", "created"),
        ("serphona-performance", "created"),
        ("serphona-quality", "created"),
    ]
    .iter()
    .map(|(u, a)| (u.to_string(), a.to_string()))
    .collect();
    assert_eq!(actions(&out), first);
    assert_eq!(g.folders(), [("serphona".to_string(), "Serphona".to_string())].into());
    let requests = g.requests();
    assert_eq!(
        writes(&requests),
        ["POST /api/folders", "POST /api/dashboards/db", "POST /api/dashboards/db", "POST /api/dashboards/db"]
    );
    for r in requests.iter().filter(|r| r.path == "/api/dashboards/db") {
        let body = r.body.as_ref().unwrap();
        assert_eq!((&body["folderUid"], &body["overwrite"]), (&json!("serphona"), &json!(true)), "{body}");
        assert_eq!(body["dashboard"]["id"], Value::Null);
    }
    // What Grafana holds is the files' JSON, plus its own id and version.
    let stored = g.dashboards();
    for (file, uid) in DASHBOARDS {
        let (mut d, folder) = stored[uid].clone();
        assert_eq!(folder, "serphona");
        let o = d.as_object_mut().unwrap();
        assert_eq!(o.remove("version"), Some(json!(1)));
        assert!(o.remove("id").is_some());
        assert_eq!(d, read(file), "{uid} as stored");
    }

    // Again: nothing changes, nothing is written.
    let before = g.requests().len();
    let out = provision(&g, &["--token", grafana::TOKEN]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(actions(&out).iter().all(|(_, a)| a == "unchanged"), "{}", text(&out));
    assert_eq!(writes(&g.requests()[before..]), Vec::<String>::new(), "the second run wrote");

    // One dashboard changed on disk: only it is written, with basic authentication from the
    // environment this time.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("dashboards")).unwrap();
    for (file, _) in DASHBOARDS {
        let mut d = read(file);
        if file == "quality.json" {
            d["title"] = json!("Serphona / Quality (edited)");
        }
        std::fs::write(dir.path().join("dashboards").join(file), serde_json::to_string_pretty(&d).unwrap()).unwrap();
    }
    let before = g.requests().len();
    let out = bin()
        .args(["dashboards", "provision", "--grafana-url", &g.url(), "--assets-dir"])
        .arg(dir.path())
        .env("GRAFANA_USER", grafana::USER)
        .env("GRAFANA_PASSWORD", grafana::PASSWORD)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(writes(&g.requests()[before..]), ["POST /api/dashboards/db"]);
    assert_eq!(g.dashboards()["serphona-quality"].0["title"], "Serphona / Quality (edited)");
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("0 created, 1 updated, 3 unchanged"), "{table}");
    assert!(table.contains("serphona-quality") && table.contains("updated"), "{table}");

    // A dashboard Grafana has from its own provisioning files is never overwritten: when it
    // differs, the error says where to change it.
    g.provision_from_files("serphona-performance", "changed in the files");
    let before = g.requests().len();
    let out = provision(&g, &["--token", grafana::TOKEN]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("has dashboard \"serphona-performance\" from its own provisioning files"),
        "{}",
        text(&out)
    );
    assert_eq!(writes(&g.requests()[before..]), Vec::<String>::new(), "a provisioned dashboard was written");
}

/// A 401 names the URL and the credentials to pass; exit 1. So does a Grafana that is down.
#[test]
fn dashboards_provision_says_what_to_do_on_401_and_when_grafana_is_down() {
    let g = Grafana::start();
    for (args, given) in [
        (vec!["--token", "wrong"], "the token given (--token or GRAFANA_TOKEN)"),
        (vec!["--user", "admin", "--password", "wrong"], "user \"admin\""),
        (vec![], "no credentials"),
    ] {
        let out = bin().args(["dashboards", "provision", "--grafana-url", &g.url()]).args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        for part in [
            &format!("Grafana at {}/ refused", g.url()),
            "HTTP 401",
            given,
            "--token TOKEN",
            "--user USER --password PASSWORD",
        ] {
            assert!(stderr.contains(part), "{args:?}: stderr does not say {part:?}:\n{}", text(&out));
        }
    }
    assert!(writes(&g.requests()).is_empty(), "nothing may be written without credentials");
    assert!(g.folders().is_empty() && g.dashboards().is_empty());

    let down = format!("http://{}", crate::support::free_addr());
    let out = bin().args(["dashboards", "provision", "--grafana-url", &down, "--token", "t"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&format!("cannot reach Grafana at {down}/")), "{}", text(&out));

    // A broken dashboard is never sent.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("dashboards")).unwrap();
    let mut d = read("quality.json");
    d["panels"][2]["gridPos"]["w"] = json!(30);
    std::fs::write(dir.path().join("dashboards/quality.json"), d.to_string()).unwrap();
    let before = g.requests().len();
    let out = bin()
        .args(["dashboards", "provision", "--grafana-url", &g.url(), "--token", grafana::TOKEN, "--assets-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("goes past the grid's 24 columns"), "{}", text(&out));
    assert_eq!(g.requests().len(), before, "a request went to Grafana with a broken dashboard");
}

// Regression test for issue 12, item 13: after `demo --no-tui --conversations 300
// --keep-serving 60` scraped by the real Prometheus, 21 of 49 panels had "no data: all NaN"
// (rates over counters the burst left flat, 0/0 in the ratios and quantiles).
#[test]
fn after_a_demo_with_keep_serving_every_prometheus_panel_has_data() {
    let addr = crate::support::free_addr();
    let dir = tempfile::tempdir().unwrap();
    let demo = bin()
        .env("SERPHONA_OBS_DATA_DIR", dir.path())
        .args(["demo", "--no-tui", "--conversations", "300", "--keep-serving", "600"])
        .args(["--metrics-addr", &addr.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("run serphona-obs demo");
    let _demo = Child(demo);
    let calls = VoiceCalls::start();
    let prom = Prometheus::start(&[addr, calls.addr]);
    // The burst is over and the trickle has started and ended conversations since.
    prom.wait_for("the keep-serving trickle's conversations", Duration::from_secs(180), |p| {
        p.value("sum(increase(conversation_duration_seconds_count[30s]))").is_some_and(|n| n >= 3.0)
            && p.value("sum(increase(serphona_obs_cost_usd_total[30s]))").is_some_and(|n| n > 0.0)
            && p.value("sum(increase(serphona_obs_voice_turn_latency_seconds_count[30s]))").is_some_and(|n| n >= 3.0)
            && p.value("sum(increase(conversation_customer_rating_count[2m]))").is_some_and(|n| n >= 3.0)
    });
    prom.wait_for_scrapes(5, Duration::from_secs(60));
    let lint = |format: &str| {
        bin()
            .args([
                "dashboards",
                "lint",
                "--prometheus-url",
                prom.url(),
                "--range",
                "5m",
                "--rate-interval",
                "30s",
                "-o",
                format,
            ])
            .output()
            .unwrap()
    };
    let out = lint("table");
    let table = String::from_utf8_lossy(&out.stdout).into_owned();
    println!("{table}");
    assert!(out.status.success(), "{}", text(&out));
    let report = json_out(&lint("json"));
    assert_eq!(report["summary"]["populated"], json!(["prometheus"]), "{}", report["summary"]);
    let mut without = Vec::new();
    for d in report["dashboards"].as_array().unwrap() {
        for p in d["panels"].as_array().unwrap() {
            let prometheus = p["queries"].as_array().unwrap().iter().all(|q| q["datasource"] == "prometheus");
            if prometheus && p["status"] != "ok" {
                without.push(format!("{} {}: {} {}", d["file"], p["title"], p["status"], p["detail"]));
            }
        }
    }
    assert!(without.is_empty(), "Prometheus panels without data after the demo:\n{}\n{table}", without.join("\n"));
}
