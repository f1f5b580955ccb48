//! Courier's worker: leases due jobs from Redis, makes their HTTP calls, retries with
//! backoff, and records every attempt in PostgreSQL through a batched history writer.

pub mod completer;
pub mod execute;
pub mod history;
pub mod http;
pub mod inflight;
pub mod leases;
pub mod metrics_server;
pub mod runner;

pub use runner::Worker;
