//! The `serphona-obs` binary: parse, run, print the error, exit with its code.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
