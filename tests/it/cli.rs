//! The real binary: `demo`, `simulate`, `config`, exit codes (issue 2).

use std::collections::HashMap;
use std::path::Path;
use std::process::Output;

use crate::support::bin;

fn run(args: &[&str]) -> Output {
    bin().args(args).output().expect("run serphona-obs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn event_lines(data_dir: &Path) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    for (_, path) in serphona_obs::sinks::event_log::list_segments(&data_dir.join("events")).unwrap() {
        for line in std::fs::read_to_string(path).unwrap().lines() {
            out.push(serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")));
        }
    }
    out
}

const SEED_FIELDS: [&str; 11] = [
    "timestamp",
    "level",
    "service",
    "tenant_id",
    "conversation_id",
    "event_type",
    "speaker",
    "content",
    "metadata",
    "trace_id",
    "span_id",
];

#[test]
fn demo_prints_the_same_summary_for_the_same_seed_and_logs_every_conversation() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let args = ["demo", "--no-tui", "--conversations", "200", "--seed", "7", "--data-dir", d, "--metrics-addr", "127.0.0.1:0"];
    let first = run(&args);
    assert!(first.status.success(), "{}", stderr(&first));
    let table = stdout(&first);
    assert!(table.contains("channel") && table.contains("p95 duration") && table.contains("total"), "{table}");
    let total_row = table.lines().find(|l| l.contains("total")).unwrap();
    assert!(total_row.contains(" 200 "), "{total_row}");

    let lines = event_lines(dir.path());
    let mut starts: HashMap<String, usize> = HashMap::new();
    let mut ends: HashMap<String, usize> = HashMap::new();
    for line in &lines {
        for field in SEED_FIELDS {
            assert!(line.get(field).is_some(), "line without {field}: {line}");
        }
        assert_eq!(line["trace_id"].as_str().unwrap().len(), 32);
        assert_eq!(line["span_id"].as_str().unwrap().len(), 16);
        let id = line["conversation_id"].as_str().unwrap().to_string();
        match line["event_type"].as_str().unwrap() {
            "conversation.started" => *starts.entry(id).or_default() += 1,
            "conversation.ended" => *ends.entry(id).or_default() += 1,
            _ => {}
        }
    }
    assert_eq!(starts.len(), 200);
    assert_eq!(ends.len(), 200);
    assert!(starts.values().chain(ends.values()).all(|n| *n == 1));
    assert_eq!(starts.keys().collect::<std::collections::BTreeSet<_>>(), ends.keys().collect());

    // Same seed, same data dir: the summary covers this run only and is the same.
    let second = run(&args);
    assert!(second.status.success(), "{}", stderr(&second));
    assert_eq!(stdout(&second), table);
    assert_eq!(event_lines(dir.path()).len(), lines.len() * 2);

    // Another seed gives other numbers.
    let other = run(&["demo", "--no-tui", "--conversations", "200", "--seed", "8", "--data-dir", d, "--metrics-addr", "127.0.0.1:0"]);
    assert_ne!(stdout(&other), table);
}

#[test]
fn simulate_reports_what_the_event_log_holds() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(&[
        "simulate", "--conversations", "60", "--seed", "3", "--output", "json", "--data-dir",
        dir.path().to_str().unwrap(), "--metrics-addr", "127.0.0.1:0",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(report["conversations"], 60);
    assert_eq!(report["ended"], 60);
    let lines = event_lines(dir.path());
    assert_eq!(report["events"].as_u64().unwrap(), lines.len() as u64);
    for (event_type, n) in report["events_by_type"].as_object().unwrap() {
        let actual = lines.iter().filter(|l| l["event_type"] == *event_type).count();
        assert_eq!(actual as u64, n.as_u64().unwrap(), "{event_type}");
    }
    // Every transfer decision has its transfer.initiated.
    let transfers = lines.iter().filter(|l| l["event_type"] == "decision.made" && l["decision_type"] == "transfer").count();
    let initiated = lines.iter().filter(|l| l["event_type"] == "transfer.initiated").count();
    assert_eq!(transfers, initiated);
}

fn config_error(yaml: &str) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("obs.yaml");
    std::fs::write(&path, yaml).unwrap();
    let out = run(&["--config", path.to_str().unwrap(), "config", "show"]);
    (out.status.code().unwrap(), stderr(&out))
}

#[test]
fn bad_config_files_exit_2_naming_field_and_line() {
    // (file, what the message must contain)
    let cases: [(&str, &[&str]); 4] = [
        ("service_name: svc\nmetrics:\n  enabled: true\n  lisen: 127.0.0.1:1\n", &["obs.yaml:4", "lisen", "metrics"]),
        ("pipeline:\n  queue_capacity: many\n", &["obs.yaml:2", "pipeline.queue_capacity"]),
        ("tracing:\n  enabled: true\n  endpoint: \"http//missing-colon\"\n", &["obs.yaml:3", "tracing.endpoint", "invalid URL"]),
        ("tracing:\n  sample_ratio: 2.5\n", &["obs.yaml:2", "tracing.sample_ratio"]),
    ];
    for (yaml, expected) in cases {
        let (code, err) = config_error(yaml);
        assert_eq!(code, 2, "{err}");
        for part in expected {
            assert!(err.contains(part), "{part:?} missing from: {err}");
        }
    }
}

#[test]
fn missing_config_file_and_bad_env_exit_2() {
    let out = run(&["--config", "/nonexistent/obs.yaml", "config", "show"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("/nonexistent/obs.yaml"), "{}", stderr(&out));

    let out = bin().args(["config", "show"]).env("SERPHONA_OBS_CLICKHOUSE_BATCH_SIZE", "-3").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("SERPHONA_OBS_CLICKHOUSE_BATCH_SIZE"), "{}", stderr(&out));
}

#[test]
fn config_init_round_trips_and_show_applies_env_and_masks() {
    let out = run(&["config", "init"]);
    assert!(out.status.success());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("obs.yaml");
    std::fs::write(&path, stdout(&out).replace("password: \"\"", "password: \"s3cret\"")).unwrap();
    let out = bin()
        .args(["--config", path.to_str().unwrap(), "config", "show", "--output", "json"])
        .env("SERPHONA_OBS_TRACING_PROTOCOL", "http")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let shown: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(shown["tracing"]["protocol"], "http");
    assert_eq!(shown["metrics"]["listen"], "127.0.0.1:9464");
    assert_eq!(shown["clickhouse"]["password"], "********");
    assert!(!stdout(&out).contains("s3cret"));
}

#[test]
fn every_command_is_in_help_and_usage_errors_exit_2() {
    let help = stdout(&run(&["--help"]));
    for command in ["demo", "up", "down", "status", "schema", "dashboards", "simulate", "tail", "query", "config", "completions"] {
        assert!(help.contains(command), "{command} missing from --help:\n{help}");
    }
    // A ClickHouse that is down: a clear error naming the server, exit 1.
    let down = format!("http://{}", crate::support::free_addr());
    let out = bin().env("SERPHONA_OBS_CLICKHOUSE_ENDPOINT", &down).args(["schema", "status"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains(&down) && stderr(&out).contains("cannot reach ClickHouse"), "{}", stderr(&out));
    let out = run(&["completions", "bash"]);
    assert!(out.status.success());
    assert!(stdout(&out).contains("serphona-obs"));
    let out = run(&["demo", "--seed", "not-a-number"]);
    assert_eq!(out.status.code(), Some(2));
    for args in [&["demo", "--rate", "1e-11"][..], &["demo", "--rate", "0"], &["simulate", "--rate=-1"], &["demo", "--concurrency", "0"]] {
        let out = run(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(if args.contains(&"--concurrency") { "--concurrency" } else { "--rate" }), "{}", stderr(&out));
    }
}
