//! A trace as a tree of text lines: each span's name (indented under its parent), its start
//! as an offset from the trace's start, its duration and its span events.
//!
//! ```text
//! conversation                   +0.0s  4m12s  conversation_started channel=voice language=en-US · conversation_ended rating=4 resolution=transferred
//! ├─ interaction.customer        +1.0s   1.2s  customer_message intent=billing sentiment=-0.6 · intent_classified confidence=0.92
//! ├─ decision.intent_detection   +2.3s  120ms  intent_classified confidence=0.92 intent=billing
//! ├─ interaction.agent           +2.5s   2.1s  agent_message
//! ├─ • error_occurred           +35.1s         error.type=llm_timeout
//! └─ transfer.initiated         +4m00s     0s  transfer_initiated transfer.target=humans
//! ```
//!
//! Span events at the span's start or end are shown on its line; the others (an error in the
//! middle of a conversation) get a line of their own (`•`) among the span's children, in time
//! order. Spans whose parent is not in the trace (the root span of a conversation that joined a
//! trace started elsewhere, or the children of a conversation whose root span is not recorded
//! yet) are shown at the top level.

use std::collections::HashMap;

use serphona_obs::store::{SpanEvent, SpanRecord};
use time::OffsetDateTime;

use crate::cli::output::{offset, span_duration};

/// Attributes left out of the tree (the order of the lines and the span names say them).
const QUIET_ATTRIBUTES: [&str; 2] = ["turn", "decision.type"];

/// What a line of the tree stands for.
#[derive(Clone, Copy)]
enum Item {
    /// A span (index into the spans).
    Span(usize),
    /// A span event with a line of its own (span index, event index).
    Mark(usize, usize),
}

/// The lines of the tree of `spans` (any order; siblings are shown by start time), without a
/// trailing newline; empty for no spans.
pub fn render(spans: &[SpanRecord]) -> String {
    let Some(t0) = spans.iter().map(|s| s.start).min() else { return String::new() };
    let mut order: Vec<usize> = (0..spans.len()).collect();
    order.sort_by(|&a, &b| {
        let (a, b) = (&spans[a], &spans[b]);
        (a.start, a.end, &a.name, &a.span_id).cmp(&(b.start, b.end, &b.name, &b.span_id))
    });
    let present: HashMap<&str, usize> = spans.iter().enumerate().map(|(i, s)| (s.span_id.as_str(), i)).collect();
    let mut children: HashMap<usize, Vec<usize>> = HashMap::new();
    let mut roots = Vec::new();
    for &i in &order {
        match spans[i].parent_span_id.as_deref().and_then(|p| present.get(p)) {
            Some(&parent) if parent != i => children.entry(parent).or_default().push(i),
            _ => roots.push(i),
        }
    }

    let mut rows: Vec<[String; 4]> = Vec::new();
    let mut visited = vec![false; spans.len()];
    for &root in &roots {
        walk(spans, &children, Item::Span(root), "", "", t0, &mut rows, &mut visited);
    }
    // Spans on a parent cycle (hand-made data only) are reachable from no root.
    for &i in &order {
        if !visited[i] {
            walk(spans, &children, Item::Span(i), "", "", t0, &mut rows, &mut visited);
        }
    }
    layout(&rows)
}

/// The rows of `item` and (for a span) its subtree. `lead` prefixes this item's line,
/// `indent` the lines below it.
#[allow(clippy::too_many_arguments)]
fn walk(
    spans: &[SpanRecord],
    children: &HashMap<usize, Vec<usize>>,
    item: Item,
    lead: &str,
    indent: &str,
    t0: OffsetDateTime,
    rows: &mut Vec<[String; 4]>,
    visited: &mut [bool],
) {
    let since = |t: OffsetDateTime| offset((t - t0).as_seconds_f64());
    let i = match item {
        Item::Mark(s, e) => {
            let ev = &spans[s].events[e];
            rows.push([format!("{lead}• {}", ev.name), since(ev.time), String::new(), attributes(ev, &mut Vec::new())]);
            return;
        }
        Item::Span(i) => i,
    };
    if std::mem::replace(&mut visited[i], true) {
        return; // a cycle in hand-made data; each span is shown once
    }
    let span = &spans[i];
    let at_edge = |ev: &SpanEvent| ev.time <= span.start || ev.time >= span.end;
    let mut shown = Vec::new();
    let inline: Vec<String> = span.events.iter().filter(|ev| at_edge(ev)).map(|ev| inline_event(ev, &mut shown)).collect();
    rows.push([
        format!("{lead}{}", span.name),
        since(span.start),
        span_duration(span.duration_seconds()),
        inline.join(" · "),
    ]);

    // Children and the span's own mid-span events, in time order.
    let mut items: Vec<(OffsetDateTime, Item)> =
        children.get(&i).into_iter().flatten().map(|&c| (spans[c].start, Item::Span(c))).collect();
    items.extend(span.events.iter().enumerate().filter(|(_, ev)| !at_edge(ev)).map(|(e, ev)| (ev.time, Item::Mark(i, e))));
    items.sort_by_key(|(t, _)| *t);
    let last = items.len().saturating_sub(1);
    for (n, (_, child)) in items.into_iter().enumerate() {
        let (branch, next) = if n == last { ("└─ ", "   ") } else { ("├─ ", "│  ") };
        walk(spans, children, child, &format!("{indent}{branch}"), &format!("{indent}{next}"), t0, rows, visited);
    }
}

/// `name k=v …`, leaving out attributes `shown` already on the line.
fn inline_event(ev: &SpanEvent, shown: &mut Vec<(String, String)>) -> String {
    let attrs = attributes(ev, shown);
    if attrs.is_empty() { ev.name.clone() } else { format!("{} {attrs}", ev.name) }
}

/// `k=v k=v` of an event's attributes, skipping quiet ones and those in `shown` (which gets
/// the rest).
fn attributes(ev: &SpanEvent, shown: &mut Vec<(String, String)>) -> String {
    let mut parts = Vec::new();
    for (k, v) in &ev.attributes {
        if QUIET_ATTRIBUTES.contains(&k.as_str()) || shown.iter().any(|(sk, sv)| sk == k && sv == v) {
            continue;
        }
        shown.push((k.clone(), v.clone()));
        parts.push(format!("{k}={}", quote(v)));
    }
    parts.join(" ")
}

/// A value as is, or in quotes when it has spaces or is empty.
fn quote(v: &str) -> String {
    if v.is_empty() || v.contains(char::is_whitespace) { format!("{v:?}") } else { v.to_string() }
}

/// Columns: the tree and names left-aligned, offsets and durations right-aligned.
fn layout(rows: &[[String; 4]]) -> String {
    let width = |c: usize| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0);
    let (w0, w1, w2) = (width(0), width(1), width(2));
    rows.iter()
        .map(|[name, at, duration, detail]| {
            format!("{name:<w0$}  {at:>w1$}  {duration:>w2$}  {detail}").trim_end().to_string()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use time::macros::datetime;

    use super::*;

    const T0: OffsetDateTime = datetime!(2025-06-15 12:00:00 UTC);

    fn at(ms: i64) -> OffsetDateTime {
        T0 + time::Duration::milliseconds(ms)
    }

    fn span(id: &str, parent: Option<&str>, name: &str, start_ms: i64, end_ms: i64, events: Vec<SpanEvent>) -> SpanRecord {
        SpanRecord {
            trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
            span_id: id.into(),
            parent_span_id: parent.map(str::to_string),
            name: name.into(),
            service: "svc".into(),
            conversation_id: "c1".into(),
            tenant_id: "t1".into(),
            start: at(start_ms),
            end: at(end_ms),
            attributes: BTreeMap::new(),
            events,
        }
    }

    fn event(name: &str, ms: i64, attrs: &[(&str, &str)]) -> SpanEvent {
        SpanEvent {
            name: name.into(),
            time: at(ms),
            attributes: attrs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        }
    }

    /// A conversation: root with start, a mid-conversation error and end; a customer turn with
    /// an intent, a decision, an agent turn, a transfer. Given out of order.
    fn conversation() -> Vec<SpanRecord> {
        vec![
            span("t", Some("r"), "transfer.initiated", 240_000, 240_000, vec![event("transfer_initiated", 240_000, &[("transfer.target", "billing humans")])]),
            span(
                "r",
                None,
                "conversation",
                0,
                252_000,
                vec![
                    event("conversation_started", 0, &[("channel", "voice"), ("language", "en-US")]),
                    event("error_occurred", 35_100, &[("error.type", "llm_timeout")]),
                    event("conversation_ended", 252_000, &[("resolution", "transferred"), ("rating", "4")]),
                ],
            ),
            span(
                "c",
                Some("r"),
                "interaction.customer",
                1_000,
                2_200,
                vec![
                    event("customer_message", 1_000, &[("turn", "1"), ("intent", "billing"), ("sentiment", "-0.6")]),
                    event("intent_classified", 1_000, &[("intent", "billing"), ("confidence", "0.92")]),
                ],
            ),
            span("d", Some("r"), "decision.intent_detection", 2_300, 2_420, vec![event("intent_classified", 2_420, &[("intent", "billing"), ("confidence", "0.92")])]),
            span("a", Some("r"), "interaction.agent", 2_500, 4_600, vec![event("agent_message", 2_500, &[("turn", "2")])]),
        ]
    }

    #[test]
    fn a_conversation_renders_as_an_indented_tree_with_offsets_durations_and_events() {
        let text = render(&conversation());
        let expected = "\
conversation                   +0.0s  4m12s  conversation_started channel=voice language=en-US · conversation_ended rating=4 resolution=transferred
├─ interaction.customer        +1.0s   1.2s  customer_message intent=billing sentiment=-0.6 · intent_classified confidence=0.92
├─ decision.intent_detection   +2.3s  120ms  intent_classified confidence=0.92 intent=billing
├─ interaction.agent           +2.5s   2.1s  agent_message
├─ • error_occurred           +35.1s         error.type=llm_timeout
└─ transfer.initiated         +4m00s     0s  transfer_initiated transfer.target=\"billing humans\"";
        assert_eq!(text, expected, "\n{text}");
    }

    #[test]
    fn nested_spans_indent_and_orphans_go_to_the_top() {
        let spans = vec![
            span("r", None, "conversation", 0, 10_000, vec![]),
            span("x", Some("r"), "tool.call", 1_000, 5_000, vec![]),
            span("y", Some("x"), "http.get", 1_500, 2_000, vec![]),
            span("z", Some("r"), "interaction.agent", 6_000, 7_000, vec![]),
            span("o", Some("missing"), "interaction.customer", 500, 600, vec![]),
        ];
        let text = render(&spans);
        let names: Vec<&str> = text.lines().map(|l| l.split(" +").next().unwrap().trim_end()).collect();
        assert_eq!(names, ["conversation", "├─ tool.call", "│  └─ http.get", "└─ interaction.agent", "interaction.customer"], "\n{text}");
        assert_eq!(render(&[]), "");
    }

    #[test]
    fn a_parent_cycle_in_hand_made_data_shows_each_span_once() {
        let spans = vec![span("a", Some("b"), "a", 0, 1, vec![]), span("b", Some("a"), "b", 0, 1, vec![])];
        // Neither is a root; both are shown, once, and nothing loops forever.
        let text = render(&spans);
        assert_eq!(text.lines().count(), 2, "{text}");
    }
}
