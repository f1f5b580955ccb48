//! Redis Sentinel: the master is asked of the sentinels (redis-rs's sentinel client), and
//! followed. After a failover the old master's connections fail (refused, or `READONLY`
//! once it is back as a replica); every second this process asks again and, when the
//! master has moved, swaps its connections to the new one. What the old master had not
//! yet passed to its replica is lost with it: the new master has another `run_id`, so
//! reconciliation (`maintenance::reconcile`) dispatches again from PostgreSQL every live
//! job it lacks, as after any loss of Redis data.

use std::{sync::Arc, time::Duration};

use redis::{
    IntoConnectionInfo,
    sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType},
};

use arc_swap::ArcSwap;

use super::{Pool, QueueError};
use crate::settings::RedisSettings;

/// How often the sentinels are asked where the master is.
const LOOK_EVERY: Duration = Duration::from_secs(1);

/// A client of the sentinels, for the master named `redis.sentinel_master`, reached with
/// the password and database of `redis.url`.
pub(super) fn client(settings: &RedisSettings) -> Result<SentinelClient, QueueError> {
    let redis = settings.url.as_str().into_connection_info()?;
    let node = SentinelNodeConnectionInfo::default()
        .set_redis_connection_info(redis.redis_settings().clone());
    Ok(SentinelClient::build(
        settings.sentinels.clone(),
        settings.sentinel_master.as_str(),
        Some(node),
        SentinelServerType::Master,
    )?)
}

/// Follows the master: a task that asks the sentinels every [`LOOK_EVERY`] and moves the
/// queue's connections when the answer changes. Without a Tokio runtime (a synchronous
/// tool), nothing follows.
pub(super) fn follow(pool: Arc<ArcSwap<Pool>>, sentinel: SentinelClient, settings: RedisSettings) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let sentinel = Arc::new(tokio::sync::Mutex::new(sentinel));
    runtime.spawn(async move {
        loop {
            tokio::time::sleep(LOOK_EVERY).await;
            // Stop with the last handle on the queue's connections.
            if Arc::strong_count(&pool) == 1 {
                return;
            }
            let found = sentinel.lock().await.async_get_client().await;
            let client = match found {
                Ok(client) => client,
                Err(e) => {
                    tracing::warn!(error = %e, "no sentinel says where the redis master is");
                    continue;
                }
            };
            let now = client.get_connection_info().addr().to_string();
            let was = pool.load().client.get_connection_info().addr().to_string();
            if now == was {
                continue;
            }
            match Pool::new(client, &settings) {
                Ok(new) => {
                    tracing::warn!(from = %was, to = %now, "the redis master moved; following it");
                    pool.store(Arc::new(new));
                }
                Err(e) => tracing::error!(error = %e, "cannot connect to the new redis master"),
            }
        }
    });
}
