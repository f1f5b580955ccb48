//! Courier as real processes: `courier-api` and several `courier-worker`s started as
//! child processes (what `docker compose up --scale worker=N` runs), with their logs read.

use std::{collections::HashMap, time::Duration};

use courier_testkit::{ChildProcess, Target, TestApp, TestEnv, wait_until};
use serde_json::{Value, json};

async fn start_worker(env: &TestEnv, extra: &[(&str, &str)]) -> ChildProcess {
    ChildProcess::start_worker(&env.process_env_with(extra)).await
}

/// `env`'s variables without a metrics host and port: a worker at its defaults
/// (`0.0.0.0:9464`), as an operator starts several on one host.
fn default_metrics(env: &TestEnv, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    env.process_env_with(extra)
        .into_iter()
        .filter(|(k, _)| !k.starts_with("COURIER__WORKER__METRICS_"))
        .collect()
}

/// The `metrics_port` a worker's start-up line gives.
fn metrics_port(worker: &ChildProcess) -> u16 {
    worker
        .output()
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find(|line| line["message"] == "courier-worker started")
        .and_then(|line| line["metrics_port"].as_u64())
        .map(|p| p as u16)
        .unwrap_or_else(|| panic!("no metrics_port in the start-up line: {}", worker.output()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_worker_processes_drain_2000_jobs_each_called_exactly_once() {
    let env = TestEnv::new().await;
    let target = Target::start().await;
    // Calls that take a moment, and few per worker: one worker alone would need 2 s, so
    // the test sees whether the others joined in rather than which woke first.
    target.script(
        "/drain",
        vec![courier_testkit::Reply::status(200).after(Duration::from_millis(20))],
    );
    let app = TestApp::spawn(env.settings.clone()).await;
    // Each at the default metrics settings: on one host they cannot all have port 9464,
    // and a worker must not refuse to run jobs for that (issue 25).
    let mut workers = Vec::new();
    for _ in 0..3 {
        let vars = default_metrics(&env, &[("COURIER__WORKER__CONCURRENCY", "20")]);
        workers.push(ChildProcess::start_worker(&vars).await);
    }
    let ports: Vec<u16> = workers.iter().map(metrics_port).collect();
    let mut distinct = ports.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(distinct.len(), 3, "three metrics ports: {ports:?}");
    for (worker, port) in workers.iter().zip(&ports) {
        let ready: Value = reqwest::get(format!("http://127.0.0.1:{port}/readyz"))
            .await
            .expect("the worker's /readyz answers on the port it logged")
            .json()
            .await
            .unwrap();
        assert_eq!(ready["metrics_port"], *port, "{ready}");
        if *port != 9464 {
            assert!(
                worker
                    .output()
                    .contains("is taken (another worker on this host?)"),
                "a worker not on 9464 says why: {}",
                worker.output()
            );
        }
    }

    let ids = app
        .submit_many(2000, |_| json!({"target": {"url": target.url("/drain")}}))
        .await;
    wait_until("2000 jobs to succeed", Duration::from_secs(120), || async {
        (env.count_jobs(Some("succeeded")).await == 2000).then_some(())
    })
    .await;

    let mut calls: HashMap<String, usize> = HashMap::new();
    for received in target.received() {
        *calls
            .entry(received.job_id().expect("X-Courier-Job-Id"))
            .or_default() += 1;
    }
    assert_eq!(calls.len(), 2000, "every job was called");
    assert!(calls.values().all(|n| *n == 1), "no job was called twice");
    assert!(ids.iter().all(|id| calls.contains_key(id)));

    let per_worker: Vec<(String, i64)> = sqlx::query_as(
        "SELECT worker, count(*) FROM job_executions GROUP BY worker ORDER BY worker",
    )
    .fetch_all(&env.db)
    .await
    .unwrap();
    assert_eq!(
        per_worker.iter().map(|(_, n)| n).sum::<i64>(),
        2000,
        "one execution record per job"
    );
    assert_eq!(
        per_worker.len(),
        3,
        "all three workers took jobs: {per_worker:?}"
    );

    for mut worker in workers {
        worker.signal("TERM").await;
        let status = tokio::time::timeout(Duration::from_secs(30), worker.wait())
            .await
            .expect("worker exits on SIGTERM");
        assert!(
            status.success(),
            "worker exited with {status}: {}",
            worker.output()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_authorization_value_appears_in_no_answer_record_or_log_line() {
    let env = TestEnv::new().await;
    let target = Target::start().await;
    target.script(
        "/secret",
        vec![
            courier_testkit::Reply::status(500),
            courier_testkit::Reply::status(200),
        ],
    );
    let canary = format!("canary-{}", uuid::Uuid::new_v4().simple());
    let mut vars = env.process_env();
    vars.push(("COURIER__SERVER__PORT".into(), "0".into()));
    vars.push(("COURIER__TELEMETRY__FILTER".into(), "trace".into()));
    let api = ChildProcess::spawn("courier-api", &["serve"], &vars);
    let port = api.api_port().await;
    let worker = start_worker(&env, &[("COURIER__TELEMETRY__FILTER", "trace")]).await;

    let base = format!("http://127.0.0.1:{port}");
    let client = env.client();
    let created: Value = client
        .post(format!("{base}/v1/jobs"))
        .json(&json!({"target": {"url": target.url("/secret"), "headers": {
            "Authorization": format!("Bearer {canary}"), "X-Api-Key": canary, "Cookie": format!("session={canary}")}},
            "backoff": {"initial_ms": 10, "jitter": false}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["id"].as_str().unwrap().to_owned();
    let mut answers = created.to_string();
    // A job that waits in Redis for the rest of the test, so the Redis dump below sees one.
    let waiting = client
        .post(format!("{base}/v1/jobs"))
        .json(
            &json!({"target": {"url": target.url("/later"), "headers": {"Authorization": canary}},
            "run_at": "2999-01-01T00:00:00Z"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(waiting.status(), 201);
    answers.push_str(&waiting.text().await.unwrap());
    wait_until("the job to succeed", Duration::from_secs(20), || async {
        let job: Value = client
            .get(format!("{base}/v1/jobs/{id}"))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        (job["state"] == "succeeded").then_some(())
    })
    .await;
    for path in [
        format!("/v1/jobs/{id}"),
        format!("/v1/jobs/{id}/executions"),
        "/v1/jobs".into(),
    ] {
        answers.push_str(
            &client
                .get(format!("{base}{path}"))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap(),
        );
    }
    assert!(
        answers.contains("[redacted]"),
        "secret headers are shown redacted: {answers}"
    );

    let got = target.received_on("/secret");
    assert_eq!(got.len(), 2);
    assert_eq!(
        got[1].header("authorization"),
        Some(format!("Bearer {canary}")),
        "the target gets the real value"
    );

    let records: Vec<String> =
        sqlx::query_scalar("SELECT row_to_json(e)::text FROM job_executions e")
            .fetch_all(&env.db)
            .await
            .unwrap();
    assert_eq!(records.len(), 2);
    assert!(
        !answers.contains(&canary),
        "an API answer leaked the secret"
    );
    assert!(
        !records.concat().contains(&canary),
        "an execution record leaked the secret"
    );
    // The raw database: every table, as pg_dump writes it.
    let dump = std::process::Command::new("pg_dump")
        .args(["--data-only", "--no-owner", &env.database_url])
        .output()
        .expect("run pg_dump");
    assert!(
        dump.status.success(),
        "{}",
        String::from_utf8_lossy(&dump.stderr)
    );
    let dump = String::from_utf8_lossy(&dump.stdout);
    assert!(
        dump.contains("sealed:v1:"),
        "secret headers are stored sealed"
    );
    assert!(
        !dump.contains(&canary),
        "PostgreSQL holds the secret in the clear"
    );
    // And everything under the test's Redis prefix.
    let redis = redis_dump(&env.settings.redis.prefix);
    assert!(
        redis.contains("sealed:v1:"),
        "the waiting job is in Redis: {redis}"
    );
    assert!(
        !redis.contains(&canary),
        "Redis holds the secret in the clear"
    );
    assert!(!api.output().is_empty() && !worker.output().is_empty());
    assert!(
        !api.output().contains(&canary),
        "the api log leaked the secret"
    );
    assert!(
        !worker.output().contains(&canary),
        "the worker log leaked the secret"
    );
}

/// Every value under `prefix` in the shared Redis, as text.
fn redis_dump(prefix: &str) -> String {
    let cli = |args: &[&str]| {
        let out = std::process::Command::new("redis-cli")
            .args(["-u", &courier_testkit::redis_url(), "--no-raw"])
            .args(args)
            .output()
            .expect("run redis-cli");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let mut dump = String::new();
    for key in cli(&["--scan", "--pattern", &format!("{prefix}*")]).lines() {
        let key = key.trim().trim_matches('"');
        let value = match cli(&["type", key]).trim() {
            "hash" => cli(&["hgetall", key]),
            "zset" => cli(&["zrange", key, "0", "-1"]),
            "list" => cli(&["lrange", key, "0", "-1"]),
            "set" => cli(&["smembers", key]),
            _ => cli(&["get", key]),
        };
        dump.push_str(key);
        dump.push_str(&value);
    }
    dump
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn settings_that_cannot_work_stop_both_binaries_naming_the_setting() {
    let env = TestEnv::new().await;
    let cases = [
        ("COURIER__WORKER__CONCURRENCY", "0", "worker.concurrency"),
        ("COURIER__WORKER__LEASE_MS", "100", "worker.lease_ms"),
        ("COURIER__WORKER__FETCH_BATCH", "0", "worker.fetch_batch"),
        (
            "COURIER__REDIS__MISSING_CHECK_MS",
            "50",
            "redis.missing_check_ms",
        ),
        (
            "COURIER__DATABASE__MAX_CONNECTIONS",
            "0",
            "database.max_connections",
        ),
    ];
    for (variable, value, setting) in cases {
        let vars = env.process_env_with(&[(variable, value), ("COURIER__SERVER__PORT", "0")]);
        for (binary, args) in [("courier-api", &["serve"][..]), ("courier-worker", &[][..])] {
            let mut process = ChildProcess::spawn(binary, args, &vars);
            let status = tokio::time::timeout(Duration::from_secs(20), process.wait())
                .await
                .unwrap_or_else(|_| panic!("{binary} with {variable}={value} kept running"));
            assert!(
                !status.success(),
                "{binary} with {variable}={value} started"
            );
            let said = process.output();
            assert!(
                said.contains(setting) && said.contains(variable),
                "{binary} with {variable}={value} said: {said}"
            );
        }
    }
}

/// `courier-worker healthcheck`, the container health check (docker-compose.yml,
/// Dockerfile.worker): 0 while the worker on that metrics port is ready, 1 once
/// PostgreSQL is out of its reach (here: a worker whose database does not exist), and 1
/// where no worker listens.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_worker_healthcheck_says_whether_the_worker_on_its_port_is_ready() {
    let env = TestEnv::new().await;
    let healthcheck = |port: u16| {
        let vars = env.process_env_with(&[("COURIER__WORKER__METRICS_PORT", &port.to_string())]);
        async move {
            let mut check = ChildProcess::spawn("courier-worker", &["healthcheck"], &vars);
            check.wait().await.code()
        }
    };
    let ready = start_worker(&env, &[]).await;
    let port = metrics_port(&ready);
    assert_eq!(healthcheck(port).await, Some(0), "{}", ready.output());

    let mut no_db = env.process_env_with(&[]);
    for (k, v) in &mut no_db {
        if k == "DATABASE_URL" || k == "COURIER__DATABASE__URL" {
            *v = format!("{}_missing", v.trim_end_matches('/'));
        }
    }
    let unready = ChildProcess::start_worker(&no_db).await;
    let unready_port = metrics_port(&unready);
    assert_eq!(
        healthcheck(unready_port).await,
        Some(1),
        "{}",
        unready.output()
    );

    drop(ready);
    wait_until("the worker gone", Duration::from_secs(20), || async {
        (healthcheck(port).await == Some(1)).then_some(())
    })
    .await;
    let mut bad = ChildProcess::spawn(
        "courier-worker",
        &["--frobnicate"],
        &env.process_env_with(&[]),
    );
    assert_ne!(bad.wait().await.code(), Some(0));
    assert!(
        bad.output().contains("usage: courier-worker [healthcheck]"),
        "{}",
        bad.output()
    );
}
