//! `dashboards lint` and `dashboards provision` (issue 6).
