//! The calls a worker has in flight, so heartbeats can renew their leases and a
//! cancellation, a lost lease or shutdown can abort them. Entries are per attempt: after
//! Redis lost a lease, the same worker can hold an old attempt of a job (running on,
//! doomed to end stale) and its new one, and news about one must never touch the other.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use courier_core::{
    JobId, QueueName,
    queue::{Leased, Token},
};
use tokio_util::sync::CancellationToken;

/// Why a call was stopped before it finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AbortReason {
    /// A client cancelled the job.
    Cancelled,
    /// Another worker may have the job now (lease expired, Redis lost it).
    LeaseLost,
    /// The worker is shutting down and hands the job back.
    Shutdown,
}

/// One call in flight.
pub struct Entry {
    pub queue: QueueName,
    pub token: Token,
    abort: CancellationToken,
    reason: Mutex<Option<AbortReason>>,
}

impl Entry {
    /// Stops the call; the first reason given is the one that counts.
    pub fn abort(&self, reason: AbortReason) {
        self.reason
            .lock()
            .expect("lock poisoned")
            .get_or_insert(reason);
        self.abort.cancel();
    }

    /// Resolves with the reason once the call is aborted.
    pub async fn aborted(&self) -> AbortReason {
        self.abort.cancelled().await;
        self.reason
            .lock()
            .expect("lock poisoned")
            .unwrap_or(AbortReason::Cancelled)
    }
}

/// Every call in flight in this worker, by job, then attempt.
#[derive(Default, Clone)]
pub struct InFlight {
    entries: Arc<Mutex<HashMap<JobId, Vec<Arc<Entry>>>>>,
}

impl InFlight {
    pub fn insert(&self, job: &Leased) -> Arc<Entry> {
        let entry = Arc::new(Entry {
            queue: job.queue.clone(),
            token: job.token,
            abort: CancellationToken::new(),
            reason: Mutex::new(None),
        });
        self.entries
            .lock()
            .expect("lock poisoned")
            .entry(job.id)
            .or_default()
            .push(entry.clone());
        entry
    }

    /// Forgets the attempt `token` of job `id` (and only that attempt).
    pub fn remove(&self, id: JobId, token: Token) {
        let mut entries = self.entries.lock().expect("lock poisoned");
        if let Some(attempts) = entries.get_mut(&id) {
            attempts.retain(|e| e.token != token);
            if attempts.is_empty() {
                entries.remove(&id);
            }
        }
    }

    /// The attempt `token` of job `id`, if it is in flight here.
    pub fn get(&self, id: JobId, token: Token) -> Option<Arc<Entry>> {
        self.entries
            .lock()
            .expect("lock poisoned")
            .get(&id)?
            .iter()
            .find(|e| e.token == token)
            .cloned()
    }

    /// Aborts every attempt of job `id` in flight here (the job was cancelled).
    pub fn abort_job(&self, id: JobId, reason: AbortReason) {
        if let Some(attempts) = self.entries.lock().expect("lock poisoned").get(&id) {
            for entry in attempts {
                entry.abort(reason);
            }
        }
    }

    /// Calls in flight.
    pub fn len(&self) -> usize {
        self.entries
            .lock()
            .expect("lock poisoned")
            .values()
            .map(Vec::len)
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The leases held, grouped by queue.
    pub fn leases(&self) -> HashMap<QueueName, Vec<(JobId, Token)>> {
        let mut by_queue: HashMap<QueueName, Vec<(JobId, Token)>> = HashMap::new();
        for (id, attempts) in self.entries.lock().expect("lock poisoned").iter() {
            for entry in attempts {
                by_queue
                    .entry(entry.queue.clone())
                    .or_default()
                    .push((*id, entry.token));
            }
        }
        by_queue
    }

    /// Aborts every call in flight.
    pub fn abort_all(&self, reason: AbortReason) {
        for attempts in self.entries.lock().expect("lock poisoned").values() {
            for entry in attempts {
                entry.abort(reason);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use courier_core::domain::{JobSpec, Method, Target, TargetUrl};

    fn attempt(id: JobId, token: i64) -> Leased {
        Leased {
            id,
            queue: QueueName::default(),
            token: Token(token),
            attempt: 1,
            spec: JobSpec::new(Target {
                url: TargetUrl::parse("http://example.com").unwrap(),
                method: Method::Post,
                headers: vec![],
                body: String::new(),
            }),
        }
    }

    /// After Redis lost a lease and the job was dispatched again, one worker can hold the
    /// old attempt (still running, doomed to end stale) and the new one. News of the old
    /// attempt's lost lease, and its end, must leave the new one alone: once, it aborted
    /// the new attempt, whose lease then expired and the job ran a third time.
    #[tokio::test]
    async fn two_attempts_of_one_job_are_told_apart() {
        let inflight = InFlight::default();
        let id = JobId::new();
        let old = inflight.insert(&attempt(id, 1));
        let new = inflight.insert(&attempt(id, 2));
        assert_eq!(inflight.len(), 2);
        assert_eq!(inflight.leases()[&QueueName::default()].len(), 2);

        inflight
            .get(id, Token(1))
            .unwrap()
            .abort(AbortReason::LeaseLost);
        assert_eq!(old.aborted().await, AbortReason::LeaseLost);
        assert!(!new.abort.is_cancelled(), "the new attempt runs on");

        inflight.remove(id, Token(1));
        assert!(
            inflight.get(id, Token(2)).is_some(),
            "the new attempt is still renewed"
        );
        assert_eq!(inflight.leases()[&QueueName::default()], [(id, Token(2))]);

        inflight.abort_job(id, AbortReason::Cancelled);
        assert_eq!(new.aborted().await, AbortReason::Cancelled);
    }
}
