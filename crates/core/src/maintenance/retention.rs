//! Removing finished jobs (and their executions) past their retention, a day partition
//! at a time (SPEC 13), and making the day partitions ahead.
//!
//! A day is looked at once all of it could have expired: its last job was created more
//! than the shorter retention ago. Then, with everything in it past its time, the day is
//! dropped, which costs the same for a million jobs as for one. A day that still holds
//! a few jobs kept longer (dead jobs keep 30 days, a job scheduled far ahead is still
//! live) is compacted: those few are copied aside and put back into the emptied day. Only
//! a day holding more than [`repo::partitions::COMPACT_MAX`] such jobs is swept row by
//! row, as is the DEFAULT partition.
//!
//! So a finished job stays at least its retention, and at most a day more: until the
//! whole of its creation day is past. That is the price of never deleting row by row at
//! the edge of the retention window, where a busy service would delete all the time.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use super::{BATCH, repeat};
use crate::{
    repo::{
        RepoError,
        partitions::{self, COMPACT_MAX, Cutoff, Partition, Removal},
    },
    settings::RetentionSettings,
};

/// Only one process sweeps at a time (every API runs the loop): the key of the session
/// lock it holds while it does.
const SWEEP_LOCK: i64 = 0x636f_7572_6965_7201;

/// What one sweep did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Swept {
    /// Day partitions made ahead.
    pub made: i32,
    /// Day partitions dropped whole.
    pub dropped: u32,
    /// Day partitions emptied of their expired jobs at once.
    pub compacted: u32,
    /// Jobs deleted row by row.
    pub deleted: u64,
    /// Whether a row-by-row delete stopped at its batch size (more to do at once).
    pub more: bool,
    /// Whether another process was sweeping, so this one did nothing.
    pub skipped: bool,
}

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

    /// One sweep as of `now`: makes the days ahead, then removes what is past its time.
    ///
    /// # Errors
    /// PostgreSQL unreachable.
    pub async fn sweep(&self, now: DateTime<Utc>) -> Result<Swept, RepoError> {
        let mut conn = self.db.acquire().await?;
        let mine: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(SWEEP_LOCK)
            .fetch_one(&mut *conn)
            .await?;
        if !mine {
            return Ok(Swept {
                skipped: true,
                ..Swept::default()
            });
        }
        let swept = self.sweep_locked(&mut conn, now).await;
        let unlocked = sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(SWEEP_LOCK)
            .execute(&mut *conn)
            .await;
        if unlocked.is_err() {
            // The lock goes with the session: never hand it back to the pool.
            conn.detach();
        }
        swept
    }

    async fn sweep_locked(
        &self,
        conn: &mut sqlx::PgConnection,
        now: DateTime<Utc>,
    ) -> Result<Swept, RepoError> {
        let today = now.date_naive();
        let ahead = chrono::Days::new(self.settings.partition_ahead_days);
        let mut swept = Swept {
            made: partitions::create_days(&mut *conn, today, today + ahead).await?,
            ..Swept::default()
        };
        let hours =
            |h: u64| chrono::Duration::hours(i64::try_from(h).unwrap_or(i64::MAX / 3_600_000));
        let cut = Cutoff {
            succeeded_before: now - hours(self.settings.succeeded_hours),
            dead_before: now - hours(self.settings.dead_hours),
        };
        // A day whose newest job is older than this may hold nothing but expired jobs.
        let due = cut.succeeded_before.max(cut.dead_before);
        for p in partitions::list(&mut *conn).await? {
            match p.ends_at() {
                Some(end) if end <= due => self.remove(conn, &p, cut, &mut swept).await?,
                Some(_) => {}
                None => swept
                    .add_deleted(partitions::delete_expired_in(&mut *conn, &p, cut, BATCH).await?),
            }
        }
        Ok(swept)
    }

    /// Removes the expired jobs of a day that is due: drop, compaction or row by row.
    async fn remove(
        &self,
        conn: &mut sqlx::PgConnection,
        p: &Partition,
        cut: Cutoff,
        swept: &mut Swept,
    ) -> Result<(), RepoError> {
        let left = partitions::survivors(&mut *conn, p, cut, COMPACT_MAX + 1).await?;
        if left == 0 {
            match partitions::drop_expired(conn, p, cut).await? {
                Removal::Done => {
                    tracing::info!(partition = %p.jobs, "dropped a day of jobs past their retention");
                    swept.dropped += 1;
                }
                Removal::Kept | Removal::Busy => {}
            }
            return Ok(());
        }
        if !partitions::has_expired(&mut *conn, p, cut).await? {
            return Ok(());
        }
        if left <= COMPACT_MAX {
            if partitions::compact(conn, p, cut).await? == Removal::Done {
                tracing::info!(partition = %p.jobs, kept = left, "emptied a day of jobs past their retention");
                swept.compacted += 1;
            }
            return Ok(());
        }
        swept.add_deleted(partitions::delete_expired_in(&mut *conn, p, cut, BATCH).await?);
        Ok(())
    }

    /// Runs the sweep until `stop`.
    pub async fn run(self, stop: CancellationToken) {
        let interval = Duration::from_millis(self.settings.sweep_interval_ms);
        repeat(
            &stop,
            interval,
            || async {
                let swept = self.sweep(Utc::now()).await?;
                if swept.deleted > 0 {
                    tracing::info!(
                        jobs = swept.deleted,
                        "deleted finished jobs past their retention"
                    );
                }
                Ok(swept.more)
            },
            "retention sweep",
        )
        .await;
    }
}

impl Swept {
    fn add_deleted(&mut self, n: u64) {
        self.deleted += n;
        self.more |= n as i64 == BATCH;
    }
}
