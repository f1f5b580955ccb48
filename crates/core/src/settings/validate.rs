//! Settings that load but cannot work, refused at start with the setting named.

use config::ConfigError;

use super::Settings;

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
