//! The `queue_settings` and `flow_keys` tables (SPEC 10): what the operator set, which
//! Redis mirrors for the fetch script, and a key's live jobs. Every change bumps
//! `flow_control_version` in its own transaction, and a snapshot reads the version with
//! the tables, so a mirrored copy says exactly which state it is.

use chrono::{DateTime, Utc};
use sqlx::{PgExecutor, PgPool, Postgres, Transaction};

use super::RepoError;
use crate::domain::{FlowKey, Limits, QueueFlow, QueueName, Rate};

/// A queue's stored settings.
#[derive(Debug, Clone)]
pub struct QueueSettingsRow {
    pub queue: QueueName,
    pub paused: bool,
    pub rate_per_second: Option<f64>,
    pub rate_burst: Option<i32>,
    pub max_concurrency: Option<i32>,
    pub updated_at: DateTime<Utc>,
}

impl QueueSettingsRow {
    pub fn flow(&self) -> QueueFlow {
        QueueFlow {
            paused: self.paused,
            limits: limits(self.rate_per_second, self.rate_burst, self.max_concurrency),
        }
    }
}

/// A flow key's stored limits.
#[derive(Debug, Clone)]
pub struct FlowKeyRow {
    pub key: FlowKey,
    pub rate_per_second: Option<f64>,
    pub rate_burst: Option<i32>,
    pub max_concurrency: Option<i32>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl FlowKeyRow {
    pub fn limits(&self) -> Limits {
        limits(self.rate_per_second, self.rate_burst, self.max_concurrency)
    }
}

/// Stored limits were valid when written (the tables' `CHECK`s keep them so).
fn limits(rate: Option<f64>, burst: Option<i32>, conc: Option<i32>) -> Limits {
    Limits {
        rate: rate.zip(burst).map(|(per_second, burst)| Rate {
            per_second,
            burst: burst.max(1) as u32,
        }),
        max_concurrency: conc.map(|c| c.max(1) as u32),
    }
}

fn columns(limits: &Limits) -> (Option<f64>, Option<i32>, Option<i32>) {
    (
        limits.rate.map(|r| r.per_second),
        limits.rate.map(|r| r.burst as i32),
        limits.max_concurrency.map(|c| c as i32),
    )
}

/// One queue's settings, if any were ever set.
///
/// # Errors
/// PostgreSQL unreachable.
pub async fn queue_settings(
    db: impl PgExecutor<'_>,
    queue: &QueueName,
) -> Result<Option<QueueSettingsRow>, RepoError> {
    Ok(sqlx::query_as!(
        QueueSettingsRow,
        r#"SELECT queue AS "queue: QueueName", paused, rate_per_second, rate_burst,
                  max_concurrency, updated_at
           FROM queue_settings WHERE queue = $1"#,
        queue.as_str()
    )
    .fetch_optional(db)
    .await?)
}

/// Every queue's settings.
///
/// # Errors
/// PostgreSQL unreachable.
pub async fn all_queue_settings(
    db: impl PgExecutor<'_>,
) -> Result<Vec<QueueSettingsRow>, RepoError> {
    Ok(sqlx::query_as!(
        QueueSettingsRow,
        r#"SELECT queue AS "queue: QueueName", paused, rate_per_second, rate_burst,
                  max_concurrency, updated_at
           FROM queue_settings ORDER BY queue"#
    )
    .fetch_all(db)
    .await?)
}

/// Changes one queue's settings with `change`, under a row lock so that concurrent
/// changes apply one after the other; returns the settings as stored.
///
/// # Errors
/// PostgreSQL unreachable.
pub async fn update_queue_settings(
    tx: &mut Transaction<'_, Postgres>,
    queue: &QueueName,
    change: impl FnOnce(&mut QueueFlow),
) -> Result<QueueSettingsRow, RepoError> {
    sqlx::query!(
        "INSERT INTO queue_settings (queue) VALUES ($1) ON CONFLICT (queue) DO NOTHING",
        queue.as_str()
    )
    .execute(&mut **tx)
    .await?;
    let current = sqlx::query_as!(
        QueueSettingsRow,
        r#"SELECT queue AS "queue: QueueName", paused, rate_per_second, rate_burst,
                  max_concurrency, updated_at
           FROM queue_settings WHERE queue = $1 FOR UPDATE"#,
        queue.as_str()
    )
    .fetch_one(&mut **tx)
    .await?;
    let mut flow = current.flow();
    change(&mut flow);
    bump_version(tx).await?;
    let (rate, burst, conc) = columns(&flow.limits);
    Ok(sqlx::query_as!(
        QueueSettingsRow,
        r#"UPDATE queue_settings
           SET paused = $2, rate_per_second = $3, rate_burst = $4, max_concurrency = $5,
               updated_at = now()
           WHERE queue = $1
           RETURNING queue AS "queue: QueueName", paused, rate_per_second, rate_burst,
                     max_concurrency, updated_at"#,
        queue.as_str(),
        flow.paused,
        rate,
        burst,
        conc
    )
    .fetch_one(&mut **tx)
    .await?)
}

/// Sets a flow key's limits; returns the key as stored and whether it is new.
///
/// # Errors
/// PostgreSQL unreachable.
pub async fn put_flow_key(
    tx: &mut Transaction<'_, Postgres>,
    key: &FlowKey,
    limits: &Limits,
) -> Result<(FlowKeyRow, bool), RepoError> {
    bump_version(tx).await?;
    let (rate, burst, conc) = columns(limits);
    let row = sqlx::query!(
        r#"INSERT INTO flow_keys (key, rate_per_second, rate_burst, max_concurrency)
           VALUES ($1, $2, $3, $4)
           ON CONFLICT (key) DO UPDATE
           SET rate_per_second = EXCLUDED.rate_per_second, rate_burst = EXCLUDED.rate_burst,
               max_concurrency = EXCLUDED.max_concurrency, updated_at = now()
           RETURNING key AS "key: FlowKey", rate_per_second, rate_burst, max_concurrency,
                     created_at, updated_at, (xmax = 0) AS "created!""#,
        key.as_str(),
        rate,
        burst,
        conc
    )
    .fetch_one(&mut **tx)
    .await?;
    Ok((
        FlowKeyRow {
            key: row.key,
            rate_per_second: row.rate_per_second,
            rate_burst: row.rate_burst,
            max_concurrency: row.max_concurrency,
            created_at: row.created_at,
            updated_at: row.updated_at,
        },
        row.created,
    ))
}

/// One flow key's limits, if set.
///
/// # Errors
/// PostgreSQL unreachable.
pub async fn flow_key(
    db: impl PgExecutor<'_>,
    key: &FlowKey,
) -> Result<Option<FlowKeyRow>, RepoError> {
    Ok(sqlx::query_as!(
        FlowKeyRow,
        r#"SELECT key AS "key: FlowKey", rate_per_second, rate_burst, max_concurrency,
                  created_at, updated_at
           FROM flow_keys WHERE key = $1"#,
        key.as_str()
    )
    .fetch_optional(db)
    .await?)
}

/// Every flow key with limits, by key.
///
/// # Errors
/// PostgreSQL unreachable.
pub async fn all_flow_keys(db: impl PgExecutor<'_>) -> Result<Vec<FlowKeyRow>, RepoError> {
    Ok(sqlx::query_as!(
        FlowKeyRow,
        r#"SELECT key AS "key: FlowKey", rate_per_second, rate_burst, max_concurrency,
                  created_at, updated_at
           FROM flow_keys ORDER BY key"#
    )
    .fetch_all(db)
    .await?)
}

/// Removes a flow key's limits; whether it had any.
///
/// # Errors
/// PostgreSQL unreachable.
pub async fn delete_flow_key(
    tx: &mut Transaction<'_, Postgres>,
    key: &FlowKey,
) -> Result<bool, RepoError> {
    bump_version(tx).await?;
    let done = sqlx::query!("DELETE FROM flow_keys WHERE key = $1", key.as_str())
        .execute(&mut **tx)
        .await?;
    Ok(done.rows_affected() > 0)
}

/// Counts one more change, in the changing transaction (which the version's row lock
/// also puts one after the other).
async fn bump_version(tx: &mut Transaction<'_, Postgres>) -> Result<i64, RepoError> {
    Ok(sqlx::query_scalar!(
        "UPDATE flow_control_version SET version = version + 1 RETURNING version"
    )
    .fetch_one(&mut **tx)
    .await?)
}

/// All of flow control at one moment: the version, every queue's settings and every
/// flow key.
#[derive(Debug, Clone)]
pub struct FlowSnapshot {
    pub version: i64,
    pub queues: Vec<QueueSettingsRow>,
    pub keys: Vec<FlowKeyRow>,
}

impl FlowSnapshot {
    /// `queue`'s settings (the defaults when it has none).
    pub fn queue(&self, queue: &QueueName) -> QueueFlow {
        self.queues
            .iter()
            .find(|row| row.queue == *queue)
            .map(QueueSettingsRow::flow)
            .unwrap_or_default()
    }

    /// Every flow key's limits.
    pub fn key_limits(&self) -> Vec<(FlowKey, Limits)> {
        self.keys
            .iter()
            .map(|row| (row.key.clone(), row.limits()))
            .collect()
    }
}

/// Reads flow control in one repeatable-read transaction.
///
/// # Errors
/// PostgreSQL unreachable.
pub async fn snapshot(db: &PgPool) -> Result<FlowSnapshot, RepoError> {
    let mut tx = db.begin().await?;
    sqlx::query!("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *tx)
        .await?;
    let version = sqlx::query_scalar!("SELECT version FROM flow_control_version")
        .fetch_one(&mut *tx)
        .await?;
    let queues = all_queue_settings(&mut *tx).await?;
    let keys = all_flow_keys(&mut *tx).await?;
    tx.commit().await?;
    Ok(FlowSnapshot {
        version,
        queues,
        keys,
    })
}

/// A flow key's live jobs in one queue, as PostgreSQL has them.
#[derive(Debug, Clone)]
pub struct KeyJobs {
    pub queue: QueueName,
    /// Due and not started (a job set aside on a limit is one of these).
    pub queued: i64,
    /// Waiting for their time (a retry's, or `run_at`).
    pub scheduled: i64,
    /// Started, as far as PostgreSQL has heard.
    pub running: i64,
}

/// A flow key's live jobs per queue.
///
/// # Errors
/// PostgreSQL unreachable.
pub async fn flow_key_jobs(
    db: impl PgExecutor<'_>,
    key: &FlowKey,
) -> Result<Vec<KeyJobs>, RepoError> {
    Ok(sqlx::query_as!(
        KeyJobs,
        r#"SELECT queue AS "queue!: QueueName",
             count(*) FILTER (WHERE job_effective_state(state, run_at) = 'queued') AS "queued!",
             count(*) FILTER (WHERE job_effective_state(state, run_at) = 'scheduled') AS "scheduled!",
             count(*) FILTER (WHERE state = 'running') AS "running!"
           FROM jobs
           WHERE spec ->> 'flow_key' IS NOT NULL AND spec ->> 'flow_key' = $1
             AND job_is_live(state)
           GROUP BY queue ORDER BY queue"#,
        key.as_str()
    )
    .fetch_all(db)
    .await?)
}
