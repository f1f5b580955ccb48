//! What passes between Rust and the queue's scripts: jobs going in, leased jobs coming
//! out, how attempts end, and the answers of the upkeep operations.

use chrono::{DateTime, Utc};

pub use crate::domain::Token;
use crate::domain::{FlowKey, JobId, JobSpec, QueueName};

/// A job to put into Redis.
#[derive(Debug, Clone)]
pub struct Dispatch {
    pub id: JobId,
    pub queue: QueueName,
    /// The job's spec as JSON, as workers read it.
    pub payload: String,
    pub priority: u8,
    pub due: DateTime<Utc>,
    /// Attempts already made (0 for a new job).
    pub attempts: u32,
    /// The flow key whose limits the job counts against.
    pub flow_key: Option<FlowKey>,
}

impl Dispatch {
    /// `spec` serialised for Redis.
    pub fn new(
        id: JobId,
        queue: QueueName,
        spec: &JobSpec,
        due: DateTime<Utc>,
        attempts: u32,
    ) -> Self {
        let payload = serde_json::to_string(spec).expect("a job spec always serialises");
        Self::with_payload(id, queue, payload, spec, due, attempts)
    }

    /// With `payload`, the JSON of `spec` already made (for PostgreSQL, say).
    pub fn with_payload(
        id: JobId,
        queue: QueueName,
        payload: String,
        spec: &JobSpec,
        due: DateTime<Utc>,
        attempts: u32,
    ) -> Self {
        Self {
            id,
            queue,
            payload,
            priority: spec.priority.get(),
            due,
            attempts,
            flow_key: spec.flow_key.clone(),
        }
    }
}

/// A job a worker now holds the lease of.
#[derive(Debug, Clone)]
pub struct Leased {
    pub id: JobId,
    pub queue: QueueName,
    pub token: Token,
    /// 1-based number of this attempt.
    pub attempt: u32,
    pub spec: JobSpec,
}

/// What one fetch found.
#[derive(Debug, Default)]
pub struct Fetched {
    pub jobs: Vec<Leased>,
    /// Leased jobs whose payload could not be read; they cannot be run.
    pub unreadable: Vec<Unreadable>,
    /// When to look again without being woken: the earliest scheduled job falls due, a
    /// flow key's wait ends, or the queue's rate allows the next call.
    pub next_due: Option<DateTime<Utc>>,
}

/// A leased job whose payload this process cannot read.
#[derive(Debug, Clone)]
pub struct Unreadable {
    pub id: JobId,
    pub token: Token,
    pub attempt: u32,
    pub error: String,
}

/// An attempt's end as [`super::RedisQueue::complete`] takes it: what Redis does with
/// the job, and the end itself (`stages::attempt::AttemptEnd`) as JSON for the journal.
#[derive(Debug, Clone)]
pub struct Ending {
    pub id: JobId,
    pub token: Token,
    pub priority: u8,
    /// When to try again; `None`: the job succeeded or is dead, and leaves Redis.
    pub retry_at: Option<DateTime<Utc>>,
    /// Until when the job's flow key waits (the target answered 429 or 503 with
    /// `Retry-After`); ignored for a job without a key.
    pub key_pause_until: Option<DateTime<Utc>>,
    /// The attempt's end as JSON, kept in the journal until PostgreSQL has it.
    pub record: String,
}

/// The journal entry of an attempt's record: `id:token`, with a kind for records other
/// than the attempt's own end (`reaped`, `stale`).
pub fn journal_entry(id: JobId, token: Token, kind: Option<&str>) -> String {
    match kind {
        Some(kind) => format!("{id}:{}:{kind}", token.0),
        None => format!("{id}:{}", token.0),
    }
}

/// A job whose lease expired and was taken back.
#[derive(Debug, Clone)]
pub struct Reaped {
    pub id: JobId,
    pub token: Token,
    pub attempts: u32,
    /// Whether the lost attempt was its last.
    pub dead: bool,
}

/// Why [`super::RedisQueue::wait_for_work`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    Work,
    NewQueue,
    TimedOut,
}

/// Where a cancelled job was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cancelled {
    /// A worker held it; the worker has been told to abort.
    Running,
    /// Queued or scheduled; it will not run.
    Waiting,
    /// Not in Redis (finished, or never dispatched).
    Absent,
}

/// Where [`super::RedisQueue::scan_ids`] is in a queue's sorted sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ScanCursor {
    pub(super) set: usize,
    pub(super) position: u64,
}

impl ScanCursor {
    pub const START: Self = Self {
        set: 0,
        position: 0,
    };
    pub(super) const DONE: Self = Self {
        set: usize::MAX,
        position: 0,
    };

    pub fn is_done(self) -> bool {
        self == Self::DONE
    }
}
