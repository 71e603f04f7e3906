//! Output formats shared by the commands.

use clap::ValueEnum;
use time::OffsetDateTime;

/// How a command prints its result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// A table for people.
    Table,
    /// JSON for scripts (stable field names).
    Json,
}

/// How a command whose results are rows (`query`) prints them: [`Format`] plus CSV.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DataFormat {
    /// A table (or tree) for people.
    Table,
    /// JSON for scripts (stable field names, RFC 3339 times).
    Json,
    /// CSV with a header row, for spreadsheets.
    Csv,
}

/// The width tables are fitted to: the terminal's when stdout is a terminal; otherwise the
/// `COLUMNS` environment variable when it is set to a number; otherwise none, and tables keep
/// their full width (output piped to a file or a script is not cut).
pub fn table_width() -> Option<usize> {
    use std::io::IsTerminal;
    if std::io::stdout().is_terminal() {
        if let Ok((w, _)) = crossterm::terminal::size() {
            if w > 0 {
                return Some(w as usize);
            }
        }
    }
    columns(std::env::var("COLUMNS").ok().as_deref())
}

fn columns(value: Option<&str>) -> Option<usize> {
    value.and_then(|c| c.trim().parse::<usize>().ok()).filter(|&w| w >= 20)
}

/// Fits a table to [`table_width`], as `gh` and `kubectl` do: the widest columns are wrapped
/// first, at word boundaries where there are any (a column header such as `p50 duration`
/// becomes two lines, a long id is cut across lines).
pub fn fit(table: &mut tabled::Table) {
    if let Some(width) = table_width() {
        fit_to(table, width);
    }
}

/// [`fit`] to a given width.
pub fn fit_to(table: &mut tabled::Table, width: usize) {
    use tabled::settings::peaker::Priority;
    use tabled::settings::Width;
    if table.total_width() > width {
        table.with(Width::wrap(width).priority(Priority::max(true)).keep_words(true));
    }
}

/// Seconds as a short human duration: `42.0s`, `3m05s`, `1h02m`.
pub fn seconds(s: Option<f64>) -> String {
    s.map_or_else(|| "-".into(), |s| serphona_obs::tui::view::human_duration(s, 1))
}

/// A span's duration: like [`seconds`], with milliseconds below one second (`0s`, `<1ms`,
/// `120ms`, `1.2s`, `4m12s`).
pub fn span_duration(s: f64) -> String {
    if s <= 0.0 || !s.is_finite() {
        "0s".into()
    } else if s < 0.001 {
        "<1ms".into()
    } else if s < 1.0 {
        format!("{:.0}ms", s * 1000.0)
    } else {
        seconds(Some(s))
    }
}

/// An offset from a start: `+0.0s`, `+1.3s`, `+4m12s` (see [`seconds`]).
pub fn offset(s: f64) -> String {
    if s < 0.0 { format!("-{}", seconds(Some(-s))) } else { format!("+{}", seconds(Some(s))) }
}

/// A time in RFC 3339 (UTC), to the microsecond as stored.
pub fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339).unwrap_or_else(|_| t.to_string())
}

/// A time in RFC 3339 (UTC) to the whole second, for tables.
pub fn rfc3339_seconds(t: OffsetDateTime) -> String {
    rfc3339(t.replace_nanosecond(0).unwrap_or(t))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Regression test for issue 12, item 10: tables were 138–173 columns wide.
    #[test]
    fn tables_fit_the_width_and_columns_is_read_when_not_a_terminal() {
        assert_eq!(columns(Some("80")), Some(80));
        assert_eq!(columns(Some("x")), None);
        assert_eq!(columns(None), None);
        let mut b = tabled::builder::Builder::default();
        b.push_record(["started", "conversation", "tenant", "p50 duration"]);
        b.push_record(["2025-01-31T09:00:00Z", "0195f3a2-7c1e-7b3d-9a1f-42c8e5d7a901", "globex-bank", "1m13s"]);
        let mut table = b.build();
        table.with(tabled::settings::Style::rounded());
        let wide = table.to_string();
        assert!(wide.lines().any(|l| l.chars().count() > 80), "{wide}");
        fit_to(&mut table, 60);
        let text = table.to_string();
        assert!(text.lines().all(|l| l.chars().count() <= 60), "{text}");
        // The widest cells wrap first; the narrow ones stay whole.
        assert!(text.contains("globex-bank") && text.contains("1m13s") && text.contains("9:00:00Z"), "{text}");
    }

    #[test]
    fn durations_and_offsets() {
        assert_eq!(span_duration(0.0), "0s");
        assert_eq!(span_duration(0.0004), "<1ms");
        assert_eq!(span_duration(0.12), "120ms");
        assert_eq!(span_duration(1.24), "1.2s");
        assert_eq!(span_duration(252.0), "4m12s");
        assert_eq!(offset(0.0), "+0.0s");
        assert_eq!(offset(90.0), "+1m30s");
        assert_eq!(seconds(None), "-");
        let t = time::macros::datetime!(2025-01-31 09:00:01.250 UTC);
        assert_eq!(rfc3339(t), "2025-01-31T09:00:01.25Z");
        assert_eq!(rfc3339_seconds(t), "2025-01-31T09:00:01Z");
    }
}
