//! The `courier` binary: parses the command line (clap exits 2 on usage errors), runs
//! the command on a single-threaded runtime, and exits with its code.

use std::process::ExitCode;

use clap::Parser;
use courier_cli::{args::Cli, error::exit};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("courier: cannot start: {e}");
            return ExitCode::from(exit::API);
        }
    };
    ExitCode::from(runtime.block_on(courier_cli::run(cli)))
}
