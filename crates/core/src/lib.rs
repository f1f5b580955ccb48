//! Courier's core: the job domain, the stages of a job's life (accept, dispatch,
//! attempt, record, callback) over the Redis dispatch queue (one Lua script per
//! operation) and the PostgreSQL repository that is the system of record, the upkeep
//! that keeps the two in step, settings and telemetry. The API and the worker are thin
//! layers over this crate.

pub mod clock;
pub mod crypto;
pub mod db;
pub mod domain;
pub mod maintenance;
pub mod metrics;
pub mod outbound;
pub mod probe;
pub mod queue;
pub mod repo;
pub mod schedule;
pub mod settings;
pub mod signing;
pub mod stages;
pub mod telemetry;
pub mod views;

pub use domain::{JobId, JobState, QueueName};
pub use settings::Settings;
