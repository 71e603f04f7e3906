//! Damaged data on disk (issue 14): torn and invalid lines in the event log, damaged spool
//! files, a full disk, hostile label values, error messages that repeat their cause.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::support::bin;

fn text(o: &Output) -> String {
    format!("stdout:\n{}\nstderr:\n{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs the binary with a deadline: a command that never ends fails the test instead of
/// hanging it.
pub fn run_within(mut cmd: Command, limit: Duration) -> Output {
    let mut child = cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("run serphona-obs");
    let start = Instant::now();
    // Drain the pipes on threads so a chatty child cannot block on a full pipe.
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out_thread = std::thread::spawn(move || {
        let mut v = Vec::new();
        std::io::Read::read_to_end(&mut out, &mut v).unwrap();
        v
    });
    let err_thread = std::thread::spawn(move || {
        let mut v = Vec::new();
        std::io::Read::read_to_end(&mut err, &mut v).unwrap();
        v
    });
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} did not end within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Output { status, stdout: out_thread.join().unwrap(), stderr: err_thread.join().unwrap() }
}

/// A data dir with `n` simulated conversations in its event log (one segment).
pub fn simulated(n: usize) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let out = bin()
        .args(["simulate", "-n", &n.to_string(), "--seed", "3", "--data-dir", d, "--metrics-addr", "127.0.0.1:0"])
        .env("SERPHONA_OBS_TRACING_ENABLED", "false")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let segment = dir.path().join("events").join("events-000001.jsonl");
    assert!(segment.exists());
    (dir, segment)
}

/// Puts a line torn inside a multi-byte character (a crash mid-write of "für 名前", then the
/// next writer's newline) after the `after`-th line; returns its byte offset.
pub fn tear_after(segment: &Path, after: usize) -> u64 {
    let bytes = std::fs::read(segment).unwrap();
    let mut lines: Vec<&[u8]> = bytes.split_inclusive(|&b| b == b'\n').collect();
    let offset: usize = lines[..after].iter().map(|l| l.len()).sum();
    let prefix = r#"{"event_id":"01937a2c-0000-7000-8000-000000000000","content":"für 名"#.as_bytes();
    // Cut inside the three bytes of 名.
    let torn: Vec<u8> = [&prefix[..prefix.len() - 2], b"\n"].concat();
    lines.insert(after, &torn);
    std::fs::write(segment, lines.concat()).unwrap();
    offset as u64
}

fn line_count(path: &Path) -> usize {
    std::fs::read(path).unwrap().split(|&b| b == b'\n').filter(|l| !l.is_empty()).count()
}

/// Issue 14, item 1: one torn line made `query conversations` and `query stats` exit 1 with
/// "stream did not contain valid UTF-8", and `tail --no-follow` never exit.
#[test]
fn a_torn_line_in_the_event_log_is_skipped_and_reported_by_every_reader() {
    let (dir, segment) = simulated(6);
    let events = line_count(&segment);
    let offset = tear_after(&segment, 3);
    let d = dir.path().to_str().unwrap();
    let expect_warning = |o: &Output| {
        let err = stderr(o);
        let want = format!("skipped 1 damaged line in {} (first at byte {offset}", segment.display());
        assert!(err.contains(&want), "no {want:?} in\n{err}");
    };

    let out = bin().args(["query", "conversations", "-o", "json", "--data-dir", d]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rows.len(), 6);
    expect_warning(&out);

    let out = bin().args(["query", "stats", "-o", "json", "--data-dir", d]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let stats: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(stats[0]["conversations"], 6, "{stats}");
    expect_warning(&out);

    let out = bin().args(["query", "stats", "--data-dir", d]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    expect_warning(&out);

    // tail --no-follow ends, with every event but the torn one.
    let mut cmd = bin();
    cmd.args(["tail", "--no-follow", "-o", "json", "--data-dir", d]);
    let out = run_within(cmd, Duration::from_secs(60));
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), events);
    expect_warning(&out);

    // The same file through `tail FILE`, ending in a partial line as well.
    let mut bytes = std::fs::read(&segment).unwrap();
    bytes.extend_from_slice("{\"content\":\"名".as_bytes().split_last().unwrap().1);
    let file = dir.path().join("copy.jsonl");
    std::fs::write(&file, &bytes).unwrap();
    let mut cmd = bin();
    cmd.args(["tail", "--no-follow", "-o", "json"]).arg(&file);
    let out = run_within(cmd, Duration::from_secs(60));
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), events);
    assert!(stderr(&out).contains(&format!("skipped 2 damaged lines in {} (first at byte {offset}", file.display())), "{}", text(&out));
}

/// A line that is JSON but not an event, and one that is not JSON, are skipped the same way.
#[test]
fn lines_of_the_wrong_schema_or_not_json_are_skipped() {
    let (dir, segment) = simulated(3);
    let mut bytes = std::fs::read(&segment).unwrap();
    let offset = bytes.len();
    bytes.extend_from_slice(b"{\"hello\":\"world\"}\nnot json at all\n");
    std::fs::write(&segment, &bytes).unwrap();
    let out = bin().args(["query", "conversations", "-o", "json", "--data-dir", dir.path().to_str().unwrap()]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rows.len(), 3);
    let err = stderr(&out);
    assert!(err.contains(&format!("skipped 2 damaged lines in {} (first at byte {offset}", segment.display())), "{err}");
    assert!(err.contains("1 invalid_json") && err.contains("1 wrong_schema"), "{err}");
}

/// `cmd` as an unprivileged user when the tests run as root (root may write anywhere), via
/// util-linux's `setpriv`.
fn unprivileged(cmd: &Command) -> Command {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let root = status.lines().any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"));
    let mut wrapped = if root {
        let setpriv = crate::support::which("setpriv").expect("setpriv (util-linux) to run the binary as nobody");
        let mut w = Command::new(setpriv);
        w.args(["--reuid=65534", "--regid=65534", "--clear-groups"]).arg(cmd.get_program());
        w
    } else {
        Command::new(cmd.get_program())
    };
    wrapped.args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => wrapped.env(k, v),
            None => wrapped.env_remove(k),
        };
    }
    wrapped
}

/// Issue 14, item 5: "Permission denied (os error 13)" was printed twice (the error's message
/// held its cause, and the chain printed the cause again).
#[test]
fn an_unwritable_data_dir_names_its_cause_once() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let parent = dir.path().join("locked");
    std::fs::create_dir(&parent).unwrap();
    std::fs::set_permissions(&parent, std::fs::Permissions::from_mode(0o555)).unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let data = parent.join("data");
    let mut cmd = bin();
    cmd.args(["simulate", "-n", "1", "--metrics-addr", "127.0.0.1:0", "--data-dir"]).arg(&data);
    cmd.env("SERPHONA_OBS_TRACING_ENABLED", "false");
    let out = unprivileged(&cmd).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = stderr(&out);
    assert_eq!(err.matches("os error 13").count(), 1, "{err}");
    assert!(err.contains(&data.join("events").display().to_string()), "{err}");
}

/// Issue 14, item 4: a 10,000-character tenant id made 10 KB label values (700 KB of a 780 KB
/// /metrics), and a NUL byte went into the exposition as it was.
#[test]
#[allow(clippy::field_reassign_with_default)] // the way the crate docs show it
fn hostile_label_values_are_capped_and_cleaned_and_the_exposition_parses() {
    use serphona_obs::types::*;
    let dir = tempfile::tempdir().unwrap();
    let mut config = serphona_obs::Config::default();
    config.data_dir = dir.path().to_path_buf();
    config.metrics.listen = "127.0.0.1:0".parse().unwrap();
    config.tracing.enabled = false;
    let obs = serphona_obs::Observability::init(config).unwrap();
    let tenant = format!("{}\0\n\u{1b}[2J名", "t".repeat(10_000));
    let agent = format!("agent\0{}", "名".repeat(5_000));
    for i in 0..3 {
        let conv = obs.start_conversation(ConversationStart::new(tenant.as_str(), agent.as_str(), format!("c{i}"), Channel::Voice));
        conv.track_interaction(Interaction::customer("hi").sentiment(0.2));
        conv.track_interaction(Interaction::agent("hello"));
        conv.end(ConversationEnd::new(Resolution::Resolved).rating(4));
    }
    obs.record_http_request("GET\0", &"/x".repeat(5_000), 200, Duration::from_millis(3));
    let addr = obs.metrics_addr().unwrap();
    let body = reqwest::blocking::get(format!("http://{addr}/metrics")).unwrap().bytes().unwrap();
    let text = String::from_utf8(body.to_vec()).unwrap();
    assert!(text.len() < 100_000, "/metrics is {} bytes", text.len());
    assert!(!text.chars().any(|c| c.is_control() && c != '\n'), "a control character in /metrics");
    for line in text.lines().filter(|l| l.starts_with("conversation_total{")) {
        let value = line.split("tenant_id=\"").nth(1).unwrap().split('"').next().unwrap();
        assert_eq!(value.len(), serphona_obs::metrics::MAX_LABEL_VALUE_BYTES, "{line}");
    }
    assert!(text.contains("agent_id=\"agent名"), "the agent id loses its NUL and is cut on a character boundary");

    // Prometheus' own parser reads it (promtool check metrics: exit 1 is a parse failure;
    // lint findings about naming are not what this test is about).
    let promtool = crate::support::which("promtool").expect("promtool (Debian package prometheus; scripts/test.sh installs it)");
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let report = String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(!report.contains("parsing error") && !report.contains("error while linting"), "{report}");
    obs.shutdown(Duration::from_secs(5)).unwrap();
}

/// The binary under `ulimit -f KB` with SIGXFSZ ignored, so writes past the limit fail with
/// EFBIG as on a full disk.
fn with_file_size_limit(kb: u64, args: &[&str]) -> Command {
    let mut cmd = Command::new("bash");
    cmd.arg("-c").arg(format!("trap '' XFSZ; ulimit -f {kb}; exec \"$0\" \"$@\"")).arg(env!("CARGO_BIN_EXE_serphona-obs")).args(args);
    for (key, _) in std::env::vars() {
        if key.starts_with("SERPHONA_OBS_") {
            cmd.env_remove(key);
        }
    }
    cmd.env_remove("RUST_LOG").env("SERPHONA_OBS_TRACING_ENABLED", "false");
    cmd
}

/// Issue 14, item 3: a full disk lost a dispatch batch of 1,024 events from the event log
/// (and with ClickHouse down, all of them), and `simulate` exited 0 with a success summary.
#[test]
fn a_full_disk_is_counted_reported_once_and_fails_simulate() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let down = format!("http://{}", crate::support::free_addr());
    let cmd = {
        let mut c = with_file_size_limit(256, &["simulate", "-n", "300", "-o", "json", "--metrics-addr", "127.0.0.1:0", "--data-dir", d]);
        c.env("SERPHONA_OBS_CLICKHOUSE_ENABLED", "true").env("SERPHONA_OBS_CLICKHOUSE_ENDPOINT", &down);
        c.env("SERPHONA_OBS_PIPELINE_SHUTDOWN_TIMEOUT", "2s");
        c
    };
    let out = run_within(cmd, Duration::from_secs(120));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)));
    let events = summary["events"].as_u64().unwrap();
    let lost_log = summary["events_lost_event_log"].as_u64().unwrap();
    let lost_spool = summary["events_lost_spool"].as_u64().unwrap();
    assert!(lost_log > 0 && lost_spool > 0, "{summary}");
    assert_eq!(summary["events_lost"].as_u64().unwrap(), lost_log + lost_spool);
    // What the event log holds and what it lost add up to every event.
    let written: usize = serphona_obs::sinks::event_log::list_segments(&dir.path().join("events"))
        .unwrap()
        .iter()
        .map(|(_, p)| line_count(p))
        .sum();
    assert_eq!(written as u64 + lost_log, events, "{summary}");
    let err = stderr(&out);
    assert!(err.contains(&format!("error: {} events were lost", lost_log + lost_spool)), "{err}");
    assert_eq!(err.matches("serphona-obs sink failed").count(), 1, "one error line for the event log, not one per batch:\n{err}");
    assert!(err.matches("cannot spool a ClickHouse batch").count() <= 1, "{err}");
    assert!(err.contains("File too large"), "{err}");
}

/// Issue 14, item 2: a damaged spool file lost its whole batch and counted 1. Now the replay
/// delivers its good events to the real ClickHouse engine, counts the lost ones, and keeps the
/// file as `*.bad`.
#[test]
fn a_damaged_spool_file_delivers_its_good_events_and_counts_the_lost_ones() {
    let ch = crate::support::clickhouse::ClickHouse::start();
    let db = ch.fresh_database();
    let (dir, segment) = simulated(2);
    ch.apply_schema(&db, dir.path());
    let text_of = std::fs::read_to_string(&segment).unwrap();
    let lines: Vec<&str> = text_of.lines().take(5).collect();
    let ids: Vec<String> =
        lines.iter().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["event_id"].as_str().unwrap().to_string()).collect();
    let batch_id = "01937a2c-0000-7000-8000-0000000000aa";
    let mut file = format!("{{\"batch_id\":\"{batch_id}\",\"events\":5}}\n").into_bytes();
    file.extend_from_slice(format!("{}\n{}\n", lines[0], lines[1]).as_bytes());
    // The third event cut inside a character, the fifth torn at the end.
    let third = lines[2].as_bytes();
    let cut = lines[2].find("\"content\"").unwrap() + 14;
    file.extend_from_slice(&[&third[..cut], "名".as_bytes().split_at(1).0, b"\n"].concat());
    file.extend_from_slice(format!("{}\n", lines[3]).as_bytes());
    file.extend_from_slice(&lines[4].as_bytes()[..lines[4].len() / 2]);
    let spool_dir = serphona_obs::sinks::clickhouse::spool::spool_dir(dir.path());
    std::fs::create_dir_all(&spool_dir).unwrap();
    let path = spool_dir.join(format!("batch-{batch_id}.jsonl"));
    std::fs::write(&path, &file).unwrap();

    // Any start of the library on this data dir replays the spool.
    let out = ch
        .cli(&db, dir.path())
        .env("SERPHONA_OBS_CLICKHOUSE_ENABLED", "true")
        .args(["simulate", "-n", "1", "-o", "json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "lost events fail the run: {}", text(&out));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["events_lost_spool"], 2, "{summary}");
    assert!(stderr(&out).contains("a spool file has damaged lines"), "{}", text(&out));
    // Sorted here: ClickHouse orders UUIDs by their two 64-bit halves, not as their text.
    let mut delivered: Vec<String> = ch
        .query(&format!("SELECT toString(event_id) FROM {db}.events WHERE event_id IN ('{}')", ids.join("','")))
        .lines()
        .map(str::to_string)
        .collect();
    delivered.sort();
    let mut want = vec![ids[0].clone(), ids[1].clone(), ids[3].clone()];
    want.sort();
    assert_eq!(delivered, want);
    assert!(!path.exists());
    assert!(spool_dir.join(format!("batch-{batch_id}.jsonl.bad")).exists(), "the damaged file is kept");
}
