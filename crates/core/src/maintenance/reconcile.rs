//! Noticing that Redis lost data, and then putting back what it lost: once per loss,
//! under a short lock so one process does it.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use super::{FlowMirror, MaintenanceError, Recovery};
use crate::{
    QueueName,
    queue::{Cancelled, Lock, Marker, MarkerState, RedisQueue, ScanCursor},
    repo,
};

/// How often Redis is checked for data loss: a lost job is back within a few seconds.
const CHECK_EVERY: Duration = Duration::from_secs(1);
const LOCK: Duration = Duration::from_secs(10);
/// How often PostgreSQL is asked which queues have live jobs.
const LIVE_QUEUES_EVERY: Duration = Duration::from_secs(2);

/// What a reconciliation changed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Reconciled {
    /// Live jobs Redis had lost, dispatched again.
    pub redispatched: usize,
    /// Jobs Redis still held that PostgreSQL has finished (or deleted), removed.
    pub removed: usize,
}

impl Reconciled {
    /// A warning when Redis had lost jobs (or kept finished ones); a fresh Redis that
    /// lacked nothing is only noted.
    fn log(&self, queues: Option<usize>) {
        if self.redispatched > 0 || self.removed > 0 {
            tracing::warn!(
                queues,
                redispatched = self.redispatched,
                removed = self.removed,
                "reconciled redis with postgresql"
            );
        } else {
            tracing::info!(
                queues,
                "reconciled redis with postgresql: nothing was missing"
            );
        }
    }
}

/// The queues PostgreSQL last said have live jobs, and when.
type LiveQueues = (Instant, Vec<QueueName>);

/// Reconciles Redis with PostgreSQL after Redis restarted or lost data.
#[derive(Clone)]
pub struct Reconciler {
    db: PgPool,
    queue: RedisQueue,
    recovery: Recovery,
    flow: FlowMirror,
    /// The queues with live jobs, and when PostgreSQL said so.
    live_queues: Arc<Mutex<Option<LiveQueues>>>,
}

impl Reconciler {
    pub fn new(db: PgPool, queue: RedisQueue, recovery: Recovery, flow: FlowMirror) -> Self {
        Self {
            db,
            queue,
            recovery,
            flow,
            live_queues: Arc::default(),
        }
    }

    /// Reconciles when Redis shows signs of lost data; returns what changed, or `None` when
    /// Redis is intact (or another process holds the reconcile lock).
    ///
    /// A reconciliation claims the marker before it reads anything and settles it only
    /// if the claim survived: Redis losing its data again while it runs (a `FLUSHALL`
    /// two seconds after a restart) leaves the marker unsettled, and the next check, a
    /// second later, reconciles again.
    ///
    /// # Errors
    /// PostgreSQL or Redis unreachable.
    pub async fn check_redis(&self) -> Result<Option<Reconciled>, MaintenanceError> {
        if self.queue.is_cluster() {
            return self.check_cluster().await;
        }
        self.repair_queue_set().await?;
        let state = self.queue.marker(Marker::All).await?;
        if state.is_settled() {
            return Ok(None);
        }
        let work = async {
            // Another process may have reconciled since the look above.
            let state = self.queue.marker(Marker::All).await?;
            if state.is_settled() {
                return Ok(None);
            }
            // A marker that changed is news; none at all is also what every new Redis
            // shows, so its words wait for what the reconciliation finds.
            if state.marker.is_some() {
                tracing::warn!(
                    run_id = state.run_id,
                    "{}; reconciling it with postgresql",
                    why(&state)
                );
            }
            let claim = self.queue.claim_marker(Marker::All).await?;
            let done = self.reconcile_queues(None).await?;
            // Only a finished reconciliation clears the alarm (a failed one is redone),
            // under the lock so that the next process does not redo it, and only if
            // Redis kept its data while it ran.
            if !self.queue.settle_marker(Marker::All, &claim).await? {
                tracing::warn!(
                    "redis lost data again while it was being reconciled; reconciling again"
                );
            }
            Ok(Some((done, state.marker.is_none())))
        };
        let Some(Some((done, unmarked))) = self.locked(work).await? else {
            return Ok(None);
        };
        if unmarked && done == Reconciled::default() {
            tracing::info!(
                "redis is new to courier (it holds no reconciliation marker yet) and lacks no job postgresql has; marked it"
            );
        } else if unmarked {
            tracing::warn!(
                "redis holds no reconciliation marker: it lost its data (or was replaced); reconciled it with postgresql"
            );
            done.log(None);
        } else {
            done.log(None);
        }
        Ok(Some(done))
    }

    /// On a Redis Cluster: each queue is reconciled when its master is not the one it
    /// was last reconciled under (a failover promoted a replica, which may lack the
    /// last writes of the master it replaced; or the master restarted or lost its
    /// data), so a failover re-dispatches only what the failed master held.
    async fn check_cluster(&self) -> Result<Option<Reconciled>, MaintenanceError> {
        let mut stale = Vec::new();
        for queue in self.repair_queue_set().await? {
            if !self.queue.marker(Marker::Queue(&queue)).await?.is_settled() {
                stale.push(queue);
            }
        }
        if stale.is_empty() {
            return Ok(None);
        }
        let work = async {
            // Another process may have reconciled some since the look above.
            let mut still = Vec::with_capacity(stale.len());
            for queue in &stale {
                if !self.queue.marker(Marker::Queue(queue)).await?.is_settled() {
                    still.push(queue.clone());
                }
            }
            if still.is_empty() {
                return Ok(None);
            }
            tracing::warn!(
                queues = ?still.iter().map(QueueName::as_str).collect::<Vec<_>>(),
                "these queues' redis master changed, restarted or lost data; reconciling them with postgresql"
            );
            let mut claims = Vec::with_capacity(still.len());
            for queue in &still {
                claims.push(self.queue.claim_marker(Marker::Queue(queue)).await?);
            }
            let done = self.reconcile_queues(Some(&still)).await?;
            for (queue, claim) in still.iter().zip(&claims) {
                if !self
                    .queue
                    .settle_marker(Marker::Queue(queue), claim)
                    .await?
                {
                    tracing::warn!(
                        queue = queue.as_str(),
                        "this queue's redis master lost data again while it was being reconciled; reconciling again"
                    );
                }
            }
            Ok(Some((still.len(), done)))
        };
        let Some(Some((queues, done))) = self.locked(work).await? else {
            return Ok(None);
        };
        done.log(Some(queues));
        Ok(Some(done))
    }

    /// Puts back into Redis's set of queues every queue that has live jobs, and returns
    /// the queues there are: those in the set, and those PostgreSQL has live jobs of
    /// (asked every [`LIVE_QUEUES_EVERY`]). Workers serving every queue read the set,
    /// and the flow-control mirror covers its queues; after a loss of data it is
    /// empty, and a process whose own note says it registered a queue recently adds
    /// it again only after [`crate::queue`]'s re-registration time, or never if no job
    /// of that queue comes: jobs put back, or dispatched, meanwhile would wait unseen.
    async fn repair_queue_set(&self) -> Result<Vec<QueueName>, MaintenanceError> {
        let watched = self.watched_queues().await?;
        let missing = self.queue.ensure_registered(&watched).await?;
        if missing > 0 {
            tracing::warn!(
                queues = missing,
                "the queue set lost queues that have live jobs (redis lost data); put them back"
            );
        }
        Ok(watched)
    }

    /// The queues a check looks at: those in Redis's queue set, and those PostgreSQL
    /// has live jobs of (asked every [`LIVE_QUEUES_EVERY`]), since the queue set may
    /// be what Redis lost (on a Cluster, the master holding the set).
    async fn watched_queues(&self) -> Result<Vec<QueueName>, MaintenanceError> {
        let mut queues = self.queue.known_queues().await?;
        let cached = {
            let live = self.live_queues.lock().expect("lock poisoned");
            live.as_ref()
                .filter(|(at, _)| at.elapsed() < LIVE_QUEUES_EVERY)
                .map(|(_, queues)| queues.clone())
        };
        let live = match cached {
            Some(live) => live,
            None => {
                let live = repo::live_queues(&self.db).await?;
                *self.live_queues.lock().expect("lock poisoned") =
                    Some((Instant::now(), live.clone()));
                live
            }
        };
        for queue in live {
            if !queues.contains(&queue) {
                queues.push(queue);
            }
        }
        Ok(queues)
    }

    /// Runs `work` under the reconcile lock (one process at a time), renewing the lock
    /// while it goes on; `None` when another process holds it. The lock is short, so a
    /// process that dies mid-reconciliation holds up the next one by seconds, not
    /// minutes.
    async fn locked<T>(
        &self,
        work: impl std::future::Future<Output = Result<T, MaintenanceError>>,
    ) -> Result<Option<T>, MaintenanceError> {
        let Some(lock) = self.queue.try_lock(Lock::Reconcile, LOCK).await? else {
            return Ok(None);
        };
        let renew = async {
            loop {
                tokio::time::sleep(LOCK / 3).await;
                if !matches!(
                    self.queue.extend_lock(Lock::Reconcile, &lock, LOCK).await,
                    Ok(true)
                ) {
                    tracing::warn!(
                        "lost the reconcile lock; another process will redo the reconciliation"
                    );
                }
            }
        };
        let result = tokio::select! {
            result = work => result,
            () = renew => unreachable!("renewing never ends"),
        };
        self.queue.unlock(Lock::Reconcile, &lock).await?;
        result.map(Some)
    }

    /// Puts flow control back, then re-dispatches every live job Redis lacks and removes
    /// every job Redis holds that is not live in PostgreSQL.
    ///
    /// # Errors
    /// PostgreSQL or Redis unreachable.
    pub async fn reconcile(&self) -> Result<Reconciled, MaintenanceError> {
        self.reconcile_queues(None).await
    }

    /// [`Self::reconcile`], for `only` these queues when given.
    async fn reconcile_queues(
        &self,
        only: Option<&[QueueName]>,
    ) -> Result<Reconciled, MaintenanceError> {
        let mut done = Reconciled::default();
        self.queue.forget_registrations();
        // Before any job is back: a restored job of a paused queue must find it paused.
        self.flow.mirror_all_live().await?;
        let mut candidates = Vec::new();
        let mut after = None;
        loop {
            let page = match only {
                None => repo::live_jobs_page(&self.db, after, 1000).await?,
                Some(queues) => repo::live_jobs_page_in(&self.db, queues, after, 1000).await?,
            };
            let Some(last) = page.last() else { break };
            after = Some(last.id);
            let missing = self.recovery.missing_from_redis(page).await?;
            candidates.extend(missing.into_iter().map(|row| row.id));
        }
        done.redispatched = self.recovery.redispatch_lost(&candidates).await?;
        crate::metrics::redispatched("reconcile", done.redispatched as u64);
        let queues: Vec<QueueName> = match only {
            Some(queues) => queues.to_vec(),
            None => {
                let mut queues = self.queue.known_queues().await?;
                for queue in repo::live_queues(&self.db).await? {
                    if !queues.contains(&queue) {
                        queues.push(queue);
                    }
                }
                queues
            }
        };
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

/// What the log says of an unsettled marker: a fresh Redis (no marker, and no job in
/// PostgreSQL yet: reconciling finds nothing to put back) reads the same as a wiped one,
/// so the words say what is known, not that data was lost.
fn why(state: &MarkerState) -> &'static str {
    match &state.marker {
        None => "redis holds no reconciliation marker (a new redis, or one that lost its data)",
        Some(_) if state.is_claimed() => {
            "a reconciliation did not finish (its process died, or redis lost data meanwhile)"
        }
        Some(_) => "redis restarted or failed over since the last reconciliation",
    }
}
