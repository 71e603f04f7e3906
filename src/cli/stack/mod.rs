//! `up`, `down`, `status`: the observability stack (Prometheus, Loki, Tempo, Grafana,
//! ClickHouse) with docker compose ([`docker`]) or the binaries installed on this machine
//! ([`native`]). `up` records what it started in `<data_dir>/stack/state.json`; `status` and
//! `down` read it.

pub mod components;
mod docker;
mod native;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serphona_obs::analytics::schema::{self, Migrator, RenderOptions};
use tabled::settings::Style;

use super::{Context, runtime};
use super::assets::Assets;
use super::output::Format;
pub use components::Backend;
use components::{COMPONENTS, OTLP_PORTS, StackState, check, grafana_password, load_state, remove_state, save_state};

/// `up` flags.
#[derive(Debug, Args)]
pub struct UpArgs {
    /// docker (compose/, needs a Docker engine) or native (the binaries installed here:
    /// prometheus, loki, tempo, grafana or grafana-server, clickhouse).
    #[arg(long, value_enum, default_value = "docker")]
    pub backend: Backend,
    /// Wait until every started component is healthy (with progress), up to --timeout.
    #[arg(long)]
    pub wait: bool,
    /// How long --wait waits.
    #[arg(long, value_name = "DURATION", default_value = "180s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// Skip applying the ClickHouse schema after start (dashboards are provisioned from files
    /// either way).
    #[arg(long)]
    pub no_init: bool,
    /// Use compose/, dashboards/ and schemas/ from this folder instead of the built-in ones.
    #[arg(long, value_name = "DIR")]
    pub assets_dir: Option<PathBuf>,
    /// native: add this to every port (run a second stack beside another one).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub port_offset: u16,
    /// table or json.
    #[arg(long, short = 'o', value_enum, default_value = "table")]
    pub output: Format,
}

/// `down` flags.
#[derive(Debug, Args)]
pub struct DownArgs {
    /// docker: also delete the stack's data volumes.
    #[arg(long)]
    pub volumes: bool,
}

/// `status` flags.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// table or json.
    #[arg(long, short = 'o', value_enum, default_value = "table")]
    pub output: Format,
}

fn client() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder().build()?)
}

/// Runs `up`.
pub fn up(ctx: Context, args: UpArgs) -> anyhow::Result<ExitCode> {
    let data_dir = ctx.config.data_dir.clone();
    if let Some(state) = load_state(&data_dir)? {
        let live = state.backend == Backend::Native
            && state.components.values().any(|s| process_alive(s) == Some(true));
        if live {
            anyhow::bail!(
                "a stack started by `up` is still running from {} (see `serphona-obs status`); run `serphona-obs down` first",
                components::stack_dir(&data_dir).display()
            );
        }
    }
    let assets = Assets::new(args.assets_dir.clone())?;
    let password = grafana_password(&data_dir)?;
    let metrics_target = match ctx.config.metrics.listen {
        a if a.ip().is_unspecified() => format!("127.0.0.1:{}", a.port()),
        a => a.to_string(),
    };
    let state = match args.backend {
        Backend::Docker => docker::up(&data_dir, &assets, &password)?,
        Backend::Native => native::up(&data_dir, &assets, args.port_offset, &metrics_target, &password)?,
    };
    save_state(&data_dir, &state)?;
    let rt = runtime()?;
    let http = client()?;
    let mut health = rt.block_on(health_of(&http, &state));
    if args.wait {
        health = wait(&rt, &http, &state, args.timeout, ctx.interactive)?;
    }
    let mut schema_note = None;
    if !args.no_init {
        if let Some(ch) = state.components.get("clickhouse").filter(|s| s.should_run()) {
            let dir = args.assets_dir.as_ref().map(|d| d.join("schemas")).filter(|d| d.is_dir());
            schema_note = Some(apply_schema(&rt, &http, &ctx, &ch.url, args.wait, dir.as_deref())?);
        }
    }
    let mut out = std::io::stdout().lock();
    match args.output {
        Format::Json => {
            serde_json::to_writer_pretty(
                &mut out,
                &serde_json::json!({
                    "backend": state.backend,
                    "assets": assets.origin(),
                    "components": report_json(&state, &health),
                    "schema": schema_note,
                    "grafana_password_file": components::stack_dir(&data_dir).join("grafana-admin-password"),
                    "env": env_lines(&state),
                }),
            )?;
            writeln!(out)?;
        }
        Format::Table => {
            writeln!(out, "{}", report_table(&state, &health))?;
            if let Some(note) = &schema_note {
                writeln!(out, "{note}")?;
            }
            if state.components.get("grafana").is_some_and(|g| g.should_run()) {
                writeln!(
                    out,
                    "Grafana: user admin, password in {} (or $SERPHONA_OBS_GRAFANA_PASSWORD)",
                    components::stack_dir(&data_dir).join("grafana-admin-password").display()
                )?;
            }
            let env = env_lines(&state);
            if !env.is_empty() {
                writeln!(out, "\nPoint a service (or `serphona-obs simulate`) at the stack:")?;
                for line in env {
                    writeln!(out, "  export {line}")?;
                }
            }
        }
    }
    drop(out);
    let failed = if args.wait { unhealthy(&state, &health) } else { Vec::new() };
    if !failed.is_empty() {
        anyhow::bail!("not healthy after {}s: {} (see `serphona-obs status`)", args.timeout.as_secs(), failed.join(", "));
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs `down`.
pub fn down(ctx: Context, args: DownArgs) -> anyhow::Result<ExitCode> {
    let data_dir = ctx.config.data_dir.clone();
    let Some(state) = load_state(&data_dir)? else {
        eprintln!("nothing to stop: no stack started by `up` with data dir {}", data_dir.display());
        return Ok(ExitCode::SUCCESS);
    };
    let stopped = match state.backend {
        Backend::Docker => {
            docker::down(&state, args.volumes, &grafana_password(&data_dir)?)?;
            Vec::new()
        }
        Backend::Native => native::down(&state, Duration::from_secs(15)),
    };
    remove_state(&data_dir)?;
    let mut out = std::io::stdout().lock();
    for (name, what) in stopped {
        writeln!(out, "{name}: {what}")?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs `status`: exit 1 when a component that should be up is not healthy.
pub fn status(ctx: Context, args: StatusArgs) -> anyhow::Result<ExitCode> {
    let data_dir = ctx.config.data_dir.clone();
    let recorded = load_state(&data_dir)?;
    if recorded.is_none() {
        eprintln!("no stack started by `up` with data dir {}; checking the default ports", data_dir.display());
    }
    let state = recorded.clone().unwrap_or_else(default_state);
    let rt = runtime()?;
    let health = rt.block_on(health_of(&client()?, &state));
    let mut out = std::io::stdout().lock();
    match args.output {
        Format::Json => {
            serde_json::to_writer_pretty(&mut out, &serde_json::json!({"backend": state.backend, "components": report_json(&state, &health)}))?;
            writeln!(out)?;
        }
        Format::Table => writeln!(out, "{}", report_table(&state, &health))?,
    }
    let down = unhealthy(&state, &health);
    if down.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    drop(out);
    let not_running: Vec<&str> = down.iter().copied().filter(|n| matches!(health.get(*n), Some(Err(Problem::NotRunning(_))))).collect();
    if recorded.is_none() && not_running.len() == down.len() {
        eprintln!("nothing is running: no component answers on its default port; start the stack with `serphona-obs up`");
    } else {
        eprintln!("not healthy: {}", down.join(", "));
    }
    Ok(ExitCode::from(1))
}

/// Every component at its default port, for `status` without a recorded `up`.
fn default_state() -> StackState {
    StackState {
        backend: Backend::Docker,
        port_offset: 0,
        compose_file: None,
        components: components::Started::all_at_default_ports(),
    }
}

/// Why a component that should run is not healthy.
#[derive(Debug, Clone)]
enum Problem {
    /// Nothing answers on its port, and no process of ours is there (`None`), or our process
    /// is gone (why).
    NotRunning(Option<String>),
    /// Something answers, or our process runs, but its health check fails.
    Unhealthy(String),
}

impl Problem {
    fn word(&self) -> &'static str {
        match self {
            Problem::NotRunning(_) => "not running",
            Problem::Unhealthy(_) => "unhealthy",
        }
    }

    /// The detail, for the JSON `error` field.
    fn detail(&self) -> Option<&str> {
        match self {
            Problem::NotRunning(d) => d.as_deref(),
            Problem::Unhealthy(d) => Some(d),
        }
    }

    /// What the table's state column says.
    fn state(&self) -> String {
        match self.detail() {
            Some(d) => format!("{}: {d}", self.word()),
            None => self.word().into(),
        }
    }
}

type Health = std::collections::BTreeMap<String, Result<(), Problem>>;

/// Whether a natively started component's process still runs its binary; `None` when there is
/// no process to look at (docker, or not started).
fn process_alive(s: &components::Started) -> Option<bool> {
    Some(native::is_ours(s.pid?, s.binary.as_ref()?))
}

/// The components that should run and are not healthy.
fn unhealthy<'a>(state: &'a StackState, health: &Health) -> Vec<&'a str> {
    state
        .components
        .iter()
        .filter(|(n, s)| s.should_run() && health.get(*n).is_some_and(|h| h.is_err()))
        .map(|(n, _)| n.as_str())
        .collect()
}

async fn health_of(http: &reqwest::Client, state: &StackState) -> Health {
    let mut out = Health::new();
    for c in COMPONENTS {
        let Some(s) = state.components.get(c.name) else { continue };
        if !s.should_run() {
            continue;
        }
        let result = check(http, &format!("{}{}", s.url, c.health)).await.map_err(|e| {
            match process_alive(s) {
                Some(false) => Problem::NotRunning(Some(format!("pid {} is gone", s.pid.unwrap_or_default()))),
                // Nothing listens, and there is no process of ours that could be starting.
                None if e == components::REFUSED => Problem::NotRunning(None),
                _ => Problem::Unhealthy(e),
            }
        });
        out.insert(c.name.to_string(), result);
    }
    out
}

fn wait(rt: &tokio::runtime::Runtime, http: &reqwest::Client, state: &StackState, timeout: Duration, interactive: bool) -> anyhow::Result<Health> {
    let bar = ProgressBar::with_draw_target(
        None,
        if interactive { ProgressDrawTarget::stderr() } else { ProgressDrawTarget::hidden() },
    );
    bar.set_style(ProgressStyle::with_template("{spinner} [{elapsed}] waiting for {msg}").expect("valid template"));
    let until = Instant::now() + timeout;
    let stop = super::stop_flag();
    loop {
        let health = rt.block_on(health_of(http, state));
        let pending: Vec<&str> = health.iter().filter(|(_, h)| h.is_err()).map(|(n, _)| n.as_str()).collect();
        if pending.is_empty() || Instant::now() >= until || stop.load(std::sync::atomic::Ordering::Relaxed) {
            bar.finish_and_clear();
            return Ok(health);
        }
        // A native process that died will not come back: stop waiting for it.
        let dead = state.components.iter().any(|(n, s)| {
            pending.contains(&n.as_str()) && process_alive(s) == Some(false)
        });
        if dead {
            bar.finish_and_clear();
            return Ok(health);
        }
        bar.set_message(pending.join(", "));
        bar.tick();
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Applies the built-in migrations on the stack's ClickHouse. Waits for it when it is not
/// ready yet and `--wait` was not given (a fresh server takes a few seconds).
/// The migrations are the built-in ones, or those of `--assets-dir`'s `schemas/`.
fn apply_schema(
    rt: &tokio::runtime::Runtime,
    http: &reqwest::Client,
    ctx: &Context,
    url: &str,
    waited: bool,
    dir: Option<&std::path::Path>,
) -> anyhow::Result<String> {
    if !waited {
        let until = Instant::now() + Duration::from_secs(60);
        while rt.block_on(check(http, &format!("{url}/ping"))).is_err() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    let mut ch = ctx.config.clickhouse.clone();
    ch.endpoint = serphona_obs::config::Endpoint::parse(url).map_err(|e| anyhow::anyhow!("{e}"))?;
    let opts = RenderOptions { database: ch.database.clone(), retention_days: ch.retention_days, cluster: None };
    let migrations = match dir {
        Some(d) => schema::from_dir(d)?,
        None => schema::built_in(),
    };
    let migrator = Migrator::new(serphona_obs::analytics::client(&ch), opts, migrations);
    let report = rt
        .block_on(migrator.apply())
        .map_err(|e| anyhow::anyhow!(e))
        .with_context(|| format!("schema apply on the stack's ClickHouse at {url} (database {}); `up --no-init` skips it", ch.database))?;
    Ok(format!(
        "ClickHouse schema: {} migration(s) applied, {} already applied (database {})",
        report.applied.len(),
        report.unchanged,
        ch.database
    ))
}

fn state_word(name: &str, state: &StackState, health: &Health) -> String {
    let s = &state.components[name];
    if !s.should_run() {
        return s.state.clone();
    }
    match health.get(name) {
        Some(Ok(())) => "healthy".into(),
        Some(Err(p)) => p.state(),
        None => "unknown".into(),
    }
}

fn report_table(state: &StackState, health: &Health) -> String {
    let mut b = tabled::builder::Builder::default();
    b.push_record(["component", "state", "url", "what is there", "pid", "log"]);
    for c in COMPONENTS {
        let Some(s) = state.components.get(c.name) else { continue };
        b.push_record([
            c.name.to_string(),
            state_word(c.name, state, health),
            if s.should_run() { s.url.clone() } else { "-".into() },
            c.what.to_string(),
            s.pid.map_or("-".into(), |p| p.to_string()),
            s.log.as_ref().map_or("-".into(), |l| l.display().to_string()),
        ]);
    }
    let mut t = b.build();
    t.with(Style::rounded());
    t.to_string()
}

fn report_json(state: &StackState, health: &Health) -> serde_json::Value {
    COMPONENTS
        .iter()
        .filter_map(|c| {
            let s = state.components.get(c.name)?;
            let h = health.get(c.name);
            Some(serde_json::json!({
                "name": c.name,
                "state": match h {
                    _ if !s.should_run() => s.state.as_str(),
                    Some(Ok(())) => "healthy",
                    Some(Err(p)) => p.word(),
                    None => "unknown",
                },
                "error": h.and_then(|h| h.as_ref().err()).and_then(Problem::detail),
                "url": s.url,
                "pid": s.pid,
                "log": s.log,
            }))
        })
        .collect()
}

/// The environment lines that point the library at the components that run.
fn env_lines(state: &StackState) -> Vec<String> {
    let running = |n: &str| state.components.get(n).is_some_and(|s| s.should_run());
    let mut lines = Vec::new();
    if running("tempo") {
        lines.push(format!("SERPHONA_OBS_TRACING_ENDPOINT=http://localhost:{}", OTLP_PORTS.0 + state.port_offset));
    }
    if running("loki") {
        lines.push(format!("SERPHONA_OBS_LOGGING_LOKI_ENDPOINT=http://localhost:{}", 3100 + state.port_offset));
    }
    if running("clickhouse") {
        lines.push("SERPHONA_OBS_CLICKHOUSE_ENABLED=true".into());
        lines.push(format!("SERPHONA_OBS_CLICKHOUSE_ENDPOINT=http://localhost:{}", 8123 + state.port_offset));
    }
    if running("prometheus") && state.backend == Backend::Docker {
        // Prometheus in a container scrapes the host: the library must listen beyond loopback.
        lines.push("SERPHONA_OBS_METRICS_LISTEN=0.0.0.0:9464".into());
    }
    lines
}
