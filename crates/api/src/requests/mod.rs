//! What clients send: the request bodies and query strings of the API (bodies with their
//! OpenAPI schemas), each parsed into domain values on the first line of its handler.

mod bulk;
mod flow;
mod job;
mod job_list;
pub mod page;
mod schedule;

use serde::{Deserialize, Deserializer};

pub use bulk::{BulkFilterRequest, BulkRequest};
pub use flow::{FlowKeyRequest, QueueSettingsPatch, RateRequest};
pub use job::{
    BackoffRequest, BatchRequest, CallbackRequest, JobRequest, ProgressRequest, TargetRequest,
};
pub use job_list::job_list_query;
pub use page::Page;
pub use schedule::{
    BackfillRequest, CatchupRequest, MAX_BACKFILL, MIN_EVERY_MS, ParseContext, PauseRequest,
    SchedulePatch, ScheduleRequest,
};

/// For a field of a `PATCH` body: `Some(None)` for an explicit `null` (clear it), `None`
/// for a field left out (keep it). Used with `#[serde(default)]`.
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}
