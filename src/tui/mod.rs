//! The live conversation view behind `serphona-obs tail` and `demo` (feature `tui`, part of
//! `cli`), in tokio-console's shape: [`state`] is the data, per entity, updated by messages
//! (events, ticks; no I/O) and only read by the rest; [`view`] owns how it is shown (the
//! [`ViewState`]: selection, focus, scrolling, help, the filter) and renders a frame from
//! `&State`. The app loop that owns the terminal, the input and the event sources is the
//! binary's (`cli/tail`).

pub mod state;
pub mod view;

#[cfg(test)]
mod testdata;

pub use state::{Options, Prefilter, State};
pub use view::state::{Action, Focus, Key, ViewState};

/// A key press for the whole view: the view state takes it, and when it asks to pause or
/// resume ([`Action::TogglePause`]), the data does. Returns the view's action.
pub fn handle_key(state: &mut State, view: &mut ViewState, key: Key) -> Action {
    let action = view.key(state, key);
    if action == Action::TogglePause {
        state.toggle_pause();
    }
    action
}
