//! Prometheus metrics: the eleven conversation metrics (fixed names and labels), the pipeline's self-metrics,
//! a label-cardinality cap, and the `/metrics` endpoint ([`server`]).
//!
//! Each [`Observability`](crate::Observability) has its own registry, so several can live in
//! one process (tests do). Gauges of quality (sentiment, assertiveness, compliance) hold the
//! latest scored value per series; dashboards average them over time.

pub mod server;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use prometheus::{
    CounterVec, Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use crate::types::{Channel, Resolution};

/// The value unbounded labels take past the cap.
pub const OVERFLOW_LABEL: &str = "other";

/// The longest label value, in bytes: longer values are cut (on a character boundary) by
/// [`label_value`].
pub const MAX_LABEL_VALUE_BYTES: usize = 128;

/// A label value as the metrics record it: control characters (NUL, newlines, escapes…)
/// removed and cut to at most [`MAX_LABEL_VALUE_BYTES`] bytes on a character boundary. Every
/// free-text label value of the series methods passes here (issue 14: a 10,000-character
/// tenant id made 10 KB label values, and a NUL byte went into the exposition as it was).
pub fn label_value(value: &str) -> std::borrow::Cow<'_, str> {
    if value.len() <= MAX_LABEL_VALUE_BYTES && !value.chars().any(char::is_control) {
        return std::borrow::Cow::Borrowed(value);
    }
    let mut out = String::with_capacity(MAX_LABEL_VALUE_BYTES);
    for c in value.chars().filter(|c| !c.is_control()) {
        if out.len() + c.len_utf8() > MAX_LABEL_VALUE_BYTES {
            break;
        }
        out.push(c);
    }
    std::borrow::Cow::Owned(out)
}

/// The conversation metrics' names, exactly (a contract: dashboards and alerts use them).
pub const SEED_METRICS: [&str; 11] = [
    "conversation_total",
    "conversation_duration_seconds",
    "conversation_interactions_total",
    "conversation_resolution_rate",
    "conversation_customer_rating",
    "agent_response_time_seconds",
    "http_request_duration_seconds",
    "error_rate",
    "conversation_sentiment_score",
    "agent_assertiveness_score",
    "conversation_compliance_score",
];

/// Registering a metric failed (a name clash in the registry).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MetricsError {
    /// The registry refused a metric.
    #[error("cannot register metric: {0}")]
    Register(#[from] prometheus::Error),
    /// The `/metrics` endpoint could not listen.
    #[error("cannot serve /metrics on {addr} (set metrics.listen or SERPHONA_OBS_METRICS_LISTEN to a free address, e.g. 127.0.0.1:0)")]
    Bind {
        /// The configured address.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// One sink's self-metrics, labelled with its name in this one place: the counters every sink
/// has are labelled up front, the ones only some sinks use (delivery, retries, the spool,
/// rejected rows) when first used, so a sink shows only the series it has.
#[derive(Clone)]
pub struct SinkMetrics {
    name: Arc<str>,
    all: Arc<SelfMetrics>,
    /// `serphona_obs_sink_events_total{sink}`: events handed to the sink.
    pub events_exported: IntCounter,
    /// `serphona_obs_sink_events_failed_total{sink}`: events the sink failed or dropped.
    pub events_failed: IntCounter,
    /// `serphona_obs_batches_exported_total{sink}`.
    pub batches_exported: IntCounter,
    /// `serphona_obs_batches_failed_total{sink}`.
    pub batches_failed: IntCounter,
}

impl SinkMetrics {
    /// The sink's name (the `sink` label).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `serphona_obs_events_delivered_total{sink}`: events the server took.
    pub fn delivered(&self) -> IntCounter {
        self.all.events_delivered.with_label_values(&[&self.name])
    }

    /// `serphona_obs_export_retries_total{sink}`: failed attempts that will be retried.
    pub fn retries(&self) -> IntCounter {
        self.all.export_retries.with_label_values(&[&self.name])
    }

    /// `serphona_obs_spool_bytes{sink}`.
    pub fn spool_bytes(&self) -> IntGauge {
        self.all.spool_bytes.with_label_values(&[&self.name])
    }

    /// `serphona_obs_events_pending{sink}`: events accepted but not yet delivered, kept in
    /// durable state for the next start (the event log past the sink's committed position, and
    /// the spool).
    pub fn pending(&self) -> IntGauge {
        self.all.events_pending.with_label_values(&[&self.name])
    }

    /// `serphona_obs_events_spooled_total{sink}`.
    pub fn spooled(&self) -> IntCounter {
        self.all.events_spooled.with_label_values(&[&self.name])
    }

    /// `serphona_obs_spool_dropped_events_total{sink}`: spooled events lost (spool full,
    /// unreadable, unwritable).
    pub fn spool_dropped(&self) -> IntCounter {
        self.all.spool_dropped.with_label_values(&[&self.name])
    }

    /// `serphona_obs_sink_write_errors_total{sink,kind}`: failed writes by kind (`disk_full`,
    /// `io`, `other`).
    pub fn write_error(&self, kind: &str) -> IntCounter {
        self.all.write_errors.with_label_values(&[&self.name, kind])
    }

    /// `serphona_obs_rows_rejected_total{sink,table,code}`.
    pub fn rejected(&self, table: &str, code: &str) -> IntCounter {
        self.all.rows_rejected.with_label_values(&[&self.name, table, code])
    }

    /// Labels the delivery series up front (a remote sink shows them at 0 from its start).
    pub fn with_delivery_series(self) -> SinkMetrics {
        self.delivered();
        self.retries();
        self
    }
}

/// The series one conversation updates on every turn, labelled once
/// ([`Metrics::conversation_series`]).
#[derive(Clone)]
pub struct ConversationSeries {
    /// `agent_response_time_seconds{agent_id,tenant_id}`.
    pub response_time: Histogram,
    /// `conversation_sentiment_score{tenant_id,agent_id}`.
    pub sentiment: Gauge,
    /// `agent_assertiveness_score{agent_id}`.
    pub assertiveness: Gauge,
}

/// The pipeline's own metrics (`serphona_obs_*`).
pub struct SelfMetrics {
    /// Events accepted into the queue.
    pub events_accepted: IntCounter,
    /// Events not accepted, by reason.
    pub events_dropped: IntCounterVec,
    /// Events waiting in the queue (refreshed on every dispatch and every scrape).
    pub queue_depth: IntGauge,
    /// The queue's capacity.
    pub queue_capacity: IntGauge,
    /// Events a sink took, by sink.
    pub events_exported: IntCounterVec,
    /// Events in batches a sink failed to take, by sink.
    pub events_failed: IntCounterVec,
    /// Batches a sink took, by sink.
    pub batches_exported: IntCounterVec,
    /// Batches a sink failed on, by sink.
    pub batches_failed: IntCounterVec,
    /// Label values recorded as `other` because of the cap, by label.
    pub label_overflow: IntCounterVec,
    /// Subscribers of the live broadcast that fell behind, in events skipped.
    pub live_lagged: IntCounter,
    /// Events whose rows a server acknowledged, by sink.
    pub events_delivered: IntCounterVec,
    /// Insert attempts that failed and will be retried (or spooled), by sink.
    pub export_retries: IntCounterVec,
    /// Rows a server rejected for good (bad data, type mismatch), by sink, table and error code.
    pub rows_rejected: IntCounterVec,
    /// Bytes waiting in the disk spool, by sink.
    pub spool_bytes: IntGaugeVec,
    /// Events written to the disk spool, by sink.
    pub events_spooled: IntCounterVec,
    /// Events accepted but not delivered, kept in durable state for the next start, by sink
    /// (set at shutdown).
    pub events_pending: IntGaugeVec,
    /// Events dropped from the full disk spool (or unreadable there), by sink.
    pub spool_dropped: IntCounterVec,
    /// Failed writes (a batch to a sink, a batch to a spool), by sink and kind.
    pub write_errors: IntCounterVec,
    /// Values the privacy policy redacted, by kind (detector or rule name; never the value).
    pub redactions: IntCounterVec,
}

impl SelfMetrics {
    /// The handle of one sink's series.
    pub fn sink(self: &Arc<SelfMetrics>, name: &str) -> SinkMetrics {
        SinkMetrics {
            name: Arc::from(name),
            all: self.clone(),
            events_exported: self.events_exported.with_label_values(&[name]),
            events_failed: self.events_failed.with_label_values(&[name]),
            batches_exported: self.batches_exported.with_label_values(&[name]),
            batches_failed: self.batches_failed.with_label_values(&[name]),
        }
    }

    fn register(registry: &Registry) -> Result<SelfMetrics, MetricsError> {
        let m = SelfMetrics {
            events_accepted: IntCounter::new(
                "serphona_obs_events_accepted_total",
                "Events accepted into the pipeline queue.",
            )?,
            events_dropped: IntCounterVec::new(
                Opts::new("serphona_obs_events_dropped_total", "Events dropped before the sinks, by reason."),
                &["reason"],
            )?,
            queue_depth: IntGauge::new("serphona_obs_queue_depth", "Events waiting in the pipeline queue.")?,
            queue_capacity: IntGauge::new("serphona_obs_queue_capacity", "Capacity of the pipeline queue.")?,
            events_exported: IntCounterVec::new(
                Opts::new("serphona_obs_sink_events_total", "Events a sink accepted, by sink."),
                &["sink"],
            )?,
            events_failed: IntCounterVec::new(
                Opts::new("serphona_obs_sink_events_failed_total", "Events in batches a sink failed on, by sink."),
                &["sink"],
            )?,
            batches_exported: IntCounterVec::new(
                Opts::new("serphona_obs_batches_exported_total", "Batches a sink accepted, by sink."),
                &["sink"],
            )?,
            batches_failed: IntCounterVec::new(
                Opts::new("serphona_obs_batches_failed_total", "Batches a sink failed on, by sink."),
                &["sink"],
            )?,
            label_overflow: IntCounterVec::new(
                Opts::new(
                    "serphona_obs_label_overflow_total",
                    "Recordings whose label value became \"other\" because the label's cap was reached \
                     (counted per recording, not per distinct value), by label.",
                ),
                &["label"],
            )?,
            live_lagged: IntCounter::new(
                "serphona_obs_live_lagged_events_total",
                "Events live subscribers (tail, demo) skipped because they fell behind.",
            )?,
            events_delivered: IntCounterVec::new(
                Opts::new("serphona_obs_events_delivered_total", "Events whose rows the server acknowledged, by sink."),
                &["sink"],
            )?,
            export_retries: IntCounterVec::new(
                Opts::new("serphona_obs_export_retries_total", "Failed insert attempts that are retried or spooled, by sink."),
                &["sink"],
            )?,
            rows_rejected: IntCounterVec::new(
                Opts::new(
                    "serphona_obs_rows_rejected_total",
                    "Rows the server rejected for good (not retried; kept in the spool's rejected.jsonl), by sink, table and error code.",
                ),
                &["sink", "table", "code"],
            )?,
            spool_bytes: IntGaugeVec::new(
                Opts::new("serphona_obs_spool_bytes", "Bytes of undelivered batches in the disk spool, by sink."),
                &["sink"],
            )?,
            events_pending: IntGaugeVec::new(
                Opts::new(
                    "serphona_obs_events_pending",
                    "Events accepted but not yet delivered, kept in durable state (the event log past the sink's committed position, the spool) for the next start, by sink.",
                ),
                &["sink"],
            )?,
            events_spooled: IntCounterVec::new(
                Opts::new("serphona_obs_events_spooled_total", "Events written to the disk spool, by sink."),
                &["sink"],
            )?,
            spool_dropped: IntCounterVec::new(
                Opts::new(
                    "serphona_obs_spool_dropped_events_total",
                    "Events dropped because the disk spool was full or a spooled file was unreadable, by sink.",
                ),
                &["sink"],
            )?,
            write_errors: IntCounterVec::new(
                Opts::new(
                    "serphona_obs_sink_write_errors_total",
                    "Failed writes of a sink (a batch to the event log, a batch to a spool), by sink and kind: \
                     disk_full (no space, file too large, quota), io, other.",
                ),
                &["sink", "kind"],
            )?,
            redactions: IntCounterVec::new(
                Opts::new(
                    "serphona_obs_redactions_total",
                    "Values the privacy policy redacted before the sinks, by kind (built-in detector or custom rule).",
                ),
                &["kind"],
            )?,
        };
        registry.register(Box::new(m.write_errors.clone()))?;
        registry.register(Box::new(m.redactions.clone()))?;
        registry.register(Box::new(m.events_accepted.clone()))?;
        registry.register(Box::new(m.events_delivered.clone()))?;
        registry.register(Box::new(m.export_retries.clone()))?;
        registry.register(Box::new(m.rows_rejected.clone()))?;
        registry.register(Box::new(m.spool_bytes.clone()))?;
        registry.register(Box::new(m.events_spooled.clone()))?;
        registry.register(Box::new(m.events_pending.clone()))?;
        registry.register(Box::new(m.spool_dropped.clone()))?;
        registry.register(Box::new(m.events_dropped.clone()))?;
        registry.register(Box::new(m.queue_depth.clone()))?;
        registry.register(Box::new(m.queue_capacity.clone()))?;
        registry.register(Box::new(m.events_exported.clone()))?;
        registry.register(Box::new(m.events_failed.clone()))?;
        registry.register(Box::new(m.batches_exported.clone()))?;
        registry.register(Box::new(m.batches_failed.clone()))?;
        registry.register(Box::new(m.label_overflow.clone()))?;
        registry.register(Box::new(m.live_lagged.clone()))?;
        m.events_dropped.with_label_values(&["queue_full"]);
        m.events_dropped.with_label_values(&["shutdown"]);
        m.events_dropped.with_label_values(&["after_end"]);
        Ok(m)
    }
}

/// Keeps at most `max` distinct values of one label; later ones become [`OVERFLOW_LABEL`].
struct LabelCap {
    label: &'static str,
    max: usize,
    seen: Mutex<HashSet<Arc<str>>>,
}

impl LabelCap {
    fn new(label: &'static str, max: usize) -> Self {
        LabelCap { label, max, seen: Mutex::new(HashSet::new()) }
    }

    fn get(&self, value: &str, overflow: &IntCounterVec) -> Arc<str> {
        let value = &*label_value(value);
        let mut seen = self.seen.lock().expect("label cap lock");
        if let Some(v) = seen.get(value) {
            return v.clone();
        }
        if seen.len() < self.max {
            let v: Arc<str> = Arc::from(value);
            seen.insert(v.clone());
            return v;
        }
        drop(seen);
        overflow.with_label_values(&[self.label]).inc();
        Arc::from(OVERFLOW_LABEL)
    }
}

/// (tenant_id, agent_id) label values.
type TenantAgent = (Arc<str>, Arc<str>);

#[derive(Default)]
struct ResolutionCounts {
    total: u64,
    by: [u64; Resolution::ALL.len()],
}

/// The metrics of one [`Observability`](crate::Observability).
pub struct Metrics {
    registry: Registry,
    /// `conversation_total{tenant_id,agent_id,channel}`: conversations started.
    pub conversation_total: IntCounterVec,
    /// `conversation_duration_seconds{tenant_id,agent_id,resolution}`.
    pub conversation_duration: HistogramVec,
    /// `conversation_interactions_total{tenant_id,speaker_type}`: turns per conversation.
    pub conversation_interactions: HistogramVec,
    /// `conversation_resolution_rate{tenant_id,agent_id,resolution_type}`: share of ended
    /// conversations of the tenant and agent that ended this way.
    pub resolution_rate: GaugeVec,
    /// `conversation_customer_rating{tenant_id,agent_id}`.
    pub customer_rating: HistogramVec,
    /// `agent_response_time_seconds{agent_id,tenant_id}`.
    pub agent_response_time: HistogramVec,
    /// `http_request_duration_seconds{method,path,status}` (path = route template).
    pub http_request_duration: HistogramVec,
    /// `error_rate{service,error_type}`: errors counted.
    pub error_rate: IntCounterVec,
    /// `conversation_sentiment_score{tenant_id,agent_id}`: latest scored sentiment.
    pub sentiment: GaugeVec,
    /// `agent_assertiveness_score{agent_id}`: latest assertiveness.
    pub assertiveness: GaugeVec,
    /// `conversation_compliance_score{tenant_id,policy}`: latest compliance score.
    pub compliance: GaugeVec,
    /// `serphona_obs_voice_turn_latency_seconds{tenant_id,part}`: voice latency parts.
    pub voice_latency: HistogramVec,
    /// `serphona_obs_compliance_violations_total{tenant_id,policy,severity}`: violations
    /// recorded (severity one of low, medium, high, critical, or `other`).
    pub compliance_violations: IntCounterVec,
    /// Conversations in progress, `serphona_obs_active_conversations{tenant_id}`.
    pub active_conversations: IntGaugeVec,
    /// `serphona_obs_llm_tokens_total{tenant_id,model,kind}`: tokens by kind (`input`,
    /// `output`, `cached`, `audio`; cached tokens are also counted in `input`).
    pub llm_tokens: IntCounterVec,
    /// `serphona_obs_cost_usd_total{tenant_id,model}`: cost in US dollars, by priced model or
    /// service (an LLM, a speech-to-text or text-to-speech model, a telephony provider).
    pub cost_usd: CounterVec,
    /// `serphona_obs_usage_unpriced_total{tenant_id,model}`: usages whose model or service
    /// the price table does not know (their cost is not counted).
    pub usage_unpriced: IntCounterVec,
    /// `serphona_obs_interruptions_total{tenant_id,by}`: interruptions, by who interrupted
    /// (`customer` barge-in, `agent` talking over).
    pub interruptions: IntCounterVec,
    /// `serphona_obs_turn_overlap_seconds_total{tenant_id}`: time both sides talked at once.
    pub overlap: CounterVec,
    /// `serphona_obs_dead_air_total{tenant_id}`: silences between turns of at least
    /// `voice.dead_air_threshold`.
    pub dead_air: IntCounterVec,
    /// `serphona_obs_dead_air_seconds_total{tenant_id}`: their length.
    pub dead_air_seconds: CounterVec,
    /// `serphona_obs_talk_seconds_total{tenant_id,speaker_type}`: speaking time (turns with
    /// a known duration).
    pub talk_seconds: CounterVec,
    /// The pipeline's own metrics.
    pub pipeline: Arc<SelfMetrics>,
    tenants: LabelCap,
    agents: LabelCap,
    policies: LabelCap,
    error_types: LabelCap,
    paths: LabelCap,
    models: LabelCap,
    resolutions: Mutex<HashMap<TenantAgent, ResolutionCounts>>,
    queue_len: std::sync::OnceLock<Box<dyn Fn() -> usize + Send + Sync>>,
}

fn histogram(name: &str, help: &str, labels: &[&str], buckets: Vec<f64>) -> Result<HistogramVec, prometheus::Error> {
    HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels)
}

impl Metrics {
    /// Creates the metrics in a new registry. `max_label_values` caps each of the labels
    /// tenant_id, agent_id, policy and error_type separately.
    pub fn new(max_label_values: usize) -> Result<Metrics, MetricsError> {
        let registry = Registry::new();
        let m = Metrics {
            conversation_total: IntCounterVec::new(
                Opts::new("conversation_total", "Conversations started."),
                &["tenant_id", "agent_id", "channel"],
            )?,
            conversation_duration: histogram(
                "conversation_duration_seconds",
                "Duration of ended conversations.",
                &["tenant_id", "agent_id", "resolution"],
                vec![5.0, 15.0, 30.0, 60.0, 120.0, 180.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0],
            )?,
            conversation_interactions: histogram(
                "conversation_interactions_total",
                "Interactions per ended conversation, by speaker type.",
                &["tenant_id", "speaker_type"],
                vec![1.0, 2.0, 3.0, 5.0, 8.0, 13.0, 21.0, 34.0, 55.0, 89.0],
            )?,
            resolution_rate: GaugeVec::new(
                Opts::new(
                    "conversation_resolution_rate",
                    "Share of ended conversations of a tenant and agent that ended with this resolution.",
                ),
                &["tenant_id", "agent_id", "resolution_type"],
            )?,
            customer_rating: histogram(
                "conversation_customer_rating",
                "Customer ratings (1-5) of ended conversations.",
                &["tenant_id", "agent_id"],
                vec![1.0, 2.0, 3.0, 4.0, 5.0],
            )?,
            agent_response_time: histogram(
                "agent_response_time_seconds",
                "Agent response time: from the customer's turn to the agent's reply.",
                &["agent_id", "tenant_id"],
                vec![0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0],
            )?,
            http_request_duration: histogram(
                "http_request_duration_seconds",
                "HTTP request duration by method, route template and status.",
                &["method", "path", "status"],
                prometheus::DEFAULT_BUCKETS.to_vec(),
            )?,
            error_rate: IntCounterVec::new(
                Opts::new("error_rate", "Errors, by service and error type."),
                &["service", "error_type"],
            )?,
            sentiment: GaugeVec::new(
                Opts::new("conversation_sentiment_score", "Latest scored sentiment (-1..1) per tenant and agent."),
                &["tenant_id", "agent_id"],
            )?,
            assertiveness: GaugeVec::new(
                Opts::new("agent_assertiveness_score", "Latest assertiveness score (0..1) of the agent."),
                &["agent_id"],
            )?,
            compliance: GaugeVec::new(
                Opts::new("conversation_compliance_score", "Latest compliance score (0..1) per tenant and policy."),
                &["tenant_id", "policy"],
            )?,
            voice_latency: histogram(
                "serphona_obs_voice_turn_latency_seconds",
                "Voice turn latency parts: stt, end_of_utterance, llm_ttft, tts_ttfb, tool, greeting, response.",
                &["tenant_id", "part"],
                vec![0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0],
            )?,
            compliance_violations: IntCounterVec::new(
                Opts::new("serphona_obs_compliance_violations_total", "Compliance violations recorded, by tenant, policy and severity."),
                &["tenant_id", "policy", "severity"],
            )?,
            active_conversations: IntGaugeVec::new(
                Opts::new("serphona_obs_active_conversations", "Conversations started and not yet ended."),
                &["tenant_id"],
            )?,
            llm_tokens: IntCounterVec::new(
                Opts::new("serphona_obs_llm_tokens_total", "LLM tokens, by tenant, model and kind (input, output, cached, audio)."),
                &["tenant_id", "model", "kind"],
            )?,
            cost_usd: CounterVec::new(
                Opts::new("serphona_obs_cost_usd_total", "Cost in US dollars, by tenant and priced model or service."),
                &["tenant_id", "model"],
            )?,
            usage_unpriced: IntCounterVec::new(
                Opts::new(
                    "serphona_obs_usage_unpriced_total",
                    "Usages whose model or service is not in the price table (their cost is not counted).",
                ),
                &["tenant_id", "model"],
            )?,
            interruptions: IntCounterVec::new(
                Opts::new("serphona_obs_interruptions_total", "Interruptions, by tenant and who interrupted (customer, agent)."),
                &["tenant_id", "by"],
            )?,
            overlap: CounterVec::new(
                Opts::new("serphona_obs_turn_overlap_seconds_total", "Seconds both sides talked at once."),
                &["tenant_id"],
            )?,
            dead_air: IntCounterVec::new(
                Opts::new("serphona_obs_dead_air_total", "Silences between turns of at least voice.dead_air_threshold."),
                &["tenant_id"],
            )?,
            dead_air_seconds: CounterVec::new(
                Opts::new("serphona_obs_dead_air_seconds_total", "Seconds of dead air between turns."),
                &["tenant_id"],
            )?,
            talk_seconds: CounterVec::new(
                Opts::new("serphona_obs_talk_seconds_total", "Speaking time of turns with a known duration, by speaker type."),
                &["tenant_id", "speaker_type"],
            )?,
            pipeline: Arc::new(SelfMetrics::register(&registry)?),
            tenants: LabelCap::new("tenant_id", max_label_values),
            agents: LabelCap::new("agent_id", max_label_values),
            policies: LabelCap::new("policy", max_label_values),
            error_types: LabelCap::new("error_type", max_label_values),
            paths: LabelCap::new("path", max_label_values),
            models: LabelCap::new("model", max_label_values),
            resolutions: Mutex::new(HashMap::new()),
            queue_len: std::sync::OnceLock::new(),
            registry,
        };
        m.registry.register(Box::new(m.conversation_total.clone()))?;
        m.registry.register(Box::new(m.conversation_duration.clone()))?;
        m.registry.register(Box::new(m.conversation_interactions.clone()))?;
        m.registry.register(Box::new(m.resolution_rate.clone()))?;
        m.registry.register(Box::new(m.customer_rating.clone()))?;
        m.registry.register(Box::new(m.agent_response_time.clone()))?;
        m.registry.register(Box::new(m.http_request_duration.clone()))?;
        m.registry.register(Box::new(m.error_rate.clone()))?;
        m.registry.register(Box::new(m.sentiment.clone()))?;
        m.registry.register(Box::new(m.assertiveness.clone()))?;
        m.registry.register(Box::new(m.compliance.clone()))?;
        m.registry.register(Box::new(m.voice_latency.clone()))?;
        m.registry.register(Box::new(m.active_conversations.clone()))?;
        m.registry.register(Box::new(m.compliance_violations.clone()))?;
        m.registry.register(Box::new(m.llm_tokens.clone()))?;
        m.registry.register(Box::new(m.cost_usd.clone()))?;
        m.registry.register(Box::new(m.usage_unpriced.clone()))?;
        m.registry.register(Box::new(m.interruptions.clone()))?;
        m.registry.register(Box::new(m.overlap.clone()))?;
        m.registry.register(Box::new(m.dead_air.clone()))?;
        m.registry.register(Box::new(m.dead_air_seconds.clone()))?;
        m.registry.register(Box::new(m.talk_seconds.clone()))?;
        Ok(m)
    }

    /// The registry (to add your own metrics to the same `/metrics`).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The tenant label value after the cap.
    pub fn tenant_label(&self, tenant: &str) -> Arc<str> {
        self.tenants.get(tenant, &self.pipeline.label_overflow)
    }

    /// The agent label value after the cap.
    pub fn agent_label(&self, agent: &str) -> Arc<str> {
        self.agents.get(agent, &self.pipeline.label_overflow)
    }

    /// The policy label value after the cap.
    pub fn policy_label(&self, policy: &str) -> Arc<str> {
        self.policies.get(policy, &self.pipeline.label_overflow)
    }

    /// The error_type label value after the cap.
    pub fn error_type_label(&self, error_type: &str) -> Arc<str> {
        self.error_types.get(error_type, &self.pipeline.label_overflow)
    }

    /// The path label value after the cap (route templates and gRPC methods are few; the cap
    /// guards against a client calling made-up gRPC methods).
    pub fn path_label(&self, path: &str) -> Arc<str> {
        self.paths.get(path, &self.pipeline.label_overflow)
    }

    // The series methods: every label order of the conversation metrics is written here, once.
    // Tenant, agent, policy and error-type values are the capped labels (`*_label`).

    /// A conversation started: `conversation_total{tenant_id,agent_id,channel}` and the active
    /// gauge.
    pub fn conversation_started(&self, tenant: &str, agent: &str, channel: Channel) {
        self.conversation_total.with_label_values(&[tenant, agent, channel.as_str()]).inc();
        self.active_conversations.with_label_values(&[tenant]).inc();
    }

    /// A conversation ended: its duration, turns per side, rating, resolution rates and the
    /// active gauge.
    #[allow(clippy::too_many_arguments)]
    pub fn conversation_ended(
        &self,
        tenant: &Arc<str>,
        agent: &Arc<str>,
        resolution: Resolution,
        duration_seconds: f64,
        agent_turns: u32,
        customer_turns: u32,
        rating: Option<u8>,
    ) {
        self.conversation_duration.with_label_values(&[tenant, agent, resolution.as_str()]).observe(duration_seconds);
        self.conversation_interactions.with_label_values(&[tenant, "agent"]).observe(agent_turns as f64);
        self.conversation_interactions.with_label_values(&[tenant, "customer"]).observe(customer_turns as f64);
        if let Some(rating) = rating {
            self.customer_rating.with_label_values(&[tenant, agent]).observe(rating as f64);
        }
        self.record_resolution(tenant, agent, resolution);
        self.active_conversations.with_label_values(&[tenant]).dec();
    }

    /// The per-conversation series of a tenant and agent, labelled once when the conversation
    /// starts.
    pub fn conversation_series(&self, tenant: &str, agent: &str) -> ConversationSeries {
        ConversationSeries {
            response_time: self.agent_response_time.with_label_values(&[agent, tenant]),
            sentiment: self.sentiment.with_label_values(&[tenant, agent]),
            assertiveness: self.assertiveness.with_label_values(&[agent]),
        }
    }

    /// `conversation_compliance_score{tenant_id,policy}`.
    pub fn compliance_score(&self, tenant: &str, policy: &str, score: f64) {
        self.compliance.with_label_values(&[tenant, &self.policy_label(policy)]).set(score);
    }

    /// `serphona_obs_voice_latency_seconds{tenant_id,part}`.
    pub fn voice_latency_part(&self, tenant: &str, part: &str, seconds: f64) {
        self.voice_latency.with_label_values(&[tenant, &label_value(part)]).observe(seconds);
    }

    /// The model label value after the cap.
    pub fn model_label(&self, model: &str) -> Arc<str> {
        self.models.get(model, &self.pipeline.label_overflow)
    }

    /// A priced usage: its tokens, its cost per priced model or service, and the names the
    /// price table did not know.
    pub fn usage(&self, tenant: &str, usage: &crate::types::Usage, costing: &crate::pricing::Costing) {
        let model = self.model_label(usage.model.as_deref().unwrap_or("unknown"));
        let kinds = [
            ("input", usage.input_tokens),
            ("output", usage.output_tokens),
            ("cached", usage.cached_tokens),
            ("audio", usage.audio_tokens),
        ];
        for (kind, n) in kinds {
            if let Some(n) = n.filter(|n| *n > 0) {
                self.llm_tokens.with_label_values(&[tenant, &model, kind]).inc_by(n);
            }
        }
        for (name, usd) in &costing.lines {
            if usd.is_finite() && *usd > 0.0 {
                self.cost_usd.with_label_values(&[tenant, &self.model_label(name)]).inc_by(*usd);
            }
        }
        for name in &costing.unpriced {
            self.usage_unpriced.with_label_values(&[tenant, &self.model_label(name)]).inc();
        }
    }

    /// A turn's turn-taking: who interrupted, the overlap, dead air and speaking time.
    pub fn turn_taking(
        &self,
        tenant: &str,
        speaker: &str,
        marks: &crate::types::TurnMarks,
        talk_ms: Option<f64>,
    ) {
        let ok = |v: f64| v.is_finite() && v > 0.0;
        if let Some(i) = &marks.interruption {
            let by = match i.by {
                crate::types::TurnSpeaker::Agent => "agent",
                crate::types::TurnSpeaker::Customer => "customer",
            };
            self.interruptions.with_label_values(&[tenant, by]).inc();
            if let Some(ms) = i.overlap_ms.filter(|v| ok(*v)) {
                self.overlap.with_label_values(&[tenant]).inc_by(ms / 1000.0);
            }
        }
        if let Some(ms) = marks.dead_air_ms.filter(|v| ok(*v)) {
            self.dead_air.with_label_values(&[tenant]).inc();
            self.dead_air_seconds.with_label_values(&[tenant]).inc_by(ms / 1000.0);
        }
        if let Some(ms) = talk_ms.filter(|v| ok(*v)) {
            self.talk_seconds.with_label_values(&[tenant, speaker]).inc_by(ms / 1000.0);
        }
    }

    /// `error_rate{service,error_type}`.
    pub fn error(&self, service: &str, error_type: &str) {
        self.error_rate.with_label_values(&[&*label_value(service), &*self.error_type_label(error_type)]).inc();
    }

    /// `serphona_obs_compliance_violations_total{tenant_id,policy,severity}`; a severity other
    /// than low, medium, high or critical counts as `other`.
    pub fn violation(&self, tenant: &str, policy: &str, severity: &str) {
        let severity = match severity {
            "low" | "medium" | "high" | "critical" => severity,
            _ => "other",
        };
        self.compliance_violations.with_label_values(&[tenant, &self.policy_label(policy), severity]).inc();
    }

    /// `http_request_duration_seconds{method,path,status}`.
    pub fn http_request(&self, method: &str, route: &str, status: &str, seconds: f64) {
        self.http_request_duration
            .with_label_values(&[&label_value(method), &label_value(route), &label_value(status)])
            .observe(seconds);
    }

    /// Records an ended conversation's resolution and refreshes the tenant/agent's rates.
    pub fn record_resolution(&self, tenant: &Arc<str>, agent: &Arc<str>, resolution: Resolution) {
        let mut all = self.resolutions.lock().expect("resolution lock");
        let counts = all.entry((tenant.clone(), agent.clone())).or_default();
        counts.total += 1;
        let idx = Resolution::ALL.iter().position(|r| *r == resolution).expect("known resolution");
        counts.by[idx] += 1;
        for (i, r) in Resolution::ALL.iter().enumerate() {
            self.resolution_rate
                .with_label_values(&[tenant, agent, r.as_str()])
                .set(counts.by[i] as f64 / counts.total as f64);
        }
    }

    /// Sets where the queue depth is read at scrape time.
    pub(crate) fn set_queue_len(&self, f: impl Fn() -> usize + Send + Sync + 'static) {
        let _ = self.queue_len.set(Box::new(f));
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        if let Some(len) = self.queue_len.get() {
            self.pipeline.queue_depth.set(len() as i64);
        }
        let mut buf = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buf).expect("text encoding never fails");
        String::from_utf8(buf).expect("exposition is UTF-8")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_cap_overflows_to_other_and_counts() {
        let m = Metrics::new(2).unwrap();
        assert_eq!(&*m.tenant_label("a"), "a");
        assert_eq!(&*m.tenant_label("b"), "b");
        assert_eq!(&*m.tenant_label("a"), "a");
        assert_eq!(&*m.tenant_label("c"), OVERFLOW_LABEL);
        assert_eq!(&*m.tenant_label("d"), OVERFLOW_LABEL);
        assert_eq!(m.pipeline.label_overflow.with_label_values(&["tenant_id"]).get(), 2);
        // Agents have their own cap.
        assert_eq!(&*m.agent_label("c"), "c");
    }

    #[test]
    fn label_values_are_cut_on_a_character_boundary_and_lose_control_characters() {
        assert_eq!(label_value("t1"), "t1");
        assert_eq!(label_value("a\0b\nc\u{1b}[31m"), "abc[31m");
        let long = "名".repeat(100); // 300 bytes
        let cut = label_value(&long);
        assert_eq!(cut.len(), 126);
        assert!(cut.chars().all(|c| c == '名'));
        let m = Metrics::new(10).unwrap();
        assert_eq!(m.tenant_label(&"x".repeat(10_000)).len(), MAX_LABEL_VALUE_BYTES);
    }

    #[test]
    fn resolution_rate_is_a_share_per_tenant_agent() {
        let m = Metrics::new(10).unwrap();
        let (t, a) = (m.tenant_label("t"), m.agent_label("a"));
        m.record_resolution(&t, &a, Resolution::Resolved);
        m.record_resolution(&t, &a, Resolution::Resolved);
        m.record_resolution(&t, &a, Resolution::Transferred);
        m.record_resolution(&t, &a, Resolution::Abandoned);
        let get = |r: &str| m.resolution_rate.with_label_values(&["t", "a", r]).get();
        assert_eq!(get("resolved"), 0.5);
        assert_eq!(get("transferred"), 0.25);
        assert_eq!(get("abandoned"), 0.25);
        assert_eq!(get("escalated"), 0.0);
    }

    #[test]
    fn all_seed_metrics_registered() {
        let m = Metrics::new(10).unwrap();
        // Touch one series of each so they appear in the exposition.
        m.conversation_total.with_label_values(&["t", "a", "voice"]).inc();
        m.conversation_duration.with_label_values(&["t", "a", "resolved"]).observe(1.0);
        m.conversation_interactions.with_label_values(&["t", "agent"]).observe(1.0);
        m.resolution_rate.with_label_values(&["t", "a", "resolved"]).set(1.0);
        m.customer_rating.with_label_values(&["t", "a"]).observe(5.0);
        m.agent_response_time.with_label_values(&["a", "t"]).observe(1.0);
        m.http_request_duration.with_label_values(&["GET", "/", "200"]).observe(0.1);
        m.error_rate.with_label_values(&["s", "e"]).inc();
        m.sentiment.with_label_values(&["t", "a"]).set(0.1);
        m.assertiveness.with_label_values(&["a"]).set(0.1);
        m.compliance.with_label_values(&["t", "p"]).set(0.1);
        let text = m.encode();
        for name in SEED_METRICS {
            assert!(text.contains(&format!("# TYPE {name} ")), "{name} missing");
        }
    }
}
