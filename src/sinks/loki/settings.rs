//! Where and how the Loki sink pushes: the endpoint, tenant and labels, and the batching and
//! retry limits.

use std::time::Duration;

use crate::config::{Config, Endpoint};

use super::PUSH_PATH;

/// A batch is pushed when its lines reach this many bytes (before compression; Promtail's and
/// Alloy's default).
pub const DEFAULT_BATCH_BYTES: usize = 1024 * 1024;
/// … or this long after its first line.
pub const DEFAULT_BATCH_WAIT: Duration = Duration::from_secs(1);
/// Lines the sink holds (handed over, batched, being retried) before it drops new ones.
pub const DEFAULT_BUFFER_LINES: usize = 32_768;
/// Longest one push may take.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Push attempts of a batch before it is dropped.
pub const DEFAULT_ATTEMPTS: u32 = 10;
/// The first retry delay.
pub const DEFAULT_MIN_BACKOFF: Duration = Duration::from_millis(250);
/// The longest retry delay.
pub const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How the Loki sink pushes: where, as which tenant, and its batching and retry limits.
/// [`LokiSettings::new`] has the defaults; [`LokiSettings::from_config`] reads the `logging`
/// section.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct LokiSettings {
    /// Loki's base URL; [`PUSH_PATH`] is added unless the URL already ends with it.
    pub endpoint: Endpoint,
    /// Sent as `X-Scope-OrgID` when set.
    pub tenant: Option<String>,
    /// The `environment` label.
    pub environment: String,
    /// See [`DEFAULT_BATCH_BYTES`].
    pub batch_bytes: usize,
    /// See [`DEFAULT_BATCH_WAIT`].
    pub batch_wait: Duration,
    /// See [`DEFAULT_BUFFER_LINES`].
    pub buffer_lines: usize,
    /// See [`DEFAULT_REQUEST_TIMEOUT`].
    pub request_timeout: Duration,
    /// See [`DEFAULT_ATTEMPTS`].
    pub attempts: u32,
    /// See [`DEFAULT_MIN_BACKOFF`].
    pub min_backoff: Duration,
    /// See [`DEFAULT_MAX_BACKOFF`].
    pub max_backoff: Duration,
    /// The data dir whose event log the sink resumes from after a crash or a shutdown
    /// deadline (its positions file is `<data_dir>/positions/loki.json`), when this process
    /// writes that event log; `None`: no positions, what is not pushed is lost.
    pub data_dir: Option<std::path::PathBuf>,
}

impl LokiSettings {
    /// Pushes to `endpoint` with the `environment` label, no tenant, and the default limits.
    pub fn new(endpoint: Endpoint, environment: impl Into<String>) -> LokiSettings {
        LokiSettings {
            endpoint,
            tenant: None,
            environment: environment.into(),
            batch_bytes: DEFAULT_BATCH_BYTES,
            batch_wait: DEFAULT_BATCH_WAIT,
            buffer_lines: DEFAULT_BUFFER_LINES,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            attempts: DEFAULT_ATTEMPTS,
            min_backoff: DEFAULT_MIN_BACKOFF,
            max_backoff: DEFAULT_MAX_BACKOFF,
            data_dir: None,
        }
    }

    /// The settings `config` asks for: `None` unless `logging.enabled` and
    /// `logging.loki_endpoint` is set; `logging.loki_tenant` when not empty.
    pub fn from_config(config: &Config) -> Option<LokiSettings> {
        let endpoint = config.logging.loki_endpoint.0.clone().filter(|_| config.logging.enabled)?;
        let mut settings = LokiSettings::new(endpoint, config.environment.clone());
        settings.tenant = Some(config.logging.loki_tenant.clone()).filter(|t| !t.is_empty());
        settings.data_dir = Some(config.data_dir.clone());
        Some(settings)
    }

    /// The URL pushes go to.
    pub fn push_url(&self) -> url::Url {
        let mut url = self.endpoint.url().clone();
        if !url.path().trim_end_matches('/').ends_with(PUSH_PATH) {
            let path = format!("{}{PUSH_PATH}", url.path().trim_end_matches('/'));
            url.set_path(&path);
        }
        url
    }
}

