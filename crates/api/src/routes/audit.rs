//! The audit log (SPEC 12): every change made through the API or the dashboard.

use axum::{
    Json, Router,
    extract::{RawQuery, State},
    routing::get,
};
use chrono::{DateTime, Utc};
use courier_core::repo;
use serde::Serialize;
use utoipa::ToSchema;

use crate::{
    auth::Caller,
    error::{ApiError, Problem, WriteProblems},
    requests::Page,
    state::AppState,
};

pub(super) fn router() -> Router<AppState> {
    Router::new().route("/v1/audit", get(list_audit))
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
    let page: Page<i64> = Page::parse(query.as_deref())?;
    let rows = repo::audit::list(&state.db, page.cursor, page.limit).await?;
    let next_cursor = page.next(&rows, |r| r.id);
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
