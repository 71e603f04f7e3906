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
