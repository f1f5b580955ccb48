//! What every handler can reach, passed explicitly through axum's `State`.

use std::sync::Arc;

use courier_core::{
    Settings, maintenance::Maintenance, outbound::OutboundPolicy, queue::RedisQueue,
    stages::Dispatcher,
};
use sqlx::PgPool;

/// Shared by all handlers; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub db: PgPool,
    /// Seals secret header values before jobs are stored.
    pub secrets: Arc<courier_core::crypto::SecretBox>,
    /// API keys and their rate limits.
    pub auth: Arc<crate::auth::Authenticator>,
    /// Group commit of single-job submissions.
    pub intake: crate::intake::Intake,
    pub queue: RedisQueue,
    pub settings: Arc<Settings>,
    /// SSRF protection's allow-list, to refuse internal targets at submission.
    pub outbound: Arc<OutboundPolicy>,
    /// Where time comes from (tests set it).
    pub clock: courier_core::clock::SharedClock,
    /// Fires schedules: the loop it runs, and triggers and backfills.
    pub scheduler: crate::scheduler::Scheduler,
    /// The OpenAPI document for these settings, which request bodies are read against
    /// (`crate::extract`).
    pub document: Arc<serde_json::Value>,
    /// Progress reports per job (`server.progress_per_second`).
    pub progress_limiter: Arc<governor::DefaultKeyedRateLimiter<courier_core::JobId>>,
}

impl AppState {
    /// Dispatch, reconciliation, recovery and retention over this state's connections.
    pub fn maintenance(&self) -> Maintenance {
        Maintenance {
            db: self.db.clone(),
            queue: self.queue.clone(),
            settings: self.settings.clone(),
            secrets: self.secrets.clone(),
        }
    }

    /// What the authentication middleware reads.
    pub fn auth_state(&self) -> crate::auth::AuthState {
        crate::auth::AuthState {
            auth: self.auth.clone(),
            db: self.db.clone(),
        }
    }

    /// Sends committed jobs to Redis.
    pub fn dispatcher(&self) -> Dispatcher {
        Dispatcher::new(self.db.clone(), self.queue.clone())
    }
}
