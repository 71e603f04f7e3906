//! [`Observability`] and the [`Conversation`] handle: the calls services make.
//!
//! - [`error`]: the crate error;
//! - [`builder`]: wires the sinks, processors, tracing and `/metrics`;
//! - this module: the facade and its one registry of open conversations;
//! - [`conversation`]: a conversation's state and series, and its handle.

mod builder;
mod conversation;
mod error;

pub use builder::ObservabilityBuilder;
pub use conversation::Conversation;
pub use error::{Error, ErrorChain};

use conversation::{ConvInner, ConvSeries, ConvState};

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use opentelemetry::Context;
use opentelemetry::trace::TraceContextExt;

use time::OffsetDateTime;
use tokio::sync::broadcast;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::metrics::server::MetricsServer;
use crate::pipeline::{DropReason, Pipeline};
use crate::sinks::live::LiveReceiver;
use crate::trace::tree;
use crate::trace::{ConversationRef, Tracing, unrecorded};
use crate::types::event::normalize_timestamp;
use crate::types::*;

pub(crate) struct Inner {
    config: Config,
    service: Arc<str>,
    metrics: Arc<Metrics>,
    pipeline: Pipeline,
    live: broadcast::Sender<Arc<Event>>,
    server: Mutex<Option<MetricsServer>>,
    tracing: Tracing,
    /// The privacy policy, for span attributes built on the caller's thread (the events go
    /// through the same policy in the pipeline's processor); `None` when it redacts nothing.
    redactor: Option<Arc<crate::processors::Redactor>>,
    /// The price table usage is priced by when recorded.
    prices: Arc<crate::pricing::Prices>,
    /// `voice.dead_air_threshold`, in milliseconds.
    dead_air_threshold_ms: f64,
    /// `tracing.conversation_header`, shared by every conversation and request.
    conversation_header: Arc<str>,
    /// The one registry of the conversations started here and not ended, by id.
    conversations: Mutex<HashMap<Arc<str>, Registered>>,
}

/// A conversation in the registry: weak (it ends when its last handle goes), unless the free
/// functions of [`crate`] hold it open until [`crate::end_conversation`].
pub(crate) struct Registered {
    conv: Weak<ConvInner>,
    held: Option<Conversation>,
}

impl Inner {
    fn emit(&self, event: Event) -> Result<(), DropReason> {
        self.pipeline.send(event)
    }

    fn shutdown(&self, timeout: Duration) -> Result<(), Error> {
        let deadline = std::time::Instant::now() + timeout;
        let result = self.pipeline.shutdown(timeout);
        let traced = self
            .tracing
            .shutdown(deadline.saturating_duration_since(std::time::Instant::now()));
        let server = self
            .server
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(server) = server {
            server.stop(deadline);
        }
        result?;
        Ok(traced?)
    }

    fn live_conversations(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, Registered>> {
        self.conversations
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
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
        ObservabilityBuilder::new(config)
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
        self.inner
            .server
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
            .map(MetricsServer::addr)
    }

    /// Subscribes to every event after this call (what `tail` and `demo` watch). A subscriber
    /// that falls more than a few thousand events behind skips the oldest ones.
    pub fn subscribe(&self) -> LiveReceiver {
        LiveReceiver::new(
            self.inner.live.subscribe(),
            self.inner.metrics.pipeline.live_lagged.clone(),
        )
    }

    /// Records one HTTP (or gRPC) request in `http_request_duration_seconds{method,path,status}`
    /// and, for a 5xx status, in `error_rate{service,error_type="http_5xx"}`. `route` must be
    /// the route template (`/conversations/{id}`), never the raw path, or ids in URLs explode
    /// the number of series. The middleware calls this; call it for handlers it does not cover.
    pub fn record_http_request(&self, method: &str, route: &str, status: u16, duration: Duration) {
        self.record_request(
            method,
            route,
            &status.to_string(),
            duration,
            (status >= 500).then_some("http_5xx"),
        );
    }

    /// Records a request in `http_request_duration_seconds` and, when `error_type` is set, in
    /// `error_rate{service,error_type}`.
    pub(crate) fn record_request(
        &self,
        method: &str,
        route: &str,
        status: &str,
        duration: Duration,
        error_type: Option<&str>,
    ) {
        let metrics = &self.inner.metrics;
        metrics.http_request(method, route, status, duration.as_secs_f64());
        if let Some(error_type) = error_type {
            metrics.error(&self.inner.service, error_type);
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
        let id: Arc<str> = Arc::from(
            start
                .conversation_id
                .clone()
                .unwrap_or_else(new_conversation_id),
        );
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
            (
                span.span_context().trace_id(),
                span.span_context().span_id(),
            )
        };
        let cx = cx.with_value(ConversationRef {
            conversation_id: id.clone(),
            tenant_id: tenant.clone(),
            agent_id: agent.clone(),
            header: inner.conversation_header.clone(),
        });

        metrics.conversation_started(&tenant_label, &agent_label, start.channel);

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
            start_metadata: start
                .metadata
                .into_iter()
                .map(|(k, v)| (k, serde_json::Value::String(v)))
                .collect(),
            state: Mutex::new(ConvState::default()),
        };
        let content = format!(
            "conversation started on {} ({}) with agent {}",
            start.channel, start.language, conv.agent
        );
        let metadata = Metadata {
            extra: conv.start_metadata.clone(),
            ..Metadata::default()
        };
        let event = conv.event(
            at,
            Level::Info,
            Speaker::System,
            content,
            metadata,
            root,
            parent,
            EventKind::ConversationStarted {
                customer_id: start.customer_id,
                channel: start.channel,
                language: start.language,
            },
        );
        let _ = inner.emit(event);
        let conv = Arc::new(conv);
        // Removed again by `end` (also when the last handle is dropped without one). A
        // conversation held under the same id before is dropped outside the lock (it ends).
        let replaced = inner.live_conversations().insert(
            conv.id.clone(),
            Registered {
                conv: Arc::downgrade(&conv),
                held: None,
            },
        );
        drop(replaced);
        Conversation { inner: conv }
    }

    /// Keeps a conversation open in the registry until [`release`](Self::release) (the free
    /// functions address conversations by id, so something must hold them).
    pub(crate) fn hold(&self, conv: &Conversation) {
        let previous = self
            .inner
            .live_conversations()
            .get_mut(conv.id())
            .filter(|r| std::ptr::eq(r.conv.as_ptr(), Arc::as_ptr(&conv.inner)))
            .and_then(|r| r.held.replace(conv.clone()));
        drop(previous);
    }

    /// A conversation held open with [`hold`](Self::hold).
    pub(crate) fn held(&self, conversation_id: &str) -> Option<Conversation> {
        self.inner
            .live_conversations()
            .get(conversation_id)
            .and_then(|r| r.held.clone())
    }

    /// Stops holding a conversation and returns it (to end it, outside the registry's lock).
    pub(crate) fn release(&self, conversation_id: &str) -> Option<Conversation> {
        self.inner
            .live_conversations()
            .get_mut(conversation_id)
            .and_then(|r| r.held.take())
    }

    /// Stops holding every held conversation and returns them.
    pub(crate) fn release_all(&self) -> Vec<Conversation> {
        self.inner
            .live_conversations()
            .values_mut()
            .filter_map(|r| r.held.take())
            .collect()
    }

    /// The conversation with this id, when it was started by this instance and has not ended.
    pub fn conversation(&self, conversation_id: &str) -> Option<Conversation> {
        let weak = self
            .inner
            .live_conversations()
            .get(conversation_id)
            .map(|r| r.conv.clone())?;
        weak.upgrade()
            .filter(|c| !c.is_ended())
            .map(|inner| Conversation { inner })
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
        let cx = if cx.span().span_context().is_valid() {
            cx.clone()
        } else {
            cx.with_remote_span_context(unrecorded(cx))
        };
        let (trace_id, root) = {
            let span = cx.span();
            (
                span.span_context().trace_id(),
                span.span_context().span_id(),
            )
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
        Some(Conversation {
            inner: Arc::new(joined),
        })
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
    pub fn tracing_layer<S>(
        &self,
    ) -> Option<tracing_opentelemetry::OpenTelemetryLayer<S, opentelemetry_sdk::trace::SdkTracer>>
    where
        S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
    {
        self.tracer()
            .map(|t| tracing_opentelemetry::layer().with_tracer(t.clone()))
    }

    /// Writes a snapshot of every metric series to ClickHouse's `metrics_snapshots` table now
    /// (`ExportMetrics`), to the server of the `clickhouse:` config section.
    /// Returns the rows written.
    #[cfg(feature = "clickhouse")]
    pub async fn export_metrics(&self) -> Result<usize, Error> {
        let exporter = crate::sinks::clickhouse::Exporter::new(&self.inner.config.clickhouse);
        Ok(exporter
            .export_metrics(self.inner.metrics.registry(), &self.inner.service)
            .await?)
    }

    /// Writes the rows of one conversation's events to ClickHouse now, bypassing the batches
    /// (`ExportConversation`); idempotent for the same events.
    #[cfg(feature = "clickhouse")]
    pub async fn export_conversation(&self, events: &[crate::types::Event]) -> Result<(), Error> {
        let exporter = crate::sinks::clickhouse::Exporter::new(&self.inner.config.clickhouse);
        // Past the pipeline, not past the privacy policy.
        let redacted;
        let events = match &self.inner.redactor {
            Some(redactor) => {
                let mut counts = crate::processors::redaction::Counts::new();
                redacted = events
                    .iter()
                    .map(|e| {
                        let mut e = e.clone();
                        redactor.redact_event(&mut e, &mut counts);
                        e
                    })
                    .collect::<Vec<_>>();
                for (kind, n) in counts {
                    self.inner.metrics.pipeline.redactions.with_label_values(&[kind.as_str()]).inc_by(n);
                }
                &redacted[..]
            }
            None => events,
        };
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
