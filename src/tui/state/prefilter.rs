//! The pre-filter of `tail` (`--tenant --agent --channel`): which events reach the view.

use std::collections::HashMap;
use std::sync::Arc;

use crate::types::{Channel, Event, EventKind};

/// The `--tenant --agent --channel` pre-filter of `tail`, shared by the live view and
/// `--output json`. Only the start and end events carry the channel, so it remembers the
/// channel of each conversation between its start and its end; events of a conversation whose
/// start it has not seen pass (it may be on the channel).
#[derive(Debug, Default)]
pub struct Prefilter {
    tenant: Option<String>,
    agent: Option<String>,
    channel: Option<Channel>,
    channels: HashMap<Arc<str>, Channel>,
}

impl Prefilter {
    /// A filter; `None` lets everything through.
    pub fn new(tenant: Option<String>, agent: Option<String>, channel: Option<Channel>) -> Prefilter {
        Prefilter { tenant, agent, channel, channels: HashMap::new() }
    }

    /// Whether the event passes.
    pub fn admits(&mut self, e: &Event) -> bool {
        if self.tenant.as_deref().is_some_and(|t| *e.tenant_id != *t)
            || self.agent.as_deref().is_some_and(|a| *e.agent_id != *a)
        {
            return false;
        }
        let Some(want) = self.channel else { return true };
        match &e.kind {
            EventKind::ConversationStarted { channel, .. } => {
                self.channels.insert(e.conversation_id.clone(), *channel);
                *channel == want
            }
            EventKind::ConversationEnded { channel, .. } => {
                self.channels.remove(&*e.conversation_id);
                *channel == want
            }
            _ => self.channels.get(&*e.conversation_id).is_none_or(|c| *c == want),
        }
    }
}
