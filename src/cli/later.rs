//! Commands of later releases: their flags are in `--help` so it shows the whole surface;
//! running one says so and exits 2.

use std::process::ExitCode;

use super::UsageError;

/// Says a command is not available yet.
pub fn unavailable(command: &str, arrives_with: &str) -> anyhow::Result<ExitCode> {
    Err(UsageError(format!(
        "`serphona-obs {command}` is not available in this version yet; it arrives with {arrives_with}. \
         Available now: demo, simulate, tail, query, schema, config, completions"
    ))
    .into())
}
