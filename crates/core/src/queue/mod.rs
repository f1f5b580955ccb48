//! The Redis dispatch queue. Redis holds only what dispatch needs; PostgreSQL is the
//! system of record. Every multi-key change is one Lua script (`crates/core/lua/`), run
//! by exactly one method here that builds its keys and types its answer.
//!
//! - [`types`]: what goes in and comes out;
//! - [`connection`]: the connections, and Redis's own settings;
//! - [`cluster`]: Redis Cluster: its connection, and each queue's master;
//! - [`lifecycle`]: a job's way through Redis: enqueue, fetch, complete, retry, reap,
//!   cancel;
//! - [`flow`]: flow control's settings mirrored from PostgreSQL, and keys' counts;
//! - [`journal`]: ended attempts' records, kept until PostgreSQL has them;
//! - [`reconcile`]: what reconciling Redis with PostgreSQL after a data loss reads,
//!   and its lock.

mod cluster;
mod connection;
mod flow;
mod journal;
mod keys;
mod lifecycle;
mod reconcile;
mod scripts;
mod sentinel;
mod types;

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex, atomic::AtomicUsize},
    time::{Duration, Instant},
};

use arc_swap::ArcSwap;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

pub use connection::Waiter;
pub use flow::KeyCounts;
pub use keys::{Keys, Lock, QueueKeys};
pub use reconcile::{Claim, Marker, MarkerState};
pub use types::*;

use crate::domain::{JobId, QueueName};
use crate::settings::RedisSettings;

/// A failure to talk to Redis or to read what it holds.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("redis answered something Courier did not write: {0}")]
    Corrupt(String),
    /// The Redis settings cannot make a connection (settings validation catches these
    /// first; a caller building a queue by hand may not have run it).
    #[error("redis settings: {0}")]
    Settings(String),
}

/// Where commands go: the Redis (with Sentinel, the master of the moment), and
/// multiplexed connections to it, used in turn: many commands share each at once, and
/// each reconnects on its own after Redis comes back.
struct Pool {
    client: redis::Client,
    conns: Vec<ConnectionManager>,
}

impl Pool {
    fn new(client: redis::Client, settings: &RedisSettings) -> Result<Self, QueueError> {
        let timeout = Duration::from_millis(settings.command_timeout_ms);
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            // One quick retry, then the command fails with the reason (refused, a bad
            // certificate) and the next command connects afresh: the callers retry with
            // their own backoff or report Redis as unavailable. redis-rs's default of six
            // retries held every command, `/readyz` included, for seconds.
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_secs(2));
        let conns = (0..settings.pool_size.max(1))
            .map(|_| ConnectionManager::new_lazy_with_config(client.clone(), config.clone()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { client, conns })
    }
}

/// Where commands go: one Redis (or Sentinel's master), or a Redis Cluster.
#[derive(Clone)]
enum Backend {
    Single {
        pool: Arc<ArcSwap<Pool>>,
        next: Arc<AtomicUsize>,
    },
    Cluster(Arc<cluster::Cluster>),
}

/// A connection of the moment: one of the pool's, or the cluster's (which routes each
/// command to the master of its keys' slot). Commands and scripts run on either.
#[derive(Clone)]
pub(crate) enum Conn {
    Single(ConnectionManager),
    Cluster(redis::cluster_async::ClusterConnection),
}

impl redis::aio::ConnectionLike for Conn {
    fn req_packed_command<'a>(
        &'a mut self,
        cmd: &'a redis::Cmd,
    ) -> redis::RedisFuture<'a, redis::Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// Courier's queues in one Redis, a Sentinel-watched master, or a Redis Cluster.
#[derive(Clone)]
pub struct RedisQueue {
    backend: Backend,
    keys: Keys,
    /// When this process last registered each queue in the queue set, so that
    /// enqueueing costs one round trip and a wiped set is refilled within
    /// [`REGISTER_EVERY`].
    registered: Arc<Mutex<HashMap<QueueName, Instant>>>,
    /// The queues whose flow control this process has mirrored into Redis (the fetch
    /// script starts no job of a queue without it); cleared with the registrations.
    mirrored: Arc<Mutex<HashSet<QueueName>>>,
}

const REGISTER_EVERY: Duration = Duration::from_secs(10);

impl RedisQueue {
    /// Builds the connections; they connect on first use, so a process can start while
    /// Redis is down and recover when it comes back.
    ///
    /// # Errors
    /// An unparsable Redis URL.
    ///
    /// With Sentinel (`redis.sentinels`), the master is asked of the sentinels now (at
    /// least one must answer) and again every second by a task of this process, which
    /// moves every connection to a new master after a failover. With Cluster
    /// (`redis.cluster`), the seed nodes are asked for the cluster's layout at the first
    /// command, and redis-rs follows it across failovers and resharding.
    pub fn new(settings: &RedisSettings) -> Result<Self, QueueError> {
        let keys = Keys::new(&settings.prefix);
        if settings.cluster {
            return Ok(Self {
                backend: Backend::Cluster(Arc::new(cluster::Cluster::new(settings)?)),
                keys,
                registered: Arc::default(),
                mirrored: Arc::default(),
            });
        }
        let (client, sentinel) = if settings.sentinels.is_empty() {
            (redis::Client::open(settings.url.as_str())?, None)
        } else {
            let mut sentinel = sentinel::client(settings)?;
            (sentinel.get_client()?, Some(sentinel))
        };
        let pool = Arc::new(ArcSwap::from_pointee(Pool::new(client, settings)?));
        let queue = Self {
            backend: Backend::Single {
                pool: pool.clone(),
                next: Arc::default(),
            },
            keys,
            registered: Arc::default(),
            mirrored: Arc::default(),
        };
        if let Some(sentinel) = sentinel {
            sentinel::follow(pool, sentinel, settings.clone());
        }
        Ok(queue)
    }

    /// Whether this queue is on a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self.backend, Backend::Cluster(_))
    }

    /// A client of one server, for the connections that are not shared: blocking waits
    /// and pub/sub. On a single Redis, that Redis (with Sentinel, the current master);
    /// on a Cluster, the next seed node in turn (`PUBLISH` reaches every node there).
    fn client(&self) -> redis::Client {
        match &self.backend {
            Backend::Single { pool, .. } => pool.load().client.clone(),
            Backend::Cluster(cluster) => cluster.next_node(),
        }
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// The scripts for this kind of deployment (a Cluster wakes workers by pub/sub).
    fn scripts(&self) -> &'static scripts::Scripts {
        match self.backend {
            Backend::Single { .. } => &scripts::SCRIPTS,
            Backend::Cluster(_) => &scripts::CLUSTER_SCRIPTS,
        }
    }

    /// The next connection in turn (a cheap clone of a shared handle).
    fn conn(&self) -> Conn {
        match &self.backend {
            Backend::Single { pool, next } => {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let pool = pool.load();
                Conn::Single(pool.conns[i % pool.conns.len()].clone())
            }
            Backend::Cluster(cluster) => Conn::Cluster(cluster.conn()),
        }
    }
}

fn parse_id(s: &str) -> Result<JobId, QueueError> {
    JobId::parse(s).map_err(|_| QueueError::Corrupt(format!("job id {s:?}")))
}

fn parse_token(s: &str) -> Result<Token, QueueError> {
    s.parse()
        .map(Token)
        .map_err(|_| QueueError::Corrupt(format!("token {s:?}")))
}

fn parse_count(what: &str, s: &str) -> Result<u32, QueueError> {
    s.parse()
        .map_err(|_| QueueError::Corrupt(format!("{what} {s:?}")))
}
