//! What the benchmarks share.

// Not every bench uses every helper.
#![allow(dead_code)]

pub mod chdb;

use std::time::{Duration, Instant};

use serphona_obs::Observability;

/// Times `iters` calls of `call` on this thread in batches of at most `batch` (small enough to
/// fit the queues), with an untimed `flush` after each batch so the background threads write
/// them out and nothing is dropped: the caller-thread cost alone.
pub fn timed_in_batches(obs: &Observability, iters: u64, batch: u64, mut call: impl FnMut()) -> Duration {
    let mut total = Duration::ZERO;
    let mut left = iters;
    while left > 0 {
        let n = left.min(batch);
        let started = Instant::now();
        for _ in 0..n {
            call();
        }
        total += started.elapsed();
        obs.flush(Duration::from_secs(60)).unwrap();
        left -= n;
    }
    total
}

/// A `kB` field of a `/proc/<pid>/status` file (`VmHWM`, `VmRSS`), in MiB.
pub fn proc_status_mib(pid: &str, field: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"));
    kb / 1024.0
}
