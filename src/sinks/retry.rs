//! What every remote sink's delivery shares about failing: backoff with jitter, the split of
//! errors into those worth retrying and those that are not (vector's `RetryLogic`), and
//! warnings that do not flood the log while a server stays down.

use std::time::{Duration, Instant};

use backon::BackoffBuilder;

/// Whether retrying can fix an error. Each remote sink implements it for its error type.
pub trait RetryLogic {
    /// The sink's error.
    type Error;

    /// True when the same request may succeed later (a connection error, a timeout, an
    /// overloaded server); false when retrying cannot fix it (bad data, a type mismatch, a
    /// refused credential).
    fn is_retriable(&self, error: &Self::Error) -> bool;
}

/// Exponential backoff with full jitter from `min` to `max`, without end (the caller decides
/// when to stop).
pub struct Backoff {
    min: Duration,
    max: Duration,
    delays: Box<dyn Iterator<Item = Duration> + Send>,
}

impl Backoff {
    /// Delays from `min`, doubling up to `max`, each with jitter.
    pub fn new(min: Duration, max: Duration) -> Backoff {
        Backoff { min, max, delays: Self::delays(min, max) }
    }

    fn delays(min: Duration, max: Duration) -> Box<dyn Iterator<Item = Duration> + Send> {
        Box::new(backon::ExponentialBuilder::default().with_min_delay(min).with_max_delay(max).with_jitter().without_max_times().build())
    }

    /// The next delay.
    pub fn next_delay(&mut self) -> Duration {
        self.delays.next().unwrap_or(self.max)
    }

    /// Starts again from `min` (after a success).
    pub fn reset(&mut self) {
        self.delays = Self::delays(self.min, self.max);
    }
}

/// A warning logged at most once per interval (the failure is counted every time elsewhere).
#[derive(Debug)]
pub struct WarnEvery {
    every: Duration,
    last: Option<Instant>,
}

impl WarnEvery {
    /// At most once per `every`.
    pub const fn new(every: Duration) -> WarnEvery {
        WarnEvery { every, last: None }
    }

    /// True when a warning may be logged now (and records that it was).
    pub fn ready(&mut self) -> bool {
        let now = Instant::now();
        if self.last.is_none_or(|t| now.duration_since(t) >= self.every) {
            self.last = Some(now);
            true
        } else {
            false
        }
    }
}

/// A streak of failures: warned about once when it starts, and once when it ends.
#[derive(Debug, Default)]
pub struct Streak {
    started: Option<(Instant, u64)>,
}

impl Streak {
    /// Counts a failure; true for the first of a streak (the one to warn about).
    pub fn fail(&mut self) -> bool {
        match &mut self.started {
            Some((_, n)) => {
                *n += 1;
                false
            }
            None => {
                self.started = Some((Instant::now(), 1));
                true
            }
        }
    }

    /// True while failing.
    pub fn is_failing(&self) -> bool {
        self.started.is_some()
    }

    /// Ends the streak: how long it lasted and how many failures it had, when there was one
    /// (the moment to log the recovery).
    pub fn recover(&mut self) -> Option<(Duration, u64)> {
        self.started.take().map(|(since, n)| (since.elapsed(), n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_within_its_bounds_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(10), Duration::from_millis(80));
        let delays: Vec<Duration> = (0..10).map(|_| b.next_delay()).collect();
        // Jitter adds up to the delay itself on top.
        assert!(delays.iter().all(|d| *d >= Duration::from_millis(10) && *d <= Duration::from_millis(160)), "{delays:?}");
        assert!(delays[6..].iter().all(|d| *d >= Duration::from_millis(80)), "{delays:?}");
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(20));
    }

    #[test]
    fn warn_every_and_streaks() {
        let mut w = WarnEvery::new(Duration::from_secs(3600));
        assert!(w.ready());
        assert!(!w.ready());
        let mut s = Streak::default();
        assert!(s.fail());
        assert!(!s.fail());
        assert!(s.is_failing());
        assert_eq!(s.recover().map(|(_, n)| n), Some(2));
        assert!(s.recover().is_none());
        assert!(s.fail());
    }
}
