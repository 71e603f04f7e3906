//! The JSON event log: the local file sink (the embedded default). The Loki push sink joins
//! it here in a later release.

pub mod eventlog;

pub use eventlog::{EventLogSink, event_log_dir, list_segments};
