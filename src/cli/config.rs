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
    #[arg(long, value_enum, default_value = "table")]
    pub output: Format,
}

pub fn init() -> anyhow::Result<ExitCode> {
    std::io::stdout().write_all(serphona_obs::config::DEFAULT_CONFIG_YAML.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}

pub fn show(ctx: &Context, args: &ShowArgs) -> anyhow::Result<ExitCode> {
    let yaml = ctx.config.to_masked_yaml();
    let mut out = std::io::stdout().lock();
    match args.output {
        Format::Table => out.write_all(yaml.as_bytes())?,
        Format::Json => {
            let value: serde_json::Value = serde_norway::from_str(&yaml)?;
            serde_json::to_writer_pretty(&mut out, &value)?;
            writeln!(out)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
