//! The live broadcast: a sink that hands every event to in-process subscribers (`tail` and
//! `demo` watch conversations through it). Slow subscribers skip events rather than slowing
//! the pipeline; what they skip is counted.

use std::sync::Arc;

use tokio::sync::broadcast;

use super::{Sink, SinkError};
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

    fn write(&mut self, events: &[Event]) -> Result<(), SinkError> {
        if self.tx.receiver_count() == 0 {
            return Ok(());
        }
        for event in events {
            // Only fails when every subscriber is gone, which is fine.
            let _ = self.tx.send(Arc::new(event.clone()));
        }
        Ok(())
    }
}
