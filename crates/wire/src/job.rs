//! Jobs and their executions, as the API shows them (secret header values already
//! `[redacted]`).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::{JobState, Method};

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

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct BackoffView {
    pub initial_ms: u64,
    pub max_ms: u64,
    pub multiplier: f64,
    pub jitter: bool,
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

/// Every attempt of a job, by round and attempt.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ExecutionList {
    pub job_id: Uuid,
    pub executions: Vec<ExecutionView>,
}
