//! Redis Cluster, through redis-rs's cluster client. Every key of a queue carries the
//! queue's hash tag (`courier:{mail}:queued`), so a queue lives on one master and each
//! script touches one slot; queues spread over the masters by their names' slots.
//!
//! What spanned slots on a single Redis is done otherwise here:
//! - idle workers wait on pub/sub instead of one `BLPOP` across every queue's signal
//!   list: a script that makes work ready in an idle queue `PUBLISH`es on the queue's
//!   signal channel (a Cluster passes `PUBLISH` to every node, so a worker listens on
//!   any one node), and the queue's signal key holds one flag so that a busy queue
//!   publishes nothing (see `wake` in `lua/prelude.lua`);
//! - the loss of Redis data is noticed per queue: each queue records the `run_id` of its
//!   master when it was last reconciled, in its own slot, so a failover re-dispatches
//!   only the queues of the master that failed (`maintenance::reconcile`).

use std::{
    sync::atomic::{AtomicUsize, Ordering},
    time::Duration,
};

use redis::{IntoConnectionInfo, cluster::ClusterClientBuilder, cluster_async::ClusterConnection};

use super::QueueError;
use crate::settings::RedisSettings;

/// A Redis Cluster: one connection that routes each command to its slot's master (and
/// follows failovers and resharding), and the seed nodes for pub/sub.
pub(super) struct Cluster {
    conn: ClusterConnection,
    nodes: Vec<redis::Client>,
    next: AtomicUsize,
}

impl Cluster {
    /// Connects in the background: the first commands wait for the cluster's layout.
    pub(super) fn new(settings: &RedisSettings) -> Result<Self, QueueError> {
        // `redis.url` gives the password (and user) for every node.
        let auth = settings.url.as_str().into_connection_info()?;
        let auth = auth.redis_settings();
        let nodes = settings
            .nodes
            .iter()
            .map(|url| {
                let info = url.as_str().into_connection_info()?;
                let mut redis = info.redis_settings().clone();
                if redis.password().is_none()
                    && let Some(password) = auth.password()
                {
                    redis = redis.set_password(password);
                    if let Some(user) = auth.username() {
                        redis = redis.set_username(user);
                    }
                }
                redis::Client::open(info.set_redis_settings(redis))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if nodes.is_empty() {
            return Err(QueueError::Settings(
                "redis.cluster is set but redis.nodes is empty".into(),
            ));
        }
        let timeout = Duration::from_millis(settings.command_timeout_ms);
        let mut builder = ClusterClientBuilder::new(
            nodes
                .iter()
                .map(|n| n.get_connection_info().clone())
                .collect::<Vec<_>>(),
        )
        .connection_timeout(timeout)
        .response_timeout(timeout)
        // A failover takes `cluster-node-timeout` and a moment more: retry through it
        // with short waits (redis-rs's defaults wait up to minutes), within the
        // command's own timeout.
        .retries(12)
        .min_retry_wait(50)
        .max_retry_wait(500)
        .overall_response_timeout(Some(timeout));
        if let Some(password) = auth.password() {
            builder = builder.password(password);
        }
        if let Some(user) = auth.username() {
            builder = builder.username(user);
        }
        let client = builder.build()?;
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(QueueError::Settings(
                "a Redis Cluster connection needs a Tokio runtime".into(),
            ));
        }
        let conn = client.get_pending_async_connection_with_config(
            redis::cluster::ClusterConfig::new()
                .set_connection_timeout(timeout)
                .set_response_timeout(timeout),
        );
        Ok(Self {
            conn,
            nodes,
            next: AtomicUsize::new(0),
        })
    }

    pub(super) fn conn(&self) -> ClusterConnection {
        self.conn.clone()
    }

    /// The next seed node in turn: a pub/sub connection that failed (its node died)
    /// is made again on another.
    pub(super) fn next_node(&self) -> redis::Client {
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        self.nodes[i % self.nodes.len()].clone()
    }
}
