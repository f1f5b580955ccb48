//! Bulk retry and cancel (SPEC 12): every job that matches a filter at the moment of the
//! request, changed in batches.

use axum::{Json, Router, extract::State, routing::post};
use chrono::{DateTime, Utc};
use courier_core::{
    QueueName,
    queue::Dispatch,
    repo::{
        self,
        bulk::{self, BulkAction},
    },
    stages::record,
};
use serde::Serialize;
use utoipa::ToSchema;

use crate::{
    auth::Caller,
    error::{ApiError, WriteProblems},
    extract::ApiJson,
    requests::BulkRequest,
    state::AppState,
};

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/jobs/bulk/retry", post(bulk_retry))
        .route("/v1/jobs/bulk/cancel", post(bulk_cancel))
}

/// What a bulk action matched, and, unless it was a dry run, how many it changed.
#[derive(Debug, Serialize, ToSchema)]
pub struct BulkResult {
    /// Jobs that matched the filter at `as_of` (counted before any change).
    pub matched: i64,
    /// Jobs changed; absent for a dry run. Below `matched` when some changed meanwhile
    /// (a job retried or ended by someone else).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub done: Option<i64>,
    /// The moment the filter was taken at: send it back to act on exactly these jobs.
    pub as_of: DateTime<Utc>,
}

/// Retry every dead or cancelled job that matches the filter (admin scope).
#[utoipa::path(post, path = "/v1/jobs/bulk/retry", tag = "jobs", request_body = BulkRequest,
    responses(
        (status = 200, body = BulkResult),
        WriteProblems,
    ))]
pub async fn bulk_retry(
    State(state): State<AppState>,
    caller: Caller,
    body: ApiJson<BulkRequest>,
) -> Result<Json<BulkResult>, ApiError> {
    run_bulk(&state, &caller, &body.value, BulkAction::Retry).await
}

/// Cancel every scheduled, queued or running job that matches the filter (admin scope);
/// running calls are aborted.
#[utoipa::path(post, path = "/v1/jobs/bulk/cancel", tag = "jobs", request_body = BulkRequest,
    responses(
        (status = 200, body = BulkResult),
        WriteProblems,
    ))]
pub async fn bulk_cancel(
    State(state): State<AppState>,
    caller: Caller,
    body: ApiJson<BulkRequest>,
) -> Result<Json<BulkResult>, ApiError> {
    run_bulk(&state, &caller, &body.value, BulkAction::Cancel).await
}

async fn run_bulk(
    state: &AppState,
    caller: &Caller,
    request: &BulkRequest,
    action: BulkAction,
) -> Result<Json<BulkResult>, ApiError> {
    let (verb, name) = match action {
        BulkAction::Retry => ("bulk retry", "jobs.bulk_retry"),
        BulkAction::Cancel => ("bulk cancel", "jobs.bulk_cancel"),
    };
    caller.check_admin(verb)?;
    let (mut filter, as_of) = request
        .parse(action, Utc::now())
        .map_err(ApiError::Validation)?;
    if let Some(queue) = &filter.queue {
        caller.check_queue(queue.as_str())?;
    }
    filter.allowed_queues = caller.queues().map(<[String]>::to_vec);
    let matched = bulk::count(&state.db, action, &filter, as_of).await?;
    if request.dry_run {
        return Ok(Json(BulkResult {
            matched,
            done: None,
            as_of,
        }));
    }
    let mut done = 0i64;
    let mut after = None;
    loop {
        let changed = match action {
            BulkAction::Retry => {
                let mut tx = state.db.begin().await?;
                let jobs = bulk::retry_batch(&mut *tx, &filter, as_of, after).await?;
                tx.commit().await?;
                after = jobs.last().map(|j| j.id);
                let n = jobs.len();
                let jobs: Vec<Dispatch> = jobs
                    .into_iter()
                    .map(|j| Dispatch::new(j.id, j.queue, &j.spec, j.run_at, 0))
                    .collect();
                // The outbox rows committed with the batch re-send whatever this misses.
                state.dispatcher().dispatch_now(&jobs).await;
                n
            }
            BulkAction::Cancel => {
                let mut tx = state.db.begin().await?;
                let jobs = bulk::cancel_batch(&mut *tx, &filter, as_of, after).await?;
                after = jobs.last().map(|(id, _)| *id);
                let ids: Vec<courier_core::JobId> = jobs.iter().map(|(id, _)| *id).collect();
                let callbacks = record::cancelled(&mut tx, &state.secrets, &ids).await?;
                let mut by_queue: std::collections::BTreeMap<&QueueName, Vec<courier_core::JobId>> =
                    std::collections::BTreeMap::new();
                for (id, queue) in &jobs {
                    by_queue.entry(queue).or_default().push(*id);
                }
                // Redis first, while the rows are locked, as a single cancel does: if
                // Redis cannot be told, the batch is rolled back.
                for (queue, ids) in &by_queue {
                    state.queue.cancel_many(queue, ids).await?;
                }
                tx.commit().await?;
                for (queue, ids) in &by_queue {
                    courier_core::metrics::finished(queue.as_str(), "cancelled", ids.len() as u64);
                }
                state.dispatcher().dispatch_callbacks(vec![callbacks]).await;
                jobs.len()
            }
        };
        done += changed as i64;
        if (changed as i64) < bulk::BATCH {
            break;
        }
    }
    let mut entry = caller.audit(
        name,
        serde_json::to_value(&request.filter).unwrap_or_default(),
        Some(done),
    );
    entry.details = Some(serde_json::json!({"matched": matched, "as_of": as_of}));
    repo::audit::record(&state.db, &entry).await?;
    Ok(Json(BulkResult {
        matched,
        done: Some(done),
        as_of,
    }))
}
