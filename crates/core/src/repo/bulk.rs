//! Bulk retry and cancel (SPEC 12): every job that matched a filter at a moment `as_of`,
//! changed in batches of [`BATCH`] (one statement and one Redis call per batch, never a
//! round trip per job). Jobs that arrive, or end, after `as_of` are left alone.
//!
//! The filter is the list's (queue, state, labels, creation time, text in the URL or the
//! last error), so the count a dashboard shows before confirming is the count it acts on.

use chrono::{DateTime, Utc};
use sqlx::{PgExecutor, types::Json};

use super::RepoError;
use crate::domain::{JobId, JobSpec, JobState, Labels, QueueName};

/// Jobs changed per statement.
pub const BATCH: i64 = 1000;

/// Which jobs a bulk action (or the list) selects.
#[derive(Debug, Clone, Default)]
pub struct BulkFilter {
    pub queue: Option<QueueName>,
    /// The queues the caller's key is limited to, if it is.
    pub allowed_queues: Option<Vec<String>>,
    pub state: Option<JobState>,
    /// Jobs whose labels include all of these.
    pub labels: Labels,
    pub created_after: Option<DateTime<Utc>>,
    pub created_before: Option<DateTime<Utc>>,
    /// Text found (case-insensitively) in the target URL or the last error.
    pub text: Option<String>,
}

/// What a bulk action does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BulkAction {
    /// Dead and cancelled jobs that had ended by `as_of` run again, in a new round.
    Retry,
    /// Scheduled, queued and running jobs created by `as_of` are cancelled.
    Cancel,
}

impl BulkAction {
    /// The states the action applies to.
    pub fn states(self) -> &'static [JobState] {
        match self {
            Self::Retry => &[JobState::Dead, JobState::Cancelled],
            Self::Cancel => &[JobState::Scheduled, JobState::Queued, JobState::Running],
        }
    }
}

/// The filter's predicate over `jobs` (made of constants only: every value is a
/// bound parameter), with its parameters as `$1`..`$8` (see [`bind`]).
/// `$8` is `as_of`: for a retry the job had ended by then, for a cancel it existed.
fn predicate(action: BulkAction) -> String {
    let (states, as_of) = match action {
        BulkAction::Retry => ("state IN ('dead', 'cancelled')", "finished_at <= $8"),
        BulkAction::Cancel => ("job_is_live(state)", "created_at <= $8"),
    };
    format!(
        "{states} AND {as_of}
         AND ($1::text IS NULL OR queue = $1)
         AND ($2::text[] IS NULL OR queue = ANY($2))
         AND ($3::job_state IS NULL OR job_effective_state(state, run_at) = $3)
         AND ($4::jsonb IS NULL OR (labels @> $4 AND labels <> '{{}}'::jsonb))
         AND ($5::timestamptz IS NULL OR created_at >= $5)
         AND ($6::timestamptz IS NULL OR created_at < $6)
         AND ($7::text IS NULL OR strpos(lower(spec -> 'target' ->> 'url'), $7) > 0
              OR strpos(lower(coalesce(last_error, '')), $7) > 0)"
    )
}

type Query<'q, O> = sqlx::query::QueryAs<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments>;

fn bind<'q, O>(query: Query<'q, O>, filter: &'q BulkFilter, as_of: DateTime<Utc>) -> Query<'q, O> {
    let labels = (!filter.labels.is_empty())
        .then(|| serde_json::to_value(&filter.labels).expect("labels serialise"));
    query
        .bind(filter.queue.as_ref().map(QueueName::as_str))
        .bind(filter.allowed_queues.as_deref())
        .bind(filter.state)
        .bind(labels)
        .bind(filter.created_after)
        .bind(filter.created_before)
        .bind(filter.text.as_deref().map(str::to_lowercase))
        .bind(as_of)
}

/// How many jobs the action would change at `as_of`.
///
/// # Errors
/// PostgreSQL unreachable.
pub async fn count(
    db: impl PgExecutor<'_>,
    action: BulkAction,
    filter: &BulkFilter,
    as_of: DateTime<Utc>,
) -> Result<i64, RepoError> {
    let sql = format!("SELECT count(*) FROM jobs WHERE {}", predicate(action));
    let (n,): (i64,) = bind(sqlx::query_as(sqlx::AssertSqlSafe(sql)), filter, as_of)
        .fetch_one(db)
        .await?;
    Ok(n)
}

/// A job put back to run, as dispatching it needs.
#[derive(Debug, Clone)]
pub struct Reset {
    pub id: JobId,
    pub queue: QueueName,
    pub spec: JobSpec,
    pub run_at: DateTime<Utc>,
}

/// Puts the next batch (ids above `after`) of matching dead or cancelled jobs back to
/// run from their first attempt, in a new round, each with its dispatch outbox row: the
/// jobs to send to Redis once committed.
///
/// # Errors
/// PostgreSQL unreachable.
pub async fn retry_batch(
    db: impl PgExecutor<'_>,
    filter: &BulkFilter,
    as_of: DateTime<Utc>,
    after: Option<JobId>,
) -> Result<Vec<Reset>, RepoError> {
    let sql = format!(
        "WITH picked AS (
             SELECT id FROM jobs WHERE {} AND ($9::uuid IS NULL OR id > $9)
             ORDER BY id LIMIT $10 FOR UPDATE
         ), reset AS (
             UPDATE jobs j SET state = 'queued', attempts = 0, round = j.round + 1, run_at = now(),
                    finished_at = NULL, updated_at = now(), progress_percent = NULL,
                    progress_message = NULL, progress_at = NULL
             FROM picked WHERE j.id = picked.id
             RETURNING j.id, j.queue, j.spec, j.run_at
         ), outbox AS (
             INSERT INTO job_dispatch (job_id) SELECT id FROM reset ON CONFLICT (job_id) DO NOTHING
         )
         SELECT id, queue, spec, run_at FROM reset ORDER BY id",
        predicate(BulkAction::Retry)
    );
    let rows: Vec<(JobId, QueueName, Json<JobSpec>, DateTime<Utc>)> =
        bind(sqlx::query_as(sqlx::AssertSqlSafe(sql)), filter, as_of)
            .bind(after.map(|id| id.as_uuid()))
            .bind(BATCH)
            .fetch_all(db)
            .await?;
    Ok(rows
        .into_iter()
        .map(|(id, queue, spec, run_at)| Reset {
            id,
            queue,
            spec: spec.0,
            run_at,
        })
        .collect())
}

/// Cancels the next batch (ids above `after`) of matching live jobs; returns them, by
/// id, with their queues (to take out of Redis before the commit).
///
/// # Errors
/// PostgreSQL unreachable.
pub async fn cancel_batch(
    db: impl PgExecutor<'_>,
    filter: &BulkFilter,
    as_of: DateTime<Utc>,
    after: Option<JobId>,
) -> Result<Vec<(JobId, QueueName)>, RepoError> {
    let sql = format!(
        "WITH picked AS (
             SELECT id FROM jobs WHERE {} AND ($9::uuid IS NULL OR id > $9)
             ORDER BY id LIMIT $10 FOR UPDATE
         )
         UPDATE jobs j SET state = 'cancelled', finished_at = now(), updated_at = now()
         FROM picked WHERE j.id = picked.id
         RETURNING j.id, j.queue",
        predicate(BulkAction::Cancel)
    );
    let mut jobs: Vec<(JobId, QueueName)> =
        bind(sqlx::query_as(sqlx::AssertSqlSafe(sql)), filter, as_of)
            .bind(after.map(|id| id.as_uuid()))
            .bind(BATCH)
            .fetch_all(db)
            .await?;
    jobs.sort_by_key(|(id, _)| *id);
    Ok(jobs)
}
