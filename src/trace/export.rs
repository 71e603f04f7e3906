//! The OTLP exporter as the batch span processor sees it: runs the real exporter (tonic or
//! reqwest) on our runtime, counts what it delivers and what fails in the self-metrics under
//! `sink="otlp"`, and stops trying for a while when the endpoint is down, so a dead collector
//! costs one warning and a counter, not a log line per span nor a slow shutdown.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{SpanData, SpanExporter};

use crate::metrics::{SelfMetrics, SinkMetrics};

/// The `sink` label of the span export in the self-metrics.
pub const SINK_NAME: &str = "otlp";

/// First pause after a failed export; doubles per failure up to [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_secs(1);
const MAX_PAUSE: Duration = Duration::from_secs(30);

pub(crate) struct OtlpExporter {
    inner: Arc<opentelemetry_otlp::SpanExporter>,
    runtime: tokio::runtime::Handle,
    metrics: SinkMetrics,
    endpoint: String,
    /// The built-in default endpoint (nobody asked for a collector there).
    default_endpoint: bool,
    state: Mutex<Health>,
}

/// Whether the endpoint is failing, and until when batches are not even tried.
#[derive(Default)]
struct Health {
    failing_since: Option<Instant>,
    paused_until: Option<Instant>,
    pause: Duration,
    failed_batches: u64,
}

impl std::fmt::Debug for OtlpExporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OtlpExporter").field("endpoint", &self.endpoint).finish()
    }
}

impl OtlpExporter {
    pub(crate) fn new(
        inner: opentelemetry_otlp::SpanExporter,
        runtime: tokio::runtime::Handle,
        metrics: Arc<SelfMetrics>,
        endpoint: String,
        default_endpoint: bool,
    ) -> Self {
        let metrics = metrics.sink(SINK_NAME);
        OtlpExporter { inner: Arc::new(inner), runtime, metrics, endpoint, default_endpoint, state: Mutex::new(Health::default()) }
    }

    fn health(&self) -> std::sync::MutexGuard<'_, Health> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn failed(&self, spans: usize, why: &str) {
        self.metrics.batches_failed.inc();
        self.metrics.events_failed.inc_by(spans as u64);
        let mut h = self.health();
        h.failed_batches += 1;
        h.pause = if h.pause.is_zero() { FIRST_PAUSE } else { (h.pause * 2).min(MAX_PAUSE) };
        h.paused_until = Some(Instant::now() + h.pause);
        if h.failing_since.is_none() {
            h.failing_since = Some(Instant::now());
            if self.default_endpoint {
                // The embedded default (demo, simulate on a fresh machine): no collector is
                // expected, so this is news, not a warning.
                tracing::info!(
                    "no OTLP collector at {} (the default tracing.endpoint): spans are dropped until one runs \
                     (`serphona-obs up`); set tracing.enabled: false to stop trying",
                    self.endpoint
                );
                return;
            }
            tracing::warn!(
                "OTLP span export to {} failed ({why}); while it fails, spans are dropped and counted in \
                 serphona_obs_sink_events_failed_total{{sink=\"otlp\"}} (start a collector, e.g. \
                 `serphona-obs up`, or set tracing.enabled: false)",
                self.endpoint
            );
        }
    }

    fn delivered(&self, spans: usize) {
        self.metrics.batches_exported.inc();
        self.metrics.events_exported.inc_by(spans as u64);
        let mut h = self.health();
        if let Some(since) = h.failing_since.take() {
            tracing::info!(
                endpoint = %self.endpoint,
                failed_batches = h.failed_batches,
                "OTLP span export recovered after {:.1}s",
                since.elapsed().as_secs_f64()
            );
        }
        *h = Health::default();
    }
}

impl SpanExporter for OtlpExporter {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let spans = batch.len();
        let paused = self.health().paused_until.is_some_and(|until| Instant::now() < until);
        if paused {
            // Not even tried: the endpoint failed moments ago.
            self.failed(spans, "endpoint down");
            return Err(OTelSdkError::InternalFailure(format!("{} is down; batch dropped", self.endpoint)));
        }
        let inner = self.inner.clone();
        // The SDK's thread polls this future without a runtime; the client needs one.
        let result = match self.runtime.spawn(async move { inner.export(batch).await }).await {
            Ok(result) => result,
            Err(join) => Err(OTelSdkError::InternalFailure(format!("export task failed: {join}"))),
        };
        match &result {
            Ok(()) => self.delivered(spans),
            Err(e) => self.failed(spans, &e.to_string()),
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        // Called once, when the provider is built, before any export holds a clone.
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.set_resource(resource);
        }
    }
}
