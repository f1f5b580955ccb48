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
}

/// PostgreSQL connection.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    pub url: String,
    pub max_connections: u32,
    pub connect_timeout_ms: u64,
}

/// Redis connection and key layout.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSettings {
    pub url: String,
    /// Every key Courier writes starts with this prefix.
    pub prefix: String,
    /// Multiplexed connections per process; each carries many commands at once.
    pub pool_size: usize,
    /// Timeout of one Redis command (blocking waits use their own connection).
    pub command_timeout_ms: u64,
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
}

/// Standard Webhooks signing of outgoing calls.
#[derive(Debug, Clone, Deserialize)]
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
#[derive(Debug, Clone, Deserialize)]
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

[database]
url = "postgres://postgres@127.0.0.1:5432/courier"
max_connections = 16
connect_timeout_ms = 5000

[redis]
url = "redis://127.0.0.1:6379"
prefix = "courier"
pool_size = 4
command_timeout_ms = 5000

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

[retention]
succeeded_hours = 168
dead_hours = 720
sweep_interval_ms = 60_000

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

[signing]
secrets = []
queues = {}

[secrets]
encryption_key = ""
previous_encryption_keys = []
"#;

impl Settings {
    /// Loads the layers from the process environment.
    ///
    /// # Errors
    /// A file that cannot be read or a value of the wrong type.
    pub fn load() -> Result<Self, ConfigError> {
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
    }
}
