//! The read side: the [`Store`] trait that `query`, `tail` and `demo`'s summary read through,
//! and its implementations ([`local::LocalStore`] over the event log; ClickHouse later).
//!
//! Percentiles are nearest-rank: the smallest value with at least `q` of the values at or
//! below it, so both stores give the same number for the same data.

pub mod clickhouse;
pub mod local;

use std::collections::BTreeMap;
use std::future::Future;
use std::str::FromStr;

use serde::Serialize;
use time::OffsetDateTime;

use crate::types::{Channel, Event, Resolution};

/// A read failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A file of the local event log could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// The file or folder.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A ClickHouse query failed. (Not a `#[source]`: the message already says it, and
    /// `{:#}` would print it twice.)
    #[error("ClickHouse store: {0}")]
    ClickHouse(crate::exporter::ClickHouseError),
    /// A stored event could not be read back.
    #[error("ClickHouse store: event {event_id} does not parse: {message}")]
    BadPayload {
        /// The event.
        event_id: String,
        /// Why.
        message: String,
    },
    /// A cursor from another store or a corrupted one.
    #[error("invalid cursor {0:?} (a cursor only works with the store that gave it: SEQ:OFFSET for the local event log, MICROS:EVENT_ID for ClickHouse)")]
    BadCursor(String),
}

impl From<crate::exporter::ClickHouseError> for StoreError {
    fn from(e: crate::exporter::ClickHouseError) -> Self {
        StoreError::ClickHouse(e)
    }
}

/// Which conversations to read. Every filter is optional; they combine with AND.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConversationFilter {
    /// Only this tenant.
    pub tenant: Option<String>,
    /// Only this agent.
    pub agent: Option<String>,
    /// Only this channel.
    pub channel: Option<Channel>,
    /// Only conversations that ended this way.
    pub resolution: Option<Resolution>,
    /// Started at or after.
    pub since: Option<OffsetDateTime>,
    /// Started before.
    pub until: Option<OffsetDateTime>,
    /// Start metadata entries that must all match.
    pub metadata: Vec<(String, String)>,
    /// At most this many (the newest first).
    pub limit: Option<usize>,
}

/// One conversation, as a row.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConversationSummary {
    /// Id.
    pub conversation_id: String,
    /// Tenant.
    pub tenant_id: String,
    /// Agent.
    pub agent_id: String,
    /// Customer (empty when the start event is not in the store).
    pub customer_id: String,
    /// Channel.
    pub channel: Option<Channel>,
    /// Language tag.
    pub language: String,
    /// Start time (the first event's, when the start event is missing).
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
    /// End time, when ended.
    #[serde(with = "time::serde::rfc3339::option")]
    pub ended_at: Option<OffsetDateTime>,
    /// Seconds from start to end, when ended.
    pub duration_seconds: Option<f64>,
    /// How it ended; `None` while active.
    pub resolution: Option<Resolution>,
    /// Customer rating.
    pub rating: Option<u8>,
    /// Agent turns.
    pub agent_turns: u32,
    /// Customer turns.
    pub customer_turns: u32,
    /// Decisions made.
    pub decisions: u32,
    /// Transfers initiated.
    pub transfers: u32,
    /// Errors.
    pub errors: u32,
    /// Compliance violations.
    pub violations: u32,
    /// Mean sentiment of the scored turns.
    pub mean_sentiment: Option<f64>,
    /// Who spoke last.
    pub last_speaker: Option<crate::types::Speaker>,
    /// Trace id (hex).
    pub trace_id: String,
    /// Start metadata.
    pub metadata: BTreeMap<String, String>,
}

impl ConversationSummary {
    /// Agent plus customer turns.
    pub fn interactions(&self) -> u32 {
        self.agent_turns + self.customer_turns
    }
}

/// One conversation with everything recorded about it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConversationDetail {
    /// The row.
    pub summary: ConversationSummary,
    /// Every event, in time order (turns, decisions, transfers, errors, start and end).
    pub events: Vec<Event>,
}

/// What to group stats by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum GroupBy {
    /// Tenant.
    Tenant,
    /// Agent.
    Agent,
    /// Channel.
    Channel,
    /// Resolution (`active` for conversations not ended).
    Resolution,
}

impl GroupBy {
    /// The accepted names.
    pub const NAMES: &'static str = "tenant, agent, channel, resolution";
}

impl FromStr for GroupBy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "tenant" => Ok(GroupBy::Tenant),
            "agent" => Ok(GroupBy::Agent),
            "channel" => Ok(GroupBy::Channel),
            "resolution" => Ok(GroupBy::Resolution),
            _ => Err(format!("unknown group {s:?} (accepted: {})", GroupBy::NAMES)),
        }
    }
}

/// p50, p95 and p99 of a set of values (nearest-rank).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Percentiles {
    /// Median.
    pub p50: Option<f64>,
    /// 95th percentile.
    pub p95: Option<f64>,
    /// 99th percentile.
    pub p99: Option<f64>,
}

impl Percentiles {
    /// From unsorted values.
    pub fn of(mut values: Vec<f64>) -> Percentiles {
        values.sort_by(f64::total_cmp);
        Percentiles {
            p50: nearest_rank(&values, 0.50),
            p95: nearest_rank(&values, 0.95),
            p99: nearest_rank(&values, 0.99),
        }
    }
}

/// The nearest-rank percentile of sorted values.
pub fn nearest_rank(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// Stats of one group of conversations.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StatsRow {
    /// The group's value (`all` without grouping).
    pub group: String,
    /// Conversations started.
    pub conversations: u64,
    /// Of which ended.
    pub ended: u64,
    /// Ended conversations per resolution.
    pub by_resolution: BTreeMap<String, u64>,
    /// Resolved / ended.
    pub resolution_rate: Option<f64>,
    /// Transferred (at least one transfer) / conversations.
    pub transfer_rate: Option<f64>,
    /// Agent plus customer turns.
    pub interactions: u64,
    /// Durations of ended conversations, seconds.
    pub duration_seconds: Percentiles,
    /// Agent response times, seconds.
    pub response_seconds: Percentiles,
    /// Mean customer rating.
    pub mean_rating: Option<f64>,
    /// Mean sentiment of scored turns.
    pub mean_sentiment: Option<f64>,
}

/// A position in the event stream, for [`Store::events_since`]. Opaque; only the store that
/// gave it understands it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Cursor(pub String);

/// The read side of a conversation store.
pub trait Store: Send + Sync {
    /// Conversations matching the filter, newest first.
    fn conversations(
        &self,
        filter: &ConversationFilter,
    ) -> impl Future<Output = Result<Vec<ConversationSummary>, StoreError>> + Send;

    /// One conversation with all its events; `None` when unknown.
    fn conversation(&self, id: &str) -> impl Future<Output = Result<Option<ConversationDetail>, StoreError>> + Send;

    /// Stats of the conversations matching the filter, in one row or one per group.
    fn stats(
        &self,
        filter: &ConversationFilter,
        by: Option<GroupBy>,
    ) -> impl Future<Output = Result<Vec<StatsRow>, StoreError>> + Send;

    /// Events after `cursor` (from the beginning when `None`), at most `limit`, and the cursor
    /// to continue from. No event is returned twice and none is skipped across calls.
    fn events_since(
        &self,
        cursor: Option<&Cursor>,
        limit: usize,
    ) -> impl Future<Output = Result<(Vec<Event>, Cursor), StoreError>> + Send;
}
