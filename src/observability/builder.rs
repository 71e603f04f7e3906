//! [`ObservabilityBuilder`]: wires the configured sinks, the processors, tracing and
//! `/metrics` into an [`Observability`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::config::Config;
use crate::metrics::Metrics;
use crate::metrics::server::MetricsServer;
use crate::pipeline::{Pipeline, Processor, Sink};
use crate::sinks::event_log::EventLogSink;
use crate::sinks::live::{LIVE_CAPACITY, LiveSink};
use crate::trace::Tracing;

use super::{Error, Inner, Observability};

/// Sets up an [`Observability`] with extra sinks or processors.
#[must_use]
pub struct ObservabilityBuilder {
    config: Config,
    sinks: Vec<Box<dyn Sink>>,
    processors: Vec<Box<dyn Processor>>,
    serve_metrics: Option<bool>,
}

impl ObservabilityBuilder {
    pub(super) fn new(config: Config) -> ObservabilityBuilder {
        ObservabilityBuilder {
            config,
            sinks: Vec::new(),
            processors: Vec::new(),
            serve_metrics: None,
        }
    }

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
        let prices = Arc::new(crate::pricing::Prices::load(config.usage.prices.as_deref())?);
        let dead_air_threshold_ms = config.voice.dead_air_threshold.as_secs_f64() * 1000.0;
        let mut sinks: Vec<Box<dyn Sink>> = Vec::new();
        if config.logging.enabled {
            sinks.push(Box::new(EventLogSink::open(
                &config.data_dir,
                config.logging.max_file_bytes,
                config.logging.max_files,
            )?
            .with_sync(config.logging.sync)));
        }
        #[cfg(feature = "loki")]
        if let Some(loki) = crate::sinks::loki::LokiSettings::from_config(&config) {
            sinks.push(Box::new(crate::sinks::loki::LokiSink::start(
                loki,
                metrics.pipeline.clone(),
            )?));
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
            Some(MetricsServer::start(
                metrics.clone(),
                config.metrics.listen,
            )?)
        } else {
            None
        };
        // Redaction first: every other processor and every sink sees redacted events only.
        let redactor = Arc::new(crate::processors::Redactor::new(&config.privacy, &config.data_dir)?);
        let redactor = (!redactor.is_noop()).then_some(redactor);
        let mut processors: Vec<Box<dyn Processor>> = Vec::new();
        if let Some(redactor) = &redactor {
            processors.push(Box::new(crate::processors::RedactionProcessor::new(
                redactor.clone(),
                metrics.pipeline.redactions.clone(),
            )));
        }
        processors.extend(self.processors);
        let pipeline = Pipeline::start(
            config.pipeline.queue_capacity,
            config.pipeline.when_full,
            processors,
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
            redactor,
            prices,
            dead_air_threshold_ms,
            conversation_header,
            conversations: Mutex::new(HashMap::new()),
        });
        let weak = Arc::downgrade(&inner);
        inner
            .metrics
            .set_queue_len(move || weak.upgrade().map_or(0, |i| i.pipeline.queue_len()));
        Ok(Observability { inner })
    }
}
