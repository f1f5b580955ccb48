//! Jobs per minute over the last hour, for the dashboard's charts.

use chrono::{DateTime, Duration, DurationRound, Utc};
use sqlx::PgExecutor;
use uuid::Uuid;

use super::RepoError;
use crate::domain::QueueName;

/// The minutes a throughput covers.
pub const MINUTES: i64 = 60;

/// One minute of a queue's work.
#[derive(Debug, Clone)]
pub struct Minute {
    /// The minute's start.
    pub at: DateTime<Utc>,
    pub succeeded: i64,
    pub dead: i64,
    pub submitted: i64,
}

/// The smallest UUIDv7 of the millisecond `at`: ids at or above it were made then or later.
fn first_id_at(at: DateTime<Utc>) -> Uuid {
    let ms = u128::try_from(at.timestamp_millis()).unwrap_or(0);
    Uuid::from_u128(ms << 80)
}

/// The last [`MINUTES`] minutes of `queue` up to `now`, oldest first, every minute
/// present (zeros where nothing happened). Finished jobs are found by the finish-time
/// index, submitted ones by the id range (UUIDv7 ids are time-ordered).
///
/// # Errors
/// PostgreSQL unreachable.
pub async fn last_hour(
    db: impl PgExecutor<'_>,
    queue: &QueueName,
    now: DateTime<Utc>,
) -> Result<Vec<Minute>, RepoError> {
    let last = now.duration_trunc(Duration::minutes(1)).unwrap_or(now);
    let first = last - Duration::minutes(MINUTES - 1);
    Ok(sqlx::query_as!(
        Minute,
        r#"WITH minutes AS (
               SELECT generate_series($2::timestamptz, $3::timestamptz, interval '1 minute') AS at
           ), finished AS (
               SELECT date_trunc('minute', finished_at) AS at,
                      count(*) FILTER (WHERE state = 'succeeded') AS succeeded,
                      count(*) FILTER (WHERE state = 'dead') AS dead
               FROM jobs WHERE finished_at >= $2 AND queue = $1 GROUP BY 1
           ), submitted AS (
               SELECT date_trunc('minute', created_at) AS at, count(*) AS n
               FROM jobs WHERE queue = $1 AND id >= $4 AND created_at >= $2 GROUP BY 1
           )
           SELECT m.at AS "at!", coalesce(f.succeeded, 0) AS "succeeded!",
                  coalesce(f.dead, 0) AS "dead!", coalesce(s.n, 0) AS "submitted!"
           FROM minutes m LEFT JOIN finished f ON f.at = m.at LEFT JOIN submitted s ON s.at = m.at
           ORDER BY m.at"#,
        queue.as_str(),
        first,
        last,
        first_id_at(first),
    )
    .fetch_all(db)
    .await?)
}
