//! `--since` and `--until`: a duration before now (`15m`, `2h`, `7d`, `1h30m`) or a moment
//! (RFC 3339, or a date meaning its midnight UTC).

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// What `--since`/`--until` accept, for error messages and `--help`.
pub const ACCEPTED: &str =
    "a duration before now (e.g. 15m, 2h, 7d, 1h30m) or an RFC 3339 time (e.g. 2025-01-31T09:00:00Z, or a date: 2025-01-31)";

/// `s` as a moment, durations counted back from `now`.
pub fn parse_when(s: &str, now: OffsetDateTime) -> Result<OffsetDateTime, String> {
    let s = s.trim();
    let invalid = || format!("{s:?} is not a duration or a time; expected {ACCEPTED}");
    if s.is_empty() {
        return Err(invalid());
    }
    if let Ok(t) = OffsetDateTime::parse(s, &Rfc3339) {
        return Ok(t.to_offset(time::UtcOffset::UTC));
    }
    if let Ok(date) = time::Date::parse(s, &time::macros::format_description!("[year]-[month]-[day]")) {
        return Ok(date.midnight().assume_utc());
    }
    // Durations only: a bare number ("15") is ambiguous, and humantime would reject it anyway.
    let d = humantime::parse_duration(s).map_err(|_| invalid())?;
    let d = time::Duration::try_from(d).map_err(|_| invalid())?;
    now.checked_sub(d).ok_or_else(|| format!("{s:?} reaches back before the year -9999"))
}

/// The clap value parser: [`parse_when`] from now.
pub fn parse_when_now(s: &str) -> Result<OffsetDateTime, String> {
    parse_when(s, OffsetDateTime::now_utc())
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    const NOW: OffsetDateTime = datetime!(2025-06-15 12:00:00 UTC);

    #[test]
    fn durations_count_back_from_now() {
        assert_eq!(parse_when("15m", NOW).unwrap(), datetime!(2025-06-15 11:45:00 UTC));
        assert_eq!(parse_when("2h", NOW).unwrap(), datetime!(2025-06-15 10:00:00 UTC));
        assert_eq!(parse_when("7d", NOW).unwrap(), datetime!(2025-06-08 12:00:00 UTC));
        assert_eq!(parse_when("1h30m", NOW).unwrap(), datetime!(2025-06-15 10:30:00 UTC));
        assert_eq!(parse_when(" 90s ", NOW).unwrap(), datetime!(2025-06-15 11:58:30 UTC));
    }

    #[test]
    fn timestamps_and_dates() {
        assert_eq!(parse_when("2025-01-31T09:00:00Z", NOW).unwrap(), datetime!(2025-01-31 09:00:00 UTC));
        assert_eq!(parse_when("2025-01-31T10:00:00.5+01:00", NOW).unwrap(), datetime!(2025-01-31 09:00:00.5 UTC));
        assert_eq!(parse_when("2025-01-31", NOW).unwrap(), datetime!(2025-01-31 00:00:00 UTC));
    }

    #[test]
    fn garbage_says_what_is_accepted() {
        for bad in ["5x", "", "15", "yesterday", "2025-13-01", "-2h", "2h ago"] {
            let err = parse_when(bad, NOW).unwrap_err();
            assert!(err.contains("15m, 2h, 7d") && err.contains("RFC 3339"), "{bad:?}: {err}");
        }
        assert!(parse_when("100000000000d", NOW).is_err());
    }
}
