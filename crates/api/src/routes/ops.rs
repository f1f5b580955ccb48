//! Operating Courier (SPEC 12): bulk retry and cancel, the audit log, throughput per
//! minute, and Prometheus metrics.

use axum::{
    Json, Router,
    extract::{RawQuery, State},
    http::header,
    response::{IntoResponse, Response},
    routing::{get, post},
};
use chrono::{DateTime, Utc};
use courier_core::{
    QueueName,
    domain::FieldError,
    queue::Dispatch,
    repo::{
        self,
        bulk::{self, BulkAction},
        throughput,
    },
    stages::record,
};
use serde::Serialize;
use utoipa::ToSchema;

use crate::{
    auth::Caller,
    error::{ApiError, Problem, ReadProblems, WriteProblems},
    extract::{ApiJson, QueuePath},
    requests::BulkRequest,
    state::AppState,
};

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/jobs/bulk/retry", post(bulk_retry))
        .route("/v1/jobs/bulk/cancel", post(bulk_cancel))
        .route("/v1/audit", get(list_audit))
        .route("/v1/queues/{name}/throughput", get(queue_throughput))
        .route("/metrics", get(metrics))
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

/// One change in the audit log.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditView {
    pub id: i64,
    pub at: DateTime<Utc>,
    /// The name of the key that made the change (null with authentication off or from
    /// the command line).
    pub key_name: Option<String>,
    /// `<resource>.<verb>`: `jobs.cancel`, `jobs.retry`, `jobs.bulk_retry`,
    /// `jobs.bulk_cancel`, `queues.pause`, `queues.resume`, `queues.settings`,
    /// `flow_keys.put`, `flow_keys.delete`, `schedules.create`, `schedules.update`,
    /// `schedules.delete`, `schedules.pause`, `schedules.resume`, `schedules.trigger`,
    /// `schedules.backfill`, `keys.create`, `keys.revoke`.
    pub action: String,
    /// What it touched: a job id, a queue, a schedule, a flow key, a bulk filter.
    pub target: Option<serde_json::Value>,
    /// How many jobs it changed, where that is a number.
    pub count: Option<i64>,
    /// More about the change (a queue's settings after it, a bulk action's count).
    pub details: Option<serde_json::Value>,
}

/// A page of the audit log, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditPage {
    pub entries: Vec<AuditView>,
    pub next_cursor: Option<String>,
}

/// Every change made through the API or the dashboard, newest first.
#[utoipa::path(get, path = "/v1/audit", tag = "audit",
    params(
        ("limit" = Option<i64>, Query, description = "1 to 500, default 50"),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page"),
    ),
    responses(
        (status = 200, body = AuditPage),
        WriteProblems,
        (status = 403, description = "A key limited to some queues", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn list_audit(
    State(state): State<AppState>,
    caller: Caller,
    RawQuery(query): RawQuery,
) -> Result<Json<AuditPage>, ApiError> {
    // The log names every queue, schedule and key: a key limited to some queues must
    // learn nothing of the others.
    if let Some(allowed) = caller.queues() {
        return Err(ApiError::Forbidden(format!(
            "the audit log covers every queue; this API key may only use {allowed:?}"
        )));
    }
    let (limit, before) = page_query(query.as_deref().unwrap_or(""))?;
    let rows = repo::audit::list(&state.db, before, limit).await?;
    let next_cursor = (rows.len() as i64 == limit)
        .then(|| rows.last().map(|r| r.id.to_string()))
        .flatten();
    Ok(Json(AuditPage {
        entries: rows
            .into_iter()
            .map(|r| AuditView {
                id: r.id,
                at: r.at,
                key_name: r.key_name,
                action: r.action,
                target: r.target,
                count: r.count,
                details: r.details,
            })
            .collect(),
        next_cursor,
    }))
}

/// `limit` (1 to 500, default 50) and a numeric `cursor`.
fn page_query(query: &str) -> Result<(i64, Option<i64>), ApiError> {
    let bad =
        |field: &str, message: &str| ApiError::Validation(vec![FieldError::new(field, message)]);
    let (mut limit, mut before) = (50, None);
    for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
        match key.as_ref() {
            "limit" => {
                limit = value
                    .parse::<i64>()
                    .ok()
                    .filter(|l| (1..=500).contains(l))
                    .ok_or_else(|| bad("limit", "must be between 1 and 500"))?;
            }
            "cursor" => {
                before = Some(
                    value
                        .parse::<i64>()
                        .ok()
                        .filter(|c| *c > 0)
                        .ok_or_else(|| bad("cursor", "is not a cursor from this API"))?,
                );
            }
            other => {
                return Err(ApiError::BadRequest(format!(
                    "unknown query parameter {other:?}"
                )));
            }
        }
    }
    Ok((limit, before))
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

/// Prometheus metrics of this process (text exposition format).
#[utoipa::path(get, path = "/metrics", tag = "health",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
pub async fn metrics() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        courier_core::metrics::render(),
    )
        .into_response()
}
