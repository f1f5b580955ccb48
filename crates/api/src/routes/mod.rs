//! The routes, one module per resource, merged in [`api_router`]: those that need an API
//! key (or the dashboard's session) behind the authentication layer, and beside them
//! those that do not (health, and a progress report, which carries its attempt's token).

mod audit;
mod bulk;
mod flow;
mod health;
mod jobs;
mod progress;
mod queues;
mod schedules;
mod ui;

use axum::{Router, http::StatusCode, response::Response};

use crate::{auth, error::problem_response, state::AppState};

pub use audit::{__path_list_audit, AuditPage, AuditView};
pub use bulk::{__path_bulk_cancel, __path_bulk_retry, BulkResult};
pub use flow::{
    __path_delete_flow_key, __path_get_flow_key, __path_get_queue_settings, __path_list_flow_keys,
    __path_patch_queue_settings, __path_pause_queue, __path_put_flow_key, __path_resume_queue,
};
pub use health::{__path_healthz, __path_metrics, __path_readyz, ReadyChecks};
pub use jobs::{
    __path_cancel_job, __path_create_batch, __path_create_job, __path_get_job,
    __path_list_executions, __path_list_jobs, __path_retry_job,
};
pub use progress::__path_report_progress;
pub use queues::{
    __path_get_queue, __path_list_queues, __path_queue_throughput, MinuteView, ThroughputView,
};
pub use schedules::{
    __path_backfill_schedule, __path_create_schedule, __path_delete_schedule, __path_get_schedule,
    __path_list_runs, __path_list_schedules, __path_patch_schedule, __path_pause_schedule,
    __path_put_schedule, __path_resume_schedule, __path_trigger_schedule,
};
pub use ui::{__path_get_session, __path_sign_in, __path_sign_out, SessionView, SignInRequest};

/// Every route of the API (but `/openapi.json`, which describes them).
pub fn api_router(state: AppState) -> Router {
    let keyed = Router::new()
        .merge(jobs::router())
        .merge(queues::router())
        .merge(flow::router())
        .merge(bulk::router())
        .merge(audit::router())
        .merge(ui::router())
        .merge(schedules::router())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            state.auth_state(),
            auth::authenticate,
        ));
    Router::new()
        .merge(keyed)
        // A progress report carries its attempt's token instead of a key; its handler
        // checks it.
        .merge(progress::router())
        .merge(health::router())
        .with_state(state)
}

async fn not_found() -> Response {
    problem_response(
        StatusCode::NOT_FOUND,
        "not-found",
        "no such route".into(),
        vec![],
    )
}

async fn method_not_allowed() -> Response {
    problem_response(
        StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
        "this route does not take that method".into(),
        vec![],
    )
}
