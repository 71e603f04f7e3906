//! The open incidents for the header: every applied event is folded into the anomaly
//! detection's buckets ([`crate::detect`]); on a tick, at most every
//! [`Incidents::EVERY`], the whole buckets are tested and the incidents still going on kept.

use std::time::{Duration, Instant};

use time::OffsetDateTime;

use crate::detect::{self, Incident, Params, Range, SeriesBuilder};
use crate::types::Event;

/// The detection state of the live view.
pub struct Incidents {
    params: Params,
    builder: SeriesBuilder,
    open: Vec<Incident>,
    last_run: Option<Instant>,
    /// The newest event time folded (the data's now).
    newest: Option<OffsetDateTime>,
}

impl std::fmt::Debug for Incidents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Incidents").field("open", &self.open).finish_non_exhaustive()
    }
}

impl Default for Incidents {
    fn default() -> Incidents {
        let params = Params::default();
        let width = params.bucket.as_secs() as i64;
        Incidents { builder: SeriesBuilder::new(width, Range::default()), params, open: Vec::new(), last_run: None, newest: None }
    }
}

impl Incidents {
    /// How often detection runs.
    pub const EVERY: Duration = Duration::from_secs(15);
    /// How much data is kept: the longest baseline (the same window 7 days back) and a day.
    const KEEP: time::Duration = time::Duration::days(8);

    /// Folds one event.
    pub fn apply(&mut self, e: &Event) {
        self.builder.add(e);
        if self.newest.is_none_or(|n| e.timestamp > n) {
            self.newest = Some(e.timestamp);
        }
    }

    /// Runs detection when [`EVERY`](Self::EVERY) has passed since the last run: the whole
    /// buckets before the data's newest event are tested, and the incidents that reach the
    /// last tested window are kept as open.
    pub fn tick(&mut self, now: Instant) {
        if self.last_run.is_some_and(|t| now.duration_since(t) < Self::EVERY) {
            return;
        }
        self.last_run = Some(now);
        let Some(newest) = self.newest else { return };
        self.builder.prune_before(newest - Self::KEEP);
        let series = self.builder.snapshot(newest);
        let width = self.params.bucket.as_secs() as i64;
        let tested_to = OffsetDateTime::from_unix_timestamp(detect::series::bucket_of(newest, width)).unwrap_or(newest);
        // Open: its last signal reaches the newest whole window.
        let window = time::Duration::seconds(width * self.params.window_buckets as i64);
        self.open = detect::detect(&series, &self.params).into_iter().filter(|i| i.end + window > tested_to).collect();
    }

    /// The incidents going on, earliest first.
    pub fn open(&self) -> &[Incident] {
        &self.open
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tui::testdata::{Conv, T0, llm_slowdown as calls};
    use crate::types::{Channel, Resolution, TurnLatency, TurnMarks};

    #[test]
    fn an_llm_slowdown_going_on_is_open_and_one_that_ended_is_not() {
        let mut inc = Incidents::default();
        for e in calls(7200) {
            inc.apply(&e);
        }
        let now = Instant::now();
        inc.tick(now);
        let open = inc.open();
        assert_eq!(open.len(), 1, "{open:#?}");
        assert_eq!((open[0].tenant_id.as_str(), open[0].suspected_cause.as_str()), ("acme", "LLM latency"));
        assert!(open[0].start >= T0 + time::Duration::minutes(80), "{:?}", open[0].start);
        // Within EVERY, nothing is recomputed.
        let mut quiet = Conv::new(99_999, "acme", "bot");
        let later = 7200.0 + 3600.0;
        inc.apply(&quiet.start(later, Channel::Voice));
        inc.tick(now + Duration::from_secs(1));
        assert_eq!(inc.open().len(), 1);
        // An hour of normal calls later, the incident has ended: no longer open.
        let mut inc = Incidents::default();
        let mut events = calls(7200);
        for n in 360..540u64 {
            let t = (n * 20) as f64;
            let mut c = Conv::new(n, "acme", "bot");
            events.push(c.start(t, Channel::Voice));
            let latency = TurnLatency { llm_ttft_ms: Some(600.0 + (n % 10) as f64 * 24.0 - 120.0), ..TurnLatency::default() };
            events.push(c.agent_voice(t + 2.0, "ok", latency, None, TurnMarks::default()));
            events.push(c.end(t + 10.0, Resolution::Resolved, None, Channel::Voice));
        }
        for e in &events {
            inc.apply(e);
        }
        inc.tick(now);
        assert!(inc.open().is_empty(), "{:#?}", inc.open());
    }
}
