//! Jobs and their executions, as the API shows them. Secret header values are redacted
//! here, the one place jobs are turned into answers.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::{
    JobState,
    domain::{Backoff, Callback, Method, Target},
    repo::{ExecutionRow, JobRow},
};

/// The ids of an accepted batch, in request order.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct BatchAccepted {
    pub ids: Vec<Uuid>,
}

/// A job as clients see it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct JobView {
    pub id: Uuid,
    pub queue: String,
    pub state: JobState,
    pub priority: u8,
    pub target: TargetView,
    pub timeout_ms: u64,
    pub max_attempts: u32,
    /// Attempts made so far in this round.
    pub attempts: u32,
    /// 1, then one more for each retry after the job was dead or cancelled.
    pub round: u32,
    pub backoff: BackoffView,
    pub retry_on_status: Vec<u16>,
    pub follow_redirects: bool,
    /// The flow key whose limits the job's calls count against.
    pub flow_key: Option<String>,
    /// Where the job is POSTed when it ends in a state of `on`.
    pub callback: Option<CallbackView>,
    /// The job whose end made this one (this is its callback).
    pub callback_of: Option<Uuid>,
    /// The callback jobs this job's ends made, oldest first.
    pub callbacks: Vec<CallbackRef>,
    /// The latest progress the target reported (`POST /v1/jobs/{id}/progress`).
    pub progress: Option<ProgressView>,
    pub labels: BTreeMap<String, String>,
    /// The schedule occurrence that made this job, if one did.
    pub schedule: Option<OccurrenceView>,
    /// When the next attempt may start; absent once the job is terminal or running.
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// The outcome of the latest finished attempt.
    pub last_outcome: Option<LastOutcome>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// The call, with secret header values shown as `[redacted]`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TargetView {
    pub url: String,
    pub method: Method,
    pub headers: BTreeMap<String, String>,
    pub body: String,
}

impl TargetView {
    pub fn new(target: &Target) -> Self {
        Self {
            url: target.url.as_str().to_owned(),
            method: target.method,
            headers: target
                .redacted_headers()
                .map(|(n, v)| (n.to_owned(), v.to_owned()))
                .collect(),
            body: target.body.clone(),
        }
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct BackoffView {
    pub initial_ms: u64,
    pub max_ms: u64,
    pub multiplier: f64,
    pub jitter: bool,
}

impl From<&Backoff> for BackoffView {
    fn from(b: &Backoff) -> Self {
        Self {
            initial_ms: b.initial_ms,
            max_ms: b.max_ms,
            multiplier: b.multiplier,
            jitter: b.jitter,
        }
    }
}

/// A schedule's occurrence.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct OccurrenceView {
    /// The schedule's name.
    pub name: String,
    /// The occurrence's time in the schedule's calendar.
    pub occurrence: DateTime<Utc>,
}

/// A job's callback, with secret header values shown as `[redacted]`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CallbackView {
    pub url: String,
    pub headers: BTreeMap<String, String>,
    pub on: Vec<JobState>,
}

impl CallbackView {
    pub fn new(callback: &Callback) -> Self {
        Self {
            url: callback.url.as_str().to_owned(),
            headers: callback
                .redacted_headers()
                .map(|(n, v)| (n.to_owned(), v.to_owned()))
                .collect(),
            on: callback.on.clone(),
        }
    }
}

/// A callback job a job made.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CallbackRef {
    pub id: Uuid,
    pub state: JobState,
}

/// Progress a target reported while a call ran.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ProgressView {
    /// 0 to 100.
    pub percent: u8,
    pub message: Option<String>,
    pub updated_at: DateTime<Utc>,
}

/// The latest attempt's result.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct LastOutcome {
    pub status_code: Option<u16>,
    pub error: Option<String>,
    pub duration_ms: u32,
}

impl JobView {
    pub fn new(row: &JobRow) -> Self {
        let spec = &row.spec.0;
        let state = row.state;
        Self {
            id: row.id.as_uuid(),
            queue: row.queue.to_string(),
            state,
            priority: spec.priority.get(),
            target: TargetView::new(&spec.target),
            timeout_ms: spec.timeout_ms,
            max_attempts: spec.max_attempts,
            attempts: row.attempts.max(0) as u32,
            round: row.round.max(1) as u32,
            backoff: BackoffView::from(&spec.backoff),
            retry_on_status: spec.retry_on_status.clone(),
            follow_redirects: spec.follow_redirects,
            flow_key: spec.flow_key.as_ref().map(ToString::to_string),
            callback: spec.callback.as_ref().map(CallbackView::new),
            callback_of: row.callback_of.map(|p| p.as_uuid()),
            callbacks: row
                .callbacks
                .iter()
                .flat_map(|c| c.0.iter())
                .map(|c| CallbackRef {
                    id: c.id.as_uuid(),
                    state: c.state,
                })
                .collect(),
            progress: row
                .progress_percent
                .zip(row.progress_at)
                .map(|(percent, updated_at)| ProgressView {
                    percent: percent.clamp(0, 100) as u8,
                    message: row.progress_message.clone(),
                    updated_at,
                }),
            labels: row.labels.0.clone(),
            schedule: spec.occurrence.as_ref().map(|o| OccurrenceView {
                name: o.schedule.to_string(),
                occurrence: o.at,
            }),
            next_attempt_at: matches!(state, JobState::Scheduled | JobState::Queued)
                .then_some(row.run_at),
            last_outcome: row.last_duration_ms.map(|duration| LastOutcome {
                status_code: row.last_status_code.map(|c| c as u16),
                error: row.last_error.clone(),
                duration_ms: duration.max(0) as u32,
            }),
            created_at: row.created_at,
            updated_at: row.updated_at,
            finished_at: row.finished_at,
        }
    }
}

/// One page of jobs, newest first.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct JobPage {
    pub jobs: Vec<JobView>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// One attempt.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ExecutionView {
    /// 1, then one more for each retry of the job after it was dead or cancelled.
    pub round: u32,
    /// 1-based within its round.
    pub attempt: u32,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub worker: String,
    /// `succeeded`, `failed`, `timeout`, `connection_error`, `cancelled` or `lease_expired`.
    pub outcome: String,
    /// The late result of an attempt whose lease had been lost; it did not change the job.
    pub stale: bool,
    pub status_code: Option<u16>,
    pub duration_ms: u32,
    pub error: Option<String>,
    /// The first 4 KiB of the response body.
    pub response_excerpt: Option<String>,
}

impl From<ExecutionRow> for ExecutionView {
    fn from(row: ExecutionRow) -> Self {
        Self {
            round: row.round.max(1) as u32,
            attempt: row.attempt.max(0) as u32,
            started_at: row.started_at,
            finished_at: row.finished_at,
            worker: row.worker,
            outcome: row.outcome,
            stale: row.stale,
            status_code: row.status_code.map(|c| c as u16),
            duration_ms: row.duration_ms.max(0) as u32,
            error: row.error,
            response_excerpt: row.response_excerpt,
        }
    }
}

/// Every attempt of a job, by round and attempt.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ExecutionList {
    pub job_id: Uuid,
    pub executions: Vec<ExecutionView>,
}
