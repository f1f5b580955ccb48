//! One attempt from lease to record: make the call, judge what it means
//! (`stages::attempt::judge`: success, retry with backoff or `Retry-After`, dead), end
//! the attempt in Redis under its fencing token, and hand its end to the history writer.
//! A result whose lease was lost is recorded as stale and changes nothing.

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use courier_core::{
    JobState,
    domain::LastOutcome,
    queue::{Ending, Leased, RedisQueue, Unreadable, journal_entry},
    repo::{ExecutionRecord, JobUpdate, Outcome, Started},
    stages::attempt::{Attempt, AttemptEnd, CallResult, judge},
};
use tokio::sync::OwnedSemaphorePermit;
use tracing::Instrument;

use crate::{
    completer::Completer,
    history::{Event, History},
    http::HttpCaller,
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
        let attempt = Attempt { id: job.id, token: job.token, number: job.attempt };
        match result {
            Err(AbortReason::Shutdown) => hand_back(&ctx, &job).await,
            Err(AbortReason::Cancelled) => {
                tracing::info!("call aborted: job cancelled");
                let error = "cancelled while the call was in flight".to_owned();
                // The cancellation is the API's; this fills in the aborted call as the
                // job's last outcome.
                // The API made the cancellation's callback when it cancelled.
                let last = LastOutcome { status_code: None, error: Some(error.clone()), duration_ms };
                let end = AttemptEnd::held(attempt, record(Outcome::Cancelled, false, None, Some(error), None),
                    None, JobState::Cancelled, None, last);
                ctx.history.send(Event::Record(end.record)).await;
                if let Some(update) = end.update {
                    ctx.history.send(Event::Update(update)).await;
                }
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
                let end = AttemptEnd::held(
                    attempt,
                    record(verdict.outcome, false, verdict.status_code, verdict.error.clone(), excerpt),
                    Some(&job.spec),
                    verdict.state,
                    verdict.retry_at,
                    verdict.last(duration_ms),
                );
                let applied = complete(&ctx, &job, verdict.retry_at, verdict.key_pause_until, &end).await;
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
    let record = ExecutionRecord {
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
    };
    let attempt = Attempt {
        id: job.id,
        token: job.token,
        number: job.attempt,
    };
    let last = LastOutcome {
        status_code: None,
        error: Some(error),
        duration_ms: 0,
    };
    let end = AttemptEnd::held(attempt, record, None, JobState::Dead, None, last);
    let item = [Ending {
        id: job.id,
        token: job.token,
        priority: 0,
        retry_at: None,
        key_pause_until: None,
        record: serde_json::to_string(&end).expect("an attempt's end serialises"),
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
    end: AttemptEnd,
    applied: bool,
) {
    let (id, token) = (end.record.job_id, end.record.token);
    if applied {
        ctx.history
            .send(Event::AttemptEnd(
                queue.clone(),
                journal_entry(id, token, None),
                end,
            ))
            .await;
    } else {
        let end = AttemptEnd::stale(end.record);
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
                .send(Event::AttemptEnd(queue.clone(), entry, end))
                .await;
        } else {
            ctx.history.send(Event::Record(end.record)).await;
            if let Some(update) = end.update {
                ctx.history.send(Event::Update(update)).await;
            }
        }
    }
}

/// Ends the attempt in Redis, retrying while Redis is unreachable: while it is, nobody
/// can reap the lease either, and once it is back the token decides. Gives up after
/// [`COMPLETE_PATIENCE`] (the result is then recorded as stale and the job runs again).
async fn complete(
    ctx: &Context,
    job: &Leased,
    retry_at: Option<DateTime<Utc>>,
    key_pause_until: Option<DateTime<Utc>>,
    end: &AttemptEnd,
) -> bool {
    let ending = Ending {
        id: job.id,
        token: job.token,
        priority: job.spec.priority.get(),
        retry_at,
        key_pause_until,
        record: serde_json::to_string(end).expect("an attempt's end serialises"),
    };
    let give_up = std::time::Instant::now() + COMPLETE_PATIENCE.max(ctx.lease);
    ctx.completer.end(job.queue.clone(), ending, give_up).await
}

/// Gives the job back at shutdown without using up its attempt.
async fn hand_back(ctx: &Context, job: &Leased) {
    let item = [(job.id, job.token, job.spec.priority.get())];
    match ctx.queue.requeue(&job.queue, &item).await {
        Ok(applied) if applied.first() == Some(&true) => {
            tracing::info!("handed back at shutdown");
            let attempt = Attempt {
                id: job.id,
                token: job.token,
                number: job.attempt,
            };
            ctx.history
                .send(Event::Update(JobUpdate::handed_back(attempt)))
                .await;
        }
        Ok(_) => tracing::info!("lease already lost at shutdown; nothing to hand back"),
        Err(e) => {
            tracing::warn!(error = %e, "handing back failed; the lease will expire and the job run again")
        }
    }
}
