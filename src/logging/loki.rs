//! The Loki push sink: the event log's JSON lines, pushed to Loki's push API.
//!
//! Each event becomes the same JSON line the local event log writes
//! ([`Event::write_json_line`]), sent to `<logging.loki_endpoint>/loki/api/v1/push` in Loki's
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
//! dropped: buffer full, rejected, retries exhausted, not delivered by the shutdown deadline),
//! `serphona_obs_export_retries_total` (failed push attempts). There is no disk spool for Loki:
//! the local event log is the durable copy.
//!
//! `flush` pushes what is buffered, one attempt per batch while Loki takes them (when Loki is
//! already failing, the batches stay queued for the background retries instead). `shutdown`
//! pushes what is buffered until its deadline (up to 3 attempts per batch, 1 when Loki was
//! already failing) and counts the rest as failed. The sink records no telemetry about its own
//! push calls beyond these self-metrics.

use std::collections::{BTreeMap, VecDeque};
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::Poll;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use backon::BackoffBuilder;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, bounded, unbounded};
use opentelemetry::trace::TraceId;
use serde::Serialize;
use tokio::sync::watch;

use crate::config::{Config, Endpoint};
use crate::metrics::SelfMetrics;
use crate::pipeline::{Sink, SinkError};
use crate::types::{Event, EventType, Level};

/// The sink's name (the `sink` label of the self-metrics).
pub const SINK_NAME: &str = "loki";
/// Loki's push path, added to `logging.loki_endpoint`.
pub const PUSH_PATH: &str = "/loki/api/v1/push";
/// A batch is pushed when its lines reach this many bytes (before compression; Promtail's and
/// Alloy's default).
pub const DEFAULT_BATCH_BYTES: usize = 1024 * 1024;
/// … or this long after its first line.
pub const DEFAULT_BATCH_WAIT: Duration = Duration::from_secs(1);
/// Lines the sink holds (handed over, batched, being retried) before it drops new ones.
pub const DEFAULT_BUFFER_LINES: usize = 32_768;
/// Longest one push may take.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Push attempts of a batch before it is dropped.
pub const DEFAULT_ATTEMPTS: u32 = 10;
/// The first retry delay.
pub const DEFAULT_MIN_BACKOFF: Duration = Duration::from_millis(250);
/// The longest retry delay.
pub const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Attempts per batch during shutdown (1 when Loki was already failing).
const SHUTDOWN_ATTEMPTS: u32 = 3;
/// Most bytes of Loki's answer kept in an error.
const MAX_MESSAGE: usize = 1024;

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

/// How the Loki sink pushes: where, as which tenant, and its batching and retry limits.
/// [`LokiSettings::new`] has the defaults; [`LokiSettings::from_config`] reads the `logging`
/// section.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct LokiSettings {
    /// Loki's base URL; [`PUSH_PATH`] is added unless the URL already ends with it.
    pub endpoint: Endpoint,
    /// Sent as `X-Scope-OrgID` when set.
    pub tenant: Option<String>,
    /// The `environment` label.
    pub environment: String,
    /// See [`DEFAULT_BATCH_BYTES`].
    pub batch_bytes: usize,
    /// See [`DEFAULT_BATCH_WAIT`].
    pub batch_wait: Duration,
    /// See [`DEFAULT_BUFFER_LINES`].
    pub buffer_lines: usize,
    /// See [`DEFAULT_REQUEST_TIMEOUT`].
    pub request_timeout: Duration,
    /// See [`DEFAULT_ATTEMPTS`].
    pub attempts: u32,
    /// See [`DEFAULT_MIN_BACKOFF`].
    pub min_backoff: Duration,
    /// See [`DEFAULT_MAX_BACKOFF`].
    pub max_backoff: Duration,
}

impl LokiSettings {
    /// Pushes to `endpoint` with the `environment` label, no tenant, and the default limits.
    pub fn new(endpoint: Endpoint, environment: impl Into<String>) -> LokiSettings {
        LokiSettings {
            endpoint,
            tenant: None,
            environment: environment.into(),
            batch_bytes: DEFAULT_BATCH_BYTES,
            batch_wait: DEFAULT_BATCH_WAIT,
            buffer_lines: DEFAULT_BUFFER_LINES,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            attempts: DEFAULT_ATTEMPTS,
            min_backoff: DEFAULT_MIN_BACKOFF,
            max_backoff: DEFAULT_MAX_BACKOFF,
        }
    }

    /// The settings `config` asks for: `None` unless `logging.enabled` and
    /// `logging.loki_endpoint` is set; `logging.loki_tenant` when not empty.
    pub fn from_config(config: &Config) -> Option<LokiSettings> {
        let endpoint = config.logging.loki_endpoint.0.clone().filter(|_| config.logging.enabled)?;
        let mut settings = LokiSettings::new(endpoint, config.environment.clone());
        settings.tenant = Some(config.logging.loki_tenant.clone()).filter(|t| !t.is_empty());
        Some(settings)
    }

    /// The URL pushes go to.
    pub fn push_url(&self) -> url::Url {
        let mut url = self.endpoint.url().clone();
        if !url.path().trim_end_matches('/').ends_with(PUSH_PATH) {
            let path = format!("{}{PUSH_PATH}", url.path().trim_end_matches('/'));
            url.set_path(&path);
        }
        url
    }
}

enum Msg {
    Events(Vec<Event>),
    Flush(Sender<()>),
    /// Shutdown, giving up at this instant.
    Shutdown(Instant, Sender<()>),
}

/// The Loki push sink (see the module docs).
pub struct LokiSink {
    tx: Option<Sender<Msg>>,
    /// Lines handed to the worker and not yet delivered or dropped.
    buffered: Arc<AtomicUsize>,
    capacity: usize,
    /// When the worker must give up (set by shutdown; also cuts a retry in flight short).
    stop: watch::Sender<Option<Instant>>,
    flush_wait: Duration,
    worker: Option<JoinHandle<()>>,
}

impl LokiSink {
    /// Starts the sink's thread and runtime. Does not contact Loki (a Loki that is down is not
    /// an error: lines wait, are retried, and are counted when dropped).
    pub fn start(settings: LokiSettings, metrics: Arc<SelfMetrics>) -> Result<LokiSink, SinkError> {
        let fail = |message: String| SinkError::Other { sink: SINK_NAME.into(), message };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| fail(format!("cannot start the push runtime: {e}")))?;
        let client = {
            let _guard = rt.enter();
            reqwest::Client::builder()
                .user_agent(concat!("serphona-obs/", env!("CARGO_PKG_VERSION")))
                .connect_timeout(settings.request_timeout.min(Duration::from_secs(5)))
                .build()
                .map_err(|e| fail(format!("cannot build the HTTP client: {e}")))?
        };
        for vec in [
            &metrics.events_exported,
            &metrics.events_failed,
            &metrics.batches_exported,
            &metrics.batches_failed,
            &metrics.events_delivered,
            &metrics.export_retries,
        ] {
            vec.with_label_values(&[SINK_NAME]);
        }
        let buffered = Arc::new(AtomicUsize::new(0));
        let (stop, stop_rx) = watch::channel(None);
        let capacity = settings.buffer_lines.max(1);
        let flush_wait = settings.request_timeout + Duration::from_secs(1);
        let worker = Worker {
            url: settings.push_url(),
            backoff: backoff(&settings),
            settings,
            client,
            rt,
            metrics,
            buffered: buffered.clone(),
            stop: stop_rx,
            pending: Pending::default(),
            outbox: VecDeque::new(),
            retry_at: None,
            failing: None,
            rejecting: false,
            metadata: true,
            warned_unserializable: false,
        };
        let (tx, rx) = unbounded();
        let worker = std::thread::Builder::new()
            .name("serphona-obs-loki".into())
            .spawn(move || worker.run(rx))
            .map_err(|e| fail(format!("cannot start the push thread: {e}")))?;
        Ok(LokiSink { tx: Some(tx), buffered, capacity, stop, flush_wait, worker: Some(worker) })
    }

    /// Lines handed over and not yet delivered or dropped.
    pub fn buffered(&self) -> usize {
        self.buffered.load(Ordering::Acquire)
    }

    fn send(&self, msg: Msg) -> Result<(), SinkError> {
        let tx = self.tx.as_ref().ok_or_else(|| other("the sink is shut down"))?;
        tx.send(msg).map_err(|_| other("the push thread stopped"))
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
    fn write(&mut self, events: &[Event]) -> Result<(), SinkError> {
        let n = events.len();
        let before = self.buffered.fetch_add(n, Ordering::AcqRel);
        if before + n > self.capacity {
            self.buffered.fetch_sub(n, Ordering::AcqRel);
            return Err(other(format!(
                "{before} lines are waiting for Loki (the buffer holds {}): {n} new lines dropped",
                self.capacity
            )));
        }
        self.send(Msg::Events(events.to_vec())).inspect_err(|_| {
            self.buffered.fetch_sub(n, Ordering::AcqRel);
        })
    }

    /// Seals the pending batch and pushes what is queued, one attempt per batch while Loki
    /// takes them. What Loki does not take stays queued for the background retries. Waits
    /// at most the request timeout and a second.
    fn flush(&mut self) -> Result<(), SinkError> {
        let (ack, done) = bounded(1);
        self.send(Msg::Flush(ack))?;
        done.recv_timeout(self.flush_wait)
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
        let (ack, done) = bounded(1);
        self.send(Msg::Shutdown(give_up, ack))?;
        self.tx = None;
        let result = done.recv_deadline(deadline + Duration::from_secs(1));
        if result.is_ok() {
            if let Some(worker) = self.worker.take() {
                let _ = worker.join();
            }
        }
        result.map_err(|_| other("the push thread did not finish by the shutdown deadline"))
    }
}

impl Drop for LokiSink {
    fn drop(&mut self) {
        // Dropped without shutdown: the worker counts what it holds as failed and stops; a
        // retry in flight is cut short (the watch closes). Not joined: it may be mid-request.
        self.tx = None;
    }
}

fn backoff(settings: &LokiSettings) -> Box<dyn Iterator<Item = Duration> + Send> {
    Box::new(
        backon::ExponentialBuilder::default()
            .with_min_delay(settings.min_backoff)
            .with_max_delay(settings.max_backoff)
            .with_jitter()
            .without_max_times()
            .build(),
    )
}

/// Streams are keyed by their label values: service, level, event type (the environment is
/// the sink's own).
type StreamKey = (Arc<str>, Level, EventType);

/// One line with its timestamp and structured metadata.
#[derive(Debug, Clone)]
struct Entry {
    ts: i64,
    line: String,
    tenant_id: Arc<str>,
    conversation_id: Arc<str>,
    trace_id: TraceId,
}

impl Entry {
    /// The event's line (without the newline), or the serialization error.
    fn new(event: &Event) -> Result<Entry, serde_json::Error> {
        let mut line = Vec::with_capacity(512 + event.content.len());
        event.write_json_line(&mut line)?;
        line.pop();
        Ok(Entry {
            ts: timestamp_nanos(event.timestamp),
            line: String::from_utf8(line).expect("serde_json writes UTF-8"),
            tenant_id: event.tenant_id.clone(),
            conversation_id: event.conversation_id.clone(),
            trace_id: event.trace.trace_id,
        })
    }
}

/// Nanoseconds since the epoch, within what Loki parses (0 to 2262).
fn timestamp_nanos(t: time::OffsetDateTime) -> i64 {
    t.unix_timestamp_nanos().clamp(0, i64::MAX as i128) as i64
}

/// The batch being filled.
#[derive(Default)]
struct Pending {
    streams: BTreeMap<StreamKey, Vec<Entry>>,
    lines: usize,
    bytes: usize,
    first_at: Option<Instant>,
}

impl Pending {
    fn push(&mut self, key: StreamKey, entry: Entry, now: Instant) {
        self.first_at.get_or_insert(now);
        self.lines += 1;
        self.bytes += entry.line.len();
        self.streams.entry(key).or_default().push(entry);
    }

    fn deadline(&self, wait: Duration) -> Option<Instant> {
        self.first_at.map(|t| t + wait)
    }

    /// The batch, each stream's entries sorted by timestamp (stable).
    fn seal(&mut self) -> Option<Batch> {
        if self.lines == 0 {
            return None;
        }
        let lines = std::mem::take(&mut self.lines);
        self.bytes = 0;
        self.first_at = None;
        let mut streams: Vec<(StreamKey, Vec<Entry>)> = std::mem::take(&mut self.streams).into_iter().collect();
        for (_, entries) in &mut streams {
            entries.sort_by_key(|e| e.ts);
        }
        Some(Batch { streams, lines, attempts: 0, body: None })
    }
}

/// A sealed batch waiting to be pushed.
struct Batch {
    streams: Vec<(StreamKey, Vec<Entry>)>,
    lines: usize,
    attempts: u32,
    /// The gzip body, and whether it carries structured metadata (built once, sent again on
    /// retries byte for byte).
    body: Option<(bool, Vec<u8>)>,
}

impl Batch {
    fn body(&mut self, environment: &str, metadata: bool) -> Vec<u8> {
        match &self.body {
            Some((m, body)) if *m == metadata => body.clone(),
            _ => {
                let body = gzip(&encode(&self.streams, environment, metadata));
                self.body = Some((metadata, body.clone()));
                body
            }
        }
    }
}

/// Loki's JSON push body.
fn encode(streams: &[(StreamKey, Vec<Entry>)], environment: &str, metadata: bool) -> Vec<u8> {
    #[derive(Serialize)]
    struct Body<'a> {
        streams: Vec<Stream<'a>>,
    }
    #[derive(Serialize)]
    struct Stream<'a> {
        stream: Labels<'a>,
        values: Vec<Value<'a>>,
    }
    #[derive(Serialize)]
    struct Labels<'a> {
        service: &'a str,
        environment: &'a str,
        level: &'static str,
        event_type: &'static str,
    }
    #[derive(Serialize)]
    struct Meta<'a> {
        tenant_id: &'a str,
        conversation_id: &'a str,
        trace_id: String,
    }
    #[derive(Serialize)]
    #[serde(untagged)]
    enum Value<'a> {
        Plain(String, &'a str),
        WithMetadata(String, &'a str, Meta<'a>),
    }
    let body = Body {
        streams: streams
            .iter()
            .map(|((service, level, event_type), entries)| Stream {
                stream: Labels { service, environment, level: level.as_str(), event_type: event_type.as_str() },
                values: entries
                    .iter()
                    .map(|e| {
                        if metadata {
                            let meta = Meta {
                                tenant_id: &e.tenant_id,
                                conversation_id: &e.conversation_id,
                                trace_id: e.trace_id.to_string(),
                            };
                            Value::WithMetadata(e.ts.to_string(), &e.line, meta)
                        } else {
                            Value::Plain(e.ts.to_string(), &e.line)
                        }
                    })
                    .collect(),
            })
            .collect(),
    };
    serde_json::to_vec(&body).expect("a push body of strings serializes")
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::with_capacity(bytes.len() / 4), flate2::Compression::default());
    encoder.write_all(bytes).expect("writing to a Vec cannot fail");
    encoder.finish().expect("writing to a Vec cannot fail")
}

/// Lines of a rejected push that Loki says it ignored (`total ignored: N out of M`, once per
/// stream or once per push depending on the version), when its message says.
fn ignored_lines(message: &str) -> Option<usize> {
    static TOTAL: std::sync::LazyLock<regex::Regex> =
        std::sync::LazyLock::new(|| regex::Regex::new(r"total ignored: (\d+) out of \d+").expect("valid regex"));
    let counts: Vec<usize> = TOTAL.captures_iter(message).filter_map(|c| c[1].parse().ok()).collect();
    (!counts.is_empty()).then(|| counts.iter().sum())
}

/// A 400 that says the Loki does not take structured metadata.
fn refuses_structured_metadata(error: &LokiError) -> bool {
    matches!(error, LokiError::Status { status: 400, message } if message.to_ascii_lowercase().contains("structured metadata"))
}

/// What became of the head batch's push.
enum Outcome {
    /// Loki took it (or rejected it for good): it is gone from the queue, counted.
    Done,
    /// A failure worth retrying; the batch is still queued.
    Failed,
}

/// Pushes are failing since…
struct Failing {
    since: Instant,
    attempts: u64,
}

struct Worker {
    settings: LokiSettings,
    url: url::Url,
    client: reqwest::Client,
    rt: tokio::runtime::Runtime,
    metrics: Arc<SelfMetrics>,
    buffered: Arc<AtomicUsize>,
    stop: watch::Receiver<Option<Instant>>,
    pending: Pending,
    /// Sealed batches, oldest first; only the head is pushed.
    outbox: VecDeque<Batch>,
    /// When the head may be tried again.
    retry_at: Option<Instant>,
    backoff: Box<dyn Iterator<Item = Duration> + Send>,
    failing: Option<Failing>,
    /// In a streak of rejected (4xx) pushes: logged once per streak.
    rejecting: bool,
    /// Send structured metadata (until a Loki says it does not take it).
    metadata: bool,
    warned_unserializable: bool,
}

impl Worker {
    fn run(mut self, rx: Receiver<Msg>) {
        loop {
            self.deliver_due();
            let retry = self.retry_at.filter(|_| !self.outbox.is_empty());
            let wake = [self.pending.deadline(self.settings.batch_wait), retry].into_iter().flatten().min();
            let msg = match wake {
                Some(at) => rx.recv_deadline(at),
                None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
            };
            match msg {
                Ok(Msg::Events(events)) => self.add(&events),
                Ok(Msg::Flush(ack)) => {
                    self.seal();
                    self.flush();
                    let _ = ack.send(());
                }
                Ok(Msg::Shutdown(give_up, ack)) => {
                    self.seal();
                    self.finish(give_up);
                    let _ = ack.send(());
                    return;
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    self.seal();
                    self.drop_queued("the sink was dropped without shutdown");
                    return;
                }
            }
        }
    }

    fn add(&mut self, events: &[Event]) {
        let now = Instant::now();
        for event in events {
            match Entry::new(event) {
                Ok(entry) => {
                    let key = (event.service.clone(), event.level, event.event_type());
                    self.pending.push(key, entry, now);
                    if self.pending.bytes >= self.settings.batch_bytes {
                        self.seal();
                    }
                }
                Err(e) => {
                    // Only a hand-built event can get here (see Event::to_json).
                    self.metrics.events_failed.with_label_values(&[SINK_NAME]).inc();
                    self.buffered.fetch_sub(1, Ordering::AcqRel);
                    if !std::mem::replace(&mut self.warned_unserializable, true) {
                        tracing::error!(event_id = %event.event_id, error = %e, "serphona-obs: an event cannot be written as a JSON line; it is not pushed to Loki");
                    }
                }
            }
        }
    }

    fn seal(&mut self) {
        if let Some(batch) = self.pending.seal() {
            self.outbox.push_back(batch);
        }
    }

    /// Seals a batch that has waited long enough and pushes the queue while it is due.
    fn deliver_due(&mut self) {
        loop {
            let now = Instant::now();
            if self.pending.deadline(self.settings.batch_wait).is_some_and(|d| d <= now) {
                self.seal();
            }
            if self.outbox.is_empty() || self.retry_at.is_some_and(|t| t > now) {
                return;
            }
            // A retry while Loki fails is abandoned at once when shutdown comes.
            let abandon_on_shutdown = self.failing.is_some();
            match self.push_head(self.settings.request_timeout, abandon_on_shutdown) {
                Outcome::Done => {}
                Outcome::Failed => {
                    let head = self.outbox.front_mut().expect("a failed push leaves its batch queued");
                    head.attempts += 1;
                    if head.attempts >= self.settings.attempts {
                        self.drop_head("retries exhausted");
                    }
                    self.retry_at = Some(Instant::now() + self.next_delay());
                    return;
                }
            }
        }
    }

    /// One attempt per queued batch while Loki takes them; none when it is already failing.
    fn flush(&mut self) {
        if self.failing.is_some() {
            return;
        }
        while !self.outbox.is_empty() {
            if let Outcome::Failed = self.push_head(self.settings.request_timeout, false) {
                if let Some(head) = self.outbox.front_mut() {
                    head.attempts += 1;
                }
                self.retry_at = Some(Instant::now() + self.next_delay());
                return;
            }
        }
    }

    /// Shutdown: pushes the queue until `give_up`, a few attempts per batch; counts the rest.
    fn finish(&mut self, give_up: Instant) {
        let attempts = if self.failing.is_some() { 1 } else { SHUTDOWN_ATTEMPTS };
        let mut delays = backon::ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(100))
            .with_max_delay(Duration::from_secs(1))
            .with_jitter()
            .without_max_times()
            .build();
        let mut failures = 0;
        while !self.outbox.is_empty() {
            let now = Instant::now();
            if now >= give_up {
                break;
            }
            let timeout = self.settings.request_timeout.min(give_up - now);
            match self.push_head(timeout, false) {
                Outcome::Done => failures = 0,
                Outcome::Failed => {
                    failures += 1;
                    let delay = delays.next().unwrap_or(Duration::from_secs(1));
                    if failures >= attempts || Instant::now() + delay >= give_up {
                        break;
                    }
                    std::thread::sleep(delay);
                }
            }
        }
        self.drop_queued("Loki did not take them by shutdown");
    }

    fn next_delay(&mut self) -> Duration {
        self.backoff.next().unwrap_or(self.settings.max_backoff)
    }

    /// Pushes the head batch once; counts and logs what happened.
    fn push_head(&mut self, timeout: Duration, abandon_on_shutdown: bool) -> Outcome {
        let environment = self.settings.environment.clone();
        let Some(head) = self.outbox.front_mut() else { return Outcome::Done };
        let lines = head.lines;
        let body = head.body(&environment, self.metadata);
        let push = push(&self.client, &self.url, self.settings.tenant.as_deref(), body, timeout);
        let result = self.rt.block_on(async {
            match first(push, cancelled(self.stop.clone(), abandon_on_shutdown)).await {
                Ok(result) => result,
                Err(()) => Err(LokiError::Cancelled),
            }
        });
        match result {
            Ok(()) => {
                self.metrics.events_delivered.with_label_values(&[SINK_NAME]).inc_by(lines as u64);
                self.complete_head();
                self.rejecting = false;
                self.recovered();
                Outcome::Done
            }
            Err(e) if self.metadata && refuses_structured_metadata(&e) => {
                self.metadata = false;
                tracing::warn!(
                    error = %e,
                    "serphona-obs: this Loki does not take structured metadata (Loki ≥ 3, or allow_structured_metadata): \
                     lines are pushed without it from now on (tenant_id, conversation_id and trace_id stay in the line)"
                );
                self.push_head(timeout, abandon_on_shutdown)
            }
            Err(LokiError::Cancelled) => Outcome::Failed,
            Err(e) if !e.is_retryable() => {
                self.rejected(lines, &e);
                Outcome::Done
            }
            Err(e) => {
                self.metrics.export_retries.with_label_values(&[SINK_NAME]).inc();
                self.failed_attempt(&e);
                Outcome::Failed
            }
        }
    }

    /// The head batch is done with (delivered, rejected or dropped): off the queue and the
    /// buffer count.
    fn complete_head(&mut self) {
        if let Some(batch) = self.outbox.pop_front() {
            self.buffered.fetch_sub(batch.lines, Ordering::AcqRel);
        }
    }

    fn drop_head(&mut self, why: &str) {
        if let Some(batch) = self.outbox.front() {
            let lines = batch.lines;
            self.metrics.events_failed.with_label_values(&[SINK_NAME]).inc_by(lines as u64);
            self.metrics.batches_failed.with_label_values(&[SINK_NAME]).inc();
            tracing::debug!(lines, "serphona-obs: a Loki batch was dropped: {why}");
            self.complete_head();
        }
    }

    /// Counts everything still queued as failed.
    fn drop_queued(&mut self, why: &str) {
        let lines: usize = self.outbox.iter().map(|b| b.lines).sum();
        if lines == 0 {
            return;
        }
        let batches = self.outbox.len();
        while !self.outbox.is_empty() {
            self.drop_head(why);
        }
        tracing::warn!(
            lines,
            batches,
            "serphona-obs: lines were not pushed to Loki ({why}; counted in serphona_obs_sink_events_failed_total{{sink=\"loki\"}})"
        );
    }

    /// A 4xx other than 429: not retried; logged once per streak.
    fn rejected(&mut self, lines: usize, error: &LokiError) {
        let ignored = match error {
            LokiError::Status { status: 400, message } => ignored_lines(message).map(|n| n.min(lines)),
            _ => None,
        }
        .unwrap_or(lines);
        let m = &self.metrics;
        m.events_failed.with_label_values(&[SINK_NAME]).inc_by(ignored as u64);
        m.batches_failed.with_label_values(&[SINK_NAME]).inc();
        m.events_delivered.with_label_values(&[SINK_NAME]).inc_by((lines - ignored) as u64);
        if !std::mem::replace(&mut self.rejecting, true) {
            tracing::error!(
                status = error.status().unwrap_or(0),
                lines = ignored,
                endpoint = %crate::config::redact_url(&self.url),
                "serphona-obs: Loki rejected a push: {error} (not retried; counted in \
                 serphona_obs_sink_events_failed_total{{sink=\"loki\"}}; logged once until a push succeeds)"
            );
        }
        self.complete_head();
        // Loki answered: it is up.
        self.recovered();
    }

    fn failed_attempt(&mut self, error: &LokiError) {
        match &mut self.failing {
            Some(failing) => {
                failing.attempts += 1;
                tracing::debug!(error = %error, "serphona-obs: Loki push failed again");
            }
            None => {
                self.failing = Some(Failing { since: Instant::now(), attempts: 1 });
                tracing::warn!(
                    "serphona-obs: Loki push to {} failed ({error}); retrying with backoff. Lines that cannot be \
                     delivered are dropped and counted in serphona_obs_sink_events_failed_total{{sink=\"loki\"}} \
                     (the local event log keeps them); one line is logged when pushes recover",
                    crate::config::redact_url(&self.url)
                );
            }
        }
    }

    /// Loki answered (took the push or rejected it): no more backoff.
    fn recovered(&mut self) {
        self.retry_at = None;
        if let Some(failing) = self.failing.take() {
            tracing::info!(
                failed_attempts = failing.attempts,
                "serphona-obs: Loki push to {} recovered after {:.1}s",
                crate::config::redact_url(&self.url),
                failing.since.elapsed().as_secs_f64()
            );
            self.backoff = backoff(&self.settings);
        }
    }
}

/// One push of a gzip body.
async fn push(client: &reqwest::Client, url: &url::Url, tenant: Option<&str>, body: Vec<u8>, timeout: Duration) -> Result<(), LokiError> {
    let mut request = client
        .post(url.clone())
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(http::header::CONTENT_ENCODING, "gzip")
        .timeout(timeout)
        .body(body);
    if let Some(tenant) = tenant {
        request = request.header("X-Scope-OrgID", tenant);
    }
    let response = request.send().await.map_err(|e| classify(&e, timeout))?;
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let body = response.bytes().await.unwrap_or_default();
    let text = String::from_utf8_lossy(&body[..body.len().min(MAX_MESSAGE)]).trim().to_string();
    Err(LokiError::Status { status: status.as_u16(), message: if text.is_empty() { status.to_string() } else { text } })
}

fn classify(error: &reqwest::Error, timeout: Duration) -> LokiError {
    if error.is_timeout() {
        return LokiError::Timeout(timeout);
    }
    // The causes say what happened ("tcp connect error: Connection refused"); the top message
    // only repeats the URL, which the log line has already.
    let mut causes = Vec::new();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        causes.push(cause.to_string());
        source = cause.source();
    }
    let message = if causes.is_empty() { error.to_string() } else { causes.join(": ") };
    if error.is_builder() { LokiError::Request(message) } else { LokiError::Network(message) }
}

/// Resolves when the shutdown's give-up time passes (at once, for `abandon`, when shutdown is
/// requested), or when the sink is gone.
async fn cancelled(mut stop: watch::Receiver<Option<Instant>>, abandon: bool) {
    loop {
        let give_up = *stop.borrow_and_update();
        if let Some(give_up) = give_up {
            if !abandon {
                tokio::time::sleep_until(give_up.into()).await;
            }
            return;
        }
        if stop.changed().await.is_err() {
            return;
        }
    }
}

/// Runs two futures; the first to finish wins (`Ok` for `a`, `Err` for `b`).
async fn first<A: Future, B: Future>(a: A, b: B) -> Result<A::Output, B::Output> {
    let mut a = std::pin::pin!(a);
    let mut b = std::pin::pin!(b);
    std::future::poll_fn(|cx| {
        if let Poll::Ready(out) = a.as_mut().poll(cx) {
            return Poll::Ready(Ok(out));
        }
        if let Poll::Ready(out) = b.as_mut().poll(cx) {
            return Poll::Ready(Err(out));
        }
        Poll::Pending
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
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
            pending.push((e.service.clone(), e.level, e.event_type()), Entry::new(&e).unwrap(), now);
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
        sink.write(&(0..5).map(|i| test_event(&format!("e{i}"))).collect::<Vec<_>>()).unwrap();
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
        let batch: Vec<Event> = (0..4).map(|i| test_event(&format!("e{i}"))).collect();
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
