//! Reading jobs: the row as stored, with its effective state (SQL's
//! `job_effective_state`, the one rule), one column list for every read, and the job
//! list's keyset pagination.

use chrono::{DateTime, Utc};
use sqlx::{PgExecutor, types::Json};
use uuid::Uuid;

use super::RepoError;
use crate::domain::{JobId, JobSpec, JobState, Labels, NewJob, QueueName};
use crate::queue::Dispatch;

/// A job as stored; `state` is its effective state (see the module docs).
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

/// A job another job made (its callback), with its effective state.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct ChildJob {
    pub id: JobId,
    pub state: JobState,
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
                       FROM jobs c WHERE c.callback_of = jobs.id) AS "callbacks: Json<Vec<crate::repo::ChildJob>>",
                      jobs.progress_percent, jobs.progress_message, jobs.progress_at "#
                + $tail
            $(, $arg)*
        )
    };
}
pub(crate) use select_jobs;

impl JobState {
    /// The state a job is stored in when it arrives: queued when due by `now`.
    pub fn on_arrival(run_at: DateTime<Utc>, now: DateTime<Utc>) -> Self {
        if run_at <= now {
            Self::Queued
        } else {
            Self::Scheduled
        }
    }
}

impl JobRow {
    /// The row [`super::insert_jobs`] stores for `job` at `now`, without reading it back.
    /// Times are cut to PostgreSQL's microseconds, so the answer to a submission shows
    /// the same times as every later read.
    pub fn from_new(job: NewJob, now: DateTime<Utc>) -> Self {
        let now = to_micros(now);
        Self {
            id: job.id,
            state: JobState::on_arrival(job.run_at, now),
            queue: job.queue,
            spec: Json(job.spec),
            labels: Json(job.labels),
            attempts: 0,
            round: 1,
            run_at: to_micros(job.run_at),
            last_status_code: None,
            last_error: None,
            last_duration_ms: None,
            created_at: now,
            updated_at: now,
            finished_at: None,
            callback_of: job.callback_of,
            callbacks: None,
            progress_percent: None,
            progress_message: None,
            progress_at: None,
        }
    }

    /// What dispatching this job to Redis needs.
    pub fn to_dispatch(&self) -> Dispatch {
        Dispatch::new(
            self.id,
            self.queue.clone(),
            &self.spec.0,
            self.run_at,
            self.attempts.max(0) as u32,
        )
    }
}

/// `at` cut to whole microseconds, as PostgreSQL stores it.
pub fn to_micros(at: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(at.timestamp_micros()).unwrap_or(at)
}

/// One job.
///
/// # Errors
/// PostgreSQL unreachable.
pub async fn get_job(db: impl PgExecutor<'_>, id: JobId) -> Result<Option<JobRow>, RepoError> {
    Ok(select_jobs!("FROM jobs WHERE id = $1", id as JobId)
        .fetch_optional(db)
        .await?)
}

/// The jobs among `ids` that exist.
///
/// # Errors
/// PostgreSQL unreachable.
pub async fn get_jobs(db: impl PgExecutor<'_>, ids: &[JobId]) -> Result<Vec<JobRow>, RepoError> {
    let ids: Vec<Uuid> = ids.iter().map(JobId::as_uuid).collect();
    Ok(select_jobs!("FROM jobs WHERE id = ANY($1)", &ids)
        .fetch_all(db)
        .await?)
}

/// One job, locked for the rest of the transaction.
///
/// # Errors
/// PostgreSQL unreachable.
pub async fn lock_job(db: impl PgExecutor<'_>, id: JobId) -> Result<Option<JobRow>, RepoError> {
    Ok(
        select_jobs!("FROM jobs WHERE id = $1 FOR UPDATE", id as JobId)
            .fetch_optional(db)
            .await?,
    )
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
pub async fn list_jobs(
    db: impl PgExecutor<'_>,
    filter: &JobFilter,
) -> Result<Vec<JobRow>, RepoError> {
    let labels = (!filter.labels.is_empty())
        .then(|| serde_json::to_value(&filter.labels).expect("labels serialise"));
    Ok(select_jobs!(
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
    .await?)
}
