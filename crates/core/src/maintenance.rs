//! Background work that keeps PostgreSQL (the system of record) and Redis (dispatch) in
//! step. The API and every worker run it, so it goes on while any Courier process is up:
//!
//! - the dispatcher sends jobs whose dispatch failed (Redis down, a process killed
//!   between commit and dispatch);
//! - the reconciler notices that Redis lost data (a wipe removes the marker key, a
//!   restart changes Redis's `run_id`; AOF `everysec` can lose the last second) and then,
//!   once, re-dispatches every live job Redis no longer has and drops jobs Redis still
//!   holds that PostgreSQL has finished;
//! - the retention sweep deletes finished jobs past their time (API only).

use std::{sync::Arc, time::Duration};

use chrono::Utc;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::{
    JobId, QueueName, Settings,
    queue::{Dispatch, QueueError, RedisQueue, ScanCursor},
    repo::{self, RepoError},
};

/// Jobs younger than this are left to the request that created them (which takes them
/// out of the outbox within milliseconds once they are in Redis).
const DISPATCH_GRACE: Duration = Duration::from_secs(5);
const BATCH: i64 = 500;
/// How often Redis is checked for data loss: a lost job is back within a few seconds.
const RECONCILE_CHECK: Duration = Duration::from_secs(1);
const RECONCILE_LOCK: Duration = Duration::from_secs(10);
/// How often running jobs are checked for lost results, and the margin past timeout plus
/// lease before one counts as lost.
const STUCK_CHECK: Duration = Duration::from_secs(5);
const STUCK_MARGIN: Duration = Duration::from_secs(5);
/// An outbox entry older than this was orphaned: a live worker acknowledges its entries
/// as soon as its history batch commits.
const OUTBOX_AGE: Duration = Duration::from_secs(10);
/// Far longer than a worker's history batch takes to land in PostgreSQL.
const RECONCILE_SETTLE: Duration = Duration::from_secs(2);

/// A failure of one maintenance pass.
#[derive(Debug, thiserror::Error)]
pub enum MaintenanceError {
    #[error(transparent)]
    Repo(#[from] RepoError),
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// What a reconciliation changed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Reconciled {
    /// Live jobs Redis had lost, dispatched again.
    pub redispatched: usize,
    /// Jobs Redis still held that PostgreSQL has finished (or deleted), removed.
    pub removed: usize,
}

/// The maintenance loops of one process.
#[derive(Clone)]
pub struct Maintenance {
    pub db: PgPool,
    pub queue: RedisQueue,
    pub settings: Arc<Settings>,
}

impl Maintenance {
    /// Sends jobs to Redis and marks them dispatched. Failure is logged, not returned: the
    /// jobs are safe in PostgreSQL and the dispatcher will retry them.
    pub async fn dispatch_now(&self, jobs: &[Dispatch]) {
        if self.enqueue_now(jobs).await {
            let ids: Vec<JobId> = jobs.iter().map(|j| j.id).collect();
            self.mark_dispatched(&ids).await;
        }
    }

    /// Sends jobs to Redis; `false` (logged) when Redis could not take them.
    pub async fn enqueue_now<D: std::borrow::Borrow<Dispatch>>(&self, jobs: &[D]) -> bool {
        if jobs.is_empty() {
            return false;
        }
        match self.queue.enqueue(jobs).await {
            Ok(_) => true,
            Err(e) => {
                tracing::warn!(error = %e, jobs = jobs.len(), "dispatch to redis failed; the dispatcher will retry");
                false
            }
        }
    }

    /// Records that committed batches are in Redis, so the dispatcher leaves them alone.
    pub async fn clear_outbox(&self, entries: &[repo::OutboxId]) {
        if let Err(e) = repo::clear_outbox(&self.db, entries).await {
            tracing::warn!(error = %e, "clearing the dispatch outbox failed; its jobs may be dispatched again");
        }
    }

    /// Records that `jobs` are in Redis, so the dispatcher leaves them alone.
    pub async fn mark_dispatched(&self, ids: &[JobId]) {
        if let Err(e) = repo::mark_dispatched(&self.db, ids).await {
            tracing::warn!(error = %e, "marking jobs dispatched failed; they may be dispatched again");
        }
    }

    /// One dispatcher pass: locks a batch of undispatched jobs, sends them, marks them.
    /// Returns how many were sent.
    ///
    /// # Errors
    /// PostgreSQL or Redis unreachable.
    pub async fn dispatch_pending(&self) -> Result<usize, MaintenanceError> {
        let before =
            Utc::now() - chrono::Duration::from_std(DISPATCH_GRACE).expect("a small duration");
        repo::spread_stale_batches(&self.db, before).await?;
        let mut tx = self.db.begin().await?;
        let rows = repo::lock_undispatched(&mut *tx, before, BATCH).await?;
        if rows.is_empty() {
            drop(tx);
            repo::drop_stale_dispatches(&self.db, before).await?;
            return Ok(0);
        }
        let jobs: Vec<Dispatch> = rows.iter().filter_map(|r| r.to_dispatch()).collect();
        self.queue.enqueue(&jobs).await?;
        let ids: Vec<_> = rows.iter().map(|r| r.id).collect();
        repo::mark_dispatched_in(&mut *tx, &ids).await?;
        tx.commit().await?;
        tracing::info!(jobs = ids.len(), "dispatched jobs that had missed redis");
        Ok(ids.len())
    }

    /// Runs the dispatcher until `stop`.
    pub async fn run_dispatcher(self, stop: CancellationToken) {
        let interval = Duration::from_millis(self.settings.server.dispatch_interval_ms);
        repeat(
            &stop,
            interval,
            || async {
                let n = self.dispatch_pending().await?;
                Ok(n as i64 == BATCH)
            },
            "dispatcher pass",
        )
        .await;
    }

    /// Reconciles when Redis shows signs of lost data; returns what changed, or `None` when
    /// Redis is intact (or another process holds the reconcile lock).
    ///
    /// # Errors
    /// PostgreSQL or Redis unreachable.
    pub async fn check_redis(&self) -> Result<Option<Reconciled>, MaintenanceError> {
        let run_id = self.queue.run_id().await?;
        if self.queue.marker().await?.as_deref() == Some(run_id.as_str()) {
            return Ok(None);
        }
        let Some(lock) = self.queue.try_lock_reconcile(RECONCILE_LOCK).await? else {
            return Ok(None);
        };
        tracing::warn!(
            run_id,
            "redis restarted or lost its data; reconciling it with postgresql"
        );
        // The lock is short and renewed while the work goes on, so a process that dies
        // mid-reconciliation holds up the next one by seconds, not minutes.
        let renew = async {
            loop {
                tokio::time::sleep(RECONCILE_LOCK / 3).await;
                if !matches!(
                    self.queue
                        .extend_reconcile_lock(&lock, RECONCILE_LOCK)
                        .await,
                    Ok(true)
                ) {
                    tracing::warn!(
                        "lost the reconcile lock; another process will redo the reconciliation"
                    );
                }
            }
        };
        let result = tokio::select! {
            result = self.reconcile() => result,
            () = renew => unreachable!("renewing never ends"),
        };
        if result.is_ok() {
            // Only a finished reconciliation clears the alarm; a failed one is redone.
            self.queue.set_marker(&run_id).await?;
        }
        self.queue.unlock_reconcile(&lock).await?;
        let done = result?;
        tracing::warn!(
            redispatched = done.redispatched,
            removed = done.removed,
            "reconciled redis with postgresql"
        );
        Ok(Some(done))
    }

    /// Re-dispatches every live job Redis lacks and removes every job Redis holds that
    /// is not live in PostgreSQL.
    ///
    /// # Errors
    /// PostgreSQL or Redis unreachable.
    pub async fn reconcile(&self) -> Result<Reconciled, MaintenanceError> {
        let mut done = Reconciled::default();
        self.queue.forget_registrations();
        let mut candidates = Vec::new();
        let mut after = None;
        loop {
            let page = repo::live_jobs_page(&self.db, after, 1000).await?;
            let Some(last) = page.last() else { break };
            after = Some(last.id);
            candidates.extend(self.missing_from_redis(page).await?);
        }
        done.redispatched = self.redispatch_lost(candidates).await?;
        let mut queues: Vec<QueueName> = self.queue.known_queues().await?;
        for name in repo::live_queues(&self.db).await? {
            if let Ok(queue) = QueueName::parse(&name)
                && !queues.contains(&queue)
            {
                queues.push(queue);
            }
        }
        for queue in queues {
            let mut cursor = ScanCursor::START;
            while !cursor.is_done() {
                let (next, ids) = self.queue.scan_ids(&queue, cursor).await?;
                cursor = next;
                if ids.is_empty() {
                    continue;
                }
                let live = repo::live_among(&self.db, &ids).await?;
                for id in ids.into_iter().filter(|id| !live.contains(id)) {
                    self.queue.cancel(&queue, id).await?;
                    done.removed += 1;
                }
            }
        }
        Ok(done)
    }

    /// Dispatches again the jobs among `candidates` (live in PostgreSQL, missing from
    /// Redis) that were really lost. A job that just ended in Redis is still live in
    /// PostgreSQL until its worker's history batch lands, so only jobs still live and
    /// still missing after the settle time count. (A job whose attempt start reached
    /// PostgreSQL meanwhile still counts: an attempt whose lease Redis lost can only end
    /// stale.) Returns how many were dispatched.
    async fn redispatch_lost(
        &self,
        candidates: Vec<repo::JobRow>,
    ) -> Result<usize, MaintenanceError> {
        if candidates.is_empty() {
            return Ok(0);
        }
        tokio::time::sleep(RECONCILE_SETTLE).await;
        // A result waiting in the outbox is not lost: record it first.
        self.flush_outbox(Duration::ZERO).await?;
        let ids: Vec<_> = candidates.iter().map(|r| r.id).collect();
        let again = repo::get_jobs(&self.db, &ids)
            .await?
            .into_iter()
            .filter(|r| !r.state.is_terminal())
            .collect();
        let lost: Vec<Dispatch> = self
            .missing_from_redis(again)
            .await?
            .iter()
            .filter_map(|row| {
                let mut job = row.to_dispatch()?;
                // Losing a job is Courier's fault, not the target's: a job lost in its
                // last attempt gets one more rather than dying of the loss.
                job.attempts = job.attempts.min(row.spec.0.max_attempts.saturating_sub(1));
                Some(job)
            })
            .collect();
        Ok(self.queue.enqueue(&lost).await?)
    }

    /// Finds jobs `running` in PostgreSQL past their timeout plus the lease whose result
    /// never arrived, and dispatches them again. Returns how many.
    ///
    /// # Errors
    /// PostgreSQL or Redis unreachable.
    pub async fn recover_stuck(&self) -> Result<usize, MaintenanceError> {
        let grace = self.settings.worker.lease_ms as i64 + STUCK_MARGIN.as_millis() as i64;
        let stuck = repo::stuck_running(&self.db, grace, BATCH).await?;
        let candidates = self.missing_from_redis(stuck).await?;
        let n = self.redispatch_lost(candidates).await?;
        if n > 0 {
            tracing::warn!(
                jobs = n,
                "dispatched again jobs whose result was lost (their worker died before recording it)"
            );
        }
        Ok(n)
    }

    /// Writes to PostgreSQL the outbox entries older than `age` that no worker
    /// acknowledged (their worker died before its history batch landed), then drops
    /// them. Replaying an entry a live worker also writes is harmless. Returns how many.
    ///
    /// # Errors
    /// PostgreSQL or Redis unreachable.
    pub async fn flush_outbox(&self, age: Duration) -> Result<usize, MaintenanceError> {
        let mut flushed = 0;
        for queue in self.queue.known_queues().await? {
            let entries = self
                .queue
                .outbox_older_than(&queue, age, BATCH as usize)
                .await?;
            if entries.is_empty() {
                continue;
            }
            let ends: Vec<repo::AttemptEnd> = entries
                .iter()
                .filter_map(|(_, record)| serde_json::from_str(record).ok())
                .collect();
            let updates: Vec<_> = ends.iter().filter_map(|e| e.update.clone()).collect();
            let records: Vec<_> = ends.into_iter().map(|e| e.record).collect();
            repo::record_history(&self.db, &[], &records, &updates).await?;
            let keys: Vec<String> = entries.into_iter().map(|(entry, _)| entry).collect();
            self.queue.ack(&queue, &keys).await?;
            flushed += keys.len();
        }
        if flushed > 0 {
            tracing::warn!(
                records = flushed,
                "recorded attempts whose worker died before recording them"
            );
        }
        Ok(flushed)
    }

    /// The rows whose job Redis does not hold.
    async fn missing_from_redis(
        &self,
        rows: Vec<repo::JobRow>,
    ) -> Result<Vec<repo::JobRow>, MaintenanceError> {
        let mut by_queue: std::collections::BTreeMap<String, Vec<repo::JobRow>> =
            Default::default();
        for row in rows {
            by_queue.entry(row.queue.clone()).or_default().push(row);
        }
        let mut missing = Vec::new();
        for (queue, rows) in by_queue {
            let queue = QueueName::parse(&queue).expect("stored queue names are valid");
            let ids: Vec<_> = rows.iter().map(|r| r.id).collect();
            let present = self.queue.present(&queue, &ids).await?;
            missing.extend(
                rows.into_iter()
                    .zip(present)
                    .filter(|(_, here)| !here)
                    .map(|(row, _)| row),
            );
        }
        Ok(missing)
    }

    /// Runs the Redis-loss check until `stop`.
    pub async fn run_reconciler(self, stop: CancellationToken) {
        let mut next_stuck_check = tokio::time::Instant::now() + STUCK_CHECK;
        loop {
            if let Err(e) = self.check_redis().await {
                tracing::warn!(error = %e, "redis reconciliation failed; retrying");
            }
            if tokio::time::Instant::now() >= next_stuck_check {
                next_stuck_check = tokio::time::Instant::now() + STUCK_CHECK;
                if let Err(e) = self.flush_outbox(OUTBOX_AGE).await {
                    tracing::warn!(error = %e, "flushing the outbox failed; retrying");
                }
                if let Err(e) = self.recover_stuck().await {
                    tracing::warn!(error = %e, "looking for jobs with lost results failed; retrying");
                }
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(RECONCILE_CHECK) => {}
            }
        }
    }

    /// One batch of the retention sweep. Returns how many jobs were deleted.
    ///
    /// # Errors
    /// PostgreSQL unreachable.
    pub async fn sweep_expired(&self) -> Result<u64, RepoError> {
        let retention = &self.settings.retention;
        let now = Utc::now();
        let hours =
            |h: u64| chrono::Duration::hours(i64::try_from(h).unwrap_or(i64::MAX / 3_600_000));
        repo::delete_expired(
            &self.db,
            now - hours(retention.succeeded_hours),
            now - hours(retention.dead_hours),
            BATCH,
        )
        .await
    }

    /// Runs the retention sweep until `stop`.
    pub async fn run_retention(self, stop: CancellationToken) {
        let interval = Duration::from_millis(self.settings.retention.sweep_interval_ms);
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

/// Runs `pass` every `interval` until `stop`; a pass that returns `true` (more to do)
/// runs again at once. Failures are logged and retried on the next tick.
async fn repeat<F, Fut>(stop: &CancellationToken, interval: Duration, mut pass: F, what: &str)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<bool, MaintenanceError>>,
{
    loop {
        match pass().await {
            Ok(true) => continue,
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "{what} failed; retrying"),
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
    }
}
