//! `courier-chaos [--jobs N] [--workers N] [--worker-kills N] [--redis-kills N]
//! [--api-restarts N] [--wipes N] [--kill-then-wipes N] [--wipes-in-reconcile N]
//! [--pg-pauses N] [--duration-s S] [--lease-ms MS] [--call-ms MS[,MS...]]
//! [--delayed-pct P] [--seed N]`: prints a Markdown table; exits 1 if any job was lost,
//! was never called, or a worker process died.

use std::time::Duration;

use courier_chaos::{Config, run};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut config = Config::small();
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .ok_or_else(|| anyhow::anyhow!("{flag} needs a value"))?;
        if flag == "--call-ms" {
            config.call_ms = value
                .split(',')
                .map(|ms| ms.trim().parse())
                .collect::<Result<_, _>>()
                .map_err(|_| anyhow::anyhow!("--call-ms: {value:?} is not a list of numbers"))?;
            continue;
        }
        let n: u64 = value
            .parse()
            .map_err(|_| anyhow::anyhow!("{flag}: {value:?} is not a number"))?;
        match flag.as_str() {
            "--jobs" => config.jobs = n as usize,
            "--workers" => config.workers = n as usize,
            "--worker-kills" => config.worker_kills = n as usize,
            "--redis-kills" => config.redis_kills = n as usize,
            "--api-restarts" => config.api_restarts = n as usize,
            "--wipes" => config.wipes = n as usize,
            "--pg-pauses" => config.pg_pauses = n as usize,
            "--duration-s" => config.duration = Duration::from_secs(n),
            "--lease-ms" => config.lease_ms = n,
            "--kill-then-wipes" => config.kill_then_wipes = n as usize,
            "--wipes-in-reconcile" => config.wipes_in_reconcile = n as usize,
            "--delayed-pct" => config.delayed_pct = n.min(100),
            "--seed" => config.seed = n,
            other => anyhow::bail!("unknown flag {other}"),
        }
    }
    eprintln!("chaos: {config:?}");
    let report = run(config).await?;
    println!("{report}");
    if report.lost > 0 || report.never_called > 0 || report.workers.alive < report.workers.started {
        std::process::exit(1);
    }
    Ok(())
}
