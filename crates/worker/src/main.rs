//! `courier-worker`: runs until SIGTERM or Ctrl-C, then shuts down gracefully.

use anyhow::Context;
use courier_core::{Settings, telemetry};
use courier_worker::Worker;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = Settings::load().context("loading settings")?;
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
