//! `serphona-obs doctor` over crafted data dirs (issue 14, item 6).

use std::os::unix::fs::PermissionsExt;
use std::process::Output;

use crate::damaged::{simulated, tear_after};
use crate::support::bin;

fn doctor(data_dir: &std::path::Path, json: bool) -> Output {
    let mut cmd = bin();
    cmd.args(["doctor", "--data-dir"]).arg(data_dir);
    if json {
        cmd.args(["-o", "json"]);
    }
    cmd.output().unwrap()
}

fn text(o: &Output) -> String {
    format!("stdout:\n{}\nstderr:\n{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

#[test]
fn a_healthy_data_dir_is_ok_and_private() {
    let (dir, segment) = simulated(3);
    // The data dir was there before the writer (tempfile made it): the user's to set.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let out = doctor(dir.path(), true);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["ok"], true);
    assert_eq!(report["segments"][0]["path"], segment.to_str().unwrap());
    assert!(report["segments"][0]["events"].as_u64().unwrap() > 3);
    assert_eq!(report["segments"][0]["damaged_lines"], 0);
    // The writer creates the event log folder and files for its owner only.
    assert_eq!(std::fs::metadata(&segment).unwrap().permissions().mode() & 0o777, 0o600);
    assert_eq!(report["exposed"].as_array().unwrap().len(), 0, "{report}");
    let table = doctor(dir.path(), false);
    assert!(String::from_utf8_lossy(&table.stdout).contains("ok: no damage found"), "{}", text(&table));
}

#[test]
fn damage_in_the_event_log_and_the_spool_is_found_with_file_and_offset() {
    let (dir, segment) = simulated(4);
    let offset = tear_after(&segment, 2);
    // A spool with one whole batch and one with a damaged line, a file set aside, a crash
    // leftover, a checkpoint file, and a file anyone can read.
    let spool_dir = dir.path().join("spool").join("clickhouse");
    std::fs::create_dir_all(&spool_dir).unwrap();
    let lines: Vec<String> = std::fs::read_to_string(&segment)
        .map(|t| t.lines().map(String::from).collect())
        .unwrap_or_else(|_| String::from_utf8_lossy(&std::fs::read(&segment).unwrap()).lines().map(String::from).collect());
    let events: Vec<&String> = lines.iter().filter(|l| serde_json::from_str::<serde_json::Value>(l).is_ok()).take(3).collect();
    let id = "01937a2c-0000-7000-8000-000000000001";
    let good = format!("{{\"batch_id\":\"{id}\",\"events\":3}}\n{}\n{}\n{}\n", events[0], events[1], events[2]);
    std::fs::write(spool_dir.join(format!("batch-{id}.jsonl")), &good).unwrap();
    let id2 = "01937a2c-0000-7000-8000-000000000002";
    let bad = format!("{{\"batch_id\":\"{id2}\",\"events\":3}}\n{}\n{{\"torn\n{}\n", events[0], events[2]);
    std::fs::write(spool_dir.join(format!("batch-{id2}.jsonl")), &bad).unwrap();
    std::fs::write(spool_dir.join("batch-01937a2c-0000-7000-8000-000000000003.jsonl.bad"), "x\n").unwrap();
    std::fs::write(spool_dir.join(".tmp-1"), "x").unwrap();
    std::fs::create_dir_all(dir.path().join("checkpoints")).unwrap();
    let checkpoint = dir.path().join("checkpoints").join("clickhouse.checkpoint");
    std::fs::write(&checkpoint, "3:1024\n").unwrap();
    std::fs::set_permissions(&checkpoint, std::fs::Permissions::from_mode(0o644)).unwrap();

    let out = doctor(dir.path(), true);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["ok"], false);
    let seg = &report["segments"][0];
    assert_eq!(seg["damaged_lines"], 1, "{report}");
    assert_eq!(seg["damaged"][0]["offset"], offset);
    assert_eq!(seg["damaged"][0]["kind"], "invalid_utf8");
    let spool = &report["spools"][0];
    assert_eq!(spool["sink"], "clickhouse");
    assert_eq!(spool["files"], 2);
    assert_eq!(spool["pending_events"], 5);
    assert_eq!(spool["damaged"][0]["damaged_lines"], 1);
    assert_eq!(spool["damaged"][0]["lost_events"], 1);
    assert_eq!(spool["quarantined"].as_array().unwrap().len(), 1);
    assert_eq!(spool["leftovers"].as_array().unwrap().len(), 1);
    assert_eq!(report["checkpoints"][0]["path"], checkpoint.to_str().unwrap());
    let exposed: Vec<&str> = report["exposed"].as_array().unwrap().iter().map(|e| e["path"].as_str().unwrap()).collect();
    assert!(exposed.contains(&checkpoint.to_str().unwrap()), "{exposed:?}");
    assert_eq!(report["problems"].as_array().unwrap().len(), 3, "{report}");

    let table = doctor(dir.path(), false);
    assert_eq!(table.status.code(), Some(1));
    let t = String::from_utf8_lossy(&table.stdout);
    assert!(t.contains(&format!("{}: 1 damaged line (first at byte {offset}, invalid_utf8)", segment.display())), "{t}");
    assert!(t.contains("damage found") && t.contains("chmod -R go-rwx"), "{t}");
}

/// Each remote sink's position in the event log, and what it has still to deliver from there;
/// a positions file that does not parse is damage (the sink would replay nothing).
#[test]
fn the_sinks_positions_and_what_they_have_still_to_deliver_are_reported() {
    let (dir, segment) = simulated(3);
    let bytes = std::fs::metadata(&segment).unwrap().len();
    let lines = std::fs::read_to_string(&segment).unwrap().lines().count() as u64;
    let positions = dir.path().join("positions");
    std::fs::create_dir_all(&positions).unwrap();
    std::fs::write(positions.join("loki.json"), r#"{"segment":1,"offset":0}"#).unwrap();
    let out = doctor(dir.path(), true);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let loki = &report["positions"][0];
    assert_eq!(loki["sink"], "loki", "{report}");
    assert_eq!((loki["pending_events"].as_u64(), loki["pending_bytes"].as_u64()), (Some(lines), Some(bytes)), "{report}");
    let table = doctor(dir.path(), false);
    assert!(String::from_utf8_lossy(&table.stdout).contains("loki to deliver"), "{}", text(&table));

    std::fs::write(positions.join("clickhouse.json"), "{").unwrap();
    let out = doctor(dir.path(), true);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let problems = report["problems"].to_string();
    assert!(problems.contains("clickhouse.json") && problems.contains("does not parse"), "{report}");
}
