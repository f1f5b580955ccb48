//! What every handler can reach, passed explicitly through axum's `State`.

use std::sync::Arc;

use courier_core::{Settings, queue::RedisQueue};
use sqlx::PgPool;

/// Shared by all handlers; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub db: PgPool,
    pub queue: RedisQueue,
    pub settings: Arc<Settings>,
}
