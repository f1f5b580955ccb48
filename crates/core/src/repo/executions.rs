//! The `job_executions` table: every attempt of a job, as read back.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;

use super::RepoError;
use crate::domain::JobId;

/// How an attempt ended. Stored as text (`job_executions.outcome`, whose `CHECK` lists
/// the same names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, sqlx::Type)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum Outcome {
    Succeeded,
    /// The target answered with a status that is not a success, or the call could not be
    /// made at all (SSRF protection refused it, the payload was unreadable).
    Failed,
    Timeout,
    ConnectionError,
    Cancelled,
    /// The worker stopped heartbeating (it died or stalled) and the lease ran out.
    LeaseExpired,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Timeout => "timeout",
            Self::ConnectionError => "connection_error",
            Self::Cancelled => "cancelled",
            Self::LeaseExpired => "lease_expired",
        }
    }
}

/// An execution as read back.
#[derive(Debug, Clone)]
pub struct ExecutionRow {
    pub round: i32,
    pub attempt: i32,
    pub worker: String,
    pub outcome: Outcome,
    pub stale: bool,
    pub status_code: Option<i16>,
    pub error: Option<String>,
    pub duration_ms: i32,
    pub response_excerpt: Option<String>,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
}

/// Every attempt of a job, by round (a retry of a dead or cancelled job starts a new
/// one) and attempt number. (A reaped attempt's record is written when its lease is
/// taken back, which can be after the next attempt started.)
///
/// # Errors
/// PostgreSQL unreachable.
pub async fn list_executions(db: &PgPool, id: JobId) -> Result<Vec<ExecutionRow>, RepoError> {
    let rows = sqlx::query_as!(
        ExecutionRow,
        r#"SELECT round, attempt, worker, outcome AS "outcome: Outcome", stale, status_code, error,
                  duration_ms, response_excerpt, started_at, finished_at
           FROM job_executions WHERE job_id = $1 ORDER BY round, attempt, started_at, id"#,
        id as JobId
    )
    .fetch_all(db)
    .await?;
    Ok(rows)
}
