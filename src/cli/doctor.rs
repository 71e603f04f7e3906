//! `doctor`: checks a data dir: the event log's segments (torn and invalid lines, with file
//! and byte offset), the spools (damaged lines, pending events and bytes per sink, files set
//! aside as `*.bad`), the remote sinks' positions in the event log (lines and bytes each has
//! still to deliver: the next start replays them), checkpoint files, and file modes (the files hold transcripts: group or
//! other must not read them). Exit 1 when something is damaged.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde::Serialize;
use serphona_obs::sinks::clickhouse::spool;
use serphona_obs::sinks::positions;
use serphona_obs::sinks::event_log::read::{AtEnd, DamageKind, LineReader, Next};
use serphona_obs::sinks::event_log::{event_log_dir, list_segments};
use tabled::settings::Style;

use super::Context;
use super::output::Format;

/// Damaged lines listed per file (the count covers them all).
const LISTED: usize = 20;

/// `doctor` flags.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// table or json.
    #[arg(long, short = 'o', value_enum, default_value = "table")]
    pub output: Format,
}

/// What `doctor` found.
#[derive(Debug, Default, Serialize)]
struct Report {
    data_dir: PathBuf,
    /// No damage found (exit 0).
    ok: bool,
    segments: Vec<Segment>,
    spools: Vec<SpoolReport>,
    /// Each remote sink's committed position in the event log, and what it has still to
    /// deliver from there.
    positions: Vec<PositionReport>,
    checkpoints: Vec<FileInfo>,
    /// Files and folders group or other can read.
    exposed: Vec<Exposed>,
    /// Damage, one line each (exit 1).
    problems: Vec<String>,
    /// Worth knowing, not damage.
    warnings: Vec<String>,
}

#[derive(Debug, Serialize)]
struct Segment {
    path: PathBuf,
    bytes: u64,
    events: u64,
    damaged_lines: u64,
    /// The first [`LISTED`] damaged lines.
    damaged: Vec<DamagedLine>,
}

#[derive(Debug, Serialize)]
struct DamagedLine {
    offset: u64,
    kind: DamageKind,
}

#[derive(Debug, Serialize)]
struct SpoolReport {
    sink: String,
    dir: PathBuf,
    /// Batches waiting to be delivered.
    files: u64,
    pending_events: u64,
    pending_bytes: u64,
    /// Spool files with damaged lines (their events are lost when replayed).
    damaged: Vec<DamagedSpoolFile>,
    /// Files a replay set aside as `*.bad`.
    quarantined: Vec<PathBuf>,
    /// Rows the server rejected for good (`rejected.jsonl`).
    rejected_events: u64,
    /// Temporary files a crash left behind.
    leftovers: Vec<PathBuf>,
}

#[derive(Debug, Serialize)]
struct PositionReport {
    sink: String,
    path: PathBuf,
    /// The committed position: segment and byte offset.
    segment: u64,
    offset: u64,
    /// Lines and bytes of the event log after it (the next start replays them to the sink).
    pending_events: u64,
    pending_bytes: u64,
}

#[derive(Debug, Serialize)]
struct DamagedSpoolFile {
    path: PathBuf,
    damaged_lines: u64,
    lost_events: u64,
}

#[derive(Debug, Serialize)]
struct FileInfo {
    path: PathBuf,
    bytes: u64,
}

#[derive(Debug, Serialize)]
struct Exposed {
    path: PathBuf,
    mode: String,
}

/// Runs `doctor`.
pub fn run(ctx: Context, args: Args) -> anyhow::Result<ExitCode> {
    let report = check(&ctx.config.data_dir)?;
    let mut out = std::io::stdout().lock();
    match args.output {
        Format::Json => {
            serde_json::to_writer_pretty(&mut out, &report)?;
            writeln!(out)?;
        }
        Format::Table => print_table(&report, &mut out)?,
    }
    out.flush()?;
    Ok(if report.ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

fn check(data_dir: &Path) -> anyhow::Result<Report> {
    let mut report = Report { data_dir: data_dir.to_path_buf(), ..Default::default() };
    if !data_dir.exists() {
        report.warnings.push(format!("{} does not exist: nothing recorded yet", data_dir.display()));
        report.ok = true;
        return Ok(report);
    }
    check_event_log(data_dir, &mut report)?;
    check_spools(data_dir, &mut report)?;
    check_positions(data_dir, &mut report)?;
    walk(data_dir, &mut report);
    report.ok = report.problems.is_empty();
    Ok(report)
}

fn check_event_log(data_dir: &Path, report: &mut Report) -> anyhow::Result<()> {
    let dir = event_log_dir(data_dir);
    for (_, path) in list_segments(&dir)? {
        let file = std::fs::File::open(&path)?;
        let bytes = file.metadata()?.len();
        let mut reader = LineReader::new(file, 0);
        let mut segment = Segment { path: path.clone(), bytes, events: 0, damaged_lines: 0, damaged: Vec::new() };
        // Every file as if it will not grow: a partial last line is reported as torn (a
        // writer in the middle of a write makes it show for a moment).
        loop {
            match reader.next(AtEnd::Torn)? {
                Next::Event(_) => segment.events += 1,
                Next::Damaged(d) => {
                    segment.damaged_lines += 1;
                    if segment.damaged.len() < LISTED {
                        segment.damaged.push(DamagedLine { offset: d.offset, kind: d.kind });
                    }
                }
                Next::End => break,
            }
        }
        if let Some(first) = segment.damaged.first() {
            report.problems.push(format!(
                "{}: {} damaged line{} (first at byte {}, {}); readers skip them",
                path.display(),
                segment.damaged_lines,
                if segment.damaged_lines == 1 { "" } else { "s" },
                first.offset,
                first.kind
            ));
        }
        report.segments.push(segment);
    }
    Ok(())
}

fn check_spools(data_dir: &Path, report: &mut Report) -> anyhow::Result<()> {
    let root = data_dir.join("spool");
    let Ok(sinks) = std::fs::read_dir(&root) else { return Ok(()) };
    let mut dirs: Vec<PathBuf> = sinks.filter_map(Result::ok).map(|e| e.path()).filter(|p| p.is_dir()).collect();
    dirs.sort();
    for dir in dirs {
        let sink = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let mut s = SpoolReport {
            sink,
            dir: dir.clone(),
            files: 0,
            pending_events: 0,
            pending_bytes: 0,
            damaged: Vec::new(),
            quarantined: Vec::new(),
            rejected_events: 0,
            leftovers: Vec::new(),
        };
        let mut entries: Vec<PathBuf> = std::fs::read_dir(&dir)?.filter_map(Result::ok).map(|e| e.path()).collect();
        entries.sort();
        for path in entries {
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            if name.starts_with("batch-") && name.ends_with(".jsonl") {
                let read = spool::read_file(&path)?;
                s.files += 1;
                s.pending_events += read.batch.events.len() as u64;
                s.pending_bytes += std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
                if read.damaged_lines > 0 {
                    report.problems.push(format!(
                        "{}: {} damaged line{}; {} event{} lost when it is replayed",
                        path.display(),
                        read.damaged_lines,
                        if read.damaged_lines == 1 { "" } else { "s" },
                        read.lost_events,
                        if read.lost_events == 1 { " is" } else { "s are" }
                    ));
                    s.damaged.push(DamagedSpoolFile { path, damaged_lines: read.damaged_lines, lost_events: read.lost_events });
                }
            } else if name.ends_with(".bad") {
                report.problems.push(format!(
                    "{}: set aside by a replay because it had damaged lines (its good events were delivered); \
                     inspect it, then delete it",
                    path.display()
                ));
                s.quarantined.push(path);
            } else if name == "rejected.jsonl" {
                s.rejected_events = std::fs::read(&path)?.split(|&b| b == b'\n').filter(|l| !l.is_empty()).count() as u64;
                report.warnings.push(format!(
                    "{}: {} rows the server rejected for good (kept here)",
                    path.display(),
                    s.rejected_events
                ));
            } else if name.starts_with(".tmp-") {
                report.warnings.push(format!("{}: a spool write that did not finish (a crash); it can be deleted", path.display()));
                s.leftovers.push(path);
            }
        }
        report.spools.push(s);
    }
    Ok(())
}

/// The positions files (`positions/<sink>.json`): where each sink is in the event log, and
/// what it has still to deliver from there. One that does not parse is damage: the sink then
/// starts at the end of the log and replays nothing.
fn check_positions(data_dir: &Path, report: &mut Report) -> anyhow::Result<()> {
    let Ok(entries) = std::fs::read_dir(data_dir.join("positions")) else { return Ok(()) };
    let mut files: Vec<PathBuf> =
        entries.filter_map(Result::ok).map(|e| e.path()).filter(|p| p.extension().is_some_and(|e| e == "json")).collect();
    files.sort();
    let end = positions::log_end(data_dir)?;
    for path in files {
        let sink = path.file_stem().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let file = positions::PositionFile::new(data_dir, &sink);
        match file.load() {
            Ok(Some(at)) => {
                let range = end.filter(|end| *end > at).map(|end| positions::LogRange::new(data_dir, at, end));
                report.positions.push(PositionReport {
                    sink,
                    path,
                    segment: at.segment,
                    offset: at.offset,
                    pending_events: range.as_ref().map_or(0, |r| r.remaining_lines()),
                    pending_bytes: range.as_ref().map_or(0, |r| r.remaining_bytes()),
                });
            }
            Ok(None) => {}
            Err(e) => report.problems.push(format!(
                "{}: the {sink} sink's position {} ({}); it will start at the end of the event log and replay nothing: delete the file to accept that",
                path.display(),
                if e.context == "parse" { "does not parse" } else { "cannot be read" },
                e.source
            )),
        }
    }
    Ok(())
}

/// Checkpoint files anywhere in the data dir, and the modes of everything in it.
fn walk(dir: &Path, report: &mut Report) {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        let Ok(meta) = std::fs::symlink_metadata(&path) else { continue };
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o044 != 0 && !meta.file_type().is_symlink() {
            report.exposed.push(Exposed { path: path.clone(), mode: format!("{mode:04o}") });
        }
        if meta.is_dir() {
            if let Ok(entries) = std::fs::read_dir(&path) {
                let mut children: Vec<PathBuf> = entries.filter_map(Result::ok).map(|e| e.path()).collect();
                children.sort();
                children.reverse();
                stack.extend(children);
            }
        } else if meta.is_file() {
            let name = path.file_name().map(|n| n.to_string_lossy().to_lowercase()).unwrap_or_default();
            if name.contains("checkpoint") || name.ends_with(".offset") || name.ends_with(".offsets") {
                report.checkpoints.push(FileInfo { path, bytes: meta.len() });
            }
        }
    }
    report.exposed.sort_by(|a, b| a.path.cmp(&b.path));
    if !report.exposed.is_empty() {
        report.warnings.push(format!(
            "{} file{} or folder{} in {} can be read by group or other; they hold transcripts: chmod -R go-rwx {}",
            report.exposed.len(),
            if report.exposed.len() == 1 { "" } else { "s" },
            if report.exposed.len() == 1 { "" } else { "s" },
            dir.display(),
            dir.display()
        ));
    }
}

fn print_table(report: &Report, out: &mut impl Write) -> anyhow::Result<()> {
    let mut builder = tabled::builder::Builder::default();
    builder.push_record(["what", "path", "events", "bytes", "damaged lines"]);
    for s in &report.segments {
        builder.push_record([
            "event log".to_string(),
            s.path.display().to_string(),
            s.events.to_string(),
            s.bytes.to_string(),
            s.damaged_lines.to_string(),
        ]);
    }
    for s in &report.spools {
        let damaged: u64 = s.damaged.iter().map(|d| d.damaged_lines).sum();
        builder.push_record([
            format!("spool {}", s.sink),
            s.dir.display().to_string(),
            s.pending_events.to_string(),
            s.pending_bytes.to_string(),
            damaged.to_string(),
        ]);
    }
    for p in &report.positions {
        builder.push_record([
            format!("{} to deliver", p.sink),
            format!("{} from {}:{}", p.path.display(), p.segment, p.offset),
            p.pending_events.to_string(),
            p.pending_bytes.to_string(),
            String::new(),
        ]);
    }
    for c in &report.checkpoints {
        builder.push_record(["checkpoint".to_string(), c.path.display().to_string(), String::new(), c.bytes.to_string(), String::new()]);
    }
    let mut table = builder.build();
    table.with(Style::rounded());
    super::output::fit(&mut table);
    writeln!(out, "data dir {}", report.data_dir.display())?;
    writeln!(out, "{table}")?;
    for e in &report.exposed {
        writeln!(out, "mode {} {}", e.mode, e.path.display())?;
    }
    for w in &report.warnings {
        writeln!(out, "warning: {w}")?;
    }
    for p in &report.problems {
        writeln!(out, "damaged: {p}")?;
    }
    writeln!(out, "{}", if report.ok { "ok: no damage found" } else { "damage found" })?;
    Ok(())
}
