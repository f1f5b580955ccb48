//! Writing jobs from the API: inserting new ones (with their idempotency keys, and their
//! dispatch outbox entry in the same statement), cancelling, and retrying.

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;
use uuid::Uuid;

use super::{OutboxId, RepoError};
use crate::domain::{JobId, JobState, NewJob, Token};

/// The idempotency key of a request and the hash of its body.
#[derive(Debug, Clone)]
pub struct Idempotency {
    pub key: String,
    pub request_hash: Vec<u8>,
}

/// Inserts jobs in one statement (all or none), each with its spec as JSON (`specs`, in
/// the same order; see [`crate::domain::JobSpec::to_json`]). `idempotency` gives each
/// job its key (or is empty when none has one); a job whose key is already taken, or
/// repeated earlier in the same call, is not inserted. The inserted jobs enter the
/// dispatch outbox as one entry, `outbox`, in the same statement. Returns the ids of the
/// jobs actually inserted. `now` is their creation time, as the answer to their
/// submission shows it (see [`super::JobRow::from_new`]).
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
    let queues: Vec<&str> = jobs.iter().map(|j| j.queue.as_str()).collect();
    let states: Vec<JobState> = jobs
        .iter()
        .map(|j| JobState::on_arrival(j.run_at, now))
        .collect();
    let priorities: Vec<i16> = jobs.iter().map(|j| j.spec.priority.into()).collect();
    let labels: Vec<String> = jobs
        .iter()
        .map(|j| serde_json::to_string(&j.labels).expect("labels always serialise"))
        .collect();
    let max_attempts: Vec<i32> = jobs.iter().map(|j| j.spec.max_attempts as i32).collect();
    let run_at: Vec<DateTime<Utc>> = jobs.iter().map(|j| j.run_at).collect();
    let keys: Vec<Option<&str>> = (0..jobs.len())
        .map(|i| key(i).map(|k| k.key.as_str()))
        .collect();
    let hashes: Vec<Option<&[u8]>> = (0..jobs.len())
        .map(|i| key(i).map(|k| k.request_hash.as_slice()))
        .collect();
    let parents: Vec<Option<Uuid>> = jobs
        .iter()
        .map(|j| j.callback_of.map(|p| p.as_uuid()))
        .collect();
    // The jobs also enter the dispatch outbox, in the same statement, so a job is never
    // committed without a record that it still has to reach Redis.
    let inserted = sqlx::query_scalar!(
        r#"WITH t AS (
               SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::job_state[], $4::int2[], $5::text[], $6::text[],
                                    $7::int4[], $8::timestamptz[], $9::text[], $10::bytea[], $13::uuid[])
                    AS t(id, queue, state, priority, spec, labels, max_attempts, run_at, key, hash, parent)
           ), keyed AS (
               -- A key taken before, or earlier in this call, is not inserted again.
               INSERT INTO idempotency_keys (key, job_id, request_hash, created_at)
               SELECT key, id, hash, $12 FROM t WHERE key IS NOT NULL
               ON CONFLICT (key) DO NOTHING
               RETURNING job_id
           ), inserted AS (
               INSERT INTO jobs (id, queue, state, priority, spec, labels, max_attempts, run_at, created_at,
                                 updated_at, callback_of)
               SELECT id, queue, state, priority, spec::json, labels::jsonb, max_attempts, run_at, $12, $12, parent
               FROM t WHERE key IS NULL OR id IN (SELECT job_id FROM keyed)
               RETURNING id
           ), outbox AS (
               INSERT INTO job_dispatch_batches (id, job_ids)
               SELECT $11, array_agg(id) FROM inserted HAVING count(*) > 0
           )
           SELECT id AS "id!: JobId" FROM inserted"#,
        &ids,
        &queues as &[&str],
        &states as &[JobState],
        &priorities,
        specs,
        &labels,
        &max_attempts,
        &run_at,
        &keys as &[Option<&str>],
        &hashes as &[Option<&[u8]>],
        outbox.as_uuid(),
        now,
        &parents as &[Option<Uuid>],
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
        r#"SELECT job_id AS "id: JobId", request_hash AS "hash!" FROM idempotency_keys WHERE key = $1"#,
        key
    )
    .fetch_optional(db)
    .await?;
    Ok(row.map(|r| (r.id, r.hash)))
}

/// Cancels a live job; `false` when the job is not live (terminal or absent).
///
/// # Errors
/// PostgreSQL unreachable.
pub async fn cancel_job(db: impl PgExecutor<'_>, id: JobId) -> Result<bool, RepoError> {
    let done = sqlx::query!(
        "UPDATE jobs SET state = 'cancelled', finished_at = now(), updated_at = now()
         WHERE id = $1 AND job_is_live(state)",
        id as JobId
    )
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Puts a dead or cancelled job back to run from its first attempt, in a new round;
/// `false` when the job is neither.
///
/// # Errors
/// PostgreSQL unreachable.
pub async fn reset_for_retry(db: impl PgExecutor<'_>, id: JobId) -> Result<bool, RepoError> {
    let done = sqlx::query!(
        "WITH reset AS (
             UPDATE jobs SET state = 'queued', attempts = 0, round = round + 1, run_at = now(),
                    finished_at = NULL, updated_at = now(), progress_percent = NULL,
                    progress_message = NULL, progress_at = NULL
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

/// Progress as stored.
#[derive(Debug, Clone)]
pub struct Progress {
    pub percent: i16,
    pub message: Option<String>,
    pub at: DateTime<Utc>,
}

/// Stores progress reported by the attempt with fencing token `attempt` of a live job,
/// unless a newer attempt has reported or started (PostgreSQL's token is newer); `None`
/// when it was not stored.
///
/// # Errors
/// PostgreSQL unreachable.
pub async fn report_progress(
    db: impl PgExecutor<'_>,
    id: JobId,
    attempt: Token,
    percent: i16,
    message: Option<&str>,
) -> Result<Option<Progress>, RepoError> {
    Ok(sqlx::query_as!(
        Progress,
        r#"UPDATE jobs SET progress_percent = $3, progress_message = $4, progress_at = now(),
                  progress_token = $2
           WHERE id = $1 AND job_is_live(state)
             AND token <= $2 AND COALESCE(progress_token, 0) <= $2
           RETURNING progress_percent AS "percent!", progress_message AS message, progress_at AS "at!""#,
        id as JobId,
        attempt as Token,
        percent,
        message
    )
    .fetch_optional(db)
    .await?)
}
