//! `completions SHELL`: prints a completion script.

use std::io::Write;
use std::process::ExitCode;

use clap::CommandFactory;
use clap_complete::Shell;

/// The name the scripts complete.
const BIN: &str = "serphona-obs";

/// `completions` flags.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// bash, zsh, fish, elvish or powershell.
    pub shell: Shell,
}

/// The completion script for `shell`.
///
/// clap_complete's bash script names its states after the binary with `-` replaced by `__`
/// (`serphona__obs__subcmd__query`) in the loop that reads the words, but escapes the `-` of
/// the binary name as a subcommand separator in the case labels that complete them
/// (`serphona__subcmd__obs__subcmd__query`), so nothing after the first word ever completed
/// (clap-rs/clap#6421). The labels are rewritten to the loop's spelling.
pub fn script(shell: Shell) -> String {
    let mut cmd = super::Cli::command();
    let mut buf = Vec::new();
    clap_complete::generate(shell, &mut cmd, BIN, &mut buf);
    let script = String::from_utf8(buf).expect("clap_complete writes UTF-8");
    match shell {
        Shell::Bash => {
            let loop_name = BIN.replace('-', "__");
            let label_name = BIN.replace('-', "__subcmd__");
            script.replace(&format!("{label_name}__subcmd__"), &format!("{loop_name}__subcmd__"))
        }
        _ => script,
    }
}

/// Runs `completions`.
pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    out.write_all(script(args.shell).as_bytes())?;
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}
