//! The write path between the callers and the sinks.
//!
//! Callers enqueue [`Event`]s into a bounded queue without waiting (`when_full: drop_newest`,
//! the default) or waiting for room (`block`). A dispatcher on its own thread takes them in
//! batches, runs the [`Processor`]s once per event (so one redaction or sampling policy holds
//! for every sink alike), and hands each batch to every [`Sink`]. [`Pipeline::flush`] and
//! [`Pipeline::shutdown`] take a deadline and return [`PipelineError::Timeout`] when it passes;
//! shutdown delivers everything that was accepted before it.

pub mod runtime;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError, bounded, select, unbounded};

use crate::config::WhenFull;
use crate::metrics::{SelfMetrics, SinkMetrics};
use crate::sinks::retry::WarnEvery;
use crate::types::Event;

/// Most events the dispatcher hands to the sinks in one call.
pub const MAX_DISPATCH_BATCH: usize = 1024;

/// An event as the sinks receive it: shared (a sink keeps it without copying it) and with its
/// JSON line encoded once, for every sink that sends lines (the event log, Loki, ClickHouse's
/// `events.payload`).
#[derive(Debug, Clone)]
pub struct SharedEvent {
    event: Arc<Event>,
    /// The JSON line without its newline; `None` when the event cannot be serialized (only a
    /// hand-built event with a timestamp RFC 3339 cannot express, see [`Event::to_json`]), or
    /// when no sink of the pipeline sends lines ([`Sink::wants_lines`]).
    line: Option<Arc<str>>,
}

impl SharedEvent {
    /// Shares an event and encodes its line.
    ///
    /// The line is encoded into a buffer this thread keeps, then copied once into its shared
    /// allocation of the exact size: encoding straight into a new `String` grew it by doubling
    /// (seven reallocations for a 700-byte line) and `Arc::from` then copied it again, which
    /// made the event-log-only path 0.73× as fast as before the events were shared
    /// (BENCHMARKS.md, "Sinks").
    pub fn new(event: Event) -> SharedEvent {
        thread_local! {
            static SCRATCH: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(Vec::with_capacity(4096));
        }
        let line = SCRATCH.with_borrow_mut(|buf| {
            buf.clear();
            event.write_json_line(buf).ok()?;
            // serde_json writes valid UTF-8; the shared line is without its newline.
            std::str::from_utf8(&buf[..buf.len() - 1]).ok().map(Arc::<str>::from)
        });
        SharedEvent { event: Arc::new(event), line }
    }

    /// Shares an event read back from the event log with the line it was read from (a replay:
    /// the line is sent again byte for byte, not encoded anew).
    pub fn with_line(event: Event, line: Arc<str>) -> SharedEvent {
        SharedEvent { event: Arc::new(event), line: Some(line) }
    }

    /// Shares an event without encoding it (no sink sends lines).
    fn unencoded(event: Event) -> SharedEvent {
        SharedEvent { event: Arc::new(event), line: None }
    }

    /// The event, shared.
    pub fn event(&self) -> &Arc<Event> {
        &self.event
    }

    /// The event's JSON line, without the newline.
    pub fn line(&self) -> Option<&str> {
        self.line.as_deref()
    }

    /// The line, shared (a sink that keeps lines keeps this).
    pub fn shared_line(&self) -> Option<&Arc<str>> {
        self.line.as_ref()
    }

    /// The error the line could not be encoded with (for the message of a sink that counts it).
    pub fn encode_error(&self) -> Option<serde_json::Error> {
        self.line.is_none().then(|| self.event.to_json().err()).flatten()
    }
}

impl PartialEq for SharedEvent {
    fn eq(&self, other: &SharedEvent) -> bool {
        self.event == other.event
    }
}

impl From<Event> for SharedEvent {
    fn from(event: Event) -> SharedEvent {
        SharedEvent::new(event)
    }
}

impl std::ops::Deref for SharedEvent {
    type Target = Event;

    fn deref(&self) -> &Event {
        &self.event
    }
}

/// A destination of events: the local event log, Loki, ClickHouse, the live broadcast.
///
/// Sinks are called from the dispatcher thread only, one batch at a time. A sink that talks to
/// a server must not block the dispatcher for long: it keeps its own buffer and worker, retries
/// there, and reports what it could not deliver through its own counters.
pub trait Sink: Send + 'static {
    /// Short name, used as the `sink` label of the self-metrics.
    fn name(&self) -> &str;
    /// Takes a batch of events (already processed, each encoded once); a sink that keeps them
    /// clones the handles, not the events.
    fn write(&mut self, events: &[SharedEvent]) -> Result<(), SinkError>;
    /// Whether the sink uses the events' JSON lines ([`SharedEvent::line`]). The dispatcher
    /// encodes them only when some sink does; a sink that only looks at the events (the live
    /// broadcast) says false.
    fn wants_lines(&self) -> bool {
        true
    }
    /// Makes everything written so far durable or delivered.
    fn flush(&mut self) -> Result<(), SinkError> {
        Ok(())
    }
    /// A shutdown with this deadline has begun; the dispatcher is about to hand over what is
    /// still queued and then call [`Sink::shutdown`]. A sink with a worker passes the deadline
    /// on at once, so the worker stops delivering by then instead of holding the hand-over up.
    fn shutdown_started(&mut self, deadline: Instant) {
        let _ = deadline;
    }
    /// Delivers what is left before `deadline`, then releases resources.
    fn shutdown(&mut self, deadline: Instant) -> Result<(), SinkError> {
        let _ = deadline;
        self.flush()
    }
}

/// A step that sees every event once, before the fan-out, and may change or drop it.
///
/// PII redaction and conversation sampling plug in here.
pub trait Processor: Send + 'static {
    /// Returns the event to pass on, or `None` to drop it.
    fn process(&mut self, event: Event) -> Option<Event>;
}

/// A sink failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SinkError {
    /// A file operation failed.
    #[error("{sink}: {context} {}", path.display())]
    Io {
        /// The sink.
        sink: String,
        /// What it was doing.
        context: &'static str,
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Anything else.
    #[error("{sink}: {message}")]
    Other {
        /// The sink.
        sink: String,
        /// What happened.
        message: String,
    },
}

impl SinkError {
    /// What kind of failure, as the `kind` label of `serphona_obs_sink_write_errors_total`:
    /// `disk_full` (no space, file too large, quota), `io` (another file error), `other`.
    pub fn kind(&self) -> &'static str {
        match self {
            SinkError::Io { source, .. } => io_error_kind(source),
            SinkError::Other { .. } => "other",
        }
    }
}

/// `disk_full` for an error of a full disk (no space, file too large, quota exceeded), else `io`.
pub fn io_error_kind(error: &std::io::Error) -> &'static str {
    use std::io::ErrorKind::{FileTooLarge, QuotaExceeded, StorageFull};
    if matches!(error.kind(), StorageFull | FileTooLarge | QuotaExceeded) { "disk_full" } else { "io" }
}

/// Flush or shutdown did not complete.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PipelineError {
    /// The deadline passed first; events may still be in the queue.
    #[error("{op} did not finish within {timeout:?} ({pending} events still queued)")]
    Timeout {
        /// `flush` or `shutdown`.
        op: &'static str,
        /// The deadline given.
        timeout: Duration,
        /// Events left in the queue when it passed.
        pending: usize,
    },
    /// The pipeline was already shut down (or its dispatcher stopped).
    #[error("the pipeline is shut down")]
    Closed,
}

/// Why an event was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// The queue was full (`when_full: drop_newest`).
    QueueFull,
    /// The pipeline was shut down.
    Shutdown,
}

impl DropReason {
    /// The `reason` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::QueueFull => "queue_full",
            DropReason::Shutdown => "shutdown",
        }
    }
}

enum Control {
    Flush(Sender<()>),
    Shutdown(Instant, Sender<()>),
}

/// The bounded queue and its dispatcher thread.
pub struct Pipeline {
    tx: Sender<Event>,
    ctl: Sender<Control>,
    when_full: WhenFull,
    metrics: Arc<SelfMetrics>,
    closed: AtomicBool,
    warned_full: AtomicBool,
    thread: std::sync::Mutex<Option<JoinHandle<()>>>,
}

impl Pipeline {
    /// Starts the dispatcher thread.
    pub fn start(
        capacity: usize,
        when_full: WhenFull,
        processors: Vec<Box<dyn Processor>>,
        sinks: Vec<Box<dyn Sink>>,
        metrics: Arc<SelfMetrics>,
    ) -> Pipeline {
        let (tx, rx) = bounded(capacity.max(1));
        let (ctl, ctl_rx) = unbounded();
        metrics.queue_capacity.set(capacity as i64);
        let warn = sinks.iter().map(|_| WarnEvery::new(WARN_EVERY)).collect();
        let sink_metrics = sinks.iter().map(|s| metrics.sink(s.name())).collect();
        let encode = sinks.iter().any(|s| s.wants_lines());
        let dispatcher = Dispatcher { rx, ctl: ctl_rx, processors, sinks, metrics: metrics.clone(), sink_metrics, warn, encode };
        let thread = std::thread::Builder::new()
            .name("serphona-obs-dispatch".into())
            .spawn(move || dispatcher.run())
            .expect("spawn the dispatcher thread");
        Pipeline {
            tx,
            ctl,
            when_full,
            metrics,
            closed: AtomicBool::new(false),
            warned_full: AtomicBool::new(false),
            thread: std::sync::Mutex::new(Some(thread)),
        }
    }

    /// Enqueues an event. Never waits with `drop_newest`; waits for room with `block`.
    /// Returns the reason when the event was dropped (already counted).
    pub fn send(&self, event: Event) -> Result<(), DropReason> {
        if self.closed.load(Ordering::Acquire) {
            return Err(self.dropped(DropReason::Shutdown));
        }
        let result = match self.when_full {
            WhenFull::DropNewest => match self.tx.try_send(event) {
                Ok(()) => Ok(()),
                Err(TrySendError::Full(_)) => Err(DropReason::QueueFull),
                Err(TrySendError::Disconnected(_)) => Err(DropReason::Shutdown),
            },
            WhenFull::Block => self.tx.send(event).map_err(|_| DropReason::Shutdown),
        };
        match result {
            Ok(()) => {
                self.metrics.events_accepted.inc();
                Ok(())
            }
            Err(reason) => Err(self.dropped(reason)),
        }
    }

    fn dropped(&self, reason: DropReason) -> DropReason {
        self.metrics.events_dropped.with_label_values(&[reason.as_str()]).inc();
        if reason == DropReason::QueueFull && !self.warned_full.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                capacity = self.tx.capacity().unwrap_or(0),
                "serphona-obs event queue is full: dropping new events (counted in \
                 serphona_obs_events_dropped_total{{reason=\"queue_full\"}}); raise \
                 pipeline.queue_capacity or set pipeline.when_full: block"
            );
        }
        reason
    }

    /// Events waiting in the queue.
    pub fn queue_len(&self) -> usize {
        self.tx.len()
    }

    /// Delivers everything enqueued before this call to the sinks and flushes them.
    pub fn flush(&self, timeout: Duration) -> Result<(), PipelineError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(PipelineError::Closed);
        }
        let (ack, done) = bounded(1);
        self.ctl.send(Control::Flush(ack)).map_err(|_| PipelineError::Closed)?;
        done.recv_timeout(timeout).map_err(|e| match e {
            RecvTimeoutError::Timeout => PipelineError::Timeout { op: "flush", timeout, pending: self.queue_len() },
            RecvTimeoutError::Disconnected => PipelineError::Closed,
        })
    }

    /// Stops accepting events, delivers everything accepted, shuts the sinks down and stops
    /// the dispatcher. A second call returns [`PipelineError::Closed`].
    ///
    /// The sinks get `timeout` as their deadline; the call waits [`SHUTDOWN_GRACE`] longer, for
    /// a sink to put away what it could not deliver by then (the ClickHouse sink spools it).
    pub fn shutdown(&self, timeout: Duration) -> Result<(), PipelineError> {
        if self.closed.swap(true, Ordering::AcqRel) {
            return Err(PipelineError::Closed);
        }
        let (ack, done) = bounded(1);
        let deadline = Instant::now() + timeout;
        self.ctl.send(Control::Shutdown(deadline, ack)).map_err(|_| PipelineError::Closed)?;
        match done.recv_timeout(timeout + SHUTDOWN_GRACE) {
            Ok(()) => {
                if let Some(thread) = self.thread.lock().expect("pipeline thread lock").take() {
                    let _ = thread.join();
                }
                Ok(())
            }
            Err(RecvTimeoutError::Timeout) => {
                Err(PipelineError::Timeout { op: "shutdown", timeout, pending: self.queue_len() })
            }
            Err(RecvTimeoutError::Disconnected) => Err(PipelineError::Closed),
        }
    }
}

/// How much longer than the sinks' deadline [`Pipeline::shutdown`] waits for them: a sink
/// that retried until the deadline still has to spool or count what is left.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// How often a failing sink is warned about (it is counted every time).
const WARN_EVERY: Duration = Duration::from_secs(60);

struct Dispatcher {
    rx: Receiver<Event>,
    ctl: Receiver<Control>,
    processors: Vec<Box<dyn Processor>>,
    sinks: Vec<Box<dyn Sink>>,
    metrics: Arc<SelfMetrics>,
    /// Each sink's series.
    sink_metrics: Vec<SinkMetrics>,
    /// Each sink's failure warning, at most once a minute.
    warn: Vec<WarnEvery>,
    /// Some sink uses the JSON lines: encode each event once.
    encode: bool,
}

impl Dispatcher {
    fn run(mut self) {
        let mut batch = Vec::with_capacity(MAX_DISPATCH_BATCH);
        loop {
            select! {
                recv(self.rx) -> event => match event {
                    Ok(event) => {
                        batch.push(event);
                        self.fill_and_dispatch(&mut batch);
                    }
                    // Every sender is gone: the pipeline was dropped without shutdown.
                    Err(_) => {
                        self.shutdown_sinks(Instant::now() + Duration::from_secs(5));
                        return;
                    }
                },
                recv(self.ctl) -> msg => match msg {
                    Ok(Control::Flush(ack)) => {
                        // What was queued when the flush arrived; later events may keep coming.
                        let queued = self.rx.len();
                        self.drain(&mut batch, queued);
                        for i in 0..self.sinks.len() {
                            let sink = &mut self.sinks[i];
                            let result = guard(self.sink_metrics[i].name(), "flush", || sink.flush());
                            if let Err(e) = result {
                                self.failed(i, &e, 0);
                            }
                        }
                        let _ = ack.send(());
                    }
                    Ok(Control::Shutdown(deadline, ack)) => {
                        for sink in &mut self.sinks {
                            sink.shutdown_started(deadline);
                        }
                        let queued = self.rx.len();
                        self.drain(&mut batch, queued);
                        // Senders that passed the closed check just before shutdown.
                        let late = self.rx.len();
                        self.drain(&mut batch, late);
                        self.shutdown_sinks(deadline);
                        // Anything that slipped in after that is counted, not silently lost.
                        let lost = self.rx.try_iter().count() as u64;
                        if lost > 0 {
                            self.metrics.events_dropped.with_label_values(&["shutdown"]).inc_by(lost);
                        }
                        let _ = ack.send(());
                        return;
                    }
                    Err(_) => return,
                },
            }
        }
    }

    /// Takes what else is waiting (up to a batch) and dispatches it.
    fn fill_and_dispatch(&mut self, batch: &mut Vec<Event>) {
        let room = MAX_DISPATCH_BATCH.saturating_sub(batch.len());
        batch.extend(self.rx.try_iter().take(room));
        self.dispatch(batch);
    }

    /// Dispatches `count` events from the queue (those there when a flush arrived), so a
    /// steady stream of new events cannot keep a flush from finishing.
    fn drain(&mut self, batch: &mut Vec<Event>, mut count: usize) {
        while count > 0 {
            let take = count.min(MAX_DISPATCH_BATCH);
            batch.extend(self.rx.try_iter().take(take));
            if batch.is_empty() {
                return;
            }
            count = count.saturating_sub(batch.len());
            self.dispatch(batch);
        }
    }

    /// Counts a sink failure; logs it the first time and then at most once a minute.
    fn failed(&mut self, sink: usize, error: &SinkError, events: usize) {
        let m = &self.sink_metrics[sink];
        m.batches_failed.inc();
        m.events_failed.inc_by(events as u64);
        m.write_error(error.kind()).inc();
        let name = m.name();
        if self.warn[sink].ready() {
            tracing::warn!(
                sink = %name,
                error = %crate::ErrorChain(error),
                events,
                "serphona-obs sink failed (counted in serphona_obs_batches_failed_total; logged at most once a minute)"
            );
        }
    }

    fn dispatch(&mut self, batch: &mut Vec<Event>) {
        let processors = &mut self.processors;
        // Processors first, once per event; then each event is shared and encoded once.
        let batch: Vec<SharedEvent> = batch
            .drain(..)
            .filter_map(|event| {
                if processors.is_empty() {
                    return Some(event);
                }
                // A panicking processor loses the event it was given, nothing else.
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    processors.iter_mut().try_fold(event, |event, p| p.process(event))
                }))
                .unwrap_or_else(|_| {
                    tracing::error!("a serphona-obs processor panicked; its event is dropped");
                    None
                })
            })
            .map(if self.encode { SharedEvent::new } else { SharedEvent::unencoded })
            .collect();
        if !batch.is_empty() {
            for i in 0..self.sinks.len() {
                let sink = &mut self.sinks[i];
                let m = &self.sink_metrics[i];
                match guard(m.name(), "write", || sink.write(&batch)) {
                    Ok(()) => {
                        m.batches_exported.inc();
                        m.events_exported.inc_by(batch.len() as u64);
                    }
                    Err(e) => self.failed(i, &e, batch.len()),
                }
            }
        }
        self.metrics.queue_depth.set(self.rx.len() as i64);
    }

    fn shutdown_sinks(&mut self, deadline: Instant) {
        for i in 0..self.sinks.len() {
            let sink = &mut self.sinks[i];
            let result = guard(self.sink_metrics[i].name(), "shutdown", || sink.shutdown(deadline));
            if let Err(e) = result {
                self.failed(i, &e, 0);
            }
        }
        self.metrics.queue_depth.set(self.rx.len() as i64);
    }
}

/// Runs a sink call; a panic becomes an error, so one bad sink cannot stop the dispatcher.
fn guard(sink: &str, call: &str, f: impl FnOnce() -> Result<(), SinkError>) -> Result<(), SinkError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|panic| {
        let message = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        Err(SinkError::Other { sink: sink.to_string(), message: format!("{call} panicked: {message}") })
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::metrics::Metrics;

    /// Records whether each event came with its line.
    struct Lines {
        wants: bool,
        seen: Arc<Mutex<Vec<bool>>>,
    }

    impl Sink for Lines {
        fn name(&self) -> &str {
            "lines"
        }
        fn wants_lines(&self) -> bool {
            self.wants
        }
        fn write(&mut self, events: &[SharedEvent]) -> Result<(), SinkError> {
            self.seen.lock().unwrap().extend(events.iter().map(|e| e.line().is_some()));
            Ok(())
        }
    }

    fn lines_seen(wanting: &[bool]) -> Vec<Vec<bool>> {
        let metrics = Metrics::new(100).unwrap().pipeline.clone();
        let seen: Vec<Arc<Mutex<Vec<bool>>>> = wanting.iter().map(|_| Arc::default()).collect();
        let sinks: Vec<Box<dyn Sink>> =
            wanting.iter().zip(&seen).map(|(w, s)| Box::new(Lines { wants: *w, seen: s.clone() }) as Box<dyn Sink>).collect();
        let pipeline = Pipeline::start(16, WhenFull::Block, Vec::new(), sinks, metrics);
        for i in 0..3 {
            pipeline.send(crate::types::test_event(&format!("e{i}"))).unwrap();
        }
        pipeline.shutdown(Duration::from_secs(5)).unwrap();
        seen.iter().map(|s| s.lock().unwrap().clone()).collect()
    }

    #[test]
    fn events_are_encoded_once_for_the_sinks_that_send_lines_and_not_at_all_without_one() {
        // One sink wants lines: every sink gets the same encoded events.
        assert_eq!(lines_seen(&[false, true]), vec![vec![true; 3], vec![true; 3]]);
        // None does (only a live view, say): nothing is serialized.
        assert_eq!(lines_seen(&[false]), vec![vec![false; 3]]);
    }
}
