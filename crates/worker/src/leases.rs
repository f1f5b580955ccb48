//! Keeping leases honest: the heartbeat renews the leases of calls in flight (and aborts
//! calls whose lease is gone), the reaper takes back jobs of workers that died, and the
//! cancel listener aborts running calls that a client cancelled.

use std::{sync::Arc, time::Duration};

use chrono::Utc;
use courier_core::{
    JobId, JobState, QueueName,
    domain::LastOutcome,
    queue::{Token, journal_entry},
    repo::{ExecutionRecord, Outcome},
    stages::attempt::{Attempt, AttemptEnd},
};
use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::{
    execute::{Context, send_through_journal},
    inflight::AbortReason,
};

/// What a worker writes as a lease's length, for the configured `worker.lease_ms`. The
/// setting is SPEC 5's promise: a dead worker's jobs run again within it. So the lease
/// written to Redis is shorter by the reaper's tick and a fetch (1.5 s; a quarter for
/// leases under 6 s), and the heartbeat renews it every third of that: 13.5 s renewed
/// every 4.5 s for the default 15 s, which still rides out a heartbeat 9 s late.
pub fn redis_lease(configured: Duration) -> Duration {
    const TO_RUN_AGAIN: Duration = Duration::from_millis(1500);
    configured.saturating_sub(TO_RUN_AGAIN.min(configured / 4))
}

/// Renews every lease a third of the way through it, until `stop`.
pub async fn heartbeat(ctx: Arc<Context>, stop: CancellationToken) {
    let every = ctx.lease / 3;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
        // Every queue at once: one whose Redis is slow to answer (a Cluster master
        // failing over) must not hold back the others' renewals.
        let beats = ctx.inflight.leases().into_iter().map(|(queue, leases)| {
            let ctx = &ctx;
            async move {
                let beat = ctx.queue.heartbeat(&queue, ctx.lease, &leases).await;
                (queue, beat)
            }
        });
        for (queue, beat) in futures_util::future::join_all(beats).await {
            match beat {
                Ok(lost) => {
                    for (id, token) in lost {
                        if let Some(entry) = ctx.inflight.get(id, token) {
                            entry.abort(AbortReason::LeaseLost);
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, %queue, "heartbeat failed; retrying next beat")
                }
            }
        }
    }
}

/// Takes back expired leases of `queues()` every `every`, recording each lost attempt.
pub async fn reaper(
    ctx: Arc<Context>,
    queues: impl Fn() -> Vec<QueueName>,
    every: Duration,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
        for queue in queues() {
            // A full pass means more may be waiting: take them now, not a tick later.
            let mut full = true;
            while full {
                full = reap_once(&ctx, &queue).await;
            }
        }
    }
}

/// Most expired leases taken back in one call.
const REAP_BATCH: usize = 500;

/// One reaping call on `queue`, recording each lost attempt; whether it took back a
/// full batch.
async fn reap_once(ctx: &Context, queue: &QueueName) -> bool {
    let reaped = match ctx.queue.reap(queue, REAP_BATCH).await {
        Ok(reaped) => reaped,
        Err(e) => {
            tracing::warn!(error = %e, %queue, "reaping failed");
            return false;
        }
    };
    let full = reaped.len() >= REAP_BATCH;
    let mut ends = Vec::with_capacity(reaped.len());
    for job in reaped {
        tracing::warn!(job.id = %job.id, %queue, attempts = job.attempts, dead = job.dead,
            "lease expired; the job was taken back");
        courier_core::metrics::attempt(queue.as_str(), "lease_expired", None);
        if job.dead {
            courier_core::metrics::finished(queue.as_str(), "dead", 1);
        }
        ends.push(lost_attempt(ctx, job.id, job.token, job.attempts, job.dead));
    }
    // Through the journal: the reaping worker may be killed too before its history lands.
    send_through_journal(ctx, queue, ends).await;
    full
}

/// The record of the attempt a dead worker lost, and the job's state after it.
fn lost_attempt(
    ctx: &Context,
    id: JobId,
    token: Token,
    attempts: u32,
    dead: bool,
) -> (String, AttemptEnd) {
    let now = Utc::now();
    let record = ExecutionRecord {
        job_id: id,
        attempt: attempts.max(1) as i32,
        token,
        worker: ctx.worker.clone(),
        outcome: Outcome::LeaseExpired,
        stale: false,
        status_code: None,
        error: Some("the worker running this attempt stopped renewing its lease".into()),
        duration_ms: 0,
        response_excerpt: None,
        started_at: now,
        finished_at: now,
    };
    let attempt = Attempt {
        id,
        token,
        number: attempts,
    };
    let (state, run_at) = if dead {
        (JobState::Dead, None)
    } else {
        (JobState::Queued, Some(now))
    };
    let last = LastOutcome {
        status_code: None,
        error: Some("lease expired".into()),
        duration_ms: 0,
    };
    // The reaper does not read the job's spec (`None`): a job it ends may call back.
    let end = AttemptEnd::held(attempt, record, None, state, run_at, last);
    (journal_entry(id, token, Some("reaped")), end)
}

/// Aborts running calls announced on the cancel channel, reconnecting with capped
/// backoff while Redis is away. The heartbeat catches any announcement missed meanwhile.
pub async fn cancel_listener(ctx: Arc<Context>, stop: CancellationToken) {
    let mut wait = Duration::from_millis(100);
    loop {
        match ctx.queue.subscribe_cancellations().await {
            Ok(pubsub) => {
                wait = Duration::from_millis(100);
                let mut messages = pubsub.into_on_message();
                loop {
                    tokio::select! {
                        () = stop.cancelled() => return,
                        message = messages.next() => match message {
                            Some(message) => {
                                let Ok(raw) = message.get_payload::<String>() else { continue };
                                if let Ok(id) = JobId::parse(&raw) {
                                    ctx.inflight.abort_job(id, AbortReason::Cancelled);
                                }
                            }
                            None => break,
                        }
                    }
                }
                tracing::warn!("cancel subscription closed; reconnecting");
            }
            Err(e) => tracing::warn!(error = %e, "cannot subscribe to cancellations; retrying"),
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
        wait = (wait * 2).min(Duration::from_secs(5));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lease_in_redis_leaves_time_to_run_the_job_again_within_the_setting() {
        let ms = |ms| Duration::from_millis(ms);
        assert_eq!(redis_lease(ms(15_000)), ms(13_500));
        assert_eq!(redis_lease(ms(60_000)), ms(58_500));
        // Short leases (tests) give up a quarter rather than 1.5 s.
        assert_eq!(redis_lease(ms(4_000)), ms(3_000));
        assert_eq!(redis_lease(ms(1_000)), ms(750));
    }
}
