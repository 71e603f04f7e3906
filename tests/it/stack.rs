//! `up`/`down`/`status` and compose/ (issue 6).
