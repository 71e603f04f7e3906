//! The event log as the remote sinks' write-ahead log: where each sink has committed to.
//!
//! Promtail and Alloy keep a *positions file*: the offset up to which a tailed log has been
//! shipped. A remote sink here does the same with the local event log (issue 14): every batch
//! the dispatcher hands it was written to the event log first, and the sink learns where that
//! batch ends in the log ([`WriteCursor`]). When the server has acknowledged every event up to
//! a point, the sink commits that point to `<data_dir>/positions/<sink>.json`
//! ([`PositionFile`]). Batches are delivered out of log order (a failed batch is retried while
//! later ones go through), so the committed point is a contiguous *watermark*
//! ([`Watermark`]): it passes an event only when that event and every one before it were
//! acknowledged (or put in the sink's own durable spool).
//!
//! After a crash (kill -9 of the emitting process, with its in-memory backlog) the next start
//! reads the event log from the committed position to where the log ended at start
//! ([`LogRange`]) and hands those events to the sink again. The sink makes that replay
//! idempotent (the ClickHouse sink asks the server which of the events' rows it already has;
//! the Loki sink pushes the lines byte for byte, and Loki drops a copy of a line it has).
//!
//! Durability: the event log is written with one `write` per dispatch batch and synced by
//! `flush()`/`shutdown()`, so what was written survives a crash of the process (it is in the
//! page cache) but not a crash of the machine between syncs. The positions file is replaced
//! by rename and not synced: after a machine crash it can only be *older* than it was, and an
//! older position replays more, never less.

use std::io::{Read, Seek};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::sinks::event_log::read::{AtEnd, LineReader, Next};
use crate::sinks::event_log::{event_log_dir, list_segments};
use crate::pipeline::SharedEvent;
use crate::types::Event;

/// A point in the event log: a segment's sequence number and a byte offset in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct LogPosition {
    /// The segment (`events-<segment>.jsonl`).
    pub segment: u64,
    /// Bytes into it.
    pub offset: u64,
}

/// What the event log's writer last wrote: shared by the event log sink (which sets it after
/// each batch) and the remote sinks of the same data dir (which read it when the dispatcher
/// hands them the same batch right after).
#[derive(Debug, Default)]
pub struct WriteCursor {
    last: Mutex<Option<Written>>,
}

/// One batch the event log wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Written {
    first: Uuid,
    count: usize,
    end: LogPosition,
}

impl WriteCursor {
    /// The event log wrote a batch of `count` events, the first with id `first`, ending at `end`.
    pub fn wrote(&self, first: Uuid, count: usize, end: LogPosition) {
        *self.last.lock().expect("cursor lock") = Some(Written { first, count, end });
    }

    /// The event log failed to write the last batch.
    pub fn failed(&self) {
        *self.last.lock().expect("cursor lock") = None;
    }

    /// Where the batch whose first event is `first` (and has `count` events) ends in the log,
    /// if the event log wrote it.
    pub fn end_of(&self, first: Uuid, count: usize) -> Option<LogPosition> {
        let last = *self.last.lock().expect("cursor lock");
        last.filter(|w| w.first == first && w.count == count).map(|w| w.end)
    }
}

/// A dispatcher batch as a remote sink's worker gets it: the events and where they end in the
/// event log (`None` when the log did not write them: disabled, or a failed write).
pub struct Handed {
    /// The events.
    pub events: Vec<SharedEvent>,
    /// Where they end in the event log.
    pub end: Option<LogPosition>,
}

impl Handed {
    /// The batch the dispatcher hands a sink, which it handed the event log (whose cursor this
    /// is, when this process writes one) just before.
    pub fn new(cursor: Option<&WriteCursor>, events: &[SharedEvent]) -> Handed {
        let end = match (cursor, events.first()) {
            (Some(cursor), Some(first)) => cursor.end_of(first.event_id, events.len()),
            _ => None,
        };
        Handed { events: events.to_vec(), end }
    }
}

/// The write cursors of the event logs open in this process, by data dir.
static CURSORS: Mutex<Vec<(PathBuf, Weak<WriteCursor>)>> = Mutex::new(Vec::new());

fn key(data_dir: &Path) -> PathBuf {
    std::fs::canonicalize(data_dir).unwrap_or_else(|_| data_dir.to_path_buf())
}

/// The cursor of the event log of `data_dir`, registered by the event log sink when it opens.
pub fn register_cursor(data_dir: &Path) -> Arc<WriteCursor> {
    let cursor = Arc::new(WriteCursor::default());
    let mut all = CURSORS.lock().expect("cursor registry lock");
    all.retain(|(_, c)| c.strong_count() > 0);
    let k = key(data_dir);
    all.retain(|(p, _)| *p != k);
    all.push((k, Arc::downgrade(&cursor)));
    cursor
}

/// The cursor of the event log of `data_dir`, when this process writes one.
pub fn cursor(data_dir: &Path) -> Option<Arc<WriteCursor>> {
    let k = key(data_dir);
    CURSORS.lock().expect("cursor registry lock").iter().find(|(p, _)| *p == k).and_then(|(_, c)| c.upgrade())
}

/// The end of the event log of `data_dir` now (`None` when it has no segment).
pub fn log_end(data_dir: &Path) -> std::io::Result<Option<LogPosition>> {
    let segments = list_segments(&event_log_dir(data_dir))?;
    let Some((segment, path)) = segments.last() else { return Ok(None) };
    let offset = std::fs::metadata(path)?.len();
    Ok(Some(LogPosition { segment: *segment, offset }))
}

/// A positions file could not be read or written.
#[derive(Debug, thiserror::Error)]
#[error("positions file {}: {context}", path.display())]
pub struct PositionError {
    /// The file.
    pub path: PathBuf,
    /// What was being done.
    pub context: &'static str,
    /// Why.
    pub source: std::io::Error,
}

/// A sink's committed position: `<data_dir>/positions/<sink>.json`.
#[derive(Debug)]
pub struct PositionFile {
    path: PathBuf,
}

#[derive(Serialize, Deserialize)]
struct Stored {
    segment: u64,
    offset: u64,
}

impl PositionFile {
    /// The positions file of `sink` under `data_dir` (not created yet).
    pub fn new(data_dir: &Path, sink: &str) -> PositionFile {
        PositionFile { path: data_dir.join("positions").join(format!("{sink}.json")) }
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The committed position; `None` when there is no file (a first start). A file that does
    /// not parse is an error (the caller decides: replay everything or nothing).
    pub fn load(&self) -> Result<Option<LogPosition>, PositionError> {
        match std::fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice::<Stored>(&bytes)
                .map(|s| Some(LogPosition { segment: s.segment, offset: s.offset }))
                .map_err(|e| PositionError { path: self.path.clone(), context: "parse", source: e.into() }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(PositionError { path: self.path.clone(), context: "read", source }),
        }
    }

    /// Commits `at` (a temporary file renamed over the old one; not synced, see the module docs).
    pub fn store(&self, at: LogPosition) -> Result<(), PositionError> {
        let err = |context| {
            let path = self.path.clone();
            move |source| PositionError { path, context, source }
        };
        let dir = self.path.parent().expect("a positions file has a folder");
        crate::fsmode::create_private_dir_all(dir).map_err(err("create the folder of"))?;
        let tmp = self.path.with_extension("json.tmp");
        let body = serde_json::to_vec(&Stored { segment: at.segment, offset: at.offset }).expect("a position serializes");
        // Private like every file of the data dir (it names no customer, but the data dir's
        // promise is that nothing in it is readable by others).
        {
            use std::io::Write as _;
            let mut f = crate::fsmode::create_private(&tmp).map_err(err("write"))?;
            f.write_all(&body).map_err(err("write"))?;
        }
        std::fs::rename(&tmp, &self.path).map_err(err("replace"))
    }
}

/// The contiguous watermark over the events a sink was handed: what may be committed.
///
/// Each hand-over (a dispatcher batch) is a *ticket* with its event count and, when the event
/// log wrote it, its end in the log. Events are later grouped differently (the sink's
/// batches) and acknowledged in any order; [`Watermark::done`] counts them off their tickets,
/// and the watermark moves over the leading tickets whose events are all acknowledged.
#[derive(Debug, Default)]
pub struct Watermark {
    next: u64,
    /// Open tickets in order: (ticket, events not yet acknowledged, end in the log).
    open: std::collections::VecDeque<(u64, usize, Option<LogPosition>)>,
    /// Tickets of events accepted but not yet grouped, in arrival order: (ticket, events).
    ungrouped: std::collections::VecDeque<(u64, usize)>,
    committed: Option<LogPosition>,
}

/// The tickets of a group of events (a sealed batch): (ticket, events of it).
pub type Tickets = Vec<(u64, usize)>;

impl Watermark {
    /// A watermark at `committed`.
    pub fn new(committed: Option<LogPosition>) -> Watermark {
        Watermark { committed, ..Watermark::default() }
    }

    /// The committed position.
    pub fn committed(&self) -> Option<LogPosition> {
        self.committed
    }

    /// Takes a hand-over of `count` events that ends at `end` in the log (`None`: not in the
    /// log). Returns its ticket.
    pub fn accept(&mut self, count: usize, end: Option<LogPosition>) -> u64 {
        let ticket = self.next;
        self.next += 1;
        self.open.push_back((ticket, count, end));
        if count > 0 {
            self.ungrouped.push_back((ticket, count));
        }
        self.advance();
        ticket
    }

    /// Opens a ticket for something that is not grouped into batches (a replay of the log up
    /// to `end`); [`Watermark::done`] with `(ticket, 1)` closes it.
    pub fn hold(&mut self, end: LogPosition) -> u64 {
        let ticket = self.next;
        self.next += 1;
        self.open.push_back((ticket, 1, Some(end)));
        ticket
    }

    /// True when every ticket of the group is in the log (its events can be replayed from it).
    pub fn in_log(&self, tickets: &[(u64, usize)]) -> bool {
        tickets.iter().all(|(t, _)| self.open.iter().find(|e| e.0 == *t).is_none_or(|e| e.2.is_some()))
    }

    /// The tickets of the next `count` accepted events (they were grouped into a batch).
    pub fn group(&mut self, mut count: usize) -> Tickets {
        let mut out = Vec::new();
        while count > 0 {
            let Some(front) = self.ungrouped.front_mut() else { break };
            let take = front.1.min(count);
            out.push((front.0, take));
            front.1 -= take;
            count -= take;
            if front.1 == 0 {
                self.ungrouped.pop_front();
            }
        }
        out
    }

    /// The events of these tickets were acknowledged (or kept durably elsewhere). Returns the
    /// new committed position when it moved.
    pub fn done(&mut self, tickets: &[(u64, usize)]) -> Option<LogPosition> {
        for (ticket, n) in tickets {
            if let Some(entry) = self.open.iter_mut().find(|e| e.0 == *ticket) {
                entry.1 = entry.1.saturating_sub(*n);
            }
        }
        self.advance()
    }

    fn advance(&mut self) -> Option<LogPosition> {
        let before = self.committed;
        while let Some(&(_, 0, end)) = self.open.front() {
            self.open.pop_front();
            if let Some(end) = end {
                self.committed = Some(self.committed.map_or(end, |c| c.max(end)));
            }
        }
        (self.committed != before).then_some(self.committed).flatten()
    }

    /// Events handed over and not yet acknowledged.
    pub fn outstanding(&self) -> usize {
        self.open.iter().map(|e| e.1).sum()
    }
}

/// How often a sink writes its committed position while it moves (and at flush and shutdown).
pub const COMMIT_EVERY: std::time::Duration = std::time::Duration::from_millis(200);

/// A sink's positions file and when it was last written: commits a watermark at most every
/// [`COMMIT_EVERY`] (a crash in between replays a little more, never less).
#[derive(Debug)]
pub struct Committer {
    file: PositionFile,
    name: &'static str,
    committed_at: std::time::Instant,
    warn: crate::sinks::retry::WarnEvery,
}

impl Committer {
    /// Commits to `file`; `name` is the sink in messages.
    pub fn new(file: PositionFile, name: &'static str) -> Committer {
        Committer {
            file,
            name,
            committed_at: std::time::Instant::now(),
            warn: crate::sinks::retry::WarnEvery::new(std::time::Duration::from_secs(60)),
        }
    }

    /// Writes the watermark's committed position, unless one was written less than
    /// [`COMMIT_EVERY`] ago and not `now`. A failure is logged at most once a minute.
    pub fn commit(&mut self, watermark: &Watermark, now: bool) {
        if !now && self.committed_at.elapsed() < COMMIT_EVERY {
            return;
        }
        self.committed_at = std::time::Instant::now();
        if let Some(at) = watermark.committed() {
            if let Err(e) = self.file.store(at) {
                if self.warn.ready() {
                    tracing::error!(error = %crate::ErrorChain(&e), "serphona-obs: cannot write the {} positions file (logged at most once a minute)", self.name);
                }
            }
        }
    }
}

/// Where a sink starts: its positions file, where its watermark starts, and the log it must
/// replay first.
#[derive(Debug)]
pub struct Resume {
    /// The sink's positions file.
    pub file: Committer,
    /// The committed position, or the end of the log on a first start.
    pub start: Option<LogPosition>,
    /// The log after the committed position up to its end now: what a previous process had
    /// accepted and not delivered when it stopped.
    pub replay: Option<LogRange>,
}

/// Reads `sink`'s committed position in the event log of `data_dir` (`name`: the sink in
/// messages). On a first start the sink begins at the end of the log (what the log holds
/// predates it) and that is stored; an unreadable positions file is logged, and the sink
/// begins at the end of the log too (replaying the whole log would be idempotent, but may be
/// huge).
pub fn resume(data_dir: &Path, sink: &str, name: &'static str) -> Resume {
    let file = PositionFile::new(data_dir, sink);
    let end = match log_end(data_dir) {
        Ok(end) => end,
        Err(e) => {
            tracing::error!(error = %e, "serphona-obs: cannot find the end of the event log; the {name} sink replays nothing");
            None
        }
    };
    let committed = match file.load() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %crate::ErrorChain(&e), "serphona-obs: the {name} positions file is unreadable; starting at the end of the event log (events a crashed run did not deliver are not replayed)");
            None
        }
    };
    // A committed position past the end of the log: the log was deleted or rewritten under
    // the sink (by hand, or `forget` shortening its last file). Nothing can be replayed from
    // there, and a watermark that starts past the log would never move again.
    let committed = match (committed, end) {
        (Some(from), end) if end.is_none_or(|end| from > end) => {
            tracing::warn!(
                committed = ?from,
                end = ?end,
                "serphona-obs: the {name} sink's committed position is past the end of the event log (the log was deleted or rewritten); starting at its end"
            );
            None
        }
        (committed, _) => committed,
    };
    let replay = match (committed, end) {
        (Some(from), Some(end)) if end > from => {
            let range = LogRange::new(data_dir, from, end);
            tracing::info!(
                bytes = range.remaining_bytes(),
                "serphona-obs: replaying the event log after the {name} sink's committed position (what the last run did not deliver)"
            );
            Some(range)
        }
        _ => None,
    };
    if committed.is_none() {
        if let Some(end) = end {
            if let Err(e) = file.store(end) {
                tracing::error!(error = %crate::ErrorChain(&e), "serphona-obs: cannot write the {name} positions file");
            }
        }
    }
    Resume { file: Committer::new(file, name), start: committed.or(end), replay }
}

/// A stretch of the event log, read in chunks: what a sink replays on start.
#[derive(Debug)]
pub struct LogRange {
    dir: PathBuf,
    at: LogPosition,
    end: LogPosition,
}

impl LogRange {
    /// The events of the log of `data_dir` from `from` (exclusive of what is before it) to `end`.
    pub fn new(data_dir: &Path, from: LogPosition, end: LogPosition) -> LogRange {
        LogRange { dir: event_log_dir(data_dir), at: from, end }
    }

    /// Where the next read starts.
    pub fn position(&self) -> LogPosition {
        self.at
    }

    /// Where the range ends.
    pub fn end(&self) -> LogPosition {
        self.end
    }

    /// True when everything was read.
    pub fn is_done(&self) -> bool {
        self.at >= self.end
    }

    /// Up to `max` events from where the last read stopped (damaged lines are skipped; a
    /// segment deleted meanwhile by `logging.max_files` is passed over). Empty at the end.
    pub fn next_chunk(&mut self, max: usize) -> std::io::Result<Vec<Event>> {
        let mut out = Vec::new();
        self.read_chunk(max, |event, _| out.push(event))?;
        Ok(out)
    }

    /// Like [`LogRange::next_chunk`], each event with its line as the log has it (a sink that
    /// sends lines replays them byte for byte).
    pub fn next_shared_chunk(&mut self, max: usize) -> std::io::Result<Vec<SharedEvent>> {
        let mut out = Vec::new();
        self.read_chunk(max, |event, line| match std::str::from_utf8(line) {
            Ok(line) => out.push(SharedEvent::with_line(event, Arc::from(line))),
            // Cannot happen: the line parsed as an event, so it is UTF-8.
            Err(_) => out.push(SharedEvent::new(event)),
        })?;
        Ok(out)
    }

    fn read_chunk(&mut self, max: usize, mut each: impl FnMut(Event, &[u8])) -> std::io::Result<()> {
        let mut out = 0usize;
        while out < max && !self.is_done() {
            let segments = list_segments(&self.dir)?;
            let Some((seq, path)) = segments.into_iter().find(|(seq, _)| *seq >= self.at.segment) else {
                self.at = self.end;
                break;
            };
            if seq != self.at.segment {
                self.at = LogPosition { segment: seq, offset: 0 };
                if self.at >= self.end {
                    break;
                }
            }
            let mut file = match std::fs::File::open(&path) {
                Ok(file) => file,
                // Deleted since it was listed (`logging.max_files`): what it had is gone.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    self.at = LogPosition { segment: seq + 1, offset: 0 };
                    continue;
                }
                Err(e) => return Err(e),
            };
            let len = file.metadata()?.len();
            let stop = if seq == self.end.segment { self.end.offset.min(len) } else { len };
            if self.at.offset >= stop {
                self.at = LogPosition { segment: seq + 1, offset: 0 };
                continue;
            }
            file.seek(std::io::SeekFrom::Start(self.at.offset))?;
            let mut reader = LineReader::new(file.take(stop - self.at.offset), self.at.offset);
            loop {
                if out >= max {
                    break;
                }
                match reader.next(AtEnd::Torn)? {
                    Next::Event(e) => {
                        each(e, reader.last_line());
                        out += 1;
                    }
                    Next::Damaged(_) => {}
                    Next::End => break,
                }
            }
            let offset = reader.offset();
            self.at = if offset >= stop { LogPosition { segment: seq + 1, offset: 0 } } else { LogPosition { segment: seq, offset } };
            if seq >= self.end.segment && offset >= stop {
                self.at = self.end;
            }
        }
        Ok(())
    }

    /// Bytes left to read.
    pub fn remaining_bytes(&self) -> u64 {
        self.left()
            .map(|(path, from, to)| std::fs::metadata(path).map_or(0, |m| m.len().min(to).saturating_sub(from)))
            .sum()
    }

    /// Lines left to read (counted by newlines, not parsed): the events still to replay.
    pub fn remaining_lines(&self) -> u64 {
        self.left().map(|(path, from, to)| count_newlines(&path, from, to).unwrap_or(0)).sum()
    }

    /// What is left to read, per file: its path and the byte span (`to` is `u64::MAX` for
    /// "its end").
    fn left(&self) -> impl Iterator<Item = (PathBuf, u64, u64)> + '_ {
        list_segments(&self.dir).unwrap_or_default().into_iter().filter_map(move |(seq, path)| {
            if seq < self.at.segment || seq > self.end.segment {
                return None;
            }
            let from = if seq == self.at.segment { self.at.offset } else { 0 };
            let to = if seq == self.end.segment { self.end.offset } else { u64::MAX };
            Some((path, from, to))
        })
    }
}

/// Newlines in `path` between byte `from` and `to` (or its end), read in blocks.
fn count_newlines(path: &Path, from: u64, to: u64) -> std::io::Result<u64> {
    let mut file = std::fs::File::open(path)?;
    file.seek(std::io::SeekFrom::Start(from))?;
    let mut reader = file.take(to.saturating_sub(from));
    let mut block = vec![0u8; 64 * 1024];
    let mut n = 0u64;
    loop {
        match reader.read(&mut block) {
            Ok(0) => return Ok(n),
            Ok(read) => n += block[..read].iter().filter(|&&b| b == b'\n').count() as u64,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pos(segment: u64, offset: u64) -> Option<LogPosition> {
        Some(LogPosition { segment, offset })
    }

    #[test]
    fn the_watermark_moves_only_over_contiguous_acknowledgements() {
        let mut w = Watermark::new(None);
        let a = w.accept(3, pos(1, 30));
        let b = w.accept(2, pos(1, 50));
        let c = w.accept(4, pos(2, 40));
        // Batches: [a a a b], [b c c c c].
        let first = w.group(4);
        let second = w.group(5);
        assert_eq!(first, vec![(a, 3), (b, 1)]);
        assert_eq!(second, vec![(b, 1), (c, 4)]);
        // The second is acknowledged first: nothing may be committed yet.
        assert_eq!(w.done(&second), None);
        assert_eq!(w.committed(), None);
        assert_eq!(w.outstanding(), 4);
        assert_eq!(w.done(&first), pos(2, 40));
        assert_eq!(w.outstanding(), 0);
        // A hand-over that is not in the log moves nothing.
        let d = w.accept(1, None);
        assert_eq!(w.done(&[(d, 1)]), None);
        assert_eq!(w.committed(), pos(2, 40));
    }

    #[test]
    fn a_position_file_round_trips_and_a_missing_one_is_none() {
        let dir = tempfile::tempdir().unwrap();
        let f = PositionFile::new(dir.path(), "clickhouse");
        assert_eq!(f.load().unwrap(), None);
        f.store(LogPosition { segment: 3, offset: 77 }).unwrap();
        assert_eq!(f.load().unwrap(), pos(3, 77));
        std::fs::write(f.path(), "{").unwrap();
        assert!(f.load().is_err());
    }

    fn write_log(data_dir: &Path, segments: &[(u64, &str)]) {
        let dir = event_log_dir(data_dir);
        std::fs::create_dir_all(&dir).unwrap();
        for (seq, body) in segments {
            std::fs::write(crate::sinks::event_log::segment_path(&dir, *seq), body).unwrap();
        }
    }

    #[test]
    fn a_position_past_the_end_of_the_log_starts_at_its_end_and_is_stored() {
        let dir = tempfile::tempdir().unwrap();
        // The log was deleted and began again at file 1; the sink had committed file 5.
        write_log(dir.path(), &[(1, "a\nb\n")]);
        let file = PositionFile::new(dir.path(), "loki");
        file.store(LogPosition { segment: 5, offset: 100 }).unwrap();
        let r = resume(dir.path(), "loki", "Loki");
        assert_eq!(r.start, pos(1, 4));
        assert!(r.replay.is_none());
        assert_eq!(file.load().unwrap(), pos(1, 4));
        // Within a file, past its end: the same.
        file.store(LogPosition { segment: 1, offset: 9 }).unwrap();
        assert_eq!(resume(dir.path(), "loki", "Loki").start, pos(1, 4));
        // A position inside the log is kept, and what follows it is replayed.
        file.store(LogPosition { segment: 1, offset: 2 }).unwrap();
        let r = resume(dir.path(), "loki", "Loki");
        assert_eq!(r.start, pos(1, 2));
        assert_eq!(r.replay.map(|range| (range.remaining_lines(), range.remaining_bytes())), Some((1, 2)));
    }

    #[test]
    fn what_is_left_to_replay_is_counted_across_files_without_reading_them_whole() {
        let dir = tempfile::tempdir().unwrap();
        write_log(dir.path(), &[(1, "a\nb\nc\n"), (2, "d\ne\n"), (4, "f\ng\nh\n")]);
        let range = LogRange::new(dir.path(), LogPosition { segment: 1, offset: 2 }, LogPosition { segment: 4, offset: 4 });
        // b, c of file 1; d, e of file 2; f, g of file 4 (file 3 is gone).
        assert_eq!(range.remaining_lines(), 6);
        assert_eq!(range.remaining_bytes(), 12);
    }
}
