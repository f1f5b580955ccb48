//! Test helpers. Every test gets its own PostgreSQL database, its own Redis key prefix
//! and port-0 listeners, so tests run in parallel against the machine's real Redis and
//! PostgreSQL. Targets are real HTTP servers on 127.0.0.1 that record what they receive.

mod app;
mod env;
mod http_targets;
mod tls;
pub use env::redis_url;
mod process;
mod servers;
mod target;
mod wait;
pub mod webhooks;

pub use app::{TestApp, WorkerHandle};
pub use env::{TEST_ENCRYPTION_KEY, TestEnv, client_with_key};
pub use http_targets::{ForwardProxy, H2Target, RawMode, RawTarget};
pub use process::{ChildProcess, binary};
pub use servers::{ClusterNode, PgCluster, RedisCluster, RedisServer, free_port};
pub use target::{Received, Reply, Target};
pub use tls::make_certificates;
pub use wait::{wait_until, wait_until_or_none};
