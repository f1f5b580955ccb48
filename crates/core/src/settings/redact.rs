//! What `Debug` (and so a log line) shows of settings that hold secrets: passwords in
//! URLs replaced, secrets counted but never shown.

use super::{DatabaseSettings, RedisSettings, SecretSettings, SigningSettings};

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
