//! Callbacks and progress (SPEC 11) against real workers, Redis and PostgreSQL: a job's
//! callback is one signed POST of the job per end (checked with the Standard Webhooks
//! reference library), even across a kill -9 of the worker; progress reported by the
//! target shows in `GET` and a stale attempt's report is refused.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{Router, extract::State, http::HeaderMap, routing::any};
use courier_testkit::{
    ChildProcess, Reply, Target, TestApp, TestEnv, WorkerHandle, wait_until,
    webhooks::{case, verify},
};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::sync::Notify;

const T: Duration = Duration::from_secs(30);
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

async fn callbacks_of(env: &TestEnv, parent: &str) -> Vec<(String, String)> {
    sqlx::query_as(
        "SELECT id::text, state::text FROM jobs WHERE callback_of = $1::uuid ORDER BY id",
    )
    .bind(parent)
    .fetch_all(&env.db)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_succeeded_job_posts_itself_once_signed_to_its_callback() {
    let mut env = TestEnv::new().await;
    env.settings.signing.secrets = vec![SECRET.into()];
    let target = Target::start().await;
    let app = TestApp::spawn(env.settings.clone()).await;
    let _worker = WorkerHandle::spawn(env.settings.clone()).await;
    let id = app
        .submit(json!({
            "target": {"url": target.url("/work")},
            "labels": {"order": "42"},
            "callback": {"url": target.url("/done"), "headers": {"Authorization": "Bearer cb-secret", "X-Tenant": "t1"}}
        }))
        .await;
    let parent = app.wait_for_state(&id, "succeeded", T).await;
    assert_eq!(parent["callback"]["url"], target.url("/done"));
    assert_eq!(parent["callback"]["headers"]["Authorization"], "[redacted]");
    assert_eq!(parent["callback"]["on"], json!(["succeeded", "dead"]));
    let callback = wait_until("the callback to succeed", T, || async {
        let parent = app.job(&id).await;
        let child = parent["callbacks"].as_array()?.first()?.clone();
        (child["state"] == "succeeded").then_some(child)
    })
    .await;
    let child = app.job(callback["id"].as_str().unwrap()).await;
    assert_eq!(child["callback_of"], id.as_str());
    assert_eq!(child["callback"], Value::Null, "a callback has no callback");
    assert_eq!(child["target"]["headers"]["Authorization"], "[redacted]");

    let posts = target.received_on("/done");
    assert_eq!(posts.len(), 1, "one POST");
    let post = &posts[0];
    assert_eq!(post.method, "POST");
    assert_eq!(
        post.header("authorization").as_deref(),
        Some("Bearer cb-secret")
    );
    assert_eq!(post.header("x-tenant").as_deref(), Some("t1"));
    assert_eq!(
        post.header("content-type").as_deref(),
        Some("application/json")
    );
    let body: Value = serde_json::from_slice(&post.body).unwrap();
    assert_eq!(body["id"], id.as_str());
    assert_eq!(body["state"], "succeeded");
    assert_eq!(body["labels"]["order"], "42");
    assert_eq!(body["attempts"], 1);
    assert_eq!(body["last_outcome"]["status_code"], 200);
    assert_eq!(
        verify(&[case(post, SECRET, None)]),
        [true],
        "signature verifies"
    );
    assert_eq!(callbacks_of(&env, &id).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dead_and_cancelled_jobs_call_back_once_and_a_callback_target_down_at_first_gets_it() {
    let env = TestEnv::new().await;
    let target = Target::start().await;
    target.script("/fail", vec![Reply::status(500)]);
    // The callback target is down (503) for two tries, then takes it.
    target.script(
        "/cb-dead",
        vec![Reply::status(503), Reply::status(503), Reply::status(204)],
    );
    let app = TestApp::spawn(env.settings.clone()).await;
    let _worker = WorkerHandle::spawn(env.settings.clone()).await;
    let fast = json!({"initial_ms": 10, "jitter": false});
    let dead = app
        .submit(
            json!({"target": {"url": target.url("/fail")}, "max_attempts": 2, "backoff": fast,
                       "callback": {"url": target.url("/cb-dead")}}),
        )
        .await;
    let cancelled = app
        .submit(
            json!({"target": {"url": target.url("/never")}, "delay_ms": 600_000,
                       "callback": {"url": target.url("/cb-cancelled"), "on": ["cancelled"]}}),
        )
        .await;
    // Cancelled, but `on` leaves cancellations out: no callback.
    let quiet = app
        .submit(
            json!({"target": {"url": target.url("/never")}, "delay_ms": 600_000,
                       "callback": {"url": target.url("/cb-quiet")}}),
        )
        .await;
    for id in [&cancelled, &quiet] {
        let (status, body) = app
            .post(&format!("/v1/jobs/{id}/cancel"), &Value::Null)
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    app.wait_for_state(&dead, "dead", T).await;
    let delivered = wait_until("both callbacks to succeed", T, || async {
        let both = [
            callbacks_of(&env, &dead).await,
            callbacks_of(&env, &cancelled).await,
        ];
        both.iter()
            .all(|c| c.len() == 1 && c[0].1 == "succeeded")
            .then_some(both)
    })
    .await;
    let retried = app.executions(&delivered[0][0].0).await;
    assert_eq!(retried.len(), 3, "503, 503, then 204: {retried:?}");
    assert_eq!(target.received_on("/cb-dead").len(), 3);
    let body: Value = serde_json::from_slice(&target.received_on("/cb-dead")[2].body).unwrap();
    assert_eq!(body["state"], "dead");
    assert_eq!(body["last_outcome"]["status_code"], 500);
    let posts = target.received_on("/cb-cancelled");
    assert_eq!(posts.len(), 1);
    let body: Value = serde_json::from_slice(&posts[0].body).unwrap();
    assert_eq!(body["state"], "cancelled");
    assert!(callbacks_of(&env, &quiet).await.is_empty());
    assert!(target.received_on("/cb-quiet").is_empty());

    // A retried dead job that dies again calls back again: one callback per end.
    let (status, _) = app
        .post(&format!("/v1/jobs/{dead}/retry"), &Value::Null)
        .await;
    assert_eq!(status, StatusCode::OK);
    wait_until("a second callback", T, || async {
        (callbacks_of(&env, &dead).await.len() == 2).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_killed_right_after_the_last_attempts_leaves_exactly_one_callback_each() {
    let env = TestEnv::new().await;
    let target = Target::start().await;
    // Every parent call is answered at once by the target after a moment; the worker
    // is killed as the answers go out, so some ends are in Redis only (their journal),
    // some nowhere yet (their lease runs out), some in PostgreSQL.
    target.script(
        "/parent",
        vec![Reply::status(200).after(Duration::from_millis(300))],
    );
    let app = TestApp::spawn(env.settings.clone()).await;
    let lease = ("COURIER__WORKER__LEASE_MS", "2000");
    let mut worker = ChildProcess::start_worker(&env.process_env_with(&[lease])).await;
    let n = 60;
    let parents = app
        .submit_many(n, |_| {
            json!({"target": {"url": target.url("/parent")}, "max_attempts": 1,
                   "callback": {"url": target.url("/callback")}})
        })
        .await;
    wait_until("every call answered", T, || async {
        (target.received_on("/parent").len() == n && target.concurrent("/parent") == 0)
            .then_some(())
    })
    .await;
    worker.signal("KILL").await;
    worker.wait().await;
    let _next = ChildProcess::start_worker(&env.process_env_with(&[lease])).await;

    let mut ends: HashMap<String, usize> = HashMap::new();
    for id in &parents {
        let parent = wait_until(&format!("{id} and its callback to end"), T, || async {
            let parent = app.job(id).await;
            let state = parent["state"].as_str()?.to_owned();
            let callbacks = parent["callbacks"].as_array()?.clone();
            (matches!(state.as_str(), "succeeded" | "dead")
                && callbacks.iter().all(|c| c["state"] == "succeeded")
                && !callbacks.is_empty())
            .then_some(parent)
        })
        .await;
        assert_eq!(
            callbacks_of(&env, id).await.len(),
            1,
            "exactly one callback job for {id}: {parent}"
        );
        *ends
            .entry(parent["state"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    let called: std::collections::HashSet<String> = target
        .received_on("/callback")
        .iter()
        .map(|r| {
            serde_json::from_slice::<Value>(&r.body).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(called.len(), n, "every parent's callback was delivered");
    println!("after kill -9: {ends:?}, one callback job each, {n} delivered");
}

/// A target that reports progress through its call's `X-Courier-Progress-Url`, then
/// holds its answer until the test lets it go.
#[derive(Clone, Default)]
struct Reporter {
    urls: Arc<Mutex<Vec<String>>>,
    release: Arc<Notify>,
}

async fn report(State(reporter): State<Reporter>, headers: HeaderMap) -> StatusCode {
    let url = headers
        .get("x-courier-progress-url")
        .and_then(|v| v.to_str().ok())
        .expect("X-Courier-Progress-Url")
        .to_owned();
    let attempt = {
        let mut urls = reporter.urls.lock().unwrap();
        urls.push(url.clone());
        urls.len()
    };
    let client = reqwest::Client::new();
    for percent in [25, 50, 75] {
        let answer = client
            .post(&url)
            .json(&json!({"percent": percent, "message": format!("step {percent} of attempt {attempt}")}))
            .send()
            .await
            .unwrap();
        assert_eq!(
            answer.status(),
            StatusCode::OK,
            "{}",
            answer.text().await.unwrap()
        );
    }
    if attempt == 1 {
        // The first attempt fails; the second runs.
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    reporter.release.notified().await;
    StatusCode::OK
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn progress_reported_by_the_target_shows_and_a_stale_attempts_report_is_refused() {
    let env = TestEnv::new().await;
    let reporter = Reporter::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = format!("http://{}/work", listener.local_addr().unwrap());
    let app_router = Router::new()
        .route("/work", any(report))
        .with_state(reporter.clone());
    tokio::spawn(async move { axum::serve(listener, app_router).await });
    let app = TestApp::spawn(env.settings.clone()).await;
    let mut settings = env.settings.clone();
    settings.server.public_url = Some(courier_core::domain::TargetUrl::parse(&app.base).unwrap());
    let _worker = WorkerHandle::spawn(settings).await;

    let id = app
        .submit(json!({"target": {"url": target}, "max_attempts": 2,
                       "backoff": {"initial_ms": 10, "jitter": false}}))
        .await;
    let running = wait_until("75% shown while the second attempt runs", T, || async {
        let job = app.job(&id).await;
        (reporter.urls.lock().unwrap().len() == 2
            && job["progress"]["message"] == "step 75 of attempt 2"
            && job["state"] == "running")
            .then_some(job)
    })
    .await;
    assert_eq!(running["progress"]["percent"], 75, "{running}");
    assert_eq!(running["state"], "running", "{running}");

    let urls = reporter.urls.lock().unwrap().clone();
    let client = reqwest::Client::new();
    let post = |url: String, body: Value| {
        let client = client.clone();
        async move {
            let answer = client.post(url).json(&body).send().await.unwrap();
            let status = answer.status();
            (status, answer.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    // The second attempt's token is accepted; the first's is stale.
    let (status, body) = post(urls[1].clone(), json!({"percent": 80})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["percent"], 80);
    let (status, body) = post(urls[0].clone(), json!({"percent": 90})).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    // A token not made for this job, or none: 401. Bad values: 422.
    let forged = format!(
        "{}/v1/jobs/{id}/progress?token=1.AAAAAAAAAAAAAAAAAAAAAA",
        app.base
    );
    let (status, body) = post(forged, json!({"percent": 10})).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let (status, _) = post(
        format!("{}/v1/jobs/{id}/progress", app.base),
        json!({"percent": 10}),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, body) = post(urls[1].clone(), json!({"percent": 101})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["errors"][0]["field"], "percent");
    let (status, body) = post(
        urls[1].clone(),
        json!({"percent": 5, "message": "x".repeat(513)}),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(
        app.job(&id).await["progress"]["percent"],
        80,
        "nothing refused was stored"
    );

    reporter.release.notify_one();
    let done = app.wait_for_state(&id, "succeeded", T).await;
    assert_eq!(done["progress"]["percent"], 80);
    let (status, _) = post(urls[1].clone(), json!({"percent": 100})).await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "an ended job takes no progress"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn progress_reports_are_rate_limited_per_job_and_bad_callbacks_are_refused() {
    let mut env = TestEnv::new().await;
    env.settings.server.progress_per_second = 2;
    let app = TestApp::spawn(env.settings.clone()).await;
    for (callback, field) in [
        (json!({"url": "ftp://x"}), "callback.url"),
        (json!({"url": "http://10.1.2.3/cb"}), "callback.url"),
        (
            json!({"url": "http://127.0.0.1:9/cb", "on": ["running"]}),
            "callback.on",
        ),
        (
            json!({"url": "http://127.0.0.1:9/cb", "on": []}),
            "callback.on",
        ),
        (
            json!({"url": "http://127.0.0.1:9/cb", "headers": {"Connection": "close"}}),
            "callback.headers.Connection",
        ),
    ] {
        let (status, body) = app
            .post(
                "/v1/jobs",
                &json!({"target": {"url": "http://127.0.0.1:9/x"}, "callback": callback}),
            )
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(body["errors"][0]["field"], field, "{body}");
    }
    // The limit counts before the job is looked at: a valid token for a job that is not
    // running still spends it.
    let id = app
        .submit(json!({"target": {"url": "http://127.0.0.1:9/x"}, "delay_ms": 600_000}))
        .await;
    let secrets = courier_core::crypto::SecretBox::from_settings(&env.settings.secrets).unwrap();
    let url = format!(
        "{}/v1/jobs/{id}/progress?token={}",
        app.base,
        secrets.progress_token(&id, 42)
    );
    let client = reqwest::Client::new();
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let answer = client
            .post(&url)
            .json(&json!({"percent": 1}))
            .send()
            .await
            .unwrap();
        statuses.push(answer.status().as_u16());
        if answer.status() == StatusCode::TOO_MANY_REQUESTS {
            assert!(answer.headers().contains_key("retry-after"));
        }
    }
    assert_eq!(statuses, [409, 409, 429, 429], "a burst of 2, then refused");
}
