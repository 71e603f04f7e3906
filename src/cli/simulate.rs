//! `simulate`: synthetic conversations through the configured sinks.

use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serphona_obs::Observability;
use serphona_obs::simulation::{self, Pace, SimConfig, SimReport};

use super::Context;
use super::output::Format;

/// `simulate` flags.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Conversations to simulate.
    #[arg(long, short = 'n', default_value_t = 100)]
    pub conversations: usize,
    /// Seed of every random choice: the same seed gives the same conversations.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// New conversations per second, paced in real time (see --speed). Without it the run
    /// goes as fast as it can, with timestamps spread as if 2 conversations per second had
    /// arrived, ending about now.
    #[arg(long)]
    pub rate: Option<f64>,
    /// With --rate: virtual seconds per real second. Turns keep their realistic spacing (chat
    /// replies take seconds, SMS minutes, email hours), so `--speed 60` makes an hour-long
    /// email thread take a minute.
    #[arg(long, default_value_t = 1.0, requires = "rate")]
    pub speed: f64,
    /// Most conversations in progress at once.
    #[arg(long, default_value_t = 50)]
    pub concurrency: usize,
    /// Serve /metrics here while running (overrides metrics.listen; port 0 picks one).
    #[arg(long, value_name = "ADDR")]
    pub metrics_addr: Option<SocketAddr>,
    /// table (a summary line) or json.
    #[arg(long, short = 'o', value_enum, default_value = "table")]
    pub output: Format,
}

impl Args {
    fn sim_config(&self) -> SimConfig {
        SimConfig {
            conversations: self.conversations,
            seed: self.seed,
            rate: self.rate.unwrap_or(2.0),
            concurrency: self.concurrency,
            pace: if self.rate.is_some() { Pace::Realtime { speed: self.speed, max_gap: None } } else { Pace::Fast },
            run_id: None,
        }
    }
}

/// Runs a simulation with a progress bar on a terminal; Ctrl-C stops it early (what is open
/// ends as abandoned) and the run is still delivered.
pub fn drive(obs: &Observability, config: &SimConfig, interactive: bool) -> anyhow::Result<SimReport> {
    let stop = super::stop_flag();
    let bar = ProgressBar::with_draw_target(
        Some(config.conversations as u64),
        if interactive { ProgressDrawTarget::stderr() } else { ProgressDrawTarget::hidden() },
    );
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} conversations ended · {msg}")
            .expect("valid template"),
    );
    let report = simulation::run(obs, config, stop, |p| {
        bar.set_position(p.ended as u64);
        bar.set_message(format!("{} started, {} in progress, {} events", p.started, p.started - p.ended, p.events));
    });
    bar.finish_and_clear();
    Ok(report?)
}

/// Runs `simulate`.
pub fn run(ctx: Context, args: Args) -> anyhow::Result<ExitCode> {
    let sim = args.sim_config();
    sim.validate().map_err(|e| super::UsageError(format!("--{e}")))?;
    let mut config = ctx.config;
    if let Some(addr) = args.metrics_addr {
        config.metrics.listen = addr;
    }
    let start = Instant::now();
    let obs = Observability::init(config)?;
    if let Some(addr) = obs.metrics_addr() {
        tracing::info!("metrics at http://{addr}/metrics");
    }
    let report = drive(&obs, &sim, ctx.interactive)?;
    let delivered = super::shutdown::shutdown(&obs, ctx.interactive)?;
    // The whole run, delivery to the sinks included.
    let elapsed = start.elapsed();
    let dropped: u64 = obs.metrics().pipeline.events_dropped.with_label_values(&["queue_full"]).get();
    let mut out = std::io::stdout().lock();
    match args.output {
        Format::Json => {
            let by_resolution: serde_json::Map<String, serde_json::Value> =
                report.by_resolution.iter().map(|(r, n)| (r.to_string(), (*n).into())).collect();
            serde_json::to_writer_pretty(
                &mut out,
                &serde_json::json!({
                    "run_id": report.run_id,
                    "conversations": report.conversations,
                    "ended": report.ended,
                    "events": report.events,
                    "events_by_type": report.events_by_type,
                    "by_resolution": by_resolution,
                    "events_dropped": dropped,
                    "events_spooled": delivered.spooled,
                    "events_lost": delivered.lost.total(),
                    "events_lost_event_log": delivered.lost.event_log,
                    "events_lost_spool": delivered.lost.spool,
                    "elapsed_seconds": elapsed.as_secs_f64(),
                    "simulation_seconds": report.elapsed.as_secs_f64(),
                    "shutdown_seconds": delivered.elapsed.as_secs_f64(),
                    "interrupted": report.interrupted,
                    "planted": report.planted,
                    "redacted": redacted(&obs),
                }),
            )?;
            writeln!(out)?;
        }
        Format::Table => {
            writeln!(
                out,
                "simulated {} conversations, {} events in {:.2}s{} (seed {}, run {}){}",
                report.conversations,
                report.events,
                elapsed.as_secs_f64(),
                if delivered.elapsed.as_secs_f64() >= 0.5 {
                    format!(", {:.2}s of it delivering to the sinks", delivered.elapsed.as_secs_f64())
                } else {
                    String::new()
                },
                args.seed,
                report.run_id,
                if report.interrupted { " — interrupted" } else { "" }
            )?;
            if dropped > 0 {
                writeln!(out, "warning: {dropped} events were dropped because the queue was full")?;
            }
            if let Some(message) = delivered.lost.message() {
                writeln!(out, "error: {message}")?;
            }
            if delivered.spooled > 0 {
                writeln!(
                    out,
                    "{} events spooled for the next start (ClickHouse did not take them by the deadline; kept in the event log and the spool {})",
                    delivered.spooled,
                    serphona_obs::sinks::clickhouse::spool::spool_dir(&obs.config().data_dir).display()
                )?;
            }
            if let Some(line) = personal_data_line(&report.planted, &obs) {
                writeln!(out, "{line}")?;
            }
        }
    }
    if let Some(message) = delivered.lost.message() {
        // The summary says it on stdout; the error goes to stderr as well, and the exit code
        // says the run did not record everything.
        drop(out);
        eprintln!("error: {message}");
        return Ok(ExitCode::FAILURE);
    }
    Ok(if report.interrupted { ExitCode::from(super::EXIT_INTERRUPTED) } else { ExitCode::SUCCESS })
}

/// "personal data said by customers: card_number 7, email 15, …; values redacted: N" (the
/// summaries of `simulate` and `demo`), or nothing when no customer said any.
pub fn personal_data_line(planted: &std::collections::BTreeMap<&str, u64>, obs: &Observability) -> Option<String> {
    if planted.is_empty() {
        return None;
    }
    let said: Vec<String> = planted.iter().map(|(k, n)| format!("{k} {n}")).collect();
    let redacted: u64 = redacted(obs).values().sum();
    Some(format!("personal data said by customers: {}; values redacted: {redacted}", said.join(", ")))
}

/// `serphona_obs_redactions_total` by kind (the kinds the config knows: the built-in
/// detectors and the custom rules), without the zeros.
pub fn redacted(obs: &Observability) -> std::collections::BTreeMap<String, u64> {
    let privacy = &obs.config().privacy;
    let mut kinds: Vec<String> = serphona_obs::processors::Detector::ALL.iter().map(|d| d.as_str().to_string()).collect();
    kinds.extend(privacy.rules.iter().map(|r| r.name.clone()));
    kinds.extend(privacy.tenants.values().flat_map(|t| t.rules.iter().flatten()).map(|r| r.name.clone()));
    let counter = &obs.metrics().pipeline.redactions;
    kinds
        .into_iter()
        .filter_map(|k| {
            let n = counter.get_metric_with_label_values(&[k.as_str()]).map(|c| c.get()).unwrap_or(0);
            (n > 0).then_some((k, n))
        })
        .collect()
}
