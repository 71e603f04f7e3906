//! The end of a command that recorded events (`simulate`, `demo`): the library is shut down
//! with `pipeline.shutdown_timeout`, and a wait for a sink that is slow or down is announced
//! with what it waits for and how long, then reported with what was left behind.

use std::sync::mpsc::{RecvTimeoutError, channel};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serphona_obs::{Config, Observability};

/// A shutdown that has not finished after this long is announced.
const NOTICE_AFTER: Duration = Duration::from_millis(700);

/// What the shutdown did.
#[derive(Debug, Clone, Copy)]
pub struct Delivered {
    /// How long it took.
    pub elapsed: Duration,
    /// Events the ClickHouse sink did not deliver and keeps in durable state for the next start
    /// (the event log past its committed position, and its disk spool); else 0.
    pub spooled: u64,
    /// Lines the Loki sink did not push by the deadline; they stay in the event log past its
    /// committed position and are pushed on the next start.
    pub loki_pending: u64,
    /// Events lost on the way to disk.
    pub lost: Lost,
}

/// Events of this run that were lost on the way to disk (issue 14, item 3: a full disk lost
/// them while `simulate` printed a success summary and exited 0).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Lost {
    /// Events the local event log could not write (`serphona_obs_sink_events_failed_total{sink="event_log"}`).
    pub event_log: u64,
    /// Events the ClickHouse spool could not keep (`serphona_obs_spool_dropped_events_total{sink="clickhouse"}`).
    pub spool: u64,
}

impl Lost {
    /// All of them.
    pub fn total(&self) -> u64 {
        self.event_log + self.spool
    }

    /// `N events were lost: …`, or `None` when none were.
    pub fn message(&self) -> Option<String> {
        if self.total() == 0 {
            return None;
        }
        let mut parts = Vec::new();
        if self.event_log > 0 {
            parts.push(format!("{} not written to the event log", self.event_log));
        }
        if self.spool > 0 {
            parts.push(format!("{} not kept in the ClickHouse spool", self.spool));
        }
        Some(format!(
            "{} events were lost ({}); see the error above (a full disk?) and serphona_obs_sink_write_errors_total",
            self.total(),
            parts.join(", ")
        ))
    }
}

/// What was lost so far (see [`Lost`]).
pub fn lost(obs: &Observability) -> Lost {
    let pipeline = &obs.metrics().pipeline;
    Lost {
        event_log: pipeline.events_failed.with_label_values(&["event_log"]).get(),
        spool: pipeline.spool_dropped.with_label_values(&[serphona_obs::sinks::clickhouse::SINK_NAME]).get(),
    }
}

/// The destinations the shutdown may wait for, in words.
fn waiting_for(config: &Config) -> Vec<String> {
    let mut what = Vec::new();
    if config.clickhouse.enabled {
        what.push(format!(
            "ClickHouse at {} (rows it has not taken by then stay in the spool {} and are sent on the next start)",
            config.clickhouse.endpoint,
            serphona_obs::sinks::clickhouse::spool::spool_dir(&config.data_dir).display()
        ));
    }
    if let Some(loki) = config.logging.loki_endpoint.0.as_ref().filter(|_| config.logging.enabled) {
        what.push(format!("Loki at {loki}"));
    }
    if config.tracing.enabled {
        what.push(format!("the OTLP endpoint {} (spans)", config.tracing.endpoint));
    }
    if what.is_empty() {
        what.push("the local event log".into());
    }
    what
}

/// Events the ClickHouse sink keeps for the next start (`serphona_obs_events_pending`, set
/// by its shutdown).
fn spooled(obs: &Observability, sink: &str) -> u64 {
    obs.metrics().pipeline.events_pending.with_label_values(&[sink]).get().max(0) as u64
}

/// Shuts `obs` down, waiting at most `pipeline.shutdown_timeout` for the sinks. When that
/// takes a moment, says what it waits for and how long: a spinner on a terminal (`-q` too, as
/// progress), else one diagnostic line. Afterwards warns about events left in the spool.
pub fn shutdown(obs: &Observability, interactive: bool) -> anyhow::Result<Delivered> {
    let config = obs.config().clone();
    let timeout = config.pipeline.shutdown_timeout;
    let start = Instant::now();
    let (tx, rx) = channel();
    let result = std::thread::scope(|scope| {
        scope.spawn(move || {
            let _ = tx.send(obs.shutdown(timeout));
        });
        match rx.recv_timeout(NOTICE_AFTER) {
            Ok(result) => return result,
            Err(RecvTimeoutError::Disconnected) => return Ok(()),
            Err(RecvTimeoutError::Timeout) => {}
        }
        let limit = humantime::format_duration(timeout);
        let what = waiting_for(&config).join(", ");
        let notice = format!("waiting up to {limit} (pipeline.shutdown_timeout) for {what} to take the last events");
        let bar = if interactive {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            bar.set_style(ProgressStyle::with_template("{spinner} {wide_msg}").expect("valid template"));
            bar
        } else {
            tracing::info!("{notice}");
            ProgressBar::hidden()
        };
        loop {
            let left = timeout.saturating_sub(start.elapsed()).as_secs() + 1;
            // The countdown first: a narrow terminal cuts the end of the line.
            bar.set_message(format!("{left}s left · {notice}"));
            bar.tick();
            match rx.recv_timeout(Duration::from_millis(200)) {
                Ok(result) => {
                    bar.finish_and_clear();
                    return result;
                }
                Err(RecvTimeoutError::Disconnected) => {
                    bar.finish_and_clear();
                    return Ok(());
                }
                Err(RecvTimeoutError::Timeout) => {}
            }
        }
    });
    let delivered = Delivered {
        elapsed: start.elapsed(),
        spooled: spooled(obs, serphona_obs::sinks::clickhouse::SINK_NAME),
        loki_pending: spooled(obs, "loki"),
        lost: lost(obs),
    };
    if delivered.loki_pending > 0 {
        tracing::warn!(
            "{} lines kept for the next start: Loki at {} did not take them by the deadline ({}, pipeline.shutdown_timeout); they stay in the event log {} past the sink's committed position",
            delivered.loki_pending,
            config.logging.loki_endpoint.0.as_ref().map_or_else(String::new, |e| e.to_string()),
            humantime::format_duration(timeout),
            serphona_obs::sinks::event_log::event_log_dir(&config.data_dir).display(),
        );
    }
    if delivered.spooled > 0 {
        tracing::warn!(
            "{} events spooled for the next start: ClickHouse at {} did not take them by the deadline ({}, pipeline.shutdown_timeout); they are kept in the event log {} past the sink's committed position and in the spool {}",
            delivered.spooled,
            config.clickhouse.endpoint,
            humantime::format_duration(timeout),
            serphona_obs::sinks::event_log::event_log_dir(&config.data_dir).display(),
            serphona_obs::sinks::clickhouse::spool::spool_dir(&config.data_dir).display()
        );
    }
    result.map_err(|e| {
        anyhow::Error::from(e).context(format!(
            "the sinks did not finish delivering within {} (pipeline.shutdown_timeout; raise it for a slow server)",
            humantime::format_duration(timeout)
        ))
    })?;
    Ok(delivered)
}
