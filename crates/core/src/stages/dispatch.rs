//! Getting committed jobs into Redis: at once after their commit (the intake, retries),
//! and, for those that missed it, from the dispatch outbox.

use std::time::Duration;

use chrono::Utc;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use super::{StageError as MaintenanceError, callback, mirror::FlowMirror, repeat};
use crate::{
    JobId,
    domain::Job,
    queue::{Dispatch, RedisQueue},
    repo,
};

/// What dispatching `job` needs: its spec, due time and attempts made.
pub fn of(job: &Job) -> Dispatch {
    Dispatch::new(
        job.id,
        job.queue.clone(),
        &job.spec,
        job.run_at,
        job.attempts,
    )
}

/// Most outbox entries sent in one pass.
const BATCH: i64 = 500;

/// Jobs younger than this are left to the request that created them (which takes them
/// out of the outbox within milliseconds once they are in Redis).
const DISPATCH_GRACE: Duration = Duration::from_secs(5);

/// Sends jobs to Redis and keeps the dispatch outbox in step.
#[derive(Clone)]
pub struct Dispatcher {
    db: PgPool,
    queue: RedisQueue,
}

impl Dispatcher {
    pub fn new(db: PgPool, queue: RedisQueue) -> Self {
        Self { db, queue }
    }

    /// Sends jobs to Redis and marks them dispatched. Failure is logged, not returned: the
    /// jobs are safe in PostgreSQL and the outbox pass will send them.
    pub async fn dispatch_now(&self, jobs: &[Dispatch]) {
        if self.enqueue_now(jobs).await {
            let ids: Vec<JobId> = jobs.iter().map(|j| j.id).collect();
            if let Err(e) = repo::mark_dispatched(&self.db, &ids).await {
                tracing::warn!(error = %e, "marking jobs dispatched failed; they may be dispatched again");
            }
        }
    }

    /// Sends jobs to Redis; `false` (logged) when Redis could not take them.
    pub async fn enqueue_now<D: std::borrow::Borrow<Dispatch>>(&self, jobs: &[D]) -> bool {
        if jobs.is_empty() {
            return false;
        }
        let queues = jobs.iter().map(|j| &j.borrow().queue);
        if let Err(e) = self.flow().ensure(queues).await {
            tracing::warn!(error = %e, jobs = jobs.len(), "cannot mirror flow control yet; the dispatcher will retry");
            return false;
        }
        match self.queue.enqueue(jobs).await {
            Ok(_) => true,
            Err(e) => {
                tracing::warn!(error = %e, jobs = jobs.len(), "dispatch to redis failed; the dispatcher will retry");
                false
            }
        }
    }

    /// Sends callback jobs made in a committed transaction to Redis and clears their
    /// outbox entries; those it cannot send stay for the outbox pass.
    pub async fn dispatch_callbacks(&self, made: Vec<callback::Made>) {
        for made in made {
            let Some(outbox) = made.outbox else { continue };
            if self.enqueue_now(&made.jobs).await {
                self.clear_outbox(&[outbox]).await;
            }
        }
    }

    /// Records that committed batches are in Redis, so the outbox pass leaves them alone.
    pub async fn clear_outbox(&self, entries: &[repo::OutboxId]) {
        if let Err(e) = repo::clear_outbox(&self.db, entries).await {
            tracing::warn!(error = %e, "clearing the dispatch outbox failed; its jobs may be dispatched again");
        }
    }

    /// One outbox pass: locks a batch of undispatched jobs, sends them, marks them.
    /// Returns how many were sent.
    ///
    /// # Errors
    /// PostgreSQL or Redis unreachable.
    pub async fn dispatch_pending(&self) -> Result<usize, MaintenanceError> {
        let before =
            Utc::now() - chrono::Duration::from_std(DISPATCH_GRACE).expect("a small duration");
        repo::spread_stale_batches(&self.db, before).await?;
        let mut tx = self.db.begin().await?;
        let rows = repo::lock_undispatched(&mut *tx, before, BATCH).await?;
        if rows.is_empty() {
            drop(tx);
            repo::drop_stale_dispatches(&self.db, before).await?;
            return Ok(0);
        }
        let jobs: Vec<Dispatch> = rows.iter().map(of).collect();
        self.flow().ensure(jobs.iter().map(|j| &j.queue)).await?;
        self.queue.enqueue(&jobs).await?;
        let ids: Vec<_> = rows.iter().map(|r| r.id).collect();
        repo::mark_dispatched_in(&mut *tx, &ids).await?;
        tx.commit().await?;
        tracing::info!(jobs = ids.len(), "dispatched jobs that had missed redis");
        Ok(ids.len())
    }

    fn flow(&self) -> FlowMirror {
        FlowMirror::new(self.db.clone(), self.queue.clone())
    }

    /// Runs the outbox pass every `interval` until `stop`.
    pub async fn run(self, interval: Duration, stop: CancellationToken) {
        repeat(
            &stop,
            interval,
            || async { Ok(self.dispatch_pending().await? as i64 == BATCH) },
            "dispatcher pass",
        )
        .await;
    }
}
