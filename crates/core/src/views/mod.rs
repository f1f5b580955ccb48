//! What the API answers with, and what its clients (the `courier` CLI, callbacks) read
//! back: one module per resource.

mod flow;
mod job;
mod problem;
mod queue;
mod schedule;

pub use flow::*;
pub use job::*;
pub use problem::*;
pub use queue::*;
pub use schedule::*;
