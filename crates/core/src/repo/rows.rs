//! Reading jobs: the row as stored, with its effective state (SQL's
//! `job_effective_state`, the one rule), one column list for every read, and the job
//! list's keyset pagination.

use chrono::{DateTime, Utc};
use sqlx::{PgExecutor, types::Json};
use uuid::Uuid;

use super::RepoError;
use crate::domain::{
    ChildJob, Job, JobId, JobSpec, JobState, Labels, LastOutcome, Progress, QueueName,
};

/// A job's row as read, `state` being its effective state (see the module docs); the
/// repository hands out [`Job`]s made from it.
#[derive(Debug, Clone)]
pub struct JobRow {
    pub id: JobId,
    pub queue: QueueName,
    pub state: JobState,
    pub spec: Json<JobSpec>,
    pub labels: Json<Labels>,
    pub attempts: i32,
    pub round: i32,
    pub run_at: DateTime<Utc>,
    pub last_status_code: Option<i16>,
    pub last_error: Option<String>,
    pub last_duration_ms: Option<i32>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    /// The job whose end made this one (a callback).
    pub callback_of: Option<JobId>,
    /// The callbacks this job's ends made, oldest first.
    pub callbacks: Option<Json<Vec<ChildJob>>>,
    pub progress_percent: Option<i16>,
    pub progress_message: Option<String>,
    pub progress_at: Option<DateTime<Utc>>,
}

/// `sqlx::query_as!(JobRow, ...)` over the one column list, followed by `$tail` (the
/// `FROM` clause on): `select_jobs!("FROM jobs WHERE id = $1", id)`.
macro_rules! select_jobs {
    ($tail:tt $(, $arg:expr)* $(,)?) => {
        sqlx::query_as!(
            $crate::repo::JobRow,
            r#"SELECT jobs.id AS "id: JobId", jobs.queue AS "queue: QueueName",
                      job_effective_state(jobs.state, jobs.run_at) AS "state!: JobState",
                      jobs.spec AS "spec: Json<JobSpec>", jobs.labels AS "labels: Json<Labels>",
                      jobs.attempts, jobs.round, jobs.run_at, jobs.last_status_code, jobs.last_error,
                      jobs.last_duration_ms, jobs.created_at, jobs.updated_at, jobs.finished_at,
                      jobs.callback_of AS "callback_of: JobId",
                      (SELECT json_agg(json_build_object('id', c.id, 'state', job_effective_state(c.state, c.run_at))
                                       ORDER BY c.id)
                       FROM jobs c WHERE c.callback_of = jobs.id) AS "callbacks: Json<Vec<crate::domain::ChildJob>>",
                      jobs.progress_percent, jobs.progress_message, jobs.progress_at "#
                + $tail
            $(, $arg)*
        )
    };
}
pub(crate) use select_jobs;

impl From<JobRow> for Job {
    fn from(row: JobRow) -> Self {
        Self {
            id: row.id,
            queue: row.queue,
            state: row.state,
            spec: row.spec.0,
            labels: row.labels.0,
            attempts: row.attempts.max(0) as u32,
            round: row.round.max(1) as u32,
            run_at: row.run_at,
            last: row.last_duration_ms.map(|duration_ms| LastOutcome {
                status_code: row.last_status_code,
                error: row.last_error,
                duration_ms,
            }),
            created_at: row.created_at,
            updated_at: row.updated_at,
            finished_at: row.finished_at,
            callback_of: row.callback_of,
            callbacks: row.callbacks.map(|c| c.0).unwrap_or_default(),
            progress: row
                .progress_percent
                .zip(row.progress_at)
                .map(|(percent, at)| Progress {
                    percent: percent.clamp(0, 100) as u8,
                    message: row.progress_message,
                    at,
                }),
        }
    }
}

/// Rows read into jobs.
pub(crate) fn jobs(rows: Vec<JobRow>) -> Vec<Job> {
    rows.into_iter().map(Job::from).collect()
}

/// One job.
///
/// # Errors
/// PostgreSQL unreachable.
pub async fn get_job(db: impl PgExecutor<'_>, id: JobId) -> Result<Option<Job>, RepoError> {
    Ok(Option::map(
        select_jobs!("FROM jobs WHERE id = $1", id as JobId)
            .fetch_optional(db)
            .await?,
        Job::from,
    ))
}

/// The jobs among `ids` that exist.
///
/// # Errors
/// PostgreSQL unreachable.
pub async fn get_jobs(db: impl PgExecutor<'_>, ids: &[JobId]) -> Result<Vec<Job>, RepoError> {
    let ids: Vec<Uuid> = ids.iter().map(JobId::as_uuid).collect();
    Ok(jobs(
        select_jobs!("FROM jobs WHERE id = ANY($1)", &ids)
            .fetch_all(db)
            .await?,
    ))
}

/// One job, locked for the rest of the transaction.
///
/// # Errors
/// PostgreSQL unreachable.
pub async fn lock_job(db: impl PgExecutor<'_>, id: JobId) -> Result<Option<Job>, RepoError> {
    Ok(Option::map(
        select_jobs!("FROM jobs WHERE id = $1 FOR UPDATE", id as JobId)
            .fetch_optional(db)
            .await?,
        Job::from,
    ))
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
    pub created_after: Option<DateTime<Utc>>,
    pub created_before: Option<DateTime<Utc>>,
    /// Text found (case-insensitively) in the target URL or the last error.
    pub text: Option<String>,
}

/// Jobs newest first.
///
/// # Errors
/// PostgreSQL unreachable.
pub async fn list_jobs(db: impl PgExecutor<'_>, filter: &JobFilter) -> Result<Vec<Job>, RepoError> {
    let labels = (!filter.labels.is_empty())
        .then(|| serde_json::to_value(&filter.labels).expect("labels serialise"));
    Ok(jobs(
        select_jobs!(
            "FROM jobs
         WHERE ($1::text IS NULL OR queue = $1)
           AND ($2::job_state IS NULL OR job_effective_state(state, run_at) = $2)
           AND ($3::jsonb IS NULL OR (labels @> $3 AND labels <> '{}'::jsonb))
           AND ($4::uuid IS NULL OR id < $4)
           AND ($6::timestamptz IS NULL OR created_at >= $6)
           AND ($7::timestamptz IS NULL OR created_at < $7)
           AND ($8::text IS NULL OR strpos(lower(spec -> 'target' ->> 'url'), $8) > 0
                OR strpos(lower(coalesce(last_error, '')), $8) > 0)
         ORDER BY id DESC
         LIMIT $5",
            filter.queue.as_ref().map(QueueName::as_str),
            filter.state as Option<JobState>,
            labels,
            filter.before.map(|id| id.as_uuid()),
            filter.limit,
            filter.created_after,
            filter.created_before,
            filter.text.as_deref().map(str::to_lowercase),
        )
        .fetch_all(db)
        .await?,
    ))
}
