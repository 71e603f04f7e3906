//! The sink's delivery on its worker thread: seals batches, pushes them one at a time in order,
//! retries what is worth retrying, and counts what it drops.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::Poll;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::encode::{Batch, Entry, Pending, ignored_lines, refuses_structured_metadata};
use super::{LokiError, LokiRetry, LokiSettings};
use crate::metrics::SinkMetrics;
use crate::pipeline::runtime::io_runtime;
use crate::sinks::positions::{self, Handed, LogRange, Watermark};
use crate::sinks::retry::{Backoff, RetryLogic, Streak};
use crate::sinks::worker::Delivery;
use crate::pipeline::SharedEvent;

/// Attempts per batch during shutdown (1 when Loki was already failing).
const SHUTDOWN_ATTEMPTS: u32 = 3;
/// Lines read from the event log per replayed chunk.
const REPLAY_CHUNK: usize = 2000;
/// The replay reads its next chunk when fewer sealed batches than this wait.
const REPLAY_AHEAD: usize = 2;
/// Most bytes of Loki's answer kept in an error.
const MAX_MESSAGE: usize = 1024;

/// What became of the head batch's push.
pub(super) enum Outcome {
    /// Loki took it (or rejected it for good): it is gone from the queue, counted.
    Done,
    /// A failure worth retrying; the batch is still queued.
    Failed,
    /// Given up because shutdown came: not an attempt (shutdown pushes it again, or keeps it).
    Cancelled,
}

/// The sink's delivery, on its worker thread.
pub(super) struct Pushes {
    settings: LokiSettings,
    url: url::Url,
    client: reqwest::Client,
    metrics: SinkMetrics,
    buffered: Arc<AtomicUsize>,
    stop: watch::Receiver<Option<Instant>>,
    pending: Pending,
    /// Sealed batches, oldest first; only the head is pushed.
    outbox: VecDeque<Batch>,
    /// When the head may be tried again.
    retry_at: Option<Instant>,
    backoff: Backoff,
    /// Pushes are failing: warned once when it starts, once when it ends.
    failing: Streak,
    /// In a streak of rejected (4xx) pushes: logged once per streak.
    rejecting: bool,
    /// Send structured metadata (until a Loki says it does not take it).
    metadata: bool,
    warned_unserializable: bool,
    /// What was handed over and not yet pushed (or dropped for good), as positions in the
    /// event log.
    watermark: Watermark,
    /// Where the watermark is committed (`None` without an event log in this process).
    positions: Option<positions::Committer>,
    /// The event log after the committed position at start (a previous run's lines Loki did
    /// not take), still to push; new hand-overs wait in `later` until it is done, so lines
    /// stay in log order.
    replay: Option<LogRange>,
    later: VecDeque<Handed>,
    /// Events accepted since the last seal that could not be encoded (their tickets go with
    /// the next batch).
    skipped: usize,
}

impl Delivery for Pushes {
    type Batch = Handed;
    fn accept(&mut self, handed: Handed) {
        if self.replay.is_some() {
            self.later.push_back(handed);
        } else {
            self.take(handed);
        }
    }

    fn tick(&mut self, _now: Instant) {
        self.deliver_due();
    }

    fn wake_at(&self) -> Option<Instant> {
        let retry = self.retry_at.filter(|_| !self.outbox.is_empty());
        let replay = (self.replay.is_some() && self.outbox.len() < REPLAY_AHEAD).then(Instant::now);
        [self.pending.deadline(self.settings.batch_wait), retry, replay].into_iter().flatten().min()
    }

    fn flush(&mut self) {
        self.seal();
        self.flush_queued();
        self.commit(true);
    }

    fn shutdown(&mut self, give_up: Instant) {
        self.seal();
        self.finish(give_up);
    }

    fn abandon(&mut self) {
        self.seal();
        self.keep_the_rest("the sink was dropped without shutdown");
    }
}

impl Pushes {
    pub(super) fn new(
        settings: LokiSettings,
        client: reqwest::Client,
        metrics: SinkMetrics,
        buffered: Arc<AtomicUsize>,
        stop: watch::Receiver<Option<Instant>>,
    ) -> Pushes {
        let resume = settings
            .data_dir
            .as_deref()
            .filter(|dir| positions::cursor(dir).is_some())
            .map(|dir| positions::resume(dir, super::SINK_NAME, "Loki"));
        let (positions, watermark, replay) = match resume {
            Some(r) => (Some(r.file), Watermark::new(r.start), r.replay),
            None => (None, Watermark::new(None), None),
        };
        Pushes {
            url: settings.push_url(),
            backoff: Backoff::new(settings.min_backoff, settings.max_backoff),
            settings,
            client,
            metrics,
            buffered,
            stop,
            pending: Pending::default(),
            outbox: VecDeque::new(),
            retry_at: None,
            failing: Streak::default(),
            rejecting: false,
            metadata: true,
            warned_unserializable: false,
            watermark,
            positions,
            replay,
            later: VecDeque::new(),
            skipped: 0,
        }
    }

    /// Takes a hand-over into the batch being filled.
    fn take(&mut self, handed: Handed) {
        self.watermark.accept(handed.events.len(), handed.end);
        self.add(&handed.events);
    }

    /// While the event log is replayed: reads its next chunk when few batches wait; once it is
    /// done, takes what was handed over meanwhile.
    fn refill(&mut self) {
        while let Some(range) = &mut self.replay {
            if self.outbox.len() >= REPLAY_AHEAD {
                return;
            }
            let events = match range.next_shared_chunk(REPLAY_CHUNK) {
                Ok(events) => events,
                Err(e) => {
                    tracing::error!(error = %e, "serphona-obs: cannot read the event log to replay it to Loki; the replay stops here (the next start tries again)");
                    // Not committed past: the next start replays from here.
                    self.watermark.hold(range.end());
                    Vec::new()
                }
            };
            if events.is_empty() {
                self.replay = None;
                while let Some(handed) = self.later.pop_front() {
                    self.take(handed);
                }
                return;
            }
            let end = range.position();
            self.buffered.fetch_add(events.len(), Ordering::AcqRel);
            self.watermark.accept(events.len(), Some(end));
            self.add(&events);
            self.seal();
        }
    }

    fn add(&mut self, events: &[SharedEvent]) {
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
                    self.skipped += 1;
                    self.metrics.events_failed.inc();
                    self.buffered.fetch_sub(1, Ordering::AcqRel);
                    if !std::mem::replace(&mut self.warned_unserializable, true) {
                        tracing::error!(event_id = %event.event_id, error = %e, "serphona-obs: an event cannot be written as a JSON line; it is not pushed to Loki");
                    }
                }
            }
        }
    }

    fn seal(&mut self) {
        let skipped = std::mem::take(&mut self.skipped);
        match self.pending.seal() {
            Some(mut batch) => {
                batch.tickets = self.watermark.group(batch.lines + skipped);
                self.outbox.push_back(batch);
            }
            None if skipped > 0 => {
                let tickets = self.watermark.group(skipped);
                self.done(&tickets);
            }
            None => {}
        }
    }

    /// These events are done with (pushed, rejected, or dropped and counted): the committed
    /// position may move past them.
    fn done(&mut self, tickets: &[(u64, usize)]) {
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

    /// Seals a batch that has waited long enough and pushes the queue while it is due.
    fn deliver_due(&mut self) {
        loop {
            self.refill();
            let now = Instant::now();
            if self.pending.deadline(self.settings.batch_wait).is_some_and(|d| d <= now) {
                self.seal();
            }
            if self.outbox.is_empty() || self.retry_at.is_some_and(|t| t > now) {
                return;
            }
            // A retry while Loki fails is abandoned at once when shutdown comes.
            let abandon_on_shutdown = self.failing.is_failing();
            match self.push_head(self.settings.request_timeout, abandon_on_shutdown) {
                Outcome::Done => {}
                Outcome::Cancelled => return,
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
    fn flush_queued(&mut self) {
        if self.failing.is_failing() {
            return;
        }
        while !self.outbox.is_empty() {
            if let Outcome::Failed | Outcome::Cancelled = self.push_head(self.settings.request_timeout, false) {
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
        let attempts = if self.failing.is_failing() { 1 } else { SHUTDOWN_ATTEMPTS };
        let mut delays = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let mut failures = 0;
        loop {
            self.refill();
            if self.outbox.is_empty() {
                self.seal();
            }
            if self.outbox.is_empty() {
                break;
            }
            let now = Instant::now();
            if now >= give_up {
                break;
            }
            let timeout = self.settings.request_timeout.min(give_up - now);
            match self.push_head(timeout, false) {
                Outcome::Done => failures = 0,
                Outcome::Failed | Outcome::Cancelled => {
                    failures += 1;
                    let delay = delays.next_delay();
                    if failures >= attempts || Instant::now() + delay >= give_up {
                        break;
                    }
                    std::thread::sleep(delay);
                }
            }
        }
        self.keep_the_rest("Loki did not take them by the shutdown deadline");
    }

    /// Shutdown (or a drop): what is queued and in the event log stays there, past the
    /// committed position, for the next start, and is counted in
    /// `serphona_obs_events_pending{sink="loki"}`; what is queued and not in the log is dropped
    /// and counted as failed.
    fn keep_the_rest(&mut self, why: &str) {
        self.seal();
        let mut kept = 0u64;
        if self.positions.is_some() {
            let mut lost = VecDeque::new();
            for batch in std::mem::take(&mut self.outbox) {
                if self.watermark.in_log(&batch.tickets) {
                    kept += batch.lines as u64;
                    self.buffered.fetch_sub(batch.lines, Ordering::AcqRel);
                } else {
                    lost.push_back(batch);
                }
            }
            self.outbox = lost;
            let mut not_in_log = 0usize;
            for handed in std::mem::take(&mut self.later) {
                self.buffered.fetch_sub(handed.events.len(), Ordering::AcqRel);
                match handed.end {
                    Some(_) => kept += handed.events.len() as u64,
                    None => not_in_log += handed.events.len(),
                }
            }
            if not_in_log > 0 {
                self.metrics.events_failed.inc_by(not_in_log as u64);
                tracing::warn!(
                    lines = not_in_log,
                    "serphona-obs: lines the event log did not write were not pushed to Loki ({why}; counted in serphona_obs_sink_events_failed_total{{sink=\"loki\"}})"
                );
            }
        }
        self.drop_queued(why);
        // Committed before the replay's rest is counted: counting reads the log.
        self.commit(true);
        // A replay only exists with positions.
        kept += self.replay.take().map_or(0, |range| range.remaining_lines());
        self.metrics.pending().set(kept as i64);
        if kept > 0 {
            tracing::info!(
                lines = kept,
                "serphona-obs: Loki did not take every line ({why}); they stay in the event log past the sink's committed position and are pushed on the next start"
            );
        }
    }

    fn next_delay(&mut self) -> Duration {
        self.backoff.next_delay()
    }

    /// Pushes the head batch once; counts and logs what happened.
    fn push_head(&mut self, timeout: Duration, abandon_on_shutdown: bool) -> Outcome {
        let environment = self.settings.environment.clone();
        let Some(head) = self.outbox.front_mut() else { return Outcome::Done };
        let lines = head.lines;
        let body = head.body(&environment, self.metadata);
        let push = push(&self.client, &self.url, self.settings.tenant.as_deref(), body, timeout);
        let result = io_runtime().block_on(async {
            match first(push, cancelled(self.stop.clone(), abandon_on_shutdown)).await {
                Ok(result) => result,
                Err(()) => Err(LokiError::Cancelled),
            }
        });
        match result {
            Ok(()) => {
                self.metrics.delivered().inc_by(lines as u64);
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
            Err(LokiError::Cancelled) => Outcome::Cancelled,
            Err(e) if !LokiRetry.is_retriable(&e) => {
                self.rejected(lines, &e);
                Outcome::Done
            }
            Err(e) => {
                self.metrics.retries().inc();
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
            self.done(&batch.tickets);
        }
    }

    fn drop_head(&mut self, why: &str) {
        if let Some(batch) = self.outbox.front() {
            let lines = batch.lines;
            self.metrics.events_failed.inc_by(lines as u64);
            self.metrics.batches_failed.inc();
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
        m.events_failed.inc_by(ignored as u64);
        m.batches_failed.inc();
        m.delivered().inc_by((lines - ignored) as u64);
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
        match self.failing.fail() {
            false => {
                tracing::debug!(error = %error, "serphona-obs: Loki push failed again");
            }
            true => {
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
        if let Some((lasted, attempts)) = self.failing.recover() {
            tracing::info!(
                failed_attempts = attempts,
                "serphona-obs: Loki push to {} recovered after {:.1}s",
                crate::config::redact_url(&self.url),
                lasted.as_secs_f64()
            );
            self.backoff.reset();
        }
    }
}

/// One push of a gzip body.
pub(super) async fn push(client: &reqwest::Client, url: &url::Url, tenant: Option<&str>, body: Vec<u8>, timeout: Duration) -> Result<(), LokiError> {
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

pub(super) fn classify(error: &reqwest::Error, timeout: Duration) -> LokiError {
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
pub(super) async fn cancelled(mut stop: watch::Receiver<Option<Instant>>, abandon: bool) {
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
pub(super) async fn first<A: Future, B: Future>(a: A, b: B) -> Result<A::Output, B::Output> {
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

