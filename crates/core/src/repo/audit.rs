//! `audit_log`: every change made through the API or the dashboard, with who made it.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgExecutor;
use uuid::Uuid;

use super::RepoError;

/// A change to record. `key` is `None` with authentication off or from the command line.
#[derive(Debug, Clone, Default)]
pub struct AuditEntry {
    pub key_id: Option<Uuid>,
    pub key_name: Option<String>,
    /// `<resource>.<verb>`, e.g. `jobs.cancel`, `jobs.bulk_retry`, `queues.pause`.
    pub action: &'static str,
    /// What it touched: a job id, a queue or schedule name, a bulk action's filter.
    pub target: Option<Value>,
    /// How many jobs it changed, where that is a number.
    pub count: Option<i64>,
    pub details: Option<Value>,
}

/// A recorded change, as `GET /v1/audit` shows it.
#[derive(Debug, Clone)]
pub struct AuditRow {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub key_name: Option<String>,
    pub action: String,
    pub target: Option<Value>,
    pub count: Option<i64>,
    pub details: Option<Value>,
}

/// Records one change; run it in the change's own transaction where there is one.
///
/// # Errors
/// PostgreSQL unreachable.
pub async fn record(db: impl PgExecutor<'_>, entry: &AuditEntry) -> Result<(), RepoError> {
    sqlx::query!(
        "INSERT INTO audit_log (key_id, key_name, action, target, count, details)
         VALUES ($1, $2, $3, $4, $5, $6)",
        entry.key_id,
        entry.key_name,
        entry.action,
        entry.target,
        entry.count,
        entry.details,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Changes newest first, `limit` of them older than `before` (the keyset cursor).
///
/// # Errors
/// PostgreSQL unreachable.
pub async fn list(
    db: impl PgExecutor<'_>,
    before: Option<i64>,
    limit: i64,
) -> Result<Vec<AuditRow>, RepoError> {
    Ok(sqlx::query_as!(
        AuditRow,
        r#"SELECT id, at, key_name, action, target, count, details
           FROM audit_log WHERE ($1::bigint IS NULL OR id < $1)
           ORDER BY id DESC LIMIT $2"#,
        before,
        limit
    )
    .fetch_all(db)
    .await?)
}
