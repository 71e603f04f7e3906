//! The disk spool: batches that could not be delivered wait here, one file each, until the
//! server is back or the next start replays them.
//!
//! A file is `batch-<batch id>.jsonl`: a header line `{"batch_id": …, "events": N}` and then the
//! N events as event-log lines. It is written to a temporary name and renamed, so a crash never
//! leaves half a batch under a batch name. Batch ids are UUIDv7, so names sort oldest first. The
//! spool is bounded: when a new batch would pass `max_bytes`, the oldest batches are dropped and
//! counted. A file is read back line by line with the event log's reader: a damaged line
//! loses only its event (counted), the others are delivered, and the damaged file is kept as
//! `*.bad`, never deleted.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::batch::SealedBatch;
use crate::pipeline::SharedEvent;
use crate::sinks::event_log::read::{AtEnd, LineReader, Next};
use crate::types::Event;

/// The spool's folder under the data dir.
pub fn spool_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("spool").join("clickhouse")
}

#[derive(Serialize, Deserialize)]
struct Header {
    batch_id: Uuid,
    events: usize,
}

/// A spool operation failed.
#[derive(Debug, thiserror::Error)]
#[error("spool {}: {context}", path.display())]
pub struct SpoolError {
    /// The file or folder.
    pub path: PathBuf,
    /// What was being done.
    pub context: &'static str,
    /// Why (the error's source, not repeated in its message).
    pub source: std::io::Error,
}

/// What [`Spool::push`] had to drop to stay within its bound.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Evicted {
    /// Batches dropped.
    pub batches: usize,
    /// Their events.
    pub events: usize,
}

/// What [`Spool::push`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pushed {
    /// What it had to drop to stay within its bound.
    pub evicted: Evicted,
    /// Bytes in the spool after the push.
    pub bytes: u64,
}

/// A spooled batch read back.
#[derive(Debug, Clone, PartialEq)]
pub struct SpoolRead {
    /// The batch: its id (from the header, else from the file name) and the events that read.
    pub batch: SealedBatch,
    /// Lines that were skipped (the header included when it is damaged).
    pub damaged_lines: u64,
    /// Events lost: those the header counts that did not read back (or, without a readable
    /// header, the damaged lines after it).
    pub lost_events: u64,
}

/// One spooled batch on disk.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct SpoolEntry {
    /// The file.
    pub path: PathBuf,
    /// Its size.
    pub bytes: u64,
}

/// The spool folder.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
}

impl Spool {
    /// Opens (creating) the spool folder.
    pub fn open(dir: PathBuf, max_bytes: u64) -> Result<Spool, SpoolError> {
        crate::fsmode::create_private_dir_all(&dir).map_err(|source| SpoolError { path: dir.clone(), context: "create", source })?;
        Ok(Spool { dir, max_bytes })
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The spooled batches, oldest first.
    pub fn entries(&self) -> Result<Vec<SpoolEntry>, SpoolError> {
        let err = |source| SpoolError { path: self.dir.clone(), context: "list", source };
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&self.dir).map_err(err)? {
            let entry = entry.map_err(err)?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with("batch-") && name.ends_with(".jsonl") {
                // Gone between listing and stat (replayed by another process): skip.
                if let Ok(meta) = entry.metadata() {
                    out.push(SpoolEntry { path: entry.path(), bytes: meta.len() });
                }
            }
        }
        out.sort();
        Ok(out)
    }

    /// Bytes spooled.
    pub fn bytes(&self) -> u64 {
        self.entries().map(|e| e.iter().map(|e| e.bytes).sum()).unwrap_or(0)
    }

    /// Events spooled, as the files' headers count them (a file without a readable header
    /// counts its lines).
    pub fn events(&self) -> Result<u64, SpoolError> {
        use std::io::BufRead;
        let mut n = 0;
        for entry in self.entries()? {
            let Ok(file) = std::fs::File::open(&entry.path) else { continue };
            let mut first = String::new();
            let mut reader = std::io::BufReader::new(file);
            if reader.read_line(&mut first).is_err() {
                continue;
            }
            match serde_json::from_str::<Header>(&first) {
                Ok(h) => n += h.events as u64,
                Err(_) => n += 1 + reader.split(b'\n').count() as u64,
            }
        }
        Ok(n)
    }

    /// Writes a batch; drops the oldest batches first when it would not fit.
    pub fn push(&self, batch: &SealedBatch) -> Result<Pushed, SpoolError> {
        // An event JSON cannot express was never deliverable either: it is left out.
        let mut body = Vec::with_capacity(batch.events.len() * 512);
        let mut written = 0;
        for line in batch.events.iter().filter_map(|e| e.line()) {
            body.extend_from_slice(line.as_bytes());
            body.push(b'\n');
            written += 1;
        }
        let mut buf = serde_json::to_vec(&Header { batch_id: batch.id, events: written }).expect("header serializes");
        buf.push(b'\n');
        buf.extend_from_slice(&body);
        let mut evicted = Evicted::default();
        let mut entries = self.entries()?;
        let mut total: u64 = entries.iter().map(|e| e.bytes).sum();
        while total + buf.len() as u64 > self.max_bytes && !entries.is_empty() {
            let oldest = entries.remove(0);
            let events = self.read(&oldest.path).map(|r| r.batch.events.len()).unwrap_or(0);
            if std::fs::remove_file(&oldest.path).is_ok() {
                evicted.batches += 1;
                evicted.events += events;
            }
            total = total.saturating_sub(oldest.bytes);
        }
        let path = self.dir.join(format!("batch-{}.jsonl", batch.id));
        let tmp = self.dir.join(format!(".tmp-{}", batch.id));
        let write = || -> std::io::Result<()> {
            let mut f = crate::fsmode::create_private(&tmp)?;
            f.write_all(&buf)?;
            f.sync_data()?;
            std::fs::rename(&tmp, &path)
        };
        write().map_err(|source| {
            let _ = std::fs::remove_file(&tmp);
            SpoolError { path: path.clone(), context: "write", source }
        })?;
        Ok(Pushed { evicted, bytes: total + buf.len() as u64 })
    }

    /// Reads a spooled batch back, line by line: a damaged line loses only its event
    /// ([`SpoolRead::lost_events`]). An error only when the file cannot be read at all.
    pub fn read(&self, path: &Path) -> Result<SpoolRead, SpoolError> {
        read_file(path)
    }

    /// Removes a delivered batch (already gone is fine: another process replayed it).
    pub fn remove(&self, path: &Path) -> Result<(), SpoolError> {
        match std::fs::remove_file(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(SpoolError { path: path.to_path_buf(), context: "remove", source: e })
            }
            _ => Ok(()),
        }
    }

    /// Moves an unreadable file aside as `*.bad`.
    pub fn quarantine(&self, path: &Path) -> Result<PathBuf, SpoolError> {
        let to = path.with_extension("jsonl.bad");
        std::fs::rename(path, &to).map_err(|source| SpoolError { path: path.to_path_buf(), context: "quarantine", source })?;
        Ok(to)
    }

    /// Appends events ClickHouse rejected for good to `rejected.jsonl` (nothing is lost).
    pub fn reject(&self, event: &Event) -> Result<(), SpoolError> {
        let path = self.dir.join("rejected.jsonl");
        let mut line = Vec::new();
        if event.write_json_line(&mut line).is_err() {
            return Ok(());
        }
        let mut f = crate::fsmode::private_options()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|source| SpoolError { path: path.clone(), context: "open", source })?;
        f.write_all(&line).map_err(|source| SpoolError { path, context: "append", source })
    }
}

/// Reads a spool file back (see [`Spool::read`]); `doctor` reads with it too.
pub fn read_file(path: &Path) -> Result<SpoolRead, SpoolError> {
    let bytes = std::fs::read(path).map_err(|source| SpoolError { path: path.to_path_buf(), context: "read", source })?;
    let header_end = bytes.iter().position(|&b| b == b'\n').map_or(bytes.len(), |p| p + 1);
    let header: Option<Header> = serde_json::from_slice(&bytes[..header_end]).ok();
    let mut damaged_lines = u64::from(header.is_none());
    let mut events = Vec::new();
    let mut reader = LineReader::new(&bytes[header_end..], header_end as u64);
    loop {
        match reader.next(AtEnd::Torn).map_err(|source| SpoolError { path: path.to_path_buf(), context: "read", source })? {
            Next::Event(event) => events.push(SharedEvent::new(event)),
            Next::Damaged(_) => damaged_lines += 1,
            Next::End => break,
        }
    }
    let lost_events = match &header {
        Some(h) => (h.events as u64).saturating_sub(events.len() as u64),
        None => damaged_lines - 1,
    };
    let id = header.map(|h| h.batch_id).or_else(|| batch_id_of(path)).unwrap_or_else(Uuid::now_v7);
    Ok(SpoolRead { batch: SealedBatch { id, events }, damaged_lines, lost_events })
}

/// The batch id in a spool file's name (`batch-<id>.jsonl`).
fn batch_id_of(path: &Path) -> Option<Uuid> {
    let name = path.file_name()?.to_str()?;
    name.strip_prefix("batch-")?.split('.').next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::test_event;

    fn batch(n: usize) -> SealedBatch {
        SealedBatch { id: Uuid::now_v7(), events: (0..n).map(|i| test_event(&format!("turn {i}")).into()).collect() }
    }

    #[test]
    fn round_trips_in_order_and_stays_within_its_bound() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path().join("s"), 1 << 20).unwrap();
        let (a, b) = (batch(3), batch(5));
        spool.push(&a).unwrap();
        spool.push(&b).unwrap();
        let entries = spool.entries().unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(spool.read(&entries[0].path).unwrap().batch, a);
        assert_eq!(spool.read(&entries[1].path).unwrap().batch, b);
        assert_eq!(spool.bytes(), entries.iter().map(|e| e.bytes).sum::<u64>());

        // A bound that holds about one batch evicts the oldest.
        let small = Spool::open(dir.path().join("small"), entries[1].bytes + 10).unwrap();
        small.push(&a).unwrap();
        let pushed = small.push(&b).unwrap();
        assert_eq!(pushed.evicted, Evicted { batches: 1, events: 3 });
        assert_eq!(pushed.bytes, small.bytes());
        let left = small.entries().unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(small.read(&left[0].path).unwrap().batch.id, b.id);

        spool.remove(&entries[0].path).unwrap();
        spool.remove(&entries[0].path).unwrap();
        assert_eq!(spool.entries().unwrap().len(), 1);
    }

    /// Issue 14, item 2: a damaged spool file lost its whole batch and counted 1.
    #[test]
    fn a_damaged_line_loses_only_its_event_and_is_counted() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path().to_path_buf(), 1 << 20).unwrap();
        let original = batch(5);
        spool.push(&original).unwrap();
        let path = spool.entries().unwrap()[0].path.clone();
        let text = std::fs::read(&path).unwrap();
        let mut lines: Vec<Vec<u8>> = text.split_inclusive(|&b| b == b'\n').map(<[u8]>::to_vec).collect();
        // Line 3 (the second event) cut inside a character and its newline kept; the last
        // event torn.
        lines[2] = [&lines[2][..40], "ü".as_bytes().split_at(1).0, b"\n"].concat();
        let last = lines.len() - 1;
        let keep = lines[last].len() / 2;
        lines[last].truncate(keep);
        std::fs::write(&path, lines.concat()).unwrap();
        let read = spool.read(&path).unwrap();
        assert_eq!(read.batch.id, original.id);
        assert_eq!(read.batch.events, [&original.events[0], &original.events[2], &original.events[3]].map(Clone::clone));
        assert_eq!((read.damaged_lines, read.lost_events), (2, 2));

        // A damaged header: the id comes from the file name, the events still read.
        lines[0] = b"{\"batch_id\n".to_vec();
        std::fs::write(&path, lines.concat()).unwrap();
        let read = spool.read(&path).unwrap();
        assert_eq!(read.batch.id, original.id);
        assert_eq!(read.batch.events.len(), 3);
        assert_eq!((read.damaged_lines, read.lost_events), (3, 2));

        let moved = spool.quarantine(&path).unwrap();
        assert!(moved.exists());
        assert!(spool.entries().unwrap().is_empty());
    }
}
