//! The OpenAPI 3.1 document of the whole API, generated from the handlers and types.

use axum::Json;
use utoipa::{Modify, OpenApi};

use crate::{error::Problem, requests::*, routes::*, views::*};
use courier_core::JobState;
use courier_core::domain::{FieldError, Method};
use courier_core::schedule::{CatchupPolicy, Overlap};

#[derive(OpenApi)]
#[openapi(
    info(title = "Courier", description = "A self-hosted HTTP job scheduler."),
    paths(create_job, create_batch, get_job, list_executions, list_jobs, cancel_job, retry_job, report_progress,
          list_queues, get_queue, get_queue_settings, patch_queue_settings, pause_queue, resume_queue,
          list_flow_keys, get_flow_key, put_flow_key, delete_flow_key, create_schedule, put_schedule, patch_schedule, get_schedule,
          list_schedules, delete_schedule, pause_schedule, resume_schedule, trigger_schedule,
          backfill_schedule, list_runs, bulk_retry, bulk_cancel, list_audit, queue_throughput, metrics,
          sign_in, get_session, sign_out, healthz, readyz),
    components(schemas(JobRequest, TargetRequest, BackoffRequest, Method, JobState, BatchRequest, BatchAccepted,
                       JobView, TargetView, BackoffView, LastOutcome, CallbackRequest, CallbackView,
                       CallbackRef, ProgressView, ProgressRequest, JobPage, ExecutionView, ExecutionList,
                       QueueView, QueueList, Problem, FieldError, ReadyChecks, OccurrenceView,
                       ScheduleRequest, CatchupRequest, SchedulePatch, PauseRequest, BackfillRequest,
                       ScheduleView, CatchupView, JobTemplateView, ScheduleList, RunView, RunPage,
                       Overlap, CatchupPolicy, QueueSettingsPatch, RateRequest, FlowKeyRequest,
                       QueueSettingsView, RateView, FlowKeyView, FlowKeyQueueView, FlowKeyList, FlowKeyLimitsView,
                       BulkRequest, BulkFilterRequest, BulkResult, AuditView, AuditPage, MinuteView,
                       ThroughputView, SessionView, SignInRequest)),
    tags((name = "jobs"), (name = "queues"), (name = "flow-keys"), (name = "schedules"), (name = "audit"), (name = "dashboard"), (name = "health")),
    modifiers(&ApiKeys)
)]
pub struct ApiDoc;

/// Every `/v1` operation needs a bearer API key and may answer 401, 403 and 429.
struct ApiKeys;

impl Modify for ApiKeys {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{
            Content, RefOr, ResponseBuilder,
            security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme},
        };
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("An API key from `courier-api keys create`"))
                    .build(),
            ),
        );
        let problem = |description: &str| {
            RefOr::T(
                ResponseBuilder::new()
                    .description(description)
                    .content(
                        "application/problem+json",
                        Content::new(Some(RefOr::Ref(utoipa::openapi::Ref::from_schema_name(
                            "Problem",
                        )))),
                    )
                    .build(),
            )
        };
        for (path, item) in doc.paths.paths.iter_mut() {
            // A progress report carries its attempt's token instead (its own responses
            // say so).
            if !path.starts_with("/v1/") || path.ends_with("/progress") {
                continue;
            }
            let operations = [
                &mut item.get,
                &mut item.post,
                &mut item.put,
                &mut item.patch,
                &mut item.delete,
            ];
            for operation in operations.into_iter().flatten() {
                operation.security = Some(vec![SecurityRequirement::new(
                    "api_key",
                    Vec::<String>::new(),
                )]);
                let responses = &mut operation.responses.responses;
                responses.insert(
                    "401".into(),
                    problem("No API key, or an unknown or revoked one"),
                );
                responses
                    .entry("403".into())
                    .or_insert_with(|| problem("The key's scope or queues do not allow this"));
                responses.insert(
                    "429".into(),
                    problem("The key is over its rate limit; see Retry-After"),
                );
            }
        }
    }
}

/// `GET /openapi.json`.
pub async fn serve() -> Json<serde_json::Value> {
    Json(document())
}

/// The document, with links from a created job to the operations on it, so that clients
/// (and fuzzers) can follow the `id` a `POST /v1/jobs` returns. They are added to the JSON
/// because utoipa 5 writes a link's `operationId` as `operation_id`.
pub fn document() -> serde_json::Value {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).expect("the document serialises");
    let links: serde_json::Map<_, _> = ["get_job", "list_executions", "cancel_job", "retry_job"]
        .into_iter()
        .map(|operation| {
            (
                operation.to_owned(),
                serde_json::json!({"operationId": operation, "parameters": {"id": "$response.body#/id"}}),
            )
        })
        .collect();
    for status in ["200", "201"] {
        if let Some(response) = doc
            .pointer_mut(&format!("/paths/~1v1~1jobs/post/responses/{status}"))
            .and_then(serde_json::Value::as_object_mut)
        {
            response.insert("links".into(), links.clone().into());
        }
    }
    doc
}
