//! What a call does (SPEC 4) end to end: API and worker in-process against real Redis
//! and PostgreSQL, calling a real HTTP target on 127.0.0.1.

use std::time::Duration;

use courier_testkit::{Reply, Target, TestApp, TestEnv, WorkerHandle, wait_until};
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(20);

async fn world() -> (TestEnv, Target, TestApp) {
    let env = TestEnv::new().await;
    let target = Target::start().await;
    let app = TestApp::spawn(env.settings.clone()).await;
    (env, target, app)
}

fn fast_backoff(initial_ms: u64) -> Value {
    json!({"initial_ms": initial_ms, "multiplier": 2.0, "jitter": false})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_successful_call_delivers_the_request_and_records_one_execution() {
    let (env, target, app) = world().await;
    let _worker = WorkerHandle::spawn(env.settings.clone()).await;
    let id = app
        .submit(
            json!({"target": {"url": target.url("/hook?x=1"), "method": "PUT",
            "headers": {"X-Custom": "yes", "Content-Type": "text/plain"}, "body": "hello"}}),
        )
        .await;
    let job = app.wait_for_state(&id, "succeeded", T).await;
    assert_eq!(job["attempts"], 1);
    assert_eq!(job["last_outcome"]["status_code"], 200);

    let got = target.received_on("/hook");
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].method, "PUT");
    assert_eq!(got[0].header("x-custom").as_deref(), Some("yes"));
    assert_eq!(got[0].header("content-type").as_deref(), Some("text/plain"));
    assert_eq!(&got[0].body[..], b"hello");
    assert_eq!(got[0].job_id().as_deref(), Some(id.as_str()));
    assert_eq!(got[0].header("x-courier-attempt").as_deref(), Some("1"));

    let executions = app.wait_for_executions(&id, 1, T).await;
    assert_eq!(executions.len(), 1);
    assert_eq!(executions[0]["outcome"], "succeeded");
    assert_eq!(executions[0]["status_code"], 200);
    assert_eq!(executions[0]["response_excerpt"], "ok");
    assert!(executions[0]["duration_ms"].is_u64());
    assert!(
        executions[0]["worker"]
            .as_str()
            .is_some_and(|w| !w.is_empty())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn json_bodies_are_sent_as_json() {
    let (env, target, app) = world().await;
    let _worker = WorkerHandle::spawn(env.settings.clone()).await;
    let id = app
        .submit(json!({"target": {"url": target.url("/json"), "json": {"report": 42}}}))
        .await;
    app.wait_for_state(&id, "succeeded", T).await;
    let got = &target.received_on("/json")[0];
    assert_eq!(got.method, "POST");
    assert_eq!(
        got.header("content-type").as_deref(),
        Some("application/json")
    );
    assert_eq!(
        serde_json::from_slice::<Value>(&got.body).unwrap(),
        json!({"report": 42})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failures_are_retried_after_the_backoff_until_success() {
    let (env, target, app) = world().await;
    target.script(
        "/flaky",
        vec![Reply::status(500), Reply::status(500), Reply::status(200)],
    );
    let _worker = WorkerHandle::spawn(env.settings.clone()).await;
    let id = app
        .submit(json!({"target": {"url": target.url("/flaky")}, "max_attempts": 3, "backoff": fast_backoff(300)}))
        .await;
    let job = app.wait_for_state(&id, "succeeded", T).await;
    assert_eq!(job["attempts"], 3);

    let got = target.received_on("/flaky");
    assert_eq!(got.len(), 3);
    assert!(
        got[1].at - got[0].at >= Duration::from_millis(300),
        "{:?}",
        got[1].at - got[0].at
    );
    assert!(
        got[2].at - got[1].at >= Duration::from_millis(600),
        "{:?}",
        got[2].at - got[1].at
    );
    assert_eq!(got[2].header("x-courier-attempt").as_deref(), Some("3"));

    let executions = app.wait_for_executions(&id, 3, T).await;
    let statuses: Vec<_> = executions
        .iter()
        .map(|e| e["status_code"].as_u64().unwrap())
        .collect();
    assert_eq!(statuses, [500, 500, 200]);
    let attempts: Vec<_> = executions
        .iter()
        .map(|e| e["attempt"].as_u64().unwrap())
        .collect();
    assert_eq!(attempts, [1, 2, 3]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retry_after_sets_the_next_attempt_time() {
    let (env, target, app) = world().await;
    target.script(
        "/busy",
        vec![
            Reply::status(429).header("Retry-After", "2"),
            Reply::status(200),
        ],
    );
    let _worker = WorkerHandle::spawn(env.settings.clone()).await;
    let id = app
        .submit(json!({"target": {"url": target.url("/busy")}, "backoff": fast_backoff(10)}))
        .await;
    let waiting = app.wait_for_executions(&id, 1, T).await;
    assert_eq!(waiting[0]["status_code"], 429);
    app.wait_for_state(&id, "succeeded", T).await;
    let got = target.received_on("/busy");
    assert_eq!(got.len(), 2);
    assert!(
        got[1].at - got[0].at >= Duration::from_secs(2),
        "second attempt after {:?}",
        got[1].at - got[0].at
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn attempts_run_out_and_non_retryable_answers_end_the_job_dead() {
    let (env, target, app) = world().await;
    target.script("/down", vec![Reply::status(500)]);
    target.script("/missing", vec![Reply::status(404)]);
    target.script("/conflict", vec![Reply::status(409)]);
    target.script(
        "/moved",
        vec![Reply::status(301).header("Location", "/elsewhere")],
    );
    let _worker = WorkerHandle::spawn(env.settings.clone()).await;
    let backoff = fast_backoff(20);
    let down = app
        .submit(
            json!({"target": {"url": target.url("/down")}, "max_attempts": 3, "backoff": backoff}),
        )
        .await;
    let missing = app
        .submit(json!({"target": {"url": target.url("/missing")}, "max_attempts": 3}))
        .await;
    let listed = app
        .submit(json!({"target": {"url": target.url("/conflict")}, "max_attempts": 2, "retry_on_status": [409], "backoff": backoff}))
        .await;
    let moved = app
        .submit(json!({"target": {"url": target.url("/moved")}, "max_attempts": 3}))
        .await;

    let job = app.wait_for_state(&down, "dead", T).await;
    assert_eq!(job["attempts"], 3);
    assert_eq!(target.received_on("/down").len(), 3);
    assert_eq!(app.wait_for_executions(&down, 3, T).await.len(), 3);

    let job = app.wait_for_state(&missing, "dead", T).await;
    assert_eq!(job["attempts"], 1);
    assert_eq!(job["last_outcome"]["status_code"], 404);
    assert_eq!(target.received_on("/missing").len(), 1);

    app.wait_for_state(&listed, "dead", T).await;
    assert_eq!(
        target.received_on("/conflict").len(),
        2,
        "409 is listed in retry_on_status"
    );

    let job = app.wait_for_state(&moved, "dead", T).await;
    assert_eq!(job["attempts"], 1);
    assert!(
        target.received_on("/elsewhere").is_empty(),
        "redirects are off by default"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redirects_are_followed_when_the_job_enables_them() {
    let (env, target, app) = world().await;
    target.script("/old", vec![Reply::status(302).header("Location", "/new")]);
    let _worker = WorkerHandle::spawn(env.settings.clone()).await;
    let id = app.submit(json!({"target": {"url": target.url("/old"), "method": "GET"}, "follow_redirects": true})).await;
    app.wait_for_state(&id, "succeeded", T).await;
    assert_eq!(target.received_on("/new").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_call_slower_than_its_timeout_is_recorded_as_a_timeout_and_retried() {
    let (env, target, app) = world().await;
    target.script(
        "/slow",
        vec![
            Reply::status(200).after(Duration::from_secs(3)),
            Reply::status(200),
        ],
    );
    let _worker = WorkerHandle::spawn(env.settings.clone()).await;
    let id = app
        .submit(json!({"target": {"url": target.url("/slow")}, "timeout_ms": 300, "backoff": fast_backoff(20)}))
        .await;
    app.wait_for_state(&id, "succeeded", T).await;
    let executions = app.wait_for_executions(&id, 2, T).await;
    assert_eq!(executions[0]["outcome"], "timeout");
    assert!(executions[0]["status_code"].is_null());
    assert!(executions[0]["duration_ms"].as_u64().unwrap() < 3000);
    assert_eq!(executions[1]["outcome"], "succeeded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn higher_priority_runs_first_and_fifo_within_a_priority() {
    let (env, target, app) = world().await;
    for (name, priority) in [
        ("low1", 0),
        ("high1", 5),
        ("low2", 0),
        ("high2", 5),
        ("top", 9),
    ] {
        app.submit(
            json!({"target": {"url": target.url(&format!("/{name}"))}, "priority": priority}),
        )
        .await;
    }
    let mut settings = env.settings.clone();
    settings.worker.concurrency = 1;
    let _worker = WorkerHandle::spawn(settings).await;
    wait_until("all five calls", T, || async {
        (target.count() == 5).then_some(())
    })
    .await;
    let order: Vec<_> = target.received().iter().map(|r| r.path.clone()).collect();
    assert_eq!(order, ["/top", "/high1", "/high2", "/low1", "/low2"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_job_is_not_started_before_its_run_at() {
    let (env, target, app) = world().await;
    let _worker = WorkerHandle::spawn(env.settings.clone()).await;
    let run_at = chrono::Utc::now() + chrono::Duration::seconds(2);
    let id = app
        .submit(json!({"target": {"url": target.url("/later")},
            "run_at": run_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)}))
        .await;
    assert_eq!(app.job(&id).await["state"], "scheduled");
    app.wait_for_state(&id, "succeeded", T).await;
    let got = target.received_on("/later");
    assert_eq!(got.len(), 1);
    assert!(
        got[0].received_at >= run_at,
        "called at {} before run_at {run_at}",
        got[0].received_at
    );

    // Before the request: the delay runs from when the API accepts the job, which is
    // after this (by however long a loaded machine takes to answer).
    let submitted = std::time::Instant::now();
    let delayed = app
        .submit(json!({"target": {"url": target.url("/delayed")}, "delay_ms": 1000}))
        .await;
    app.wait_for_state(&delayed, "succeeded", T).await;
    assert!(target.received_on("/delayed")[0].at - submitted >= Duration::from_millis(900));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cancelled_queued_job_never_runs() {
    let (env, target, app) = world().await;
    let cancelled = app
        .submit(json!({"target": {"url": target.url("/never")}}))
        .await;
    let (status, body) = app
        .post(&format!("/v1/jobs/{cancelled}/cancel"), &json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["state"], "cancelled");
    // FIFO: once a job submitted after it has run, the cancelled one would have run too.
    let after = app
        .submit(json!({"target": {"url": target.url("/after")}}))
        .await;
    let _worker = WorkerHandle::spawn(env.settings.clone()).await;
    app.wait_for_state(&after, "succeeded", T).await;
    assert!(target.received_on("/never").is_empty());
    assert_eq!(app.job(&cancelled).await["state"], "cancelled");

    let (status, body) = app
        .post(&format!("/v1/jobs/{cancelled}/cancel"), &json!({}))
        .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["status"], 409);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancelling_a_running_job_aborts_its_call() {
    let (env, target, app) = world().await;
    target.script(
        "/forever",
        vec![Reply::status(200).after(Duration::from_secs(60))],
    );
    let _worker = WorkerHandle::spawn(env.settings.clone()).await;
    let id = app
        .submit(json!({"target": {"url": target.url("/forever")}, "timeout_ms": 120_000}))
        .await;
    wait_until("the call to start", T, || async {
        (target.count() == 1).then_some(())
    })
    .await;
    app.wait_for_state(&id, "running", T).await;
    let (status, body) = app.post(&format!("/v1/jobs/{id}/cancel"), &json!({})).await;
    assert_eq!(status, 200, "{body}");
    let executions = app.wait_for_executions(&id, 1, T).await;
    assert_eq!(executions[0]["outcome"], "cancelled");
    assert!(
        executions[0]["duration_ms"].as_u64().unwrap() < 30_000,
        "the call was aborted, not waited out"
    );
    assert_eq!(app.job(&id).await["state"], "cancelled");
    assert_eq!(target.count(), 1);
}

/// The job and its executions agree on the attempts of a round cancelled during its call,
/// even when the cancel reaches PostgreSQL before the attempt's start does (the cancel is
/// sent the moment the target sees the call, without waiting for `running`).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_job_cancelled_during_its_call_counts_the_attempt_its_executions_list() {
    let (env, target, app) = world().await;
    target.script(
        "/slow",
        vec![
            Reply::status(200).after(Duration::from_secs(60)),
            Reply::status(200).after(Duration::from_secs(60)),
        ],
    );
    let _worker = WorkerHandle::spawn(env.settings.clone()).await;
    let id = app
        .submit(json!({"target": {"url": target.url("/slow")}, "timeout_ms": 120_000}))
        .await;
    for round in 1..=2_usize {
        wait_until("the call to start", T, || async {
            (target.received_on("/slow").len() == round).then_some(())
        })
        .await;
        let (status, body) = app.post(&format!("/v1/jobs/{id}/cancel"), &json!({})).await;
        assert_eq!(status, 200, "{body}");
        let executions = app.wait_for_executions(&id, round, T).await;
        let last = &executions[round - 1];
        assert_eq!(last["outcome"], "cancelled", "{executions:?}");
        assert_eq!(last["round"], round, "{executions:?}");
        assert_eq!(last["attempt"], 1, "{executions:?}");
        // The start may be written after the cancel's answer: wait for the job to count it.
        let job = wait_until("the job to count the cancelled attempt", T, || async {
            let job = app.job(&id).await;
            (job["attempts"] == 1).then_some(job)
        })
        .await;
        assert_eq!(job["state"], "cancelled", "{job}");
        assert_eq!(job["round"], round, "{job}");
        if round == 1 {
            let (status, body) = app.post(&format!("/v1/jobs/{id}/retry"), &json!({})).await;
            assert_eq!(status, 200, "{body}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retrying_a_dead_job_runs_it_again_from_its_first_attempt() {
    let (env, target, app) = world().await;
    target.script("/fixed-later", vec![Reply::status(400), Reply::status(200)]);
    let _worker = WorkerHandle::spawn(env.settings.clone()).await;
    let id = app
        .submit(json!({"target": {"url": target.url("/fixed-later")}}))
        .await;
    app.wait_for_state(&id, "dead", T).await;

    let (status, body) = app.post(&format!("/v1/jobs/{id}/retry"), &json!({})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["attempts"], 0);
    let job = app.wait_for_state(&id, "succeeded", T).await;
    assert_eq!(job["attempts"], 1);
    assert_eq!(target.received_on("/fixed-later").len(), 2);
    assert_eq!(app.wait_for_executions(&id, 2, T).await.len(), 2);

    let (status, _) = app.post(&format!("/v1/jobs/{id}/retry"), &json!({})).await;
    assert_eq!(status, 409, "a succeeded job cannot be retried");
    let (status, _) = app
        .post(
            &format!("/v1/jobs/{}/retry", uuid::Uuid::now_v7()),
            &json!({}),
        )
        .await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_https_call_starts_a_tls_handshake_and_a_failed_one_is_a_connection_error() {
    // One rustls crypto provider in the binary: a second one would panic here, at the
    // first TLS connection. The target speaks plain HTTP, so the handshake fails.
    let (env, target, app) = world().await;
    let _worker = WorkerHandle::spawn(env.settings.clone()).await;
    let url = target.url("/tls").replacen("http://", "https://", 1);
    let id = app
        .submit(json!({"target": {"url": url}, "max_attempts": 1}))
        .await;
    app.wait_for_state(&id, "dead", T).await;
    let executions = app.wait_for_executions(&id, 1, T).await;
    assert_eq!(executions[0]["outcome"], "connection_error");
    assert!(
        target.received_on("/tls").is_empty(),
        "no HTTP request was made in the clear"
    );
}
