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

    /// A voice agent turn with its latency parts, usage and turn marks.
    pub fn agent_voice(&mut self, secs: f64, text: &str, latency: TurnLatency, usage: Option<Usage>, marks: TurnMarks) -> Event {
        let response = latency.response_ms.map(|ms| ms / 1000.0);
        let kind = EventKind::AgentTurn {
            turn: self.seq as u32,
            latency: Some(latency),
            response_time_seconds: response,
            duration_ms: Some(2500.0),
            turn_taking: marks,
            usage: usage.map(Box::new),
        };
        self.event(secs, Speaker::Agent, text, Metadata::default(), kind)
    }

    /// A voice customer turn with its turn marks (an interruption it made, dead air before it).
    pub fn customer_voice(&mut self, secs: f64, text: &str, marks: TurnMarks, usage: Option<Usage>) -> Event {
        let latency = TurnLatency { stt_ms: Some(140.0), ..TurnLatency::default() };
        let kind = EventKind::CustomerTurn { turn: self.seq as u32, latency: Some(latency), duration_ms: Some(1800.0), turn_taking: marks, usage: usage.map(Box::new) };
        self.event(secs, Speaker::Customer, text, Metadata::default(), kind)
    }

    pub fn error(&mut self, secs: f64, error_type: &str, message: &str) -> Event {
        let kind = EventKind::ErrorOccurred { error_type: error_type.into() };
        self.event(secs, Speaker::System, message, Metadata::default(), kind)
    }

    /// The end, with the usage sums the library puts on it.
    pub fn end_with_usage(&mut self, secs: f64, resolution: Resolution, channel: Channel, usage: Usage) -> Event {
        let mut e = self.end(secs, resolution, None, channel);
        if let EventKind::ConversationEnded { usage: u, .. } = &mut e.kind {
            *u = Some(Box::new(usage));
        }
        e
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

/// A voice call (conversation `n`, starting at `secs`): a greeting, the customer's question,
/// an agent reply with every latency part and its tokens and cost, a customer barge-in on the
/// next reply (600 ms of overlap), dead air, an STT error and a transfer.
pub fn voice_call(n: u64, secs: f64) -> Vec<Event> {
    let mut c = Conv::new(n, "acme-telco", "acme-voice-bot");
    let t = secs;
    let llm = |i, o, cost| Some(Usage { cost_usd: Some(cost), ..Usage::llm("gpt-4o-mini", i, o) });
    vec![
        c.start(t, Channel::Voice),
        c.agent_voice(
            t + 0.9,
            "Thanks for calling Acme, how can I help?",
            TurnLatency { llm_ttft_ms: Some(420.0), tts_ttfb_ms: Some(230.0), greeting_ms: Some(900.0), ..TurnLatency::default() },
            llm(380, 12, 0.000064),
            TurnMarks::default(),
        ),
        c.customer_voice(t + 4.0, "Why is my bill so high this month?", TurnMarks { gap_ms: Some(600.0), ..TurnMarks::default() }, None),
        c.agent_voice(
            t + 7.2,
            "Let me check your latest invoice.",
            TurnLatency {
                stt_ms: Some(180.0),
                end_of_utterance_ms: Some(320.0),
                llm_ttft_ms: Some(610.0),
                tool_ms: Some(240.0),
                tts_ttfb_ms: Some(210.0),
                response_ms: Some(1620.0),
                ..TurnLatency::default()
            },
            llm(812, 64, 0.00016),
            TurnMarks { gap_ms: Some(1400.0), ..TurnMarks::default() },
        ),
        c.agent_voice(
            t + 10.5,
            "I see a one-time installation charge of forty dollars, which",
            TurnLatency {
                end_of_utterance_ms: Some(280.0),
                llm_ttft_ms: Some(1900.0),
                tts_ttfb_ms: Some(260.0),
                response_ms: Some(2650.0),
                interrupted: true,
                ..TurnLatency::default()
            },
            llm(1204, 96, 0.00024),
            TurnMarks {
                gap_ms: Some(800.0),
                interruption: Some(Interruption { by: TurnSpeaker::Customer, overlap_ms: Some(600.0), derived: false }),
                ..TurnMarks::default()
            },
        ),
        c.customer_voice(t + 12.4, "I want to talk to a person.", TurnMarks { gap_ms: Some(-600.0), ..TurnMarks::default() }, None),
        c.error(t + 13.0, "stt_unavailable", "speech-to-text timed out"),
        c.customer_voice(t + 17.5, "Hello?", TurnMarks { gap_ms: Some(3100.0), dead_air_ms: Some(3100.0), ..TurnMarks::default() }, None),
        c.transfer(t + 18.0, "human-billing"),
        c.end_with_usage(t + 19.0, Resolution::Transferred, Channel::Voice, Usage {
            cost_usd: Some(0.000464),
            ..Usage::llm("gpt-4o-mini", 2396, 172)
        }),
    ]
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

/// Voice calls of tenant acme every 20 s from [`T0`] for `until_secs`; from 1 h 30 min on, the
/// LLM's time to first token is four times longer (an incident for the detection).
pub fn llm_slowdown(until_secs: u64) -> Vec<Event> {
    let mut out = Vec::new();
    for n in 0..until_secs / 20 {
        let t = (n * 20) as f64;
        let slow = t >= 5400.0;
        let mut c = Conv::new(n, "acme", "bot");
        out.push(c.start(t, Channel::Voice));
        for k in 0..3 {
            // A spread of ±20% around 600 ms, or 2400 ms when slow.
            let ttft = (600.0 + ((n * 7 + k * 13) % 10) as f64 * 24.0 - 120.0) * if slow { 4.0 } else { 1.0 };
            let latency = TurnLatency { llm_ttft_ms: Some(ttft), response_ms: Some(ttft + 300.0), ..TurnLatency::default() };
            out.push(c.agent_voice(t + 2.0 + k as f64, "ok", latency, None, TurnMarks::default()));
        }
        out.push(c.end(t + 10.0, Resolution::Resolved, None, Channel::Voice));
    }
    out.sort_by_key(|e| e.timestamp);
    out
}
