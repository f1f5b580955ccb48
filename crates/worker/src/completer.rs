//! Ends attempts in Redis in batches: every attempt that finished while the previous
//! round trip was out goes in the next one, one `complete.lua` call per queue, so a busy
//! worker pays one Redis call for many jobs instead of one each.
//!
//! While Redis is unreachable the batch is retried with backoff: nobody can reap the
//! leases meanwhile, and once Redis is back the tokens decide. An attempt that cannot be
//! ended within its patience is answered `false` (recorded as stale; the job runs again).

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use courier_core::{
    QueueName,
    queue::{Ending, RedisQueue},
};
use tokio::sync::{mpsc, oneshot};

/// Most attempts in one round trip.
const MAX_BATCH: usize = 1024;

struct Waiting {
    queue: QueueName,
    ending: Ending,
    /// When to stop trying.
    give_up: Instant,
    /// Whether the attempt still held its lease.
    reply: oneshot::Sender<bool>,
}

/// The sending side; cheap to clone.
#[derive(Clone)]
pub struct Completer {
    tx: mpsc::Sender<Waiting>,
}

impl Completer {
    /// Starts the batching task; it ends when every `Completer` is dropped.
    pub fn spawn(queue: RedisQueue) -> Self {
        let (tx, rx) = mpsc::channel(MAX_BATCH * 4);
        tokio::spawn(run(queue, rx));
        Self { tx }
    }

    /// Ends one attempt of a job of `queue`; whether it still held its lease (`false`
    /// also when Redis stayed unreachable past `give_up`).
    pub async fn end(&self, queue: QueueName, ending: Ending, give_up: Instant) -> bool {
        let (reply, answer) = oneshot::channel();
        let waiting = Waiting {
            queue,
            ending,
            give_up,
            reply,
        };
        if self.tx.send(waiting).await.is_err() {
            return false;
        }
        answer.await.unwrap_or(false)
    }
}

/// Hands each attempt to its queue's lane. Queues go on independently: one whose Redis
/// is slow to answer (a Cluster master failing over) holds back only its own ends. A
/// lane's channel is unbounded, but what waits in it is bounded by the calls in flight
/// (each call waits for its answer).
async fn run(queue: RedisQueue, mut rx: mpsc::Receiver<Waiting>) {
    let mut lanes: HashMap<QueueName, mpsc::UnboundedSender<Waiting>> = HashMap::new();
    while let Some(waiting) = rx.recv().await {
        let lane = match lanes.get(&waiting.queue) {
            Some(lane) => lane,
            None => {
                let name = waiting.queue.clone();
                let (tx, rx) = mpsc::unbounded_channel();
                tokio::spawn(lane(queue.clone(), name.clone(), rx));
                lanes.entry(name).or_insert(tx)
            }
        };
        if let Err(mpsc::error::SendError(waiting)) = lane.send(waiting) {
            let _ = waiting.reply.send(false);
        }
    }
}

/// One queue's ends: every attempt that finished while the previous round trip was out
/// goes in the next one.
async fn lane(queue: RedisQueue, name: QueueName, mut rx: mpsc::UnboundedReceiver<Waiting>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        end_all(&queue, &name, std::mem::take(&mut batch)).await;
    }
}

/// Ends `waiting` (all of one queue) in one call, retrying while Redis is unreachable.
async fn end_all(queue: &RedisQueue, name: &QueueName, mut waiting: Vec<Waiting>) {
    let mut wait = Duration::from_millis(50);
    loop {
        let items: Vec<&Ending> = waiting.iter().map(|w| &w.ending).collect();
        match queue.complete(name, &items).await {
            Ok(applied) => {
                for (w, applied) in waiting.into_iter().zip(applied) {
                    let _ = w.reply.send(applied);
                }
                return;
            }
            Err(e) => {
                let now = Instant::now();
                let (expired, keep): (Vec<_>, Vec<_>) =
                    waiting.into_iter().partition(|w| now + wait >= w.give_up);
                if !expired.is_empty() {
                    tracing::error!(error = %e, attempts = expired.len(),
                        "could not end attempts before their leases ran out; they will be retried");
                }
                for w in expired {
                    let _ = w.reply.send(false);
                }
                if keep.is_empty() {
                    return;
                }
                tracing::warn!(error = %e, attempts = keep.len(), "ending attempts in redis failed; retrying");
                waiting = keep;
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(2));
            }
        }
    }
}
