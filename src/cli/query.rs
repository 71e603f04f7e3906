//! `query`: conversations, one conversation with its transcript and trace tree, a trace, and
//! stats, read through the [`Store`](serphona_obs::store::Store) trait from the local event log
//! or ClickHouse.

use std::process::ExitCode;

use clap::Subcommand;

use super::Context;

/// `query` subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// List conversations.
    Conversations,
    /// One conversation: attributes, transcript, decisions, trace tree.
    Conversation {
        /// Conversation id.
        id: String,
    },
    /// One trace as a tree.
    Trace {
        /// Trace id.
        trace_id: String,
    },
    /// Counts, resolution rate, percentiles.
    Stats,
}

/// Runs `query`.
pub fn run(_ctx: Context, _command: Command) -> anyhow::Result<ExitCode> {
    super::later::unavailable("query", "the live view and query")
}
