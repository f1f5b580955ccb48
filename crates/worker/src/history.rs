//! The history writer: attempt starts, execution records and job state changes go
//! through bounded channels to a few tasks that write them to PostgreSQL in batches.
//! Each job's events always go to the same task (by job id), so they are written in the
//! order they happened; the tasks' statements overlap, so one commit's wait for the disk
//! does not hold up the others. While PostgreSQL is down each task holds its batch and
//! retries, and the channels' bound pushes back on the worker instead of dropping
//! records.

use std::{
    collections::{HashMap, VecDeque},
    sync::Arc,
    time::{Duration, Instant},
};

use courier_core::{
    JobId, QueueName,
    crypto::SecretBox,
    queue::RedisQueue,
    repo::{ExecutionRecord, JobUpdate, Started},
    stages::{
        Dispatcher,
        attempt::AttemptEnd,
        record::{self, HistoryBatch},
    },
};
use sqlx::PgPool;
use tokio::{sync::mpsc, task::JoinHandle};

/// One thing to write.
#[derive(Debug)]
pub enum Event {
    Started(Started),
    /// How an attempt ended, kept in Redis's journal under the given entry, which is
    /// dropped once PostgreSQL has it.
    AttemptEnd(QueueName, String, AttemptEnd),
    Record(ExecutionRecord),
    Update(JobUpdate),
}

impl Event {
    fn job(&self) -> JobId {
        match self {
            Self::Started(s) => s.id,
            Self::AttemptEnd(_, _, end) => end.record.job_id,
            Self::Record(r) => r.job_id,
            Self::Update(u) => u.id,
        }
    }
}

/// Writing tasks, each with its own connection, so that one slow commit (a slow disk, a
/// PostgreSQL far away) does not hold up every record behind it. On the 2-core benchmark
/// machine, before PostgreSQL connections had TCP_NODELAY, one task wrote about 14,000
/// jobs/s and four 23,800, each statement waiting ~40 ms for a delayed ACK; with it, one
/// and four both write about 23,000 jobs/s there.
const WRITERS: usize = 4;

/// The sending side; cheap to clone.
#[derive(Clone)]
pub struct History {
    shards: std::sync::Arc<[mpsc::Sender<Event>]>,
}

impl History {
    /// Starts the writers. The handle ends once every `History` is dropped and all is
    /// written.
    pub fn spawn(
        db: PgPool,
        queue: RedisQueue,
        secrets: Arc<SecretBox>,
        batch: usize,
        buffer: usize,
    ) -> (Self, JoinHandle<()>) {
        let mut shards = Vec::with_capacity(WRITERS);
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..WRITERS {
            let (tx, rx) = mpsc::channel(buffer.div_ceil(WRITERS).max(1));
            shards.push(tx);
            tasks.spawn(write_loop(
                db.clone(),
                queue.clone(),
                secrets.clone(),
                rx,
                batch.max(1),
            ));
        }
        let all = tokio::spawn(async move { while tasks.join_next().await.is_some() {} });
        (
            Self {
                shards: shards.into(),
            },
            all,
        )
    }

    /// Events waiting for a writer (not yet in PostgreSQL).
    pub fn buffered(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.max_capacity() - s.capacity())
            .sum()
    }

    /// Queues an event; waits while the buffer is full (PostgreSQL down for long).
    pub async fn send(&self, event: Event) {
        let shard = (event.job().as_uuid().as_u128() % self.shards.len() as u128) as usize;
        if self.shards[shard].send(event).await.is_err() {
            tracing::error!("history writer is gone; an event was not recorded");
        }
    }
}

/// How long an attempt's start waits before it is written: a call that ends within this
/// time is written once, as its end, rather than as a start and then an end (SPEC 3
/// allows reads to lag by 100 ms).
const START_HOLD: Duration = Duration::from_millis(50);

async fn write_loop(
    db: PgPool,
    queue: RedisQueue,
    secrets: Arc<SecretBox>,
    mut rx: mpsc::Receiver<Event>,
    batch: usize,
) {
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
        let mut batch_out = HistoryBatch::default();
        let HistoryBatch {
            started,
            records,
            updates,
        } = &mut batch_out;
        let mut acks: HashMap<QueueName, Vec<String>> = HashMap::new();
        let now = Instant::now();
        for event in events.drain(..) {
            match event {
                Event::Started(s) => held.push_back((now, s)),
                Event::AttemptEnd(queue, entry, end) => {
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
            let ended: HashMap<JobId, courier_core::queue::Token> =
                updates.iter().fold(HashMap::new(), |mut m, u| {
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
        if !batch_out.is_empty() {
            // Only errors worth retrying come back: what PostgreSQL refuses for good is
            // set aside (history_rejects) so it never holds back what follows.
            let mut wait = Duration::from_millis(50);
            let written = loop {
                match record::write_history(&db, &secrets, &batch_out).await {
                    Ok(written) => break written,
                    Err(e) => {
                        tracing::warn!(error = %e, pending = batch_out.len(),
                            "writing history failed; holding it and retrying");
                        tokio::time::sleep(wait).await;
                        wait = (wait * 2).min(Duration::from_secs(2));
                    }
                }
            };
            if written.rejected > 0 {
                courier_core::metrics::history_rejects(written.rejected as u64);
            }
            if written.callbacks.iter().any(|made| !made.is_empty()) {
                // Off the writer's path, like the acknowledgements below.
                let dispatcher = Dispatcher::new(db.clone(), queue.clone());
                ack_tasks
                    .spawn(async move { dispatcher.dispatch_callbacks(written.callbacks).await });
            }
        }
        if !acks.is_empty() {
            // Off the writer's path: the next batch need not wait for Redis.
            let queue = queue.clone();
            ack_tasks.spawn(async move {
                for (name, entries) in acks {
                    if let Err(e) = queue.journal_ack(&name, &entries).await {
                        // Harmless: the recovery loop finds the entries and replays them.
                        tracing::warn!(error = %e, "dropping journal entries failed");
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
