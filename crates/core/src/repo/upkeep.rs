//! The queries of Courier's upkeep: live jobs to reconcile with Redis, running jobs whose
//! result was lost. Retention's are in [`super::partitions`].

use sqlx::{PgExecutor, types::Json};
use uuid::Uuid;

use super::{JobRow, RepoError, rows::select_jobs};
use crate::domain::{DEFAULT_TIMEOUT_MS, JobId, JobSpec, JobState, Labels, QueueName};

/// Live jobs (scheduled, queued, running) after `after`, by id, for reconciling with Redis.
/// Jobs still in the dispatch outbox are included: their entry may be about to go (the
/// job was in Redis before Redis lost it), and dispatching a job twice is harmless.
///
/// # Errors
/// PostgreSQL unreachable.
pub async fn live_jobs_page(
    db: impl PgExecutor<'_>,
    after: Option<JobId>,
    limit: i64,
) -> Result<Vec<JobRow>, RepoError> {
    Ok(select_jobs!(
        "FROM jobs
         WHERE state IN ('scheduled', 'queued', 'running') AND ($1::uuid IS NULL OR id > $1)
         ORDER BY id
         LIMIT $2",
        after.map(|id| id.as_uuid()),
        limit
    )
    .fetch_all(db)
    .await?)
}

/// One page of the live jobs of `queues` by id, after `after`.
///
/// # Errors
/// PostgreSQL unreachable.
pub async fn live_jobs_page_in(
    db: impl PgExecutor<'_>,
    queues: &[QueueName],
    after: Option<JobId>,
    limit: i64,
) -> Result<Vec<JobRow>, RepoError> {
    let queues: Vec<String> = queues.iter().map(|q| q.as_str().to_owned()).collect();
    Ok(select_jobs!(
        "FROM jobs
         WHERE state IN ('scheduled', 'queued', 'running') AND queue = ANY($3)
           AND ($1::uuid IS NULL OR id > $1)
         ORDER BY id
         LIMIT $2",
        after.map(|id| id.as_uuid()),
        limit,
        &queues[..]
    )
    .fetch_all(db)
    .await?)
}

/// Of `ids`, those that are live in PostgreSQL; absent and finished jobs are left out.
///
/// # Errors
/// PostgreSQL unreachable.
pub async fn live_among(db: impl PgExecutor<'_>, ids: &[JobId]) -> Result<Vec<JobId>, RepoError> {
    let ids: Vec<Uuid> = ids.iter().map(JobId::as_uuid).collect();
    let live = sqlx::query_scalar!(
        r#"SELECT id AS "id: JobId" FROM jobs WHERE id = ANY($1) AND state IN ('scheduled', 'queued', 'running')"#,
        &ids
    )
    .fetch_all(db)
    .await?;
    Ok(live)
}

/// Names of the queues that have live jobs.
///
/// # Errors
/// PostgreSQL unreachable.
pub async fn live_queues(db: impl PgExecutor<'_>) -> Result<Vec<QueueName>, RepoError> {
    let names = sqlx::query_scalar!(
        r#"SELECT DISTINCT queue AS "queue!: QueueName" FROM jobs WHERE state IN ('scheduled', 'queued', 'running')"#
    )
    .fetch_all(db)
    .await?;
    Ok(names)
}

/// Jobs `running` in PostgreSQL for longer than their own timeout (SPEC 2's default when
/// the stored spec leaves it out) plus `grace_ms`: no attempt can still be going, so
/// the attempt's result was lost on its way here (a worker killed before its history
/// batch landed, and its journal entry lost with Redis).
///
/// # Errors
/// PostgreSQL unreachable.
pub async fn stuck_running(
    db: impl PgExecutor<'_>,
    grace_ms: i64,
    limit: i64,
) -> Result<Vec<JobRow>, RepoError> {
    Ok(select_jobs!(
        "FROM jobs
         WHERE state = 'running'
           AND updated_at < now() - make_interval(
                 secs => (COALESCE((spec->>'timeout_ms')::float8, $1) + $2) / 1000.0)
         ORDER BY updated_at
         LIMIT $3",
        DEFAULT_TIMEOUT_MS as f64,
        grace_ms as f64,
        limit
    )
    .fetch_all(db)
    .await?)
}
