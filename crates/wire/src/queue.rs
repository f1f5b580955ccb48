//! Queues, as the API shows them.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::RateView;

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

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct QueueList {
    pub queues: Vec<QueueView>,
}
