//! `config init` and `config show`.

use std::io::Write;
use std::process::ExitCode;

use super::Context;
use super::output::Format;

/// `config` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Print a commented default config (redirect it to a file to start from).
    Init,
    /// Print the effective config (file → SERPHONA_OBS_* env → flags), secrets masked.
    Show(ShowArgs),
}

/// `config show` flags.
#[derive(Debug, clap::Args)]
pub struct ShowArgs {
    /// yaml (table) or json.
    #[arg(long, short = 'o', value_enum, default_value = "table")]
    pub output: Format,
}

/// Runs `config init`.
pub fn init() -> anyhow::Result<ExitCode> {
    std::io::stdout().write_all(serphona_obs::config::DEFAULT_CONFIG_YAML.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}

/// Runs `config show`.
pub fn show(ctx: &Context, args: &ShowArgs) -> anyhow::Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    match args.output {
        Format::Table => out.write_all(ctx.config.to_masked_yaml().as_bytes())?,
        Format::Json => {
            serde_json::to_writer_pretty(&mut out, &ctx.config.masked())?;
            writeln!(out)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
