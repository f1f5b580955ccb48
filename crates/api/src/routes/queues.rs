//! `/v1/queues`: depth per state, from PostgreSQL.

use axum::{
    Json, Router,
    extract::{Path, State},
    routing::get,
};
use chrono::Utc;
use courier_core::{QueueName, repo};

use crate::{
    auth::Caller,
    error::{ApiError, Problem},
    state::AppState,
    views::{QueueList, QueueView},
};

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/queues", get(list_queues))
        .route("/v1/queues/{name}", get(get_queue))
}

/// Depth of every queue that has live jobs, dead jobs or jobs finished in the last hour.
#[utoipa::path(get, path = "/v1/queues", tag = "queues",
    responses((status = 200, body = QueueList), (status = 503, body = Problem, content_type = "application/problem+json")))]
pub async fn list_queues(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<QueueList>, ApiError> {
    let now = Utc::now();
    let depths = repo::queue_depths(&state.db, None).await?;
    Ok(Json(QueueList {
        queues: depths
            .into_iter()
            .filter(|d| caller.may_use(d.queue.as_str()))
            .map(|d| QueueView::new(d, now))
            .collect(),
    }))
}

/// Depth of one queue (all zero for a queue with no jobs).
#[utoipa::path(get, path = "/v1/queues/{name}", tag = "queues",
    params(("name" = String, Path, description = "Queue name")),
    responses(
        (status = 200, body = QueueView),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 503, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn get_queue(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<QueueView>, ApiError> {
    let queue =
        QueueName::parse(&name).map_err(|m| ApiError::BadRequest(format!("queue name {m}")))?;
    caller.check_queue(queue.as_str())?;
    let depth = repo::queue_depths(&state.db, Some(&queue))
        .await?
        .into_iter()
        .next()
        .unwrap_or_else(|| repo::QueueDepth::empty(queue));
    Ok(Json(QueueView::new(depth, Utc::now())))
}
