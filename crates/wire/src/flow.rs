//! Flow control as the API shows it: a queue's settings, and flow keys with their
//! live counts.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A token bucket: `burst` calls may start at once, then `per_second`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RateView {
    pub per_second: f64,
    pub burst: u32,
}

/// A queue's flow control.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct QueueSettingsView {
    pub queue: String,
    /// A paused queue starts no call; calls in flight finish.
    pub paused: bool,
    /// Calls started per second across every worker; absent for no limit.
    pub rate: Option<RateView>,
    /// Calls in flight at once across every worker; absent for no limit.
    pub max_concurrency: Option<u32>,
    /// Absent for a queue never configured.
    pub updated_at: Option<DateTime<Utc>>,
}

/// A flow key's jobs in one queue.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct FlowKeyQueueView {
    pub queue: String,
    /// Due jobs not started yet, those held on a limit included.
    pub waiting: i64,
    /// Jobs waiting for their time (`run_at`, or a retry's).
    pub scheduled: i64,
    /// Calls in flight now.
    pub in_flight: u64,
    /// Of the waiting jobs, those set aside because the key was at its limit.
    pub held: u64,
}

/// A flow key: its limits and live counts. A key's limits hold within each queue its
/// jobs are in.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct FlowKeyView {
    pub key: String,
    pub rate: Option<RateView>,
    pub max_concurrency: Option<u32>,
    /// Totals over `queues`.
    pub waiting: i64,
    pub scheduled: i64,
    pub in_flight: u64,
    pub held: u64,
    pub queues: Vec<FlowKeyQueueView>,
    /// Absent for a key without limits.
    pub updated_at: Option<DateTime<Utc>>,
}

/// Every flow key with limits.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct FlowKeyList {
    pub flow_keys: Vec<FlowKeyLimitsView>,
}

/// A flow key's limits (without counts).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct FlowKeyLimitsView {
    pub key: String,
    pub rate: Option<RateView>,
    pub max_concurrency: Option<u32>,
    pub updated_at: DateTime<Utc>,
}
