//! Accepting jobs: the one way a job enters Courier, whoever makes it (a request, a
//! batch, a schedule's occurrence, a callback). The jobs, their idempotency keys and one
//! dispatch outbox entry naming them all are written in one statement, so a job is never
//! committed without a record that it still has to reach Redis.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;

use crate::{
    domain::{JobId, NewJob},
    queue::Dispatch,
    repo::{self, Idempotency, OutboxId, RepoError},
};

/// What accepting a list of jobs did.
#[derive(Debug)]
pub struct Accepted {
    /// The outbox entry naming the jobs created: whoever sends them to Redis clears it
    /// (the dispatcher's outbox pass sends them otherwise).
    pub outbox: OutboxId,
    /// For each job given, in order: what to send to Redis when it was created, `None`
    /// when its idempotency key was taken (by an earlier job, or earlier in the list).
    pub dispatches: Vec<Option<Dispatch>>,
}

impl Accepted {
    /// Whether the job at `index` of those given was created.
    pub fn created(&self, index: usize) -> bool {
        self.dispatches.get(index).is_some_and(Option::is_some)
    }

    /// How many were created.
    pub fn count(&self) -> usize {
        self.dispatches.iter().flatten().count()
    }

    /// The ids of the jobs created.
    pub fn ids(&self) -> Vec<JobId> {
        self.dispatches.iter().flatten().map(|d| d.id).collect()
    }

    /// What to send to Redis: the jobs created, in order.
    pub fn into_dispatches(self) -> Vec<Dispatch> {
        self.dispatches.into_iter().flatten().collect()
    }
}

/// Commits `jobs` in `db` (a pool, or the caller's transaction), with `keys` giving each
/// its idempotency key (empty when none has one). All or none: an error writes nothing.
/// `now` is their creation time, as the answer to their submission shows it (see
/// [`repo::Job::from_new`]).
///
/// # Errors
/// PostgreSQL unreachable or refusing the rows.
pub async fn accept(
    db: impl PgExecutor<'_>,
    jobs: &[NewJob],
    keys: &[Option<Idempotency>],
    now: DateTime<Utc>,
) -> Result<Accepted, RepoError> {
    let outbox = OutboxId::new();
    let specs: Vec<String> = jobs.iter().map(|j| j.spec.to_json()).collect();
    let inserted: HashSet<JobId> = repo::insert_jobs(db, jobs, &specs, keys, outbox, now)
        .await?
        .into_iter()
        .collect();
    let dispatches = jobs
        .iter()
        .zip(specs)
        .map(|(job, spec)| {
            inserted.contains(&job.id).then(|| {
                Dispatch::with_payload(job.id, job.queue.clone(), spec, &job.spec, job.run_at, 0)
            })
        })
        .collect();
    Ok(Accepted { outbox, dispatches })
}
