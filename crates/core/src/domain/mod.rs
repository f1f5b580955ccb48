//! The job domain: newtypes that can only hold valid values, parsed from the wire form
//! once at the edge so nothing downstream re-checks them.

mod backoff;
mod job;
mod redact;
mod state;
mod target;

pub use backoff::Backoff;
pub use job::{
    BackoffRequest, FieldError, JobId, JobRequest, JobSpec, Labels, NewJob, Priority, QueueName,
    TargetRequest,
};
pub use redact::{REDACTED, is_secret_header};
pub use state::JobState;
pub use target::{Method, Target, TargetUrl};
