//! A job as Courier knows it: what it asks for and where it is in its life. The
//! repository reads it, the stages move it on, and the API's views are built from it.

use chrono::{DateTime, Utc};

use super::{JobId, JobSpec, JobState, Labels, LastOutcome, NewJob, QueueName};

/// A job, with its effective state (a `scheduled` job whose time has come is `queued`).
#[derive(Debug, Clone)]
pub struct Job {
    pub id: JobId,
    pub queue: QueueName,
    pub state: JobState,
    pub spec: JobSpec,
    pub labels: Labels,
    /// Attempts made in this round.
    pub attempts: u32,
    /// 1, then one more for each retry after the job was dead or cancelled.
    pub round: u32,
    /// When the next attempt may start: `run_at` at first, then the retry's time.
    pub run_at: DateTime<Utc>,
    /// The latest finished attempt's outcome, once there is one.
    pub last: Option<LastOutcome>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    /// The job whose end made this one (this is its callback).
    pub callback_of: Option<JobId>,
    /// The callbacks this job's ends made, oldest first.
    pub callbacks: Vec<ChildJob>,
    /// The latest progress the target reported.
    pub progress: Option<Progress>,
}

/// A job another job made (its callback), with its effective state.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct ChildJob {
    pub id: JobId,
    pub state: JobState,
}

/// Progress a target reported while a call ran.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    /// 0 to 100.
    pub percent: u8,
    pub message: Option<String>,
    pub at: DateTime<Utc>,
}

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

impl Job {
    /// The job that accepting `job` at `now` stores, without reading it back. Times are
    /// cut to PostgreSQL's microseconds, so the answer to a submission shows the same
    /// times as every later read.
    pub fn from_new(job: NewJob, now: DateTime<Utc>) -> Self {
        let now = to_micros(now);
        Self {
            id: job.id,
            state: JobState::on_arrival(job.run_at, now),
            queue: job.queue,
            spec: job.spec,
            labels: job.labels,
            attempts: 0,
            round: 1,
            run_at: to_micros(job.run_at),
            last: None,
            created_at: now,
            updated_at: now,
            finished_at: None,
            callback_of: job.callback_of,
            callbacks: Vec::new(),
            progress: None,
        }
    }
}

/// `at` cut to whole microseconds, as PostgreSQL stores it.
pub fn to_micros(at: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(at.timestamp_micros()).unwrap_or(at)
}
