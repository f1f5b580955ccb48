//! `/v1/queues`: depth per state, from PostgreSQL, with each queue's pause and limits,
//! and a queue's throughput per minute over the last hour.

use axum::{Json, Router, extract::State, routing::get};
use chrono::{DateTime, Utc};
use courier_core::{
    QueueName,
    repo::{self, throughput},
};
use serde::Serialize;
use utoipa::ToSchema;

use crate::{
    auth::Caller,
    error::{ApiError, ReadProblems},
    extract::QueuePath,
    state::AppState,
    views::{QueueList, QueueView},
};

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/queues", get(list_queues))
        .route("/v1/queues/{name}", get(get_queue))
        .route("/v1/queues/{name}/throughput", get(queue_throughput))
}

/// Depth of every queue that has live jobs, dead jobs or jobs finished in the last hour.
#[utoipa::path(get, path = "/v1/queues", tag = "queues",
    responses((status = 200, body = QueueList), ReadProblems))]
pub async fn list_queues(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<QueueList>, ApiError> {
    let now = Utc::now();
    let mut depths = repo::queue_depths(&state.db, None).await?;
    let settings = repo::flow::all_queue_settings(&state.db).await?;
    // A paused or limited queue is listed even while it has no jobs.
    for row in &settings {
        if !depths.iter().any(|d| d.queue == row.queue) {
            depths.push(repo::QueueDepth::empty(row.queue.clone()));
        }
    }
    depths.sort_by(|a, b| a.queue.cmp(&b.queue));
    let flow_of = |queue: &QueueName| {
        settings
            .iter()
            .find(|row| row.queue == *queue)
            .map(repo::flow::QueueSettingsRow::flow)
            .unwrap_or_default()
    };
    Ok(Json(QueueList {
        queues: depths
            .into_iter()
            .filter(|d| caller.may_use(d.queue.as_str()))
            .map(|d| {
                let flow = flow_of(&d.queue);
                crate::views::queue_view(d, flow, now)
            })
            .collect(),
    }))
}

/// Depth of one queue (all zero for a queue with no jobs).
#[utoipa::path(get, path = "/v1/queues/{name}", tag = "queues",
    params(("name" = String, Path, description = "Queue name")),
    responses(
        (status = 200, body = QueueView),
        ReadProblems,
    ))]
pub async fn get_queue(
    State(state): State<AppState>,
    QueuePath(queue): QueuePath,
) -> Result<Json<QueueView>, ApiError> {
    let flow = repo::flow::queue_settings(&state.db, &queue)
        .await?
        .map(|row| row.flow())
        .unwrap_or_default();
    let depth = repo::queue_depths(&state.db, Some(&queue))
        .await?
        .into_iter()
        .next()
        .unwrap_or_else(|| repo::QueueDepth::empty(queue));
    Ok(Json(crate::views::queue_view(depth, flow, Utc::now())))
}

/// One minute of a queue's work.
#[derive(Debug, Serialize, ToSchema)]
pub struct MinuteView {
    /// The minute's start.
    pub at: DateTime<Utc>,
    pub succeeded: i64,
    pub dead: i64,
    pub submitted: i64,
}

/// A queue's last hour, minute by minute.
#[derive(Debug, Serialize, ToSchema)]
pub struct ThroughputView {
    pub queue: String,
    /// 60 minutes, oldest first, the current minute last.
    pub minutes: Vec<MinuteView>,
}

/// Jobs submitted, succeeded and dead per minute over the last hour.
#[utoipa::path(get, path = "/v1/queues/{name}/throughput", tag = "queues",
    params(("name" = String, Path, description = "Queue name")),
    responses(
        (status = 200, body = ThroughputView),
        ReadProblems,
    ))]
pub async fn queue_throughput(
    State(state): State<AppState>,
    QueuePath(queue): QueuePath,
) -> Result<Json<ThroughputView>, ApiError> {
    let minutes = throughput::last_hour(&state.db, &queue, Utc::now()).await?;
    Ok(Json(ThroughputView {
        queue: queue.as_str().to_owned(),
        minutes: minutes
            .into_iter()
            .map(|m| MinuteView {
                at: m.at,
                succeeded: m.succeeded,
                dead: m.dead,
                submitted: m.submitted,
            })
            .collect(),
    }))
}
