//! `api_keys`: who may call the `/v1` API. A key is shown once when created; only its
//! SHA-256 is stored.

use chrono::{DateTime, Utc};
use rand::RngCore;
use sha2::{Digest, Sha256};
use sqlx::PgExecutor;
use uuid::Uuid;

use super::RepoError;

/// Every key starts with this, so a leaked one is easy to recognise (and to scan for).
pub const KEY_PREFIX: &str = "courier_";
/// Characters of a key shown by `keys list`.
const SHOWN_CHARS: usize = KEY_PREFIX.len() + 8;

/// What a key may do; each scope includes the ones below it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    /// Read jobs, executions and queues.
    Read,
    /// Also submit, cancel and retry jobs.
    Write,
    /// Everything, on every queue.
    Admin,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Write => "write",
            Self::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "read" => Some(Self::Read),
            "write" => Some(Self::Write),
            "admin" => Some(Self::Admin),
            _ => None,
        }
    }
}

/// A key as `keys list` shows it, and as the API authorises with it.
#[derive(Debug, Clone)]
pub struct ApiKey {
    pub id: Uuid,
    pub name: String,
    /// The key's first characters.
    pub prefix: String,
    pub scope: Scope,
    /// `None`: every queue.
    pub queues: Option<Vec<String>>,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// A row of `api_keys` as read back; the CHECK constraint keeps `scope` one of the three.
struct KeyRow {
    id: Uuid,
    name: String,
    prefix: String,
    scope: String,
    queues: Option<Vec<String>>,
    created_at: DateTime<Utc>,
    last_used_at: Option<DateTime<Utc>>,
    revoked_at: Option<DateTime<Utc>>,
}

impl From<KeyRow> for ApiKey {
    fn from(r: KeyRow) -> Self {
        Self {
            id: r.id,
            name: r.name,
            prefix: r.prefix,
            scope: Scope::parse(&r.scope).unwrap_or(Scope::Read),
            queues: r.queues,
            created_at: r.created_at,
            last_used_at: r.last_used_at,
            revoked_at: r.revoked_at,
        }
    }
}

/// A fresh key: the secret to show once, and its stored description.
pub struct CreatedKey {
    pub secret: String,
    pub key: ApiKey,
}

/// The stored form of a presented key.
pub fn hash_key(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// Makes a key of 256 random bits and stores its hash.
///
/// # Errors
/// The database refusing the insert (for example an empty name).
pub async fn create_key(
    db: impl PgExecutor<'_>,
    name: &str,
    scope: Scope,
    queues: Option<Vec<String>>,
) -> Result<CreatedKey, RepoError> {
    let mut random = [0u8; 32];
    rand::rng().fill_bytes(&mut random);
    let secret = format!("{KEY_PREFIX}{}", hex::encode(random));
    let id = Uuid::now_v7();
    let prefix = secret[..SHOWN_CHARS].to_owned();
    let created_at = sqlx::query_scalar!(
        r#"INSERT INTO api_keys (id, name, prefix, hash, scope, queues)
           VALUES ($1, $2, $3, $4, $5, $6) RETURNING created_at"#,
        id,
        name,
        prefix,
        &hash_key(&secret)[..],
        scope.as_str(),
        queues.as_deref(),
    )
    .fetch_one(db)
    .await?;
    Ok(CreatedKey {
        secret,
        key: ApiKey {
            id,
            name: name.to_owned(),
            prefix,
            scope,
            queues,
            created_at,
            last_used_at: None,
            revoked_at: None,
        },
    })
}

/// The unrevoked key with this hash, marking it used.
///
/// # Errors
/// The database being unreachable.
pub async fn authenticate(
    db: impl PgExecutor<'_>,
    hash: &[u8; 32],
) -> Result<Option<ApiKey>, RepoError> {
    let row = sqlx::query_as!(
        KeyRow,
        r#"UPDATE api_keys SET last_used_at = now()
           WHERE hash = $1 AND revoked_at IS NULL
           RETURNING id, name, prefix, scope, queues, created_at, last_used_at, revoked_at"#,
        &hash[..],
    )
    .fetch_optional(db)
    .await?;
    Ok(row.map(ApiKey::from))
}

/// Every key, newest first.
///
/// # Errors
/// The database being unreachable.
pub async fn list_keys(db: impl PgExecutor<'_>) -> Result<Vec<ApiKey>, RepoError> {
    let rows = sqlx::query_as!(
        KeyRow,
        r#"SELECT id, name, prefix, scope, queues, created_at, last_used_at, revoked_at
           FROM api_keys ORDER BY created_at DESC, id DESC"#
    )
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(ApiKey::from).collect())
}

/// Revokes the key with this id or this shown prefix; how many keys were revoked.
///
/// # Errors
/// The database being unreachable.
pub async fn revoke_key(db: impl PgExecutor<'_>, id_or_prefix: &str) -> Result<u64, RepoError> {
    let id = Uuid::parse_str(id_or_prefix).ok();
    let done = sqlx::query!(
        r#"UPDATE api_keys SET revoked_at = now()
           WHERE revoked_at IS NULL AND (id = $1 OR prefix = $2)"#,
        id,
        id_or_prefix,
    )
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_are_ordered_and_round_trip() {
        assert!(Scope::Admin > Scope::Write && Scope::Write > Scope::Read);
        for s in [Scope::Read, Scope::Write, Scope::Admin] {
            assert_eq!(Scope::parse(s.as_str()), Some(s));
        }
        assert_eq!(Scope::parse("root"), None);
    }

    #[test]
    fn hashes_differ_per_key() {
        assert_ne!(hash_key("courier_a"), hash_key("courier_b"));
        assert_eq!(hash_key("courier_a"), hash_key("courier_a"));
    }
}
