//! The chaos harness: runs jobs through a whole Courier (API and workers as processes,
//! its own Redis with AOF, its own PostgreSQL cluster, a counting target) while it kills
//! and restarts workers, Redis and the API at random, wipes Redis (also two seconds
//! after a restart, and while a reconciliation runs) and pauses PostgreSQL; then drains
//! and counts what was lost and what ran twice, and why. The workers run at their
//! default settings, several on this one host, as an operator starts them.

mod faults;
mod report;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use courier_testkit::{
    ChildProcess, PgCluster, RedisServer, Reply, Target, TestEnv, free_port, wait_until,
};
use serde_json::json;

pub use faults::Fault;
pub use report::Report;

/// What to run and what to break.
#[derive(Debug, Clone)]
pub struct Config {
    pub jobs: usize,
    pub workers: usize,
    pub worker_kills: usize,
    pub redis_kills: usize,
    pub api_restarts: usize,
    pub wipes: usize,
    /// Redis killed, restarted from its AOF, and wiped two seconds later.
    pub kill_then_wipes: usize,
    /// Redis killed and restarted, and wiped as soon as the reconciliation that the
    /// restart starts has claimed the marker (while it runs).
    pub wipes_in_reconcile: usize,
    pub pg_pauses: usize,
    /// Over how long jobs are submitted and faults injected.
    pub duration: Duration,
    pub lease_ms: u64,
    /// How long the target takes to answer a call: job `i` takes `call_ms[i % len]`.
    pub call_ms: Vec<u64>,
    /// Percent of the jobs submitted with a delay (1 to 20 s), so that Redis holds many
    /// live jobs and a reconciliation has much to read.
    pub delayed_pct: u64,
    pub seed: u64,
}

impl Config {
    /// The size CI runs.
    pub fn small() -> Self {
        Self {
            jobs: 2000,
            workers: 3,
            worker_kills: 10,
            redis_kills: 1,
            api_restarts: 1,
            wipes: 1,
            kill_then_wipes: 1,
            wipes_in_reconcile: 1,
            pg_pauses: 1,
            duration: Duration::from_secs(30),
            // Leases in Redis last 1.5 s less. At 3000 (1.5 s in Redis) a debug-build
            // worker starved of CPU by the rest of the suite on 2 cores lost leases of
            // calls it was making, near no fault: duplicates of load, not of the faults
            // this run counts. 6000 leaves 4.5 s.
            lease_ms: 6000,
            call_ms: vec![50, 200, 1000],
            delayed_pct: 20,
            seed: 1,
        }
    }
}

/// The running system under test.
pub(crate) struct System {
    pub redis: tokio::sync::Mutex<RedisServer>,
    pub pg: PgCluster,
    pub env: TestEnv,
    pub target: Target,
    pub api_port: u16,
    pub api: Mutex<Option<ChildProcess>>,
    pub workers: Mutex<Vec<ChildProcess>>,
    pub lease_ms: u64,
    /// Reads the reconciliation marker of the run's Redis.
    pub queue: courier_core::queue::RedisQueue,
}

impl System {
    fn vars(&self) -> Vec<(String, String)> {
        // Every process at the default metrics settings (the workers share 0.0.0.0:9464
        // and its neighbours), as an operator runs several workers on one host.
        let mut vars: Vec<(String, String)> = self
            .env
            .process_env()
            .into_iter()
            .filter(|(k, _)| !k.starts_with("COURIER__WORKER__METRICS_"))
            .collect();
        vars.push(("COURIER__SERVER__PORT".into(), self.api_port.to_string()));
        vars.push((
            "COURIER__WORKER__LEASE_MS".into(),
            self.lease_ms.to_string(),
        ));
        vars.push((
            "COURIER__DATABASE__CONNECT_TIMEOUT_MS".into(),
            "2000".into(),
        ));
        vars.push(("COURIER__REDIS__COMMAND_TIMEOUT_MS".into(), "2000".into()));
        vars.push(("COURIER__TELEMETRY__FILTER".into(), "warn".into()));
        vars
    }

    pub fn start_api(&self) -> ChildProcess {
        ChildProcess::spawn("courier-api", &["serve"], &self.vars())
    }

    pub fn start_worker(&self) -> ChildProcess {
        ChildProcess::spawn("courier-worker", &[], &self.vars())
    }
}

/// Runs the whole scenario and reports.
///
/// # Errors
/// The system could not be started.
pub async fn run(config: Config) -> anyhow::Result<Report> {
    let redis = RedisServer::start(true, &[]).await;
    let pg = PgCluster::start().await;
    let env = TestEnv::on(&pg.url("postgres"), &redis.url()).await;
    let target = Target::start().await;
    for ms in &config.call_ms {
        target.script(
            &format!("/chaos/{ms}"),
            vec![Reply::status(200).after(Duration::from_millis(*ms))],
        );
    }
    let queue = courier_core::queue::RedisQueue::new(&env.settings.redis)?;
    let system = Arc::new(System {
        redis: tokio::sync::Mutex::new(redis),
        pg,
        env,
        target,
        api_port: free_port(),
        api: Mutex::new(None),
        workers: Mutex::new(Vec::new()),
        lease_ms: config.lease_ms,
        queue,
    });
    *system.api.lock().unwrap() = Some(system.start_api());
    for _ in 0..config.workers {
        let worker = system.start_worker();
        system.workers.lock().unwrap().push(worker);
    }
    let base = format!("http://127.0.0.1:{}", system.api_port);
    let mut auth = reqwest::header::HeaderMap::new();
    auth.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {}", system.env.api_key).parse()?,
    );
    let client = reqwest::Client::builder()
        .default_headers(auth)
        .timeout(Duration::from_secs(10))
        .build()?;
    wait_until("the api to be ready", Duration::from_secs(30), || async {
        let ready = client.get(format!("{base}/readyz")).send().await.ok()?;
        ready.status().is_success().then_some(())
    })
    .await;

    let started = Instant::now();
    let monitor = tokio::spawn(report::watch_running(system.clone(), started));
    let schedule = faults::schedule(&config);
    let chaos = tokio::spawn(faults::inject(system.clone(), schedule, started));
    let accepted = submit(
        &client,
        &base,
        &system.target.url("/chaos"),
        &config,
        started,
    )
    .await;
    let submitted = started.elapsed();
    let injected = chaos.await?;
    for fault in &injected {
        let at = chrono::Utc::now()
            - chrono::Duration::from_std(started.elapsed() - fault.at).unwrap_or_default();
        eprintln!(
            "chaos: {} at {}",
            fault.fault.name(),
            at.format("%H:%M:%S%.3f")
        );
    }

    // Everything back up, then drain.
    let drained = drain(&system, &accepted).await;
    monitor.abort();
    let done = started.elapsed();
    let last_fault = injected
        .iter()
        .map(|f| f.ended)
        .max()
        .unwrap_or_default()
        .max(submitted);
    let workers = workers_alive(&system).await;
    let mut report = report::build(&system, &config, &accepted, injected, drained, started).await?;
    report.settled_after_last_fault = drained.map(|_| done.saturating_sub(last_fault));
    report.workers = workers;
    for mut worker in system.workers.lock().unwrap().drain(..) {
        let _ = worker.child.start_kill();
    }
    Ok(report)
}

/// The worker processes still running at the end, of those started last, and how many
/// of them recorded attempts: several workers on one host at their default settings
/// must all run (a taken metrics port once made every worker but the first exit).
async fn workers_alive(system: &System) -> report::Workers {
    let pids: Vec<Option<u32>> = {
        let mut workers = system.workers.lock().unwrap();
        workers
            .iter_mut()
            .map(|w| match w.child.try_wait() {
                Ok(None) => w.child.id(),
                _ => None,
            })
            .collect()
    };
    let alive: Vec<u32> = pids.iter().flatten().copied().collect();
    let names: Vec<String> = sqlx::query_scalar("SELECT DISTINCT worker FROM job_executions")
        .fetch_all(&system.env.db)
        .await
        .unwrap_or_default();
    let ran = alive
        .iter()
        .filter(|pid| names.iter().any(|n| n.ends_with(&format!("-{pid}"))))
        .count();
    report::Workers {
        started: pids.len(),
        alive: alive.len(),
        ran_jobs: ran,
    }
}

/// Submits every job over the run's duration, as a careful client does: each with an
/// idempotency key, retried until a 2xx. Returns the accepted ids.
async fn submit(
    client: &reqwest::Client,
    base: &str,
    target: &str,
    config: &Config,
    started: Instant,
) -> Vec<String> {
    const CLIENTS: usize = 8;
    let accepted = Arc::new(Mutex::new(Vec::with_capacity(config.jobs)));
    let per_job = config.duration.as_secs_f64() / config.jobs as f64;
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let (client, base, target, accepted) = (
            client.clone(),
            base.to_owned(),
            target.to_owned(),
            accepted.clone(),
        );
        let jobs = config.jobs;
        let (call_ms, delayed_pct) = (config.call_ms.clone(), config.delayed_pct);
        tasks.push(tokio::spawn(async move {
            for i in (c..jobs).step_by(CLIENTS) {
                let due = started + Duration::from_secs_f64(per_job * i as f64);
                tokio::time::sleep_until(due.into()).await;
                let ms = call_ms[i % call_ms.len()];
                let mut body = json!({"target": {"url": format!("{target}/{ms}?job={i}")}, "max_attempts": 100,
                    "backoff": {"initial_ms": 100, "max_ms": 2000}});
                // A spread of delays, from one job's index alone (the run is repeatable).
                if (i as u64 * 7919) % 100 < delayed_pct {
                    body["delay_ms"] = json!(1000 + (i as u64 * 104_729) % 19_000);
                }
                loop {
                    let sent = client
                        .post(format!("{base}/v1/jobs"))
                        .header("idempotency-key", format!("chaos-{i}"))
                        .json(&body)
                        .send()
                        .await;
                    if let Ok(response) = sent
                        && response.status().is_success()
                        && let Ok(job) = response.json::<serde_json::Value>().await
                        && let Some(id) = job["id"].as_str()
                    {
                        accepted.lock().unwrap().push(id.to_owned());
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
    accepted.lock().unwrap().clone()
}

/// Waits (up to a limit) until every accepted job is terminal; returns how long it took
/// after the last fault, or `None` if some never finished.
async fn drain(system: &System, accepted: &[String]) -> Option<Duration> {
    let ids: Vec<uuid::Uuid> = accepted.iter().filter_map(|id| id.parse().ok()).collect();
    let start = Instant::now();
    let deadline = start + Duration::from_secs(120);
    while Instant::now() < deadline {
        let live: Result<i64, _> = sqlx::query_scalar(
            "SELECT count(*) FROM jobs WHERE id = ANY($1) AND state NOT IN ('succeeded', 'dead', 'cancelled')",
        )
        .bind(&ids)
        .fetch_one(&system.env.db)
        .await;
        if live.is_ok_and(|n| n == 0) {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // What is left, for the report's reader.
    let left: Vec<(String, String, i32)> = sqlx::query_as(
        "SELECT id::text, state::text, attempts FROM jobs
         WHERE id = ANY($1) AND state NOT IN ('succeeded', 'dead', 'cancelled') LIMIT 20",
    )
    .bind(&ids)
    .fetch_all(&system.env.db)
    .await
    .unwrap_or_default();
    eprintln!("chaos: jobs never finished (up to 20): {left:?}");
    // Where Redis has them, to tell a lost dispatch from a stuck lease.
    let keys = courier_core::queue::Keys::new(&system.env.settings.redis.prefix)
        .queue(&courier_core::QueueName::default());
    let redis = system.redis.lock().await;
    for (id, _, _) in &left {
        let mut seen = Vec::new();
        for (what, args) in [
            ("payload", vec!["HEXISTS", keys.jobs.as_str(), id]),
            ("queued", vec!["ZSCORE", keys.queued.as_str(), id]),
            ("scheduled", vec!["ZSCORE", keys.scheduled.as_str(), id]),
            ("running", vec!["ZSCORE", keys.running.as_str(), id]),
            ("lease", vec!["HGET", keys.leases.as_str(), id]),
            ("attempts", vec!["HGET", keys.attempts.as_str(), id]),
        ] {
            seen.push(format!("{what}={:?}", redis.command(&args).await));
        }
        let calls: Vec<String> = system
            .target
            .received()
            .iter()
            .filter(|r| r.job_id().as_deref() == Some(id.as_str()))
            .map(|r| r.received_at.format("%H:%M:%S%.3f").to_string())
            .collect();
        let row: Option<(chrono::DateTime<chrono::Utc>, i64)> =
            sqlx::query_as("SELECT updated_at, token FROM jobs WHERE id = $1::uuid")
                .bind(id)
                .fetch_optional(&system.env.db)
                .await
                .ok()
                .flatten();
        let records: Vec<(i32, String, bool, chrono::DateTime<chrono::Utc>)> = sqlx::query_as(
            "SELECT attempt, outcome, stale, finished_at FROM job_executions WHERE job_id = $1::uuid",
        )
        .bind(id)
        .fetch_all(&system.env.db)
        .await
        .unwrap_or_default();
        eprintln!(
            "chaos: {id}: calls at {calls:?}; job (updated_at, token) {row:?}; records {records:?}; redis {}",
            seen.join(" ")
        );
    }
    None
}

/// Calls per job id, as the target counted them.
pub(crate) fn calls_per_job(target: &Target) -> HashMap<String, usize> {
    let mut calls = HashMap::new();
    for received in target.received() {
        if let Some(id) = received.job_id() {
            *calls.entry(id).or_insert(0) += 1;
        }
    }
    calls
}
