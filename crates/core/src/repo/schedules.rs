//! The `schedules` and `schedule_runs` tables: definitions, the scheduler's claims and
//! advances, and every occurrence's run.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{PgExecutor, types::Json};
use uuid::Uuid;

use super::RepoError;
use crate::{
    domain::{JobId, ScheduleName},
    schedule::{
        CalendarSource, Catchup, CatchupPolicy, JobTemplate, Overlap, ScheduleDef, SkipReason,
    },
};

/// A schedule as stored.
#[derive(Debug, Clone)]
pub struct ScheduleRow {
    pub id: Uuid,
    pub name: ScheduleName,
    pub cron: Option<String>,
    pub timezone: String,
    pub every_ms: Option<i64>,
    pub job: Json<JobTemplate>,
    pub overlap: Overlap,
    pub catchup_policy: CatchupPolicy,
    pub catchup_window_ms: i64,
    pub catchup_max: i32,
    pub jitter_ms: i64,
    pub start_at: Option<DateTime<Utc>>,
    pub end_at: Option<DateTime<Utc>>,
    pub paused: bool,
    pub note: String,
    pub next_at: Option<DateTime<Utc>>,
    pub last_job_id: Option<Uuid>,
    pub buffered_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A row that no longer makes a valid definition (a time zone the running binary does
/// not know, say).
#[derive(Debug, thiserror::Error)]
#[error("schedule {name}: {field} {message}")]
pub struct StoredScheduleInvalid {
    pub name: String,
    pub field: &'static str,
    pub message: String,
}

impl ScheduleRow {
    /// The definition this row stores.
    ///
    /// # Errors
    /// A stored value this binary cannot use.
    pub fn def(&self) -> Result<ScheduleDef, StoredScheduleInvalid> {
        let bad = |field: &'static str, message: String| StoredScheduleInvalid {
            name: self.name.to_string(),
            field,
            message,
        };
        let source = match (&self.cron, self.every_ms) {
            (Some(expression), None) => CalendarSource::Cron {
                expression: expression.clone(),
                timezone: self.timezone.clone(),
            },
            (None, Some(every_ms)) => CalendarSource::Every { every_ms },
            _ => {
                return Err(bad(
                    "cron",
                    "and every_ms are both set or both missing".into(),
                ));
            }
        };
        let calendar =
            ScheduleDef::calendar_of(&source, self.start_at).map_err(|(f, m)| bad(f, m))?;
        Ok(ScheduleDef {
            name: self.name.clone(),
            source,
            calendar,
            job: self.job.0.clone(),
            overlap: self.overlap,
            catchup: Catchup {
                policy: self.catchup_policy,
                window_ms: self.catchup_window_ms,
                max: self.catchup_max.max(1) as u32,
            },
            jitter_ms: self.jitter_ms,
            start_at: self.start_at,
            end_at: self.end_at,
            paused: self.paused,
            note: self.note.clone(),
        })
    }
}

/// `sqlx::query_as!(ScheduleRow, ...)` over the one column list of `schedules s`.
macro_rules! select_schedules {
    ($tail:tt $(, $arg:expr)* $(,)?) => {
        sqlx::query_as!(
            ScheduleRow,
            r#"SELECT s.id, s.name AS "name: ScheduleName", s.cron, s.timezone, s.every_ms,
                      s.job AS "job: Json<JobTemplate>", s.overlap AS "overlap: Overlap",
                      s.catchup_policy AS "catchup_policy: CatchupPolicy",
                      s.catchup_window_ms, s.catchup_max, s.jitter_ms, s.start_at, s.end_at,
                      s.paused, s.note, s.next_at, s.last_job_id, s.buffered_at, s.created_at,
                      s.updated_at "#
                + $tail
            $(, $arg)*
        )
    };
}

/// Stores a schedule under `id`, or replaces the definition of the one of the same name
/// (keeping its id, runs and overlap state). Returns the schedule's id and whether it
/// was created. Notifies the schedulers.
///
/// # Errors
/// PostgreSQL unreachable.
pub async fn upsert_schedule(
    db: impl PgExecutor<'_>,
    id: Uuid,
    def: &ScheduleDef,
    next_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Result<(Uuid, bool), RepoError> {
    let (cron, timezone, every_ms) = source_columns(&def.source);
    let row = sqlx::query!(
        r#"WITH upsert AS (
               INSERT INTO schedules (id, name, cron, timezone, every_ms, job, overlap, catchup_policy,
                                      catchup_window_ms, catchup_max, jitter_ms, start_at, end_at, paused,
                                      note, next_at, created_at, updated_at)
               VALUES ($1, $2, $3, $4, $5, $6::text::json, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $17)
               ON CONFLICT (name) DO UPDATE SET
                   cron = EXCLUDED.cron, timezone = EXCLUDED.timezone, every_ms = EXCLUDED.every_ms,
                   job = EXCLUDED.job, overlap = EXCLUDED.overlap,
                   catchup_policy = EXCLUDED.catchup_policy,
                   catchup_window_ms = EXCLUDED.catchup_window_ms, catchup_max = EXCLUDED.catchup_max,
                   jitter_ms = EXCLUDED.jitter_ms, start_at = EXCLUDED.start_at, end_at = EXCLUDED.end_at,
                   paused = EXCLUDED.paused, note = EXCLUDED.note, next_at = EXCLUDED.next_at,
                   updated_at = EXCLUDED.updated_at
               RETURNING id, (xmax = 0) AS created
           ), notified AS (
               SELECT pg_notify('courier_schedules', '') FROM upsert
           )
           SELECT id AS "id!", created AS "created!" FROM upsert, notified"#,
        id,
        def.name.as_str(),
        cron,
        timezone,
        every_ms,
        serde_json::to_string(&def.job).expect("a job template serialises"),
        def.overlap as Overlap,
        def.catchup.policy as CatchupPolicy,
        def.catchup.window_ms,
        def.catchup.max as i32,
        def.jitter_ms,
        def.start_at,
        def.end_at,
        def.paused,
        def.note,
        next_at,
        now,
    )
    .fetch_one(db)
    .await?;
    Ok((row.id, row.created))
}

fn source_columns(source: &CalendarSource) -> (Option<&str>, &str, Option<i64>) {
    match source {
        CalendarSource::Cron {
            expression,
            timezone,
        } => (Some(expression), timezone, None),
        CalendarSource::Every { every_ms } => (None, "UTC", Some(*every_ms)),
    }
}

/// One schedule, by name.
///
/// # Errors
/// PostgreSQL unreachable.
pub async fn get_schedule(
    db: impl PgExecutor<'_>,
    name: &ScheduleName,
) -> Result<Option<ScheduleRow>, RepoError> {
    Ok(
        select_schedules!("FROM schedules s WHERE s.name = $1", name.as_str())
            .fetch_optional(db)
            .await?,
    )
}

/// One schedule, by name, locked for the rest of the transaction.
///
/// # Errors
/// PostgreSQL unreachable.
pub async fn lock_schedule(
    db: impl PgExecutor<'_>,
    name: &ScheduleName,
) -> Result<Option<ScheduleRow>, RepoError> {
    Ok(select_schedules!(
        "FROM schedules s WHERE s.name = $1 FOR UPDATE",
        name.as_str()
    )
    .fetch_optional(db)
    .await?)
}

/// Schedules by name, after `after` (keyset pagination).
///
/// # Errors
/// PostgreSQL unreachable.
pub async fn list_schedules(
    db: impl PgExecutor<'_>,
    after: Option<&ScheduleName>,
    limit: i64,
) -> Result<Vec<ScheduleRow>, RepoError> {
    Ok(select_schedules!(
        "FROM schedules s WHERE ($1::text IS NULL OR s.name > $1) ORDER BY s.name LIMIT $2",
        after.map(ScheduleName::as_str),
        limit
    )
    .fetch_all(db)
    .await?)
}

/// Deletes a schedule and its runs (its jobs stay); whether it existed.
///
/// # Errors
/// PostgreSQL unreachable.
pub async fn delete_schedule(
    db: impl PgExecutor<'_>,
    name: &ScheduleName,
) -> Result<bool, RepoError> {
    let done = sqlx::query!(
        r#"WITH gone AS (DELETE FROM schedules WHERE name = $1 RETURNING id),
                notified AS (SELECT pg_notify('courier_schedules', '') FROM gone)
           SELECT count(*) AS "n!" FROM gone, notified"#,
        name.as_str()
    )
    .fetch_one(db)
    .await?;
    Ok(done.n > 0)
}

/// A due schedule the scheduler holds (locked) and what deciding it needs.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub row: ScheduleRow,
    /// The job of its latest fired occurrence has not finished.
    pub previous_live: bool,
    /// That job's queue, to cancel it (`cancel_previous`).
    pub previous_queue: Option<String>,
}

/// Claims up to `limit` schedules whose next occurrence is due at `now`, and those with
/// a buffered occurrence whose previous job has finished; locked, skipping those
/// another scheduler holds. Call inside a transaction.
///
/// # Errors
/// PostgreSQL unreachable.
pub async fn claim_due(
    db: impl PgExecutor<'_>,
    now: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<Claimed>, RepoError> {
    let rows = sqlx::query!(
        // The `!`s: with `jobs` partitioned, sqlx no longer infers that the left side of
        // the join keeps its columns' NOT NULL.
        r#"SELECT s.id AS "id!", s.name AS "name!: ScheduleName", s.cron, s.timezone AS "timezone!", s.every_ms,
                  s.job AS "job!: Json<JobTemplate>", s.overlap AS "overlap!: Overlap", s.catchup_policy AS "catchup_policy!: CatchupPolicy",
                  s.catchup_window_ms AS "catchup_window_ms!", s.catchup_max AS "catchup_max!",
                  s.jitter_ms AS "jitter_ms!", s.start_at, s.end_at, s.paused AS "paused!", s.note AS "note!",
                  s.next_at, s.last_job_id, s.buffered_at, s.created_at AS "created_at!",
                  s.updated_at AS "updated_at!",
                  j.state IS NOT NULL AND job_is_live(j.state) AS "previous_live!",
                  j.queue AS "previous_queue?"
           FROM schedules s LEFT JOIN jobs j ON j.id = s.last_job_id
           WHERE s.id IN (SELECT id FROM schedules WHERE next_at <= $1 ORDER BY next_at LIMIT $2
                          FOR UPDATE SKIP LOCKED)
              OR s.id IN (SELECT id FROM schedules
                          WHERE buffered_at IS NOT NULL AND NOT EXISTS (
                              SELECT 1 FROM jobs WHERE jobs.id = schedules.last_job_id
                                AND job_is_live(jobs.state))
                          LIMIT $2
                          FOR UPDATE SKIP LOCKED)"#,
        now,
        limit
    )
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| Claimed {
            previous_live: r.previous_live,
            previous_queue: r.previous_queue,
            row: ScheduleRow {
                id: r.id,
                name: r.name,
                cron: r.cron,
                timezone: r.timezone,
                every_ms: r.every_ms,
                job: r.job,
                overlap: r.overlap,
                catchup_policy: r.catchup_policy,
                catchup_window_ms: r.catchup_window_ms,
                catchup_max: r.catchup_max,
                jitter_ms: r.jitter_ms,
                start_at: r.start_at,
                end_at: r.end_at,
                paused: r.paused,
                note: r.note,
                next_at: r.next_at,
                last_job_id: r.last_job_id,
                buffered_at: r.buffered_at,
                created_at: r.created_at,
                updated_at: r.updated_at,
            },
        })
        .collect())
}

/// When the scheduler must next look: the earliest `next_at`, and whether some
/// schedule has a buffered occurrence (which fires when a job finishes, not at a time).
///
/// # Errors
/// PostgreSQL unreachable.
pub async fn next_wake(
    db: impl PgExecutor<'_>,
) -> Result<(Option<DateTime<Utc>>, bool), RepoError> {
    let row = sqlx::query!(
        r#"SELECT min(next_at) AS next, COALESCE(bool_or(buffered_at IS NOT NULL), false) AS "buffered!"
           FROM schedules WHERE next_at IS NOT NULL OR buffered_at IS NOT NULL"#
    )
    .fetch_one(db)
    .await?;
    Ok((row.next, row.buffered))
}

/// A schedule's state after the scheduler decided its occurrences.
#[derive(Debug, Clone)]
pub struct Advance {
    pub id: Uuid,
    pub next_at: Option<DateTime<Utc>>,
    pub last_job_id: Option<Uuid>,
    pub buffered_at: Option<DateTime<Utc>>,
}

/// Stores where each schedule now stands, in one statement.
///
/// # Errors
/// PostgreSQL unreachable.
pub async fn advance(
    db: impl PgExecutor<'_>,
    advances: &[Advance],
    now: DateTime<Utc>,
) -> Result<(), RepoError> {
    if advances.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = advances.iter().map(|a| a.id).collect();
    let next: Vec<Option<DateTime<Utc>>> = advances.iter().map(|a| a.next_at).collect();
    let last: Vec<Option<Uuid>> = advances.iter().map(|a| a.last_job_id).collect();
    let buffered: Vec<Option<DateTime<Utc>>> = advances.iter().map(|a| a.buffered_at).collect();
    sqlx::query!(
        "UPDATE schedules SET next_at = a.next_at, last_job_id = a.last_job_id,
                buffered_at = a.buffered_at, updated_at = $5
         FROM UNNEST($1::uuid[], $2::timestamptz[], $3::uuid[], $4::timestamptz[])
              AS a(id, next_at, last_job_id, buffered_at)
         WHERE schedules.id = a.id",
        &ids,
        &next as &[Option<DateTime<Utc>>],
        &last as &[Option<Uuid>],
        &buffered as &[Option<DateTime<Utc>>],
        now
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Sets a schedule's pause (and its note, when given); whether the schedule exists.
/// Notifies the schedulers.
///
/// # Errors
/// PostgreSQL unreachable.
pub async fn set_paused(
    db: impl PgExecutor<'_>,
    name: &ScheduleName,
    paused: bool,
    note: Option<&str>,
    now: DateTime<Utc>,
) -> Result<bool, RepoError> {
    let done = sqlx::query!(
        r#"WITH changed AS (
               UPDATE schedules SET paused = $2, note = COALESCE($3, note), updated_at = $4
               WHERE name = $1 RETURNING id
           ), notified AS (SELECT pg_notify('courier_schedules', '') FROM changed)
           SELECT count(*) AS "n!" FROM changed, notified"#,
        name.as_str(),
        paused,
        note,
        now
    )
    .fetch_one(db)
    .await?;
    Ok(done.n > 0)
}

/// How an occurrence came about. Stored as text (`schedule_runs.kind`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema, sqlx::Type,
)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum RunKind {
    /// The calendar.
    Calendar,
    /// `POST /v1/schedules/{name}/trigger`.
    Trigger,
    /// `POST /v1/schedules/{name}/backfill`.
    Backfill,
}

impl RunKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Calendar => "calendar",
            Self::Trigger => "trigger",
            Self::Backfill => "backfill",
        }
    }
}

/// What became of an occurrence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunOutcome {
    Fired(JobId),
    /// Waiting for the previous job to finish (`buffer_one`).
    Buffered,
    Skipped(SkipReason),
}

/// One occurrence's run, to record.
#[derive(Debug, Clone, Copy)]
pub struct NewRun {
    pub schedule: Uuid,
    pub occurrence: DateTime<Utc>,
    pub kind: RunKind,
    pub outcome: RunOutcome,
    pub decided_at: DateTime<Utc>,
}

/// Records runs, in one statement. A run already recorded for the same occurrence is
/// replaced only to fire it (a buffered occurrence firing, a missed one backfilled).
///
/// # Errors
/// PostgreSQL unreachable.
pub async fn record_runs(db: impl PgExecutor<'_>, runs: &[NewRun]) -> Result<(), RepoError> {
    if runs.is_empty() {
        return Ok(());
    }
    let schedules: Vec<Uuid> = runs.iter().map(|r| r.schedule).collect();
    let occurrences: Vec<DateTime<Utc>> = runs.iter().map(|r| r.occurrence).collect();
    let kinds: Vec<RunKind> = runs.iter().map(|r| r.kind).collect();
    let outcomes: Vec<&str> = runs
        .iter()
        .map(|r| match r.outcome {
            RunOutcome::Fired(_) => "fired",
            RunOutcome::Buffered => "buffered",
            RunOutcome::Skipped(_) => "skipped",
        })
        .collect();
    let reasons: Vec<Option<SkipReason>> = runs
        .iter()
        .map(|r| match r.outcome {
            RunOutcome::Skipped(reason) => Some(reason),
            _ => None,
        })
        .collect();
    let jobs: Vec<Option<Uuid>> = runs
        .iter()
        .map(|r| match r.outcome {
            RunOutcome::Fired(job) => Some(job.as_uuid()),
            _ => None,
        })
        .collect();
    let decided: Vec<DateTime<Utc>> = runs.iter().map(|r| r.decided_at).collect();
    sqlx::query!(
        "INSERT INTO schedule_runs (schedule_id, occurrence, kind, outcome, reason, job_id, decided_at, lateness_ms)
         SELECT s, o, k, oc, r, j, d,
                CASE WHEN oc = 'fired' THEN (extract(epoch FROM d - o) * 1000)::bigint END
         FROM UNNEST($1::uuid[], $2::timestamptz[], $3::text[], $4::text[], $5::text[], $6::uuid[],
                     $7::timestamptz[]) AS t(s, o, k, oc, r, j, d)
         ON CONFLICT (schedule_id, occurrence) DO UPDATE SET
             outcome = EXCLUDED.outcome, reason = EXCLUDED.reason, job_id = EXCLUDED.job_id,
             decided_at = EXCLUDED.decided_at, lateness_ms = EXCLUDED.lateness_ms,
             kind = CASE WHEN schedule_runs.outcome = 'buffered' THEN schedule_runs.kind ELSE EXCLUDED.kind END
         WHERE EXCLUDED.outcome = 'fired' AND schedule_runs.outcome <> 'fired'",
        &schedules,
        &occurrences,
        &kinds as &[RunKind],
        &outcomes as &[&str],
        &reasons as &[Option<SkipReason>],
        &jobs as &[Option<Uuid>],
        &decided
    )
    .execute(db)
    .await?;
    Ok(())
}

/// One run, as read back.
#[derive(Debug, Clone)]
pub struct RunRow {
    pub occurrence: DateTime<Utc>,
    pub kind: String,
    pub outcome: String,
    pub reason: Option<String>,
    pub job_id: Option<Uuid>,
    pub decided_at: DateTime<Utc>,
    pub lateness_ms: Option<i64>,
}

/// A schedule's runs, newest occurrence first, before `before` (keyset pagination).
///
/// # Errors
/// PostgreSQL unreachable.
pub async fn list_runs(
    db: impl PgExecutor<'_>,
    schedule: Uuid,
    before: Option<DateTime<Utc>>,
    limit: i64,
) -> Result<Vec<RunRow>, RepoError> {
    Ok(sqlx::query_as!(
        RunRow,
        "SELECT occurrence, kind, outcome, reason, job_id, decided_at, lateness_ms
         FROM schedule_runs
         WHERE schedule_id = $1 AND ($2::timestamptz IS NULL OR occurrence < $2)
         ORDER BY occurrence DESC
         LIMIT $3",
        schedule,
        before,
        limit
    )
    .fetch_all(db)
    .await?)
}

/// The fired runs among `occurrences` of a schedule (for a backfill): occurrence and job.
///
/// # Errors
/// PostgreSQL unreachable.
pub async fn fired_among(
    db: impl PgExecutor<'_>,
    schedule: Uuid,
    occurrences: &[DateTime<Utc>],
) -> Result<Vec<(DateTime<Utc>, Uuid)>, RepoError> {
    let rows = sqlx::query!(
        r#"SELECT occurrence, job_id AS "job_id!" FROM schedule_runs
           WHERE schedule_id = $1 AND occurrence = ANY($2) AND outcome = 'fired'"#,
        schedule,
        occurrences
    )
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(|r| (r.occurrence, r.job_id)).collect())
}

/// Jobs holding each of `keys` (idempotency keys), for occurrences fired before.
///
/// # Errors
/// PostgreSQL unreachable.
pub async fn jobs_by_keys(
    db: impl PgExecutor<'_>,
    keys: &[String],
) -> Result<Vec<(String, JobId)>, RepoError> {
    let rows = sqlx::query!(
        r#"SELECT key AS "key!", job_id AS "id: JobId" FROM idempotency_keys WHERE key = ANY($1)"#,
        keys
    )
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(|r| (r.key, r.id)).collect())
}
