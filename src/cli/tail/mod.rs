//! `tail`: the live conversation view (placeholder while it is built).

use std::process::ExitCode;

use super::Context;

/// `tail` flags.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// local or clickhouse.
    #[arg(long)]
    pub source: Option<String>,
    /// Only this tenant.
    #[arg(long)]
    pub tenant: Option<String>,
    /// Only this agent.
    #[arg(long)]
    pub agent: Option<String>,
    /// Only this channel.
    #[arg(long)]
    pub channel: Option<String>,
}

/// Runs `tail`.
pub fn run(_ctx: Context, _args: Args) -> anyhow::Result<ExitCode> {
    super::later::unavailable("tail", "the live view and query")
}
