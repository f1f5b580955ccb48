//! Liveness, readiness, and this process's Prometheus metrics: none needs an API key.

use axum::{
    Json, Router,
    extract::State,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use courier_core::db;
use serde::Serialize;
use utoipa::ToSchema;

use crate::{error::problem_response, state::AppState};

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
}

/// The process is alive.
#[utoipa::path(get, path = "/healthz", tag = "health", responses((status = 200, description = "Alive")))]
pub async fn healthz() -> &'static str {
    "ok"
}

/// What readiness found.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReadyChecks {
    pub redis: String,
    pub postgres: String,
    pub migrations: String,
    pub redis_eviction_policy: String,
}

/// Redis and PostgreSQL reachable, migrations applied, Redis safe from eviction.
#[utoipa::path(get, path = "/readyz", tag = "health",
    responses((status = 200, body = ReadyChecks), (status = 503, description = "What is missing", body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn readyz(State(state): State<AppState>) -> Response {
    let (redis, policy) = match state.queue.ping().await {
        Ok(()) => {
            let policy = match state.queue.config_get("maxmemory-policy").await {
                Ok(Some(p)) if p == "noeviction" => "ok".to_owned(),
                Ok(Some(p)) => format!(
                    "maxmemory-policy is {p}; Courier needs noeviction or jobs can be evicted"
                ),
                Ok(None) | Err(_) => "unknown (CONFIG GET not allowed)".to_owned(),
            };
            ("ok".to_owned(), policy)
        }
        Err(e) => (format!("unreachable: {e}"), "unknown".to_owned()),
    };
    let (postgres, migrations) = match db::migrations_applied(&state.db).await {
        Ok(true) => ("ok".to_owned(), "ok".to_owned()),
        Ok(false) => (
            "ok".to_owned(),
            "pending: run `courier-api migrate`".to_owned(),
        ),
        Err(e) => (format!("unreachable: {e}"), "unknown".to_owned()),
    };
    let checks = ReadyChecks {
        redis,
        postgres,
        migrations,
        redis_eviction_policy: policy,
    };
    let failing: Vec<String> = [
        ("redis", &checks.redis),
        ("postgres", &checks.postgres),
        ("migrations", &checks.migrations),
        ("redis_eviction_policy", &checks.redis_eviction_policy),
    ]
    .into_iter()
    .filter(|(name, value)| {
        value.as_str() != "ok"
            && !(*name == "redis_eviction_policy" && value.starts_with("unknown"))
    })
    .map(|(name, value)| format!("{name}: {value}"))
    .collect();
    if failing.is_empty() {
        (StatusCode::OK, Json(checks)).into_response()
    } else {
        problem_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "not-ready",
            failing.join("; "),
            vec![],
        )
    }
}

/// Prometheus metrics of this process (text exposition format).
#[utoipa::path(get, path = "/metrics", tag = "health",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
pub async fn metrics() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        courier_core::metrics::render(),
    )
        .into_response()
}
