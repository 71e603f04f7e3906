//! The `Store` trait over the local event log (issue 2): filters, one conversation, stats and
//! the event cursor.

use std::collections::HashSet;
use std::io::Write;
use std::time::Duration;

use serphona_obs::store::local::LocalStore;
use serphona_obs::store::{ConversationFilter, Cursor, GroupBy, Store};
use serphona_obs::types::*;
use serphona_obs::{Config, Observability};
use time::OffsetDateTime;

fn obs(dir: &std::path::Path, max_file_bytes: u64) -> Observability {
    let mut config = Config { data_dir: dir.to_path_buf(), ..Config::default() };
    config.metrics.enabled = false;
    config.logging.max_file_bytes = max_file_bytes;
    Observability::init(config).unwrap()
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
}

/// Known conversations at known times: (tenant, agent, channel, start offset s, duration s,
/// resolution or None for still active, rating, agent response times).
struct Known {
    base: OffsetDateTime,
    ids: Vec<String>,
}

/// (tenant, agent, channel, start offset s, duration s, resolution or None, rating)
type Planned = (&'static str, &'static str, Channel, i64, i64, Option<Resolution>, Option<u8>);

fn record(obs: &Observability) -> Known {
    let base = OffsetDateTime::now_utc() - time::Duration::hours(3);
    let s = |secs: i64| base + time::Duration::seconds(secs);
    let plan: [Planned; 6] = [
        ("acme", "bot-a", Channel::Voice, 0, 60, Some(Resolution::Resolved), Some(5)),
        ("acme", "bot-a", Channel::Chat, 600, 120, Some(Resolution::Transferred), Some(3)),
        ("acme", "bot-b", Channel::Voice, 1200, 30, Some(Resolution::Resolved), Some(4)),
        ("globex", "bot-c", Channel::Sms, 1800, 300, Some(Resolution::Abandoned), None),
        ("globex", "bot-c", Channel::Voice, 2400, 90, Some(Resolution::Resolved), None),
        ("globex", "bot-c", Channel::Chat, 3000, 0, None, None), // still active
    ];
    let mut ids = Vec::new();
    for (i, (tenant, agent, channel, start, duration, resolution, rating)) in plan.into_iter().enumerate() {
        let conv = obs.start_conversation(
            ConversationStart::new(tenant, agent, format!("cust-{i}"), channel).meta("campaign", if i % 2 == 0 { "even" } else { "odd" }).at(s(start)),
        );
        ids.push(conv.id().to_string());
        conv.track_interaction(Interaction::customer("help").sentiment(-0.5).duration_ms(1000.0).at(s(start + 1)));
        // Agent replies 2 s after the customer finished speaking.
        conv.track_interaction(Interaction::agent("sure").sentiment(0.5).at(s(start + 4)));
        if resolution == Some(Resolution::Transferred) {
            conv.track_decision(Decision::transfer("humans", "asked").at(s(start + 5)));
        }
        match resolution {
            Some(r) => {
                let end = ConversationEnd::new(r).at(s(start + duration));
                conv.end(match rating {
                    Some(x) => end.rating(x),
                    None => end,
                });
            }
            None => std::mem::forget(conv), // stays active (no end event)
        }
    }
    Known { base, ids }
}

/// The known conversations, recorded into a fresh event log, and the store over it.
fn recorded() -> (tempfile::TempDir, LocalStore, Known) {
    let dir = tempfile::tempdir().unwrap();
    let o = obs(dir.path(), 64 << 20);
    let known = record(&o);
    o.shutdown(Duration::from_secs(10)).unwrap();
    let store = LocalStore::open(dir.path());
    (dir, store, known)
}

#[test]
fn conversations_filters_and_order() {
    let (_dir, store, known) = recorded();
    let list = |f: ConversationFilter| block_on(store.conversations(&f)).unwrap();

    let all = list(ConversationFilter::default());
    assert_eq!(all.len(), 6);
    // Newest first.
    let ids: Vec<&str> = all.iter().map(|c| c.conversation_id.as_str()).collect();
    let mut expected: Vec<&str> = known.ids.iter().map(String::as_str).collect();
    expected.reverse();
    assert_eq!(ids, expected);
    assert_eq!(all[0].resolution, None, "the active one has no resolution");
    assert_eq!(all[0].ended_at, None);
    let transferred = all.iter().find(|c| c.resolution == Some(Resolution::Transferred)).unwrap();
    assert_eq!((transferred.agent_turns, transferred.customer_turns, transferred.decisions, transferred.transfers), (1, 1, 1, 1));
    assert_eq!(transferred.duration_seconds, Some(120.0));
    // Issue 12, item 12: the conversation's sentiment is the customer's (-0.5); the agent's own
    // +0.5 does not count.
    assert_eq!(transferred.mean_sentiment, Some(-0.5));
    assert_eq!(transferred.customer_id, "cust-1");

    assert_eq!(list(ConversationFilter { tenant: Some("acme".into()), ..Default::default() }).len(), 3);
    assert_eq!(list(ConversationFilter { agent: Some("bot-c".into()), ..Default::default() }).len(), 3);
    assert_eq!(list(ConversationFilter { channel: Some(Channel::Voice), ..Default::default() }).len(), 3);
    assert_eq!(list(ConversationFilter { resolution: Some(Resolution::Resolved), ..Default::default() }).len(), 3);
    let window = ConversationFilter {
        since: Some(known.base + time::Duration::seconds(600)),
        until: Some(known.base + time::Duration::seconds(1800)),
        ..Default::default()
    };
    assert_eq!(list(window).len(), 2, "since is inclusive, until exclusive");
    let meta = ConversationFilter { metadata: vec![("campaign".into(), "odd".into())], ..Default::default() };
    assert_eq!(list(meta).len(), 3);
    assert_eq!(list(ConversationFilter { limit: Some(2), ..Default::default() }).len(), 2);
    assert!(list(ConversationFilter { tenant: Some("acme' OR 1=1 --".into()), ..Default::default() }).is_empty());
}

#[test]
fn one_conversation_and_unknown_ids() {
    let (_dir, store, known) = recorded();
    let detail = block_on(store.conversation(&known.ids[1])).unwrap().unwrap();
    let types: Vec<&str> = detail.events.iter().map(|e| e.event_type().as_str()).collect();
    assert_eq!(
        types,
        ["conversation.started", "interaction.customer", "interaction.agent", "decision.made", "transfer.initiated", "conversation.ended"]
    );
    assert_eq!(detail.summary.trace_id, detail.events[0].trace.trace_id.to_string());
    assert!(block_on(store.conversation("no-such-conversation")).unwrap().is_none());
}

#[test]
fn stats_per_group_with_exact_percentiles() {
    let (_dir, store, _) = recorded();
    let all = block_on(store.stats(&ConversationFilter::default(), None)).unwrap();
    assert_eq!(all.len(), 1);
    let all = &all[0];
    assert_eq!((all.conversations, all.ended), (6, 5));
    assert_eq!(all.resolution_rate, Some(3.0 / 5.0));
    assert_eq!(all.transfer_rate, Some(1.0 / 6.0));
    // Durations 30, 60, 90, 120, 300: nearest-rank p50 = 90, p95 = p99 = 300.
    assert_eq!((all.duration_seconds.p50, all.duration_seconds.p95, all.duration_seconds.p99), (Some(90.0), Some(300.0), Some(300.0)));
    // Every agent reply came 2 s after the customer's turn ended.
    assert_eq!(all.response_seconds.p50, Some(2.0));
    assert_eq!(all.mean_rating, Some(4.0));
    assert_eq!(all.mean_sentiment, Some(-0.5), "the customers' turns only (issue 12, item 12)");
    assert_eq!(all.interactions, 12);

    let by_tenant = block_on(store.stats(&ConversationFilter::default(), Some(GroupBy::Tenant))).unwrap();
    let groups: Vec<(&str, u64, u64)> = by_tenant.iter().map(|r| (r.group.as_str(), r.conversations, r.ended)).collect();
    assert_eq!(groups, [("acme", 3, 3), ("globex", 3, 2)]);
    let by_resolution = block_on(store.stats(&ConversationFilter::default(), Some(GroupBy::Resolution))).unwrap();
    let groups: Vec<(&str, u64)> = by_resolution.iter().map(|r| (r.group.as_str(), r.conversations)).collect();
    assert_eq!(groups, [("abandoned", 1), ("active", 1), ("resolved", 3), ("transferred", 1)]);
    assert_eq!("team".parse::<GroupBy>().unwrap_err(), "unknown group \"team\" (accepted: tenant, agent, channel, resolution)");
}

#[test]
fn events_since_pages_without_duplicates_or_gaps_across_files_and_appends() {
    let dir = tempfile::tempdir().unwrap();
    // Small files, so the stream spans several of them.
    let o = obs(dir.path(), 4096);
    record(&o);
    o.shutdown(Duration::from_secs(10)).unwrap();
    let store = LocalStore::open(dir.path());
    let files = serphona_obs::sinks::event_log::list_segments(&dir.path().join("events")).unwrap();
    assert!(files.len() >= 3, "expected several files, got {}", files.len());
    let everything = store.read_all().unwrap();

    let mut cursor: Option<Cursor> = None;
    let mut seen = Vec::new();
    loop {
        let (page, next) = block_on(store.events_since(cursor.as_ref(), 4)).unwrap();
        assert!(page.len() <= 4);
        if page.is_empty() {
            cursor = Some(next);
            break;
        }
        seen.extend(page);
        cursor = Some(next);
    }
    assert_eq!(seen, everything);

    // More events arrive (a new process appends); the cursor continues with exactly them.
    let o = obs(dir.path(), 4096);
    let conv = o.start_conversation(ConversationStart::new("late", "bot", "c", Channel::Chat));
    conv.end(ConversationEnd::new(Resolution::Resolved));
    o.shutdown(Duration::from_secs(10)).unwrap();
    let (page, next) = block_on(store.events_since(cursor.as_ref(), 100)).unwrap();
    assert_eq!(page.len(), 2);
    assert!(page.iter().all(|e| &*e.tenant_id == "late"));

    // A line still being written is not consumed until it is whole.
    let (_, newest) = serphona_obs::sinks::event_log::list_segments(&dir.path().join("events")).unwrap().pop().unwrap();
    let line = page[0].to_json().unwrap().replace(&page[0].event_id.to_string(), &uuid::Uuid::now_v7().to_string());
    let (head, tail) = line.split_at(line.len() / 2);
    let mut file = std::fs::OpenOptions::new().append(true).open(&newest).unwrap();
    file.write_all(head.as_bytes()).unwrap();
    let (page, half) = block_on(store.events_since(Some(&next), 100)).unwrap();
    assert!(page.is_empty());
    assert_eq!(half, next);
    file.write_all(tail.as_bytes()).unwrap();
    file.write_all(b"\n").unwrap();
    let (page, _) = block_on(store.events_since(Some(&half), 100)).unwrap();
    assert_eq!(page.len(), 1);

    let ids: HashSet<_> = store.read_all().unwrap().iter().map(|e| e.event_id).collect();
    assert_eq!(ids.len(), everything.len() + 3);
}

#[test]
fn a_corrupt_line_is_skipped_and_counted_and_nothing_else_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let o = obs(dir.path(), 64 << 20);
    record(&o);
    o.shutdown(Duration::from_secs(10)).unwrap();
    let path = dir.path().join("events/events-000001.jsonl");
    let text = std::fs::read_to_string(&path).unwrap();
    let n = text.lines().count();
    let mut lines: Vec<&str> = text.lines().collect();
    lines.insert(3, "{\"this is\": not json");
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    let store = LocalStore::open(dir.path());
    assert_eq!(store.read_all().unwrap().len(), n);
    assert_eq!(store.skipped_lines(), 1);
    assert_eq!(block_on(store.conversations(&ConversationFilter::default())).unwrap().len(), 6);
}
