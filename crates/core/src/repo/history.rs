//! Workers' history, written in batches: attempt starts, execution records and job state
//! changes, many jobs per statement. A batch PostgreSQL refuses for good (a record that
//! breaks a `CHECK`) is written item by item, and what still cannot be written is set
//! aside in `history_rejects` with the reason, so it never holds back the rest.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use uuid::Uuid;

use super::{Outcome, RepoError};
use crate::{
    callbacks,
    crypto::SecretBox,
    domain::{JobId, JobState, Token},
};

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
    pub last: Option<(Option<i16>, Option<String>, i32)>,
    /// Whether this end may make a callback job (`true` when the writer does not know
    /// the job's spec): a batch with one is written in a transaction that makes them.
    #[serde(default = "unknown_callback")]
    pub may_call_back: bool,
}

fn unknown_callback() -> bool {
    true
}

/// How an attempt ended: its record and, when it held its lease to the end, the job's new
/// state; written together, and kept in Redis's journal until PostgreSQL has them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AttemptEnd {
    pub record: ExecutionRecord,
    /// `None` for a record that changes nothing (a stale result).
    pub update: Option<JobUpdate>,
}

/// One batch of history.
#[derive(Debug, Default, Clone)]
pub struct HistoryBatch {
    pub started: Vec<Started>,
    pub records: Vec<ExecutionRecord>,
    pub updates: Vec<JobUpdate>,
}

impl HistoryBatch {
    pub fn is_empty(&self) -> bool {
        self.started.is_empty() && self.records.is_empty() && self.updates.is_empty()
    }

    pub fn len(&self) -> usize {
        self.started.len() + self.records.len() + self.updates.len()
    }
}

/// What writing a batch did besides writing it.
#[derive(Debug, Default)]
pub struct Written {
    /// Items PostgreSQL refused for good, set aside in `history_rejects`.
    pub rejected: usize,
    /// Callback jobs the batch's ends made, to dispatch.
    pub callbacks: Vec<callbacks::Made>,
}

/// Writes `batch`, making the callback jobs of the ends that call back in the same
/// transaction; what PostgreSQL refuses for good is set aside in `history_rejects`
/// (logged, and kept there with the reason).
///
/// # Errors
/// PostgreSQL unreachable, or another error worth retrying: the caller keeps the batch
/// and tries again (replaying what was written is harmless, callbacks included).
pub async fn write_history(
    db: &PgPool,
    secrets: &SecretBox,
    batch: &HistoryBatch,
) -> Result<Written, RepoError> {
    match record_history(db, secrets, &batch.started, &batch.records, &batch.updates).await {
        Ok(made) => Ok(Written {
            rejected: 0,
            callbacks: vec![made],
        }),
        Err(e) if e.is_transient() => Err(e),
        Err(e) => {
            tracing::warn!(error = %e, items = batch.len(),
                "postgresql refused a history batch for good; writing it item by item");
            write_one_by_one(db, secrets, batch).await
        }
    }
}

async fn write_one_by_one(
    db: &PgPool,
    secrets: &SecretBox,
    batch: &HistoryBatch,
) -> Result<Written, RepoError> {
    let mut written = Written::default();
    for s in &batch.started {
        let result = record_history(db, secrets, std::slice::from_ref(s), &[], &[]).await;
        set_aside_if_refused(db, result, s.id, "start", s, &mut written).await?;
    }
    for r in &batch.records {
        let result = record_history(db, secrets, &[], std::slice::from_ref(r), &[]).await;
        set_aside_if_refused(db, result, r.job_id, "record", r, &mut written).await?;
    }
    for u in &batch.updates {
        let result = record_history(db, secrets, &[], &[], std::slice::from_ref(u)).await;
        set_aside_if_refused(db, result, u.id, "update", u, &mut written).await?;
    }
    Ok(written)
}

/// Counts `result`'s callbacks in `written`, or, when it is a permanent refusal, keeps
/// `item` in `history_rejects` and counts it there.
async fn set_aside_if_refused(
    db: &PgPool,
    result: Result<callbacks::Made, RepoError>,
    job: JobId,
    kind: &str,
    item: &impl Serialize,
    written: &mut Written,
) -> Result<(), RepoError> {
    let error = match result {
        Ok(made) => {
            written.callbacks.push(made);
            return Ok(());
        }
        Err(e) if e.is_transient() => return Err(e),
        Err(e) => e.to_string(),
    };
    tracing::error!(job.id = %job, kind, error,
        "postgresql refuses this history item for good; kept in history_rejects");
    let payload = serde_json::to_value(item).expect("history items serialise");
    sqlx::query!(
        "INSERT INTO history_rejects (job_id, kind, payload, error) VALUES ($1, $2, $3, $4)",
        job as JobId,
        kind,
        payload,
        error
    )
    .execute(db)
    .await?;
    written.rejected += 1;
    Ok(())
}

/// Writes one batch of worker history: starts first, then records and state changes, so
/// a job that started and finished within the batch ends in its final state. Without
/// starts (the usual case under load: the writer holds starts back briefly and drops
/// those whose end arrived) and without an end that may call back, it is one statement
/// and one round trip. Ends that call back make their callback jobs in the same
/// transaction. Replaying a batch is harmless.
///
/// # Errors
/// PostgreSQL unreachable or refusing an item; nothing of the batch is written then.
pub async fn record_history(
    db: &PgPool,
    secrets: &SecretBox,
    started: &[Started],
    records: &[ExecutionRecord],
    updates: &[JobUpdate],
) -> Result<callbacks::Made, RepoError> {
    let mut updates = newest_per_job(updates, |u| (u.id, u.token));
    // One lock order for every writer, so two workers' batches never deadlock.
    updates.sort_by_key(|u| u.id);
    // Outcomes of calls a cancellation aborted go to jobs that are already terminal: a
    // statement of their own (rare), so that the common one keeps a plan that visits
    // only live jobs.
    let (cancelled, updates): (Vec<&JobUpdate>, Vec<&JobUpdate>) = updates
        .into_iter()
        .partition(|u| u.state == JobState::Cancelled);
    let may_call_back = updates
        .iter()
        .any(|u| u.state.is_terminal() && u.may_call_back);
    if started.is_empty() && cancelled.is_empty() && !may_call_back {
        write_ends(db, records, &updates).await?;
        return Ok(callbacks::Made::default());
    }
    let mut tx = db.begin().await?;
    if !cancelled.is_empty() {
        fill_cancelled_outcomes(&mut *tx, &cancelled).await?;
    }
    if !started.is_empty() {
        let mut started = newest_per_job(started, |s| (s.id, s.token));
        started.sort_by_key(|s| s.id);
        let ids: Vec<Uuid> = started.iter().map(|s| s.id.as_uuid()).collect();
        let tokens: Vec<Token> = started.iter().map(|s| s.token).collect();
        let attempts: Vec<i32> = started.iter().map(|s| s.attempt).collect();
        sqlx::query!(
            "UPDATE jobs SET state = 'running', attempts = LEAST(u.attempt, jobs.max_attempts), token = u.token,
                    updated_at = now()
             FROM UNNEST($1::uuid[], $2::int8[], $3::int4[]) AS u(id, token, attempt)
             WHERE jobs.id = u.id AND jobs.id = ANY($1) AND jobs.token < u.token
               AND jobs.state IN ('scheduled', 'queued', 'running')",
            &ids,
            &tokens as &[Token],
            &attempts
        )
        .execute(&mut *tx)
        .await?;
    }
    let ended = write_ends(&mut *tx, records, &updates).await?;
    let made = callbacks::make(&mut tx, secrets, &ended, Utc::now()).await?;
    tx.commit().await?;
    Ok(made)
}

/// Inserts execution records (each in its job's current round) and applies job
/// changes, in one statement. Returns the jobs that ended in a state their callback
/// fires on, of those whose update said it may.
async fn write_ends(
    db: impl sqlx::PgExecutor<'_>,
    records: &[ExecutionRecord],
    updates: &[&JobUpdate],
) -> Result<Vec<JobId>, RepoError> {
    let col = |f: fn(&ExecutionRecord) -> i32| records.iter().map(f).collect::<Vec<i32>>();
    let job_ids: Vec<Uuid> = records.iter().map(|r| r.job_id.as_uuid()).collect();
    let tokens: Vec<Token> = records.iter().map(|r| r.token).collect();
    let workers: Vec<&str> = records.iter().map(|r| r.worker.as_str()).collect();
    let outcomes: Vec<&str> = records.iter().map(|r| r.outcome.as_str()).collect();
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
        .map(|u| u.last.as_ref().and_then(|l| l.0))
        .collect();
    let last_errors: Vec<Option<&str>> = updates
        .iter()
        .map(|u| u.last.as_ref().and_then(|l| l.1.as_deref()))
        .collect();
    let durations: Vec<Option<i32>> = updates
        .iter()
        .map(|u| u.last.as_ref().map(|l| l.2))
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
           AND jobs.state IN ('scheduled', 'queued', 'running')
         RETURNING jobs.id, jobs.state, u.may_call_back, jobs.spec
         )
         -- Only an end that may call back looks into its spec.
         SELECT id AS "id!: JobId" FROM ended
         WHERE may_call_back AND state IN ('succeeded', 'dead', 'cancelled') AND spec -> 'callback' IS NOT NULL"#,
        &job_ids,
        &col(|r| r.attempt),
        &tokens as &[Token],
        &workers as &[&str],
        &outcomes as &[&str],
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
async fn fill_cancelled_outcomes(
    db: impl sqlx::PgExecutor<'_>,
    updates: &[&JobUpdate],
) -> Result<(), RepoError> {
    let ids: Vec<Uuid> = updates.iter().map(|u| u.id.as_uuid()).collect();
    let tokens: Vec<Token> = updates.iter().map(|u| u.token).collect();
    let errors: Vec<Option<&str>> = updates
        .iter()
        .map(|u| u.last.as_ref().and_then(|l| l.1.as_deref()))
        .collect();
    let durations: Vec<Option<i32>> = updates
        .iter()
        .map(|u| u.last.as_ref().map(|l| l.2))
        .collect();
    sqlx::query!(
        "UPDATE jobs SET last_status_code = NULL, last_error = u.error, last_duration_ms = u.duration,
                updated_at = now()
         FROM UNNEST($1::uuid[], $2::int8[], $3::text[], $4::int4[]) AS u(id, token, error, duration)
         WHERE jobs.id = u.id AND jobs.state IN ('running', 'cancelled') AND jobs.token <= u.token",
        &ids,
        &tokens as &[Token],
        &errors as &[Option<&str>],
        &durations as &[Option<i32>]
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Keeps, per job, only the item with the largest token: one `UPDATE .. FROM` may change
/// a row only once, and the newest attempt is the one that counts.
fn newest_per_job<T>(items: &[T], key: impl Fn(&T) -> (JobId, Token)) -> Vec<&T> {
    let mut newest: std::collections::HashMap<JobId, &T> = std::collections::HashMap::new();
    for item in items {
        let (id, token) = key(item);
        newest
            .entry(id)
            .and_modify(|kept| {
                if key(kept).1 <= token {
                    *kept = item;
                }
            })
            .or_insert(item);
    }
    newest.into_values().collect()
}
