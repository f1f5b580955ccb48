//! The dispatch outbox: jobs committed in PostgreSQL that may not have reached Redis yet.
//! A committed batch of jobs has one entry (`job_dispatch_batches`), dropped once its
//! jobs are in Redis; an entry still there after the dispatcher's grace is spread into
//! one row per job (`job_dispatch`, which retries also write) for the dispatcher to send.

use chrono::{DateTime, Utc};
use sqlx::{PgExecutor, types::Json};
use uuid::Uuid;

use super::{
    RepoError,
    rows::{jobs, select_jobs},
};
use crate::domain::Job;
use crate::domain::{JobId, JobSpec, JobState, Labels, QueueName};

/// The dispatch outbox entry of one committed batch of jobs: once they are all in Redis,
/// [`clear_outbox`] drops it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboxId(Uuid);

impl OutboxId {
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }

    pub fn as_uuid(self) -> Uuid {
        self.0
    }
}

impl Default for OutboxId {
    fn default() -> Self {
        Self::new()
    }
}

/// Records that batches of jobs are in Redis: drops their outbox entries. The commit
/// does not wait for the disk: an entry that a PostgreSQL crash brings back only makes
/// the dispatcher send live jobs again, which Redis ignores while it holds them.
///
/// # Errors
/// PostgreSQL unreachable.
pub async fn clear_outbox(db: &sqlx::PgPool, entries: &[OutboxId]) -> Result<(), RepoError> {
    let ids: Vec<Uuid> = entries.iter().map(|e| e.0).collect();
    let mut tx = db.begin().await?;
    sqlx::query!("SET LOCAL synchronous_commit = off")
        .execute(&mut *tx)
        .await?;
    sqlx::query!("DELETE FROM job_dispatch_batches WHERE id = ANY($1)", &ids)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

/// Records that jobs are in Redis: drops their per-job outbox rows, without waiting for
/// the disk (as [`clear_outbox`]).
///
/// # Errors
/// PostgreSQL unreachable.
pub async fn mark_dispatched(db: &sqlx::PgPool, ids: &[JobId]) -> Result<(), RepoError> {
    let mut tx = db.begin().await?;
    sqlx::query!("SET LOCAL synchronous_commit = off")
        .execute(&mut *tx)
        .await?;
    mark_dispatched_in(&mut *tx, ids).await?;
    tx.commit().await?;
    Ok(())
}

/// [`mark_dispatched`] within the caller's transaction.
///
/// # Errors
/// PostgreSQL unreachable.
pub async fn mark_dispatched_in(db: impl PgExecutor<'_>, ids: &[JobId]) -> Result<(), RepoError> {
    let ids: Vec<Uuid> = ids.iter().map(JobId::as_uuid).collect();
    sqlx::query!("DELETE FROM job_dispatch WHERE job_id = ANY($1)", &ids)
        .execute(db)
        .await?;
    Ok(())
}

/// Spreads batch outbox entries older than `before` into one `job_dispatch` row per
/// job, of the same age, for the dispatcher. Returns how many jobs.
///
/// # Errors
/// PostgreSQL unreachable.
pub async fn spread_stale_batches(
    db: impl PgExecutor<'_>,
    before: DateTime<Utc>,
) -> Result<u64, RepoError> {
    let done = sqlx::query!(
        "WITH moved AS (
             DELETE FROM job_dispatch_batches WHERE created_at < $1 RETURNING job_ids, created_at
         )
         INSERT INTO job_dispatch (job_id, created_at)
         SELECT unnest(job_ids), created_at FROM moved
         ON CONFLICT (job_id) DO NOTHING",
        before
    )
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}

/// Live jobs still in the dispatch outbox since before `before`, their outbox rows
/// locked so that several processes share the work. Call inside a transaction.
///
/// # Errors
/// PostgreSQL unreachable.
pub async fn lock_undispatched(
    db: impl PgExecutor<'_>,
    before: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<Job>, RepoError> {
    Ok(jobs(
        select_jobs!(
            "FROM jobs
         WHERE id = ANY(ARRAY(SELECT job_id FROM job_dispatch WHERE created_at < $1
                              ORDER BY created_at LIMIT $2 FOR UPDATE SKIP LOCKED))
           AND job_is_live(state)",
            before,
            limit
        )
        .fetch_all(db)
        .await?,
    ))
}

/// Drops outbox rows older than `before` whose job is finished or gone: there is
/// nothing left to dispatch. Returns how many.
///
/// # Errors
/// PostgreSQL unreachable.
pub async fn drop_stale_dispatches(
    db: impl PgExecutor<'_>,
    before: DateTime<Utc>,
) -> Result<u64, RepoError> {
    let done = sqlx::query!(
        "DELETE FROM job_dispatch d WHERE d.created_at < $1 AND NOT EXISTS (
             SELECT 1 FROM jobs j WHERE j.id = d.job_id AND job_is_live(j.state))",
        before
    )
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}
