//! [`Observability`] and the [`Conversation`] handle: the calls services make.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use opentelemetry::trace::{SpanId, TraceContextExt, TraceId};
use opentelemetry::Context;
use prometheus::{Gauge, Histogram};
use time::OffsetDateTime;
use tokio::sync::broadcast;

use crate::config::Config;
use crate::sinks::event_log::EventLogSink;
use crate::metrics::server::MetricsServer;
use crate::metrics::{Metrics, MetricsError};
use crate::sinks::live::{LIVE_CAPACITY, LiveReceiver, LiveSink};
use crate::pipeline::{DropReason, Pipeline, PipelineError, Processor, Sink, SinkError};
use crate::trace::tree;
use crate::trace::{ConversationRef, TraceError, Tracing, new_span_id, unrecorded};
use crate::types::event::normalize_timestamp;
use crate::types::*;

/// What can go wrong setting up or using the library.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration is not usable.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// Metrics could not be set up or served.
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    /// A sink could not be opened.
    #[error(transparent)]
    Sink(#[from] SinkError),
    /// Flush or shutdown did not finish.
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    /// A free function was called before [`init`](crate::init).
    #[error("serphona-obs is not initialized: call serphona_obs::init(config) first")]
    NotInitialized,
    /// [`init`](crate::init) was called twice.
    #[error("serphona-obs is already initialized")]
    AlreadyInitialized,
    /// A conversation with this explicit id is already in progress.
    #[error("conversation {0:?} is already in progress")]
    DuplicateConversation(String),
    /// No conversation with this id is in progress in this process.
    #[error("no conversation {0:?} is in progress (never started here, or already ended)")]
    UnknownConversation(String),
    /// A direct ClickHouse export failed.
    #[cfg(feature = "clickhouse")]
    #[error(transparent)]
    ClickHouse(#[from] crate::analytics::ClickHouseError),
    /// Tracing could not be set up, or its export could not be flushed.
    #[error(transparent)]
    Trace(#[from] TraceError),
    /// The config enables something this version cannot do yet.
    #[error("{0}")]
    Unsupported(String),
}

/// Sets up an [`Observability`] with extra sinks or processors.
#[must_use]
pub struct ObservabilityBuilder {
    config: Config,
    sinks: Vec<Box<dyn Sink>>,
    processors: Vec<Box<dyn Processor>>,
    serve_metrics: Option<bool>,
}

impl ObservabilityBuilder {
    /// Adds a sink beside the configured ones.
    pub fn sink(mut self, sink: impl Sink) -> Self {
        self.sinks.push(Box::new(sink));
        self
    }

    /// Adds a processor (runs once per event, before every sink).
    pub fn processor(mut self, processor: impl Processor) -> Self {
        self.processors.push(Box::new(processor));
        self
    }

    /// Serves `/metrics` or not, whatever `metrics.enabled` says (e.g. when the service
    /// exposes [`Observability::metrics`]'s registry on its own server).
    pub fn serve_metrics(mut self, serve: bool) -> Self {
        self.serve_metrics = Some(serve);
        self
    }

    /// Validates the config, opens the sinks, starts the dispatcher and the metrics endpoint.
    pub fn build(self) -> Result<Observability, Error> {
        let config = self.config;
        config.validate()?;
        let metrics = Arc::new(Metrics::new(config.metrics.max_label_values)?);
        let mut sinks: Vec<Box<dyn Sink>> = Vec::new();
        if config.logging.enabled {
            sinks.push(Box::new(EventLogSink::open(
                &config.data_dir,
                config.logging.max_file_bytes,
                config.logging.max_files,
            )?));
        }
        #[cfg(feature = "loki")]
        if let Some(loki) = crate::sinks::loki::LokiSettings::from_config(&config) {
            sinks.push(Box::new(crate::sinks::loki::LokiSink::start(loki, metrics.pipeline.clone())?));
        }
        #[cfg(not(feature = "loki"))]
        if config.logging.enabled && config.logging.loki_endpoint.0.is_some() {
            return Err(Error::Unsupported(
                "logging.loki_endpoint is set, but this build of serphona-obs has no Loki sink: enable its `loki` feature".into(),
            ));
        }
        #[cfg(feature = "clickhouse")]
        if config.clickhouse.enabled {
            sinks.push(Box::new(crate::sinks::clickhouse::ClickHouseSink::start(
                &config.clickhouse,
                &config.data_dir,
                metrics.pipeline.clone(),
            )?));
        }
        #[cfg(not(feature = "clickhouse"))]
        if config.clickhouse.enabled {
            return Err(Error::Unsupported(
                "clickhouse.enabled is true, but this build of serphona-obs has no ClickHouse sink: enable its `clickhouse` feature"
                    .into(),
            ));
        }
        let tracing = Tracing::new(&config, metrics.pipeline.clone())?;
        let (live_sink, live) = LiveSink::new(LIVE_CAPACITY);
        sinks.push(Box::new(live_sink));
        sinks.extend(self.sinks);
        let server = if self.serve_metrics.unwrap_or(config.metrics.enabled) {
            Some(MetricsServer::start(metrics.clone(), config.metrics.listen)?)
        } else {
            None
        };
        let pipeline = Pipeline::start(
            config.pipeline.queue_capacity,
            config.pipeline.when_full,
            self.processors,
            sinks,
            metrics.pipeline.clone(),
        );
        let conversation_header = Arc::from(config.tracing.conversation_header.as_str());
        let inner = Arc::new(Inner {
            service: Arc::from(config.service_name.as_str()),
            config,
            metrics,
            pipeline,
            live,
            server: Mutex::new(server),
            tracing,
            conversation_header,
            conversations: Mutex::new(HashMap::new()),
        });
        let weak = Arc::downgrade(&inner);
        inner.metrics.set_queue_len(move || weak.upgrade().map_or(0, |i| i.pipeline.queue_len()));
        Ok(Observability { inner })
    }
}

pub(crate) struct Inner {
    config: Config,
    service: Arc<str>,
    metrics: Arc<Metrics>,
    pipeline: Pipeline,
    live: broadcast::Sender<Arc<Event>>,
    server: Mutex<Option<MetricsServer>>,
    tracing: Tracing,
    /// `tracing.conversation_header`, shared by every conversation and request.
    conversation_header: Arc<str>,
    /// The conversations started here and not ended, by id (weak: they end when their last
    /// handle goes).
    conversations: Mutex<HashMap<Arc<str>, Weak<ConvInner>>>,
}

impl Inner {
    fn emit(&self, event: Event) -> Result<(), DropReason> {
        self.pipeline.send(event)
    }

    fn shutdown(&self, timeout: Duration) -> Result<(), Error> {
        let deadline = std::time::Instant::now() + timeout;
        let result = self.pipeline.shutdown(timeout);
        let traced = self.tracing.shutdown(deadline.saturating_duration_since(std::time::Instant::now()));
        let server = self.server.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        if let Some(server) = server {
            server.stop(deadline);
        }
        result?;
        Ok(traced?)
    }

    fn live_conversations(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, Weak<ConvInner>>> {
        self.conversations.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Drop for Inner {
    /// The last handle went away without `shutdown`: deliver what is queued, briefly.
    fn drop(&mut self) {
        let _ = self.shutdown(Duration::from_secs(2));
    }
}

/// The library: metrics, the event pipeline and its sinks. Cheap to clone.
///
/// Every call is synchronous and never waits on I/O (with `pipeline.when_full: block` it may
/// wait for room in the queue); call it from plain threads or from inside any async runtime.
#[derive(Clone)]
pub struct Observability {
    inner: Arc<Inner>,
}

impl Observability {
    /// Starts the library with `config`: validates it, opens the configured sinks, starts the
    /// dispatcher thread and, when `metrics.enabled`, the `/metrics` endpoint.
    pub fn init(config: Config) -> Result<Observability, Error> {
        Self::builder(config).build()
    }

    /// A builder for extra sinks and processors.
    pub fn builder(config: Config) -> ObservabilityBuilder {
        ObservabilityBuilder { config, sinks: Vec::new(), processors: Vec::new(), serve_metrics: None }
    }

    /// The config in force.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The metrics (to read them, or to register your own in the same registry).
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.inner.metrics
    }

    /// Where `/metrics` listens, when it is served.
    pub fn metrics_addr(&self) -> Option<std::net::SocketAddr> {
        self.inner.server.lock().unwrap_or_else(std::sync::PoisonError::into_inner).as_ref().map(MetricsServer::addr)
    }

    /// Subscribes to every event after this call (what `tail` and `demo` watch). A subscriber
    /// that falls more than a few thousand events behind skips the oldest ones.
    pub fn subscribe(&self) -> LiveReceiver {
        LiveReceiver::new(self.inner.live.subscribe(), self.inner.metrics.pipeline.live_lagged.clone())
    }

    /// Records one HTTP (or gRPC) request in `http_request_duration_seconds{method,path,status}`
    /// and, for a 5xx status, in `error_rate{service,error_type="http_5xx"}`. `route` must be
    /// the route template (`/conversations/{id}`), never the raw path, or ids in URLs explode
    /// the number of series. The middleware calls this; call it for handlers it does not cover.
    pub fn record_http_request(&self, method: &str, route: &str, status: u16, duration: Duration) {
        self.record_request(method, route, &status.to_string(), duration, (status >= 500).then_some("http_5xx"));
    }

    /// Records a request in `http_request_duration_seconds` and, when `error_type` is set, in
    /// `error_rate{service,error_type}`.
    pub(crate) fn record_request(&self, method: &str, route: &str, status: &str, duration: Duration, error_type: Option<&str>) {
        let metrics = &self.inner.metrics;
        metrics.http_request_duration.with_label_values(&[method, route, status]).observe(duration.as_secs_f64());
        if let Some(error_type) = error_type {
            metrics.error_rate.with_label_values(&[&self.inner.service, &metrics.error_type_label(error_type)]).inc();
        }
    }

    #[cfg(any(feature = "axum", feature = "tonic"))]
    pub(crate) fn tracing(&self) -> &Tracing {
        &self.inner.tracing
    }

    #[cfg(any(feature = "axum", feature = "tonic"))]
    pub(crate) fn conversation_header(&self) -> &Arc<str> {
        &self.inner.conversation_header
    }

    /// The service name (`service_name`).
    pub fn service(&self) -> &str {
        &self.inner.service
    }

    /// Starts a conversation. The returned handle records its turns, decisions and end;
    /// dropping the last clone of it without [`Conversation::end`] ends it as `abandoned`.
    ///
    /// When the current OpenTelemetry context has a valid span (e.g. from an incoming
    /// `traceparent`), the conversation joins that trace; otherwise it starts a new one.
    pub fn start_conversation(&self, start: ConversationStart) -> Conversation {
        let inner = &self.inner;
        let metrics = &inner.metrics;
        let at = normalize_timestamp(start.at.unwrap_or_else(OffsetDateTime::now_utc));
        let id: Arc<str> = Arc::from(start.conversation_id.clone().unwrap_or_else(new_conversation_id));
        let root_builder = tree::root_builder(&id, &start, at);
        let tenant: Arc<str> = Arc::from(start.tenant_id);
        let agent: Arc<str> = Arc::from(start.agent_id);
        let tenant_label = metrics.tenant_label(&tenant);
        let agent_label = metrics.agent_label(&agent);

        let current = Context::current();
        let upstream = current.span().span_context().clone();
        let parent = upstream.is_valid().then(|| upstream.span_id());
        let cx = inner.tracing.start_span(root_builder, &current);
        let (trace_id, root) = {
            let span = cx.span();
            (span.span_context().trace_id(), span.span_context().span_id())
        };
        let cx = cx.with_value(ConversationRef {
            conversation_id: id.clone(),
            tenant_id: tenant.clone(),
            agent_id: agent.clone(),
            header: inner.conversation_header.clone(),
        });

        metrics.conversation_total.with_label_values(&[&tenant_label, &agent_label, start.channel.as_str()]).inc();
        metrics.active_conversations.with_label_values(&[&tenant_label]).inc();

        let conv = ConvInner {
            obs: inner.clone(),
            id,
            tenant,
            agent,
            channel: start.channel,
            series: ConvSeries::new(metrics, tenant_label, agent_label),
            trace_id,
            root,
            parent,
            cx,
            joined: false,
            started_at: at,
            customer_id: start.customer_id.clone(),
            language: start.language.clone(),
            start_metadata: start.metadata.into_iter().map(|(k, v)| (k, serde_json::Value::String(v))).collect(),
            state: Mutex::new(ConvState::default()),
        };
        let content = format!(
            "conversation started on {} ({}) with agent {}",
            start.channel, start.language, conv.agent
        );
        let metadata = Metadata { extra: conv.start_metadata.clone(), ..Metadata::default() };
        let event = conv.event(
            at,
            Level::Info,
            Speaker::System,
            content,
            metadata,
            root,
            parent,
            EventKind::ConversationStarted { customer_id: start.customer_id, channel: start.channel, language: start.language },
        );
        let _ = inner.emit(event);
        let conv = Arc::new(conv);
        // Removed again by `end` (also when the last handle is dropped without one).
        inner.live_conversations().insert(conv.id.clone(), Arc::downgrade(&conv));
        Conversation { inner: conv }
    }

    /// The conversation with this id, when it was started by this instance and has not ended.
    pub fn conversation(&self, conversation_id: &str) -> Option<Conversation> {
        let weak = self.inner.live_conversations().get(conversation_id).cloned()?;
        weak.upgrade().filter(|c| !c.is_ended()).map(|inner| Conversation { inner })
    }

    /// The conversation `cx` belongs to: the conversation itself when it runs in this
    /// instance, otherwise a *joined* handle on a conversation another service started (its
    /// id, tenant and agent came with the request, see [`middleware`](crate::middleware)).
    /// A joined handle records turns, decisions, errors and violations in the same trace,
    /// under the request's span, with the same conversation id; it does not start or end the
    /// conversation (its [`end`](Conversation::end) records nothing). `None` when `cx` carries
    /// no conversation.
    pub fn join_conversation(&self, cx: &Context) -> Option<Conversation> {
        let conv = cx.get::<ConversationRef>()?;
        if let Some(local) = self.conversation(&conv.conversation_id) {
            return Some(local);
        }
        let inner = &self.inner;
        let metrics = &inner.metrics;
        // A context without a span (built by hand, not by the middleware) gets ids of its own,
        // kept in the context so the handle's child spans share its trace.
        let cx = if cx.span().span_context().is_valid() { cx.clone() } else { cx.with_remote_span_context(unrecorded(cx)) };
        let (trace_id, root) = {
            let span = cx.span();
            (span.span_context().trace_id(), span.span_context().span_id())
        };
        let tenant_label = metrics.tenant_label(&conv.tenant_id);
        let agent_label = metrics.agent_label(&conv.agent_id);
        let joined = ConvInner {
            obs: inner.clone(),
            id: conv.conversation_id.clone(),
            tenant: conv.tenant_id.clone(),
            agent: conv.agent_id.clone(),
            channel: Channel::Chat,
            series: ConvSeries::new(metrics, tenant_label, agent_label),
            trace_id,
            root,
            parent: None,
            cx,
            joined: true,
            started_at: OffsetDateTime::now_utc(),
            customer_id: String::new(),
            language: String::new(),
            start_metadata: Default::default(),
            state: Mutex::new(ConvState::default()),
        };
        Some(Conversation { inner: Arc::new(joined) })
    }

    /// [`join_conversation`](Self::join_conversation) of the current OpenTelemetry context:
    /// inside a request handled by the [`middleware`](crate::middleware) that carried a
    /// conversation id, or inside [`Conversation::in_span`].
    pub fn current_conversation(&self) -> Option<Conversation> {
        self.join_conversation(&Context::current())
    }

    /// The OpenTelemetry tracer spans are made with (`None` with `tracing.enabled: false`):
    /// start your own spans with it, or hand it to `tracing-opentelemetry` (see
    /// [`tracing_layer`](Self::tracing_layer)).
    #[cfg(feature = "otlp")]
    pub fn tracer(&self) -> Option<&opentelemetry_sdk::trace::SdkTracer> {
        self.inner.tracing.tracer()
    }

    /// A `tracing` layer that turns the service's `tracing` spans into OpenTelemetry spans of
    /// this instance's tracer, so `#[instrument]`ed code inside [`Conversation::in_span`] or a
    /// request lands in the conversation's trace. `None` with `tracing.enabled: false`.
    ///
    /// ```no_run
    /// # fn f(obs: &serphona_obs::Observability) {
    /// use tracing_subscriber::prelude::*;
    /// tracing_subscriber::registry().with(obs.tracing_layer()).init();
    /// # }
    /// ```
    #[cfg(feature = "otlp")]
    pub fn tracing_layer<S>(&self) -> Option<tracing_opentelemetry::OpenTelemetryLayer<S, opentelemetry_sdk::trace::SdkTracer>>
    where
        S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
    {
        self.tracer().map(|t| tracing_opentelemetry::layer().with_tracer(t.clone()))
    }

    /// Writes a snapshot of every metric series to ClickHouse's `metrics_snapshots` table now
    /// (the seed's `ExportMetrics`), to the server of the `clickhouse:` config section.
    /// Returns the rows written.
    #[cfg(feature = "clickhouse")]
    pub async fn export_metrics(&self) -> Result<usize, Error> {
        let exporter = crate::sinks::clickhouse::Exporter::new(&self.inner.config.clickhouse);
        Ok(exporter.export_metrics(self.inner.metrics.registry(), &self.inner.service).await?)
    }

    /// Writes the rows of one conversation's events to ClickHouse now, bypassing the batches
    /// (the seed's `ExportConversation`); idempotent for the same events.
    #[cfg(feature = "clickhouse")]
    pub async fn export_conversation(&self, events: &[crate::types::Event]) -> Result<(), Error> {
        let exporter = crate::sinks::clickhouse::Exporter::new(&self.inner.config.clickhouse);
        Ok(exporter.export_conversation(events).await?)
    }

    /// Delivers everything recorded so far to the sinks and flushes them, waiting at most
    /// `timeout`, then exports the spans ended so far.
    pub fn flush(&self, timeout: Duration) -> Result<(), Error> {
        self.inner.pipeline.flush(timeout)?;
        Ok(self.inner.tracing.flush()?)
    }

    /// Stops accepting events, delivers everything accepted to the sinks and the spans ended
    /// so far to the OTLP endpoint within `timeout`, and stops the `/metrics` endpoint. Later calls record metrics but drop events
    /// (counted with `reason="shutdown"`).
    pub fn shutdown(&self, timeout: Duration) -> Result<(), Error> {
        self.inner.shutdown(timeout)
    }
}

#[derive(Default)]
struct ConvState {
    turns: u32,
    agent_turns: u32,
    customer_turns: u32,
    /// When the last customer turn ended (start + duration when the duration is known).
    last_customer_end: Option<OffsetDateTime>,
    ended: bool,
}

/// A conversation's label values (after the cap) and the series it updates on every turn.
struct ConvSeries {
    tenant_label: Arc<str>,
    agent_label: Arc<str>,
    response_time: Histogram,
    sentiment: Gauge,
    assertiveness: Gauge,
}

impl ConvSeries {
    fn new(metrics: &Metrics, tenant_label: Arc<str>, agent_label: Arc<str>) -> Self {
        ConvSeries {
            response_time: metrics.agent_response_time.with_label_values(&[&agent_label, &tenant_label]),
            sentiment: metrics.sentiment.with_label_values(&[&tenant_label, &agent_label]),
            assertiveness: metrics.assertiveness.with_label_values(&[&agent_label]),
            tenant_label,
            agent_label,
        }
    }
}

struct ConvInner {
    obs: Arc<Inner>,
    id: Arc<str>,
    tenant: Arc<str>,
    agent: Arc<str>,
    channel: Channel,
    series: ConvSeries,
    trace_id: TraceId,
    root: SpanId,
    parent: Option<SpanId>,
    /// The conversation span (or, joined, the request's span) as the active span, with the
    /// [`ConversationRef`].
    cx: Context,
    /// A handle on a conversation another service started (see `join_conversation`).
    joined: bool,
    started_at: OffsetDateTime,
    customer_id: String,
    language: String,
    /// The start's metadata, repeated on the end event so the end stands alone.
    start_metadata: std::collections::BTreeMap<String, serde_json::Value>,
    state: Mutex<ConvState>,
}

impl ConvInner {
    /// The state; a panic elsewhere while it was held does not make it unusable.
    fn lock_state(&self) -> std::sync::MutexGuard<'_, ConvState> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn is_ended(&self) -> bool {
        self.lock_state().ended
    }

    /// A call on an ended conversation: recorded nowhere, counted.
    fn after_end(&self) {
        self.obs.metrics.pipeline.events_dropped.with_label_values(&["after_end"]).inc();
        tracing::debug!(conversation_id = %self.id, "ignoring a call on an ended conversation");
    }

    #[allow(clippy::too_many_arguments)]
    fn event(
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
            trace: TraceIds { trace_id: self.trace_id, span_id, parent_span_id },
            kind,
        }
    }

    /// An event with a child span of its own (a turn, decision or transfer): the span is
    /// recorded now, with its real start and end, and its id goes into the event.
    fn child_event(&self, at: OffsetDateTime, level: Level, speaker: Speaker, content: String, metadata: Metadata, kind: EventKind) -> Event {
        let mut event = self.event(at, level, speaker, content, metadata, SpanId::INVALID, Some(self.root), kind);
        let tracing = &self.obs.tracing;
        // Unsampled conversations have unsampled children: ids only, no attributes built.
        let sampled = tracing.is_recording() && self.cx.span().span_context().is_sampled();
        event.trace.span_id = match sampled.then(|| tree::child_builder(&event)).flatten() {
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
            span.add_event_with_timestamp(span_event.name, span_event.timestamp, span_event.attributes);
            if let Some(status) = status {
                span.set_status(status);
            }
        }
    }

    fn end(&self, end: ConversationEnd) {
        let (agent_turns, customer_turns) = {
            let mut state = self.lock_state();
            if state.ended {
                return;
            }
            state.ended = true;
            (state.agent_turns, state.customer_turns)
        };
        if self.joined {
            // The service that started the conversation ends it.
            return;
        }
        {
            let mut live = self.obs.live_conversations();
            if live.get(&self.id).is_some_and(|w| std::ptr::eq(w.as_ptr(), self)) {
                live.remove(&self.id);
            }
        }
        let at = normalize_timestamp(end.at.unwrap_or_else(OffsetDateTime::now_utc));
        let duration = (at - self.started_at).as_seconds_f64().max(0.0);
        let metrics = &self.obs.metrics;
        let (t, a) = (&*self.series.tenant_label, &*self.series.agent_label);
        metrics.conversation_duration.with_label_values(&[t, a, end.resolution.as_str()]).observe(duration);
        metrics.conversation_interactions.with_label_values(&[t, "agent"]).observe(agent_turns as f64);
        metrics.conversation_interactions.with_label_values(&[t, "customer"]).observe(customer_turns as f64);
        let rating = end.rating.map(|r| r.clamp(1, 5));
        if let Some(rating) = rating {
            metrics.customer_rating.with_label_values(&[t, a]).observe(rating as f64);
        }
        metrics.record_resolution(&self.series.tenant_label, &self.series.agent_label, end.resolution);
        metrics.active_conversations.with_label_values(&[t]).dec();

        let interaction_count = agent_turns + customer_turns;
        let content = match rating {
            Some(r) => format!(
                "conversation ended: {}, rating {r}, {interaction_count} turns in {duration:.1}s",
                end.resolution
            ),
            None => format!("conversation ended: {}, {interaction_count} turns in {duration:.1}s", end.resolution),
        };
        let event = self.event(
            at,
            Level::Info,
            Speaker::System,
            content,
            Metadata { extra: self.start_metadata.clone(), ..Metadata::default() },
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
            },
        );
        let span = self.cx.span();
        if let Some((attributes, span_event)) = span.is_recording().then(|| tree::root_end(&event)).flatten() {
            span.set_attributes(attributes);
            span.add_event_with_timestamp(span_event.name, span_event.timestamp, span_event.attributes);
        }
        span.end_with_timestamp(at.into());
        let _ = self.obs.emit(event);
    }
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
    inner: Arc<ConvInner>,
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
    pub fn in_span<T>(&self, name: impl Into<std::borrow::Cow<'static, str>>, f: impl FnOnce(&Context) -> T) -> T {
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
    pub async fn in_span_async<F: std::future::Future>(&self, name: impl Into<std::borrow::Cow<'static, str>>, future: F) -> F::Output {
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
            sc.is_valid() && sc.trace_id() == c.trace_id && current.get::<ConversationRef>().is_some()
        };
        c.obs.tracing.start_span(builder, if nested { &current } else { &c.cx })
    }

    /// Records a turn (`interaction.agent` or `interaction.customer`). Agent turns feed
    /// `agent_response_time_seconds` (from `latency.response_ms`, or measured from the end of
    /// the previous customer turn); scores in the metadata feed the quality gauges.
    pub fn track_interaction(&self, interaction: Interaction) {
        let c = &*self.inner;
        let at = normalize_timestamp(interaction.at.unwrap_or_else(OffsetDateTime::now_utc));
        let (turn, previous_customer_end) = {
            let mut state = c.lock_state();
            if state.ended {
                drop(state);
                c.after_end();
                return;
            }
            state.turns += 1;
            let previous = match interaction.speaker {
                TurnSpeaker::Agent => {
                    state.agent_turns += 1;
                    // One response per customer turn: a second agent turn in a row is not a
                    // response to it again.
                    state.last_customer_end.take()
                }
                TurnSpeaker::Customer => {
                    state.customer_turns += 1;
                    // Saturating: a NaN or absurd duration from the caller must not panic.
                    let spoke = interaction
                        .duration_ms
                        .map_or(time::Duration::ZERO, |ms| time::Duration::saturating_seconds_f64(ms / 1000.0));
                    state.last_customer_end = Some(at.checked_add(spoke).unwrap_or(at));
                    None
                }
            };
            (state.turns, previous)
        };
        let metrics = &c.obs.metrics;
        let meta = &interaction.metadata;
        // Scores and latencies that are not finite numbers are kept in the event but not in
        // metrics, where one NaN would poison a series' sum for good.
        // The gauge follows the customer's sentiment (the agent's own turns would mask it),
        // from the score, or from the label's score when only a label was given.
        let score = meta.sentiment_score.or(meta.sentiment.map(Sentiment::score));
        if let Some(s) = score.filter(|v| v.is_finite() && interaction.speaker == TurnSpeaker::Customer) {
            c.series.sentiment.set(s);
        }
        if let Some(a) = meta.assertiveness.filter(|v| v.is_finite()) {
            c.series.assertiveness.set(a);
        }
        for (policy, score) in meta.compliance.iter().filter(|(_, v)| v.is_finite()) {
            metrics.compliance.with_label_values(&[&c.series.tenant_label, &metrics.policy_label(policy)]).set(*score);
        }
        if let Some(latency) = &interaction.latency {
            let parts = [
                ("stt", latency.stt_ms),
                ("end_of_utterance", latency.end_of_utterance_ms),
                ("llm_ttft", latency.llm_ttft_ms),
                ("tts_ttfb", latency.tts_ttfb_ms),
                ("response", latency.response_ms),
            ];
            for (part, ms) in parts {
                if let Some(ms) = ms.filter(|v| v.is_finite() && *v >= 0.0) {
                    metrics.voice_latency.with_label_values(&[&c.series.tenant_label, part]).observe(ms / 1000.0);
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
                    c.series.response_time.observe(seconds);
                }
                EventKind::AgentTurn {
                    turn,
                    latency: interaction.latency,
                    response_time_seconds: response,
                    duration_ms: interaction.duration_ms,
                }
            }
            TurnSpeaker::Customer => {
                EventKind::CustomerTurn { turn, latency: interaction.latency, duration_ms: interaction.duration_ms }
            }
        };
        let event = c.child_event(at, Level::Info, interaction.speaker.into(), interaction.content, interaction.metadata, kind);
        let _ = c.obs.emit(event);
    }

    /// Records a decision (`decision.made`); a transfer also records `transfer.initiated`.
    /// Like every `track_*` call, it records nothing once the conversation has ended (counted
    /// in `serphona_obs_events_dropped_total{reason="after_end"}`).
    pub fn track_decision(&self, decision: Decision) {
        let c = &*self.inner;
        if c.is_ended() {
            return c.after_end();
        }
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
        let content = format!("{}: {} ({})", decision.decision_type, decision.option, decision.reason);
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
    pub fn track_error_at(&self, error_type: &str, message: impl Into<String>, at: Option<OffsetDateTime>) {
        let c = &*self.inner;
        if c.is_ended() {
            return c.after_end();
        }
        let metrics = &c.obs.metrics;
        metrics.error_rate.with_label_values(&[&c.obs.service, &metrics.error_type_label(error_type)]).inc();
        let event = c.event(
            at.unwrap_or_else(OffsetDateTime::now_utc),
            Level::Error,
            Speaker::System,
            message.into(),
            Metadata::default(),
            c.root,
            c.parent,
            EventKind::ErrorOccurred { error_type: error_type.to_string() },
        );
        c.note_on_root(&event);
        let _ = c.obs.emit(event);
    }

    /// Records a compliance violation (`compliance.violation`, level warn).
    pub fn track_compliance_violation(&self, policy: &str, severity: &str, description: impl Into<String>) {
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
            EventKind::ComplianceViolation { policy: policy.to_string(), severity: severity.to_string() },
        );
        let metrics = &c.obs.metrics;
        let severity_label = match severity {
            "low" | "medium" | "high" | "critical" => severity,
            _ => "other",
        };
        metrics
            .compliance_violations
            .with_label_values(&[&c.series.tenant_label, &metrics.policy_label(policy), severity_label])
            .inc();
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
