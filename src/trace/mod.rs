//! Traces: the OpenTelemetry tracer set up from [`TracingConfig`], the conversation span tree
//! ([`tree`]) and the OTLP export ([`export`]).
//!
//! One trace per conversation: the conversation span is the root (or, when the conversation
//! starts inside a traced request, a child of that request's span); every turn, decision and
//! transfer is a child span with its real start and end time. The ids of these spans are the
//! `trace_id`/`span_id` of the events in the event log and of the ClickHouse rows.
//!
//! Spans are built by the OpenTelemetry SDK and handed to its batch span processor, which
//! exports them from its own thread through an OTLP exporter that runs on a small runtime of
//! ours, so no call of a service ever waits on the collector. With `tracing.enabled: false`
//! nothing is exported, but every event still gets trace and span ids (for `query trace` over
//! the event log or ClickHouse), and an incoming `traceparent` is still passed on.

pub(crate) mod export;
pub mod tree;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use opentelemetry::trace::{
    Span as _, SpanBuilder, SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, InstrumentationScope, KeyValue};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracer, SdkTracerProvider};

use crate::config::{Config, Protocol, TracingConfig};
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
    /// The export runtime could not start.
    #[error("cannot start the OTLP export runtime: {0}")]
    Runtime(#[source] std::io::Error),
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

struct Sdk {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
    /// Runs the OTLP client (tonic or reqwest); dropped after the provider is shut down.
    runtime: Option<tokio::runtime::Runtime>,
}

impl Tracing {
    /// Tracing off: ids only.
    pub fn disabled() -> Tracing {
        Tracing { sdk: None }
    }

    /// Sets up the tracer for `config` (disabled when `tracing.enabled` is false). Does not
    /// contact the endpoint: a collector that is down is not an error here, its failures are
    /// counted in `serphona_obs_batches_failed_total{sink="otlp"}`.
    pub fn new(config: &Config, metrics: Arc<SelfMetrics>) -> Result<Tracing, TraceError> {
        if !config.tracing.enabled {
            return Ok(Tracing::disabled());
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("serphona-obs-otlp")
            .enable_all()
            .build()
            .map_err(TraceError::Runtime)?;
        let endpoint = export_url(&config.tracing);
        let exporter = {
            // tonic's channel spawns its worker on the runtime it is built in.
            let _guard = runtime.enter();
            build_exporter(&config.tracing, &endpoint)
                .map_err(|message| TraceError::Exporter { endpoint: crate::config::redact_url_str(&endpoint), message })?
        };
        let default_endpoint = config.tracing.endpoint == TracingConfig::default().endpoint;
        // The exporter names the endpoint in log lines: without its credentials.
        let shown = crate::config::redact_url_str(&endpoint);
        let exporter = export::OtlpExporter::new(exporter, runtime.handle().clone(), metrics, shown, default_endpoint);
        let processor = BatchSpanProcessor::builder(exporter)
            .with_batch_config(
                BatchConfigBuilder::default()
                    .with_max_queue_size(SPAN_QUEUE_CAPACITY)
                    .with_max_export_batch_size(SPAN_BATCH_SIZE)
                    .with_scheduled_delay(SPAN_EXPORT_INTERVAL)
                    .build(),
            )
            .build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(config.tracing.sample_ratio))))
            .with_resource(resource(config))
            .build();
        let tracer = provider.tracer_with_scope(
            InstrumentationScope::builder("serphona-obs").with_version(env!("CARGO_PKG_VERSION")).build(),
        );
        Ok(Tracing { sdk: Some(Sdk { provider, tracer, runtime: Some(runtime) }) })
    }

    /// The SDK tracer, when tracing is on.
    pub fn tracer(&self) -> Option<&SdkTracer> {
        self.sdk.as_ref().map(|s| &s.tracer)
    }

    /// The SDK provider, when tracing is on.
    pub fn provider(&self) -> Option<&SdkTracerProvider> {
        self.sdk.as_ref().map(|s| &s.provider)
    }

    /// Starts a span under `parent` and returns `parent` with it as the active span. With
    /// tracing off, the span is not recorded but has fresh ids in the parent's trace (or a new
    /// trace), so ids in events and `traceparent` headers stay right.
    pub fn start_span(&self, builder: SpanBuilder, parent: &Context) -> Context {
        if let Some(sdk) = &self.sdk {
            let span = sdk.tracer.build_with_context(builder, parent);
            if span.span_context().is_valid() {
                return parent.with_span(span);
            }
            // The provider is shut down: ids only, like tracing off.
        }
        parent.with_remote_span_context(unrecorded(parent))
    }

    /// Records a span that is already over (start and end known) and returns its ids.
    pub fn record(&self, builder: SpanBuilder, parent: &Context, end: SystemTime) -> SpanContext {
        if let Some(sdk) = &self.sdk {
            let mut span = sdk.tracer.build_with_context(builder, parent);
            let sc = span.span_context().clone();
            span.end_with_timestamp(end);
            if sc.is_valid() {
                return sc;
            }
        }
        unrecorded(parent)
    }

    /// Exports the spans ended so far (waits for the export, at most a few seconds). An
    /// endpoint that refuses them is not an error here: the spans are counted as failed in the
    /// self-metrics, like every export failure. Only running out of time is.
    pub fn flush(&self) -> Result<(), TraceError> {
        match &self.sdk {
            Some(sdk) => only_timeouts(sdk.provider.force_flush()),
            None => Ok(()),
        }
    }

    /// Exports what is queued within `timeout` and stops the export. Later spans are not
    /// recorded (their ids are still made). Errors as for [`flush`](Self::flush).
    pub fn shutdown(&self, timeout: Duration) -> Result<(), TraceError> {
        match &self.sdk {
            Some(sdk) => only_timeouts(sdk.provider.shutdown_with_timeout(timeout)),
            None => Ok(()),
        }
    }
}

fn only_timeouts(result: opentelemetry_sdk::error::OTelSdkResult) -> Result<(), TraceError> {
    match result {
        // The provider wraps its processor's errors in text; a processor's timeout reads
        // `Timeout(…)` in it.
        Err(e) if matches!(e, opentelemetry_sdk::error::OTelSdkError::Timeout(_)) || format!("{e:?}").contains("Timeout(") => {
            Err(TraceError::Export(format!("timed out: {e}")))
        }
        Err(e) => {
            tracing::debug!("span export: {e} (counted in the self-metrics)");
            Ok(())
        }
        Ok(()) => Ok(()),
    }
}

impl Drop for Sdk {
    fn drop(&mut self) {
        let _ = self.provider.shutdown_with_timeout(Duration::from_secs(2));
        if let Some(rt) = self.runtime.take() {
            // Dropping a runtime inside another one panics; this never blocks.
            rt.shutdown_background();
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

/// The resource every span carries: `service.name`, `service.version`, `deployment.environment`
/// (and its current semantic-convention name `deployment.environment.name`). Attributes from
/// `OTEL_RESOURCE_ATTRIBUTES` are kept; the config's values win.
fn resource(config: &Config) -> Resource {
    Resource::builder()
        .with_service_name(config.service_name.clone())
        .with_attributes([
            KeyValue::new("service.version", config.service_version.clone()),
            KeyValue::new("deployment.environment", config.environment.clone()),
            KeyValue::new("deployment.environment.name", config.environment.clone()),
        ])
        .build()
}

/// The URL spans are sent to: the endpoint as configured for gRPC; for OTLP/HTTP, with
/// `/v1/traces` added when the endpoint has no path (and port 4318 for the default endpoint).
pub fn export_url(config: &TracingConfig) -> String {
    let url = config.endpoint.url();
    if config.protocol == Protocol::Http && config.endpoint == TracingConfig::default().endpoint {
        // The default endpoint is gRPC's port; OTLP/HTTP's is 4318.
        return "http://localhost:4318/v1/traces".into();
    }
    match config.protocol {
        Protocol::Grpc => config.endpoint.as_str().to_string(),
        Protocol::Http if url.path() == "/" || url.path().is_empty() => {
            format!("{}/v1/traces", config.endpoint.as_str().trim_end_matches('/'))
        }
        Protocol::Http => url.as_str().to_string(),
    }
}

fn build_exporter(config: &TracingConfig, url: &str) -> Result<opentelemetry_otlp::SpanExporter, String> {
    use opentelemetry_otlp::{WithExportConfig, WithTonicConfig};
    let built = match config.protocol {
        Protocol::Grpc => {
            let mut builder = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(url)
                .with_timeout(SPAN_EXPORT_TIMEOUT);
            if config.endpoint.url().scheme() == "https" {
                builder = builder.with_tls_config(tonic::transport::ClientTlsConfig::new().with_webpki_roots());
            }
            builder.build()
        }
        Protocol::Http => opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .with_endpoint(url)
            .with_timeout(SPAN_EXPORT_TIMEOUT)
            .build(),
    };
    built.map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Endpoint;

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
