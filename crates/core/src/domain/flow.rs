//! Flow control (SPEC 10): a queue's pause and limits, and flow keys, which group a
//! queue's jobs (by tenant, or by the target's host) under limits of their own.

use serde::{Deserialize, Serialize};

#[cfg(test)]
use super::FlowKey;

/// Calls started per second, as a token bucket: `burst` calls may start at once after a
/// quiet spell, then one every `1 / per_second` seconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Rate {
    pub per_second: f64,
    pub burst: u32,
}

impl Rate {
    /// The fastest rate a limit may name.
    pub const MAX_PER_SECOND: f64 = super::rules::MAX_PER_SECOND;

    /// A rate with `burst` defaulting to the calls of one second (at least 1).
    ///
    /// # Errors
    /// A rate that is not a positive finite number up to [`Self::MAX_PER_SECOND`], or a
    /// burst outside [`super::rules::BURST`]; the message names which field.
    pub fn new(per_second: f64, burst: Option<i64>) -> Result<Self, (&'static str, String)> {
        if !(per_second.is_finite() && per_second > 0.0 && per_second <= Self::MAX_PER_SECOND) {
            return Err((
                "per_second",
                format!(
                    "must be more than 0 and at most {}",
                    Self::MAX_PER_SECOND as u64
                ),
            ));
        }
        let burst = match burst {
            None => per_second.ceil().max(1.0) as u32,
            Some(b) => super::rules::BURST
                .check(b)
                .map_err(|message| ("burst", message))? as u32,
        };
        Ok(Self { per_second, burst })
    }
}

/// The most calls in flight at once.
pub const MAX_CONCURRENCY: i64 = super::rules::CONCURRENCY.max;

/// The limits of a queue or of a flow key; `None` is no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Limits {
    pub rate: Option<Rate>,
    pub max_concurrency: Option<u32>,
}

impl Limits {
    /// How the fetch script reads a flow key's limits: "rate,burst,conc", each part
    /// empty when there is no such limit.
    pub fn to_redis(&self) -> String {
        let (rate, burst) = self.rate.map_or((String::new(), String::new()), |r| {
            (r.per_second.to_string(), r.burst.to_string())
        });
        let conc = self
            .max_concurrency
            .map_or(String::new(), |c| c.to_string());
        format!("{rate},{burst},{conc}")
    }
}

/// A queue's flow-control settings.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct QueueFlow {
    /// A paused queue starts no call; calls in flight finish.
    pub paused: bool,
    pub limits: Limits,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flow_keys_take_names_hosts_and_tenants() {
        for ok in [
            "tenant-42",
            "api.example.com:443",
            "a_b.c",
            &"x".repeat(128),
        ] {
            assert!(FlowKey::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", "has space", "slash/no", "é", &"x".repeat(129), "a{b}"] {
            assert!(FlowKey::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_rate_needs_a_positive_finite_speed_and_a_burst_of_one_or_more() {
        assert_eq!(Rate::new(50.0, None).unwrap().burst, 50);
        assert_eq!(Rate::new(0.5, None).unwrap().burst, 1);
        assert_eq!(Rate::new(2.5, Some(7)).unwrap().burst, 7);
        assert_eq!(Rate::new(0.0, None).unwrap_err().0, "per_second");
        assert_eq!(Rate::new(-1.0, None).unwrap_err().0, "per_second");
        assert_eq!(Rate::new(f64::NAN, None).unwrap_err().0, "per_second");
        assert_eq!(Rate::new(1.0, Some(0)).unwrap_err().0, "burst");
    }

    #[test]
    fn limits_read_as_the_fetch_script_expects() {
        let none = Limits::default();
        assert_eq!(none.to_redis(), ",,");
        let both = Limits {
            rate: Some(Rate::new(2.5, Some(3)).unwrap()),
            max_concurrency: Some(5),
        };
        assert_eq!(both.to_redis(), "2.5,3,5");
    }
}
