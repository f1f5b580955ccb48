//! Queues, as the API shows them.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::RateView;
use crate::{domain::QueueFlow, repo::QueueDepth};

/// Depth of one queue.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct QueueView {
    pub name: String,
    pub scheduled: i64,
    pub queued: i64,
    pub running: i64,
    pub dead: i64,
    pub succeeded_last_hour: i64,
    pub dead_last_hour: i64,
    /// Seconds the longest-waiting queued job has been due; 0 when none is queued.
    pub oldest_queued_age_seconds: f64,
    /// A paused queue starts no call (`POST /v1/queues/{name}/resume` goes on).
    pub paused: bool,
    /// Calls started per second, if limited.
    pub rate: Option<RateView>,
    /// Calls in flight at once, if limited.
    pub max_concurrency: Option<u32>,
}

impl QueueView {
    pub fn new(depth: QueueDepth, flow: QueueFlow, now: DateTime<Utc>) -> Self {
        Self {
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
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct QueueList {
    pub queues: Vec<QueueView>,
}
