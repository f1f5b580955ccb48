//! `courier-bench`: runs issue 4's scenarios against Courier and against BullMQ behind an
//! Express API, on one Redis and one target server of its own, and prints one table with
//! both columns and their ratio (JSON beside it). `bench/run.sh` builds everything and
//! runs it; `--tiny` is the size CI runs so that every scenario keeps working.

mod clock;
mod load;
mod missing;
mod progress;
mod report;
mod retention;
mod scenarios;
mod systems;
mod target;

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;
use courier_testkit::RedisServer;

use crate::{
    report::{Machine, Report},
    scenarios::{Bench, Size},
    systems::{Deployment, System},
    target::Target,
};

#[derive(Parser)]
#[command(about = "Courier's benchmarks, side by side with BullMQ")]
struct Args {
    /// Each scenario once at a tiny size (what CI runs).
    #[arg(long)]
    tiny: bool,
    /// Scenarios to run, comma-separated (default: all).
    #[arg(long, value_delimiter = ',')]
    scenarios: Vec<String>,
    /// Systems to run: courier, bullmq (default: both).
    #[arg(long, value_delimiter = ',')]
    systems: Vec<String>,
    /// Size overrides, `name=value` (field names of `Size`: `drain_jobs=20000`).
    #[arg(long = "set", value_delimiter = ',')]
    overrides: Vec<String>,
    /// Where to write the JSON (default: bench/results/<time>.json).
    #[arg(long)]
    json: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let size = if args.tiny {
        Size::tiny()
    } else {
        Size::full()
    }
    .with(&args.overrides)?;
    let scenarios: Vec<String> = if args.scenarios.is_empty() {
        scenarios::ALL.iter().map(|s| s.to_string()).collect()
    } else {
        args.scenarios.clone()
    };
    for s in &scenarios {
        anyhow::ensure!(
            scenarios::ALL.contains(&s.as_str()),
            "unknown scenario {s:?}; known: {}",
            scenarios::ALL.join(", ")
        );
    }
    let systems = if args.systems.is_empty() {
        vec![System::Courier, System::Bullmq]
    } else {
        args.systems
            .iter()
            .map(|s| match s.as_str() {
                "courier" => Ok(System::Courier),
                "bullmq" => Ok(System::Bullmq),
                other => anyhow::bail!("unknown system {other:?}; known: courier, bullmq"),
            })
            .collect::<anyhow::Result<_>>()?
    };

    let results = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../results");
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ").to_string();
    let logs = results.join(format!("logs-{stamp}"));
    std::fs::create_dir_all(&logs).context("create bench/results")?;

    let redis = RedisServer::start(false, &[]).await;
    let target = Target::start()?;
    let bench = Bench {
        size: &size,
        target: &target,
    };
    let mut machine = Machine::this();
    machine.http_ceiling = {
        let endpoint = load::Endpoint {
            addr: target.addr,
            authorization: None,
        };
        let body = System::Courier
            .single(&System::Courier.job(&target.url("/ok"), None, None))
            .1;
        let make: load::MakeRequest = std::sync::Arc::new(move |_| ("/ok".into(), body.clone()));
        let secs = std::time::Duration::from_secs_f64(size.enqueue_secs.min(5.0));
        let done = load::closed_loop(&endpoint, size.enqueue_conns, secs, make).await;
        target.stats.reset();
        done.ok as f64 / done.elapsed.as_secs_f64()
    };
    eprintln!(
        "courier-bench: {} size, {} ({} cores); logs in {}",
        if args.tiny { "tiny" } else { "full" },
        machine.cpu,
        machine.cores,
        logs.display()
    );
    let mut report = Report::default();
    for scenario in &scenarios {
        for &system in &systems {
            eprintln!("==> {scenario} on {}", system.name());
            redis.command(&["FLUSHALL"]).await;
            let outcome = async {
                let mut deployment = Deployment::start(system, &redis.url(), &logs).await?;
                let figures = bench.run(scenario, &mut deployment).await;
                deployment.stop().await?;
                figures
            }
            .await;
            match outcome {
                Ok(figures) => {
                    for f in &figures {
                        eprintln!("    {}: {:.2}", f.name, f.value);
                    }
                    report.add(scenario, system, figures);
                }
                Err(e) => {
                    eprintln!("    FAILED: {e:#}");
                    report.fail(scenario, system, &e);
                }
            }
        }
    }

    let markdown = report.markdown(&machine, &size, &systems);
    println!("{markdown}");
    let json_path = args
        .json
        .unwrap_or_else(|| results.join(format!("{stamp}.json")));
    let json = report.json(&machine, &size);
    std::fs::write(&json_path, serde_json::to_string_pretty(&json)?)
        .with_context(|| format!("write {}", json_path.display()))?;
    std::fs::write(json_path.with_extension("md"), &markdown)?;
    eprintln!("courier-bench: wrote {}", json_path.display());
    anyhow::ensure!(
        report.failures.is_empty(),
        "{} scenario runs failed",
        report.failures.len()
    );
    Ok(())
}
