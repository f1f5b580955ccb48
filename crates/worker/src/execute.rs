//! One attempt from lease to record: make the call, decide what it means (success, retry
//! with backoff or `Retry-After`, dead), end the attempt in Redis under its fencing token,
//! and record it. A result whose lease was lost is recorded as stale and changes nothing.

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use courier_core::{
    JobState,
    domain::JobSpec,
    queue::{Completion, Ending, Leased, RedisQueue, Unreadable, journal_entry},
    repo::{AttemptEnd, ExecutionRecord, JobUpdate, Outcome, Started},
};
use tokio::sync::OwnedSemaphorePermit;
use tracing::Instrument;

use crate::{
    completer::{Completer, Finish},
    history::{Event, History},
    http::{CallResult, HttpCaller},
    inflight::{AbortReason, InFlight},
};

/// How long an attempt keeps trying to report its result to an unreachable Redis.
const COMPLETE_PATIENCE: Duration = Duration::from_secs(300);

/// What every attempt needs from its worker.
pub struct Context {
    pub queue: RedisQueue,
    pub completer: Completer,
    pub http: HttpCaller,
    pub history: History,
    pub inflight: InFlight,
    pub worker: String,
    pub lease: Duration,
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

/// Runs one leased job to the end of its attempt. Holds `permit` (one unit of the
/// worker's concurrency) until done.
pub async fn run(ctx: Arc<Context>, job: Leased, permit: OwnedSemaphorePermit) {
    let span =
        tracing::info_span!("attempt", job.id = %job.id, queue = %job.queue, attempt = job.attempt);
    async move {
        let entry = ctx.inflight.insert(&job);
        ctx.history
            .send(Event::Started(Started { id: job.id, token: job.token, attempt: job.attempt as i32 }))
            .await;
        let started_at = Utc::now();
        let clock = std::time::Instant::now();
        if job.attempt == 1 {
            let due = job.spec.not_before.unwrap_or_else(|| job.id.created_at());
            courier_core::metrics::queue_wait(job.queue.as_str(), (started_at - due).as_seconds_f64());
        }
        let result = tokio::select! {
            result = ctx.http.call(&job) => Ok(result),
            reason = entry.aborted() => Err(reason),
        };
        // The end is the start plus the duration on the monotonic clock: a wall clock
        // stepping back mid-call must not make an end that precedes its start.
        let elapsed = clock.elapsed();
        let duration_ms = elapsed.as_millis().min(i32::MAX as u128) as i32;
        let finished_at = started_at + chrono::Duration::from_std(elapsed).unwrap_or_default();
        let record = |outcome, stale, status_code: Option<u16>, error: Option<String>, excerpt: Option<String>| ExecutionRecord {
            job_id: job.id,
            attempt: job.attempt as i32,
            token: job.token,
            worker: ctx.worker.clone(),
            outcome,
            stale,
            status_code: status_code.map(|c| c as i16),
            error,
            duration_ms,
            response_excerpt: excerpt,
            started_at,
            finished_at,
        };
        match result {
            Err(AbortReason::Shutdown) => hand_back(&ctx, &job).await,
            Err(AbortReason::Cancelled) => {
                tracing::info!("call aborted: job cancelled");
                let error = "cancelled while the call was in flight".to_owned();
                // The cancellation is the API's; this fills in the aborted call as the
                // job's last outcome.
                // The API made the cancellation's callback when it cancelled.
                let update = attempt_ended((job.id, job.token, job.attempt), None, JobState::Cancelled, None,
                    (None, Some(error.clone()), duration_ms));
                ctx.history.send(Event::Record(record(Outcome::Cancelled, false, None, Some(error), None))).await;
                ctx.history.send(Event::Update(update)).await;
            }
            Err(AbortReason::LeaseLost) => {
                tracing::warn!("call aborted: lease lost");
                let error = Some("lease lost while the call was in flight; another attempt owns the job".to_owned());
                ctx.history.send(Event::Record(record(Outcome::Cancelled, true, None, error, None))).await;
            }
            Ok(result) => {
                let verdict = judge(&job.spec, job.attempt, &result, finished_at, &mut rand::rng());
                let excerpt = match result {
                    CallResult::Answered { excerpt, .. } => Some(excerpt),
                    _ => None,
                };
                let last = (verdict.status_code.map(|c| c as i16), verdict.error.clone(), duration_ms);
                let end = AttemptEnd {
                    record: record(verdict.outcome, false, verdict.status_code, verdict.error.clone(), excerpt),
                    update: Some(attempt_ended((job.id, job.token, job.attempt), Some(&job.spec), verdict.state, verdict.retry_at, last)),
                };
                let completion = verdict.retry_at.map_or(Completion::Done, Completion::RetryAt);
                let applied = complete(&ctx, &job, completion, verdict.key_pause_until, &end).await;
                // Every attempt is in job_executions; the log keeps what needs a look. A line
                // per success would be a write per job (20,000 a second at full speed).
                if verdict.outcome == Outcome::Succeeded && applied {
                    tracing::debug!(status = verdict.status_code, duration_ms, "attempt succeeded");
                } else {
                    tracing::info!(outcome = verdict.outcome.as_str(), state = %verdict.state, status = verdict.status_code,
                        duration_ms, stale = !applied, "attempt finished");
                }
                if applied {
                    let queue = job.queue.as_str();
                    courier_core::metrics::attempt(queue, verdict.outcome.as_str(), Some(elapsed.as_secs_f64()));
                    if verdict.state.is_terminal() {
                        courier_core::metrics::finished(queue, verdict.state.as_str(), 1);
                    }
                }
                record_end(&ctx, &job.queue, end, applied).await;
            }
        }
        ctx.inflight.remove(job.id, job.token);
        drop(permit);
    }
    .instrument(span)
    .await
}

/// Ends a job whose payload could not be read as dead, with the reason recorded: no
/// attempt of it could ever run.
pub async fn reject_unreadable(ctx: Arc<Context>, queue: courier_core::QueueName, job: Unreadable) {
    tracing::error!(job.id = %job.id, %queue, error = job.error, "job payload unreadable; ending it dead");
    let now = Utc::now();
    let error = format!("this worker cannot read the job's payload: {}", job.error);
    let end = AttemptEnd {
        record: ExecutionRecord {
            job_id: job.id,
            attempt: job.attempt as i32,
            token: job.token,
            worker: ctx.worker.clone(),
            outcome: Outcome::Failed,
            stale: false,
            status_code: None,
            error: Some(error.clone()),
            duration_ms: 0,
            response_excerpt: None,
            started_at: now,
            finished_at: now,
        },
        update: Some(attempt_ended(
            (job.id, job.token, job.attempt),
            None,
            JobState::Dead,
            None,
            (None, Some(error), 0),
        )),
    };
    let json = serde_json::to_string(&end).expect("an attempt's end serialises");
    let item = [Ending {
        id: job.id,
        token: job.token,
        priority: 0,
        completion: Completion::Done,
        key_pause_until: None,
        record: &json,
    }];
    let applied = matches!(
        ctx.queue.complete(&queue, &item).await.as_deref(),
        Ok([true])
    );
    record_end(&ctx, &queue, end, applied).await;
}

/// Hands an ended attempt to the history writer: with its job update when the attempt
/// still held its lease (its journal entry, written by the same script that ended the
/// attempt, is dropped once recorded); as a stale record that changes nothing when it
/// did not, kept in the journal too so that a worker killed now loses nothing.
async fn record_end(
    ctx: &Context,
    queue: &courier_core::QueueName,
    mut end: AttemptEnd,
    applied: bool,
) {
    let (id, token) = (end.record.job_id, end.record.token);
    if applied {
        ctx.history
            .send(Event::Ended(
                queue.clone(),
                journal_entry(id, token, None),
                end,
            ))
            .await;
    } else {
        end.record.stale = true;
        end.update = None;
        send_through_journal(
            ctx,
            queue,
            vec![(journal_entry(id, token, Some("stale")), end)],
        )
        .await;
    }
}

/// Keeps the `(entry, end)`s in the journal (one round trip), then hands them to the
/// history writer; with Redis unreachable, to the writer alone.
pub(crate) async fn send_through_journal(
    ctx: &Context,
    queue: &courier_core::QueueName,
    ends: Vec<(String, AttemptEnd)>,
) {
    let records: Vec<(String, String)> = ends
        .iter()
        .map(|(entry, end)| {
            (
                entry.clone(),
                serde_json::to_string(end).expect("an attempt's end serialises"),
            )
        })
        .collect();
    let kept = ctx.queue.journal_put(queue, &records).await;
    if let Err(e) = &kept {
        tracing::warn!(error = %e, "could not keep records in the journal; they are held in memory only");
    }
    for (entry, end) in ends {
        if kept.is_ok() {
            ctx.history
                .send(Event::Ended(queue.clone(), entry, end))
                .await;
        } else {
            ctx.history.send(Event::Record(end.record)).await;
            if let Some(update) = end.update {
                ctx.history.send(Event::Update(update)).await;
            }
        }
    }
}

/// Where an attempt that held its lease to the end left the job. `spec` tells whether
/// the end calls back (`None`: not known, so it may).
fn attempt_ended(
    (id, token, attempt): (courier_core::JobId, courier_core::queue::Token, u32),
    spec: Option<&JobSpec>,
    state: JobState,
    run_at: Option<DateTime<Utc>>,
    last: (Option<i16>, Option<String>, i32),
) -> JobUpdate {
    JobUpdate {
        id,
        token,
        attempts: attempt as i32,
        state,
        run_at,
        last: Some(last),
        may_call_back: state.is_terminal() && spec.is_none_or(|s| s.calls_back_on(state)),
    }
}

/// Ends the attempt in Redis, retrying while Redis is unreachable: while it is, nobody
/// can reap the lease either, and once it is back the token decides. Gives up after
/// [`COMPLETE_PATIENCE`] (the result is then recorded as stale and the job runs again).
async fn complete(
    ctx: &Context,
    job: &Leased,
    completion: Completion,
    key_pause_until: Option<DateTime<Utc>>,
    end: &AttemptEnd,
) -> bool {
    ctx.completer
        .finish(Finish {
            queue: job.queue.clone(),
            id: job.id,
            token: job.token,
            priority: job.spec.priority.get(),
            completion,
            key_pause_until,
            record: serde_json::to_string(end).expect("an attempt's end serialises"),
            give_up: std::time::Instant::now() + COMPLETE_PATIENCE.max(ctx.lease),
        })
        .await
}

/// Gives the job back at shutdown without using up its attempt.
async fn hand_back(ctx: &Context, job: &Leased) {
    let item = [(job.id, job.token, job.spec.priority.get())];
    match ctx.queue.requeue(&job.queue, &item).await {
        Ok(applied) if applied.first() == Some(&true) => {
            tracing::info!("handed back at shutdown");
            ctx.history
                .send(Event::Update(JobUpdate {
                    id: job.id,
                    token: job.token,
                    attempts: job.attempt as i32 - 1,
                    state: JobState::Queued,
                    run_at: Some(Utc::now()),
                    last: None,
                    may_call_back: false,
                }))
                .await;
        }
        Ok(_) => tracing::info!("lease already lost at shutdown; nothing to hand back"),
        Err(e) => {
            tracing::warn!(error = %e, "handing back failed; the lease will expire and the job run again")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use courier_core::domain::{Backoff, Method, Target, TargetUrl};

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
        s.flow_key = Some(courier_core::domain::FlowKey::parse("tenant-1").unwrap());
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
