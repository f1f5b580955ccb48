//! The last net under dispatch: a job that PostgreSQL holds as waiting for a worker
//! (queued, or scheduled and due) and that Redis lacks is dispatched again within
//! seconds, whatever the cause.
//!
//! Reconciliation puts back what a loss of Redis data took once the marker shows the
//! loss; this net catches what no marker shows (a key deleted by hand, an eviction under
//! a wrong `maxmemory-policy`, a fault nobody foresaw). Each pass, under a short lock so
//! that one process at a time makes it, and every [`MissingCheck::every`]:
//!
//! - the head of every queue: its [`HEAD`] oldest queued and oldest due scheduled jobs,
//!   those that should start next. A lost job comes up here as soon as the jobs ahead
//!   of it have started, so in a FIFO queue it is back before its absence delays it.
//! - the next [`WALK`] of a walk over every waiting job, queue by queue in due order,
//!   whose place is kept in Redis (the processes take turns), so that a lost job
//!   behind a backlog held back by priorities or flow limits is found too, within
//!   (waiting jobs ÷ [`WALK`]) passes.
//!
//! Both read the live-jobs index (`queue, state, run_at`), so a pass costs the same
//! with 5 million finished jobs in PostgreSQL as with none. Jobs due or changed in the
//! last [`SETTLED`] are left alone: they may still be on their way to Redis. The jobs
//! found missing go to [`Recovery::redispatch_lost`], which looks again after the
//! settle time (a job can end in Redis before PostgreSQL hears of it).

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use super::{MaintenanceError, Recovery};
use crate::{
    JobId, QueueName,
    domain::JobState,
    queue::{Lock, Marker, RedisQueue},
    repo::{self, Waiting},
};

/// The oldest jobs of each queue and state looked at in every pass.
pub const HEAD: i64 = 100;
/// Waiting jobs looked at in every pass by the walk over all of them.
pub const WALK: i64 = 5_000;
/// A job due, and unchanged, for less than this may still be on its way to Redis.
pub const SETTLED: Duration = Duration::from_secs(5);
/// Most queries of the walk in one pass (a walk over many small queues).
const WALK_QUERIES: usize = 32;

/// What one pass looked at and did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Checked {
    /// Waiting jobs looked for in Redis.
    pub looked: usize,
    /// Of those, the ones Redis lacked at first look.
    pub missing: usize,
    /// Of those, the ones still missing after the settle time, dispatched again.
    pub redispatched: usize,
    /// The walk reached the end of the waiting jobs and starts afresh next time.
    pub walk_wrapped: bool,
    /// How long the look took (PostgreSQL and Redis; not the settle time).
    pub took: Duration,
}

/// Where the walk goes on from: a queue, one of its two waiting states, and the due time
/// and id of the last job looked at (none: from the start of that state).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Cursor {
    queue: QueueName,
    state: JobState,
    after: Option<(DateTime<Utc>, JobId)>,
}

/// Dispatches again the waiting jobs Redis lacks.
#[derive(Clone)]
pub struct MissingCheck {
    db: PgPool,
    queue: RedisQueue,
    recovery: Recovery,
    every: Duration,
}

impl MissingCheck {
    pub fn new(db: PgPool, queue: RedisQueue, recovery: Recovery, every: Duration) -> Self {
        Self {
            db,
            queue,
            recovery,
            every,
        }
    }

    /// How often a pass is made, by whichever process takes the lock first.
    pub fn every(&self) -> Duration {
        self.every
    }

    /// One pass, unless another process made one less than [`Self::every`] ago, or a
    /// reconciliation is due or under way (it puts back everything anyway).
    ///
    /// # Errors
    /// PostgreSQL or Redis unreachable.
    pub async fn pass(&self) -> Result<Option<Checked>, MaintenanceError> {
        if !self.queue.is_cluster() && !self.queue.marker(Marker::All).await?.is_settled() {
            return Ok(None);
        }
        // Never released: it spaces passes by `every` whichever process makes them.
        if self
            .queue
            .try_lock(Lock::MissingCheck, self.every)
            .await?
            .is_none()
        {
            return Ok(None);
        }
        self.check().await.map(Some)
    }

    /// One pass, lock or not: the heads of the queues and the next stretch of the walk.
    ///
    /// # Errors
    /// PostgreSQL or Redis unreachable.
    pub async fn check(&self) -> Result<Checked, MaintenanceError> {
        let started = Instant::now();
        let settled = SETTLED.as_millis() as i64;
        let mut jobs = repo::waiting_heads(&self.db, settled, HEAD).await?;
        let mut checked = Checked {
            walk_wrapped: self.walk(&mut jobs).await?,
            ..Checked::default()
        };
        jobs.sort_by(|a, b| (&a.queue, a.id).cmp(&(&b.queue, b.id)));
        jobs.dedup_by_key(|w| w.id);
        checked.looked = jobs.len();
        let mut missing = Vec::new();
        for same_queue in jobs.chunk_by(|a, b| a.queue == b.queue) {
            let queue = &same_queue[0].queue;
            for page in same_queue.chunks(1000) {
                let ids: Vec<JobId> = page.iter().map(|w| w.id).collect();
                let present = self.queue.present(queue, &ids).await?;
                missing.extend(
                    ids.into_iter()
                        .zip(present)
                        .filter(|(_, p)| !p)
                        .map(|(id, _)| id),
                );
            }
        }
        checked.took = started.elapsed();
        checked.missing = missing.len();
        if !missing.is_empty() {
            checked.redispatched = self.recovery.redispatch_lost(&missing).await?;
            if checked.redispatched > 0 {
                crate::metrics::redispatched("missing", checked.redispatched as u64);
                tracing::warn!(
                    jobs = checked.redispatched,
                    "dispatched again waiting jobs that redis lacked"
                );
            }
        }
        Ok(checked)
    }

    /// Adds the next stretch of the walk over every waiting job to `jobs`; `true` when
    /// it came to the end and starts afresh next time.
    async fn walk(&self, jobs: &mut Vec<Waiting>) -> Result<bool, MaintenanceError> {
        let settled = SETTLED.as_millis() as i64;
        let saved = self.queue.missing_check_cursor().await?;
        let mut cursor = match saved.as_deref().map(serde_json::from_str::<Cursor>) {
            Some(Ok(cursor)) => Some(cursor),
            // Unreadable (a format of another version): start afresh.
            Some(Err(_)) | None => self.first_after(None).await?,
        };
        let mut budget = WALK;
        let mut wrapped = false;
        for _ in 0..WALK_QUERIES {
            let Some(at) = cursor.take() else {
                wrapped = true;
                break;
            };
            if budget == 0 {
                cursor = Some(at);
                break;
            }
            let page = repo::waiting_page(&self.db, &at.queue, at.state, at.after, settled, budget)
                .await?;
            budget -= page.len() as i64;
            cursor = match page.last() {
                Some(last) if budget == 0 => Some(Cursor {
                    after: Some((last.run_at, last.id)),
                    ..at
                }),
                // This queue and state are done: on to the next.
                _ if at.state == JobState::Queued => Some(Cursor {
                    queue: at.queue,
                    state: JobState::Scheduled,
                    after: None,
                }),
                _ => self.first_after(Some(&at.queue)).await?,
            };
            jobs.extend(page);
        }
        let saved = match &cursor {
            Some(cursor) => serde_json::to_string(cursor).expect("a cursor serialises"),
            None => String::new(),
        };
        self.queue.set_missing_check_cursor(&saved).await?;
        Ok(wrapped || cursor.is_none())
    }

    /// The walk's place at the start of the first queue with live jobs after `queue`.
    async fn first_after(
        &self,
        queue: Option<&QueueName>,
    ) -> Result<Option<Cursor>, MaintenanceError> {
        Ok(repo::next_live_queue(&self.db, queue)
            .await?
            .map(|queue| Cursor {
                queue,
                state: JobState::Queued,
                after: None,
            }))
    }

    /// Makes a pass every [`Self::every`] until `stop`.
    pub async fn run(self, stop: CancellationToken) {
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(self.every) => {}
            }
            if let Err(e) = self.pass().await {
                tracing::warn!(error = %e, "the check for waiting jobs redis lacks failed; retrying");
            }
        }
    }
}
