//! The two systems under test, each deployed fresh for every scenario against the same
//! Redis and the same target: Courier (`courier-api` and `courier-worker` processes of
//! this build, with a database of their own) and BullMQ (`bench/peers/bullmq`: an Express
//! API and a BullMQ worker under Node.js).

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use anyhow::Context as _;
use bytes::Bytes;
use courier_testkit::{TestEnv, binary, wait_until};
use serde_json::{Value, json};
use tokio::process::{Child, Command};

use crate::{
    load::Endpoint,
    target::{DUE_HEADER, SENT_HEADER},
};

/// The queue every benchmark job goes to.
pub const QUEUE: &str = "bench";
/// The encryption key of the benchmark's Courier (any 32 bytes do).
const ENCRYPTION_KEY: &str = "KioqKioqKioqKioqKioqKioqKioqKioqKioqKioqKio=";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum System {
    Courier,
    Bullmq,
}

impl System {
    pub fn name(self) -> &'static str {
        match self {
            Self::Courier => "Courier",
            Self::Bullmq => "BullMQ",
        }
    }

    /// How this side is set up, for the report.
    pub fn configuration(self) -> &'static str {
        match self {
            Self::Courier => {
                "courier-api and one courier-worker (release build, default settings: \
                 JSON logs at info, API keys on, SSRF protection with 127.0.0.1/32 allowed; \
                 the key's rate limit off, as one key sends all the load); \
                 jobs committed to PostgreSQL (synchronous_commit on) before 2xx, every \
                 attempt recorded in PostgreSQL"
            }
            Self::Bullmq => {
                "Express API (queue.add, queue.addBulk for batches) and one BullMQ worker \
                 (Node.js, undici fetch with keep-alive); completed jobs kept in Redis, \
                 nothing in PostgreSQL"
            }
        }
    }

    /// A job's JSON for this system's API: a POST to `url`, with the benchmark's timing
    /// headers, due at `due_us` when given.
    pub fn job(self, url: &str, sent_us: Option<u64>, due_us: Option<u64>) -> Value {
        let mut headers = serde_json::Map::new();
        if let Some(sent) = sent_us {
            headers.insert(SENT_HEADER.into(), sent.to_string().into());
        }
        if let Some(due) = due_us {
            headers.insert(DUE_HEADER.into(), due.to_string().into());
        }
        match self {
            Self::Courier => {
                let mut job = json!({"queue": QUEUE, "target": {"url": url, "headers": headers}});
                if let Some(due) = due_us {
                    let at = chrono::DateTime::from_timestamp_micros(due as i64)
                        .expect("a due time in range");
                    job["run_at"] = at
                        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
                        .into();
                }
                job
            }
            Self::Bullmq => {
                let mut job =
                    json!({"url": url, "method": "POST", "headers": headers, "attempts": 3});
                if let Some(due) = due_us {
                    job["run_at_ms"] = (due / 1000).into();
                }
                job
            }
        }
    }

    /// Path and body that submit one job.
    pub fn single(self, job: &Value) -> (String, Bytes) {
        let path = match self {
            Self::Courier => "/v1/jobs",
            Self::Bullmq => "/jobs",
        };
        (path.into(), Bytes::from(job.to_string()))
    }

    /// Path and body that submit `jobs` in one request.
    pub fn batch(self, jobs: Vec<Value>) -> (String, Bytes) {
        let path = match self {
            Self::Courier => "/v1/jobs/batch",
            Self::Bullmq => "/jobs/batch",
        };
        (
            path.into(),
            Bytes::from(json!({ "jobs": jobs }).to_string()),
        )
    }
}

/// A child process with its output in a log file; killed when dropped.
pub struct Proc {
    child: Child,
    log: PathBuf,
}

impl Proc {
    fn spawn(
        program: &Path,
        args: &[&str],
        env: &[(String, String)],
        log: PathBuf,
    ) -> anyhow::Result<Self> {
        let file = std::fs::File::create(&log)?;
        let child = Command::new(program)
            .args(args)
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("start {}", program.display()))?;
        Ok(Self { child, log })
    }

    pub fn pid(&self) -> u32 {
        self.child.id().unwrap_or(0)
    }

    fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until a line of the output gives `find` an answer.
    async fn wait_for<T>(&self, what: &str, find: impl Fn(&str) -> Option<T>) -> T {
        wait_until(what, Duration::from_secs(60), || async {
            self.output().lines().find_map(&find)
        })
        .await
    }

    /// SIGKILL, as a crash would, and waits for the process to be gone.
    async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }

    /// SIGTERM, then a kill after 30 s.
    async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(pid.to_string())
                .status()
                .await;
        }
        if tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

/// A process's peak resident set size so far, in KiB (`VmHWM`); 0 once it is gone.
pub fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// CPU time a process has used so far (user and system), in seconds; 0 once it is gone.
pub fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the command name (which may hold spaces) start at index 2: utime and
    // stime are the 14th and 15th fields, in clock ticks (100 a second on Linux).
    let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..]) else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split(' ').collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

/// Where the BullMQ peer lives.
pub fn peer_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../peers/bullmq")
}

/// One system, deployed for one scenario.
pub struct Deployment {
    pub system: System,
    pub endpoint: Endpoint,
    redis: redis::aio::MultiplexedConnection,
    redis_url: String,
    api: Proc,
    workers: Vec<Proc>,
    courier: Option<TestEnv>,
    logs: PathBuf,
    /// Flow limits for BullMQ workers started from now on (`limit_flow`).
    bullmq_limits: Vec<(&'static str, String)>,
}

impl Deployment {
    /// Starts `system`'s API against `redis_url` (empty, flushed by the caller).
    pub async fn start(system: System, redis_url: &str, logs: &Path) -> anyhow::Result<Self> {
        Self::start_on(system, redis_url, None, logs).await
    }

    /// [`Self::start`]; for Courier on a Redis Cluster when `cluster` gives its nodes
    /// (`redis_url` then one of them).
    pub async fn start_on(
        system: System,
        redis_url: &str,
        cluster: Option<&[String]>,
        logs: &Path,
    ) -> anyhow::Result<Self> {
        let client = redis::Client::open(redis_url)?;
        let redis = client.get_multiplexed_async_connection().await?;
        let (api, courier, port) = match system {
            System::Courier => {
                let mut env = TestEnv::on(&admin_url(), redis_url).await;
                if let Some(nodes) = cluster {
                    env.settings.redis.cluster = true;
                    env.settings.redis.nodes = nodes.to_vec();
                }
                let api = Proc::spawn(
                    &binary("courier-api"),
                    &["serve"],
                    // One key sends the whole load, so its request rate limit (20,000/s
                    // by default, a guard against one runaway client) is off.
                    &courier_env(
                        &env,
                        &[
                            ("COURIER__SERVER__PORT", "0"),
                            ("COURIER__AUTH__RATE_LIMIT_PER_SECOND", "0"),
                        ],
                    ),
                    logs.join("courier-api.log"),
                )?;
                let port = api
                    .wait_for("courier-api to listen", |line| {
                        let line: Value = serde_json::from_str(line).ok()?;
                        (line["message"] == "courier-api listening")
                            .then(|| line["port"].as_u64())?
                    })
                    .await;
                (api, Some(env), port as u16)
            }
            System::Bullmq => {
                let api = Proc::spawn(
                    Path::new("node"),
                    &[&peer_dir().join("api.js").display().to_string()],
                    &bullmq_env(redis_url, &[("PORT", "0")]),
                    logs.join("bullmq-api.log"),
                )?;
                let port = api
                    .wait_for("the Express API to listen", |line| {
                        line.strip_prefix("listening on ")?.trim().parse().ok()
                    })
                    .await;
                (api, None, port)
            }
        };
        let authorization = courier
            .as_ref()
            .map(|env| format!("Bearer {}", env.api_key));
        Ok(Self {
            system,
            endpoint: Endpoint {
                addr: ([127, 0, 0, 1], port).into(),
                authorization,
            },
            redis,
            redis_url: redis_url.to_owned(),
            api,
            workers: Vec::new(),
            courier,
            logs: logs.to_owned(),
            bullmq_limits: Vec::new(),
        })
    }

    /// Where this deployment's processes write their logs.
    pub fn logs(&self) -> &Path {
        &self.logs
    }

    /// The API process's id.
    pub fn api_pid(&self) -> u32 {
        self.api.pid()
    }

    /// Courier's database (`None` for BullMQ).
    pub fn courier_db(&self) -> Option<&sqlx::PgPool> {
        self.courier.as_ref().map(|env| &env.db)
    }

    /// Courier's test environment: its database, and the settings its processes run with.
    pub fn courier_env(&self) -> Option<&TestEnv> {
        self.courier.as_ref()
    }

    /// Defines schedule `id`: a job every `every_ms`, calling `url`.
    pub async fn put_schedule(&self, id: &str, every_ms: u64, url: &str) -> anyhow::Result<()> {
        let (path, body) = match self.system {
            System::Courier => (
                format!("/v1/schedules/{id}"),
                json!({"every_ms": every_ms, "overlap": "allow_all",
                       "job": {"queue": QUEUE, "target": {"url": url}}}),
            ),
            System::Bullmq => (
                format!("/schedulers/{id}"),
                json!({"every_ms": every_ms, "job": {"url": url, "method": "POST", "attempts": 3}}),
            ),
        };
        self.send(reqwest::Method::PUT, &path, &body).await
    }

    /// Sends `body` to `path` of the system's API (with Courier's key); fails unless it
    /// answers 2xx.
    /// Sends one request to the API; fails unless it answers 2xx.
    pub(crate) async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: &Value,
    ) -> anyhow::Result<()> {
        let mut request = reqwest::Client::new()
            .request(method, format!("http://{}{path}", self.endpoint.addr))
            .json(body);
        if let Some(auth) = &self.endpoint.authorization {
            request = request.header("authorization", auth);
        }
        let response = request.send().await?;
        anyhow::ensure!(
            response.status().is_success(),
            "{path}: {} {}",
            response.status(),
            response.text().await.unwrap_or_default()
        );
        Ok(())
    }

    /// Limits the benchmark queue to `per_second` calls started a second, and the
    /// calls in flight to `concurrency`: Courier's on the queue (rate) and the flow key
    /// `bench-key` (concurrency), BullMQ's for the workers started after this (a worker
    /// rate limiter, and the queue's global concurrency).
    pub async fn limit_flow(&mut self, per_second: u64, concurrency: u64) -> anyhow::Result<()> {
        let requests = match self.system {
            System::Courier => vec![
                (
                    reqwest::Method::PATCH,
                    format!("/v1/queues/{QUEUE}/settings"),
                    json!({"rate": {"per_second": per_second}}),
                ),
                (
                    reqwest::Method::PUT,
                    "/v1/flow-keys/bench-key".to_owned(),
                    json!({"max_concurrency": concurrency}),
                ),
            ],
            System::Bullmq => {
                self.bullmq_limits = vec![
                    ("LIMIT_PER_SECOND", per_second.to_string()),
                    ("GLOBAL_CONCURRENCY", concurrency.to_string()),
                ];
                vec![]
            }
        };
        for (method, path, body) in requests {
            self.send(method, &path, &body).await?;
        }
        Ok(())
    }

    /// Starts one worker process serving the benchmark queue with `concurrency` calls at
    /// once, and waits until it is ready.
    pub async fn start_worker(&mut self, concurrency: usize) -> anyhow::Result<&Proc> {
        self.start_worker_on(concurrency, QUEUE).await
    }

    /// [`Self::start_worker`], serving `queues` (comma-separated; Courier only).
    pub async fn start_worker_on(
        &mut self,
        concurrency: usize,
        queues: &str,
    ) -> anyhow::Result<&Proc> {
        let concurrency = concurrency.to_string();
        let n = self.workers.len();
        let worker = match (self.system, &self.courier) {
            (System::Courier, Some(env)) => {
                let worker = Proc::spawn(
                    &binary("courier-worker"),
                    &[],
                    &courier_env(
                        env,
                        &[
                            ("COURIER__WORKER__CONCURRENCY", &concurrency),
                            ("COURIER__WORKER__QUEUES", queues),
                        ],
                    ),
                    self.logs.join(format!("courier-worker-{n}.log")),
                )?;
                worker
                    .wait_for("courier-worker to start", |line| {
                        line.contains("courier-worker started").then_some(())
                    })
                    .await;
                worker
            }
            _ => {
                let worker = Proc::spawn(
                    Path::new("node"),
                    &[&peer_dir().join("worker.js").display().to_string()],
                    &bullmq_env(&self.redis_url, &{
                        let mut vars = vec![("CONCURRENCY", concurrency.as_str())];
                        vars.extend(self.bullmq_limits.iter().map(|(k, v)| (*k, v.as_str())));
                        vars
                    }),
                    self.logs.join(format!("bullmq-worker-{n}.log")),
                )?;
                worker
                    .wait_for("the BullMQ worker to be ready", |line| {
                        (line.trim() == "ready").then_some(())
                    })
                    .await;
                worker
            }
        };
        self.workers.push(worker);
        Ok(self.workers.last().expect("just pushed"))
    }

    /// Kills worker `i` (in start order) with SIGKILL.
    pub async fn kill_worker(&mut self, i: usize) -> anyhow::Result<()> {
        let worker = self
            .workers
            .get_mut(i)
            .with_context(|| format!("no worker {i}"))?;
        worker.kill().await;
        Ok(())
    }

    /// Kills every worker with SIGKILL: their calls in flight do not matter any more, and
    /// a graceful stop would wait for them.
    pub async fn kill_workers(&mut self) {
        for worker in &mut self.workers {
            worker.kill().await;
        }
    }

    /// Puts every dead (failed) job back in its queue in one request; how many it did.
    pub async fn retry_failed(&self) -> anyhow::Result<u64> {
        let (path, body) = match self.system {
            System::Courier => ("/v1/jobs/bulk/retry", json!({"filter": {"state": "dead"}})),
            System::Bullmq => ("/jobs/retry-failed", json!({})),
        };
        let mut request = reqwest::Client::new()
            .post(format!("http://{}{path}", self.endpoint.addr))
            .json(&body);
        if let Some(auth) = &self.endpoint.authorization {
            request = request.header("authorization", auth);
        }
        let response = request.send().await?;
        anyhow::ensure!(
            response.status().is_success(),
            "{path}: {}",
            response.status()
        );
        let answer: Value = response.json().await?;
        answer["done"]
            .as_u64()
            .or_else(|| answer["retried"].as_u64())
            .ok_or_else(|| anyhow::anyhow!("{path} answered {answer}"))
    }

    /// Jobs stored and not yet finished or finished: everything the system holds.
    pub async fn stored(&mut self) -> anyhow::Result<u64> {
        match &self.courier {
            Some(env) => Ok(sqlx::query_scalar::<_, i64>("SELECT count(*) FROM jobs")
                .fetch_one(&env.db)
                .await? as u64),
            None => {
                let k = |s: &str| format!("bull:{QUEUE}:{s}");
                let (wait, active, delayed, prioritized, completed, failed): (
                    u64,
                    u64,
                    u64,
                    u64,
                    u64,
                    u64,
                ) = redis::pipe()
                    .llen(k("wait"))
                    .llen(k("active"))
                    .zcard(k("delayed"))
                    .zcard(k("prioritized"))
                    .zcard(k("completed"))
                    .zcard(k("failed"))
                    .query_async(&mut self.redis)
                    .await?;
                Ok(wait + active + delayed + prioritized + completed + failed)
            }
        }
    }

    /// Jobs finished: for Courier, terminal in PostgreSQL with their execution records
    /// there too; for BullMQ, completed or failed for good.
    pub async fn finished(&mut self) -> anyhow::Result<u64> {
        match &self.courier {
            Some(env) => {
                let (terminal, records): (i64, i64) = sqlx::query_as(
                    "SELECT (SELECT count(*) FROM jobs WHERE state IN ('succeeded', 'dead', 'cancelled')),
                            (SELECT count(*) FROM job_executions)",
                )
                .fetch_one(&env.db)
                .await?;
                Ok(terminal.min(records) as u64)
            }
            None => {
                let (completed, failed): (u64, u64) = redis::pipe()
                    .zcard(format!("bull:{QUEUE}:completed"))
                    .zcard(format!("bull:{QUEUE}:failed"))
                    .query_async(&mut self.redis)
                    .await?;
                Ok(completed + failed)
            }
        }
    }

    /// Waits until `count` jobs are finished, printing progress. `called` is how many
    /// calls the target has seen: until it reaches `count` nothing can be finished, so
    /// the system itself is asked only from then on (counting rows in PostgreSQL every
    /// few milliseconds would load the very database being measured).
    pub async fn wait_finished(
        &mut self,
        count: u64,
        label: &str,
        called: impl Fn() -> u64,
    ) -> anyhow::Result<()> {
        let started = std::time::Instant::now();
        let mut last_print = started;
        loop {
            let calls = called();
            if calls >= count && self.finished().await? >= count {
                return Ok(());
            }
            if last_print.elapsed() >= Duration::from_secs(1) {
                last_print = std::time::Instant::now();
                let rate = calls as f64 / started.elapsed().as_secs_f64();
                eprintln!("    {label}: {calls}/{count} called ({rate:.0}/s)");
            }
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(1800),
                "{label}: only {calls} of {count} jobs called in 30 minutes"
            );
            let poll = if calls >= count { 50 } else { 10 };
            tokio::time::sleep(Duration::from_millis(poll)).await;
        }
    }

    /// How many fields the hash `key` holds.
    pub async fn redis_hlen(&mut self, key: &str) -> anyhow::Result<u64> {
        Ok(redis::cmd("HLEN")
            .arg(key)
            .query_async(&mut self.redis)
            .await?)
    }

    /// Redis's `used_memory`, in bytes.
    pub async fn redis_used_memory(&mut self) -> anyhow::Result<u64> {
        let info: String = redis::cmd("INFO")
            .arg("memory")
            .query_async(&mut self.redis)
            .await?;
        info.lines()
            .find_map(|l| l.strip_prefix("used_memory:"))
            .and_then(|v| v.trim().parse().ok())
            .context("INFO memory without used_memory")
    }

    /// Stops every process and drops Courier's database.
    pub async fn stop(self) -> anyhow::Result<()> {
        for worker in self.workers {
            worker.stop().await;
        }
        self.api.stop().await;
        if let Some(env) = self.courier {
            env.db.close().await;
            let name = env
                .database_url
                .rsplit('/')
                .next()
                .context("database name")?
                .to_owned();
            let admin = sqlx::PgPool::connect(&admin_url()).await?;
            // The name is `courier_test_<uuid>`, made by TestEnv, never input.
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
            )))
            .execute(&admin)
            .await?;
            admin.close().await;
        }
        Ok(())
    }
}

/// The PostgreSQL the benchmark makes its databases on.
pub fn admin_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// Courier's settings: its defaults, plus what the benchmark needs.
fn courier_env(env: &TestEnv, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut vars: Vec<(String, String)> = [
        ("DATABASE_URL", env.settings.database.url.as_str()),
        ("REDIS_URL", env.settings.redis.url.as_str()),
        ("COURIER__REDIS__PREFIX", env.settings.redis.prefix.as_str()),
        ("COURIER__SERVER__HOST", "127.0.0.1"),
        // The target runs on this machine, which SSRF protection refuses by default.
        ("COURIER__OUTBOUND__ALLOW", "127.0.0.1/32"),
        ("COURIER__SECRETS__ENCRYPTION_KEY", ENCRYPTION_KEY),
        // Two workers run side by side in `worker-kill`: each its own metrics port.
        ("COURIER__WORKER__METRICS_PORT", "0"),
        // `retention` removes expired jobs itself, timed: the API's own sweep keeps
        // everything, so it never races it (nor drops the empty days made for it).
        ("COURIER__RETENTION__SUCCEEDED_HOURS", "1000000"),
        ("COURIER__RETENTION__DEAD_HOURS", "1000000"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    if env.settings.redis.cluster {
        vars.push(("COURIER__REDIS__CLUSTER".into(), "true".into()));
        vars.push((
            "COURIER__REDIS__NODES".into(),
            env.settings.redis.nodes.join(","),
        ));
    }
    vars.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    vars
}

fn bullmq_env(redis_url: &str, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut vars = vec![
        ("REDIS_URL".to_owned(), redis_url.to_owned()),
        ("QUEUE".to_owned(), QUEUE.to_owned()),
    ];
    vars.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    vars
}
