//! What a job asks for: its call, timeout, attempts, backoff and priority (the spec,
//! stored once in PostgreSQL and carried as the job's payload in Redis), and a new job
//! ready to be stored.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{Backoff, Callback, FlowKey, JobId, QueueName, ScheduleName, Target};
use crate::crypto::{SealError, SecretBox};

/// 0 (lowest, the default) to 9 (highest).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "i64", into = "i16")]
pub struct Priority(u8);

impl Priority {
    pub const MAX: u8 = super::rules::PRIORITY.max as u8;

    /// Priority 0, the default.
    pub fn is_lowest(&self) -> bool {
        self.0 == 0
    }

    /// # Errors
    /// Out of range.
    pub fn new(value: i64) -> Result<Self, String> {
        u8::try_from(value)
            .ok()
            .filter(|p| *p <= Self::MAX)
            .map(Self)
            .ok_or_else(|| format!("must be between 0 and {}", Self::MAX))
    }

    pub fn get(self) -> u8 {
        self.0
    }
}

impl TryFrom<i64> for Priority {
    type Error = String;
    fn try_from(value: i64) -> Result<Self, String> {
        Self::new(value)
    }
}

impl From<Priority> for i16 {
    fn from(value: Priority) -> Self {
        value.0.into()
    }
}

/// Up to 16 string pairs for filtering.
pub type Labels = BTreeMap<String, String>;

/// Everything a worker needs to make a job's calls; stored as the job's `spec` in
/// PostgreSQL and as its payload in Redis. A field equal to SPEC 2's default is left out
/// (a queued job with defaults costs 45 bytes of payload instead of 260) and reads back
/// as that default: these constants are part of the stored format.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobSpec {
    pub target: Target,
    #[serde(
        default = "default_timeout_ms",
        skip_serializing_if = "is_default_timeout_ms"
    )]
    pub timeout_ms: u64,
    #[serde(
        default = "default_max_attempts",
        skip_serializing_if = "is_default_max_attempts"
    )]
    pub max_attempts: u32,
    #[serde(default, skip_serializing_if = "Backoff::is_default")]
    pub backoff: Backoff,
    #[serde(default, skip_serializing_if = "Priority::is_lowest")]
    pub priority: Priority,
    /// Statuses retried besides 408, 425, 429 and 5xx.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retry_on_status: Vec<u16>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub follow_redirects: bool,
    /// The schedule occurrence that made this job, told to the target in
    /// `X-Courier-Schedule` and `X-Courier-Occurrence`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub occurrence: Option<Occurrence>,
    /// The flow key whose limits the job's calls count against (SPEC 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flow_key: Option<FlowKey>,
    /// Where to POST the job when it ends (SPEC 11); never set on a callback job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback: Option<Callback>,
    /// When a job submitted to run later first fell due; left out for a job due at once
    /// (its id's time says when). Only for `courier_queue_wait_seconds`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<DateTime<Utc>>,
}

/// One occurrence of a schedule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Occurrence {
    pub schedule: ScheduleName,
    /// The occurrence's time in the schedule's calendar.
    pub at: DateTime<Utc>,
}

/// SPEC 2's default timeout.
pub const DEFAULT_TIMEOUT_MS: u64 = 90_000;
/// SPEC 2's default number of attempts (the Lua scripts get it from here too).
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;

fn default_timeout_ms() -> u64 {
    DEFAULT_TIMEOUT_MS
}

fn is_default_timeout_ms(ms: &u64) -> bool {
    *ms == DEFAULT_TIMEOUT_MS
}

fn default_max_attempts() -> u32 {
    DEFAULT_MAX_ATTEMPTS
}

fn is_default_max_attempts(n: &u32) -> bool {
    *n == DEFAULT_MAX_ATTEMPTS
}

impl JobSpec {
    /// A spec with SPEC 2's defaults for everything but the call.
    pub fn new(target: Target) -> Self {
        Self {
            target,
            timeout_ms: DEFAULT_TIMEOUT_MS,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            backoff: Backoff::default(),
            priority: Priority::default(),
            retry_on_status: Vec::new(),
            follow_redirects: false,
            occurrence: None,
            flow_key: None,
            callback: None,
            not_before: None,
        }
    }

    /// Notes `run_at` as the job's first due time when it is later than `now`.
    pub fn note_due(&mut self, run_at: DateTime<Utc>, now: DateTime<Utc>) {
        self.not_before = (run_at > now).then_some(run_at);
    }

    /// Whether an answer with `status` is worth another attempt.
    pub fn is_retryable_status(&self, status: u16) -> bool {
        matches!(status, 408 | 425 | 429 | 500..=599) || self.retry_on_status.contains(&status)
    }

    /// Whether a job of this spec ending in `state` makes a callback job.
    pub fn calls_back_on(&self, state: super::JobState) -> bool {
        self.callback.as_ref().is_some_and(|c| c.fires_on(state))
    }

    /// Seals every secret-looking header value (the call's and the callback's) for
    /// `context`, so that what is stored never holds the secret.
    pub fn seal_secrets(&mut self, secrets: &SecretBox, context: &str) {
        self.target.seal_secrets(secrets, context);
        if let Some(callback) = &mut self.callback {
            callback.seal_secrets(secrets, context);
        }
    }

    /// Seals again, for `to`, the secret header values sealed for `from` (a schedule's
    /// template becoming a job).
    ///
    /// # Errors
    /// The name of a secret header whose value does not open, and why.
    pub fn reseal(
        &mut self,
        secrets: &SecretBox,
        from: &str,
        to: &str,
    ) -> Result<(), (String, SealError)> {
        self.target.reseal(secrets, from, to)?;
        if let Some(callback) = &mut self.callback {
            callback.headers = callback.opened_headers(secrets, from)?;
            callback.seal_secrets(secrets, to);
        }
        Ok(())
    }

    /// The spec as stored in PostgreSQL and Redis.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a job spec always serialises")
    }
}

/// A validated job, ready to be stored.
#[derive(Debug, Clone, PartialEq)]
pub struct NewJob {
    pub id: JobId,
    pub queue: QueueName,
    pub spec: JobSpec,
    pub labels: Labels,
    pub run_at: DateTime<Utc>,
    /// The job whose end made this one, for a callback.
    pub callback_of: Option<JobId>,
}

impl NewJob {
    /// Seals the job's secret header values (see [`crate::crypto`]) before it is stored.
    pub fn seal_secrets(&mut self, secrets: &SecretBox) {
        let context = self.id.to_string();
        self.spec.seal_secrets(secrets, &context);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Method, TargetUrl};

    fn spec(url: &str) -> JobSpec {
        JobSpec::new(Target {
            url: TargetUrl::parse(url).unwrap(),
            method: Method::Post,
            headers: vec![],
            body: String::new(),
        })
    }

    #[test]
    fn a_spec_stores_only_what_differs_from_the_defaults() {
        let default = spec("https://example.com/a");
        let json = default.to_json();
        assert_eq!(json, r#"{"target":{"url":"https://example.com/a"}}"#);
        assert_eq!(serde_json::from_str::<JobSpec>(&json).unwrap(), default);

        let mut other = spec("https://example.com/b");
        other.target.method = Method::Put;
        other.timeout_ms = 5000;
        other.max_attempts = 7;
        other.priority = Priority::new(4).unwrap();
        let back: JobSpec = serde_json::from_str(&other.to_json()).unwrap();
        assert_eq!(back, other);
    }

    #[test]
    fn a_spec_written_in_full_still_reads() {
        let full = r#"{"target": {"url": "http://127.0.0.1:9/x", "body": "", "method": "POST", "headers": []},
            "backoff": {"jitter": true, "max_ms": 300000, "initial_ms": 1000, "multiplier": 2.0},
            "priority": 0, "timeout_ms": 90000, "max_attempts": 3, "retry_on_status": [], "follow_redirects": false}"#;
        let spec: JobSpec = serde_json::from_str(full).unwrap();
        assert_eq!(
            spec.to_json(),
            r#"{"target":{"url":"http://127.0.0.1:9/x"}}"#
        );
    }
}
