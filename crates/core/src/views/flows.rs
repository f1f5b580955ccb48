//! Flow control as the API shows it: a queue's settings, and flow keys with their
//! live counts.

use courier_wire::{FlowKeyLimitsView, FlowKeyQueueView, FlowKeyView, QueueSettingsView, RateView};

use crate::{
    domain::Rate,
    repo::flow::{FlowKeyRow, QueueSettingsRow},
};

impl From<Rate> for RateView {
    fn from(rate: Rate) -> Self {
        Self {
            per_second: rate.per_second,
            burst: rate.burst,
        }
    }
}

/// The settings of `queue` from its row, or the defaults without one.
pub fn queue_settings_view(queue: &str, row: Option<&QueueSettingsRow>) -> QueueSettingsView {
    let flow = row.map(QueueSettingsRow::flow).unwrap_or_default();
    QueueSettingsView {
        queue: queue.to_owned(),
        paused: flow.paused,
        rate: flow.limits.rate.map(RateView::from),
        max_concurrency: flow.limits.max_concurrency,
        updated_at: row.map(|r| r.updated_at),
    }
}

/// Flow key `key`: its limits (from its row, or none without one) and its counts per
/// queue, with their totals.
pub fn flow_key_view(
    key: &str,
    row: Option<&FlowKeyRow>,
    queues: Vec<FlowKeyQueueView>,
) -> FlowKeyView {
    let limits = row.map(FlowKeyRow::limits).unwrap_or_default();
    FlowKeyView {
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
