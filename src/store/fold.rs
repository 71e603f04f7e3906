//! A conversation folded from its events, one event at a time: the summary both stores give
//! ([`ConversationSummary`]) and, when asked, the events themselves. The local store folds
//! every conversation of the log with it; the ClickHouse store folds one conversation's events.

use std::collections::BTreeMap;

use super::{ConversationSummary, UsageTotals};
use crate::types::{Event, EventKind, Speaker, TurnSpeaker, TurnTaking};

/// A conversation folded from its events.
pub(super) struct Acc {
    pub(super) summary: ConversationSummary,
    pub(super) sentiment_sum: f64,
    pub(super) sentiment_n: u32,
    pub(super) response_times: Vec<f64>,
    /// The turns' latency parts, in the order of [`crate::types::TurnLatency::parts`].
    pub(super) latency: [Vec<f64>; 7],
    saw_start: bool,
    pub(super) events: Vec<Event>,
}

impl Acc {
    pub(super) fn new(first: &Event) -> Acc {
        Acc {
            summary: ConversationSummary {
                conversation_id: first.conversation_id.to_string(),
                tenant_id: first.tenant_id.to_string(),
                agent_id: first.agent_id.to_string(),
                customer_id: String::new(),
                channel: None,
                language: String::new(),
                started_at: first.timestamp,
                ended_at: None,
                duration_seconds: None,
                resolution: None,
                rating: None,
                agent_turns: 0,
                customer_turns: 0,
                decisions: 0,
                transfers: 0,
                errors: 0,
                violations: 0,
                mean_sentiment: None,
                last_speaker: None,
                trace_id: first.trace.trace_id.to_string(),
                metadata: BTreeMap::new(),
                usage: UsageTotals::default(),
                turn_taking: TurnTaking::default(),
            },
            sentiment_sum: 0.0,
            sentiment_n: 0,
            response_times: Vec::new(),
            latency: Default::default(),
            saw_start: false,
            events: Vec::new(),
        }
    }

    pub(super) fn add(&mut self, e: &Event, keep: bool) {
        let s = &mut self.summary;
        if !self.saw_start && e.timestamp < s.started_at {
            s.started_at = e.timestamp;
        }
        match &e.kind {
            EventKind::ConversationStarted { customer_id, channel, language } => {
                self.saw_start = true;
                s.started_at = e.timestamp;
                s.customer_id = customer_id.clone();
                s.channel = Some(*channel);
                s.language = language.clone();
                s.metadata = e
                    .metadata
                    .extra
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().map_or_else(|| v.to_string(), str::to_string)))
                    .collect();
            }
            EventKind::AgentTurn { response_time_seconds, .. } => {
                s.agent_turns += 1;
                s.last_speaker = Some(Speaker::Agent);
                if let Some(r) = response_time_seconds {
                    self.response_times.push(*r);
                }
            }
            EventKind::CustomerTurn { .. } => {
                s.customer_turns += 1;
                s.last_speaker = Some(Speaker::Customer);
            }
            EventKind::DecisionMade { .. } => s.decisions += 1,
            EventKind::TransferInitiated { .. } => s.transfers += 1,
            EventKind::ConversationEnded { resolution, rating, channel, duration_seconds, .. } => {
                s.ended_at = Some(e.timestamp);
                s.duration_seconds = Some(*duration_seconds);
                s.resolution = Some(*resolution);
                s.rating = *rating;
                s.channel.get_or_insert(*channel);
            }
            EventKind::ErrorOccurred { .. } => s.errors += 1,
            EventKind::ComplianceViolation { .. } => s.violations += 1,
        }
        // The conversation's sentiment is the customer's: the agent's own turns do not count.
        if matches!(e.kind, EventKind::CustomerTurn { .. }) {
            if let Some(score) = e.metadata.sentiment_score {
                self.sentiment_sum += score;
                self.sentiment_n += 1;
                s.mean_sentiment = Some(self.sentiment_sum / self.sentiment_n as f64);
            }
        }
        // Usage of turns and decisions (the end's is their sum: not counted again).
        if !matches!(e.kind, EventKind::ConversationEnded { .. }) {
            if let Some(u) = e.kind.usage() {
                s.usage.add(u);
            }
        }
        if let Some(latency) = e.kind.latency() {
            for (values, (_, ms)) in self.latency.iter_mut().zip(latency.parts()) {
                values.extend(ms);
            }
        }
        let (speaker, duration_ms) = match &e.kind {
            EventKind::AgentTurn { duration_ms, .. } => (Some(TurnSpeaker::Agent), *duration_ms),
            EventKind::CustomerTurn { duration_ms, .. } => (Some(TurnSpeaker::Customer), *duration_ms),
            _ => (None, None),
        };
        if let (Some(speaker), Some(marks)) = (speaker, e.kind.turn_marks()) {
            // The same sums the library puts on `conversation.ended` (see
            // `Conversation::track_interaction`), here from the turns, so that an active
            // conversation has them too and ClickHouse can compute them from its rows.
            let tt = &mut s.turn_taking;
            if let Some(i) = marks.interruption {
                match i.by {
                    TurnSpeaker::Customer => tt.interruptions_by_customer += 1,
                    TurnSpeaker::Agent => tt.interruptions_by_agent += 1,
                }
                tt.overlap_ms += i.overlap_ms.filter(|v| *v > 0.0).unwrap_or(0.0);
            }
            if let Some(ms) = marks.dead_air_ms {
                tt.dead_air_count += 1;
                tt.dead_air_ms += ms;
            }
            let talk = duration_ms.filter(|v| *v >= 0.0).unwrap_or(0.0);
            match speaker {
                TurnSpeaker::Agent => tt.agent_talk_ms += talk,
                TurnSpeaker::Customer => tt.customer_talk_ms += talk,
            }
        }
        if keep {
            self.events.push(e.clone());
        }
    }
}

