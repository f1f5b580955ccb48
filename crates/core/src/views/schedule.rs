//! Schedules and their runs, as the API shows them.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::{BackoffView, TargetView};
use crate::{
    repo::schedules::{RunRow, ScheduleRow},
    schedule::{CalendarSource, CatchupPolicy, JobTemplate, Overlap, ScheduleDef},
};

/// A schedule, with its next occurrences.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ScheduleView {
    pub id: Uuid,
    pub name: String,
    /// A cron expression (5 fields, or 6 with seconds first); absent with `every_ms`.
    pub cron: Option<String>,
    /// The IANA time zone the cron expression is read in.
    pub timezone: String,
    /// A period in milliseconds; absent with `cron`.
    pub every_ms: Option<i64>,
    /// The job each occurrence makes.
    pub job: JobTemplateView,
    pub overlap: Overlap,
    pub catchup: CatchupView,
    pub jitter_ms: i64,
    pub start_at: Option<DateTime<Utc>>,
    pub end_at: Option<DateTime<Utc>>,
    pub paused: bool,
    pub note: String,
    /// The next 5 occurrences (from now, or from `start_at`), in UTC.
    pub next_occurrences: Vec<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// The catch-up policy.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CatchupView {
    pub policy: CatchupPolicy,
    pub window_ms: i64,
    pub max: u32,
}

/// The job a schedule makes, with secret header values shown as `[redacted]`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct JobTemplateView {
    pub queue: String,
    pub target: TargetView,
    pub timeout_ms: u64,
    pub max_attempts: u32,
    pub backoff: BackoffView,
    pub priority: u8,
    pub retry_on_status: Vec<u16>,
    pub follow_redirects: bool,
    pub flow_key: Option<String>,
    pub callback: Option<super::CallbackView>,
    pub labels: BTreeMap<String, String>,
}

impl JobTemplateView {
    pub fn new(job: &JobTemplate) -> Self {
        let spec = &job.spec;
        Self {
            queue: job.queue.to_string(),
            target: TargetView::new(&spec.target),
            timeout_ms: spec.timeout_ms,
            max_attempts: spec.max_attempts,
            backoff: BackoffView::from(&spec.backoff),
            priority: spec.priority.get(),
            retry_on_status: spec.retry_on_status.clone(),
            follow_redirects: spec.follow_redirects,
            flow_key: spec.flow_key.as_ref().map(ToString::to_string),
            callback: spec.callback.as_ref().map(super::CallbackView::new),
            labels: job.labels.clone(),
        }
    }
}

impl ScheduleView {
    /// The view of `row` (defined by `def`), its next occurrences counted from `now`.
    pub fn new(row: &ScheduleRow, def: &ScheduleDef, now: DateTime<Utc>) -> Self {
        let (cron, every_ms) = match &def.source {
            CalendarSource::Cron { expression, .. } => (Some(expression.clone()), None),
            CalendarSource::Every { every_ms } => (None, Some(*every_ms)),
        };
        Self {
            id: row.id,
            name: row.name.to_string(),
            cron,
            timezone: row.timezone.clone(),
            every_ms,
            job: JobTemplateView::new(&def.job),
            overlap: def.overlap,
            catchup: CatchupView {
                policy: def.catchup.policy,
                window_ms: def.catchup.window_ms,
                max: def.catchup.max,
            },
            jitter_ms: def.jitter_ms,
            start_at: def.start_at,
            end_at: def.end_at,
            paused: def.paused,
            note: def.note.clone(),
            next_occurrences: def.upcoming(now, 5),
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

/// Schedules by name.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ScheduleList {
    pub schedules: Vec<ScheduleView>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// One occurrence of a schedule: fired with its job, waiting for the previous job
/// (`buffered`), or skipped with the reason.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RunView {
    /// The occurrence's time (a trigger's: when it was asked for).
    pub occurrence: DateTime<Utc>,
    /// `calendar`, `trigger` or `backfill`.
    pub kind: String,
    /// `fired`, `buffered` or `skipped`.
    pub outcome: String,
    /// Why it was skipped: `overlap`, `missed` or `paused`.
    pub reason: Option<String>,
    pub job_id: Option<Uuid>,
    /// When it was decided.
    pub decided_at: DateTime<Utc>,
    /// How long after its time its job was created.
    pub lateness_ms: Option<i64>,
}

impl From<RunRow> for RunView {
    fn from(row: RunRow) -> Self {
        Self {
            occurrence: row.occurrence,
            kind: row.kind,
            outcome: row.outcome,
            reason: row.reason,
            job_id: row.job_id,
            decided_at: row.decided_at,
            lateness_ms: row.lateness_ms,
        }
    }
}

/// A schedule's runs, newest occurrence first.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RunPage {
    pub runs: Vec<RunView>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}
