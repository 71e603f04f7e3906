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
//! Delivery is at-least-once with deduplication: every batch gets an id when it is sealed, and
//! every insert of it carries `insert_deduplication_token = <batch id>:<table>` (see
//! [`crate::analytics`]). A retried or replayed batch is byte-for-byte the same insert, so
//! ClickHouse drops it instead of doubling its rows.

pub mod batch;
pub mod spool;

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

/// The ClickHouse sink (see the module docs).
pub struct ClickHouseSink {
    worker: Worker,
}

impl ClickHouseSink {
    /// Opens the spool under `data_dir` and starts the worker, which first replays anything a
    /// previous process spooled. Does not contact the server (a server that is down is not an
    /// error: rows wait in the spool).
    pub fn start(config: &ClickHouseConfig, data_dir: &std::path::Path, metrics: Arc<SelfMetrics>) -> Result<ClickHouseSink, SinkError> {
        let spool = Spool::open(spool_dir(data_dir), config.spool_max_bytes as u64).map_err(|e| SinkError::Other {
            sink: SINK_NAME.into(),
            message: e.to_string(),
        })?;
        let mut delivery = Inserts {
            exporter: Exporter::new(config),
            batcher: Batcher::new(config.batch_size, config.batch_bytes, config.flush_interval),
            spool,
            metrics: metrics.sink(SINK_NAME),
            down: None,
            backoff: Backoff::new(MIN_BACKOFF, MAX_BACKOFF),
            warn: WarnEvery::new(WARN_EVERY),
            spool_warn: WarnEvery::new(WARN_EVERY),
        };
        delivery.refresh_spool_gauge();
        // Replay what a previous process left, as soon as we start.
        if !delivery.spool_entries().is_empty() {
            delivery.down = Some(Instant::now());
        }
        // Joined on drop: the worker spools what it holds first.
        let worker = Worker::start(SINK_NAME, delivery, Queue::Bounded(CHANNEL_BATCHES), true)?;
        Ok(ClickHouseSink { worker })
    }
}

impl Sink for ClickHouseSink {
    fn name(&self) -> &str {
        SINK_NAME
    }

    fn write(&mut self, events: &[SharedEvent]) -> Result<(), SinkError> {
        self.worker.send_events(events.to_vec())
    }

    /// Seals the pending batch and tries it once; what does not go through is spooled, so
    /// after a flush every event is in ClickHouse or on disk.
    fn flush(&mut self) -> Result<(), SinkError> {
        self.worker.flush(None)
    }

    /// Delivers the pending batch and replays the spool until `deadline`; the rest stays in
    /// the spool for the next start.
    fn shutdown(&mut self, deadline: Instant) -> Result<(), SinkError> {
        // The worker spools what it could not deliver by the deadline; give it a moment more.
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

/// The sink's delivery, on its worker thread.
struct Inserts {
    exporter: Exporter,
    batcher: Batcher,
    spool: Spool,
    metrics: SinkMetrics,
    /// When the server is down: when to probe it next.
    down: Option<Instant>,
    backoff: Backoff,
    warn: WarnEvery,
    /// Spool write failures, logged at most once a minute.
    spool_warn: WarnEvery,
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

impl Delivery for Inserts {
    fn accept(&mut self, events: Vec<SharedEvent>) {
        let now = Instant::now();
        for event in events {
            if let Some(batch) = self.batcher.push(event, now) {
                self.send(batch, Effort::Retry);
            }
        }
    }

    fn tick(&mut self, now: Instant) {
        if self.batcher.deadline().is_some_and(|d| d <= now) {
            if let Some(batch) = self.batcher.seal() {
                self.send(batch, Effort::Retry);
            }
        }
        if self.down.is_some_and(|d| d <= now) {
            self.replay(None);
        }
    }

    fn wake_at(&self) -> Option<Instant> {
        [self.batcher.deadline(), self.down].into_iter().flatten().min()
    }

    fn flush(&mut self) {
        if let Some(batch) = self.batcher.seal() {
            self.send(batch, Effort::Once);
        }
    }

    fn shutdown(&mut self, deadline: Instant) {
        if let Some(batch) = self.batcher.seal() {
            self.send(batch, Effort::Until(deadline));
        }
        self.replay(Some(deadline));
    }

    fn abandon(&mut self) {
        // Dropped without shutdown: keep what we hold on disk.
        if let Some(batch) = self.batcher.seal() {
            self.spool_batch(&batch);
        }
    }
}

impl Inserts {
    /// Delivers a sealed batch, or spools it when the server is down or does not take it.
    fn send(&mut self, batch: SealedBatch, effort: Effort) {
        if self.down.is_some() {
            self.spool_batch(&batch);
            return;
        }
        match self.deliver(&batch, effort) {
            Ok(()) => {}
            Err(e) => {
                self.warn(&e, "ClickHouse is not taking rows; batches go to the disk spool and are replayed when it is back");
                self.spool_batch(&batch);
                self.mark_down();
            }
        }
    }

    fn mark_down(&mut self) {
        self.down = Some(Instant::now() + self.backoff.next_delay());
    }

    fn spool_entries(&self) -> Vec<spool::SpoolEntry> {
        self.spool.entries().unwrap_or_default()
    }

    /// Replays the spool oldest first while the server takes it (until `deadline`, if given).
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
            match self.deliver(&batch, effort) {
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

    fn spool_batch(&mut self, batch: &SealedBatch) {
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
            }
            Err(e) => {
                self.metrics.spool_dropped().inc_by(batch.events.len() as u64);
                self.metrics.write_error(crate::pipeline::io_error_kind(&e.source)).inc();
                // One line, not one per batch: a full disk fails every batch alike.
                if self.spool_warn.ready() {
                    tracing::error!(
                        error = %crate::ErrorChain(&e),
                        events = batch.events.len(),
                        "serphona-obs: cannot spool a ClickHouse batch; it is lost (counted in \
                         serphona_obs_spool_dropped_events_total; logged at most once a minute)"
                    );
                }
                self.refresh_spool_gauge();
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

    /// Inserts every table's rows of a batch, retrying transient failures per `effort`.
    fn deliver(&mut self, batch: &SealedBatch, effort: Effort) -> Result<(), ClickHouseError> {
        let mut delays = Backoff::new(MIN_BACKOFF, MAX_BACKOFF);
        let mut attempt = 1;
        loop {
            match self.try_batch(batch) {
                Ok(()) => {
                    self.metrics.delivered().inc_by(batch.events.len() as u64);
                    return Ok(());
                }
                Err(e) => {
                    self.metrics.retries().inc();
                    let delay = delays.next_delay();
                    let more = match effort {
                        Effort::Retry => attempt < ATTEMPTS,
                        Effort::Once => false,
                        Effort::Until(d) => Instant::now() + delay < d,
                    };
                    if !more {
                        return Err(e);
                    }
                    std::thread::sleep(delay);
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
        io_runtime().block_on(self.exporter.insert_table(table, events, token))
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

    /// Inserts the rows `table` has for these events, with a deduplication token.
    pub async fn insert_table(&self, table: Table, events: &[&SharedEvent], token: &str) -> Result<(), ClickHouseError> {
        self.timed(insert_events(&self.client, table, events, token, self.timeout)).await
    }
}

