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
