//! API keys on every `/v1` route: `Authorization: Bearer <key>`, looked up by its SHA-256,
//! checked against the route's scope (`GET` needs `read`, everything else `write`), then
//! rate-limited per key. Handlers see the result as a [`Caller`], which also answers
//! whether the key may touch a queue, and names the key in the audit log.
//!
//! The dashboard signs in once (`POST /ui/session`) and then sends its session cookie
//! instead of a key. A cookie is sent by the browser on its own, so a cookie-authorised
//! request that changes anything must also carry the session's `X-CSRF-Token`, or it is
//! refused with 403 before it has any effect.

use std::{
    collections::HashMap,
    num::NonZeroU32,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    extract::{FromRequestParts, Request, State},
    http::{HeaderMap, Method, header, request::Parts},
    middleware::Next,
    response::{IntoResponse, Response},
};
use courier_core::{
    repo::{
        audit::AuditEntry,
        keys::{self, ApiKey, Scope},
        sessions,
    },
    settings::AuthSettings,
};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter, clock::Clock};
use sqlx::PgPool;
use uuid::Uuid;

use crate::error::ApiError;

/// How long a key found in PostgreSQL is trusted without looking again: a revoked key
/// stops working within this time.
pub const KEY_CACHE_TTL: Duration = Duration::from_secs(5);
/// Past this age a cached key is looked up again in the background while it keeps
/// serving, so a busy key never expires and never makes its requests wait.
const KEY_REFRESH_AFTER: Duration = Duration::from_millis(2500);
/// Past this many cached keys the cache starts over (keys are few; this bounds a flood).
const KEY_CACHE_MAX: usize = 10_000;

/// A key found in PostgreSQL.
struct Cached {
    found: Instant,
    key: Arc<ApiKey>,
    /// Set while a background refresh of this entry runs.
    refreshing: bool,
}

/// Keys found recently, by their hash.
type KeyCache = Arc<Mutex<HashMap<[u8; 32], Cached>>>;

/// Looks keys up (with a short cache) and limits each key's rate.
pub struct Authenticator {
    enabled: bool,
    cache: KeyCache,
    /// Serialises lookups that must wait (a key not in the cache), so many requests of
    /// one new key make one query rather than one each.
    lookup: tokio::sync::Mutex<()>,
    limiter: Option<DefaultKeyedRateLimiter<Uuid>>,
}

impl Authenticator {
    pub fn new(settings: &AuthSettings) -> Self {
        if !settings.enabled {
            tracing::warn!(
                "authentication is OFF (auth.enabled = false): anyone who can reach this API \
                 can submit, read and cancel jobs"
            );
        }
        let limiter = NonZeroU32::new(settings.rate_limit_per_second).map(|rate| {
            let burst = NonZeroU32::new(settings.rate_limit_burst).unwrap_or(rate);
            RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst))
        });
        Self {
            enabled: settings.enabled,
            cache: Arc::default(),
            lookup: tokio::sync::Mutex::new(()),
            limiter,
        }
    }

    /// The unrevoked key behind `secret`, from the cache or PostgreSQL.
    async fn find(&self, db: &PgPool, secret: &str) -> Result<Option<Arc<ApiKey>>, ApiError> {
        let hash = keys::hash_key(secret);
        if let Some(key) = self.cached(db, &hash) {
            return Ok(Some(key));
        }
        let _one_at_a_time = self.lookup.lock().await;
        if let Some(key) = self.cached(db, &hash) {
            return Ok(Some(key));
        }
        Ok(look_up(&self.cache, db, &hash).await?)
    }

    /// A cached key young enough to trust, starting its refresh when it is getting old.
    fn cached(&self, db: &PgPool, hash: &[u8; 32]) -> Option<Arc<ApiKey>> {
        let mut cache = self.cache.lock().expect("key cache");
        let entry = cache.get_mut(hash)?;
        let age = entry.found.elapsed();
        if age >= KEY_CACHE_TTL {
            return None;
        }
        if age >= KEY_REFRESH_AFTER && !entry.refreshing {
            entry.refreshing = true;
            let (cache, db, hash) = (self.cache.clone(), db.clone(), *hash);
            tokio::spawn(async move {
                if let Err(e) = look_up(&cache, &db, &hash).await {
                    tracing::warn!(error = %e, "refreshing an API key failed");
                    if let Some(entry) = cache.lock().expect("key cache").get_mut(&hash) {
                        entry.refreshing = false;
                    }
                }
            });
        }
        Some(entry.key.clone())
    }

    /// `Err(seconds to wait)` when the key is over its rate.
    fn admit(&self, key: Uuid) -> Result<(), u64> {
        let Some(limiter) = &self.limiter else {
            return Ok(());
        };
        limiter.check_key(&key).map_err(|not_until| {
            let wait = not_until.wait_time_from(limiter.clock().now());
            wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
        })
    }
}

/// Who is calling: the key, or nobody in particular when authentication is off.
#[derive(Clone)]
pub struct Caller {
    key: Option<Arc<ApiKey>>,
}

impl Caller {
    /// The audit log's entry for a change this caller made.
    pub fn audit(
        &self,
        action: &'static str,
        target: serde_json::Value,
        count: Option<i64>,
    ) -> AuditEntry {
        AuditEntry {
            key_id: self.key.as_ref().map(|k| k.id),
            key_name: self.key.as_ref().map(|k| k.name.clone()),
            action,
            target: Some(target),
            count,
            details: None,
        }
    }

    /// Whether this caller may see and change jobs of `queue`.
    pub fn may_use(&self, queue: &str) -> bool {
        match self.key.as_deref().and_then(|k| k.queues.as_deref()) {
            None => true,
            Some(allowed) => allowed.iter().any(|q| q == queue),
        }
    }

    /// 403 unless this caller may use `queue`.
    ///
    /// # Errors
    /// A key limited to other queues.
    pub fn check_queue(&self, queue: &str) -> Result<(), ApiError> {
        if self.may_use(queue) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!(
                "this API key may not use queue {queue:?}"
            )))
        }
    }

    /// 403 unless this caller's key has the `admin` scope (or authentication is off):
    /// operators' changes (a queue's pause and limits, flow keys) need it.
    ///
    /// # Errors
    /// A key of a lower scope.
    pub fn check_admin(&self, what: &str) -> Result<(), ApiError> {
        match self.key.as_deref() {
            Some(key) if key.scope < Scope::Admin => Err(ApiError::Forbidden(format!(
                "{what} needs an API key of scope \"admin\"; this one has {:?}",
                key.scope.as_str()
            ))),
            _ => Ok(()),
        }
    }

    /// The queues this caller is limited to, if it is.
    pub fn queues(&self) -> Option<&[String]> {
        self.key.as_deref().and_then(|k| k.queues.as_deref())
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        parts.extensions.get::<Caller>().cloned().ok_or_else(|| {
            ApiError::Internal(anyhow::anyhow!(
                "a /v1 handler ran without the authentication middleware"
            ))
        })
    }
}

/// What the middleware reads: the keys (and their cache and rate limits), and the
/// database that holds them and the dashboard's sessions.
#[derive(Clone)]
pub struct AuthState {
    pub auth: Arc<Authenticator>,
    pub db: PgPool,
}

/// The middleware: every path under `/v1` needs a key of the right scope.
pub async fn authenticate(
    State(state): State<AuthState>,
    mut req: Request,
    next: Next,
) -> Response {
    let path = req.uri().path();
    if path != "/v1" && !path.starts_with("/v1/") {
        return next.run(req).await;
    }
    // Only the parts authorisation needs: a request body is not `Sync`, so a reference to
    // the whole request cannot be held across the key lookup.
    let wanted = Wanted {
        secret: bearer(req.headers()).map(str::to_owned),
        session: session_cookie(req.headers()).map(str::to_owned),
        csrf: req
            .headers()
            .get(CSRF_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        method: req.method().clone(),
        path: path.to_owned(),
    };
    match authorise(&state, wanted).await {
        Ok(caller) => {
            req.extensions_mut().insert(caller);
            next.run(req).await
        }
        Err(e) => e.into_response(),
    }
}

/// The dashboard's session cookie.
pub const SESSION_COOKIE: &str = "courier_session";
/// The header that carries a session's CSRF token.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// What a request asks for.
struct Wanted {
    secret: Option<String>,
    session: Option<String>,
    csrf: Option<String>,
    method: Method,
    path: String,
}

async fn authorise(state: &AuthState, req: Wanted) -> Result<Caller, ApiError> {
    let auth = &state.auth;
    if !auth.enabled {
        return Ok(Caller { key: None });
    }
    let reads = matches!(req.method, Method::GET | Method::HEAD);
    let key = match (req.secret, req.session) {
        (Some(secret), _) => auth
            .find(&state.db, &secret)
            .await?
            .ok_or(ApiError::Unauthorized("this key is unknown or revoked"))?,
        (None, Some(session)) => {
            let (key, csrf) =
                sessions::find(&state.db, &session)
                    .await?
                    .ok_or(ApiError::Unauthorized(
                        "the session has ended; sign in again",
                    ))?;
            if !reads && !same_secret(req.csrf.as_deref().unwrap_or(""), &csrf) {
                return Err(ApiError::Forbidden(
                    "a change made with a session cookie needs the session's X-CSRF-Token header"
                        .into(),
                ));
            }
            Arc::new(key)
        }
        (None, None) => return Err(ApiError::Unauthorized("none was sent")),
    };
    auth.admit(key.id).map_err(ApiError::RateLimited)?;
    let needed = if reads { Scope::Read } else { Scope::Write };
    if key.scope < needed {
        return Err(ApiError::Forbidden(format!(
            "this API key has scope {:?}; {} {} needs {:?} or above",
            key.scope.as_str(),
            req.method,
            req.path,
            needed.as_str()
        )));
    }
    Ok(Caller { key: Some(key) })
}

/// Whether two secrets are equal, in time that does not depend on where they differ.
pub fn same_secret(a: &str, b: &str) -> bool {
    use sha2::{Digest, Sha256};
    // Equal digests of equal length inputs; comparing digests leaks nothing of the token.
    Sha256::digest(a.as_bytes()) == Sha256::digest(b.as_bytes()) && !b.is_empty()
}

/// The dashboard session's secret from the `Cookie` header.
pub fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, value)| *name == SESSION_COOKIE && !value.is_empty())
        .map(|(_, value)| value)
}

/// Looks up a key by its secret, for signing in to the dashboard.
///
/// # Errors
/// PostgreSQL unreachable.
pub async fn key_for_sign_in(
    state: &AuthState,
    secret: &str,
) -> Result<Option<Arc<ApiKey>>, ApiError> {
    state.auth.find(&state.db, secret).await
}

/// The key of an `Authorization: Bearer <key>` header.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, key) = value.trim().split_once(' ')?;
    let key = key.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !key.is_empty()).then_some(key)
}

/// Looks the key up in PostgreSQL (marking it used) and caches what it finds.
async fn look_up(
    cache: &KeyCache,
    db: &PgPool,
    hash: &[u8; 32],
) -> Result<Option<Arc<ApiKey>>, courier_core::repo::RepoError> {
    let found = keys::authenticate(db, hash).await?.map(Arc::new);
    let mut cache = cache.lock().expect("key cache");
    match &found {
        None => {
            cache.remove(hash);
        }
        Some(key) => {
            if cache.len() >= KEY_CACHE_MAX {
                cache.clear();
            }
            cache.insert(
                *hash,
                Cached {
                    found: Instant::now(),
                    key: key.clone(),
                    refreshing: false,
                },
            );
        }
    }
    Ok(found)
}
