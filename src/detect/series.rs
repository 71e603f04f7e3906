//! The input of detection: per scope (a tenant, or a tenant's agent), one aggregate per time
//! bucket. The local store folds events into it ([`SeriesBuilder`]); the ClickHouse store
//! computes the same aggregates in SQL, so both feed the same method.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use time::OffsetDateTime;

use crate::types::{DecisionType, Event, EventKind, Resolution, Speaker};

/// The latency parts detection watches, as `latency.<part>` metrics: the voice parts and the
/// agent response time of every channel.
pub const LATENCY_PARTS: [&str; 7] =
    ["stt", "end_of_utterance", "llm_ttft", "tts_ttfb", "tool", "response", "agent_response_time"];

/// Which events: a time range and a tenant.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Range {
    /// From (inclusive).
    pub since: Option<OffsetDateTime>,
    /// To (exclusive).
    pub until: Option<OffsetDateTime>,
    /// One tenant.
    pub tenant: Option<String>,
}

impl Range {
    /// Whether an event is in the range.
    pub fn contains(&self, e: &Event) -> bool {
        self.since.is_none_or(|s| e.timestamp >= s)
            && self.until.is_none_or(|u| e.timestamp < u)
            && self.tenant.as_deref().is_none_or(|t| *e.tenant_id == *t)
    }
}

/// Who a series is about.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Scope {
    /// The tenant.
    pub tenant_id: String,
    /// An agent of the tenant; `None` for the whole tenant.
    pub agent_id: Option<String>,
}

/// One bucket of one scope: what started, ended, failed and how long things took.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Bucket {
    /// Conversations started in the bucket.
    pub started: u64,
    /// Conversations ended in the bucket, by resolution.
    pub ended: BTreeMap<Resolution, u64>,
    /// Conversations with any event in the bucket (the denominator of error rates).
    pub active: u64,
    /// Conversations with an error of each type in the bucket.
    pub errors: BTreeMap<String, u64>,
    /// Per latency part, the bucket's median and p95 in milliseconds and how many values
    /// they are of.
    pub latency: BTreeMap<&'static str, Latency>,
    /// The sum and count of customer sentiment scores.
    pub sentiment: (f64, u64),
    /// Compliance violations.
    pub violations: u64,
    /// Intents detected (intent_detection decisions), by intent.
    pub intents: BTreeMap<String, u64>,
}

impl Bucket {
    /// Conversations ended in the bucket.
    pub fn ended_total(&self) -> u64 {
        self.ended.values().sum()
    }
}

/// A scope's buckets, contiguous from `start`, `bucket_seconds` each.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Who.
    pub scope: Scope,
    /// The first bucket's start.
    pub start: OffsetDateTime,
    /// Bucket width.
    pub bucket_seconds: i64,
    /// The buckets, empty ones included.
    pub buckets: Vec<Bucket>,
}

impl Series {
    /// The start of bucket `i`.
    pub fn bucket_start(&self, i: usize) -> OffsetDateTime {
        self.start + time::Duration::seconds(self.bucket_seconds * i as i64)
    }
}

/// A latency part's values in a bucket.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Latency {
    /// The median (`quantileExact(0.5)`), in milliseconds.
    pub p50: f64,
    /// The 95th percentile (`quantileExact(0.95)`).
    pub p95: f64,
    /// How many values.
    pub n: u64,
}

/// The `level` quantile as ClickHouse's `quantileExact` defines it: the value at 0-based
/// position `floor(level × n)` of the sorted values (the last one for `level >= 1`). Both
/// stores use this definition, so they flag the same buckets.
pub fn quantile_exact(values: &mut [f64], level: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let n = values.len();
    let idx = if level < 1.0 { ((level * n as f64) as usize).min(n - 1) } else { n - 1 };
    let (_, v, _) = values.select_nth_unstable_by(idx, f64::total_cmp);
    Some(*v)
}

/// The bucket an instant falls in: seconds since the epoch, floored to the width (what
/// ClickHouse's `toStartOfInterval` gives for widths that divide a day).
pub fn bucket_of(at: OffsetDateTime, bucket_seconds: i64) -> i64 {
    at.unix_timestamp().div_euclid(bucket_seconds) * bucket_seconds
}

#[derive(Default)]
struct Raw {
    bucket: Bucket,
    active: HashSet<Arc<str>>,
    errors: BTreeMap<String, BTreeSet<Arc<str>>>,
    latency: BTreeMap<&'static str, Vec<f64>>,
}

/// (tenant, agent) as the events share them.
type ScopeKey = (Arc<str>, Option<Arc<str>>);

/// Folds events into series, per tenant and per tenant's agent.
#[derive(Default)]
pub struct SeriesBuilder {
    bucket_seconds: i64,
    range: Range,
    /// By (tenant, agent; `None` for the tenant's own series): the events' shared strings, so
    /// folding an event allocates no key.
    raw: HashMap<ScopeKey, BTreeMap<i64, Raw>>,
}

impl SeriesBuilder {
    /// A builder of `bucket_seconds`-wide buckets of the events in `range`.
    pub fn new(bucket_seconds: i64, range: Range) -> SeriesBuilder {
        SeriesBuilder { bucket_seconds: bucket_seconds.max(1), range, raw: HashMap::new() }
    }

    /// Adds one event to its tenant's and its agent's series (nothing when it is out of the
    /// range).
    pub fn add(&mut self, e: &Event) {
        if !self.range.contains(e) {
            return;
        }
        let at = bucket_of(e.timestamp, self.bucket_seconds);
        for scope in [(e.tenant_id.clone(), None), (e.tenant_id.clone(), Some(e.agent_id.clone()))] {
            let raw = self.raw.entry(scope).or_default().entry(at).or_default();
            fold(raw, e);
        }
    }

    /// The series, each filled from its first to its last bucket (and to the range's end, when
    /// it has one, so a scope that went quiet shows its empty buckets).
    pub fn finish(self) -> Vec<Series> {
        self.series(None)
    }

    /// The series so far, without the buckets at or after `before` (the bucket still filling,
    /// for a live view); the builder keeps folding.
    pub fn snapshot(&self, before: OffsetDateTime) -> Vec<Series> {
        self.series(Some(bucket_of(before, self.bucket_seconds)))
    }

    /// Forgets the buckets before `t` (a live view keeps a week, the longest baseline).
    pub fn prune_before(&mut self, t: OffsetDateTime) {
        let first = bucket_of(t, self.bucket_seconds);
        for buckets in self.raw.values_mut() {
            *buckets = buckets.split_off(&first);
        }
        self.raw.retain(|_, b| !b.is_empty());
    }

    /// The series of the buckets before `cut` (all when `None`), filled to the range's end.
    fn series(&self, cut: Option<i64>) -> Vec<Series> {
        let width = self.bucket_seconds;
        let mut last_all = self.range.until.map(|u| bucket_of(u - time::Duration::microseconds(1), width));
        if let Some(cut) = cut {
            last_all = Some(last_all.map_or(cut - width, |l| l.min(cut - width)));
        }
        let mut out: Vec<Series> = self
            .raw
            .iter()
            .filter_map(|((tenant, agent), buckets)| {
                let scope = Scope { tenant_id: tenant.to_string(), agent_id: agent.as_ref().map(|a| a.to_string()) };
                let buckets: Vec<(&i64, &Raw)> = buckets.iter().filter(|(k, _)| cut.is_none_or(|c| **k < c)).collect();
                let first = *buckets.first()?.0;
                let last = last_all.unwrap_or(first).max(*buckets.last()?.0);
                let mut out = Vec::with_capacity(((last - first) / width + 1) as usize);
                let mut raw = buckets.into_iter().peekable();
                let mut t = first;
                while t <= last {
                    let bucket = match raw.peek() {
                        Some((k, _)) if **k == t => finish_bucket(raw.next().expect("peeked").1),
                        _ => Bucket::default(),
                    };
                    out.push(bucket);
                    t += width;
                }
                Some(Series { scope, start: OffsetDateTime::from_unix_timestamp(first).ok()?, bucket_seconds: width, buckets: out })
            })
            .collect();
        out.sort_by(|a, b| a.scope.cmp(&b.scope));
        out
    }
}

fn fold(raw: &mut Raw, e: &Event) {
    let b = &mut raw.bucket;
    raw.active.insert(e.conversation_id.clone());
    match &e.kind {
        EventKind::ConversationStarted { .. } => b.started += 1,
        EventKind::ConversationEnded { resolution, .. } => *b.ended.entry(*resolution).or_default() += 1,
        EventKind::ErrorOccurred { error_type } => {
            raw.errors.entry(error_type.clone()).or_default().insert(e.conversation_id.clone());
        }
        EventKind::ComplianceViolation { .. } => b.violations += 1,
        EventKind::DecisionMade { decision_type: DecisionType::IntentDetection, option, .. } => {
            *b.intents.entry(option.clone()).or_default() += 1;
        }
        EventKind::AgentTurn { latency, response_time_seconds, .. } => {
            if let Some(l) = latency {
                for (part, ms) in l.parts() {
                    if let (Some(part), Some(ms)) = (LATENCY_PARTS.iter().find(|p| **p == part), ms) {
                        if ms.is_finite() && ms >= 0.0 {
                            raw.latency.entry(part).or_default().push(ms);
                        }
                    }
                }
            }
            if let Some(s) = response_time_seconds.filter(|s| s.is_finite() && *s >= 0.0) {
                raw.latency.entry("agent_response_time").or_default().push(s * 1000.0);
            }
        }
        EventKind::CustomerTurn { .. } if e.speaker == Speaker::Customer => {
            if let Some(s) = e.metadata.sentiment_score.filter(|s| s.is_finite()) {
                b.sentiment.0 += s;
                b.sentiment.1 += 1;
            }
        }
        _ => {}
    }
}

fn finish_bucket(raw: &Raw) -> Bucket {
    let mut b = raw.bucket.clone();
    b.active = raw.active.len() as u64;
    b.errors = raw.errors.iter().map(|(k, v)| (k.clone(), v.len() as u64)).collect();
    for (part, values) in &raw.latency {
        let mut values = values.clone();
        if let (Some(p50), Some(p95)) = (quantile_exact(&mut values, 0.5), quantile_exact(&mut values, 0.95)) {
            b.latency.insert(part, Latency { p50, p95, n: values.len() as u64 });
        }
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantile_exact_is_clickhouses() {
        // quantileExact(0.95) of 1..=20 is the value at position floor(19) = 20.
        let mut v: Vec<f64> = (1..=20).map(f64::from).collect();
        assert_eq!(quantile_exact(&mut v, 0.95), Some(20.0));
        let mut v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile_exact(&mut v, 0.95), Some(96.0));
        assert_eq!(quantile_exact(&mut v, 0.5), Some(51.0));
        assert_eq!(quantile_exact(&mut [], 0.5), None);
    }
}
