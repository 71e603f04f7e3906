//! Anomaly detection: signals per tenant (and per agent where the volume allows), tested
//! against baselines with the statistics that fit each kind of data, grouped into incidents
//! with a suspected cause.
//!
//! The input is a [`Series`] of time buckets per scope ([`series`]). The local store folds its
//! events into them; the ClickHouse store computes the same aggregates in SQL, so the data
//! never has to fit in the CLI's memory and both stores give the same incidents: the method
//! below runs on the buckets only.
//!
//! **Windows.** Every bucket ([`Params::bucket`], 5 minutes) ends a window of
//! [`Params::window_buckets`] buckets (3: 15 minutes), tested against a baseline.
//!
//! **Baselines.** Seasonal when there is history: the same window one to seven days earlier,
//! when at least [`Params::seasonal_min_days`] of those days have data. Otherwise trailing:
//! the [`Params::trailing`] before the window (6 hours), when it holds at least
//! [`Params::min_history`] (1 hour) of buckets with conversations. Without either, nothing is
//! tested.
//!
//! **Tests, by kind of data** (a window is flagged when its test passes and its volume and
//! effect floors hold):
//!
//! | signal | metric | data | test |
//! |---|---|---|---|
//! | resolution mix | `resolution.<r>.share` | shares of ended conversations | binomial tail of the window's count against the baseline's pooled share (resolved: down; transferred, escalated, unresolved, abandoned: up), p < [`Params::alpha`] (10⁻⁶), ≥ [`Params::min_conversations`] ended, a change of ≥ [`Params::min_share_change`] |
//! | errors | `errors.<type>.rate` | share of active conversations with that error | binomial tail, up |
//! | volume | `conversations.started` | counts | Poisson tail against the baseline's mean count (up or down; down only when ≥ 20 are expected) |
//! | compliance | `compliance.violations` | counts | Poisson tail, up |
//! | latency | `latency.<part>.p50`, `.p95` | each bucket's median and p95 (ClickHouse's `quantileExact`) | robust z, on the log scale, of the window's median bucket value against the baseline buckets' median and MAD: z ≥ [`Params::robust_z`] and ≥ [`Params::min_latency_ratio`] × the baseline, buckets of ≥ [`Params::min_samples`] values |
//! | sentiment | `sentiment.mean` | mean customer sentiment | robust z of the window's mean, down, ≥ 0.2 lower |
//! | intent mix | `intents.divergence` | intent counts | G-test of the window's counts against the baseline's mix (χ², k−1 degrees of freedom), reported as the Jensen–Shannon divergence, ≥ [`Params::min_divergence`] |
//!
//! A signal is a run of at least [`Params::min_windows`] consecutive flagged windows (the
//! minimum duration); its `observed`, `expected` and `score` are those of its strongest window
//! (score: −log10 p for the tail tests, the robust z for the others).
//!
//! **Incidents.** Signals of one tenant (its agents' included) whose times overlap or lie
//! within [`Params::group_gap`] of each other are one incident. Its suspected cause is the most
//! upstream of its signals that start within one window of its first, in the order of [`CAUSE_ORDER`] (errors, then speech-to-text,
//! end-of-utterance, LLM, tool and text-to-speech latency, the intent mix, volume, response
//! times, resolution mix, sentiment, compliance), the earliest on a tie.

#[cfg(feature = "clickhouse")]
pub mod clickhouse;
pub mod evaluate;
pub mod series;

use std::collections::BTreeMap;

use serde::Serialize;
use statrs::distribution::{Binomial, ChiSquared, ContinuousCDF, DiscreteCDF, Poisson};
use time::OffsetDateTime;

pub use series::{Bucket, LATENCY_PARTS, Latency, Range, Scope, Series, SeriesBuilder};

use crate::types::Resolution;

/// The method's parameters; [`Params::default`] documents the defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct Params {
    /// Bucket width (5 minutes).
    pub bucket: std::time::Duration,
    /// Buckets per tested window (3: 15 minutes).
    pub window_buckets: usize,
    /// Consecutive flagged windows that make a signal (2: the minimum duration).
    pub min_windows: usize,
    /// The trailing baseline (6 hours).
    pub trailing: std::time::Duration,
    /// The least history, in buckets with conversations, before anything is tested (1 hour).
    pub min_history: std::time::Duration,
    /// Days of the same window in the last week that make a seasonal baseline (3).
    pub seasonal_min_days: usize,
    /// The p-value of the tail tests (1e-6: a day has tens of thousands of window tests, and
    /// consecutive windows share buckets).
    pub alpha: f64,
    /// The fewest conversations behind a share (15).
    pub min_conversations: u64,
    /// The smallest change of a share that counts (0.10).
    pub min_share_change: f64,
    /// The robust z of latency and sentiment (5; on the log scale for latency: see `benches/recall.rs`).
    pub robust_z: f64,
    /// The least ratio of a latency to its baseline (1.5).
    pub min_latency_ratio: f64,
    /// The fewest latency values in a bucket (5).
    pub min_samples: u64,
    /// The smallest Jensen–Shannon divergence of the intent mix that counts (0.05, in bits).
    pub min_divergence: f64,
    /// Signals closer than this are grouped (5 minutes, one bucket: signals that overlap or
    /// touch; a flagged window already lags its data, so more would join separate incidents).
    pub group_gap: std::time::Duration,
}

impl Default for Params {
    fn default() -> Params {
        Params {
            bucket: std::time::Duration::from_secs(300),
            window_buckets: 3,
            min_windows: 2,
            trailing: std::time::Duration::from_secs(6 * 3600),
            min_history: std::time::Duration::from_secs(3600),
            seasonal_min_days: 3,
            alpha: 1e-6,
            min_conversations: 15,
            min_share_change: 0.10,
            robust_z: 5.0,
            min_latency_ratio: 1.5,
            min_samples: 5,
            min_divergence: 0.05,
            group_gap: std::time::Duration::from_secs(300),
        }
    }
}

/// Up or down against the baseline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Higher than expected.
    Up,
    /// Lower than expected.
    Down,
    /// A change of mix (the intent divergence).
    Shift,
}

/// The families of signals (what recall is scored by).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Family {
    /// Error rates.
    Errors,
    /// Latency parts and response times.
    Latency,
    /// The intent mix.
    Intents,
    /// Conversations started.
    Volume,
    /// The resolution mix.
    Resolution,
    /// Customer sentiment.
    Sentiment,
    /// Compliance violations.
    Compliance,
}

/// One anomalous signal: a metric of a scope, flagged from `start` to `end`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Signal {
    /// `latency.llm_ttft.p95`, `resolution.transferred.share`, `errors.stt_unavailable.rate`, …
    pub metric: String,
    /// Its family.
    pub family: Family,
    /// The tenant.
    pub tenant_id: String,
    /// The agent, for an agent's own signal.
    pub agent_id: Option<String>,
    /// Start of the first flagged window.
    #[serde(with = "time::serde::rfc3339")]
    pub start: OffsetDateTime,
    /// End of the last flagged window.
    #[serde(with = "time::serde::rfc3339")]
    pub end: OffsetDateTime,
    /// The value in the strongest window.
    pub observed: f64,
    /// Its baseline.
    pub expected: f64,
    /// How anomalous (−log10 p, or a robust z).
    pub score: f64,
    /// Up, down or a shift.
    pub direction: Direction,
}

/// Signals of one tenant close in time, with a suspected cause.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Incident {
    /// Start of the earliest signal.
    #[serde(with = "time::serde::rfc3339")]
    pub start: OffsetDateTime,
    /// End of the latest.
    #[serde(with = "time::serde::rfc3339")]
    pub end: OffsetDateTime,
    /// The tenant.
    pub tenant_id: String,
    /// The most upstream signal, named: "LLM latency", "errors: stt_unavailable", …
    pub suspected_cause: String,
    /// The suspected cause's metric.
    pub cause_metric: String,
    /// Every signal, the cause first, then by start.
    pub signals: Vec<Signal>,
}

/// The order of causes, upstream first, by metric prefix (see the module docs).
pub const CAUSE_ORDER: [&str; 13] = [
    "errors.",
    "latency.stt.",
    "latency.end_of_utterance.",
    "latency.llm_ttft.",
    "latency.tool.",
    "latency.tts_ttfb.",
    "intents.",
    "conversations.",
    "latency.response.",
    "latency.agent_response_time.",
    "resolution.",
    "sentiment.",
    "compliance.",
];

fn cause_rank(metric: &str) -> usize {
    CAUSE_ORDER.iter().position(|p| metric.starts_with(p)).unwrap_or(CAUSE_ORDER.len())
}

/// What a metric's anomaly is called as a cause.
pub fn cause_name(metric: &str) -> String {
    let part = |m: &str| m.split('.').nth(1).unwrap_or("").to_string();
    match metric.split('.').next().unwrap_or("") {
        "errors" => format!("errors: {}", part(metric)),
        "latency" => match part(metric).as_str() {
            "stt" => "speech-to-text latency".into(),
            "end_of_utterance" => "end-of-utterance delay".into(),
            "llm_ttft" => "LLM latency".into(),
            "tool" => "tool latency".into(),
            "tts_ttfb" => "text-to-speech latency".into(),
            "response" => "voice response time".into(),
            "agent_response_time" => "agent response time".into(),
            other => format!("{other} latency"),
        },
        "intents" => "intent shift".into(),
        "conversations" => "conversation volume".into(),
        "resolution" => format!("resolution mix ({} share)", part(metric)),
        "sentiment" => "customer sentiment".into(),
        "compliance" => "compliance violations".into(),
        _ => metric.to_string(),
    }
}

/// Finds the anomalous signals of every series and groups them into incidents, earliest first.
pub fn detect(series: &[Series], params: &Params) -> Vec<Incident> {
    let signals: Vec<Signal> = series.iter().flat_map(|s| signals(s, params)).collect();
    group(signals, params)
}

/// A window's test result.
#[derive(Debug, Clone, Copy)]
struct Flag {
    observed: f64,
    expected: f64,
    score: f64,
    direction: Direction,
}

/// The anomalous signals of one series.
pub fn signals(s: &Series, params: &Params) -> Vec<Signal> {
    let w = params.window_buckets.max(1);
    let n = s.buckets.len();
    let bucket_s = s.bucket_seconds.max(1);
    let day = (86_400 / bucket_s) as usize;
    let trailing = (params.trailing.as_secs() as i64 / bucket_s).max(1) as usize;
    let min_history = (params.min_history.as_secs() as i64 / bucket_s).max(1) as usize;
    let metrics = metric_names(s);
    // Per metric, the flag of each window (indexed by its last bucket).
    let mut flags: BTreeMap<&str, Vec<Option<Flag>>> = metrics.iter().map(|m| (m.as_str(), vec![None; n])).collect();
    for end in (w - 1)..n {
        let window: Vec<usize> = (end + 1 - w..=end).collect();
        let Some(baseline) = baseline(s, &window, day, trailing, min_history, params) else { continue };
        let win = pooled(s, &window);
        let base = pooled(s, &baseline);
        for metric in &metrics {
            let flag = test(metric, s, &window, &baseline, &win, &base, params);
            flags.get_mut(metric.as_str()).expect("every metric has a row")[end] = flag;
        }
    }
    let mut out = Vec::new();
    for (metric, row) in flags {
        let mut i = 0;
        while i < n {
            if row[i].is_none() {
                i += 1;
                continue;
            }
            let first = i;
            while i < n && row[i].is_some() {
                i += 1;
            }
            let run = &row[first..i];
            if run.len() < params.min_windows.max(1) {
                continue;
            }
            let best = run.iter().flatten().max_by(|a, b| a.score.total_cmp(&b.score)).copied().expect("a run has flags");
            out.push(Signal {
                metric: metric.to_string(),
                family: family(metric),
                tenant_id: s.scope.tenant_id.clone(),
                agent_id: s.scope.agent_id.clone(),
                start: s.bucket_start(first + 1 - w),
                end: s.bucket_start(i),
                observed: best.observed,
                expected: best.expected,
                score: best.score,
                direction: best.direction,
            });
        }
    }
    out
}

fn family(metric: &str) -> Family {
    match metric.split('.').next().unwrap_or("") {
        "errors" => Family::Errors,
        "latency" => Family::Latency,
        "intents" => Family::Intents,
        "conversations" => Family::Volume,
        "resolution" => Family::Resolution,
        "sentiment" => Family::Sentiment,
        _ => Family::Compliance,
    }
}

/// Every metric the series has data for.
fn metric_names(s: &Series) -> Vec<String> {
    let mut out = vec!["conversations.started".to_string(), "compliance.violations".into(), "sentiment.mean".into(), "intents.divergence".into()];
    for r in Resolution::ALL {
        out.push(format!("resolution.{}.share", r.as_str()));
    }
    let mut errors: Vec<&String> = s.buckets.iter().flat_map(|b| b.errors.keys()).collect();
    errors.sort();
    errors.dedup();
    out.extend(errors.into_iter().map(|e| format!("errors.{e}.rate")));
    for part in LATENCY_PARTS {
        if s.buckets.iter().any(|b| b.latency.contains_key(part)) {
            out.push(format!("latency.{part}.p50"));
            out.push(format!("latency.{part}.p95"));
        }
    }
    out
}

/// The baseline buckets of a window: the same window on earlier days (seasonal), or the
/// trailing buckets before it; `None` when there is too little history for either.
fn baseline(s: &Series, window: &[usize], day: usize, trailing: usize, min_history: usize, params: &Params) -> Option<Vec<usize>> {
    let has_data = |i: usize| {
        let b = &s.buckets[i];
        b.started > 0 || b.active > 0
    };
    let first = window[0];
    let mut seasonal = Vec::new();
    let mut days = 0;
    for k in (1..=7).take_while(|k| k * day <= first) {
        let same: Vec<usize> = window.iter().map(|i| i - k * day).collect();
        if same.iter().any(|i| has_data(*i)) {
            days += 1;
            seasonal.extend(same);
        }
    }
    if days >= params.seasonal_min_days.max(1) {
        return Some(seasonal);
    }
    let trailing: Vec<usize> = (first.saturating_sub(trailing)..first).collect();
    (trailing.iter().filter(|i| has_data(**i)).count() >= min_history).then_some(trailing)
}

/// Counts of a set of buckets, pooled.
#[derive(Default)]
struct Pooled {
    started: u64,
    ended: BTreeMap<Resolution, u64>,
    ended_total: u64,
    active: u64,
    errors: BTreeMap<String, u64>,
    sentiment: (f64, u64),
    violations: u64,
    intents: BTreeMap<String, u64>,
}

fn pooled(s: &Series, idx: &[usize]) -> Pooled {
    let mut p = Pooled::default();
    for &i in idx {
        let b = &s.buckets[i];
        p.started += b.started;
        for (r, c) in &b.ended {
            *p.ended.entry(*r).or_default() += c;
            p.ended_total += c;
        }
        p.active += b.active;
        for (e, c) in &b.errors {
            *p.errors.entry(e.clone()).or_default() += c;
        }
        p.sentiment.0 += b.sentiment.0;
        p.sentiment.1 += b.sentiment.1;
        p.violations += b.violations;
        for (k, c) in &b.intents {
            *p.intents.entry(k.clone()).or_default() += c;
        }
    }
    p
}

fn score_of(p: f64) -> f64 {
    -(p.max(1e-300)).log10()
}

/// The tail test of a share: `x` of `n` against a baseline of `x0` of `n0`.
fn share_test(x: u64, n: u64, x0: u64, n0: u64, up: bool, min_change: f64, params: &Params) -> Option<Flag> {
    if n < params.min_conversations || n0 == 0 {
        return None;
    }
    let x = x.min(n);
    // The baseline's share, kept off 0 and 1 so one window can still be judged against it.
    let p0 = ((x0 as f64 + 0.5) / (n0 as f64 + 1.0)).clamp(1e-6, 1.0 - 1e-6);
    let observed = x as f64 / n as f64;
    let change = observed - p0;
    if (up && change < min_change) || (!up && -change < min_change) {
        return None;
    }
    let dist = Binomial::new(p0, n).ok()?;
    let p = if up {
        if x == 0 { 1.0 } else { dist.sf(x - 1) }
    } else {
        dist.cdf(x)
    };
    (p < params.alpha).then_some(Flag {
        observed,
        expected: p0,
        score: score_of(p),
        direction: if up { Direction::Up } else { Direction::Down },
    })
}

/// The Poisson tail of a count against the baseline's mean per window.
fn count_test(x: u64, lambda: f64, allow_down: bool, params: &Params) -> Option<Flag> {
    let lambda = lambda.max(0.5);
    let dist = Poisson::new(lambda).ok()?;
    let (p, direction) = if x as f64 > lambda {
        if (x as f64) < 1.5 * lambda || x < 5 {
            return None;
        }
        (dist.sf(x - 1), Direction::Up)
    } else {
        if !allow_down || lambda < 20.0 || (x as f64) > 0.5 * lambda {
            return None;
        }
        (dist.cdf(x), Direction::Down)
    };
    (p < params.alpha).then_some(Flag { observed: x as f64, expected: lambda, score: score_of(p), direction })
}

/// The median and the MAD scaled to a normal's standard deviation (× 1.4826).
fn robust(values: &mut [f64]) -> Option<(f64, f64)> {
    let center = median(values)?;
    let mut dev: Vec<f64> = values.iter().map(|v| (v - center).abs()).collect();
    let mad = median(&mut dev)? * 1.4826;
    Some((center, mad))
}

fn median(values: &mut [f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let n = values.len();
    Some(if n % 2 == 1 { values[n / 2] } else { (values[n / 2 - 1] + values[n / 2]) / 2.0 })
}

fn jensen_shannon(p: &[f64], q: &[f64]) -> f64 {
    let kl = |a: &[f64], b: &[f64]| -> f64 {
        a.iter().zip(b).filter(|(x, _)| **x > 0.0).map(|(x, y)| x * (x / y).log2()).sum()
    };
    let m: Vec<f64> = p.iter().zip(q).map(|(a, b)| (a + b) / 2.0).collect();
    (kl(p, &m) + kl(q, &m)) / 2.0
}

fn test(metric: &str, s: &Series, window: &[usize], baseline: &[usize], win: &Pooled, base: &Pooled, params: &Params) -> Option<Flag> {
    let windows_in_baseline = (baseline.len() as f64 / window.len() as f64).max(1.0);
    let mut parts = metric.split('.');
    match (parts.next()?, parts.next()?) {
        ("conversations", _) => count_test(win.started, base.started as f64 / windows_in_baseline, true, params),
        ("compliance", _) => count_test(win.violations, base.violations as f64 / windows_in_baseline, false, params),
        ("resolution", r) => {
            let r = Resolution::ALL.into_iter().find(|x| x.as_str() == r)?;
            let get = |p: &Pooled| p.ended.get(&r).copied().unwrap_or(0);
            let up = r != Resolution::Resolved;
            share_test(get(win), win.ended_total, get(base), base.ended_total, up, params.min_share_change, params)
        }
        ("errors", e) => {
            let get = |p: &Pooled| p.errors.get(e).copied().unwrap_or(0);
            share_test(get(win), win.active, get(base), base.active, true, params.min_share_change / 2.0, params)
        }
        ("latency", part) => {
            let p50 = parts.next() == Some("p50");
            let of = |idx: &[usize]| -> Vec<f64> {
                idx.iter()
                    .filter_map(|i| s.buckets[*i].latency.get(part))
                    .filter(|l| l.n >= params.min_samples)
                    .map(|l| if p50 { l.p50 } else { l.p95 })
                    .collect()
            };
            let mut w = of(window);
            if w.len() * 2 < window.len() + 1 {
                return None; // most of the window lacks the samples
            }
            let b = of(baseline);
            if b.len() < 6 {
                return None;
            }
            let observed = median(&mut w)?;
            // On the log scale: latencies are close to log-normal, and a bucket's p95 of a
            // few values is skewed up; its MAD in milliseconds understates how far a quiet
            // bucket's p95 strays (tool calls at 5 a bucket gave three false incidents a day).
            let mut logs: Vec<f64> = b.iter().map(|v| v.max(1.0).ln()).collect();
            let (center, mad) = robust(&mut logs)?;
            let expected = center.exp();
            // Floored at 1 ms: a part that is usually 0 is not "infinitely" slower at 0.01 ms.
            let z = (observed.max(1.0).ln() - center) / mad.max(0.05);
            (z >= params.robust_z && observed >= params.min_latency_ratio * expected)
                .then_some(Flag { observed, expected, score: z, direction: Direction::Up })
        }
        ("sentiment", _) => {
            if win.sentiment.1 < params.min_conversations {
                return None;
            }
            let observed = win.sentiment.0 / win.sentiment.1 as f64;
            let mut b: Vec<f64> = baseline
                .iter()
                .map(|i| s.buckets[*i].sentiment)
                .filter(|(_, n)| *n > 0)
                .map(|(sum, n)| sum / n as f64)
                .collect();
            if b.len() < 6 {
                return None;
            }
            let (_, mad) = robust(&mut b)?;
            let expected = base.sentiment.0 / base.sentiment.1.max(1) as f64;
            // The window pools several buckets: its mean varies less than one bucket's.
            let spread = mad / (window.len() as f64).sqrt();
            let z = (expected - observed) / spread.max(0.02);
            (z >= params.robust_z && expected - observed >= 0.2)
                .then_some(Flag { observed, expected, score: z, direction: Direction::Down })
        }
        ("intents", _) => {
            let n: u64 = win.intents.values().sum();
            let n0: u64 = base.intents.values().sum();
            if n < params.min_conversations || n0 == 0 {
                return None;
            }
            let mut keys: Vec<&String> = win.intents.keys().chain(base.intents.keys()).collect();
            keys.sort();
            keys.dedup();
            if keys.len() < 2 {
                return None;
            }
            let k = keys.len() as f64;
            let q: Vec<f64> =
                keys.iter().map(|key| (base.intents.get(*key).copied().unwrap_or(0) as f64 + 0.5) / (n0 as f64 + 0.5 * k)).collect();
            let o: Vec<f64> = keys.iter().map(|key| win.intents.get(*key).copied().unwrap_or(0) as f64).collect();
            let g: f64 = 2.0 * o.iter().zip(&q).filter(|(o, _)| **o > 0.0).map(|(o, q)| o * (o / (q * n as f64)).ln()).sum::<f64>();
            let p = ChiSquared::new(k - 1.0).ok()?.sf(g.max(0.0));
            let shares: Vec<f64> = o.iter().map(|o| o / n as f64).collect();
            let jsd = jensen_shannon(&shares, &q);
            (p < params.alpha && jsd >= params.min_divergence)
                .then_some(Flag { observed: jsd, expected: 0.0, score: score_of(p), direction: Direction::Shift })
        }
        _ => None,
    }
}

/// Groups signals into incidents: one tenant's signals whose times overlap or are within the
/// group gap. The suspected cause is the most upstream of the signals that start within one
/// window of the first.
pub fn group(mut signals: Vec<Signal>, params: &Params) -> Vec<Incident> {
    signals.sort_by(|a, b| a.tenant_id.cmp(&b.tenant_id).then(a.start.cmp(&b.start)).then(a.metric.cmp(&b.metric)));
    let gap = time::Duration::seconds(params.group_gap.as_secs() as i64);
    let mut incidents: Vec<Incident> = Vec::new();
    let mut current: Vec<Signal> = Vec::new();
    let mut end = OffsetDateTime::UNIX_EPOCH;
    // A cause precedes its effects: only the signals that start within one window of the
    // group's first are candidates (an error burst an hour into a slow-STT incident is not
    // what slowed it).
    let lead = time::Duration::seconds((params.bucket.as_secs() * params.window_buckets as u64) as i64);
    let close = |group: &mut Vec<Signal>, out: &mut Vec<Incident>| {
        if group.is_empty() {
            return;
        }
        let mut signals = std::mem::take(group);
        let first = signals.iter().map(|s| s.start).min().expect("a group has signals");
        let cause = signals
            .iter()
            .enumerate()
            .filter(|(_, s)| s.start <= first + lead)
            .min_by(|(_, a), (_, b)| cause_rank(&a.metric).cmp(&cause_rank(&b.metric)).then(a.start.cmp(&b.start)))
            .map(|(i, _)| i)
            .expect("a group has signals");
        let cause = signals.remove(cause);
        let incident = Incident {
            start: signals.iter().map(|s| s.start).fold(cause.start, OffsetDateTime::min),
            end: signals.iter().map(|s| s.end).fold(cause.end, OffsetDateTime::max),
            tenant_id: cause.tenant_id.clone(),
            suspected_cause: cause_name(&cause.metric),
            cause_metric: cause.metric.clone(),
            signals: std::iter::once(cause).chain(signals).collect(),
        };
        out.push(incident);
    };
    for s in signals {
        let joins = current.last().is_some_and(|last| last.tenant_id == s.tenant_id && s.start <= end + gap);
        if !joins {
            close(&mut current, &mut incidents);
            end = s.end;
        }
        end = end.max(s.end);
        current.push(s);
    }
    close(&mut current, &mut incidents);
    incidents.sort_by(|a, b| a.start.cmp(&b.start).then(a.tenant_id.cmp(&b.tenant_id)));
    incidents
}

#[cfg(test)]
mod tests;
