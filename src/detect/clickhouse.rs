//! The detection series computed in ClickHouse: the same buckets [`SeriesBuilder`] folds from
//! the event log, as `GROUP BY` over the row tables, so the engine does the work and the CLI
//! holds only buckets × scopes.
//!
//! The hourly rollups are too coarse for 15-minute windows, so the buckets come from
//! `events FINAL`, `interactions FINAL` and `decisions FINAL`. Latency p95s use
//! `quantileExact(0.95)`, whose definition [`super::series::quantile_exact`] copies. Every
//! caller value (tenant, times, width) is a query parameter.

use std::collections::BTreeMap;

use clickhouse::{Client, Row};
use serde::Deserialize;
use time::OffsetDateTime;

use super::series::{Bucket, LATENCY_PARTS, Range, Scope, Series};
use crate::analytics::ClickHouseError;
use crate::types::Resolution;

fn micros(t: OffsetDateTime) -> i64 {
    (t.unix_timestamp_nanos() / 1000).clamp(i64::MIN as i128, i64::MAX as i128) as i64
}

#[derive(Row, Deserialize)]
struct CountsRow {
    tenant_id: String,
    agent: String,
    b: i64,
    started: u64,
    active: u64,
    violations: u64,
}

#[derive(Row, Deserialize)]
struct KeyedRow {
    tenant_id: String,
    agent: String,
    b: i64,
    key: String,
    n: u64,
}

#[derive(Row, Deserialize)]
struct LatencyRow {
    tenant_id: String,
    agent: String,
    b: i64,
    p50: Vec<f64>,
    p95: Vec<f64>,
    n: Vec<u64>,
}

#[derive(Row, Deserialize)]
struct SentimentRow {
    tenant_id: String,
    agent: String,
    b: i64,
    sum: f64,
    n: u64,
}

/// The series of every tenant and every tenant's agent in `range`, `bucket_seconds` wide.
pub async fn series(client: &Client, range: &Range, bucket_seconds: i64) -> Result<Vec<Series>, ClickHouseError> {
    let width = bucket_seconds.max(1);
    let mut buckets: BTreeMap<Scope, BTreeMap<i64, Bucket>> = BTreeMap::new();
    // The agent column of a scope: the agent, or '' for the whole tenant.
    for agent_expr in ["''", "agent_id"] {
        let scope = |tenant: &str, agent: &str| Scope {
            tenant_id: tenant.to_string(),
            agent_id: (agent_expr != "''").then(|| agent.to_string()),
        };
        let head = format!("tenant_id, {agent_expr} AS agent, intDiv(toUnixTimestamp(timestamp), {{w:Int64}}) * {{w:Int64}} AS b");
        let group = "GROUP BY tenant_id, agent, b";
        let q = |sql: String| bind(client.query(&sql), range, width);

        let rows = q(format!(
            "SELECT {head}, countIf(event_type = 'conversation.started') AS started, uniqExact(conversation_id) AS active,
                    countIf(event_type = 'compliance.violation') AS violations
             FROM events FINAL WHERE {filter} {group}",
            filter = filter()
        ))
        .fetch_all::<CountsRow>()
        .await?;
        for r in rows {
            let b = slot(&mut buckets, scope(&r.tenant_id, &r.agent), r.b);
            (b.started, b.active, b.violations) = (r.started, r.active, r.violations);
        }

        let rows = q(format!(
            "SELECT {head}, JSONExtractString(payload, 'resolution') AS key, count() AS n
             FROM events FINAL WHERE {filter} AND event_type = 'conversation.ended' {group}, key",
            filter = filter()
        ))
        .fetch_all::<KeyedRow>()
        .await?;
        for r in rows {
            let Some(res) = Resolution::ALL.into_iter().find(|x| x.as_str() == r.key) else { continue };
            slot(&mut buckets, scope(&r.tenant_id, &r.agent), r.b).ended.insert(res, r.n);
        }

        let rows = q(format!(
            "SELECT {head}, JSONExtractString(payload, 'error_type') AS key, uniqExact(conversation_id) AS n
             FROM events FINAL WHERE {filter} AND event_type = 'error.occurred' {group}, key",
            filter = filter()
        ))
        .fetch_all::<KeyedRow>()
        .await?;
        for r in rows {
            slot(&mut buckets, scope(&r.tenant_id, &r.agent), r.b).errors.insert(r.key, r.n);
        }

        let rows = q(format!(
            "SELECT {head}, option AS key, count() AS n
             FROM decisions FINAL WHERE {filter} AND decision_type = 'intent_detection' {group}, key",
            filter = filter()
        ))
        .fetch_all::<KeyedRow>()
        .await?;
        for r in rows {
            slot(&mut buckets, scope(&r.tenant_id, &r.agent), r.b).intents.insert(r.key, r.n);
        }

        // The parts in LATENCY_PARTS' order.
        let columns = ["stt_ms", "end_of_utterance_ms", "llm_ttft_ms", "tts_ttfb_ms", "tool_ms", "response_ms", "response_time_seconds * 1000"];
        let quantile = |level: &str| -> String {
            columns.iter().map(|c| format!("ifNull(quantileExact({level})({c}), 0)")).collect::<Vec<_>>().join(", ")
        };
        let n: Vec<String> = columns.iter().map(|c| format!("count({c})")).collect();
        let rows = q(format!(
            "SELECT {head}, [{p50}] AS p50, [{p95}] AS p95, [{n}] AS n
             FROM interactions FINAL WHERE {filter} AND speaker_type = 'agent' {group}",
            p50 = quantile("0.5"),
            p95 = quantile("0.95"),
            n = n.join(", "),
            filter = filter()
        ))
        .fetch_all::<LatencyRow>()
        .await?;
        for r in rows {
            let b = slot(&mut buckets, scope(&r.tenant_id, &r.agent), r.b);
            for (((part, p50), p95), n) in LATENCY_PARTS.iter().zip(&r.p50).zip(&r.p95).zip(&r.n) {
                if *n > 0 {
                    b.latency.insert(part, super::series::Latency { p50: *p50, p95: *p95, n: *n });
                }
            }
        }

        let rows = q(format!(
            "SELECT {head}, sum(ifNull(sentiment_score, 0)) AS sum, count(sentiment_score) AS n
             FROM interactions FINAL WHERE {filter} AND speaker_type = 'customer' {group}",
            filter = filter()
        ))
        .fetch_all::<SentimentRow>()
        .await?;
        for r in rows {
            if r.n > 0 {
                slot(&mut buckets, scope(&r.tenant_id, &r.agent), r.b).sentiment = (r.sum, r.n);
            }
        }
    }
    let last_all = range.until.map(|u| super::series::bucket_of(u - time::Duration::microseconds(1), width));
    Ok(buckets
        .into_iter()
        .filter_map(|(scope, by_time)| {
            let first = *by_time.keys().next()?;
            let last = last_all.unwrap_or(first).max(*by_time.keys().next_back()?);
            let mut by_time = by_time;
            let buckets = (0..=((last - first) / width)).map(|k| by_time.remove(&(first + k * width)).unwrap_or_default()).collect();
            Some(Series { scope, start: OffsetDateTime::from_unix_timestamp(first).ok()?, bucket_seconds: width, buckets })
        })
        .collect())
}

/// The bucket of a scope at `b`, made when new.
fn slot(buckets: &mut BTreeMap<Scope, BTreeMap<i64, Bucket>>, scope: Scope, b: i64) -> &mut Bucket {
    buckets.entry(scope).or_default().entry(b).or_default()
}

/// The `WHERE` of every query: the range and the tenant, as parameters.
fn filter() -> String {
    "timestamp >= fromUnixTimestamp64Micro({since:Int64}, 'UTC') AND timestamp < fromUnixTimestamp64Micro({until:Int64}, 'UTC') \
     AND ({tenant:String} = '' OR tenant_id = {tenant:String})"
        .to_string()
}

fn bind(q: clickhouse::query::Query, range: &Range, width: i64) -> clickhouse::query::Query {
    q.param("w", width)
        .param("since", range.since.map_or(0, micros))
        // Without an end: the last instant DateTime64(6) holds (2299).
        .param("until", range.until.map_or(10_413_791_999_000_000, micros))
        .param("tenant", range.tenant.clone().unwrap_or_default())
}
