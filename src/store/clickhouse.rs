//! The [`Store`] over ClickHouse: the same answers as the local event log, computed in SQL.
//!
//! Every value from a caller (tenant, agent, metadata keys and values, ids, times, limits) goes
//! to the server as a query parameter (`{name:Type}`), never into the SQL text. Conversations
//! are read from `conversations FINAL` (one row each, see `schemas/0001_conversations.sql`),
//! their turn counts, sentiment, response times, latency parts, turn-taking sums and usage from
//! `interactions FINAL`, the usage of their decisions from `decisions FINAL`, the other counts
//! from `events FINAL`. Percentiles are nearest-rank, computed in SQL the same way as
//! [`nearest_rank`](super::nearest_rank). A trace's spans are the rows of `spans FINAL`
//! (the root span's row is written when the conversation ends), with the span events derived
//! from the trace's rows of `events FINAL` exactly as the local store derives them. (`spans`
//! is ordered by tenant first, so finding a trace by its id alone reads the whole table's
//! `trace_id` column; the events are then read by tenant and conversation, in key order.)

use std::collections::BTreeMap;

use clickhouse::{Client, Row};
use serde::Deserialize;
use time::OffsetDateTime;

use super::fold::Acc;
use super::{
    ConversationDetail, ConversationFilter, ConversationSummary, CostStats, Cursor, GroupBy, IdKind, LatencyPercentiles,
    Percentiles, SpanRecord, StatsRow, Store, StoreError, TokenStats, UsageTotals, VoiceSums, assemble_trace,
    normalize_trace_id, to_micros,
};
use crate::config::ClickHouseConfig;
use crate::analytics::{ClickHouseError, client};
use crate::types::{Event, Speaker, TurnTaking};

/// The store over ClickHouse.
#[derive(Clone)]
pub struct ClickHouseStore {
    client: Client,
}

impl std::fmt::Debug for ClickHouseStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClickHouseStore").finish_non_exhaustive()
    }
}

/// A SQL fragment and the parameters it names.
#[derive(Default)]
struct Params {
    values: Vec<(String, String)>,
}

impl Params {
    fn add(&mut self, value: impl Into<String>) -> String {
        let name = format!("p{}", self.values.len());
        self.values.push((name.clone(), value.into()));
        name
    }

    fn bind(&self, mut q: clickhouse::query::Query) -> clickhouse::query::Query {
        for (name, value) in &self.values {
            q = q.param(name, value);
        }
        q
    }
}

/// The `WHERE` of `conversations FINAL` for a filter.
fn where_clause(f: &ConversationFilter, p: &mut Params) -> String {
    let mut parts = vec!["1".to_string()];
    if let Some(t) = &f.tenant {
        parts.push(format!("tenant_id = {{{}:String}}", p.add(t.as_str())));
    }
    if let Some(a) = &f.agent {
        parts.push(format!("agent_id = {{{}:String}}", p.add(a.as_str())));
    }
    if let Some(c) = f.channel {
        parts.push(format!("channel = {{{}:String}}", p.add(c.as_str())));
    }
    if let Some(r) = f.resolution {
        parts.push(format!("resolution = {{{}:String}}", p.add(r.as_str())));
    }
    if let Some(t) = f.since {
        parts.push(format!("started_at >= fromUnixTimestamp64Micro({{{}:Int64}}, 'UTC')", p.add(micros(t).to_string())));
    }
    if let Some(t) = f.until {
        parts.push(format!("started_at < fromUnixTimestamp64Micro({{{}:Int64}}, 'UTC')", p.add(micros(t).to_string())));
    }
    for (k, v) in &f.metadata {
        let (k, v) = (p.add(k.as_str()), p.add(v.as_str()));
        parts.push(format!("mapContains(metadata, {{{k}:String}}) AND metadata[{{{k}:String}}] = {{{v}:String}}"));
    }
    parts.join(" AND ")
}

fn micros(t: OffsetDateTime) -> i64 {
    (t.unix_timestamp_nanos() / 1000).clamp(i64::MIN as i128, i64::MAX as i128) as i64
}

/// The latency parts (as [`crate::types::TurnLatency::parts`] names them, in its order) and
/// their columns in `interactions`.
const LATENCY_COLUMNS: [(&str, &str); 7] = [
    ("stt", "stt_ms"),
    ("end_of_utterance", "end_of_utterance_ms"),
    ("llm_ttft", "llm_ttft_ms"),
    ("tts_ttfb", "tts_ttfb_ms"),
    ("tool", "tool_ms"),
    ("greeting", "greeting_ms"),
    ("response", "response_ms"),
];

/// Per-conversation rows: the conversation, its turn aggregates and its event counts.
fn per_conversation_sql(filter: &str) -> String {
    format!(
        "WITH conv AS (
            SELECT conversation_id, tenant_id, agent_id, customer_id, channel, language, started_at,
                   ended_at, duration_seconds, resolution, rating, trace_id, metadata
            FROM conversations FINAL WHERE {filter}
        ),
        turns AS (
            SELECT conversation_id,
                   countIf(speaker_type = 'agent') AS agent_turns,
                   countIf(speaker_type = 'customer') AS customer_turns,
                   sumIf(assumeNotNull(sentiment_score), sentiment_score IS NOT NULL AND speaker_type = 'customer') AS sentiment_sum,
                   countIf(sentiment_score IS NOT NULL AND speaker_type = 'customer') AS sentiment_n,
                   toString(argMax(speaker_type, (timestamp, event_id))) AS last_speaker,
                   groupArrayIf(assumeNotNull(response_time_seconds), response_time_seconds IS NOT NULL) AS responses,
                   {latency_arrays},
                   sum(ifNull(input_tokens, 0)) AS t_input,
                   sum(ifNull(output_tokens, 0)) AS t_output,
                   sum(ifNull(cached_tokens, 0)) AS t_cached,
                   sum(ifNull(cost_usd, 0)) AS t_cost,
                   toUInt32(countIf(interrupted_by = 'customer')) AS tt_by_customer,
                   toUInt32(countIf(interrupted_by = 'agent')) AS tt_by_agent,
                   sumIf(assumeNotNull(overlap_ms), interrupted_by != '' AND overlap_ms IS NOT NULL AND overlap_ms > 0) AS tt_overlap_ms,
                   toUInt32(countIf(dead_air_ms IS NOT NULL)) AS tt_dead_air_count,
                   sum(ifNull(dead_air_ms, 0)) AS tt_dead_air_ms,
                   sumIf(assumeNotNull(duration_ms), speaker_type = 'agent' AND duration_ms IS NOT NULL AND duration_ms >= 0) AS tt_agent_talk_ms,
                   sumIf(assumeNotNull(duration_ms), speaker_type = 'customer' AND duration_ms IS NOT NULL AND duration_ms >= 0) AS tt_customer_talk_ms
            FROM interactions FINAL
            WHERE conversation_id IN (SELECT conversation_id FROM conv)
            GROUP BY conversation_id
        ),
        decs AS (
            SELECT conversation_id,
                   sum(ifNull(input_tokens, 0)) AS d_input,
                   sum(ifNull(output_tokens, 0)) AS d_output,
                   sum(ifNull(cached_tokens, 0)) AS d_cached,
                   sum(ifNull(cost_usd, 0)) AS d_cost
            FROM decisions FINAL
            WHERE conversation_id IN (SELECT conversation_id FROM conv)
            GROUP BY conversation_id
        ),
        counts AS (
            SELECT conversation_id,
                   countIf(event_type = 'decision.made') AS decisions,
                   countIf(event_type = 'transfer.initiated') AS transfers,
                   countIf(event_type = 'error.occurred') AS errors,
                   countIf(event_type = 'compliance.violation') AS violations
            FROM events FINAL
            WHERE conversation_id IN (SELECT conversation_id FROM conv)
            GROUP BY conversation_id
        )
        SELECT conv.conversation_id AS conversation_id, toString(tenant_id) AS tenant_id, toString(agent_id) AS agent_id,
               customer_id, toString(channel) AS channel, toString(language) AS language, started_at, ended_at,
               duration_seconds, toNullable(toString(resolution)) AS resolution_s, rating,
               agent_turns, customer_turns, decisions, transfers, errors, violations,
               sentiment_sum, sentiment_n, last_speaker, responses, trace_id, metadata,
               {latency_names},
               t_input + d_input AS input_tokens, t_output + d_output AS output_tokens,
               t_cached + d_cached AS cached_tokens, t_cost + d_cost AS cost_usd,
               tt_by_customer, tt_by_agent, tt_overlap_ms, tt_dead_air_count, tt_dead_air_ms,
               tt_agent_talk_ms, tt_customer_talk_ms
        FROM conv
        LEFT JOIN turns ON turns.conversation_id = conv.conversation_id
        LEFT JOIN decs ON decs.conversation_id = conv.conversation_id
        LEFT JOIN counts ON counts.conversation_id = conv.conversation_id",
        latency_arrays = LATENCY_COLUMNS
            .iter()
            .map(|(part, column)| format!("groupArrayIf(assumeNotNull({column}), {column} IS NOT NULL) AS l_{part}"))
            .collect::<Vec<_>>()
            .join(",\n                   "),
        latency_names = LATENCY_COLUMNS.iter().map(|(part, _)| format!("l_{part}")).collect::<Vec<_>>().join(", "),
    )
}

#[derive(Debug, Row, Deserialize)]
struct SummaryRow {
    conversation_id: String,
    tenant_id: String,
    agent_id: String,
    customer_id: String,
    channel: String,
    language: String,
    #[serde(with = "clickhouse::serde::time::datetime64::micros")]
    started_at: OffsetDateTime,
    #[serde(with = "clickhouse::serde::time::datetime64::micros::option")]
    ended_at: Option<OffsetDateTime>,
    duration_seconds: Option<f64>,
    resolution_s: Option<String>,
    rating: Option<u8>,
    agent_turns: u64,
    customer_turns: u64,
    decisions: u64,
    transfers: u64,
    errors: u64,
    violations: u64,
    sentiment_sum: f64,
    sentiment_n: u64,
    last_speaker: String,
    trace_id: String,
    metadata: Vec<(String, String)>,
    input_tokens: u64,
    output_tokens: u64,
    cached_tokens: u64,
    cost_usd: f64,
    tt_by_customer: u32,
    tt_by_agent: u32,
    tt_overlap_ms: f64,
    tt_dead_air_count: u32,
    tt_dead_air_ms: f64,
    tt_agent_talk_ms: f64,
    tt_customer_talk_ms: f64,
}

impl SummaryRow {
    fn into_summary(self) -> ConversationSummary {
        let channel = self.channel.parse().ok();
        ConversationSummary {
            conversation_id: self.conversation_id,
            tenant_id: self.tenant_id,
            agent_id: self.agent_id,
            customer_id: self.customer_id,
            channel,
            language: self.language,
            started_at: self.started_at,
            ended_at: self.ended_at,
            duration_seconds: self.duration_seconds,
            resolution: self.resolution_s.and_then(|r| r.parse().ok()),
            rating: self.rating,
            agent_turns: self.agent_turns as u32,
            customer_turns: self.customer_turns as u32,
            decisions: self.decisions as u32,
            transfers: self.transfers as u32,
            errors: self.errors as u32,
            violations: self.violations as u32,
            mean_sentiment: (self.sentiment_n > 0).then(|| self.sentiment_sum / self.sentiment_n as f64),
            last_speaker: match self.last_speaker.as_str() {
                "agent" => Some(Speaker::Agent),
                "customer" => Some(Speaker::Customer),
                _ => None,
            },
            trace_id: self.trace_id,
            metadata: self.metadata.into_iter().collect(),
            usage: UsageTotals {
                input_tokens: self.input_tokens,
                output_tokens: self.output_tokens,
                cached_tokens: self.cached_tokens,
                cost_usd: self.cost_usd,
            },
            turn_taking: TurnTaking {
                interruptions_by_customer: self.tt_by_customer,
                interruptions_by_agent: self.tt_by_agent,
                overlap_ms: self.tt_overlap_ms,
                dead_air_count: self.tt_dead_air_count,
                dead_air_ms: self.tt_dead_air_ms,
                agent_talk_ms: self.tt_agent_talk_ms,
                customer_talk_ms: self.tt_customer_talk_ms,
            },
        }
    }
}

#[derive(Debug, Row, Deserialize)]
struct StatsSqlRow {
    grp: String,
    conversations: u64,
    ended: u64,
    by_resolution: Vec<(String, u64)>,
    transferred: u64,
    interactions: u64,
    d50: Option<f64>,
    d95: Option<f64>,
    d99: Option<f64>,
    r50: Option<f64>,
    r95: Option<f64>,
    r99: Option<f64>,
    rating_sum: f64,
    rated: u64,
    sentiment_sum: f64,
    sentiment_n: u64,
    /// `[p50, p95, p99]` of each latency part, in the order of [`LATENCY_COLUMNS`].
    lat_stt: Vec<Option<f64>>,
    lat_end_of_utterance: Vec<Option<f64>>,
    lat_llm_ttft: Vec<Option<f64>>,
    lat_tts_ttfb: Vec<Option<f64>>,
    lat_tool: Vec<Option<f64>>,
    lat_greeting: Vec<Option<f64>>,
    lat_response: Vec<Option<f64>>,
    interruptions: u64,
    dead_air_ms: f64,
    talk_ms: f64,
    input_tokens: u64,
    output_tokens: u64,
    cached_tokens: u64,
    cost_usd: f64,
}

fn percentiles(v: &[Option<f64>]) -> Percentiles {
    let at = |i: usize| v.get(i).copied().flatten();
    Percentiles { p50: at(0), p95: at(1), p99: at(2) }
}

/// Nearest rank of a sorted array column in SQL: the same arithmetic as [`nearest_rank`].
fn rank_sql(array: &str, q: &str) -> String {
    format!(
        "if(length({array}) = 0, NULL, toNullable(arrayElement({array}, least(length({array}), toUInt64(greatest(1, ceil({q} * length({array}))))))))"
    )
}

#[derive(Debug, Row, Deserialize)]
struct PayloadRow {
    id_s: String,
    payload: String,
}

#[derive(Debug, Row, Deserialize)]
struct SpanSqlRow {
    tenant_id: String,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
    conversation_id: String,
    name: String,
    service: String,
    #[serde(with = "clickhouse::serde::time::datetime64::micros")]
    start_time: OffsetDateTime,
    #[serde(with = "clickhouse::serde::time::datetime64::micros")]
    end_time: OffsetDateTime,
    attributes: Vec<(String, String)>,
}

impl SpanSqlRow {
    fn into_span(self) -> SpanRecord {
        SpanRecord {
            trace_id: self.trace_id,
            span_id: self.span_id,
            parent_span_id: Some(self.parent_span_id).filter(|p| !p.is_empty()),
            name: self.name,
            service: self.service,
            conversation_id: self.conversation_id,
            tenant_id: self.tenant_id,
            start: to_micros(self.start_time),
            end: to_micros(self.end_time),
            attributes: self.attributes.into_iter().collect(),
            events: Vec::new(),
        }
    }
}

#[derive(Debug, Row, Deserialize)]
struct IdRow {
    id: String,
}

/// The SQL of [`Store::ids_matching`]: the short id is the parameter `short`, never SQL text.
fn ids_matching_sql(kind: IdKind) -> &'static str {
    match kind {
        IdKind::Conversation => {
            "SELECT DISTINCT conversation_id AS id FROM events
             WHERE startsWith(conversation_id, {short:String}) OR endsWith(conversation_id, {short:String})
             ORDER BY id LIMIT {limit:UInt64}"
        }
        IdKind::Trace => {
            "SELECT DISTINCT trace_id AS id FROM events
             WHERE startsWith(trace_id, {short:String}) OR endsWith(trace_id, {short:String})
             ORDER BY id LIMIT {limit:UInt64}"
        }
    }
}

#[derive(Debug, Row, Deserialize)]
struct CursorRow {
    id_s: String,
    payload: String,
    at: i64,
}

impl ClickHouseStore {
    /// The store over the configured server and database.
    pub fn new(config: &ClickHouseConfig) -> ClickHouseStore {
        ClickHouseStore { client: client(config) }
    }

    /// The store over an existing client.
    pub fn with_client(client: Client) -> ClickHouseStore {
        ClickHouseStore { client }
    }

    fn parse(event_id: &str, payload: &str) -> Result<Event, StoreError> {
        Event::from_json(payload)
            .map_err(|e| StoreError::BadPayload { event_id: event_id.to_string(), message: e.to_string() })
    }

    async fn summaries(&self, filter: &ConversationFilter) -> Result<Vec<ConversationSummary>, StoreError> {
        let mut p = Params::default();
        // `?fields`: the client selects the row's columns only (not the response times,
        // which only stats need).
        let mut sql = format!(
            "SELECT ?fields FROM ({})\nORDER BY started_at DESC, conversation_id DESC",
            per_conversation_sql(&where_clause(filter, &mut p))
        );
        if let Some(limit) = filter.limit {
            sql.push_str(&format!("\nLIMIT {{{}:UInt64}}", p.add(limit.to_string())));
        }
        let rows = p.bind(self.client.query(&sql)).fetch_all::<SummaryRow>().await.map_err(ClickHouseError::from)?;
        Ok(rows.into_iter().map(SummaryRow::into_summary).collect())
    }
}

impl Store for ClickHouseStore {
    async fn conversations(&self, filter: &ConversationFilter) -> Result<Vec<ConversationSummary>, StoreError> {
        self.summaries(filter).await
    }

    async fn conversation(&self, id: &str) -> Result<Option<ConversationDetail>, StoreError> {
        let rows = self
            .client
            .query(
                "SELECT toString(event_id) AS id_s, payload FROM events FINAL
                 WHERE conversation_id = {id:String} ORDER BY timestamp, event_id",
            )
            .param("id", id)
            .fetch_all::<PayloadRow>()
            .await
            .map_err(ClickHouseError::from)?;
        let mut acc: Option<Acc> = None;
        for row in rows {
            let event = Self::parse(&row.id_s, &row.payload)?;
            acc.get_or_insert_with(|| Acc::new(&event)).add(&event, true);
        }
        Ok(acc.map(|mut a| {
            // The local store's order: ClickHouse orders UUIDs differently from their bytes, so
            // two events of one timestamp (a transfer and its initiation) came out swapped.
            a.events.sort_by_key(|e| (e.timestamp, e.event_id));
            ConversationDetail { summary: a.summary, events: a.events }
        }))
    }

    async fn stats(&self, filter: &ConversationFilter, by: Option<GroupBy>) -> Result<Vec<StatsRow>, StoreError> {
        let mut p = Params::default();
        let per = per_conversation_sql(&where_clause(filter, &mut p));
        let group = match by {
            None => "'all'",
            Some(GroupBy::Tenant) => "tenant_id",
            Some(GroupBy::Agent) => "agent_id",
            Some(GroupBy::Channel) => "if(channel = '', 'unknown', channel)",
            Some(GroupBy::Resolution) => "ifNull(resolution_s, 'active')",
        };
        let sql = format!(
            "SELECT grp, conversations, ended, by_resolution, transferred, interactions,
                    {d50} AS d50, {d95} AS d95, {d99} AS d99, {r50} AS r50, {r95} AS r95, {r99} AS r99,
                    rating_sum, rated, sentiment_sum, sentiment_n,
                    {latency_ranks},
                    interruptions, dead_air_ms, talk_ms, input_tokens, output_tokens, cached_tokens, cost_usd
             FROM (
                SELECT {group} AS grp,
                       count() AS conversations,
                       countIf(resolution_s IS NOT NULL) AS ended,
                       CAST(sumMapIf(map(ifNull(resolution_s, ''), toUInt64(1)), resolution_s IS NOT NULL) AS Array(Tuple(String, UInt64))) AS by_resolution,
                       countIf(transfers > 0) AS transferred,
                       sum(agent_turns + customer_turns) AS interactions,
                       arraySort(groupArrayIf(assumeNotNull(duration_seconds), duration_seconds IS NOT NULL)) AS durations,
                       arraySort(arrayFlatten(groupArray(responses))) AS all_responses,
                       toFloat64(sumIf(toUInt64(assumeNotNull(rating)), rating IS NOT NULL)) AS rating_sum,
                       countIf(rating IS NOT NULL) AS rated,
                       sum(sentiment_sum) AS sentiment_sum,
                       sum(sentiment_n) AS sentiment_n,
                       {latency_sorted},
                       sum(tt_by_customer + tt_by_agent) AS interruptions,
                       sum(tt_dead_air_ms) AS dead_air_ms,
                       sum(tt_agent_talk_ms + tt_customer_talk_ms) AS talk_ms,
                       sum(input_tokens) AS input_tokens,
                       sum(output_tokens) AS output_tokens,
                       sum(cached_tokens) AS cached_tokens,
                       sum(cost_usd) AS cost_usd
                FROM ({per})
                GROUP BY grp
             )
             ORDER BY grp",
            d50 = rank_sql("durations", "0.5"),
            d95 = rank_sql("durations", "0.95"),
            d99 = rank_sql("durations", "0.99"),
            r50 = rank_sql("all_responses", "0.5"),
            r95 = rank_sql("all_responses", "0.95"),
            r99 = rank_sql("all_responses", "0.99"),
            latency_sorted = LATENCY_COLUMNS
                .iter()
                .map(|(part, _)| format!("arraySort(arrayFlatten(groupArray(l_{part}))) AS all_{part}"))
                .collect::<Vec<_>>()
                .join(",\n                       "),
            latency_ranks = LATENCY_COLUMNS
                .iter()
                .map(|(part, _)| {
                    let array = format!("all_{part}");
                    format!(
                        "[{}, {}, {}] AS lat_{part}",
                        rank_sql(&array, "0.5"),
                        rank_sql(&array, "0.95"),
                        rank_sql(&array, "0.99")
                    )
                })
                .collect::<Vec<_>>()
                .join(",\n                    "),
        );
        let rows = p.bind(self.client.query(&sql)).fetch_all::<StatsSqlRow>().await.map_err(ClickHouseError::from)?;
        let mut out: Vec<StatsRow> = rows
            .into_iter()
            .map(|r| {
                let by_resolution: BTreeMap<String, u64> = r.by_resolution.into_iter().filter(|(_, n)| *n > 0).collect();
                let ratio = |num: u64, den: u64| (den > 0).then(|| num as f64 / den as f64);
                let voice = VoiceSums {
                    conversations: r.conversations,
                    interruptions: r.interruptions,
                    dead_air_ms: r.dead_air_ms,
                    talk_ms: r.talk_ms,
                    usage: UsageTotals {
                        input_tokens: r.input_tokens,
                        output_tokens: r.output_tokens,
                        cached_tokens: r.cached_tokens,
                        cost_usd: r.cost_usd,
                    },
                };
                let (interruptions_per_conversation, dead_air_share, tokens, cost_usd) = voice.figures();
                StatsRow {
                    group: r.grp,
                    conversations: r.conversations,
                    ended: r.ended,
                    resolution_rate: ratio(*by_resolution.get("resolved").unwrap_or(&0), r.ended),
                    transfer_rate: ratio(r.transferred, r.conversations),
                    by_resolution,
                    interactions: r.interactions,
                    duration_seconds: Percentiles { p50: r.d50, p95: r.d95, p99: r.d99 },
                    response_seconds: Percentiles { p50: r.r50, p95: r.r95, p99: r.r99 },
                    mean_rating: (r.rated > 0).then(|| r.rating_sum / r.rated as f64),
                    mean_sentiment: (r.sentiment_n > 0).then(|| r.sentiment_sum / r.sentiment_n as f64),
                    latency_ms: LatencyPercentiles {
                        stt: percentiles(&r.lat_stt),
                        end_of_utterance: percentiles(&r.lat_end_of_utterance),
                        llm_ttft: percentiles(&r.lat_llm_ttft),
                        tts_ttfb: percentiles(&r.lat_tts_ttfb),
                        tool: percentiles(&r.lat_tool),
                        greeting: percentiles(&r.lat_greeting),
                        response: percentiles(&r.lat_response),
                    },
                    interruptions: r.interruptions,
                    interruptions_per_conversation,
                    dead_air_ms: r.dead_air_ms,
                    dead_air_share,
                    tokens,
                    cost_usd,
                }
            })
            .collect();
        if by.is_none() && out.is_empty() {
            out.push(StatsRow {
                group: "all".into(),
                conversations: 0,
                ended: 0,
                by_resolution: BTreeMap::new(),
                resolution_rate: None,
                transfer_rate: None,
                interactions: 0,
                duration_seconds: Percentiles::default(),
                response_seconds: Percentiles::default(),
                mean_rating: None,
                mean_sentiment: None,
                latency_ms: LatencyPercentiles::default(),
                interruptions: 0,
                interruptions_per_conversation: None,
                dead_air_ms: 0.0,
                dead_air_share: None,
                tokens: TokenStats::default(),
                cost_usd: CostStats::default(),
            });
        }
        Ok(out)
    }

    async fn trace(&self, trace_id: &str) -> Result<Vec<SpanRecord>, StoreError> {
        let id = normalize_trace_id(trace_id)?;
        let spans = self
            .client
            .query(
                "SELECT toString(tenant_id) AS tenant_id, trace_id, span_id, parent_span_id, conversation_id,
                        toString(name) AS name, toString(service) AS service, start_time, end_time, attributes
                 FROM spans FINAL WHERE trace_id = {id:String}",
            )
            .param("id", id.as_str())
            .fetch_all::<SpanSqlRow>()
            .await
            .map_err(ClickHouseError::from)?;
        if spans.is_empty() {
            return Ok(Vec::new());
        }
        // The events of the spans' conversations: their tenants and ids narrow the read to
        // the primary key's ranges (`events` is ordered by tenant, then conversation).
        let mut tenants: Vec<&str> = spans.iter().map(|s| s.tenant_id.as_str()).collect();
        let mut conversations: Vec<&str> = spans.iter().map(|s| s.conversation_id.as_str()).collect();
        tenants.sort_unstable();
        tenants.dedup();
        conversations.sort_unstable();
        conversations.dedup();
        let rows = self
            .client
            .query(
                "SELECT toString(event_id) AS id_s, payload FROM events FINAL
                 WHERE tenant_id IN {tenants:Array(String)} AND conversation_id IN {conversations:Array(String)}
                   AND trace_id = {id:String}
                 ORDER BY timestamp, event_id",
            )
            .param("tenants", &tenants)
            .param("conversations", &conversations)
            .param("id", id.as_str())
            .fetch_all::<PayloadRow>()
            .await
            .map_err(ClickHouseError::from)?;
        let mut events = rows.iter().map(|r| Self::parse(&r.id_s, &r.payload)).collect::<Result<Vec<_>, _>>()?;
        // The local store's order (ClickHouse orders UUIDs differently from their bytes).
        events.sort_by_key(|e| (e.timestamp, e.event_id));
        Ok(assemble_trace(spans.into_iter().map(SpanSqlRow::into_span).collect(), &events))
    }

    /// Reads the `events` table (as [`Store::conversation`] and the local store do), so a
    /// conversation that has not ended is found too.
    async fn ids_matching(&self, kind: IdKind, short: &str, limit: usize) -> Result<Vec<String>, StoreError> {
        let Some(short) = kind.normalize(short) else { return Ok(Vec::new()) };
        let rows = self
            .client
            .query(ids_matching_sql(kind))
            .param("short", short.as_str())
            .param("limit", limit as u64)
            .fetch_all::<IdRow>()
            .await
            .map_err(ClickHouseError::from)?;
        Ok(rows.into_iter().map(|r| r.id).collect())
    }

    /// Ordered by the time ClickHouse received the rows (`inserted_at`), then `event_id`.
    /// Rows of two inserts that were in flight together can commit out of that order; a
    /// reader polling at that instant may miss the earlier one (tail's view is best effort).
    async fn events_since(&self, cursor: Option<&Cursor>, limit: usize) -> Result<(Vec<Event>, Cursor), StoreError> {
        let (at, id) = match cursor.map(|c| c.0.as_str()).filter(|c| !c.is_empty()) {
            None => (i64::MIN, uuid::Uuid::nil()),
            Some(c) => c
                .split_once(':')
                .and_then(|(a, i)| Some((a.parse::<i64>().ok()?, uuid::Uuid::parse_str(i).ok()?)))
                .ok_or_else(|| StoreError::BadCursor(c.to_string()))?,
        };
        let rows = self
            .client
            .query(
                "SELECT toString(event_id) AS id_s, payload, toUnixTimestamp64Micro(inserted_at) AS at
                 FROM events
                 WHERE (toUnixTimestamp64Micro(inserted_at), event_id) > ({at:Int64}, toUUID({id:String}))
                 ORDER BY inserted_at, event_id
                 LIMIT {limit:UInt64}",
            )
            .param("at", at)
            .param("id", id.to_string())
            .param("limit", limit as u64)
            .fetch_all::<CursorRow>()
            .await
            .map_err(ClickHouseError::from)?;
        let next = match rows.last() {
            Some(last) => Cursor(format!("{}:{}", last.at, last.id_s)),
            None => cursor.cloned().unwrap_or_else(|| Cursor(format!("{}:{}", i64::MIN, uuid::Uuid::nil()))),
        };
        let events = rows.iter().map(|r| Self::parse(&r.id_s, &r.payload)).collect::<Result<Vec<_>, _>>()?;
        Ok((events, next))
    }

    /// `GROUP BY` in the engine ([`crate::detect::clickhouse`]).
    async fn detection_series(&self, range: &crate::detect::Range, bucket_seconds: i64) -> Result<Vec<crate::detect::Series>, StoreError> {
        Ok(crate::detect::clickhouse::series(&self.client, range, bucket_seconds).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_become_parameters_never_sql_text() {
        let hostile = "x'; DROP TABLE conversations; -- `{p0:String}` \\ ?";
        let f = ConversationFilter {
            tenant: Some(hostile.into()),
            agent: Some(hostile.into()),
            metadata: vec![(hostile.into(), hostile.into())],
            since: Some(OffsetDateTime::UNIX_EPOCH),
            ..Default::default()
        };
        let mut p = Params::default();
        let sql = where_clause(&f, &mut p);
        assert!(!sql.contains("DROP") && !sql.contains(hostile), "{sql}");
        assert_eq!(p.values.len(), 5);
        assert!(p.values.iter().filter(|(_, v)| v == hostile).count() == 4);
        assert!(sql.contains("tenant_id = {p0:String}"), "{sql}");
    }
}
