//! Schedules and their runs, as the API shows them.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::{BackoffView, CallbackView, TargetView};

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
    pub callback: Option<CallbackView>,
    pub labels: BTreeMap<String, String>,
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

/// A schedule's runs, newest occurrence first.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RunPage {
    pub runs: Vec<RunView>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// What an occurrence does while the previous occurrence's job has not finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Overlap {
    /// The occurrence is skipped (recorded with reason `overlap`).
    #[default]
    Skip,
    /// The occurrence waits and fires when the previous job finishes; at most one waits,
    /// later ones are skipped.
    BufferOne,
    /// The occurrence fires anyway.
    AllowAll,
    /// The previous job is cancelled (its call aborted) and the occurrence fires.
    CancelPrevious,
}

/// What happens to occurrences missed while no scheduler ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CatchupPolicy {
    /// None fires; the next occurrence is on time.
    Skip,
    /// The latest missed occurrence (within the window) fires now.
    #[default]
    Once,
    /// Every missed occurrence within the window fires, oldest first: the most recent
    /// `max` of them.
    All,
}
