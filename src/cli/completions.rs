//! `completions SHELL`: prints a completion script.

use std::process::ExitCode;

use clap::CommandFactory;
use clap_complete::Shell;

/// `completions` flags.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// bash, zsh, fish, elvish or powershell.
    pub shell: Shell,
}

/// Runs `completions`.
pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let mut cmd = super::Cli::command();
    clap_complete::generate(args.shell, &mut cmd, "serphona-obs", &mut std::io::stdout());
    Ok(ExitCode::SUCCESS)
}
