//! The app loop of the live view: owns the terminal (restored on every way out: `q`, Ctrl-C,
//! an error, a panic), reads keys, drains the source and draws at most 20 frames a second.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::TryRecvError;
use crossterm::event::{self, Event as TermEvent, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use serphona_obs::tui::{Action, Key, State, ViewState, handle_key, view};

use super::source::{Feed, Source};

/// Least time between two frames.
const FRAME: Duration = Duration::from_millis(50);
/// Longest the loop spends taking events before it looks at the keys again.
const DRAIN_BUDGET: Duration = Duration::from_millis(30);

/// Restores the terminal when dropped (normal exit, `?` on an error). ratatui's own panic
/// hook restores it on a panic.
struct Restore;

impl Drop for Restore {
    fn drop(&mut self) {
        ratatui::restore();
        crate::cli::release_diagnostics();
    }
}

/// Maps a crossterm key to ours.
fn key(k: KeyEvent) -> Option<Key> {
    if k.modifiers.contains(KeyModifiers::CONTROL) {
        return matches!(k.code, KeyCode::Char('c') | KeyCode::Char('d')).then_some(Key::CtrlC);
    }
    if k.modifiers.contains(KeyModifiers::ALT) {
        // Esc followed quickly by a key arrives as Alt+key; neither was meant as text.
        return None;
    }
    Some(match k.code {
        KeyCode::Up => Key::Up,
        KeyCode::Down => Key::Down,
        KeyCode::PageUp => Key::PageUp,
        KeyCode::PageDown => Key::PageDown,
        KeyCode::Home => Key::Home,
        KeyCode::End => Key::End,
        KeyCode::Left => Key::Left,
        KeyCode::Right => Key::Right,
        KeyCode::Enter => Key::Enter,
        KeyCode::Esc => Key::Esc,
        KeyCode::Backspace => Key::Backspace,
        KeyCode::Char(c) => Key::Char(c),
        _ => return None,
    })
}

/// What ended the loop.
pub enum Exit {
    /// The user quit.
    Quit,
    /// The source failed before showing anything (message).
    Failed(String),
}

/// Runs the view until `q`, Ctrl-C or `stop` (SIGINT/SIGTERM from outside).
/// `on_done` is the header line once the source has nothing more; `status`, when it returns
/// a line, replaces the header's status line.
pub fn run(
    mut state: State,
    source: &mut Source,
    stop: &AtomicBool,
    on_done: &str,
    status: &dyn Fn() -> Option<String>,
) -> anyhow::Result<Exit> {
    crate::cli::hold_diagnostics();
    let _restore = Restore;
    let mut terminal = ratatui::try_init().map_err(|e| anyhow::anyhow!("cannot set up the terminal: {e}"))?;
    let mut view_state = ViewState::new();
    let mut last_draw: Option<Instant> = None;
    let mut dirty = true;
    let mut source_open = true;
    loop {
        // Events, within a budget so keys stay responsive under any load.
        let until = Instant::now() + DRAIN_BUDGET;
        while source_open && Instant::now() < until {
            match source.rx.try_recv() {
                Ok(Feed::Events(events)) => {
                    dirty = true;
                    for e in events {
                        state.push(e);
                    }
                }
                Ok(Feed::Status(s)) => {
                    dirty = true;
                    state.set_status(s);
                }
                Ok(Feed::Failed(message)) => {
                    if state.events_total() == 0 {
                        return Ok(Exit::Failed(message));
                    }
                    state.set_status(Some(message));
                    source_open = false;
                }
                Ok(Feed::Done) | Err(TryRecvError::Disconnected) => {
                    dirty = true;
                    state.set_status(Some(on_done.to_string()));
                    source_open = false;
                }
                Err(TryRecvError::Empty) => break,
            }
        }
        let dropped = source.counters.dropped.swap(0, Ordering::Relaxed);
        if dropped > 0 {
            state.add_dropped(dropped);
            dirty = true;
        }
        state.set_skipped(source.counters.skipped.load(Ordering::Relaxed));
        if let Some(line) = status() {
            if state.status() != Some(line.as_str()) {
                state.set_status(Some(line));
                dirty = true;
            }
        }
        state.tick(Instant::now());

        if dirty && last_draw.is_none_or(|t| t.elapsed() >= FRAME) {
            terminal.draw(|frame| view::render(frame, &state, &mut view_state))?;
            last_draw = Some(Instant::now());
            dirty = false;
        }
        if stop.load(Ordering::Relaxed) {
            return Ok(Exit::Quit);
        }
        // Wait for a key until the next frame is due.
        if event::poll(FRAME)? {
            match event::read()? {
                TermEvent::Key(k) if k.kind != KeyEventKind::Release => {
                    if let Some(k) = key(k) {
                        dirty = true;
                        if handle_key(&mut state, &mut view_state, k) == Action::Quit {
                            // In raw mode Ctrl-C is a key, not SIGINT: it still means an
                            // interrupt (exit 130, after the terminal is restored).
                            if k == Key::CtrlC {
                                crate::cli::interrupted();
                            }
                            return Ok(Exit::Quit);
                        }
                    }
                }
                TermEvent::Resize(..) => dirty = true,
                _ => {}
            }
        } else {
            // Durations of live conversations and the sparkline move with time.
            dirty = true;
        }
    }
}

/// `--output json`: every event that passes the pre-filter as one JSON line on stdout, as it
/// arrives. Ends when the source is done or on Ctrl-C; a closed pipe ends it quietly.
pub fn stream_json(source: &mut Source, mut admits: impl FnMut(&serphona_obs::types::Event) -> bool, stop: &AtomicBool) -> anyhow::Result<Option<String>> {
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut buf = Vec::with_capacity(1 << 16);
    loop {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        match source.rx.recv_timeout(Duration::from_millis(200)) {
            Ok(Feed::Events(events)) => {
                buf.clear();
                for e in events.iter().filter(|e| admits(e)) {
                    // Events read back always serialize; one that does not is skipped.
                    let _ = e.write_json_line(&mut buf);
                }
                out.write_all(&buf)?;
                out.flush()?;
            }
            Ok(Feed::Status(Some(s))) => eprintln!("serphona-obs tail: {s}"),
            Ok(Feed::Status(None)) => {}
            Ok(Feed::Failed(message)) => return Ok(Some(message)),
            Ok(Feed::Done) | Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
        }
    }
    out.flush()?;
    let dropped = source.counters.dropped.load(Ordering::Relaxed);
    if dropped > 0 {
        eprintln!("serphona-obs tail: {dropped} events dropped (the output could not keep up)");
    }
    Ok(None)
}
