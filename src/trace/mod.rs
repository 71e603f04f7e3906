//! Traces: the OpenTelemetry tracer set up from [`TracingConfig`], the conversation span tree
//! ([`tree`]) and the OTLP export ([`export`]).
//!
//! One trace per conversation: the conversation span is the root (or, when the conversation
//! starts inside a traced request, a child of that request's span); every turn, decision and
//! transfer is a child span with its real start and end time. The ids of these spans are the
//! `trace_id`/`span_id` of the events in the event log and of the ClickHouse rows.
//!
//! Spans are built by the OpenTelemetry SDK and handed to its batch span processor, which
//! exports them from its own thread through an OTLP exporter that runs on the library's I/O
//! runtime ([`crate::pipeline::runtime::io_runtime`]), so no call of a service ever waits on the collector. With `tracing.enabled: false`
//! nothing is exported, but every event still gets trace and span ids (for `query trace` over
//! the event log or ClickHouse), and an incoming `traceparent` is still passed on.

#[cfg(feature = "otlp")]
pub(crate) mod export;
#[cfg(feature = "otlp")]
mod sdk;
pub mod tree;

#[cfg(feature = "otlp")]
pub use sdk::export_url;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

#[cfg(feature = "otlp")]
use opentelemetry::trace::{Span as _, Tracer as _};
use opentelemetry::trace::{SpanBuilder, SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use opentelemetry::Context;

use crate::config::Config;
use crate::metrics::SelfMetrics;

/// What can go wrong setting up tracing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TraceError {
    /// The OTLP exporter could not be built from the config.
    #[error("tracing.endpoint {endpoint}: cannot set up the OTLP exporter: {message}")]
    Exporter {
        /// The endpoint.
        endpoint: String,
        /// Why.
        message: String,
    },
    /// Flushing or shutting down the span export failed or timed out.
    #[error("span export: {0}")]
    Export(String),
}

/// The conversation an OpenTelemetry [`Context`] belongs to. [`Conversation::context`]
/// carries it, the server middleware puts it in the request's context when the request names a
/// conversation, and the client helpers pass it on (the id in the conversation header, tenant
/// and agent as W3C baggage) next to `traceparent`.
///
/// [`Conversation::context`]: crate::Conversation::context
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConversationRef {
    /// The conversation id.
    pub conversation_id: Arc<str>,
    /// Its tenant (empty when the caller did not say).
    pub tenant_id: Arc<str>,
    /// Its agent (empty when the caller did not say).
    pub agent_id: Arc<str>,
    /// The header the id travels in (`tracing.conversation_header`).
    pub header: Arc<str>,
}

/// Spans waiting for export at most (more are dropped, never blocking the caller).
pub const SPAN_QUEUE_CAPACITY: usize = 65_536;
/// Spans per OTLP export request at most.
pub const SPAN_BATCH_SIZE: usize = 512;
/// How often queued spans are exported.
pub const SPAN_EXPORT_INTERVAL: Duration = Duration::from_secs(1);
/// How long one OTLP export request may take.
pub const SPAN_EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// The tracer of one [`Observability`](crate::Observability): the SDK provider and the runtime
/// its exporter runs on, or nothing at all when tracing is disabled.
pub struct Tracing {
    sdk: Option<Sdk>,
}

#[cfg(feature = "otlp")]
use sdk::Sdk;
/// Without the `otlp` feature there is no SDK: tracing is always ids only.
#[cfg(not(feature = "otlp"))]
enum Sdk {}

impl Tracing {
    /// Tracing off: ids only.
    pub fn disabled() -> Tracing {
        Tracing { sdk: None }
    }

    /// Sets up the tracer for `config` (disabled when `tracing.enabled` is false). Does not
    /// contact the endpoint: a collector that is down is not an error here, its failures are
    /// counted in `serphona_obs_batches_failed_total{sink="otlp"}`. Built without the `otlp`
    /// feature, spans are not exported: every event still gets its trace and span ids.
    pub fn new(config: &Config, metrics: Arc<SelfMetrics>) -> Result<Tracing, TraceError> {
        if !config.tracing.enabled {
            return Ok(Tracing::disabled());
        }
        #[cfg(feature = "otlp")]
        {
            Ok(Tracing { sdk: Some(sdk::Sdk::new(config, metrics)?) })
        }
        #[cfg(not(feature = "otlp"))]
        {
            let _ = metrics;
            tracing::debug!("serphona-obs was built without the otlp feature: spans are not exported (ids only)");
            Ok(Tracing::disabled())
        }
    }

    /// The SDK tracer, when tracing is on.
    #[cfg(feature = "otlp")]
    pub fn tracer(&self) -> Option<&opentelemetry_sdk::trace::SdkTracer> {
        self.sdk.as_ref().map(|s| &s.tracer)
    }

    /// The SDK provider, when tracing is on.
    #[cfg(feature = "otlp")]
    pub fn provider(&self) -> Option<&opentelemetry_sdk::trace::SdkTracerProvider> {
        self.sdk.as_ref().map(|s| &s.provider)
    }

    /// Whether spans are recorded and exported (tracing on, with the `otlp` feature).
    pub fn is_recording(&self) -> bool {
        self.sdk.is_some()
    }

    /// Starts a span under `parent` and returns `parent` with it as the active span. With
    /// tracing off, the span is not recorded but has fresh ids in the parent's trace (or a new
    /// trace), so ids in events and `traceparent` headers stay right.
    pub fn start_span(&self, builder: SpanBuilder, parent: &Context) -> Context {
        #[cfg(feature = "otlp")]
        if let Some(sdk) = &self.sdk {
            let span = sdk.tracer.build_with_context(builder, parent);
            if span.span_context().is_valid() {
                return parent.with_span(span);
            }
            // The provider is shut down: ids only, like tracing off.
        }
        #[cfg(not(feature = "otlp"))]
        let _ = builder;
        parent.with_remote_span_context(unrecorded(parent))
    }

    /// Records a span that is already over (start and end known) and returns its ids.
    pub fn record(&self, builder: SpanBuilder, parent: &Context, end: SystemTime) -> SpanContext {
        #[cfg(feature = "otlp")]
        if let Some(sdk) = &self.sdk {
            let mut span = sdk.tracer.build_with_context(builder, parent);
            let sc = span.span_context().clone();
            span.end_with_timestamp(end);
            if sc.is_valid() {
                return sc;
            }
        }
        #[cfg(not(feature = "otlp"))]
        let _ = (builder, end);
        unrecorded(parent)
    }

    /// Exports the spans ended so far (waits for the export, at most a few seconds). An
    /// endpoint that refuses them is not an error here: the spans are counted as failed in the
    /// self-metrics, like every export failure. Only running out of time is.
    pub fn flush(&self) -> Result<(), TraceError> {
        match &self.sdk {
            #[cfg(feature = "otlp")]
            Some(sdk) => sdk::only_timeouts(sdk.provider.force_flush()),
            _ => Ok(()),
        }
    }

    /// Exports what is queued within `timeout` and stops the export. Later spans are not
    /// recorded (their ids are still made). Errors as for [`flush`](Self::flush).
    pub fn shutdown(&self, timeout: Duration) -> Result<(), TraceError> {
        match &self.sdk {
            #[cfg(feature = "otlp")]
            Some(sdk) => sdk::only_timeouts(sdk.provider.shutdown_with_timeout(timeout)),
            _ => {
                let _ = timeout;
                Ok(())
            }
        }
    }
}

/// A span context that nothing records: a child of `parent` (same trace, flags and state) or
/// the root of a new trace.
pub(crate) fn unrecorded(parent: &Context) -> SpanContext {
    let span = parent.span();
    let p = span.span_context();
    if p.is_valid() {
        SpanContext::new(p.trace_id(), new_span_id(), p.trace_flags(), false, p.trace_state().clone())
    } else {
        SpanContext::new(new_trace_id(), new_span_id(), TraceFlags::SAMPLED, false, TraceState::default())
    }
}

/// A random, valid trace id.
fn new_trace_id() -> TraceId {
    loop {
        let id: u128 = rand::random();
        if id != 0 {
            return TraceId::from_bytes(id.to_be_bytes());
        }
    }
}

/// A random, valid span id.
pub(crate) fn new_span_id() -> SpanId {
    loop {
        let id: u64 = rand::random();
        if id != 0 {
            return SpanId::from_bytes(id.to_be_bytes());
        }
    }
}

#[cfg(all(test, feature = "otlp"))]
mod tests {
    use crate::config::{Endpoint, Protocol, TracingConfig};
    use crate::trace::sdk::export_url;

    #[test]
    fn the_export_url_follows_the_protocol() {
        let mut t = TracingConfig::default();
        assert_eq!(export_url(&t), "http://localhost:4317");
        t.protocol = Protocol::Http;
        assert_eq!(export_url(&t), "http://localhost:4318/v1/traces");
        t.endpoint = Endpoint::parse("http://collector:4318/").unwrap();
        assert_eq!(export_url(&t), "http://collector:4318/v1/traces");
        t.endpoint = Endpoint::parse("http://gw/otlp/v1/traces").unwrap();
        assert_eq!(export_url(&t), "http://gw/otlp/v1/traces");
    }
}
