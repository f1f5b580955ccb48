//! Flow control in Redis: mirroring a queue's settings and the flow keys' limits from
//! PostgreSQL (which the fetch script enforces), and reading a key's live counts.

use super::{QueueError, RedisQueue};
use crate::domain::{FlowKey, Limits, QueueFlow, QueueName};

/// A flow key's jobs in one queue as Redis sees them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KeyCounts {
    /// Calls of the key in flight.
    pub in_flight: u64,
    /// Jobs set aside because the key was at its limit.
    pub held: u64,
}

impl RedisQueue {
    /// Writes `flow` and every flow key's limits as `queue`'s flow control at
    /// `version`, unless Redis already holds that version or a newer one; returns
    /// whether it wrote.
    ///
    /// # Errors
    /// Redis unreachable.
    pub async fn mirror_flow(
        &self,
        queue: &QueueName,
        version: i64,
        flow: &QueueFlow,
        keys: &[(FlowKey, Limits)],
    ) -> Result<bool, QueueError> {
        let k = self.keys.queue(queue);
        let limits = flow.limits.to_redis();
        let mut parts = limits.split(',');
        let mut args: Vec<String> = vec![
            if flow.paused { "1" } else { "0" }.to_owned(),
            parts.next().unwrap_or_default().to_owned(),
            parts.next().unwrap_or_default().to_owned(),
            parts.next().unwrap_or_default().to_owned(),
        ];
        for (key, limits) in keys {
            args.push(key.as_str().to_owned());
            args.push(limits.to_redis());
        }
        let mut call = self.scripts().mirror.prepare_invoke();
        call.key(&k.settings)
            .key(&k.flow_limits)
            .key(&k.signal)
            .arg(version);
        for arg in args {
            call.arg(arg);
        }
        let written: i64 = call.invoke_async(&mut self.conn()).await?;
        self.mirrored
            .lock()
            .expect("lock poisoned")
            .insert(queue.clone());
        Ok(written == 1)
    }

    /// `key`'s calls in flight and jobs held on its limit in `queue`.
    ///
    /// # Errors
    /// Redis unreachable, or counts Courier did not write.
    pub async fn key_counts(
        &self,
        queue: &QueueName,
        key: &FlowKey,
    ) -> Result<KeyCounts, QueueError> {
        let k = self.keys.queue(queue);
        let mut conn = self.conn();
        let (in_flight, held): (Option<i64>, u64) = redis::pipe()
            .hget(&k.key_inflight, key.as_str())
            .zcard(k.key_wait_of(key.as_str()))
            .query_async(&mut conn)
            .await?;
        Ok(KeyCounts {
            in_flight: in_flight.unwrap_or(0).max(0) as u64,
            held,
        })
    }
}
