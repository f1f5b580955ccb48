//! An attempt: the call's result judged (SPEC 4), and the attempt's end, the one value
//! that carries it from the worker to Redis (ended under the attempt's fencing token,
//! and kept in the journal) and to PostgreSQL (its execution record and the job's new
//! state, written by [`super::record`]).

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{
    domain::{JobId, JobSpec, JobState, LastOutcome, Token},
    repo::{ExecutionRecord, JobUpdate, Outcome},
};

/// What came back from the target.
#[derive(Debug)]
pub enum CallResult {
    Answered {
        status: u16,
        /// The target's `Retry-After`, if it sent one we could read.
        retry_after: Option<Duration>,
        excerpt: String,
    },
    TimedOut,
    /// Connecting, sending or reading failed.
    Failed(String),
    /// SSRF protection refused the target (or a redirect hop): no request left.
    Refused(String),
    /// The job cannot be sent as stored (a header that is not valid HTTP, one that does
    /// not decrypt): no request left, and another attempt would fail the same way.
    Invalid(String),
}

/// What an attempt's result means for the job.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub outcome: Outcome,
    pub state: JobState,
    /// When the next attempt may start, for a retry.
    pub retry_at: Option<DateTime<Utc>>,
    /// Until when the job's flow key waits: a 429 or 503 with `Retry-After` on a keyed
    /// job holds back every call of the key, not only this job's.
    pub key_pause_until: Option<DateTime<Utc>>,
    pub status_code: Option<u16>,
    pub error: Option<String>,
}

impl Verdict {
    /// What the job shows as its last outcome after this attempt, which took `duration_ms`.
    pub fn last(&self, duration_ms: i32) -> LastOutcome {
        LastOutcome {
            status_code: self.status_code.map(|c| c as i16),
            error: self.error.clone(),
            duration_ms,
        }
    }
}

/// Judges an attempt's result (SPEC 4): 2xx succeeds; 408, 425, 429, 5xx, listed
/// statuses, connection errors and timeouts are retried while attempts remain (at the
/// backoff's time, or the target's `Retry-After` capped at the backoff's maximum); any
/// other answer, 3xx included, ends the job dead, and so does a call SSRF protection
/// refused.
pub fn judge(
    spec: &JobSpec,
    attempt: u32,
    result: &CallResult,
    now: DateTime<Utc>,
    rng: &mut impl rand::Rng,
) -> Verdict {
    let (outcome, status_code, error, retryable, retry_after) = match result {
        CallResult::Answered { status, .. } if (200..300).contains(status) => {
            (Outcome::Succeeded, Some(*status), None, false, None)
        }
        CallResult::Answered {
            status,
            retry_after,
            ..
        } => {
            let error = if (300..400).contains(status) && !spec.follow_redirects {
                format!("HTTP {status} (redirects are not followed for this job)")
            } else {
                format!("HTTP {status}")
            };
            (
                Outcome::Failed,
                Some(*status),
                Some(error),
                spec.is_retryable_status(*status),
                *retry_after,
            )
        }
        CallResult::TimedOut => (
            Outcome::Timeout,
            None,
            Some(format!("no complete answer within {} ms", spec.timeout_ms)),
            true,
            None,
        ),
        CallResult::Failed(e) => (Outcome::ConnectionError, None, Some(e.clone()), true, None),
        // Another attempt would be refused, or fail to send, the same way.
        CallResult::Refused(e) | CallResult::Invalid(e) => {
            (Outcome::Failed, None, Some(e.clone()), false, None)
        }
    };
    // A target's Retry-After is capped like the job's own wait: a target cannot park a
    // key for longer than the backoff's maximum.
    let capped = retry_after.map(|ra| ra.min(spec.backoff.max()));
    let key_pause_until = match (status_code, capped) {
        (Some(429 | 503), Some(wait)) if spec.flow_key.is_some() => {
            Some(now + chrono::Duration::from_std(wait).unwrap_or_default())
        }
        _ => None,
    };
    let (state, retry_at) = if outcome == Outcome::Succeeded {
        (JobState::Succeeded, None)
    } else if retryable && attempt < spec.max_attempts {
        let wait = capped.unwrap_or_else(|| spec.backoff.delay(attempt, rng));
        let at = now + chrono::Duration::from_std(wait).unwrap_or_default();
        (
            if wait.is_zero() {
                JobState::Queued
            } else {
                JobState::Scheduled
            },
            Some(at),
        )
    } else {
        (JobState::Dead, None)
    };
    Verdict {
        outcome,
        state,
        retry_at,
        key_pause_until,
        status_code,
        error,
    }
}

/// How an attempt ended: its execution record and, when it held its lease to the end,
/// the job's new state. Written to PostgreSQL together, and kept in Redis's journal (as
/// JSON) until PostgreSQL has them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AttemptEnd {
    pub record: ExecutionRecord,
    /// `None` for a record that changes nothing (a stale result).
    pub update: Option<JobUpdate>,
}

/// The attempt an end belongs to.
#[derive(Debug, Clone, Copy)]
pub struct Attempt {
    pub id: JobId,
    pub token: Token,
    /// Its number within the job's round, from 1.
    pub number: u32,
}

impl AttemptEnd {
    /// The end of an attempt that held its lease to the end: `record`, and the job in
    /// `state` (with `run_at`, the next attempt's time, for a retry) showing `last`.
    /// `spec` tells whether the end calls back (`None`: not known, so it may).
    pub fn held(
        attempt: Attempt,
        record: ExecutionRecord,
        spec: Option<&JobSpec>,
        state: JobState,
        run_at: Option<DateTime<Utc>>,
        last: LastOutcome,
    ) -> Self {
        Self {
            record,
            update: Some(JobUpdate {
                id: attempt.id,
                token: attempt.token,
                attempts: attempt.number as i32,
                state,
                run_at,
                last: Some(last),
                may_call_back: state.is_terminal() && spec.is_none_or(|s| s.calls_back_on(state)),
            }),
        }
    }

    /// The end of an attempt whose lease was lost: its record, marked stale, changes
    /// nothing.
    pub fn stale(mut record: ExecutionRecord) -> Self {
        record.stale = true;
        Self {
            record,
            update: None,
        }
    }
}

impl JobUpdate {
    /// A job given back at shutdown: no record, the attempt not used up, the job queued
    /// again now.
    pub fn handed_back(attempt: Attempt) -> Self {
        JobUpdate {
            id: attempt.id,
            token: attempt.token,
            attempts: attempt.number as i32 - 1,
            state: JobState::Queued,
            run_at: Some(Utc::now()),
            last: None,
            may_call_back: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Backoff, FlowKey, Method, Target, TargetUrl};

    fn spec(max_attempts: u32, retry_on_status: Vec<u16>) -> JobSpec {
        let mut spec = JobSpec::new(Target {
            url: TargetUrl::parse("http://example.com").unwrap(),
            method: Method::Post,
            headers: vec![],
            body: String::new(),
        });
        spec.max_attempts = max_attempts;
        spec.retry_on_status = retry_on_status;
        spec.backoff = Backoff {
            initial_ms: 1000,
            max_ms: 10_000,
            multiplier: 2.0,
            jitter: false,
        };
        spec
    }

    fn answered(status: u16, retry_after: Option<u64>) -> CallResult {
        CallResult::Answered {
            status,
            retry_after: retry_after.map(Duration::from_secs),
            excerpt: String::new(),
        }
    }

    #[test]
    fn statuses_are_judged_per_the_spec() {
        let now = Utc::now();
        let s = spec(3, vec![409]);
        let mut rng = rand::rng();
        let state = |r: &CallResult, attempt| judge(&s, attempt, r, now, &mut rand::rng()).state;
        assert_eq!(state(&answered(204, None), 1), JobState::Succeeded);
        for retried in [408, 425, 429, 500, 503, 409] {
            assert_eq!(
                state(&answered(retried, None), 1),
                JobState::Scheduled,
                "{retried}"
            );
        }
        for dead in [400, 404, 301, 302] {
            assert_eq!(state(&answered(dead, None), 1), JobState::Dead, "{dead}");
        }
        assert_eq!(state(&answered(500, None), 3), JobState::Dead);
        assert_eq!(state(&CallResult::TimedOut, 1), JobState::Scheduled);
        assert_eq!(
            state(&CallResult::Failed("reset".into()), 1),
            JobState::Scheduled
        );
        assert_eq!(
            state(&CallResult::Refused("refused by SSRF protection".into()), 1),
            JobState::Dead
        );
        assert_eq!(
            judge(&s, 2, &answered(500, None), now, &mut rng).retry_at,
            Some(now + chrono::Duration::seconds(2))
        );
    }

    #[test]
    fn retry_after_is_honoured_and_capped() {
        let now = Utc::now();
        let s = spec(3, vec![]);
        let v = judge(&s, 1, &answered(429, Some(2)), now, &mut rand::rng());
        assert_eq!(v.retry_at, Some(now + chrono::Duration::seconds(2)));
        let v = judge(&s, 1, &answered(503, Some(3600)), now, &mut rand::rng());
        assert_eq!(v.retry_at, Some(now + chrono::Duration::seconds(10)));
        assert_eq!(v.key_pause_until, None, "a job without a key pauses no key");
    }

    #[test]
    fn retry_after_on_429_or_503_pauses_a_keyed_jobs_key() {
        let now = Utc::now();
        let mut s = spec(1, vec![]);
        s.flow_key = Some(FlowKey::parse("tenant-1").unwrap());
        let pause =
            |status, ra| judge(&s, 1, &answered(status, ra), now, &mut rand::rng()).key_pause_until;
        // Even on its last attempt (the job ends dead, the key still waits).
        assert_eq!(
            pause(429, Some(2)),
            Some(now + chrono::Duration::seconds(2))
        );
        assert_eq!(
            pause(503, Some(3600)),
            Some(now + chrono::Duration::seconds(10))
        );
        assert_eq!(pause(500, Some(2)), None);
        assert_eq!(pause(429, None), None);
    }
}
