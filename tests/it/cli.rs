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

/// A stdout that is already closed: the read end of the pipe is gone before the child writes.
// `std::io::pipe` is newer than the crate's MSRV, which applies to the library, not its tests.
#[allow(clippy::incompatible_msrv)]
fn closed_stdout() -> std::process::Stdio {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    writer.into()
}

/// A data dir with `n` simulated conversations (local event log only), and one conversation's
/// id and trace id.
fn simulated(n: usize) -> (tempfile::TempDir, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let out = bin()
        .args(["simulate", "-n", &n.to_string(), "--seed", "5", "--metrics-addr", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .env("SERPHONA_OBS_TRACING_ENABLED", "false")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let lines = event_lines(dir.path());
    let first = &lines[0];
    let id = first["conversation_id"].as_str().unwrap().to_string();
    let trace = first["trace_id"].as_str().unwrap().to_string();
    (dir, id, trace)
}

// Regression test for issue 12, item 5: `query conversations --limit 0 -o json | head -1` printed
// `error: Broken pipe` and exited 1 (and `completions` panicked). Every output exits 0 on a
// closed pipe.
#[test]
fn every_output_exits_0_on_a_closed_pipe() {
    let (dir, id, trace) = simulated(30);
    let d = dir.path().to_str().unwrap();
    let cases: Vec<Vec<&str>> = vec![
        vec!["query", "conversations", "--limit", "0", "-o", "json"],
        vec!["query", "conversations", "--limit", "0", "-o", "csv"],
        vec!["query", "conversations", "--limit", "0"],
        vec!["query", "conversation", &id, "-o", "json"],
        vec!["query", "conversation", &id, "-o", "csv"],
        vec!["query", "conversation", &id],
        vec!["query", "trace", &trace, "-o", "json"],
        vec!["query", "trace", &trace],
        vec!["query", "stats", "--by", "channel", "-o", "json"],
        vec!["query", "stats", "--by", "channel", "-o", "csv"],
        vec!["query", "stats"],
        vec!["config", "show"],
        vec!["config", "show", "-o", "json"],
        vec!["config", "init"],
        vec!["completions", "bash"],
        vec!["completions", "zsh"],
        vec!["completions", "fish"],
        vec!["simulate", "-n", "3", "-o", "json", "--metrics-addr", "127.0.0.1:0"],
        vec!["simulate", "-n", "3", "--metrics-addr", "127.0.0.1:0"],
        vec!["tail", "-o", "json", "--no-follow"],
        vec!["schema", "apply", "--dry-run"],
        vec!["dashboards", "lint", "-o", "json"],
        vec!["dashboards", "lint"],
        vec!["--help"],
        vec!["query", "stats", "--help"],
    ];
    let nowhere = format!("http://{}", crate::support::free_addr());
    for args in cases {
        let out = bin()
            .args(&args)
            .args(["--data-dir", d])
            .env("SERPHONA_OBS_TRACING_ENABLED", "false")
            .env("SERPHONA_OBS_CLICKHOUSE_ENDPOINT", &nowhere)
            .stdout(closed_stdout())
            .output()
            .unwrap();
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(0), "{args:?} on a closed pipe: {err}");
        assert!(!err.contains("Broken pipe") && !err.contains("panicked"), "{args:?}: {err}");
    }
}

/// Every secret of the config file `secret_config` writes (none of them may be printed).
const SECRETS: [&str; 5] = ["tok-SECRET-1", "pw-SECRET-2", "pw-SECRET-3", "pw-SECRET-4", "qs-SECRET-5"];

fn secret_config(dir: &Path, otlp: &str, loki: &str, clickhouse: &str) -> std::path::PathBuf {
    let path = dir.join("obs.yaml");
    let yaml = format!(
        "data_dir: {data:?}\n\
         tracing:\n  endpoint: \"http://otel-user:tok-SECRET-1@{otlp}\"\n  protocol: http\n\
         logging:\n  loki_endpoint: \"http://loki-user:pw-SECRET-2@{loki}\"\n\
         clickhouse:\n  enabled: true\n  endpoint: \"http://ch-user:pw-SECRET-3@{clickhouse}/?access_token=qs-SECRET-5&x=1\"\n  password: \"pw-SECRET-4\"\n  compression: none\n\
         pipeline:\n  shutdown_timeout: 2s\n",
        data = dir.join("data"),
    );
    std::fs::write(&path, yaml).unwrap();
    path
}

fn assert_no_secret(what: &str, out: &Output) {
    let all = format!("{}{}", stdout(out), stderr(out));
    for secret in SECRETS {
        assert!(!all.contains(secret), "{what} printed {secret}:\n{all}");
    }
}

// Regression test for issue 12, item 6: `config show` printed `http://user:pw@localhost:3100` as
// it is, and the log lines and errors named the endpoints with their credentials.
#[test]
fn credentials_in_urls_and_passwords_are_never_printed() {
    let dir = tempfile::tempdir().unwrap();
    let down = crate::support::free_addr().to_string();
    let config = secret_config(dir.path(), &down, &down, &down);
    let c = config.to_str().unwrap();

    let out = run(&["--config", c, "config", "show"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_no_secret("config show", &out);
    let shown = stdout(&out);
    assert!(shown.contains("http://ch-user:********@") && shown.contains("http://otel-user:********@"), "{shown}");
    assert!(shown.contains("http://loki-user:********@") && shown.contains("access_token=********"), "{shown}");
    let out = run(&["--config", c, "config", "show", "-o", "json"]);
    assert_no_secret("config show -o json", &out);
    let json: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(json["clickhouse"]["password"], "********");
    assert_eq!(json["logging"]["loki_endpoint"], format!("http://loki-user:********@{down}"));

    // Every server down, then every server answering with an error: at the most verbose level,
    // neither a log line nor an error shows a secret.
    let refuse = axum::Router::new().fallback(|| async { (axum::http::StatusCode::UNAUTHORIZED, "Code: 516. DB::Exception: denied") });
    let (_rt, answering) = crate::support::serve(refuse, 1, "a server that refuses everything");
    for (label, target) in [("down", down.clone()), ("answering 401", answering.to_string())] {
        let config = secret_config(dir.path(), &target, &target, &target);
        let c = config.to_str().unwrap();
        for args in [
            &["-vv", "simulate", "-n", "5", "--metrics-addr", "127.0.0.1:0"][..],
            &["-vv", "schema", "status"],
            &["-vv", "schema", "apply"],
            &["-vv", "query", "conversations"],
            &["-vv", "query", "stats", "--source", "clickhouse"],
            &["-vv", "tail", "--source", "clickhouse", "-o", "json", "--no-follow"],
            &["-vv", "status"],
        ] {
            let out = bin().arg("--config").arg(c).args(args).output().unwrap();
            assert_no_secret(&format!("{label}: {args:?}"), &out);
        }
    }
}

// Regression test for issue 12, item 7: `simulate` with ClickHouse enabled and down waited 21–25 s
// at exit without a word, printed `in 0.00s`, and the deadline was not configurable. (With a short
// deadline the sink retried up to it and the pipeline then gave up waiting for it to spool: exit 1.)
#[test]
fn simulate_says_what_it_waits_for_at_exit_and_reports_the_whole_time_and_the_spool() {
    let dir = tempfile::tempdir().unwrap();
    let down = format!("http://{}", crate::support::free_addr());
    let env = [
        ("SERPHONA_OBS_CLICKHOUSE_ENABLED", "true"),
        ("SERPHONA_OBS_CLICKHOUSE_ENDPOINT", down.as_str()),
        ("SERPHONA_OBS_TRACING_ENABLED", "false"),
        ("SERPHONA_OBS_PIPELINE_SHUTDOWN_TIMEOUT", "3s"),
    ];
    let out = bin()
        .args(["simulate", "-n", "20", "-o", "json", "--metrics-addr", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .envs(env)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    // What it waits for, how long, and what happens to what is not delivered.
    assert!(err.contains(&format!("waiting up to 3s (pipeline.shutdown_timeout) for ClickHouse at {down}")), "{err}");
    assert!(err.contains("events spooled for the next start") && err.contains("did not take"), "{err}");
    let report: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let events = report["events"].as_u64().unwrap();
    assert_eq!(report["events_spooled"].as_u64(), Some(events), "{report}");
    // The elapsed time is the whole run: the simulation and the wait for the sinks.
    let (total, sim, wait) = (
        report["elapsed_seconds"].as_f64().unwrap(),
        report["simulation_seconds"].as_f64().unwrap(),
        report["shutdown_seconds"].as_f64().unwrap(),
    );
    assert!(total >= sim + wait, "{report}");
    // What ClickHouse did not take is on disk, for the next start.
    let spool = serphona_obs::sinks::clickhouse::spool::spool_dir(dir.path());
    let spooled = std::fs::read_dir(&spool).unwrap().count();
    assert!(spooled > 0, "nothing in {}", spool.display());

    // With -q: no diagnostics, but the result line still says where the rows are.
    let out = bin()
        .args(["-q", "simulate", "-n", "5", "--metrics-addr", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .envs(env)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("events spooled for the next start"), "{}", stdout(&out));
}

// Regression test for issue 12, item 7: the deadline is in the config, with its variable.
#[test]
fn the_shutdown_deadline_is_a_config_key_with_an_env_var() {
    let out = run(&["config", "show", "-o", "json"]);
    let shown: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(shown["pipeline"]["shutdown_timeout"], "30s");
    let out = bin().args(["config", "show", "-o", "json"]).env("SERPHONA_OBS_PIPELINE_SHUTDOWN_TIMEOUT", "45s").output().unwrap();
    let shown: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(shown["pipeline"]["shutdown_timeout"], "45s");
    let out = bin().args(["config", "show"]).env("SERPHONA_OBS_PIPELINE_SHUTDOWN_TIMEOUT", "0s").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("SERPHONA_OBS_PIPELINE_SHUTDOWN_TIMEOUT"), "{}", stderr(&out));
}

// Regression test for issue 12, item 8: `-o` on every command that prints data.
#[test]
fn every_command_that_prints_data_takes_dash_o() {
    let (dir, _, _) = simulated(5);
    let d = dir.path().to_str().unwrap();
    let nowhere = format!("http://{}", crate::support::free_addr());
    for args in [
        &["status", "-o", "json"][..],
        &["tail", "-o", "json", "--no-follow"],
        &["config", "show", "-o", "json"],
        &["simulate", "-n", "2", "-o", "json", "--metrics-addr", "127.0.0.1:0"],
        &["schema", "status", "-o", "json"],
        &["schema", "apply", "--dry-run", "-o", "json"],
        &["up", "-o", "json"],
        &["query", "stats", "-o", "json"],
    ] {
        let out = bin()
            .args(args)
            .args(["--data-dir", d])
            .env("SERPHONA_OBS_TRACING_ENABLED", "false")
            .env("SERPHONA_OBS_CLICKHOUSE_ENDPOINT", &nowhere)
            // `up` without a Docker engine fails (exit 1), after parsing its flags.
            .env("DOCKER_HOST", format!("unix://{d}/no-engine.sock"))
            .output()
            .unwrap();
        assert_ne!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(!stderr(&out).contains("unexpected argument"), "{args:?}: {}", stderr(&out));
        // One JSON document (or JSON lines, for tail).
        for value in serde_json::Deserializer::from_str(&stdout(&out)).into_iter::<serde_json::Value>() {
            value.unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {}", stdout(&out)));
        }
    }
}

// Regression test for issue 12, item 8: `tail -f` (as kubectl and tail users type it) follows;
// `tail -f FILE` follows the file.
#[test]
fn tail_dash_f_follows_a_file_and_stdin() {
    use std::io::BufRead;
    let (dir, _, _) = simulated(5);
    let (_, segment) = serphona_obs::sinks::event_log::list_segments(&dir.path().join("events")).unwrap().remove(0);
    let expected = std::fs::read_to_string(&segment).unwrap().lines().count();
    let mut child = bin()
        .args(["tail", "-f"])
        .arg(&segment)
        .args(["-o", "json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    for _ in 0..expected {
        let line = lines.next().expect("tail -f ended before the file's events").unwrap();
        serde_json::from_str::<serde_json::Value>(&line).unwrap();
    }
    // Following: still running at the end of the file.
    assert!(child.try_wait().unwrap().is_none(), "tail -f FILE stopped at the end of the file");
    child.kill().unwrap();
    child.wait().unwrap();

    // `-f` with stdin, and `--no-follow` after `-f` wins.
    let out = bin().args(["tail", "-", "-f", "-o", "json"]).stdin(std::fs::File::open(&segment).unwrap()).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).lines().count(), expected);
    let out = bin().args(["tail", "-f", "--no-follow", "-o", "json"]).arg(&segment).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).lines().count(), expected);
}

// Regression test for issue 12, item 8: `query stats --group-by X` was rejected.
#[test]
fn query_stats_takes_group_by_as_by() {
    let (dir, _, _) = simulated(20);
    let d = dir.path().to_str().unwrap();
    let by = run(&["query", "stats", "--by", "channel", "-o", "json", "--data-dir", d]);
    let group_by = run(&["query", "stats", "--group-by", "channel", "-o", "json", "--data-dir", d]);
    assert!(group_by.status.success(), "{}", stderr(&group_by));
    assert_eq!(stdout(&group_by), stdout(&by));
    assert!(stdout(&run(&["query", "stats", "--help"])).contains("--group-by"));
}

// Regression test for issue 12, item 11: a missing --config file printed its error twice and did
// not name SERPHONA_OBS_CONFIG when the path came from it.
#[test]
fn a_missing_config_file_is_reported_once_and_names_the_variable_it_came_from() {
    let out = run(&["--config", "/nonexistent/obs.yaml", "config", "show"]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");
    assert!(err.contains("/nonexistent/obs.yaml") && !err.contains("SERPHONA_OBS_CONFIG"), "{err}");

    let out = bin().args(["status"]).env("SERPHONA_OBS_CONFIG", "/nonexistent/obs.yaml").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");
    assert!(err.contains("SERPHONA_OBS_CONFIG") && err.contains("/nonexistent/obs.yaml"), "{err}");
    // A file from the variable that does not parse says so too.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(&path, "pipeline:\n  queue_capacity: many\n").unwrap();
    let out = bin().args(["config", "show"]).env("SERPHONA_OBS_CONFIG", &path).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("SERPHONA_OBS_CONFIG") && stderr(&out).contains("bad.yaml:2"), "{}", stderr(&out));
}

// Regression test for issue 12, item 11: `tail --help` said 15m and the README 10 minutes for
// `--keep-ended`.
#[test]
fn tail_help_and_the_readme_agree_on_the_keep_ended_default() {
    let help = stdout(&run(&["tail", "--help"]));
    let default = regex::Regex::new(r"(?s)--keep-ended <DURATION>.*?\[default: ([^\]]+)\]").unwrap().captures(&help).unwrap()[1].to_string();
    let default = humantime::parse_duration(&default).unwrap();
    assert_eq!(default, serphona_obs::tui::Options::default().keep_ended, "the view's own default");
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/cli.md")).unwrap();
    let minutes: u64 = regex::Regex::new(r"leave the view (\d+) minutes after")
        .unwrap()
        .captures(&readme)
        .expect("docs/cli.md states the --keep-ended default")[1]
        .parse()
        .unwrap();
    assert_eq!(default.as_secs(), minutes * 60);
}

// Regression test for issue 12, item 11: the README's `Config::load(Some(path))` snippet did not
// compile. It is now the doc test of `Config::load`; this checks the README shows that code.
#[test]
fn the_readme_shows_the_config_load_doc_test() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let source = std::fs::read_to_string(root.join("src/config.rs")).unwrap();
    let load = source.find("    pub fn load(").unwrap();
    let doc_start = source[..load].rfind("    /// ```\n").unwrap();
    let block_start = source[..doc_start].rfind("    /// ```\n").unwrap();
    let code: Vec<&str> = source[block_start..doc_start]
        .lines()
        .skip(1)
        .map(|l| l.trim_start().strip_prefix("///").unwrap_or(l).strip_prefix(' ').unwrap_or(""))
        .filter(|l| !l.starts_with("# ") && *l != "#")
        .collect();
    let code = code.join("\n");
    assert!(code.contains("Config::load(Some(path))"), "{code}");
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    assert!(readme.contains(&format!("```rust\n{code}\n```")), "README.md does not show the doc test of Config::load:\n{code}");
}

// Regression test for issue 12, item 11: Ctrl-C exited 0; the convention is 130.
#[test]
fn ctrl_c_exits_130_from_tail_demo_and_simulate() {
    use std::io::BufRead;
    let sigint = |pid: u32| {
        assert!(std::process::Command::new("kill").args(["-INT", &pid.to_string()]).status().unwrap().success());
    };
    // tail: once it has printed an event, its handler is in place.
    let (dir, _, _) = simulated(3);
    let (_, segment) = serphona_obs::sinks::event_log::list_segments(&dir.path().join("events")).unwrap().remove(0);
    let mut child = bin().args(["tail", "-o", "json"]).arg(&segment).stdout(std::process::Stdio::piped()).spawn().unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    lines.next().expect("an event").unwrap();
    sigint(child.id());
    assert_eq!(child.wait().unwrap().code(), Some(130), "tail");

    // demo and simulate, paced: once events reach the event log, the run (and its handler) is on.
    for args in [
        &["demo", "--no-tui", "--speed", "1", "--rate", "0.5", "-n", "200"][..],
        &["simulate", "--rate", "0.5", "-n", "200"],
    ] {
        let dir = tempfile::tempdir().unwrap();
        let mut child = bin()
            .args(args)
            .args(["--metrics-addr", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path())
            .env("SERPHONA_OBS_TRACING_ENABLED", "false")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let events = dir.path().join("events");
        let until = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while !serphona_obs::sinks::event_log::list_segments(&events).is_ok_and(|s| s.iter().any(|(_, p)| std::fs::metadata(p).is_ok_and(|m| m.len() > 0))) {
            assert!(std::time::Instant::now() < until && child.try_wait().unwrap().is_none(), "{args:?} wrote no event");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        sigint(child.id());
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(130), "{args:?}: {}", stderr(&out));
        assert!(!stdout(&out).is_empty(), "{args:?}: the summary is still printed");
    }
}

// Regression test for issue 12, item 11: in the live view Ctrl-C arrives as a key (raw mode), and
// it exited 0; it exits 130, after the terminal is restored.
#[test]
fn ctrl_c_in_the_live_view_exits_130_and_restores_the_terminal() {
    use std::process::Command;
    let tmux_bin = crate::support::which("tmux").expect("tmux is not installed: scripts/test.sh installs it (apt-get install tmux)");
    let (dir, _, _) = simulated(5);
    let socket = format!("serphona-obs-cli-test-{}", std::process::id());
    let tmux = |args: &[&str]| Command::new(&tmux_bin).arg("-L").arg(&socket).args(args).output().unwrap();
    struct Kill<F: Fn()>(F);
    impl<F: Fn()> Drop for Kill<F> {
        fn drop(&mut self) {
            (self.0)();
        }
    }
    let _kill = Kill(|| {
        let _ = tmux(&["kill-server"]);
    });
    let out = tmux(&["new-session", "-d", "-s", "t", "-x", "120", "-y", "30", "env", "PS1=serphona-test$ ", "TERM=xterm-256color", "bash", "--norc", "--noprofile"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let screen = || String::from_utf8_lossy(&tmux(&["capture-pane", "-p", "-t", "t"]).stdout).into_owned();
    let wait_for = |what: &str, check: &dyn Fn(&str) -> bool| {
        let until = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let s = screen();
            if check(&s) {
                return s;
            }
            assert!(std::time::Instant::now() < until, "no {what}; the screen:\n{s}");
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    };
    wait_for("shell prompt", &|s| s.contains("serphona-test$"));
    let command = format!(
        "{} tail --data-dir {}; echo SERPHONA_EXIT=$?",
        env!("CARGO_BIN_EXE_serphona-obs"),
        dir.path().display()
    );
    assert!(tmux(&["send-keys", "-t", "t", "-l", &command]).status.success());
    assert!(tmux(&["send-keys", "-t", "t", "Enter"]).status.success());
    wait_for("live view", &|s| s.contains("Conversations") && s.contains("events"));
    assert!(tmux(&["send-keys", "-t", "t", "C-c"]).status.success());
    // (The command line holds `SERPHONA_EXIT=$?`; the echo's line starts with it.)
    let s = wait_for("exit code", &|s| s.lines().any(|l| l.starts_with("SERPHONA_EXIT=")));
    assert!(s.lines().any(|l| l == "SERPHONA_EXIT=130"), "{s}");
    assert!(!s.contains("┏ Conversations") && !s.contains("Conversations 5"), "the live view is gone:\n{s}");
}
