//! Configuration: defaults → YAML file → `SERPHONA_OBS_*` environment variables → CLI flags.
//!
//! The keys are fixed (see the README's config reference). Every key has an environment
//! variable `SERPHONA_OBS_<SECTION>_<KEY>` (top-level keys: `SERPHONA_OBS_<KEY>`).
//! Values that can be wrong in only one way (URLs, addresses, enums, durations) are checked
//! while parsing, so a bad file value is reported with its line; [`Config::validate`] checks
//! the rest and names the field.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Where the metrics endpoint listens by default.
///
/// Not 9090: that is Prometheus's own port, and the stack `up` starts runs
/// Prometheus on it. 9464 is the port OpenTelemetry's Prometheus exporters use.
pub const DEFAULT_METRICS_LISTEN: &str = "127.0.0.1:9464";

/// The whole configuration. `Default` is the embedded default: no servers needed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The service's name, on every event, span and metric series.
    #[serde(deserialize_with = "checked::non_empty")]
    pub service_name: String,
    /// The service's version.
    pub service_version: String,
    /// `development`, `staging`, `production`, …
    pub environment: String,
    /// Where the local event log (the embedded default) lives.
    pub data_dir: PathBuf,
    /// OpenTelemetry traces.
    pub tracing: TracingConfig,
    /// Prometheus metrics.
    pub metrics: MetricsConfig,
    /// The JSON event log (local file, and Loki when an endpoint is set).
    pub logging: LoggingConfig,
    /// ClickHouse analytics rows.
    pub clickhouse: ClickHouseConfig,
    /// The queue between the callers and the sinks.
    pub pipeline: PipelineConfig,
    /// Redaction of personal data before any sink (see [`crate::processors::redaction`]).
    pub privacy: PrivacyConfig,
    /// Pricing of tokens and voice services.
    pub usage: UsageConfig,
    /// Turn-taking on voice conversations.
    pub voice: VoiceConfig,
}

/// `usage:` section.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UsageConfig {
    /// A price table (`prices.yaml`) laid over the built-in one, entry by entry; empty: the
    /// built-in table alone (see [`crate::pricing`]).
    pub prices: Option<PathBuf>,
}

/// `voice:` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VoiceConfig {
    /// The shortest silence between two turns that counts as dead air (2 s by default).
    #[serde(serialize_with = "humantime_serde::serialize", deserialize_with = "checked::positive_duration")]
    pub dead_air_threshold: Duration,
}

impl Default for VoiceConfig {
    fn default() -> Self {
        VoiceConfig { dead_air_threshold: Duration::from_secs(2) }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            service_name: "agent-orchestrator".into(),
            service_version: "1.0.0".into(),
            environment: "development".into(),
            data_dir: PathBuf::from(".serphona-obs"),
            tracing: TracingConfig::default(),
            metrics: MetricsConfig::default(),
            logging: LoggingConfig::default(),
            clickhouse: ClickHouseConfig::default(),
            pipeline: PipelineConfig::default(),
            privacy: PrivacyConfig::default(),
            usage: UsageConfig::default(),
            voice: VoiceConfig::default(),
        }
    }
}

fn check_otlp_endpoint(t: &TracingConfig) -> Result<(), String> {
    if t.protocol == Protocol::Http && t.endpoint.url().scheme() == "https" {
        return Err(format!(
            "{}: OTLP/HTTP over https is not supported by this build; use protocol: grpc for an https \
             endpoint, or an http endpoint (a local collector)",
            t.endpoint
        ));
    }
    Ok(())
}

/// A header name usable in HTTP/1, HTTP/2 and gRPC metadata: lowercase token characters.
fn check_header_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.'))
        && !name.ends_with("-bin");
    if ok {
        Ok(())
    } else {
        Err(format!("{name:?} is not a usable header name: use lowercase letters, digits, '-', '_' or '.' (e.g. x-conversation-id)"))
    }
}

/// OTLP protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// OTLP/gRPC (port 4317).
    Grpc,
    /// OTLP/HTTP with protobuf bodies (port 4318).
    Http,
}

/// `tracing:` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TracingConfig {
    /// Export spans.
    pub enabled: bool,
    /// OTLP endpoint.
    pub endpoint: Endpoint,
    /// `grpc` or `http`.
    pub protocol: Protocol,
    /// Fraction of conversations traced, 0–1.
    #[serde(deserialize_with = "checked::ratio")]
    pub sample_ratio: f64,
    /// The HTTP header (gRPC metadata key) a conversation id travels in between services: the
    /// middleware reads it from requests, the client helpers set it.
    pub conversation_header: String,
}

impl Default for TracingConfig {
    fn default() -> Self {
        TracingConfig {
            enabled: true,
            endpoint: Endpoint::parse("http://localhost:4317").expect("valid default"),
            protocol: Protocol::Grpc,
            sample_ratio: 1.0,
            conversation_header: "x-conversation-id".into(),
        }
    }
}

/// `metrics:` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Serve `/metrics`.
    pub enabled: bool,
    /// Address of the `/metrics` endpoint (port 0 picks a free one).
    pub listen: SocketAddr,
    /// Most distinct values kept per unbounded label (tenant_id, agent_id); later values are
    /// recorded as `other` and counted in `serphona_obs_label_overflow_total`.
    #[serde(deserialize_with = "checked::at_least_one")]
    pub max_label_values: usize,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            enabled: true,
            listen: DEFAULT_METRICS_LISTEN.parse().expect("valid default"),
            max_label_values: 1000,
        }
    }
}

/// Diagnostic verbosity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// Everything.
    Trace,
    /// Debug detail.
    Debug,
    /// Normal.
    Info,
    /// Warnings and errors only.
    Warn,
    /// Errors only.
    Error,
}

impl LogLevel {
    /// The lowercase name (as `RUST_LOG` takes it).
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Trace => "trace",
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        }
    }
}

/// `logging:` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoggingConfig {
    /// Write the JSON event log under `data_dir` (and push to Loki when set).
    pub enabled: bool,
    /// Level of the library's and binary's own diagnostics.
    pub level: LogLevel,
    /// Loki base URL (`http://host:3100`; the push path `/loki/api/v1/push` is added); empty
    /// for no Loki push.
    pub loki_endpoint: OptionalEndpoint,
    /// The Loki tenant, sent as `X-Scope-OrgID` on every push; empty sends no header (a Loki
    /// with `auth_enabled: false`).
    #[serde(deserialize_with = "checked::loki_tenant")]
    pub loki_tenant: String,
    /// Size at which the event log starts a new file (at least 4096).
    #[serde(deserialize_with = "checked::file_bytes")]
    pub max_file_bytes: u64,
    /// Event log files kept; the oldest is deleted beyond this (0 keeps all).
    pub max_files: usize,
    /// When the event log is synced to disk (see [`LogSync`]).
    pub sync: LogSync,
}

/// When the event log's lines are synced to disk (`fdatasync`). A line is in the page cache,
/// and survives a crash of the process, as soon as its batch is written; syncing is what makes
/// it survive a crash of the machine. BENCHMARKS.md has the cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogSync {
    /// At `flush()` and `shutdown()` (the default).
    #[default]
    Flush,
    /// After every dispatch batch, before the other sinks see it: nothing a sink delivered
    /// can be missing from the log after a crash of the machine.
    Batch,
}

impl Default for LoggingConfig {
    fn default() -> Self {
        LoggingConfig {
            enabled: true,
            level: LogLevel::Info,
            loki_endpoint: OptionalEndpoint(None),
            loki_tenant: String::new(),
            max_file_bytes: 64 * 1024 * 1024,
            max_files: 0,
            sync: LogSync::Flush,
        }
    }
}

/// ClickHouse wire compression.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// ClickHouse's LZ4 block framing.
    Lz4,
    /// None.
    None,
}

/// `clickhouse:` section. Its `Debug` masks the password (see [`MASK`]).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClickHouseConfig {
    /// Send rows to ClickHouse.
    pub enabled: bool,
    /// HTTP interface URL.
    pub endpoint: Endpoint,
    /// Database (a plain identifier).
    #[serde(deserialize_with = "checked::identifier")]
    pub database: String,
    /// User.
    pub user: String,
    /// Password (masked by `config show`).
    pub password: String,
    /// Rows per insert.
    #[serde(deserialize_with = "checked::at_least_one")]
    pub batch_size: usize,
    /// Longest a row waits before its batch is sent.
    #[serde(serialize_with = "humantime_serde::serialize", deserialize_with = "checked::positive_duration")]
    pub flush_interval: Duration,
    /// `lz4` or `none`.
    pub compression: Compression,
    /// Most bytes of encoded rows per insert; a batch is sent when it reaches either limit.
    #[serde(deserialize_with = "checked::at_least_one")]
    pub batch_bytes: usize,
    /// Days rows are kept (the tables' TTL, set when `schema apply` creates them).
    #[serde(deserialize_with = "checked::at_least_one")]
    pub retention_days: usize,
    /// Longest one insert may take before it counts as failed and is retried.
    #[serde(serialize_with = "humantime_serde::serialize", deserialize_with = "checked::positive_duration")]
    pub request_timeout: Duration,
    /// Most bytes the disk spool of undeliverable batches (under `data_dir/spool/clickhouse`)
    /// may hold; beyond it the oldest batches are dropped and counted.
    #[serde(deserialize_with = "checked::at_least_one")]
    pub spool_max_bytes: usize,
}

impl fmt::Debug for ClickHouseConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClickHouseConfig")
            .field("enabled", &self.enabled)
            .field("endpoint", &self.endpoint)
            .field("database", &self.database)
            .field("user", &self.user)
            .field("password", &if self.password.is_empty() { "" } else { MASK })
            .field("batch_size", &self.batch_size)
            .field("flush_interval", &self.flush_interval)
            .field("compression", &self.compression)
            .field("batch_bytes", &self.batch_bytes)
            .field("retention_days", &self.retention_days)
            .field("request_timeout", &self.request_timeout)
            .field("spool_max_bytes", &self.spool_max_bytes)
            .finish()
    }
}

impl Default for ClickHouseConfig {
    fn default() -> Self {
        ClickHouseConfig {
            enabled: false,
            endpoint: Endpoint::parse("http://localhost:8123").expect("valid default"),
            database: "analytics".into(),
            user: "default".into(),
            password: String::new(),
            batch_size: 1000,
            flush_interval: Duration::from_secs(10),
            compression: Compression::Lz4,
            batch_bytes: 8 * 1024 * 1024,
            retention_days: 365,
            request_timeout: Duration::from_secs(30),
            spool_max_bytes: 256 * 1024 * 1024,
        }
    }
}

/// What the caller's enqueue does when the queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WhenFull {
    /// Drop the new event, count it, never wait (default).
    DropNewest,
    /// Wait for room: nothing is dropped, but the caller can stall.
    Block,
}

/// `pipeline:` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PipelineConfig {
    /// Events the queue holds.
    #[serde(deserialize_with = "checked::at_least_one")]
    pub queue_capacity: usize,
    /// `drop_newest` or `block`.
    pub when_full: WhenFull,
    /// How long the command line waits at exit for the sinks to deliver what is queued
    /// ([`DEFAULT_SHUTDOWN_TIMEOUT`] by default). What the ClickHouse sink has not delivered by
    /// then stays in its disk spool and is sent on the next start; the other sinks count it as
    /// failed.
    #[serde(serialize_with = "humantime_serde::serialize", deserialize_with = "checked::positive_duration")]
    pub shutdown_timeout: Duration,
}

/// The default `pipeline.shutdown_timeout`.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig { queue_capacity: 65536, when_full: WhenFull::DropNewest, shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT }
    }
}

/// How a redacted value is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RedactionMode {
    /// `[REDACTED:<name>]` (default).
    Mask,
    /// `[HASH:<name>:<16 hex>]`: a keyed hash (HMAC-SHA256), equal values give equal tokens.
    Hash,
}

/// A custom redaction rule: a name (the `kind` label and the token's name) and a regex.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedactionRule {
    /// Lowercase letters, digits and `_`, e.g. `order_id`.
    pub name: String,
    /// A regular expression (Rust `regex` syntax); every match is redacted.
    pub pattern: String,
}

/// One tenant's privacy policy: what it sets replaces the default's (`rules` adds to them).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TenantPrivacy {
    /// The built-in detectors for this tenant (instead of `privacy.redact`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redact: Option<Vec<crate::processors::Detector>>,
    /// Rules for this tenant, besides `privacy.rules`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rules: Option<Vec<RedactionRule>>,
    /// `mask` or `hash` for this tenant.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<RedactionMode>,
}

/// `privacy:` section: personal data is redacted before any sink (and in span attributes).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PrivacyConfig {
    /// Built-in detectors: `card_number`, `email`, `phone`, `iban`, `us_ssn` (all by default).
    pub redact: Vec<crate::processors::Detector>,
    /// Custom rules: `{name, pattern}`.
    pub rules: Vec<RedactionRule>,
    /// `mask` (default) or `hash`.
    pub mode: RedactionMode,
    /// The key of `mode: hash` (a secret); empty: one is generated into `<data_dir>/privacy.key`.
    pub hash_key: String,
    /// Per-tenant policies, by tenant id.
    pub tenants: std::collections::BTreeMap<String, TenantPrivacy>,
}

impl Default for PrivacyConfig {
    fn default() -> Self {
        PrivacyConfig {
            redact: crate::processors::Detector::defaults(),
            rules: Vec::new(),
            mode: RedactionMode::Mask,
            hash_key: String::new(),
            tenants: std::collections::BTreeMap::new(),
        }
    }
}

impl fmt::Debug for PrivacyConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrivacyConfig")
            .field("redact", &self.redact)
            .field("rules", &self.rules)
            .field("mode", &self.mode)
            .field("hash_key", &if self.hash_key.is_empty() { "" } else { MASK })
            .field("tenants", &self.tenants)
            .finish()
    }
}

impl PrivacyConfig {
    /// Checks the rules: names usable as labels, unique, not a built-in's; patterns that
    /// compile. The error names the rule.
    fn check(&self) -> Result<(), ConfigError> {
        let invalid = |field: String, message: String| Err(ConfigError::Invalid { field, message });
        let check_rules = |prefix: &str, rules: &[RedactionRule]| -> Result<(), ConfigError> {
            let mut seen = std::collections::HashSet::new();
            for (i, rule) in rules.iter().enumerate() {
                let field = format!("{prefix}[{i}]");
                if rule.name.is_empty()
                    || !rule.name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
                {
                    return invalid(
                        format!("{field}.name"),
                        format!("{:?} is not a rule name: use lowercase letters, digits and _", rule.name),
                    );
                }
                if crate::processors::Detector::parse(&rule.name).is_some() {
                    return invalid(
                        format!("{field}.name"),
                        format!("{:?} is a built-in detector: list it under privacy.redact instead", rule.name),
                    );
                }
                if !seen.insert(rule.name.as_str()) {
                    return invalid(format!("{field}.name"), format!("rule {:?} is defined twice", rule.name));
                }
                if let Err(e) = regex::Regex::new(&rule.pattern) {
                    return invalid(
                        format!("{field}.pattern"),
                        format!("rule {:?}: invalid regular expression: {e}", rule.name),
                    );
                }
            }
            Ok(())
        };
        check_rules("privacy.rules", &self.rules)?;
        for (tenant, t) in &self.tenants {
            if let Some(rules) = &t.rules {
                let all: Vec<RedactionRule> = self.rules.iter().chain(rules).cloned().collect();
                check_rules(&format!("privacy.tenants.{tenant}.rules"), &all)?;
            }
        }
        Ok(())
    }
}

/// What secrets are replaced with in `config show`, logs and error messages.
pub const MASK: &str = "********";

/// A URL as it may be shown: the userinfo masked (`http://user:********@host`, or
/// `http://********@host` when there is only a user name, which is often a token), and the
/// values of query parameters that look like secrets (`token`, `key`, `secret`, `password`,
/// `auth`, `sig`…) masked.
pub fn redact_url(url: &url::Url) -> url::Url {
    let mut shown = url.clone();
    if url.password().is_some() {
        let _ = shown.set_password(Some(MASK));
    } else if !url.username().is_empty() {
        let _ = shown.set_username(MASK);
    }
    if url.query().is_some() {
        let secret = |k: &str| {
            let k = k.to_ascii_lowercase();
            ["token", "key", "secret", "pass", "auth", "sig", "credential"].iter().any(|s| k.contains(s))
        };
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(k, v)| {
                let v = if secret(&k) { MASK.to_string() } else { v.into_owned() };
                (k.into_owned(), v)
            })
            .collect();
        shown.query_pairs_mut().clear().extend_pairs(pairs);
    }
    shown
}

/// [`redact_url`] of a URL given as text; text that is not a URL is returned as it is.
pub fn redact_url_str(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(u) => redact_url(&u).to_string(),
        Err(_) => url.to_string(),
    }
}

/// An `http://` or `https://` URL with a host, checked when parsed.
///
/// `Display` and `Debug` mask credentials ([`redact_url`]), so an endpoint in a log line or an
/// error message never shows them; [`Endpoint::as_str`] and [`Endpoint::url`] are the real URL,
/// to connect with.
#[derive(Clone, PartialEq, Eq)]
pub struct Endpoint(url::Url);

impl Endpoint {
    /// Parses and checks a URL.
    pub fn parse(s: &str) -> Result<Endpoint, String> {
        let url = url::Url::parse(s).map_err(|e| format!("invalid URL {s:?}: {e}"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!("invalid URL {s:?}: scheme must be http or https, not {:?}", url.scheme()));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(format!("invalid URL {s:?}: no host"));
        }
        Ok(Endpoint(url))
    }

    /// The URL.
    pub fn url(&self) -> &url::Url {
        &self.0
    }

    /// The URL as written (normalized), without a trailing slash for a bare host. This is the
    /// real URL, credentials included: show [`Endpoint::redacted`] (or `Display`) instead.
    pub fn as_str(&self) -> &str {
        bare(&self.0)
    }

    /// Whether the URL holds credentials (a user name or password, or a secret-looking query
    /// parameter).
    pub fn has_secrets(&self) -> bool {
        redact_url(&self.0) != self.0
    }

    /// The endpoint with its credentials masked (see [`redact_url`]), for `config show`.
    pub fn redacted(&self) -> Endpoint {
        Endpoint(redact_url(&self.0))
    }
}

fn bare(url: &url::Url) -> &str {
    url.as_str().strip_suffix('/').filter(|_| url.path() == "/").unwrap_or(url.as_str())
}

/// The URL with its credentials masked.
impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(bare(&redact_url(&self.0)))
    }
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Endpoint").field(&bare(&redact_url(&self.0))).finish()
    }
}

impl Serialize for Endpoint {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// Checks the URL inside the visitor, so a YAML error points at the value's own line.
struct EndpointVisitor {
    optional: bool,
}

impl serde::de::Visitor<'_> for EndpointVisitor {
    type Value = Option<Endpoint>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.optional { "an http(s) URL or an empty string" } else { "an http(s) URL" })
    }

    fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Self::Value, E> {
        if self.optional && s.trim().is_empty() {
            return Ok(None);
        }
        Endpoint::parse(s).map(Some).map_err(E::custom)
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        if self.optional { Ok(None) } else { Err(E::invalid_type(serde::de::Unexpected::Unit, &self)) }
    }
}

impl<'de> Deserialize<'de> for Endpoint {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(EndpointVisitor { optional: false }).map(|e| e.expect("required endpoint"))
    }
}

/// An [`Endpoint`] or nothing (written as an empty string).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OptionalEndpoint(pub Option<Endpoint>);

impl Serialize for OptionalEndpoint {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.0.as_ref().map_or("", Endpoint::as_str))
    }
}

impl<'de> Deserialize<'de> for OptionalEndpoint {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(EndpointVisitor { optional: true }).map(OptionalEndpoint)
    }
}

/// A configuration that cannot be used. The message names the file, line, environment
/// variable or field.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read (the reason is the error's source).
    #[error("cannot read config file {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file does not parse into the config shape.
    #[error("{}{}: field `{field}`: {message}", origin.display(), crate::yaml::location(*line, *column))]
    File {
        /// The file.
        origin: PathBuf,
        /// Dotted path of the field, e.g. `tracing.endpoint`.
        field: String,
        /// 1-based line, when known.
        line: Option<usize>,
        /// 1-based column, when known.
        column: Option<usize>,
        /// What is wrong.
        message: String,
    },
    /// An environment variable has a value of the wrong shape.
    #[error("environment variable {var} (field `{field}`): {message}")]
    Env {
        /// The variable.
        var: String,
        /// The field it sets.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// A value is out of range or inconsistent.
    #[error("config field `{field}`: {message}")]
    Invalid {
        /// Dotted path of the field.
        field: String,
        /// What is wrong.
        message: String,
    },
}

/// The environment variable prefix.
pub const ENV_PREFIX: &str = "SERPHONA_OBS_";

/// Environment variables with the prefix that are not config keys.
const ENV_NOT_KEYS: &[&str] = &["SERPHONA_OBS_CONFIG", "SERPHONA_OBS_LOG"];

impl Config {
    /// Parses YAML text; `origin` names the file in errors. An empty document is the default.
    pub fn from_yaml(text: &str, origin: &Path) -> Result<Config, ConfigError> {
        if text.trim().is_empty() {
            return Ok(Config::default());
        }
        crate::yaml::from_str(text, origin).map_err(|e| ConfigError::File {
            origin: e.origin,
            field: e.field,
            line: e.line,
            column: e.column,
            message: e.message,
        })
    }

    /// Reads a YAML file.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
        Config::from_yaml(&text, path)
    }

    /// Loads the effective config: defaults, then the file (if any), then the process
    /// environment; then validates. Returns warnings (e.g. unknown `SERPHONA_OBS_` variables).
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let yaml = format!("service_name: billing-bot\ndata_dir: {:?}\nmetrics:\n  listen: 127.0.0.1:0\n", dir.path());
    /// # std::fs::write(dir.path().join("serphona-obs.yaml"), yaml).unwrap();
    /// use std::path::Path;
    /// use serphona_obs::{Config, Observability};
    ///
    /// // The file, then SERPHONA_OBS_* variables over it; warnings name unknown variables.
    /// let path = Path::new("serphona-obs.yaml");
    /// # let path = dir.path().join(path);
    /// # let path = path.as_path();
    /// let (config, warnings) = Config::load(Some(path))?;
    /// for warning in &warnings {
    ///     eprintln!("serphona-obs: {warning}");
    /// }
    /// let obs = Observability::init(config)?;
    /// # assert_eq!(obs.service(), "billing-bot");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn load(file: Option<&Path>) -> Result<(Config, Vec<String>), ConfigError> {
        let base = match file {
            Some(path) => Config::from_file(path)?,
            None => Config::default(),
        };
        let (config, warnings) = base.with_env(std::env::vars())?;
        config.validate()?;
        Ok((config, warnings))
    }

    /// Applies `SERPHONA_OBS_*` variables from `vars` over this config.
    ///
    /// Values are read by the type of the key they set: `true`/`false` for flags, numbers for
    /// numbers, the text as is for strings, URLs, durations and enums.
    pub fn with_env(
        self,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<(Config, Vec<String>), ConfigError> {
        let mut tree = serde_json::to_value(&self).expect("config serializes");
        let mut applied: Vec<(String, String)> = Vec::new(); // (var, field)
        let mut warnings = Vec::new();
        for (var, raw) in vars {
            let Some(rest) = var.strip_prefix(ENV_PREFIX) else { continue };
            if ENV_NOT_KEYS.contains(&var.as_str()) || rest.starts_with("TEST_") {
                continue;
            }
            let Some((field, slot)) = find_env_slot(&mut tree, rest) else {
                warnings.push(format!("ignoring environment variable {var}: it names no config key"));
                continue;
            };
            *slot = env_value(slot, &raw)
                .map_err(|message| ConfigError::Env { var: var.clone(), field: field.clone(), message })?;
            applied.push((var, field));
        }
        if applied.is_empty() {
            return Ok((self, warnings));
        }
        let config = serde_path_to_error::deserialize(tree).map_err(|e| {
            let field = e.path().to_string();
            let var = applied
                .iter()
                .find(|(_, f)| *f == field)
                .map_or_else(|| "SERPHONA_OBS_*".to_string(), |(v, _)| v.clone());
            ConfigError::Env { var, field, message: e.into_inner().to_string() }
        })?;
        Ok((config, warnings))
    }

    /// Checks ranges and consistency that parsing alone cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let checks: [(&str, Result<(), String>); 19] = [
            ("service_name", check_non_empty(&self.service_name)),
            ("data_dir", check_non_empty(&self.data_dir.to_string_lossy())),
            ("tracing.sample_ratio", check_ratio(self.tracing.sample_ratio)),
            ("tracing.endpoint", check_otlp_endpoint(&self.tracing)),
            ("tracing.conversation_header", check_header_name(&self.tracing.conversation_header)),
            ("metrics.max_label_values", check_at_least(self.metrics.max_label_values as u64, 1)),
            ("logging.max_file_bytes", check_at_least(self.logging.max_file_bytes, MIN_FILE_BYTES)),
            ("logging.loki_endpoint", check_loki_endpoint(&self.logging.loki_endpoint)),
            ("logging.loki_tenant", check_loki_tenant(&self.logging.loki_tenant)),
            ("clickhouse.database", check_identifier(&self.clickhouse.database)),
            ("clickhouse.batch_size", check_at_least(self.clickhouse.batch_size as u64, 1)),
            ("clickhouse.flush_interval", check_positive_duration(self.clickhouse.flush_interval)),
            ("clickhouse.batch_bytes", check_at_least(self.clickhouse.batch_bytes as u64, 1)),
            ("clickhouse.retention_days", check_at_least(self.clickhouse.retention_days as u64, 1)),
            ("clickhouse.request_timeout", check_positive_duration(self.clickhouse.request_timeout)),
            ("clickhouse.spool_max_bytes", check_at_least(self.clickhouse.spool_max_bytes as u64, 1)),
            ("pipeline.queue_capacity", check_at_least(self.pipeline.queue_capacity as u64, 1)),
            ("pipeline.shutdown_timeout", check_positive_duration(self.pipeline.shutdown_timeout)),
            ("voice.dead_air_threshold", check_positive_duration(self.voice.dead_air_threshold)),
        ];
        for (field, check) in checks {
            check.map_err(|message| ConfigError::Invalid { field: field.into(), message })?;
        }
        self.privacy.check()
    }

    /// A copy with secrets masked (what `config show` prints): the ClickHouse password, and
    /// the credentials held in every URL ([`redact_url`]).
    pub fn masked(&self) -> Config {
        let mut shown = self.clone();
        if !shown.clickhouse.password.is_empty() {
            shown.clickhouse.password = MASK.into();
        }
        shown.tracing.endpoint = shown.tracing.endpoint.redacted();
        shown.clickhouse.endpoint = shown.clickhouse.endpoint.redacted();
        if !shown.privacy.hash_key.is_empty() {
            shown.privacy.hash_key = MASK.into();
        }
        shown.logging.loki_endpoint = OptionalEndpoint(shown.logging.loki_endpoint.0.as_ref().map(Endpoint::redacted));
        shown
    }

    /// [`masked`](Self::masked) as YAML.
    pub fn to_masked_yaml(&self) -> String {
        serde_norway::to_string(&self.masked()).expect("config serializes")
    }

    /// The environment variable names of every key, with the dotted field they set.
    pub fn env_vars() -> Vec<(String, String)> {
        let tree = serde_json::to_value(Config::default()).expect("config serializes");
        let mut out = Vec::new();
        for (key, value) in tree.as_object().expect("object") {
            match value.as_object() {
                Some(section) => {
                    for sub in section.keys() {
                        out.push((env_name(&[key, sub]), format!("{key}.{sub}")));
                    }
                }
                None => out.push((env_name(&[key]), key.clone())),
            }
        }
        out
    }
}

fn env_name(parts: &[&String]) -> String {
    let joined: Vec<String> = parts.iter().map(|p| p.to_uppercase()).collect();
    format!("{ENV_PREFIX}{}", joined.join("_"))
}

/// Finds the config key an env var suffix (e.g. `CLICKHOUSE_BATCH_SIZE`) names.
fn find_env_slot<'a>(tree: &'a mut serde_json::Value, rest: &str) -> Option<(String, &'a mut serde_json::Value)> {
    let obj = tree.as_object_mut()?;
    // Which key matches, without holding a borrow across the search.
    let mut hit: Option<(String, Option<String>)> = None;
    for (key, value) in obj.iter() {
        let upper = key.to_uppercase();
        match value.as_object() {
            Some(section) => {
                if let Some(sub) = rest.strip_prefix(&upper).and_then(|r| r.strip_prefix('_')) {
                    if let Some(k) = section.keys().find(|k| k.to_uppercase() == sub) {
                        hit = Some((key.clone(), Some(k.clone())));
                    }
                }
            }
            None if upper == rest => hit = Some((key.clone(), None)),
            None => {}
        }
    }
    let (key, sub) = hit?;
    match sub {
        Some(sub) => {
            let field = format!("{key}.{sub}");
            Some((field, obj.get_mut(&key)?.get_mut(&sub)?))
        }
        None => Some((key.clone(), obj.get_mut(&key)?)),
    }
}

fn env_value(current: &serde_json::Value, raw: &str) -> Result<serde_json::Value, String> {
    use serde_json::Value;
    let raw = raw.trim();
    match current {
        Value::Bool(_) => match raw.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Ok(Value::Bool(true)),
            "false" | "0" | "no" | "off" => Ok(Value::Bool(false)),
            _ => Err(format!("{raw:?} is not a boolean (true or false)")),
        },
        Value::Number(n) => {
            if n.is_f64() {
                raw.parse::<f64>()
                    .ok()
                    .and_then(serde_json::Number::from_f64)
                    .map(Value::Number)
                    .ok_or_else(|| format!("{raw:?} is not a number"))
            } else {
                raw.parse::<u64>().map(Value::from).map_err(|_| format!("{raw:?} is not a whole number"))
            }
        }
        // Lists and maps: JSON (`[{"name":"order_id","pattern":"ORD-[0-9]{6}"}]`), or for a
        // list, comma-separated words (`card_number,email`).
        Value::Array(_) | Value::Object(_) if raw.starts_with('[') || raw.starts_with('{') => {
            serde_json::from_str(raw).map_err(|e| format!("{raw:?} is not valid JSON: {e}"))
        }
        Value::Array(_) => Ok(Value::Array(
            raw.split(',').map(str::trim).filter(|s| !s.is_empty()).map(|s| Value::String(s.to_string())).collect(),
        )),
        _ => Ok(Value::String(raw.to_string())),
    }
}

/// The smallest `logging.max_file_bytes`.
const MIN_FILE_BYTES: u64 = 4096;

fn check_non_empty(s: &str) -> Result<(), String> {
    if s.trim().is_empty() { Err("must not be empty".into()) } else { Ok(()) }
}

fn check_ratio(v: f64) -> Result<(), String> {
    if (0.0..=1.0).contains(&v) { Ok(()) } else { Err(format!("{v} is not between 0 and 1")) }
}

fn check_at_least(v: u64, min: u64) -> Result<(), String> {
    if v >= min { Ok(()) } else { Err(format!("{v} is below the minimum of {min}")) }
}

fn check_identifier(s: &str) -> Result<(), String> {
    let ok = s.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(format!("{s:?} is not a plain identifier (letters, digits, _; not starting with a digit)"))
    }
}

/// The Loki push goes over plain HTTP in this build (the HTTP client has no TLS).
fn check_loki_endpoint(endpoint: &OptionalEndpoint) -> Result<(), String> {
    match &endpoint.0 {
        Some(e) if e.url().scheme() == "https" => Err(format!(
            "{e}: the Loki push over https is not supported by this build; use an http endpoint \
             (a local Loki, or an agent such as Grafana Alloy that forwards over TLS)"
        )),
        _ => Ok(()),
    }
}

/// The longest Loki tenant id.
const MAX_LOKI_TENANT: usize = 150;

/// A Loki tenant id (Loki's rules): empty, or at most 150 of `A-Z a-z 0-9 ! - _ . * ' ( )`,
/// and not `.` or `..`.
fn check_loki_tenant(tenant: &str) -> Result<(), String> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || "!-_.*'()".contains(c);
    if tenant.is_empty() {
        Ok(())
    } else if tenant.len() > MAX_LOKI_TENANT {
        Err(format!("{} characters is more than Loki's {MAX_LOKI_TENANT}", tenant.len()))
    } else if let Some(c) = tenant.chars().find(|c| !allowed(*c)) {
        Err(format!("{tenant:?} has {c:?}: a Loki tenant takes letters, digits and ! - _ . * ' ( ) only"))
    } else if tenant == "." || tenant == ".." {
        Err(format!("{tenant:?} is not a usable Loki tenant"))
    } else {
        Ok(())
    }
}

fn check_positive_duration(d: Duration) -> Result<(), String> {
    if d.is_zero() { Err("must be longer than 0s".into()) } else { Ok(()) }
}

/// Deserializers that check the value inside the visitor: serde_norway attributes an error
/// raised there to the value's own line (an error raised after deserializing would point at
/// the enclosing mapping).
mod checked {
    use std::fmt;
    use std::marker::PhantomData;
    use std::time::Duration;

    use serde::Deserializer;
    use serde::de::{Error, Unexpected, Visitor};

    /// A visitor for one kind of value, with a check.
    struct Checked<T> {
        expecting: &'static str,
        check: fn(&T) -> Result<(), String>,
        _t: PhantomData<T>,
    }

    impl<T> Checked<T> {
        fn new(expecting: &'static str, check: fn(&T) -> Result<(), String>) -> Self {
            Checked { expecting, check, _t: PhantomData }
        }

        fn accept<E: Error>(&self, v: T) -> Result<T, E> {
            (self.check)(&v).map(|()| v).map_err(E::custom)
        }
    }

    impl Visitor<'_> for Checked<f64> {
        type Value = f64;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.expecting)
        }
        fn visit_f64<E: Error>(self, v: f64) -> Result<f64, E> {
            self.accept(v)
        }
        fn visit_u64<E: Error>(self, v: u64) -> Result<f64, E> {
            self.accept(v as f64)
        }
        fn visit_i64<E: Error>(self, v: i64) -> Result<f64, E> {
            self.accept(v as f64)
        }
    }

    impl Visitor<'_> for Checked<u64> {
        type Value = u64;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.expecting)
        }
        fn visit_u64<E: Error>(self, v: u64) -> Result<u64, E> {
            self.accept(v)
        }
        fn visit_i64<E: Error>(self, v: i64) -> Result<u64, E> {
            u64::try_from(v).map_err(|_| E::invalid_value(Unexpected::Signed(v), &self)).and_then(|v| self.accept(v))
        }
    }

    impl Visitor<'_> for Checked<String> {
        type Value = String;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.expecting)
        }
        fn visit_str<E: Error>(self, v: &str) -> Result<String, E> {
            self.accept(v.to_string())
        }
    }

    impl Visitor<'_> for Checked<Duration> {
        type Value = Duration;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.expecting)
        }
        fn visit_str<E: Error>(self, v: &str) -> Result<Duration, E> {
            let d = humantime::parse_duration(v).map_err(|e| E::custom(format!("invalid duration {v:?}: {e}")))?;
            self.accept(d)
        }
    }

    pub fn ratio<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        d.deserialize_f64(Checked::new("a number from 0 to 1", |v| super::check_ratio(*v)))
    }

    pub fn at_least_one<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
        let v = d.deserialize_u64(Checked::new("a whole number of at least 1", |v| super::check_at_least(*v, 1)))?;
        usize::try_from(v).map_err(|_| D::Error::custom(format!("{v} is too large")))
    }

    pub fn file_bytes<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        d.deserialize_u64(Checked::new("a size in bytes of at least 4096", |v| {
            super::check_at_least(*v, super::MIN_FILE_BYTES)
        }))
    }

    pub fn non_empty<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        d.deserialize_str(Checked::new("a non-empty string", |v: &String| super::check_non_empty(v)))
    }

    pub fn identifier<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        d.deserialize_str(Checked::new("a plain identifier", |v: &String| super::check_identifier(v)))
    }

    pub fn loki_tenant<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        d.deserialize_str(Checked::new("a Loki tenant id (or an empty string)", |v: &String| super::check_loki_tenant(v)))
    }

    pub fn positive_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        d.deserialize_str(Checked::new("a duration such as 10s or 500ms", |v| super::check_positive_duration(*v)))
    }
}

/// The commented default config that `config init` prints. It parses to [`Config::default`].
pub const DEFAULT_CONFIG_YAML: &str = r#"# serphona-obs configuration.
# Precedence: command-line flags > SERPHONA_OBS_* environment variables > this file > defaults.
# Every key has a variable: SERPHONA_OBS_<SECTION>_<KEY>, e.g. SERPHONA_OBS_CLICKHOUSE_ENABLED=true;
# top-level keys: SERPHONA_OBS_<KEY>, e.g. SERPHONA_OBS_DATA_DIR=/tmp/x.

service_name: agent-orchestrator   # on every event, span and metric series
service_version: 1.0.0
environment: development           # development | staging | production | …
data_dir: .serphona-obs            # the local event log (the embedded default) lives here

tracing:
  enabled: true
  endpoint: "http://localhost:4317"   # OTLP; nothing listening there slows nothing down
  protocol: grpc                      # grpc (4317) | http (4318, protobuf)
  sample_ratio: 1.0                   # fraction of conversations traced, 0–1
  conversation_header: x-conversation-id   # carries the conversation id between services

metrics:
  enabled: true
  # /metrics endpoint. Not 9090: that is Prometheus's own port in the stack `up` starts.
  listen: "127.0.0.1:9464"
  max_label_values: 1000              # per tenant_id / agent_id label; more become "other"

logging:
  enabled: true                       # the JSON event log under data_dir (and Loki, below)
  level: info                         # diagnostics: trace | debug | info | warn | error
  loki_endpoint: ""                   # e.g. http://localhost:3100; empty: no Loki push
  loki_tenant: ""                     # X-Scope-OrgID of the pushes; empty: no header
  max_file_bytes: 67108864            # start a new event log file at this size (64 MiB)
  max_files: 0                        # event log files kept; 0 keeps all
  sync: flush                         # fsync the log at flush/shutdown, or after every batch

clickhouse:
  enabled: false
  endpoint: "http://localhost:8123"
  database: analytics
  user: default
  password: ""                        # or SERPHONA_OBS_CLICKHOUSE_PASSWORD
  batch_size: 1000                    # rows per insert
  flush_interval: 10s                 # longest a row waits for its batch
  compression: lz4                    # lz4 | none
  batch_bytes: 8388608                # or at most this many bytes of rows per insert (8 MiB)
  retention_days: 365                 # TTL of the rows (applied by `schema apply`)
  request_timeout: 30s                # an insert slower than this is retried
  spool_max_bytes: 268435456          # disk spool of undeliverable batches (256 MiB)

pipeline:
  queue_capacity: 65536               # events between the callers and the sinks
  when_full: drop_newest              # drop_newest (never wait; drops are counted) | block
  shutdown_timeout: 30s               # longest wait at exit for the sinks; ClickHouse spools the rest

privacy:                              # personal data is redacted before every sink (docs/privacy.md)
  redact: [card_number, email, phone, iban, us_ssn]   # built-in detectors; [] turns them off
  rules: []                           # custom: [{name: order_id, pattern: "ORD-[0-9]{6}"}]
  mode: mask                          # mask: [REDACTED:email] | hash: [HASH:email:<hex>] (joinable)
  hash_key: ""                        # key of mode: hash; empty: generated into data_dir/privacy.key
  tenants: {}                         # per tenant: {umbrella-health: {redact: [card_number]}}
"#;

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<Config, ConfigError> {
        Config::from_yaml(yaml, Path::new("test.yaml"))
    }

    #[test]
    fn default_template_parses_to_default() {
        assert_eq!(parse(DEFAULT_CONFIG_YAML).unwrap(), Config::default());
    }

    #[test]
    fn default_metrics_port_is_not_prometheus() {
        assert_eq!(Config::default().metrics.listen.port(), 9464);
    }

    #[test]
    fn partial_file_keeps_defaults() {
        let c = parse("clickhouse:\n  batch_size: 5\n").unwrap();
        assert_eq!(c.clickhouse.batch_size, 5);
        assert_eq!(c.clickhouse.database, "analytics");
        assert_eq!(c.service_name, "agent-orchestrator");
    }

    #[test]
    fn unknown_key_names_field_and_line() {
        let err = parse("service_name: x\ntracing:\n  enabled: true\n  endpont: http://x:1\n").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("test.yaml:4"), "{msg}");
        assert!(msg.contains("endpont"), "{msg}");
        assert!(msg.contains("tracing"), "{msg}");
    }

    #[test]
    fn wrong_type_names_field_and_line() {
        let err = parse("clickhouse:\n  batch_size: lots\n").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("test.yaml:2"), "{msg}");
        assert!(msg.contains("clickhouse.batch_size"), "{msg}");
    }

    #[test]
    fn invalid_url_names_field_and_line() {
        let err = parse("\n\ntracing:\n  endpoint: \"localhost 4317\"\n").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("test.yaml:4"), "{msg}");
        assert!(msg.contains("tracing.endpoint"), "{msg}");
        assert!(msg.contains("invalid URL"), "{msg}");
        let err = parse("logging:\n  loki_endpoint: ftp://loki:3100\n").unwrap_err();
        assert!(err.to_string().contains("scheme must be http or https"), "{err}");
    }

    #[test]
    fn env_overrides_file_by_type() {
        let vars = [
            ("SERPHONA_OBS_CLICKHOUSE_ENABLED", "true"),
            ("SERPHONA_OBS_CLICKHOUSE_BATCH_SIZE", "250"),
            ("SERPHONA_OBS_TRACING_PROTOCOL", "http"),
            ("SERPHONA_OBS_TRACING_SAMPLE_RATIO", "0.5"),
            ("SERPHONA_OBS_DATA_DIR", "/tmp/x"),
            ("SERPHONA_OBS_CLICKHOUSE_FLUSH_INTERVAL", "250ms"),
            ("SERPHONA_OBS_LOGGING_LOKI_ENDPOINT", ""),
            ("OTHER", "1"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()));
        let (c, warnings) = Config::default().with_env(vars).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        assert!(c.clickhouse.enabled);
        assert_eq!(c.clickhouse.batch_size, 250);
        assert_eq!(c.tracing.protocol, Protocol::Http);
        assert_eq!(c.tracing.sample_ratio, 0.5);
        assert_eq!(c.data_dir, PathBuf::from("/tmp/x"));
        assert_eq!(c.clickhouse.flush_interval, Duration::from_millis(250));
        assert_eq!(c.logging.loki_endpoint, OptionalEndpoint(None));
    }

    #[test]
    fn bad_env_value_names_the_variable() {
        let vars = [("SERPHONA_OBS_TRACING_ENDPOINT".to_string(), "not a url".to_string())];
        let err = Config::default().with_env(vars).unwrap_err().to_string();
        assert!(err.contains("SERPHONA_OBS_TRACING_ENDPOINT"), "{err}");
        assert!(err.contains("tracing.endpoint"), "{err}");
        let vars = [("SERPHONA_OBS_METRICS_ENABLED".to_string(), "maybe".to_string())];
        let err = Config::default().with_env(vars).unwrap_err().to_string();
        assert!(err.contains("SERPHONA_OBS_METRICS_ENABLED") && err.contains("boolean"), "{err}");
    }

    #[test]
    fn unknown_env_var_is_a_warning() {
        let vars = [("SERPHONA_OBS_TRACING_ENDPIONT".to_string(), "x".to_string())];
        let (_, warnings) = Config::default().with_env(vars).unwrap();
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].contains("SERPHONA_OBS_TRACING_ENDPIONT"));
    }

    #[test]
    fn range_errors_in_a_file_name_field_and_line() {
        for (yaml, field, line) in [
            ("tracing:\n  enabled: true\n  sample_ratio: 1.5\n", "tracing.sample_ratio", 3),
            ("\npipeline:\n  queue_capacity: 0\n", "pipeline.queue_capacity", 3),
            ("clickhouse:\n  database: \"a; DROP\"\n", "clickhouse.database", 2),
            ("clickhouse:\n  flush_interval: 0s\n", "clickhouse.flush_interval", 2),
            ("clickhouse:\n  flush_interval: soon\n", "clickhouse.flush_interval", 2),
            ("clickhouse:\n  batch_size: -5\n", "clickhouse.batch_size", 2),
            ("logging:\n  max_file_bytes: 10\n", "logging.max_file_bytes", 2),
            ("service_name: \"\"\n", "service_name", 1),
        ] {
            let msg = parse(yaml).unwrap_err().to_string();
            assert!(msg.contains(&format!("test.yaml:{line}:")), "{yaml:?}: {msg}");
            assert!(msg.contains(field), "{yaml:?}: {msg}");
        }
        // The same checks hold for environment variables.
        let vars = [("SERPHONA_OBS_PIPELINE_QUEUE_CAPACITY".to_string(), "0".to_string())];
        let err = Config::default().with_env(vars).unwrap_err().to_string();
        assert!(err.contains("SERPHONA_OBS_PIPELINE_QUEUE_CAPACITY") && err.contains("minimum"), "{err}");
    }

    #[test]
    fn validate_names_fields() {
        let mut c = Config::default();
        c.tracing.sample_ratio = 1.5;
        assert!(c.validate().unwrap_err().to_string().contains("tracing.sample_ratio"));
        let mut c = Config::default();
        c.clickhouse.database = "a; DROP".into();
        assert!(c.validate().unwrap_err().to_string().contains("clickhouse.database"));
        let mut c = Config::default();
        c.pipeline.queue_capacity = 0;
        assert!(c.validate().unwrap_err().to_string().contains("pipeline.queue_capacity"));
    }

    #[test]
    fn loki_tenant_from_file_and_env_checked_like_loki() {
        let c = parse("logging:\n  loki_endpoint: http://loki:3100\n  loki_tenant: acme-ops\n").unwrap();
        assert_eq!(c.logging.loki_tenant, "acme-ops");
        assert_eq!(Config::default().logging.loki_tenant, "", "no X-Scope-OrgID by default");
        let c = parse("logging:\n  loki_tenant: 12345\n").unwrap();
        assert_eq!(c.logging.loki_tenant, "12345");
        let msg = parse("logging:\n  enabled: true\n  loki_tenant: \"a b\"\n").unwrap_err().to_string();
        assert!(msg.contains("test.yaml:3:") && msg.contains("logging.loki_tenant"), "{msg}");
        let vars = [("SERPHONA_OBS_LOGGING_LOKI_TENANT".to_string(), "team_a".to_string())];
        let (c, warnings) = Config::default().with_env(vars).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(c.logging.loki_tenant, "team_a");
        let vars = [("SERPHONA_OBS_LOGGING_LOKI_TENANT".to_string(), "a|b".to_string())];
        let err = Config::default().with_env(vars).unwrap_err().to_string();
        assert!(err.contains("SERPHONA_OBS_LOGGING_LOKI_TENANT") && err.contains("letters, digits"), "{err}");
        for bad in [".", "..", &"x".repeat(151)] {
            let mut c = Config::default();
            c.logging.loki_tenant = bad.to_string();
            assert!(c.validate().unwrap_err().to_string().contains("logging.loki_tenant"), "{bad:?}");
        }
        let mut c = Config::default();
        c.logging.loki_tenant = "Org-1_(eu).*'!".into();
        c.validate().unwrap();
    }

    #[test]
    fn an_https_loki_endpoint_is_refused_with_what_to_do() {
        let mut c = Config::default();
        c.logging.loki_endpoint = OptionalEndpoint(Some(Endpoint::parse("https://logs.example.com").unwrap()));
        let msg = c.validate().unwrap_err().to_string();
        assert!(msg.contains("logging.loki_endpoint") && msg.contains("https"), "{msg}");
        c.logging.loki_endpoint = OptionalEndpoint(Some(Endpoint::parse("http://localhost:3100").unwrap()));
        c.validate().unwrap();
    }

    #[test]
    fn show_masks_password() {
        let mut c = Config::default();
        c.clickhouse.password = "hunter2".into();
        let shown = c.to_masked_yaml();
        assert!(!shown.contains("hunter2"));
        assert!(shown.contains("********"));
    }

    // Regression test for issue 12, item 6: credentials held in URLs were shown as they are.
    #[test]
    fn urls_show_without_their_credentials() {
        let shown = |s: &str| Endpoint::parse(s).unwrap().to_string();
        assert_eq!(shown("http://user:pw@localhost:3100"), "http://user:********@localhost:3100");
        assert_eq!(shown("http://u:tok@otel:4317"), "http://u:********@otel:4317");
        assert_eq!(shown("https://ghp_token@collector.example.com"), "https://********@collector.example.com");
        assert_eq!(shown("http://localhost:8123"), "http://localhost:8123");
        assert_eq!(shown("http://ch:8123/?access_token=abc&database=x"), "http://ch:8123/?access_token=********&database=x");
        let e = Endpoint::parse("http://user:pw@localhost:3100").unwrap();
        assert_eq!(e.as_str(), "http://user:pw@localhost:3100", "the real URL, to connect with");
        assert!(e.has_secrets() && !Endpoint::parse("http://localhost:1").unwrap().has_secrets());
        assert!(!format!("{e:?}").contains("pw"));
        assert_eq!(redact_url_str("not a url"), "not a url");
    }

    // Regression test for issue 12, item 6: `config show` masks every URL's userinfo and the
    // password; `Debug` (what a `{:?}` log line would print) does too.
    #[test]
    fn masked_and_debug_hide_every_secret() {
        let mut c = Config::default();
        c.tracing.endpoint = Endpoint::parse("http://u:tok-1@otel:4317").unwrap();
        c.logging.loki_endpoint = OptionalEndpoint(Some(Endpoint::parse("http://user:pw-2@localhost:3100").unwrap()));
        c.clickhouse.endpoint = Endpoint::parse("http://ch:pw-3@localhost:8123").unwrap();
        c.clickhouse.password = "pw-4".into();
        for shown in [c.to_masked_yaml(), serde_json::to_string(&c.masked()).unwrap(), format!("{c:?}"), format!("{c:#?}")] {
            for secret in ["tok-1", "pw-2", "pw-3", "pw-4"] {
                assert!(!shown.contains(secret), "{secret} in {shown}");
            }
            assert!(shown.contains("http://user:********@localhost:3100"), "{shown}");
        }
        // The real config keeps them.
        assert_eq!(c.clickhouse.endpoint.as_str(), "http://ch:pw-3@localhost:8123");
    }

    #[test]
    fn shutdown_timeout_has_a_default_and_an_env_var() {
        assert_eq!(Config::default().pipeline.shutdown_timeout, DEFAULT_SHUTDOWN_TIMEOUT);
        let vars = [("SERPHONA_OBS_PIPELINE_SHUTDOWN_TIMEOUT".to_string(), "45s".to_string())];
        let (c, warnings) = Config::default().with_env(vars).unwrap();
        assert!(warnings.is_empty());
        assert_eq!(c.pipeline.shutdown_timeout, Duration::from_secs(45));
        assert!(parse("pipeline:\n  shutdown_timeout: 0s\n").unwrap_err().to_string().contains("pipeline.shutdown_timeout"));
    }

    #[test]
    fn the_event_log_sync_policy_reads_from_the_file_and_the_environment() {
        assert_eq!(Config::default().logging.sync, LogSync::Flush);
        assert_eq!(parse("logging:\n  sync: batch\n").unwrap().logging.sync, LogSync::Batch);
        let err = parse("logging:\n  sync: always\n").unwrap_err().to_string();
        assert!(err.contains("logging.sync") && err.contains("batch"), "{err}");
        let vars = [("SERPHONA_OBS_LOGGING_SYNC".to_string(), "batch".to_string())];
        assert_eq!(Config::default().with_env(vars).unwrap().0.logging.sync, LogSync::Batch);
    }

    #[test]
    fn every_key_has_an_env_var() {
        let vars = Config::env_vars();
        assert!(vars.iter().any(|(v, f)| v == "SERPHONA_OBS_CLICKHOUSE_ENABLED" && f == "clickhouse.enabled"));
        assert!(vars.iter().any(|(v, f)| v == "SERPHONA_OBS_DATA_DIR" && f == "data_dir"));
        assert!(vars.iter().any(|(v, _)| v == "SERPHONA_OBS_PIPELINE_WHEN_FULL"));
    }
}
