//! Recovering what a dead worker left half done: attempt records still in the journal
//! (the worker died before writing its history), and jobs `running` in PostgreSQL
//! whose result never arrived at all. Also the rule both this and reconciliation use to
//! decide that a job Redis lacks was really lost.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use chrono::Utc;

use super::{BATCH, FlowMirror, MaintenanceError, repeat};
use crate::{
    JobId, QueueName,
    crypto::SecretBox,
    domain::Job,
    queue::{Dispatch, Lock, RedisQueue},
    repo,
    stages::{
        Dispatcher,
        attempt::AttemptEnd,
        dispatch,
        record::{self, HistoryBatch},
    },
};

/// How often the journal and running jobs are checked.
const CHECK_EVERY: Duration = Duration::from_secs(5);
/// A journal entry older than this was orphaned: a live worker acknowledges its entries
/// as soon as its history batch commits.
const JOURNAL_AGE: Duration = Duration::from_secs(10);
/// The margin past a job's timeout plus the lease before its result counts as lost.
const STUCK_MARGIN: Duration = Duration::from_secs(5);
/// Far longer than a worker's history batch takes to land in PostgreSQL.
const SETTLE: Duration = Duration::from_secs(2);
/// How long one redispatch may hold its lock, and how long another waits for it: far
/// longer than re-reading and re-dispatching even a whole Redis's worth of jobs takes.
const REDISPATCH_LOCK: Duration = Duration::from_secs(30);

/// Jobs younger than this are left to the request that created them (which takes them
/// out of the dispatch outbox within milliseconds once they are in Redis).
const DISPATCH_GRACE: Duration = Duration::from_secs(5);

/// Replays orphaned journal entries and runs again jobs whose result was lost.
#[derive(Clone)]
pub struct Recovery {
    db: PgPool,
    queue: RedisQueue,
    lease: Duration,
    secrets: Arc<SecretBox>,
}

impl Recovery {
    pub fn new(db: PgPool, queue: RedisQueue, lease: Duration, secrets: Arc<SecretBox>) -> Self {
        Self {
            db,
            queue,
            lease,
            secrets,
        }
    }

    /// Writes to PostgreSQL every journal entry older than `age` that no worker
    /// acknowledged (their worker died before its history batch landed), then drops
    /// them. Replaying an entry a live worker also writes is harmless. Returns how many.
    ///
    /// # Errors
    /// PostgreSQL or Redis unreachable.
    pub async fn flush_journal(&self, age: Duration) -> Result<usize, MaintenanceError> {
        self.flush_journal_of(&[], age).await
    }

    /// [`Self::flush_journal`] over the queue set and `also`: after a loss of data the
    /// set may lack a queue whose journal already holds new ends.
    async fn flush_journal_of(
        &self,
        also: &[QueueName],
        age: Duration,
    ) -> Result<usize, MaintenanceError> {
        let mut flushed = 0;
        let mut queues = self.queue.known_queues().await?;
        for queue in also {
            if !queues.contains(queue) {
                queues.push(queue.clone());
            }
        }
        for queue in queues {
            loop {
                let entries = self
                    .queue
                    .journal_older_than(&queue, age, BATCH as usize)
                    .await?;
                let mut batch = HistoryBatch::default();
                for (entry, record) in &entries {
                    match serde_json::from_str::<AttemptEnd>(record) {
                        Ok(end) => {
                            batch.records.push(end.record);
                            batch.updates.extend(end.update);
                        }
                        Err(e) => {
                            tracing::error!(entry, error = %e, "unreadable journal entry; dropped")
                        }
                    }
                }
                let written = record::write_history(&self.db, &self.secrets, &batch).await?;
                Dispatcher::new(self.db.clone(), self.queue.clone())
                    .dispatch_callbacks(written.callbacks)
                    .await;
                let keys: Vec<String> = entries.into_iter().map(|(entry, _)| entry).collect();
                self.queue.journal_ack(&queue, &keys).await?;
                flushed += keys.len();
                if keys.len() < BATCH as usize {
                    break;
                }
            }
        }
        if flushed > 0 {
            tracing::warn!(
                records = flushed,
                "recorded attempts whose worker died before recording them"
            );
        }
        Ok(flushed)
    }

    /// Finds jobs `running` in PostgreSQL past their timeout plus the lease whose result
    /// never arrived, and dispatches them again. Returns how many.
    ///
    /// # Errors
    /// PostgreSQL or Redis unreachable.
    pub async fn recover_stuck(&self) -> Result<usize, MaintenanceError> {
        let grace = (self.lease + STUCK_MARGIN).as_millis() as i64;
        let stuck = repo::stuck_running(&self.db, grace, BATCH).await?;
        let candidates: Vec<JobId> = self
            .missing_from_redis(stuck)
            .await?
            .iter()
            .map(|r| r.id)
            .collect();
        let n = self.redispatch_lost(&candidates).await?;
        if n > 0 {
            crate::metrics::redispatched("stuck", n as u64);
            tracing::warn!(
                jobs = n,
                "dispatched again jobs whose result was lost (their worker died before recording it)"
            );
        }
        Ok(n)
    }

    /// Dispatches again the jobs among `candidates` (live in PostgreSQL, missing from
    /// Redis) that were really lost. A job that just ended in Redis is still live in
    /// PostgreSQL until its worker's history batch lands, so only jobs still live and
    /// still missing after the settle time, and after every journal entry has been
    /// written, count. (A job whose attempt start reached PostgreSQL meanwhile still
    /// counts: an attempt whose lease Redis lost can only end stale.) Returns how many
    /// were dispatched.
    ///
    /// # Errors
    /// PostgreSQL or Redis unreachable.
    pub async fn redispatch_lost(&self, candidates: &[JobId]) -> Result<usize, MaintenanceError> {
        if candidates.is_empty() {
            return Ok(0);
        }
        tokio::time::sleep(SETTLE).await;
        // One process at a time, from here to the enqueue: two processes that both saw
        // the job missing (each process recovers, and reconciles, and checks) would
        // otherwise both put it back, and the second could do so after the first
        // copy had already run and ended: a second call. Under the lock, whoever comes
        // second sees the first copy in Redis, or its end in the journal.
        let lock = self.lock_redispatch().await?;
        let done = self.redispatch_locked(candidates).await;
        self.queue.unlock(Lock::Redispatch, &lock).await?;
        done
    }

    /// One pass of the dispatch outbox: jobs committed more than [`DISPATCH_GRACE`] ago
    /// whose dispatch right after the commit failed, or was not marked done. Each is sent
    /// under the rule of [`Self::redispatch_lost`] (without its wait: these are old
    /// enough): a job whose dispatch succeeded but was not marked may have run and
    /// ended already, and sending it on the outbox's word alone would run it twice; so
    /// may a copy that a redispatch sends meanwhile, hence the same lock. The outbox rows
    /// stay locked, and are dropped only in the transaction that follows the sending, so
    /// a process that dies midway leaves them to the next pass. Returns how many outbox
    /// rows it handled (sent, or found in Redis or finished).
    ///
    /// # Errors
    /// PostgreSQL or Redis unreachable.
    pub async fn dispatch_outbox(&self) -> Result<usize, MaintenanceError> {
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
        // Busy: another process is redispatching; the next pass sends these.
        let Some(lock) = self
            .queue
            .try_lock(Lock::Redispatch, REDISPATCH_LOCK)
            .await?
        else {
            return Ok(0);
        };
        let ids: Vec<JobId> = rows.iter().map(|r| r.id).collect();
        let sent = self.redispatch_locked(&ids).await;
        self.queue.unlock(Lock::Redispatch, &lock).await?;
        let sent = sent?;
        repo::mark_dispatched_in(&mut *tx, &ids).await?;
        tx.commit().await?;
        if sent > 0 {
            crate::metrics::redispatched("outbox", sent as u64);
            tracing::info!(jobs = sent, "dispatched jobs that had missed redis");
        }
        Ok(ids.len())
    }

    /// Runs the outbox pass every `interval` until `stop` (at once again after a full
    /// batch).
    pub async fn run_outbox(self, interval: Duration, stop: CancellationToken) {
        repeat(
            &stop,
            interval,
            || async { Ok(self.dispatch_outbox().await? as i64 == BATCH) },
            "dispatcher pass",
        )
        .await;
    }

    /// Takes the redispatch lock, waiting for another process's redispatch to end.
    async fn lock_redispatch(&self) -> Result<String, MaintenanceError> {
        let deadline = tokio::time::Instant::now() + REDISPATCH_LOCK;
        loop {
            if let Some(token) = self
                .queue
                .try_lock(Lock::Redispatch, REDISPATCH_LOCK)
                .await?
            {
                return Ok(token);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(MaintenanceError::Busy(
                    "another process is dispatching lost jobs",
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The last look, in this order: which candidates Redis lacks now, then every
    /// attempt's end still in the journal written to PostgreSQL, then which of those are
    /// still live there. A job that ends after the first look was in Redis at it; one
    /// that ended before it left its end in the journal (or in PostgreSQL already), so
    /// the last read sees it finished. (Reading PostgreSQL before Redis left a gap: a
    /// job that ended between the two reads looked live and missing, and ran again.)
    async fn redispatch_locked(&self, candidates: &[JobId]) -> Result<usize, MaintenanceError> {
        let live: Vec<Job> = repo::get_jobs(&self.db, candidates)
            .await?
            .into_iter()
            .filter(|r| !r.state.is_terminal())
            .collect();
        let missing = self.missing_from_redis(live).await?;
        if missing.is_empty() {
            return Ok(0);
        }
        // A result waiting in the journal is not lost: record it first, from the
        // journals of these jobs' queues too (the queue set may not list them yet).
        let mut queues: Vec<QueueName> = missing.iter().map(|r| r.queue.clone()).collect();
        queues.sort();
        queues.dedup();
        self.flush_journal_of(&queues, Duration::ZERO).await?;
        let missing: Vec<JobId> = missing.iter().map(|r| r.id).collect();
        let lost: Vec<Dispatch> = repo::get_jobs(&self.db, &missing)
            .await?
            .iter()
            .filter(|r| !r.state.is_terminal())
            .map(|row| {
                let mut job = dispatch::of(row);
                // Losing a job is Courier's fault, not the target's: a job lost in its
                // last attempt gets one more rather than dying of the loss.
                job.attempts = job.attempts.min(row.spec.max_attempts.saturating_sub(1));
                job
            })
            .collect();
        FlowMirror::new(self.db.clone(), self.queue.clone())
            .ensure(lost.iter().map(|j| &j.queue))
            .await?;
        Ok(self.queue.enqueue(&lost).await?)
    }

    /// The rows whose job Redis does not hold.
    ///
    /// # Errors
    /// Redis unreachable.
    pub async fn missing_from_redis(&self, rows: Vec<Job>) -> Result<Vec<Job>, MaintenanceError> {
        let mut by_queue: BTreeMap<QueueName, Vec<Job>> = BTreeMap::new();
        for row in rows {
            by_queue.entry(row.queue.clone()).or_default().push(row);
        }
        let mut missing = Vec::new();
        for (queue, rows) in by_queue {
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

    /// Runs both checks every few seconds until `stop`.
    pub async fn run(self, stop: CancellationToken) {
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(CHECK_EVERY) => {}
            }
            if let Err(e) = self.flush_journal(JOURNAL_AGE).await {
                tracing::warn!(error = %e, "flushing the journal failed; retrying");
            }
            if let Err(e) = self.recover_stuck().await {
                tracing::warn!(error = %e, "looking for jobs with lost results failed; retrying");
            }
        }
    }
}
