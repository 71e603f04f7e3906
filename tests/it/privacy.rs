//! Privacy (issue 15): personal data never leaves the process unredacted, the detectors'
//! precision and recall over a corpus, erasure of a customer from every store, and private
//! files.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serphona_obs::config::{Endpoint, OptionalEndpoint, PrivacyConfig, RedactionRule};
use serphona_obs::processors::Detector;
use serphona_obs::processors::redaction::{Counts, Redactor, luhn_valid};
use serphona_obs::simulation::{self, Pace, SimConfig};
use serphona_obs::sinks::event_log::{event_log_dir, list_segments};
use serphona_obs::{Config, Observability};

use crate::support::clickhouse::ClickHouse;
use crate::support::{loki, otlp};

/// The simulator's dates of birth, as a custom rule (the built-ins do not look for dates).
fn dob_rule() -> RedactionRule {
    RedactionRule { name: "date_of_birth".into(), pattern: r"\b(?:19|20)[0-9]{2}-[0-9]{2}-[0-9]{2}\b".into() }
}

// ---------------------------------------------------------------------------------------------
// Corpus: ≥50 positives and ≥50 near-misses per built-in detector.

fn luhn_complete(mut digits: Vec<u8>) -> Vec<u8> {
    digits.push(0);
    for check in 0..10 {
        *digits.last_mut().unwrap() = check;
        let ascii: Vec<u8> = digits.iter().map(|d| b'0' + d).collect();
        if luhn_valid(&ascii) {
            return digits;
        }
    }
    unreachable!()
}

fn digits_str(d: &[u8]) -> String {
    d.iter().map(|d| char::from(b'0' + d)).collect()
}

fn group(s: &str, sizes: &[usize], sep: &str) -> String {
    let mut out = Vec::new();
    let mut i = 0;
    for &n in sizes {
        out.push(&s[i..i + n]);
        i += n;
    }
    out.join(sep)
}

fn card(rng: &mut ChaCha8Rng, prefix: &[u8], len: usize) -> String {
    let mut d = prefix.to_vec();
    while d.len() < len - 1 {
        d.push(rng.random_range(0..10));
    }
    digits_str(&luhn_complete(d))
}

fn iban(rng: &mut ChaCha8Rng, country: &str, bban_len: usize, letters: usize) -> String {
    let mut bban = String::new();
    for i in 0..bban_len {
        if i < letters {
            bban.push(char::from(b'A' + rng.random_range(0..26u8)));
        } else {
            bban.push(char::from(b'0' + rng.random_range(0..10u8)));
        }
    }
    let numeric: String = format!("{bban}{country}00")
        .chars()
        .map(|c| if c.is_ascii_digit() { c.to_string() } else { (c as u32 - 'A' as u32 + 10).to_string() })
        .collect();
    let rem = numeric.bytes().fold(0u32, |r, b| (r * 10 + u32::from(b - b'0')) % 97);
    format!("{country}{:02}{bban}", 98 - rem)
}

fn grouped4(s: &str) -> String {
    s.as_bytes().chunks(4).map(|c| std::str::from_utf8(c).unwrap()).collect::<Vec<_>>().join(" ")
}

struct Corpus {
    positives: Vec<String>,
    near_misses: Vec<String>,
}

fn corpus(detector: Detector) -> Corpus {
    let mut rng = ChaCha8Rng::seed_from_u64(15);
    let (mut positives, mut near_misses): (Vec<String>, Vec<String>) = (Vec::new(), Vec::new());
    match detector {
        Detector::CardNumber => {
            for i in 0..60 {
                let (prefix, len, sizes): (&[u8], usize, &[usize]) = match i % 6 {
                    0 => (&[4], 16, &[4, 4, 4, 4]),
                    1 => (&[5, 1 + (i % 5) as u8], 16, &[4, 4, 4, 4]),
                    2 => (&[3, 7], 15, &[4, 6, 5]),
                    3 => (&[6, 0, 1, 1], 16, &[4, 4, 4, 4]),
                    4 => (&[4], 13, &[13]),
                    _ => (&[6, 2], 19, &[4, 4, 4, 4, 3]),
                };
                let n = card(&mut rng, prefix, len);
                positives.push(match i % 3 {
                    0 => n,
                    1 => group(&n, sizes, " "),
                    _ => group(&n, sizes, "-"),
                });
                // The same shape, Luhn-invalid.
                let mut bad: Vec<u8> = positives.last().unwrap().bytes().collect();
                let last = bad.len() - 1;
                bad[last] = b'0' + (bad[last] - b'0' + 1) % 10;
                near_misses.push(String::from_utf8(bad).unwrap());
            }
            positives.extend(["4111 1111 1111 1111", "5500-0000-0000-0004", "378282246310005", "6011111111111117"].map(String::from));
            near_misses.extend(
                [
                    "order 100234",
                    "ORD-2024-000123",
                    "2024-01-15 10:30:00",
                    "2024-01-15T10:30:00.123456Z",
                    "$1,234,567.89",
                    "1234.56 EUR",
                    "1Z999AA10123456784",
                    "9400111899223100012345",
                    "9400 1118 9922 3100 0123 45",
                    "tracking 420941079405511899223197428490",
                    "+1 415 555 0134",
                    "0192f7e4-4111-7111-8111-111111111111",
                    "invoice 20240115-00042",
                    "1700000000000",
                    "4111111111111111111111",
                ]
                .map(String::from),
            );
        }
        Detector::Email => {
            let first = ["maria", "james", "li", "fatima", "o.connor", "j_doe", "x+tag", "Anna-Lena"];
            let domains = ["example.com", "mail.example.org", "example.co.uk", "EXAMPLE.IO", "sub.domain.example.net"];
            for i in 0..60 {
                positives.push(format!(
                    "{}{}@{}",
                    first[i % first.len()],
                    if i % 2 == 0 { rng.random_range(1..1000).to_string() } else { String::new() },
                    domains[i % domains.len()]
                ));
            }
            for i in 0..50 {
                near_misses.push(match i % 10 {
                    0 => format!("@handle{i}"),
                    1 => format!("user{i}@localhost"),
                    2 => format!("pkg@1.{i}.3"),
                    3 => format!("name{i} at example dot com"),
                    4 => format!("a{i} @ example"),
                    5 => format!("foo{i}@"),
                    6 => format!("twitter.com/@user{i}"),
                    7 => format!("name{i}[at]example.com"),
                    8 => format!("v{i}.example.com"),
                    _ => format!("git@{i}"),
                });
            }
        }
        Detector::Phone => {
            for i in 0..60 {
                let a: u32 = rng.random_range(200..999);
                let b: u32 = rng.random_range(200..999);
                let c: u32 = rng.random_range(0..10000);
                positives.push(match i % 10 {
                    0 => format!("+1 {a} {b} {c:04}"),
                    1 => format!("+1{a}{b}{c:04}"),
                    2 => format!("({a}) {b}-{c:04}"),
                    3 => format!("{a}-{b}-{c:04}"),
                    4 => format!("{a}.{b}.{c:04}"),
                    5 => format!("+44 20 {b}{} {c:04}", a % 10),
                    6 => format!("+49 30 {a}{b}{}", c % 100),
                    7 => format!("020 7{b} {c:04}"),
                    8 => format!("07{:03} {b}{:03}", a % 1000, c % 1000),
                    _ => format!("+33 1 {:02} {:02} {:02} {:02}", a % 100, b % 100, c % 100, (c / 100) % 100),
                });
            }
            for i in 0..50 {
                let n: u32 = rng.random_range(1000..99999);
                near_misses.push(match i % 10 {
                    0 => format!("order {n}"),
                    1 => format!("2024-0{}-1{} 10:30:00", 1 + i % 9, i % 10),
                    2 => format!("${n},{:03}.56", i),
                    3 => format!("v1.{i}.{n}"),
                    4 => format!("room {n}"),
                    5 => format!("192.168.{}.{}", i, n % 255),
                    6 => format!("1Z999AA1{n:05}6784"),
                    7 => format!("12:{:02}:{:02}", i % 60, n % 60),
                    8 => format!("ZIP {n:05}"),
                    _ => format!("{}.0{}.2024", 10 + i % 18, 1 + i % 9),
                });
            }
        }
        Detector::Iban => {
            let countries: [(&str, usize, usize); 6] =
                [("DE", 18, 0), ("GB", 18, 4), ("FR", 23, 0), ("NL", 14, 4), ("ES", 20, 0), ("IT", 23, 1)];
            for i in 0..60 {
                let (c, len, letters) = countries[i % countries.len()];
                let v = iban(&mut rng, c, len, letters);
                positives.push(if i % 2 == 0 { v.clone() } else { grouped4(&v) });
                // A wrong check: one digit of the account changed.
                let mut bad: Vec<u8> = v.bytes().collect();
                let last = bad.len() - 1;
                bad[last] = b'0' + (bad[last] - b'0' + 1) % 10;
                let bad = String::from_utf8(bad).unwrap();
                near_misses.push(if i % 2 == 0 { bad } else { grouped4(&bad) });
            }
            positives.extend(["GB82 WEST 1234 5698 7654 32", "DE89370400440532013000"].map(String::from));
            near_misses.extend(
                ["DE123456789", "ISO8601", "SKU12345678ABCD", "LH1234 FRA-JFK", "AB12 CDEF", "US00 0000 0000 0000 00"].map(String::from),
            );
        }
        Detector::UsSsn => {
            for i in 0..60 {
                let area = loop {
                    let a: u32 = rng.random_range(1..900);
                    if a != 666 {
                        break a;
                    }
                };
                let g: u32 = rng.random_range(1..100);
                let s: u32 = rng.random_range(1..10000);
                let sep = if i % 2 == 0 { "-" } else { " " };
                positives.push(format!("{area:03}{sep}{g:02}{sep}{s:04}"));
            }
            for i in 0..50u32 {
                near_misses.push(match i % 10 {
                    0 => format!("000-{:02}-{:04}", 1 + i, 1000 + i),
                    1 => format!("666-{:02}-{:04}", 1 + i, 1000 + i),
                    2 => format!("9{:02}-{:02}-{:04}", i, 1 + i, 1000 + i),
                    3 => format!("123-00-{:04}", 1000 + i),
                    4 => format!("123-{:02}-0000", 1 + i),
                    5 => format!("415-555-{:04}", 100 + i),
                    6 => format!("2024-01-{:02}", 1 + i % 28),
                    7 => format!("12-345-{:04}", 6000 + i),
                    8 => format!("123-45-{:05}", 60000 + i),
                    _ => format!("123-{:02} {:04}", 10 + i, 1000 + i),
                });
            }
        }
    }
    Corpus { positives, near_misses }
}

fn only(detector: Detector) -> Redactor {
    let config = PrivacyConfig { redact: vec![detector], ..PrivacyConfig::default() };
    Redactor::new(&config, Path::new(".")).unwrap()
}

#[test]
fn privacy_detectors_have_full_recall_and_cards_and_ibans_no_false_positives_on_the_corpus() {
    let mut report = Vec::new();
    for detector in Detector::ALL {
        let c = corpus(detector);
        assert!(c.positives.len() >= 50 && c.near_misses.len() >= 50, "{detector}: corpus too small");
        let r = only(detector);
        let token = format!("[REDACTED:{detector}]");
        let mut missed = Vec::new();
        for p in &c.positives {
            let text = format!("customer said: {p}. thanks");
            let out = r.redact_text("t", &text, &mut Counts::new()).unwrap_or(text.clone());
            if out != format!("customer said: {token}. thanks") {
                missed.push(format!("{p:?} -> {out:?}"));
            }
        }
        let mut false_positives = Vec::new();
        for n in &c.near_misses {
            let text = format!("customer said: {n}. thanks");
            if let Some(out) = r.redact_text("t", &text, &mut Counts::new()) {
                false_positives.push(format!("{n:?} -> {out:?}"));
            }
        }
        let tp = (c.positives.len() - missed.len()) as f64;
        let recall = tp / c.positives.len() as f64;
        let precision = if tp + false_positives.len() as f64 > 0.0 { tp / (tp + false_positives.len() as f64) } else { 0.0 };
        println!(
            "{detector:<12} positives {:>3} near-misses {:>3}  recall {:.3}  precision {:.3}  near-misses redacted {}",
            c.positives.len(),
            c.near_misses.len(),
            recall,
            precision,
            false_positives.len()
        );
        report.push((detector, missed, false_positives));
    }
    for (detector, missed, false_positives) in report {
        assert!(missed.is_empty(), "{detector} missed:\n{}", missed.join("\n"));
        if matches!(detector, Detector::CardNumber | Detector::Iban) {
            assert!(false_positives.is_empty(), "{detector} redacted near-misses:\n{}", false_positives.join("\n"));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The leak test.

/// Card numbers as the detector defines them, searched independently of it: runs of 13–19
/// digits split by one kind of separator, Luhn-valid, not part of a longer token.
fn luhn_cards(text: &str) -> Vec<String> {
    let re = regex::Regex::new(r"[0-9](?:[0-9]|[ \-][0-9])*").unwrap();
    let b = text.as_bytes();
    re.find_iter(text)
        .filter(|m| {
            let s = m.as_str();
            let seps: BTreeSet<char> = s.chars().filter(|c| !c.is_ascii_digit()).collect();
            let digits: Vec<u8> = s.bytes().filter(u8::is_ascii_digit).collect();
            // Glued to a letter or digit, or joined to one by `.`, `-` or `/` (a decimal
            // fraction, a longer token): not a number of its own.
            let (start, end) = (m.start(), m.end());
            let glued = (start > 0 && b[start - 1].is_ascii_alphanumeric())
                || (start > 1 && b"./-".contains(&b[start - 1]) && b[start - 2].is_ascii_alphanumeric())
                || (end < b.len() && b[end].is_ascii_alphanumeric())
                || (end + 1 < b.len() && b"./-".contains(&b[end]) && b[end + 1].is_ascii_alphanumeric());
            seps.len() <= 1 && !glued && (13..=19).contains(&digits.len()) && luhn_valid(&digits)
        })
        .map(|m| m.as_str().to_string())
        .collect()
}

fn search(store: &str, text: &str, planted: &[(&'static str, String)], leaks: &mut Vec<String>) {
    // Hex ids (trace, span, event, interaction ids) are not caller text: a span id that
    // happens to be all decimal digits is not a card number.
    let ids = regex::Regex::new(r#"\\?"[a-z_]*id\\?":\s*\\?"[0-9a-fA-F\-]{16,36}\\?""#).unwrap();
    let text = ids.replace_all(text, "");
    let text = text.as_ref();
    for card in luhn_cards(text) {
        leaks.push(format!("{store}: Luhn-valid card number {card}"));
    }
    for (kind, value) in planted {
        let digits: String = value.chars().filter(char::is_ascii_digit).collect();
        if text.contains(value.as_str()) || (*kind == "card_number" && text.contains(&digits)) {
            leaks.push(format!("{store}: planted {kind} {value}"));
        }
    }
}

#[test]
fn privacy_nothing_the_simulated_customers_say_reaches_any_sink_and_every_value_is_counted() {
    let ch = ClickHouse::start();
    let db = ch.fresh_database();
    let dir = tempfile::tempdir().unwrap();
    ch.apply_schema(&db, dir.path());
    let loki = loki::Receiver::start();
    let otlp = otlp::Receiver::start(otlp::Transport::Http);
    let mut config: Config = ch.library_config(&db, dir.path());
    config.logging.loki_endpoint = OptionalEndpoint(Some(Endpoint::parse(&loki.endpoint()).unwrap()));
    config.tracing.enabled = true;
    config.tracing.endpoint = Endpoint::parse(&otlp.endpoint()).unwrap();
    config.tracing.protocol = otlp.protocol();
    config.privacy.rules = vec![dob_rule()];
    let obs = Observability::init(config).expect("init");
    let mut live = obs.subscribe();
    let collector = std::thread::spawn(move || {
        let mut seen = Vec::new();
        while let Some(event) = live.blocking_recv() {
            seen.push(serde_json::to_string(&*event).unwrap());
        }
        seen
    });
    let sim = SimConfig { conversations: 150, seed: 15, rate: 50.0, concurrency: 20, pace: Pace::Fast, run_id: None };
    let report = simulation::run(&obs, &sim, &AtomicBool::new(false), |_| {}).expect("simulate");
    assert_eq!(report.ended, 150);
    for kind in ["card_number", "email", "phone", "date_of_birth"] {
        assert!(report.planted.get(kind).copied().unwrap_or(0) > 0, "the run planted no {kind}: {:?}", report.planted);
    }
    obs.shutdown(Duration::from_secs(60)).expect("shutdown");
    let redactions = |kind: &str| obs.metrics().pipeline.redactions.with_label_values(&[kind]).get();
    let counted: BTreeMap<&str, u64> =
        ["card_number", "email", "phone", "iban", "us_ssn", "date_of_birth"].into_iter().map(|k| (k, redactions(k))).collect();
    let planted_total: u64 = report.planted.values().sum();
    println!("planted {:?}; serphona_obs_redactions_total {counted:?}", report.planted);
    for (kind, n) in &report.planted {
        assert_eq!(counted[kind], *n, "serphona_obs_redactions_total{{kind={kind:?}}} is not what the simulator planted");
    }
    assert_eq!(counted.values().sum::<u64>(), planted_total, "nothing else was redacted");
    drop(obs);
    let live_lines = collector.join().unwrap();

    let planted = &report.planted_values;
    let mut leaks = Vec::new();
    // The event log.
    let mut log_lines = 0;
    for (_, path) in list_segments(&event_log_dir(dir.path())).unwrap() {
        let text = std::fs::read_to_string(path).unwrap();
        log_lines += text.lines().count();
        search("event log", &text, planted, &mut leaks);
    }
    assert_eq!(log_lines as u64, report.events);
    // ClickHouse: every table.
    let tables = ch.query(&format!("SELECT name FROM system.tables WHERE database = '{db}' AND engine LIKE '%MergeTree%'"));
    let mut rows = 0;
    for table in tables.lines() {
        let text = ch.query(&format!("SELECT * FROM {db}.`{table}` FORMAT JSONEachRow"));
        rows += text.lines().count();
        search(&format!("clickhouse {table}"), &text, planted, &mut leaks);
    }
    assert!(rows as u64 >= report.events, "ClickHouse has the run ({rows} rows)");
    // Loki.
    let pushes = loki.wait_for_lines(Duration::from_secs(30), "every event", |l| l.len() as u64 >= report.events);
    search("loki", &pushes.join("\n"), planted, &mut leaks);
    for push in loki.accepted() {
        search("loki labels", &format!("{:?} {:?}", push.headers, push.streams.iter().map(|s| &s.labels).collect::<Vec<_>>()), planted, &mut leaks);
    }
    // OTLP: every attribute and event of every span.
    let turns = report.events_by_type["interaction.agent"] + report.events_by_type["interaction.customer"];
    let spans = otlp.wait_for(Duration::from_secs(30), "the spans", |s| s.len() as u64 >= turns);
    // Without the nanosecond timestamps (19-digit numbers, not caller text).
    let nanos = regex::Regex::new(r"unix_nano: [0-9]+").unwrap();
    let span_text: Vec<String> = spans.iter().map(|s| nanos.replace_all(&format!("{:?}", s.span), "").into_owned()).collect();
    search("otlp", &span_text.join("\n"), planted, &mut leaks);
    // The live subscriber.
    assert_eq!(live_lines.len() as u64, report.events);
    search("live", &live_lines.join("\n"), planted, &mut leaks);
    assert!(leaks.is_empty(), "{} leaks:\n{}", leaks.len(), leaks.join("\n"));
    // The tokens are there instead.
    let log = std::fs::read_to_string(&list_segments(&event_log_dir(dir.path())).unwrap()[0].1).unwrap();
    assert!(log.contains("[REDACTED:card_number]") && log.contains("[REDACTED:date_of_birth]"));
}

// ---------------------------------------------------------------------------------------------
// Erasure.

fn log_lines(data_dir: &Path) -> Vec<serde_json::Value> {
    list_segments(&event_log_dir(data_dir))
        .unwrap()
        .into_iter()
        .flat_map(|(_, p)| std::fs::read_to_string(p).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect::<Vec<_>>())
        .collect()
}

#[test]
fn privacy_forget_a_customer_leaves_nothing_of_them_in_any_table_or_file_and_nothing_else_changes() {
    let ch = ClickHouse::start();
    let db = ch.fresh_database();
    let dir = tempfile::tempdir().unwrap();
    ch.apply_schema(&db, dir.path());
    let config = ch.library_config(&db, dir.path());
    let obs = Observability::init(config).expect("init");
    let sim = SimConfig { conversations: 60, seed: 21, rate: 50.0, concurrency: 10, pace: Pace::Fast, run_id: None };
    simulation::run(&obs, &sim, &AtomicBool::new(false), |_| {}).expect("simulate");
    obs.shutdown(Duration::from_secs(60)).expect("shutdown");
    drop(obs);

    // The customer of the first conversation, and their conversations.
    let lines = log_lines(dir.path());
    let customer = lines.iter().find_map(|l| l["customer_id"].as_str()).unwrap().to_string();
    let theirs: BTreeSet<String> = lines
        .iter()
        .filter(|l| l["customer_id"] == customer.as_str())
        .map(|l| l["conversation_id"].as_str().unwrap().to_string())
        .collect();
    let tables: Vec<String> = ch
        .query(&format!(
            "SELECT table FROM system.columns WHERE database = '{db}' AND name = 'conversation_id' \
             AND table IN (SELECT name FROM system.tables WHERE database = '{db}' AND engine LIKE '%MergeTree%') ORDER BY table"
        ))
        .lines()
        .map(str::to_string)
        .collect();
    assert!(tables.len() >= 5, "{tables:?}");
    let in_list = theirs.iter().map(|c| format!("'{c}'")).collect::<Vec<_>>().join(",");
    let counts = |which: &str| -> BTreeMap<String, u64> {
        tables
            .iter()
            .map(|t| {
                let cond = if which == "theirs" { "IN" } else { "NOT IN" };
                (t.clone(), ch.query_u64(&format!("SELECT count() FROM {db}.`{t}` WHERE conversation_id {cond} ({in_list})")))
            })
            .collect()
    };
    let theirs_before = counts("theirs");
    let others_before = counts("others");
    let log_theirs = lines.iter().filter(|l| theirs.contains(l["conversation_id"].as_str().unwrap())).count();
    let log_others = lines.len() - log_theirs;
    assert!(theirs_before.values().all(|n| *n > 0), "{theirs_before:?}");

    let forget = |dry_run: bool| -> serde_json::Value {
        let mut cmd = ch.cli(&db, dir.path());
        cmd.env("SERPHONA_OBS_CLICKHOUSE_ENABLED", "true").args(["forget", "--customer", &customer, "-o", "json"]);
        if dry_run {
            cmd.arg("--dry-run");
        }
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "forget: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let removed = |report: &serde_json::Value, store: &str| -> u64 {
        report["removed"].as_array().unwrap().iter().filter(|r| r["store"] == store).map(|r| r["rows"].as_u64().unwrap()).sum()
    };
    // A dry run counts and changes nothing.
    let dry = forget(true);
    assert_eq!(removed(&dry, "event_log"), log_theirs as u64);
    assert_eq!(removed(&dry, "clickhouse"), theirs_before.values().sum::<u64>());
    assert_eq!(counts("theirs"), theirs_before);

    let first = forget(false);
    println!("{first:#}");
    let found: BTreeSet<String> =
        first["conversations"].as_array().unwrap().iter().map(|c| c.as_str().unwrap().to_string()).collect();
    assert_eq!(found, theirs);
    assert_eq!(removed(&first, "event_log"), log_theirs as u64);
    assert_eq!(removed(&first, "clickhouse"), theirs_before.values().sum::<u64>());
    for (table, n) in &theirs_before {
        let reported = first["removed"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["store"] == "clickhouse" && r["table"] == table.as_str())
            .map(|r| r["rows"].as_u64().unwrap());
        assert_eq!(reported, Some(*n), "{table}");
    }
    assert!(counts("theirs").values().all(|n| *n == 0), "{:?}", counts("theirs"));
    assert_eq!(counts("others"), others_before, "nothing else changed in ClickHouse");
    let after = log_lines(dir.path());
    assert_eq!(after.len(), log_others, "nothing else changed in the event log");
    assert!(after.iter().all(|l| !theirs.contains(l["conversation_id"].as_str().unwrap()) && l["customer_id"] != customer.as_str()));

    let second = forget(false);
    assert_eq!(second["removed"].as_array().unwrap().iter().map(|r| r["rows"].as_u64().unwrap()).sum::<u64>(), 0);
}

// ---------------------------------------------------------------------------------------------
// Files, config.

#[test]
#[allow(clippy::field_reassign_with_default)] // the way the crate docs show it
fn privacy_the_data_dir_event_log_and_spool_are_created_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut config = Config::default();
    config.data_dir = data.clone();
    config.metrics.enabled = false;
    config.tracing.enabled = false;
    config.privacy.mode = serphona_obs::config::RedactionMode::Hash;
    // ClickHouse down: the batch goes to the spool.
    config.clickhouse.enabled = true;
    config.clickhouse.endpoint = Endpoint::parse(&format!("http://127.0.0.1:{}", crate::support::free_port())).unwrap();
    config.clickhouse.flush_interval = Duration::from_millis(50);
    let obs = Observability::init(config).expect("init");
    let sim = SimConfig { conversations: 3, seed: 1, rate: 50.0, concurrency: 3, pace: Pace::Fast, run_id: None };
    simulation::run(&obs, &sim, &AtomicBool::new(false), |_| {}).expect("simulate");
    obs.shutdown(Duration::from_secs(1)).ok();
    drop(obs);
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let mut checked = 0;
    let mut walk = vec![data.clone()];
    while let Some(p) = walk.pop() {
        if p.is_dir() {
            assert_eq!(mode(&p), 0o700, "{}", p.display());
            walk.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        } else {
            assert_eq!(mode(&p), 0o600, "{}", p.display());
        }
        checked += 1;
    }
    assert!(data.join("spool").join("clickhouse").is_dir(), "the spool exists");
    assert!(data.join("privacy.key").is_file(), "the generated hash key exists");
    assert!(checked >= 6, "{checked}");
}

#[test]
fn privacy_a_bad_rule_pattern_is_a_config_error_naming_the_rule() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("c.yaml");
    std::fs::write(&file, "privacy:\n  rules: [{name: order_id, pattern: \"ORD-[0-9\"}]\n").unwrap();
    let out = crate::support::bin().arg("--config").arg(&file).args(["config", "show"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("privacy.rules[0].pattern") && err.contains("order_id"), "{err}");
    // The env override of the list, comma-separated.
    let out = crate::support::bin()
        .env("SERPHONA_OBS_PRIVACY_REDACT", "card_number,email")
        .args(["config", "show", "-o", "json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["privacy"]["redact"], serde_json::json!(["card_number", "email"]));
}

// ---------------------------------------------------------------------------------------------
// Spans: the caller text in span attributes and events goes through the same policy.

#[test]
#[allow(clippy::field_reassign_with_default)] // the way the crate docs show it
fn privacy_span_attributes_carry_the_redacted_reasons_intent_and_ids_unchanged() {
    use serphona_obs::types::*;
    let dir = tempfile::tempdir().unwrap();
    let otlp = otlp::Receiver::start(otlp::Transport::Http);
    let mut config = Config::default();
    config.data_dir = dir.path().to_path_buf();
    config.metrics.enabled = false;
    config.tracing.endpoint = Endpoint::parse(&otlp.endpoint()).unwrap();
    config.tracing.protocol = otlp.protocol();
    let obs = Observability::init(config).unwrap();
    let conv = obs.start_conversation(ConversationStart::new("acme", "bot", "cust-4111111111111111", Channel::Chat));
    conv.track_interaction(Interaction::customer("hi").intent("callback to jane@example.com", 0.9));
    conv.track_decision(Decision::new(DecisionType::ToolCall, "lookup", "customer read out 4111 1111 1111 1111"));
    conv.track_decision(Decision::transfer("billing", "wants a call on +1 415 555 0134"));
    conv.track_error("llm_timeout", "timed out while reading 4111-1111-1111-1111");
    conv.end(ConversationEnd::new(Resolution::Transferred));
    obs.shutdown(Duration::from_secs(10)).unwrap();
    let spans = otlp.wait_for(Duration::from_secs(20), "the conversation's spans", |s| s.len() >= 5);
    let text: String = spans.iter().map(|s| format!("{:?}\n", s.span)).collect();
    for secret in ["4111 1111", "4111-1111", "jane@example.com", "555 0134"] {
        assert!(!text.contains(secret), "a span carries {secret:?}:\n{text}");
    }
    for token in ["[REDACTED:card_number]", "[REDACTED:email]", "[REDACTED:phone]"] {
        assert!(text.contains(token), "no {token} in the spans:\n{text}");
    }
    assert!(text.contains("cust-4111111111111111"), "the customer id is not redacted");
}
