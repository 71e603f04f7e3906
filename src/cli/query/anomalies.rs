//! `query anomalies`: the incidents of [`serphona_obs::detect`], as a table, JSON or CSV.

use std::io::Write;

use serphona_obs::detect::{Direction, Incident, Signal};

use super::render::{csv_float, csv_writer, json, table};
use crate::cli::output::{DataFormat, rfc3339_seconds};

/// How much history before `--since` is read for the baselines: a week, for the seasonal
/// baseline (the same window on each of the last seven days).
pub const HISTORY: time::Duration = time::Duration::days(7);

fn direction(d: Direction) -> &'static str {
    match d {
        Direction::Up => "up",
        Direction::Down => "down",
        Direction::Shift => "shift",
    }
}

/// A value as people read it: shares as percentages, milliseconds as ms, the rest plain.
fn value(metric: &str, v: f64) -> String {
    if metric.ends_with(".share") || metric.ends_with(".rate") {
        format!("{:.0}%", v * 100.0)
    } else if metric.starts_with("latency.") {
        format!("{v:.0}ms")
    } else if metric == "intents.divergence" {
        format!("JSD {v:.2}")
    } else {
        format!("{v:.2}")
    }
}

fn hh_mm(t: time::OffsetDateTime) -> String {
    format!("{:02}:{:02}", t.hour(), t.minute())
}

fn scope(s: &Signal) -> String {
    match &s.agent_id {
        Some(a) => format!("{} / {a}", s.tenant_id),
        None => s.tenant_id.clone(),
    }
}

/// Renders the incidents.
pub fn render(incidents: &[Incident], format: DataFormat, out: &mut impl Write) -> anyhow::Result<()> {
    match format {
        DataFormat::Json => json(&incidents, out),
        DataFormat::Csv => {
            let mut w = csv_writer(out);
            w.write_record([
                "incident_start",
                "incident_end",
                "tenant_id",
                "suspected_cause",
                "metric",
                "agent_id",
                "start",
                "end",
                "observed",
                "expected",
                "score",
                "direction",
            ])?;
            for i in incidents {
                for s in &i.signals {
                    w.write_record([
                        rfc3339_seconds(i.start),
                        rfc3339_seconds(i.end),
                        i.tenant_id.clone(),
                        i.suspected_cause.clone(),
                        s.metric.clone(),
                        s.agent_id.clone().unwrap_or_default(),
                        rfc3339_seconds(s.start),
                        rfc3339_seconds(s.end),
                        csv_float(Some(s.observed)),
                        csv_float(Some(s.expected)),
                        csv_float(Some(s.score)),
                        direction(s.direction).to_string(),
                    ])?;
                }
            }
            w.flush()?;
            Ok(())
        }
        DataFormat::Table => {
            for (n, i) in incidents.iter().enumerate() {
                let minutes = (i.end - i.start).whole_minutes();
                writeln!(
                    out,
                    "{}incident {}: {} — suspected cause: {}\n  {} to {} ({minutes} min), {} signal(s)",
                    if n > 0 { "\n" } else { "" },
                    n + 1,
                    i.tenant_id,
                    i.suspected_cause,
                    rfc3339_seconds(i.start),
                    rfc3339_seconds(i.end),
                    i.signals.len()
                )?;
                let header = ["metric", "scope", "from", "to", "observed", "expected", "score", ""].map(String::from).to_vec();
                let rows = i
                    .signals
                    .iter()
                    .map(|s| {
                        vec![
                            s.metric.clone(),
                            scope(s),
                            hh_mm(s.start),
                            hh_mm(s.end),
                            value(&s.metric, s.observed),
                            value(&s.metric, s.expected),
                            format!("{:.1}", s.score),
                            direction(s.direction).to_string(),
                        ]
                    })
                    .collect();
                writeln!(out, "{}", table(header, rows, 4))?;
            }
            Ok(())
        }
    }
}
