//! The seed's metrics as the real Prometheus sees them: the library serves `/metrics`, a
//! Prometheus server (tests/it/support/prometheus.rs) scrapes it every second, and the
//! assertions go through PromQL and the series/metadata API — names, label names, types and
//! values, and the label-cardinality cap.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serphona_obs::metrics::{OVERFLOW_LABEL, SEED_METRICS};
use serphona_obs::types::*;
use serphona_obs::{Config, Observability};
use time::OffsetDateTime;

use crate::support::prometheus::{JOB, Prometheus};

/// How long to wait for Prometheus to see what the library recorded.
const WAIT: Duration = Duration::from_secs(30);

const SERVICE: &str = "prometheus-it";

/// The seed's contract: name, type, label names.
const SEED: [(&str, &str, &[&str]); 11] = [
    ("conversation_total", "counter", &["tenant_id", "agent_id", "channel"]),
    ("conversation_duration_seconds", "histogram", &["tenant_id", "agent_id", "resolution"]),
    ("conversation_interactions_total", "histogram", &["tenant_id", "speaker_type"]),
    ("conversation_resolution_rate", "gauge", &["tenant_id", "agent_id", "resolution_type"]),
    ("conversation_customer_rating", "histogram", &["tenant_id", "agent_id"]),
    ("agent_response_time_seconds", "histogram", &["agent_id", "tenant_id"]),
    ("http_request_duration_seconds", "histogram", &["method", "path", "status"]),
    ("error_rate", "counter", &["service", "error_type"]),
    ("conversation_sentiment_score", "gauge", &["tenant_id", "agent_id"]),
    ("agent_assertiveness_score", "gauge", &["agent_id"]),
    ("conversation_compliance_score", "gauge", &["tenant_id", "policy"]),
];

/// Labels Prometheus adds or that belong to the histogram encoding, not to the seed.
const NOT_SEED_LABELS: [&str; 3] = ["__name__", "job", "instance"];

#[allow(clippy::field_reassign_with_default)] // the way the crate docs show it
fn init(dir: &tempfile::TempDir, max_label_values: usize) -> Observability {
    let mut config = Config::default();
    config.service_name = SERVICE.into();
    config.data_dir = dir.path().to_path_buf();
    config.metrics.listen = "127.0.0.1:0".parse().unwrap();
    config.metrics.max_label_values = max_label_values;
    Observability::init(config).expect("init the library")
}

/// Label values (in a fixed order) → value.
type Series = BTreeMap<Vec<String>, f64>;

fn key(values: &[&str]) -> Vec<String> {
    values.iter().map(|v| v.to_string()).collect()
}

/// What the library was told, tallied independently of it.
#[derive(Default)]
struct Expected {
    /// [tenant, agent, channel]
    conversation_total: Series,
    /// [tenant, agent, resolution]
    duration_count: Series,
    duration_sum: Series,
    /// [tenant, speaker_type]
    interactions_count: Series,
    interactions_sum: Series,
    /// [tenant, agent] → (resolution → count)
    resolutions: BTreeMap<Vec<String>, BTreeMap<&'static str, u32>>,
    /// [tenant, agent]
    rating_count: Series,
    rating_sum: Series,
    rating_le_3: Series,
    /// [agent, tenant]
    response_count: Series,
    response_sum: Series,
    /// [service, error_type]
    errors: Series,
    /// [tenant, agent], the latest value set
    sentiment: Series,
    /// [agent]
    assertiveness: Series,
    /// [tenant, policy]
    compliance: Series,
}

impl Expected {
    /// conversation_resolution_rate{tenant_id,agent_id,resolution_type}: every resolution of
    /// every tenant/agent that ended a conversation, as a share.
    fn resolution_rate(&self) -> Series {
        let mut out = Series::new();
        for (ta, counts) in &self.resolutions {
            let total: u32 = counts.values().sum();
            for r in Resolution::ALL {
                let n = counts.get(r.as_str()).copied().unwrap_or(0);
                out.insert(key(&[&ta[0], &ta[1], r.as_str()]), f64::from(n) / f64::from(total));
            }
        }
        out
    }
}

fn add(series: &mut Series, k: Vec<String>, v: f64) {
    *series.entry(k).or_insert(0.0) += v;
}

const TENANTS: [&str; 3] = ["acme-telco", "globex-bank", "initech-health"];
const AGENTS: [&str; 4] = ["billing-bot", "support-bot", "sales-bot", "retention-bot"];
const POLICIES: [&str; 3] = ["pci_dss", "hipaa", "gdpr"];
/// Half resolved, the rest spread over the other outcomes.
const RESOLUTIONS: [Resolution; 8] = [
    Resolution::Resolved,
    Resolution::Resolved,
    Resolution::Transferred,
    Resolution::Resolved,
    Resolution::Escalated,
    Resolution::Unresolved,
    Resolution::Abandoned,
    Resolution::Resolved,
];

/// A small deterministic contact center: `n` conversations across three tenants and four
/// agents, every channel and resolution, ratings on two in three, errors on some.
fn run_conversations(obs: &Observability, n: usize) -> Expected {
    let mut exp = Expected::default();
    let base = OffsetDateTime::now_utc() - time::Duration::hours(2);
    for i in 0..n {
        let tenant = TENANTS[i % TENANTS.len()];
        let agent = AGENTS[(i / 3) % AGENTS.len()];
        let channel = Channel::ALL[(i / 2) % Channel::ALL.len()];
        let resolution = RESOLUTIONS[(i * 3 + i / 4) % RESOLUTIONS.len()];
        let rating = (i % 3 != 2).then(|| (1 + (i * 7) % 5) as u8);
        let errors: &[&str] = match i % 6 {
            0 => &["llm_timeout"],
            3 => &["stt_failure", "llm_timeout"],
            _ => &[],
        };
        let customer_turns = 1 + i % 3;
        let agent_turns = customer_turns + i % 2;
        let started = base + time::Duration::minutes(i as i64);
        let duration_s = (30 + (i * 41) % 600) as i64;

        let conv = obs.start_conversation(
            ConversationStart::new(tenant, agent, format!("cust-{i}"), channel).language("en-US").at(started),
        );
        add(&mut exp.conversation_total, key(&[tenant, agent, channel.as_str()]), 1.0);

        for j in 0..agent_turns.max(customer_turns) {
            if j < agent_turns {
                let assertiveness = ((i + j) % 10) as f64 / 10.0;
                let response_ms = 400.0 + 25.0 * ((i * 5 + j) % 40) as f64;
                conv.track_interaction(
                    Interaction::agent(format!("agent turn {j}"))
                        .assertiveness(assertiveness)
                        .latency(TurnLatency { response_ms: Some(response_ms), ..Default::default() }),
                );
                exp.assertiveness.insert(key(&[agent]), assertiveness);
                add(&mut exp.response_count, key(&[agent, tenant]), 1.0);
                add(&mut exp.response_sum, key(&[agent, tenant]), response_ms / 1000.0);
            }
            if j < customer_turns {
                let sentiment = ((i * 3 + j) % 11) as f64 / 5.0 - 1.0;
                let policy = POLICIES[(i + j) % POLICIES.len()];
                let compliance = 0.5 + ((i * 3 + j) % 5) as f64 / 10.0;
                conv.track_interaction(
                    Interaction::customer(format!("customer turn {j}"))
                        .sentiment(sentiment)
                        .intent("billing", 0.9)
                        .duration_ms(800.0)
                        .compliance(policy, compliance),
                );
                exp.sentiment.insert(key(&[tenant, agent]), sentiment);
                exp.compliance.insert(key(&[tenant, policy]), compliance);
            }
        }
        if resolution == Resolution::Transferred {
            conv.track_decision(Decision::transfer("humans", "asked for a human"));
        }
        for error_type in errors {
            conv.track_error(error_type, "something failed");
            add(&mut exp.errors, key(&[SERVICE, error_type]), 1.0);
        }
        let mut end = ConversationEnd::new(resolution).at(started + time::Duration::seconds(duration_s));
        if let Some(r) = rating {
            end = end.rating(r);
            add(&mut exp.rating_count, key(&[tenant, agent]), 1.0);
            add(&mut exp.rating_sum, key(&[tenant, agent]), f64::from(r));
            add(&mut exp.rating_le_3, key(&[tenant, agent]), if r <= 3 { 1.0 } else { 0.0 });
        }
        conv.end(end);

        add(&mut exp.duration_count, key(&[tenant, agent, resolution.as_str()]), 1.0);
        add(&mut exp.duration_sum, key(&[tenant, agent, resolution.as_str()]), duration_s as f64);
        add(&mut exp.interactions_count, key(&[tenant, "agent"]), 1.0);
        add(&mut exp.interactions_count, key(&[tenant, "customer"]), 1.0);
        add(&mut exp.interactions_sum, key(&[tenant, "agent"]), agent_turns as f64);
        add(&mut exp.interactions_sum, key(&[tenant, "customer"]), customer_turns as f64);
        *exp.resolutions.entry(key(&[tenant, agent])).or_default().entry(resolution.as_str()).or_insert(0) += 1;
    }
    exp
}

/// The samples of `promql`, keyed by the values of `labels` (in that order).
fn by_labels(prom: &Prometheus, promql: &str, labels: &[&str]) -> Series {
    let mut out = Series::new();
    for sample in prom.query_vector(promql) {
        let k: Vec<String> = labels.iter().map(|l| sample.label(l).to_string()).collect();
        if let Some(previous) = out.insert(k.clone(), sample.value) {
            panic!("{promql}: two samples for {labels:?} = {k:?} ({previous} and {})", sample.value);
        }
    }
    out
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

#[track_caller]
fn assert_series(prom: &Prometheus, promql: &str, labels: &[&str], expected: &Series) {
    let actual = by_labels(prom, promql, labels);
    let same = actual.len() == expected.len()
        && actual.iter().zip(expected).all(|((ka, va), (ke, ve))| ka == ke && close(*va, *ve));
    if !same {
        let missing: Vec<_> = expected.iter().filter(|(k, _)| !actual.contains_key(*k)).collect();
        let extra: Vec<_> = actual.iter().filter(|(k, _)| !expected.contains_key(*k)).collect();
        let differ: Vec<_> = expected
            .iter()
            .filter_map(|(k, ve)| actual.get(k).filter(|va| !close(**va, *ve)).map(|va| (k, *ve, *va)))
            .collect();
        panic!(
            "{promql} by {labels:?} differs from what was recorded\n  missing: {missing:?}\n  unexpected: {extra:?}\n  \
             (key, expected, got): {differ:?}"
        );
    }
}

/// Every series of every seed metric carries exactly the seed's label names, and Prometheus
/// scraped it with the seed's type.
fn assert_seed_contract(prom: &Prometheus) {
    let names: BTreeSet<&str> = SEED.iter().map(|(n, _, _)| *n).collect();
    let library: BTreeSet<&str> = SEED_METRICS.into_iter().collect();
    assert_eq!(names, library, "serphona_obs::metrics::SEED_METRICS is not the seed's list");

    for (name, kind, labels) in SEED {
        let expected: BTreeSet<&str> = labels.iter().copied().collect();
        let families: Vec<String> = if kind == "histogram" {
            ["_bucket", "_count", "_sum"].iter().map(|s| format!("{name}{s}")).collect()
        } else {
            vec![name.to_string()]
        };
        for family in &families {
            let series = prom.series(&format!("{family}{{job=\"{JOB}\"}}"));
            assert!(!series.is_empty(), "Prometheus has no series of {family} (seed metric {name}, {kind})");
            for s in &series {
                let keys: BTreeSet<&str> = s
                    .keys()
                    .map(String::as_str)
                    .filter(|k| !NOT_SEED_LABELS.contains(k))
                    .filter(|k| !(family.ends_with("_bucket") && *k == "le"))
                    .collect();
                assert_eq!(keys, expected, "label names of {family} (series {s:?}) are not the seed's");
            }
            if family.ends_with("_bucket") {
                assert!(series.iter().all(|s| s.contains_key("le")), "{family} series without `le`: {series:?}");
                assert!(
                    series.iter().any(|s| s["le"] == "+Inf"),
                    "{family} has no le=\"+Inf\" bucket: {series:?}"
                );
            }
        }
        let metadata = prom.metadata(name);
        let types: Vec<&str> = metadata.iter().filter_map(|m| m["type"].as_str()).collect();
        assert_eq!(types, [kind], "Prometheus's metadata type of {name}: {metadata:?}");
    }
}

/// Scrapes, then checks names, label names, types and every value of the eleven seed metrics.
#[test]
fn prometheus_scrapes_the_seed_metrics_with_their_labels_and_values() {
    const N: usize = 37;
    let dir = tempfile::tempdir().unwrap();
    let obs = init(&dir, 1000);
    let addr = obs.metrics_addr().expect("/metrics is served");

    // The example of the brief, word for word (one more conversation, on its own tenant).
    let conv = obs.start_conversation(ConversationStart::new("tenant", "agent", "cust", Channel::Voice));
    conv.track_interaction(
        Interaction::customer("hi").sentiment(-0.2).intent("billing", 0.9).duration_ms(800.0).compliance("pci_dss", 0.95),
    );
    conv.track_interaction(
        Interaction::agent("hello")
            .assertiveness(0.7)
            .latency(TurnLatency { response_ms: Some(900.0), ..Default::default() }),
    );
    conv.track_decision(Decision::transfer("humans", "asked for a human"));
    conv.track_error("llm_timeout", "LLM timed out");
    conv.end(ConversationEnd::new(Resolution::Transferred).rating(4));
    // HTTP requests as the middleware records them: route templates, never raw paths.
    obs.record_http_request("GET", "/conversations/{id}", 200, Duration::from_millis(12));
    obs.record_http_request("GET", "/conversations/{id}", 200, Duration::from_millis(30));
    obs.record_http_request("POST", "/conversations", 500, Duration::from_millis(80));

    let exp = run_conversations(&obs, N);

    let prom = Prometheus::start(&[addr]);
    prom.wait_for("the library's metrics in Prometheus", WAIT, |p| {
        p.value(&format!("sum(conversation_total{{job=\"{JOB}\"}})")).is_some()
    });
    prom.wait_for_scrapes(2, WAIT);

    assert_seed_contract(&prom);

    // Totals, including the brief's example conversation.
    let total = (N + 1) as f64;
    assert_eq!(prom.value("sum(conversation_total)"), Some(total), "sum(conversation_total)");
    assert_eq!(prom.value("sum(conversation_duration_seconds_count)"), Some(total));
    assert_eq!(prom.value(r#"sum(conversation_interactions_total_count{speaker_type="customer"})"#), Some(total));
    assert_eq!(prom.value("sum(serphona_obs_active_conversations)"), Some(0.0), "every conversation ended");

    // The brief's example, exactly.
    let one = r#"tenant_id="tenant",agent_id="agent""#;
    assert_eq!(prom.value(&format!(r#"conversation_total{{{one},channel="voice"}}"#)), Some(1.0));
    assert_eq!(prom.value(&format!(r#"conversation_resolution_rate{{{one},resolution_type="transferred"}}"#)), Some(1.0));
    assert_eq!(prom.value(&format!(r#"conversation_resolution_rate{{{one},resolution_type="resolved"}}"#)), Some(0.0));
    assert_eq!(prom.value(&format!("conversation_customer_rating_sum{{{one}}}")), Some(4.0));
    assert_eq!(prom.value(&format!("conversation_sentiment_score{{{one}}}")), Some(-0.2));
    assert_eq!(prom.value(r#"agent_assertiveness_score{agent_id="agent"}"#), Some(0.7));
    assert_eq!(prom.value(r#"conversation_compliance_score{tenant_id="tenant",policy="pci_dss"}"#), Some(0.95));
    assert_eq!(prom.value(&format!("agent_response_time_seconds_sum{{{one}}}")), Some(0.9));
    assert_eq!(
        prom.value(r#"conversation_interactions_total_sum{tenant_id="tenant",speaker_type="agent"}"#),
        Some(1.0)
    );

    // The generated traffic, series by series (the example's tenant excluded).
    let not_example = r#"tenant_id!="tenant""#;
    let q = |metric: &str| format!("{metric}{{job=\"{JOB}\",{not_example}}}");
    assert_series(&prom, &q("conversation_total"), &["tenant_id", "agent_id", "channel"], &exp.conversation_total);
    assert_series(
        &prom,
        &q("conversation_duration_seconds_count"),
        &["tenant_id", "agent_id", "resolution"],
        &exp.duration_count,
    );
    assert_series(
        &prom,
        &q("conversation_duration_seconds_sum"),
        &["tenant_id", "agent_id", "resolution"],
        &exp.duration_sum,
    );
    assert_series(&prom, &q("conversation_interactions_total_count"), &["tenant_id", "speaker_type"], &exp.interactions_count);
    assert_series(&prom, &q("conversation_interactions_total_sum"), &["tenant_id", "speaker_type"], &exp.interactions_sum);
    assert_series(
        &prom,
        &q("conversation_resolution_rate"),
        &["tenant_id", "agent_id", "resolution_type"],
        &exp.resolution_rate(),
    );
    assert_series(&prom, &q("conversation_customer_rating_count"), &["tenant_id", "agent_id"], &exp.rating_count);
    assert_series(&prom, &q("conversation_customer_rating_sum"), &["tenant_id", "agent_id"], &exp.rating_sum);
    assert_series(
        &prom,
        &format!(r#"conversation_customer_rating_bucket{{job="{JOB}",{not_example},le="3"}}"#),
        &["tenant_id", "agent_id"],
        &exp.rating_le_3,
    );
    assert_series(&prom, &q("agent_response_time_seconds_count"), &["agent_id", "tenant_id"], &exp.response_count);
    assert_series(&prom, &q("agent_response_time_seconds_sum"), &["agent_id", "tenant_id"], &exp.response_sum);
    assert_series(&prom, &q("conversation_sentiment_score"), &["tenant_id", "agent_id"], &exp.sentiment);
    assert_series(&prom, &q("conversation_compliance_score"), &["tenant_id", "policy"], &exp.compliance);
    assert_series(
        &prom,
        &format!(r#"agent_assertiveness_score{{job="{JOB}",agent_id!="agent"}}"#),
        &["agent_id"],
        &exp.assertiveness,
    );
    // error_rate has no tenant: the example's llm_timeout is counted with the rest.
    let mut errors = exp.errors.clone();
    add(&mut errors, key(&[SERVICE, "llm_timeout"]), 1.0);
    add(&mut errors, key(&[SERVICE, "http_5xx"]), 1.0); // the POST that answered 500
    assert_series(&prom, &format!("error_rate{{job=\"{JOB}\"}}"), &["service", "error_type"], &errors);

    // A resolution rate worked out by hand: acme-telco/billing-bot has conversations 0, 12, 24
    // and 36 of the loop: resolved, resolved, abandoned, unresolved.
    let acme_billing = r#"tenant_id="acme-telco",agent_id="billing-bot""#;
    for (resolution, share) in
        [("resolved", 0.5), ("abandoned", 0.25), ("unresolved", 0.25), ("transferred", 0.0), ("escalated", 0.0)]
    {
        let got = prom.value(&format!(r#"conversation_resolution_rate{{{acme_billing},resolution_type="{resolution}"}}"#));
        assert_eq!(got, Some(share), "acme-telco/billing-bot {resolution} rate");
    }
    // The shares of one tenant/agent add up to 1.
    let sums = prom.query_vector("sum by (tenant_id, agent_id) (conversation_resolution_rate)");
    assert!(!sums.is_empty());
    for s in &sums {
        assert!(close(s.value, 1.0), "resolution rates of {:?} add up to {}", s.labels, s.value);
    }

    // The recorded requests, one series per route template; scrapes of /metrics are not
    // recorded (no telemetry about the library's own export paths).
    let http = prom.series(&format!("http_request_duration_seconds_count{{job=\"{JOB}\"}}"));
    let http: BTreeSet<(&str, &str, &str)> =
        http.iter().map(|s| (s["method"].as_str(), s["path"].as_str(), s["status"].as_str())).collect();
    assert_eq!(
        http,
        BTreeSet::from([("GET", "/conversations/{id}", "200"), ("POST", "/conversations", "500")]),
        "http_request_duration_seconds series"
    );
    assert_eq!(prom.value(r#"http_request_duration_seconds_count{method="GET",path="/conversations/{id}",status="200"}"#), Some(2.0));

    // No label hit the cap.
    let overflow = prom.value(&format!("sum(serphona_obs_label_overflow_total{{job=\"{JOB}\"}})")).unwrap_or(0.0);
    assert_eq!(overflow, 0.0, "no label should overflow with max_label_values = 1000");

    obs.shutdown(Duration::from_secs(5)).expect("shutdown");
}

/// `metrics.max_label_values` caps tenant_id: past the cap, tenants are recorded as `other`
/// in every metric, and the overflow is counted.
#[test]
fn prometheus_sees_tenants_past_the_cap_as_other() {
    let dir = tempfile::tempdir().unwrap();
    let obs = init(&dir, 2);
    let addr = obs.metrics_addr().expect("/metrics is served");

    // t1 and t2 come first and keep their names; t3 and t4 overflow. Two agents: no agent
    // overflow.
    let plan = [
        ("t1", "a1", Resolution::Resolved),
        ("t2", "a1", Resolution::Resolved),
        ("t1", "a1", Resolution::Resolved),
        ("t3", "a1", Resolution::Resolved),
        ("t1", "a1", Resolution::Transferred),
        ("t4", "a1", Resolution::Unresolved),
        ("t2", "a2", Resolution::Abandoned),
        ("t3", "a2", Resolution::Escalated),
        ("t1", "a1", Resolution::Resolved),
        ("t3", "a1", Resolution::Resolved),
    ];
    for (i, (tenant, agent, resolution)) in plan.into_iter().enumerate() {
        let conv = obs.start_conversation(ConversationStart::new(tenant, agent, format!("c{i}"), Channel::Chat));
        conv.track_interaction(Interaction::customer("hello").sentiment(0.1 * i as f64));
        conv.track_interaction(
            Interaction::agent("hi").latency(TurnLatency { response_ms: Some(500.0), ..Default::default() }),
        );
        conv.end(ConversationEnd::new(resolution).rating(5));
    }

    let prom = Prometheus::start(&[addr]);
    prom.wait_for_scrapes(2, WAIT);

    let by_tenant = by_labels(&prom, "sum by (tenant_id) (conversation_total)", &["tenant_id"]);
    let expected: Series =
        [(key(&["t1"]), 4.0), (key(&["t2"]), 2.0), (key(&[OVERFLOW_LABEL]), 4.0)].into_iter().collect();
    assert_eq!(by_tenant, expected, "conversation_total by tenant_id with max_label_values = 2");
    assert_eq!(
        prom.value(r#"conversation_total{tenant_id="other",agent_id="a1",channel="chat"}"#),
        Some(3.0),
        "t3/a1 twice and t4/a1 once, as other"
    );

    // Every tenant-labelled series of the library uses only the kept values and `other`.
    let tenants: BTreeSet<String> = prom
        .query_vector(&format!("count by (tenant_id) ({{job=\"{JOB}\",tenant_id!=\"\"}})"))
        .into_iter()
        .map(|s| s.label("tenant_id").to_string())
        .collect();
    let allowed: BTreeSet<String> = ["t1", "t2", OVERFLOW_LABEL].map(String::from).into_iter().collect();
    assert_eq!(tenants, allowed, "tenant_id values across all metrics");

    // Each start of t3/t4 is an overflow; agents stayed under the cap.
    assert_eq!(prom.value(r#"serphona_obs_label_overflow_total{label="tenant_id"}"#), Some(4.0));
    assert_eq!(prom.value(r#"serphona_obs_label_overflow_total{label="agent_id"}"#).unwrap_or(0.0), 0.0);

    // Resolution rates by hand: t1/a1 resolved 3 of 4; other/a1 (t3, t4, t3) resolved 2 of 3
    // and unresolved 1 of 3; other/a2 escalated 1 of 1.
    let rate = |t: &str, a: &str, r: &str| {
        prom.value(&format!(r#"conversation_resolution_rate{{tenant_id="{t}",agent_id="{a}",resolution_type="{r}"}}"#))
    };
    assert_eq!(rate("t1", "a1", "resolved"), Some(0.75));
    assert_eq!(rate("t1", "a1", "transferred"), Some(0.25));
    assert_eq!(rate("t1", "a1", "abandoned"), Some(0.0));
    assert!(rate("other", "a1", "resolved").is_some_and(|v| close(v, 2.0 / 3.0)), "{:?}", rate("other", "a1", "resolved"));
    assert!(rate("other", "a1", "unresolved").is_some_and(|v| close(v, 1.0 / 3.0)));
    assert_eq!(rate("other", "a2", "escalated"), Some(1.0));
    assert_eq!(rate("t2", "a2", "abandoned"), Some(1.0));

    // Ratings and response times of overflowed tenants land in `other` too.
    assert_eq!(prom.value(r#"sum(conversation_customer_rating_count{tenant_id="other"})"#), Some(4.0));
    assert_eq!(prom.value(r#"sum(agent_response_time_seconds_count{tenant_id="other"})"#), Some(4.0));

    obs.shutdown(Duration::from_secs(5)).expect("shutdown");
}

/// The issue's acceptance as a user runs it: the real `serphona-obs demo --keep-serving` is
/// scraped by the real Prometheus, which sees the seed's contract and exactly the conversations
/// the demo simulated.
#[test]
fn prometheus_scrapes_the_demo_binary() {
    let dir = tempfile::tempdir().unwrap();
    let addr = crate::support::free_addr();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_serphona-obs"))
        .args(["demo", "--no-tui", "--conversations", "200", "--seed", "7", "--keep-serving", "120"])
        .args(["--metrics-addr", &addr.to_string(), "--data-dir", dir.path().to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("run serphona-obs demo");
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let guard = Kill(child);
    let prom = Prometheus::start(&[addr]);
    // (--keep-serving adds a trickle of new conversations after the demo's 200: issue 12, item 13.)
    prom.wait_for("sum(conversation_duration_seconds_count) >= 200 from the demo binary", WAIT, |p| {
        p.value("sum(conversation_duration_seconds_count)").is_some_and(|n| n >= 200.0)
    });
    prom.wait_for_scrapes(2, WAIT);
    assert_seed_contract(&prom);
    // Every ended conversation is in the duration histogram and the resolution rates add up.
    let (started, ended) = (prom.value("sum(conversation_total)").unwrap(), prom.value("sum(conversation_duration_seconds_count)").unwrap());
    assert!(ended >= 200.0 && ended <= started, "{ended} ended of {started} started");
    let rates = prom.query_vector("sum by (tenant_id, agent_id) (conversation_resolution_rate)");
    assert!(rates.len() >= 4, "one rate set per tenant/agent pair: {rates:?}");
    assert!(rates.iter().all(|s| close(s.value, 1.0)), "{rates:?}");
    drop(guard);
}
