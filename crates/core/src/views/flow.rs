//! Flow control as the API shows it: a queue's settings, and flow keys with their
//! live counts.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{
    domain::Rate,
    repo::flow::{FlowKeyRow, QueueSettingsRow},
};

/// A token bucket: `burst` calls may start at once, then `per_second`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RateView {
    pub per_second: f64,
    pub burst: u32,
}

impl From<Rate> for RateView {
    fn from(rate: Rate) -> Self {
        Self {
            per_second: rate.per_second,
            burst: rate.burst,
        }
    }
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

impl QueueSettingsView {
    /// The settings of `queue` from its row, or the defaults without one.
    pub fn new(queue: &str, row: Option<&QueueSettingsRow>) -> Self {
        let flow = row.map(QueueSettingsRow::flow).unwrap_or_default();
        Self {
            queue: queue.to_owned(),
            paused: flow.paused,
            rate: flow.limits.rate.map(RateView::from),
            max_concurrency: flow.limits.max_concurrency,
            updated_at: row.map(|r| r.updated_at),
        }
    }
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

impl FlowKeyView {
    pub fn new(key: &str, row: Option<&FlowKeyRow>, queues: Vec<FlowKeyQueueView>) -> Self {
        let limits = row.map(FlowKeyRow::limits).unwrap_or_default();
        Self {
            key: key.to_owned(),
            rate: limits.rate.map(RateView::from),
            max_concurrency: limits.max_concurrency,
            waiting: queues.iter().map(|q| q.waiting).sum(),
            scheduled: queues.iter().map(|q| q.scheduled).sum(),
            in_flight: queues.iter().map(|q| q.in_flight).sum(),
            held: queues.iter().map(|q| q.held).sum(),
            queues,
            updated_at: row.map(|r| r.updated_at),
        }
    }
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

impl From<&FlowKeyRow> for FlowKeyLimitsView {
    fn from(row: &FlowKeyRow) -> Self {
        let limits = row.limits();
        Self {
            key: row.key.to_string(),
            rate: limits.rate.map(RateView::from),
            max_concurrency: limits.max_concurrency,
            updated_at: row.updated_at,
        }
    }
}
