//! Size, bytes and time batching (`batch_size`, `batch_bytes`, `flush_interval`).

use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::pipeline::SharedEvent;
use crate::types::Event;

/// A batch ready to insert. Its id is fixed when it is sealed and travels with it through
/// retries and the spool: it is the insert deduplication token.
#[derive(Debug, Clone, PartialEq)]
pub struct SealedBatch {
    /// The batch id (UUIDv7).
    pub id: Uuid,
    /// The events, in arrival order.
    pub events: Vec<SharedEvent>,
}

impl SealedBatch {
    /// The deduplication token of this batch's insert into `table` (or a slice of it).
    pub fn token(&self, table: &str, slice: Option<(usize, usize)>) -> String {
        match slice {
            Some((lo, hi)) => format!("{}:{table}:{lo}-{hi}", self.id),
            None => format!("{}:{table}", self.id),
        }
    }
}

/// Roughly how many bytes an event's rows take on the wire.
pub fn approx_bytes(e: &Event) -> usize {
    // The content goes to events (twice: column and payload) and to interactions; ids, times
    // and low-cardinality columns add about 400 bytes over all tables.
    e.content.len() * 3 + e.metadata.extra.iter().map(|(k, v)| k.len() + v.to_string().len()).sum::<usize>() * 2 + 400
}

/// Collects events until a batch is full (rows or bytes) or its first event has waited the
/// flush interval.
#[derive(Debug)]
pub struct Batcher {
    max_rows: usize,
    max_bytes: usize,
    interval: Duration,
    events: Vec<SharedEvent>,
    bytes: usize,
    first_at: Option<Instant>,
}

impl Batcher {
    /// A batcher with these limits.
    pub fn new(max_rows: usize, max_bytes: usize, interval: Duration) -> Batcher {
        Batcher { max_rows: max_rows.max(1), max_bytes: max_bytes.max(1), interval, events: Vec::new(), bytes: 0, first_at: None }
    }

    /// Adds an event; returns the sealed batch when this one filled it.
    pub fn push(&mut self, event: SharedEvent, now: Instant) -> Option<SealedBatch> {
        self.first_at.get_or_insert(now);
        self.bytes += approx_bytes(&event);
        self.events.push(event);
        (self.events.len() >= self.max_rows || self.bytes >= self.max_bytes).then(|| self.seal()).flatten()
    }

    /// When the pending batch is due, if there is one.
    pub fn deadline(&self) -> Option<Instant> {
        self.first_at.map(|t| t + self.interval)
    }

    /// Events waiting.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// Seals what is pending (`None` when nothing is).
    pub fn seal(&mut self) -> Option<SealedBatch> {
        if self.events.is_empty() {
            return None;
        }
        self.first_at = None;
        self.bytes = 0;
        Some(SealedBatch { id: Uuid::now_v7(), events: std::mem::take(&mut self.events) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::test_event;

    #[test]
    fn seals_on_rows_bytes_and_reports_the_deadline() {
        let now = Instant::now();
        let mut b = Batcher::new(3, usize::MAX, Duration::from_secs(10));
        assert!(b.deadline().is_none());
        assert!(b.push(test_event("a").into(), now).is_none());
        assert_eq!(b.deadline(), Some(now + Duration::from_secs(10)));
        assert!(b.push(test_event("b").into(), now).is_none());
        let sealed = b.push(test_event("c").into(), now).unwrap();
        assert_eq!(sealed.events.len(), 3);
        assert!(b.is_empty() && b.deadline().is_none());

        let mut b = Batcher::new(1000, 1, Duration::from_secs(10));
        assert_eq!(b.push(test_event("big").into(), now).unwrap().events.len(), 1);

        let mut b = Batcher::new(1000, usize::MAX, Duration::from_secs(10));
        b.push(test_event("x").into(), now);
        let one = b.seal().unwrap();
        b.push(test_event("y").into(), now);
        let two = b.seal().unwrap();
        assert_ne!(one.id, two.id);
        assert_eq!(one.token("events", None), format!("{}:events", one.id));
        assert_eq!(one.token("events", Some((0, 4))), format!("{}:events:0-4", one.id));
        assert!(b.seal().is_none());
    }
}
