//! The [`Store`] over the local event log: reads the JSON lines under `<data_dir>/events`.
//!
//! Every call reads the files afresh, so it sees what other processes appended. Lines that do
//! not parse (e.g. a line cut short by a crash) are skipped and counted ([`LocalStore::skipped_lines`]).

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};


use super::*;
use crate::logging::{event_log_dir, list_segments};
use crate::types::{Event, EventKind, Speaker};

/// The store over the local event log.
#[derive(Debug)]
pub struct LocalStore {
    dir: PathBuf,
    skipped: AtomicU64,
}

impl LocalStore {
    /// The store of the event log under `data_dir` (which may not exist yet: then it is empty).
    pub fn open(data_dir: &Path) -> LocalStore {
        LocalStore { dir: event_log_dir(data_dir), skipped: AtomicU64::new(0) }
    }

    /// Lines skipped because they did not parse, over all reads so far.
    pub fn skipped_lines(&self) -> u64 {
        self.skipped.load(Ordering::Relaxed)
    }

    fn io(&self, path: &Path) -> impl FnOnce(std::io::Error) -> StoreError {
        let path = path.to_path_buf();
        move |source| StoreError::Io { path, source }
    }

    /// Every event in the log, in file order.
    pub fn read_all(&self) -> Result<Vec<Event>, StoreError> {
        let mut events = Vec::new();
        for (_, path) in list_segments(&self.dir).map_err(self.io(&self.dir))? {
            let file = match std::fs::File::open(&path) {
                Ok(f) => f,
                // Deleted by rotation between listing and opening.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(self.io(&path)(e)),
            };
            let mut reader = BufReader::with_capacity(1 << 16, file);
            let mut line = String::new();
            loop {
                line.clear();
                let n = reader.read_line(&mut line).map_err(self.io(&path))?;
                if n == 0 {
                    break;
                }
                if !line.ends_with('\n') {
                    break; // being written; the next read sees it whole
                }
                self.parse_into(line.trim_end(), &mut events);
            }
        }
        Ok(events)
    }

    fn parse_into(&self, line: &str, out: &mut Vec<Event>) {
        if line.is_empty() {
            return;
        }
        match Event::from_json(line) {
            Ok(event) => out.push(event),
            Err(_) => {
                self.skipped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn summaries(&self) -> Result<Vec<Acc>, StoreError> {
        let mut by_id: HashMap<std::sync::Arc<str>, Acc> = HashMap::new();
        for event in self.read_all()? {
            by_id.entry(event.conversation_id.clone()).or_insert_with(|| Acc::new(&event)).add(&event, false);
        }
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
        for (s, path) in segments {
            if s < seq {
                continue;
            }
            if s > seq {
                seq = s;
                offset = 0;
            }
            let mut file = match std::fs::File::open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(self.io(&path)(e)),
            };
            let len = file.metadata().map_err(self.io(&path))?.len();
            if offset > len {
                offset = 0; // the file was replaced by a shorter one
            }
            file.seek(SeekFrom::Start(offset)).map_err(self.io(&path))?;
            let mut reader = BufReader::with_capacity(1 << 16, file);
            let mut line = String::new();
            while events.len() < limit {
                line.clear();
                let n = reader.read_line(&mut line).map_err(self.io(&path))?;
                if n == 0 || !line.ends_with('\n') {
                    break; // the end, or a line still being written: resume before it
                }
                offset += n as u64;
                self.parse_into(line.trim_end(), &mut events);
            }
            if events.len() >= limit {
                break;
            }
        }
        Ok((events, Cursor(format!("{seq}:{offset}"))))
    }
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

/// A conversation folded from its events.
pub(super) struct Acc {
    pub(super) summary: ConversationSummary,
    sentiment_sum: f64,
    sentiment_n: u32,
    response_times: Vec<f64>,
    saw_start: bool,
    pub(super) events: Vec<Event>,
}

impl Acc {
    pub(super) fn new(first: &Event) -> Acc {
        Acc {
            summary: ConversationSummary {
                conversation_id: first.conversation_id.to_string(),
                tenant_id: first.tenant_id.to_string(),
                agent_id: first.agent_id.to_string(),
                customer_id: String::new(),
                channel: None,
                language: String::new(),
                started_at: first.timestamp,
                ended_at: None,
                duration_seconds: None,
                resolution: None,
                rating: None,
                agent_turns: 0,
                customer_turns: 0,
                decisions: 0,
                transfers: 0,
                errors: 0,
                violations: 0,
                mean_sentiment: None,
                last_speaker: None,
                trace_id: first.trace.trace_id.to_string(),
                metadata: BTreeMap::new(),
            },
            sentiment_sum: 0.0,
            sentiment_n: 0,
            response_times: Vec::new(),
            saw_start: false,
            events: Vec::new(),
        }
    }

    pub(super) fn add(&mut self, e: &Event, keep: bool) {
        let s = &mut self.summary;
        if !self.saw_start && e.timestamp < s.started_at {
            s.started_at = e.timestamp;
        }
        match &e.kind {
            EventKind::ConversationStarted { customer_id, channel, language } => {
                self.saw_start = true;
                s.started_at = e.timestamp;
                s.customer_id = customer_id.clone();
                s.channel = Some(*channel);
                s.language = language.clone();
                s.metadata = e
                    .metadata
                    .extra
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().map_or_else(|| v.to_string(), str::to_string)))
                    .collect();
            }
            EventKind::AgentTurn { response_time_seconds, .. } => {
                s.agent_turns += 1;
                s.last_speaker = Some(Speaker::Agent);
                if let Some(r) = response_time_seconds {
                    self.response_times.push(*r);
                }
            }
            EventKind::CustomerTurn { .. } => {
                s.customer_turns += 1;
                s.last_speaker = Some(Speaker::Customer);
            }
            EventKind::DecisionMade { .. } => s.decisions += 1,
            EventKind::TransferInitiated { .. } => s.transfers += 1,
            EventKind::ConversationEnded { resolution, rating, channel, duration_seconds, .. } => {
                s.ended_at = Some(e.timestamp);
                s.duration_seconds = Some(*duration_seconds);
                s.resolution = Some(*resolution);
                s.rating = *rating;
                s.channel.get_or_insert(*channel);
            }
            EventKind::ErrorOccurred { .. } => s.errors += 1,
            EventKind::ComplianceViolation { .. } => s.violations += 1,
        }
        if matches!(e.kind, EventKind::AgentTurn { .. } | EventKind::CustomerTurn { .. }) {
            if let Some(score) = e.metadata.sentiment {
                self.sentiment_sum += score;
                self.sentiment_n += 1;
                s.mean_sentiment = Some(self.sentiment_sum / self.sentiment_n as f64);
            }
        }
        if keep {
            self.events.push(e.clone());
        }
    }
}

fn stats_row(group: String, rows: &[&Acc]) -> StatsRow {
    let mut by_resolution = BTreeMap::new();
    let (mut ended, mut transferred, mut interactions) = (0u64, 0u64, 0u64);
    let (mut durations, mut responses, mut ratings) = (Vec::new(), Vec::new(), Vec::new());
    let (mut sentiment_sum, mut sentiment_n) = (0.0, 0u64);
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
    }
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
        for event in self.read_all()? {
            if &*event.conversation_id == id {
                acc.get_or_insert_with(|| Acc::new(&event)).add(&event, true);
            }
        }
        Ok(acc.map(|mut a| {
            a.events.sort_by_key(|e| e.timestamp);
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

    async fn events_since(&self, cursor: Option<&Cursor>, limit: usize) -> Result<(Vec<Event>, Cursor), StoreError> {
        self.read_since(cursor, limit)
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
}
