//! `up`, `down`, `status`: the observability stack (Prometheus, Loki, Tempo, Grafana,
//! ClickHouse) with docker compose or locally installed binaries.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, ValueEnum};

use super::Context;
use super::output::Format;

/// How to run the stack.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Backend {
    /// docker compose with compose/.
    Docker,
    /// Locally installed binaries.
    Native,
}

/// `up` flags.
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

/// `down` flags.
#[derive(Debug, Args)]
pub struct DownArgs {
    /// Also delete the stack's data volumes.
    #[arg(long)]
    pub volumes: bool,
}

/// `status` flags.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// table or json.
    #[arg(long, value_enum, default_value = "table")]
    pub output: Format,
}


/// Runs `up`.
pub fn up(_ctx: Context, _args: UpArgs) -> anyhow::Result<ExitCode> {
    super::later::unavailable("up", "the stack (compose/ and the native backend)")
}

/// Runs `down`.
pub fn down(_ctx: Context, _args: DownArgs) -> anyhow::Result<ExitCode> {
    super::later::unavailable("down", "the stack (compose/ and the native backend)")
}

/// Runs `status`.
pub fn status(_ctx: Context, _args: StatusArgs) -> anyhow::Result<ExitCode> {
    super::later::unavailable("status", "the stack (compose/ and the native backend)")
}
