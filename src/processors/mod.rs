//! Processors: steps that see every event once, on the dispatcher thread, before the fan-out
//! to the sinks (see [`crate::pipeline::Processor`]), so one policy holds for every sink alike.
//!
//! - [`redaction`]: personal data (card numbers, emails, phones, IBANs, US SSNs and custom
//!   rules) is masked or replaced by a keyed hash before anything leaves the process.

pub mod redaction;

pub use redaction::{Detector, RedactionProcessor, Redactor};
