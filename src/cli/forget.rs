//! `forget --customer ID | --conversation ID [--dry-run]`: erase from every store
//! ([`serphona_obs::erasure`]).

use std::io::Write;
use std::process::ExitCode;

use clap::ArgGroup;
use serphona_obs::erasure::{self, Target};

use super::Context;
use super::output::Format;

/// `forget` arguments.
#[derive(Debug, clap::Args)]
#[command(group(ArgGroup::new("target").required(true).args(["customer", "conversation"])))]
pub struct Args {
    /// Erase every conversation of this customer (their `customer_id`).
    #[arg(long, value_name = "ID")]
    pub customer: Option<String>,
    /// Erase this conversation (its full id).
    #[arg(long, value_name = "ID")]
    pub conversation: Option<String>,
    /// Count what would be removed; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// table or json.
    #[arg(long, short = 'o', value_enum, default_value = "table")]
    pub output: Format,
}

/// Runs `forget`.
pub fn run(ctx: Context, args: Args) -> anyhow::Result<ExitCode> {
    let target = match (args.customer, args.conversation) {
        (Some(c), _) => Target::Customer(c),
        (None, Some(c)) => Target::Conversation(c),
        (None, None) => unreachable!("clap requires one"),
    };
    if matches!(&target, Target::Customer(id) | Target::Conversation(id) if id.trim().is_empty()) {
        return Err(super::UsageError("an empty id erases nothing: give the customer or conversation id".into()).into());
    }
    let report = super::runtime()?.block_on(erasure::forget(&ctx.config, &target, args.dry_run))?;
    let mut out = std::io::stdout().lock();
    match args.output {
        Format::Json => {
            serde_json::to_writer_pretty(&mut out, &report)?;
            writeln!(out)?;
        }
        Format::Table => {
            let verb = if report.dry_run { "would remove" } else { "removed" };
            let (kind, id) = match &report.target {
                Target::Customer(id) => ("customer", id),
                Target::Conversation(id) => ("conversation", id),
            };
            writeln!(out, "{kind} {id}: {} conversation(s)", report.conversations.len())?;
            for r in &report.removed {
                writeln!(out, "  {:<10} {:<60} {verb} {}", r.store, r.table, r.rows)?;
            }
            writeln!(out, "{verb} {} rows and lines in all", report.total())?;
            if let Some(selector) = &report.loki_selector {
                writeln!(
                    out,
                    "Loki: lines cannot be deleted from here; ask Loki's delete API (POST /loki/api/v1/delete, \
                     compactor deletion enabled) with query={selector}"
                )?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
