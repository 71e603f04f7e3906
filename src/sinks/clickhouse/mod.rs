//! The ClickHouse sink: batches events into rows of `events`, `conversations`,
//! `interactions`, `decisions` and `spans`, inserts them, retries, spools.
//!
//! The dispatcher hands batches to a worker thread (the sink never blocks on the network there,
//! only when the worker is 256 batches behind). The worker:
//! - seals a batch at `batch_size` rows, `batch_bytes` bytes or `flush_interval` after its
//!   first event; the batch id is the insert deduplication token (see below);
//! - inserts each table's rows; a transient failure (network, timeout, overload, a table not
//!   created yet) is retried with exponential backoff and jitter, up to [`ATTEMPTS`] times,
//!   and then the batch goes to the disk spool and the sink is *down*;
//! - while down, new batches go straight to the spool, and the oldest spooled batch is retried
//!   as a probe (backoff up to [`MAX_BACKOFF`]); when one goes through, the spool is replayed
//!   oldest first. A new start replays what a previous process left in the spool;
//! - a permanent failure (bad data, type mismatch: [`ClickHouseError::is_permanent`]) is not
//!   retried: the rows are split in halves until the rejected rows are found; those are counted
//!   in `serphona_obs_rows_rejected_total{table,code}`, logged with ClickHouse's code, and kept
//!   in the spool's `rejected.jsonl`; the other rows are delivered.
//!
//! The sink records no telemetry about its own export calls beyond its self-metrics.
//!
//! Delivery is at-least-once with deduplication (issue 14; docs/sinks.md, "Delivery"):
//! - the first attempt of a batch carries `insert_deduplication_token = <batch id>:<table>`
//!   (see [`crate::analytics`]); the id is new, so that attempt can never be taken for a
//!   duplicate;
//! - any later attempt (a retry after an error, whose outcome is unknown: the server may have
//!   committed the rows, or recorded the token and died before committing them), a replay of
//!   the spool, and a replay of the event log after a crash do **not** trust "already
//!   inserted": they first ask the server which of the batch's rows it has (by event id, per
//!   table, [`Exporter::present`]) and insert only the missing rows, under a token of their
//!   own. A token recorded without its rows (a single server killed inside its deduplication
//!   window) therefore cannot eat a batch;
//! - the event log is the write-ahead log ([`crate::sinks::positions`]): the sink commits the
//!   contiguous watermark of what ClickHouse acknowledged (or the spool holds) to
//!   `positions/clickhouse.json`, and a start replays the log after it, so a kill -9 of the
//!   emitting process loses none of its in-memory backlog;
//! - a shutdown stops delivering at its deadline: what is held then stays in the event log
//!   past the committed position (or, for events not in the log, goes to the spool) and is
//!   counted in `serphona_obs_events_pending{sink="clickhouse"}` for the shutdown message.

pub mod batch;
#[cfg(test)]
mod model;
pub mod spool;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clickhouse::Client;

use self::batch::{Batcher, SealedBatch};
use self::spool::{Pushed, Spool, spool_dir};
use crate::analytics::rows::{self, Table};
use crate::analytics::{ClickHouseError, client, insert_events, insert_rows};
use crate::config::ClickHouseConfig;
use crate::metrics::{SelfMetrics, SinkMetrics};
use crate::pipeline::{Sink, SinkError};
use crate::sinks::retry::{Backoff, RetryLogic, WarnEvery};
use crate::pipeline::runtime::io_runtime;
use crate::sinks::positions::{self, Handed, LogRange, Tickets, Watermark, WriteCursor};
use crate::sinks::worker::{Delivery, Queue, Worker};
use crate::pipeline::SharedEvent;
use crate::types::Event;

/// The sink's name (the `sink` label of the self-metrics).
pub const SINK_NAME: &str = "clickhouse";
/// Insert attempts of a batch before it is spooled.
pub const ATTEMPTS: usize = 3;
/// The first retry delay.
pub const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// The longest wait between probes of a server that is down.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Batches the worker may be behind before the dispatcher waits.
const CHANNEL_BATCHES: usize = 256;
/// How often the same failure is logged.
const WARN_EVERY: Duration = Duration::from_secs(60);
/// Fewest events per chunk of an event-log replay (each chunk costs a presence query per table).
const REPLAY_CHUNK: usize = 5000;
/// Most event ids one presence query asks about.
const PRESENCE_CHUNK: usize = 1000;

/// The ClickHouse sink (see the module docs).
pub struct ClickHouseSink {
    worker: Worker<Handed>,
    /// The event log's cursor, when this process writes the event log of the same data dir.
    cursor: Option<Arc<WriteCursor>>,
}

impl ClickHouseSink {
    /// Opens the spool under `data_dir` and starts the worker, which first replays anything a
    /// previous process spooled, and the event log after the committed position (what a
    /// previous process had accepted and not delivered when it died). Does not contact the
    /// server (a server that is down is not an error: rows wait in the spool).
    ///
    /// The event log sink of the same data dir must be opened first (the builder does): the
    /// end of the log to replay is taken now, before this process writes to it.
    pub fn start(config: &ClickHouseConfig, data_dir: &std::path::Path, metrics: Arc<SelfMetrics>) -> Result<ClickHouseSink, SinkError> {
        let delivery = Inserts::open(Exporter::new(config), config, data_dir, metrics)?;
        let cursor = positions::cursor(data_dir);
        // Joined on drop: the worker keeps what it holds first.
        let worker = Worker::start(SINK_NAME, delivery, Queue::Bounded(CHANNEL_BATCHES), true)?;
        Ok(ClickHouseSink { worker, cursor })
    }
}

impl<T: Target> Inserts<T> {
    /// The delivery to `target`: opens the spool, and the committed position and what to
    /// replay when this process writes the event log of `data_dir`.
    fn open(target: T, config: &ClickHouseConfig, data_dir: &std::path::Path, metrics: Arc<SelfMetrics>) -> Result<Inserts<T>, SinkError> {
        let spool = Spool::open(spool_dir(data_dir), config.spool_max_bytes as u64).map_err(|e| SinkError::Other {
            sink: SINK_NAME.into(),
            message: e.to_string(),
        })?;
        let (positions, watermark, replay) = match positions::cursor(data_dir) {
            Some(_) => open_positions(data_dir),
            None => (None, Watermark::new(None), None),
        };
        let mut delivery = Inserts {
            exporter: target,
            batcher: Batcher::new(config.batch_size, config.batch_bytes, config.flush_interval),
            spool,
            metrics: metrics.sink(SINK_NAME),
            down: None,
            backoff: Backoff::new(MIN_BACKOFF, MAX_BACKOFF),
            warn: WarnEvery::new(WARN_EVERY),
            spool_warn: WarnEvery::new(WARN_EVERY),
            watermark,
            positions,
            replay,
            held: Vec::new(),
            deadline: None,
            chunk: config.batch_size.max(REPLAY_CHUNK),
        };
        delivery.refresh_spool_gauge();
        // Replay what a previous process left, as soon as we start.
        if !delivery.spool_entries().is_empty() {
            delivery.down = Some(Instant::now());
        }
        Ok(delivery)
    }
}

/// The committed position, and what to replay: the log after it, up to its end now (held by
/// one ticket until the whole replay is delivered).
fn open_positions(data_dir: &std::path::Path) -> (Option<positions::Committer>, Watermark, Option<(LogRange, u64)>) {
    let resume = positions::resume(data_dir, SINK_NAME, "ClickHouse");
    let mut watermark = Watermark::new(resume.start);
    let replay = resume.replay.map(|range| {
        let ticket = watermark.hold(range.end());
        (range, ticket)
    });
    (Some(resume.file), watermark, replay)
}

impl Sink for ClickHouseSink {
    fn name(&self) -> &str {
        SINK_NAME
    }

    fn write(&mut self, events: &[SharedEvent]) -> Result<(), SinkError> {
        self.worker.send_events(Handed::new(self.cursor.as_deref(), events))
    }

    /// Seals the pending batch and tries it once; what does not go through is spooled, so
    /// after a flush every event is in ClickHouse or on disk.
    fn flush(&mut self) -> Result<(), SinkError> {
        self.worker.flush(None)
    }

    fn shutdown_started(&mut self, deadline: Instant) {
        let _ = self.worker.announce_deadline(deadline);
    }

    /// Delivers the pending batches and replays the spool until `deadline`; the rest stays in
    /// durable state (the event log past the committed position, or the spool) for the next
    /// start, counted in `serphona_obs_events_pending`.
    fn shutdown(&mut self, deadline: Instant) -> Result<(), SinkError> {
        // The worker keeps what it could not deliver by the deadline; give it a moment more.
        self.worker.shutdown(deadline, deadline + Duration::from_secs(1))
    }
}

/// Which ClickHouse errors are worth retrying: all but those of bad data
/// ([`ClickHouseError::is_permanent`]).
pub struct ClickHouseRetry;

impl RetryLogic for ClickHouseRetry {
    type Error = ClickHouseError;

    fn is_retriable(&self, error: &ClickHouseError) -> bool {
        !error.is_permanent()
    }
}

/// Where the delivery's requests go: the server ([`Exporter`]), or a fake in the model-based
/// test of the delivery's state machine (the one place a fake is used: to inject faults).
trait Target: Send + 'static {
    /// Inserts the rows `table` has for these events with this token, cut off at `deadline`.
    fn insert(&self, table: Table, events: &[&SharedEvent], token: &str, deadline: Option<Instant>) -> Result<(), ClickHouseError>;
    /// Which of these events' rows `table` has, cut off at `deadline`.
    fn present(&self, table: Table, events: &[&SharedEvent], deadline: Option<Instant>) -> Result<HashSet<uuid::Uuid>, ClickHouseError>;
    /// Waits between attempts.
    fn pause(&self, delay: Duration) {
        std::thread::sleep(delay);
    }
}

/// Runs a request on the I/O runtime, cut off at `deadline` when there is one.
fn block_on<T>(deadline: Option<Instant>, work: impl Future<Output = Result<T, ClickHouseError>>) -> Result<T, ClickHouseError> {
    match deadline {
        Some(d) => io_runtime().block_on(async { tokio::time::timeout_at(d.into(), work).await.unwrap_or(Err(ClickHouseError::Timeout)) }),
        None => io_runtime().block_on(work),
    }
}

impl Target for Exporter {
    fn insert(&self, table: Table, events: &[&SharedEvent], token: &str, deadline: Option<Instant>) -> Result<(), ClickHouseError> {
        block_on(deadline, self.insert_table(table, events, token))
    }

    fn present(&self, table: Table, events: &[&SharedEvent], deadline: Option<Instant>) -> Result<HashSet<uuid::Uuid>, ClickHouseError> {
        block_on(deadline, Exporter::present(self, table, events))
    }
}

/// The sink's delivery, on its worker thread.
struct Inserts<T: Target = Exporter> {
    exporter: T,
    batcher: Batcher,
    spool: Spool,
    metrics: SinkMetrics,
    /// When the server is down: when to probe it next.
    down: Option<Instant>,
    backoff: Backoff,
    warn: WarnEvery,
    /// Spool write failures, logged at most once a minute.
    spool_warn: WarnEvery,
    /// What was handed over and not yet acknowledged, as positions in the event log.
    watermark: Watermark,
    /// Where the watermark is committed (`None` without an event log in this process).
    positions: Option<positions::Committer>,
    /// The event log after the committed position at start, still to replay, and its ticket.
    replay: Option<(LogRange, u64)>,
    /// Batches sealed after the shutdown deadline: not sent, kept.
    held: Vec<(SealedBatch, Tickets)>,
    /// The shutdown deadline, once announced.
    deadline: Option<Instant>,
    /// Events per replayed chunk (`batch_size`, at least [`REPLAY_CHUNK`]).
    chunk: usize,
}

/// How hard to try one batch.
#[derive(Clone, Copy)]
enum Effort {
    /// Up to [`ATTEMPTS`] attempts with backoff.
    Retry,
    /// One attempt (flush: it must not wait on a slow server for long).
    Once,
    /// Attempts until the deadline.
    Until(Instant),
}

impl<T: Target> Delivery for Inserts<T> {
    type Batch = Handed;

    fn accept(&mut self, handed: Handed) {
        let now = Instant::now();
        self.watermark.accept(handed.events.len(), handed.end);
        for event in handed.events {
            if let Some(batch) = self.batcher.push(event, now) {
                let tickets = self.watermark.group(batch.events.len());
                self.send(batch, tickets, Effort::Retry);
            }
        }
    }

    fn tick(&mut self, now: Instant) {
        if self.batcher.deadline().is_some_and(|d| d <= now) {
            self.seal_and_send(Effort::Retry);
        }
        if self.past_deadline() {
            return;
        }
        if let Some(deadline) = self.deadline {
            // Shutting down: one held batch per tick, so hand-overs are taken in between.
            if !self.held.is_empty() {
                let (batch, tickets) = self.held.remove(0);
                self.deliver_now(batch, tickets, Effort::Until(deadline));
            }
            return;
        }
        if self.down.is_some_and(|d| d <= now) {
            self.replay(None);
        }
        if self.down.is_none() {
            self.replay_log_chunk(Effort::Retry);
        }
        self.commit(false);
    }

    fn wake_at(&self) -> Option<Instant> {
        let replaying = (self.replay.is_some() && self.down.is_none() && self.deadline.is_none()).then(Instant::now);
        let sending = (!self.held.is_empty() && self.deadline.is_some() && !self.past_deadline()).then(Instant::now);
        [self.batcher.deadline(), self.down, replaying, sending].into_iter().flatten().min()
    }

    fn flush(&mut self) {
        self.seal_and_send(Effort::Once);
        self.commit(true);
    }

    fn deadline(&mut self, deadline: Instant) {
        self.deadline = Some(self.deadline.map_or(deadline, |d| d.min(deadline)));
    }

    fn shutdown(&mut self, deadline: Instant) {
        self.deadline(deadline);
        self.seal_and_send(Effort::Until(deadline));
        // Batches held back are sent while there is time, oldest first.
        let held = std::mem::take(&mut self.held);
        for (batch, tickets) in held {
            self.deliver_now(batch, tickets, Effort::Until(deadline));
        }
        while self.replay.is_some() && !self.past_deadline() && self.down.is_none() {
            self.replay_log_chunk(Effort::Until(deadline));
        }
        if !self.past_deadline() {
            self.replay(Some(deadline));
        }
        self.keep_the_rest();
    }

    fn abandon(&mut self) {
        // Dropped without shutdown: keep what we hold, without waiting.
        self.deadline = Some(Instant::now());
        self.seal_and_send(Effort::Once);
        self.keep_the_rest();
    }
}

impl<T: Target> Inserts<T> {
    fn past_deadline(&self) -> bool {
        self.deadline.is_some_and(|d| Instant::now() >= d)
    }

    fn seal_and_send(&mut self, effort: Effort) {
        if let Some(batch) = self.batcher.seal() {
            let tickets = self.watermark.group(batch.events.len());
            self.send(batch, tickets, effort);
        }
    }

    /// Delivers a sealed batch, or keeps it (spool) when the server is down or does not take
    /// it. Once a shutdown has begun, batches are held and sent from `tick` (by the deadline).
    fn send(&mut self, batch: SealedBatch, tickets: Tickets, effort: Effort) {
        if self.deadline.is_some() {
            self.held.push((batch, tickets));
            return;
        }
        self.deliver_now(batch, tickets, effort);
    }

    fn deliver_now(&mut self, batch: SealedBatch, tickets: Tickets, effort: Effort) {
        if self.past_deadline() {
            self.held.push((batch, tickets));
            return;
        }
        if self.down.is_some() {
            self.keep(&batch, &tickets);
            return;
        }
        match self.deliver(&batch, effort, false) {
            Ok(()) => self.acknowledged(&tickets),
            Err(e) => {
                self.warn(&e, "ClickHouse is not taking rows; batches go to the disk spool and are replayed when it is back");
                self.keep(&batch, &tickets);
                self.mark_down();
            }
        }
    }

    /// ClickHouse has these events (or the spool keeps them): the watermark may move.
    fn acknowledged(&mut self, tickets: &[(u64, usize)]) {
        if self.watermark.done(tickets).is_some() {
            self.commit(false);
        }
    }

    /// Writes the committed position (at most every [`positions::COMMIT_EVERY`] unless `now`).
    fn commit(&mut self, now: bool) {
        if let Some(positions) = &mut self.positions {
            positions.commit(&self.watermark, now);
        }
    }

    /// Spools a batch the server did not take. Its events count as kept only when the spool
    /// wrote it: otherwise they stay past the committed position, and the next start replays
    /// them from the event log.
    fn keep(&mut self, batch: &SealedBatch, tickets: &[(u64, usize)]) {
        if self.spool_batch(batch) {
            self.acknowledged(tickets);
        }
    }

    /// The shutdown deadline passed (or the sink was dropped): batches whose events are all
    /// in the event log stay there, past the committed position; the others go to the spool.
    /// Counts what is kept for the next start.
    fn keep_the_rest(&mut self) {
        let held = std::mem::take(&mut self.held);
        let mut in_log = 0u64;
        for (batch, tickets) in held {
            if self.positions.is_some() && self.watermark.in_log(&tickets) {
                in_log += batch.events.len() as u64;
            } else {
                self.keep(&batch, &tickets);
            }
        }
        // Committed before the replay's rest is counted: counting reads the log.
        self.commit(true);
        let unreplayed = self.replay.as_ref().map_or(0, |(range, _)| range.remaining_lines());
        let spooled = self.spool.events().unwrap_or(0);
        let pending = in_log + unreplayed + spooled;
        self.metrics.pending().set(pending as i64);
        if in_log + unreplayed > 0 {
            tracing::info!(
                in_event_log = in_log + unreplayed,
                in_spool = spooled,
                "serphona-obs: ClickHouse did not take every event by the deadline; they are kept for the next start"
            );
        }
    }

    /// Replays one chunk of the event log after the committed position (a previous run's
    /// undelivered events). The chunk is verified (rows the server has are not sent again).
    fn replay_log_chunk(&mut self, effort: Effort) {
        let Some((range, ticket)) = &mut self.replay else { return };
        let ticket = *ticket;
        let events = match range.next_chunk(self.chunk) {
            Ok(events) => events,
            Err(e) => {
                tracing::error!(error = %e, "serphona-obs: cannot read the event log to replay it to ClickHouse; the replay stops here");
                Vec::new()
            }
        };
        let finished = events.is_empty();
        if !events.is_empty() {
            let batch = SealedBatch { id: uuid::Uuid::now_v7(), events: events.into_iter().map(SharedEvent::new).collect() };
            match self.deliver(&batch, effort, true) {
                Ok(()) => {}
                Err(e) => {
                    self.warn(&e, "ClickHouse is not taking rows; the replayed events go to the disk spool");
                    if !self.spool_batch(&batch) {
                        // Not kept: leave the replay where it is, the next start does it again.
                        self.mark_down();
                        self.replay = None;
                        return;
                    }
                    self.mark_down();
                }
            }
        }
        if finished {
            self.replay = None;
            self.acknowledged(&[(ticket, 1)]);
        }
    }

    fn mark_down(&mut self) {
        self.down = Some(Instant::now() + self.backoff.next_delay());
    }

    fn spool_entries(&self) -> Vec<spool::SpoolEntry> {
        self.spool.entries().unwrap_or_default()
    }

    /// Replays the spool oldest first while the server takes it (until `deadline`, if given).
    /// Spooled batches are verified: they were spooled after attempts of unknown outcome.
    fn replay(&mut self, deadline: Option<Instant>) {
        for entry in self.spool_entries() {
            if deadline.is_some_and(|d| Instant::now() >= d) {
                break;
            }
            let read = match self.spool.read(&entry.path) {
                Ok(read) => read,
                Err(e) => {
                    // Another process replayed it meanwhile, or it cannot be read at all.
                    if entry.path.exists() {
                        tracing::error!(error = %crate::ErrorChain(&e), "serphona-obs: an unreadable spool file was moved aside as *.bad");
                        let _ = self.spool.quarantine(&entry.path);
                    }
                    continue;
                }
            };
            let batch = read.batch;
            if read.damaged_lines > 0 {
                // The damaged file is kept aside as it is; its good events are spooled again
                // under the same batch id, so the loss is counted once.
                self.metrics.spool_dropped().inc_by(read.lost_events);
                let kept = self.spool.quarantine(&entry.path);
                tracing::error!(
                    file = %entry.path.display(),
                    damaged_lines = read.damaged_lines,
                    lost_events = read.lost_events,
                    events = batch.events.len(),
                    "serphona-obs: a spool file has damaged lines; their events are lost (counted in \
                     serphona_obs_spool_dropped_events_total), the others are delivered; the file is kept as *.bad"
                );
                if kept.is_err() || batch.events.is_empty() {
                    continue;
                }
                if let Err(e) = self.spool.push(&batch) {
                    self.metrics.spool_dropped().inc_by(batch.events.len() as u64);
                    tracing::error!(error = %crate::ErrorChain(&e), "serphona-obs: cannot spool a ClickHouse batch; it is lost");
                    continue;
                }
            }
            let effort = match deadline {
                Some(d) => Effort::Until(d),
                None => Effort::Once,
            };
            match self.deliver(&batch, effort, true) {
                Ok(()) => {
                    let _ = self.spool.remove(&entry.path);
                }
                Err(e) => {
                    self.warn(&e, "ClickHouse is still not taking rows; the spool is kept");
                    self.mark_down();
                    self.refresh_spool_gauge();
                    return;
                }
            }
        }
        self.refresh_spool_gauge();
        // Everything replayed: the server is up.
        if self.spool_entries().is_empty() {
            if self.down.take().is_some() {
                tracing::info!("serphona-obs: ClickHouse takes rows again; the spool is replayed");
            }
            self.backoff.reset();
        }
    }

    /// Spools a batch; true when it is on disk.
    fn spool_batch(&mut self, batch: &SealedBatch) -> bool {
        match self.spool.push(batch) {
            Ok(Pushed { evicted, bytes }) => {
                self.metrics.spool_bytes().set(bytes as i64);
                self.metrics.spooled().inc_by(batch.events.len() as u64);
                if evicted.events > 0 {
                    self.metrics.spool_dropped().inc_by(evicted.events as u64);
                    tracing::error!(
                        batches = evicted.batches,
                        events = evicted.events,
                        "serphona-obs: the ClickHouse spool is full (clickhouse.spool_max_bytes); the oldest batches were dropped"
                    );
                }
                true
            }
            Err(e) => {
                self.metrics.spool_dropped().inc_by(batch.events.len() as u64);
                self.metrics.write_error(crate::pipeline::io_error_kind(&e.source)).inc();
                // One line, not one per batch: a full disk fails every batch alike.
                if self.spool_warn.ready() {
                    tracing::error!(
                        error = %crate::ErrorChain(&e),
                        events = batch.events.len(),
                        "serphona-obs: cannot spool a ClickHouse batch; it is lost unless the event log has it (counted in \
                         serphona_obs_spool_dropped_events_total; logged at most once a minute)"
                    );
                }
                self.refresh_spool_gauge();
                false
            }
        }
    }

    fn refresh_spool_gauge(&self) {
        self.metrics.spool_bytes().set(self.spool.bytes() as i64);
    }

    fn warn(&mut self, error: &ClickHouseError, what: &str) {
        if self.warn.ready() {
            tracing::warn!(error = %error, "serphona-obs: {what} (logged at most once a minute)");
        }
    }

    /// Inserts every table's rows of a batch, retrying transient failures per `effort`. The
    /// first attempt trusts the batch's token when `verify` is false (a new batch); every
    /// later attempt, and every attempt when `verify` is true, inserts only the rows the server
    /// does not have ([`Inserts::try_verified`]).
    fn deliver(&mut self, batch: &SealedBatch, effort: Effort, verify: bool) -> Result<(), ClickHouseError> {
        let mut delays = Backoff::new(MIN_BACKOFF, MAX_BACKOFF);
        let mut attempt = 1;
        let mut verify = verify;
        loop {
            if let Effort::Until(d) = effort {
                if Instant::now() >= d {
                    return Err(ClickHouseError::Timeout);
                }
            }
            let result = if verify { self.try_verified(batch) } else { self.try_batch(batch) };
            match result {
                Ok(()) => {
                    self.metrics.delivered().inc_by(batch.events.len() as u64);
                    return Ok(());
                }
                Err(e) => {
                    // The outcome of a failed attempt is unknown: the next one verifies.
                    verify = true;
                    self.metrics.retries().inc();
                    let delay = delays.next_delay();
                    let more = match effort {
                        Effort::Retry => attempt < ATTEMPTS && !self.past_deadline(),
                        Effort::Once => false,
                        Effort::Until(d) => Instant::now() + delay < d,
                    };
                    if !more {
                        return Err(e);
                    }
                    self.exporter.pause(delay);
                    attempt += 1;
                }
            }
        }
    }

    fn try_batch(&mut self, batch: &SealedBatch) -> Result<(), ClickHouseError> {
        // Every table is offered the whole batch; each takes the events it has rows for.
        let events: Vec<&SharedEvent> = batch.events.iter().collect();
        for table in Table::ALL {
            self.insert_slice(batch, table, &events, None)?;
        }
        Ok(())
    }

    /// Asks the server which of the batch's rows each table has (by event id) and inserts the
    /// others, under a new token: "already inserted" alone is never trusted.
    fn try_verified(&mut self, batch: &SealedBatch) -> Result<(), ClickHouseError> {
        for table in Table::ALL {
            let expected: Vec<&SharedEvent> = batch.events.iter().filter(|e| has_row(table, e)).collect();
            if expected.is_empty() {
                continue;
            }
            let present = self.present(table, &expected)?;
            let missing: Vec<&SharedEvent> = expected.into_iter().filter(|e| !present.contains(&e.event_id)).collect();
            if missing.is_empty() {
                continue;
            }
            // A token of this attempt: no earlier record of it can exist.
            let fresh = SealedBatch { id: uuid::Uuid::now_v7(), events: Vec::new() };
            self.insert_slice(&fresh, table, &missing, None)?;
        }
        Ok(())
    }

    fn present(&self, table: Table, events: &[&SharedEvent]) -> Result<HashSet<uuid::Uuid>, ClickHouseError> {
        let mut out = HashSet::new();
        for chunk in events.chunks(PRESENCE_CHUNK) {
            out.extend(self.exporter.present(table, chunk, self.deadline)?);
        }
        Ok(out)
    }

    /// Inserts rows; on a permanent error, splits them until the rejected rows are found.
    fn insert_slice(
        &mut self,
        batch: &SealedBatch,
        table: Table,
        events: &[&SharedEvent],
        range: Option<(usize, usize)>,
    ) -> Result<(), ClickHouseError> {
        let token = batch.token(table.name(), range);
        match self.insert(table, events, &token) {
            Ok(()) => Ok(()),
            Err(e) if !ClickHouseRetry.is_retriable(&e) => {
                if events.len() == 1 {
                    self.rejected(table.name(), events[0], &e);
                    return Ok(());
                }
                let (lo, hi) = range.unwrap_or((0, events.len()));
                let mid = events.len() / 2;
                self.insert_slice(batch, table, &events[..mid], Some((lo, lo + mid)))?;
                self.insert_slice(batch, table, &events[mid..], Some((lo + mid, hi)))
            }
            Err(e) => Err(e),
        }
    }

    fn rejected(&mut self, table: &str, event: &Event, error: &ClickHouseError) {
        let code = error.code().map_or_else(|| "client".to_string(), |c| c.to_string());
        self.metrics.rejected(table, &code).inc();
        tracing::error!(
            table,
            code = %code,
            event_id = %event.event_id,
            error = %error,
            "serphona-obs: ClickHouse rejected a row for good; it is not retried (kept in the spool's rejected.jsonl)"
        );
        if let Err(e) = self.spool.reject(event) {
            tracing::error!(error = %crate::ErrorChain(&e), "serphona-obs: cannot keep a rejected row");
        }
    }

    fn insert(&self, table: Table, events: &[&SharedEvent], token: &str) -> Result<(), ClickHouseError> {
        self.exporter.insert(table, events, token, self.deadline)
    }
}

/// Whether `table` has a row for this event.
fn has_row(table: Table, e: &SharedEvent) -> bool {
    match table {
        Table::Events => rows::event_row(e).is_some(),
        Table::Conversations => rows::conversation_row(e).is_some(),
        Table::Interactions => rows::interaction_row(e).is_some(),
        Table::Decisions => rows::decision_row(e).is_some(),
        Table::Spans => rows::span_row(e).is_some(),
    }
}

/// Direct, unbatched writes: `export_conversation` and `export_metrics`, and what the
/// sink's worker inserts with.
#[derive(Clone)]
pub struct Exporter {
    client: Client,
    timeout: Duration,
}

impl Exporter {
    /// An exporter to the configured server.
    pub fn new(config: &ClickHouseConfig) -> Exporter {
        Exporter { client: client(config), timeout: config.request_timeout }
    }

    /// Writes every row of a conversation's events (all tables) and returns once ClickHouse has
    /// them. Idempotent: the deduplication token is derived from the event ids, so exporting
    /// the same events again adds nothing.
    pub async fn export_conversation(&self, events: &[Event]) -> Result<(), ClickHouseError> {
        let events: Vec<SharedEvent> = events.iter().cloned().map(SharedEvent::new).collect();
        let mut ids: Vec<String> = events.iter().map(|e| e.event_id.to_string()).collect();
        ids.sort();
        let digest = format!("{:x}", <sha2::Sha256 as sha2::Digest>::digest(ids.join(",").as_bytes()));
        let events: Vec<&SharedEvent> = events.iter().collect();
        for table in Table::ALL {
            self.insert_table(table, &events, &format!("export:{digest}:{}", table.name())).await?;
        }
        Ok(())
    }

    /// Writes a snapshot of a Prometheus registry to `metrics_snapshots` (one row per series;
    /// histograms as their `_bucket`, `_sum` and `_count` series). Returns the rows written.
    pub async fn export_metrics(&self, registry: &prometheus::Registry, service: &str) -> Result<usize, ClickHouseError> {
        let rows = rows::metric_rows(&registry.gather(), service, time::OffsetDateTime::now_utc(), uuid::Uuid::now_v7());
        let token = format!("metrics:{}", rows.first().map(|r| r.snapshot_id.to_string()).unwrap_or_default());
        self.timed(insert_rows::<rows::MetricRow<'static>>(&self.client, "metrics_snapshots", &rows, &token, self.timeout))
            .await?;
        Ok(rows.len())
    }

    async fn timed(&self, work: impl Future<Output = Result<(), ClickHouseError>>) -> Result<(), ClickHouseError> {
        // The schema lookup before the first insert has no timeout of its own.
        tokio::time::timeout(self.timeout * 2, work).await.unwrap_or(Err(ClickHouseError::Timeout))
    }

    /// Which of these events' rows `table` has, by event id (the check before a retry or a
    /// replay). The tenant and conversation (or trace) ids narrow the read to the primary
    /// key's ranges; the values are bound by the client, never spliced into the SQL as text,
    /// and event ids are UUIDs (hex and dashes only).
    pub async fn present(&self, table: Table, events: &[&SharedEvent]) -> Result<HashSet<uuid::Uuid>, ClickHouseError> {
        if events.is_empty() {
            return Ok(HashSet::new());
        }
        let mut tenants: Vec<&str> = events.iter().map(|e| &*e.tenant_id).collect();
        tenants.sort_unstable();
        tenants.dedup();
        let ids = events.iter().map(|e| format!("'{}'", e.event_id)).collect::<Vec<_>>().join(",");
        let query = if table == Table::Spans {
            self.client
                .query(&format!("SELECT toString(event_id) FROM {} WHERE tenant_id IN ? AND event_id IN ({ids})", table.name()))
                .bind(tenants)
        } else {
            let mut conversations: Vec<&str> = events.iter().map(|e| &*e.conversation_id).collect();
            conversations.sort_unstable();
            conversations.dedup();
            self.client
                .query(&format!(
                    "SELECT toString(event_id) FROM {} WHERE tenant_id IN ? AND conversation_id IN ? AND event_id IN ({ids})",
                    table.name()
                ))
                .bind(tenants)
                .bind(conversations)
        };
        let found = async { query.fetch_all::<String>().await.map_err(ClickHouseError::from) };
        let found = tokio::time::timeout(self.timeout * 2, found).await.unwrap_or(Err(ClickHouseError::Timeout))?;
        Ok(found.iter().filter_map(|s| s.parse().ok()).collect())
    }

    /// Inserts the rows `table` has for these events, with a deduplication token.
    pub async fn insert_table(&self, table: Table, events: &[&SharedEvent], token: &str) -> Result<(), ClickHouseError> {
        self.timed(insert_events(&self.client, table, events, token, self.timeout)).await
    }
}

