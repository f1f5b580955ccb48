//! Flow control (SPEC 10): a queue's rate and concurrency limits, flow keys, pause and
//! resume, and Retry-After on a key, against real workers (in-process and as separate
//! processes), a real Redis and PostgreSQL, and a target that records when every call
//! started and how many were in flight at once.

use std::{collections::HashSet, time::Duration};

use courier_testkit::{
    ChildProcess, RedisServer, Reply, Target, TestApp, TestEnv, WorkerHandle, wait_until,
};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

async fn start_worker(env: &TestEnv, extra: &[(&str, &str)]) -> ChildProcess {
    ChildProcess::start_worker(&env.process_env_with(extra)).await
}

fn admin_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// Jobs of `queue` in `state`.
async fn count_in(env: &TestEnv, queue: &str, state: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM jobs WHERE queue = $1 AND state::text = $2")
        .bind(queue)
        .bind(state)
        .fetch_one(&env.db)
        .await
        .unwrap()
}

async fn count_key(env: &TestEnv, key: &str, state: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM jobs WHERE spec ->> 'flow_key' = $1 AND state::text = $2",
    )
    .bind(key)
    .bind(state)
    .fetch_one(&env.db)
    .await
    .unwrap()
}

async fn patch_settings(app: &TestApp, queue: &str, body: Value) -> Value {
    let (status, answer) = app
        .send(
            Method::PATCH,
            &format!("/v1/queues/{queue}/settings"),
            &body,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    answer
}

async fn put_key(app: &TestApp, key: &str, body: Value) -> Value {
    let (status, answer) = app
        .send(Method::PUT, &format!("/v1/flow-keys/{key}"), &body)
        .await;
    assert!(status.is_success(), "{status} {answer}");
    answer
}

/// The most calls that started within any span of `window` (the target's arrival times).
fn most_in_any_window(mut at: Vec<std::time::Instant>, window: Duration) -> usize {
    at.sort();
    let mut most = 0;
    let mut start = 0;
    for end in 0..at.len() {
        while at[end] - at[start] >= window {
            start += 1;
        }
        most = most.max(end - start + 1);
    }
    most
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_queue_rate_of_50_a_second_holds_across_three_worker_processes() {
    let env = TestEnv::new().await;
    let target = Target::start().await;
    let app = TestApp::spawn(env.settings.clone()).await;
    let burst = 10;
    let settings = patch_settings(
        &app,
        "rated",
        json!({"rate": {"per_second": 50, "burst": burst}}),
    )
    .await;
    assert_eq!(settings["rate"], json!({"per_second": 50.0, "burst": 10}));
    let mut workers = Vec::new();
    for _ in 0..3 {
        workers.push(start_worker(&env, &[("COURIER__WORKER__CONCURRENCY", "50")]).await);
    }
    // Submitted before the workers could start them all: they wait on the rate, not on
    // the submission.
    app.submit_many(
        2000,
        |_| json!({"queue": "rated", "target": {"url": target.url("/rated")}}),
    )
    .await;
    wait_until("2000 jobs to succeed", Duration::from_secs(120), || async {
        (count_in(&env, "rated", "succeeded").await == 2000).then_some(())
    })
    .await;

    let at: Vec<_> = target.received().iter().map(|r| r.at).collect();
    assert_eq!(at.len(), 2000, "each job was called once");
    // The bucket counts a call when Redis grants its token; the target sees it a few
    // milliseconds later, by how much varying with the load on the machine. Calls that
    // reach the target within 950 ms were granted within at most 1 s if that delay
    // varies by less than 50 ms, so those windows must hold at most 50 + burst.
    let most = most_in_any_window(at.clone(), Duration::from_millis(950));
    assert!(
        most <= 50 + burst,
        "{most} calls reached the target within 950 ms; the limit is 50 a second plus a burst of {burst}"
    );
    // The mean over the whole run, the burst at its start aside.
    let first = *at.iter().min().unwrap();
    let last = *at.iter().max().unwrap();
    let mean = (at.len() - burst) as f64 / (last - first).as_secs_f64();
    assert!(
        (mean - 50.0).abs() <= 2.5,
        "mean rate {mean:.2} a second, more than 5% from 50"
    );
    println!("rate 50/s, burst {burst}: most in any 950 ms window {most}, mean {mean:.2}/s");
    let executed: Vec<(String, i64)> =
        sqlx::query_as("SELECT worker, count(*) FROM job_executions GROUP BY worker")
            .fetch_all(&env.db)
            .await
            .unwrap();
    assert_eq!(
        executed.len(),
        3,
        "all three workers made calls: {executed:?}"
    );
    for mut worker in workers {
        worker.signal("TERM").await;
        worker.wait().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_key_at_concurrency_5_never_has_more_in_flight_and_a_killed_workers_slots_come_back() {
    let env = TestEnv::new().await;
    let target = Target::start().await;
    target.script(
        "/slow",
        vec![Reply::status(200).after(Duration::from_millis(200))],
    );
    let app = TestApp::spawn(env.settings.clone()).await;
    let key = put_key(&app, "tenant-5", json!({"max_concurrency": 5})).await;
    assert_eq!(key["max_concurrency"], 5);
    let lease = ("COURIER__WORKER__LEASE_MS", "3000");
    let mut workers = Vec::new();
    for _ in 0..3 {
        workers.push(start_worker(&env, &[lease]).await);
    }
    app.submit_many(
        200,
        |_| json!({"target": {"url": target.url("/slow")}, "flow_key": "tenant-5"}),
    )
    .await;
    // While they run, the key shows its counts.
    let counts = wait_until(
        "the key to show jobs held",
        Duration::from_secs(20),
        || async {
            let (_, key) = app.get("/v1/flow-keys/tenant-5").await;
            (key["in_flight"].as_u64()? > 0 && key["waiting"].as_i64()? > 0).then_some(key)
        },
    )
    .await;
    assert!(counts["in_flight"].as_u64().unwrap() <= 5, "{counts}");
    wait_until("200 jobs to succeed", Duration::from_secs(120), || async {
        (count_key(&env, "tenant-5", "succeeded").await == 200).then_some(())
    })
    .await;
    assert_eq!(target.received_on("/slow").len(), 200);
    let most = target.max_concurrent("/slow");
    assert!(most <= 5, "{most} calls of the key were in flight at once");
    assert_eq!(most, 5, "the key used all its slots");

    // A worker holding slots dies: its calls hang on and its leases run out.
    for mut worker in workers.drain(..) {
        worker.signal("TERM").await;
        worker.wait().await;
    }
    put_key(&app, "held", json!({"max_concurrency": 2})).await;
    target.script(
        "/hang",
        vec![Reply::status(200).after(Duration::from_secs(600))],
    );
    target.script("/quick", vec![Reply::status(200)]);
    let mut holder = start_worker(&env, &[lease]).await;
    let hung = app
        .submit_many(2, |_| {
            json!({"target": {"url": target.url("/hang")}, "flow_key": "held", "max_attempts": 1})
        })
        .await;
    wait_until("both slots taken", Duration::from_secs(20), || async {
        (target.received_on("/hang").len() == 2).then_some(())
    })
    .await;
    let waiting = app
        .submit_many(
            3,
            |_| json!({"target": {"url": target.url("/quick")}, "flow_key": "held"}),
        )
        .await;
    holder.signal("KILL").await;
    holder.wait().await;
    let killed = std::time::Instant::now();
    let _next = start_worker(&env, &[lease]).await;
    wait_until(
        "the waiting jobs to run",
        Duration::from_secs(30),
        || async { (target.received_on("/quick").len() == 3).then_some(()) },
    )
    .await;
    let freed_after = killed.elapsed();
    // The lease (3 s) plus the reaper's round (1 s) plus a start-up's margin.
    assert!(
        freed_after < Duration::from_secs(6),
        "slots came back {freed_after:?} after the kill"
    );
    for id in &waiting {
        app.wait_for_state(id, "succeeded", Duration::from_secs(20))
            .await;
    }
    for id in &hung {
        app.wait_for_state(id, "dead", Duration::from_secs(20))
            .await;
    }
    println!("slots of a kill -9'd worker free after {freed_after:?} (lease 3 s)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_key_at_its_limit_never_holds_back_another_keys_jobs() {
    let env = TestEnv::new().await;
    let target = Target::start().await;
    target.script(
        "/a",
        vec![Reply::status(200).after(Duration::from_millis(200))],
    );
    let app = TestApp::spawn(env.settings.clone()).await;
    put_key(&app, "key-a", json!({"max_concurrency": 1})).await;
    let _worker = WorkerHandle::spawn(env.settings.clone()).await;
    // A's 500 are ahead of B's 100 in the same queue.
    let a = app
        .submit_many(
            500,
            |_| json!({"target": {"url": target.url("/a")}, "flow_key": "key-a"}),
        )
        .await;
    let b = app
        .submit_many(
            100,
            |_| json!({"target": {"url": target.url("/b")}, "flow_key": "key-b"}),
        )
        .await;
    wait_until("all of B to succeed", Duration::from_secs(30), || async {
        (count_key(&env, "key-b", "succeeded").await == 100).then_some(())
    })
    .await;
    let a_done = count_key(&env, "key-a", "succeeded").await;
    assert!(a_done < 100, "A had {a_done} of 500 done when B finished");
    assert_eq!(b.len(), 100);
    // A's last job waited on its key's limit without using an attempt.
    let last = app.job(a.last().unwrap()).await;
    assert_eq!(last["state"], "queued", "{last}");
    assert_eq!(last["attempts"], 0, "{last}");
    assert_eq!(last["flow_key"], "key-a");
    // Between one of A's calls ending and the next starting, none is in flight: wait for
    // the next rather than read the instant.
    let key = wait_until(
        "A's next call in flight",
        Duration::from_secs(10),
        || async {
            let (_, key) = app.get("/v1/flow-keys/key-a").await;
            (key["in_flight"] == 1).then_some(key)
        },
    )
    .await;
    assert!(key["held"].as_u64().unwrap() > 0, "{key}");
    assert_eq!(target.max_concurrent("/a"), 1);
    println!("B's 100 jobs finished while A had {a_done} of 500 done");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_paused_queue_starts_nothing_and_stays_paused_across_an_api_restart_and_a_flushall() {
    let redis = RedisServer::start(false, &[]).await;
    let env = TestEnv::on(&admin_url(), &redis.url()).await;
    let target = Target::start().await;
    target.script(
        "/long",
        vec![Reply::status(200).after(Duration::from_secs(2))],
    );
    let app = TestApp::spawn(env.settings.clone()).await;
    let _worker = WorkerHandle::spawn(env.settings.clone()).await;
    let in_flight = app
        .submit(json!({"queue": "held", "target": {"url": target.url("/long")}}))
        .await;
    wait_until(
        "the first call to start",
        Duration::from_secs(10),
        || async { (target.received_on("/long").len() == 1).then_some(()) },
    )
    .await;
    let (status, paused) = app.post("/v1/queues/held/pause", &Value::Null).await;
    assert_eq!(status, StatusCode::OK, "{paused}");
    assert_eq!(paused["paused"], true);
    let waiting = app
        .submit_many(
            20,
            |_| json!({"queue": "held", "target": {"url": target.url("/later")}}),
        )
        .await;
    // The call in flight finishes; nothing new starts.
    app.wait_for_state(&in_flight, "succeeded", Duration::from_secs(10))
        .await;
    let (_, queues) = app.get("/v1/queues").await;
    let held = queues["queues"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["name"] == "held")
        .cloned()
        .unwrap();
    assert_eq!(held["paused"], true, "{held}");
    assert_eq!(held["queued"], 20, "{held}");

    // The API restarts, then Redis loses everything.
    app.stop().await;
    let app = TestApp::spawn(env.settings.clone()).await;
    redis.command(&["FLUSHALL"]).await;
    let jobs_key = format!("{}:{{held}}:jobs", env.settings.redis.prefix);
    wait_until(
        "the jobs to be back in redis",
        Duration::from_secs(30),
        || async {
            match redis.command(&["HLEN", &jobs_key]).await {
                redis::Value::Int(20) => Some(()),
                _ => None,
            }
        },
    )
    .await;
    // Jobs of another queue, submitted after the restore, run: the worker has looked at
    // every queue since, the paused one too.
    for _ in 0..2 {
        let control = app
            .submit(json!({"queue": "control", "target": {"url": target.url("/control")}}))
            .await;
        app.wait_for_state(&control, "succeeded", Duration::from_secs(20))
            .await;
    }
    assert_eq!(
        target.received_on("/later").len(),
        0,
        "a paused queue called"
    );
    for id in &waiting {
        let job = app.job(id).await;
        assert_eq!(job["state"], "queued", "{job}");
        assert_eq!(job["attempts"], 0, "{job}");
    }

    let (status, resumed) = app.post("/v1/queues/held/resume", &Value::Null).await;
    assert_eq!(status, StatusCode::OK, "{resumed}");
    for id in &waiting {
        app.wait_for_state(id, "succeeded", Duration::from_secs(20))
            .await;
    }
    assert_eq!(target.received_on("/later").len(), 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_429_with_retry_after_makes_the_whole_key_wait() {
    let env = TestEnv::new().await;
    let target = Target::start().await;
    target.script(
        "/limited",
        vec![
            Reply::status(429).header("Retry-After", "2"),
            Reply::status(200),
        ],
    );
    let app = TestApp::spawn(env.settings.clone()).await;
    let _worker = WorkerHandle::spawn(env.settings.clone()).await;
    let first = app
        .submit(json!({"target": {"url": target.url("/limited")}, "flow_key": "api.example"}))
        .await;
    wait_until("the 429", Duration::from_secs(10), || async {
        (target.received_on("/limited").len() == 1).then_some(())
    })
    .await;
    let refused_at = target.received_on("/limited")[0].at;
    // The key's other jobs, submitted now, wait too; another key's job does not.
    let others = app
        .submit_many(
            5,
            |_| json!({"target": {"url": target.url("/limited")}, "flow_key": "api.example"}),
        )
        .await;
    let other_key = app
        .submit(json!({"target": {"url": target.url("/free")}, "flow_key": "elsewhere"}))
        .await;
    app.wait_for_state(&other_key, "succeeded", Duration::from_secs(10))
        .await;
    let free_at = target.received_on("/free")[0].at;
    assert!(
        free_at - refused_at < Duration::from_secs(2),
        "another key's job waited too"
    );
    for id in others.iter().chain([&first]) {
        app.wait_for_state(id, "succeeded", Duration::from_secs(20))
            .await;
    }
    let calls = target.received_on("/limited");
    assert_eq!(calls.len(), 7, "the 429'd job ran again, the others once");
    let next = calls[1..].iter().map(|r| r.at).min().unwrap();
    let waited = next - refused_at;
    assert!(
        waited >= Duration::from_millis(1990),
        "the key's next call started {waited:?} after the 429 with Retry-After: 2"
    );
    println!("next call of the key {waited:?} after a 429 with Retry-After: 2");
}

#[tokio::test]
async fn bad_limits_and_bad_keys_are_refused_with_422() {
    let env = TestEnv::new().await;
    let app = TestApp::spawn(env.settings.clone()).await;
    let refused = |status: StatusCode, body: &Value, field: &str| {
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        let fields: HashSet<&str> = body["errors"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| e["field"].as_str())
            .collect();
        assert!(fields.contains(field), "{field} not in {body}");
    };
    for (body, field) in [
        (json!({"rate": {"per_second": 0}}), "rate.per_second"),
        (json!({"rate": {"per_second": -5}}), "rate.per_second"),
        (json!({"rate": {"per_second": 5, "burst": 0}}), "rate.burst"),
        (json!({"max_concurrency": 0}), "max_concurrency"),
        (json!({"max_concurrency": -1}), "max_concurrency"),
    ] {
        let (status, answer) = app
            .send(Method::PATCH, "/v1/queues/default/settings", &body)
            .await;
        refused(status, &answer, field);
        let (status, answer) = app.send(Method::PUT, "/v1/flow-keys/k", &body).await;
        refused(status, &answer, field);
    }
    // A rate that is not a number, and a field that does not exist.
    for body in [
        json!({"rate": {"per_second": "fast"}}),
        json!({"rate": 5}),
        json!({"max_concurency": 5}),
    ] {
        let (status, answer) = app
            .send(Method::PATCH, "/v1/queues/default/settings", &body)
            .await;
        assert!(status.is_client_error(), "{status} {answer}");
    }
    for bad in ["has%20space", "semi%3Bcolon", &"x".repeat(129)] {
        let (status, answer) = app
            .send(
                Method::PUT,
                &format!("/v1/flow-keys/{bad}"),
                &json!({"max_concurrency": 1}),
            )
            .await;
        refused(status, &answer, "key");
    }
    let (status, answer) = app
        .post(
            "/v1/jobs",
            &json!({"target": {"url": "http://127.0.0.1:9/x"}, "flow_key": "no spaces"}),
        )
        .await;
    refused(status, &answer, "flow_key");
    // Nothing was stored.
    let (_, settings) = app.get("/v1/queues/default/settings").await;
    assert_eq!(settings["rate"], Value::Null);
    assert_eq!(settings["max_concurrency"], Value::Null);
    let (status, _) = app.get("/v1/flow-keys/k").await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Only an admin key changes flow control.
    let writer = courier_core::repo::keys::create_key(
        &env.db,
        "writer",
        courier_core::repo::keys::Scope::Write,
        None,
    )
    .await
    .unwrap()
    .secret;
    let writer = courier_testkit::client_with_key(&writer);
    for (method, path) in [
        (Method::PATCH, "/v1/queues/default/settings"),
        (Method::POST, "/v1/queues/default/pause"),
        (Method::PUT, "/v1/flow-keys/k"),
    ] {
        let answer = writer
            .request(method, app.url(path))
            .json(&json!({"max_concurrency": 1}))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), StatusCode::FORBIDDEN, "{path}");
    }
}

#[tokio::test]
async fn settings_and_flow_keys_read_back_and_clear() {
    let env = TestEnv::new().await;
    let app = TestApp::spawn(env.settings.clone()).await;
    let (_, fresh) = app.get("/v1/queues/mail/settings").await;
    assert_eq!(
        fresh,
        json!({"queue": "mail", "paused": false, "rate": null, "max_concurrency": null, "updated_at": null})
    );
    let set = patch_settings(
        &app,
        "mail",
        json!({"rate": {"per_second": 2.5}, "max_concurrency": 4}),
    )
    .await;
    assert_eq!(set["rate"], json!({"per_second": 2.5, "burst": 3}));
    assert_eq!(set["max_concurrency"], 4);
    // Left out keeps, null clears.
    let set = patch_settings(&app, "mail", json!({"max_concurrency": null})).await;
    assert_eq!(set["rate"]["per_second"], 2.5);
    assert_eq!(set["max_concurrency"], Value::Null);
    let (_, queue) = app.get("/v1/queues/mail").await;
    assert_eq!(queue["rate"]["burst"], 3, "{queue}");
    assert_eq!(queue["paused"], false);

    let (status, created) = app
        .send(
            Method::PUT,
            "/v1/flow-keys/api.example.com:443",
            &json!({"rate": {"per_second": 10, "burst": 20}, "max_concurrency": 3}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let (status, replaced) = app
        .send(
            Method::PUT,
            "/v1/flow-keys/api.example.com:443",
            &json!({"max_concurrency": 8}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        replaced["rate"],
        Value::Null,
        "PUT replaces the limits whole"
    );
    assert_eq!(replaced["max_concurrency"], 8);
    let (_, list) = app.get("/v1/flow-keys").await;
    assert_eq!(list["flow_keys"][0]["key"], "api.example.com:443");
    let (status, _) = app
        .send(
            Method::DELETE,
            "/v1/flow-keys/api.example.com:443",
            &Value::Null,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = app
        .send(
            Method::DELETE,
            "/v1/flow-keys/api.example.com:443",
            &Value::Null,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // The OpenAPI document has them.
    let (_, doc) = app.get("/openapi.json").await;
    for path in [
        "/v1/queues/{name}/settings",
        "/v1/queues/{name}/pause",
        "/v1/queues/{name}/resume",
        "/v1/flow-keys/{key}",
    ] {
        assert!(doc["paths"].get(path).is_some(), "{path} missing");
    }
}
