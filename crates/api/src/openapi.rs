//! The OpenAPI 3.1 document of the whole API, generated from the handlers and types.

use axum::Json;
use utoipa::OpenApi;

use crate::{error::Problem, routes::*, views::*};
use courier_core::JobState;
use courier_core::domain::{BackoffRequest, FieldError, JobRequest, Method, TargetRequest};

#[derive(OpenApi)]
#[openapi(
    info(title = "Courier", description = "A self-hosted HTTP job scheduler."),
    paths(create_job, create_batch, get_job, list_executions, list_jobs, cancel_job, retry_job,
          list_queues, get_queue, healthz, readyz),
    components(schemas(JobRequest, TargetRequest, BackoffRequest, Method, JobState, BatchRequest, BatchAccepted,
                       JobView, TargetView, BackoffView, LastOutcome, JobPage, ExecutionView, ExecutionList,
                       QueueView, QueueList, Problem, FieldError, ReadyChecks)),
    tags((name = "jobs"), (name = "queues"), (name = "health"))
)]
pub struct ApiDoc;

/// `GET /openapi.json`.
pub async fn serve() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
