//! The sinks: where processed events go, one file or folder each.
//!
//! - [`event_log`]: the local JSONL event log (the embedded default, and the durable copy);
//! - [`live`]: the in-process broadcast that `tail` and `demo` watch;
//! - [`loki`]: pushes the event log's lines to Loki;
//! - [`clickhouse`]: inserts the rows of [`crate::analytics`], retried and spooled.
//!
//! The remote sinks (Loki, ClickHouse) share their machinery: each runs its delivery on a
//! [`worker::Worker`] thread (flush and shutdown with deadlines, the join) and takes its
//! backoff, its retriable/permanent split and its rate-limited warnings from [`retry`]. A new
//! sink is one folder that implements [`worker::Delivery`] and [`crate::pipeline::Sink`].

#[cfg(feature = "clickhouse")]
pub mod clickhouse;
pub mod event_log;
pub mod live;
pub mod positions;
#[cfg(feature = "loki")]
pub mod loki;
pub mod retry;
pub mod worker;
