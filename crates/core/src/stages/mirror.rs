//! Keeps Redis's copy of flow control (SPEC 10) equal to PostgreSQL's: every queue's
//! pause and limits, and every flow key's limits. The API mirrors a change at once; this
//! loop puts back what Redis lost (a restart without persistence, a `FLUSHALL`) and
//! covers a change whose mirroring failed. Reconciliation after a data loss mirrors
//! before it dispatches anything again, so no restored job starts in a paused queue.

use std::time::Duration;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use super::StageError as MaintenanceError;
use crate::{QueueName, queue::RedisQueue, repo};

/// How often every queue's flow control is checked against PostgreSQL: one small read
/// there, and per queue one script that answers at once when Redis is current.
pub const MIRROR_EVERY: Duration = Duration::from_secs(1);

/// Mirrors flow control from PostgreSQL into Redis.
#[derive(Clone)]
pub struct FlowMirror {
    db: PgPool,
    queue: RedisQueue,
}

impl FlowMirror {
    pub fn new(db: PgPool, queue: RedisQueue) -> Self {
        Self { db, queue }
    }

    /// Mirrors every queue that Redis knows or that has settings; returns how many
    /// queues' copies were rewritten.
    ///
    /// # Errors
    /// PostgreSQL or Redis unreachable.
    pub async fn mirror_all(&self) -> Result<usize, MaintenanceError> {
        let snapshot = repo::flow::snapshot(&self.db).await?;
        let keys = snapshot.key_limits();
        let mut queues: Vec<QueueName> = snapshot.queues.iter().map(|r| r.queue.clone()).collect();
        for queue in self.queue.known_queues().await? {
            if !queues.contains(&queue) {
                queues.push(queue);
            }
        }
        let mut written = 0;
        for queue in queues {
            let flow = snapshot.queue(&queue);
            if self
                .queue
                .mirror_flow(&queue, snapshot.version, &flow, &keys)
                .await?
            {
                written += 1;
            }
        }
        Ok(written)
    }

    /// Mirrors one queue (after its settings changed).
    ///
    /// # Errors
    /// PostgreSQL or Redis unreachable.
    pub async fn mirror_queue(&self, queue: &QueueName) -> Result<(), MaintenanceError> {
        let snapshot = repo::flow::snapshot(&self.db).await?;
        self.queue
            .mirror_flow(
                queue,
                snapshot.version,
                &snapshot.queue(queue),
                &snapshot.key_limits(),
            )
            .await?;
        Ok(())
    }

    /// Mirrors those of `queues` this process has not mirrored yet: called before jobs
    /// are put into Redis, since the fetch script starts no job of a queue whose flow
    /// control Redis does not hold.
    ///
    /// # Errors
    /// PostgreSQL or Redis unreachable.
    pub async fn ensure<'a>(
        &self,
        queues: impl IntoIterator<Item = &'a QueueName>,
    ) -> Result<(), MaintenanceError> {
        let mut missing: Vec<&QueueName> = Vec::new();
        for queue in queues {
            if !self.queue.is_mirrored(queue) && !missing.contains(&queue) {
                missing.push(queue);
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
        let snapshot = repo::flow::snapshot(&self.db).await?;
        let keys = snapshot.key_limits();
        for queue in missing {
            self.queue
                .mirror_flow(queue, snapshot.version, &snapshot.queue(queue), &keys)
                .await?;
        }
        Ok(())
    }

    /// Mirrors every queue that has live jobs in PostgreSQL as well as those
    /// [`Self::mirror_all`] covers: after Redis lost its data, before jobs go back.
    ///
    /// # Errors
    /// PostgreSQL or Redis unreachable.
    pub async fn mirror_all_live(&self) -> Result<usize, MaintenanceError> {
        let written = self.mirror_all().await?;
        let live = repo::live_queues(&self.db).await?;
        self.ensure(&live).await?;
        Ok(written)
    }

    /// Mirrors every [`MIRROR_EVERY`] until `stop`.
    pub async fn run(self, stop: CancellationToken) {
        super::repeat(
            &stop,
            MIRROR_EVERY,
            || async {
                let written = self.mirror_all().await?;
                if written > 0 {
                    tracing::info!(queues = written, "mirrored flow control into redis");
                }
                Ok(false)
            },
            "mirroring flow control",
        )
        .await;
    }
}
