//! The calls a worker has in flight, so heartbeats can renew their leases and a
//! cancellation, a lost lease or shutdown can abort them.

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

/// Every call in flight in this worker.
#[derive(Default, Clone)]
pub struct InFlight {
    entries: Arc<Mutex<HashMap<JobId, Arc<Entry>>>>,
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
            .insert(job.id, entry.clone());
        entry
    }

    pub fn remove(&self, id: JobId) {
        self.entries.lock().expect("lock poisoned").remove(&id);
    }

    pub fn get(&self, id: JobId) -> Option<Arc<Entry>> {
        self.entries
            .lock()
            .expect("lock poisoned")
            .get(&id)
            .cloned()
    }

    pub fn len(&self) -> usize {
        self.entries.lock().expect("lock poisoned").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The leases held, grouped by queue.
    pub fn leases(&self) -> HashMap<QueueName, Vec<(JobId, Token)>> {
        let mut by_queue: HashMap<QueueName, Vec<(JobId, Token)>> = HashMap::new();
        for (id, entry) in self.entries.lock().expect("lock poisoned").iter() {
            by_queue
                .entry(entry.queue.clone())
                .or_default()
                .push((*id, entry.token));
        }
        by_queue
    }

    /// Aborts every call in flight.
    pub fn abort_all(&self, reason: AbortReason) {
        for entry in self.entries.lock().expect("lock poisoned").values() {
            entry.abort(reason);
        }
    }
}
