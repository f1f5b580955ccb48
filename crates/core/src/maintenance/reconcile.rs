//! Noticing that Redis lost data, and then putting back what it lost: once per loss,
//! under a short lock so one process does it.

use std::time::Duration;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use super::{FlowMirror, MaintenanceError, Recovery};
use crate::{
    QueueName,
    queue::{Cancelled, RedisQueue, ScanCursor},
    repo,
};

/// How often Redis is checked for data loss: a lost job is back within a few seconds.
const CHECK_EVERY: Duration = Duration::from_secs(1);
const LOCK: Duration = Duration::from_secs(10);

/// What a reconciliation changed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Reconciled {
    /// Live jobs Redis had lost, dispatched again.
    pub redispatched: usize,
    /// Jobs Redis still held that PostgreSQL has finished (or deleted), removed.
    pub removed: usize,
}

/// Reconciles Redis with PostgreSQL after Redis restarted or lost data.
#[derive(Clone)]
pub struct Reconciler {
    db: PgPool,
    queue: RedisQueue,
    recovery: Recovery,
    flow: FlowMirror,
}

impl Reconciler {
    pub fn new(db: PgPool, queue: RedisQueue, recovery: Recovery, flow: FlowMirror) -> Self {
        Self {
            db,
            queue,
            recovery,
            flow,
        }
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
        let Some(lock) = self.queue.try_lock_reconcile(LOCK).await? else {
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
                tokio::time::sleep(LOCK / 3).await;
                if !matches!(
                    self.queue.extend_reconcile_lock(&lock, LOCK).await,
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

    /// Puts flow control back, then re-dispatches every live job Redis lacks and removes
    /// every job Redis holds that is not live in PostgreSQL.
    ///
    /// # Errors
    /// PostgreSQL or Redis unreachable.
    pub async fn reconcile(&self) -> Result<Reconciled, MaintenanceError> {
        let mut done = Reconciled::default();
        self.queue.forget_registrations();
        // Before any job is back: a restored job of a paused queue must find it paused.
        self.flow.mirror_all_live().await?;
        let mut candidates = Vec::new();
        let mut after = None;
        loop {
            let page = repo::live_jobs_page(&self.db, after, 1000).await?;
            let Some(last) = page.last() else { break };
            after = Some(last.id);
            candidates.extend(self.recovery.missing_from_redis(page).await?);
        }
        done.redispatched = self.recovery.redispatch_lost(candidates).await?;
        let mut queues: Vec<QueueName> = self.queue.known_queues().await?;
        for queue in repo::live_queues(&self.db).await? {
            if !queues.contains(&queue) {
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
                    // A keyed job comes twice in a scan; only its first removal counts.
                    if self.queue.cancel(&queue, id).await? != Cancelled::Absent {
                        done.removed += 1;
                    }
                }
            }
        }
        Ok(done)
    }

    /// Runs the Redis-loss check every second until `stop`.
    pub async fn run(self, stop: CancellationToken) {
        loop {
            if let Err(e) = self.check_redis().await {
                tracing::warn!(error = %e, "redis reconciliation failed; retrying");
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(CHECK_EVERY) => {}
            }
        }
    }
}
