//! `courier`, the command-line client of Courier's REST API. The binary parses the
//! command line and calls [`run`]; every command reads the API's answers with the view
//! types of `courier_wire`, the same types the API writes them with.

pub mod args;
mod client;
mod commands;
pub mod error;
mod import;
mod output;

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use args::{Cli, Command, SchedulesCommand};
use client::Api;
use commands::Context;
use error::{CliError, exit};

/// Runs the command; returns the exit code. Errors are printed to standard error as
/// `courier: <what went wrong>`.
pub async fn run(cli: Cli) -> u8 {
    match execute(cli).await {
        Ok(code) => code,
        Err(e) if e.is_broken_pipe() => exit::OK,
        Err(CliError::Interrupted) => {
            eprintln!("courier: interrupted");
            exit::INTERRUPTED
        }
        Err(e) => {
            eprintln!("courier: {}", output::clean_lines(&e.to_string()));
            e.exit_code()
        }
    }
}

async fn execute(cli: Cli) -> Result<u8, CliError> {
    let api = Api::new(&cli.api_url, cli.api_key.as_deref())?;
    let ctx = Context {
        api,
        json: cli.json,
    };
    let done = |()| exit::OK;
    match cli.command {
        Command::Submit(args) => commands::submit::run(&ctx, *args).await.map(done),
        Command::Import(args) => {
            let interrupted = on_ctrl_c();
            import::run(&ctx, args, interrupted).await
        }
        Command::Get { id } => commands::jobs::get(&ctx, id).await.map(done),
        Command::List(args) => commands::jobs::list(&ctx, args).await.map(done),
        Command::Watch(args) => commands::watch::run(&ctx, args).await,
        Command::Cancel { id } => commands::jobs::cancel(&ctx, id).await.map(done),
        Command::Retry { id } => commands::jobs::retry(&ctx, id).await.map(done),
        Command::Queues { name } => commands::queues::run(&ctx, name).await.map(done),
        Command::Schedules { command, limit } => match command {
            None => commands::schedules::list(&ctx, limit).await.map(done),
            Some(SchedulesCommand::Get { name }) => {
                commands::schedules::get(&ctx, &name).await.map(done)
            }
            Some(SchedulesCommand::Runs { name, limit }) => {
                commands::schedules::runs(&ctx, &name, limit)
                    .await
                    .map(done)
            }
        },
    }
}

/// The first Ctrl-C asks the import to stop once the request in flight is answered
/// and journaled; a second one ends the process at once (the journal then settles that
/// request on the next run).
fn on_ctrl_c() -> Arc<AtomicBool> {
    let interrupted = Arc::new(AtomicBool::new(false));
    let flag = interrupted.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_err() {
            return;
        }
        flag.store(true, Ordering::SeqCst);
        eprintln!("\ncourier: stopping after the request in flight (Ctrl-C again to stop now)");
        if tokio::signal::ctrl_c().await.is_ok() {
            std::process::exit(i32::from(exit::INTERRUPTED));
        }
    });
    interrupted
}
