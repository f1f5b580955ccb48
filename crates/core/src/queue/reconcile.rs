//! What reconciling Redis with PostgreSQL reads (which jobs Redis holds, and whether it
//! restarted or lost its data since the last reconciliation), and the short lock that
//! lets one process at a time do it.
//!
//! The marker says whether Redis lost data: it holds the `run_id` under which the last
//! reconciliation finished, so a wipe (no marker) or a restart or failover (another
//! `run_id`) shows. A reconciliation claims it when it starts and settles it when it
//! ends only if the claim survived under the same `run_id`: a loss that lands while a
//! reconciliation runs leaves the marker unsettled, and the next check reconciles again.

use std::time::Duration;

use super::{Lock, QueueError, RedisQueue, types::ScanCursor};
use crate::domain::{JobId, QueueName};

/// Which reconciliation marker: on one Redis (or Sentinel's master) there is one for the
/// deployment; on a Cluster, one per queue, in the queue's slot, so that a failover of
/// one master reconciles only that master's queues.
#[derive(Debug, Clone, Copy)]
pub enum Marker<'a> {
    All,
    Queue(&'a QueueName),
}

/// A marker as read, with the `run_id` of the server holding it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MarkerState {
    /// The `run_id` the last finished reconciliation ran under, a claim while one runs,
    /// or nothing after a wipe.
    pub marker: Option<String>,
    pub run_id: String,
}

impl MarkerState {
    /// Whether the last reconciliation finished under the Redis running now, with no
    /// loss of data since it started: nothing to reconcile.
    pub fn is_settled(&self) -> bool {
        self.marker.as_deref() == Some(self.run_id.as_str())
    }

    /// Whether a reconciliation is under way (or died under way, until it is redone).
    pub fn is_claimed(&self) -> bool {
        self.marker
            .as_deref()
            .is_some_and(|m| m.starts_with("reconciling:"))
    }
}

/// A running reconciliation's claim on a marker (see `lua/marker_claim.lua`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim(String);

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

    /// A marker and the `run_id` of the Redis (on a Cluster: the master) that holds it,
    /// read together in one script on that server.
    ///
    /// # Errors
    /// Redis unreachable.
    pub async fn marker(&self, scope: Marker<'_>) -> Result<MarkerState, QueueError> {
        let (marker, run_id): (Option<String>, Option<String>) = self
            .scripts()
            .marker
            .key(self.marker_key(scope))
            .invoke_async(&mut self.conn())
            .await?;
        let run_id =
            run_id.ok_or_else(|| QueueError::Corrupt("INFO server has no run_id".into()))?;
        Ok(MarkerState { marker, run_id })
    }

    /// Starts a reconciliation of `scope`: the marker becomes a claim naming the current
    /// `run_id` and a fresh nonce, which any later loss of Redis data wipes or outdates.
    ///
    /// # Errors
    /// Redis unreachable.
    pub async fn claim_marker(&self, scope: Marker<'_>) -> Result<Claim, QueueError> {
        let claim: String = self
            .scripts()
            .marker_claim
            .key(self.marker_key(scope))
            .arg(uuid::Uuid::new_v4().simple().to_string())
            .invoke_async(&mut self.conn())
            .await?;
        Ok(Claim(claim))
    }

    /// Ends a reconciliation of `scope` that started with `claim`: `true` when the marker
    /// is settled (Redis kept its data throughout), `false` when Redis lost data while it
    /// ran, so that it must run again.
    ///
    /// # Errors
    /// Redis unreachable.
    pub async fn settle_marker(
        &self,
        scope: Marker<'_>,
        claim: &Claim,
    ) -> Result<bool, QueueError> {
        let settled: i64 = self
            .scripts()
            .marker_settle
            .key(self.marker_key(scope))
            .arg(&claim.0)
            .invoke_async(&mut self.conn())
            .await?;
        Ok(settled == 1)
    }

    /// Where the missing-job check stopped its walk over the waiting jobs (shared by
    /// every process, which take turns), as it wrote it; `None` to start afresh.
    ///
    /// # Errors
    /// Redis unreachable.
    pub async fn missing_check_cursor(&self) -> Result<Option<String>, QueueError> {
        use redis::AsyncCommands;
        Ok(self.conn().get(self.keys.missing_check_cursor()).await?)
    }

    /// Records where the missing-job check goes on next time.
    ///
    /// # Errors
    /// Redis unreachable.
    pub async fn set_missing_check_cursor(&self, cursor: &str) -> Result<(), QueueError> {
        use redis::AsyncCommands;
        let _: () = self
            .conn()
            .set(self.keys.missing_check_cursor(), cursor)
            .await?;
        Ok(())
    }

    fn marker_key(&self, scope: Marker<'_>) -> String {
        match scope {
            Marker::All => self.keys.marker(),
            Marker::Queue(queue) => self.keys.queue(queue).marker,
        }
    }

    /// Takes `lock` for `ttl` if nobody holds it; returns the token to unlock with.
    ///
    /// # Errors
    /// Redis unreachable.
    pub async fn try_lock(&self, lock: Lock, ttl: Duration) -> Result<Option<String>, QueueError> {
        let token = uuid::Uuid::new_v4().to_string();
        let taken: Option<String> = redis::cmd("SET")
            .arg(self.keys.lock(lock))
            .arg(&token)
            .arg("NX")
            .arg("PX")
            .arg(ttl.as_millis() as u64)
            .query_async(&mut self.conn())
            .await?;
        Ok(taken.map(|_| token))
    }

    /// Extends `lock` to `ttl` from now if `token` still holds it; `false` when it no
    /// longer does.
    ///
    /// # Errors
    /// Redis unreachable.
    pub async fn extend_lock(
        &self,
        lock: Lock,
        token: &str,
        ttl: Duration,
    ) -> Result<bool, QueueError> {
        let extended: i64 = self
            .scripts()
            .lock_extend
            .key(self.keys.lock(lock))
            .arg(token)
            .arg(ttl.as_millis() as u64)
            .invoke_async(&mut self.conn())
            .await?;
        Ok(extended == 1)
    }

    /// Releases `lock` if `token` still holds it.
    ///
    /// # Errors
    /// Redis unreachable.
    pub async fn unlock(&self, lock: Lock, token: &str) -> Result<(), QueueError> {
        let _: i64 = self
            .scripts()
            .lock_release
            .key(self.keys.lock(lock))
            .arg(token)
            .invoke_async(&mut self.conn())
            .await?;
        Ok(())
    }
}
