//! The life of a job, one module a stage, above the SQL of [`crate::repo`] and the Redis
//! scripts of [`crate::queue`]. (`queue::lifecycle` is only Redis's side of this way.)
//!
//! 1. [`accept`]: jobs committed in PostgreSQL, each with its idempotency key, and one
//!    dispatch outbox entry naming them all, in one statement; the single-job intake,
//!    the batch route, the scheduler's firing and callbacks all accept through it;
//! 2. [`dispatch`]: committed jobs into Redis, at once and, for those that missed it,
//!    from the outbox;
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
pub mod record;

pub use accept::{Accepted, accept};
pub use dispatch::Dispatcher;
