//! Settings in layers: built-in defaults, an optional file named by `COURIER_CONFIG`,
//! then `COURIER__SECTION__KEY` environment variables. `DATABASE_URL` and `REDIS_URL`
//! are honoured as the usual shortcuts.

use std::time::Duration;

use config::{Config, ConfigError, Environment, File};
use serde::Deserialize;

use crate::domain::{QueueName, TargetUrl};

mod lists;
mod redact;
mod validate;

use lists::{public_url, queue_list, string_list, string_list_map};
pub use redact::redact_url;
pub use validate::{BadSetting, SettingsError};

/// Every setting's built-in default, in TOML: the first layer.
const DEFAULTS: &str = include_str!("defaults.toml");

/// Every setting of the API and the worker. `.env.example` lists each with its default.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub server: ServerSettings,
    pub database: DatabaseSettings,
    pub redis: RedisSettings,
    pub jobs: JobLimits,
    pub worker: WorkerSettings,
    pub retention: RetentionSettings,
    pub telemetry: TelemetrySettings,
    pub auth: AuthSettings,
    pub outbound: OutboundSettings,
    pub signing: SigningSettings,
    pub secrets: SecretSettings,
    pub scheduler: SchedulerSettings,
}

/// The scheduler that runs recurring schedules, in every API process.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchedulerSettings {
    /// Run the scheduler in this API process.
    pub enabled: bool,
    /// An occurrence more than this late was missed (no scheduler ran at its time); its
    /// schedule's catch-up policy decides whether it fires. Later ones are merely late.
    pub misfire_grace_ms: u64,
    /// Most schedules decided in one transaction.
    pub batch: usize,
}

/// The API's listener and request limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    pub host: String,
    pub port: u16,
    /// Largest request body for `POST /v1/jobs`, in bytes.
    pub max_request_bytes: usize,
    /// Largest request body for `POST /v1/jobs/batch`, in bytes.
    pub max_batch_request_bytes: usize,
    /// Most jobs in one batch.
    pub max_batch_jobs: usize,
    /// Apply pending migrations when the API starts.
    pub migrate_on_start: bool,
    /// How long a shut-down API waits for requests in flight.
    pub shutdown_grace_ms: u64,
    /// How often the dispatcher looks for jobs that are in PostgreSQL but not yet in Redis.
    pub dispatch_interval_ms: u64,
    /// The API's URL as targets reach it (`https://courier.example.com`); when set, each
    /// call carries `X-Courier-Progress-Url` for reporting progress. Empty: no header.
    #[serde(deserialize_with = "public_url")]
    pub public_url: Option<TargetUrl>,
    /// Progress reports a job may make per second (a burst of as many).
    pub progress_per_second: u32,
}

/// PostgreSQL connection.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    pub url: String,
    pub max_connections: u32,
    pub connect_timeout_ms: u64,
}

/// Redis connection and key layout.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSettings {
    pub url: String,
    /// Every key Courier writes starts with this prefix.
    pub prefix: String,
    /// Multiplexed connections per process; each carries many commands at once.
    pub pool_size: usize,
    /// Timeout of one Redis command (blocking waits use their own connection).
    pub command_timeout_ms: u64,
    /// Redis Sentinel: the sentinels' URLs. Empty: `url` is the Redis to use. Set: the
    /// master of `sentinel_master` is asked of them, and followed across failovers;
    /// `url` then gives only the password and database to use with it.
    pub sentinels: Vec<String>,
    /// The name the sentinels monitor the master under.
    pub sentinel_master: String,
    /// Redis Cluster: `nodes` are seed nodes of one cluster (any of its masters or
    /// replicas); the rest of the cluster is learnt from them. `url` then gives only the
    /// password to use.
    pub cluster: bool,
    /// Seed node URLs of the cluster, with `cluster = true`.
    pub nodes: Vec<String>,
    /// How often a waiting job that PostgreSQL holds and Redis lacks is looked for and
    /// dispatched again (`maintenance::missing`), by one process at a time; 0 turns the
    /// check off.
    pub missing_check_ms: u64,
}

/// Bounds on what a job may ask for.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobLimits {
    pub max_timeout_ms: u64,
    pub max_body_bytes: usize,
    /// Most headers a job's target may carry.
    pub max_headers: usize,
    /// Most bytes of header names and values a job's target may carry, in all.
    pub max_header_bytes: usize,
}

/// The worker's capacity, leases and shutdown.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerSettings {
    /// Calls in flight at once in one worker process.
    pub concurrency: usize,
    /// Queues to serve; empty serves every queue that has ever received a job.
    #[serde(deserialize_with = "queue_list")]
    pub queues: Vec<QueueName>,
    /// How soon a dead worker's jobs run again (SPEC 5): see `courier_worker::leases::redis_lease`.
    pub lease_ms: u64,
    /// Most jobs taken from Redis in one round trip.
    pub fetch_batch: usize,
    /// How long SIGTERM waits for calls in flight before handing the rest back.
    pub shutdown_grace_ms: u64,
    /// Longest an idle worker blocks before looking again (new jobs wake it at once).
    pub idle_poll_ms: u64,
    /// Most execution records and state changes written to PostgreSQL in one statement.
    pub history_batch: usize,
    /// Most records held in memory while PostgreSQL is unreachable.
    pub history_buffer: usize,
    /// A name for this worker in execution records; empty uses host name and process id.
    pub name: String,
    /// Where the worker serves `/metrics`, `/healthz` and `/readyz` (0: a port the
    /// system picks, logged at start).
    pub metrics_host: String,
    pub metrics_port: u16,
}

/// How long finished jobs stay in PostgreSQL.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionSettings {
    /// Hours a succeeded job is kept after it finished.
    pub succeeded_hours: u64,
    /// Hours a dead or cancelled job is kept after it finished.
    pub dead_hours: u64,
    /// How often the API deletes what is past its time.
    pub sweep_interval_ms: u64,
    /// Days of partitions made ahead of today (one partition of `jobs` and one of
    /// `job_executions` per UTC day).
    pub partition_ahead_days: u64,
}

/// Who may use the `/v1` API, and how fast.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSettings {
    /// `false` opens every route to anyone who can reach the API (logged as a warning).
    pub enabled: bool,
    /// Requests per second one API key may make; 0 turns the limit off.
    pub rate_limit_per_second: u32,
    /// Requests one API key may make at once above its rate before 429.
    pub rate_limit_burst: u32,
}

/// What the worker may call: SSRF protection and its allow-list, and response limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboundSettings {
    /// CIDRs (`10.0.0.0/8`, `127.0.0.1/32`) and host names (`billing.internal`) that may
    /// be called even though they are internal. Empty allows only public addresses.
    #[serde(deserialize_with = "string_list")]
    pub allow: Vec<String>,
    /// Most response bytes read from a target; the rest is discarded.
    pub max_response_bytes: usize,
    /// A PEM file of extra certificate authorities to trust for `https` targets (an
    /// internal CA), besides the platform's; empty for none.
    pub ca_file: String,
}

/// Standard Webhooks signing of outgoing calls.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SigningSettings {
    /// `whsec_...` secrets that sign every call; several give several signatures (rotation).
    #[serde(deserialize_with = "string_list")]
    pub secrets: Vec<String>,
    /// Per-queue secrets (`COURIER__SIGNING__QUEUES__PAYMENTS=whsec_a,whsec_b`), used
    /// instead of the global ones for that queue.
    #[serde(deserialize_with = "string_list_map")]
    pub queues: std::collections::BTreeMap<String, Vec<String>>,
}

/// Encryption of secret header values at rest.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretSettings {
    /// 32 bytes, base64: encrypts secret header values (AES-256-GCM) before they are
    /// stored. Required by the API and the worker.
    pub encryption_key: String,
    /// Earlier keys, still used to decrypt during a rotation.
    #[serde(deserialize_with = "string_list")]
    pub previous_encryption_keys: Vec<String>,
}

/// Log format and filter.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetrySettings {
    /// `json` (production) or `pretty` (development).
    pub format: LogFormat,
    /// An `EnvFilter` directive, overridden by `RUST_LOG` when set.
    pub filter: String,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Json,
    Pretty,
}

/// `COURIER__SECTION__KEY` variables.
fn environment() -> Environment {
    Environment::with_prefix("COURIER")
        .prefix_separator("__")
        .separator("__")
        .list_separator(",")
        .with_list_parse_key("worker.queues")
        .with_list_parse_key("redis.sentinels")
        .with_list_parse_key("redis.nodes")
        .with_list_parse_key("outbound.allow")
        .with_list_parse_key("signing.secrets")
        .with_list_parse_key("secrets.previous_encryption_keys")
        .try_parsing(true)
}

impl Settings {
    /// Loads the layers from the process environment, and checks them.
    ///
    /// # Errors
    /// A file that cannot be read, a value of the wrong type, or one that cannot work.
    pub fn load() -> Result<Self, SettingsError> {
        let settings = Self::load_unchecked()?;
        settings.validate()?;
        Ok(settings)
    }

    fn load_unchecked() -> Result<Self, ConfigError> {
        let mut builder =
            Config::builder().add_source(File::from_str(DEFAULTS, config::FileFormat::Toml));
        if let Ok(path) = std::env::var("COURIER_CONFIG") {
            builder = builder.add_source(File::with_name(&path));
        }
        builder = builder.add_source(environment());
        if let Ok(url) = std::env::var("DATABASE_URL") {
            builder = builder.set_override("database.url", url)?;
        }
        if let Ok(url) = std::env::var("REDIS_URL") {
            builder = builder.set_override("redis.url", url)?;
        }
        builder.build()?.try_deserialize()
    }

    /// The built-in defaults alone.
    pub fn defaults() -> Self {
        Config::builder()
            .add_source(File::from_str(DEFAULTS, config::FileFormat::Toml))
            .build()
            .and_then(Config::try_deserialize)
            .expect("built-in defaults are valid")
    }
}

impl WorkerSettings {
    pub fn lease(&self) -> Duration {
        Duration::from_millis(self.lease_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_env(vars: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let source: std::collections::HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::builder()
            .add_source(File::from_str(DEFAULTS, config::FileFormat::Toml))
            .add_source(environment().source(Some(source)))
            .build()?
            .try_deserialize()
    }

    #[test]
    fn environment_variables_override_defaults() {
        let s = with_env(&[
            ("COURIER__WORKER__CONCURRENCY", "1000"),
            ("COURIER__TELEMETRY__FORMAT", "pretty"),
        ])
        .unwrap();
        assert_eq!(s.worker.concurrency, 1000);
        assert_eq!(s.telemetry.format, LogFormat::Pretty);
        assert_eq!(s.worker.lease_ms, 15_000);
    }

    #[test]
    fn queue_lists_drop_empty_names_and_keep_numeric_ones() {
        assert!(
            with_env(&[("COURIER__WORKER__QUEUES", "")])
                .unwrap()
                .worker
                .queues
                .is_empty()
        );
        let s = with_env(&[("COURIER__WORKER__QUEUES", "mail,123, reports")]).unwrap();
        let names: Vec<&str> = s.worker.queues.iter().map(QueueName::as_str).collect();
        assert_eq!(names, ["mail", "123", "reports"]);
        let bad = with_env(&[("COURIER__WORKER__QUEUES", "mail,Bad Name")]).unwrap_err();
        assert!(bad.to_string().contains("worker.queues"), "{bad}");
    }

    #[test]
    fn security_lists_come_from_the_environment() {
        let s = with_env(&[
            ("COURIER__OUTBOUND__ALLOW", "127.0.0.1/32, ::1/128"),
            ("COURIER__SIGNING__SECRETS", "whsec_a,whsec_b"),
            ("COURIER__SIGNING__QUEUES__PAYMENTS", "whsec_c"),
        ])
        .unwrap();
        assert_eq!(s.outbound.allow, ["127.0.0.1/32", "::1/128"]);
        assert_eq!(s.signing.secrets, ["whsec_a", "whsec_b"]);
        assert_eq!(s.signing.queues["payments"], ["whsec_c"]);
        assert!(s.auth.enabled);
    }

    #[test]
    fn defaults_load() {
        assert_eq!(Settings::defaults().server.port, 8080);
        Settings::defaults().validate().unwrap();
    }

    #[test]
    fn values_that_cannot_work_are_refused_by_name() {
        let refused =
            |vars: &[(&str, &str)]| with_env(vars).unwrap().validate().unwrap_err().to_string();
        let e = refused(&[("COURIER__WORKER__CONCURRENCY", "0")]);
        assert!(
            e.contains("worker.concurrency") && e.contains("COURIER__WORKER__CONCURRENCY"),
            "{e}"
        );
        assert!(refused(&[("COURIER__WORKER__LEASE_MS", "200")]).contains("worker.lease_ms"));
        assert!(refused(&[("COURIER__WORKER__FETCH_BATCH", "0")]).contains("worker.fetch_batch"));
        assert!(refused(&[("COURIER__REDIS__PREFIX", "a{b}")]).contains("redis.prefix"));
        assert!(refused(&[("COURIER__REDIS__CLUSTER", "true")]).contains("redis.nodes"));
        assert!(
            refused(&[
                ("COURIER__REDIS__CLUSTER", "true"),
                ("COURIER__REDIS__NODES", "redis://a:6379"),
                ("COURIER__REDIS__SENTINELS", "redis://s:26379"),
            ])
            .contains("redis.sentinels")
        );
    }

    #[test]
    fn cluster_nodes_come_from_the_environment() {
        let s = with_env(&[
            ("COURIER__REDIS__CLUSTER", "true"),
            ("COURIER__REDIS__NODES", "redis://a:6379,redis://b:6379"),
        ])
        .unwrap();
        assert!(s.redis.cluster);
        assert_eq!(s.redis.nodes, ["redis://a:6379", "redis://b:6379"]);
        s.validate().unwrap();
    }

    #[test]
    fn debug_output_never_shows_a_secret() {
        let s = with_env(&[
            (
                "COURIER__DATABASE__URL",
                "postgres://courier:pg-hunter2@db:5432/courier",
            ),
            ("COURIER__REDIS__URL", "redis://:redis-hunter2@redis:6379"),
            ("COURIER__SECRETS__ENCRYPTION_KEY", "key-hunter2"),
            ("COURIER__SIGNING__SECRETS", "whsec_hunter2"),
            ("COURIER__SIGNING__QUEUES__PAYMENTS", "whsec_q-hunter2"),
        ])
        .unwrap();
        let shown = format!("{s:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(
            shown.contains("postgres://courier:[redacted]@db:5432/courier"),
            "{shown}"
        );
    }
}
