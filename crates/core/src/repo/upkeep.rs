//! The queries of Courier's upkeep: live jobs to reconcile with Redis, running jobs whose
//! result was lost. Retention's are in [`super::partitions`].

use chrono::{DateTime, Utc};
use sqlx::{PgExecutor, types::Json};
use uuid::Uuid;

use super::{
    RepoError,
    rows::{jobs, select_jobs},
};
use crate::domain::Job;
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
) -> Result<Vec<Job>, RepoError> {
    Ok(jobs(
        select_jobs!(
            "FROM jobs
         WHERE job_is_live(state) AND ($1::uuid IS NULL OR id > $1)
         ORDER BY id
         LIMIT $2",
            after.map(|id| id.as_uuid()),
            limit
        )
        .fetch_all(db)
        .await?,
    ))
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
) -> Result<Vec<Job>, RepoError> {
    let queues: Vec<String> = queues.iter().map(|q| q.as_str().to_owned()).collect();
    Ok(jobs(
        select_jobs!(
            "FROM jobs
         WHERE job_is_live(state) AND queue = ANY($3)
           AND ($1::uuid IS NULL OR id > $1)
         ORDER BY id
         LIMIT $2",
            after.map(|id| id.as_uuid()),
            limit,
            &queues[..]
        )
        .fetch_all(db)
        .await?,
    ))
}

/// Of `ids`, those that are live in PostgreSQL; absent and finished jobs are left out.
///
/// # Errors
/// PostgreSQL unreachable.
pub async fn live_among(db: impl PgExecutor<'_>, ids: &[JobId]) -> Result<Vec<JobId>, RepoError> {
    let ids: Vec<Uuid> = ids.iter().map(JobId::as_uuid).collect();
    let live = sqlx::query_scalar!(
        r#"SELECT id AS "id: JobId" FROM jobs WHERE id = ANY($1) AND job_is_live(state)"#,
        &ids
    )
    .fetch_all(db)
    .await?;
    Ok(live)
}

/// Names of the queues that have live jobs. A skip scan over the live-jobs index: one
/// index probe per queue, however many jobs each holds (`SELECT DISTINCT` read every
/// live job: a second and more with millions waiting).
///
/// # Errors
/// PostgreSQL unreachable.
pub async fn live_queues(db: impl PgExecutor<'_>) -> Result<Vec<QueueName>, RepoError> {
    let names = sqlx::query_scalar!(
        r#"WITH RECURSIVE queues AS (
               (SELECT queue FROM jobs WHERE job_is_live(state)
                ORDER BY queue LIMIT 1)
               UNION ALL
               SELECT (SELECT j.queue FROM jobs j
                       WHERE job_is_live(j.state) AND j.queue > q.queue
                       ORDER BY j.queue LIMIT 1)
               FROM queues q WHERE q.queue IS NOT NULL
           )
           SELECT queue AS "queue!: QueueName" FROM queues WHERE queue IS NOT NULL"#
    )
    .fetch_all(db)
    .await?;
    Ok(names)
}

/// A job PostgreSQL holds as waiting for a worker (queued, or scheduled and due), as the
/// missing-job check reads it: enough to find it in Redis and to walk on from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiting {
    pub id: JobId,
    pub queue: QueueName,
    pub state: JobState,
    pub run_at: DateTime<Utc>,
}

/// Of every queue with live jobs, the `per_queue` oldest queued jobs and the
/// `per_queue` oldest due scheduled ones, among those due and unchanged for `settled_ms`
/// (younger ones may still be on their way to Redis). These are the jobs that should be
/// running next: a job Redis lost comes up here once the jobs ahead of it have started.
///
/// # Errors
/// PostgreSQL unreachable.
pub async fn waiting_heads(
    db: impl PgExecutor<'_>,
    settled_ms: i64,
    per_queue: i64,
) -> Result<Vec<Waiting>, RepoError> {
    Ok(sqlx::query_as!(
        Waiting,
        r#"WITH RECURSIVE queues AS (
               (SELECT queue FROM jobs WHERE job_is_live(state)
                ORDER BY queue LIMIT 1)
               UNION ALL
               SELECT (SELECT j.queue FROM jobs j
                       WHERE job_is_live(j.state) AND j.queue > q.queue
                       ORDER BY j.queue LIMIT 1)
               FROM queues q WHERE q.queue IS NOT NULL
           )
           SELECT w.id AS "id!: JobId", q.queue AS "queue!: QueueName",
                  w.state AS "state!: JobState", w.run_at AS "run_at!"
           FROM queues q
           CROSS JOIN LATERAL (
               (SELECT id, state, run_at FROM jobs
                WHERE queue = q.queue AND state = 'queued'
                  AND run_at < now() - make_interval(secs => $1 / 1000.0)
                  AND updated_at < now() - make_interval(secs => $1 / 1000.0)
                ORDER BY run_at LIMIT $2)
               UNION ALL
               (SELECT id, state, run_at FROM jobs
                WHERE queue = q.queue AND state = 'scheduled'
                  AND run_at < now() - make_interval(secs => $1 / 1000.0)
                  AND updated_at < now() - make_interval(secs => $1 / 1000.0)
                ORDER BY run_at LIMIT $2)
           ) w
           WHERE q.queue IS NOT NULL"#,
        settled_ms as f64,
        per_queue
    )
    .fetch_all(db)
    .await?)
}

/// One page of a queue's waiting jobs in one state (`queued`, or `scheduled` and due),
/// by due time, after `after` (a due time and an id), among those due and unchanged for
/// `settled_ms`. The missing-job check walks every waiting job this way, a page at a
/// time, so that each pass costs the same however many jobs wait.
///
/// # Errors
/// PostgreSQL unreachable.
pub async fn waiting_page(
    db: impl PgExecutor<'_>,
    queue: &QueueName,
    state: JobState,
    after: Option<(DateTime<Utc>, JobId)>,
    settled_ms: i64,
    limit: i64,
) -> Result<Vec<Waiting>, RepoError> {
    let (after_at, after_id) = after.map(|(at, id)| (at, id.as_uuid())).unzip();
    Ok(sqlx::query_as!(
        Waiting,
        r#"SELECT id AS "id: JobId", queue AS "queue: QueueName", state AS "state: JobState", run_at
           FROM jobs
           WHERE queue = $1 AND state = $2
             AND run_at < now() - make_interval(secs => $5 / 1000.0)
             AND updated_at < now() - make_interval(secs => $5 / 1000.0)
             AND ($3::timestamptz IS NULL OR (run_at, id) > ($3, $4::uuid))
           ORDER BY run_at, id
           LIMIT $6"#,
        queue.as_str(),
        state as JobState,
        after_at,
        after_id,
        settled_ms as f64,
        limit
    )
    .fetch_all(db)
    .await?)
}

/// The first queue with live jobs after `after` (the first of all for `None`).
///
/// # Errors
/// PostgreSQL unreachable.
pub async fn next_live_queue(
    db: impl PgExecutor<'_>,
    after: Option<&QueueName>,
) -> Result<Option<QueueName>, RepoError> {
    Ok(sqlx::query_scalar!(
        r#"SELECT queue AS "queue: QueueName" FROM jobs
           WHERE job_is_live(state) AND ($1::text IS NULL OR queue > $1)
           ORDER BY queue LIMIT 1"#,
        after.map(QueueName::as_str)
    )
    .fetch_optional(db)
    .await?)
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
) -> Result<Vec<Job>, RepoError> {
    Ok(jobs(
        select_jobs!(
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
        .await?,
    ))
}
