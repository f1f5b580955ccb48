//! SPEC 5's guarantees, proved by doing the faults to real processes: workers killed
//! with SIGKILL, paused with SIGSTOP, stopped with SIGTERM; a Redis of the test's own
//! killed, restarted from its AOF and wiped; a PostgreSQL cluster of the test's own
//! stopped. Each test counts what was lost (nothing) and what ran twice.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use courier_core::queue::Marker;
use courier_testkit::{
    ChildProcess, PgCluster, RedisServer, Reply, Target, TestApp, TestEnv, WorkerHandle, wait_until,
};
use serde_json::{Value, json};

/// Waits until every job in `ids` is in a terminal state; returns the states by id.
async fn wait_all_terminal(
    env: &TestEnv,
    ids: &[String],
    timeout: Duration,
) -> HashMap<String, String> {
    let ids: Vec<uuid::Uuid> = ids.iter().map(|id| id.parse().unwrap()).collect();
    wait_until(&format!("{} jobs to end", ids.len()), timeout, || async {
        let rows: Vec<(String, String)> =
            sqlx::query_as("SELECT id::text, state::text FROM jobs WHERE id = ANY($1)")
                .bind(&ids)
                .fetch_all(&env.db)
                .await
                .ok()?;
        let done = rows
            .iter()
            .all(|(_, s)| matches!(s.as_str(), "succeeded" | "dead" | "cancelled"));
        (rows.len() == ids.len() && done).then(|| rows.into_iter().collect())
    })
    .await
}

async fn start_worker(env: &TestEnv, extra: &[(&str, &str)]) -> ChildProcess {
    ChildProcess::start_worker(&env.process_env_with(extra)).await
}

async fn executions(env: &TestEnv) -> Vec<(String, String, bool)> {
    sqlx::query_as("SELECT job_id::text, outcome, stale FROM job_executions ORDER BY started_at")
        .fetch_all(&env.db)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_jobs_of_a_killed_worker_run_again_within_the_lease() {
    const LEASE_MS: u64 = 5000;
    let env = TestEnv::new().await;
    let target = Target::start().await;
    let mut replies = vec![Reply::status(200).after(Duration::from_secs(120)); 50];
    replies.push(Reply::status(200));
    target.script("/long", replies);
    let app = TestApp::spawn(env.settings.clone()).await;
    let lease = LEASE_MS.to_string();
    let mut doomed = start_worker(&env, &[("COURIER__WORKER__LEASE_MS", &lease)]).await;
    let ids = app
        .submit_many(
            50,
            |_| json!({"target": {"url": target.url("/long")}, "timeout_ms": 300_000}),
        )
        .await;
    wait_until("50 calls in flight", Duration::from_secs(20), || async {
        (target.count() == 50).then_some(())
    })
    .await;

    doomed.signal("KILL").await;
    doomed.wait().await;
    let killed = Instant::now();
    let _rescuer = start_worker(&env, &[("COURIER__WORKER__LEASE_MS", &lease)]).await;
    let states = wait_all_terminal(&env, &ids, Duration::from_secs(60)).await;
    assert!(states.values().all(|s| s == "succeeded"), "{states:?}");

    let calls = target.received_on("/long");
    assert_eq!(calls.len(), 100, "each job: the killed call and one more");
    let slowest = calls[50..]
        .iter()
        .map(|c| c.at.duration_since(killed))
        .max()
        .unwrap();
    assert!(
        slowest <= Duration::from_millis(LEASE_MS) + Duration::from_secs(5),
        "restarted after {slowest:?}"
    );
    // Records land shortly after the states they explain (each through its worker's
    // history batch); wait for all of them.
    wait_until(
        "a record of every call",
        Duration::from_secs(20),
        || async {
            let records = executions(&env).await;
            let count = |outcome: &str| records.iter().filter(|(_, o, _)| o == outcome).count();
            (count("lease_expired") == 50 && count("succeeded") == 50).then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_paused_worker_that_lost_its_lease_cannot_complete_the_job() {
    let env = TestEnv::new().await;
    let target = Target::start().await;
    target.script(
        "/stall",
        vec![
            Reply::status(200).after(Duration::from_secs(3)),
            Reply::status(200),
        ],
    );
    let app = TestApp::spawn(env.settings.clone()).await;
    let lease = [("COURIER__WORKER__LEASE_MS", "1500")];
    let paused = start_worker(&env, &lease).await;
    let id = app
        .submit(json!({"target": {"url": target.url("/stall")}, "max_attempts": 3}))
        .await;
    wait_until("the first call", Duration::from_secs(20), || async {
        (target.count() == 1).then_some(())
    })
    .await;
    // Not in the middle of its history batch: a worker stopped inside the transaction
    // that marks the job running holds the job's row, and every other writer of that
    // row waits until the stopped process dies (seen once under a loaded suite).
    app.wait_for_state(&id, "running", Duration::from_secs(20))
        .await;
    paused.signal("STOP").await;

    let mut settings = env.settings.clone();
    settings.worker.lease_ms = 1500;
    let rescuer = WorkerHandle::spawn(settings).await;
    let job = app
        .wait_for_state(&id, "succeeded", Duration::from_secs(30))
        .await;
    rescuer.stop().await;
    assert_eq!(job["attempts"], 2);

    paused.signal("CONT").await;
    let records = wait_until(
        "the paused attempt's late record",
        Duration::from_secs(30),
        || async {
            let records = executions(&env).await;
            records
                .iter()
                .any(|(_, _, stale)| *stale)
                .then_some(records)
        },
    )
    .await;
    let outcomes: Vec<_> = records.iter().map(|(_, o, s)| (o.as_str(), *s)).collect();
    assert!(
        outcomes.contains(&("lease_expired", false)) && outcomes.contains(&("succeeded", false)),
        "{outcomes:?}"
    );
    let job = app.job(&id).await;
    assert_eq!(
        job["state"], "succeeded",
        "the stale result changed nothing"
    );
    assert_eq!(job["attempts"], 2);
    assert_eq!(target.count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_lets_calls_in_flight_finish_and_hands_back_the_rest() {
    let env = TestEnv::new().await;
    let target = Target::start().await;
    target.script(
        "/finish",
        vec![Reply::status(200).after(Duration::from_secs(2))],
    );
    let app = TestApp::spawn(env.settings.clone()).await;

    // Within the grace period: all 100 calls finish, none runs twice.
    let mut worker = start_worker(&env, &[]).await;
    let ids = app
        .submit_many(100, |_| json!({"target": {"url": target.url("/finish")}}))
        .await;
    wait_until("100 calls in flight", Duration::from_secs(20), || async {
        (target.count() == 100).then_some(())
    })
    .await;
    worker.signal("TERM").await;
    let status = tokio::time::timeout(Duration::from_secs(30), worker.wait())
        .await
        .expect("worker exits");
    assert!(status.success(), "{}", worker.output());
    let states = wait_all_terminal(&env, &ids, Duration::from_secs(10)).await;
    assert!(states.values().all(|s| s == "succeeded"), "{states:?}");
    assert_eq!(target.count(), 100);

    // Past the grace period: the calls still running are handed back without using up
    // an attempt, and another worker runs them.
    let mut replies = vec![Reply::status(200).after(Duration::from_secs(120)); 20];
    replies.push(Reply::status(200));
    target.script("/endless", replies);
    let mut worker = start_worker(&env, &[("COURIER__WORKER__SHUTDOWN_GRACE_MS", "500")]).await;
    let ids = app
        .submit_many(
            20,
            |_| json!({"target": {"url": target.url("/endless")}, "max_attempts": 1}),
        )
        .await;
    wait_until("20 calls in flight", Duration::from_secs(20), || async {
        (target.received_on("/endless").len() == 20).then_some(())
    })
    .await;
    worker.signal("TERM").await;
    let status = tokio::time::timeout(Duration::from_secs(30), worker.wait())
        .await
        .expect("worker exits");
    assert!(status.success(), "{}", worker.output());
    let _next = start_worker(&env, &[]).await;
    let states = wait_all_terminal(&env, &ids, Duration::from_secs(30)).await;
    assert!(
        states.values().all(|s| s == "succeeded"),
        "max_attempts 1 and still succeeded: {states:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_job_accepted_while_redis_is_killed_and_restarted_ends_terminal() {
    let mut redis = RedisServer::start(true, &[]).await;
    let env = TestEnv::on(&courier_testkit_admin(), &redis.url()).await;
    let target = Target::start().await;
    let mut settings = env.settings.clone();
    settings.redis.command_timeout_ms = 1000;
    settings.server.dispatch_interval_ms = 200;
    let app = TestApp::spawn(settings.clone()).await;
    let _worker = WorkerHandle::spawn(settings).await;

    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let poster = {
        let client = app.client.clone();
        let url = app.url("/v1/jobs");
        let job = json!({"target": {"url": target.url("/stream")}});
        tokio::spawn(async move {
            let mut answers = HashMap::new();
            for _ in 0..600 {
                let response = client
                    .post(&url)
                    .json(&job)
                    .send()
                    .await
                    .expect("the api stays up");
                *answers.entry(response.status().as_u16()).or_insert(0) += 1;
                if response.status().is_success() {
                    let body: Value = response.json().await.unwrap();
                    tx.send(body["id"].as_str().unwrap().to_owned()).unwrap();
                }
            }
            answers
        })
    };
    wait_until(
        "the stream to get going",
        Duration::from_secs(20),
        || async { (target.count() >= 100).then_some(()) },
    )
    .await;
    redis.kill9().await;
    let down = chrono::Utc::now();
    tokio::time::sleep(Duration::from_secs(1)).await; // the outage
    redis.restart().await;
    let up = chrono::Utc::now();
    let answers = poster.await.unwrap();
    let during: i64 =
        sqlx::query_scalar("SELECT count(*) FROM jobs WHERE created_at BETWEEN $1 AND $2")
            .bind(down)
            .bind(up)
            .fetch_one(&env.db)
            .await
            .unwrap();
    assert!(during > 0, "some jobs were accepted while redis was down");
    assert_eq!(
        answers.keys().copied().collect::<Vec<_>>(),
        [201],
        "every POST was accepted: {answers:?}"
    );
    let mut accepted = Vec::new();
    while let Ok(id) = rx.try_recv() {
        accepted.push(id);
    }
    assert_eq!(accepted.len(), 600);
    let states = wait_all_terminal(&env, &accepted, Duration::from_secs(60)).await;
    assert!(states.values().all(|s| s == "succeeded"), "{states:?}");
    let called: std::collections::HashSet<_> = target
        .received()
        .iter()
        .filter_map(|r| r.job_id())
        .collect();
    assert!(
        accepted.iter().all(|id| called.contains(id)),
        "every accepted job was called"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn after_flushall_every_queued_scheduled_and_running_job_ends_terminal() {
    let redis = RedisServer::start(false, &[]).await;
    let env = TestEnv::on(&courier_testkit_admin(), &redis.url()).await;
    let target = Target::start().await;
    // The first 300 calls stay in flight until long after the wipe (their worker aborts
    // them once it sees their leases gone); every later call answers at once.
    let mut replies = vec![Reply::status(200).after(Duration::from_secs(20)); 300];
    replies.push(Reply::status(200));
    target.script("/work", replies);
    let app = TestApp::spawn(env.settings.clone()).await;
    let mut settings = env.settings.clone();
    settings.worker.concurrency = 300;
    let _worker = WorkerHandle::spawn(settings).await;

    let mut ids = app
        .submit_many(300, |_| json!({"target": {"url": target.url("/work")}}))
        .await;
    wait_until("300 running", Duration::from_secs(20), || async {
        (target.count() == 300).then_some(())
    })
    .await;
    ids.extend(
        app.submit_many(400, |_| json!({"target": {"url": target.url("/work")}}))
            .await,
    );
    ids.extend(
        app.submit_many(
            300,
            |_| json!({"target": {"url": target.url("/work")}, "delay_ms": 3000}),
        )
        .await,
    );
    assert_eq!(
        env.count_jobs(Some("running")).await + env.count_jobs(Some("queued")).await,
        700
    );

    redis.command(&["FLUSHALL"]).await;
    let wiped = Instant::now();
    let states = wait_all_terminal(&env, &ids, Duration::from_secs(90)).await;
    assert_eq!(states.len(), 1000);
    assert!(states.values().all(|s| s == "succeeded"), "{states:?}");
    let recovered = wiped.elapsed();
    assert!(recovered < Duration::from_secs(60), "{recovered:?}");
    let mut calls: HashMap<String, usize> = HashMap::new();
    for received in target.received() {
        *calls.entry(received.job_id().unwrap()).or_default() += 1;
    }
    assert!(
        ids.iter().all(|id| calls.contains_key(id)),
        "every job was called"
    );
    // SPEC 5: a duplicate only for a call in flight at the fault, and only one.
    let twice = calls.values().filter(|n| **n == 2).count();
    let more: Vec<_> = calls.iter().filter(|(_, n)| **n > 2).collect();
    assert!(
        more.is_empty(),
        "jobs called more than twice after one FLUSHALL: {more:?}"
    );
    assert!(
        twice <= 300,
        "{twice} jobs ran twice, but only 300 calls were in flight at the wipe"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_postgresql_stopped_writes_get_503_and_no_execution_record_is_lost() {
    let pg = PgCluster::start().await;
    let env = TestEnv::on(&pg.url("postgres"), &courier_testkit::redis_url()).await;
    let target = Target::start().await;
    target.script(
        "/busy",
        vec![Reply::status(200).after(Duration::from_millis(1500))],
    );
    let mut settings = env.settings.clone();
    settings.database.connect_timeout_ms = 1000;
    let app = TestApp::spawn(settings.clone()).await;
    let _worker = WorkerHandle::spawn(settings).await;
    let ids = app
        .submit_many(500, |_| json!({"target": {"url": target.url("/busy")}}))
        .await;
    wait_until("calls in flight", Duration::from_secs(20), || async {
        (target.count() >= 200).then_some(())
    })
    .await;

    pg.stop().await;
    let outage = Instant::now();
    let response = app
        .client
        .post(app.url("/v1/jobs"))
        .json(&json!({"target": {"url": target.url("/x")}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    assert!(response.headers().contains_key("retry-after"));
    let response = app
        .client
        .get(app.url(&format!("/v1/jobs/{}", ids[0])))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    let (status, _) = app.get("/readyz").await;
    assert_eq!(status, 503);
    tokio::time::sleep(Duration::from_secs(10).saturating_sub(outage.elapsed())).await; // the outage
    pg.start_again().await;

    let states = wait_all_terminal(&env, &ids, Duration::from_secs(60)).await;
    assert!(states.values().all(|s| s == "succeeded"), "{states:?}");
    let records: i64 = sqlx::query_scalar("SELECT count(*) FROM job_executions WHERE NOT stale")
        .fetch_one(&env.db)
        .await
        .unwrap();
    assert_eq!(records, 500, "one execution record per job, none lost");
    assert_eq!(target.count(), 500, "and no call repeated");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_redis_that_can_evict_jobs_is_reported_at_start_and_by_readyz() {
    let redis = RedisServer::start(false, &["--maxmemory-policy", "allkeys-lru"]).await;
    let env = TestEnv::on(&courier_testkit_admin(), &redis.url()).await;
    let mut vars = env.process_env();
    vars.push(("COURIER__SERVER__PORT".into(), "0".into()));
    let api = ChildProcess::spawn("courier-api", &["serve"], &vars);
    let worker = ChildProcess::spawn("courier-worker", &[], &vars);
    let port = api.api_port().await;
    for (name, process) in [("api", &api), ("worker", &worker)] {
        let logged = wait_until("the eviction error", Duration::from_secs(20), || async {
            process
                .output()
                .lines()
                .find(|l| l.contains("allkeys-lru"))
                .map(str::to_owned)
        })
        .await;
        let line: Value = serde_json::from_str(&logged).unwrap();
        assert_eq!(line["level"], "ERROR", "{name}: {logged}");
        assert!(
            process.output().contains("AOF is off"),
            "{name} warns about AOF"
        );
    }
    let response = reqwest::get(format!("http://127.0.0.1:{port}/readyz"))
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    let problem: Value = response.json().await.unwrap();
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("maxmemory-policy is allkeys-lru"),
        "{problem}"
    );
}

/// The admin URL of the machine's PostgreSQL.
fn courier_testkit_admin() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rolling_restart_of_the_api_loses_no_request() {
    let env = TestEnv::new().await;
    let port = courier_testkit::free_port();
    let mut vars = env.process_env();
    vars.push(("COURIER__SERVER__PORT".into(), port.to_string()));
    let base = format!("http://127.0.0.1:{port}");
    let client = env.client();
    let ready = |client: reqwest::Client, base: String| async move {
        wait_until("the api to be ready", Duration::from_secs(20), || async {
            client
                .get(format!("{base}/healthz"))
                .send()
                .await
                .ok()
                .filter(|r| r.status().is_success())
                .map(|_| ())
        })
        .await
    };
    let mut old = ChildProcess::spawn("courier-api", &["serve"], &vars);
    ready(client.clone(), base.clone()).await;

    // Eight clients, 150 jobs each, retrying (same Idempotency-Key) while no API listens.
    let mut clients = Vec::new();
    for c in 0..8 {
        let (client, base) = (client.clone(), base.clone());
        clients.push(tokio::spawn(async move {
            let mut statuses = Vec::new();
            for i in 0..150 {
                let key = format!("roll-{c}-{i}");
                let job = json!({"target": {"url": format!("http://127.0.0.1:9/{key}")}});
                loop {
                    match client
                        .post(format!("{base}/v1/jobs"))
                        .header("idempotency-key", &key)
                        .json(&job)
                        .send()
                        .await
                    {
                        Ok(response) => {
                            statuses.push(response.status().as_u16());
                            break;
                        }
                        Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                    }
                }
            }
            statuses
        }));
    }
    wait_until(
        "the stream to get going",
        Duration::from_secs(20),
        || async { (env.count_jobs(None).await >= 200).then_some(()) },
    )
    .await;
    old.signal("TERM").await;
    let exit = tokio::time::timeout(Duration::from_secs(30), old.wait())
        .await
        .expect("the api exits on SIGTERM");
    assert!(exit.success(), "{}", old.output());
    let _new = ChildProcess::spawn("courier-api", &["serve"], &vars);

    let mut answers: HashMap<u16, usize> = HashMap::new();
    for c in clients {
        for status in c.await.unwrap() {
            *answers.entry(status).or_default() += 1;
        }
    }
    assert!(
        answers.keys().all(|s| *s == 201 || *s == 200),
        "only 201s, and 200s for retried keys: {answers:?}"
    );
    assert_eq!(answers.values().sum::<usize>(), 1200);
    assert_eq!(
        env.count_jobs(None).await,
        1200,
        "every request stored once"
    );
}

/// How many fields the hash `key` holds.
async fn hlen(redis: &RedisServer, key: &str) -> usize {
    match redis.command(&["HLEN", key]).await {
        redis::Value::Int(n) => n as usize,
        other => panic!("HLEN answered {other:?}"),
    }
}

/// Issue 25: a loss of Redis data that lands while a reconciliation runs. Redis restarts
/// (its `run_id` changes, its data survives in the AOF), an API process starts to
/// reconcile 30,000 live jobs, and Redis is wiped while it reads them. Before the fix the
/// reconciliation settled the marker under the same `run_id` when it ended, and every
/// job it had already seen in Redis stayed lost for good. The missing-job check is off:
/// the reconciliation alone must put every job back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flushall_while_a_reconciliation_runs_strands_no_job() {
    const JOBS: usize = 30_000;
    let mut redis = RedisServer::start(true, &[]).await;
    let env = TestEnv::on(&courier_testkit_admin(), &redis.url()).await;
    let vars = env.process_env_with(&[
        ("COURIER__SERVER__PORT", "0"),
        ("COURIER__REDIS__MISSING_CHECK_MS", "0"),
    ]);
    let api = ChildProcess::spawn("courier-api", &["serve"], &vars);
    let base = format!("http://127.0.0.1:{}", api.api_port().await);
    let client = env.client();
    // Due in an hour: live in PostgreSQL and in Redis's scheduled set, never called.
    for start in (0..JOBS).step_by(1000) {
        let jobs: Vec<Value> = (start..start + 1000)
            .map(|i| json!({"target": {"url": format!("http://127.0.0.1:9/{i}")}, "delay_ms": 3_600_000}))
            .collect();
        let response = client
            .post(format!("{base}/v1/jobs/batch"))
            .json(&json!({"jobs": jobs}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
    }
    let jobs_key = format!("{}:{{default}}:jobs", env.settings.redis.prefix);
    wait_until("every job in redis", Duration::from_secs(60), || async {
        (hlen(&redis, &jobs_key).await == JOBS).then_some(())
    })
    .await;
    let queue = courier_core::queue::RedisQueue::new(&env.settings.redis).unwrap();
    let marker = || async { queue.marker(Marker::All).await.ok() };
    wait_until(
        "the first reconciliation",
        Duration::from_secs(20),
        || async { marker().await.filter(|m| m.is_settled()).map(|_| ()) },
    )
    .await;

    // A restart: a new run_id, the data kept. A reconciliation starts within a second.
    redis.restart().await;
    wait_until(
        "a reconciliation to start",
        Duration::from_secs(20),
        || async { marker().await.filter(|m| m.is_claimed()).map(|_| ()) },
    )
    .await;
    // Into its reading: it has asked Redis about 10 pages of 1,000 jobs (one script
    // call each) of the 30, and found them there.
    let scripts_run = || async {
        let redis::Value::BulkString(info) = redis.command(&["INFO", "commandstats"]).await else {
            panic!("INFO answers a bulk string")
        };
        let info = String::from_utf8(info).unwrap();
        info.lines()
            .find_map(|l| l.strip_prefix("cmdstat_evalsha:calls="))
            .and_then(|l| l.split(',').next())
            .map_or(0, |n| n.parse::<u64>().unwrap())
    };
    let claimed_at = scripts_run().await;
    wait_until(
        "the reconciliation to read 10 pages",
        Duration::from_secs(20),
        || async { (scripts_run().await >= claimed_at + 10).then_some(()) },
    )
    .await;
    redis.command(&["FLUSHALL"]).await;
    let wiped = Instant::now();
    assert!(
        !marker().await.is_some_and(|m| m.is_settled()),
        "the wipe came after the reconciliation had ended"
    );

    // A bound on liveness, not a speed: alone on this machine they are back in 9-20 s,
    // and a whole suite on 2 cores has taken over 60.
    let back = courier_testkit::wait_until_or_none(Duration::from_secs(180), || async {
        let settled = marker().await.is_some_and(|m| m.is_settled());
        (settled && hlen(&redis, &jobs_key).await == JOBS).then_some(())
    })
    .await;
    if back.is_none() {
        panic!(
            "timed out after 180s waiting for every job back in redis: marker {:?}, {} of {JOBS} \
             jobs in redis; the API's output:\n{}",
            marker().await,
            hlen(&redis, &jobs_key).await,
            api.output()
        );
    }
    eprintln!("every job was back {:?} after the wipe", wiped.elapsed());
    let live: i64 = env.count_jobs(Some("scheduled")).await;
    assert_eq!(live, JOBS as i64);
    assert_eq!(
        hlen(&redis, &jobs_key).await,
        JOBS,
        "stranded: live in PostgreSQL, not in Redis"
    );
    // The wipe landed inside the reconciliation, and was seen there.
    wait_until(
        "the reconciliation to say so",
        Duration::from_secs(10),
        || async {
            api.output()
                .contains("redis lost data again while it was being reconciled")
                .then_some(())
        },
    )
    .await;
}

/// The last net (issue 25): waiting jobs that Redis lacks although no marker shows a
/// loss (keys deleted by hand, say) are dispatched again within seconds, and each is
/// called once. Half of those deleted sit at the head of the queue, half deep in a
/// backlog of a lower priority, which only the walk over every waiting job reaches.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn waiting_jobs_redis_lacks_without_a_marker_showing_it_are_dispatched_again() {
    let redis = RedisServer::start(false, &[]).await;
    let env = TestEnv::on(&courier_testkit_admin(), &redis.url()).await;
    let target = Target::start().await;
    let mut settings = env.settings.clone();
    settings.redis.missing_check_ms = 500;
    let app = TestApp::spawn(settings.clone()).await;
    let mut ids = app
        .submit_many(1500, |i| {
            json!({"queue": "net", "target": {"url": target.url(&format!("/net/{i}"))}, "priority": 5})
        })
        .await;
    ids.extend(
        app.submit_many(1500, |i| {
            json!({"queue": "net", "target": {"url": target.url(&format!("/low/{i}"))}, "priority": 0})
        })
        .await,
    );
    let prefix = &env.settings.redis.prefix;
    let jobs_key = format!("{prefix}:{{net}}:jobs");
    let queued_key = format!("{prefix}:{{net}}:queued");
    wait_until("every job in redis", Duration::from_secs(30), || async {
        (hlen(&redis, &jobs_key).await == 3000).then_some(())
    })
    .await;
    // 50 at the head of the queue, and 50 among the last of the low-priority backlog.
    let lost: Vec<&String> = ids[..50].iter().chain(&ids[2900..2950]).collect();
    for id in &lost {
        redis.command(&["HDEL", &jobs_key, id]).await;
        redis.command(&["ZREM", &queued_key, id]).await;
    }
    assert_eq!(hlen(&redis, &jobs_key).await, 2900);
    let deleted = Instant::now();
    wait_until(
        "the lost jobs back in redis",
        Duration::from_secs(60),
        || async { (hlen(&redis, &jobs_key).await == 3000).then_some(()) },
    )
    .await;
    eprintln!(
        "100 lost jobs were back in redis {:?} after",
        deleted.elapsed()
    );

    let _worker = WorkerHandle::spawn(settings).await;
    let states = wait_all_terminal(&env, &ids, Duration::from_secs(120)).await;
    assert!(states.values().all(|s| s == "succeeded"));
    let mut calls: HashMap<String, usize> = HashMap::new();
    for received in target.received() {
        *calls.entry(received.job_id().unwrap()).or_default() += 1;
    }
    assert_eq!(calls.len(), 3000, "every job was called");
    let twice: Vec<_> = calls.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "called more than once: {twice:?}");
    // This process's API made the passes: its counter says what the net put back.
    let metrics = courier_core::metrics::render();
    assert!(
        metrics.contains("courier_jobs_redispatched_total{reason=\"missing\"} 100\n"),
        "{metrics}"
    );
}

/// A process that registered a queue in Redis's set of queues before Redis lost its data
/// keeps its note that it did, and dispatches the queue's next jobs without adding it
/// again (here: a process of the test's own, which never reconciles). Workers serving
/// every queue read that set, so those jobs waited unseen for good when the
/// reconciliation had nothing to put back itself (every job had ended at the wipe).
/// Now every check puts back into the set the queues PostgreSQL has live jobs of.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn jobs_dispatched_after_a_wipe_by_a_process_that_knew_their_queue_are_run() {
    let redis = RedisServer::start(false, &[]).await;
    let env = TestEnv::on(&courier_testkit_admin(), &redis.url()).await;
    let target = Target::start().await;
    let app = TestApp::spawn(env.settings.clone()).await;
    let _worker = WorkerHandle::spawn(env.settings.clone()).await;
    let queue = courier_core::queue::RedisQueue::new(&env.settings.redis).unwrap();
    let dispatcher = courier_core::stages::Dispatcher::new(env.db.clone(), queue.clone());
    let accept_one = |i: usize| {
        let (db, dispatcher, url) = (
            env.db.clone(),
            dispatcher.clone(),
            target.url(&format!("/late/{i}")),
        );
        async move {
            let target = courier_core::domain::Target {
                url: courier_core::domain::TargetUrl::parse(&url).unwrap(),
                method: courier_core::domain::Method::Post,
                headers: vec![],
                body: String::new(),
            };
            let job = courier_core::domain::NewJob {
                id: courier_core::JobId::new(),
                queue: courier_core::QueueName::parse("late").unwrap(),
                spec: courier_core::domain::JobSpec::new(target),
                labels: Default::default(),
                run_at: chrono::Utc::now(),
                callback_of: None,
            };
            let accepted = courier_core::stages::accept(&db, &[job], &[], chrono::Utc::now())
                .await
                .unwrap();
            // As the API's intake does: in Redis, so out of the dispatch outbox.
            let outbox = accepted.outbox;
            assert!(dispatcher.enqueue_now(&accepted.into_dispatches()).await);
            dispatcher.clear_outbox(&[outbox]).await;
        }
    };
    // This process registers queue `late`; the job runs.
    accept_one(0).await;
    wait_until("the first job's call", Duration::from_secs(20), || async {
        (target.count() == 1).then_some(())
    })
    .await;
    wait_until("it to succeed", Duration::from_secs(20), || async {
        (env.count_jobs(Some("succeeded")).await == 1).then_some(())
    })
    .await;

    redis.command(&["FLUSHALL"]).await;
    wait_until("the reconciliation", Duration::from_secs(20), || async {
        let marker = queue.marker(Marker::All).await.ok()?;
        marker.is_settled().then_some(())
    })
    .await;
    // Its note says `late` is registered: these go into Redis, and the set lacks it.
    for i in 1..=5 {
        accept_one(i).await;
    }
    wait_until("the five jobs' calls", Duration::from_secs(30), || async {
        (target.count() == 6).then_some(())
    })
    .await;
    app.stop().await;
}
