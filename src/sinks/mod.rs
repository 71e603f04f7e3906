//! The sinks: where processed events go. Each remote sink runs its delivery on a
//! [`worker::Worker`] thread and shares the failure handling of [`retry`].

pub mod retry;
pub mod worker;
