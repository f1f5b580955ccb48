//! What clients send: the request bodies of the API, with their OpenAPI schemas, each
//! parsed into domain values on the first line of its handler.

mod job;
mod schedule;

pub use job::{BackoffRequest, BatchRequest, JobRequest, TargetRequest};
pub use schedule::{
    BackfillRequest, CatchupRequest, MAX_BACKFILL, MIN_EVERY_MS, ParseContext, PauseRequest,
    SchedulePatch, ScheduleRequest,
};
