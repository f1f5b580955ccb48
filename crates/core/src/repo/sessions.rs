//! `ui_sessions`: the dashboard's sign-in sessions. The cookie holds a random secret of
//! which only the SHA-256 is stored; a session ends when it expires, when it is signed
//! out, or when its key is revoked.

use chrono::{DateTime, Utc};
use rand::RngCore;
use sqlx::PgExecutor;

use super::{
    RepoError,
    keys::{self, ApiKey},
};

/// A new session: the cookie's secret (shown once) and its CSRF token.
pub struct NewSession {
    pub secret: String,
    pub csrf_token: String,
}

fn random_hex() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// Starts a session for `key` until `expires_at`.
///
/// # Errors
/// PostgreSQL unreachable.
pub async fn create(
    db: impl PgExecutor<'_>,
    key: &ApiKey,
    expires_at: DateTime<Utc>,
) -> Result<NewSession, RepoError> {
    let session = NewSession {
        secret: random_hex(),
        csrf_token: random_hex(),
    };
    sqlx::query!(
        "INSERT INTO ui_sessions (hash, key_id, csrf_token, expires_at) VALUES ($1, $2, $3, $4)",
        &keys::hash_key(&session.secret)[..],
        key.id,
        session.csrf_token,
        expires_at
    )
    .execute(db)
    .await?;
    Ok(session)
}

/// The live session behind `secret`: its key (unrevoked) and CSRF token.
///
/// # Errors
/// PostgreSQL unreachable.
pub async fn find(
    db: impl PgExecutor<'_>,
    secret: &str,
) -> Result<Option<(ApiKey, String)>, RepoError> {
    let row = sqlx::query!(
        r#"SELECT k.id, k.name, k.prefix, k.scope, k.queues, k.created_at, k.last_used_at,
                  k.revoked_at, s.csrf_token
           FROM ui_sessions s JOIN api_keys k ON k.id = s.key_id
           WHERE s.hash = $1 AND s.expires_at > now() AND k.revoked_at IS NULL"#,
        &keys::hash_key(secret)[..]
    )
    .fetch_optional(db)
    .await?;
    Ok(row.map(|r| {
        let key = ApiKey {
            id: r.id,
            name: r.name,
            prefix: r.prefix,
            scope: keys::Scope::parse(&r.scope).unwrap_or(keys::Scope::Read),
            queues: r.queues,
            created_at: r.created_at,
            last_used_at: r.last_used_at,
            revoked_at: r.revoked_at,
        };
        (key, r.csrf_token)
    }))
}

/// Ends the session behind `secret` (signing out), and every expired one.
///
/// # Errors
/// PostgreSQL unreachable.
pub async fn delete(db: impl PgExecutor<'_>, secret: &str) -> Result<(), RepoError> {
    sqlx::query!(
        "DELETE FROM ui_sessions WHERE hash = $1 OR expires_at < now()",
        &keys::hash_key(secret)[..]
    )
    .execute(db)
    .await?;
    Ok(())
}
