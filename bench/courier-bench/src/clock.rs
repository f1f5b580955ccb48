//! Wall-clock time as the target and the load generator share it.

use std::time::{SystemTime, UNIX_EPOCH};

/// Microseconds since the unix epoch.
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_micros() as u64
}
