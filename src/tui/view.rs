//! Renders the live view from the data ([`State`], only read) and the view's own state
//! ([`ViewState`], in [`state`]: selection, focus, scrolling, help, the filter): a header (source, events/s, active, ended in the
//! last minute, resolution mix, agent response p95 sparkline, dropped events), the
//! conversation list, the selected conversation's transcript and a footer with the keys.
//!
//! Only the rows on screen are built, so a frame costs the same with 100 or 100,000
//! conversations (apart from re-sorting the list when it changed).

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, BorderType, Borders, Cell, Clear, Paragraph, Row, Sparkline, Table, TableState};
use time::OffsetDateTime;
use unicode_width::UnicodeWidthStr;

pub mod state;

pub use state::{Action, Filter, Focus, Key, ViewState};

use super::state::{Conv, Entry, EntryKind, LatencyBar, Part, State};
use crate::types::{Interruption, Resolution, Speaker, TurnSpeaker, Usage};

/// Terminals at least this wide show the list and the transcript side by side.
pub const WIDE: u16 = 120;

/// Lists narrower than this leave out the `channel` and `last` (speaker) columns (the
/// transcript's title shows the channel), and the tenant column is as wide as the longest
/// tenant on screen, so tenant and agent names stay whole: an 80-column terminal shows
/// `initech-insurance` and `globex-cards-bot`; only an agent name longer than the rest of the
/// row is cut.
const LIST_ALL_COLUMNS: u16 = 86;

const AGENT: Color = Color::Cyan;
const CUSTOMER: Color = Color::Green;
const DIM: Style = Style::new().fg(Color::DarkGray);

/// Draws one frame of the data `state` as `view` shows it. Brings `view`'s list up to date
/// first ([`ViewState::update`]), and keeps in it where the list and the transcript are
/// scrolled to; the data is only read.
pub fn render(frame: &mut Frame, state: &State, view: &mut ViewState) {
    view.update(state);
    let [header, body, footer] =
        Layout::vertical([Constraint::Length(3), Constraint::Min(4), Constraint::Length(1)]).areas(frame.area());
    render_header(frame, header, state);
    let (list_area, transcript_area) = if body.width >= WIDE {
        let [l, t] = Layout::horizontal([Constraint::Percentage(60), Constraint::Percentage(40)]).areas(body);
        (l, t)
    } else {
        // Stacked: the list gets the larger share on short terminals (at 80×24, 9 rows).
        let list = if body.height < 30 { 60 } else { 45 };
        let [l, t] = Layout::vertical([Constraint::Percentage(list), Constraint::Percentage(100 - list)]).areas(body);
        (l, t)
    };
    render_list(frame, list_area, state, view);
    render_transcript(frame, transcript_area, state, view);
    render_footer(frame, footer, state, view);
    if view.help_open() {
        render_help(frame, frame.area());
    }
}

fn sep() -> Span<'static> {
    Span::styled(" │ ", DIM)
}

fn render_header(frame: &mut Frame, area: Rect, state: &State) {
    let [line1, line2, line3] =
        Layout::vertical([Constraint::Length(1), Constraint::Length(1), Constraint::Length(1)]).areas(area);
    let mut spans = vec![
        Span::raw(" "),
        Span::styled(format!("{:.0}", state.events_per_second()), Style::new().bold()),
        Span::raw(" events/s"),
        sep(),
        Span::styled(state.active().to_string(), Style::new().bold().fg(Color::Green)),
        Span::raw(" active"),
        sep(),
        Span::styled(state.ended_last_minute().to_string(), Style::new().bold()),
        Span::raw(" ended/min"),
        sep(),
        Span::raw(format!("{} events", thousands(state.events_total()))),
    ];
    if state.dropped() > 0 {
        spans.push(sep());
        spans.push(Span::styled(format!("{} dropped", thousands(state.dropped())), Style::new().bold().fg(Color::Red)));
    }
    if let Some(held) = state.paused() {
        spans.push(sep());
        spans.push(Span::styled(format!("PAUSED ({held} held)"), Style::new().bold().fg(Color::Yellow)));
    }
    spans.push(sep());
    spans.push(Span::styled(state.options().source.clone(), DIM));
    frame.render_widget(Line::from(spans), line1);

    let mix = state.resolution_mix();
    let ended: u64 = mix.iter().map(|(_, n)| n).sum();
    let mut spans = vec![Span::raw(" ")];
    if ended == 0 {
        spans.push(Span::styled("none ended yet", DIM));
    }
    for (r, n) in mix {
        if n == 0 {
            continue;
        }
        spans.push(Span::styled(r.as_str(), Style::new().fg(resolution_colour(r))));
        spans.push(Span::raw(format!(" {:.0}% ", 100.0 * n as f64 / ended as f64)));
    }
    if state.cost_usd() > 0.0 {
        spans.push(sep());
        spans.push(Span::raw(format!("{} spent", usd(state.cost_usd()))));
    }
    if state.interruptions() > 0 {
        spans.push(sep());
        spans.push(Span::styled(format!("{INTERRUPTED} {} interruptions", thousands(state.interruptions())), Style::new().fg(Color::Yellow)));
    }
    if state.skipped() > 0 {
        spans.push(sep());
        spans.push(Span::styled(format!("{} lines not events", thousands(state.skipped())), DIM));
    }
    if state.evicted() > 0 {
        spans.push(sep());
        spans.push(Span::styled(format!("{} old evicted", thousands(state.evicted())), DIM));
    }
    if let Some(status) = state.status() {
        spans.push(sep());
        spans.push(Span::styled(status.to_string(), Style::new().fg(Color::Yellow)));
    }
    // Open incidents first on their line: they are what an operator must see.
    let incidents = state.incidents();
    if !incidents.is_empty() {
        let mut first = vec![
            Span::raw(" "),
            Span::styled(
                format!("⚠ {} incident{}: ", incidents.len(), if incidents.len() == 1 { "" } else { "s" }),
                Style::new().bold().fg(Color::Red),
            ),
        ];
        for (k, i) in incidents.iter().enumerate() {
            if k > 0 {
                first.push(Span::raw(", "));
            }
            first.push(Span::styled(
                format!("{} — {} since {:02}:{:02}", i.tenant_id, i.suspected_cause, i.start.hour(), i.start.minute()),
                Style::new().fg(Color::Red),
            ));
        }
        first.push(sep());
        first.extend(spans.into_iter().skip(1));
        spans = first;
    }
    frame.render_widget(Line::from(spans), line2);

    let history = state.p95_history();
    let last = history.iter().rev().find_map(|p| *p);
    let label = format!(" agent response p95 {:>6} ", last.map_or("-".into(), |ms| millis(ms as f64)));
    let label_width = label.width() as u16;
    let [label_area, spark_area] =
        Layout::horizontal([Constraint::Length(label_width), Constraint::Min(0)]).areas(line3);
    frame.render_widget(Span::styled(label, DIM), label_area);
    let shown = spark_area.width as usize;
    let data: Vec<u64> = history.iter().skip(history.len().saturating_sub(shown)).map(|p| p.unwrap_or(0)).collect();
    frame.render_widget(Sparkline::default().data(&data).style(Style::new().fg(Color::Magenta)), spark_area);
}

fn render_list(frame: &mut Frame, area: Rect, state: &State, view: &mut ViewState) {
    let focused = view.focus() == Focus::List;
    let now = state.data_now().unwrap_or(OffsetDateTime::UNIX_EPOCH);
    let total = view.rows().len();
    if total == 0 {
        let text = if view.filter_text().is_empty() {
            "waiting for conversations…"
        } else {
            "no conversation matches the filter (/ to change, Esc in the filter to clear)"
        };
        frame.render_widget(Paragraph::new(Line::styled(text, DIM)).block(pane(Line::from(" Conversations "), focused)), area);
        return;
    }
    let selected = view.selected_index();
    let live = state.active();
    let mut title = vec![Span::styled(" Conversations ", Style::new().bold()), Span::raw(format!("{total} shown · {live} live "))];
    if !view.showing_ended() {
        title.push(Span::styled("· ended hidden ", DIM));
    }
    if !view.filter_text().is_empty() {
        title.push(Span::styled(format!("· filter: {} ", view.filter_text()), Style::new().fg(Color::Yellow)));
    }
    if view.following() {
        title.push(Span::styled("· following newest ", Style::new().fg(Color::Cyan)));
    }
    let block = pane(Line::from(title), focused);
    let inner_height = block.inner(area).height.saturating_sub(1) as usize; // minus the header row

    // Keep the selected row on screen; build only the rows that are. While the same
    // conversation stays selected it keeps its row on screen: new conversations arriving above
    // it scroll the list instead of pushing the selection down and out of view.
    let mut offset = view.list_offset;
    if let (Some(sel), Some((id, row))) = (selected, view.list_anchor.clone()) {
        if view.selected(state).is_some_and(|c| c.id == id) {
            offset = sel.saturating_sub(row);
        }
    }
    // No empty rows below the end of the list while there are rows above the screen.
    let mut offset = offset.min(total.saturating_sub(inner_height.max(1)));
    if let Some(sel) = selected {
        if sel < offset {
            offset = sel;
        } else if inner_height > 0 && sel >= offset + inner_height {
            offset = sel + 1 - inner_height;
        }
    }
    view.list_offset = offset;
    view.list_anchor = selected.and_then(|sel| view.selected(state).map(|c| (c.id.clone(), sel - offset)));
    let end = (offset + inner_height).min(total);
    let ids = &view.rows()[offset..end];
    let all_columns = area.width >= LIST_ALL_COLUMNS;
    let tenant_width = ids.iter().filter_map(|id| state.conversation(id)).map(|c| c.tenant.width()).max().unwrap_or(0).clamp(6, 20);
    let rows: Vec<Row> = ids.iter().filter_map(|id| state.conversation(id)).map(|c| list_row(c, now, all_columns)).collect();

    let sentiment_name = if all_columns { "sentiment" } else { "sent" };
    let mut names = vec!["", "", "conversation", "tenant", "agent", "channel", "duration", "turns", "last", sentiment_name];
    let mut widths = vec![
        Constraint::Length(1),
        Constraint::Length(3),
        Constraint::Length(12),
        Constraint::Fill(2),
        Constraint::Fill(2),
        Constraint::Length(7),
        Constraint::Length(8),
        Constraint::Length(5),
        Constraint::Length(8),
        Constraint::Length(if all_columns { 9 } else { 5 }),
    ];
    // The tenant column is as wide as the longest tenant on screen; the agent takes the rest.
    widths[3] = Constraint::Length(tenant_width as u16);
    widths[4] = Constraint::Fill(1);
    if !all_columns {
        for i in [8, 5] {
            names.remove(i);
            widths.remove(i);
        }
    }
    let header = Row::new(names).style(Style::new().bold().fg(Color::Gray));
    let table = Table::new(rows, widths)
        .header(header)
        .block(block)
        .column_spacing(1)
        .row_highlight_style(Style::new().add_modifier(Modifier::REVERSED))
        .highlight_symbol("▶");
    let mut table_state = TableState::default().with_selected(selected.map(|s| s - offset));
    frame.render_stateful_widget(table, area, &mut table_state);
}

fn list_row(c: &Conv, now: OffsetDateTime, all_columns: bool) -> Row<'static> {
    let (mark, mark_style) = match c.resolution {
        None => ("●", Style::new().fg(Color::Green)),
        Some(r) => ("■", Style::new().fg(resolution_colour(r))),
    };
    let last = match c.last_speaker {
        Some(Speaker::Agent) => Span::styled("agent", Style::new().fg(AGENT)),
        Some(Speaker::Customer) => Span::styled("customer", Style::new().fg(CUSTOMER)),
        _ => Span::styled("-", DIM),
    };
    let id = short_id(&c.id);
    let style = if c.is_ended() { DIM } else { Style::new() };
    let mut cells = vec![
        Cell::from(Span::styled(mark, mark_style)),
        Cell::from(markers(c)),
        Cell::from(id),
        Cell::from(c.tenant.to_string()),
        Cell::from(c.agent.to_string()),
        Cell::from(c.channel.map_or("-", |ch| ch.as_str())),
        Cell::from(Line::from(duration(c.duration(now))).right_aligned()),
        Cell::from(Line::from(c.turns.to_string()).right_aligned()),
        Cell::from(last),
        Cell::from(sentiment(c.sentiment)),
    ];
    if !all_columns {
        cells.remove(8);
        cells.remove(5);
    }
    Row::new(cells).style(style)
}

/// Interrupted, an error or violation.
const INTERRUPTED: &str = "↯";
const PROBLEM: &str = "✗";
const TRANSFERRED: &str = "⇢";

/// The list's markers, each in its own place so they line up: interrupted (↯), an error or a
/// compliance violation (✗), transferred (⇢).
fn markers(c: &Conv) -> Line<'static> {
    let mark = |on: bool, glyph: &'static str, colour: Color| {
        if on { Span::styled(glyph, Style::new().fg(colour).bold()) } else { Span::raw(" ") }
    };
    Line::from(vec![
        mark(c.interruptions > 0, INTERRUPTED, Color::Yellow),
        mark(c.problems > 0, PROBLEM, Color::Red),
        mark(c.transfers > 0 || c.resolution == Some(Resolution::Transferred), TRANSFERRED, Color::Magenta),
    ])
}

fn render_transcript(frame: &mut Frame, area: Rect, state: &State, view: &mut ViewState) {
    let focused = view.focus() == Focus::Transcript;
    let Some(conv) = view.selected(state) else {
        frame.render_widget(
            Paragraph::new(Line::styled("select a conversation (↑/↓, j/k)", DIM)).block(pane(Line::from(" Transcript "), focused)),
            area,
        );
        return;
    };
    // The cost comes right after the id, so a narrow terminal cuts the names, not the cost;
    // there the id is its short form, as the list shows it.
    let id = if area.width >= WIDE / 2 + 20 { conv.id.to_string() } else { short_id(&conv.id) };
    let mut title = vec![Span::styled(" Transcript ", Style::new().bold()), Span::raw(format!("{id} "))];
    if let Some(cost) = conv.cost_usd {
        title.push(Span::styled(format!("· {} ", usd(cost)), Style::new().bold().fg(Color::Green)));
    }
    if conv.input_tokens + conv.output_tokens > 0 {
        title.push(Span::raw(format!("· {} tok ", tokens(conv.input_tokens, conv.output_tokens))));
    }
    if conv.interruptions > 0 {
        title.push(Span::styled(format!("· {INTERRUPTED}{} ", conv.interruptions), Style::new().fg(Color::Yellow)));
    }
    title.push(Span::styled(format!("· {} · {} ", conv.tenant, conv.agent), DIM));
    if let Some(ch) = conv.channel {
        title.push(Span::styled(format!("· {ch} "), DIM));
    }
    let block = pane(Line::from(title), focused);
    let inner = block.inner(area);
    let width = inner.width as usize;
    let mut lines: Vec<Line> = Vec::new();
    if conv.entries_dropped > 0 {
        lines.push(Line::styled(format!("… {} earlier entries not kept", conv.entries_dropped), DIM));
    }
    for entry in &conv.entries {
        entry_lines(entry, width, &mut lines);
    }
    let height = inner.height as usize;
    let max_scroll = lines.len().saturating_sub(height);
    let scroll = view.transcript_scroll.min(max_scroll);
    view.transcript_scroll = scroll;
    let start = lines.len().saturating_sub(height + scroll);
    let shown: Vec<Line> = lines.into_iter().skip(start).take(height).collect();
    frame.render_widget(Paragraph::new(shown).block(block), area);
}

/// Time, speaker or marker, then the text wrapped under itself.
fn entry_lines(entry: &Entry, width: usize, out: &mut Vec<Line<'static>>) {
    let time = clock(entry.at);
    let mut bar: Option<&LatencyBar> = None;
    let (marker, marker_style, text, notes): (String, Style, String, Vec<Span<'static>>) = match &entry.kind {
        EntryKind::Started { customer, channel, language } => (
            "start".into(),
            DIM,
            format!("{channel} conversation with {customer} ({language})"),
            vec![],
        ),
        EntryKind::Turn { speaker, text, intent, sentiment: s, response, latency, interruption, dead_air_ms, usage } => {
            let colour = if *speaker == Speaker::Agent { AGENT } else { CUSTOMER };
            let mut notes = Vec::new();
            if let Some((intent, confidence)) = intent {
                let c = confidence.map_or(String::new(), |c| format!(" {c:.2}"));
                notes.push(Span::styled(format!("intent {intent}{c}"), Style::new().fg(Color::Blue)));
            }
            if let Some(s) = s {
                let value = sentiment(Some(*s));
                notes.push(Span::styled(format!("sentiment {}", value.content), value.style));
            }
            if let Some(ms) = dead_air_ms {
                notes.push(Span::styled(format!("{} dead air before", millis(*ms)), Style::new().fg(Color::Yellow)));
            }
            match (response, latency) {
                (_, Some(bar)) if bar.greeting => {
                    notes.push(Span::styled(format!("greeted in {}", millis(bar.total_ms)), DIM))
                }
                (Some(r), _) => notes.push(Span::styled(format!("replied in {}", millis(r * 1000.0)), DIM)),
                _ => {}
            }
            if let Some(u) = usage {
                notes.extend(usage_note(u));
            }
            if let Some(i) = interruption {
                notes.push(Span::styled(interruption_note(i), Style::new().fg(Color::Yellow).bold()));
            }
            // The waterfall is the agent's reply (or greeting); a customer turn's parts (its
            // speech-to-text) are a note.
            match latency {
                Some(l) if *speaker == Speaker::Agent => bar = Some(l),
                Some(l) => notes.extend(l.parts.iter().map(|(p, ms)| Span::styled(format!("{} {}", p.label(), millis(*ms)), DIM))),
                None => {}
            }
            (speaker.to_string(), Style::new().fg(colour).bold(), text.clone(), notes)
        }
        EntryKind::Decision { decision_type, option, reason, confidence } => {
            let c = confidence.map_or(String::new(), |c| format!(" ({c:.2})"));
            (
                "decision".into(),
                Style::new().fg(Color::Yellow).bold(),
                format!("{} → {option}{c}: {reason}", decision_type.as_str()),
                vec![],
            )
        }
        EntryKind::Transfer { target, reason } => (
            "transfer".into(),
            Style::new().fg(Color::Magenta).bold(),
            format!("⇢ {target}: {reason}"),
            vec![],
        ),
        EntryKind::Error { error_type, message } => {
            ("error".into(), Style::new().fg(Color::Red).bold(), format!("{error_type}: {message}"), vec![])
        }
        EntryKind::Violation { policy, severity } => (
            "violation".into(),
            Style::new().fg(Color::Red).bold(),
            format!("{policy} ({severity})"),
            vec![],
        ),
        EntryKind::Ended { resolution, rating, duration_seconds } => {
            let rating = rating.map_or(String::new(), |r| format!(" · rating {}", "★".repeat(r as usize)));
            (
                "end".into(),
                Style::new().fg(resolution_colour(*resolution)).bold(),
                format!("{resolution} after {}{rating}", duration(*duration_seconds)),
                vec![],
            )
        }
    };
    const MARKER: usize = 9;
    let prefix = 8 + 1 + MARKER + 1;
    let text_width = width.saturating_sub(prefix).max(10);
    let mut chunks = wrap(&text, text_width).into_iter();
    let first = chunks.next().unwrap_or_default();
    let mut line = vec![
        Span::styled(time, DIM),
        Span::raw(" "),
        Span::styled(format!("{marker:<MARKER$}"), marker_style),
        Span::raw(" "),
        Span::raw(first),
    ];
    let text_style = match entry.kind {
        EntryKind::Decision { .. } | EntryKind::Transfer { .. } => Some(Style::new().fg(Color::Yellow)),
        EntryKind::Error { .. } | EntryKind::Violation { .. } => Some(Style::new().fg(Color::Red)),
        _ => None,
    };
    if let Some(style) = text_style {
        line[4] = line[4].clone().style(style);
    }
    out.push(Line::from(line));
    for chunk in chunks {
        let mut span = Span::raw(chunk);
        if let Some(style) = text_style {
            span = span.style(style);
        }
        out.push(Line::from(vec![Span::raw(" ".repeat(prefix)), span]));
    }
    if !notes.is_empty() {
        for line in pack(notes, text_width, Span::styled(" · ", DIM)) {
            let mut spans = vec![Span::raw(" ".repeat(prefix))];
            spans.extend(line);
            out.push(Line::from(spans));
        }
    }
    if let Some(bar) = bar {
        latency_lines(bar, text_width, prefix, out);
    }
}

/// Packs spans into lines at most `width` wide, `between` separating them on a line; a span
/// wider than a line gets one of its own.
fn pack(items: Vec<Span<'static>>, width: usize, between: Span<'static>) -> Vec<Vec<Span<'static>>> {
    let mut lines: Vec<Vec<Span<'static>>> = Vec::new();
    let mut used = 0;
    for item in items {
        let w = item.content.width();
        match lines.last_mut() {
            Some(line) if used + between.content.width() + w <= width => {
                line.push(between.clone());
                line.push(item);
                used += between.content.width() + w;
            }
            _ => {
                lines.push(vec![item]);
                used = w;
            }
        }
    }
    lines
}

/// Cells of the bar at most.
const BAR_CELLS: usize = 40;
/// What one cell of the bar stands for, so bars of different turns (and terminals) compare: a
/// reply twice as slow draws twice as long. A turn too long for the bar is drawn to fit it.
const BAR_CELL_MS: f64 = 100.0;
/// Room kept after the bar for the whole (` 10.00s greeting`).
const BAR_LABEL: usize = 16;

/// The glyph and colour of a part in the bar and its legend (the glyph tells them apart
/// without colour).
fn part_style(part: Part) -> (char, Color) {
    match part {
        Part::Stt => ('░', Color::Blue),
        Part::Eou => ('▒', Color::Cyan),
        Part::Llm => ('▓', Color::Yellow),
        Part::Tool => ('▚', Color::Magenta),
        Part::Tts => ('█', Color::Green),
    }
}

/// A voice turn's waterfall: the parts end to end along one bar (100 ms a cell; a turn too long
/// for the width is drawn to fit), the rest of the response dotted, the whole after it, in the
/// same column for every turn; then the legend with each part's milliseconds.
fn latency_lines(bar: &LatencyBar, width: usize, prefix: usize, out: &mut Vec<Line<'static>>) {
    let total_label = format!(" {}{}", millis(bar.total_ms), if bar.greeting { " greeting" } else { "" });
    let cells = BAR_CELLS.min(width.saturating_sub(BAR_LABEL)).max(8);
    let per_cell = (bar.total_ms / cells as f64).max(BAR_CELL_MS);
    let mut spans = vec![Span::raw(" ".repeat(prefix))];
    let mut used = 0usize;
    for (part, ms) in &bar.parts {
        let n = ((ms / per_cell).round() as usize).max(usize::from(*ms > 0.0)).min(cells - used);
        let (glyph, colour) = part_style(*part);
        spans.push(Span::styled(glyph.to_string().repeat(n), Style::new().fg(colour)));
        used += n;
    }
    let whole = ((bar.total_ms / per_cell).round() as usize).clamp(used, cells);
    spans.push(Span::styled("·".repeat(whole - used), DIM));
    spans.push(Span::styled(" ".repeat(cells - whole), DIM));
    spans.push(Span::styled(total_label, Style::new().bold()));
    out.push(Line::from(spans));
    let mut legend: Vec<Span<'static>> = bar
        .parts
        .iter()
        .map(|(part, ms)| {
            let (glyph, colour) = part_style(*part);
            Span::styled(format!("{glyph}{} {}", part.label(), millis(*ms)), Style::new().fg(colour))
        })
        .collect();
    let rest = bar.rest_ms();
    if rest >= 1.0 {
        legend.push(Span::styled(format!("·other {}", millis(rest)), DIM));
    }
    for line in pack(legend, width, Span::raw(" ")) {
        let mut spans = vec![Span::raw(" ".repeat(prefix))];
        spans.extend(line);
        out.push(Line::from(spans));
    }
}

/// A turn's tokens and cost: `812→64 tok $0.00016`.
fn usage_note(u: &Usage) -> Vec<Span<'static>> {
    let mut notes = Vec::new();
    if u.input_tokens.is_some() || u.output_tokens.is_some() {
        notes.push(Span::styled(format!("{} tok", tokens(u.input_tokens.unwrap_or(0), u.output_tokens.unwrap_or(0))), DIM));
    }
    match u.cost_usd {
        Some(c) => notes.push(Span::styled(usd(c), Style::new().fg(Color::Green))),
        None if !u.unpriced.is_empty() => notes.push(Span::styled(format!("unpriced {}", u.unpriced.join(",")), DIM)),
        None => {}
    }
    notes
}

/// `↯ customer barged in (600ms overlap)`, `↯ agent talked over (1.20s overlap)`.
fn interruption_note(i: &Interruption) -> String {
    let what = match i.by {
        TurnSpeaker::Customer => "customer barged in",
        TurnSpeaker::Agent => "agent talked over",
    };
    match i.overlap_ms {
        Some(ms) => format!("{INTERRUPTED} {what} ({} overlap)", millis(ms)),
        None => format!("{INTERRUPTED} {what}"),
    }
}

/// Word wrap by display width; words longer than the width are cut.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut current = String::new();
    let mut current_width = 0;
    for word in text.split_whitespace() {
        let mut word = word.to_string();
        loop {
            let w = word.width();
            let needed = if current.is_empty() { w } else { current_width + 1 + w };
            if needed <= width {
                if !current.is_empty() {
                    current.push(' ');
                    current_width += 1;
                }
                current.push_str(&word);
                current_width += w;
                break;
            }
            if !current.is_empty() {
                lines.push(std::mem::take(&mut current));
                current_width = 0;
                continue;
            }
            // A word wider than a line: cut it.
            let mut cut = String::new();
            let mut cut_width = 0;
            let mut rest = word.chars();
            for ch in rest.by_ref() {
                let cw = unicode_width::UnicodeWidthChar::width(ch).unwrap_or(0);
                if cut_width + cw > width {
                    let tail: String = std::iter::once(ch).chain(rest.by_ref()).collect();
                    lines.push(std::mem::take(&mut cut));
                    word = tail;
                    break;
                }
                cut.push(ch);
                cut_width += cw;
            }
            if !cut.is_empty() {
                current = cut;
                current_width = cut_width;
                break;
            }
        }
    }
    if !current.is_empty() || lines.is_empty() {
        lines.push(current);
    }
    lines
}

fn render_footer(frame: &mut Frame, area: Rect, state: &State, view: &ViewState) {
    let key = |k: &'static str| Span::styled(k, Style::new().bold().fg(Color::Cyan));
    let line = if let Some(input) = view.filter_input() {
        Line::from(vec![
            key(" / filter: "),
            Span::raw(input.to_string()),
            Span::styled("█", Style::new().fg(Color::Gray)),
            Span::styled("  tenant: agent: channel: resolution: error: text · ⏎ keep · Esc clear", DIM),
        ])
    } else {
        let mut spans = Vec::new();
        let keys: [(&str, &str); 8] = [
            ("↑↓/jk", "select"),
            ("⏎", "open"),
            ("/", "filter"),
            ("p", if state.paused().is_some() { "resume" } else { "pause" }),
            ("f", if view.following() { "unfollow" } else { "follow" }),
            ("e", "ended"),
            ("?", "help"),
            ("q", "quit"),
        ];
        for (k, what) in keys {
            spans.push(Span::raw(if spans.is_empty() { " " } else { "  " }));
            spans.push(key(k));
            spans.push(Span::raw(format!(" {what}")));
        }
        Line::from(spans)
    };
    frame.render_widget(line, area);
}

fn render_help(frame: &mut Frame, area: Rect) {
    // Fits 80×24 whole: at most 76 columns and 22 lines with its border.
    let rows = [
        ("↑ ↓  j k", "select (scrolls the transcript when it has focus)"),
        ("PgUp PgDn", "move ten rows"),
        ("g G  Home End", "first / last"),
        ("Enter  →  l", "focus the transcript"),
        ("Esc  ←  h", "back to the list"),
        ("/", "filter: tenant:ID agent:ID channel:voice, or words"),
        ("", "resolution:transferred  error:TYPE  error  interrupted"),
        ("p  Space", "pause / resume (events are held, not lost)"),
        ("f", "follow the newest conversation"),
        ("e", "show / hide ended conversations"),
        ("q  Ctrl-C", "quit"),
    ];
    let mut lines = vec![Line::from("")];
    for (k, what) in rows {
        lines.push(Line::from(vec![
            Span::styled(format!("  {k:<15}"), Style::new().bold().fg(Color::Cyan)),
            Span::raw(what),
        ]));
    }
    lines.push(Line::from(""));
    lines.push(Line::styled("  ↯ interrupted  ✗ error or violation  ⇢ transferred (list markers)", DIM));
    lines.push(Line::styled("  Voice replies: ░stt ▒eou ▓llm ▚tool █tts ·other; a cell is 100 ms.", DIM));
    lines.push(Line::styled("  Ids are their last 12 characters; `query conversation` takes them.", DIM));
    lines.push(Line::styled("  any key closes this help", DIM));
    let w = 74.min(area.width);
    let h = (lines.len() as u16 + 2).min(area.height);
    let popup = Rect { x: area.x + (area.width - w) / 2, y: area.y + (area.height - h) / 2, width: w, height: h };
    frame.render_widget(Clear, popup);
    frame.render_widget(Paragraph::new(lines).block(pane(Line::from(" Keys "), true)), popup);
}

fn pane(title: Line<'static>, focused: bool) -> Block<'static> {
    Block::new()
        .borders(Borders::ALL)
        .border_type(if focused { BorderType::Thick } else { BorderType::Rounded })
        .border_style(if focused { Style::new().fg(Color::Cyan) } else { DIM })
        .title(title)
}

fn resolution_colour(r: Resolution) -> Color {
    match r {
        Resolution::Resolved => Color::Green,
        Resolution::Transferred => Color::Magenta,
        Resolution::Escalated => Color::Yellow,
        Resolution::Unresolved => Color::Red,
        Resolution::Abandoned => Color::DarkGray,
    }
}

fn sentiment(s: Option<f64>) -> Span<'static> {
    match s {
        None => Span::styled("-", DIM),
        Some(s) => {
            let colour = if s >= 0.25 {
                Color::Green
            } else if s <= -0.25 {
                Color::Red
            } else {
                Color::Gray
            };
            Span::styled(format!("{s:+.2}"), Style::new().fg(colour))
        }
    }
}

/// The last 12 characters of an id (UUIDv7s share their time prefix), as the list shows it;
/// `query conversation` takes it as a short id.
pub fn short_id(id: &str) -> String {
    let n = id.chars().count();
    if n <= 12 { id.to_string() } else { id.chars().skip(n - 12).collect() }
}

fn clock(t: OffsetDateTime) -> String {
    format!("{:02}:{:02}:{:02}", t.hour(), t.minute(), t.second())
}

fn duration(s: f64) -> String {
    human_duration(s.max(0.0), 0)
}

/// Seconds as a short human duration: under a minute with `decimals` (`42s`, `42.0s`), then
/// `3m05s`, then `1h02m`. The one formatter of durations for the view and the command line.
pub fn human_duration(s: f64, decimals: usize) -> String {
    if s < 60.0 {
        format!("{s:.decimals$}s")
    } else if s < 3600.0 {
        format!("{}m{:02}s", (s / 60.0) as u64, (s % 60.0) as u64)
    } else {
        format!("{}h{:02}m", (s / 3600.0) as u64, ((s % 3600.0) / 60.0) as u64)
    }
}

fn millis(ms: f64) -> String {
    if ms < 1000.0 { format!("{ms:.0}ms") } else { format!("{:.2}s", ms / 1000.0) }
}

/// Dollars: four decimals under a dollar (a turn costs fractions of a cent), else two.
fn usd(v: f64) -> String {
    if v < 1.0 { format!("${v:.4}") } else { format!("${v:.2}") }
}

/// Input→output tokens, `812→64`, `12.4k→1.1k`.
fn tokens(input: u64, output: u64) -> String {
    fn short(n: u64) -> String {
        if n < 1_000 { n.to_string() } else if n < 1_000_000 { format!("{:.1}k", n as f64 / 1e3) } else { format!("{:.1}M", n as f64 / 1e6) }
    }
    format!("{}→{}", short(input), short(output))
}

fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrap_keeps_words_and_cuts_long_ones() {
        assert_eq!(wrap("a bb ccc", 4), ["a bb", "ccc"]);
        assert_eq!(wrap("abcdefghij", 4), ["abcd", "efgh", "ij"]);
        assert_eq!(wrap("", 4), [""]);
        assert_eq!(wrap("日本語です", 4), ["日本", "語で", "す"]);
    }

    #[test]
    fn numbers_read_well() {
        assert_eq!(thousands(1234567), "1,234,567");
        assert_eq!(thousands(12), "12");
        assert_eq!(duration(75.0), "1m15s");
        assert_eq!(millis(1234.0), "1.23s");
        assert_eq!(short_id("0195f3a2-7c1e-7b3d-9a1f-42c8e5d7a901"), "42c8e5d7a901");
    }
}

#[cfg(test)]
mod snapshots {
    use std::time::{Duration, Instant};

    use ratatui::Terminal;
    use ratatui::backend::TestBackend;

    use super::*;
    use crate::tui::state::Options;
    use crate::tui::testdata::contact_center;

    /// The data and the view state, as the app loop holds them.
    struct Scene {
        data: State,
        view: ViewState,
    }

    impl Scene {
        fn new(options: Options) -> Scene {
            Scene { data: State::new(options), view: ViewState::new() }
        }

        fn key(&mut self, key: Key) -> Action {
            crate::tui::handle_key(&mut self.data, &mut self.view, key)
        }

        fn push(&mut self, event: crate::types::Event) {
            self.data.push(event);
        }

        // Brings the view up to date with the data, as a frame does, then reads it.
        fn selected_id(&mut self) -> Option<String> {
            self.view.update(&self.data);
            self.view.selected_id().map(|id| id.to_string())
        }
    }

    /// 12 conversations, a closed one-second bucket, conv-0009 (transferred) selected.
    fn scene() -> Scene {
        let mut s = Scene::new(Options { source: "local .serphona-obs/events".into(), ..Options::default() });
        let t = Instant::now();
        s.data.tick(t);
        for e in contact_center(12) {
            s.push(e);
        }
        s.data.tick(t + Duration::from_secs(1));
        s.key(Key::Down);
        s.key(Key::Down);
        s
    }

    fn draw(scene: &mut Scene, width: u16, height: u16) -> Terminal<TestBackend> {
        let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
        terminal.draw(|f| render(f, &scene.data, &mut scene.view)).unwrap();
        terminal
    }

    #[test]
    fn wide_160x48() {
        insta::assert_snapshot!(draw(&mut scene(), 160, 48).backend());
    }

    #[test]
    fn narrow_80x24() {
        insta::assert_snapshot!(draw(&mut scene(), 80, 24).backend());
    }

    #[test]
    fn transcript_focused_with_filter_open_80x24() {
        let mut s = scene();
        s.key(Key::Enter);
        s.key(Key::Char('/'));
        for c in "tenant:acme-telco".chars() {
            s.key(Key::Char(c));
        }
        insta::assert_snapshot!(draw(&mut s, 80, 24).backend());
    }

    #[test]
    fn paused_with_drops_and_ended_hidden_160x48() {
        let mut s = scene();
        s.key(Key::Char('e'));
        s.key(Key::Char('p'));
        s.data.add_dropped(1234);
        s.data.set_skipped(3);
        s.data.set_status(Some("stdin closed".into()));
        insta::assert_snapshot!(draw(&mut s, 160, 48).backend());
    }

    #[test]
    fn help_overlay_160x48() {
        let mut s = scene();
        s.key(Key::Char('?'));
        insta::assert_snapshot!(draw(&mut s, 160, 48).backend());
    }

    // Regression test for issue 12, item 10: at 80×24 the live view showed 6 rows, cut tenant
    // and agent names to `globex-ca`, and cut off the help overlay.
    #[test]
    fn list_at_80x24_shows_nine_rows_and_whole_names() {
        let terminal = draw(&mut scene(), 80, 24);
        let text = format!("{}", terminal.backend());
        let rows = text.lines().filter(|l| l.contains(" conv-00")).count();
        assert!(rows >= 9, "{rows} rows\n{text}");
        for name in ["globex-bank", "billing-bot", "support-bot", "acme-telco"] {
            assert!(text.contains(&format!(" {name} ")), "{name} cut\n{text}");
        }
        // The simulation's longest tenant and a long agent name, as `demo` shows them.
        let mut s = scene();
        let mut c = crate::tui::testdata::Conv::new(77, "initech-insurance", "initech-claims-bot");
        s.push(c.start(200.0, crate::types::Channel::Voice));
        let wide_names = format!("{}", draw(&mut s, 80, 24).backend());
        assert!(wide_names.contains(" initech-insurance ") && wide_names.contains(" initech-claims-bot "), "{wide_names}");
        insta::assert_snapshot!(terminal.backend());
    }

    // Regression test for issue 12, item 10: the help overlay was cut off at 80×24.
    #[test]
    fn help_overlay_80x24_is_whole() {
        let mut s = scene();
        s.key(Key::Char('?'));
        let terminal = draw(&mut s, 80, 24);
        let text = format!("{}", terminal.backend());
        for part in ["select (scrolls the transcript when it has focus)", "filter: tenant:ID agent:ID channel:voice, or words", "resolution:transferred  error:TYPE", "↯ interrupted", "q  Ctrl-C", "any key closes this help"] {
            assert!(text.contains(part), "{part:?} cut\n{text}");
        }
        assert!(text.contains("┏ Keys") && text.lines().any(|l| l.contains("┗━━")), "{text}");
        insta::assert_snapshot!(terminal.backend());
    }

    // Regression test for issue 12, item 10: the selection sank out of view while new
    // conversations arrived.
    #[test]
    fn the_selected_row_stays_in_view_while_many_new_conversations_arrive() {
        let mut s = scene();
        let selected = s.selected_id().unwrap();
        let row_of = |terminal: &Terminal<TestBackend>| {
            let text = format!("{}", terminal.backend());
            text.lines().position(|l| l.contains('▶') && l.contains(selected.as_str()))
        };
        let before = row_of(&draw(&mut s, 80, 24)).expect("selected row on screen");
        let mut terminal = Terminal::new(TestBackend::new(80, 24)).unwrap();
        for n in 0..200u64 {
            let mut c = crate::tui::testdata::Conv::new(1000 + n, "globex-bank", "billing-bot");
            s.push(c.start(300.0 + n as f64, crate::types::Channel::Chat));
            s.push(c.customer(300.5 + n as f64, "hello", None, 0.0));
            terminal.draw(|f| render(f, &s.data, &mut s.view)).unwrap();
            assert_eq!(row_of(&terminal), Some(before), "after {} new conversations\n{}", n + 1, terminal.backend());
        }
        assert_eq!(s.selected_id().unwrap(), selected);
        // Moving the selection still moves it on screen.
        s.key(Key::Up);
        terminal.draw(|f| render(f, &s.data, &mut s.view)).unwrap();
        let text = format!("{}", terminal.backend());
        let moved = text.lines().position(|l| l.contains('▶')).unwrap();
        assert_eq!(moved + 1, before, "{text}");
        // Anchored near the end of the list, the screen is still filled: the list scrolls no
        // further than its last row.
        s.key(Key::End);
        for n in 0..20u64 {
            let mut c = crate::tui::testdata::Conv::new(5000 + n, "acme-telco", "support-bot");
            s.push(c.start(600.0 + n as f64, crate::types::Channel::Sms));
            terminal.draw(|f| render(f, &s.data, &mut s.view)).unwrap();
        }
        let text = format!("{}", terminal.backend());
        assert_eq!(text.lines().filter(|l| l.starts_with("\"┃") && l.contains("conv-")).count(), 9, "{text}");
    }

    // Issue 13: rendering reads the data and never writes it; the view state it keeps
    // (offsets, the clamped transcript scroll) settles after one frame.
    #[test]
    fn rendering_twice_gives_the_same_frame_and_leaves_the_data_as_it_was() {
        for (width, height) in [(160, 48), (80, 24)] {
            let mut s = scene();
            s.key(Key::Enter);
            for _ in 0..50 {
                s.key(Key::Up); // scrolled past the transcript's top: the renderer clamps it
            }
            let data_before = format!("{:?}", s.data);
            let first = draw(&mut s, width, height);
            let view_after_first = s.view.clone();
            let second = draw(&mut s, width, height);
            assert_eq!(first.backend().buffer(), second.backend().buffer(), "{width}x{height}");
            assert_eq!(s.view, view_after_first, "{width}x{height}");
            assert_eq!(format!("{:?}", s.data), data_before, "{width}x{height}");
        }
    }

    // Issue 13: the same data drawn through two view states shows each one's own selection.
    #[test]
    fn two_views_of_the_same_data_keep_their_own_selection() {
        let s = scene();
        let mut other = ViewState::new();
        let mut terminal = Terminal::new(TestBackend::new(80, 24)).unwrap();
        terminal.draw(|f| render(f, &s.data, &mut other)).unwrap();
        assert_eq!(other.selected_index(), Some(0));
        assert_eq!(s.view.selected_index(), Some(2));
        assert_eq!(other.selected_id().map(|id| id.to_string()).as_deref(), Some("conv-0011"));
        assert_eq!(s.view.selected_id().map(|id| id.to_string()).as_deref(), Some("conv-0009"));
    }

    /// The contact center and a voice call (conv-0020) with every latency part, a barge-in,
    /// an error, dead air, tokens and cost, selected with its transcript focused.
    fn voice_scene() -> Scene {
        let mut s = scene();
        for e in crate::tui::testdata::voice_call(20, 200.0) {
            s.push(e);
        }
        s.key(Key::Home);
        s.key(Key::Enter);
        s
    }

    // Issue 17: the header names the incidents going on, with their cause and start.
    #[test]
    fn the_header_names_an_open_incident() {
        let mut s = scene();
        for e in crate::tui::testdata::llm_slowdown(7200) {
            s.push(e);
        }
        // Past the last detection run of the scene's ticks.
        s.data.tick(std::time::Instant::now() + crate::tui::state::incidents::Incidents::EVERY * 2);
        for (w, h) in [(160, 48), (80, 24)] {
            let text = format!("{}", draw(&mut s, w, h).backend());
            let header = text.lines().nth(1).unwrap_or_default().to_string();
            assert!(header.contains("⚠ 1 incident: acme — LLM latency since 10:"), "{w}x{h}: {header:?}\n{text}");
        }
    }

    // Issue 16: a voice turn's latency bar and its legend, the interruption and error markers
    // in the list and the cost in the transcript's title, at both sizes.
    #[test]
    fn voice_turn_breakdown_and_markers_160x48() {
        let mut s = voice_scene();
        let terminal = draw(&mut s, 160, 48);
        let text = format!("{}", terminal.backend());
        for part in ["$0.0005", "2.4k→172 tok", "░░▒▒▒▓▓▓▓▓▓▚▚██·", "░stt 180ms ▒eou 320ms ▓llm 610ms", "▚tool 240ms █tts 210ms", "↯ customer barged in (600ms overlap)", "$0.0002", "↯ 1 interruptions"] {
            assert!(text.contains(part), "{part:?}\n{text}");
        }
        let row = text.lines().find(|l| l.contains("conv-0020") && l.contains('■')).unwrap();
        assert!(row.contains("↯✗⇢"), "{row}");
        insta::assert_snapshot!(terminal.backend());
    }

    #[test]
    fn voice_turn_breakdown_and_markers_80x24() {
        let mut s = voice_scene();
        // Scrolled up to the reply with every part.
        for _ in 0..12 {
            s.key(Key::Up);
        }
        let terminal = draw(&mut s, 80, 24);
        let text = format!("{}", terminal.backend());
        for part in ["Transcript conv-0020 · $0.0005", "09:03:27 agent", "░░▒▒▒▓▓▓▓▓▓▚▚██·", "▚tool 240ms", "1.62s"] {
            assert!(text.contains(part), "{part:?}\n{text}");
        }
        assert!(text.lines().any(|l| l.contains("conv-0020") && l.contains("↯✗⇢")), "{text}");
        insta::assert_snapshot!(terminal.backend());
    }

    #[test]
    fn the_bar_is_drawn_to_scale_and_fits_the_width() {
        let bar = LatencyBar {
            parts: vec![(Part::Stt, 200.0), (Part::Llm, 1000.0), (Part::Tts, 300.0)],
            total_ms: 2000.0,
            greeting: false,
        };
        let text = |width| {
            let mut out = Vec::new();
            latency_lines(&bar, width, 0, &mut out);
            out.iter().map(|l| l.spans.iter().map(|s| s.content.to_string()).collect::<String>()).collect::<Vec<_>>()
        };
        // 100 ms a cell.
        assert_eq!(text(80)[0], format!("{}{}{}{}{} 2.00s", "░".repeat(2), "▓".repeat(10), "█".repeat(3), "·".repeat(5), " ".repeat(20)));
        assert_eq!(text(80)[1], "░stt 200ms ▓llm 1.00s █tts 300ms ·other 500ms");
        // Narrow: fewer cells, still 100 ms each while the turn fits; the legend wraps; nothing
        // wider than asked.
        assert!(text(40)[0].starts_with(&format!("{}{}{}{}", "░".repeat(2), "▓".repeat(10), "█".repeat(3), "·".repeat(5))));
        for line in text(30) {
            assert!(line.width() <= 30, "{line:?}");
        }
        // A long turn fills the bar.
        let slow = LatencyBar { parts: vec![(Part::Llm, 9000.0)], total_ms: 10_000.0, greeting: false };
        let mut out = Vec::new();
        latency_lines(&slow, 80, 0, &mut out);
        let first: String = out[0].spans.iter().map(|s| s.content.to_string()).collect();
        assert_eq!(first, format!("{}{} 10.00s", "▓".repeat(36), "·".repeat(4)));
    }

    #[test]
    fn waiting_for_conversations_80x24() {
        let mut s = Scene::new(Options { source: "clickhouse http://localhost:8123/analytics".into(), ..Options::default() });
        insta::assert_snapshot!(draw(&mut s, 80, 24).backend());
    }
}
