//! The life of a job, one module a stage, above the SQL of [`crate::repo`] and the Redis
//! scripts of [`crate::queue`]. (`queue::lifecycle` is only Redis's side of this way.)
//!
//! 1. [`accept`]: jobs committed in PostgreSQL, each with its idempotency key, and one
//!    dispatch outbox entry naming them all, in one statement; the single-job intake,
//!    the batch route, the scheduler's firing and callbacks all accept through it;
//! 2. [`dispatch`]: committed jobs into Redis, at once and, for those that missed it,
//!    from the outbox, each queue's flow control mirrored there first ([`mirror`]);
//! 3. [`attempt`]: a worker's call judged (the [`attempt::Verdict`]) and the attempt's
//!    end ([`attempt::AttemptEnd`]: its execution record and the job's new state), which
//!    goes to Redis under the attempt's fencing token and to PostgreSQL;
//! 4. [`record`]: attempts' ends (and cancellations) written to PostgreSQL, each in the
//!    transaction that makes the callbacks the end calls for;
//! 5. [`callback`]: the job that tells a callback URL how its parent ended, accepted in
//!    the transaction that records the end.
//!
//! What keeps the stages honest when a process dies between two of them is in
//! [`crate::maintenance`]: the outbox pass, reconciliation, the missing-job check, and
//! the recovery of attempts whose end never arrived.

pub mod accept;
pub mod attempt;
pub mod callback;
pub mod dispatch;
pub mod mirror;
pub mod record;

use std::time::Duration;

use tokio_util::sync::CancellationToken;

pub use accept::{Accepted, accept};
pub use dispatch::Dispatcher;

use crate::{queue::QueueError, repo::RepoError};

/// A failure of a stage that reads PostgreSQL and Redis, or of a maintenance pass over
/// them (`maintenance::MaintenanceError` is this).
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    #[error(transparent)]
    Repo(#[from] RepoError),
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    /// Another process holds the lock of this work for longer than it should take.
    #[error("{0}")]
    Busy(&'static str),
}

/// Runs `pass` every `interval` until `stop`; a pass that returns `true` (more to do)
/// runs again at once. Failures are logged and retried on the next tick.
pub(crate) async fn repeat<F, Fut>(
    stop: &CancellationToken,
    interval: Duration,
    mut pass: F,
    what: &str,
) where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<bool, StageError>>,
{
    loop {
        match pass().await {
            Ok(true) => continue,
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "{what} failed; retrying"),
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
    }
}
