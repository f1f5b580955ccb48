//! Connections beyond the shared pool (blocking waits, pub/sub), and Redis's own
//! settings that Courier's guarantees depend on.

use std::time::Duration;

use redis::{AsyncConnectionConfig, aio::MultiplexedConnection};

use super::{QueueError, RedisQueue};

impl RedisQueue {
    /// A connection of its own with no response timeout, for blocking commands and
    /// pub/sub: the pool's timeout would cut a blocking wait short.
    ///
    /// # Errors
    /// Redis unreachable.
    pub async fn dedicated_connection(&self) -> Result<MultiplexedConnection, QueueError> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(5)))
            .set_response_timeout(None);
        Ok(self
            .client()
            .get_multiplexed_async_connection_with_config(&config)
            .await?)
    }

    /// A pub/sub connection subscribed to the cancel channel.
    ///
    /// # Errors
    /// Redis unreachable.
    pub async fn subscribe_cancellations(&self) -> Result<redis::aio::PubSub, QueueError> {
        let mut pubsub = self.client().get_async_pubsub().await?;
        pubsub.subscribe(self.keys.cancel_channel()).await?;
        Ok(pubsub)
    }

    /// # Errors
    /// Redis unreachable.
    pub async fn ping(&self) -> Result<(), QueueError> {
        let _: String = redis::cmd("PING").query_async(&mut self.conn()).await?;
        Ok(())
    }

    /// A Redis setting, by name (`maxmemory-policy`, `appendonly`).
    ///
    /// # Errors
    /// Redis unreachable, or `CONFIG` not allowed for this user.
    pub async fn config_get(&self, name: &str) -> Result<Option<String>, QueueError> {
        let pairs: Vec<String> = redis::cmd("CONFIG")
            .arg("GET")
            .arg(name)
            .query_async(&mut self.conn())
            .await?;
        Ok(pairs.into_iter().nth(1))
    }

    /// Logs an error when Redis could evict jobs and a warning when AOF is off (SPEC 5.7).
    /// Redis being down is not fatal: jobs wait in PostgreSQL meanwhile.
    pub async fn warn_on_unsafe_settings(&self) {
        match self.config_get("maxmemory-policy").await {
            Ok(Some(policy)) if policy != "noeviction" => tracing::error!(
                policy,
                "redis maxmemory-policy is not noeviction: queued jobs can be evicted under memory pressure"
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "could not read redis settings at start"),
        }
        if let Ok(Some(aof)) = self.config_get("appendonly").await
            && aof != "yes"
        {
            tracing::warn!(
                "redis AOF is off: a redis crash loses recent queue changes until they are re-dispatched"
            );
        }
    }
}
