//! The job domain: newtypes that can only hold valid values, parsed from the wire form
//! once at the edge so nothing downstream re-checks them.
//!
//! - [`ids`]: a job's id and its queue's name;
//! - [`job`]: a job as Courier knows it, as stored and shown;
//! - [`flow`]: flow control: a queue's pause and limits, and flow keys;
//! - [`spec`]: what a job asks for, as stored and carried to workers;
//! - [`parse`]: the rules that turn a submitted job's fields into those values;
//! - [`target`], [`backoff`], [`state`], [`outcome`], [`redact`]: the call, the waits
//!   between attempts, the life cycle, the last outcome, and which header values are
//!   secrets.

mod backoff;
mod callback;
mod flow;
mod ids;
mod job;
mod outcome;
pub mod parse;
mod redact;
pub mod rules;
mod spec;
mod state;
mod target;

pub use backoff::Backoff;
pub use callback::{Callback, DEFAULT_ON};
pub use flow::{Limits, MAX_CONCURRENCY, QueueFlow, Rate};
pub use ids::{FlowKey, JobId, QueueName, ScheduleName, Token};
pub use job::{ChildJob, Job, Progress, to_micros};
pub use outcome::LastOutcome;
pub use parse::{FieldError, Problems};
pub use redact::{REDACTED, is_secret_header};
pub use spec::{
    DEFAULT_MAX_ATTEMPTS, DEFAULT_TIMEOUT_MS, JobSpec, Labels, NewJob, Occurrence, Priority,
};
pub use state::JobState;
pub use target::{
    COURIER_HEADER_PREFIX, HEADER_NAME_CHARS, HOP_BY_HOP, MAX_URL_BYTES, Method, Target, TargetUrl,
};
