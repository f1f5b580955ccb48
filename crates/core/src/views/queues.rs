//! Queues, as the API shows them.

use chrono::{DateTime, Utc};
use courier_wire::{QueueView, RateView};

use crate::{domain::QueueFlow, repo::QueueDepth};

/// A queue's depth and flow control, its oldest queued job's age counted at `now`.
pub fn queue_view(depth: QueueDepth, flow: QueueFlow, now: DateTime<Utc>) -> QueueView {
    QueueView {
        name: depth.queue.to_string(),
        scheduled: depth.scheduled,
        queued: depth.queued,
        running: depth.running,
        dead: depth.dead,
        succeeded_last_hour: depth.succeeded_last_hour,
        dead_last_hour: depth.dead_last_hour,
        oldest_queued_age_seconds: depth.oldest_queued_since.map_or(0.0, |since| {
            ((now - since).num_milliseconds().max(0) as f64) / 1000.0
        }),
        paused: flow.paused,
        rate: flow.limits.rate.map(RateView::from),
        max_concurrency: flow.limits.max_concurrency,
    }
}
