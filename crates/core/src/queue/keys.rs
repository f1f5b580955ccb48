//! Redis key names. Every key is under the configured prefix and hash-tagged by queue
//! (`courier:{default}:queued`), so each script touches one Cluster slot.

use crate::domain::QueueName;

/// Work that one process at a time does, under a short lock in Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lock {
    /// Reconciling Redis with PostgreSQL after a loss of data.
    Reconcile,
    /// A pass of the check for waiting jobs that Redis lacks.
    MissingCheck,
    /// Putting back jobs found lost, from the last look to the enqueue.
    Redispatch,
}

/// The key names of one deployment (one prefix).
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

/// The keys of one queue.
#[derive(Debug, Clone)]
pub struct QueueKeys {
    /// Due jobs, scored by priority band then FIFO sequence.
    pub queued: String,
    /// Jobs waiting for their time, scored by due time (and priority in the last digit).
    pub scheduled: String,
    /// Leased jobs, scored by lease deadline.
    pub running: String,
    /// Job id -> payload (the job's spec as JSON).
    pub jobs: String,
    /// Job id -> attempts made.
    pub attempts: String,
    /// Job id -> fencing token of the attempt holding the lease.
    pub leases: String,
    /// FIFO sequence and token counter.
    pub seq: String,
    /// Wake-up tokens that idle workers block on.
    pub signal: String,
    /// "id:token" -> record of an ended attempt, until PostgreSQL has it.
    pub journal: String,
    /// Journal entries by the time they were written.
    pub journal_at: String,
    /// The queue's flow control as mirrored from PostgreSQL: `v` (version), `paused`,
    /// and `rate`, `burst`, `conc` when set.
    pub settings: String,
    /// Flow key -> its limits, "rate,burst,conc" (mirrored from PostgreSQL).
    pub flow_limits: String,
    /// Job id -> flow key, for keyed jobs.
    pub keyof: String,
    /// Token buckets, "tokens,ms": `q` for the queue, `k:<key>` for each key.
    pub buckets: String,
    /// Flow key -> its calls in flight in this queue.
    pub key_inflight: String,
    /// Keys with jobs set aside on a limit, scored by when to look again.
    pub key_blocked: String,
    /// Flow key -> until when it waits (a 429 or 503 with Retry-After), unix ms.
    pub key_pause: String,
    /// The prefix of each key's zset of jobs set aside on its limit (`kwait:<key>`).
    pub key_wait: String,
    /// On a Cluster: the `run_id` of the queue's master when the queue was last
    /// reconciled with PostgreSQL (see [`Keys::marker`]).
    pub marker: String,
}

impl QueueKeys {
    /// The zset of `key`'s jobs set aside on its limit.
    pub fn key_wait_of(&self, key: &str) -> String {
        format!("{}{key}", self.key_wait)
    }
}

impl Keys {
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn queue(&self, queue: &QueueName) -> QueueKeys {
        let base = format!("{}:{{{}}}", self.prefix, queue.as_str());
        QueueKeys {
            queued: format!("{base}:queued"),
            scheduled: format!("{base}:scheduled"),
            running: format!("{base}:running"),
            jobs: format!("{base}:jobs"),
            attempts: format!("{base}:attempts"),
            leases: format!("{base}:leases"),
            seq: format!("{base}:seq"),
            signal: format!("{base}:signal"),
            journal: format!("{base}:journal"),
            journal_at: format!("{base}:journal-at"),
            settings: format!("{base}:settings"),
            flow_limits: format!("{base}:flow-limits"),
            keyof: format!("{base}:keyof"),
            buckets: format!("{base}:buckets"),
            key_inflight: format!("{base}:key-inflight"),
            key_blocked: format!("{base}:key-blocked"),
            key_pause: format!("{base}:key-pause"),
            key_wait: format!("{base}:kwait:"),
            marker: format!("{base}:reconciled"),
        }
    }

    /// The set of queue names that have ever received a job; workers serving "every
    /// queue" read it.
    pub fn queues(&self) -> String {
        format!("{}:queues", self.prefix)
    }

    /// Wake-up tokens pushed when a queue joins the set (on a Cluster, the pub/sub
    /// channel announcing it).
    pub fn queues_signal(&self) -> String {
        format!("{}:queues:signal", self.prefix)
    }

    /// Holds the Redis `run_id` under which PostgreSQL and Redis were last reconciled. A
    /// wiped Redis has no marker and a restarted one a different `run_id`: either means
    /// Redis may have lost jobs.
    pub fn marker(&self) -> String {
        format!("{}:reconciled", self.prefix)
    }

    /// A short lock so that one process at a time does `lock`'s work.
    pub fn lock(&self, lock: Lock) -> String {
        match lock {
            Lock::Reconcile => format!("{}:reconcile-lock", self.prefix),
            Lock::MissingCheck => format!("{}:missing-check-lock", self.prefix),
            Lock::Redispatch => format!("{}:redispatch-lock", self.prefix),
        }
    }

    /// Where the missing-job check goes on from (see `maintenance::missing`).
    pub fn missing_check_cursor(&self) -> String {
        format!("{}:missing-check-cursor", self.prefix)
    }

    /// The pub/sub channel on which cancellations of running jobs are announced.
    pub fn cancel_channel(&self) -> String {
        format!("{}:cancel", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_prefixed_and_hash_tagged_by_queue() {
        let keys = Keys::new("courier").queue(&QueueName::parse("mail").unwrap());
        assert_eq!(keys.queued, "courier:{mail}:queued");
        assert_eq!(keys.leases, "courier:{mail}:leases");
    }
}
