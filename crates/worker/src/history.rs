//! The history writer: attempt starts, execution records and job state changes go
//! through a bounded channel to one task that writes them to PostgreSQL in batches.
//! While PostgreSQL is down it holds the batch and retries, and the channel's bound
//! pushes back on the worker instead of dropping records.

use std::time::Duration;

use courier_core::{
    QueueName,
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

async fn write_loop(db: PgPool, queue: RedisQueue, mut rx: mpsc::Receiver<Event>, batch: usize) {
    let mut events = Vec::with_capacity(batch);
    while rx.recv_many(&mut events, batch).await > 0 {
        let (mut started, mut records, mut updates) = (Vec::new(), Vec::new(), Vec::new());
        let mut acks: std::collections::HashMap<QueueName, Vec<String>> = Default::default();
        for event in events.drain(..) {
            match event {
                Event::Started(s) => started.push(s),
                Event::Ended(queue, entry, end) => {
                    acks.entry(queue).or_default().push(entry);
                    records.push(end.record);
                    updates.extend(end.update);
                }
                Event::Record(r) => records.push(r),
                Event::Update(u) => updates.push(u),
            }
        }
        let mut wait = Duration::from_millis(50);
        while let Err(e) = repo::record_history(&db, &started, &records, &updates).await {
            tracing::warn!(error = %e, pending = started.len() + records.len() + updates.len(),
                "writing history failed; holding it and retrying");
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(2));
        }
        for (name, entries) in acks {
            if let Err(e) = queue.ack(&name, &entries).await {
                // Harmless: the maintenance sweep finds the entries and replays them.
                tracing::warn!(error = %e, "dropping outbox entries failed");
            }
        }
    }
}
