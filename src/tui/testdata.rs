//! Hand-made events with fixed ids and times for the state tests and view snapshots.

use std::sync::Arc;

use opentelemetry::trace::{SpanId, TraceId};
use time::OffsetDateTime;
use time::macros::datetime;
use uuid::Uuid;

use crate::types::*;

/// 2026-11-24 09:00:00 UTC.
pub const T0: OffsetDateTime = datetime!(2026-11-24 09:00:00 UTC);

/// Builds the events of conversation `n` (ids and times derived from `n`).
pub struct Conv {
    pub id: String,
    tenant: &'static str,
    agent: &'static str,
    n: u64,
    seq: u64,
}

impl Conv {
    pub fn new(n: u64, tenant: &'static str, agent: &'static str) -> Conv {
        Conv { id: format!("conv-{n:04}"), tenant, agent, n, seq: 0 }
    }

    fn event(&mut self, secs: f64, speaker: Speaker, content: &str, metadata: Metadata, kind: EventKind) -> Event {
        self.seq += 1;
        Event {
            event_id: Uuid::from_u128(((self.n as u128) << 32) | self.seq as u128),
            timestamp: T0 + time::Duration::seconds_f64(secs),
            level: Level::Info,
            service: Arc::from("test"),
            tenant_id: Arc::from(self.tenant),
            conversation_id: Arc::from(self.id.as_str()),
            agent_id: Arc::from(self.agent),
            speaker,
            content: content.to_string(),
            metadata,
            trace: TraceIds {
                trace_id: TraceId::from_bytes(((self.n as u128) + 1).to_be_bytes()),
                span_id: SpanId::from_bytes((self.seq + 1).to_be_bytes()),
                parent_span_id: None,
            },
            kind,
        }
    }

    pub fn start(&mut self, secs: f64, channel: Channel) -> Event {
        let kind = EventKind::ConversationStarted { customer_id: format!("cust-{}", self.n), channel, language: "en-US".into() };
        self.event(secs, Speaker::System, "conversation started", Metadata::default(), kind)
    }

    pub fn customer(&mut self, secs: f64, text: &str, intent: Option<&str>, sentiment: f64) -> Event {
        let metadata = Metadata {
            sentiment_score: Some(sentiment),
            sentiment: Sentiment::from_score(sentiment),
            intent: intent.map(str::to_string),
            confidence: intent.map(|_| 0.92),
            ..Metadata::default()
        };
        let kind = EventKind::CustomerTurn { turn: self.seq as u32, latency: None, duration_ms: Some(1500.0), turn_taking: Default::default(), usage: None };
        self.event(secs, Speaker::Customer, text, metadata, kind)
    }

    pub fn agent(&mut self, secs: f64, text: &str, response: f64, sentiment: f64) -> Event {
        let metadata =
            Metadata { sentiment_score: Some(sentiment), sentiment: Sentiment::from_score(sentiment), ..Metadata::default() };
        let kind = EventKind::AgentTurn { turn: self.seq as u32, latency: None, response_time_seconds: Some(response), duration_ms: None, turn_taking: Default::default(), usage: None };
        self.event(secs, Speaker::Agent, text, metadata, kind)
    }

    pub fn decision(&mut self, secs: f64, decision_type: DecisionType, option: &str, reason: &str) -> Event {
        let kind = EventKind::DecisionMade {
            decision_type,
            option: option.into(),
            reason: reason.into(),
            confidence: Some(0.88),
            duration_ms: Some(120.0),
            usage: None,
        };
        self.event(secs, Speaker::Agent, "decision", Metadata::default(), kind)
    }

    pub fn transfer(&mut self, secs: f64, target: &str) -> Event {
        let kind = EventKind::TransferInitiated { target: target.into(), reason: "customer asked for a person".into() };
        self.event(secs, Speaker::Agent, "transfer", Metadata::default(), kind)
    }

    pub fn end(&mut self, secs: f64, resolution: Resolution, rating: Option<u8>, channel: Channel) -> Event {
        let kind = EventKind::ConversationEnded {
            resolution,
            rating,
            tags: vec![],
            channel,
            duration_seconds: secs - self.first_secs(),
            interaction_count: 2,
            agent_turns: 1,
            customer_turns: 1,
            customer_id: format!("cust-{}", self.n),
            language: "en-US".into(),
            started_at: None,
            usage: None,
            turn_taking: None,

        };
        self.event(secs, Speaker::System, "conversation ended", Metadata::default(), kind)
    }

    fn first_secs(&self) -> f64 {
        (self.n * 10) as f64
    }
}

/// `n` conversations, started 10 s apart: a start, a customer turn, an intent decision, an
/// agent reply; every third also transfers and ends, every fifth ends resolved.
pub fn contact_center(n: u64) -> Vec<Event> {
    let tenants = ["acme-telco", "globex-bank", "initech"];
    let channels = [Channel::Voice, Channel::Chat, Channel::Sms, Channel::Email];
    let mut out = Vec::new();
    for i in 0..n {
        let mut c = Conv::new(i, tenants[(i % 3) as usize], ["billing-bot", "support-bot"][(i % 2) as usize]);
        let t = (i * 10) as f64;
        let channel = channels[(i % 4) as usize];
        out.push(c.start(t, channel));
        out.push(c.customer(t + 1.0, "My bill is twice what it was last month, why?", Some("billing"), -0.6));
        out.push(c.decision(t + 2.0, DecisionType::IntentDetection, "billing", "asked about the bill"));
        out.push(c.agent(t + 3.5, "I see a one-time installation charge; I can explain it.", 1.2 + (i % 5) as f64 * 0.3, 0.4));
        if i % 3 == 0 {
            out.push(c.transfer(t + 6.0, "human-billing"));
            out.push(c.end(t + 7.0, Resolution::Transferred, None, channel));
        } else if i % 5 == 0 {
            out.push(c.end(t + 8.0, Resolution::Resolved, Some(5), channel));
        }
    }
    out.sort_by_key(|e| e.timestamp);
    out
}
