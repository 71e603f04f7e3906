//! `tail`: the live conversation view in the terminal, or a stream of JSON event lines.
//!
//! `state` and `view` live in the library ([`serphona_obs::tui`]); this module parses the
//! flags, starts the source ([`source`]) and runs the app loop ([`app`]).

mod app;
pub mod source;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::ValueEnum;
use serphona_obs::tui::{Options, Prefilter, State};
use serphona_obs::types::Channel;
use time::OffsetDateTime;

use super::{Context, UsageError};
use source::{Kind, Source};

pub use app::Exit;

/// Which store `tail` follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SourceName {
    /// The local event log under the data dir (followed as it grows).
    Local,
    /// ClickHouse's `events` table (polled for rows inserted since the last poll).
    Clickhouse,
}

/// What `tail` prints instead of the live view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Every event as one JSON line, as it arrives (like `kubectl logs -f`).
    Json,
}

/// The live view's own `keep_ended`, as `--keep-ended` shows it.
static KEEP_ENDED: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| humantime::format_duration(Options::default().keep_ended).to_string());

/// `tail` flags.
///
/// Keys in the live view: ↑/↓ or j/k select, Enter or → focus the transcript, / filter
/// (`tenant:ID agent:ID channel:voice`, and words of the text or tags such as
/// `resolution:transferred`, `error:TYPE`, `interrupted`), p pause, f follow the newest,
/// e show/hide ended, ? help, q or Ctrl-C quit.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A file of JSON event lines to follow as it grows, or `-` for stdin (e.g. a service's
    /// logs piped in). Default: --source.
    #[arg(value_name = "FILE", conflicts_with_all = ["file", "source"])]
    pub input: Option<PathBuf>,
    /// Read JSON event lines from this file (the same as giving FILE).
    #[arg(long, value_name = "FILE", conflicts_with = "source")]
    pub file: Option<PathBuf>,
    /// Follow: wait for more events at the end (the default; `-f` as with `tail -f` and
    /// `kubectl logs -f`).
    #[arg(short = 'f', long, overrides_with = "no_follow")]
    pub follow: bool,
    /// local (the event log under the data dir) or clickhouse. Default: clickhouse when
    /// clickhouse.enabled is set in the config, else local.
    #[arg(long, value_enum)]
    pub source: Option<SourceName>,
    /// With --source clickhouse: start with events inserted this long ago (15m, 2h, 7d).
    #[arg(long, value_name = "DURATION", default_value = "15m", value_parser = humantime::parse_duration)]
    pub since: Duration,
    /// Only this tenant.
    #[arg(long)]
    pub tenant: Option<String>,
    /// Only this agent.
    #[arg(long)]
    pub agent: Option<String>,
    /// Only this channel (voice, chat, sms, email).
    #[arg(long, value_parser = |s: &str| s.parse::<Channel>())]
    pub channel: Option<Channel>,
    /// Stream events as JSON lines instead of the live view (needed without a terminal).
    #[arg(long, short = 'o', value_enum)]
    pub output: Option<Output>,
    /// Stop at the end of what is there now instead of waiting for more.
    #[arg(long, overrides_with = "follow")]
    pub no_follow: bool,
    /// Ended conversations leave the view this long after their end (data time).
    // The default is the live view's own (`Options::default`), which `demo` uses too.
    #[arg(long, value_name = "DURATION", default_value = KEEP_ENDED.as_str(), value_parser = humantime::parse_duration)]
    pub keep_ended: Duration,
    /// At most this many ended conversations stay in the view.
    #[arg(long, value_name = "N", default_value_t = Options::default().max_ended)]
    pub max_ended: usize,
}

impl Args {
    /// The view's options for a source label.
    pub fn options(&self, source: String) -> Options {
        Options {
            source,
            tenant: self.tenant.clone(),
            agent: self.agent.clone(),
            channel: self.channel,
            keep_ended: self.keep_ended,
            max_ended: self.max_ended,
            ..Options::default()
        }
    }
}

/// Runs the live view over a source until the user quits; `status` is polled for a header
/// line (e.g. "simulation finished"). Used by `demo`.
pub fn watch(options: Options, kind: Kind, status: &dyn Fn() -> Option<String>) -> anyhow::Result<()> {
    let mut source = Source::start(kind, true);
    let exit = app::run(State::new(options), &mut source, super::stop_flag(), "the source closed", status);
    source.stop();
    match exit? {
        Exit::Quit => Ok(()),
        Exit::Failed(message) => Err(anyhow::anyhow!(message)),
    }
}

/// Runs `tail`.
pub fn run(ctx: Context, args: Args) -> anyhow::Result<ExitCode> {
    let kind = if args.input.as_deref() == Some(std::path::Path::new("-")) {
        Kind::Stdin
    } else if let Some(path) = args.input.as_ref().or(args.file.as_ref()) {
        if !path.is_file() {
            return Err(UsageError(format!("{}: no such file (FILE is a file of JSON event lines, or `-` for stdin)", path.display())).into());
        }
        Kind::File(path.clone())
    } else {
        let name = args.source.unwrap_or(if ctx.config.clickhouse.enabled { SourceName::Clickhouse } else { SourceName::Local });
        match name {
            SourceName::Local => Kind::Local(ctx.config.data_dir.clone()),
            SourceName::Clickhouse => Kind::ClickHouse(Box::new(ctx.config.clickhouse.clone()), OffsetDateTime::now_utc() - args.since),
        }
    };
    let on_done = match &kind {
        Kind::Stdin => "stdin closed",
        _ => "no more events",
    };
    let label = kind.label();
    let follow = !args.no_follow;
    if args.output.is_none() && !std::io::stdout().is_terminal() {
        return Err(UsageError(
            "tail shows a live view and needs a terminal; without one, use `--output json` to stream the events as JSON lines".into(),
        )
        .into());
    }
    let stop = super::stop_flag();
    let mut source = Source::start(kind, follow);
    let failed = match args.output {
        Some(Output::Json) => {
            let mut prefilter = Prefilter::new(args.tenant.clone(), args.agent.clone(), args.channel);
            app::stream_json(&mut source, |e| prefilter.admits(e), stop)?
        }
        None => match app::run(State::new(args.options(label)), &mut source, stop, on_done, &|| None)? {
            Exit::Quit => None,
            Exit::Failed(message) => Some(message),
        },
    };
    source.stop();
    for file in source.counters.damage().files() {
        tracing::warn!("{file}");
    }
    match failed {
        Some(message) => Err(anyhow::anyhow!(message)),
        None => Ok(ExitCode::SUCCESS),
    }
}
