//! The [`Store`] over the local event log: reads the JSON lines under `<data_dir>/events`.
//!
//! Every call reads the files afresh, so it sees what other processes appended. Lines are read
//! with the event log's [`LineReader`]: damaged lines (not UTF-8, not JSON, not an event, or
//! the torn last line of an older file) are skipped and recorded with their file and offset
//! ([`LocalStore::damage`]). A partial last line of the newest file is still being written
//! and is left for the next read.
//!
//! **Looking one conversation or trace up** ([`Store::conversation`], [`Store::trace`]) does not
//! parse every line: it reads the files in blocks and searches them for the id as the event
//! log writes it — the key and the JSON-escaped value, e.g. `"conversation_id":"c-42"` (the log
//! is compact `serde_json` output, one event per line) — and parses only the lines that hold it,
//! keeping those whose parsed id is the one asked for. Over an event log of 1,000,000 turns this
//! costs about twice reading the files, and a 37th of parsing every line (see BENCHMARKS.md).

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::fold::Acc;
use super::*;
use crate::sinks::event_log::read::{AtEnd, DamageLog, Damaged, LineReader, Next, parse_line};
use crate::sinks::event_log::{event_log_dir, list_segments};
use crate::types::Event;

/// The store over the local event log.
#[derive(Debug)]
pub struct LocalStore {
    dir: PathBuf,
    damage: Mutex<DamageLog>,
}

impl LocalStore {
    /// The store of the event log under `data_dir` (which may not exist yet: then it is empty).
    pub fn open(data_dir: &Path) -> LocalStore {
        LocalStore { dir: event_log_dir(data_dir), damage: Mutex::new(DamageLog::default()) }
    }

    /// Damaged lines skipped, over all reads so far (each line once).
    pub fn skipped_lines(&self) -> u64 {
        self.damage.lock().unwrap_or_else(std::sync::PoisonError::into_inner).lines()
    }

    /// The damaged lines skipped so far, by file and offset.
    pub fn damage(&self) -> DamageLog {
        self.damage.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    fn record(&self, path: &Path, damaged: &Damaged) {
        self.damage.lock().unwrap_or_else(std::sync::PoisonError::into_inner).record(path, damaged);
    }

    /// How to read the end of a segment: the newest may still be written to; an older one
    /// will not grow, so a partial last line there is torn.
    fn at_end(index: usize, count: usize) -> AtEnd {
        if index + 1 == count { AtEnd::Wait } else { AtEnd::Torn }
    }

    fn io(&self, path: &Path) -> impl FnOnce(std::io::Error) -> StoreError {
        let path = path.to_path_buf();
        move |source| StoreError::Io { path, source }
    }

    /// Every event in the log, in file order.
    pub fn read_all(&self) -> Result<Vec<Event>, StoreError> {
        let mut events = Vec::new();
        self.for_each(|e| events.push(e))?;
        Ok(events)
    }

    /// Calls `visit` with every event in the log, in file order, holding one at a time.
    fn for_each(&self, mut visit: impl FnMut(Event)) -> Result<(), StoreError> {
        let segments = list_segments(&self.dir).map_err(self.io(&self.dir))?;
        for (i, (_, path)) in segments.iter().enumerate() {
            let Some(file) = self.open_segment(path)? else { continue };
            let at_end = Self::at_end(i, segments.len());
            let mut reader = LineReader::new(file, 0);
            loop {
                match reader.next(at_end).map_err(self.io(path))? {
                    Next::Event(event) => visit(event),
                    Next::Damaged(damaged) => self.record(path, &damaged),
                    Next::End => break,
                }
            }
        }
        Ok(())
    }

    /// Every event whose line holds `needle`, in file order, for which `keep` is true. Reads the
    /// files in blocks of [`SCAN_BLOCK`] bytes and parses only the lines that hold `needle`, so
    /// `needle` must be text that every line of a wanted event holds as the log writes it.
    fn scan(&self, needle: &str, mut keep: impl FnMut(&Event) -> bool) -> Result<Vec<Event>, StoreError> {
        let mut out = Vec::new();
        let mut buf: Vec<u8> = Vec::with_capacity(SCAN_BLOCK * 2);
        for (_, path) in list_segments(&self.dir).map_err(self.io(&self.dir))? {
            let Some(mut file) = self.open_segment(&path)? else { continue };
            buf.clear();
            // The file offset of buf[0].
            let mut base = 0u64;
            loop {
                let before = buf.len();
                let n = (&mut file).take(SCAN_BLOCK as u64).read_to_end(&mut buf).map_err(self.io(&path))?;
                // Whole lines only; the rest waits for the next block. A last line without its
                // newline is still being written: left for the next read.
                if let Some(last) = buf[before..].iter().rposition(|&b| b == b'\n') {
                    let end = before + last + 1;
                    self.search_block(&path, base, &buf[..end], needle, &mut keep, &mut out);
                    buf.drain(..end);
                    base += end as u64;
                }
                if n == 0 {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// The events of the lines of `block` (whole lines, starting at offset `base` of `path`)
    /// that hold `needle`. Damaged lines that hold it are recorded.
    fn search_block(
        &self,
        path: &Path,
        base: u64,
        block: &[u8],
        needle: &str,
        keep: &mut impl FnMut(&Event) -> bool,
        out: &mut Vec<Event>,
    ) {
        let mut take = |at: usize, line: &[u8], out: &mut Vec<Event>| match parse_line(line) {
            Ok(Some(event)) => {
                if keep(&event) {
                    out.push(event);
                }
            }
            Ok(None) => {}
            Err(kind) => self.record(path, &Damaged { offset: base + at as u64, len: line.len() as u64 + 1, kind }),
        };
        match std::str::from_utf8(block) {
            Ok(text) => {
                // `find` is not vectorized, but `contains` with a short pattern is (std's SIMD
                // prefilter), so windows of whole lines are probed with the end of the id and
                // only a window that holds it is searched for the needle. The needle has no
                // newline (JSON escapes it), so a hit never spans two lines, nor two windows.
                let probe = probe(needle);
                let bytes = text.as_bytes();
                let mut window_start = 0;
                while window_start < text.len() {
                    let cut = (window_start + SCAN_WINDOW).min(text.len());
                    let window_end = bytes[cut..].iter().position(|&b| b == b'\n').map_or(text.len(), |p| cut + p + 1);
                    let window = &text[window_start..window_end];
                    let window_at = window_start;
                    window_start = window_end;
                    if !window.contains(probe) {
                        continue;
                    }
                    let mut from = 0;
                    while let Some(at) = window[from..].find(needle) {
                        let hit = from + at;
                        let start = window[..hit].rfind('\n').map_or(0, |p| p + 1);
                        let end = window[hit..].find('\n').map_or(window.len(), |p| hit + p);
                        take(window_at + start, &window.as_bytes()[start..end], out);
                        from = (end + 1).min(window.len());
                    }
                }
            }
            // A line that is not UTF-8 (a corrupted file) is skipped and counted if it could
            // hold the needle; the other lines of the block are searched one by one.
            Err(_) => {
                let mut at = 0;
                for line in block.split(|&b| b == b'\n') {
                    let start = at;
                    at += line.len() + 1;
                    let holds = match std::str::from_utf8(line) {
                        Ok(text) => text.contains(needle),
                        Err(_) => line.windows(needle.len()).any(|w| w == needle.as_bytes()),
                    };
                    if holds {
                        take(start, line, out);
                    }
                }
            }
        }
    }

    /// A segment of the log, or `None` when rotation deleted it between listing and opening.
    fn open_segment(&self, path: &Path) -> Result<Option<std::fs::File>, StoreError> {
        match std::fs::File::open(path) {
            Ok(f) => Ok(Some(f)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.io(path)(e)),
        }
    }

    fn summaries(&self) -> Result<Vec<Acc>, StoreError> {
        let mut by_id: HashMap<std::sync::Arc<str>, Acc> = HashMap::new();
        // One event at a time: memory holds the summaries, not the log.
        self.for_each(|event| {
            by_id.entry(event.conversation_id.clone()).or_insert_with(|| Acc::new(&event)).add(&event, false);
        })?;
        Ok(by_id.into_values().collect())
    }

    fn filtered(&self, filter: &ConversationFilter) -> Result<Vec<Acc>, StoreError> {
        let mut rows: Vec<Acc> = self.summaries()?.into_iter().filter(|a| matches(&a.summary, filter)).collect();
        rows.sort_by(|a, b| {
            b.summary.started_at.cmp(&a.summary.started_at).then_with(|| b.summary.conversation_id.cmp(&a.summary.conversation_id))
        });
        Ok(rows)
    }

    fn read_since(&self, cursor: Option<&Cursor>, limit: usize) -> Result<(Vec<Event>, Cursor), StoreError> {
        let (mut seq, mut offset) = match cursor {
            None => (0, 0),
            Some(c) if c.0.is_empty() => (0, 0),
            Some(c) => parse_cursor(&c.0).ok_or_else(|| StoreError::BadCursor(c.0.clone()))?,
        };
        let mut events = Vec::new();
        let segments = list_segments(&self.dir).map_err(self.io(&self.dir))?;
        // A cursor from before the log was wiped points past its end: start over.
        if segments.last().is_none_or(|(last, _)| *last < seq) {
            (seq, offset) = (0, 0);
        }
        let count = segments.len();
        for (i, (s, path)) in segments.into_iter().enumerate() {
            if s < seq {
                continue;
            }
            if s > seq {
                seq = s;
                offset = 0;
            }
            let Some(mut file) = self.open_segment(&path)? else { continue };
            let len = file.metadata().map_err(self.io(&path))?.len();
            if offset > len {
                offset = 0; // the file was replaced by a shorter one
            }
            file.seek(SeekFrom::Start(offset)).map_err(self.io(&path))?;
            // A line still being written stops the read: the next one resumes before it.
            let at_end = Self::at_end(i, count);
            let mut reader = LineReader::new(file, offset);
            while events.len() < limit {
                match reader.next(at_end).map_err(self.io(&path))? {
                    Next::Event(event) => events.push(event),
                    Next::Damaged(damaged) => self.record(&path, &damaged),
                    Next::End => break,
                }
            }
            offset = reader.offset();
            if events.len() >= limit {
                break;
            }
        }
        Ok((events, Cursor(format!("{seq}:{offset}"))))
    }
}

/// How much of a file [`LocalStore`]'s id lookups read at a time.
const SCAN_BLOCK: usize = 1 << 20;

/// The stretch of whole lines an id lookup probes at once (see `search_block`).
const SCAN_WINDOW: usize = 64 << 10;

/// How long a probe [`probe`] makes from a long value.
const PROBE_LEN: usize = 16;

/// The longest pattern std's `str::contains` searches with SIMD (comparing the pattern's first
/// and last bytes first).
const PROBE_MAX: usize = 32;

/// The part of a needle (`"key":"value"`) that windows are probed with: the last
/// [`PROBE_LEN`] bytes of the value, without its closing quote, when the value is that long
/// (the end of an id is what differs between ids: UUIDv7s of one process share their first 24
/// characters, and ending on the quote would make the end of every id a candidate); else the
/// needle's last [`PROBE_MAX`] bytes.
fn probe(needle: &str) -> &str {
    let body = needle.strip_suffix('"').unwrap_or(needle);
    let value_start = body.find("\":\"").map_or(0, |i| i + 3);
    let (text, len) = if body.len() - value_start >= PROBE_LEN { (body, PROBE_LEN) } else { (needle, PROBE_MAX) };
    let mut start = text.len().saturating_sub(len);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

/// `"key":<value as JSON>`, as `serde_json` writes a string field of the event log.
fn field_needle(key: &str, value: &str) -> String {
    let value = serde_json::to_string(value).expect("a string serializes");
    format!("\"{key}\":{value}")
}

fn parse_cursor(s: &str) -> Option<(u64, u64)> {
    let (seq, offset) = s.split_once(':')?;
    Some((seq.parse().ok()?, offset.parse().ok()?))
}

fn matches(s: &ConversationSummary, f: &ConversationFilter) -> bool {
    f.tenant.as_deref().is_none_or(|t| s.tenant_id == t)
        && f.agent.as_deref().is_none_or(|a| s.agent_id == a)
        && f.channel.is_none_or(|c| s.channel == Some(c))
        && f.resolution.is_none_or(|r| s.resolution == Some(r))
        && f.since.is_none_or(|t| s.started_at >= t)
        && f.until.is_none_or(|t| s.started_at < t)
        && f.metadata.iter().all(|(k, v)| s.metadata.get(k) == Some(v))
}

fn stats_row(group: String, rows: &[&Acc]) -> StatsRow {
    let mut by_resolution = BTreeMap::new();
    let (mut ended, mut transferred, mut interactions) = (0u64, 0u64, 0u64);
    let (mut durations, mut responses, mut ratings) = (Vec::new(), Vec::new(), Vec::new());
    let (mut sentiment_sum, mut sentiment_n) = (0.0, 0u64);
    let mut latency: [Vec<f64>; 7] = Default::default();
    let mut voice = VoiceSums { conversations: rows.len() as u64, interruptions: 0, dead_air_ms: 0.0, talk_ms: 0.0, usage: UsageTotals::default() };
    for acc in rows {
        let s = &acc.summary;
        if let Some(r) = s.resolution {
            ended += 1;
            *by_resolution.entry(r.as_str().to_string()).or_insert(0) += 1;
        }
        if let Some(d) = s.duration_seconds {
            durations.push(d);
        }
        if let Some(r) = s.rating {
            ratings.push(r as f64);
        }
        if s.transfers > 0 {
            transferred += 1;
        }
        interactions += s.interactions() as u64;
        responses.extend_from_slice(&acc.response_times);
        sentiment_sum += acc.sentiment_sum;
        sentiment_n += acc.sentiment_n as u64;
        for (all, one) in latency.iter_mut().zip(&acc.latency) {
            all.extend_from_slice(one);
        }
        let tt = &s.turn_taking;
        voice.interruptions += tt.interruptions() as u64;
        voice.dead_air_ms += tt.dead_air_ms;
        voice.talk_ms += tt.agent_talk_ms + tt.customer_talk_ms;
        let u = &mut voice.usage;
        u.input_tokens += s.usage.input_tokens;
        u.output_tokens += s.usage.output_tokens;
        u.cached_tokens += s.usage.cached_tokens;
        u.cost_usd += s.usage.cost_usd;
    }
    let (interruptions_per_conversation, dead_air_share, tokens, cost_usd) = voice.figures();
    let n = rows.len() as u64;
    let ratio = |num: u64, den: u64| (den > 0).then(|| num as f64 / den as f64);
    StatsRow {
        group,
        conversations: n,
        ended,
        resolution_rate: ratio(*by_resolution.get("resolved").unwrap_or(&0), ended),
        transfer_rate: ratio(transferred, n),
        by_resolution,
        interactions,
        duration_seconds: Percentiles::of(durations),
        response_seconds: Percentiles::of(responses),
        mean_rating: (!ratings.is_empty()).then(|| ratings.iter().sum::<f64>() / ratings.len() as f64),
        mean_sentiment: (sentiment_n > 0).then(|| sentiment_sum / sentiment_n as f64),
        latency_ms: LatencyPercentiles::of(latency),
        interruptions: voice.interruptions,
        interruptions_per_conversation,
        dead_air_ms: voice.dead_air_ms,
        dead_air_share,
        tokens,
        cost_usd,
    }
}

fn group_key(s: &ConversationSummary, by: GroupBy) -> String {
    match by {
        GroupBy::Tenant => s.tenant_id.clone(),
        GroupBy::Agent => s.agent_id.clone(),
        GroupBy::Channel => s.channel.map_or_else(|| "unknown".into(), |c| c.to_string()),
        GroupBy::Resolution => s.resolution.map_or_else(|| "active".into(), |r| r.to_string()),
    }
}

impl Store for LocalStore {
    async fn conversations(&self, filter: &ConversationFilter) -> Result<Vec<ConversationSummary>, StoreError> {
        let rows = self.filtered(filter)?;
        let limit = filter.limit.unwrap_or(usize::MAX);
        Ok(rows.into_iter().take(limit).map(|a| a.summary).collect())
    }

    async fn conversation(&self, id: &str) -> Result<Option<ConversationDetail>, StoreError> {
        let mut acc: Option<Acc> = None;
        for event in self.scan(&field_needle("conversation_id", id), |e| &*e.conversation_id == id)? {
            acc.get_or_insert_with(|| Acc::new(&event)).add(&event, true);
        }
        Ok(acc.map(|mut a| {
            // Ties by event id, as the ClickHouse store orders them.
            a.events.sort_by_key(|e| (e.timestamp, e.event_id));
            ConversationDetail { summary: a.summary, events: a.events }
        }))
    }

    async fn stats(&self, filter: &ConversationFilter, by: Option<GroupBy>) -> Result<Vec<StatsRow>, StoreError> {
        let mut filter = filter.clone();
        filter.limit = None;
        let rows = self.filtered(&filter)?;
        let Some(by) = by else {
            return Ok(vec![stats_row("all".into(), &rows.iter().collect::<Vec<_>>())]);
        };
        let mut groups: BTreeMap<String, Vec<&Acc>> = BTreeMap::new();
        for acc in &rows {
            groups.entry(group_key(&acc.summary, by)).or_default().push(acc);
        }
        Ok(groups.into_iter().map(|(k, v)| stats_row(k, &v)).collect())
    }

    async fn trace(&self, trace_id: &str) -> Result<Vec<SpanRecord>, StoreError> {
        let id = normalize_trace_id(trace_id)?;
        let mut events = self.scan(&field_needle("trace_id", &id), |e| e.trace.trace_id.to_string() == id)?;
        events.sort_by_key(|e| (e.timestamp, e.event_id));
        let spans = events.iter().filter_map(span_of).collect();
        Ok(assemble_trace(spans, &events))
    }

    async fn events_since(&self, cursor: Option<&Cursor>, limit: usize) -> Result<(Vec<Event>, Cursor), StoreError> {
        self.read_since(cursor, limit)
    }

    /// One search of the log for `short` as the log writes it (JSON-escaped, which escapes
    /// character by character, so the escaped short id is part of the escaped id); only the
    /// lines that hold it are parsed, and their ids compared.
    async fn ids_matching(&self, kind: IdKind, short: &str, limit: usize) -> Result<Vec<String>, StoreError> {
        let Some(short) = kind.normalize(short) else { return Ok(Vec::new()) };
        let quoted = serde_json::to_string(&short).expect("a string serializes");
        let needle = &quoted[1..quoted.len() - 1];
        let mut ids = std::collections::BTreeSet::new();
        self.scan(needle, |e| {
            let id = match kind {
                IdKind::Conversation => e.conversation_id.to_string(),
                IdKind::Trace => e.trace.trace_id.to_string(),
            };
            if id.starts_with(&short) || id.ends_with(&short) {
                ids.insert(id);
            }
            false
        })?;
        Ok(ids.into_iter().take(limit).collect())
    }

    /// One pass over the log, one event at a time.
    async fn detection_series(&self, range: &crate::detect::Range, bucket_seconds: i64) -> Result<Vec<crate::detect::Series>, StoreError> {
        let mut builder = crate::detect::SeriesBuilder::new(bucket_seconds, range.clone());
        self.for_each(|e| builder.add(&e))?;
        Ok(builder.finish())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        let p = Percentiles::of(v);
        assert_eq!((p.p50, p.p95, p.p99), (Some(50.0), Some(95.0), Some(99.0)));
        assert_eq!(Percentiles::of(vec![3.0]).p99, Some(3.0));
        assert_eq!(Percentiles::of(vec![]).p50, None);
    }

    #[test]
    fn cursor_roundtrip_and_rejects_garbage() {
        assert_eq!(parse_cursor("3:1024"), Some((3, 1024)));
        assert_eq!(parse_cursor("x"), None);
        let store = LocalStore::open(Path::new("/nonexistent-serphona"));
        let err = store.read_since(Some(&Cursor("bogus".into())), 10).unwrap_err();
        assert!(matches!(err, StoreError::BadCursor(_)));
    }

    fn event_of(conversation_id: &str, content: &str) -> Event {
        let mut e = crate::types::test_event(content);
        e.conversation_id = conversation_id.into();
        e
    }

    #[test]
    fn the_needle_is_what_the_log_writes_and_the_probe_is_the_end_of_the_id() {
        for id in ["c1", "01a20ca5-1640-76ed-beeb-cd06f1493abb", "say \"hi\" \\ there", "tab\tnew\nline", "ünï 会話 🎧🎧🎧🎧"] {
            let line = event_of(id, "x").to_json().unwrap();
            let needle = field_needle("conversation_id", id);
            assert!(line.contains(&needle), "{needle} not in {line}");
            assert!(needle.contains(probe(&needle)));
            assert!(probe(&needle).len() <= 32);
        }
        assert_eq!(probe(&field_needle("conversation_id", "01a20ca5-1640-76ed-beeb-cd06f1493abb")), "beeb-cd06f1493abb".get(1..).unwrap());
        // Too short to have an end of its own: the whole needle.
        assert_eq!(probe(&field_needle("conversation_id", "c1")), "\"conversation_id\":\"c1\"");
    }

    #[test]
    fn a_lookup_reads_whole_lines_across_blocks_and_leaves_a_partial_last_line() {
        let dir = tempfile::tempdir().unwrap();
        let events_dir = event_log_dir(dir.path());
        std::fs::create_dir_all(&events_dir).unwrap();
        let mut text = String::new();
        // More than a block, with a line longer than a block (of `a` and of another id), and
        // lines of other ids (one a prefix of `ab`) around.
        let long = "y".repeat(SCAN_BLOCK + 10);
        let mut lines = vec![("a", "first"), ("b", long.as_str()), ("a", long.as_str()), ("ab", "x")];
        for i in 0..6000 {
            lines.push(if i % 1000 == 999 { ("a", "again") } else { ("ab", "an other conversation") });
        }
        for (id, content) in lines {
            text.push_str(&event_of(id, content).to_json().unwrap());
            text.push('\n');
        }
        let written_a = text.lines().filter(|l| l.contains("\"conversation_id\":\"a\"")).count();
        // A corrupt line with the id, and a partial last line with it.
        text.push_str("{\"conversation_id\":\"a\" not json\n");
        let partial = event_of("a", "still being written").to_json().unwrap();
        let cut = partial.find("\"conversation_id\":\"a\"").unwrap() + 30;
        text.push_str(&partial[..cut]);
        std::fs::write(events_dir.join("events-000001.jsonl"), &text).unwrap();
        let store = LocalStore::open(dir.path());
        let found = store.scan(&field_needle("conversation_id", "a"), |e| &*e.conversation_id == "a").unwrap();
        assert_eq!(found.len(), written_a);
        assert_eq!(store.skipped_lines(), 1);
        let all = store.read_all().unwrap();
        assert_eq!(found, all.into_iter().filter(|e| &*e.conversation_id == "a").collect::<Vec<_>>());
    }
}

#[cfg(test)]
mod damage_tests {
    use super::*;
    use crate::sinks::event_log::read::DamageKind;

    /// Issue 14, item 1: one torn line cutting a multi-byte character made the whole log
    /// unreadable ("stream did not contain valid UTF-8").
    #[tokio::test]
    async fn a_line_torn_inside_a_character_is_skipped_with_its_offset() {
        let dir = tempfile::tempdir().unwrap();
        let events_dir = event_log_dir(dir.path());
        std::fs::create_dir_all(&events_dir).unwrap();
        let line = |id: &str, content: &str| {
            let mut e = crate::types::test_event(content);
            e.conversation_id = id.into();
            e.to_json().unwrap() + "\n"
        };
        let good = line("c1", "für 名前");
        let cut = good.find("名").unwrap() + 1;
        let mut first = good.clone().into_bytes();
        let torn_at = first.len() as u64;
        first.extend_from_slice(&good.as_bytes()[..cut]);
        first.push(b'\n');
        first.extend_from_slice(line("c1", "after").as_bytes());
        // An older segment that ends in a torn line, and the newest one still being written.
        first.extend_from_slice(&good.as_bytes()[..cut]);
        std::fs::write(events_dir.join("events-000001.jsonl"), &first).unwrap();
        let c2 = line("c2", "x");
        let mut second = c2.clone().into_bytes();
        second.extend_from_slice(&good.as_bytes()[..20]);
        std::fs::write(events_dir.join("events-000002.jsonl"), &second).unwrap();

        let store = LocalStore::open(dir.path());
        let all = store.read_all().unwrap();
        assert_eq!(all.iter().map(|e| e.content.as_str()).collect::<Vec<_>>(), ["für 名前", "after", "x"]);
        let files = store.damage().files();
        assert_eq!(files.len(), 1, "{files:?}");
        assert_eq!(files[0].lines, 2);
        assert_eq!(files[0].first_offset, torn_at);
        assert_eq!(files[0].by_kind.get(&DamageKind::InvalidUtf8), Some(&1));
        assert_eq!(files[0].by_kind.get(&DamageKind::Torn), Some(&1));
        // Read again: the same lines, counted once.
        let _ = store.read_all().unwrap();
        assert_eq!(store.skipped_lines(), 2);

        // Events since a cursor read past the damage, and stop before the partial line.
        let (events, cursor) = store.events_since(None, 100).await.unwrap();
        assert_eq!(events.len(), 3);
        assert_eq!(cursor.0, format!("2:{}", c2.len()));
        // The lookup finds the conversation around its damaged line.
        let found = store.conversation("c1").await.unwrap().unwrap();
        assert_eq!(found.events.len(), 2);
    }
}
