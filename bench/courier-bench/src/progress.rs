//! Progress lines for long scenarios, on stderr so the report on stdout stays clean.

use std::time::{Duration, Instant};

/// Prints `label: done/total (rate/s)` every second until the task is aborted.
pub fn every_second(
    label: String,
    total: u64,
    done: impl Fn() -> u64 + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let started = Instant::now();
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let n = done();
            let rate = n as f64 / started.elapsed().as_secs_f64();
            eprintln!("    {label}: {n}/{total} ({rate:.0}/s)");
        }
    })
}
