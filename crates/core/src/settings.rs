//! Settings in layers: built-in defaults, an optional file named by `COURIER_CONFIG`,
//! then `COURIER__SECTION__KEY` environment variables. `DATABASE_URL` and `REDIS_URL`
//! are honoured as the usual shortcuts.

use std::time::Duration;

use config::{Config, ConfigError, Environment, File};
use serde::Deserialize;

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
    pub public_url: String,
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
    pub queues: Vec<String>,
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

const DEFAULTS: &str = r#"
[server]
host = "0.0.0.0"
port = 8080
max_request_bytes = 2_097_152
max_batch_request_bytes = 67_108_864
max_batch_jobs = 1000
migrate_on_start = true
shutdown_grace_ms = 30_000
dispatch_interval_ms = 1000
public_url = ""
progress_per_second = 10

[database]
url = "postgres://postgres@127.0.0.1:5432/courier"
max_connections = 16
connect_timeout_ms = 5000

[redis]
url = "redis://127.0.0.1:6379"
prefix = "courier"
pool_size = 4
command_timeout_ms = 5000
sentinels = []
sentinel_master = "courier"
cluster = false
nodes = []
missing_check_ms = 3000

[jobs]
max_timeout_ms = 900_000
max_body_bytes = 1_048_576
max_headers = 64
max_header_bytes = 16_384

[worker]
concurrency = 512
queues = []
lease_ms = 15_000
fetch_batch = 500
shutdown_grace_ms = 100_000
idle_poll_ms = 1000
history_batch = 1000
history_buffer = 100_000
name = ""
metrics_host = "0.0.0.0"
metrics_port = 9464

[retention]
succeeded_hours = 168
dead_hours = 720
sweep_interval_ms = 60_000
partition_ahead_days = 3

[telemetry]
format = "json"
filter = "info"

[auth]
enabled = true
rate_limit_per_second = 20_000
rate_limit_burst = 40_000

[outbound]
allow = []
max_response_bytes = 65_536
ca_file = ""

[signing]
secrets = []
queues = {}

[secrets]
encryption_key = ""
previous_encryption_keys = []

[scheduler]
enabled = true
misfire_grace_ms = 10_000
batch = 200
"#;

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

/// A comma-separated list from the environment: `COURIER__WORKER__QUEUES=` means none
/// (not one empty name), and a name of digits alone stays a name.
fn queue_list<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Name {
        Text(String),
        Number(u64),
    }
    let names = Vec::<Name>::deserialize(deserializer)?;
    Ok(names
        .into_iter()
        .map(|n| match n {
            Name::Text(t) => t.trim().to_owned(),
            Name::Number(n) => n.to_string(),
        })
        .filter(|n| !n.is_empty())
        .collect())
}

/// A list given as a TOML array or as one comma-separated string (from the environment).
fn string_list<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    Ok(split_list(StringOrList::deserialize(deserializer)?))
}

/// A map whose values are lists, each given either way.
fn string_list_map<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<std::collections::BTreeMap<String, Vec<String>>, D::Error> {
    let map = std::collections::BTreeMap::<String, StringOrList>::deserialize(deserializer)?;
    Ok(map.into_iter().map(|(k, v)| (k, split_list(v))).collect())
}

#[derive(Deserialize)]
#[serde(untagged)]
enum StringOrList {
    One(String),
    Many(Vec<String>),
}

fn split_list(value: StringOrList) -> Vec<String> {
    let items = match value {
        StringOrList::One(s) => s.split(',').map(str::to_owned).collect(),
        StringOrList::Many(v) => v,
    };
    items
        .into_iter()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect()
}

impl WorkerSettings {
    pub fn lease(&self) -> Duration {
        Duration::from_millis(self.lease_ms)
    }
}

/// A connection URL with its password (in the user info, or a `password=` parameter)
/// replaced: what `Debug` and logs show of it.
pub fn redact_url(url: &str) -> String {
    let mut shown = url.to_owned();
    if let Some(scheme_end) = url.find("://") {
        let start = scheme_end + 3;
        let rest = &url[start..];
        let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
        if let Some(at) = authority.rfind('@')
            && let Some(colon) = authority[..at].find(':')
        {
            shown = format!(
                "{}[redacted]{}",
                &url[..start + colon + 1],
                &url[start + at..]
            );
        }
    }
    if let Some(p) = shown.find("password=") {
        let value_start = p + "password=".len();
        let value_end = shown[value_start..]
            .find('&')
            .map_or(shown.len(), |e| value_start + e);
        shown.replace_range(value_start..value_end, "[redacted]");
    }
    shown
}

/// What `Debug` shows for secrets: how many there are, never what they are.
struct Hidden(usize);

impl std::fmt::Debug for Hidden {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "[{} redacted]", self.0)
    }
}

impl std::fmt::Debug for DatabaseSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseSettings")
            .field("url", &redact_url(&self.url))
            .field("max_connections", &self.max_connections)
            .field("connect_timeout_ms", &self.connect_timeout_ms)
            .finish()
    }
}

impl std::fmt::Debug for RedisSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisSettings")
            .field("url", &redact_url(&self.url))
            .field("prefix", &self.prefix)
            .field("pool_size", &self.pool_size)
            .field("command_timeout_ms", &self.command_timeout_ms)
            .field(
                "sentinels",
                &self
                    .sentinels
                    .iter()
                    .map(|u| redact_url(u))
                    .collect::<Vec<_>>(),
            )
            .field("sentinel_master", &self.sentinel_master)
            .field("cluster", &self.cluster)
            .field(
                "nodes",
                &self.nodes.iter().map(|u| redact_url(u)).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl std::fmt::Debug for SigningSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let queues: std::collections::BTreeMap<&str, Hidden> = self
            .queues
            .iter()
            .map(|(q, s)| (q.as_str(), Hidden(s.len())))
            .collect();
        f.debug_struct("SigningSettings")
            .field("secrets", &Hidden(self.secrets.len()))
            .field("queues", &queues)
            .finish()
    }
}

impl std::fmt::Debug for SecretSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretSettings")
            .field(
                "encryption_key",
                &Hidden(usize::from(!self.encryption_key.is_empty())),
            )
            .field(
                "previous_encryption_keys",
                &Hidden(self.previous_encryption_keys.len()),
            )
            .finish()
    }
}

/// A setting whose value cannot work: the process stops at start and says which.
#[derive(Debug, thiserror::Error)]
#[error("setting {name} (COURIER__{env}) {problem}")]
pub struct BadSetting {
    pub name: &'static str,
    env: String,
    problem: String,
}

impl BadSetting {
    fn new(name: &'static str, problem: impl Into<String>) -> Self {
        Self {
            name,
            env: name.replace('.', "__").to_ascii_uppercase(),
            problem: problem.into(),
        }
    }
}

/// Why settings could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Bad(#[from] BadSetting),
}

/// The shortest `worker.lease_ms` that works: the heartbeat renews a third of the way
/// through, and a lease much shorter than a second is lost to ordinary scheduling delays.
pub const MIN_LEASE_MS: u64 = 1000;

impl Settings {
    /// Checks every value that cannot work (a zero where at least one is needed, a lease
    /// too short to be renewed).
    ///
    /// # Errors
    /// The first bad setting, by name.
    pub fn validate(&self) -> Result<(), BadSetting> {
        let at_least = |name: &'static str, value: u64, min: u64| {
            if value < min {
                Err(BadSetting::new(
                    name,
                    format!("is {value}; it must be at least {min}"),
                ))
            } else {
                Ok(())
            }
        };
        at_least(
            "server.max_request_bytes",
            self.server.max_request_bytes as u64,
            1024,
        )?;
        at_least(
            "server.max_batch_request_bytes",
            self.server.max_batch_request_bytes as u64,
            1024,
        )?;
        at_least(
            "server.max_batch_jobs",
            self.server.max_batch_jobs as u64,
            1,
        )?;
        at_least(
            "server.dispatch_interval_ms",
            self.server.dispatch_interval_ms,
            10,
        )?;
        at_least(
            "server.progress_per_second",
            u64::from(self.server.progress_per_second),
            1,
        )?;
        if !self.server.public_url.is_empty()
            && crate::domain::TargetUrl::parse(&self.server.public_url).is_err()
        {
            return Err(BadSetting::new(
                "server.public_url",
                "must be an absolute http or https URL (or empty)",
            ));
        }
        if self.redis.cluster && self.redis.nodes.is_empty() {
            return Err(BadSetting::new(
                "redis.nodes",
                "is empty; redis.cluster needs at least one seed node URL",
            ));
        }
        if self.redis.cluster && !self.redis.sentinels.is_empty() {
            return Err(BadSetting::new(
                "redis.sentinels",
                "is set with redis.cluster; a deployment uses Sentinel or Cluster, not both",
            ));
        }
        at_least(
            "database.max_connections",
            u64::from(self.database.max_connections),
            2,
        )?;
        at_least(
            "database.connect_timeout_ms",
            self.database.connect_timeout_ms,
            100,
        )?;
        at_least("redis.pool_size", self.redis.pool_size as u64, 1)?;
        if self.redis.missing_check_ms != 0 {
            at_least("redis.missing_check_ms", self.redis.missing_check_ms, 100)?;
        }
        at_least(
            "redis.command_timeout_ms",
            self.redis.command_timeout_ms,
            100,
        )?;
        if self.redis.prefix.is_empty() || self.redis.prefix.contains(['{', '}']) {
            return Err(BadSetting::new(
                "redis.prefix",
                "must be non-empty and hold no '{' or '}' (they mark Redis Cluster hash tags)",
            ));
        }
        at_least("jobs.max_timeout_ms", self.jobs.max_timeout_ms, 1)?;
        at_least("jobs.max_body_bytes", self.jobs.max_body_bytes as u64, 1)?;
        at_least("jobs.max_headers", self.jobs.max_headers as u64, 1)?;
        at_least(
            "jobs.max_header_bytes",
            self.jobs.max_header_bytes as u64,
            64,
        )?;
        at_least("worker.concurrency", self.worker.concurrency as u64, 1)?;
        at_least("worker.lease_ms", self.worker.lease_ms, MIN_LEASE_MS)?;
        at_least("worker.fetch_batch", self.worker.fetch_batch as u64, 1)?;
        at_least("worker.idle_poll_ms", self.worker.idle_poll_ms, 10)?;
        at_least("worker.history_batch", self.worker.history_batch as u64, 1)?;
        at_least(
            "worker.history_buffer",
            self.worker.history_buffer as u64,
            self.worker.history_batch as u64,
        )?;
        at_least(
            "retention.sweep_interval_ms",
            self.retention.sweep_interval_ms,
            100,
        )?;
        at_least(
            "retention.partition_ahead_days",
            self.retention.partition_ahead_days,
            1,
        )?;
        if self.retention.partition_ahead_days > 366 {
            return Err(BadSetting::new(
                "retention.partition_ahead_days",
                "is above 366; a partition a day is made that far ahead",
            ));
        }
        at_least(
            "outbound.max_response_bytes",
            self.outbound.max_response_bytes as u64,
            1,
        )?;
        if self.auth.rate_limit_per_second > 0 && self.auth.rate_limit_burst == 0 {
            return Err(BadSetting::new(
                "auth.rate_limit_burst",
                "is 0 while auth.rate_limit_per_second is set; it must be at least 1",
            ));
        }
        Ok(())
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
        assert_eq!(s.worker.queues, ["mail", "123", "reports"]);
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
