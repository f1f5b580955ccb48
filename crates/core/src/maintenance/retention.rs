//! Deleting finished jobs (and their executions) past their retention.

use std::time::Duration;

use chrono::Utc;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use super::{BATCH, repeat};
use crate::{
    repo::{self, RepoError},
    settings::RetentionSettings,
};

/// The retention sweep (the API runs it).
#[derive(Clone)]
pub struct Retention {
    db: PgPool,
    settings: RetentionSettings,
}

impl Retention {
    pub fn new(db: PgPool, settings: RetentionSettings) -> Self {
        Self { db, settings }
    }

    /// One batch of the sweep. Returns how many jobs were deleted.
    ///
    /// # Errors
    /// PostgreSQL unreachable.
    pub async fn sweep_expired(&self) -> Result<u64, RepoError> {
        let now = Utc::now();
        let hours =
            |h: u64| chrono::Duration::hours(i64::try_from(h).unwrap_or(i64::MAX / 3_600_000));
        repo::delete_expired(
            &self.db,
            now - hours(self.settings.succeeded_hours),
            now - hours(self.settings.dead_hours),
            BATCH,
        )
        .await
    }

    /// Runs the sweep until `stop`.
    pub async fn run(self, stop: CancellationToken) {
        let interval = Duration::from_millis(self.settings.sweep_interval_ms);
        repeat(
            &stop,
            interval,
            || async {
                let n = self.sweep_expired().await?;
                if n > 0 {
                    tracing::info!(jobs = n, "deleted finished jobs past their retention");
                }
                Ok(n as i64 == BATCH)
            },
            "retention sweep",
        )
        .await;
    }
}
