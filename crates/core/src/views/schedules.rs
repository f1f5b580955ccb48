//! Schedules and their runs, as the API shows them.

use chrono::{DateTime, Utc};
use courier_wire::{
    BackoffView, CallbackView, CatchupView, JobTemplateView, RunView, ScheduleView, TargetView,
};

use crate::{
    repo::schedules::{RunRow, ScheduleRow},
    schedule::{CalendarSource, CatchupPolicy, JobTemplate, Overlap, ScheduleDef},
};

impl From<Overlap> for courier_wire::Overlap {
    fn from(overlap: Overlap) -> Self {
        match overlap {
            Overlap::Skip => Self::Skip,
            Overlap::BufferOne => Self::BufferOne,
            Overlap::AllowAll => Self::AllowAll,
            Overlap::CancelPrevious => Self::CancelPrevious,
        }
    }
}

impl From<CatchupPolicy> for courier_wire::CatchupPolicy {
    fn from(policy: CatchupPolicy) -> Self {
        match policy {
            CatchupPolicy::Skip => Self::Skip,
            CatchupPolicy::Once => Self::Once,
            CatchupPolicy::All => Self::All,
        }
    }
}

impl From<&JobTemplate> for JobTemplateView {
    fn from(job: &JobTemplate) -> Self {
        let spec = &job.spec;
        Self {
            queue: job.queue.to_string(),
            target: TargetView::from(&spec.target),
            timeout_ms: spec.timeout_ms,
            max_attempts: spec.max_attempts,
            backoff: BackoffView::from(&spec.backoff),
            priority: spec.priority.get(),
            retry_on_status: spec.retry_on_status.clone(),
            follow_redirects: spec.follow_redirects,
            flow_key: spec.flow_key.as_ref().map(ToString::to_string),
            callback: spec.callback.as_ref().map(CallbackView::from),
            labels: job.labels.clone(),
        }
    }
}

/// The view of schedule `row` (defined by `def`), its next occurrences counted from
/// `now`.
pub fn schedule_view(row: &ScheduleRow, def: &ScheduleDef, now: DateTime<Utc>) -> ScheduleView {
    let (cron, every_ms) = match &def.source {
        CalendarSource::Cron { expression, .. } => (Some(expression.clone()), None),
        CalendarSource::Every { every_ms } => (None, Some(*every_ms)),
    };
    ScheduleView {
        id: row.id,
        name: row.name.to_string(),
        cron,
        timezone: row.timezone.clone(),
        every_ms,
        job: JobTemplateView::from(&def.job),
        overlap: def.overlap.into(),
        catchup: CatchupView {
            policy: def.catchup.policy.into(),
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
