//! `courier-worker`: runs until SIGTERM or Ctrl-C, then shuts down gracefully.
//! `courier-worker healthcheck`: exits 0 when the worker on this host's
//! `worker.metrics_port` is ready (its `/readyz`: Redis and PostgreSQL reachable), 1
//! otherwise; the container health check of `docker-compose.yml` and `Dockerfile.worker`.

use anyhow::Context;
use courier_core::{Settings, telemetry};
use courier_worker::Worker;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = Settings::load().context("loading settings")?;
    match std::env::args().nth(1).as_deref() {
        None => {}
        Some("healthcheck") => {
            let port = settings.worker.metrics_port;
            let ok = port != 0
                && courier_core::probe::answers_ok(
                    port,
                    "/readyz",
                    std::time::Duration::from_secs(3),
                )
                .await;
            std::process::exit(if ok { 0 } else { 1 })
        }
        Some(other) => {
            anyhow::bail!("unknown argument {other:?}; usage: courier-worker [healthcheck]")
        }
    }
    telemetry::init(&settings.telemetry);
    let worker = Worker::build(settings).await?;
    worker.run_until_stopped(shutdown_signal()).await
}

async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
}
