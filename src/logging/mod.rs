//! The JSON event log: the local file sink (the embedded default), and the Loki push sink that
//! sends the same lines to Loki when `logging.loki_endpoint` is set.

pub mod eventlog;
pub mod loki;

pub use eventlog::{EventLogSink, event_log_dir, list_segments};
pub use loki::{LokiError, LokiSettings, LokiSink};
