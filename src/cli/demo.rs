//! `demo`: a small contact center simulated through the real library into the embedded
//! default, then a summary read back through the store.

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use serphona_obs::config::DEFAULT_METRICS_LISTEN;
use serphona_obs::simulation::{Pace, RUN_METADATA_KEY, SimConfig, SimReport};
use serphona_obs::store::local::LocalStore;
use serphona_obs::store::{ConversationFilter, GroupBy, StatsRow, Store};
use serphona_obs::types::Resolution;
use serphona_obs::{Error, Observability};
use tabled::settings::object::Columns;
use tabled::settings::{Alignment, Style};

use super::Context;
use super::tail::source::Kind;

/// Virtual seconds per real second of the live view's run.
const DEFAULT_LIVE_SPEED: f64 = 10.0;
/// The longest wait between two steps of a conversation in a paced demo (an email thread's
/// hours between replies would keep the demo running for 20 minutes).
const LIVE_MAX_GAP: Duration = Duration::from_secs(30);
use super::output::{Format, seconds};

/// `demo` flags.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print progress and a summary table instead of the live view (also what happens
    /// without a terminal).
    #[arg(long)]
    pub no_tui: bool,
    /// Virtual seconds per real second. The live view paces the run at 10 by default so
    /// conversations unfold as you watch; without it the run goes as fast as it can.
    #[arg(long, value_name = "X")]
    pub speed: Option<f64>,
    /// Conversations to simulate.
    #[arg(long, short = 'n', default_value_t = 200)]
    pub conversations: usize,
    /// Seed: the same seed prints the same summary.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// New conversations per (virtual) second.
    #[arg(long, default_value_t = 2.0)]
    pub rate: f64,
    /// Most conversations in progress at once.
    #[arg(long, default_value_t = 50)]
    pub concurrency: usize,
    /// Serve /metrics here (default 127.0.0.1:9464, or a free port when that is taken).
    #[arg(long, value_name = "ADDR")]
    pub metrics_addr: Option<SocketAddr>,
    /// Keep /metrics up this many seconds after the run, so a scraper can read it.
    #[arg(long, value_name = "SECS", default_value_t = 0)]
    pub keep_serving: u64,
    /// table or json.
    #[arg(long, value_enum, default_value = "table")]
    pub output: Format,
}

/// Runs `demo`.
pub fn run(ctx: Context, args: Args) -> anyhow::Result<ExitCode> {
    let live_view = !args.no_tui && std::io::stdout().is_terminal();
    let pace = match (args.speed, live_view) {
        (Some(speed), _) => Pace::Realtime { speed, max_gap: Some(LIVE_MAX_GAP) },
        (None, true) => Pace::Realtime { speed: DEFAULT_LIVE_SPEED, max_gap: Some(LIVE_MAX_GAP) },
        (None, false) => Pace::Fast,
    };
    let sim = SimConfig {
        conversations: args.conversations,
        seed: args.seed,
        rate: args.rate,
        concurrency: args.concurrency,
        pace,
        run_id: None,
    };
    sim.validate().map_err(|e| super::UsageError(format!("--{e}")))?;
    let mut config = ctx.config;
    // The demo always writes the local event log: its summary is read back from it.
    config.logging.enabled = true;
    config.metrics.enabled = true;
    let explicit_addr = args.metrics_addr.is_some()
        || config.metrics.listen != DEFAULT_METRICS_LISTEN.parse::<SocketAddr>().expect("valid");
    if let Some(addr) = args.metrics_addr {
        config.metrics.listen = addr;
    }
    let data_dir = config.data_dir.clone();
    let obs = match Observability::init(config.clone()) {
        // Another demo or service has the default port: the demo still runs, elsewhere.
        Err(Error::Metrics(e)) if !explicit_addr => {
            tracing::info!("{e}; using a free port instead");
            config.metrics.listen = "127.0.0.1:0".parse().expect("valid");
            Observability::init(config)?
        }
        other => other?,
    };
    let metrics_url = obs.metrics_addr().map(|a| format!("http://{a}/metrics")).unwrap_or_default();
    eprintln!(
        "serphona-obs demo: {} conversations (seed {}) → event log in {}, metrics at {}",
        args.conversations,
        args.seed,
        serphona_obs::sinks::event_log::event_log_dir(&data_dir).display(),
        metrics_url
    );
    let report = if live_view { watch(&obs, &sim, &data_dir)? } else { super::simulate::drive(&obs, &sim, ctx.interactive)? };
    obs.flush(Duration::from_secs(30))?;
    let dropped: u64 = ["queue_full", "shutdown"]
        .iter()
        .map(|r| obs.metrics().pipeline.events_dropped.with_label_values(&[r]).get())
        .sum();
    if dropped > 0 {
        tracing::warn!("{dropped} events were dropped before the event log (queue full); the summary undercounts");
    }

    let store = LocalStore::open(&data_dir);
    let filter = ConversationFilter {
        metadata: vec![(RUN_METADATA_KEY.to_string(), report.run_id.clone())],
        ..Default::default()
    };
    let runtime = super::runtime()?;
    let (by_channel, total) = runtime.block_on(async {
        let by_channel = store.stats(&filter, Some(GroupBy::Channel)).await?;
        let total = store.stats(&filter, None).await?;
        Ok::<_, serphona_obs::store::StoreError>((by_channel, total))
    })?;

    let mut out = std::io::stdout().lock();
    match args.output {
        Format::Json => {
            serde_json::to_writer_pretty(
                &mut out,
                &serde_json::json!({
                    "run_id": report.run_id,
                    "seed": args.seed,
                    "conversations": report.conversations,
                    "events": report.events,
                    "events_by_type": report.events_by_type,
                    "by_channel": by_channel,
                    "total": total.first(),
                    "event_log": serphona_obs::sinks::event_log::event_log_dir(&data_dir),
                    "metrics_url": metrics_url,
                }),
            )?;
            writeln!(out)?;
        }
        Format::Table => {
            let rows: Vec<&StatsRow> = by_channel.iter().chain(total.iter()).collect();
            writeln!(out, "{}", summary_table(&rows))?;
            let types: Vec<String> = report.events_by_type.iter().map(|(t, n)| format!("{t} {n}")).collect();
            writeln!(out, "{} events: {}", report.events, types.join(", "))?;
        }
    }
    out.flush()?;
    drop(out);

    if args.keep_serving > 0 {
        eprintln!("serving {metrics_url} for {}s (Ctrl-C to stop)", args.keep_serving);
        let until = std::time::Instant::now() + Duration::from_secs(args.keep_serving);
        let stop = super::stop_flag();
        while std::time::Instant::now() < until && !stop.load(std::sync::atomic::Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    super::shutdown::shutdown(&obs, ctx.interactive)?;
    Ok(ExitCode::SUCCESS)
}

/// Runs the simulation on a thread while the live view shows it; `q` ends both (open
/// conversations end as abandoned) and the summary follows.
fn watch(obs: &Observability, sim: &SimConfig, data_dir: &std::path::Path) -> anyhow::Result<SimReport> {
    let receiver = obs.subscribe();
    let stop = super::stop_flag();
    let finished = Arc::new(AtomicBool::new(false));
    let simulation = {
        let (obs, sim, finished) = (obs.clone(), sim.clone(), finished.clone());
        std::thread::Builder::new().name("serphona-obs-demo".into()).spawn(move || {
            let report = super::simulate::drive(&obs, &sim, false);
            finished.store(true, Ordering::Relaxed);
            report
        })?
    };
    let label = format!("demo: {} conversations → {}", sim.conversations, serphona_obs::sinks::event_log::event_log_dir(data_dir).display());
    let options = serphona_obs::tui::Options { source: label, ..Default::default() };
    let status = || finished.load(Ordering::Relaxed).then(|| "simulation finished · q shows the summary".to_string());
    let exit = super::tail::watch(options, Kind::Live(receiver), &status);
    // Whatever ended the view ends the simulation too.
    stop.store(true, Ordering::Relaxed);
    let report = simulation.join().map_err(|_| anyhow::anyhow!("the simulation thread panicked"))?;
    exit?;
    report
}

/// Conversations by channel and resolution, turns, and duration percentiles.
fn summary_table(rows: &[&StatsRow]) -> String {
    let mut header = vec!["channel".to_string(), "conversations".into()];
    header.extend(Resolution::ALL.iter().map(|r| r.to_string()));
    header.extend(["interactions".into(), "p50 duration".into(), "p95 duration".into()]);
    let mut builder = tabled::builder::Builder::default();
    builder.push_record(header);
    for row in rows {
        let mut record = vec![if row.group == "all" { "total".into() } else { row.group.clone() }, row.conversations.to_string()];
        record.extend(Resolution::ALL.iter().map(|r| row.by_resolution.get(r.as_str()).copied().unwrap_or(0).to_string()));
        record.extend([
            row.interactions.to_string(),
            seconds(row.duration_seconds.p50),
            seconds(row.duration_seconds.p95),
        ]);
        builder.push_record(record);
    }
    let mut table = builder.build();
    table.with(Style::rounded());
    table.modify(Columns::new(1..), Alignment::right());
    super::output::fit(&mut table);
    table.to_string()
}
