//! The view's own state: which conversation is selected, which pane has the keys, how far the
//! list and the transcript are scrolled, whether the help is open, and the `/` filter and the
//! ended-conversations toggle that decide which conversations the list shows. Keys change it
//! ([`ViewState::key`]); it reads the data ([`State`]) and never writes it (pausing, the one
//! key that concerns the data, comes back as [`Action::TogglePause`] for the app to apply).
//!
//! The list (filtered, sorted ids) is the view's, as tokio-console's tables keep their own
//! sorted items: [`ViewState::update`] rebuilds it when the data's
//! [`list_version`](crate::tui::state::Conversations::list_version) moved or the filter
//! changed, and keeps the selection on the same conversation (by id), so conversations
//! arriving above it do not move it.

use std::sync::Arc;

use time::OffsetDateTime;

use crate::tui::state::{Conv, State};
use crate::types::Channel;

/// A key press, independent of the terminal library.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    /// ↑
    Up,
    /// ↓
    Down,
    /// Page up.
    PageUp,
    /// Page down.
    PageDown,
    /// Home.
    Home,
    /// End.
    End,
    /// ←
    Left,
    /// →
    Right,
    /// Enter.
    Enter,
    /// Escape.
    Esc,
    /// Backspace.
    Backspace,
    /// Ctrl-C.
    CtrlC,
    /// A printable character.
    Char(char),
}

/// What the app loop should do after a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Keep going.
    None,
    /// Leave the view.
    Quit,
    /// Pause or resume taking events ([`State::toggle_pause`]).
    TogglePause,
}

/// Which pane the arrow keys move.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Focus {
    /// The conversation list.
    List,
    /// The transcript of the selected conversation.
    Transcript,
}

/// A parsed `/` filter: `tenant:X agent:Y channel:Z` (exact) and words, all ANDed. A word is
/// searched in the conversation's [search text](Conv::search_text), which holds its tags too:
/// `resolution:transferred`, `error:llm_timeout` (and so `error`), `violation:pci_dss`,
/// `transfer:TARGET`, `channel:voice`, `interrupted`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filter {
    /// Tenant equals.
    pub tenant: Option<String>,
    /// Agent equals.
    pub agent: Option<String>,
    /// Channel equals.
    pub channel: Option<String>,
    /// Lowercased words that must each appear in the id, tenant, agent, customer, tags or
    /// transcript.
    pub words: Vec<String>,
}

impl Filter {
    /// Parses the filter line.
    pub fn parse(text: &str) -> Filter {
        let mut f = Filter::default();
        for token in text.split_whitespace() {
            match token.split_once(':') {
                Some(("tenant", v)) if !v.is_empty() => f.tenant = Some(v.to_string()),
                Some(("agent", v)) if !v.is_empty() => f.agent = Some(v.to_string()),
                Some(("channel", v)) if !v.is_empty() => f.channel = Some(v.to_lowercase()),
                _ => f.words.push(token.to_lowercase()),
            }
        }
        f
    }

    /// Whether nothing is filtered.
    pub fn is_empty(&self) -> bool {
        *self == Filter::default()
    }

    /// Whether the conversation passes.
    pub fn matches(&self, c: &Conv) -> bool {
        if self.tenant.as_deref().is_some_and(|t| *c.tenant != *t)
            || self.agent.as_deref().is_some_and(|a| *c.agent != *a)
            || self.channel.as_deref().is_some_and(|ch| c.channel.map(Channel::as_str) != Some(ch))
        {
            return false;
        }
        let text = c.search_text();
        self.words.iter().all(|w| text.contains(w.as_str()))
    }
}

/// The view's state: selection, focus, scrolling, help, and the filter of the list.
#[derive(Debug, Clone, PartialEq)]
pub struct ViewState {
    /// The list as shown: filtered and sorted ids, as of the last [`update`](Self::update).
    rows: Vec<Arc<str>>,
    /// The data versions (`list_version`, `text_version`) the list was built from; `None`
    /// before the first build.
    built_from: Option<(u64, u64)>,
    /// The filter or the ended toggle changed since the list was built.
    rows_dirty: bool,
    selected: Option<Arc<str>>,
    selected_index: usize,
    /// First row of the list on screen (kept by the renderer).
    pub(super) list_offset: usize,
    /// The selected conversation and its row on screen in the last frame (kept by the
    /// renderer, so the selection stays where it is on screen while new conversations arrive
    /// above it).
    pub(super) list_anchor: Option<(Arc<str>, usize)>,
    focus: Focus,
    follow: bool,
    show_ended: bool,
    help: bool,
    filter: Filter,
    filter_text: String,
    filter_input: Option<String>,
    /// Transcript lines scrolled up from the bottom (0: the newest at the bottom; the
    /// renderer clamps it to what the transcript has).
    pub(super) transcript_scroll: usize,
}

impl Default for ViewState {
    fn default() -> Self {
        ViewState::new()
    }
}

impl ViewState {
    /// Nothing selected, the list focused, ended conversations shown, no filter.
    pub fn new() -> ViewState {
        ViewState {
            rows: Vec::new(),
            built_from: None,
            rows_dirty: true,
            selected: None,
            selected_index: 0,
            list_offset: 0,
            list_anchor: None,
            focus: Focus::List,
            follow: false,
            show_ended: true,
            help: false,
            filter: Filter::default(),
            filter_text: String::new(),
            filter_input: None,
            transcript_scroll: 0,
        }
    }

    // ---- messages -------------------------------------------------------------------------

    /// Brings the list up to date with the data: rebuilds it when the conversations (or, with
    /// words in the filter, their transcripts) or the filter changed, and keeps the selection
    /// on the same conversation (or the same row, when that conversation left the list).
    pub fn update(&mut self, state: &State) {
        let convs = state.conversations();
        let versions = (convs.list_version(), convs.text_version());
        let stale = match self.built_from {
            None => true,
            Some((list, text)) => {
                self.rows_dirty || list != versions.0 || (!self.filter.words.is_empty() && text != versions.1)
            }
        };
        if !stale {
            return;
        }
        self.rows_dirty = false;
        self.built_from = Some(versions);
        let show_ended = self.show_ended;
        let want_channel = state.options().channel;
        // Sort keys taken out once: comparisons then touch no map.
        let mut keyed: Vec<(OffsetDateTime, u64, Arc<str>)> = convs
            .iter()
            .filter(|c| {
                (show_ended || !c.is_ended())
                    && want_channel.is_none_or(|w| c.channel.is_none_or(|ch| ch == w))
                    && self.filter.matches(c)
            })
            .map(|c| (c.started_at, c.seq(), c.id.clone()))
            .collect();
        keyed.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(b.1.cmp(&a.1)));
        self.rows.clear();
        self.rows.extend(keyed.into_iter().map(|(_, _, id)| id));
        if self.follow {
            self.selected = self.rows.first().cloned();
            self.selected_index = 0;
            return;
        }
        match self.selected.as_ref().and_then(|id| self.rows.iter().position(|x| x == id)) {
            Some(i) => self.selected_index = i,
            None if self.rows.is_empty() => self.selected = None,
            None => {
                let i = if self.selected.is_none() { 0 } else { self.selected_index.min(self.rows.len() - 1) };
                self.selected_index = i;
                self.selected = Some(self.rows[i].clone());
                self.transcript_scroll = 0;
            }
        }
    }

    /// A key press, against the data as it is now. Pausing is the data's: it comes back as
    /// [`Action::TogglePause`] for the caller to apply ([`crate::tui::handle_key`] does both).
    pub fn key(&mut self, state: &State, key: Key) -> Action {
        if key == Key::CtrlC {
            return Action::Quit;
        }
        self.update(state);
        if let Some(input) = &mut self.filter_input {
            match key {
                Key::Enter => self.filter_input = None,
                Key::Esc => {
                    self.filter_input = None;
                    self.set_filter(String::new());
                }
                Key::Backspace => {
                    input.pop();
                    let text = input.clone();
                    self.set_filter(text);
                }
                Key::Char(c) => {
                    input.push(c);
                    let text = input.clone();
                    self.set_filter(text);
                }
                _ => {}
            }
            return Action::None;
        }
        if self.help {
            // Any key closes the help; q still quits.
            self.help = false;
            return if key == Key::Char('q') { Action::Quit } else { Action::None };
        }
        match key {
            Key::Char('q') => return Action::Quit,
            Key::Char('?') => self.help = true,
            Key::Char('/') => {
                self.filter_input = Some(self.filter_text.clone());
            }
            Key::Char('p') | Key::Char(' ') => return Action::TogglePause,
            Key::Char('f') => {
                self.follow = !self.follow;
                if self.follow {
                    self.select_index(state, 0);
                }
            }
            Key::Char('e') => {
                self.show_ended = !self.show_ended;
                self.rows_dirty = true;
            }
            Key::Enter | Key::Right | Key::Char('l') if self.selected.is_some() => self.focus = Focus::Transcript,
            Key::Esc | Key::Left | Key::Char('h') => {
                self.focus = Focus::List;
                self.transcript_scroll = 0;
            }
            Key::Up | Key::Char('k') => self.scroll(state, -1),
            Key::Down | Key::Char('j') => self.scroll(state, 1),
            Key::PageUp => self.scroll(state, -10),
            Key::PageDown => self.scroll(state, 10),
            Key::Home | Key::Char('g') => self.scroll(state, isize::MIN / 2),
            Key::End | Key::Char('G') => self.scroll(state, isize::MAX / 2),
            _ => {}
        }
        Action::None
    }

    // ---- reads (as of the last update) ----------------------------------------------------

    /// The conversations shown, in order (live and ended by start time, newest first).
    pub fn rows(&self) -> &[Arc<str>] {
        &self.rows
    }

    /// The selected conversation's id.
    pub fn selected_id(&self) -> Option<&Arc<str>> {
        self.selected.as_ref()
    }

    /// The selected conversation, looked up in the data.
    pub fn selected<'s>(&self, state: &'s State) -> Option<&'s Conv> {
        self.selected.as_ref().and_then(|id| state.conversation(id))
    }

    /// Index of the selected row in [`rows`](Self::rows).
    pub fn selected_index(&self) -> Option<usize> {
        self.selected.as_ref().map(|_| self.selected_index)
    }

    /// Which pane has the keys.
    pub fn focus(&self) -> Focus {
        self.focus
    }

    /// Following the newest conversation.
    pub fn following(&self) -> bool {
        self.follow
    }

    /// Ended conversations are listed.
    pub fn showing_ended(&self) -> bool {
        self.show_ended
    }

    /// The help overlay is open.
    pub fn help_open(&self) -> bool {
        self.help
    }

    /// The filter line being typed, when `/` is open.
    pub fn filter_input(&self) -> Option<&str> {
        self.filter_input.as_deref()
    }

    /// The applied filter text.
    pub fn filter_text(&self) -> &str {
        &self.filter_text
    }

    /// Transcript lines scrolled up from the bottom (0: the newest at the bottom).
    pub fn transcript_scroll(&self) -> usize {
        self.transcript_scroll
    }

    /// First row of the list on screen in the last frame.
    pub fn list_offset(&self) -> usize {
        self.list_offset
    }

    // ---- internals ------------------------------------------------------------------------

    fn set_filter(&mut self, text: String) {
        self.filter = Filter::parse(&text);
        self.filter_text = text;
        self.rows_dirty = true;
        self.list_offset = 0;
    }

    fn select_index(&mut self, state: &State, i: usize) {
        self.update(state);
        if self.rows.is_empty() {
            self.selected = None;
            self.selected_index = 0;
            return;
        }
        let i = i.min(self.rows.len() - 1);
        if self.selected.as_deref() != Some(&*self.rows[i]) {
            self.transcript_scroll = 0;
        }
        self.selected_index = i;
        self.selected = Some(self.rows[i].clone());
    }

    fn scroll(&mut self, state: &State, by: isize) {
        match self.focus {
            Focus::List => {
                self.follow = false;
                self.update(state);
                let i = self.selected_index as isize + by;
                self.select_index(state, i.max(0) as usize);
            }
            Focus::Transcript => {
                // Up (negative) shows older lines; the renderer clamps to what exists.
                let s = self.transcript_scroll as isize - by;
                self.transcript_scroll = s.max(0) as usize;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::ops::{Deref, DerefMut};
    use std::time::{Duration, Instant};

    use super::*;
    use crate::tui::state::Options;
    use crate::tui::testdata::{Conv as C, contact_center};
    use crate::types::Event;

    /// The data and the view state, as the app loop holds them; reads of the data go
    /// through to it.
    struct S {
        data: State,
        view: ViewState,
    }

    impl Deref for S {
        type Target = State;
        fn deref(&self) -> &State {
            &self.data
        }
    }

    impl DerefMut for S {
        fn deref_mut(&mut self) -> &mut State {
            &mut self.data
        }
    }

    impl S {
        fn new(options: Options) -> S {
            S { data: State::new(options), view: ViewState::new() }
        }

        fn key(&mut self, key: Key) -> Action {
            crate::tui::handle_key(&mut self.data, &mut self.view, key)
        }

        // What a frame does: bring the view up to date with the data, then read it (the
        // view's own reads take `&self`).
        fn rows(&mut self) -> &[Arc<str>] {
            self.view.update(&self.data);
            self.view.rows()
        }

        fn selected(&mut self) -> Option<&Conv> {
            self.view.update(&self.data);
            self.view.selected(&self.data)
        }

        fn selected_index(&mut self) -> Option<usize> {
            self.view.update(&self.data);
            self.view.selected_index()
        }

        fn focus(&self) -> Focus {
            self.view.focus()
        }

        fn following(&self) -> bool {
            self.view.following()
        }

        fn help_open(&self) -> bool {
            self.view.help_open()
        }

        fn filter_text(&self) -> &str {
            self.view.filter_text()
        }

        fn filter_input(&self) -> Option<&str> {
            self.view.filter_input()
        }
    }

    fn state() -> S {
        S::new(Options { source: "test".into(), ..Options::default() })
    }

    fn fed(events: Vec<Event>) -> S {
        let mut s = state();
        for e in events {
            s.push(e);
        }
        s
    }

    fn ids(s: &mut S) -> Vec<String> {
        s.rows().iter().map(|id| id.to_string()).collect()
    }

    #[test]
    fn the_selection_stays_on_its_conversation_when_new_ones_arrive() {
        let events = contact_center(10);
        let (first, rest) = events.split_at(12);
        let mut s = fed(first.to_vec());
        assert_eq!(s.selected().map(|c| c.id.to_string()).as_deref(), Some("conv-0002"));
        s.key(Key::Down);
        assert_eq!(s.selected().map(|c| c.id.to_string()).as_deref(), Some("conv-0001"));
        for e in rest {
            s.push(e.clone());
        }
        // conv-0001 is still selected, now further down the list.
        assert_eq!(s.selected().map(|c| c.id.to_string()).as_deref(), Some("conv-0001"));
        assert_eq!(s.selected_index(), Some(8));
        s.key(Key::Char('k'));
        assert_eq!(s.selected().map(|c| c.id.to_string()).as_deref(), Some("conv-0002"));
        s.key(Key::Char('g'));
        assert_eq!(s.selected_index(), Some(0));
        s.key(Key::End);
        assert_eq!(s.selected_index(), Some(9));
        s.key(Key::Down); // past the end stays at the end
        assert_eq!(s.selected_index(), Some(9));
    }


    #[test]
    fn follow_keeps_the_newest_selected_until_the_user_moves() {
        let events = contact_center(8);
        let mut s = fed(events[..8].to_vec());
        s.key(Key::Char('f'));
        assert!(s.following());
        for e in &events[8..] {
            s.push(e.clone());
        }
        assert_eq!(s.selected().map(|c| c.id.to_string()).as_deref(), Some("conv-0007"));
        s.key(Key::Down);
        assert!(!s.following(), "moving the selection stops following");
        assert_eq!(s.selected().map(|c| c.id.to_string()).as_deref(), Some("conv-0006"));
    }


    #[test]
    fn pause_holds_events_and_resume_applies_them_all() {
        let events = contact_center(4);
        let mut s = fed(events[..4].to_vec());
        s.key(Key::Char('p'));
        for e in &events[4..] {
            s.push(e.clone());
        }
        assert_eq!(s.paused(), Some(events.len() - 4));
        assert_eq!(s.events_total(), 4);
        assert_eq!(s.rows().len(), 1);
        s.key(Key::Char('p'));
        assert_eq!(s.paused(), None);
        assert_eq!(s.events_total(), events.len() as u64);
        assert_eq!(s.rows().len(), 4);
    }


    #[test]
    fn pause_drops_beyond_its_limit_and_counts_them() {
        let events = contact_center(10);
        let mut s = S::new(Options { max_paused: 5, ..Options::default() });
        s.key(Key::Char(' '));
        for e in &events {
            s.push(e.clone());
        }
        assert_eq!(s.paused(), Some(5));
        assert_eq!(s.dropped(), events.len() as u64 - 5);
    }


    #[test]
    fn filters_by_field_and_by_words_of_the_transcript() {
        let mut events = contact_center(9);
        let mut odd = C::new(99, "acme-telco", "billing-bot");
        events.push(odd.start(200.0, Channel::Chat));
        events.push(odd.customer(201.0, "Where is my parcel?", None, 0.0));
        let mut s = fed(events);
        for c in "tenant:globex-bank".chars() {
            s.key(Key::Char('/'));
            s.key(Key::Char(c));
            s.key(Key::Enter);
        }
        // Typing went into one filter line: "/" opens it with the current text.
        assert_eq!(s.filter_text(), "tenant:globex-bank");
        assert_eq!(ids(&mut s), ["conv-0007", "conv-0004", "conv-0001"]);
        s.key(Key::Char('/'));
        for c in " channel:chat".chars() {
            s.key(Key::Char(c));
        }
        assert_eq!(s.filter_input(), Some("tenant:globex-bank channel:chat"));
        assert_eq!(ids(&mut s), ["conv-0001"]);
        s.key(Key::Esc);
        assert_eq!(s.filter_text(), "");
        assert_eq!(s.rows().len(), 10);
        s.key(Key::Char('/'));
        for c in "PARCEL".chars() {
            s.key(Key::Char(c));
        }
        assert_eq!(ids(&mut s), ["conv-0099"]);
        for _ in 0..6 {
            s.key(Key::Backspace);
        }
        assert_eq!(s.rows().len(), 10);
        // While typing, q is text, not quit.
        assert_eq!(s.key(Key::Char('q')), Action::None);
        s.key(Key::Enter);
        assert_eq!(s.key(Key::Char('q')), Action::Quit);
    }


    #[test]
    fn hide_ended_and_eviction_by_time_and_count() {
        let events = contact_center(30);
        let mut s = S::new(Options { keep_ended: Duration::from_secs(60), max_ended: 5, ..Options::default() });
        for e in events {
            s.push(e);
        }
        let ended = s.held_conversations() - s.active();
        assert_eq!(ended, 14); // 10 transferred (i % 3 == 0) + 4 resolved (5, 10, 20, 25)
        s.key(Key::Char('e'));
        assert_eq!(s.rows().len(), s.active());
        s.key(Key::Char('e'));
        let t = Instant::now();
        s.tick(t);
        // Over the count: the oldest ends go first.
        assert_eq!(s.held_conversations() - s.active(), 5);
        assert_eq!(s.evicted(), 9);
        assert!(s.conversation("conv-0027").is_some() && s.conversation("conv-0000").is_none());
        // A minute of wall time later the rest go; live ones stay.
        s.tick(t + Duration::from_secs(61));
        assert_eq!(s.held_conversations(), s.active());
        assert_eq!(s.evicted(), 14);
        assert_eq!(s.rows().len(), s.active());
    }


    #[test]
    fn focus_moves_between_list_and_transcript_and_scrolls_it() {
        let mut s = fed(contact_center(3));
        assert_eq!(s.focus(), Focus::List);
        s.key(Key::Enter);
        assert_eq!(s.focus(), Focus::Transcript);
        s.key(Key::Up);
        s.key(Key::Up);
        assert_eq!(s.view.transcript_scroll, 2);
        assert_eq!(s.selected_index(), Some(0), "arrows scroll the transcript, not the list");
        s.key(Key::Left);
        assert_eq!((s.focus(), s.view.transcript_scroll), (Focus::List, 0));
        s.key(Key::Char('?'));
        assert!(s.help_open());
        assert_eq!(s.key(Key::Char('x')), Action::None);
        assert!(!s.help_open());
        assert_eq!(s.key(Key::CtrlC), Action::Quit);
    }

    // Issue 13: the selection is anchored by id: conversations arriving (above it, newer, and
    // below it, older) move its row but not which conversation is selected, and the view's
    // own reads take `&self`: between updates they show the list as it was.
    #[test]
    fn arriving_conversations_do_not_move_the_selected_id() {
        let mut s = fed(contact_center(6));
        s.key(Key::Down);
        s.key(Key::Down);
        assert_eq!(s.selected().map(|c| c.id.to_string()).as_deref(), Some("conv-0003"));
        for n in 100..140u64 {
            let mut c = C::new(n, "acme-telco", "support-bot");
            // Half start before everything shown (older), half after (newer).
            let secs = if n % 2 == 0 { -100.0 - n as f64 } else { 100.0 + n as f64 };
            s.push(c.start(secs, Channel::Chat));
            assert_eq!(s.view.rows().len(), 6 + (n - 100) as usize, "no update yet: the list as it was");
            assert_eq!(s.selected().map(|c| c.id.to_string()).as_deref(), Some("conv-0003"));
        }
        assert_eq!(s.selected_index(), Some(20 + 2), "below the 20 newer ones");
        assert_eq!(s.view.rows().len(), 46);
    }

    // Issue 13: the free-text filter searches what the data kept up to date as entries came
    // and went, the same text the filter once built on demand.
    #[test]
    fn the_filter_searches_the_turns_still_kept() {
        let mut s = S::new(Options { max_entries: 3, ..Options::default() });
        let mut c = C::new(1, "Acme-Telco", "Bot");
        s.push(c.start(0.0, Channel::Voice));
        for (i, text) in ["Alpha ONE", "Beta two", "ΣΊΣΥΦΟΣ three", "Delta four"].iter().enumerate() {
            s.push(c.customer(1.0 + i as f64, text, None, 0.0));
        }
        let conv = s.conversation("conv-0001").unwrap();
        let mut expected = format!("{} {} {} {} channel:voice", conv.id, conv.tenant, conv.agent, conv.customer);
        for e in &conv.entries {
            if let crate::tui::state::EntryKind::Turn { text, .. } = &e.kind {
                expected.push(' ');
                expected.push_str(text);
            }
        }
        assert_eq!(conv.search_text(), expected.to_lowercase());
        assert_eq!(conv.search_text(), "conv-0001 acme-telco bot cust-1 channel:voice beta two σίσυφος three delta four");
        for (filter, shown) in [("alpha", 0), ("acme-telco beta", 1), ("σίσυφος", 1), ("cust-1", 1)] {
            s.key(Key::Char('/'));
            for _ in 0..40 {
                s.key(Key::Backspace);
            }
            for ch in filter.chars() {
                s.key(Key::Char(ch));
            }
            s.key(Key::Enter);
            assert_eq!(s.rows().len(), shown, "{filter}");
        }
    }

    fn filter(s: &mut S, text: &str) -> Vec<String> {
        s.key(Key::Char('/'));
        for _ in 0..60 {
            s.key(Key::Backspace);
        }
        for ch in text.chars() {
            s.key(Key::Char(ch));
        }
        s.key(Key::Enter);
        ids(s)
    }

    // Issue 16: the `/` filter also matches errors, resolutions and channels, from tags the
    // data keeps in the search text as events arrive (an end, an error, a transfer, a barge-in
    // rewrite them), and the tags of a conversation are dropped with nothing of its turns.
    #[test]
    fn the_filter_matches_errors_resolutions_channels_and_interruptions() {
        let mut events = contact_center(6);
        events.extend(crate::tui::testdata::voice_call(20, 200.0));
        let mut s = fed(events);
        let conv = s.conversation("conv-0020").unwrap();
        assert_eq!(
            conv.search_text().split(' ').take(10).collect::<Vec<_>>(),
            [
                "conv-0020",
                "acme-telco",
                "acme-voice-bot",
                "cust-20",
                "channel:voice",
                "resolution:transferred",
                "error:stt_unavailable",
                "transfer:human-billing",
                "interrupted",
                "thanks"
            ]
        );
        assert_eq!(filter(&mut s, "resolution:transferred"), ["conv-0020", "conv-0003", "conv-0000"]);
        assert_eq!(filter(&mut s, "resolution:resolved"), ["conv-0005"]);
        assert_eq!(filter(&mut s, "error"), ["conv-0020"]);
        assert_eq!(filter(&mut s, "error:stt_unavailable"), ["conv-0020"]);
        assert_eq!(filter(&mut s, "error:llm_timeout"), Vec::<String>::new());
        assert_eq!(filter(&mut s, "interrupted"), ["conv-0020"]);
        assert_eq!(filter(&mut s, "voice"), ["conv-0020", "conv-0004", "conv-0000"]);
        assert_eq!(filter(&mut s, "channel:voice resolution:transferred"), ["conv-0020", "conv-0000"]);
        assert_eq!(filter(&mut s, "RESOLUTION:Transferred tenant:acme-telco"), ["conv-0020", "conv-0003", "conv-0000"]);
        // The list follows the data: a live conversation that ends transferred joins.
        let mut c = C::new(30, "initech", "bot");
        s.push(c.start(300.0, Channel::Sms));
        assert_eq!(filter(&mut s, "resolution:transferred channel:sms"), Vec::<String>::new());
        s.push(c.end(301.0, crate::types::Resolution::Transferred, None, Channel::Sms));
        assert_eq!(ids(&mut s), ["conv-0030"]);
    }
}
