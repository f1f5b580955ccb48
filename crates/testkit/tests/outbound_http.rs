//! Outbound calls against servers Courier did not write (issue 10): servers that close
//! kept-alive connections, HTTP/2 over TLS, a forward proxy, redirects across origins,
//! and an answer that trickles in.

use std::time::Duration;

use courier_testkit::{
    ChildProcess, ForwardProxy, H2Target, RawMode, RawTarget, Reply, Target, TestApp, TestEnv,
    WorkerHandle, make_certificates, wait_until,
};
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(60);

async fn world() -> (TestEnv, TestApp) {
    let env = TestEnv::new().await;
    let app = TestApp::spawn(env.settings.clone()).await;
    (env, app)
}

/// Waits until every job of `ids` is terminal; returns how many succeeded (and prints
/// why the others did not).
async fn succeeded(app: &TestApp, ids: &[String]) -> usize {
    let mut succeeded = 0;
    for id in ids {
        let job = wait_until(&format!("job {id} to end"), T, || async {
            let job = app.job(id).await;
            matches!(
                job["state"].as_str(),
                Some("succeeded" | "dead" | "cancelled")
            )
            .then_some(job)
        })
        .await;
        if job["state"] == "succeeded" {
            succeeded += 1;
        } else {
            eprintln!("job {id} ended {}: {}", job["state"], job["last_outcome"]);
        }
    }
    succeeded
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_server_that_closes_each_connection_after_its_answer_costs_no_attempt() {
    let (env, app) = world().await;
    let target = RawTarget::start(RawMode::CloseAfterAnswer).await;
    let _worker = WorkerHandle::spawn(env.settings.clone()).await;
    let ids = app
        .submit_many(
            300,
            |_| json!({"target": {"url": target.url("/close")}, "max_attempts": 1}),
        )
        .await;
    assert_eq!(
        succeeded(&app, &ids).await,
        300,
        "every job succeeded on its one attempt"
    );
    assert_eq!(target.requests(), 300);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_server_with_a_one_second_keep_alive_gets_calls_one_and_a_half_seconds_apart() {
    let (env, app) = world().await;
    let target = RawTarget::start(RawMode::KeepAlive(Duration::from_secs(1))).await;
    let _worker = WorkerHandle::spawn(env.settings.clone()).await;
    let mut ids = Vec::new();
    for i in 0..4 {
        ids.push(
            app.submit(
                json!({"target": {"url": target.url("/keep")}, "max_attempts": 1,
                              "delay_ms": i * 1500}),
            )
            .await,
        );
    }
    assert_eq!(succeeded(&app, &ids).await, 4);
    assert_eq!(target.requests(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_https_target_that_speaks_only_http2_is_called_over_http2() {
    let dir = std::env::temp_dir().join(format!("courier-h2-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let (ca, cert, key) = make_certificates(&dir);
    let target = H2Target::start(&cert, &key).await;
    let (mut env, app) = world().await;
    env.settings.outbound.ca_file = ca;
    let _worker = WorkerHandle::spawn(env.settings.clone()).await;
    let id = app
        .submit(json!({"target": {"url": target.url("/h2")}, "max_attempts": 1}))
        .await;
    let job = app.wait_for_state(&id, "succeeded", T).await;
    assert_eq!(job["last_outcome"]["status_code"], 200);
    assert_eq!(target.versions(), ["HTTP/2.0"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn http_proxy_carries_the_call_and_no_proxy_bypasses_it() {
    let (env, app) = world().await;
    let proxy = ForwardProxy::start().await;
    let target = Target::start().await;
    let proxy_url = proxy.url();
    let _proxied = ChildProcess::start_worker(&env.process_env_with(&[
        ("COURIER__WORKER__QUEUES", "proxied"),
        ("HTTP_PROXY", &proxy_url),
        ("NO_PROXY", ""),
    ]))
    .await;
    let id = app
        .submit(json!({"queue": "proxied", "target": {"url": target.url("/via-proxy")}}))
        .await;
    app.wait_for_state(&id, "succeeded", T).await;
    assert_eq!(proxy.forwarded(), 1, "the call went through the proxy");
    assert_eq!(target.received_on("/via-proxy").len(), 1);

    let _direct = ChildProcess::start_worker(&env.process_env_with(&[
        ("COURIER__WORKER__QUEUES", "direct"),
        ("HTTP_PROXY", &proxy_url),
        ("NO_PROXY", "127.0.0.1"),
    ]))
    .await;
    let id = app
        .submit(json!({"queue": "direct", "target": {"url": target.url("/direct")}}))
        .await;
    app.wait_for_state(&id, "succeeded", T).await;
    assert_eq!(target.received_on("/direct").len(), 1);
    assert_eq!(
        proxy.forwarded(),
        1,
        "NO_PROXY kept the second call off the proxy"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_redirect_to_another_origin_drops_every_secret_header() {
    let (env, app) = world().await;
    let first = Target::start().await;
    let second = Target::start().await;
    first.script(
        "/start",
        vec![Reply::status(307).header("location", &second.url("/landed"))],
    );
    let _worker = WorkerHandle::spawn(env.settings.clone()).await;
    let id = app
        .submit(json!({"follow_redirects": true, "target": {
            "url": first.url("/start"),
            "headers": {"Authorization": "Bearer a", "X-Api-Key": "k", "X-Auth-Token": "t",
                        "X-Plain": "p"}}}))
        .await;
    app.wait_for_state(&id, "succeeded", T).await;
    let sent = &first.received_on("/start")[0];
    assert_eq!(sent.header("x-api-key").as_deref(), Some("k"));
    let landed = &second.received_on("/landed")[0];
    for secret in ["authorization", "x-api-key", "x-auth-token"] {
        assert_eq!(
            landed.header(secret),
            None,
            "{secret} followed the redirect"
        );
    }
    assert_eq!(landed.header("x-plain").as_deref(), Some("p"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_answer_that_trickles_in_ends_at_the_jobs_timeout() {
    let (env, app) = world().await;
    let target = RawTarget::start(RawMode::Trickle(Duration::from_secs(1))).await;
    let _worker = WorkerHandle::spawn(env.settings.clone()).await;
    let id = app
        .submit(
            json!({"target": {"url": target.url("/slow")}, "timeout_ms": 2000,
                       "max_attempts": 1}),
        )
        .await;
    app.wait_for_state(&id, "dead", T).await;
    let executions: Vec<Value> = app.executions(&id).await;
    assert_eq!(executions.len(), 1);
    assert_eq!(executions[0]["outcome"], "timeout");
    let took = executions[0]["duration_ms"].as_u64().unwrap();
    assert!((2000..3000).contains(&took), "the attempt took {took} ms");
}
