//! What reconciling Redis with PostgreSQL reads (which jobs Redis holds, and whether it
//! restarted or lost its data since the last reconciliation), and the short lock that
//! lets one process at a time do it.

use std::time::Duration;

use redis::AsyncCommands;

use super::{QueueError, RedisQueue, types::ScanCursor};
use crate::domain::{JobId, QueueName};

impl RedisQueue {
    /// Which of `ids` Redis holds, in order.
    ///
    /// # Errors
    /// Redis unreachable.
    pub async fn present(&self, queue: &QueueName, ids: &[JobId]) -> Result<Vec<bool>, QueueError> {
        let k = self.keys.queue(queue);
        let mut call = self.scripts().present.prepare_invoke();
        call.key(&k.jobs);
        for id in ids {
            call.arg(id.to_string());
        }
        let found: Vec<i64> = call.invoke_async(&mut self.conn()).await?;
        Ok(found.into_iter().map(|f| f == 1).collect())
    }

    /// One page of the job ids in a queue's sorted sets (queued, scheduled and running)
    /// and of its keyed jobs (which finds those set aside on a flow key's limit), `ZSCAN`
    /// style: pass the returned cursor back until it is done. An id may come twice.
    ///
    /// # Errors
    /// Redis unreachable.
    pub async fn scan_ids(
        &self,
        queue: &QueueName,
        cursor: ScanCursor,
    ) -> Result<(ScanCursor, Vec<JobId>), QueueError> {
        let k = self.keys.queue(queue);
        let sets = [
            ("ZSCAN", &k.queued),
            ("ZSCAN", &k.scheduled),
            ("ZSCAN", &k.running),
            ("HSCAN", &k.keyof),
        ];
        let Some((scan, key)) = sets.get(cursor.set) else {
            return Ok((ScanCursor::DONE, vec![]));
        };
        let (next, members): (u64, Vec<String>) = redis::cmd(scan)
            .arg(*key)
            .arg(cursor.position)
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut self.conn())
            .await?;
        // ZSCAN answers member, score, member, score...; HSCAN field, value...
        let ids = members
            .iter()
            .step_by(2)
            .filter_map(|m| JobId::parse(m).ok())
            .collect();
        let next = match next {
            0 if cursor.set + 1 >= sets.len() => ScanCursor::DONE,
            0 => ScanCursor {
                set: cursor.set + 1,
                position: 0,
            },
            position => ScanCursor {
                set: cursor.set,
                position,
            },
        };
        Ok((next, ids))
    }

    /// The Redis server's `run_id`, which changes whenever Redis restarts.
    ///
    /// # Errors
    /// Redis unreachable.
    pub async fn run_id(&self) -> Result<String, QueueError> {
        let info: String = redis::cmd("INFO")
            .arg("server")
            .query_async(&mut self.conn())
            .await?;
        run_id_in(&info)
    }

    /// The `run_id` recorded by the last reconciliation, if Redis still has it.
    ///
    /// # Errors
    /// Redis unreachable.
    pub async fn marker(&self) -> Result<Option<String>, QueueError> {
        Ok(self.conn().get(self.keys.marker()).await?)
    }

    /// Records that PostgreSQL and Redis were reconciled under `run_id`.
    ///
    /// # Errors
    /// Redis unreachable.
    pub async fn set_marker(&self, run_id: &str) -> Result<(), QueueError> {
        let _: () = self.conn().set(self.keys.marker(), run_id).await?;
        Ok(())
    }

    /// Takes the reconcile lock for `ttl` if nobody holds it; returns the token to unlock with.
    ///
    /// # Errors
    /// Redis unreachable.
    pub async fn try_lock_reconcile(&self, ttl: Duration) -> Result<Option<String>, QueueError> {
        let token = uuid::Uuid::new_v4().to_string();
        let taken: Option<String> = redis::cmd("SET")
            .arg(self.keys.reconcile_lock())
            .arg(&token)
            .arg("NX")
            .arg("PX")
            .arg(ttl.as_millis() as u64)
            .query_async(&mut self.conn())
            .await?;
        Ok(taken.map(|_| token))
    }

    /// Extends the reconcile lock to `ttl` from now if `token` still holds it; `false`
    /// when it no longer does.
    ///
    /// # Errors
    /// Redis unreachable.
    pub async fn extend_reconcile_lock(
        &self,
        token: &str,
        ttl: Duration,
    ) -> Result<bool, QueueError> {
        let extended: i64 = self
            .scripts()
            .lock_extend
            .key(self.keys.reconcile_lock())
            .arg(token)
            .arg(ttl.as_millis() as u64)
            .invoke_async(&mut self.conn())
            .await?;
        Ok(extended == 1)
    }

    /// Releases the reconcile lock if `token` still holds it.
    ///
    /// # Errors
    /// Redis unreachable.
    pub async fn unlock_reconcile(&self, token: &str) -> Result<(), QueueError> {
        let _: i64 = self
            .scripts()
            .lock_release
            .key(self.keys.reconcile_lock())
            .arg(token)
            .invoke_async(&mut self.conn())
            .await?;
        Ok(())
    }
}

/// The `run_id` line of an `INFO server` answer.
pub(super) fn run_id_in(info: &str) -> Result<String, QueueError> {
    info.lines()
        .find_map(|line| line.strip_prefix("run_id:"))
        .map(|id| id.trim().to_owned())
        .ok_or_else(|| QueueError::Corrupt("INFO server has no run_id".into()))
}
