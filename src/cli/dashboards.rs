//! `dashboards provision` and `dashboards lint`: the Grafana dashboards of `dashboards/`.

use std::process::ExitCode;

use clap::Subcommand;

use super::Context;

/// `dashboards` subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
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

/// Runs `dashboards`.
pub fn run(_ctx: Context, _command: Command) -> anyhow::Result<ExitCode> {
    super::later::unavailable("dashboards", "the Grafana dashboards")
}
