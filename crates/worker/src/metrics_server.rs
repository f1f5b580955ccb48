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
    /// Where this server listens (which may not be `worker.metrics_port`: see [`bind`]).
    addr: Option<std::net::SocketAddr>,
}

/// Ports tried after a taken `worker.metrics_port`, one after another, before any free
/// port: several workers on one host (systemd instances, a shell) get 9464, 9465, 9466
/// and so on, in the order they started, which a Prometheus scrape list can name.
pub const NEXT_PORTS: u16 = 63;

/// Binds the listener, logging the address. A worker exists to run jobs, so a taken port
/// does not stop it: the next free one of the [`NEXT_PORTS`] after it is used (or, when
/// all are taken, any free port), with a warning naming both; `/readyz` shows it too.
///
/// # Errors
/// The address cannot be bound for another reason than a taken port (a host name that
/// does not resolve, an address not on this host).
pub async fn bind(host: &str, port: u16) -> std::io::Result<TcpListener> {
    let mut tries = (0..=NEXT_PORTS)
        .filter_map(|n| port.checked_add(n))
        .take_while(|_| port != 0)
        .chain([0]);
    let listener = loop {
        let next = tries.next().expect("the list ends with port 0");
        match TcpListener::bind((host, next)).await {
            Ok(listener) => break listener,
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && next != 0 => continue,
            Err(e) => return Err(e),
        }
    };
    let addr = listener.local_addr()?;
    if port != 0 && addr.port() != port {
        tracing::warn!(
            %addr,
            "worker.metrics_port {port} on {host} is taken (another worker on this host?); \
             serving /metrics, /healthz and /readyz on port {} instead",
            addr.port()
        );
    } else {
        tracing::info!(%addr, "worker metrics at /metrics");
    }
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
    let addr = listener.local_addr().ok();
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(Probe { ctx, db, addr });
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
        "worker": probe.ctx.worker,
        "metrics_port": probe.addr.map(|a| a.port()),
    });
    let status = if redis && postgres {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body)).into_response()
}
