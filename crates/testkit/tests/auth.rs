//! API keys (issue 5): every `/v1` route needs a key of the right scope, revoked keys stop
//! working, keys limited to queues see nothing else, and each key has a rate limit. Keys
//! are made and revoked with the real `courier-api keys` command.

use std::time::Duration;

use courier_testkit::{TestApp, TestEnv, binary, client_with_key, wait_until};
use reqwest::{Client, Method, StatusCode};
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(20);

/// Every route under `/v1`, with a body where it takes one.
fn routes(job_id: &str) -> Vec<(Method, String, Option<Value>)> {
    let job = json!({"target": {"url": "https://example.com/"}});
    vec![
        (Method::POST, "/v1/jobs".into(), Some(job.clone())),
        (
            Method::POST,
            "/v1/jobs/batch".into(),
            Some(json!({"jobs": [job]})),
        ),
        (Method::GET, "/v1/jobs".into(), None),
        (Method::GET, format!("/v1/jobs/{job_id}"), None),
        (Method::GET, format!("/v1/jobs/{job_id}/executions"), None),
        (Method::POST, format!("/v1/jobs/{job_id}/cancel"), None),
        (Method::POST, format!("/v1/jobs/{job_id}/retry"), None),
        (Method::GET, "/v1/queues".into(), None),
        (Method::GET, "/v1/queues/default".into(), None),
        (Method::GET, "/v1/no-such-route".into(), None),
    ]
}

async fn send(
    client: &Client,
    app: &TestApp,
    route: &(Method, String, Option<Value>),
) -> reqwest::Response {
    let (method, path, body) = route;
    let mut request = client.request(method.clone(), app.url(path));
    if let Some(body) = body {
        request = request.json(body);
    }
    request.send().await.unwrap()
}

/// Asserts a problem+json answer with `status` and returns the problem.
async fn problem(response: reqwest::Response, status: StatusCode) -> Value {
    assert_eq!(response.status(), status, "{}", response.url());
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json",
        "{}",
        response.url()
    );
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["status"], status.as_u16());
    problem
}

/// Runs `courier-api keys ...` against the test's database and returns its stdout.
fn keys_command(env: &TestEnv, args: &[&str]) -> String {
    let output = std::process::Command::new(binary("courier-api"))
        .arg("keys")
        .args(args)
        .envs(env.process_env())
        .env("COURIER__TELEMETRY__FILTER", "warn")
        .output()
        .expect("run courier-api keys");
    assert!(
        output.status.success(),
        "courier-api keys {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

fn create_key(env: &TestEnv, scope: &str, queues: Option<&str>) -> String {
    let mut args = vec!["create", "--name", "test key", "--scope", scope];
    if let Some(queues) = queues {
        args.extend(["--queues", queues]);
    }
    let key = keys_command(env, &args).trim().to_owned();
    assert!(key.starts_with("courier_") && key.len() == 72, "{key}");
    key
}

#[tokio::test]
async fn every_v1_route_needs_a_key_and_writes_need_a_write_key() {
    let env = TestEnv::new().await;
    let app = TestApp::spawn(env.settings.clone()).await;
    let (status, created) = app
        .post(
            "/v1/jobs",
            &json!({"target": {"url": "https://example.com/"}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let id = created["id"].as_str().unwrap().to_owned();

    let anonymous = Client::new();
    let wrong =
        client_with_key("courier_0000000000000000000000000000000000000000000000000000000000000000");
    let reader = client_with_key(&create_key(&env, "read", None));
    for route in routes(&id) {
        let p = problem(
            send(&anonymous, &app, &route).await,
            StatusCode::UNAUTHORIZED,
        )
        .await;
        assert!(p["detail"].as_str().unwrap().contains("Bearer"), "{p}");
        problem(send(&wrong, &app, &route).await, StatusCode::UNAUTHORIZED).await;
        let answer = send(&reader, &app, &route).await;
        if route.0 == Method::GET {
            assert_ne!(answer.status(), StatusCode::UNAUTHORIZED, "{}", route.1);
            assert_ne!(answer.status(), StatusCode::FORBIDDEN, "{}", route.1);
        } else {
            let p = problem(answer, StatusCode::FORBIDDEN).await;
            assert!(p["detail"].as_str().unwrap().contains("\"read\""), "{p}");
        }
    }
    // A malformed header is the same as none.
    for value in ["Bearer", "Basic dXNlcjpwYXNz", "courier_x", "Bearer  "] {
        let response = anonymous
            .get(app.url("/v1/queues"))
            .header("authorization", value)
            .send()
            .await
            .unwrap();
        problem(response, StatusCode::UNAUTHORIZED).await;
    }
    // The open routes stay open.
    for path in ["/healthz", "/readyz", "/openapi.json"] {
        let response = anonymous.get(app.url(path)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
    }
    // The reader's refused writes stored nothing.
    assert_eq!(env.count_jobs(None).await, 1);
}

#[tokio::test]
async fn a_revoked_key_gets_401_and_keys_list_never_shows_a_key() {
    let env = TestEnv::new().await;
    let app = TestApp::spawn(env.settings.clone()).await;
    let key = create_key(&env, "write", None);
    let client = client_with_key(&key);
    let ok = client.get(app.url("/v1/queues")).send().await.unwrap();
    assert_eq!(ok.status(), StatusCode::OK);

    let listed = keys_command(&env, &["list"]);
    let prefix = &key[..16];
    assert!(listed.contains(prefix), "{listed}");
    assert!(!listed.contains(&key), "keys list printed a whole key");
    let stored: Vec<Vec<u8>> = sqlx::query_scalar("SELECT hash FROM api_keys")
        .fetch_all(&env.db)
        .await
        .unwrap();
    assert!(stored.iter().all(|h| h.len() == 32));
    let dump: String = sqlx::query_scalar("SELECT string_agg(t::text, ' ') FROM api_keys t")
        .fetch_one(&env.db)
        .await
        .unwrap();
    assert!(!dump.contains(&key[16..]), "the key is stored in the clear");

    keys_command(&env, &["revoke", prefix]);
    // A found key is trusted for a few seconds; the revocation lands within that.
    wait_until("the revoked key to be refused", T, || async {
        let response = client.get(app.url("/v1/queues")).send().await.unwrap();
        (response.status() == StatusCode::UNAUTHORIZED).then_some(response)
    })
    .await;
    let response = client
        .post(app.url("/v1/jobs"))
        .json(&json!({"target": {"url": "https://example.com/"}}))
        .send()
        .await
        .unwrap();
    problem(response, StatusCode::UNAUTHORIZED).await;
    assert!(
        keys_command(&env, &["list"])
            .lines()
            .any(|l| l.contains(prefix) && !l.ends_with("\t-"))
    );
}

#[tokio::test]
async fn a_key_limited_to_queues_sees_and_touches_only_those() {
    let env = TestEnv::new().await;
    let app = TestApp::spawn(env.settings.clone()).await;
    let (_, other) = app
        .post(
            "/v1/jobs",
            &json!({"target": {"url": "https://example.com/"}, "queue": "payroll"}),
        )
        .await;
    let other = other["id"].as_str().unwrap().to_owned();
    let mail = client_with_key(&create_key(&env, "write", Some("mail")));

    let created = mail
        .post(app.url("/v1/jobs"))
        .json(&json!({"target": {"url": "https://example.com/"}, "queue": "mail", "run_at": "2999-01-01T00:00:00Z"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let own: Value = created.json().await.unwrap();
    let own = own["id"].as_str().unwrap();
    let response = mail
        .get(app.url(&format!("/v1/jobs/{own}")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);

    let refused = mail
        .post(app.url("/v1/jobs"))
        .json(&json!({"target": {"url": "https://example.com/"}, "queue": "payroll"}))
        .send()
        .await
        .unwrap();
    problem(refused, StatusCode::FORBIDDEN).await;
    let batch = mail
        .post(app.url("/v1/jobs/batch"))
        .json(
            &json!({"jobs": [{"target": {"url": "https://example.com/"}, "queue": "mail"},
                               {"target": {"url": "https://example.com/"}, "queue": "payroll"}]}),
        )
        .send()
        .await
        .unwrap();
    problem(batch, StatusCode::FORBIDDEN).await;
    for path in [
        format!("/v1/jobs/{other}"),
        format!("/v1/jobs/{other}/executions"),
    ] {
        problem(
            mail.get(app.url(&path)).send().await.unwrap(),
            StatusCode::NOT_FOUND,
        )
        .await;
    }
    problem(
        mail.post(app.url(&format!("/v1/jobs/{other}/cancel")))
            .send()
            .await
            .unwrap(),
        StatusCode::NOT_FOUND,
    )
    .await;
    problem(
        mail.get(app.url("/v1/jobs?queue=payroll"))
            .send()
            .await
            .unwrap(),
        StatusCode::FORBIDDEN,
    )
    .await;
    problem(
        mail.get(app.url("/v1/jobs")).send().await.unwrap(),
        StatusCode::FORBIDDEN,
    )
    .await;
    problem(
        mail.get(app.url("/v1/queues/payroll"))
            .send()
            .await
            .unwrap(),
        StatusCode::FORBIDDEN,
    )
    .await;
    let queues: Value = mail
        .get(app.url("/v1/queues"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let names: Vec<_> = queues["queues"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["mail"], "{queues}");
    // The payroll job was not cancelled by the refused request, and only two jobs exist.
    assert_eq!(env.count_jobs(Some("cancelled")).await, 0);
    assert_eq!(env.count_jobs(None).await, 2);
}

#[tokio::test]
async fn a_key_over_its_rate_gets_429_with_retry_after() {
    let env = TestEnv::new().await;
    let mut settings = env.settings.clone();
    settings.auth.rate_limit_per_second = 1;
    settings.auth.rate_limit_burst = 5;
    let app = TestApp::spawn(settings).await;
    let mut statuses = Vec::new();
    for _ in 0..20 {
        let response = app.client.get(app.url("/v1/queues")).send().await.unwrap();
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            let wait: u64 = response.headers()["retry-after"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            assert!((1..=2).contains(&wait), "Retry-After {wait}");
            problem(response, StatusCode::TOO_MANY_REQUESTS).await;
            statuses.push(429);
        } else {
            statuses.push(response.status().as_u16());
        }
    }
    // The burst passes, then the limit answers (20 requests come far faster than 1/s).
    assert_eq!(&statuses[..5], &[200; 5]);
    assert!(
        statuses.iter().filter(|s| **s == 429).count() >= 10,
        "{statuses:?}"
    );
    // Another key has its own budget.
    let other = client_with_key(&create_key(&env, "read", None));
    assert_eq!(
        other
            .get(app.url("/v1/queues"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn authentication_can_be_turned_off_explicitly() {
    let env = TestEnv::new().await;
    let mut settings = env.settings.clone();
    settings.auth.enabled = false;
    let app = TestApp::spawn(settings).await;
    let response = Client::new()
        .post(app.url("/v1/jobs"))
        .json(&json!({"target": {"url": "https://example.com/"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
}
