//! Issue 14, acceptance: a crash-test suite that can fail. The emitting process
//! (`serphona-obs simulate`) and the ClickHouse peer are killed with SIGKILL, at random points
//! and inside the insert-deduplication window (the moment the engine's deduplication log
//! grows, before the part is committed); after recovery and a restart of the emitter, the
//! `events` table holds every event of the event log exactly once:
//! `count() = uniqExact(event_id) = lines in the event log`. The harness's emitters also push
//! to a Loki receiver, which then has every line of the event log (a kill -9 loses no line of
//! the Loki sink's backlog either).
//!
//! `SERPHONA_OBS_CRASH_ITERATIONS` (default 30) sets the iterations of the harness, and
//! `SERPHONA_OBS_CRASH_SEED` its random seed (printed, so a failing run can be repeated);
//! see docs/testing.md for the long mode.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};

use crate::support::clickhouse::ClickHouse;
use crate::support::loki::Receiver;

/// Iterations of the crash harness (CI default; more by hand).
const ITERATIONS_ENV: &str = "SERPHONA_OBS_CRASH_ITERATIONS";
/// The harness's random seed.
const SEED_ENV: &str = "SERPHONA_OBS_CRASH_SEED";
/// Where the harness's emitters push their lines.
const LOKI_ENV: &str = "SERPHONA_OBS_LOGGING_LOKI_ENDPOINT";

fn text(o: &Output) -> String {
    format!("status {:?}\nstdout:\n{}\nstderr:\n{}", o.status, String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// `serphona-obs` against `db` with ClickHouse on, batches of `batch` rows.
fn emitter(ch: &ClickHouse, db: &str, data: &Path, batch: usize) -> Command {
    let mut cmd = ch.cli(db, data);
    cmd.env("SERPHONA_OBS_CLICKHOUSE_ENABLED", "true")
        .env("SERPHONA_OBS_CLICKHOUSE_BATCH_SIZE", batch.to_string())
        .env("SERPHONA_OBS_CLICKHOUSE_FLUSH_INTERVAL", "100ms")
        .env("SERPHONA_OBS_CLICKHOUSE_REQUEST_TIMEOUT", "5s")
        .env("SERPHONA_OBS_PIPELINE_WHEN_FULL", "block");
    cmd
}

/// Like [`emitter`], with the default `when_full: drop_newest` (as in the report).
fn emitter_dropping(ch: &ClickHouse, db: &str, data: &Path, batch: usize) -> Command {
    let mut cmd = emitter(ch, db, data, batch);
    cmd.env_remove("SERPHONA_OBS_PIPELINE_WHEN_FULL");
    cmd
}

/// The event log's lines that are events, as the files have them.
fn local_log_lines(data: &Path) -> BTreeSet<String> {
    let mut lines = BTreeSet::new();
    for (_, path) in serphona_obs::sinks::event_log::list_segments(&serphona_obs::sinks::event_log::event_log_dir(data)).unwrap() {
        let bytes = std::fs::read(path).unwrap();
        for line in bytes.split(|&b| b == b'\n') {
            if let Ok(Some(_)) = serphona_obs::sinks::event_log::read::parse_line(line) {
                lines.insert(String::from_utf8(line.to_vec()).unwrap());
            }
        }
    }
    lines
}

/// Events in the local event log (damaged lines are not events).
fn log_lines(data: &Path) -> u64 {
    serphona_obs::store::local::LocalStore::open(data).read_all().unwrap().len() as u64
}

/// (count(), uniqExact(event_id)) of `events`.
fn counts(ch: &ClickHouse, db: &str) -> (u64, u64) {
    let out = ch.query(&format!("SELECT count(), uniqExact(event_id) FROM {db}.events"));
    let mut it = out.split_whitespace().map(|v| v.parse::<u64>().unwrap());
    (it.next().unwrap(), it.next().unwrap())
}

/// The restart of the emitter: one more short run with the peer up, which replays what the
/// earlier runs left (spool, and the event log past the committed position) before it exits.
fn restart_emitter(ch: &ClickHouse, db: &str, data: &Path, loki: Option<&str>) -> Output {
    let mut cmd = emitter(ch, db, data, 200);
    if let Some(loki) = loki {
        cmd.env(LOKI_ENV, loki);
    }
    let out = cmd
        .env("SERPHONA_OBS_PIPELINE_SHUTDOWN_TIMEOUT", "300s")
        .args(["simulate", "--conversations", "1", "--seed", "999"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    out
}

/// Asserts `count() = uniqExact(event_id) = lines in the event log`, with `what` in the message.
fn assert_exactly_once(ch: &ClickHouse, db: &str, data: &Path, what: &str) -> u64 {
    let lines = log_lines(data);
    let (count, unique) = counts(ch, db);
    let spool = serphona_obs::sinks::clickhouse::spool::spool_dir(data);
    let spooled = std::fs::read_dir(&spool).map(|d| d.count()).unwrap_or(0);
    assert!(
        count == unique && unique == lines,
        "{what}: count() {count}, uniqExact(event_id) {unique}, event log lines {lines} (lost {}, doubled {}); spool files {spooled}\n{}",
        lines.saturating_sub(unique),
        count.saturating_sub(unique),
        ch.log_tail()
    );
    lines
}

/// The files of the engine's deduplication logs of `table` (see the notes on the test peer).
fn dedup_log_dir(ch: &ClickHouse, db: &str, table: &str) -> PathBuf {
    let path = ch.query(&format!("SELECT data_paths[1] FROM system.tables WHERE database = '{db}' AND name = '{table}'"));
    let path = PathBuf::from(path.trim());
    let path = if path.is_absolute() { path } else { ch.data_dir().expect("an owned peer").join(path) };
    path.join("deduplication_logs")
}

/// Total bytes of the deduplication logs in `dir` (0 when there are none yet).
fn dedup_log_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|d| d.filter_map(Result::ok).filter_map(|e| e.metadata().ok()).map(|m| m.len()).sum())
        .unwrap_or(0)
}

fn kill9(child: &mut Child) {
    // std's kill is SIGKILL on Unix.
    let _ = child.kill();
    let _ = child.wait();
}

/// The harness's scenario: voice and chat only. The built-in one has email threads hours long
/// (and SMS minutes long), which kept an emitter paced at `--speed 200` running for about a
/// minute; these conversations end within seconds of data time.
const CRASH_SCENARIO: &str = "\
duration: 60s
conversations_per_hour: 7200
tenants:
  - {id: acme-telco, share: 0.5, agents: [acme-billing-bot, acme-support-bot]}
  - {id: globex-bank, share: 0.5, agents: [globex-cards-bot]}
channels: {voice: 0.5, chat: 0.5}
";

#[derive(Debug, Clone, Copy)]
enum Kill {
    /// The emitter, after this long.
    Emitter(Duration),
    /// The peer, after this long.
    Peer(Duration),
    /// The peer, the moment the `events` table's deduplication log grows.
    PeerInDedupWindow,
}

/// The harness: ≥ 30 iterations of kill -9 of the emitter or the peer, at random points and
/// inside the insert-deduplication window; then a restart of the emitter, and every event of
/// the event log is in ClickHouse exactly once.
///
/// Each emitter runs [`CRASH_SCENARIO`] (voice and chat only) for about 2 s of real time; a
/// peer that is down at its exit is retried for 3 s (`SERPHONA_OBS_PIPELINE_SHUTDOWN_TIMEOUT`).
/// The 30 iterations of CI take about 3 minutes on a 2-core machine. The output lists each
/// iteration with its kill point and time, the seed, and the kills inside the window (the test
/// fails if none landed there).
///
/// Long mode, by hand (about 6 s an iteration):
/// `SERPHONA_OBS_CRASH_ITERATIONS=300 cargo test --test it crash::kill_9_of_the_emitter_and -- --nocapture`;
/// `SERPHONA_OBS_CRASH_SEED=N` repeats a run's random choices.
#[test]
fn kill_9_of_the_emitter_and_the_peer_loses_and_doubles_nothing() {
    let iterations: usize = std::env::var(ITERATIONS_ENV).ok().and_then(|v| v.parse().ok()).unwrap_or(30);
    let seed: u64 = std::env::var(SEED_ENV).ok().and_then(|v| v.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
    });
    println!("crash harness: {iterations} iterations, seed {seed} ({SEED_ENV}={seed} repeats it)");
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut ch = ClickHouse::start();
    let db = ch.fresh_database();
    let data = tempfile::tempdir().unwrap();
    ch.apply_schema(&db, data.path());
    let dedup = dedup_log_dir(&ch, &db, "events");
    let scenario_dir = tempfile::tempdir().unwrap();
    let scenario = scenario_dir.path().join("crash.yaml");
    std::fs::write(&scenario, CRASH_SCENARIO).unwrap();
    let started = Instant::now();
    let (mut window_kills, mut window_misses) = (0, 0);
    let loki = Receiver::start();

    for i in 0..iterations {
        let kill = match i % 3 {
            0 => Kill::Emitter(Duration::from_millis(rng.random_range(100..2000))),
            1 => Kill::Peer(Duration::from_millis(rng.random_range(50..1500))),
            _ => Kill::PeerInDedupWindow,
        };
        let mut child = emitter(&ch, &db, data.path(), 50)
            // A peer that is down at exit is retried until the deadline: keep it short.
            .env("SERPHONA_OBS_PIPELINE_SHUTDOWN_TIMEOUT", "3s")
            .env(LOKI_ENV, loki.endpoint())
            .arg("simulate")
            .arg("--scenario")
            .arg(&scenario)
            .args(["--conversations", "40", "--rate", "80", "--speed", "50", "--concurrency", "20"])
            .arg("--seed")
            .arg(rng.random_range(1..u32::MAX).to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let at = Instant::now();
        let point = match kill {
            Kill::Emitter(after) => {
                std::thread::sleep(after);
                kill9(&mut child);
                format!("emitter killed after {after:?}")
            }
            Kill::Peer(after) => {
                std::thread::sleep(after);
                ch.stop();
                format!("peer killed after {after:?}")
            }
            Kill::PeerInDedupWindow => {
                // Kill the engine the moment its deduplication log grows: the block id is
                // written, the part may not be committed yet.
                let before = dedup_log_bytes(&dedup);
                let give_up = Instant::now() + Duration::from_secs(10);
                let mut grew = false;
                while Instant::now() < give_up {
                    if dedup_log_bytes(&dedup) > before {
                        grew = true;
                        break;
                    }
                    if child.try_wait().unwrap().is_some() {
                        break;
                    }
                    std::hint::spin_loop();
                }
                ch.stop();
                if grew {
                    window_kills += 1;
                    format!("peer killed as its dedup log grew, after {:?}", at.elapsed())
                } else {
                    window_misses += 1;
                    format!("peer killed after {:?} (its dedup log did not grow)", at.elapsed())
                }
            }
        };
        // An emitter that survived the peer finishes its run: what the peer did not take is
        // in the spool (or past the committed position in the log). Then the peer is back,
        // and the next iteration's emitter (the restart) replays it.
        let status = if let Kill::Emitter(_) = kill {
            "killed".to_string()
        } else {
            let out = child.wait_with_output().unwrap();
            assert!(out.status.success(), "iteration {i}: {}", text(&out));
            "exited 0".to_string()
        };
        if !ch.is_running() {
            ch.restart();
        }
        println!(
            "iteration {i:>3}: {point}; emitter {status}; log {} events; {:.1?} with the restart of the peer",
            log_lines(data.path()),
            at.elapsed()
        );
    }

    restart_emitter(&ch, &db, data.path(), Some(&loki.endpoint()));
    let lines = assert_exactly_once(&ch, &db, data.path(), "after the crash harness");
    // Loki: every line of the event log, byte for byte. A line pushed again after a kill (its
    // position not committed yet) is a copy Loki drops (same stream, timestamp and line).
    let local = local_log_lines(data.path());
    let pushed = loki.accepted_lines();
    let unique: BTreeSet<&String> = pushed.iter().collect();
    let missing = local.iter().filter(|l| !unique.contains(l)).count();
    assert_eq!(missing, 0, "{missing} of {} lines of the event log never reached Loki", local.len());
    assert_eq!(unique.len(), local.len(), "Loki got lines the event log does not have");
    println!(
        "crash harness: {iterations} iterations in {:?}, {window_kills} kills inside the dedup window ({window_misses} missed it), {lines} events: 0 lost, 0 doubled; Loki: {} of {} lines, {} pushed again after a kill",
        started.elapsed(),
        unique.len(),
        local.len(),
        pushed.len() - unique.len()
    );
    assert!(window_kills > 0, "no kill landed inside the deduplication window: the harness did not test it");
}

/// Issue 14: kill -9 of a fast emitter with ClickHouse up lost its in-memory backlog (101,773
/// of 106,373 events). The event log is the write-ahead log: the restart replays it.
#[test]
fn kill_9_of_the_emitter_with_a_large_backlog_loses_nothing_after_a_restart() {
    let ch = ClickHouse::start();
    let db = ch.fresh_database();
    let data = tempfile::tempdir().unwrap();
    ch.apply_schema(&db, data.path());
    let mut child = emitter(&ch, &db, data.path(), 200)
        .args(["simulate", "--conversations", "12000", "--seed", "14"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait until the log holds 100,000 events, then kill.
    let log = serphona_obs::sinks::event_log::event_log_dir(data.path());
    let lines = || -> u64 {
        serphona_obs::sinks::event_log::list_segments(&log)
            .unwrap()
            .iter()
            .map(|(_, p)| std::fs::read(p).map(|b| b.iter().filter(|&&c| c == b'\n').count() as u64).unwrap_or(0))
            .sum()
    };
    while lines() < 100_000 {
        assert!(child.try_wait().unwrap().is_none(), "simulate exited before it logged 100,000 events");
        std::thread::sleep(Duration::from_millis(100));
    }
    kill9(&mut child);
    let logged = log_lines(data.path());
    let (in_ch, _) = counts(&ch, &db);
    println!("emitter killed with {logged} events logged, {in_ch} in ClickHouse: a backlog of {}", logged - in_ch.min(logged));
    assert!(logged - in_ch.min(logged) > 0, "no backlog to lose");

    restart_emitter(&ch, &db, data.path(), None);
    let lines = assert_exactly_once(&ch, &db, data.path(), "after kill -9 of the emitter and a restart");
    println!("after the restart: {lines} events, 0 lost, 0 doubled");
}

/// Issue 14: the shutdown deadline dropped the worker's queue (97,251 of 197,251 events lost,
/// "0 events still queued"). Now the deadline holds and what is not delivered by then is kept
/// and counted: "N events spooled for the next start"; a restart delivers it.
#[test]
fn a_shutdown_under_backlog_keeps_what_it_cannot_deliver_by_the_deadline() {
    let ch = ClickHouse::start();
    let db = ch.fresh_database();
    let data = tempfile::tempdir().unwrap();
    ch.apply_schema(&db, data.path());
    // The pipeline's own queue is smaller than its default (65,536): the test binary is a
    // debug build, whose dispatcher (redaction, encoding, the event log) drains a full default
    // queue in more than the deadline on a loaded 2-core machine. What this test is about is
    // the sink's worker: 256 hand-overs of up to 1,024 events queued behind the shutdown.
    let out = emitter_dropping(&ch, &db, data.path(), 200)
        .env("SERPHONA_OBS_PIPELINE_SHUTDOWN_TIMEOUT", "5s")
        .env("SERPHONA_OBS_PIPELINE_QUEUE_CAPACITY", "8192")
        .args(["simulate", "--conversations", "20000", "--seed", "7", "--output", "json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let pending = report["events_spooled"].as_u64().unwrap();
    let lines = log_lines(data.path());
    let (count, unique) = counts(&ch, &db);
    println!(
        "at exit: {lines} events logged, {unique} in ClickHouse, {pending} spooled for the next start; shutdown took {}s",
        report["shutdown_seconds"]
    );
    assert_eq!(count, unique, "an event was doubled");
    // Every event is in ClickHouse or kept, and counted (an insert cut off at the deadline may
    // be in both: its outcome is unknown, so it is kept).
    assert!(unique + pending >= lines, "{} events neither delivered nor kept", lines - unique - pending);
    assert_eq!(report["events_lost"].as_u64(), Some(0), "{report}");
    if pending > 0 {
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(&format!("{pending} events spooled for the next start")), "{err}");
    }
    // The deadline held: a shutdown past it (and the 2 s of grace the pipeline gives the
    // sinks) is an error, and `simulate` exits 1 (checked above).

    restart_emitter(&ch, &db, data.path(), None);
    assert_exactly_once(&ch, &db, data.path(), "after the restart");
}
