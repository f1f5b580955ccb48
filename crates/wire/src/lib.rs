//! Courier's wire: what the REST API answers with and its clients read back, and nothing
//! of how it is stored. The API builds these from its domain types (`courier-core`'s
//! `views`); the `courier` CLI, and any other client, depends on this crate alone.
//!
//! - [`job`]: jobs and their executions;
//! - [`schedule`]: schedules and their runs;
//! - [`queue`] and [`flow`]: queue depth, and flow control's settings and keys;
//! - [`state`]: a job's states, and the HTTP methods a job may use;
//! - [`problem`]: the RFC 9457 problem every error is answered with.

#![forbid(unsafe_code)]

pub mod flow;
pub mod job;
pub mod problem;
pub mod queue;
pub mod schedule;
pub mod state;

pub use flow::*;
pub use job::*;
pub use problem::*;
pub use queue::*;
pub use schedule::*;
pub use state::*;
