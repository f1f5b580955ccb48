//! `courier-api [serve|migrate|healthcheck]`.

use anyhow::Context;
use courier_api::Application;
use courier_core::{Settings, db, telemetry};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = Settings::load().context("loading settings")?;
    let command = std::env::args().nth(1).unwrap_or_else(|| "serve".into());
    match command.as_str() {
        "serve" => {
            telemetry::init(&settings.telemetry);
            let app = Application::build(settings).await?;
            tracing::info!(port = app.port(), "courier-api listening");
            app.run_until_stopped(shutdown_signal()).await
        }
        "migrate" => {
            telemetry::init(&settings.telemetry);
            let pool = db::connect_lazy(&settings.database)?;
            db::migrate(&pool).await.context("applying migrations")?;
            tracing::info!("migrations applied");
            Ok(())
        }
        "healthcheck" => {
            let url = format!("http://127.0.0.1:{}/healthz", settings.server.port);
            let ok = healthcheck(&url).await.unwrap_or(false);
            std::process::exit(if ok { 0 } else { 1 })
        }
        other => anyhow::bail!("unknown command {other:?}; expected serve, migrate or healthcheck"),
    }
}

/// A minimal HTTP/1.1 GET, so the container image needs no curl.
async fn healthcheck(url: &str) -> anyhow::Result<bool> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = url
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap_or_default()
        .to_owned();
    let mut stream = tokio::net::TcpStream::connect(&addr).await?;
    stream
        .write_all(
            format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await?;
    Ok(answer.starts_with(b"HTTP/1.1 200"))
}

/// SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! { () = ctrl_c => {}, () = term => {} }
}
