//! The OpenTelemetry SDK behind [`super::Tracing`] (the `otlp` feature): the provider, its
//! batch span processor, and the OTLP exporter on the library's I/O runtime.

use std::sync::Arc;
use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracer, SdkTracerProvider};

use super::{SPAN_BATCH_SIZE, SPAN_EXPORT_INTERVAL, SPAN_EXPORT_TIMEOUT, SPAN_QUEUE_CAPACITY, TraceError, export};
use crate::config::{Config, Protocol, TracingConfig};
use crate::metrics::SelfMetrics;

pub(super) struct Sdk {
    pub(super) provider: SdkTracerProvider,
    pub(super) tracer: SdkTracer,
}

impl Sdk {
    /// Sets up the tracer for `config` (disabled when `tracing.enabled` is false). Does not
    /// contact the endpoint: a collector that is down is not an error here, its failures are
    /// counted in `serphona_obs_batches_failed_total{sink="otlp"}`.
    pub(super) fn new(config: &Config, metrics: Arc<SelfMetrics>) -> Result<Sdk, TraceError> {
        let runtime = crate::pipeline::runtime::io_runtime();
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
        Ok(Sdk { provider, tracer })
    }

}

pub(super) fn only_timeouts(result: opentelemetry_sdk::error::OTelSdkResult) -> Result<(), TraceError> {
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
    use opentelemetry_otlp::WithExportConfig;
    let built = match config.protocol {
        #[cfg(feature = "tonic")]
        Protocol::Grpc => {
            use opentelemetry_otlp::WithTonicConfig;
            let mut builder = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(url)
                .with_timeout(SPAN_EXPORT_TIMEOUT);
            if config.endpoint.url().scheme() == "https" {
                builder = builder.with_tls_config(tonic::transport::ClientTlsConfig::new().with_webpki_roots());
            }
            builder.build()
        }
        #[cfg(not(feature = "tonic"))]
        Protocol::Grpc => {
            return Err("OTLP over gRPC needs the `tonic` feature of serphona-obs; set tracing.protocol: http \
                        (OTLP/HTTP, port 4318) or build with the feature"
                .into());
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
