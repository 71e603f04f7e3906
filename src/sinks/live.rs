//! The live broadcast: a sink that hands every event to in-process subscribers (`tail` and
//! `demo` watch conversations through it). Slow subscribers skip events rather than slowing
//! the pipeline; what they skip is counted.

use std::sync::Arc;

use prometheus::IntCounter;
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};

use crate::pipeline::{SharedEvent, Sink, SinkError};
use crate::types::Event;

/// Events a subscriber can fall behind by before it skips.
pub const LIVE_CAPACITY: usize = 16 * 1024;

/// The sending half, owned by the pipeline.
pub struct LiveSink {
    tx: broadcast::Sender<Arc<Event>>,
}

impl LiveSink {
    /// A sink and the handle subscribers are created from.
    pub fn new(capacity: usize) -> (LiveSink, broadcast::Sender<Arc<Event>>) {
        let (tx, _) = broadcast::channel(capacity.max(1));
        (LiveSink { tx: tx.clone() }, tx)
    }
}

impl Sink for LiveSink {
    fn name(&self) -> &str {
        "live"
    }

    /// The live view takes the events themselves.
    fn wants_lines(&self) -> bool {
        false
    }

    fn write(&mut self, events: &[SharedEvent]) -> Result<(), SinkError> {
        if self.tx.receiver_count() == 0 {
            return Ok(());
        }
        for event in events {
            // Only fails when every subscriber is gone, which is fine.
            let _ = self.tx.send(event.event().clone());
        }
        Ok(())
    }
}

/// A subscription to the live broadcast ([`crate::Observability::subscribe`]).
///
/// A subscriber that falls more than [`LIVE_CAPACITY`] events behind skips the oldest ones;
/// what it skips is counted in [`skipped`](Self::skipped) and in
/// `serphona_obs_live_lagged_events_total`.
pub struct LiveReceiver {
    rx: broadcast::Receiver<Arc<Event>>,
    lagged: IntCounter,
    skipped: u64,
}

impl LiveReceiver {
    pub(crate) fn new(rx: broadcast::Receiver<Arc<Event>>, lagged: IntCounter) -> Self {
        LiveReceiver { rx, lagged, skipped: 0 }
    }

    fn skip(&mut self, n: u64) {
        self.skipped += n;
        self.lagged.inc_by(n);
    }

    /// The next event; `None` once the library has shut down.
    pub async fn recv(&mut self) -> Option<Arc<Event>> {
        loop {
            match self.rx.recv().await {
                Ok(event) => return Some(event),
                Err(RecvError::Lagged(n)) => self.skip(n),
                Err(RecvError::Closed) => return None,
            }
        }
    }

    /// The next event if one is waiting.
    pub fn try_recv(&mut self) -> Option<Arc<Event>> {
        loop {
            match self.rx.try_recv() {
                Ok(event) => return Some(event),
                Err(TryRecvError::Lagged(n)) => self.skip(n),
                Err(TryRecvError::Empty | TryRecvError::Closed) => return None,
            }
        }
    }

    /// Waits for the next event from sync code; `None` once the library has shut down.
    /// Do not call from inside an async runtime (use [`recv`](Self::recv)).
    pub fn blocking_recv(&mut self) -> Option<Arc<Event>> {
        loop {
            match self.rx.blocking_recv() {
                Ok(event) => return Some(event),
                Err(RecvError::Lagged(n)) => self.skip(n),
                Err(RecvError::Closed) => return None,
            }
        }
    }

    /// Events this subscriber skipped because it fell behind.
    pub fn skipped(&self) -> u64 {
        self.skipped
    }
}
