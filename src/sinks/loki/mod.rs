//! The Loki push sink: the event log's JSON lines, pushed to Loki's push API.
//!
//! Each event's JSON line, encoded once for every sink ([`SharedEvent::line`]), the same line
//! the local event log writes, is sent to `<logging.loki_endpoint>/loki/api/v1/push` in Loki's
//! JSON push format, gzip-compressed (`Content-Encoding: gzip`):
//!
//! - **Stream labels** are of low cardinality only: `service`, `environment`, `level`,
//!   `event_type`. Tenants and conversations grow without bound, so they are not labels: they
//!   are in the line, and in each entry's **structured metadata** (`tenant_id`,
//!   `conversation_id`, `trace_id`; the v3 form `[ts, line, {…}]`), which Loki ≥ 3 (or 2.9 with
//!   `allow_structured_metadata`) indexes for `| tenant_id="acme"` filters without parsing.
//!   A Loki that refuses structured metadata (a 400 that says so) gets the same lines without
//!   it from then on, after one warning.
//! - **Timestamps** are the event's own, in nanoseconds since the epoch, as strings.
//! - **Batches** are sealed at [`DEFAULT_BATCH_BYTES`] of lines or [`DEFAULT_BATCH_WAIT`] after
//!   their first line, and by `flush` and `shutdown`. Within a batch each stream's entries are
//!   sorted by timestamp (stable, so equal timestamps keep their order). Across batches lines
//!   are pushed in the order they were recorded, one push at a time; a line recorded later
//!   with an older timestamp than one already pushed to its stream (a late event, another
//!   process) is left to Loki ≥ 2.4, which accepts such out-of-order lines within
//!   `max_chunk_age / 2` (1 h by default) of the stream's newest line; older ones it rejects
//!   with a 400, counted as below. The sink does not hold lines back to reorder them.
//!
//! Delivery runs on the sink's own thread and runtime. The dispatcher only hands events over
//! (never waiting on the network); when [`DEFAULT_BUFFER_LINES`] lines are waiting, new ones are
//! dropped and counted. A push that fails with a connection error, a timeout, a 429 or a 5xx is
//! retried with exponential backoff and jitter (the `backon` crate), up to
//! [`DEFAULT_ATTEMPTS`] attempts, then dropped and counted; later batches wait behind it, so
//! lines stay in order. Any other 4xx is not retried: the batch is counted as failed and the
//! status with Loki's message is logged once per streak of rejections. Loki drops an entry it
//! already has (same stream, timestamp and line), so a retried push does not double lines.
//! One warning is logged when pushes start failing and one info line when they recover.
//!
//! Self-metrics, all with `sink="loki"`: `serphona_obs_sink_events_total` (lines handed to the
//! sink), `serphona_obs_events_delivered_total` (lines Loki accepted),
//! `serphona_obs_sink_events_failed_total` and `serphona_obs_batches_failed_total` (lines
//! dropped: buffer full, rejected, retries exhausted; without the event log, not delivered by
//! the shutdown deadline), `serphona_obs_export_retries_total` (failed push attempts),
//! `serphona_obs_events_pending` (lines kept for the next start at shutdown).
//!
//! There is no disk spool for Loki: the local event log is the durable copy (issue 14). The
//! sink commits to `<data_dir>/positions/loki.json` the point of the log up to which every line
//! was pushed (or dropped and counted), as a watermark ([`crate::sinks::positions`]); a start
//! pushes the log from there to where it ended at start, before any new line, each line byte
//! for byte as the log has it (Loki drops a copy of a line it has: same stream, timestamp and
//! line). So a kill -9 or a shutdown deadline loses nothing the log has.
//!
//! `flush` pushes what is buffered, one attempt per batch while Loki takes them (when Loki is
//! already failing, the batches stay queued for the background retries instead). `shutdown`
//! pushes what is buffered until its deadline (up to 3 attempts per batch, 1 when Loki was
//! already failing); the rest stays in the event log past the committed position, or is
//! counted as failed without an event log. The sink records no telemetry about its own push
//! calls beyond these self-metrics.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::metrics::SelfMetrics;
use crate::pipeline::runtime::io_runtime;
use crate::pipeline::{Sink, SinkError};
use crate::sinks::positions::{self, Handed, WriteCursor};
use crate::sinks::retry::RetryLogic;
use crate::sinks::worker::{Queue, Worker};
use crate::pipeline::SharedEvent;

/// The sink's name (the `sink` label of the self-metrics).
pub const SINK_NAME: &str = "loki";
/// Loki's push path, added to `logging.loki_endpoint`.
pub const PUSH_PATH: &str = "/loki/api/v1/push";
mod encode;
mod push;
mod settings;

use push::Pushes;
pub use settings::*;

/// A push to Loki failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LokiError {
    /// Loki answered with an error status.
    #[error("Loki answered {status}: {message}")]
    Status {
        /// The HTTP status.
        status: u16,
        /// Loki's message (the start of the body).
        message: String,
    },
    /// Loki could not be reached or the connection broke.
    #[error("cannot reach Loki: {0}")]
    Network(String),
    /// Loki did not answer in time.
    #[error("Loki did not answer within {0:?}")]
    Timeout(Duration),
    /// The shutdown deadline cut the push short.
    #[error("the push was cut short by the shutdown deadline")]
    Cancelled,
    /// The request could not be built (e.g. a tenant that is not a header value).
    #[error("cannot build the push request: {0}")]
    Request(String),
}

/// Which Loki errors are worth retrying (see [`LokiError::is_retryable`]).
pub struct LokiRetry;

impl RetryLogic for LokiRetry {
    type Error = LokiError;

    fn is_retriable(&self, error: &LokiError) -> bool {
        error.is_retryable()
    }
}

impl LokiError {
    /// True when the same push may succeed later: connection errors, timeouts, 429 and 5xx.
    /// Other 4xx (bad data, too old, unauthorized) are not retried.
    pub fn is_retryable(&self) -> bool {
        match self {
            LokiError::Status { status, .. } => *status == 429 || *status >= 500,
            LokiError::Network(_) | LokiError::Timeout(_) => true,
            LokiError::Cancelled | LokiError::Request(_) => false,
        }
    }

    /// The HTTP status, when Loki answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            LokiError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// The Loki push sink (see the module docs).
pub struct LokiSink {
    worker: Worker<Handed>,
    /// The event log's cursor, when this process writes the event log of the same data dir.
    cursor: Option<Arc<WriteCursor>>,
    /// Lines handed to the worker and not yet delivered or dropped.
    buffered: Arc<AtomicUsize>,
    capacity: usize,
    /// When the worker must give up (set by shutdown; also cuts a retry in flight short).
    stop: watch::Sender<Option<Instant>>,
    flush_wait: Duration,
}

impl LokiSink {
    /// Starts the sink's worker. Does not contact Loki (a Loki that is down is not an error:
    /// lines wait, are retried, and are counted when dropped).
    pub fn start(settings: LokiSettings, metrics: Arc<SelfMetrics>) -> Result<LokiSink, SinkError> {
        let fail = |message: String| SinkError::Other { sink: SINK_NAME.into(), message };
        let client = {
            let _guard = io_runtime().enter();
            reqwest::Client::builder()
                .user_agent(concat!("serphona-obs/", env!("CARGO_PKG_VERSION")))
                .connect_timeout(settings.request_timeout.min(Duration::from_secs(5)))
                .build()
                .map_err(|e| fail(format!("cannot build the HTTP client: {e}")))?
        };
        let buffered = Arc::new(AtomicUsize::new(0));
        let (stop, stop_rx) = watch::channel(None);
        let capacity = settings.buffer_lines.max(1);
        let flush_wait = settings.request_timeout + Duration::from_secs(1);
        let cursor = settings.data_dir.as_deref().and_then(positions::cursor);
        let pushes = Pushes::new(settings, client, metrics.sink(SINK_NAME).with_delivery_series(), buffered.clone(), stop_rx);
        // Not joined on drop: it may be in the middle of a request.
        let worker = Worker::start(SINK_NAME, pushes, Queue::Unbounded, false)?;
        Ok(LokiSink { worker, cursor, buffered, capacity, stop, flush_wait })
    }

    /// Lines handed over and not yet delivered or dropped.
    pub fn buffered(&self) -> usize {
        self.buffered.load(Ordering::Acquire)
    }
}

fn other(message: impl Into<String>) -> SinkError {
    SinkError::Other { sink: SINK_NAME.into(), message: message.into() }
}

impl Sink for LokiSink {
    fn name(&self) -> &str {
        SINK_NAME
    }

    /// Hands the events to the push thread; never waits on the network. When the buffer is
    /// full the whole batch is dropped, and the error makes the dispatcher count it in
    /// `serphona_obs_sink_events_failed_total{sink="loki"}`.
    fn write(&mut self, events: &[SharedEvent]) -> Result<(), SinkError> {
        let n = events.len();
        let before = self.buffered.fetch_add(n, Ordering::AcqRel);
        if before + n > self.capacity {
            self.buffered.fetch_sub(n, Ordering::AcqRel);
            return Err(other(format!(
                "{before} lines are waiting for Loki (the buffer holds {}): {n} new lines dropped",
                self.capacity
            )));
        }
        self.worker.send_events(Handed::new(self.cursor.as_deref(), events)).inspect_err(|_| {
            self.buffered.fetch_sub(n, Ordering::AcqRel);
        })
    }

    /// Seals the pending batch and pushes what is queued, one attempt per batch while Loki
    /// takes them. What Loki does not take stays queued for the background retries. Waits
    /// at most the request timeout and a second.
    fn flush(&mut self) -> Result<(), SinkError> {
        self.worker
            .flush(Some(self.flush_wait))
            .map_err(|_| other(format!("Loki did not take the flushed lines within {:?}; they stay queued", self.flush_wait)))
    }

    /// Pushes what is buffered until just before `deadline`; what is left is counted as
    /// failed.
    fn shutdown(&mut self, deadline: Instant) -> Result<(), SinkError> {
        let now = Instant::now();
        // A margin, so the acknowledgement reaches the dispatcher before its own deadline.
        let margin = (deadline.saturating_duration_since(now) / 10).min(Duration::from_millis(250));
        let give_up = deadline.checked_sub(margin).unwrap_or(deadline).max(now);
        self.stop.send_replace(Some(give_up));
        self.worker.shutdown(give_up, deadline + Duration::from_secs(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Event;
    use super::encode::{Entry, Pending, ignored_lines, refuses_structured_metadata, timestamp_nanos};
    use crate::config::Endpoint;
    use crate::types::test_event;

    fn decode(body: &[u8]) -> serde_json::Value {
        let mut json = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(body), &mut json).unwrap();
        serde_json::from_slice(&json).unwrap()
    }

    fn at(event: &mut Event, secs: i64) {
        event.timestamp = time::OffsetDateTime::from_unix_timestamp(secs).unwrap();
    }

    #[test]
    fn a_batch_is_grouped_by_low_cardinality_streams_and_sorted_by_time() {
        let mut pending = Pending::default();
        let now = Instant::now();
        for (i, secs) in [1_700_000_005, 1_700_000_001, 1_700_000_003, 1_700_000_001].into_iter().enumerate() {
            let mut e = test_event(&format!("turn {i}"));
            at(&mut e, secs);
            pending.push((e.service.clone(), e.level, e.event_type()), Entry::new(&SharedEvent::new(e.clone())).unwrap(), now);
        }
        assert_eq!(pending.deadline(Duration::from_secs(1)), Some(now + Duration::from_secs(1)));
        let mut batch = pending.seal().unwrap();
        assert!(pending.seal().is_none() && pending.deadline(Duration::from_secs(1)).is_none());
        assert_eq!(batch.lines, 4);
        let body = decode(&batch.body("ci", true));
        let streams = body["streams"].as_array().unwrap();
        assert_eq!(streams.len(), 1);
        let labels = streams[0]["stream"].as_object().unwrap();
        let mut keys: Vec<&str> = labels.keys().map(String::as_str).collect();
        keys.sort();
        assert_eq!(keys, ["environment", "event_type", "level", "service"]);
        assert_eq!(labels["environment"], "ci");
        let values = streams[0]["values"].as_array().unwrap();
        let ts: Vec<&str> = values.iter().map(|v| v[0].as_str().unwrap()).collect();
        assert_eq!(ts, ["1700000001000000000", "1700000001000000000", "1700000003000000000", "1700000005000000000"]);
        // Equal timestamps keep their order; the line is the event log's line.
        let contents: Vec<String> =
            values.iter().map(|v| Event::from_json(v[1].as_str().unwrap()).unwrap().content).collect();
        assert_eq!(contents, ["turn 1", "turn 3", "turn 2", "turn 0"]);
        let meta = values[0][2].as_object().unwrap();
        assert_eq!(meta.len(), 3);
        for key in ["tenant_id", "conversation_id", "trace_id"] {
            assert!(meta[key].is_string(), "{key}");
        }
        // Without structured metadata, the two-element form.
        let body = decode(&batch.body("ci", false));
        assert_eq!(body["streams"][0]["values"][0].as_array().unwrap().len(), 2);
    }

    #[test]
    fn timestamps_outside_what_loki_parses_are_clamped() {
        let early = time::macros::datetime!(1900-01-01 0:00 UTC);
        let late = time::macros::datetime!(9999-12-31 0:00 UTC);
        assert_eq!(timestamp_nanos(early), 0);
        assert_eq!(timestamp_nanos(late), i64::MAX);
        assert_eq!(timestamp_nanos(time::OffsetDateTime::from_unix_timestamp(2).unwrap()), 2_000_000_000);
    }

    #[test]
    fn push_url_adds_the_push_path_once() {
        let url = |s: &str| LokiSettings::new(Endpoint::parse(s).unwrap(), "dev").push_url().to_string();
        assert_eq!(url("http://localhost:3100"), "http://localhost:3100/loki/api/v1/push");
        assert_eq!(url("http://gw:80/tenant-a/"), "http://gw/tenant-a/loki/api/v1/push");
        assert_eq!(url("http://loki:3100/loki/api/v1/push"), "http://loki:3100/loki/api/v1/push");
    }

    #[test]
    fn retryable_errors_and_partial_rejections() {
        let status = |status| LokiError::Status { status, message: String::new() };
        assert!(status(500).is_retryable() && status(503).is_retryable() && status(429).is_retryable());
        assert!(!status(400).is_retryable() && !status(401).is_retryable() && !status(404).is_retryable());
        assert!(LokiError::Network("refused".into()).is_retryable());
        assert!(LokiError::Timeout(Duration::from_secs(1)).is_retryable());
        assert!(!LokiError::Cancelled.is_retryable());
        let message = "entry with timestamp 2024-01-01 ignored, reason: 'entry too far behind',\n\
                       user 'fake', total ignored: 2 out of 5 for stream: {a=\"b\"}\n\
                       user 'fake', total ignored: 1 out of 3 for stream: {a=\"c\"}";
        assert_eq!(ignored_lines(message), Some(3));
        assert_eq!(ignored_lines("invalid labels"), None);
        let refused = LokiError::Status {
            status: 400,
            message: "stream '{a=\"b\"}' includes structured metadata, but this feature is disallowed".into(),
        };
        assert!(refuses_structured_metadata(&refused));
        assert!(!refuses_structured_metadata(&status(400)));
    }

    fn sink_to(addr: std::net::SocketAddr, buffer_lines: usize) -> (LokiSink, Arc<SelfMetrics>) {
        let metrics = crate::metrics::Metrics::new(10).unwrap().pipeline.clone();
        let mut settings = LokiSettings::new(Endpoint::parse(&format!("http://{addr}")).unwrap(), "test");
        settings.buffer_lines = buffer_lines;
        settings.request_timeout = Duration::from_secs(30);
        (LokiSink::start(settings, metrics.clone()).unwrap(), metrics)
    }

    #[test]
    fn a_batch_is_dropped_and_counted_when_its_attempts_are_exhausted() {
        // A port nothing listens on: every attempt is refused.
        let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let metrics = crate::metrics::Metrics::new(10).unwrap().pipeline.clone();
        let mut settings = LokiSettings::new(Endpoint::parse(&format!("http://{addr}")).unwrap(), "test");
        settings.attempts = 3;
        settings.batch_wait = Duration::from_millis(10);
        settings.min_backoff = Duration::from_millis(10);
        settings.max_backoff = Duration::from_millis(20);
        let mut sink = LokiSink::start(settings, metrics.clone()).unwrap();
        sink.write(&(0..5).map(|i| test_event(&format!("e{i}")).into()).collect::<Vec<_>>()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while metrics.events_failed.with_label_values(&[SINK_NAME]).get() < 5 {
            assert!(Instant::now() < deadline, "the batch was not given up");
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(metrics.export_retries.with_label_values(&[SINK_NAME]).get(), 3);
        assert_eq!(metrics.batches_failed.with_label_values(&[SINK_NAME]).get(), 1);
        assert_eq!(sink.buffered(), 0, "a dropped batch frees its room");
        sink.shutdown(Instant::now() + Duration::from_secs(1)).unwrap();
        assert_eq!(metrics.events_failed.with_label_values(&[SINK_NAME]).get(), 5, "counted once");
    }

    #[test]
    fn a_full_buffer_drops_new_lines_without_waiting() {
        // Accepts connections and never answers: the first batch hangs in its push.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let (mut sink, metrics) = sink_to(listener.local_addr().unwrap(), 10);
        let batch: Vec<SharedEvent> = (0..4).map(|i| test_event(&format!("e{i}")).into()).collect();
        let results: Vec<bool> = (0..5).map(|_| sink.write(&batch).is_ok()).collect();
        assert_eq!(results, [true, true, false, false, false], "10 lines fit, a batch of 4 more does not");
        let err = sink.write(&batch).unwrap_err().to_string();
        assert!(err.contains("loki") && err.contains("4 new lines dropped"), "{err}");
        assert_eq!(sink.buffered(), 8);
        // Shutdown cuts the hanging push at its deadline and counts what it held.
        let started = Instant::now();
        sink.shutdown(Instant::now() + Duration::from_millis(500)).unwrap();
        assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
        assert_eq!(metrics.events_failed.with_label_values(&[SINK_NAME]).get(), 8);
        assert_eq!(metrics.events_delivered.with_label_values(&[SINK_NAME]).get(), 0);
        assert!(sink.write(&batch).is_err(), "a shut down sink takes nothing");
        drop(listener);
    }
}
