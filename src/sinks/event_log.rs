//! The local event log: one JSON line per event (the platform's log structure) in numbered files
//! `<data_dir>/events/events-000001.jsonl`, a new file when one reaches `max_file_bytes`.
//!
//! Files are only appended to (`O_APPEND`, one write per batch of whole lines), never renamed,
//! so readers (`query`, `tail`) can follow them while they grow. The one exception is erasure
//! (`serphona-obs forget`, [`crate::erasure`]): it rewrites a file without the erased lines
//! (a temporary file renamed over it) while holding the folder's lock ([`LogLock`], `flock`
//! on `events/.lock`) exclusively; every writer holds it shared for each batch it writes and,
//! under it, reopens its file when the path no longer names the file it has open. So no line
//! is written into a file being rewritten, and none is lost to a replaced one.
//!
//! Every reader reads them with [`read::LineReader`], which skips and reports damaged lines
//! instead of failing.

pub mod read;

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::pipeline::{SharedEvent, Sink, SinkError};

const PREFIX: &str = "events-";
const SUFFIX: &str = ".jsonl";

/// The folder of the event log under a data dir.
pub fn event_log_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("events")
}

/// The event log files in `dir`, oldest first, with their sequence numbers.
pub fn list_segments(dir: &Path) -> std::io::Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(seq) = name.strip_prefix(PREFIX).and_then(|s| s.strip_suffix(SUFFIX)).and_then(|s| s.parse().ok()) {
            out.push((seq, entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// The path of segment `seq` in the event log folder `dir`.
pub(crate) fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{PREFIX}{seq:06}{SUFFIX}"))
}

/// The event log folder's lock file.
pub const LOCK_FILE: &str = ".lock";

/// The lock of an event log folder (`flock` on `events/.lock`): shared by writers for each
/// batch, exclusive for a rewrite. Released when dropped.
#[derive(Debug)]
pub struct LogLock {
    file: File,
}

impl LogLock {
    /// Opens (creating) the lock file of `dir`.
    pub fn open(dir: &Path) -> std::io::Result<LogLock> {
        let file = crate::fsmode::private_options().read(true).write(true).create(true).truncate(false).open(dir.join(LOCK_FILE))?;
        Ok(LogLock { file })
    }

    /// Waits for the lock, shared (`exclusive: false`) or exclusive.
    pub fn lock(&self, exclusive: bool) -> std::io::Result<()> {
        #[cfg(unix)]
        {
            use std::os::unix::io::AsRawFd;
            let op = if exclusive { libc::LOCK_EX } else { libc::LOCK_SH };
            loop {
                // SAFETY: flock on a file descriptor this struct owns.
                if unsafe { libc::flock(self.file.as_raw_fd(), op) } == 0 {
                    return Ok(());
                }
                let e = std::io::Error::last_os_error();
                if e.kind() != std::io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        }
        #[cfg(not(unix))]
        {
            let _ = exclusive;
            Ok(())
        }
    }

    /// Releases the lock (also done when dropped).
    pub fn unlock(&self) {
        #[cfg(unix)]
        {
            use std::os::unix::io::AsRawFd;
            // SAFETY: flock on a file descriptor this struct owns.
            unsafe { libc::flock(self.file.as_raw_fd(), libc::LOCK_UN) };
        }
    }
}

impl Drop for LogLock {
    fn drop(&mut self) {
        self.unlock();
    }
}

/// The sink writing the local event log.
pub struct EventLogSink {
    /// Where the last batch ended, for the remote sinks that use the log as their
    /// write-ahead log ([`crate::sinks::positions`]).
    cursor: std::sync::Arc<crate::sinks::positions::WriteCursor>,
    lock: LogLock,
    dir: PathBuf,
    file: File,
    path: PathBuf,
    seq: u64,
    size: u64,
    max_bytes: u64,
    max_files: usize,
    /// `logging.sync: batch`: `sync_data` after every batch's write.
    sync_each_batch: bool,
    buf: Vec<u8>,
}

impl EventLogSink {
    /// Opens (creating the folder if needed) the newest file under `data_dir/events`.
    ///
    /// A file that ends in a partial line (a crash mid-write, a full disk) gets a newline
    /// first, so the fragment stays one unreadable line (skipped and counted by readers)
    /// instead of corrupting the next event.
    pub fn open(data_dir: &Path, max_bytes: u64, max_files: usize) -> Result<EventLogSink, SinkError> {
        let dir = event_log_dir(data_dir);
        crate::fsmode::create_private_dir_all(&dir).map_err(io_error("cannot create the event log folder", &dir))?;
        let seq = list_segments(&dir).map_err(io_error("cannot list", &dir))?.last().map_or(1, |(seq, _)| *seq);
        let path = segment_path(&dir, seq);
        let (file, size) = open_segment(&path)?;
        let lock = LogLock::open(&dir).map_err(io_error("cannot open the lock of", &dir))?;
        let cursor = crate::sinks::positions::register_cursor(data_dir);
        let mut sink = EventLogSink {
            cursor,
            lock,
            dir,
            file,
            path,
            seq,
            size,
            max_bytes,
            max_files,
            sync_each_batch: false,
            buf: Vec::with_capacity(1 << 16),
        };
        if sink.size > 0 && !sink.ends_with_newline()? {
            sink.append(b"\n")?;
        }
        if sink.size >= sink.max_bytes {
            sink.rotate()?;
        }
        Ok(sink)
    }

    fn ends_with_newline(&self) -> Result<bool, SinkError> {
        use std::os::unix::fs::FileExt;
        let mut last = [0u8; 1];
        self.file.read_exact_at(&mut last, self.size - 1).map_err(io_error("cannot read", &self.path))?;
        Ok(last[0] == b'\n')
    }

    /// The file being written.
    pub fn current_path(&self) -> &Path {
        &self.path
    }

    fn append(&mut self, bytes: &[u8]) -> Result<(), SinkError> {
        if bytes.is_empty() {
            return Ok(());
        }
        if let Err(e) = self.file.write_all(bytes) {
            // Cut a partial write back off, so the next batch starts on a line of its own.
            let _ = self.file.set_len(self.size);
            return Err(io_error("cannot write", &self.path)(e));
        }
        self.size += bytes.len() as u64;
        Ok(())
    }

    /// `forget` may have replaced the file (renamed a rewritten one over it): write to the
    /// file the path names now. Called with the lock held.
    fn reopen_if_replaced(&mut self) -> Result<(), SinkError> {
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            let open = self.file.metadata().map_err(io_error("cannot stat", &self.path))?;
            let replaced = match std::fs::metadata(&self.path) {
                Ok(now) => now.ino() != open.ino() || now.dev() != open.dev(),
                Err(_) => true,
            };
            if replaced {
                self.switch_to(self.seq)?;
            }
        }
        Ok(())
    }

    /// Another process on the same data dir may have started a newer file: write there too,
    /// so readers following the files in order see every line (one `stat` per batch).
    fn follow_newest(&mut self) -> Result<(), SinkError> {
        let mut newest = self.seq;
        while segment_path(&self.dir, newest + 1).exists() {
            newest += 1;
        }
        if newest != self.seq {
            // The file left behind is synced, as a rotation does.
            self.file.sync_data().map_err(io_error("cannot sync", &self.path))?;
            self.switch_to(newest)?;
        }
        Ok(())
    }

    fn switch_to(&mut self, seq: u64) -> Result<(), SinkError> {
        let path = segment_path(&self.dir, seq);
        (self.file, self.size) = open_segment(&path)?;
        self.seq = seq;
        self.path = path;
        Ok(())
    }

    fn rotate(&mut self) -> Result<(), SinkError> {
        // A file left behind is synced once (a rotation is every `max_file_bytes`): `flush()`
        // syncs only the current one.
        self.file.sync_data().map_err(io_error("cannot sync", &self.path))?;
        self.switch_to(self.seq + 1)?;
        if self.max_files > 0 {
            if let Ok(segments) = list_segments(&self.dir) {
                let excess = segments.len().saturating_sub(self.max_files);
                for (_, old) in segments.into_iter().take(excess) {
                    let _ = std::fs::remove_file(old);
                }
            }
        }
        Ok(())
    }
}

impl Sink for EventLogSink {
    fn name(&self) -> &str {
        "event_log"
    }

    fn write(&mut self, events: &[SharedEvent]) -> Result<(), SinkError> {
        // Lines go out in as few writes as possible, splitting the batch at a line boundary
        // wherever the current file would pass max_bytes (a single line larger than that
        // gets a file of its own). Under the folder's lock, shared: `forget` rewrites files
        // only while it holds it exclusively.
        self.lock.lock(false).map_err(io_error("cannot lock", &self.dir))?;
        let written = self.write_locked(events);
        self.lock.unlock();
        // Where this batch ends in the log (the file offset after an O_APPEND write is the end
        // of that write, whatever another writer on the same folder appended before it).
        let end = match &written {
            Ok(()) | Err(SinkError::Other { .. }) => {
                use std::io::Seek;
                (&self.file).stream_position().ok().map(|offset| crate::sinks::positions::LogPosition { segment: self.seq, offset })
            }
            Err(_) => None,
        };
        match (events.first(), end) {
            (Some(first), Some(end)) => self.cursor.wrote(first.event_id, events.len(), end),
            _ => self.cursor.failed(),
        }
        written
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        // Lines are written straight to the file; flushing makes them durable.
        self.file.sync_data().map_err(io_error("cannot sync", &self.path))
    }
}

impl EventLogSink {
    /// `logging.sync`: with [`LogSync::Batch`](crate::config::LogSync::Batch), every batch is
    /// synced to disk before `write` returns.
    pub fn with_sync(mut self, sync: crate::config::LogSync) -> EventLogSink {
        self.sync_each_batch = sync == crate::config::LogSync::Batch;
        self
    }

    fn write_locked(&mut self, events: &[SharedEvent]) -> Result<(), SinkError> {
        self.reopen_if_replaced()?;
        self.follow_newest()?;
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        let mut result = Ok(());
        let mut unserializable = None;
        for event in events {
            let line_start = buf.len();
            let Some(line) = event.line() else {
                // Only a hand-built event can get here (see Event::to_json); the rest go on.
                let e = event.encode_error().map(|e| e.to_string()).unwrap_or_default();
                unserializable = Some(format!("event {} cannot be written as JSON: {e}", event.event_id));
                continue;
            };
            buf.extend_from_slice(line.as_bytes());
            buf.push(b'\n');
            let buffered = line_start as u64;
            if self.size + buf.len() as u64 > self.max_bytes && self.size + buffered > 0 {
                result = self.append(&buf[..line_start]).and_then(|()| self.rotate());
                if result.is_err() {
                    break;
                }
                buf.drain(..line_start);
            }
        }
        if result.is_ok() {
            result = self.append(&buf);
        }
        if result.is_ok() && self.sync_each_batch {
            // The lines are in the file, but a failed sync may have lost them from the page
            // cache (Linux drops the dirty pages and reports the error once): the batch counts
            // as not written, and the remote sinks do not rely on the log for it (no cursor).
            result = self.file.sync_data().map_err(io_error("wrote the batch, which a crash of the machine may lose: cannot sync", &self.path));
        }
        self.buf = buf;
        match (result, unserializable) {
            (Ok(()), Some(message)) => Err(SinkError::Other { sink: "event_log".into(), message }),
            (result, _) => result,
        }
    }
}

/// Opens (creating) a file of the log for appending, with its current size.
/// Opens a segment for appending, creating it if needed; a new file's folder entry is synced,
/// so that the file itself survives a crash of the machine once its lines are synced.
fn open_segment(path: &Path) -> Result<(File, u64), SinkError> {
    let existed = path.exists();
    let file = crate::fsmode::private_options().create(true).append(true).read(true).open(path).map_err(io_error("cannot open", path))?;
    let size = file.metadata().map_err(io_error("cannot stat", path))?.len();
    if !existed {
        if let Some(dir) = path.parent() {
            File::open(dir).and_then(|d| d.sync_all()).map_err(io_error("cannot sync the folder of a new file", dir))?;
        }
    }
    Ok((file, size))
}

/// The error of a file operation of this sink.
fn io_error(context: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> SinkError {
    let path = path.to_path_buf();
    move |source| SinkError::Io { sink: "event_log".into(), context, path, source }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Event;
    use crate::types::*;

    fn event(n: usize) -> SharedEvent {
        use std::sync::Arc;
        SharedEvent::new(Event {
            event_id: uuid::Uuid::now_v7(),
            timestamp: time::OffsetDateTime::now_utc(),
            level: Level::Info,
            service: Arc::from("svc"),
            tenant_id: Arc::from("t"),
            conversation_id: Arc::from("c"),
            agent_id: Arc::from("a"),
            speaker: Speaker::Customer,
            content: "x".repeat(n),
            metadata: Metadata::default(),
            trace: TraceIds {
                trace_id: opentelemetry::trace::TraceId::from_bytes([1; 16]),
                span_id: opentelemetry::trace::SpanId::from_bytes([2; 8]),
                parent_span_id: None,
            },
            kind: EventKind::CustomerTurn { turn: 1, latency: None, duration_ms: None, turn_taking: Default::default(), usage: None },
        })
    }

    #[test]
    fn rotates_by_size_and_keeps_every_line() {
        let dir = tempfile::tempdir().unwrap();
        let mut sink = EventLogSink::open(dir.path(), 4096, 0).unwrap();
        for _ in 0..20 {
            sink.write(&[event(1000)]).unwrap();
        }
        let segments = list_segments(&event_log_dir(dir.path())).unwrap();
        assert!(segments.len() >= 5, "{segments:?}");
        let mut lines = 0;
        for (_, path) in &segments {
            let text = std::fs::read_to_string(path).unwrap();
            assert!(text.len() <= 4096, "{} bytes", text.len());
            for line in text.lines() {
                Event::from_json(line).unwrap();
                lines += 1;
            }
        }
        assert_eq!(lines, 20);
        // Reopening continues the newest file.
        let sink = EventLogSink::open(dir.path(), 4096, 0).unwrap();
        assert_eq!(sink.current_path(), segments.last().unwrap().1);
    }

    #[test]
    fn one_large_batch_is_split_across_files_at_line_boundaries() {
        let dir = tempfile::tempdir().unwrap();
        let mut sink = EventLogSink::open(dir.path(), 4096, 0).unwrap();
        let batch: Vec<SharedEvent> = (0..40).map(|_| event(500)).collect();
        sink.write(&batch).unwrap();
        let segments = list_segments(&event_log_dir(dir.path())).unwrap();
        assert!(segments.len() >= 5, "{segments:?}");
        let mut lines = 0;
        for (_, path) in &segments {
            let text = std::fs::read_to_string(path).unwrap();
            assert!(text.len() <= 4096, "{} bytes in {}", text.len(), path.display());
            assert!(text.ends_with('\n'));
            for line in text.lines() {
                Event::from_json(line).unwrap();
                lines += 1;
            }
        }
        assert_eq!(lines, 40);
    }

    #[test]
    fn a_torn_last_line_does_not_swallow_the_next_event() {
        let dir = tempfile::tempdir().unwrap();
        let mut sink = EventLogSink::open(dir.path(), 1 << 20, 0).unwrap();
        sink.write(&[event(10)]).unwrap();
        drop(sink);
        let path = event_log_dir(dir.path()).join("events-000001.jsonl");
        let mut f = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"event_id\":\"01").unwrap(); // a crash mid-line
        drop(f);
        let mut sink = EventLogSink::open(dir.path(), 1 << 20, 0).unwrap();
        sink.write(&[event(20)]).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(Event::from_json(lines[0]).is_ok());
        assert!(Event::from_json(lines[1]).is_err());
        assert_eq!(Event::from_json(lines[2]).unwrap().content.len(), 20);
    }

    #[test]
    fn two_writers_on_one_data_dir_follow_the_newest_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = EventLogSink::open(dir.path(), 4096, 0).unwrap();
        let mut b = EventLogSink::open(dir.path(), 4096, 0).unwrap();
        for _ in 0..10 {
            a.write(&[event(1000)]).unwrap(); // a rotates a few times
        }
        assert!(a.seq > 1);
        b.write(&[event(10)]).unwrap();
        assert_eq!(b.current_path(), a.current_path(), "b must append to the file a moved on to");
        let total: usize = list_segments(&event_log_dir(dir.path()))
            .unwrap()
            .iter()
            .map(|(_, p)| std::fs::read_to_string(p).unwrap().lines().count())
            .sum();
        assert_eq!(total, 11);
    }

    #[test]
    fn max_files_deletes_oldest() {
        let dir = tempfile::tempdir().unwrap();
        let mut sink = EventLogSink::open(dir.path(), 4096, 2).unwrap();
        for _ in 0..20 {
            sink.write(&[event(1000)]).unwrap();
        }
        let segments = list_segments(&event_log_dir(dir.path())).unwrap();
        assert_eq!(segments.len(), 2);
    }
}
