//! The PostgreSQL repository: SQL only, one module per concept. Functions take any
//! `PgExecutor`, so a caller can run them inside its own transaction; what a job's life
//! does with them (and with Redis) is [`crate::stages`]'s.
//!
//! - [`rows`]: the job row, its one column list and effective state, and reads;
//! - [`jobs`]: inserting, cancelling and retrying jobs;
//! - [`dispatch_outbox`]: committed jobs that may not have reached Redis yet;
//! - [`history`] and [`executions`]: attempts' starts and ends written in batches, and
//!   attempts read back;
//! - [`queue_counts`]: depth per queue;
//! - [`schedules`]: schedules and their runs;
//! - [`flow`]: queue settings and flow keys (flow control);
//! - [`upkeep`]: the queries of reconciliation and recovery;
//! - [`partitions`]: the day partitions of jobs and executions, and retention's removals;
//! - [`keys`]: API keys; [`sessions`]: the dashboard's sign-in sessions;
//! - [`bulk`]: bulk retry and cancel; [`audit`]: the log of changes;
//! - [`throughput`]: jobs per minute over the last hour.

pub mod audit;
pub mod bulk;
mod dispatch_outbox;
mod executions;
pub mod flow;
mod history;
mod jobs;
pub mod keys;
pub mod partitions;
mod queue_counts;
mod rows;
pub mod schedules;
pub mod sessions;
pub mod throughput;
mod upkeep;

pub use dispatch_outbox::*;
pub use executions::{ExecutionRow, Outcome, list_executions};
pub use history::{
    ExecutionRecord, JobUpdate, Started, fill_cancelled_outcomes, mark_started, set_aside,
    write_ends,
};
pub use jobs::*;
pub use queue_counts::*;
pub use rows::*;
pub use upkeep::*;

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

    /// Whether trying the same statement again may succeed. PostgreSQL's refusals of the
    /// data itself (SQLSTATE classes 22, data exceptions, and 23, integrity violations
    /// such as a `CHECK`) never will; anything else (unreachable, a deadlock, a missing
    /// migration) might once it is fixed.
    pub fn is_transient(&self) -> bool {
        let Self::Database(e) = self;
        !matches!(e, sqlx::Error::Database(db)
            if db.code().is_some_and(|c| c.starts_with("22") || c.starts_with("23")))
    }
}
