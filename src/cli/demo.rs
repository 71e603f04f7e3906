//! `demo`: a small contact center simulated through the real library into the embedded
//! default, then a summary read back through the store.

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
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

/// Script seconds per real second of the live view's run.
const DEFAULT_LIVE_SPEED: f64 = 10.0;
/// The longest pause within a paced demo's conversation, in script time: an email thread's
/// hours become a minute, so the default demo ends in about two real minutes.
const DEMO_MAX_GAP: Duration = Duration::from_secs(60);
/// The trickle that keeps the dashboards' rates alive while `--keep-serving` runs: new
/// conversations per real second.
const TRICKLE_RATE: f64 = 1.0;
use super::output::{Format, seconds};

/// `demo` flags.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print progress and a summary table instead of the live view (also what happens
    /// without a terminal).
    #[arg(long)]
    pub no_tui: bool,
    /// Script seconds per real second. The live view paces the run at 10 by default so
    /// conversations unfold as you watch (events are dated when they happen, so a paced
    /// conversation lasts its script's time divided by X, and pauses longer than a minute of
    /// script time are shortened to one); without it the run goes as fast as it can.
    #[arg(long, value_name = "X")]
    pub speed: Option<f64>,
    /// A scenario file (YAML; see docs/scenarios.md) instead of the built-in demo scenario.
    #[arg(long, value_name = "FILE")]
    pub scenario: Option<std::path::PathBuf>,
    /// Conversations to simulate [default: 200; with --scenario, as many as arrive in its
    /// duration].
    #[arg(long, short = 'n')]
    pub conversations: Option<usize>,
    /// Seed: the same seed prints the same summary [default: 7, or the scenario's].
    #[arg(long)]
    pub seed: Option<u64>,
    /// New conversations per (virtual) second [default: 2, or the scenario's
    /// conversations_per_hour].
    #[arg(long)]
    pub rate: Option<f64>,
    /// Most conversations in progress at once.
    #[arg(long, default_value_t = 50)]
    pub concurrency: usize,
    /// Serve /metrics here (default 127.0.0.1:9464, or a free port when that is taken).
    #[arg(long, value_name = "ADDR")]
    pub metrics_addr: Option<SocketAddr>,
    /// Keep /metrics up this many seconds after the run, so a scraper can read it; a trickle
    /// of new conversations (about one a second, paced in real time) goes on meanwhile, so
    /// the dashboards' rates have traffic to show.
    #[arg(long, value_name = "SECS", default_value_t = 0)]
    pub keep_serving: u64,
    /// table or json.
    #[arg(long, short = 'o', value_enum, default_value = "table")]
    pub output: Format,
}

/// Runs `demo`.
pub fn run(ctx: Context, args: Args) -> anyhow::Result<ExitCode> {
    let live_view = !args.no_tui && std::io::stdout().is_terminal();
    let pace = match (args.speed, live_view) {
        (Some(speed), _) => Pace::Realtime { speed, max_gap: Some(DEMO_MAX_GAP) },
        (None, true) => Pace::Realtime { speed: DEFAULT_LIVE_SPEED, max_gap: Some(DEMO_MAX_GAP) },
        (None, false) => Pace::Fast,
    };
    let (scenario, from_file) = super::simulate::load_scenario(args.scenario.as_deref(), None)?;
    let seed = args.seed.unwrap_or(if from_file { scenario.seed } else { 7 });
    let rate = args.rate.unwrap_or(if from_file { scenario.rate() } else { 2.0 });
    let conversations = args.conversations.unwrap_or_else(|| {
        if from_file { serphona_obs::simulation::conversations_in(scenario.duration, rate, seed) } else { 200 }
    });
    let sim = SimConfig { conversations, seed, rate, concurrency: args.concurrency, pace, run_id: None };
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
            tracing::info!("{}; using a free port instead", serphona_obs::ErrorChain(&e));
            config.metrics.listen = "127.0.0.1:0".parse().expect("valid");
            Observability::init(config)?
        }
        other => other?,
    };
    let metrics_url = obs.metrics_addr().map(|a| format!("http://{a}/metrics")).unwrap_or_default();
    eprintln!(
        "serphona-obs demo: {} conversations (seed {}) → event log in {}, metrics at {}",
        conversations,
        seed,
        serphona_obs::sinks::event_log::event_log_dir(&data_dir).display(),
        metrics_url
    );
    if let Pace::Realtime { speed, .. } = pace {
        let model = serphona_obs::simulation::Model::new(&scenario);
        let length = serphona_obs::simulation::schedule_length_of(&sim, &model).as_secs_f64() / speed;
        eprintln!("paced at {speed}×: about {}; q or Ctrl-C ends it early", seconds(Some(length)));
    }
    let report =
        if live_view {
            watch(&obs, &sim, &scenario, &data_dir)?
        } else {
            super::simulate::drive(&obs, &sim, &scenario, ctx.interactive)?
        };
    obs.flush(Duration::from_secs(30))?;
    let dropped: u64 = ["queue_full", "shutdown"]
        .iter()
        .map(|r| obs.metrics().pipeline.events_dropped.with_label_values(&[r]).get())
        .sum();
    if dropped > 0 {
        tracing::warn!("{dropped} events were dropped before the event log (queue full); the summary undercounts");
    }

    let lost = super::shutdown::lost(&obs);
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
                    "seed": seed,
                    "usage": report.usage,
                    "conversations": report.conversations,
                    "events": report.events,
                    "events_by_type": report.events_by_type,
                    "planted": report.planted,
                    "redacted": super::simulate::redacted(&obs),
                    "by_channel": by_channel,
                    "total": total.first(),
                    "event_log": serphona_obs::sinks::event_log::event_log_dir(&data_dir),
                    "metrics_url": metrics_url,
                    "events_lost": lost.total(),
                    "damaged_lines": store.skipped_lines(),
                }),
            )?;
            writeln!(out)?;
        }
        Format::Table => {
            let rows: Vec<&StatsRow> = by_channel.iter().chain(total.iter()).collect();
            writeln!(out, "{}", summary_table(&rows))?;
            let types: Vec<String> = report.events_by_type.iter().map(|(t, n)| format!("{t} {n}")).collect();
            writeln!(out, "{} events: {}", report.events, types.join(", "))?;
            if let Some(line) = super::simulate::personal_data_line(&report.planted, &obs) {
                writeln!(out, "{line}")?;
            }
            writeln!(out, "{}", super::simulate::usage_line(&report))?;
            if let Some(message) = lost.message() {
                writeln!(out, "error: {message}; the summary undercounts")?;
            }
        }
    }
    out.flush()?;
    drop(out);

    if args.keep_serving > 0 {
        eprintln!(
            "serving {metrics_url} for {}s with a trickle of new conversations (Ctrl-C to stop)",
            args.keep_serving
        );
        trickle(&obs, &args, seed, Duration::from_secs(args.keep_serving))?;
    }
    for file in store.damage().files() {
        tracing::warn!("{file}");
    }
    let delivered = super::shutdown::shutdown(&obs, ctx.interactive)?;
    if let Some(message) = delivered.lost.message() {
        eprintln!("error: {message}");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// Keeps a paced trickle of new conversations going for `how_long` (or until Ctrl-C), so a
/// scraper sees the counters move and the dashboards' rates, ratios and quantiles have data.
/// Conversations still open at the end end as abandoned, dated then.
fn trickle(obs: &Observability, args: &Args, seed: u64, how_long: Duration) -> anyhow::Result<()> {
    let sim = SimConfig {
        // At most one a second for as long as it serves.
        conversations: (how_long.as_secs_f64() * TRICKLE_RATE).ceil().max(1.0) as usize,
        seed: seed.wrapping_add(1),
        rate: TRICKLE_RATE,
        concurrency: args.concurrency,
        pace: Pace::Realtime { speed: 1.0, max_gap: Some(Duration::from_secs(5)) },
        run_id: None,
    };
    let stop = AtomicBool::new(false);
    let ctrl_c = super::stop_flag();
    std::thread::scope(|scope| {
        let runner = scope.spawn(|| serphona_obs::simulation::run(obs, &sim, &stop, |_| {}));
        let until = std::time::Instant::now() + how_long;
        while std::time::Instant::now() < until && !ctrl_c.load(Ordering::Relaxed) && !runner.is_finished() {
            std::thread::sleep(Duration::from_millis(100));
        }
        // Served long enough: ends the trickle whether or not it finished.
        stop.store(true, Ordering::Relaxed);
        let rest = until.saturating_duration_since(std::time::Instant::now());
        let report = runner.join().map_err(|_| anyhow::anyhow!("the trickle's thread panicked"))??;
        tracing::debug!("trickle: {} conversations, {} events", report.conversations, report.events);
        // The trickle ran out before the time was up: keep serving.
        let until = std::time::Instant::now() + rest;
        while std::time::Instant::now() < until && !ctrl_c.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    })
}

/// Runs the simulation on a thread while the live view shows it, with `N/M ended · q ends`
/// as its status; `q` ends both (open conversations end as abandoned, dated then) and the
/// summary follows.
fn watch(
    obs: &Observability,
    sim: &SimConfig,
    scenario: &serphona_obs::simulation::Scenario,
    data_dir: &std::path::Path,
) -> anyhow::Result<SimReport> {
    let receiver = obs.subscribe();
    let stop = super::stop_flag();
    let finished = Arc::new(AtomicBool::new(false));
    let ended = Arc::new(AtomicUsize::new(0));
    let simulation = {
        let (obs, sim, finished, ended) = (obs.clone(), sim.clone(), finished.clone(), ended.clone());
        let scenario = scenario.clone();
        std::thread::Builder::new().name("serphona-obs-demo".into()).spawn(move || {
            let report = serphona_obs::simulation::run_scenario(&obs, &sim, &scenario, stop, |p| {
                ended.store(p.ended, Ordering::Relaxed)
            });
            finished.store(true, Ordering::Relaxed);
            report
        })?
    };
    let label = format!(
        "demo: {} conversations → {}",
        sim.conversations,
        serphona_obs::sinks::event_log::event_log_dir(data_dir).display()
    );
    let options = serphona_obs::tui::Options { source: label, ..Default::default() };
    let total = sim.conversations;
    let status = || {
        Some(if finished.load(Ordering::Relaxed) {
            "simulation finished · q shows the summary".to_string()
        } else {
            format!("{}/{total} ended · q ends", ended.load(Ordering::Relaxed))
        })
    };
    let exit = super::tail::watch(options, Kind::Live(receiver), &status);
    // Whatever ended the view ends the simulation too.
    stop.store(true, Ordering::Relaxed);
    let report = simulation.join().map_err(|_| anyhow::anyhow!("the simulation thread panicked"))?;
    exit?;
    Ok(report?)
}

/// Conversations by channel and resolution, turns, and duration percentiles.
fn summary_table(rows: &[&StatsRow]) -> String {
    let mut header = vec!["channel".to_string(), "conversations".into()];
    header.extend(Resolution::ALL.iter().map(|r| r.to_string()));
    header.extend(["interactions".into(), "p50 duration".into(), "p95 duration".into()]);
    let mut builder = tabled::builder::Builder::default();
    builder.push_record(header);
    for row in rows {
        let mut record =
            vec![if row.group == "all" { "total".into() } else { row.group.clone() }, row.conversations.to_string()];
        record.extend(
            Resolution::ALL.iter().map(|r| row.by_resolution.get(r.as_str()).copied().unwrap_or(0).to_string()),
        );
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

#[cfg(test)]
mod tests {
    use super::*;

    // Regression test for issue 12, item 2: the default paced demo ran for about 20 real
    // minutes (email threads kept their hours-long pauses).
    #[test]
    fn the_default_paced_demo_ends_in_about_two_minutes() {
        let sim = SimConfig {
            conversations: 200,
            seed: 7,
            rate: 2.0,
            concurrency: 50,
            pace: Pace::Realtime { speed: DEFAULT_LIVE_SPEED, max_gap: Some(DEMO_MAX_GAP) },
            run_id: None,
        };
        let real = serphona_obs::simulation::schedule_length(&sim).as_secs_f64() / DEFAULT_LIVE_SPEED;
        println!("default paced demo: {real:.1} real seconds");
        assert!((30.0..=150.0).contains(&real), "the default paced demo takes {real:.1} real seconds");
    }
}
