//! Jobs and their executions, as the API shows them: built here from what core knows.
//! Secret header values are redacted here, the one place jobs are turned into answers.

use courier_wire::{
    BackoffView, CallbackRef, CallbackView, ExecutionView, JobView, LastOutcome, OccurrenceView,
    ProgressView, TargetView,
};

use crate::{
    JobState,
    domain::Job,
    domain::{Backoff, Callback, Target},
    repo::ExecutionRow,
};

impl From<JobState> for courier_wire::JobState {
    fn from(state: JobState) -> Self {
        match state {
            JobState::Scheduled => Self::Scheduled,
            JobState::Queued => Self::Queued,
            JobState::Running => Self::Running,
            JobState::Succeeded => Self::Succeeded,
            JobState::Dead => Self::Dead,
            JobState::Cancelled => Self::Cancelled,
        }
    }
}

impl From<courier_wire::JobState> for JobState {
    fn from(state: courier_wire::JobState) -> Self {
        use courier_wire::JobState as Wire;
        match state {
            Wire::Scheduled => Self::Scheduled,
            Wire::Queued => Self::Queued,
            Wire::Running => Self::Running,
            Wire::Succeeded => Self::Succeeded,
            Wire::Dead => Self::Dead,
            Wire::Cancelled => Self::Cancelled,
        }
    }
}

impl From<&Target> for TargetView {
    fn from(target: &Target) -> Self {
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

impl From<&Callback> for CallbackView {
    fn from(callback: &Callback) -> Self {
        Self {
            url: callback.url.as_str().to_owned(),
            headers: callback
                .redacted_headers()
                .map(|(n, v)| (n.to_owned(), v.to_owned()))
                .collect(),
            on: callback.on.iter().map(|s| (*s).into()).collect(),
        }
    }
}

impl From<&Job> for JobView {
    fn from(job: &Job) -> Self {
        let spec = &job.spec;
        let state = job.state;
        Self {
            id: job.id.as_uuid(),
            queue: job.queue.to_string(),
            state: state.into(),
            priority: spec.priority.get(),
            target: TargetView::from(&spec.target),
            timeout_ms: spec.timeout_ms,
            max_attempts: spec.max_attempts,
            attempts: job.attempts,
            round: job.round,
            backoff: BackoffView::from(&spec.backoff),
            retry_on_status: spec.retry_on_status.clone(),
            follow_redirects: spec.follow_redirects,
            flow_key: spec.flow_key.as_ref().map(ToString::to_string),
            callback: spec.callback.as_ref().map(CallbackView::from),
            callback_of: job.callback_of.map(|p| p.as_uuid()),
            callbacks: job
                .callbacks
                .iter()
                .map(|c| CallbackRef {
                    id: c.id.as_uuid(),
                    state: c.state.into(),
                })
                .collect(),
            progress: job.progress.as_ref().map(|p| ProgressView {
                percent: p.percent,
                message: p.message.clone(),
                updated_at: p.at,
            }),
            labels: job.labels.clone(),
            schedule: spec.occurrence.as_ref().map(|o| OccurrenceView {
                name: o.schedule.to_string(),
                occurrence: o.at,
            }),
            next_attempt_at: matches!(state, JobState::Scheduled | JobState::Queued)
                .then_some(job.run_at),
            last_outcome: job.last.as_ref().map(|last| LastOutcome {
                status_code: last.status_code.map(|c| c as u16),
                error: last.error.clone(),
                duration_ms: last.duration_ms.max(0) as u32,
            }),
            created_at: job.created_at,
            updated_at: job.updated_at,
            finished_at: job.finished_at,
        }
    }
}

impl From<ExecutionRow> for ExecutionView {
    fn from(row: ExecutionRow) -> Self {
        Self {
            round: row.round.max(1) as u32,
            attempt: row.attempt.max(0) as u32,
            started_at: row.started_at,
            finished_at: row.finished_at,
            worker: row.worker,
            outcome: row.outcome.as_str().to_owned(),
            stale: row.stale,
            status_code: row.status_code.map(|c| c as u16),
            duration_ms: row.duration_ms.max(0) as u32,
            error: row.error,
            response_excerpt: row.response_excerpt,
        }
    }
}
