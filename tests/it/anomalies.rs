//! Issue 17: anomaly detection finds an injected incident, and the local event log and the
//! ClickHouse engine give the same incidents on the same data.

use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serphona_obs::Observability;
use serphona_obs::detect::{self, Params, Range, SeriesBuilder};
use serphona_obs::store::Store;
use serphona_obs::store::local::LocalStore;
use serphona_obs::types::*;

use crate::support::clickhouse::ClickHouse;

/// A log-normal draw with the given median and p95.
fn lognormal(rng: &mut ChaCha8Rng, p50: f64, p95: f64) -> f64 {
    let sigma = (p95 / p50).ln() / 1.645;
    // Box–Muller.
    let (u1, u2): (f64, f64) = (rng.random::<f64>().max(1e-12), rng.random());
    let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
    (p50.ln() + sigma * z).exp()
}

/// Six hours of voice conversations for two tenants, ending an hour ago; for tenant `acme`
/// the LLM's time to first token is four times slower from 3 h to 3 h 30 min, and more of its
/// callers hang up then. Returns the incident's window and the end of the data.
fn record(obs: &Observability, seed: u64) -> (time::OffsetDateTime, time::OffsetDateTime, time::OffsetDateTime) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let end = time::OffsetDateTime::now_utc() - time::Duration::hours(1);
    let start = end - time::Duration::hours(6);
    let (from, to) = (start + time::Duration::hours(3), start + time::Duration::minutes(210));
    let mut t = start;
    let mut i = 0u64;
    while t < end {
        // About 300 conversations an hour.
        t += time::Duration::milliseconds((-(rng.random::<f64>().max(1e-9)).ln() * 12_000.0) as i64);
        i += 1;
        let tenant = if rng.random_bool(0.6) { "acme" } else { "globex" };
        let agent = if rng.random_bool(0.5) { "bot-a" } else { "bot-b" };
        let slow = tenant == "acme" && t >= from && t < to;
        let conv = obs.start_conversation(
            ConversationStart::new(tenant, agent, format!("c{i}"), Channel::Voice).at(t).id(format!("{tenant}-{seed}-{i}")),
        );
        let mut at = t + time::Duration::milliseconds(500);
        conv.track_decision(Decision::new(DecisionType::IntentDetection, "billing", "r").confidence(0.9).at(at));
        for _ in 0..3 {
            conv.track_interaction(Interaction::customer("hi").sentiment(0.1).duration_ms(1500.0).at(at));
            at += time::Duration::milliseconds(2500);
            let ttft = lognormal(&mut rng, 600.0, 1500.0) * if slow { 4.0 } else { 1.0 };
            let stt = lognormal(&mut rng, 150.0, 300.0);
            let latency = TurnLatency {
                stt_ms: Some(stt.round()),
                llm_ttft_ms: Some(ttft.round()),
                response_ms: Some((stt + ttft + 200.0).round()),
                ..TurnLatency::default()
            };
            conv.track_interaction(Interaction::agent("ok").latency(latency).duration_ms(2000.0).at(at));
            at += time::Duration::milliseconds(3000);
        }
        let abandoned = rng.random_bool(if slow { 0.5 } else { 0.08 });
        let resolution = if abandoned { Resolution::Abandoned } else { Resolution::Resolved };
        conv.end(ConversationEnd::new(resolution).at(at));
    }
    (from, to, end)
}

#[test]
fn the_local_log_and_clickhouse_give_the_same_incidents_and_find_the_llm_slowdown() {
    let ch = ClickHouse::start();
    let db = ch.fresh_database();
    let data = tempfile::tempdir().unwrap();
    ch.apply_schema(&db, data.path());
    let config = ch.library_config(&db, data.path());
    let client = serphona_obs::analytics::client(&config.clickhouse);
    let obs = Observability::init(config).unwrap();
    let (from, to, end) = record(&obs, 17);
    // The data stops an hour before now: after it, conversations stop, which is an anomaly of
    // its own; the queries end where the data does.
    let until = end.format(&time::format_description::well_known::Rfc3339).unwrap();
    obs.shutdown(Duration::from_secs(60)).unwrap();
    drop(obs);

    let params = Params::default();
    let width = params.bucket.as_secs() as i64;
    let range = Range::default();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();

    // The local store: the event log, folded.
    let store = LocalStore::open(data.path());
    let (events, _) = rt.block_on(store.events_since(None, usize::MAX)).unwrap();
    let mut builder = SeriesBuilder::new(width, range.clone());
    for e in &events {
        builder.add(e);
    }
    let local_series = builder.finish();
    let local = detect::detect(&local_series, &params);

    // ClickHouse: the same buckets in SQL.
    let ch_series = rt.block_on(detect::clickhouse::series(&client, &range, width)).unwrap();
    assert_eq!(ch_series.len(), local_series.len());
    for (a, b) in local_series.iter().zip(&ch_series) {
        assert_eq!(a.scope, b.scope);
        assert_eq!((a.start, a.buckets.len()), (b.start, b.buckets.len()), "{:?}", a.scope);
        for (i, (x, y)) in a.buckets.iter().zip(&b.buckets).enumerate() {
            // Sums of floats may differ in the last bits with the order of addition.
            assert!((x.sentiment.0 - y.sentiment.0).abs() < 1e-6, "{:?} bucket {i}", a.scope);
            let (mut x, mut y) = (x.clone(), y.clone());
            (x.sentiment.0, y.sentiment.0) = (0.0, 0.0);
            assert_eq!(x, y, "{:?} bucket {i}", a.scope);
        }
    }
    let remote = detect::detect(&ch_series, &params);
    let summary = |incidents: &[detect::Incident]| -> Vec<String> {
        incidents.iter().map(|i| format!("{} {} {} {} {}", i.tenant_id, i.start, i.end, i.suspected_cause, i.signals.len())).collect()
    };
    assert_eq!(summary(&local), summary(&remote));
    println!("incidents: {:#?}", summary(&local));

    // The slowdown is found, for acme, in its window, with the LLM as its cause.
    let found = local
        .iter()
        .find(|i| i.tenant_id == "acme" && i.start < to && i.end > from)
        .unwrap_or_else(|| panic!("the LLM slowdown is not found: {local:#?}"));
    assert_eq!(found.suspected_cause, "LLM latency", "{found:#?}");
    assert!(found.signals.iter().any(|s| s.metric == "resolution.abandoned.share"), "{found:#?}");
    // Nothing else: globex had no incident, and acme none outside the window.
    assert_eq!(local.len(), 1, "{local:#?}");

    // The real binary, over both stores: the same incidents, in the documented JSON.
    for source in ["local", "clickhouse"] {
        let out = ch
            .cli(&db, data.path())
            .args(["query", "anomalies", "--since", "8h", "--until", &until, "-o", "json", "--source", source])
            .output()
            .unwrap();
        assert!(out.status.success(), "{source}: {}", String::from_utf8_lossy(&out.stderr));
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let incidents = json.as_array().unwrap();
        assert_eq!(incidents.len(), 1, "{source}: {json:#}");
        let i = &incidents[0];
        assert_eq!(i["tenant_id"], "acme");
        assert_eq!(i["suspected_cause"], "LLM latency");
        assert_eq!(i["start"], serde_json::to_value(local[0].start.format(&time::format_description::well_known::Rfc3339).unwrap()).unwrap());
        for s in i["signals"].as_array().unwrap() {
            for field in ["metric", "tenant_id", "agent_id", "start", "end", "observed", "expected", "score", "direction"] {
                assert!(s.get(field).is_some(), "{source}: signal without {field}: {s}");
            }
        }
        assert_eq!(i["signals"].as_array().unwrap().len(), local[0].signals.len());
    }
    // The table names the incident and its cause; --tenant narrows it.
    let out = ch.cli(&db, data.path()).args(["query", "anomalies", "--since", "8h", "--until", &until, "--source", "local"]).output().unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    println!("{table}");
    assert!(table.contains("incident 1: acme — suspected cause: LLM latency"), "{table}");
    assert!(table.contains("latency.llm_ttft.p95"), "{table}");
    let out = ch
        .cli(&db, data.path())
        .args(["query", "anomalies", "--since", "8h", "--until", &until, "--source", "clickhouse", "--tenant", "globex", "-o", "json"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "[]");
}

/// Issue 17's floor: on three fixed seeds (not the ones the parameters were chosen on) of
/// `scenarios/incidents.yaml`, detection finds at least 80% of the injected incidents (an
/// incident naming the tenant, with a signal of the effect's family in the window), and on
/// the same seeds of `scenarios/clean-day.yaml` it reports few incidents. The targets
/// (recall ≥ 0.9, ≤ 1 false incident a clean day) are measured on ten more seeds by
/// `cargo bench --bench recall` (BENCHMARKS.md); this floor sits below them so noise cannot
/// fail CI.
#[test]
fn detection_finds_the_scenarios_incidents_and_little_on_clean_days() {
    use serphona_obs::detect::evaluate;
    use serphona_obs::simulation::Scenario;

    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
    let incidents = Scenario::load(&root.join("incidents.yaml")).unwrap();
    let clean = Scenario::load(&root.join("clean-day.yaml")).unwrap();
    let params = Params::default();
    let (mut cases, mut found, mut clean_hours, mut clean_false) = (0, 0, 0.0, 0);
    for seed in [201, 202, 203] {
        let dir = tempfile::tempdir().unwrap();
        let t = evaluate::trial(&incidents, seed, dir.path(), &params).unwrap();
        assert_eq!(t.score.outcomes.len(), 7, "5 incidents, the outage for each of 3 tenants");
        for o in &t.score.outcomes {
            println!(
                "seed {seed}: {} for {}: {}",
                o.case.name,
                o.case.tenant_id,
                if o.found { format!("found, {:.0} min after its start", o.delay_minutes.unwrap_or(f64::NAN)) } else { "missed".into() }
            );
        }
        cases += t.score.outcomes.len();
        found += t.score.found();
        let dir = tempfile::tempdir().unwrap();
        let c = evaluate::trial(&clean, seed, dir.path(), &params).unwrap();
        assert!(c.report.incidents.is_empty());
        for i in &c.incidents {
            println!("seed {seed}: clean run: {} {} from {} to {}", i.tenant_id, i.suspected_cause, i.start, i.end);
        }
        clean_hours += c.hours;
        clean_false += c.incidents.len();
    }
    let recall = found as f64 / cases as f64;
    println!("recall {found}/{cases} = {recall:.2}; {clean_false} incident(s) in {clean_hours:.1} clean hours");
    assert!(recall >= 0.8, "recall {recall:.2} ({found} of {cases})");
    assert!(clean_hours > 17.0, "{clean_hours} h");
    // 4 a day: four times the target.
    assert!(clean_false as f64 <= 4.0 * clean_hours / 24.0, "{clean_false} false incidents in {clean_hours:.1} clean hours");
}
