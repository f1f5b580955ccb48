//! Group commit for `POST /v1/jobs`. Each request hands its parsed job to the intake
//! task and waits; the task inserts everything waiting in one statement and one commit,
//! answers every request once that commit lands (a 2xx still means durable), and passes
//! the batch to one dispatch task, which sends batches to Redis in order (so FIFO holds)
//! while the next batch is being inserted. Under load a commit carries many jobs instead
//! of one; alone, a request is its own batch and waits for nothing.

use chrono::Utc;
use courier_core::{
    JobId,
    domain::NewJob,
    maintenance::Maintenance,
    repo::{self, Idempotency, JobRow, RepoError},
};
use tokio::sync::{mpsc, oneshot};

/// Most jobs in one commit.
const MAX_BATCH: usize = 512;

/// What became of a submitted job.
#[derive(Debug)]
pub enum Admission {
    /// Committed; the row as stored.
    Created(Box<JobRow>),
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

/// The sending side of the intake; cheap to clone.
#[derive(Clone)]
pub struct Intake {
    tx: mpsc::Sender<Submission>,
}

impl Intake {
    /// Starts the intake and dispatch tasks. They end when every `Intake` is dropped.
    pub fn spawn(maintenance: Maintenance) -> Self {
        let (tx, rx) = mpsc::channel(MAX_BATCH * 4);
        let (dispatch_tx, dispatch_rx) = mpsc::channel(4);
        tokio::spawn(commit_loop(maintenance.clone(), rx, dispatch_tx));
        tokio::spawn(dispatch_loop(maintenance, dispatch_rx));
        Self { tx }
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
    maintenance: Maintenance,
    mut rx: mpsc::Receiver<Submission>,
    dispatch: mpsc::Sender<Vec<(Box<JobRow>, Reply)>>,
) {
    loop {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        if rx.recv_many(&mut batch, MAX_BATCH).await == 0 {
            return;
        }
        commit_batch(&maintenance, batch, &dispatch).await;
    }
}

async fn commit_batch(
    maintenance: &Maintenance,
    mut batch: Vec<Submission>,
    dispatch: &mpsc::Sender<Vec<(Box<JobRow>, Reply)>>,
) {
    let now = Utc::now();
    let (jobs, keys): (Vec<NewJob>, Vec<Option<Idempotency>>) = batch
        .iter()
        .map(|s| (s.job.clone(), s.idempotency.clone()))
        .unzip();
    let outcome = match repo::insert_jobs(&maintenance.db, &jobs, &keys, now).await {
        Err(e) if !e.is_unavailable() && batch.len() > 1 => {
            // One row the database refuses must not fail its neighbours: insert each
            // on its own and answer each with its own result.
            tracing::warn!(error = %e, jobs = batch.len(), "a batch insert failed; inserting one by one");
            None
        }
        result => Some(result),
    };
    // Created jobs are answered by the dispatch task once they are in Redis, so a
    // client never holds the id of a job that a cancel could miss.
    let mut created = Vec::with_capacity(batch.len());
    let mut answer = |submission: Submission, result: Result<Admission, IntakeError>| match result {
        Ok(Admission::Created(row)) => created.push((row, submission.reply)),
        other => {
            let _ = submission.reply.send(other);
        }
    };
    match outcome {
        Some(Ok(inserted)) => {
            let inserted: std::collections::HashSet<JobId> = inserted.into_iter().collect();
            for submission in batch.drain(..) {
                let admission = admit(&submission.job, inserted.contains(&submission.job.id), now);
                answer(submission, Ok(admission));
            }
        }
        Some(Err(e)) => {
            tracing::warn!(error = %e, "inserting jobs failed");
            let unavailable = e.is_unavailable();
            for submission in batch.drain(..) {
                let error = if unavailable {
                    IntakeError::Unavailable
                } else {
                    IntakeError::Failed(e.to_string())
                };
                answer(submission, Err(error));
            }
        }
        None => {
            for submission in batch.drain(..) {
                let keys = [submission.idempotency.clone()];
                let result = repo::insert_jobs(
                    &maintenance.db,
                    std::slice::from_ref(&submission.job),
                    &keys,
                    now,
                )
                .await
                .map(|inserted| admit(&submission.job, !inserted.is_empty(), now))
                .map_err(IntakeError::from);
                answer(submission, result);
            }
        }
    }
    if !created.is_empty()
        && let Err(mpsc::error::SendError(created)) = dispatch.send(created).await
    {
        tracing::error!("the dispatch task is gone; the dispatcher loop will send these jobs");
        for (row, reply) in created {
            let _ = reply.send(Ok(Admission::Created(row)));
        }
    }
}

fn admit(job: &NewJob, inserted: bool, now: chrono::DateTime<Utc>) -> Admission {
    if inserted {
        Admission::Created(Box::new(JobRow::from_new(job, now)))
    } else {
        Admission::KeyTaken
    }
}

/// Sends committed batches to Redis in commit order, then answers their requests (also
/// when Redis is down: the jobs are committed and the dispatcher loop sends them later).
async fn dispatch_loop(
    maintenance: Maintenance,
    mut rx: mpsc::Receiver<Vec<(Box<JobRow>, Reply)>>,
) {
    while let Some(batch) = rx.recv().await {
        let jobs: Vec<_> = batch
            .iter()
            .filter_map(|(row, _)| row.to_dispatch())
            .collect();
        let in_redis = maintenance.enqueue_now(&jobs).await;
        // Answer as soon as the jobs are in Redis; the mark only spares the dispatcher.
        for (row, reply) in batch {
            let _ = reply.send(Ok(Admission::Created(row)));
        }
        if in_redis {
            maintenance.mark_dispatched(&jobs).await;
        }
    }
}
