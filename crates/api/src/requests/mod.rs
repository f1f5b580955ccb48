//! What clients send: the request bodies of the API, with their OpenAPI schemas, each
//! parsed into domain values on the first line of its handler.

mod job;

pub use job::{BackoffRequest, BatchRequest, JobRequest, TargetRequest};
