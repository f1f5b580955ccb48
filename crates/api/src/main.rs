//! `courier-api [serve|migrate|healthcheck|keys create|list|revoke]`.

use anyhow::Context;
use clap::{Parser, Subcommand};
use courier_api::Application;
use courier_core::{
    QueueName, Settings, db,
    repo::keys::{self, Scope},
    telemetry,
};

/// Courier's REST API, and the commands that manage its database and API keys.
#[derive(Parser)]
#[command(name = "courier-api", version)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the API (the default).
    Serve,
    /// Apply pending migrations and exit.
    Migrate,
    /// Exit 0 when the API on this host's configured port answers /healthz.
    Healthcheck,
    /// Manage API keys.
    #[command(subcommand)]
    Keys(KeysCommand),
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Make a key and print it once (only its hash is stored).
    Create {
        /// A name to tell the key apart in `keys list`.
        #[arg(long)]
        name: String,
        /// admin, write (submit, cancel, retry and read) or read.
        #[arg(long, default_value = "write")]
        scope: String,
        /// Comma-separated queues the key is limited to; every queue when absent.
        #[arg(long, value_delimiter = ',')]
        queues: Option<Vec<String>>,
    },
    /// List every key (never the keys themselves).
    List,
    /// Revoke a key by its id or the prefix `keys list` shows.
    Revoke { id_or_prefix: String },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let settings = Settings::load().context("loading settings")?;
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            telemetry::init(&settings.telemetry);
            let app = Application::build(settings).await?;
            tracing::info!(port = app.port(), "courier-api listening");
            app.run_until_stopped(shutdown_signal()).await
        }
        Command::Migrate => {
            telemetry::init(&settings.telemetry);
            let pool = db::connect_lazy(&settings.database)?;
            db::migrate(&pool).await.context("applying migrations")?;
            tracing::info!("migrations applied");
            Ok(())
        }
        Command::Healthcheck => {
            let ok = courier_core::probe::answers_ok(
                settings.server.port,
                "/healthz",
                std::time::Duration::from_secs(3),
            )
            .await;
            std::process::exit(if ok { 0 } else { 1 })
        }
        Command::Keys(command) => manage_keys(&settings, command).await,
    }
}

async fn manage_keys(settings: &Settings, command: KeysCommand) -> anyhow::Result<()> {
    let pool = db::connect_lazy(&settings.database)?;
    db::migrate(&pool).await.context("applying migrations")?;
    match command {
        KeysCommand::Create {
            name,
            scope,
            queues,
        } => {
            let scope = Scope::parse(&scope)
                .with_context(|| format!("scope {scope:?}: expected admin, write or read"))?;
            if let Some(queues) = &queues {
                anyhow::ensure!(!queues.is_empty(), "--queues needs at least one queue");
                for queue in queues {
                    QueueName::parse(queue)
                        .map_err(|m| anyhow::anyhow!("queue name {queue:?} {m}"))?;
                }
            }
            anyhow::ensure!(
                (1..=200).contains(&name.len()),
                "--name must be 1 to 200 characters"
            );
            let created = keys::create_key(&pool, &name, scope, queues).await?;
            courier_core::repo::audit::record(
                &pool,
                &courier_core::repo::audit::AuditEntry {
                    key_name: Some("(command line)".into()),
                    action: "keys.create",
                    target: Some(
                        serde_json::json!({"id": created.key.id, "name": created.key.name,
                                                    "scope": scope.as_str()}),
                    ),
                    ..Default::default()
                },
            )
            .await?;
            // The key goes to standard output alone, so that it can be captured; where
            // it goes when that is not a terminal, the note says.
            let shown = if std::io::IsTerminal::is_terminal(&std::io::stdout()) {
                "it is shown only now:"
            } else {
                "it is written to standard output, this once only"
            };
            eprintln!(
                "created key {} ({}, scope {}); {shown}",
                created.key.id,
                created.key.name,
                scope.as_str()
            );
            println!("{}", created.secret);
        }
        KeysCommand::List => {
            println!("id\tprefix\tname\tscope\tqueues\tcreated\tlast used\trevoked");
            for key in keys::list_keys(&pool).await? {
                let when = |t: Option<chrono::DateTime<chrono::Utc>>| {
                    t.map_or_else(|| "-".to_owned(), |t| t.to_rfc3339())
                };
                println!(
                    "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
                    key.id,
                    key.prefix,
                    key.name,
                    key.scope.as_str(),
                    key.queues.map_or_else(|| "*".to_owned(), |q| q.join(",")),
                    key.created_at.to_rfc3339(),
                    when(key.last_used_at),
                    when(key.revoked_at),
                );
            }
        }
        KeysCommand::Revoke { id_or_prefix } => {
            let revoked = keys::revoke_key(&pool, &id_or_prefix).await?;
            anyhow::ensure!(
                revoked > 0,
                "no active key has id or prefix {id_or_prefix:?}"
            );
            courier_core::repo::audit::record(
                &pool,
                &courier_core::repo::audit::AuditEntry {
                    key_name: Some("(command line)".into()),
                    action: "keys.revoke",
                    target: Some(serde_json::json!(id_or_prefix)),
                    count: Some(i64::try_from(revoked).unwrap_or(i64::MAX)),
                    ..Default::default()
                },
            )
            .await?;
            println!(
                "revoked {revoked} key(s); the API stops accepting them within {} s",
                courier_api::auth::KEY_CACHE_TTL.as_secs()
            );
        }
    }
    Ok(())
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
