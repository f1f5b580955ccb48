//! Group commit for `POST /v1/jobs`. Each request hands its parsed job to the intake and
//! waits; three tasks form a pipeline, each taking everything that is waiting for it:
//!
//! 1. the commit task accepts every waiting job (`stages::accept`: one statement and one
//!    commit, with one dispatch outbox entry naming them all);
//! 2. the dispatch task sends every committed batch that is waiting to Redis in one
//!    round trip per queue, in commit order (so FIFO holds), and answers the requests
//!    (a 2xx means committed; in Redis too unless Redis is down);
//! 3. the mark task drops the dispatched batches' outbox entries, many in one statement,
//!    off the answer's path.
//!
//! Under load each step carries many jobs instead of one; alone, a request is its own
//! batch and waits for nothing. No step waits for a later one, so a slow mark never holds
//! up an answer, and a slow Redis never holds up the next commit for more than a few
//! batches.

use chrono::{DateTime, Utc};
use courier_core::{
    domain::Job,
    domain::NewJob,
    queue::Dispatch,
    repo::{Idempotency, OutboxId, RepoError},
    stages::{Dispatcher, accept},
};
use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot};

/// Most jobs in one commit.
const MAX_BATCH: usize = 1024;
/// Committed batches that may wait for Redis before the commit task waits too.
const DISPATCH_QUEUE: usize = 64;
/// Outbox entries of dispatched batches that may wait to be deleted; past this they are
/// left to the dispatcher, which sends their jobs again harmlessly.
const MARK_QUEUE: usize = 1024;
/// How often the outbox is cleared of dispatched jobs. Far below the dispatcher's grace,
/// so it never sends these jobs again.
const MARK_EVERY: std::time::Duration = std::time::Duration::from_millis(100);

/// What became of a submitted job.
#[derive(Debug)]
pub enum Admission {
    /// Committed; the row as stored.
    Created(Box<Job>),
    /// Its idempotency key was taken: the caller looks up the job holding it.
    KeyTaken,
}

/// Why a job could not be committed.
#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    #[error("PostgreSQL is unavailable")]
    Unavailable,
    #[error("inserting the job failed: {0}")]
    Failed(String),
}

impl From<RepoError> for IntakeError {
    fn from(e: RepoError) -> Self {
        if e.is_unavailable() {
            Self::Unavailable
        } else {
            Self::Failed(e.to_string())
        }
    }
}

type Reply = oneshot::Sender<Result<Admission, IntakeError>>;

struct Submission {
    job: NewJob,
    idempotency: Option<Idempotency>,
    reply: Reply,
}

/// A committed job on its way to Redis, and the request waiting for it.
struct Committed {
    dispatch: Dispatch,
    row: Box<Job>,
    reply: Reply,
}

/// Jobs committed together, with their outbox entries (one, or one per job when the
/// batch had to be inserted job by job).
struct Batch {
    outbox: Vec<OutboxId>,
    jobs: Vec<Committed>,
}

/// The sending side of the intake; cheap to clone.
#[derive(Clone)]
pub struct Intake {
    tx: mpsc::Sender<Submission>,
    marks: mpsc::Sender<Vec<OutboxId>>,
}

impl Intake {
    /// Starts the pipeline's tasks. They end when every `Intake` is dropped.
    pub fn spawn(db: PgPool, dispatcher: Dispatcher) -> Self {
        let (tx, rx) = mpsc::channel(MAX_BATCH * 4);
        let (dispatch_tx, dispatch_rx) = mpsc::channel(DISPATCH_QUEUE);
        let (mark_tx, mark_rx) = mpsc::channel(MARK_QUEUE);
        tokio::spawn(commit_loop(db, rx, dispatch_tx));
        tokio::spawn(dispatch_loop(
            dispatcher.clone(),
            dispatch_rx,
            mark_tx.clone(),
        ));
        tokio::spawn(mark_loop(dispatcher, mark_rx));
        Self { tx, marks: mark_tx }
    }

    /// Drops the outbox entry of jobs that reached Redis, with the intake's own, off the
    /// caller's path (for jobs committed elsewhere, such as a batch).
    pub fn dispatched(&self, outbox: OutboxId) {
        if self.marks.try_send(vec![outbox]).is_err() {
            tracing::debug!(
                "the outbox mark queue is full; the dispatcher will see these jobs again"
            );
        }
    }

    /// Commits `job`, with its idempotency key if any.
    ///
    /// # Errors
    /// PostgreSQL refusing or unreachable.
    pub async fn submit(
        &self,
        job: NewJob,
        idempotency: Option<Idempotency>,
    ) -> Result<Admission, IntakeError> {
        let gone = || IntakeError::Failed("the intake task stopped".into());
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Submission {
                job,
                idempotency,
                reply,
            })
            .await
            .map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }
}

async fn commit_loop(
    db: PgPool,
    mut rx: mpsc::Receiver<Submission>,
    dispatch: mpsc::Sender<Batch>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let committed = commit_batch(&db, std::mem::take(&mut batch)).await;
        if committed.jobs.is_empty() {
            continue;
        }
        if let Err(mpsc::error::SendError(committed)) = dispatch.send(committed).await {
            tracing::error!("the dispatch task is gone; the dispatcher loop will send these jobs");
            for c in committed.jobs {
                let _ = c.reply.send(Ok(Admission::Created(c.row)));
            }
        }
    }
}

/// Accepts the batch; answers at once every request whose job was not created, and
/// returns the created ones for dispatch.
async fn commit_batch(db: &PgPool, batch: Vec<Submission>) -> Batch {
    let now = Utc::now();
    let mut jobs = Vec::with_capacity(batch.len());
    let mut keys = Vec::with_capacity(batch.len());
    let mut replies = Vec::with_capacity(batch.len());
    for s in batch {
        jobs.push(s.job);
        keys.push(s.idempotency);
        replies.push(s.reply);
    }
    match accept(db, &jobs, &keys, now).await {
        Ok(accepted) => {
            let mut created = Vec::with_capacity(jobs.len());
            for ((job, dispatch), reply) in jobs.into_iter().zip(accepted.dispatches).zip(replies) {
                match dispatch {
                    Some(dispatch) => created.push(committed(job, dispatch, reply, now)),
                    None => {
                        let _ = reply.send(Ok(Admission::KeyTaken));
                    }
                }
            }
            Batch {
                outbox: vec![accepted.outbox],
                jobs: created,
            }
        }
        Err(e) if !e.is_unavailable() && jobs.len() > 1 => {
            // One row the database refuses must not fail its neighbours: accept each on
            // its own and answer each with its own result.
            tracing::warn!(error = %e, jobs = jobs.len(), "a batch insert failed; inserting one by one");
            let mut batch = Batch {
                outbox: Vec::new(),
                jobs: Vec::with_capacity(jobs.len()),
            };
            for ((job, key), reply) in jobs.into_iter().zip(keys).zip(replies) {
                match accept(db, std::slice::from_ref(&job), &[key], now).await {
                    Ok(accepted) => match accepted.dispatches.into_iter().next().flatten() {
                        Some(dispatch) => {
                            batch.outbox.push(accepted.outbox);
                            batch.jobs.push(committed(job, dispatch, reply, now));
                        }
                        None => {
                            let _ = reply.send(Ok(Admission::KeyTaken));
                        }
                    },
                    Err(e) => {
                        let _ = reply.send(Err(e.into()));
                    }
                }
            }
            batch
        }
        Err(e) => {
            tracing::warn!(error = %e, "inserting jobs failed");
            let unavailable = e.is_unavailable();
            for reply in replies {
                let error = if unavailable {
                    IntakeError::Unavailable
                } else {
                    IntakeError::Failed(e.to_string())
                };
                let _ = reply.send(Err(error));
            }
            Batch {
                outbox: Vec::new(),
                jobs: Vec::new(),
            }
        }
    }
}

fn committed(job: NewJob, dispatch: Dispatch, reply: Reply, now: DateTime<Utc>) -> Committed {
    Committed {
        dispatch,
        row: Box::new(Job::from_new(job, now)),
        reply,
    }
}

/// Sends committed batches to Redis in commit order, every batch that is waiting in one
/// go, then answers their requests (also when Redis is down: the jobs are committed and
/// the dispatcher loop sends them later).
async fn dispatch_loop(
    dispatcher: Dispatcher,
    mut rx: mpsc::Receiver<Batch>,
    marks: mpsc::Sender<Vec<OutboxId>>,
) {
    let mut waiting = Vec::new();
    while rx.recv_many(&mut waiting, DISPATCH_QUEUE).await > 0 {
        let mut outbox = Vec::new();
        let mut batch = Vec::new();
        for b in waiting.drain(..) {
            outbox.extend(b.outbox);
            batch.extend(b.jobs);
        }
        let jobs: Vec<&Dispatch> = batch.iter().map(|c| &c.dispatch).collect();
        let in_redis = dispatcher.enqueue_now(&jobs).await;
        for c in batch {
            let _ = c.reply.send(Ok(Admission::Created(c.row)));
        }
        if in_redis && marks.try_send(outbox).is_err() {
            tracing::debug!(
                "the outbox mark queue is full; the dispatcher will see these jobs again"
            );
        }
    }
}

/// Drops the outbox entries of dispatched batches, everything waiting in one statement,
/// at most every [`MARK_EVERY`]: under load one statement covers thousands of jobs.
async fn mark_loop(dispatcher: Dispatcher, mut rx: mpsc::Receiver<Vec<OutboxId>>) {
    let mut waiting = Vec::new();
    while rx.recv_many(&mut waiting, MARK_QUEUE).await > 0 {
        let entries: Vec<OutboxId> = waiting.drain(..).flatten().collect();
        dispatcher.clear_outbox(&entries).await;
        tokio::time::sleep(MARK_EVERY).await;
    }
}
