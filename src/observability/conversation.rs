//! A conversation: its state, its series, and the [`Conversation`] handle whose calls record
//! turns, decisions, errors, violations and the end.

use std::sync::{Arc, Mutex};

use opentelemetry::Context;
use opentelemetry::trace::{SpanId, TraceContextExt, TraceId};

use time::OffsetDateTime;

use crate::metrics::{ConversationSeries, Metrics};

use crate::trace::tree;
use crate::trace::{ConversationRef, new_span_id};
use crate::types::event::normalize_timestamp;
use crate::types::*;

use super::Inner;

#[derive(Default)]
pub(super) struct ConvState {
    pub(super) turns: u32,
    pub(super) agent_turns: u32,
    pub(super) customer_turns: u32,
    /// When the last customer turn ended (start + duration when the duration is known).
    pub(super) last_customer_end: Option<OffsetDateTime>,
    /// The previous turn: who spoke, when it ended (when its duration was known), and whether
    /// it was marked interrupted.
    pub(super) last_turn: Option<LastTurn>,
    /// The usage of every turn and decision so far, summed.
    pub(super) usage: Usage,
    /// Turn-taking so far.
    pub(super) turn_taking: TurnTaking,
    pub(super) ended: bool,
}

#[derive(Clone, Copy)]
pub(super) struct LastTurn {
    speaker: TurnSpeaker,
    end: Option<OffsetDateTime>,
    interrupted: bool,
}

/// A conversation's label values (after the cap) and the series it updates on every turn.
pub(super) struct ConvSeries {
    pub(super) tenant_label: Arc<str>,
    pub(super) agent_label: Arc<str>,
    pub(super) series: ConversationSeries,
}

impl ConvSeries {
    pub(super) fn new(metrics: &Metrics, tenant_label: Arc<str>, agent_label: Arc<str>) -> Self {
        ConvSeries {
            series: metrics.conversation_series(&tenant_label, &agent_label),
            tenant_label,
            agent_label,
        }
    }
}

pub(super) struct ConvInner {
    pub(super) obs: Arc<Inner>,
    pub(super) id: Arc<str>,
    pub(super) tenant: Arc<str>,
    pub(super) agent: Arc<str>,
    pub(super) channel: Channel,
    pub(super) series: ConvSeries,
    pub(super) trace_id: TraceId,
    pub(super) root: SpanId,
    pub(super) parent: Option<SpanId>,
    /// The conversation span (or, joined, the request's span) as the active span, with the
    /// [`ConversationRef`].
    pub(super) cx: Context,
    /// A handle on a conversation another service started (see `join_conversation`).
    pub(super) joined: bool,
    pub(super) started_at: OffsetDateTime,
    pub(super) customer_id: String,
    pub(super) language: String,
    /// The start's metadata, repeated on the end event so the end stands alone.
    pub(super) start_metadata: std::collections::BTreeMap<String, serde_json::Value>,
    pub(super) state: Mutex<ConvState>,
}

impl ConvInner {
    /// The state; a panic elsewhere while it was held does not make it unusable.
    fn lock_state(&self) -> std::sync::MutexGuard<'_, ConvState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(super) fn is_ended(&self) -> bool {
        self.lock_state().ended
    }

    /// A usage with its cost: priced from the table, unless the caller set the cost (then
    /// counted under the usage's model).
    fn price(&self, mut usage: Box<Usage>) -> (Box<Usage>, crate::pricing::Costing) {
        usage.sanitize();
        let costing = match usage.cost_usd {
            Some(usd) => crate::pricing::Costing {
                lines: vec![(usage.model.clone().unwrap_or_else(|| "unknown".into()), usd)],
                unpriced: Vec::new(),
            },
            None => {
                let costing = self.obs.prices.price(&usage);
                usage.cost_usd = costing.total();
                usage.unpriced.clone_from(&costing.unpriced);
                costing
            }
        };
        (usage, costing)
    }

    /// A call on an ended conversation: recorded nowhere, counted.
    fn after_end(&self) {
        self.obs
            .metrics
            .pipeline
            .events_dropped
            .with_label_values(&["after_end"])
            .inc();
        tracing::debug!(conversation_id = %self.id, "ignoring a call on an ended conversation");
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn event(
        &self,
        at: OffsetDateTime,
        level: Level,
        speaker: Speaker,
        content: String,
        mut metadata: Metadata,
        span_id: SpanId,
        parent_span_id: Option<SpanId>,
        kind: EventKind,
    ) -> Event {
        metadata.sanitize();
        Event {
            event_id: uuid::Uuid::now_v7(),
            timestamp: normalize_timestamp(at),
            level,
            service: self.obs.service.clone(),
            tenant_id: self.tenant.clone(),
            conversation_id: self.id.clone(),
            agent_id: self.agent.clone(),
            speaker,
            content,
            metadata,
            trace: TraceIds {
                trace_id: self.trace_id,
                span_id,
                parent_span_id,
            },
            kind,
        }
    }

    /// An event with a child span of its own (a turn, decision or transfer): the span is
    /// recorded now, with its real start and end, and its id goes into the event.
    fn child_event(
        &self,
        at: OffsetDateTime,
        level: Level,
        speaker: Speaker,
        content: String,
        metadata: Metadata,
        kind: EventKind,
    ) -> Event {
        let mut event = self.event(
            at,
            level,
            speaker,
            content,
            metadata,
            SpanId::INVALID,
            Some(self.root),
            kind,
        );
        let tracing = &self.obs.tracing;
        // Unsampled conversations have unsampled children: ids only, no attributes built.
        let sampled = tracing.is_recording() && self.cx.span().span_context().is_sampled();
        // Spans carry caller text (reasons, options, the intent): built from the event as the
        // privacy policy leaves it, the same policy the pipeline applies to the event.
        let spanned = || match self.obs.redactor.as_ref().and_then(|r| r.for_spans(&event)) {
            Some(redacted) => tree::child_builder(&redacted),
            None => tree::child_builder(&event),
        };
        event.trace.span_id = match sampled.then(spanned).flatten() {
            Some((builder, end)) => tracing.record(builder, &self.cx, end).span_id(),
            None => new_span_id(),
        };
        event
    }

    /// Adds an error or compliance violation to the conversation span.
    fn note_on_root(&self, event: &Event) {
        let span = self.cx.span();
        if !span.is_recording() {
            return;
        }
        if let Some((span_event, status)) = tree::root_event(event) {
            span.add_event_with_timestamp(
                span_event.name,
                span_event.timestamp,
                span_event.attributes,
            );
            if let Some(status) = status {
                span.set_status(status);
            }
        }
    }

    fn end(&self, end: ConversationEnd) {
        let (agent_turns, customer_turns, usage, turn_taking) = {
            let mut state = self.lock_state();
            if state.ended {
                return;
            }
            state.ended = true;
            let usage = std::mem::take(&mut state.usage);
            (state.agent_turns, state.customer_turns, usage, state.turn_taking)
        };
        if self.joined {
            // The service that started the conversation ends it.
            return;
        }
        // Out of the registry; a handle the registry held is dropped outside its lock.
        let removed = {
            let mut live = self.obs.live_conversations();
            if live
                .get(&self.id)
                .is_some_and(|r| std::ptr::eq(r.conv.as_ptr(), self))
            {
                live.remove(&self.id)
            } else {
                None
            }
        };
        drop(removed);
        let at = normalize_timestamp(end.at.unwrap_or_else(OffsetDateTime::now_utc));
        let duration = (at - self.started_at).as_seconds_f64().max(0.0);
        let metrics = &self.obs.metrics;
        let rating = end.rating.map(|r| r.clamp(1, 5));
        let (t, a) = (&self.series.tenant_label, &self.series.agent_label);
        metrics.conversation_ended(
            t,
            a,
            end.resolution,
            duration,
            agent_turns,
            customer_turns,
            rating,
        );

        let interaction_count = agent_turns + customer_turns;
        let content = match rating {
            Some(r) => format!(
                "conversation ended: {}, rating {r}, {interaction_count} turns in {duration:.1}s",
                end.resolution
            ),
            None => format!(
                "conversation ended: {}, {interaction_count} turns in {duration:.1}s",
                end.resolution
            ),
        };
        let event = self.event(
            at,
            Level::Info,
            Speaker::System,
            content,
            Metadata {
                extra: self.start_metadata.clone(),
                ..Metadata::default()
            },
            self.root,
            self.parent,
            EventKind::ConversationEnded {
                resolution: end.resolution,
                rating,
                tags: end.tags,
                channel: self.channel,
                duration_seconds: duration,
                interaction_count,
                agent_turns,
                customer_turns,
                customer_id: self.customer_id.clone(),
                language: self.language.clone(),
                started_at: Some(self.started_at),
                usage: (!usage.is_empty()).then(|| Box::new(usage)),
                turn_taking: (!turn_taking.is_empty()).then_some(turn_taking),
            },
        );
        let span = self.cx.span();
        if let Some((attributes, span_event)) = span
            .is_recording()
            .then(|| tree::root_end(&event))
            .flatten()
        {
            span.set_attributes(attributes);
            span.add_event_with_timestamp(
                span_event.name,
                span_event.timestamp,
                span_event.attributes,
            );
        }
        span.end_with_timestamp(at.into());
        let _ = self.obs.emit(event);
    }
}

/// When a turn that started at `at` and lasted `ms` ended (`at` when unknown or absurd).
fn end_of(at: OffsetDateTime, ms: Option<f64>) -> OffsetDateTime {
    // Saturating: a NaN or absurd duration from the caller must not panic.
    let spoke = ms.map_or(time::Duration::ZERO, |ms| time::Duration::saturating_seconds_f64(ms / 1000.0));
    at.checked_add(spoke).unwrap_or(at)
}

/// The interruption the caller gave for a turn, from `interruption` or an agent turn's
/// `latency.interrupted`; a customer barge-in on an agent turn sets `latency.interrupted`, so
/// the two never disagree.
fn interruption_given(turn: &mut Interaction) -> Option<Interruption> {
    let flagged = turn.speaker == TurnSpeaker::Agent && turn.latency.is_some_and(|l| l.interrupted);
    let mut given = turn.interruption.map(|i| Interruption { derived: false, ..i });
    if given.is_none() && flagged {
        given = Some(Interruption { by: TurnSpeaker::Customer, overlap_ms: None, derived: false });
    }
    if let Some(i) = &mut given {
        i.overlap_ms = i.overlap_ms.filter(|v| v.is_finite() && *v >= 0.0);
        if i.by == TurnSpeaker::Customer && turn.speaker == TurnSpeaker::Agent {
            turn.latency.get_or_insert_with(TurnLatency::default).interrupted = true;
        }
    }
    turn.interruption = given;
    given
}

impl Drop for ConvInner {
    fn drop(&mut self) {
        let ended = self.state.get_mut().map(|s| s.ended).unwrap_or(true);
        if !ended && !self.joined {
            self.end(ConversationEnd::new(Resolution::Abandoned));
        }
    }
}

/// A conversation in progress. Clone it to share it between tasks; the conversation ends as
/// `abandoned` when the last clone is dropped without [`end`](Self::end).
#[derive(Clone)]
pub struct Conversation {
    pub(super) inner: Arc<ConvInner>,
}

impl std::fmt::Debug for Conversation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conversation")
            .field("id", &self.inner.id)
            .field("tenant_id", &self.inner.tenant)
            .field("agent_id", &self.inner.agent)
            .field("trace_id", &self.inner.trace_id)
            .finish()
    }
}

impl Conversation {
    /// The conversation id.
    pub fn id(&self) -> &str {
        &self.inner.id
    }

    /// The tenant.
    pub fn tenant_id(&self) -> &str {
        &self.inner.tenant
    }

    /// The agent.
    pub fn agent_id(&self) -> &str {
        &self.inner.agent
    }

    /// The conversation's trace id.
    pub fn trace_id(&self) -> TraceId {
        self.inner.trace_id
    }

    /// The conversation (root) span id (for a joined handle, the span of the request it was
    /// joined in).
    pub fn span_id(&self) -> SpanId {
        self.inner.root
    }

    /// True for a handle on a conversation another service started (see
    /// [`Observability::join_conversation`]).
    pub fn is_joined(&self) -> bool {
        self.inner.joined
    }

    /// The OpenTelemetry context of the conversation: its span as the active span, and the
    /// conversation (id, tenant, agent) that the client helpers of
    /// [`middleware`](crate::middleware) pass on. Parent your own spans on it, or attach it.
    pub fn context(&self) -> Context {
        self.inner.cx.clone()
    }

    /// Runs `f` in a child span of the conversation named `name` (an LLM call, a tool call,
    /// a retrieval) — nested under the current span when that belongs to the conversation (a
    /// request of it, another helper span) — with the span's context attached, so spans started inside (by the
    /// [`tracer`](Observability::tracer), `tracing` with
    /// [`tracing_layer`](Observability::tracing_layer), or outgoing requests through the
    /// client helpers) are its children. `f` gets the context to add attributes:
    /// `cx.span().set_attribute(KeyValue::new("llm.model", "gpt-4o"))`.
    pub fn in_span<T>(
        &self,
        name: impl Into<std::borrow::Cow<'static, str>>,
        f: impl FnOnce(&Context) -> T,
    ) -> T {
        let cx = self.child_context(name.into());
        let result = {
            let _attached = cx.clone().attach();
            f(&cx)
        };
        cx.span().end();
        result
    }

    /// [`in_span`](Self::in_span) for async work: the span covers `future` until it completes
    /// (or is dropped), with its context attached at every poll.
    pub async fn in_span_async<F: std::future::Future>(
        &self,
        name: impl Into<std::borrow::Cow<'static, str>>,
        future: F,
    ) -> F::Output {
        use opentelemetry::context::FutureExt as _;
        let cx = self.child_context(name.into());
        let result = future.with_context(cx.clone()).await;
        cx.span().end();
        result
    }

    fn child_context(&self, name: std::borrow::Cow<'static, str>) -> Context {
        let c = &*self.inner;
        let builder = opentelemetry::trace::SpanBuilder::from_name(name).with_attributes([
            opentelemetry::KeyValue::new("conversation_id", c.id.to_string()),
            opentelemetry::KeyValue::new(tree::GEN_AI_CONVERSATION_ID, c.id.to_string()),
            opentelemetry::KeyValue::new("tenant_id", c.tenant.to_string()),
        ]);
        // Inside a request or helper span of this conversation, nest under it; else under the
        // conversation span.
        let current = Context::current();
        let nested = {
            let span = current.span();
            let sc = span.span_context();
            sc.is_valid()
                && sc.trace_id() == c.trace_id
                && current.get::<ConversationRef>().is_some()
        };
        c.obs
            .tracing
            .start_span(builder, if nested { &current } else { &c.cx })
    }

    /// Records a turn (`interaction.agent` or `interaction.customer`). Agent turns feed
    /// `agent_response_time_seconds` (from `latency.response_ms`, or measured from the end of
    /// the previous customer turn); scores in the metadata feed the quality gauges.
    pub fn track_interaction(&self, mut interaction: Interaction) {
        let c = &*self.inner;
        let at = normalize_timestamp(interaction.at.unwrap_or_else(OffsetDateTime::now_utc));
        let speaker = interaction.speaker;
        // A finite, non-negative speaking time, or none.
        let talk_ms = interaction.duration_ms.filter(|v| v.is_finite() && *v >= 0.0);
        // The caller's word on an interruption: `interruption`, or an agent turn's
        // `latency.interrupted` (a customer barge-in); the two agree afterwards.
        let mut interruption = interruption_given(&mut interaction);
        let usage = interaction.usage.take().map(|u| c.price(u));
        let (turn, previous_customer_end, marks) = {
            let mut state = c.lock_state();
            if state.ended {
                drop(state);
                c.after_end();
                return;
            }
            state.turns += 1;
            let answered_nobody = state.customer_turns == 0;
            let previous = match speaker {
                TurnSpeaker::Agent => {
                    state.agent_turns += 1;
                    // One response per customer turn: a second agent turn in a row is not a
                    // response to it again.
                    state.last_customer_end.take()
                }
                TurnSpeaker::Customer => {
                    state.customer_turns += 1;
                    state.last_customer_end = Some(end_of(at, talk_ms));
                    None
                }
            };
            // The greeting: the agent's first audio, measured from the call's start.
            if speaker == TurnSpeaker::Agent && answered_nobody && c.channel == Channel::Voice {
                let latency = interaction.latency.get_or_insert_with(TurnLatency::default);
                if latency.greeting_ms.is_none() && latency.response_ms.is_none() {
                    latency.greeting_ms = Some(((at - c.started_at).as_seconds_f64() * 1000.0).max(0.0));
                }
            }
            let gap_ms = state
                .last_turn
                .and_then(|last| last.end)
                .map(|end| (at - end).as_seconds_f64() * 1000.0);
            // Overlap with the other side's turn that nobody called an interruption: this
            // speaker cut in.
            if let (None, Some(gap), Some(last)) = (&interruption, gap_ms, state.last_turn) {
                if gap < 0.0 && last.speaker != speaker && !last.interrupted {
                    interruption = Some(Interruption { by: speaker, overlap_ms: Some(-gap), derived: true });
                }
            }
            let dead_air_ms = gap_ms.filter(|g| *g >= c.obs.dead_air_threshold_ms);
            let marks = TurnMarks { gap_ms, dead_air_ms, interruption };
            state.last_turn = Some(LastTurn {
                speaker,
                end: talk_ms.map(|_| end_of(at, talk_ms)),
                interrupted: interruption.is_some_and(|i| !i.derived),
            });
            let tt = &mut state.turn_taking;
            if let Some(i) = interruption {
                match i.by {
                    TurnSpeaker::Customer => tt.interruptions_by_customer += 1,
                    TurnSpeaker::Agent => tt.interruptions_by_agent += 1,
                }
                tt.overlap_ms += i.overlap_ms.filter(|v| v.is_finite() && *v > 0.0).unwrap_or(0.0);
            }
            if let Some(ms) = dead_air_ms {
                tt.dead_air_count += 1;
                tt.dead_air_ms += ms;
            }
            match speaker {
                TurnSpeaker::Agent => tt.agent_talk_ms += talk_ms.unwrap_or(0.0),
                TurnSpeaker::Customer => tt.customer_talk_ms += talk_ms.unwrap_or(0.0),
            }
            if let Some((usage, _)) = &usage {
                state.usage.add(usage);
            }
            (state.turns, previous, marks)
        };
        let speaker_type = match speaker {
            TurnSpeaker::Agent => "agent",
            TurnSpeaker::Customer => "customer",
        };
        c.obs.metrics.turn_taking(&c.series.tenant_label, speaker_type, &marks, talk_ms);
        if let Some((usage, costing)) = &usage {
            c.obs.metrics.usage(&c.series.tenant_label, usage, costing);
        }
        let usage = usage.map(|(u, _)| u);
        let metrics = &c.obs.metrics;
        let meta = &interaction.metadata;
        // Scores and latencies that are not finite numbers are kept in the event but not in
        // metrics, where one NaN would poison a series' sum for good.
        // The gauge follows the customer's sentiment (the agent's own turns would mask it),
        // from the score, or from the label's score when only a label was given.
        let score = meta
            .sentiment_score
            .or(meta.sentiment.map(Sentiment::score));
        if let Some(s) =
            score.filter(|v| v.is_finite() && interaction.speaker == TurnSpeaker::Customer)
        {
            c.series.series.sentiment.set(s);
        }
        if let Some(a) = meta.assertiveness.filter(|v| v.is_finite()) {
            c.series.series.assertiveness.set(a);
        }
        for (policy, score) in meta.compliance.iter().filter(|(_, v)| v.is_finite()) {
            metrics.compliance_score(&c.series.tenant_label, policy, *score);
        }
        if let Some(latency) = &interaction.latency {
            for (part, ms) in latency.parts() {
                if let Some(ms) = ms.filter(|v| v.is_finite() && *v >= 0.0) {
                    metrics.voice_latency_part(&c.series.tenant_label, part, ms / 1000.0);
                }
            }
        }
        let kind = match interaction.speaker {
            TurnSpeaker::Agent => {
                let response = interaction
                    .latency
                    .and_then(|l| l.response_ms)
                    .map(|ms| ms / 1000.0)
                    .or_else(|| previous_customer_end.map(|end| (at - end).as_seconds_f64()))
                    .filter(|s| s.is_finite() && *s >= 0.0);
                if let Some(seconds) = response {
                    c.series.series.response_time.observe(seconds);
                }
                EventKind::AgentTurn {
                    turn,
                    latency: interaction.latency,
                    response_time_seconds: response,
                    duration_ms: interaction.duration_ms,
                    turn_taking: marks,
                    usage,
                }
            }
            TurnSpeaker::Customer => EventKind::CustomerTurn {
                turn,
                latency: interaction.latency,
                duration_ms: interaction.duration_ms,
                turn_taking: marks,
                usage,
            },
        };
        let event = c.child_event(
            at,
            Level::Info,
            interaction.speaker.into(),
            interaction.content,
            interaction.metadata,
            kind,
        );
        let _ = c.obs.emit(event);
    }

    /// Records a decision (`decision.made`); a transfer also records `transfer.initiated`.
    /// Like every `track_*` call, it records nothing once the conversation has ended (counted
    /// in `serphona_obs_events_dropped_total{reason="after_end"}`).
    pub fn track_decision(&self, mut decision: Decision) {
        let c = &*self.inner;
        let usage = decision.usage.take().map(|u| c.price(u));
        {
            let mut state = c.lock_state();
            if state.ended {
                drop(state);
                return c.after_end();
            }
            if let Some((usage, _)) = &usage {
                state.usage.add(usage);
            }
        }
        if let Some((usage, costing)) = &usage {
            c.obs.metrics.usage(&c.series.tenant_label, usage, costing);
        }
        let usage = usage.map(|(u, _)| u);
        let at = decision.at.unwrap_or_else(OffsetDateTime::now_utc);
        // String entries are typed (`"sentiment": "neutral"`); the decision's own confidence
        // and, for an intent detection, its option win over entries of the same name.
        let mut metadata = Metadata::from_strings(decision.metadata);
        if decision.confidence.is_some() {
            metadata.confidence = decision.confidence;
        }
        if decision.decision_type == DecisionType::IntentDetection {
            metadata.intent = Some(decision.option.clone());
        }
        let content = format!(
            "{}: {} ({})",
            decision.decision_type, decision.option, decision.reason
        );
        let transfer = (decision.decision_type == DecisionType::Transfer)
            .then(|| (decision.option.clone(), decision.reason.clone()));
        let event = c.child_event(
            at,
            Level::Info,
            Speaker::Agent,
            content,
            metadata,
            EventKind::DecisionMade {
                decision_type: decision.decision_type,
                option: decision.option,
                reason: decision.reason,
                confidence: decision.confidence,
                duration_ms: decision.duration_ms,
                usage,
            },
        );
        let _ = c.obs.emit(event);
        if let Some((target, reason)) = transfer {
            let content = format!("transfer to {target}: {reason}");
            let event = c.child_event(
                at,
                Level::Info,
                Speaker::Agent,
                content,
                Metadata::default(),
                EventKind::TransferInitiated { target, reason },
            );
            let _ = c.obs.emit(event);
        }
    }

    /// Records an error (`error.occurred`) and counts it in `error_rate{service,error_type}`.
    /// `error_type` should be a short, low-cardinality class such as `llm_timeout`.
    pub fn track_error(&self, error_type: &str, message: impl Into<String>) {
        self.track_error_at(error_type, message, None);
    }

    /// [`track_error`](Self::track_error) at a given time.
    pub fn track_error_at(
        &self,
        error_type: &str,
        message: impl Into<String>,
        at: Option<OffsetDateTime>,
    ) {
        let c = &*self.inner;
        if c.is_ended() {
            return c.after_end();
        }
        let metrics = &c.obs.metrics;
        metrics.error(&c.obs.service, error_type);
        let event = c.event(
            at.unwrap_or_else(OffsetDateTime::now_utc),
            Level::Error,
            Speaker::System,
            message.into(),
            Metadata::default(),
            c.root,
            c.parent,
            EventKind::ErrorOccurred {
                error_type: error_type.to_string(),
            },
        );
        c.note_on_root(&event);
        let _ = c.obs.emit(event);
    }

    /// Records a compliance violation (`compliance.violation`, level warn).
    pub fn track_compliance_violation(
        &self,
        policy: &str,
        severity: &str,
        description: impl Into<String>,
    ) {
        self.track_compliance_violation_at(policy, severity, description, None);
    }

    /// [`track_compliance_violation`](Self::track_compliance_violation) at a given time.
    pub fn track_compliance_violation_at(
        &self,
        policy: &str,
        severity: &str,
        description: impl Into<String>,
        at: Option<OffsetDateTime>,
    ) {
        let c = &*self.inner;
        if c.is_ended() {
            return c.after_end();
        }
        let event = c.event(
            at.unwrap_or_else(OffsetDateTime::now_utc),
            Level::Warn,
            Speaker::System,
            description.into(),
            Metadata::default(),
            c.root,
            c.parent,
            EventKind::ComplianceViolation {
                policy: policy.to_string(),
                severity: severity.to_string(),
            },
        );
        c.obs
            .metrics
            .violation(&c.series.tenant_label, policy, severity);
        c.note_on_root(&event);
        let _ = c.obs.emit(event);
    }

    /// Ends the conversation (`conversation.ended`). Ending twice records nothing the second
    /// time.
    pub fn end(self, end: ConversationEnd) {
        self.inner.end(end);
    }

    /// True once the conversation has ended.
    pub fn is_ended(&self) -> bool {
        self.inner.is_ended()
    }
}
