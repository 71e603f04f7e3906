//! The conversation span tree: which span each event opens or closes, its name, its real start
//! and end, its attributes and its span events. The OTLP spans and ClickHouse's `spans` rows
//! both come from here, so Tempo and `query trace` show the same tree.
//!
//! | span | name | start – end | span events |
//! |---|---|---|---|
//! | the conversation (root) | `conversation` | start – end of the conversation | `conversation_started`, `error_occurred`, `compliance_violation`, `conversation_ended` |
//! | a turn | `interaction.agent` / `interaction.customer` | the turn's start – start + `duration_ms` | `agent_message` / `customer_message`, and `intent_classified` when the turn carries an intent |
//! | a decision | `decision.<type>`, e.g. `decision.intent_detection`; a tool call is `execute_tool <tool>` and an LLM call `chat <model>` (the GenAI conventions) | `at` − `duration_ms` – `at` (`at` is when it was made) | `intent_classified` for intent detection, else `decision_made` |
//! | a transfer | `transfer.initiated` | the transfer's moment | `transfer_initiated` |
//!
//! Usage follows OpenTelemetry's GenAI semantic conventions (development status; the names of
//! semantic conventions 1.37, and `gen_ai.usage.cache_read.input_tokens` added after it): a
//! turn or decision with usage carries `gen_ai.operation.name` (`chat`, or `execute_tool` for
//! a tool call), `gen_ai.request.model`, `gen_ai.usage.input_tokens` and
//! `gen_ai.usage.output_tokens`; a tool call carries `gen_ai.tool.name`; every span carries
//! `gen_ai.conversation.id`. The cost is `serphona.cost_usd`.
//!
//! Transcript text never goes into spans (spans do not pass the pipeline's processors, so a
//! redaction policy could not hold for them); lengths, scores, intents and ids do.

use std::borrow::Cow;
use std::time::SystemTime;

use opentelemetry::trace::{SpanBuilder, SpanKind, Status};
use opentelemetry::{KeyValue, Value};
use time::OffsetDateTime;

use crate::types::{ConversationStart, DecisionType, Event, EventKind, Metadata, TurnLatency};

/// The root span's name.
pub const CONVERSATION_SPAN: &str = "conversation";

/// The name of the span an event of this kind has of its own (`None` for kinds recorded on
/// the conversation span: start, end, error, compliance violation).
pub fn span_name(kind: &EventKind) -> Option<Cow<'static, str>> {
    Some(match kind {
        EventKind::AgentTurn { .. } => Cow::Borrowed("interaction.agent"),
        EventKind::CustomerTurn { .. } => Cow::Borrowed("interaction.customer"),
        EventKind::DecisionMade { decision_type, option, usage, .. } => match decision_type {
            DecisionType::ToolCall => Cow::Owned(format!("execute_tool {option}")),
            DecisionType::LlmCall => {
                Cow::Owned(format!("chat {}", usage.as_ref().and_then(|u| u.model.as_deref()).unwrap_or(option)))
            }
            other => decision_span_name(*other),
        },
        EventKind::TransferInitiated { .. } => Cow::Borrowed("transfer.initiated"),
        _ => return None,
    })
}

fn decision_span_name(t: DecisionType) -> Cow<'static, str> {
    match t {
        DecisionType::IntentDetection => Cow::Borrowed("decision.intent_detection"),
        DecisionType::Transfer => Cow::Borrowed("decision.transfer"),
        DecisionType::Escalation => Cow::Borrowed("decision.escalation"),
        DecisionType::Response => Cow::Borrowed("decision.response"),
        #[allow(unreachable_patterns)]
        other => Cow::Owned(format!("decision.{other}")),
    }
}

/// The real start and end of the span an event stands for: a turn runs from its start for
/// `duration_ms`; a decision ends when it was made, `duration_ms` after deciding began; the
/// conversation runs from its start to its end. Durations that are negative, not finite or
/// out of range count as zero.
pub fn span_times(e: &Event) -> (OffsetDateTime, OffsetDateTime) {
    let t = e.timestamp;
    match &e.kind {
        EventKind::AgentTurn { duration_ms, .. } | EventKind::CustomerTurn { duration_ms, .. } => {
            (t, shift(t, duration_ms.unwrap_or(0.0) / 1000.0))
        }
        EventKind::DecisionMade { duration_ms, .. } => (shift(t, -duration_ms.unwrap_or(0.0) / 1000.0), t),
        EventKind::ConversationEnded { started_at, duration_seconds, .. } => {
            (started_at.unwrap_or_else(|| shift(t, -duration_seconds)), t)
        }
        _ => (t, t),
    }
}

/// `t` moved by `seconds` (unchanged for a non-finite amount or one that leaves the range).
fn shift(t: OffsetDateTime, seconds: f64) -> OffsetDateTime {
    if !seconds.is_finite() || seconds == 0.0 {
        return t;
    }
    let d = time::Duration::seconds_f64(seconds.clamp(-1e12, 1e12));
    t.checked_add(d).unwrap_or(t)
}

/// The span an event closes, in one neutral shape that both the write side (ClickHouse's
/// `spans` rows) and the read side ([`crate::store::SpanRecord`]) are built from: the
/// conversation's root span at its end, and the child span of each turn, decision and
/// transfer, with the same names and times as the OTLP spans.
#[derive(Debug, Clone, PartialEq)]
pub struct SpanModel<'a> {
    /// [`CONVERSATION_SPAN`] or the child's name ([`span_name`]).
    pub name: Cow<'static, str>,
    /// Start ([`span_times`]).
    pub start: OffsetDateTime,
    /// End.
    pub end: OffsetDateTime,
    /// The span's own attributes (the OTLP spans carry more), as text.
    pub attributes: Vec<(Cow<'a, str>, Cow<'a, str>)>,
}

/// The span `e` closes; `None` for an event that closes none (a start, an error, a
/// violation). Ids are the event's: `e.trace`.
pub fn span_of(e: &Event) -> Option<SpanModel<'_>> {
    let mut attributes: Vec<(Cow<'_, str>, Cow<'_, str>)> = match &e.kind {
        EventKind::ConversationEnded { resolution, channel, interaction_count, .. } => vec![
            (Cow::Borrowed("resolution"), Cow::Borrowed(resolution.as_str())),
            (Cow::Borrowed("channel"), Cow::Borrowed(channel.as_str())),
            (Cow::Borrowed("interaction_count"), Cow::Owned(interaction_count.to_string())),
        ],
        EventKind::AgentTurn { turn, .. } | EventKind::CustomerTurn { turn, .. } => {
            vec![(Cow::Borrowed("turn"), Cow::Owned(turn.to_string()))]
        }
        EventKind::DecisionMade { decision_type, option, .. } => vec![
            (Cow::Borrowed("decision_type"), Cow::Borrowed(decision_type.as_str())),
            (Cow::Borrowed("option"), Cow::Borrowed(option.as_str())),
        ],
        EventKind::TransferInitiated { target, .. } => vec![(Cow::Borrowed("target"), Cow::Borrowed(target.as_str()))],
        _ => return None,
    };
    let name = match &e.kind {
        EventKind::ConversationEnded { .. } => Cow::Borrowed(CONVERSATION_SPAN),
        kind => span_name(kind)?,
    };
    let (start, end) = span_times(e);
    attributes.push((Cow::Borrowed("agent_id"), Cow::Borrowed(&e.agent_id)));
    Some(SpanModel { name, start, end, attributes })
}

/// `gen_ai.conversation.id`, the OpenTelemetry semantic-convention attribute for it.
pub const GEN_AI_CONVERSATION_ID: &str = "gen_ai.conversation.id";

/// The root span as it starts: the attributes known at the start (tenant_id,
/// conversation_id, agent_id, customer_id, channel, language) plus `gen_ai.conversation.id`,
/// and the `conversation_started` event.
pub fn root_builder(conversation_id: &str, start: &ConversationStart, at: OffsetDateTime) -> SpanBuilder {
    let attributes = vec![
        KeyValue::new("tenant_id", start.tenant_id.clone()),
        KeyValue::new("conversation_id", conversation_id.to_string()),
        KeyValue::new(GEN_AI_CONVERSATION_ID, conversation_id.to_string()),
        KeyValue::new("agent_id", start.agent_id.clone()),
        KeyValue::new("customer_id", start.customer_id.clone()),
        KeyValue::new("channel", start.channel.as_str()),
        KeyValue::new("language", start.language.clone()),
    ];
    let started = opentelemetry::trace::Event::new(
        "conversation_started",
        at.into(),
        vec![KeyValue::new("channel", start.channel.as_str()), KeyValue::new("language", start.language.clone())],
        0,
    );
    SpanBuilder::from_name(CONVERSATION_SPAN)
        .with_kind(SpanKind::Server)
        .with_start_time(SystemTime::from(at))
        .with_attributes(attributes)
        .with_events(vec![started])
}

/// What the root span gets at the end: the attributes known then (interaction_count,
/// duration_seconds, resolution, rating) and the `conversation_ended` event.
pub fn root_end(e: &Event) -> Option<(Vec<KeyValue>, opentelemetry::trace::Event)> {
    let EventKind::ConversationEnded { resolution, rating, interaction_count, duration_seconds, agent_turns, customer_turns, .. } =
        &e.kind
    else {
        return None;
    };
    let mut attributes = vec![
        KeyValue::new("interaction_count", i64::from(*interaction_count)),
        KeyValue::new("duration_seconds", *duration_seconds),
        KeyValue::new("resolution", resolution.as_str()),
        KeyValue::new("agent_turns", i64::from(*agent_turns)),
        KeyValue::new("customer_turns", i64::from(*customer_turns)),
    ];
    let mut event_attributes = vec![KeyValue::new("resolution", resolution.as_str())];
    if let Some(r) = rating {
        attributes.push(KeyValue::new("rating", i64::from(*r)));
        event_attributes.push(KeyValue::new("rating", i64::from(*r)));
    }
    let event = opentelemetry::trace::Event::new("conversation_ended", e.timestamp.into(), event_attributes, 0);
    Some((attributes, event))
}

/// The span event an error or compliance event adds to the conversation span, and whether it
/// marks the span as failed.
pub fn root_event(e: &Event) -> Option<(opentelemetry::trace::Event, Option<Status>)> {
    match &e.kind {
        EventKind::ErrorOccurred { error_type } => Some((
            opentelemetry::trace::Event::new(
                "error_occurred",
                e.timestamp.into(),
                vec![KeyValue::new("error.type", error_type.clone())],
                0,
            ),
            Some(Status::error(error_type.clone())),
        )),
        EventKind::ComplianceViolation { policy, severity } => Some((
            opentelemetry::trace::Event::new(
                "compliance_violation",
                e.timestamp.into(),
                vec![KeyValue::new("policy", policy.clone()), KeyValue::new("severity", severity.clone())],
                0,
            ),
            None,
        )),
        _ => None,
    }
}

/// The child span an event stands for (name, kind, times, attributes, span events), with its
/// end time; `None` for events recorded on the conversation span.
pub fn child_builder(e: &Event) -> Option<(SpanBuilder, SystemTime)> {
    let name = span_name(&e.kind)?;
    let (start, end) = span_times(e);
    let mut attributes = vec![
        KeyValue::new("tenant_id", e.tenant_id.to_string()),
        KeyValue::new("conversation_id", e.conversation_id.to_string()),
        KeyValue::new(GEN_AI_CONVERSATION_ID, e.conversation_id.to_string()),
        KeyValue::new("agent_id", e.agent_id.to_string()),
    ];
    let mut events = Vec::new();
    let at = SystemTime::from(start);
    match &e.kind {
        EventKind::AgentTurn { turn, latency, response_time_seconds, duration_ms, turn_taking, usage } => {
            attributes.push(KeyValue::new("turn", i64::from(*turn)));
            attributes.push(KeyValue::new("speaker", "agent"));
            if let Some(s) = response_time_seconds {
                attributes.push(KeyValue::new("response_time_seconds", *s));
            }
            push_common(&mut attributes, *duration_ms, latency.as_ref(), e.content.chars().count());
            push_turn_taking(&mut attributes, turn_taking);
            push_usage(&mut attributes, usage.as_deref(), "chat");
            events.push(message_event("agent_message", at, *turn, &e.metadata));
        }
        EventKind::CustomerTurn { turn, latency, duration_ms, turn_taking, usage } => {
            attributes.push(KeyValue::new("turn", i64::from(*turn)));
            attributes.push(KeyValue::new("speaker", "customer"));
            push_common(&mut attributes, *duration_ms, latency.as_ref(), e.content.chars().count());
            push_turn_taking(&mut attributes, turn_taking);
            push_usage(&mut attributes, usage.as_deref(), "chat");
            events.push(message_event("customer_message", at, *turn, &e.metadata));
            if let Some(intent) = &e.metadata.intent {
                events.push(intent_event(at, intent, e.metadata.confidence));
            }
        }
        EventKind::DecisionMade { decision_type, option, reason, confidence, duration_ms, usage } => {
            if *decision_type == DecisionType::ToolCall {
                attributes.push(KeyValue::new(GEN_AI_OPERATION_NAME, "execute_tool"));
                attributes.push(KeyValue::new("gen_ai.tool.name", option.clone()));
            }
            push_usage(&mut attributes, usage.as_deref(), if *decision_type == DecisionType::ToolCall { "execute_tool" } else { "chat" });
            attributes.push(KeyValue::new("decision.type", decision_type.as_str()));
            attributes.push(KeyValue::new("decision.option", option.clone()));
            attributes.push(KeyValue::new("decision.reason", reason.clone()));
            if let Some(c) = confidence.filter(|c| c.is_finite()) {
                attributes.push(KeyValue::new("confidence", c));
            }
            if let Some(ms) = duration_ms.filter(|v| v.is_finite()) {
                attributes.push(KeyValue::new("duration_ms", ms));
            }
            let made = SystemTime::from(end);
            events.push(if *decision_type == DecisionType::IntentDetection {
                intent_event(made, option, *confidence)
            } else {
                opentelemetry::trace::Event::new(
                    "decision_made",
                    made,
                    vec![KeyValue::new("decision.type", decision_type.as_str()), KeyValue::new("decision.option", option.clone())],
                    0,
                )
            });
        }
        EventKind::TransferInitiated { target, reason } => {
            attributes.push(KeyValue::new("transfer.target", target.clone()));
            attributes.push(KeyValue::new("transfer.reason", reason.clone()));
            events.push(opentelemetry::trace::Event::new(
                "transfer_initiated",
                at,
                vec![KeyValue::new("transfer.target", target.clone())],
                0,
            ));
        }
        _ => return None,
    }
    let builder = SpanBuilder::from_name(name)
        .with_kind(SpanKind::Internal)
        .with_start_time(at)
        .with_attributes(attributes)
        .with_events(events);
    Some((builder, SystemTime::from(end)))
}

fn push_common(attributes: &mut Vec<KeyValue>, duration_ms: Option<f64>, latency: Option<&TurnLatency>, chars: usize) {
    attributes.push(KeyValue::new("content.length", chars as i64));
    if let Some(ms) = duration_ms.filter(|v| v.is_finite()) {
        attributes.push(KeyValue::new("duration_ms", ms));
    }
    if let Some(l) = latency {
        let parts = [
            ("latency.stt_ms", l.stt_ms),
            ("latency.end_of_utterance_ms", l.end_of_utterance_ms),
            ("latency.llm_ttft_ms", l.llm_ttft_ms),
            ("latency.tts_ttfb_ms", l.tts_ttfb_ms),
            ("latency.tool_ms", l.tool_ms),
            ("latency.greeting_ms", l.greeting_ms),
            ("latency.response_ms", l.response_ms),
        ];
        for (key, ms) in parts {
            if let Some(ms) = ms.filter(|v| v.is_finite()) {
                attributes.push(KeyValue::new(key, ms));
            }
        }
        if l.interrupted {
            attributes.push(KeyValue::new("latency.interrupted", true));
        }
    }
}

/// The GenAI operation's attribute name.
pub const GEN_AI_OPERATION_NAME: &str = "gen_ai.operation.name";

/// A usage's GenAI attributes; `operation` is `gen_ai.operation.name` when the span has none
/// yet and the usage names a model.
fn push_usage(attributes: &mut Vec<KeyValue>, usage: Option<&crate::types::Usage>, operation: &'static str) {
    let Some(u) = usage else { return };
    if let Some(model) = &u.model {
        if !attributes.iter().any(|kv| kv.key.as_str() == GEN_AI_OPERATION_NAME) {
            attributes.push(KeyValue::new(GEN_AI_OPERATION_NAME, operation));
        }
        attributes.push(KeyValue::new("gen_ai.request.model", model.clone()));
    }
    let tokens = [
        ("gen_ai.usage.input_tokens", u.input_tokens),
        ("gen_ai.usage.output_tokens", u.output_tokens),
        ("gen_ai.usage.cache_read.input_tokens", u.cached_tokens),
        ("serphona.usage.audio_tokens", u.audio_tokens),
        ("serphona.usage.tts_characters", u.tts_characters),
    ];
    for (key, n) in tokens {
        if let Some(n) = n {
            attributes.push(KeyValue::new(key, i64::try_from(n).unwrap_or(i64::MAX)));
        }
    }
    let amounts = [
        ("serphona.usage.stt_seconds", u.stt_seconds),
        ("serphona.usage.telephony_seconds", u.telephony_seconds),
        ("serphona.cost_usd", u.cost_usd),
    ];
    for (key, v) in amounts {
        if let Some(v) = v.filter(|v| v.is_finite()) {
            attributes.push(KeyValue::new(key, v));
        }
    }
}

/// A turn's silence, dead air and interruption.
fn push_turn_taking(attributes: &mut Vec<KeyValue>, marks: &crate::types::TurnMarks) {
    if let Some(g) = marks.gap_ms.filter(|v| v.is_finite()) {
        attributes.push(KeyValue::new("turn.gap_ms", g));
    }
    if let Some(d) = marks.dead_air_ms.filter(|v| v.is_finite()) {
        attributes.push(KeyValue::new("turn.dead_air_ms", d));
    }
    if let Some(i) = &marks.interruption {
        let by = match i.by {
            crate::types::TurnSpeaker::Agent => "agent",
            crate::types::TurnSpeaker::Customer => "customer",
        };
        attributes.push(KeyValue::new("turn.interrupted_by", by));
        if let Some(o) = i.overlap_ms.filter(|v| v.is_finite()) {
            attributes.push(KeyValue::new("turn.overlap_ms", o));
        }
    }
}

fn message_event(name: &'static str, at: SystemTime, turn: u32, m: &Metadata) -> opentelemetry::trace::Event {
    let mut attributes = vec![KeyValue::new("turn", i64::from(turn))];
    if let Some(label) = m.sentiment {
        attributes.push(KeyValue::new("sentiment", label.as_str()));
    }
    if let Some(s) = m.sentiment_score.filter(|v| v.is_finite()) {
        attributes.push(KeyValue::new("sentiment_score", s));
    }
    if let Some(intent) = &m.intent {
        attributes.push(KeyValue::new("intent", intent.clone()));
    }
    opentelemetry::trace::Event::new(name, at, attributes, 0)
}

fn intent_event(at: SystemTime, intent: &str, confidence: Option<f64>) -> opentelemetry::trace::Event {
    let mut attributes = vec![KeyValue::new("intent", Value::from(intent.to_string()))];
    if let Some(c) = confidence.filter(|c| c.is_finite()) {
        attributes.push(KeyValue::new("confidence", c));
    }
    opentelemetry::trace::Event::new("intent_classified", at, attributes, 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::test_event;

    #[test]
    fn a_turn_runs_from_its_start_and_a_decision_ends_when_made() {
        let mut e = test_event("hello");
        e.kind = EventKind::CustomerTurn { turn: 2, latency: None, duration_ms: Some(1500.0), turn_taking: Default::default(), usage: None };
        let (start, end) = span_times(&e);
        assert_eq!(start, e.timestamp);
        assert_eq!((end - start).whole_milliseconds(), 1500);
        e.kind = EventKind::DecisionMade {
            decision_type: DecisionType::IntentDetection,
            option: "billing".into(),
            reason: "r".into(),
            confidence: Some(0.9),
            duration_ms: Some(250.0),
            usage: None,
        };
        let (start, end) = span_times(&e);
        assert_eq!(end, e.timestamp);
        assert_eq!((end - start).whole_milliseconds(), 250);
        assert_eq!(span_name(&e.kind).as_deref(), Some("decision.intent_detection"));
        // Hostile durations do not panic and count as zero.
        e.kind = EventKind::AgentTurn { turn: 1, latency: None, response_time_seconds: None, duration_ms: Some(f64::NAN), turn_taking: Default::default(), usage: None };
        assert_eq!(span_times(&e), (e.timestamp, e.timestamp));
        e.kind = EventKind::AgentTurn { turn: 1, latency: None, response_time_seconds: None, duration_ms: Some(1e300), turn_taking: Default::default(), usage: None };
        let (start, end) = span_times(&e);
        assert!(start <= end);
    }

    #[test]
    fn span_events_carry_the_seed_names_and_no_transcript() {
        let mut e = test_event("my card number is 4111");
        e.kind = EventKind::CustomerTurn { turn: 1, latency: None, duration_ms: None, turn_taking: Default::default(), usage: None };
        e.metadata.intent = Some("card_lost".into());
        let (builder, _) = child_builder(&e).expect("a turn has a span");
        let names: Vec<_> = builder.events.as_ref().unwrap().iter().map(|ev| ev.name.to_string()).collect();
        assert_eq!(names, ["customer_message", "intent_classified"]);
        let text = format!("{:?}", builder.attributes);
        assert!(!text.contains("is 4111"), "{text}");
        assert!(text.contains("content.length"), "{text}");
    }

    fn attr(builder: &SpanBuilder, key: &str) -> Option<Value> {
        builder.attributes.as_ref()?.iter().find(|kv| kv.key.as_str() == key).map(|kv| kv.value.clone())
    }

    // Issue 16: an LLM call and a tool call are spans in the GenAI conventions' names.
    #[test]
    fn llm_and_tool_calls_carry_the_gen_ai_attributes() {
        use crate::types::Usage;
        let mut e = test_event("summary");
        e.kind = EventKind::DecisionMade {
            decision_type: DecisionType::LlmCall,
            option: "summarize".into(),
            reason: "r".into(),
            confidence: None,
            duration_ms: Some(700.0),
            usage: Some(Box::new(Usage { cost_usd: Some(0.001), ..Usage::llm("gpt-4o-mini", 812, 64).cached_tokens(512) })),
        };
        let (b, _) = child_builder(&e).unwrap();
        assert_eq!(b.name, "chat gpt-4o-mini");
        assert_eq!(attr(&b, "gen_ai.operation.name"), Some(Value::from("chat")));
        assert_eq!(attr(&b, "gen_ai.request.model"), Some(Value::from("gpt-4o-mini")));
        assert_eq!(attr(&b, "gen_ai.usage.input_tokens"), Some(Value::I64(812)));
        assert_eq!(attr(&b, "gen_ai.usage.output_tokens"), Some(Value::I64(64)));
        assert_eq!(attr(&b, "gen_ai.usage.cache_read.input_tokens"), Some(Value::I64(512)));
        assert_eq!(attr(&b, "serphona.cost_usd"), Some(Value::F64(0.001)));
        assert_eq!(attr(&b, GEN_AI_CONVERSATION_ID), Some(Value::from("c1")));
        e.kind = EventKind::DecisionMade {
            decision_type: DecisionType::ToolCall,
            option: "billing.lookup".into(),
            reason: "r".into(),
            confidence: None,
            duration_ms: Some(300.0),
            usage: None,
        };
        let (b, _) = child_builder(&e).unwrap();
        assert_eq!(b.name, "execute_tool billing.lookup");
        assert_eq!(attr(&b, "gen_ai.operation.name"), Some(Value::from("execute_tool")));
        assert_eq!(attr(&b, "gen_ai.tool.name"), Some(Value::from("billing.lookup")));
        assert_eq!(span_of(&e).unwrap().name, "execute_tool billing.lookup", "ClickHouse's spans rows use the same name");
    }
}
