//! `query`: conversations, one conversation with its transcript and trace tree, a trace, and
//! stats, read through the [`Store`] trait from the local event log or ClickHouse.
//!
//! Usage errors (a bad `--since`, an unknown `--by`, `--channel` or `--resolution`, a malformed
//! trace id) are clap errors: exit 2 with the accepted values. An unknown conversation or trace,
//! or a store that cannot be read (a ClickHouse that is down), is exit 1 naming the source.
//!
//! Short ids: `query conversation` and `query trace` take a whole id, or a short one of at least
//! [`MIN_SHORT_ID`] characters that begins or ends exactly one stored id (a prefix, or the last
//! 12 characters the live view lists). A short id that fits several lists them and exits 2.

mod anomalies;
mod render;
mod tree;
mod when;

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::builder::{NonEmptyStringValueParser, PossibleValuesParser, TypedValueParser};
use clap::{Subcommand, ValueEnum};
use serphona_obs::store::clickhouse::ClickHouseStore;
use serphona_obs::store::local::LocalStore;
use serphona_obs::store::{ConversationFilter, GroupBy, IdKind, MIN_SHORT_ID, Store, StoreError, normalize_trace_id};
use serphona_obs::types::{Channel, Resolution};
use time::OffsetDateTime;

use super::Context;
use super::output::DataFormat;

/// `query` subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// List conversations, newest first.
    ///
    /// Filters combine with AND; `--since` and `--until` apply to the start time.
    ///
    /// JSON (`--output json`): an array of objects, one per conversation, with these fields
    /// (stable; new fields may be added): conversation_id, tenant_id, agent_id, customer_id,
    /// channel, language, started_at, ended_at (RFC 3339; null while active), duration_seconds,
    /// resolution (null while active), rating, agent_turns, customer_turns, decisions,
    /// transfers, errors, violations, mean_sentiment, last_speaker, trace_id, metadata (an
    /// object), usage ({input_tokens, output_tokens, cached_tokens, cost_usd} of the turns and
    /// decisions), turn_taking ({interruptions_by_customer, interruptions_by_agent, overlap_ms,
    /// dead_air_count, dead_air_ms, agent_talk_ms, customer_talk_ms}). CSV: the same columns,
    /// metadata as a JSON object, usage and turn_taking flattened (input_tokens, …,
    /// customer_talk_ms).
    Conversations(ConversationsArgs),
    /// One conversation: its attributes, transcript (with each voice turn's latency parts,
    /// interruptions, dead air, tokens and cost), totals, decisions and trace tree.
    ///
    /// JSON: an object {"conversation": {the fields of `query conversations`, with the totals
    /// in usage and turn_taking}, "events": [every event, as the event log line has it: a
    /// turn's latency, usage, dead_air_ms and interruption], "spans": [the conversation's spans,
    /// as `query trace` gives them]}. CSV: one row per event (timestamp, offset_seconds,
    /// event_type, speaker, content, sentiment, intent, confidence, detail, span_id, the
    /// latency parts stt_ms … response_ms, interrupted_by, overlap_ms, dead_air_ms, model,
    /// input_tokens, output_tokens, cached_tokens, cost_usd).
    Conversation(ConversationArgs),
    /// One trace as a tree of spans, with offsets, durations and span events.
    ///
    /// The spans are the conversation's root span (recorded when the conversation ends) and
    /// one span per turn, decision and transfer, read from the `spans` table in ClickHouse or
    /// derived from the event log.
    ///
    /// JSON: an array of spans ordered by start: trace_id, span_id, parent_span_id (null for a
    /// root), name, service, conversation_id, tenant_id, start, end (RFC 3339), attributes (an
    /// object), events (an array of {name, time, attributes}). CSV: one row per span
    /// (trace_id, span_id, parent_span_id, name, service, conversation_id, tenant_id, start,
    /// end, offset_ms, duration_ms, events, attributes).
    Trace(TraceArgs),
    /// Counts, resolution and transfer rates, p50/p95/p99 of duration and agent response
    /// time, mean rating and sentiment, the voice latency parts, interruptions, dead air,
    /// tokens and cost; in one row or one per group.
    ///
    /// JSON: an array of objects: group ("all" without --by; "active" for conversations not
    /// ended when grouping by resolution), conversations, ended, by_resolution (an object of
    /// counts), resolution_rate (resolved / ended), transfer_rate (with a transfer /
    /// conversations), interactions, duration_seconds and response_seconds ({p50, p95, p99},
    /// nearest-rank), mean_rating, mean_sentiment, latency_ms.{stt, end_of_utterance,
    /// llm_ttft, tts_ttfb, tool, greeting, response}.{p50, p95, p99} (milliseconds,
    /// nearest-rank over the turns that have the part), interruptions,
    /// interruptions_per_conversation, dead_air_ms, dead_air_share (dead air / (talk time +
    /// dead air)), tokens.{input, output, cached, input_per_conversation,
    /// output_per_conversation}, cost_usd.{total, per_conversation}. Rates and means are null
    /// when there is nothing to divide. CSV: the same, flattened (duration_p50, …,
    /// llm_ttft_ms_p50, …, cost_usd_total, and one column per resolution).
    Stats(StatsArgs),
    /// Incidents: signals of tenants and agents that left their baselines, grouped, each with
    /// a suspected cause.
    ///
    /// Signals per tenant (and per agent): conversations started, the resolution mix, error
    /// rates by type, each latency part's p95, customer sentiment, compliance violations and
    /// the intent mix, in 5-minute buckets, tested in 15-minute windows against the same
    /// window on earlier days or the trailing 6 hours (see docs/anomalies.md). The 7 days
    /// before --since are read as history for the baselines.
    ///
    /// JSON: an array of incidents: start, end (RFC 3339), tenant_id, suspected_cause,
    /// cause_metric, signals: [{metric, family, tenant_id, agent_id, start, end, observed,
    /// expected, score, direction}]. CSV: one row per signal, with its incident's start, end,
    /// tenant and cause.
    Anomalies(AnomaliesArgs),
}

/// Where to read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Source {
    /// The local event log under the data dir.
    Local,
    /// ClickHouse (the `clickhouse` section of the config).
    Clickhouse,
}

/// The flags every `query` command has.
#[derive(Debug, clap::Args)]
pub struct Common {
    /// Where to read: the local event log or ClickHouse. Default: clickhouse when the config
    /// has clickhouse.enabled: true, else local.
    #[arg(long, value_enum)]
    pub source: Option<Source>,
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value = "table")]
    pub output: DataFormat,
}

/// Which conversations (all filters optional, combined with AND).
#[derive(Debug, clap::Args)]
pub struct Filters {
    /// Only this tenant.
    #[arg(long)]
    pub tenant: Option<String>,
    /// Only this agent.
    #[arg(long)]
    pub agent: Option<String>,
    /// Only this channel.
    #[arg(long, value_parser = channel_parser())]
    pub channel: Option<Channel>,
    /// Only conversations that ended this way.
    #[arg(long, value_parser = resolution_parser())]
    pub resolution: Option<Resolution>,
    /// Started at or after: a duration before now (15m, 2h, 7d, 1h30m) or an RFC 3339 time
    /// (2025-01-31T09:00:00Z, or a date).
    #[arg(long, value_name = "WHEN", value_parser = when::parse_when_now)]
    pub since: Option<OffsetDateTime>,
    /// Started before: like --since.
    #[arg(long, value_name = "WHEN", value_parser = when::parse_when_now)]
    pub until: Option<OffsetDateTime>,
    /// Start metadata that must match (repeatable), e.g. --meta queue=billing.
    #[arg(long = "meta", value_name = "KEY=VALUE", value_parser = parse_meta)]
    pub metadata: Vec<(String, String)>,
}

/// `query conversations` flags.
#[derive(Debug, clap::Args)]
pub struct ConversationsArgs {
    #[command(flatten)]
    filters: Filters,
    /// At most this many (the newest); 0 for all.
    #[arg(long, short = 'n', default_value_t = 100)]
    limit: usize,
    #[command(flatten)]
    common: Common,
}

/// `query conversation` flags.
#[derive(Debug, clap::Args)]
pub struct ConversationArgs {
    /// The conversation id, or a unique short id: its first 8 or more characters, or its last
    /// ones (the live view lists the last 12).
    #[arg(value_name = "ID", value_parser = NonEmptyStringValueParser::new())]
    id: String,
    #[command(flatten)]
    common: Common,
}

/// `query trace` flags.
#[derive(Debug, clap::Args)]
pub struct TraceArgs {
    /// The trace id: 32 hex digits, as in the event log's trace_id, or a unique prefix (or end)
    /// of 8 or more of them.
    #[arg(value_name = "TRACE_ID", value_parser = parse_trace_id)]
    trace_id: String,
    #[command(flatten)]
    common: Common,
}

/// `query stats` flags.
#[derive(Debug, clap::Args)]
pub struct StatsArgs {
    /// One row per tenant, agent, channel or resolution.
    #[arg(long, visible_alias = "group-by", value_parser = group_parser())]
    by: Option<GroupBy>,
    #[command(flatten)]
    filters: Filters,
    #[command(flatten)]
    common: Common,
}

/// `query anomalies` flags.
#[derive(Debug, clap::Args)]
pub struct AnomaliesArgs {
    /// Incidents from: a duration before now (24h, 7d) or an RFC 3339 time.
    #[arg(long, value_name = "WHEN", value_parser = when::parse_when_now, default_value = "24h")]
    since: OffsetDateTime,
    /// Incidents before: like --since (default: now).
    #[arg(long, value_name = "WHEN", value_parser = when::parse_when_now)]
    until: Option<OffsetDateTime>,
    /// Only this tenant.
    #[arg(long)]
    tenant: Option<String>,
    #[command(flatten)]
    common: Common,
}

fn channel_parser() -> impl TypedValueParser<Value = Channel> {
    PossibleValuesParser::new(Channel::ALL.map(Channel::as_str)).map(|s| s.parse::<Channel>().expect("a listed channel"))
}

fn resolution_parser() -> impl TypedValueParser<Value = Resolution> {
    PossibleValuesParser::new(Resolution::ALL.map(Resolution::as_str))
        .map(|s| s.parse::<Resolution>().expect("a listed resolution"))
}

fn group_parser() -> impl TypedValueParser<Value = GroupBy> {
    PossibleValuesParser::new(["tenant", "agent", "channel", "resolution"]).map(|s| s.parse::<GroupBy>().expect("a listed group"))
}

/// A whole trace id (normalized), or a prefix of 8 to 31 hex digits (lower case).
fn parse_trace_id(s: &str) -> Result<String, String> {
    let short = s.trim().to_ascii_lowercase();
    if (MIN_SHORT_ID..32).contains(&short.len()) && short.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(short);
    }
    normalize_trace_id(s).map_err(|_| {
        format!(
            "expected 32 hexadecimal digits (not all zero), e.g. 4bf92f3577b34da6a3ce929d0e0e4736, or a unique prefix of {MIN_SHORT_ID} or more of them"
        )
    })
}

/// How many ids an ambiguous short id lists.
const AMBIGUOUS_SHOWN: usize = 10;

fn parse_meta(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err("expected KEY=VALUE, e.g. queue=billing".into()),
    }
}

impl Filters {
    fn to_filter(&self, limit: Option<usize>) -> Result<ConversationFilter, super::UsageError> {
        if let (Some(since), Some(until)) = (self.since, self.until) {
            if since >= until {
                return Err(super::UsageError(format!(
                    "--since ({}) is not before --until ({})",
                    super::output::rfc3339(since),
                    super::output::rfc3339(until)
                )));
            }
        }
        Ok(ConversationFilter {
            tenant: self.tenant.clone(),
            agent: self.agent.clone(),
            channel: self.channel,
            resolution: self.resolution,
            since: self.since,
            until: self.until,
            metadata: self.metadata.clone(),
            limit,
        })
    }
}

impl Command {
    fn common(&self) -> &Common {
        match self {
            Command::Conversations(a) => &a.common,
            Command::Conversation(a) => &a.common,
            Command::Trace(a) => &a.common,
            Command::Stats(a) => &a.common,
            Command::Anomalies(a) => &a.common,
        }
    }
}

/// Runs `query`.
pub fn run(ctx: Context, command: Command) -> anyhow::Result<ExitCode> {
    let config = &ctx.config;
    let source = command.common().source.unwrap_or(if config.clickhouse.enabled { Source::Clickhouse } else { Source::Local });
    let runtime = super::runtime()?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    match source {
        Source::Local => {
            let store = LocalStore::open(&config.data_dir);
            let reader = Reader {
                store: &store,
                what: format!("the local event log ({})", serphona_obs::sinks::event_log::event_log_dir(&config.data_dir).display()),
                timeout: None,
            };
            runtime.block_on(reader.run(command, &mut out))?;
            for file in store.damage().files() {
                tracing::warn!("{file}");
            }
        }
        Source::Clickhouse => {
            let ch = &config.clickhouse;
            let store = ClickHouseStore::new(ch);
            let reader = Reader {
                store: &store,
                what: format!("ClickHouse at {} (database {})", ch.endpoint, ch.database),
                timeout: Some(ch.request_timeout),
            };
            runtime.block_on(reader.run(command, &mut out))?;
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// A store, what to call it in messages, and how long one read may take.
struct Reader<'a, S> {
    store: &'a S,
    what: String,
    timeout: Option<Duration>,
}

impl<S: Store> Reader<'_, S> {
    /// A store call with the timeout, its error naming the source.
    async fn call<T>(&self, read: impl Future<Output = Result<T, StoreError>>) -> anyhow::Result<T> {
        let result = match self.timeout {
            Some(limit) => tokio::time::timeout(limit, read)
                .await
                .map_err(|_| anyhow::anyhow!("no answer within {} (clickhouse.request_timeout)", humantime::format_duration(limit)))?
                .map_err(anyhow::Error::from),
            None => read.await.map_err(anyhow::Error::from),
        };
        result.with_context(|| format!("reading {}", self.what))
    }

    /// The one stored id that `short` begins or ends; exit 1 when none does (or `short` is
    /// shorter than [`MIN_SHORT_ID`]), exit 2 listing them when several do.
    async fn resolve_short(&self, kind: IdKind, short: &str) -> anyhow::Result<String> {
        let what = match kind {
            IdKind::Conversation => "conversation",
            IdKind::Trace => "trace",
        };
        if short.chars().count() < MIN_SHORT_ID {
            anyhow::bail!("no {what} {short:?} in {} (a short id needs at least {MIN_SHORT_ID} characters)", self.what);
        }
        let mut ids = self.call(self.store.ids_matching(kind, short, AMBIGUOUS_SHOWN + 1)).await?;
        match ids.len() {
            0 => anyhow::bail!("no {what} {short:?} in {}", self.what),
            1 => Ok(ids.remove(0)),
            n => {
                let more = if n > AMBIGUOUS_SHOWN {
                    ids.truncate(AMBIGUOUS_SHOWN);
                    "\n  … and more"
                } else {
                    ""
                };
                Err(super::UsageError(format!(
                    "{what} id {short:?} is ambiguous: it begins or ends these {what} ids in {}:\n  {}{more}\ngive more of its characters",
                    self.what,
                    ids.join("\n  ")
                ))
                .into())
            }
        }
    }

    async fn run(&self, command: Command, out: &mut impl Write) -> anyhow::Result<()> {
        match command {
            Command::Conversations(args) => {
                let limit = (args.limit > 0).then_some(args.limit);
                let filter = args.filters.to_filter(limit)?;
                let rows = self.call(self.store.conversations(&filter)).await?;
                if rows.is_empty() && args.common.output == DataFormat::Table {
                    eprintln!("no conversations match in {}", self.what);
                } else if limit == Some(rows.len()) && args.common.output == DataFormat::Table {
                    eprintln!("showing the newest {}; --limit N for more, --limit 0 for all", rows.len());
                }
                render::conversations(&rows, args.common.output, out)
            }
            Command::Conversation(args) => {
                // A whole id first (it may also begin other ids: `c-1` and `c-10`), then a short one.
                let detail = match self.call(self.store.conversation(&args.id)).await? {
                    Some(detail) => detail,
                    None => {
                        let id = self.resolve_short(IdKind::Conversation, &args.id).await?;
                        match self.call(self.store.conversation(&id)).await? {
                            Some(detail) => detail,
                            None => anyhow::bail!("no conversation {:?} in {}", id, self.what),
                        }
                    }
                };
                let mut spans = match normalize_trace_id(&detail.summary.trace_id) {
                    Ok(trace_id) => self.call(self.store.trace(&trace_id)).await?,
                    Err(_) => Vec::new(),
                };
                // A trace may hold more than one conversation (both joined one upstream trace).
                spans.retain(|s| s.conversation_id == detail.summary.conversation_id);
                render::conversation(&detail, &spans, args.common.output, out)
            }
            Command::Trace(args) => {
                let trace_id = match args.trace_id.len() {
                    32 => args.trace_id,
                    _ => self.resolve_short(IdKind::Trace, &args.trace_id).await?,
                };
                let args = TraceArgs { trace_id, ..args };
                let spans = self.call(self.store.trace(&args.trace_id)).await?;
                if spans.is_empty() {
                    anyhow::bail!(
                        "no spans of trace {} in {} (a conversation's spans are recorded as its turns, decisions and end happen)",
                        args.trace_id,
                        self.what
                    );
                }
                render::trace(&args.trace_id, &spans, args.common.output, out)
            }
            Command::Stats(args) => {
                let filter = args.filters.to_filter(None)?;
                let rows = self.call(self.store.stats(&filter, args.by)).await?;
                render::stats(&rows, args.by, args.common.output, out)
            }
            Command::Anomalies(args) => {
                let until = args.until.unwrap_or_else(OffsetDateTime::now_utc);
                if args.since >= until {
                    return Err(super::UsageError(format!(
                        "--since ({}) is not before --until ({})",
                        super::output::rfc3339(args.since),
                        super::output::rfc3339(until)
                    ))
                    .into());
                }
                let params = serphona_obs::detect::Params::default();
                // Whole buckets only: the one in progress would look like a drop in volume.
                let width = params.bucket.as_secs() as i64;
                let now_bucket = serphona_obs::detect::series::bucket_of(OffsetDateTime::now_utc(), width);
                let until = until.min(OffsetDateTime::from_unix_timestamp(now_bucket).unwrap_or(until));
                let range = serphona_obs::detect::Range {
                    since: Some(args.since - anomalies::HISTORY),
                    until: Some(until),
                    tenant: args.tenant.clone(),
                };
                let series = self.call(self.store.detection_series(&range, params.bucket.as_secs() as i64)).await?;
                let mut incidents = serphona_obs::detect::detect(&series, &params);
                incidents.retain(|i| i.end > args.since && i.start < until);
                if incidents.is_empty() && args.common.output == DataFormat::Table {
                    eprintln!("no incidents in {} from {}", self.what, super::output::rfc3339(args.since));
                }
                anomalies::render(&incidents, args.common.output, out)
            }
        }
    }
}
