//! The `jobs` table: one row per job with its current state.

use chrono::{DateTime, Utc};
use sqlx::{PgExecutor, types::Json};
use uuid::Uuid;

use super::RepoError;
use crate::domain::{JobId, JobSpec, JobState, Labels, NewJob, QueueName};
use crate::queue::Dispatch;

/// A job as stored.
#[derive(Debug, Clone)]
pub struct JobRow {
    pub id: JobId,
    pub queue: String,
    pub state: JobState,
    pub spec: Json<JobSpec>,
    pub labels: Json<Labels>,
    pub attempts: i32,
    pub run_at: DateTime<Utc>,
    pub last_status_code: Option<i16>,
    pub last_error: Option<String>,
    pub last_duration_ms: Option<i32>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

impl JobRow {
    /// The state a client sees: a scheduled job whose time has come is queued, even
    /// before a worker's promotion reaches PostgreSQL.
    pub fn effective_state(&self, now: DateTime<Utc>) -> JobState {
        if self.state == JobState::Scheduled && self.run_at <= now {
            JobState::Queued
        } else {
            self.state
        }
    }

    /// The row [`insert_jobs`] stores for `job` at `now`, without reading it back.
    pub fn from_new(job: NewJob, now: DateTime<Utc>) -> Self {
        Self {
            id: job.id,
            queue: job.queue.to_string(),
            state: if job.run_at <= now {
                JobState::Queued
            } else {
                JobState::Scheduled
            },
            spec: Json(job.spec),
            labels: Json(job.labels),
            attempts: 0,
            run_at: job.run_at,
            last_status_code: None,
            last_error: None,
            last_duration_ms: None,
            created_at: now,
            updated_at: now,
            finished_at: None,
        }
    }

    /// What dispatching this job to Redis needs.
    pub fn to_dispatch(&self) -> Option<Dispatch> {
        Some(Dispatch::new(
            self.id,
            QueueName::parse(&self.queue).ok()?,
            &self.spec.0,
            self.run_at,
            self.attempts as u32,
        ))
    }
}

/// A job's spec as the JSON stored in PostgreSQL and sent to Redis: made once, used for
/// both.
pub fn spec_json(job: &NewJob) -> String {
    serde_json::to_string(&job.spec).expect("a job spec always serialises")
}

/// The idempotency key of a request and the hash of its body.
#[derive(Debug, Clone)]
pub struct Idempotency {
    pub key: String,
    pub request_hash: Vec<u8>,
}

/// The dispatch outbox entry of one committed batch of jobs: once they are all in Redis,
/// [`clear_outbox`] drops it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboxId(Uuid);

impl OutboxId {
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }
}

impl Default for OutboxId {
    fn default() -> Self {
        Self::new()
    }
}

/// Inserts jobs in one statement (all or none), each with its spec as JSON (`specs`, in
/// the same order; see [`spec_json`]). `idempotency` gives each job its key (or is empty
/// when none has one); a job whose key is already taken, or repeated earlier in the same
/// call, is not inserted. The inserted jobs enter the dispatch outbox as one entry,
/// `outbox`, in the same statement. Returns the ids of the jobs actually inserted.
///
/// # Errors
/// PostgreSQL unreachable or refusing the rows.
pub async fn insert_jobs(
    db: impl PgExecutor<'_>,
    jobs: &[NewJob],
    specs: &[String],
    idempotency: &[Option<Idempotency>],
    outbox: OutboxId,
    now: DateTime<Utc>,
) -> Result<Vec<JobId>, RepoError> {
    debug_assert_eq!(jobs.len(), specs.len());
    let key = |i: usize| idempotency.get(i).and_then(Option::as_ref);
    let ids: Vec<Uuid> = jobs.iter().map(|j| j.id.as_uuid()).collect();
    let queues: Vec<String> = jobs.iter().map(|j| j.queue.to_string()).collect();
    let states: Vec<String> = jobs
        .iter()
        .map(|j| {
            if j.run_at <= now {
                JobState::Queued
            } else {
                JobState::Scheduled
            }
            .to_string()
        })
        .collect();
    let priorities: Vec<i16> = jobs.iter().map(|j| j.spec.priority.into()).collect();
    let labels: Vec<String> = jobs
        .iter()
        .map(|j| serde_json::to_string(&j.labels).expect("labels always serialise"))
        .collect();
    let max_attempts: Vec<i32> = jobs.iter().map(|j| j.spec.max_attempts as i32).collect();
    let run_at: Vec<DateTime<Utc>> = jobs.iter().map(|j| j.run_at).collect();
    let keys: Vec<Option<String>> = (0..jobs.len())
        .map(|i| key(i).map(|k| k.key.clone()))
        .collect();
    let hashes: Vec<Option<Vec<u8>>> = (0..jobs.len())
        .map(|i| key(i).map(|k| k.request_hash.clone()))
        .collect();
    // The jobs also enter the dispatch outbox, in the same statement, so a job is never
    // committed without a record that it still has to reach Redis.
    let inserted = sqlx::query_scalar!(
        r#"WITH inserted AS (
               INSERT INTO jobs (id, queue, state, priority, spec, labels, max_attempts, run_at, idempotency_key, request_hash)
               SELECT id, queue, state::job_state, priority, spec::json, labels::jsonb, max_attempts, run_at, key, hash
               FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::int2[], $5::text[], $6::text[], $7::int4[],
                           $8::timestamptz[], $9::text[], $10::bytea[])
                    AS t(id, queue, state, priority, spec, labels, max_attempts, run_at, key, hash)
               ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
               RETURNING id
           ), outbox AS (
               INSERT INTO job_dispatch_batches (id, job_ids)
               SELECT $11, array_agg(id) FROM inserted HAVING count(*) > 0
           )
           SELECT id AS "id!: JobId" FROM inserted"#,
        &ids,
        &queues,
        &states,
        &priorities,
        specs,
        &labels,
        &max_attempts,
        &run_at,
        &keys as &[Option<String>],
        &hashes as &[Option<Vec<u8>>],
        outbox.0,
    )
    .fetch_all(db)
    .await?;
    Ok(inserted)
}

/// The job holding an idempotency key, with the hash of the request that created it.
///
/// # Errors
/// PostgreSQL unreachable.
pub async fn find_by_idempotency_key(
    db: impl PgExecutor<'_>,
    key: &str,
) -> Result<Option<(JobId, Vec<u8>)>, RepoError> {
    let row = sqlx::query!(
        r#"SELECT id AS "id: JobId", request_hash AS "hash!" FROM jobs WHERE idempotency_key = $1"#,
        key
    )
    .fetch_optional(db)
    .await?;
    Ok(row.map(|r| (r.id, r.hash)))
}

/// Records that jobs are in Redis: takes them out of the dispatch outbox. The commit does
/// not wait for the disk: an entry that a PostgreSQL crash brings back only makes the
/// dispatcher send a live job again, which Redis ignores while it holds the job.
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

/// Records that batches of jobs are in Redis: drops their outbox entries, without
/// waiting for the disk (as [`mark_dispatched`]).
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

/// Spreads batch outbox entries older than `before` into one `job_dispatch` entry per
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

/// Live jobs still in the dispatch outbox since before `before`; their entries locked, so
/// several processes share the work. Call inside a transaction.
///
/// # Errors
/// PostgreSQL unreachable.
pub async fn lock_undispatched(
    db: impl PgExecutor<'_>,
    before: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<JobRow>, RepoError> {
    let rows = sqlx::query_as!(
        JobRow,
        r#"SELECT j.id AS "id: JobId", j.queue, j.state AS "state: JobState", j.spec AS "spec: Json<JobSpec>",
                  j.labels AS "labels: Json<Labels>", j.attempts, j.run_at, j.last_status_code, j.last_error,
                  j.last_duration_ms, j.created_at, j.updated_at, j.finished_at
           FROM job_dispatch d JOIN jobs j ON j.id = d.job_id
           WHERE d.created_at < $1 AND j.state IN ('scheduled', 'queued', 'running')
           ORDER BY d.created_at
           LIMIT $2
           FOR UPDATE OF d SKIP LOCKED"#,
        before,
        limit
    )
    .fetch_all(db)
    .await?;
    Ok(rows)
}

/// Drops outbox entries older than `before` whose job is finished or gone: there is
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
             SELECT 1 FROM jobs j WHERE j.id = d.job_id AND j.state IN ('scheduled', 'queued', 'running'))",
        before
    )
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}

/// One job.
///
/// # Errors
/// PostgreSQL unreachable.
pub async fn get_job(db: impl PgExecutor<'_>, id: JobId) -> Result<Option<JobRow>, RepoError> {
    Ok(get_jobs(db, &[id]).await?.pop())
}

/// One job, locked for the rest of the transaction.
///
/// # Errors
/// PostgreSQL unreachable.
pub async fn lock_job(db: impl PgExecutor<'_>, id: JobId) -> Result<Option<JobRow>, RepoError> {
    let row = sqlx::query_as!(
        JobRow,
        r#"SELECT id AS "id: JobId", queue, state AS "state: JobState", spec AS "spec: Json<JobSpec>",
                  labels AS "labels: Json<Labels>", attempts, run_at, last_status_code, last_error,
                  last_duration_ms, created_at, updated_at, finished_at
           FROM jobs WHERE id = $1 FOR UPDATE"#,
        id as JobId
    )
    .fetch_optional(db)
    .await?;
    Ok(row)
}

/// Filters of the job list; `None` matches everything.
#[derive(Debug, Default, Clone)]
pub struct JobFilter {
    pub queue: Option<QueueName>,
    pub state: Option<JobState>,
    /// Jobs whose labels include all of these.
    pub labels: Labels,
    /// Only jobs older than this one (the keyset cursor).
    pub before: Option<JobId>,
    pub limit: i64,
}

/// Jobs newest first.
///
/// # Errors
/// PostgreSQL unreachable.
pub async fn list_jobs(
    db: impl PgExecutor<'_>,
    filter: &JobFilter,
) -> Result<Vec<JobRow>, RepoError> {
    let labels = (!filter.labels.is_empty())
        .then(|| serde_json::to_value(&filter.labels).expect("labels serialise"));
    let rows = sqlx::query_as!(
        JobRow,
        r#"SELECT id AS "id: JobId", queue, state AS "state: JobState", spec AS "spec: Json<JobSpec>",
                  labels AS "labels: Json<Labels>", attempts, run_at, last_status_code, last_error,
                  last_duration_ms, created_at, updated_at, finished_at
           FROM jobs
           WHERE ($1::text IS NULL OR queue = $1)
             AND ($2::text IS NULL OR (CASE WHEN state = 'scheduled' AND run_at <= now()
                                            THEN 'queued' ELSE state::text END) = $2)
             AND ($3::jsonb IS NULL OR (labels @> $3 AND labels <> '{}'::jsonb))
             AND ($4::uuid IS NULL OR id < $4)
           ORDER BY id DESC
           LIMIT $5"#,
        filter.queue.as_ref().map(QueueName::as_str),
        filter.state.map(JobState::as_str),
        labels,
        filter.before.map(|id| id.as_uuid()),
        filter.limit
    )
    .fetch_all(db)
    .await?;
    Ok(rows)
}

/// Cancels a live job; `false` when the job is not live (terminal or absent).
///
/// # Errors
/// PostgreSQL unreachable.
pub async fn cancel_job(db: impl PgExecutor<'_>, id: JobId) -> Result<bool, RepoError> {
    let done = sqlx::query!(
        "UPDATE jobs SET state = 'cancelled', finished_at = now(), updated_at = now()
         WHERE id = $1 AND state IN ('scheduled', 'queued', 'running')",
        id as JobId
    )
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Puts a dead or cancelled job back to run from its first attempt; `false` when the
/// job is neither.
///
/// # Errors
/// PostgreSQL unreachable.
pub async fn reset_for_retry(db: impl PgExecutor<'_>, id: JobId) -> Result<bool, RepoError> {
    let done = sqlx::query!(
        "WITH reset AS (
             UPDATE jobs SET state = 'queued', attempts = 0, run_at = now(), finished_at = NULL,
                    updated_at = now()
             WHERE id = $1 AND state IN ('dead', 'cancelled')
             RETURNING id
         ), outbox AS (
             INSERT INTO job_dispatch (job_id) SELECT id FROM reset ON CONFLICT (job_id) DO NOTHING
         )
         SELECT count(*) AS \"n!\" FROM reset",
        id as JobId
    )
    .fetch_one(db)
    .await?;
    Ok(done.n == 1)
}

/// Depth of one queue.
#[derive(Debug, Clone, Default)]
pub struct QueueDepth {
    pub queue: String,
    pub scheduled: i64,
    pub queued: i64,
    pub running: i64,
    pub dead: i64,
    pub succeeded_last_hour: i64,
    pub dead_last_hour: i64,
    /// When the job that has waited longest became due.
    pub oldest_queued_since: Option<DateTime<Utc>>,
}

/// Depth per queue, for one queue or all.
///
/// # Errors
/// PostgreSQL unreachable.
pub async fn queue_depths(
    db: impl PgExecutor<'_>,
    queue: Option<&QueueName>,
) -> Result<Vec<QueueDepth>, RepoError> {
    let rows = sqlx::query_as!(
        QueueDepth,
        r#"SELECT queue AS "queue!",
             count(*) FILTER (WHERE state = 'scheduled' AND run_at > now()) AS "scheduled!",
             count(*) FILTER (WHERE state = 'queued' OR (state = 'scheduled' AND run_at <= now())) AS "queued!",
             count(*) FILTER (WHERE state = 'running') AS "running!",
             count(*) FILTER (WHERE state = 'dead') AS "dead!",
             count(*) FILTER (WHERE state = 'succeeded' AND finished_at > now() - interval '1 hour') AS "succeeded_last_hour!",
             count(*) FILTER (WHERE state = 'dead' AND finished_at > now() - interval '1 hour') AS "dead_last_hour!",
             min(run_at) FILTER (WHERE state = 'queued' OR (state = 'scheduled' AND run_at <= now())) AS oldest_queued_since
           FROM jobs
           WHERE ($1::text IS NULL OR queue = $1)
             AND (state IN ('scheduled', 'queued', 'running', 'dead') OR finished_at > now() - interval '1 hour')
           GROUP BY queue
           ORDER BY queue"#,
        queue.map(QueueName::as_str)
    )
    .fetch_all(db)
    .await?;
    Ok(rows)
}

/// Deletes up to `limit` finished jobs (and their executions) past their retention:
/// succeeded ones finished before `succeeded_before`, dead and cancelled ones before
/// `dead_before`. Returns how many were deleted.
///
/// # Errors
/// PostgreSQL unreachable.
pub async fn delete_expired(
    db: impl PgExecutor<'_>,
    succeeded_before: DateTime<Utc>,
    dead_before: DateTime<Utc>,
    limit: i64,
) -> Result<u64, RepoError> {
    let done = sqlx::query!(
        r#"WITH gone AS (
               DELETE FROM jobs WHERE id IN (
                   SELECT id FROM jobs
                   WHERE finished_at IS NOT NULL
                     AND finished_at < GREATEST($1::timestamptz, $2::timestamptz)
                     AND ((state = 'succeeded' AND finished_at < $1) OR (state IN ('dead', 'cancelled') AND finished_at < $2))
                   LIMIT $3
                   FOR UPDATE SKIP LOCKED)
               RETURNING id
           ), executions AS (
               DELETE FROM job_executions WHERE job_id IN (SELECT id FROM gone)
           )
           SELECT count(*) AS "n!" FROM gone"#,
        succeeded_before,
        dead_before,
        limit
    )
    .fetch_one(db)
    .await?;
    Ok(done.n as u64)
}

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
    let rows = sqlx::query_as!(
        JobRow,
        r#"SELECT id AS "id: JobId", queue, state AS "state: JobState", spec AS "spec: Json<JobSpec>",
                  labels AS "labels: Json<Labels>", attempts, run_at, last_status_code, last_error,
                  last_duration_ms, created_at, updated_at, finished_at
           FROM jobs
           WHERE state IN ('scheduled', 'queued', 'running') AND ($1::uuid IS NULL OR id > $1)
           ORDER BY id
           LIMIT $2"#,
        after.map(|id| id.as_uuid()),
        limit
    )
    .fetch_all(db)
    .await?;
    Ok(rows)
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
pub async fn live_queues(db: impl PgExecutor<'_>) -> Result<Vec<String>, RepoError> {
    let names = sqlx::query_scalar!(
        r#"SELECT DISTINCT queue AS "queue!" FROM jobs WHERE state IN ('scheduled', 'queued', 'running')"#
    )
    .fetch_all(db)
    .await?;
    Ok(names)
}

/// The jobs among `ids` that exist.
///
/// # Errors
/// PostgreSQL unreachable.
pub async fn get_jobs(db: impl PgExecutor<'_>, ids: &[JobId]) -> Result<Vec<JobRow>, RepoError> {
    let ids: Vec<Uuid> = ids.iter().map(JobId::as_uuid).collect();
    let rows = sqlx::query_as!(
        JobRow,
        r#"SELECT id AS "id: JobId", queue, state AS "state: JobState", spec AS "spec: Json<JobSpec>",
                  labels AS "labels: Json<Labels>", attempts, run_at, last_status_code, last_error,
                  last_duration_ms, created_at, updated_at, finished_at
           FROM jobs WHERE id = ANY($1)"#,
        &ids
    )
    .fetch_all(db)
    .await?;
    Ok(rows)
}

/// Jobs `running` in PostgreSQL for longer than their own timeout plus `grace_ms`: no
/// attempt can still be going, so the attempt's result was lost on its way here (a
/// worker killed before its history batch landed).
///
/// # Errors
/// PostgreSQL unreachable.
pub async fn stuck_running(
    db: impl PgExecutor<'_>,
    grace_ms: i64,
    limit: i64,
) -> Result<Vec<JobRow>, RepoError> {
    let rows = sqlx::query_as!(
        JobRow,
        r#"SELECT id AS "id: JobId", queue, state AS "state: JobState", spec AS "spec: Json<JobSpec>",
                  labels AS "labels: Json<Labels>", attempts, run_at, last_status_code, last_error,
                  last_duration_ms, created_at, updated_at, finished_at
           FROM jobs
           WHERE state = 'running'
             AND updated_at < now() - make_interval(secs => ((spec->>'timeout_ms')::float8 + $1) / 1000.0)
           ORDER BY updated_at
           LIMIT $2"#,
        grace_ms as f64,
        limit
    )
    .fetch_all(db)
    .await?;
    Ok(rows)
}
