//! # serphona-obs
//!
//! Conversation-aware observability for voice and chat AI agents. A service links this crate
//! and records each conversation — its start, the agent's and customer's turns, the agent's
//! decisions (intent detection, transfers, …) and its end with resolution and rating. Each
//! call becomes Prometheus metrics (updated inline) and events (JSON log lines, with trace and
//! span ids) that a bounded queue hands to the configured sinks on a background thread; the
//! caller never waits on I/O.
//!
//! With no configuration at all (the embedded default), events go to a local event log under
//! `.serphona-obs/` and metrics to `http://127.0.0.1:9464/metrics`.
//!
//! ## The four calls
//!
//! ```
//! use std::time::Duration;
//! use serphona_obs::{Config, Observability};
//! use serphona_obs::types::*;
//!
//! # let dir = tempfile::tempdir().unwrap();
//! let mut config = Config::default();
//! # config.data_dir = dir.path().to_path_buf();
//! config.metrics.listen = "127.0.0.1:0".parse().unwrap(); // any free port
//! let obs = Observability::init(config)?;
//!
//! // 1. start a conversation
//! let conv = obs.start_conversation(
//!     ConversationStart::new("acme-telco", "billing-bot", "cust-42", Channel::Voice).language("en-US"),
//! );
//! // 2. track interactions
//! conv.track_interaction(Interaction::agent("Hi, this is Acme. How can I help?"));
//! conv.track_interaction(
//!     Interaction::customer("My bill is twice what it should be").sentiment(-0.6).intent("billing_dispute", 0.93),
//! );
//! // 3. track decisions (a transfer also records transfer.initiated)
//! conv.track_decision(Decision::transfer("billing-specialists", "refund above agent limit").confidence(0.88));
//! // 4. end it
//! conv.end(ConversationEnd::new(Resolution::Transferred).rating(4));
//!
//! obs.shutdown(Duration::from_secs(5))?; // delivers everything recorded
//! # Ok::<(), serphona_obs::Error>(())
//! ```
//!
//! The same calls exist as free functions over a global instance ([`init`],
//! [`start_conversation`], [`track_interaction`], [`track_decision`], [`end_conversation`]),
//! addressed by conversation id, for code that passes ids rather than handles.

#![warn(missing_docs)]

#[cfg(feature = "clickhouse")]
pub mod analytics;
pub mod config;
pub mod detect;
pub mod erasure;
mod fsmode;
pub mod metrics;
#[cfg(any(feature = "axum", feature = "tonic"))]
pub mod middleware;
mod observability;
pub mod pipeline;
pub mod pricing;
pub mod processors;
pub mod simulation;
pub mod sinks;
pub mod store;
pub mod trace;
#[cfg(feature = "tui")]
pub mod tui;
pub mod types;
pub mod yaml;

use std::sync::OnceLock;
use std::time::Duration;

pub use config::Config;
pub use observability::{Conversation, Error, ErrorChain, Observability, ObservabilityBuilder};

static GLOBAL: OnceLock<Observability> = OnceLock::new();

/// Initializes the global instance used by the free functions.
pub fn init(config: Config) -> Result<&'static Observability, Error> {
    let obs = Observability::init(config)?;
    GLOBAL.set(obs).map_err(|_| Error::AlreadyInitialized)?;
    Ok(GLOBAL.get().expect("just set"))
}

/// The global instance, when [`init`] was called.
pub fn global() -> Option<&'static Observability> {
    GLOBAL.get()
}

fn with_global() -> Result<&'static Observability, Error> {
    GLOBAL.get().ok_or(Error::NotInitialized)
}

/// Runs `f` on an open conversation of the global instance (held in its registry since
/// [`start_conversation`]), outside the registry's lock (so a call that waits for room in the
/// queue, or panics, does not hold up every other conversation).
fn with_active<T>(conversation_id: &str, f: impl FnOnce(&Conversation) -> T) -> Result<T, Error> {
    let conv = with_global()?
        .held(conversation_id)
        .ok_or_else(|| Error::UnknownConversation(conversation_id.to_string()))?;
    Ok(f(&conv))
}

/// Starts a conversation on the global instance and returns its id. The conversation stays
/// open until [`end_conversation`] (or [`shutdown`], which ends it as `abandoned`). An
/// explicit id that is already open is an error ([`Error::DuplicateConversation`]).
pub fn start_conversation(start: types::ConversationStart) -> Result<String, Error> {
    let obs = with_global()?;
    if let Some(id) = &start.conversation_id {
        if obs.conversation(id).is_some() {
            return Err(Error::DuplicateConversation(id.clone()));
        }
    }
    let conv = obs.start_conversation(start);
    obs.hold(&conv);
    Ok(conv.id().to_string())
}

/// Records a turn of an open conversation.
pub fn track_interaction(conversation_id: &str, interaction: types::Interaction) -> Result<(), Error> {
    with_active(conversation_id, |c| c.track_interaction(interaction))
}

/// Records a decision of an open conversation.
pub fn track_decision(conversation_id: &str, decision: types::Decision) -> Result<(), Error> {
    with_active(conversation_id, |c| c.track_decision(decision))
}

/// Records an error in an open conversation.
pub fn track_error(conversation_id: &str, error_type: &str, message: &str) -> Result<(), Error> {
    with_active(conversation_id, |c| c.track_error(error_type, message))
}

/// Records a compliance violation in an open conversation.
pub fn track_compliance_violation(conversation_id: &str, policy: &str, severity: &str, description: &str) -> Result<(), Error> {
    with_active(conversation_id, |c| c.track_compliance_violation(policy, severity, description))
}

/// Ends an open conversation.
pub fn end_conversation(conversation_id: &str, end: types::ConversationEnd) -> Result<(), Error> {
    let conv = with_global()?
        .release(conversation_id)
        .ok_or_else(|| Error::UnknownConversation(conversation_id.to_string()))?;
    conv.end(end);
    Ok(())
}

/// Ends the conversations still open as `abandoned`, then shuts the global instance down
/// (see [`Observability::shutdown`]).
pub fn shutdown(timeout: Duration) -> Result<(), Error> {
    let obs = with_global()?;
    drop(obs.release_all());
    obs.shutdown(timeout)
}
