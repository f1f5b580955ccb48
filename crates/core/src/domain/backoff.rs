//! Exponential backoff between attempts.

use std::time::Duration;

use rand::Rng;
use serde::{Deserialize, Serialize};

/// Attempt `n` (1-based, the attempt that just failed) waits
/// `min(max_ms, initial_ms * multiplier^(n-1))`, or a uniformly random part of it
/// ("full jitter") when `jitter` is on.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Backoff {
    pub initial_ms: u64,
    pub max_ms: u64,
    pub multiplier: f64,
    pub jitter: bool,
}

impl Backoff {
    /// Whether this is SPEC 2's default backoff.
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial_ms: 1000,
            max_ms: 300_000,
            multiplier: 2.0,
            jitter: true,
        }
    }
}

impl Backoff {
    /// The longest wait after failed attempt `attempt`, before jitter.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let exponent = attempt.saturating_sub(1).min(1024) as i32;
        let ms = (self.initial_ms as f64) * self.multiplier.powi(exponent);
        let ms = if ms.is_finite() {
            ms.min(self.max_ms as f64)
        } else {
            self.max_ms as f64
        };
        Duration::from_millis(ms as u64)
    }

    /// The wait after failed attempt `attempt`, drawing jitter from `rng`.
    pub fn delay(&self, attempt: u32, rng: &mut impl Rng) -> Duration {
        let ceiling = self.ceiling(attempt);
        if self.jitter && !ceiling.is_zero() {
            Duration::from_millis(rng.random_range(0..=ceiling.as_millis() as u64))
        } else {
            ceiling
        }
    }

    /// The maximum wait, which also caps a target's `Retry-After`.
    pub fn max(&self) -> Duration {
        Duration::from_millis(self.max_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_exponentially_up_to_the_cap() {
        let b = Backoff {
            initial_ms: 100,
            max_ms: 1000,
            multiplier: 3.0,
            jitter: false,
        };
        let waits: Vec<u64> = (1..=5).map(|n| b.ceiling(n).as_millis() as u64).collect();
        assert_eq!(waits, [100, 300, 900, 1000, 1000]);
    }

    #[test]
    fn jitter_stays_within_the_ceiling() {
        let b = Backoff {
            initial_ms: 1000,
            max_ms: 10_000,
            multiplier: 2.0,
            jitter: true,
        };
        let mut rng = rand::rng();
        for attempt in 1..10 {
            assert!(b.delay(attempt, &mut rng) <= b.ceiling(attempt));
        }
    }

    #[test]
    fn huge_exponents_saturate_instead_of_overflowing() {
        let b = Backoff {
            initial_ms: 1000,
            max_ms: 5000,
            multiplier: 10.0,
            jitter: false,
        };
        assert_eq!(b.ceiling(100), Duration::from_millis(5000));
    }
}
