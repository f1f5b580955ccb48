//! Getting committed jobs into Redis at once after their commit (the intake, retries).
//!
//! Those that missed it (Redis down, the process killed between commit and dispatch)
//! stay in the dispatch outbox, whose pass is [`crate::maintenance::Recovery::dispatch_outbox`]:
//! it sends a job only under the rule that decides a job Redis lacks was really lost,
//! since a job whose dispatch here succeeded but was not marked may already have run.

use sqlx::PgPool;

use super::{callback, mirror::FlowMirror};
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

    fn flow(&self) -> FlowMirror {
        FlowMirror::new(self.db.clone(), self.queue.clone())
    }
}
