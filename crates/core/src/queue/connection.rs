//! Connections beyond the shared pool (blocking waits, pub/sub), and Redis's own
//! settings that Courier's guarantees depend on.

use std::{collections::HashSet, time::Duration};

use redis::{AsyncConnectionConfig, aio::MultiplexedConnection};

use super::{QueueError, RedisQueue};

/// Most time to connect to pub/sub, or to subscribe to more channels.
pub(super) const PUBSUB_SETUP: Duration = Duration::from_secs(5);

pub(super) fn timed_out(what: &str) -> QueueError {
    QueueError::Redis(redis::RedisError::from((
        redis::ErrorKind::Io,
        "timed out",
        what.to_owned(),
    )))
}

/// A worker's own connection to wait for work on ([`RedisQueue::waiter`]).
pub struct Waiter(pub(super) WaiterInner);

pub(super) enum WaiterInner {
    Blocking(MultiplexedConnection),
    Listening {
        pubsub: Box<redis::aio::PubSub>,
        /// The queues' signal channels subscribed to so far.
        channels: HashSet<String>,
        /// Not waited on yet: what was published before it subscribed was missed.
        fresh: bool,
    },
}

impl RedisQueue {
    /// What an idle worker waits for work on, of its own: on a single Redis, a
    /// connection with no response timeout for `BLPOP` (the pool's timeout would cut a
    /// blocking wait short); on a Cluster, a pub/sub connection to one node, subscribed
    /// to the queues' signal channels as it waits (see [`super::cluster`]).
    ///
    /// # Errors
    /// Redis unreachable.
    pub async fn waiter(&self) -> Result<Waiter, QueueError> {
        if self.is_cluster() {
            // A pub/sub connection has no response timeout of its own: bound its setup.
            let connect = async {
                let mut pubsub = self.client().get_async_pubsub().await?;
                pubsub.subscribe(self.keys.queues_signal()).await?;
                Ok::<_, QueueError>(pubsub)
            };
            let pubsub = tokio::time::timeout(PUBSUB_SETUP, connect)
                .await
                .map_err(|_| timed_out("connecting to pub/sub"))??;
            return Ok(Waiter(WaiterInner::Listening {
                pubsub: Box::new(pubsub),
                channels: HashSet::new(),
                fresh: true,
            }));
        }
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(5)))
            .set_response_timeout(None);
        Ok(Waiter(WaiterInner::Blocking(
            self.client()
                .get_multiplexed_async_connection_with_config(&config)
                .await?,
        )))
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
