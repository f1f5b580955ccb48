//! What every handler can reach, passed explicitly through axum's `State`.

use std::sync::Arc;

use courier_core::{Settings, maintenance::Maintenance, queue::RedisQueue};
use sqlx::PgPool;

/// Shared by all handlers; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub db: PgPool,
    /// Group commit of single-job submissions.
    pub intake: crate::intake::Intake,
    pub queue: RedisQueue,
    pub settings: Arc<Settings>,
}

impl AppState {
    /// Dispatch, reconciliation and retention over this state's connections.
    pub fn maintenance(&self) -> Maintenance {
        Maintenance {
            db: self.db.clone(),
            queue: self.queue.clone(),
            settings: self.settings.clone(),
        }
    }
}
