//! Background work that keeps PostgreSQL (the system of record) and Redis (dispatch) in
//! step. The API and every worker run it, so it goes on while any Courier process is up:
//!
//! - the outbox pass of [`recovery`]: sends jobs whose dispatch right after their
//!   commit failed (Redis down, a process killed between commit and dispatch), under
//!   the same rule and lock as every other redispatch;
//! - [`reconcile`]: notices that Redis lost data (a wipe removes the marker key, a
//!   restart changes Redis's `run_id`; AOF `everysec` can lose the last second) and then,
//!   once, re-dispatches every live job Redis no longer has and drops jobs Redis still
//!   holds that PostgreSQL has finished;
//! - the loop of [`crate::stages::mirror`]: mirrors flow control (queue pauses and
//!   limits, flow keys) from PostgreSQL into Redis, putting back what Redis lost;
//! - [`missing`]: the last net: a job PostgreSQL holds as waiting for a worker and
//!   Redis lacks, whatever the cause, is dispatched again within seconds;
//! - [`recovery`]: replays journal entries whose worker died before recording them, and
//!   runs again jobs whose result never reached PostgreSQL;
//! - [`retention`]: deletes finished jobs past their time (API only).

pub mod missing;
pub mod reconcile;
pub mod recovery;
pub mod retention;

use std::{sync::Arc, time::Duration};

use sqlx::PgPool;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use crate::stages::mirror::{self as flow, FlowMirror};
pub use missing::MissingCheck;
pub use reconcile::{Reconciled, Reconciler};
pub use recovery::Recovery;
pub use retention::Retention;

use crate::{Settings, crypto::SecretBox, queue::RedisQueue};

/// Most rows or entries handled in one pass.
pub(crate) const BATCH: i64 = 500;

pub(crate) use crate::stages::repeat;

pub use crate::stages::StageError as MaintenanceError;

/// The connections every maintenance loop works over.
#[derive(Clone)]
pub struct Maintenance {
    pub db: PgPool,
    pub queue: RedisQueue,
    pub settings: Arc<Settings>,
    /// Opens and seals secret header values (callback jobs made by replayed ends).
    pub secrets: Arc<SecretBox>,
}

impl Maintenance {
    pub fn recovery(&self) -> Recovery {
        Recovery::new(
            self.db.clone(),
            self.queue.clone(),
            self.settings.worker.lease(),
            self.secrets.clone(),
        )
    }

    pub fn reconciler(&self) -> Reconciler {
        Reconciler::new(
            self.db.clone(),
            self.queue.clone(),
            self.recovery(),
            self.flow(),
        )
    }

    /// The missing-job check; `None` when `redis.missing_check_ms` turns it off.
    pub fn missing_check(&self) -> Option<MissingCheck> {
        let every = self.settings.redis.missing_check_ms;
        (every > 0).then(|| {
            MissingCheck::new(
                self.db.clone(),
                self.queue.clone(),
                self.recovery(),
                Duration::from_millis(every),
            )
        })
    }

    pub fn flow(&self) -> FlowMirror {
        FlowMirror::new(self.db.clone(), self.queue.clone())
    }

    pub fn retention(&self) -> Retention {
        Retention::new(self.db.clone(), self.settings.retention.clone())
    }

    /// Starts the outbox pass, reconciler, missing-job check, recovery and flow-control
    /// mirror loops (and retention when `retention`); they run until `stop`.
    pub fn spawn(&self, stop: &CancellationToken, retention: bool) -> Vec<JoinHandle<()>> {
        let every = Duration::from_millis(self.settings.server.dispatch_interval_ms);
        let mut tasks = vec![
            tokio::spawn(self.recovery().run_outbox(every, stop.clone())),
            tokio::spawn(self.reconciler().run(stop.clone())),
            tokio::spawn(self.recovery().run(stop.clone())),
            tokio::spawn(self.flow().run(stop.clone())),
        ];
        if let Some(check) = self.missing_check() {
            tasks.push(tokio::spawn(check.run(stop.clone())));
        }
        if retention {
            tasks.push(tokio::spawn(self.retention().run(stop.clone())));
        }
        tasks
    }
}
