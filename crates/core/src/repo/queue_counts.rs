//! How deep each queue is, counted in PostgreSQL.

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;

use super::RepoError;
use crate::domain::QueueName;

/// Depth of one queue.
#[derive(Debug, Clone)]
pub struct QueueDepth {
    pub queue: QueueName,
    pub scheduled: i64,
    pub queued: i64,
    pub running: i64,
    pub dead: i64,
    pub succeeded_last_hour: i64,
    pub dead_last_hour: i64,
    /// When the job that has waited longest became due.
    pub oldest_queued_since: Option<DateTime<Utc>>,
}

impl QueueDepth {
    /// A queue with no jobs at all.
    pub fn empty(queue: QueueName) -> Self {
        Self {
            queue,
            scheduled: 0,
            queued: 0,
            running: 0,
            dead: 0,
            succeeded_last_hour: 0,
            dead_last_hour: 0,
            oldest_queued_since: None,
        }
    }
}

/// Depth per queue, for one queue or all.
///
/// # Errors
/// PostgreSQL unreachable.
pub async fn queue_depths(
    db: impl PgExecutor<'_>,
    queue: Option<&QueueName>,
) -> Result<Vec<QueueDepth>, RepoError> {
    let rows = sqlx::query_as!(
        QueueDepth,
        r#"SELECT queue AS "queue!: QueueName",
             count(*) FILTER (WHERE effective = 'scheduled') AS "scheduled!",
             count(*) FILTER (WHERE effective = 'queued') AS "queued!",
             count(*) FILTER (WHERE effective = 'running') AS "running!",
             count(*) FILTER (WHERE effective = 'dead') AS "dead!",
             count(*) FILTER (WHERE effective = 'succeeded' AND finished_at > now() - interval '1 hour') AS "succeeded_last_hour!",
             count(*) FILTER (WHERE effective = 'dead' AND finished_at > now() - interval '1 hour') AS "dead_last_hour!",
             min(run_at) FILTER (WHERE effective = 'queued') AS oldest_queued_since
           FROM (SELECT queue, run_at, finished_at, job_effective_state(state, run_at) AS effective
                 FROM jobs
                 WHERE ($1::text IS NULL OR queue = $1)
                   AND (state IN ('scheduled', 'queued', 'running', 'dead') OR finished_at > now() - interval '1 hour')) j
           GROUP BY queue
           ORDER BY queue"#,
        queue.map(QueueName::as_str)
    )
    .fetch_all(db)
    .await?;
    Ok(rows)
}
