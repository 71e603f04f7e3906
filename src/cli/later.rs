//! Commands of later releases: their flags are here so `--help` shows the whole surface;
//! running them says so and exits 2.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand, ValueEnum};

use super::UsageError;
use super::output::Format;

/// Says a command is not available yet.
pub fn unavailable(command: &str, arrives_with: &str) -> anyhow::Result<ExitCode> {
    Err(UsageError(format!(
        "`serphona-obs {command}` is not available in this version yet; it arrives with {arrives_with}. \
         Available now: demo, simulate, tail, query, schema, config, completions"
    ))
    .into())
}

/// How to run the stack.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Backend {
    /// docker compose with compose/.
    Docker,
    /// Locally installed binaries.
    Native,
}

/// `up` (not yet available).
#[derive(Debug, Args)]
pub struct UpArgs {
    /// docker (compose) or native (installed binaries).
    #[arg(long, value_enum, default_value = "docker")]
    pub backend: Backend,
    /// Wait until every component is healthy.
    #[arg(long)]
    pub wait: bool,
    /// Skip applying the schema and provisioning dashboards.
    #[arg(long)]
    pub no_init: bool,
    /// Use compose/, dashboards/ and schemas/ from this folder instead of the built-in ones.
    #[arg(long, value_name = "DIR")]
    pub assets_dir: Option<PathBuf>,
}

/// `down` (not yet available).
#[derive(Debug, Args)]
pub struct DownArgs {
    /// Also delete the stack's data volumes.
    #[arg(long)]
    pub volumes: bool,
}

/// `status` (not yet available).
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// table or json.
    #[arg(long, value_enum, default_value = "table")]
    pub output: Format,
}

/// `dashboards` (not yet available).
#[derive(Debug, Subcommand)]
pub enum DashboardsCommand {
    /// Upsert the dashboards into Grafana.
    Provision {
        /// Grafana URL.
        #[arg(long)]
        grafana_url: Option<String>,
    },
    /// Check the dashboards and run every panel's query.
    Lint {
        /// Prometheus to run PromQL panels against.
        #[arg(long)]
        prometheus_url: Option<String>,
        /// ClickHouse to run SQL panels against.
        #[arg(long)]
        clickhouse_url: Option<String>,
    },
}
