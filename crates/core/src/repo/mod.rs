//! The PostgreSQL repository, one module per table. Functions take any `PgExecutor`, so a
//! caller can run them inside its own transaction.

mod executions;
mod jobs;
pub mod keys;

pub use executions::{
    AttemptEnd, ExecutionRecord, ExecutionRow, JobUpdate, Outcome, Started, list_executions,
    record_history,
};
pub use jobs::*;

/// A failure of the repository.
#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

impl RepoError {
    /// Whether PostgreSQL could not be reached (as opposed to refusing the statement).
    pub fn is_unavailable(&self) -> bool {
        let Self::Database(e) = self;
        matches!(
            e,
            sqlx::Error::PoolTimedOut
                | sqlx::Error::Io(_)
                | sqlx::Error::PoolClosed
                | sqlx::Error::Tls(_)
        ) || matches!(e, sqlx::Error::Database(db) if db.code().is_some_and(|c| c.starts_with("57P") || c.starts_with("08")))
    }
}
