//! The history writer: attempt starts, execution records and job state changes go
//! through a bounded channel to one task that writes them to PostgreSQL in batches.
//! While PostgreSQL is down it holds the batch and retries, and the channel's bound
//! pushes back on the worker instead of dropping records.

use std::{
    collections::{HashMap, VecDeque},
    time::{Duration, Instant},
};

use courier_core::{
    JobId, QueueName,
    queue::RedisQueue,
    repo::{self, AttemptEnd, ExecutionRecord, JobUpdate, Started},
};
use sqlx::PgPool;
use tokio::{sync::mpsc, task::JoinHandle};

/// One thing to write.
#[derive(Debug)]
pub enum Event {
    Started(Started),
    /// How an attempt ended, kept in Redis's outbox under the given entry, which is
    /// dropped once PostgreSQL has it.
    Ended(QueueName, String, AttemptEnd),
    Record(ExecutionRecord),
    Update(JobUpdate),
}

/// The sending side; cheap to clone.
#[derive(Clone)]
pub struct History {
    tx: mpsc::Sender<Event>,
}

impl History {
    /// Starts the writer. It ends once every `History` is dropped and all is written.
    pub fn spawn(
        db: PgPool,
        queue: RedisQueue,
        batch: usize,
        buffer: usize,
    ) -> (Self, JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(buffer.max(1));
        (
            Self { tx },
            tokio::spawn(write_loop(db, queue, rx, batch.max(1))),
        )
    }

    /// Queues an event; waits while the buffer is full (PostgreSQL down for long).
    pub async fn send(&self, event: Event) {
        if self.tx.send(event).await.is_err() {
            tracing::error!("history writer is gone; an event was not recorded");
        }
    }
}

/// How long an attempt's start waits before it is written: a call that ends within this
/// time is written once, as its end, rather than as a start and then an end (SPEC 3
/// allows reads to lag by 100 ms).
const START_HOLD: Duration = Duration::from_millis(50);

async fn write_loop(db: PgPool, queue: RedisQueue, mut rx: mpsc::Receiver<Event>, batch: usize) {
    let mut events = Vec::with_capacity(batch);
    // Starts not yet written, oldest first, with when they arrived.
    let mut held: VecDeque<(Instant, Started)> = VecDeque::new();
    let mut ack_tasks = tokio::task::JoinSet::new();
    loop {
        while ack_tasks.try_join_next().is_some() {}
        let closed = match held.front() {
            None => rx.recv_many(&mut events, batch).await == 0,
            Some((at, _)) => {
                let wait = START_HOLD.saturating_sub(at.elapsed());
                matches!(
                    tokio::time::timeout(wait, rx.recv_many(&mut events, batch)).await,
                    Ok(0)
                )
            }
        };
        let (mut started, mut records, mut updates) = (Vec::new(), Vec::new(), Vec::new());
        let mut acks: HashMap<QueueName, Vec<String>> = HashMap::new();
        let now = Instant::now();
        for event in events.drain(..) {
            match event {
                Event::Started(s) => held.push_back((now, s)),
                Event::Ended(queue, entry, end) => {
                    acks.entry(queue).or_default().push(entry);
                    records.push(end.record);
                    updates.extend(end.update);
                }
                Event::Record(r) => records.push(r),
                Event::Update(u) => updates.push(u),
            }
        }
        // A start whose attempt (or a later one) has already ended needs no write of its own.
        if !updates.is_empty() {
            let ended: HashMap<JobId, i64> = updates.iter().fold(HashMap::new(), |mut m, u| {
                let t = m.entry(u.id).or_insert(u.token);
                *t = (*t).max(u.token);
                m
            });
            held.retain(|(_, s)| ended.get(&s.id).is_none_or(|t| *t < s.token));
        }
        while let Some((at, _)) = held.front() {
            if !closed && at.elapsed() < START_HOLD {
                break;
            }
            started.push(held.pop_front().expect("front exists").1);
        }
        if !(started.is_empty() && records.is_empty() && updates.is_empty()) {
            let mut wait = Duration::from_millis(50);
            while let Err(e) = repo::record_history(&db, &started, &records, &updates).await {
                tracing::warn!(error = %e, pending = started.len() + records.len() + updates.len(),
                    "writing history failed; holding it and retrying");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(2));
            }
        }
        if !acks.is_empty() {
            // Off the writer's path: the next batch need not wait for Redis.
            let queue = queue.clone();
            ack_tasks.spawn(async move {
                for (name, entries) in acks {
                    if let Err(e) = queue.ack(&name, &entries).await {
                        // Harmless: the maintenance sweep finds the entries and replays them.
                        tracing::warn!(error = %e, "dropping outbox entries failed");
                    }
                }
            });
        }
        if closed && held.is_empty() {
            while ack_tasks.join_next().await.is_some() {}
            return;
        }
    }
}
