//! Flow control (SPEC 10): a queue's pause and limits (`/v1/queues/{name}/settings`,
//! `.../pause`, `.../resume`) and flow keys (`/v1/flow-keys`). Changes are committed to
//! PostgreSQL, then mirrored into Redis at once; when Redis is unreachable the mirror
//! loop of every Courier process puts them there within a second of its return.

use axum::{
    Json, Router,
    extract::{Path, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{get, post},
};
use courier_core::{
    QueueName,
    domain::{FlowKey, QueueFlow},
    repo::flow as store,
    views::{FlowKeyLimitsView, FlowKeyList, FlowKeyQueueView, FlowKeyView, QueueSettingsView},
};

use crate::{
    auth::Caller,
    error::{ApiError, ReadProblems, WriteProblems},
    extract::{ApiJson, QueuePath},
    requests::{FlowKeyRequest, QueueSettingsPatch},
    state::AppState,
};

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/v1/queues/{name}/settings",
            get(get_queue_settings).patch(patch_queue_settings),
        )
        .route("/v1/queues/{name}/pause", post(pause_queue))
        .route("/v1/queues/{name}/resume", post(resume_queue))
        .route("/v1/flow-keys", get(list_flow_keys))
        .route(
            "/v1/flow-keys/{key}",
            get(get_flow_key).put(put_flow_key).delete(delete_flow_key),
        )
}

fn flow_key(key: &str) -> Result<FlowKey, ApiError> {
    FlowKey::parse(key)
        .map_err(|m| ApiError::Validation(vec![courier_core::domain::FieldError::new("key", m)]))
}

/// Commits a change to `queue`'s settings and mirrors it into Redis.
async fn change_queue(
    state: &AppState,
    caller: &Caller,
    action: &'static str,
    queue: &QueueName,
    change: impl FnOnce(&mut QueueFlow),
) -> Result<QueueSettingsView, ApiError> {
    let mut tx = state.db.begin().await?;
    let row = store::update_queue_settings(&mut tx, queue, change).await?;
    let view = crate::views::queue_settings_view(queue.as_str(), Some(&row));
    let mut entry = caller.audit(action, serde_json::json!(queue.as_str()), None);
    entry.details = serde_json::to_value(&view).ok();
    courier_core::repo::audit::record(&mut *tx, &entry).await?;
    tx.commit().await?;
    mirror(state, Some(queue)).await;
    Ok(view)
}

/// Mirrors flow control into Redis now (one queue, or every queue after a flow key
/// changed). PostgreSQL has the change either way: if Redis cannot be reached, the
/// mirror loop puts it there later.
async fn mirror(state: &AppState, queue: Option<&QueueName>) {
    let flow = state.maintenance().flow();
    let result = match queue {
        Some(queue) => flow.mirror_queue(queue).await,
        None => flow.mirror_all().await.map(|_| ()),
    };
    if let Err(e) = result {
        tracing::warn!(error = %e, "could not mirror flow control into redis yet; the mirror loop will");
    }
}

/// A queue's pause and limits.
#[utoipa::path(get, path = "/v1/queues/{name}/settings", tag = "queues",
    params(("name" = String, Path, description = "Queue name")),
    responses(
        (status = 200, body = QueueSettingsView),
        ReadProblems,
    ))]
pub async fn get_queue_settings(
    State(state): State<AppState>,
    QueuePath(queue): QueuePath,
) -> Result<Json<QueueSettingsView>, ApiError> {
    let row = store::queue_settings(&state.db, &queue).await?;
    Ok(Json(crate::views::queue_settings_view(
        queue.as_str(),
        row.as_ref(),
    )))
}

/// Change a queue's pause and limits (admin scope). Limits hold across every worker:
/// calls started never exceed `rate`, calls in flight never exceed `max_concurrency`.
#[utoipa::path(patch, path = "/v1/queues/{name}/settings", tag = "queues",
    request_body = QueueSettingsPatch,
    params(("name" = String, Path, description = "Queue name")),
    responses(
        (status = 200, body = QueueSettingsView),
        WriteProblems,
    ))]
pub async fn patch_queue_settings(
    State(state): State<AppState>,
    caller: Caller,
    QueuePath(queue): QueuePath,
    body: ApiJson<QueueSettingsPatch>,
) -> Result<Json<QueueSettingsView>, ApiError> {
    caller.check_admin("changing a queue's settings")?;
    let change = body.value.parse().map_err(ApiError::Validation)?;
    Ok(Json(
        change_queue(&state, &caller, "queues.settings", &queue, change).await?,
    ))
}

/// Pause a queue (admin scope): no call starts until it is resumed; calls in flight
/// finish, and waiting jobs keep their places.
#[utoipa::path(post, path = "/v1/queues/{name}/pause", tag = "queues",
    params(("name" = String, Path, description = "Queue name")),
    responses(
        (status = 200, body = QueueSettingsView),
        ReadProblems,
    ))]
pub async fn pause_queue(
    State(state): State<AppState>,
    caller: Caller,
    QueuePath(queue): QueuePath,
) -> Result<Json<QueueSettingsView>, ApiError> {
    caller.check_admin("pausing a queue")?;
    Ok(Json(
        change_queue(&state, &caller, "queues.pause", &queue, |f| f.paused = true).await?,
    ))
}

/// Resume a paused queue (admin scope).
#[utoipa::path(post, path = "/v1/queues/{name}/resume", tag = "queues",
    params(("name" = String, Path, description = "Queue name")),
    responses(
        (status = 200, body = QueueSettingsView),
        ReadProblems,
    ))]
pub async fn resume_queue(
    State(state): State<AppState>,
    caller: Caller,
    QueuePath(queue): QueuePath,
) -> Result<Json<QueueSettingsView>, ApiError> {
    caller.check_admin("resuming a queue")?;
    Ok(Json(
        change_queue(&state, &caller, "queues.resume", &queue, |f| {
            f.paused = false
        })
        .await?,
    ))
}

/// The key's limits and its live jobs in every queue: waiting and scheduled from
/// PostgreSQL, in flight and held on a limit from Redis.
async fn key_view(
    state: &AppState,
    caller: &Caller,
    key: &FlowKey,
    row: Option<&store::FlowKeyRow>,
) -> Result<FlowKeyView, ApiError> {
    let mut queues = Vec::new();
    for jobs in store::flow_key_jobs(&state.db, key).await? {
        if !caller.may_use(jobs.queue.as_str()) {
            continue;
        }
        let live = state.queue.key_counts(&jobs.queue, key).await?;
        queues.push(FlowKeyQueueView {
            queue: jobs.queue.to_string(),
            waiting: jobs.queued,
            scheduled: jobs.scheduled,
            in_flight: live.in_flight,
            held: live.held,
        });
    }
    Ok(crate::views::flow_key_view(key.as_str(), row, queues))
}

/// Every flow key with limits.
#[utoipa::path(get, path = "/v1/flow-keys", tag = "flow-keys",
    responses(
        (status = 200, body = FlowKeyList),
        ReadProblems,
    ))]
pub async fn list_flow_keys(State(state): State<AppState>) -> Result<Json<FlowKeyList>, ApiError> {
    let rows = store::all_flow_keys(&state.db).await?;
    Ok(Json(FlowKeyList {
        flow_keys: rows.iter().map(FlowKeyLimitsView::from).collect(),
    }))
}

/// A flow key: its limits, and its jobs waiting, scheduled, held on a limit and in
/// flight. 404 for a key with neither limits nor live jobs.
#[utoipa::path(get, path = "/v1/flow-keys/{key}", tag = "flow-keys",
    params(("key" = String, Path, description = "Flow key, [A-Za-z0-9_.:-]{1,128}")),
    responses(
        (status = 200, body = FlowKeyView),
        WriteProblems,
    ))]
pub async fn get_flow_key(
    State(state): State<AppState>,
    caller: Caller,
    Path(key): Path<String>,
) -> Result<Json<FlowKeyView>, ApiError> {
    let key = flow_key(&key)?;
    let row = store::flow_key(&state.db, &key).await?;
    let view = key_view(&state, &caller, &key, row.as_ref()).await?;
    if row.is_none() && view.queues.is_empty() {
        return Err(ApiError::NotFound(format!(
            "flow key {:?} has no limits and no live jobs",
            key.as_str()
        )));
    }
    Ok(Json(view))
}

/// Set a flow key's limits (admin scope), replacing any it had. A key's limits hold
/// within each queue its jobs are in, across every worker.
#[utoipa::path(put, path = "/v1/flow-keys/{key}", tag = "flow-keys", request_body = FlowKeyRequest,
    params(("key" = String, Path, description = "Flow key, [A-Za-z0-9_.:-]{1,128}")),
    responses(
        (status = 200, description = "Replaced", body = FlowKeyView),
        (status = 201, description = "Created", body = FlowKeyView),
        WriteProblems,
    ))]
pub async fn put_flow_key(
    State(state): State<AppState>,
    caller: Caller,
    Path(key): Path<String>,
    body: ApiJson<FlowKeyRequest>,
) -> Result<Response, ApiError> {
    caller.check_admin("setting a flow key's limits")?;
    let key = flow_key(&key)?;
    let limits = body.value.parse().map_err(ApiError::Validation)?;
    let mut tx = state.db.begin().await?;
    let (row, created) = store::put_flow_key(&mut tx, &key, &limits).await?;
    let mut entry = caller.audit("flow_keys.put", serde_json::json!(key.as_str()), None);
    entry.details = serde_json::from_slice(&body.raw).ok();
    courier_core::repo::audit::record(&mut *tx, &entry).await?;
    tx.commit().await?;
    mirror(&state, None).await;
    let view = key_view(&state, &caller, &key, Some(&row)).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(view)).into_response())
}

/// Remove a flow key's limits (admin scope); its jobs then run without them.
#[utoipa::path(delete, path = "/v1/flow-keys/{key}", tag = "flow-keys",
    params(("key" = String, Path, description = "Flow key, [A-Za-z0-9_.:-]{1,128}")),
    responses(
        (status = 204, description = "Removed"),
        WriteProblems,
    ))]
pub async fn delete_flow_key(
    State(state): State<AppState>,
    caller: Caller,
    Path(key): Path<String>,
) -> Result<StatusCode, ApiError> {
    caller.check_admin("removing a flow key's limits")?;
    let key = flow_key(&key)?;
    let mut tx = state.db.begin().await?;
    let removed = store::delete_flow_key(&mut tx, &key).await?;
    if removed {
        courier_core::repo::audit::record(
            &mut *tx,
            &caller.audit("flow_keys.delete", serde_json::json!(key.as_str()), None),
        )
        .await?;
    }
    tx.commit().await?;
    if !removed {
        return Err(ApiError::NotFound(format!(
            "flow key {:?} has no limits",
            key.as_str()
        )));
    }
    mirror(&state, None).await;
    Ok(StatusCode::NO_CONTENT)
}
