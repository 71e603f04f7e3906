//! How `query` prints: tables and the conversation view for people, JSON and CSV for scripts.
//!
//! JSON is the library's types serialized as they are (their field names are the documented,
//! stable format), numbers exact: a float is the shortest text that reads back as the same
//! `f64`. CSV has a header row and one row per item, its floats rounded to 6 decimal places
//! with trailing zeros dropped ([`csv_float`]: `4.94`, not `4.9399999999999995`), which keeps
//! microseconds of a duration in seconds. Tables fit the terminal's width (see
//! [`crate::cli::output::table_width`]).

use std::io::Write;

use serphona_obs::store::{ConversationDetail, ConversationSummary, GroupBy, LatencyPercentiles, SpanRecord, StatsRow};
use serphona_obs::types::{Event, EventKind, Resolution, TurnLatency, TurnMarks, TurnSpeaker, Usage};
use tabled::settings::object::Columns;
use tabled::settings::{Alignment, Style};
use time::OffsetDateTime;

use super::tree;
use crate::cli::output::{DataFormat, offset, rfc3339, rfc3339_seconds, seconds, span_duration};

/// Pretty JSON and a newline.
pub(super) fn json(value: &impl serde::Serialize, out: &mut impl Write) -> anyhow::Result<()> {
    serde_json::to_writer_pretty(&mut *out, value)?;
    writeln!(out)?;
    Ok(())
}

pub(super) fn csv_writer(out: &mut impl Write) -> csv::Writer<&mut impl Write> {
    csv::WriterBuilder::new().from_writer(out)
}

fn opt<T: ToString>(v: Option<T>) -> String {
    v.map(|v| v.to_string()).unwrap_or_default()
}

/// A float for CSV: rounded to 6 decimal places, trailing zeros dropped (`4.94`, `0.333333`,
/// `12`); empty for `None`.
pub fn csv_float(v: Option<f64>) -> String {
    let Some(v) = v else { return String::new() };
    if !v.is_finite() {
        return v.to_string();
    }
    let text = format!("{v:.6}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    if text == "-0" { "0".to_string() } else { text.to_string() }
}

fn fixed(v: Option<f64>, places: usize) -> String {
    v.map_or_else(|| "-".to_string(), |v| format!("{v:.places$}"))
}

fn percent(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_string(), |v| format!("{:.1}%", v * 100.0))
}

/// Milliseconds as a duration (`180ms`, `1.4s`).
fn ms(v: f64) -> String {
    span_duration(v / 1000.0)
}

/// US dollars: `$0` for nothing, six decimal places below a cent (`$0.000160`), four below a
/// dollar, else two.
pub fn usd(v: f64) -> String {
    if v == 0.0 {
        "$0".into()
    } else if v.abs() < 0.01 {
        format!("${v:.6}")
    } else if v.abs() < 1.0 {
        format!("${v:.4}")
    } else {
        format!("${v:.2}")
    }
}

/// A turn's or decision's usage in a few words: `812 in / 64 out (20 cached) tokens gpt-4o-mini, $0.000160`.
fn usage_note(u: &Usage) -> Option<String> {
    let mut parts = Vec::new();
    if u.input_tokens.is_some() || u.output_tokens.is_some() {
        let cached = u.cached_tokens.map(|c| format!(" ({c} cached)")).unwrap_or_default();
        parts.push(format!("tokens {} in / {} out{cached}", u.input_tokens.unwrap_or(0), u.output_tokens.unwrap_or(0)));
    }
    // A model the price table does not know is named once, as unpriced.
    if let Some(model) = u.model.as_ref().filter(|m| !u.unpriced.contains(m)) {
        parts.push(model.clone());
    }
    if let Some(a) = u.audio_tokens {
        parts.push(format!("{a} audio tokens"));
    }
    if let Some(s) = u.stt_seconds {
        parts.push(format!("stt {}", seconds(Some(s))));
    }
    if let Some(c) = u.tts_characters {
        parts.push(format!("tts {c} chars"));
    }
    if let Some(s) = u.telephony_seconds {
        parts.push(format!("call {}", seconds(Some(s))));
    }
    if let Some(c) = u.cost_usd {
        parts.push(usd(c));
    }
    if !u.unpriced.is_empty() {
        parts.push(format!("unpriced: {}", u.unpriced.join(", ")));
    }
    (!parts.is_empty()).then(|| parts.join(", "))
}

/// A voice turn's latency parts (`stt 180ms · eou 300ms · llm 620ms · tts 150ms · total 1.4s`);
/// the total is the response latency (or the greeting's).
fn latency_note(l: &TurnLatency) -> Option<String> {
    let mut parts: Vec<String> = [
        ("stt", l.stt_ms),
        ("eou", l.end_of_utterance_ms),
        ("llm", l.llm_ttft_ms),
        ("tts", l.tts_ttfb_ms),
        ("tool", l.tool_ms),
    ]
    .into_iter()
    .filter_map(|(name, v)| v.map(|v| format!("{name} {}", ms(v))))
    .collect();
    if let Some(g) = l.greeting_ms {
        parts.push(format!("greeting {}", ms(g)));
    }
    if let Some(r) = l.response_ms {
        parts.push(format!("total {}", ms(r)));
    }
    (!parts.is_empty()).then(|| parts.join(" · "))
}

/// What happened between turns: an interruption (who, overlap) and dead air before the turn.
fn marks_note(m: &TurnMarks) -> Option<String> {
    let mut parts = Vec::new();
    if let Some(i) = m.interruption {
        let by = match i.by {
            TurnSpeaker::Customer => "customer",
            TurnSpeaker::Agent => "agent",
        };
        let overlap = i.overlap_ms.map(|o| format!(", overlap {}", ms(o))).unwrap_or_default();
        let derived = if i.derived { ", from the turn times" } else { "" };
        parts.push(format!("interrupted by {by}{overlap}{derived}"));
    }
    if let Some(d) = m.dead_air_ms {
        parts.push(format!("dead air {} before", ms(d)));
    }
    (!parts.is_empty()).then(|| parts.join("; "))
}

/// The conversation's totals: tokens and cost, then turn-taking.
fn totals_lines(s: &ConversationSummary) -> [String; 2] {
    let u = &s.usage;
    let tt = &s.turn_taking;
    let usage = format!(
        "tokens {} in, {} out, {} cached; cost {}",
        u.input_tokens,
        u.output_tokens,
        u.cached_tokens,
        usd(u.cost_usd)
    );
    let share = tt.dead_air_share().map(|v| format!(" ({:.1}% of talk and silence)", v * 100.0)).unwrap_or_default();
    if tt.is_empty() {
        return [usage, "- (none recorded: talk time and dead air need turn durations, as voice turns have)".into()];
    }
    let turn_taking = format!(
        "interruptions {} ({} by customer, {} by agent; overlap {}); dead air {} × {}{share}; talk agent {}, customer {}",
        tt.interruptions(),
        tt.interruptions_by_customer,
        tt.interruptions_by_agent,
        ms(tt.overlap_ms),
        tt.dead_air_count,
        ms(tt.dead_air_ms),
        ms(tt.agent_talk_ms),
        ms(tt.customer_talk_ms),
    );
    [usage, turn_taking]
}

pub(super) fn table(header: Vec<String>, rows: Vec<Vec<String>>, right_from: usize) -> String {
    let mut builder = tabled::builder::Builder::default();
    builder.push_record(header);
    for row in rows {
        builder.push_record(row);
    }
    let mut table = builder.build();
    table.with(Style::rounded());
    table.modify(Columns::new(right_from..), Alignment::right());
    crate::cli::output::fit(&mut table);
    table.to_string()
}

// --- conversations ------------------------------------------------------------------------

/// `query conversations`.
pub fn conversations(rows: &[ConversationSummary], format: DataFormat, out: &mut impl Write) -> anyhow::Result<()> {
    match format {
        DataFormat::Json => json(&rows, out),
        DataFormat::Csv => {
            let mut w = csv_writer(out);
            w.write_record([
                "conversation_id",
                "tenant_id",
                "agent_id",
                "customer_id",
                "channel",
                "language",
                "started_at",
                "ended_at",
                "duration_seconds",
                "resolution",
                "rating",
                "agent_turns",
                "customer_turns",
                "decisions",
                "transfers",
                "errors",
                "violations",
                "mean_sentiment",
                "last_speaker",
                "trace_id",
                "metadata",
                "input_tokens",
                "output_tokens",
                "cached_tokens",
                "cost_usd",
                "interruptions_by_customer",
                "interruptions_by_agent",
                "overlap_ms",
                "dead_air_count",
                "dead_air_ms",
                "agent_talk_ms",
                "customer_talk_ms",
            ])?;
            for c in rows {
                let (u, tt) = (&c.usage, &c.turn_taking);
                w.write_record([
                    c.conversation_id.clone(),
                    c.tenant_id.clone(),
                    c.agent_id.clone(),
                    c.customer_id.clone(),
                    opt(c.channel),
                    c.language.clone(),
                    rfc3339(c.started_at),
                    opt(c.ended_at.map(rfc3339)),
                    csv_float(c.duration_seconds),
                    opt(c.resolution),
                    opt(c.rating),
                    c.agent_turns.to_string(),
                    c.customer_turns.to_string(),
                    c.decisions.to_string(),
                    c.transfers.to_string(),
                    c.errors.to_string(),
                    c.violations.to_string(),
                    csv_float(c.mean_sentiment),
                    opt(c.last_speaker),
                    c.trace_id.clone(),
                    serde_json::to_string(&c.metadata)?,
                    u.input_tokens.to_string(),
                    u.output_tokens.to_string(),
                    u.cached_tokens.to_string(),
                    csv_float(Some(u.cost_usd)),
                    tt.interruptions_by_customer.to_string(),
                    tt.interruptions_by_agent.to_string(),
                    csv_float(Some(tt.overlap_ms)),
                    tt.dead_air_count.to_string(),
                    csv_float(Some(tt.dead_air_ms)),
                    csv_float(Some(tt.agent_talk_ms)),
                    csv_float(Some(tt.customer_talk_ms)),
                ])?;
            }
            w.flush()?;
            Ok(())
        }
        DataFormat::Table => {
            let header = ["started", "conversation", "tenant", "agent", "channel", "resolution", "rating", "duration", "turns", "sentiment"];
            // Narrower than the whole table: ids as the live view lists them (their last 12
            // characters, which `query conversation` takes), the rest wrapped to fit.
            let short = crate::cli::output::table_width().is_some_and(|w| w < 150);
            let body = rows
                .iter()
                .map(|c| {
                    vec![
                        rfc3339_seconds(c.started_at),
                        if short { serphona_obs::tui::view::short_id(&c.conversation_id) } else { c.conversation_id.clone() },
                        c.tenant_id.clone(),
                        c.agent_id.clone(),
                        c.channel.map_or_else(|| "-".into(), |ch| ch.to_string()),
                        c.resolution.map_or_else(|| "active".into(), |r| r.to_string()),
                        c.rating.map_or_else(|| "-".into(), |r| r.to_string()),
                        seconds(c.duration_seconds),
                        c.interactions().to_string(),
                        fixed(c.mean_sentiment, 2),
                    ]
                })
                .collect();
            writeln!(out, "{}", table(header.map(String::from).to_vec(), body, 6))?;
            Ok(())
        }
    }
}

// --- stats --------------------------------------------------------------------------------

/// `query stats`.
pub fn stats(rows: &[StatsRow], by: Option<GroupBy>, format: DataFormat, out: &mut impl Write) -> anyhow::Result<()> {
    match format {
        DataFormat::Json => json(&rows, out),
        DataFormat::Csv => {
            let mut w = csv_writer(out);
            let mut header: Vec<String> = ["group", "conversations", "ended"].map(String::from).to_vec();
            header.extend(Resolution::ALL.iter().map(|r| r.to_string()));
            header.extend(
                [
                    "resolution_rate",
                    "transfer_rate",
                    "interactions",
                    "duration_p50",
                    "duration_p95",
                    "duration_p99",
                    "response_p50",
                    "response_p95",
                    "response_p99",
                    "mean_rating",
                    "mean_sentiment",
                ]
                .map(String::from),
            );
            for (part, _) in LatencyPercentiles::default().parts() {
                header.extend([format!("{part}_ms_p50"), format!("{part}_ms_p95")]);
            }
            header.extend(
                [
                    "interruptions",
                    "interruptions_per_conversation",
                    "dead_air_ms",
                    "dead_air_share",
                    "tokens_input",
                    "tokens_output",
                    "tokens_cached",
                    "cost_usd_total",
                    "cost_usd_per_conversation",
                ]
                .map(String::from),
            );
            w.write_record(&header)?;
            for r in rows {
                let mut record = vec![r.group.clone(), r.conversations.to_string(), r.ended.to_string()];
                record.extend(Resolution::ALL.iter().map(|res| r.by_resolution.get(res.as_str()).copied().unwrap_or(0).to_string()));
                record.extend([
                    csv_float(r.resolution_rate),
                    csv_float(r.transfer_rate),
                    r.interactions.to_string(),
                    csv_float(r.duration_seconds.p50),
                    csv_float(r.duration_seconds.p95),
                    csv_float(r.duration_seconds.p99),
                    csv_float(r.response_seconds.p50),
                    csv_float(r.response_seconds.p95),
                    csv_float(r.response_seconds.p99),
                    csv_float(r.mean_rating),
                    csv_float(r.mean_sentiment),
                ]);
                for (_, p) in r.latency_ms.parts() {
                    record.extend([csv_float(p.p50), csv_float(p.p95)]);
                }
                record.extend([
                    r.interruptions.to_string(),
                    csv_float(r.interruptions_per_conversation),
                    csv_float(Some(r.dead_air_ms)),
                    csv_float(r.dead_air_share),
                    r.tokens.input.to_string(),
                    r.tokens.output.to_string(),
                    r.tokens.cached.to_string(),
                    csv_float(Some(r.cost_usd.total)),
                    csv_float(r.cost_usd.per_conversation),
                ]);
                w.write_record(&record)?;
            }
            w.flush()?;
            Ok(())
        }
        DataFormat::Table => {
            let first = match by {
                None => "",
                Some(GroupBy::Tenant) => "tenant",
                Some(GroupBy::Agent) => "agent",
                Some(GroupBy::Channel) => "channel",
                Some(GroupBy::Resolution) => "resolution",
            };
            let header = [
                first,
                "conversations",
                "ended",
                "resolved",
                "transferred",
                "duration p50",
                "p95",
                "p99",
                "response p50",
                "p95",
                "p99",
                "rating",
                "sentiment",
                "turns",
            ];
            let body = rows
                .iter()
                .map(|r| {
                    vec![
                        r.group.clone(),
                        r.conversations.to_string(),
                        r.ended.to_string(),
                        percent(r.resolution_rate),
                        percent(r.transfer_rate),
                        seconds(r.duration_seconds.p50),
                        seconds(r.duration_seconds.p95),
                        seconds(r.duration_seconds.p99),
                        seconds(r.response_seconds.p50),
                        seconds(r.response_seconds.p95),
                        seconds(r.response_seconds.p99),
                        fixed(r.mean_rating, 2),
                        fixed(r.mean_sentiment, 2),
                        r.interactions.to_string(),
                    ]
                })
                .collect();
            writeln!(out, "{}", table(header.map(String::from).to_vec(), body, 1))?;

            // Voice latency parts: p50 / p95 of each, in the turns that have it.
            writeln!(out, "\nvoice latency, p50 / p95")?;
            let mut header = vec![first.to_string()];
            header.extend(["stt", "eou", "llm ttft", "tts ttfb", "tool", "greeting", "response"].map(String::from));
            let body = rows
                .iter()
                .map(|r| {
                    let mut row = vec![r.group.clone()];
                    row.extend(r.latency_ms.parts().map(|(_, p)| match (p.p50, p.p95) {
                        (Some(a), Some(b)) => format!("{} / {}", ms(a), ms(b)),
                        _ => "-".into(),
                    }));
                    row
                })
                .collect();
            writeln!(out, "{}", table(header, body, 1))?;

            writeln!(out, "\nturn-taking and usage")?;
            let header = [
                first,
                "interruptions",
                "per conv",
                "dead air",
                "dead-air share",
                "tokens in",
                "tokens out",
                "cached",
                "cost",
                "cost/conv",
            ];
            let body = rows
                .iter()
                .map(|r| {
                    vec![
                        r.group.clone(),
                        r.interruptions.to_string(),
                        fixed(r.interruptions_per_conversation, 2),
                        ms(r.dead_air_ms),
                        percent(r.dead_air_share),
                        r.tokens.input.to_string(),
                        r.tokens.output.to_string(),
                        r.tokens.cached.to_string(),
                        usd(r.cost_usd.total),
                        r.cost_usd.per_conversation.map_or_else(|| "-".into(), usd),
                    ]
                })
                .collect();
            writeln!(out, "{}", table(header.map(String::from).to_vec(), body, 1))?;
            Ok(())
        }
    }
}

// --- one conversation ---------------------------------------------------------------------

/// What an event says beyond its content, in a few words (the CSV's `detail` and the
/// decision and error lines of the view).
fn detail(e: &Event) -> String {
    match &e.kind {
        EventKind::ConversationStarted { customer_id, channel, language } => format!("{channel} {language} customer {customer_id}"),
        EventKind::DecisionMade { decision_type, option, reason, .. } => format!("{decision_type} {option}: {reason}"),
        EventKind::TransferInitiated { target, reason } => format!("{target}: {reason}"),
        EventKind::ConversationEnded { resolution, rating, .. } => match rating {
            Some(r) => format!("{resolution} rating {r}"),
            None => resolution.to_string(),
        },
        EventKind::ErrorOccurred { error_type } => error_type.clone(),
        EventKind::ComplianceViolation { policy, severity } => format!("{policy} ({severity})"),
        _ => String::new(),
    }
}

/// `query conversation`.
pub fn conversation(d: &ConversationDetail, spans: &[SpanRecord], format: DataFormat, out: &mut impl Write) -> anyhow::Result<()> {
    let start = d.summary.started_at;
    let since = |t: OffsetDateTime| (t - start).as_seconds_f64();
    match format {
        DataFormat::Json => json(&serde_json::json!({ "conversation": d.summary, "events": d.events, "spans": spans }), out),
        DataFormat::Csv => {
            let mut w = csv_writer(out);
            w.write_record([
                "timestamp",
                "offset_seconds",
                "event_type",
                "speaker",
                "content",
                "sentiment",
                "sentiment_score",
                "intent",
                "confidence",
                "detail",
                "span_id",
                "stt_ms",
                "end_of_utterance_ms",
                "llm_ttft_ms",
                "tts_ttfb_ms",
                "tool_ms",
                "greeting_ms",
                "response_ms",
                "interrupted_by",
                "overlap_ms",
                "dead_air_ms",
                "model",
                "input_tokens",
                "output_tokens",
                "cached_tokens",
                "cost_usd",
            ])?;
            for e in &d.events {
                let l = e.kind.latency().copied().unwrap_or_default();
                let marks = e.kind.turn_marks().copied().unwrap_or_default();
                // The end's usage is the sum of the rows above it: not repeated.
                let u = match e.kind {
                    EventKind::ConversationEnded { .. } => None,
                    _ => e.kind.usage(),
                };
                w.write_record([
                    rfc3339(e.timestamp),
                    format!("{:.6}", since(e.timestamp)),
                    e.event_type().to_string(),
                    e.speaker.to_string(),
                    e.content.clone(),
                    e.metadata.sentiment.map(|s| s.as_str()).unwrap_or_default().to_string(),
                    csv_float(e.metadata.sentiment_score),
                    e.metadata.intent.clone().unwrap_or_default(),
                    csv_float(decision_confidence(e).or(e.metadata.confidence)),
                    detail(e),
                    e.trace.span_id.to_string(),
                    csv_float(l.stt_ms),
                    csv_float(l.end_of_utterance_ms),
                    csv_float(l.llm_ttft_ms),
                    csv_float(l.tts_ttfb_ms),
                    csv_float(l.tool_ms),
                    csv_float(l.greeting_ms),
                    csv_float(l.response_ms),
                    opt(marks.interruption.map(|i| serphona_obs::types::Speaker::from(i.by))),
                    csv_float(marks.interruption.and_then(|i| i.overlap_ms)),
                    csv_float(marks.dead_air_ms),
                    opt(u.and_then(|u| u.model.clone())),
                    opt(u.and_then(|u| u.input_tokens)),
                    opt(u.and_then(|u| u.output_tokens)),
                    opt(u.and_then(|u| u.cached_tokens)),
                    csv_float(u.and_then(|u| u.cost_usd)),
                ])?;
            }
            w.flush()?;
            Ok(())
        }
        DataFormat::Table => {
            write!(out, "{}", view(d, spans))?;
            Ok(())
        }
    }
}

fn decision_confidence(e: &Event) -> Option<f64> {
    match &e.kind {
        EventKind::DecisionMade { confidence, .. } => *confidence,
        _ => None,
    }
}

/// The conversation view: header, transcript, decisions, errors and violations, trace tree.
pub fn view(d: &ConversationDetail, spans: &[SpanRecord]) -> String {
    let s = &d.summary;
    let start = s.started_at;
    let at = |t: OffsetDateTime| offset((t - start).as_seconds_f64());
    let mut o = String::new();
    let mut line = |text: String| {
        o.push_str(text.trim_end());
        o.push('\n');
    };

    line(format!("conversation {}", s.conversation_id));
    let mut fields: Vec<(&str, String)> = vec![
        ("tenant", s.tenant_id.clone()),
        ("agent", s.agent_id.clone()),
        ("customer", if s.customer_id.is_empty() { "-".into() } else { s.customer_id.clone() }),
        (
            "channel",
            match (s.channel, s.language.is_empty()) {
                (Some(c), false) => format!("{c}, {}", s.language),
                (Some(c), true) => c.to_string(),
                (None, _) => "-".into(),
            },
        ),
        ("started", rfc3339(s.started_at)),
        (
            "ended",
            match s.ended_at {
                Some(t) => format!("{} (after {})", rfc3339(t), seconds(s.duration_seconds)),
                None => "- (active)".into(),
            },
        ),
        (
            "resolution",
            match (s.resolution, s.rating) {
                (Some(r), Some(rating)) => format!("{r}, rating {rating}"),
                (Some(r), None) => format!("{r}, not rated"),
                (None, _) => "active".into(),
            },
        ),
        (
            "turns",
            format!(
                "{} customer, {} agent{}",
                s.customer_turns,
                s.agent_turns,
                s.last_speaker.map(|sp| format!("; last: {sp}")).unwrap_or_default()
            ),
        ),
        // The same two counts as the section below: decisions made (a transfer decision among
        // them) and transfers initiated.
        ("decisions", format!("{} made, {} transfer{} initiated", s.decisions, s.transfers, if s.transfers == 1 { "" } else { "s" })),
        ("errors", format!("{}, compliance violations {}", s.errors, s.violations)),
        ("sentiment", s.mean_sentiment.map_or_else(|| "-".into(), |v| format!("{v:.2} (mean of the scored turns)"))),
        ("trace", s.trace_id.clone()),
    ];
    if !s.metadata.is_empty() {
        fields.push(("metadata", s.metadata.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" ")));
    }
    for (k, v) in fields {
        line(format!("  {k:<12}{v}"));
    }

    // Offsets are right-aligned to the widest of the whole view.
    let width = d.events.iter().map(|e| at(e.timestamp).len()).max().unwrap_or(5);
    let pad = " ".repeat(2 + width + 2 + 8 + 2);

    let turns: Vec<&Event> =
        d.events.iter().filter(|e| matches!(e.kind, EventKind::AgentTurn { .. } | EventKind::CustomerTurn { .. })).collect();
    line(String::new());
    line(format!("transcript ({} turns)", turns.len()));
    for e in &turns {
        let mut notes = Vec::new();
        match (e.metadata.sentiment, e.metadata.sentiment_score) {
            (Some(label), Some(v)) => notes.push(format!("{label} {v:+.2}")),
            (Some(label), None) => notes.push(label.to_string()),
            (None, Some(v)) => notes.push(format!("sentiment {v:+.2}")),
            (None, None) => {}
        }
        if let Some(intent) = &e.metadata.intent {
            notes.push(match e.metadata.confidence {
                Some(c) => format!("intent {intent} {c:.2}"),
                None => format!("intent {intent}"),
            });
        }
        if let EventKind::AgentTurn { response_time_seconds: Some(r), .. } = &e.kind {
            notes.push(format!("response {}", span_duration(*r)));
        }
        let notes = if notes.is_empty() { String::new() } else { format!("  [{}]", notes.join(", ")) };
        let content = e.content.replace('\n', &format!("\n{pad}"));
        line(format!("  {:>width$}  {:<8}  {content}{notes}", at(e.timestamp), e.speaker.as_str()));
        // The voice turn's breakdown, what happened before it, and what it used.
        let below = [
            e.kind.latency().and_then(latency_note).map(|n| format!("latency  {n}")),
            e.kind.turn_marks().and_then(marks_note),
            e.kind.usage().and_then(usage_note).map(|n| format!("usage    {n}")),
        ];
        for note in below.into_iter().flatten() {
            line(format!("{pad}↳ {note}"));
        }
    }
    line(String::new());
    let [usage, turn_taking] = totals_lines(s);
    line("totals".into());
    line(format!("  {:<12}{usage}", "usage"));
    line(format!("  {:<12}{turn_taking}", "turn-taking"));

    let decisions: Vec<&Event> =
        d.events.iter().filter(|e| matches!(e.kind, EventKind::DecisionMade { .. } | EventKind::TransferInitiated { .. })).collect();
    let made = decisions.iter().filter(|e| matches!(e.kind, EventKind::DecisionMade { .. })).count();
    line(String::new());
    line(format!(
        "decisions ({made} made, {} transfer{} initiated)",
        decisions.len() - made,
        if decisions.len() - made == 1 { "" } else { "s" }
    ));
    for e in &decisions {
        let text = match &e.kind {
            EventKind::DecisionMade { decision_type, option, reason, confidence, duration_ms, usage } => {
                let mut notes = Vec::new();
                if let Some(c) = confidence {
                    notes.push(format!("confidence {c:.2}"));
                }
                if let Some(ms) = duration_ms {
                    notes.push(format!("took {}", span_duration(ms / 1000.0)));
                }
                if let Some(u) = usage.as_deref().and_then(usage_note) {
                    notes.push(u);
                }
                let notes = if notes.is_empty() { String::new() } else { format!(" [{}]", notes.join(", ")) };
                format!("{decision_type} → {option}{notes}: {reason}")
            }
            EventKind::TransferInitiated { target, reason } => format!("transfer initiated → {target}: {reason}"),
            _ => unreachable!("filtered"),
        };
        line(format!("  {:>width$}  {text}", at(e.timestamp)));
    }

    let problems: Vec<&Event> = d
        .events
        .iter()
        .filter(|e| matches!(e.kind, EventKind::ErrorOccurred { .. } | EventKind::ComplianceViolation { .. }))
        .collect();
    if !problems.is_empty() {
        line(String::new());
        line(format!("errors and compliance violations ({})", problems.len()));
        for e in &problems {
            let what = match e.kind {
                EventKind::ErrorOccurred { .. } => "error",
                _ => "violation",
            };
            line(format!("  {:>width$}  {what} {}: {}", at(e.timestamp), detail(e), e.content));
        }
    }

    line(String::new());
    line(format!("trace {} ({} spans)", s.trace_id, spans.len()));
    if !spans.iter().any(|sp| sp.parent_span_id.is_none() || sp.name == serphona_obs::trace::tree::CONVERSATION_SPAN) {
        line("  (the conversation span is recorded when the conversation ends)".into());
    }
    let tree = tree::render(spans);
    if !tree.is_empty() {
        o.push_str(&tree);
        o.push('\n');
    }
    o
}

// --- a trace ------------------------------------------------------------------------------

/// `query trace`.
pub fn trace(trace_id: &str, spans: &[SpanRecord], format: DataFormat, out: &mut impl Write) -> anyhow::Result<()> {
    match format {
        DataFormat::Json => json(&spans, out),
        DataFormat::Csv => {
            let t0 = spans.iter().map(|s| s.start).min();
            let mut w = csv_writer(out);
            w.write_record([
                "trace_id",
                "span_id",
                "parent_span_id",
                "name",
                "service",
                "conversation_id",
                "tenant_id",
                "start",
                "end",
                "offset_ms",
                "duration_ms",
                "events",
                "attributes",
            ])?;
            for s in spans {
                let from_start = t0.map_or(0.0, |t0| (s.start - t0).as_seconds_f64() * 1000.0);
                w.write_record([
                    s.trace_id.clone(),
                    s.span_id.clone(),
                    s.parent_span_id.clone().unwrap_or_default(),
                    s.name.clone(),
                    s.service.clone(),
                    s.conversation_id.clone(),
                    s.tenant_id.clone(),
                    rfc3339(s.start),
                    rfc3339(s.end),
                    format!("{from_start:.3}"),
                    format!("{:.3}", s.duration_seconds() * 1000.0),
                    s.events.iter().map(|e| e.name.as_str()).collect::<Vec<_>>().join(" "),
                    serde_json::to_string(&s.attributes)?,
                ])?;
            }
            w.flush()?;
            Ok(())
        }
        DataFormat::Table => {
            write!(out, "{}", trace_view(trace_id, spans))?;
            Ok(())
        }
    }
}

/// A header line (trace, conversations, tenants, span count) and the tree.
pub fn trace_view(trace_id: &str, spans: &[SpanRecord]) -> String {
    let mut conversations: Vec<&str> = spans.iter().map(|s| s.conversation_id.as_str()).collect();
    conversations.sort_unstable();
    conversations.dedup();
    let mut tenants: Vec<&str> = spans.iter().map(|s| s.tenant_id.as_str()).collect();
    tenants.sort_unstable();
    tenants.dedup();
    let t0 = spans.iter().map(|s| s.start).min();
    let t1 = spans.iter().map(|s| s.end).max();
    let mut o = format!(
        "trace {trace_id}: {} spans, {}, conversation {}, tenant {}",
        spans.len(),
        match (t0, t1) {
            (Some(a), Some(b)) => format!("{} from {}", seconds(Some((b - a).as_seconds_f64())), rfc3339(a)),
            _ => "-".into(),
        },
        conversations.join(", "),
        tenants.join(", "),
    );
    o.push('\n');
    o.push_str(&tree::render(spans));
    o.push('\n');
    o
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serphona_obs::store::Percentiles;

    use super::*;

    #[test]
    fn dollars_and_a_turns_notes() {
        assert_eq!([usd(0.0), usd(0.000174), usd(0.25), usd(12.5)], ["$0", "$0.000174", "$0.2500", "$12.50"]);
        let l = TurnLatency { stt_ms: Some(180.0), llm_ttft_ms: Some(620.0), response_ms: Some(1450.0), ..TurnLatency::default() };
        assert_eq!(latency_note(&l).unwrap(), "stt 180ms · llm 620ms · total 1.4s");
        assert_eq!(latency_note(&TurnLatency::default()), None);
        let u = Usage { unpriced: vec!["m".into()], ..Usage::llm("m", 10, 2).cached_tokens(4) };
        assert_eq!(usage_note(&u).unwrap(), "tokens 10 in / 2 out (4 cached), unpriced: m");
        let marks = TurnMarks {
            gap_ms: Some(-300.0),
            dead_air_ms: None,
            interruption: Some(serphona_obs::types::Interruption { by: TurnSpeaker::Agent, overlap_ms: Some(300.0), derived: true }),
        };
        assert_eq!(marks_note(&marks).unwrap(), "interrupted by agent, overlap 300ms, from the turn times");
    }

    // Regression test for issue 12, item 11: CSV printed float noise (`4.9399999999999995`).
    #[test]
    fn csv_floats_are_rounded_to_six_places_without_noise_and_json_stays_exact() {
        assert_eq!(csv_float(Some(4.9399999999999995)), "4.94");
        assert_eq!(csv_float(Some(1.0 / 3.0)), "0.333333");
        assert_eq!(csv_float(Some(12.0)), "12");
        assert_eq!(csv_float(Some(-0.0000001)), "0");
        assert_eq!(csv_float(Some(0.000001)), "0.000001");
        assert_eq!(csv_float(None), "");
        let row = StatsRow {
            group: "all".into(),
            conversations: 3,
            ended: 3,
            by_resolution: BTreeMap::from([("resolved".to_string(), 2)]),
            resolution_rate: Some(2.0 / 3.0),
            transfer_rate: Some(0.1 + 0.2),
            interactions: 9,
            duration_seconds: Percentiles { p50: Some(4.9399999999999995), p95: Some(60.000001), p99: None },
            response_seconds: Percentiles::default(),
            mean_rating: Some(4.5),
            mean_sentiment: Some(-0.30000000000000004),
            latency_ms: Default::default(),
            interruptions: 0,
            interruptions_per_conversation: None,
            dead_air_ms: 0.0,
            dead_air_share: None,
            tokens: Default::default(),
            cost_usd: Default::default(),
        };
        let mut out = Vec::new();
        stats(std::slice::from_ref(&row), None, DataFormat::Csv, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let line = text.lines().nth(1).unwrap();
        assert!(line.contains(",0.666667,0.3,9,4.94,60.000001,,"), "{text}");
        assert!(line.contains(",4.5,-0.3,"), "{text}");
        assert!(line.ends_with(",0,,0,,0,0,0,0,"), "{text}");
        assert!(!text.contains("0000000"), "{text}");
        let mut out = Vec::new();
        stats(&[row], None, DataFormat::Json, &mut out).unwrap();
        assert!(String::from_utf8(out).unwrap().contains("4.9399999999999995"), "JSON numbers are exact");
    }
}
