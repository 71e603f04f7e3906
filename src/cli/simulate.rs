//! `simulate`: synthetic conversations through the configured sinks.

use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serphona_obs::Observability;
use serphona_obs::simulation::{self, Pace, Scenario, SimConfig, SimReport};

use super::Context;
use super::output::Format;

/// `simulate` flags.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A scenario file (YAML; see docs/scenarios.md): tenants, channels, intents, latency,
    /// models and incidents. Without it, the built-in demo scenario.
    #[arg(long, value_name = "FILE")]
    pub scenario: Option<std::path::PathBuf>,
    /// Data time the run covers, ending now (`6h`, `90m`): the scenario's duration. Without
    /// --conversations, as many conversations as arrive in it.
    #[arg(long, value_name = "D", value_parser = humantime::parse_duration)]
    pub duration: Option<std::time::Duration>,
    /// Conversations to simulate [default: 100; with --scenario or --duration, as many as
    /// arrive in the duration].
    #[arg(long, short = 'n')]
    pub conversations: Option<usize>,
    /// Seed of every random choice: the same seed gives the same conversations [default: 1,
    /// or the scenario's].
    #[arg(long)]
    pub seed: Option<u64>,
    /// New conversations per second, paced in real time (see --speed). Without it the run
    /// goes as fast as it can, with timestamps spread as if 2 conversations per second (or the
    /// scenario's conversations_per_hour) had arrived, ending about now.
    #[arg(long)]
    pub rate: Option<f64>,
    /// With --rate: virtual seconds per real second. Turns keep their realistic spacing (chat
    /// replies take seconds, SMS minutes, email hours), so `--speed 60` makes an hour-long
    /// email thread take a minute.
    #[arg(long, default_value_t = 1.0, requires = "rate")]
    pub speed: f64,
    /// Most conversations in progress at once; more arrivals wait [default: 50; no limit with
    /// --scenario, so arrivals and incidents keep the scenario's times].
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// Serve /metrics here while running (overrides metrics.listen; port 0 picks one).
    #[arg(long, value_name = "ADDR")]
    pub metrics_addr: Option<SocketAddr>,
    /// table (a summary line) or json.
    #[arg(long, short = 'o', value_enum, default_value = "table")]
    pub output: Format,
}

impl Args {
    /// The scenario (the file's, or the built-in one) with --duration applied, and whether a
    /// file was given.
    fn scenario(&self) -> anyhow::Result<(Scenario, bool)> {
        load_scenario(self.scenario.as_deref(), self.duration)
    }

    fn sim_config(&self, scenario: &Scenario, from_file: bool) -> SimConfig {
        let windowed = from_file || self.duration.is_some();
        let seed = self.seed.unwrap_or(if from_file { scenario.seed } else { 1 });
        let rate = self.rate.unwrap_or(if from_file { scenario.rate() } else { 2.0 });
        let conversations = self.conversations.unwrap_or_else(|| {
            if windowed { simulation::conversations_in(scenario.duration, rate, seed) } else { 100 }
        });
        SimConfig {
            conversations,
            seed,
            rate,
            concurrency: self.concurrency.unwrap_or(if from_file { usize::MAX } else { 50 }),
            pace: if self.rate.is_some() { Pace::Realtime { speed: self.speed, max_gap: None } } else { Pace::Fast },
            run_id: None,
        }
    }
}

/// The scenario of `simulate` and `demo`: the file (errors are usage errors, exit 2, naming the
/// file, the line and the field) or the built-in one, with `duration` applied; true when from
/// a file.
pub fn load_scenario(
    path: Option<&std::path::Path>,
    duration: Option<std::time::Duration>,
) -> anyhow::Result<(Scenario, bool)> {
    let usage = |e: simulation::ScenarioError| super::UsageError(e.to_string());
    let (scenario, origin) = match path {
        Some(path) => (Scenario::load(path).map_err(usage)?, path.to_path_buf()),
        None => (Scenario::built_in(), std::path::PathBuf::from("scenarios/demo.yaml (built in)")),
    };
    let scenario = match duration {
        Some(d) => scenario.with_duration(d, &origin).map_err(usage)?,
        None => scenario,
    };
    Ok((scenario, path.is_some()))
}

/// Runs a simulation with a progress bar on a terminal; Ctrl-C stops it early (what is open
/// ends as abandoned) and the run is still delivered.
pub fn drive(obs: &Observability, config: &SimConfig, scenario: &Scenario, interactive: bool) -> anyhow::Result<SimReport> {
    let stop = super::stop_flag();
    let bar = ProgressBar::with_draw_target(
        Some(config.conversations as u64),
        if interactive { ProgressDrawTarget::stderr() } else { ProgressDrawTarget::hidden() },
    );
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} conversations ended · {msg}")
            .expect("valid template"),
    );
    let report = simulation::run_scenario(obs, config, scenario, stop, |p| {
        bar.set_position(p.ended as u64);
        bar.set_message(format!("{} started, {} in progress, {} events", p.started, p.started - p.ended, p.events));
    });
    bar.finish_and_clear();
    Ok(report?)
}

/// Runs `simulate`.
pub fn run(ctx: Context, args: Args) -> anyhow::Result<ExitCode> {
    let (scenario, from_file) = args.scenario()?;
    let sim = args.sim_config(&scenario, from_file);
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
    let report = drive(&obs, &sim, &scenario, ctx.interactive)?;
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
                    "loki_lines_pending": delivered.loki_pending,
                    "events_lost": delivered.lost.total(),
                    "events_lost_event_log": delivered.lost.event_log,
                    "events_lost_spool": delivered.lost.spool,
                    "elapsed_seconds": elapsed.as_secs_f64(),
                    "simulation_seconds": report.elapsed.as_secs_f64(),
                    "shutdown_seconds": delivered.elapsed.as_secs_f64(),
                    "interrupted": report.interrupted,
                    "planted": report.planted,
                    "redacted": redacted(&obs),
                    "scenario": args.scenario.as_ref().map_or("built-in".to_string(), |p| p.display().to_string()),
                    "seed": sim.seed,
                    "window": {
                        "start": rfc3339(report.window.0),
                        "end": rfc3339(report.window.1),
                    },
                    "usage": report.usage,
                    "incidents": report.incidents,
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
                sim.seed,
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
            if delivered.loki_pending > 0 {
                writeln!(
                    out,
                    "{} lines kept for Loki for the next start (Loki did not take them by the deadline; they stay in the event log {})",
                    delivered.loki_pending,
                    serphona_obs::sinks::event_log::event_log_dir(&obs.config().data_dir).display()
                )?;
            }
            if let Some(line) = personal_data_line(&report.planted, &obs) {
                writeln!(out, "{line}")?;
            }
            writeln!(out, "{}", usage_line(&report))?;
            for incident in &report.incidents {
                writeln!(
                    out,
                    "incident {} ({} to {}{}): {} conversations, {} slowed answers, {} errors, {} outcomes and {} intents chosen",
                    incident.name,
                    rfc3339(incident.start),
                    rfc3339(incident.end),
                    [incident.tenant.as_deref(), incident.agent.as_deref()]
                        .into_iter()
                        .flatten()
                        .map(|s| format!(", {s}"))
                        .collect::<String>(),
                    incident.conversations,
                    incident.turns_slowed,
                    incident.errors,
                    incident.resolutions_forced,
                    incident.intents_shifted,
                )?;
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

fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

/// "usage: 1,234 LLM calls, 1.2M input (0.8M cached) / 80k output tokens, $1.23" (the
/// summaries of `simulate` and `demo`).
pub fn usage_line(report: &SimReport) -> String {
    let u = &report.usage;
    format!(
        "usage: {} LLM calls, {} input ({} cached) / {} output tokens, {:.0} min of speech-to-text, {} TTS characters, {:.0} min of telephony; ${:.4}; {} barge-ins",
        u.llm_calls,
        u.input_tokens,
        u.cached_tokens,
        u.output_tokens,
        u.stt_seconds / 60.0,
        u.tts_characters,
        u.telephony_seconds / 60.0,
        u.cost_usd,
        u.barge_ins
    )
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
