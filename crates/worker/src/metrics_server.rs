//! The worker's own small HTTP server (`worker.metrics_host`, `worker.metrics_port`):
//! `/metrics` for Prometheus, `/healthz` (alive) and `/readyz` (Redis and PostgreSQL
//! reachable) for Kubernetes' probes. It also keeps this worker's load gauges current.

use std::{sync::Arc, time::Duration};

use axum::{
    Router,
    extract::State,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::execute::Context;

/// How often the load gauges (calls in flight, records buffered) are set.
const LOAD_EVERY: Duration = Duration::from_secs(1);

#[derive(Clone)]
struct Probe {
    ctx: Arc<Context>,
    db: sqlx::PgPool,
}

/// Binds the listener (so that a taken port fails at start), logging the port.
///
/// # Errors
/// The address cannot be bound.
pub async fn bind(host: &str, port: u16) -> std::io::Result<TcpListener> {
    let listener = TcpListener::bind((host, port)).await?;
    tracing::info!(addr = %listener.local_addr()?, "worker metrics at /metrics");
    Ok(listener)
}

/// Serves until `stop`, and sets the load gauges meanwhile.
pub async fn serve(
    listener: TcpListener,
    ctx: Arc<Context>,
    db: sqlx::PgPool,
    stop: CancellationToken,
) {
    let gauges = {
        let (ctx, stop) = (ctx.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                courier_core::metrics::worker_load(ctx.inflight.len(), ctx.history.buffered());
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(LOAD_EVERY) => {}
                }
            }
        })
    };
    let status = courier_core::metrics::StatusLoop {
        db: db.clone(),
        queue: ctx.queue.clone(),
        depths: false,
    }
    .spawn(stop.clone());
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(Probe { ctx, db });
    let stopping = stop.clone();
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(async move { stopping.cancelled().await })
        .await
    {
        tracing::error!(error = %e, "the worker's metrics server failed");
    }
    let _ = gauges.await;
    let _ = status.await;
}

async fn metrics() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        courier_core::metrics::render(),
    )
        .into_response()
}

async fn readyz(State(probe): State<Probe>) -> Response {
    let redis = probe.ctx.queue.ping().await.is_ok();
    let postgres = sqlx::query("SELECT 1").execute(&probe.db).await.is_ok();
    let body = serde_json::json!({
        "redis": if redis { "ok" } else { "unreachable" },
        "postgres": if postgres { "ok" } else { "unreachable" },
    });
    let status = if redis && postgres {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body)).into_response()
}
