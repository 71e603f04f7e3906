//! The method on synthetic buckets: a clean day flags nothing, injected incidents are found,
//! a low-volume night is not an incident, and signals group under the upstream cause.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::*;

const BUCKET: i64 = 300;

/// What a tenant's buckets look like, and an incident that changes them.
#[derive(Clone, Copy)]
struct Shape {
    per_bucket: f64,
    transferred: f64,
    ttft_p95: f64,
    error_rate: f64,
}

const NORMAL: Shape = Shape { per_bucket: 20.0, transferred: 0.14, ttft_p95: 1200.0, error_rate: 0.03 };

/// A Poisson draw (Knuth's, fine for the small means here).
fn poisson(rng: &mut ChaCha8Rng, mean: f64) -> u64 {
    let l = (-mean).exp();
    let (mut k, mut p) = (0u64, 1.0);
    loop {
        p *= rng.random::<f64>();
        if p <= l {
            return k;
        }
        k += 1;
    }
}

fn binomial(rng: &mut ChaCha8Rng, n: u64, p: f64) -> u64 {
    (0..n).filter(|_| rng.random_bool(p.clamp(0.0, 1.0))).count() as u64
}

fn bucket(rng: &mut ChaCha8Rng, s: Shape) -> Bucket {
    let n = poisson(rng, s.per_bucket);
    let transferred = binomial(rng, n, s.transferred);
    let mut b = Bucket { started: n, active: n, ..Bucket::default() };
    b.ended.insert(Resolution::Transferred, transferred);
    b.ended.insert(Resolution::Resolved, n - transferred);
    let errors = binomial(rng, n, s.error_rate);
    if errors > 0 {
        b.errors.insert("llm_timeout".into(), errors);
    }
    if n > 0 {
        // The p95 of a bucket wanders by ±15% around the shape's.
        let p95 = s.ttft_p95 * rng.random_range(0.85..1.15);
        b.latency.insert("llm_ttft", Latency { p50: p95 / 2.5, p95, n: n * 3 });
    }
    b.sentiment = (n as f64 * rng.random_range(0.05..0.25), n);
    for (intent, share) in [("billing", 0.5), ("cancel", 0.2), ("outage", 0.3)] {
        let c = binomial(rng, n, share);
        if c > 0 {
            b.intents.insert(intent.into(), c);
        }
    }
    b
}

/// `hours` of buckets for a tenant; `shape_at(i)` gives bucket i's shape.
fn series(seed: u64, hours: usize, shape_at: impl Fn(usize) -> Shape) -> Series {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let n = hours * 3600 / BUCKET as usize;
    Series {
        scope: Scope { tenant_id: "acme".into(), agent_id: None },
        start: OffsetDateTime::from_unix_timestamp(1_764_000_000 / BUCKET * BUCKET).unwrap(),
        bucket_seconds: BUCKET,
        buckets: (0..n).map(|i| bucket(&mut rng, shape_at(i))).collect(),
    }
}

fn at(s: &Series, bucket: usize) -> OffsetDateTime {
    s.bucket_start(bucket)
}

#[test]
fn a_clean_day_flags_nothing_on_twenty_seeds() {
    let params = Params::default();
    let mut found = Vec::new();
    for seed in 0..20 {
        let s = series(seed, 24, |_| NORMAL);
        found.extend(signals(&s, &params).into_iter().map(|sig| (seed, sig.metric, sig.score)));
    }
    assert!(found.is_empty(), "false signals on clean days: {found:?}");
}

#[test]
fn a_resolution_drop_is_found_in_its_window() {
    // 6 hours; from 3 h to 3 h 40 min the transferred share is 60% instead of 14%.
    let (from, to) = (36, 44);
    let s = series(7, 6, |i| if (from..to).contains(&i) { Shape { transferred: 0.6, ..NORMAL } } else { NORMAL });
    let found = signals(&s, &Params::default());
    let sig = found.iter().find(|x| x.metric == "resolution.transferred.share").unwrap_or_else(|| panic!("{found:#?}"));
    assert_eq!(sig.family, Family::Resolution);
    assert_eq!(sig.direction, Direction::Up);
    assert!(sig.start < at(&s, to) && sig.end > at(&s, from), "{sig:?}");
    assert!(sig.observed > 0.4 && (sig.expected - 0.14).abs() < 0.05, "{sig:?}");
    // The resolved share falls with it; nothing else moves.
    assert!(found.iter().all(|x| x.metric.starts_with("resolution.")), "{found:#?}");
}

#[test]
fn a_low_volume_night_is_not_an_incident() {
    // Three conversations a bucket at night, two of them transferred: 67% of 3 is no evidence.
    let s = series(3, 6, |i| if i >= 36 { Shape { per_bucket: 0.6, transferred: 0.67, ..NORMAL } } else { NORMAL });
    let found = signals(&s, &Params::default());
    assert!(!found.iter().any(|x| x.metric == "resolution.transferred.share"), "{found:#?}");
}

#[test]
fn llm_latency_and_the_abandonment_it_causes_are_one_incident_caused_by_the_llm() {
    let (from, to) = (30, 36); // 30 minutes
    let s = series(11, 6, |i| {
        if (from..to).contains(&i) { Shape { ttft_p95: 4800.0, transferred: 0.5, ..NORMAL } } else { NORMAL }
    });
    let incidents = detect(std::slice::from_ref(&s), &Params::default());
    assert_eq!(incidents.len(), 1, "{incidents:#?}");
    let inc = &incidents[0];
    assert_eq!(inc.suspected_cause, "LLM latency");
    assert!(inc.cause_metric.starts_with("latency.llm_ttft."), "{}", inc.cause_metric);
    assert_eq!(inc.tenant_id, "acme");
    let metrics: Vec<&str> = inc.signals.iter().map(|x| x.metric.as_str()).collect();
    assert!(metrics.contains(&"resolution.transferred.share"), "{metrics:?}");
    let llm = &inc.signals[0];
    assert!(llm.observed / llm.expected > 3.0, "{llm:?}");
}

#[test]
fn an_error_burst_is_found_and_named_by_type() {
    let (from, to) = (40, 43); // 15 minutes at 30%
    let s = series(5, 6, |i| if (from..to).contains(&i) { Shape { error_rate: 0.3, ..NORMAL } } else { NORMAL });
    let incidents = detect(std::slice::from_ref(&s), &Params::default());
    assert_eq!(incidents.len(), 1, "{incidents:#?}");
    assert_eq!(incidents[0].suspected_cause, "errors: llm_timeout");
    assert_eq!(incidents[0].signals[0].family, Family::Errors);
}

#[test]
fn an_intent_shift_is_a_divergence_from_the_baseline_mix() {
    let mut s = series(9, 6, |_| NORMAL);
    for b in &mut s.buckets[48..56] {
        // Everyone calls about an outage.
        let n = b.started;
        b.intents = BTreeMap::from([("outage".to_string(), n), ("billing".to_string(), n / 10)]);
    }
    let found = signals(&s, &Params::default());
    let sig = found.iter().find(|x| x.metric == "intents.divergence").unwrap_or_else(|| panic!("{found:#?}"));
    assert_eq!(sig.direction, Direction::Shift);
    assert!(sig.observed >= 0.05, "{sig:?}");
}

#[test]
fn nothing_is_tested_without_an_hour_of_history() {
    // The incident is in the first hour: no baseline yet.
    let s = series(2, 3, |i| if i < 10 { Shape { transferred: 0.7, ..NORMAL } } else { NORMAL });
    let found = signals(&s, &Params::default());
    assert!(found.iter().all(|x| x.start >= at(&s, 12 - 3 + 1) || x.end > at(&s, 12)), "{found:#?}");
    assert!(!found.iter().any(|x| x.end <= at(&s, 10)), "{found:#?}");
}

#[test]
fn seasonal_baselines_use_the_same_hour_of_earlier_days() {
    // Four days where 13:00–14:00 always has twice the volume: on day 4 it is not an anomaly
    // against the same hour of days 1–3, though it would be against the trailing hours.
    let per_day = 86_400 / BUCKET as usize;
    let busy = |i: usize| (156..168).contains(&(i % per_day));
    let s = series(4, 96, |i| if busy(i) { Shape { per_bucket: 45.0, ..NORMAL } } else { NORMAL });
    let found = signals(&s, &Params::default());
    let day4 = at(&s, 3 * per_day);
    assert!(!found.iter().any(|x| x.metric == "conversations.started" && x.start >= day4), "{found:#?}");
    // The first day has no seasonal history: the trailing baseline flags the busy hour.
    assert!(found.iter().any(|x| x.metric == "conversations.started" && x.start < at(&s, per_day)), "{found:#?}");
}

#[test]
fn separate_tenants_are_separate_incidents_and_close_signals_group() {
    let p = Params::default();
    let t0 = OffsetDateTime::from_unix_timestamp(1_764_000_000).unwrap();
    let sig = |tenant: &str, metric: &str, from: i64, to: i64| Signal {
        metric: metric.into(),
        family: family(metric),
        tenant_id: tenant.into(),
        agent_id: None,
        start: t0 + time::Duration::minutes(from),
        end: t0 + time::Duration::minutes(to),
        observed: 1.0,
        expected: 0.5,
        score: 5.0,
        direction: Direction::Up,
    };
    let incidents = group(
        vec![
            sig("a", "resolution.abandoned.share", 20, 60),
            sig("a", "latency.response.p95", 10, 40),
            sig("a", "latency.llm_ttft.p95", 15, 40),
            sig("b", "latency.llm_ttft.p95", 15, 40),
            sig("a", "errors.stt_unavailable.rate", 200, 215),
        ],
        &p,
    );
    let summary: Vec<(&str, &str, usize)> =
        incidents.iter().map(|i| (i.tenant_id.as_str(), i.suspected_cause.as_str(), i.signals.len())).collect();
    assert_eq!(summary, [("a", "LLM latency", 3), ("b", "LLM latency", 1), ("a", "errors: stt_unavailable", 1)]);
    assert_eq!(incidents[0].start, t0 + time::Duration::minutes(10));
    assert_eq!(incidents[0].end, t0 + time::Duration::minutes(60));

    // A slow STT, then, joined by time, an error burst 45 minutes later: the errors are more
    // upstream but came after, so they are not the cause.
    let incidents = group(
        vec![sig("c", "latency.stt.p95", 0, 50), sig("c", "errors.stt_unavailable.rate", 45, 80), sig("c", "resolution.abandoned.share", 10, 40)],
        &p,
    );
    assert_eq!(incidents.len(), 1);
    assert_eq!(incidents[0].suspected_cause, "speech-to-text latency");
    assert_eq!(incidents[0].signals.len(), 3);
}
