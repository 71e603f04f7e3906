//! The command line: one module per subcommand. Exit codes: 0 ok, 1 runtime failure,
//! 2 usage or config error.

mod assets;
mod completions;
mod config;
mod dashboards;
mod demo;
mod doctor;
mod forget;
mod output;
mod query;
mod schema;
mod shutdown;
mod simulate;
mod stack;
mod tail;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use serphona_obs::Config;

/// Conversation-aware observability for Serphona's voice and chat agents.
///
/// Records every conversation as traces, metrics, JSON event logs and analytics rows; runs
/// the observability stack locally; simulates, watches and queries conversations.
/// With no configuration at all, everything works on the embedded default: an event log under
/// .serphona-obs/ and metrics on http://127.0.0.1:9464/metrics.
#[derive(Debug, Parser)]
#[command(name = "serphona-obs", version, propagate_version = true, max_term_width = 100)]
pub struct Cli {
    /// Config file (YAML); see `serphona-obs config init`.
    #[arg(long, global = true, env = "SERPHONA_OBS_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,

    /// Data directory (the local event log lives here); overrides data_dir.
    #[arg(long, global = true, value_name = "DIR")]
    data_dir: Option<PathBuf>,

    /// More diagnostics (-v debug, -vv trace).
    #[arg(short, long, global = true, action = clap::ArgAction::Count, conflicts_with = "quiet")]
    verbose: u8,

    /// Only errors.
    #[arg(short, long, global = true)]
    quiet: bool,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Simulate a small contact center on the embedded default and watch it.
    Demo(demo::Args),
    /// Start the observability stack (Prometheus, Loki, Tempo, Grafana, ClickHouse).
    Up(stack::UpArgs),
    /// Stop what `up` started.
    Down(stack::DownArgs),
    /// Health of each component of the stack.
    Status(stack::StatusArgs),
    /// ClickHouse migrations.
    #[command(subcommand)]
    Schema(schema::Command),
    /// Grafana dashboards.
    #[command(subcommand)]
    Dashboards(dashboards::Command),
    /// Synthetic conversations through the configured sinks.
    Simulate(simulate::Args),
    /// Live conversation view in the terminal.
    Tail(tail::Args),
    /// Read conversations, transcripts, traces and stats.
    #[command(subcommand)]
    Query(query::Command),
    /// Print a commented default config, or the effective one.
    #[command(subcommand)]
    Config(config::Command),
    /// Erase a customer's or a conversation's data from every store (ClickHouse, the event
    /// log, the spool; prints the selector for Loki's delete API).
    Forget(forget::Args),
    /// Shell completion script.
    Completions(completions::Args),
    /// Check the data dir: damaged lines in the event log and the spools, pending spooled
    /// events, checkpoint files, file modes. Exit 1 on damage.
    Doctor(doctor::Args),
}

/// A usage or configuration error: exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// What every command gets: the parsed global flags and the effective config.
pub struct Context {
    /// The effective config (file → env → global flags). Commands apply their own flags.
    pub config: Config,
    /// Show progress bars and colours (stderr is a terminal and not CI).
    pub interactive: bool,
}

/// Set by Ctrl-C (SIGINT, SIGTERM); long-running commands poll it and stop cleanly. The
/// handler is installed once, on first use. A command may also set it to stop its own work.
pub fn stop_flag() -> &'static std::sync::atomic::AtomicBool {
    static STOP: std::sync::OnceLock<std::sync::atomic::AtomicBool> = std::sync::OnceLock::new();
    static INSTALL: std::sync::Once = std::sync::Once::new();
    let flag = STOP.get_or_init(|| std::sync::atomic::AtomicBool::new(false));
    INSTALL.call_once(|| {
        if let Err(e) = ctrlc::set_handler(|| {
            interrupted();
            if let Some(flag) = STOP.get() {
                flag.store(true, std::sync::atomic::Ordering::Relaxed);
            }
        }) {
            tracing::debug!("cannot install the Ctrl-C handler: {e}");
        }
    });
    flag
}

/// Set when the user interrupted the command (Ctrl-C, or SIGTERM); the process then exits
/// with [`EXIT_INTERRUPTED`] once the command has stopped cleanly.
static INTERRUPTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// The exit code after Ctrl-C: 128 + SIGINT, as shells report it.
pub const EXIT_INTERRUPTED: u8 = 130;

/// Records that the user interrupted the command: from the signal handler, or from the live
/// view, where Ctrl-C arrives as a key.
pub fn interrupted() {
    INTERRUPTED.store(true, std::sync::atomic::Ordering::Relaxed);
}

fn was_interrupted() -> bool {
    INTERRUPTED.load(std::sync::atomic::Ordering::Relaxed)
}

/// The runtime a command runs its async work on (store reads, HTTP): one thread, with I/O and
/// timers.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread().enable_all().build()?)
}

/// Parses the command line, runs the command and returns its exit code: the command's, or
/// [`EXIT_INTERRUPTED`] after Ctrl-C; 0 when stdout was closed early (`| head`).
pub fn main() -> ExitCode {
    use clap::{CommandFactory, FromArgMatches};
    let matches = Cli::command().get_matches();
    let config_from_env = matches.value_source("config") == Some(clap::parser::ValueSource::EnvVariable);
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let result = run(cli, config_from_env);
    let interrupted = was_interrupted();
    match result {
        Ok(_) if interrupted => ExitCode::from(EXIT_INTERRUPTED),
        Ok(code) => code,
        Err(err) => {
            if is_broken_pipe(&err) {
                return ExitCode::SUCCESS;
            }
            eprintln!("error: {err:#}");
            ExitCode::from(exit_code(&err))
        }
    }
}

/// 2 for usage and config errors, 1 for everything else.
fn exit_code(err: &anyhow::Error) -> u8 {
    for cause in err.chain() {
        if cause.is::<UsageError>() || cause.is::<serphona_obs::config::ConfigError>() {
            return 2;
        }
        if let Some(serphona_obs::Error::Config(_)) = cause.downcast_ref::<serphona_obs::Error>() {
            return 2;
        }
        if let Some(serphona_obs::Error::Unsupported(_)) = cause.downcast_ref::<serphona_obs::Error>() {
            return 2;
        }
    }
    1
}

/// Whether the error comes from writing to a closed stdout: an I/O error, or one that the JSON
/// or CSV writer wrapped (their `source()` skips the I/O error itself).
fn is_broken_pipe(err: &anyhow::Error) -> bool {
    use std::io::ErrorKind::BrokenPipe;
    err.chain().any(|c| {
        c.downcast_ref::<std::io::Error>().is_some_and(|e| e.kind() == BrokenPipe)
            || c.downcast_ref::<serde_json::Error>().is_some_and(|e| e.io_error_kind() == Some(BrokenPipe))
            || c.downcast_ref::<csv::Error>().is_some_and(|e| matches!(e.kind(), csv::ErrorKind::Io(io) if io.kind() == BrokenPipe))
    })
}

fn run(cli: Cli, config_from_env: bool) -> anyhow::Result<ExitCode> {
    // These need no config.
    match &cli.command {
        Command::Completions(args) => return completions::run(args),
        Command::Config(config::Command::Init) => return config::init(),
        _ => {}
    }
    let (mut config, warnings) = Config::load(cli.config.as_deref()).map_err(|e| config_error(e, config_from_env))?;
    if let Some(dir) = &cli.data_dir {
        config.data_dir = dir.clone();
    }
    init_diagnostics(&config, cli.verbose, cli.quiet);
    for warning in warnings {
        tracing::warn!("{warning}");
    }
    let interactive = std::io::stderr().is_terminal() && std::env::var_os("CI").is_none();
    let ctx = Context { config, interactive };
    match cli.command {
        Command::Demo(args) => demo::run(ctx, args),
        Command::Simulate(args) => simulate::run(ctx, args),
        Command::Config(config::Command::Show(args)) => config::show(&ctx, &args),
        Command::Config(config::Command::Init) | Command::Completions(_) => unreachable!("handled above"),
        Command::Up(args) => stack::up(ctx, args),
        Command::Down(args) => stack::down(ctx, args),
        Command::Status(args) => stack::status(ctx, args),
        Command::Schema(command) => schema::run(ctx, command),
        Command::Dashboards(command) => dashboards::run(ctx, command),
        Command::Tail(args) => tail::run(ctx, args),
        Command::Query(command) => query::run(ctx, command),
        Command::Doctor(args) => doctor::run(ctx, args),
        Command::Forget(args) => forget::run(ctx, args),
    }
}

/// A config error, naming `SERPHONA_OBS_CONFIG` when the file's path came from it.
fn config_error(e: serphona_obs::config::ConfigError, from_env: bool) -> anyhow::Error {
    use serphona_obs::config::ConfigError;
    match e {
        ConfigError::Read { path, source } if from_env => UsageError(format!(
            "cannot read config file {} named by SERPHONA_OBS_CONFIG: {source}; point SERPHONA_OBS_CONFIG at a config \
             file (`serphona-obs config init > FILE` writes one) or unset it",
            path.display()
        ))
        .into(),
        e if from_env => anyhow::Error::from(e).context("the config file named by SERPHONA_OBS_CONFIG"),
        e => e.into(),
    }
}

fn init_diagnostics(config: &Config, verbose: u8, quiet: bool) {
    use tracing_subscriber::EnvFilter;
    let level = match (quiet, verbose) {
        (true, _) => "error",
        (_, 0) => config.logging.level.as_str(),
        (_, 1) => "debug",
        _ => "trace",
    };
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| EnvFilter::try_new(v).ok())
        .unwrap_or_else(|| EnvFilter::new(format!("warn,serphona_obs={level}")));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| Diagnostics)
        .with_target(false)
        .without_time()
        .try_init();
}

/// Where diagnostics go: stderr, or, while the live view owns the terminal, a buffer that is
/// printed when the view ends (a log line written under the view would garble it).
struct Diagnostics;

/// Diagnostics held while the live view runs (at most [`HELD_MAX`] bytes; the rest are counted).
static HELD: std::sync::Mutex<Option<(Vec<u8>, u64)>> = std::sync::Mutex::new(None);
const HELD_MAX: usize = 1 << 20;

impl std::io::Write for Diagnostics {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut held = HELD.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match held.as_mut() {
            Some((bytes, lost)) => {
                if bytes.len() + buf.len() <= HELD_MAX {
                    bytes.extend_from_slice(buf);
                } else {
                    *lost += buf.len() as u64;
                }
                Ok(buf.len())
            }
            None => std::io::stderr().write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// From now on, diagnostics are held instead of written to the terminal.
pub fn hold_diagnostics() {
    HELD.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get_or_insert_with(|| (Vec::new(), 0));
}

/// Writes the held diagnostics to stderr and goes back to writing them directly.
pub fn release_diagnostics() {
    use std::io::Write;
    let held = HELD.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
    if let Some((bytes, lost)) = held {
        let mut err = std::io::stderr().lock();
        let _ = err.write_all(&bytes);
        if lost > 0 {
            let _ = writeln!(err, "({lost} more bytes of diagnostics were not kept while the live view ran)");
        }
    }
}
