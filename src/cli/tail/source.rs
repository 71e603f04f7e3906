//! Where `tail` reads events: the local event log, ClickHouse, a file or stdin of JSON event
//! lines, or the in-process live broadcast (`demo`). Each runs on its own thread and sends
//! batches over a bounded channel. Sources that can wait (files, stores) block when the
//! channel is full and lose nothing; the live broadcast cannot wait, so what it cannot hand
//! over is counted as dropped and shown in the header.

use std::collections::HashMap;
use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, TrySendError};
use serphona_obs::config::ClickHouseConfig;
use serphona_obs::sinks::event_log::read::{AtEnd, DamageLog, LineReader, Next};
use serphona_obs::sinks::live::LiveReceiver;
use serphona_obs::store::clickhouse::ClickHouseStore;
use serphona_obs::store::local::LocalStore;
use serphona_obs::store::{Cursor, Store, StoreError};
use serphona_obs::types::Event;
use time::OffsetDateTime;

/// Batches in flight between a source and the view.
pub const CHANNEL_BATCHES: usize = 256;
/// Events per batch read from a store.
const PAGE: usize = 5_000;
/// How often a source that reached the end looks for more.
const POLL: Duration = Duration::from_millis(250);
/// How far back each ClickHouse poll looks again for rows that committed late.
const OVERLAP_MICROS: i64 = 5_000_000;

/// What a source sends.
#[derive(Debug)]
pub enum Feed {
    /// Events, in the source's order.
    Events(Vec<Event>),
    /// A line for the header (`None` clears it).
    Status(Option<String>),
    /// A failure the source cannot get past (e.g. the first ClickHouse poll failed).
    Failed(String),
    /// The source has nothing more and never will (stdin closed, `--no-follow` at the end).
    Done,
}

/// Counters a source updates and the view reads.
#[derive(Debug, Default)]
pub struct Counters {
    /// Events lost before the view.
    pub dropped: AtomicU64,
    /// Input lines that were not events.
    pub skipped: AtomicU64,
    /// Those lines, by file and offset (for the warning when `tail` ends).
    pub damage: std::sync::Mutex<DamageLog>,
}

impl Counters {
    /// The damaged lines seen so far.
    pub fn damage(&self) -> DamageLog {
        self.damage.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }
}

/// Which source.
pub enum Kind {
    /// The local event log under a data dir.
    Local(PathBuf),
    /// The ClickHouse `events` table, from rows inserted since this time.
    ClickHouse(Box<ClickHouseConfig>, OffsetDateTime),
    /// A file of JSON event lines (followed as it grows unless `--no-follow`).
    File(PathBuf),
    /// JSON event lines on stdin, until it closes.
    Stdin,
    /// The in-process live broadcast.
    Live(LiveReceiver),
}

impl Kind {
    /// What the header shows.
    pub fn label(&self) -> String {
        match self {
            Kind::Local(dir) => format!("local {}", serphona_obs::sinks::event_log::event_log_dir(dir).display()),
            Kind::ClickHouse(c, _) => format!("clickhouse {}/{}", c.endpoint, c.database),
            Kind::File(p) => format!("file {}", p.display()),
            Kind::Stdin => "stdin".into(),
            Kind::Live(_) => "live (this process)".into(),
        }
    }
}

/// A running source.
pub struct Source {
    /// Batches from the source.
    pub rx: Receiver<Feed>,
    /// Its counters.
    pub counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Source {
    /// Starts reading on a thread of its own. `follow`: keep waiting for more at the end.
    pub fn start(kind: Kind, follow: bool) -> Source {
        let (tx, rx) = crossbeam_channel::bounded(CHANNEL_BATCHES);
        let counters = Arc::new(Counters::default());
        let stop = Arc::new(AtomicBool::new(false));
        let ctx = Ctx { tx, counters: counters.clone(), stop: stop.clone(), follow };
        let thread = std::thread::Builder::new()
            .name("serphona-obs-tail-source".into())
            .spawn(move || match kind {
                Kind::Local(dir) => local(ctx, dir),
                Kind::ClickHouse(config, since) => clickhouse(ctx, config, since),
                Kind::File(path) => file(ctx, path),
                Kind::Stdin => lines(ctx, std::io::stdin().lock(), None),
                Kind::Live(rx) => live(ctx, rx),
            })
            .expect("spawn the tail source thread");
        Source { rx, counters, stop, thread: Some(thread) }
    }

    /// Asks the source to stop. A thread blocked reading stdin stays until the process ends;
    /// the others end within a poll.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Unblock a sender waiting on a full channel.
        while self.rx.try_recv().is_ok() {}
        if let Some(thread) = self.thread.take() {
            if !thread.is_finished() {
                // Detached: stdin reads cannot be interrupted.
                return;
            }
            let _ = thread.join();
        }
    }
}

struct Ctx {
    tx: Sender<Feed>,
    counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
    follow: bool,
}

impl Ctx {
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Sends, waiting while the channel is full (but not past a stop). False once the view
    /// is gone or stopped.
    fn send(&self, feed: Feed) -> bool {
        let mut feed = feed;
        loop {
            match self.tx.send_timeout(feed, POLL) {
                Ok(()) => return true,
                Err(crossbeam_channel::SendTimeoutError::Timeout(f)) if !self.stopped() => feed = f,
                Err(_) => return false,
            }
        }
    }

    fn sleep(&self) -> bool {
        std::thread::sleep(POLL);
        !self.stopped()
    }
}

fn runtime() -> tokio::runtime::Runtime {
    crate::cli::runtime().expect("a current-thread runtime")
}

fn local(ctx: Ctx, data_dir: PathBuf) {
    let store = LocalStore::open(&data_dir);
    let rt = runtime();
    let mut cursor: Option<Cursor> = None;
    let mut failing = false;
    while !ctx.stopped() {
        match rt.block_on(store.events_since(cursor.as_ref(), PAGE)) {
            Ok((events, next)) => {
                if failing {
                    failing = false;
                    ctx.send(Feed::Status(None));
                }
                ctx.counters.skipped.store(store.skipped_lines(), Ordering::Relaxed);
                *ctx.counters.damage.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = store.damage();
                cursor = Some(next);
                let full = events.len() == PAGE;
                if !events.is_empty() && !ctx.send(Feed::Events(events)) {
                    return;
                }
                if full {
                    continue;
                }
                if !ctx.follow {
                    ctx.send(Feed::Done);
                    return;
                }
            }
            Err(e) => {
                // Without --follow nothing would come of retrying: the read fails and tail ends.
                if !ctx.follow {
                    ctx.send(Feed::Failed(serphona_obs::ErrorChain(&e).to_string()));
                    return;
                }
                failing = true;
                if !ctx.send(Feed::Status(Some(format!("{}; retrying", serphona_obs::ErrorChain(&e))))) {
                    return;
                }
            }
        }
        if !ctx.sleep() {
            return;
        }
    }
}

/// Polls ClickHouse's `events` by insertion time. Each poll starts [`OVERLAP_MICROS`] before
/// the newest row seen, so rows of an insert that committed after a later one was already
/// read are not missed; rows seen in that window are remembered and not sent twice.
fn clickhouse(ctx: Ctx, config: Box<ClickHouseConfig>, since: OffsetDateTime) {
    let server = config.endpoint.to_string();
    let store = ClickHouseStore::new(&config);
    let rt = runtime();
    let since_micros = (since.unix_timestamp_nanos() / 1000) as i64;
    let mut newest = since_micros; // newest insertion time seen (micros)
    // event id -> insertion time bound (micros) of rows inside the overlap window
    let mut seen: HashMap<uuid::Uuid, i64> = HashMap::new();
    let mut first = true;
    let mut failing = false;
    while !ctx.stopped() {
        let from = (newest - OVERLAP_MICROS).max(since_micros);
        let mut cursor = Cursor(format!("{from}:{}", uuid::Uuid::nil()));
        let mut sent_any = false;
        loop {
            let result: Result<(Vec<Event>, Cursor), StoreError> = rt.block_on(store.events_since(Some(&cursor), PAGE));
            let (events, next) = match result {
                Ok(page) => page,
                Err(e) => {
                    if first {
                        ctx.send(Feed::Failed(format!("{e} (tail --source clickhouse reads {server})")));
                        return;
                    }
                    failing = true;
                    if !ctx.send(Feed::Status(Some(format!("{e}; retrying")))) {
                        return;
                    }
                    break;
                }
            };
            first = false;
            if failing {
                failing = false;
                ctx.send(Feed::Status(None));
            }
            let page_at = next.0.split_once(':').and_then(|(a, _)| a.parse::<i64>().ok()).unwrap_or(newest);
            let full = events.len() == PAGE;
            let fresh: Vec<Event> = events.into_iter().filter(|e| seen.insert(e.event_id, page_at).is_none()).collect();
            newest = newest.max(page_at);
            if !fresh.is_empty() {
                sent_any = true;
                if !ctx.send(Feed::Events(fresh)) {
                    return;
                }
            }
            cursor = next;
            if !full {
                break;
            }
        }
        let horizon = newest - OVERLAP_MICROS;
        seen.retain(|_, at| *at >= horizon);
        if !ctx.follow && !sent_any && !failing {
            ctx.send(Feed::Done);
            return;
        }
        if !ctx.sleep() {
            return;
        }
    }
}

fn file(ctx: Ctx, path: PathBuf) {
    match std::fs::File::open(&path) {
        Ok(f) => lines(ctx, f, Some(path)),
        Err(e) => {
            ctx.send(Feed::Failed(format!("cannot read {}: {e}", path.display())));
        }
    }
}

/// JSON event lines, read with the event log's [`LineReader`]. Lines that are not events
/// (other log lines of a service, damaged lines) are counted as skipped, with their offsets.
/// A file is followed as it grows (a partial last line waits for its newline); without
/// following, a partial last line at the end is read as it is.
fn lines(ctx: Ctx, input: impl Read, followed: Option<PathBuf>) {
    let name = followed.as_ref().map_or_else(|| PathBuf::from("-"), PathBuf::clone);
    let follow = followed.is_some() && ctx.follow;
    let at_end = if follow { AtEnd::Wait } else { AtEnd::Torn };
    let mut reader = LineReader::new(input, 0);
    let mut batch = Vec::with_capacity(1024);
    while !ctx.stopped() {
        match reader.next(at_end) {
            Ok(Next::Event(event)) => {
                batch.push(event);
                if batch.len() >= 1024 && !ctx.send(Feed::Events(std::mem::take(&mut batch))) {
                    return;
                }
            }
            Ok(Next::Damaged(damaged)) => {
                ctx.counters.skipped.fetch_add(1, Ordering::Relaxed);
                ctx.counters.damage.lock().unwrap_or_else(std::sync::PoisonError::into_inner).record(&name, &damaged);
            }
            Ok(Next::End) => {
                if !batch.is_empty() && !ctx.send(Feed::Events(std::mem::take(&mut batch))) {
                    return;
                }
                if !follow {
                    ctx.send(Feed::Done);
                    return;
                }
                if !ctx.sleep() {
                    return;
                }
            }
            Err(e) => {
                ctx.send(Feed::Failed(format!("cannot read {}: {e}", name.display())));
                return;
            }
        }
    }
}

fn live(ctx: Ctx, mut rx: LiveReceiver) {
    let mut reported_skips = 0;
    while !ctx.stopped() {
        let Some(first) = rx.blocking_recv() else {
            ctx.send(Feed::Done);
            return;
        };
        let mut batch = vec![Event::clone(&first)];
        while batch.len() < 1024 {
            match rx.try_recv() {
                Some(e) => batch.push(Event::clone(&e)),
                None => break,
            }
        }
        let lagged = rx.skipped() - reported_skips;
        reported_skips = rx.skipped();
        ctx.counters.dropped.fetch_add(lagged, Ordering::Relaxed);
        let n = batch.len() as u64;
        match ctx.tx.try_send(Feed::Events(batch)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                ctx.counters.dropped.fetch_add(n, Ordering::Relaxed);
            }
            Err(TrySendError::Disconnected(_)) => return,
        }
    }
}
