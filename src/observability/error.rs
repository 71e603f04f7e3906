//! The crate error.

use crate::metrics::MetricsError;
use crate::pipeline::{PipelineError, SinkError};
use crate::trace::TraceError;

/// An error and its causes on one line, `error: cause: cause`, each cause once (a cause whose
/// text the line already holds is not repeated). For logs: `error = %ErrorChain(&e)`.
///
/// The crate's errors follow one rule: a cause is the error's [`source`](std::error::Error::source)
/// and is not repeated in its message, so `{:#}` of an `anyhow::Error` and this print each
/// cause once (issue 14: "Permission denied (os error 13)" was printed twice).
pub struct ErrorChain<'a>(pub &'a (dyn std::error::Error + 'a));

impl std::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut line = self.0.to_string();
        let mut cause = self.0.source();
        while let Some(c) = cause {
            let text = c.to_string();
            if !line.contains(&text) {
                line.push_str(": ");
                line.push_str(&text);
            }
            cause = c.source();
        }
        f.write_str(&line)
    }
}

/// What can go wrong setting up or using the library.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration is not usable.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// Metrics could not be set up or served.
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    /// A sink could not be opened.
    #[error(transparent)]
    Sink(#[from] SinkError),
    /// Flush or shutdown did not finish.
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    /// A free function was called before [`init`](crate::init).
    #[error("serphona-obs is not initialized: call serphona_obs::init(config) first")]
    NotInitialized,
    /// [`init`](crate::init) was called twice.
    #[error("serphona-obs is already initialized")]
    AlreadyInitialized,
    /// A conversation with this explicit id is already in progress.
    #[error("conversation {0:?} is already in progress")]
    DuplicateConversation(String),
    /// No conversation with this id is in progress in this process.
    #[error("no conversation {0:?} is in progress (never started here, or already ended)")]
    UnknownConversation(String),
    /// A direct ClickHouse export failed.
    #[cfg(feature = "clickhouse")]
    #[error(transparent)]
    ClickHouse(#[from] crate::analytics::ClickHouseError),
    /// Tracing could not be set up, or its export could not be flushed.
    #[error(transparent)]
    Trace(#[from] TraceError),
    /// The privacy policy could not be set up (its hash key file).
    #[error(transparent)]
    Privacy(#[from] crate::processors::redaction::RedactionError),
    /// The price table (`usage.prices`) cannot be used.
    #[error(transparent)]
    Prices(#[from] crate::pricing::PricesError),
    /// The config enables something this version cannot do yet.
    #[error("{0}")]
    Unsupported(String),
}
