//! The live conversation view behind `serphona-obs tail` and `demo` (feature `tui`, part of
//! `cli`), in tokio-console's shape: [`state`] is pure data updated by messages (events,
//! keys, ticks; no I/O), [`view`] renders a frame from it. The app loop that owns the
//! terminal, the input and the event sources is the binary's (`cli/tail`).

pub mod state;
pub mod view;

#[cfg(test)]
mod testdata;

pub use state::{Action, Key, Options, Prefilter, State};
