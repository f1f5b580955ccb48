//! The SQL of workers' history: attempt starts, execution records and job state changes,
//! many jobs per statement, and the items PostgreSQL refuses for good, set aside in
//! `history_rejects`. The transaction around them, and what an end makes, are
//! `stages::record`'s.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{Outcome, RepoError};
use crate::domain::{JobId, JobState, LastOutcome, Token};

/// A worker took a job's lease and is starting attempt `attempt`.
#[derive(Debug, Clone, Serialize)]
pub struct Started {
    pub id: JobId,
    pub token: Token,
    pub attempt: i32,
}

/// One attempt, as recorded.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExecutionRecord {
    pub job_id: JobId,
    pub attempt: i32,
    pub token: Token,
    pub worker: String,
    pub outcome: Outcome,
    /// The attempt had lost its lease; its result changed nothing.
    pub stale: bool,
    pub status_code: Option<i16>,
    pub error: Option<String>,
    pub duration_ms: i32,
    pub response_excerpt: Option<String>,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
}

/// A job's new state after an attempt (or after its lease was taken back).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobUpdate {
    pub id: JobId,
    /// The attempt this update comes from; an older token never overwrites a newer one.
    pub token: Token,
    pub attempts: i32,
    /// The job's new state. `cancelled` only fills in the outcome of the call a
    /// cancellation aborted: the cancellation itself is the API's.
    pub state: JobState,
    /// The next attempt's time, for `scheduled` and `queued`.
    pub run_at: Option<DateTime<Utc>>,
    /// The attempt's outcome for the job's `last_*` fields; `None` leaves them (a job
    /// handed back at shutdown).
    pub last: Option<LastOutcome>,
    /// Whether this end may make a callback job (`true` when the writer does not know
    /// the job's spec): a batch with one is written in a transaction that makes them.
    #[serde(default = "unknown_callback")]
    pub may_call_back: bool,
}

fn unknown_callback() -> bool {
    true
}

/// Marks attempts started: the job `running`, its attempts and the attempt's fencing
/// token, unless PostgreSQL already holds a newer attempt or the job ended. A job
/// cancelled while the start was on its way still counts the attempt (its executions
/// list it) and stays `cancelled`. `started` holds one item per job, sorted by id (one
/// lock order for every writer).
///
/// # Errors
/// PostgreSQL unreachable or refusing.
pub async fn mark_started(
    db: impl sqlx::PgExecutor<'_>,
    started: &[&Started],
) -> Result<(), RepoError> {
    let ids: Vec<Uuid> = started.iter().map(|s| s.id.as_uuid()).collect();
    let tokens: Vec<Token> = started.iter().map(|s| s.token).collect();
    let attempts: Vec<i32> = started.iter().map(|s| s.attempt).collect();
    sqlx::query!(
        "UPDATE jobs SET state = CASE WHEN job_is_live(jobs.state) THEN 'running'::job_state ELSE jobs.state END,
                attempts = LEAST(u.attempt, jobs.max_attempts), token = u.token, updated_at = now()
         FROM UNNEST($1::uuid[], $2::int8[], $3::int4[]) AS u(id, token, attempt)
         WHERE jobs.id = u.id AND jobs.id = ANY($1) AND jobs.token < u.token
           AND (job_is_live(jobs.state) OR jobs.state = 'cancelled')",
        &ids,
        &tokens as &[Token],
        &attempts
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Keeps a history item PostgreSQL refuses for good in `history_rejects`, with the
/// reason: `kind` is `start`, `record` or `update`, `payload` the item as JSON.
///
/// # Errors
/// PostgreSQL unreachable.
pub async fn set_aside(
    db: impl sqlx::PgExecutor<'_>,
    job: JobId,
    kind: &str,
    payload: serde_json::Value,
    error: &str,
) -> Result<(), RepoError> {
    sqlx::query!(
        "INSERT INTO history_rejects (job_id, kind, payload, error) VALUES ($1, $2, $3, $4)",
        job as JobId,
        kind,
        payload,
        error
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Inserts execution records (each in its job's current round) and applies job
/// changes, in one statement. Returns the jobs that ended in a state their callback
/// fires on, of those whose update said it may.
pub async fn write_ends(
    db: impl sqlx::PgExecutor<'_>,
    records: &[ExecutionRecord],
    updates: &[&JobUpdate],
) -> Result<Vec<JobId>, RepoError> {
    let col = |f: fn(&ExecutionRecord) -> i32| records.iter().map(f).collect::<Vec<i32>>();
    let job_ids: Vec<Uuid> = records.iter().map(|r| r.job_id.as_uuid()).collect();
    let tokens: Vec<Token> = records.iter().map(|r| r.token).collect();
    let workers: Vec<&str> = records.iter().map(|r| r.worker.as_str()).collect();
    let outcomes: Vec<Outcome> = records.iter().map(|r| r.outcome).collect();
    let stale: Vec<bool> = records.iter().map(|r| r.stale).collect();
    let codes: Vec<Option<i16>> = records.iter().map(|r| r.status_code).collect();
    let errors: Vec<Option<&str>> = records.iter().map(|r| r.error.as_deref()).collect();
    let excerpts: Vec<Option<&str>> = records
        .iter()
        .map(|r| r.response_excerpt.as_deref())
        .collect();
    let started: Vec<DateTime<Utc>> = records.iter().map(|r| r.started_at).collect();
    let finished: Vec<DateTime<Utc>> = records.iter().map(|r| r.finished_at).collect();

    let ids: Vec<Uuid> = updates.iter().map(|u| u.id.as_uuid()).collect();
    let update_tokens: Vec<Token> = updates.iter().map(|u| u.token).collect();
    let attempts: Vec<i32> = updates.iter().map(|u| u.attempts).collect();
    let states: Vec<JobState> = updates.iter().map(|u| u.state).collect();
    let run_at: Vec<Option<DateTime<Utc>>> = updates.iter().map(|u| u.run_at).collect();
    let has_last: Vec<bool> = updates.iter().map(|u| u.last.is_some()).collect();
    let last_codes: Vec<Option<i16>> = updates
        .iter()
        .map(|u| u.last.as_ref().and_then(|l| l.status_code))
        .collect();
    let last_errors: Vec<Option<&str>> = updates
        .iter()
        .map(|u| u.last.as_ref().and_then(|l| l.error.as_deref()))
        .collect();
    let durations: Vec<Option<i32>> = updates
        .iter()
        .map(|u| u.last.as_ref().map(|l| l.duration_ms))
        .collect();
    let may_call_back: Vec<bool> = updates.iter().map(|u| u.may_call_back).collect();
    // Each record takes its job's round by primary key (a scalar subquery: a join here
    // once let the planner scan every job of the table per batch). Each `id = ANY` of
    // the batch's ids lets PostgreSQL leave out, when it plans, the day partitions no
    // job of the batch is in (measured with pgbench, 100 jobs a statement over 39
    // partitions: 1,990 statements/s with it, 1,740 without).
    let ended = sqlx::query_scalar!(
        r#"WITH records AS (
             INSERT INTO job_executions (job_id, attempt, token, worker, outcome, stale, status_code, error,
                                         duration_ms, response_excerpt, started_at, finished_at, round)
             SELECT t.*, COALESCE((SELECT j.round FROM jobs j WHERE j.id = t.job_id AND j.id = ANY($1)), 1)
             FROM UNNEST($1::uuid[], $2::int4[], $3::int8[], $4::text[], $5::text[], $6::bool[], $7::int2[],
                         $8::text[], $9::int4[], $10::text[], $11::timestamptz[], $12::timestamptz[])
                  AS t(job_id, attempt, token, worker, outcome, stale, status_code, error, duration_ms,
                       response_excerpt, started_at, finished_at)
             ON CONFLICT (job_id, token, stale) DO NOTHING
         ), ended AS (
         UPDATE jobs SET
             state = u.state,
             attempts = LEAST(u.attempts, jobs.max_attempts),
             token = u.token,
             run_at = COALESCE(u.run_at, jobs.run_at),
             last_status_code = CASE WHEN u.has_last THEN u.code ELSE jobs.last_status_code END,
             last_error = CASE WHEN u.has_last THEN u.error ELSE jobs.last_error END,
             last_duration_ms = CASE WHEN u.has_last THEN u.duration ELSE jobs.last_duration_ms END,
             finished_at = CASE WHEN u.state IN ('succeeded', 'dead', 'cancelled') THEN now() END,
             updated_at = now()
         FROM UNNEST($13::uuid[], $14::int8[], $15::int4[], $16::job_state[], $17::timestamptz[], $18::bool[],
                     $19::int2[], $20::text[], $21::int4[], $22::bool[])
              AS u(id, token, attempts, state, run_at, has_last, code, error, duration, may_call_back)
         WHERE jobs.id = u.id AND jobs.id = ANY($13) AND jobs.token <= u.token
           AND job_is_live(jobs.state)
         RETURNING jobs.id, jobs.state, u.may_call_back, jobs.spec
         )
         -- Only an end that may call back looks into its spec.
         SELECT id AS "id!: JobId" FROM ended
         WHERE may_call_back AND state IN ('succeeded', 'dead', 'cancelled') AND spec -> 'callback' IS NOT NULL"#,
        &job_ids,
        &col(|r| r.attempt),
        &tokens as &[Token],
        &workers as &[&str],
        &outcomes as &[Outcome],
        &stale,
        &codes as &[Option<i16>],
        &errors as &[Option<&str>],
        &col(|r| r.duration_ms),
        &excerpts as &[Option<&str>],
        &started,
        &finished,
        &ids,
        &update_tokens as &[Token],
        &attempts,
        &states as &[JobState],
        &run_at as &[Option<DateTime<Utc>>],
        &has_last,
        &last_codes as &[Option<i16>],
        &last_errors as &[Option<&str>],
        &durations as &[Option<i32>],
        &may_call_back
    )
    .fetch_all(db)
    .await?;
    Ok(ended)
}

/// Fills in, for jobs the API cancelled while their call ran, that call as their last
/// outcome (the cancellation's own state and finish time stay). The worker hears of a
/// cancellation from Redis before the cancelling transaction commits, so a job still
/// `running` here is waited for (its row is locked by that transaction) and then seen
/// as cancelled; were the transaction to roll back, the aborted call is still the
/// job's latest outcome.
pub async fn fill_cancelled_outcomes(
    db: impl sqlx::PgExecutor<'_>,
    updates: &[&JobUpdate],
) -> Result<(), RepoError> {
    let ids: Vec<Uuid> = updates.iter().map(|u| u.id.as_uuid()).collect();
    let tokens: Vec<Token> = updates.iter().map(|u| u.token).collect();
    let errors: Vec<Option<&str>> = updates
        .iter()
        .map(|u| u.last.as_ref().and_then(|l| l.error.as_deref()))
        .collect();
    let durations: Vec<Option<i32>> = updates
        .iter()
        .map(|u| u.last.as_ref().map(|l| l.duration_ms))
        .collect();
    let attempts: Vec<i32> = updates.iter().map(|u| u.attempts).collect();
    // The attempt counts (its execution is listed) even when its start never reached
    // PostgreSQL: the writer drops a start whose end arrived with it.
    sqlx::query!(
        "UPDATE jobs SET last_status_code = NULL, last_error = u.error, last_duration_ms = u.duration,
                attempts = LEAST(u.attempts, jobs.max_attempts), token = u.token, updated_at = now()
         FROM UNNEST($1::uuid[], $2::int8[], $3::text[], $4::int4[], $5::int4[])
              AS u(id, token, error, duration, attempts)
         WHERE jobs.id = u.id AND jobs.state IN ('running', 'cancelled') AND jobs.token <= u.token",
        &ids,
        &tokens as &[Token],
        &errors as &[Option<&str>],
        &durations as &[Option<i32>],
        &attempts
    )
    .execute(db)
    .await?;
    Ok(())
}
