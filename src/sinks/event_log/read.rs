//! Reading event lines back: the one reader every reader of the event log (the local store,
//! `tail`, the ClickHouse spool, `doctor`) goes through.
//!
//! Lines are read as bytes (`read_until(b'\n')`) and only then checked: a line that is not
//! UTF-8 (a crash mid-write of "für" or "名前"), not JSON (a line cut short), or JSON that is
//! not an event of this schema is *damaged*: it is skipped and reported with its byte offset,
//! and the lines after it are read as usual. One damaged line never makes a file unreadable.
//!
//! A last line without its newline is either still being written ([`AtEnd::Wait`]: it is left
//! for the next read) or torn by a crash ([`AtEnd::Torn`]: a file that will not grow, e.g. an
//! older segment of the log, or the end of stdin). A torn line that still parses is an event
//! (only its newline was lost); one that does not is [`DamageKind::Torn`].

use std::collections::BTreeMap;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::types::Event;

/// Why a line was skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DamageKind {
    /// Not UTF-8 (e.g. a write cut inside a multi-byte character, then a newline after it).
    InvalidUtf8,
    /// Not JSON (e.g. a line cut short, or a log line that is not JSON).
    InvalidJson,
    /// JSON, but not an event of this schema.
    WrongSchema,
    /// The last line of a file that will not grow, without its newline and not an event.
    Torn,
}

impl DamageKind {
    /// The name used in reports (`invalid_utf8`, `invalid_json`, `wrong_schema`, `torn`).
    pub fn as_str(self) -> &'static str {
        match self {
            DamageKind::InvalidUtf8 => "invalid_utf8",
            DamageKind::InvalidJson => "invalid_json",
            DamageKind::WrongSchema => "wrong_schema",
            DamageKind::Torn => "torn",
        }
    }
}

impl std::fmt::Display for DamageKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One skipped line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Damaged {
    /// Byte offset of the line's first byte in its file.
    pub offset: u64,
    /// Its length in bytes (the newline included).
    pub len: u64,
    /// Why it was skipped.
    pub kind: DamageKind,
}

/// The event of one line (without its newline): `Ok(None)` for a blank line, the kind of
/// damage for one that is not an event.
pub fn parse_line(line: &[u8]) -> Result<Option<Event>, DamageKind> {
    let text = std::str::from_utf8(line).map_err(|_| DamageKind::InvalidUtf8)?;
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    Event::from_json(text).map(Some).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => DamageKind::WrongSchema,
        _ => DamageKind::InvalidJson,
    })
}

/// What to make of a last line without its newline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AtEnd {
    /// It is still being written: keep it for the next call (the file grows).
    Wait,
    /// The file will not grow: it is an event if it parses, else [`DamageKind::Torn`].
    Torn,
}

/// What [`LineReader::next`] found.
#[derive(Debug)]
// Events are the common case: boxing them would add an allocation per line.
#[allow(clippy::large_enum_variant)]
pub enum Next {
    /// An event.
    Event(Event),
    /// A skipped line.
    Damaged(Damaged),
    /// No whole line more for now (a partial last line waits when [`AtEnd::Wait`]).
    End,
}

/// Reads event lines from a file or stream as bytes, tracking byte offsets (see the module
/// docs).
pub struct LineReader<R> {
    reader: BufReader<R>,
    /// Offset of the first byte of `line` (after the last whole line read).
    offset: u64,
    /// A line being read (a partial last line waits here under [`AtEnd::Wait`]).
    line: Vec<u8>,
    /// The last event's line as read, with its newline ([`LineReader::last_line`]).
    last: Vec<u8>,
}

impl<R: Read> LineReader<R> {
    /// A reader of `input`, whose first byte is at `offset` of its file.
    pub fn new(input: R, offset: u64) -> LineReader<R> {
        LineReader { reader: BufReader::with_capacity(1 << 16, input), offset, line: Vec::new(), last: Vec::new() }
    }

    /// The offset just after the last line read (where a later read resumes).
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The line of the event [`LineReader::next`] returned last, as it is in the file, without
    /// its newline (a replay sends it byte for byte, as Loki's deduplication needs).
    pub fn last_line(&self) -> &[u8] {
        self.last.strip_suffix(b"\n").unwrap_or(&self.last)
    }

    /// Bytes of a partial last line kept for the next call.
    pub fn pending(&self) -> usize {
        self.line.len()
    }

    /// The next event or damaged line; blank lines are passed over.
    pub fn next(&mut self, at_end: AtEnd) -> io::Result<Next> {
        loop {
            self.reader.read_until(b'\n', &mut self.line)?;
            let whole = self.line.last() == Some(&b'\n');
            if self.line.is_empty() || (!whole && at_end == AtEnd::Wait) {
                return Ok(Next::End);
            }
            let start = self.offset;
            let len = self.line.len() as u64;
            let body = if whole { &self.line[..self.line.len() - 1] } else { &self.line[..] };
            let parsed = parse_line(body);
            std::mem::swap(&mut self.line, &mut self.last);
            self.line.clear();
            self.offset += len;
            let kind = match parsed {
                Ok(Some(event)) => return Ok(Next::Event(event)),
                Ok(None) => continue,
                Err(_) if !whole => DamageKind::Torn,
                Err(kind) => kind,
            };
            return Ok(Next::Damaged(Damaged { offset: start, len, kind }));
        }
    }
}

/// The damaged lines seen, by file and offset (a line read twice counts once).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DamageLog {
    files: BTreeMap<PathBuf, BTreeMap<u64, DamageKind>>,
}

impl DamageLog {
    /// Records a damaged line of `path`.
    pub fn record(&mut self, path: &Path, damaged: &Damaged) {
        self.files.entry(path.to_path_buf()).or_default().insert(damaged.offset, damaged.kind);
    }

    /// Damaged lines, over all files.
    pub fn lines(&self) -> u64 {
        self.files.values().map(|f| f.len() as u64).sum()
    }

    /// Nothing damaged.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// Adds another log's lines.
    pub fn merge(&mut self, other: &DamageLog) {
        for (path, lines) in &other.files {
            self.files.entry(path.clone()).or_default().extend(lines);
        }
    }

    /// One summary per file with damage, in path order.
    pub fn files(&self) -> Vec<FileDamage> {
        self.files
            .iter()
            .map(|(path, lines)| {
                let mut by_kind = BTreeMap::new();
                for kind in lines.values() {
                    *by_kind.entry(*kind).or_insert(0u64) += 1;
                }
                FileDamage {
                    path: path.clone(),
                    lines: lines.len() as u64,
                    first_offset: lines.keys().next().copied().unwrap_or(0),
                    by_kind,
                }
            })
            .collect()
    }
}

/// The damaged lines of one file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileDamage {
    /// The file (`-` for stdin).
    pub path: PathBuf,
    /// Damaged lines.
    pub lines: u64,
    /// Byte offset of the first.
    pub first_offset: u64,
    /// Lines by kind of damage.
    pub by_kind: BTreeMap<DamageKind, u64>,
}

impl std::fmt::Display for FileDamage {
    /// `skipped N damaged lines in FILE (first at byte OFFSET)`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kinds: Vec<String> = self.by_kind.iter().map(|(k, n)| format!("{n} {k}")).collect();
        write!(
            f,
            "skipped {} damaged line{} in {} (first at byte {}; {})",
            self.lines,
            if self.lines == 1 { "" } else { "s" },
            self.path.display(),
            self.first_offset,
            kinds.join(", ")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(input: &[u8], at_end: AtEnd) -> (Vec<Event>, Vec<Damaged>, u64) {
        let mut reader = LineReader::new(input, 0);
        let (mut events, mut damaged) = (Vec::new(), Vec::new());
        loop {
            match reader.next(at_end).unwrap() {
                Next::Event(e) => events.push(e),
                Next::Damaged(d) => damaged.push(d),
                Next::End => return (events, damaged, reader.offset()),
            }
        }
    }

    fn line(content: &str) -> Vec<u8> {
        let mut v = crate::types::test_event(content).to_json().unwrap().into_bytes();
        v.push(b'\n');
        v
    }

    #[test]
    fn damaged_lines_are_skipped_with_their_offsets_and_the_rest_is_read() {
        let good = line("für 名前");
        let cut = good.iter().position(|&b| b == 0xc3).unwrap() + 1; // inside "ü"
        let mut input = good.clone();
        let torn_utf8 = input.len() as u64;
        input.extend_from_slice(&good[..cut]);
        input.push(b'\n');
        let not_json = input.len() as u64;
        input.extend_from_slice(b"{\"event_id\":\"01\n");
        let wrong = input.len() as u64;
        input.extend_from_slice(b"{\"hello\":1}\n\n   \n");
        input.extend_from_slice(&good);
        let torn = input.len() as u64;
        input.extend_from_slice(&good[..good.len() / 2]);

        let (events, damaged, offset) = all(&input, AtEnd::Wait);
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].content, "für 名前");
        let got: Vec<(u64, DamageKind)> = damaged.iter().map(|d| (d.offset, d.kind)).collect();
        assert_eq!(
            got,
            [(torn_utf8, DamageKind::InvalidUtf8), (not_json, DamageKind::InvalidJson), (wrong, DamageKind::WrongSchema)]
        );
        assert_eq!(offset, torn, "a partial last line waits");

        let (events, damaged, offset) = all(&input, AtEnd::Torn);
        assert_eq!(events.len(), 2);
        assert_eq!(damaged.last().map(|d| (d.offset, d.kind)), Some((torn, DamageKind::Torn)));
        assert_eq!(offset, input.len() as u64);

        // A last line that lost only its newline is still an event.
        let (events, damaged, _) = all(&good[..good.len() - 1], AtEnd::Torn);
        assert_eq!((events.len(), damaged.len()), (1, 0));
    }

    #[test]
    fn a_waiting_line_is_completed_by_a_later_read() {
        use std::io::Write;
        let good = line("x");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events-000001.jsonl");
        let mut file = std::fs::File::create(&path).unwrap();
        file.write_all(&good[..10]).unwrap();
        let mut reader = LineReader::new(std::fs::File::open(&path).unwrap(), 0);
        assert!(matches!(reader.next(AtEnd::Wait).unwrap(), Next::End));
        assert_eq!((reader.pending(), reader.offset()), (10, 0));
        file.write_all(&good[10..]).unwrap();
        assert!(matches!(reader.next(AtEnd::Wait).unwrap(), Next::Event(_)));
        assert_eq!(reader.offset(), good.len() as u64);
    }

    #[test]
    fn the_log_counts_each_line_once_and_says_where() {
        let mut log = DamageLog::default();
        let d = Damaged { offset: 120, len: 5, kind: DamageKind::InvalidUtf8 };
        log.record(Path::new("/x/events-000001.jsonl"), &d);
        log.record(Path::new("/x/events-000001.jsonl"), &d);
        log.record(Path::new("/x/events-000001.jsonl"), &Damaged { offset: 300, len: 5, kind: DamageKind::Torn });
        assert_eq!(log.lines(), 2);
        let files = log.files();
        assert_eq!(
            files[0].to_string(),
            "skipped 2 damaged lines in /x/events-000001.jsonl (first at byte 120; 1 invalid_utf8, 1 torn)"
        );
    }
}
