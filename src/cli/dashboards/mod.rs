//! `dashboards provision` and `dashboards lint`: the Grafana dashboards of `dashboards/`
//! (built into the binary, or from `--assets-dir`).

mod expand;
mod lint;
mod model;
mod provision;
mod structure;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Subcommand;

use super::assets::Assets;
use super::output::Format;
use super::{Context, UsageError};

/// `dashboards` subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Upsert the dashboards into Grafana, in the folder "Serphona" (uid serphona).
    ///
    /// Creates the folder when it is missing, then each dashboard through /api/dashboards/db
    /// (overwrite, by uid). Idempotent: a dashboard that Grafana already has as it is in the
    /// file (ignoring id and version), in the folder, is not written again. The dashboards
    /// are checked first (as `dashboards lint` does without servers); nothing is written when
    /// one has a problem.
    ///
    /// Credentials: --token (a service account token with the Editor or Admin role), or
    /// --user and --password; else the environment variables GRAFANA_TOKEN, GRAFANA_USER and
    /// GRAFANA_PASSWORD.
    ///
    /// JSON (`--output json`): an array of {kind (folder, dashboard), uid, title, action
    /// (created, updated, unchanged), url, version}.
    Provision(ProvisionArgs),
    /// Check the dashboards, and run every panel's queries against the servers given.
    ///
    /// Without servers: each dashboard's JSON (unique panel ids, grid positions within 24
    /// columns and not overlapping, datasource uids of the provisioned set, referenced
    /// variables defined). With --prometheus-url, --clickhouse-url or --loki-url: every query
    /// of every panel, template variables at All, Grafana's variables and the ClickHouse
    /// plugin's macros expanded for --range ending now. Each panel is ok (a query returned
    /// data), no data, error (with the server's message) or not run (no URL for its
    /// datasource). Exits 1 on any error.
    ///
    /// JSON (`--output json`): {"dashboards": [{file, uid, title, problems, variables,
    /// panels: [{id, title, type, status, detail, problems, queries: [{ref_id, datasource,
    /// query, status, detail}]}]}], "summary": {dashboards, panels, ok, no_data, errors,
    /// not_run, dashboard_problems, variable_errors}}.
    Lint(LintArgs),
}

/// `dashboards provision` flags.
#[derive(Debug, clap::Args)]
pub struct ProvisionArgs {
    /// Grafana's URL.
    #[arg(long, value_name = "URL", env = "GRAFANA_URL", default_value = "http://localhost:3000")]
    grafana_url: String,
    /// A Grafana service account token (or GRAFANA_TOKEN).
    #[arg(long, value_name = "TOKEN", conflicts_with = "user")]
    token: Option<String>,
    /// A Grafana user for basic authentication (or GRAFANA_USER).
    #[arg(long, value_name = "USER")]
    user: Option<String>,
    /// The user's password (or GRAFANA_PASSWORD).
    #[arg(long, value_name = "PASSWORD")]
    password: Option<String>,
    /// table or json.
    #[arg(long, short = 'o', value_enum, default_value = "table")]
    output: Format,
    /// Read dashboards/ from this folder instead of the dashboards built into the binary.
    #[arg(long, value_name = "DIR")]
    assets_dir: Option<PathBuf>,
}

/// `dashboards lint` flags.
#[derive(Debug, clap::Args)]
pub struct LintArgs {
    /// Prometheus to run the PromQL queries against, e.g. http://localhost:9090.
    #[arg(long, value_name = "URL")]
    prometheus_url: Option<String>,
    /// ClickHouse's HTTP interface to run the SQL queries against, e.g. http://localhost:8123
    /// (user and password from the clickhouse section of the config).
    #[arg(long, value_name = "URL")]
    clickhouse_url: Option<String>,
    /// The database the SQL's tables are in (default: clickhouse.database of the config).
    #[arg(long, value_name = "DB")]
    clickhouse_database: Option<String>,
    /// Loki to run the LogQL queries against, e.g. http://localhost:3100.
    #[arg(long, value_name = "URL")]
    loki_url: Option<String>,
    /// The time range the queries cover, ending now ($__range, $__timeFilter, …).
    #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = humantime::parse_duration)]
    range: Duration,
    /// What $__rate_interval becomes (Grafana makes it at least 4 scrape intervals).
    #[arg(long, value_name = "DURATION", default_value = "1m", value_parser = humantime::parse_duration)]
    rate_interval: Duration,
    /// table or json.
    #[arg(long, short = 'o', value_enum, default_value = "table")]
    output: Format,
    /// Read dashboards/ from this folder instead of the dashboards built into the binary.
    #[arg(long, value_name = "DIR")]
    assets_dir: Option<PathBuf>,
}

/// One dashboard file, parsed (or why not).
pub struct DashboardFile {
    /// `dashboards/<name>.json`.
    pub path: String,
    /// Its JSON, or the parse error.
    pub json: Result<serde_json::Value, String>,
}

/// The `dashboards/*.json` of the assets.
fn load(assets: &Assets) -> anyhow::Result<Vec<DashboardFile>> {
    let mut files = Vec::new();
    for path in assets.list("dashboards")? {
        if !path.ends_with(".json") {
            continue;
        }
        let text = assets.read_string(&path)?;
        let json = serde_json::from_str(&text).map_err(|e| e.to_string());
        files.push(DashboardFile { path, json });
    }
    anyhow::ensure!(!files.is_empty(), "no dashboards: dashboards/*.json is empty in {}", assets.origin());
    Ok(files)
}

/// The HTTP client of both commands (no proxy: the servers are usually local).
pub fn http_client(timeout: Duration) -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder().timeout(timeout).connect_timeout(Duration::from_secs(5)).build()?)
}

fn parse_url(flag: &str, s: &str) -> Result<url::Url, UsageError> {
    let u = url::Url::parse(s).map_err(|e| UsageError(format!("{flag} {s:?}: {e} (expected e.g. http://localhost:9090)")))?;
    if !matches!(u.scheme(), "http" | "https") {
        return Err(UsageError(format!("{flag} {s:?}: expected an http:// or https:// URL")));
    }
    Ok(u)
}

/// Runs `dashboards`.
pub fn run(ctx: Context, command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Lint(args) => run_lint(&ctx, args),
        Command::Provision(args) => run_provision(args),
    }
}

fn run_lint(ctx: &Context, args: LintArgs) -> anyhow::Result<ExitCode> {
    let files = load(&Assets::new(args.assets_dir)?)?;
    let ch = &ctx.config.clickhouse;
    let servers = lint::Servers {
        prometheus: args.prometheus_url.as_deref().map(|u| parse_url("--prometheus-url", u)).transpose()?,
        clickhouse: args.clickhouse_url.as_deref().map(|u| parse_url("--clickhouse-url", u)).transpose()?.map(|url| {
            lint::ClickHouseServer {
                url,
                database: args.clickhouse_database.clone().unwrap_or_else(|| ch.database.clone()),
                user: ch.user.clone(),
                password: ch.password.clone(),
            }
        }),
        loki: args.loki_url.as_deref().map(|u| parse_url("--loki-url", u)).transpose()?,
    };
    if args.range.is_zero() || args.rate_interval.is_zero() {
        return Err(UsageError("--range and --rate-interval must be longer than 0s".into()).into());
    }
    let report = super::runtime()?.block_on(lint::run(&files, &servers, args.range, args.rate_interval))?;
    // Written, not printed: a closed pipe is an error that exits 0 (print! would panic).
    let mut out = std::io::stdout().lock();
    match args.output {
        Format::Json => writeln!(out, "{}", serde_json::to_string_pretty(&report)?)?,
        Format::Table => write!(out, "{}", report.table())?,
    }
    out.flush()?;
    drop(out);
    if report.failed() {
        eprintln!("error: dashboards lint found problems (status error above)");
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn run_provision(args: ProvisionArgs) -> anyhow::Result<ExitCode> {
    let base = parse_url("--grafana-url", &args.grafana_url)?;
    let auth = match (args.token, args.user) {
        (Some(token), _) => provision::Auth::Token(token),
        (None, Some(user)) => {
            provision::Auth::Basic { user, password: args.password.or_else(|| env("GRAFANA_PASSWORD")).unwrap_or_default() }
        }
        (None, None) => match (env("GRAFANA_TOKEN"), env("GRAFANA_USER")) {
            (Some(token), _) => provision::Auth::Token(token),
            (None, Some(user)) => {
                provision::Auth::Basic { user, password: args.password.or_else(|| env("GRAFANA_PASSWORD")).unwrap_or_default() }
            }
            (None, None) if args.password.is_some() => {
                return Err(UsageError("--password needs --user (or GRAFANA_USER)".into()).into());
            }
            (None, None) => provision::Auth::None,
        },
    };
    let files = load(&Assets::new(args.assets_dir)?)?;
    // Nothing broken goes to Grafana.
    let mut problems = Vec::new();
    for f in &files {
        match &f.json {
            Err(e) => problems.push(format!("{}: not valid JSON: {e}", f.path)),
            Ok(j) => problems.extend(structure::check(j).into_iter().map(|p| format!("{}: {}", f.path, p.message))),
        }
    }
    if !problems.is_empty() {
        anyhow::bail!(
            "the dashboards have problems; nothing was provisioned (see `serphona-obs dashboards lint`):\n  {}",
            problems.join("\n  ")
        );
    }
    let outcomes = super::runtime()?.block_on(provision::run(base, auth, &files))?;
    let mut out = std::io::stdout().lock();
    match args.output {
        Format::Json => writeln!(out, "{}", serde_json::to_string_pretty(&outcomes)?)?,
        Format::Table => {
            use tabled::{Table, Tabled, settings::Style};
            #[derive(Tabled)]
            struct Line {
                kind: &'static str,
                uid: String,
                title: String,
                action: String,
                version: String,
                url: String,
            }
            let lines = outcomes.iter().map(|o| Line {
                kind: o.kind,
                uid: o.uid.clone(),
                title: o.title.clone(),
                action: serde_json::to_value(o.action).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default(),
                version: o.version.map_or_else(|| "-".into(), |v| v.to_string()),
                url: o.url.clone(),
            });
            writeln!(out, "{}", Table::new(lines).with(Style::rounded()))?;
            let count = |a: provision::Action| outcomes.iter().filter(|o| o.action == a).count();
            writeln!(
                out,
                "{} created, {} updated, {} unchanged",
                count(provision::Action::Created),
                count(provision::Action::Updated),
                count(provision::Action::Unchanged)
            )?;
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}
