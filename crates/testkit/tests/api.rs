//! The REST surface (SPEC 3): bad input, idempotency, batches, queue depth, readiness
//! and the OpenAPI document, against real Redis and PostgreSQL.

use std::time::Duration;

use courier_testkit::{Reply, Target, TestApp, TestEnv, WorkerHandle, wait_until};
use reqwest::StatusCode;
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(20);

fn job(url: &str) -> Value {
    json!({"target": {"url": url}})
}

/// Sends a raw body and checks the answer is the expected problem+json.
async fn expect_problem(app: &TestApp, content_type: &str, body: Vec<u8>, status: u16) -> Value {
    let response = app
        .client
        .post(app.url("/v1/jobs"))
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), status);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["status"], status);
    assert!(
        problem["type"].is_string()
            && problem["title"].is_string()
            && problem["detail"].is_string(),
        "{problem}"
    );
    problem
}

fn fields(problem: &Value) -> Vec<String> {
    problem["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_kind_of_bad_input_gets_its_4xx_problem_and_stores_nothing() {
    let env = TestEnv::new().await;
    let app = TestApp::spawn(env.settings.clone()).await;
    let json = "application/json";
    let ok = |v: Value| serde_json::to_vec(&v).unwrap();

    expect_problem(&app, json, b"{\"target\": {\"url\": ".to_vec(), 400).await;
    expect_problem(&app, json, b"[1, 2".to_vec(), 400).await;
    expect_problem(&app, "text/plain", ok(job("http://example.com")), 415).await;
    expect_problem(
        &app,
        "application/x-www-form-urlencoded",
        b"target=x".to_vec(),
        415,
    )
    .await;
    let huge = "x".repeat(env.settings.server.max_request_bytes + 1);
    expect_problem(
        &app,
        json,
        ok(json!({"target": {"url": "http://example.com", "body": huge}})),
        413,
    )
    .await;

    let p = expect_problem(
        &app,
        json,
        ok(json!({"target": {"url": "http://example.com"}, "colour": "red"})),
        422,
    )
    .await;
    assert_eq!(fields(&p), ["colour"]);
    let p = expect_problem(
        &app,
        json,
        ok(json!({"target": {"url": "http://example.com", "verb": "GET"}})),
        422,
    )
    .await;
    assert_eq!(fields(&p), ["target.verb"]);
    for url in [
        "not a url",
        "/relative",
        "ftp://example.com/file",
        "javascript:alert(1)",
        "http://",
    ] {
        let p = expect_problem(&app, json, ok(job(url)), 422).await;
        assert_eq!(fields(&p), ["target.url"], "{url}");
    }
    for priority in [-1, 10, 100] {
        let p = expect_problem(
            &app,
            json,
            ok(json!({"target": {"url": "http://example.com"}, "priority": priority})),
            422,
        )
        .await;
        assert_eq!(fields(&p), ["priority"]);
    }
    let both = json!({"target": {"url": "http://example.com"}, "run_at": "2030-01-01T00:00:00Z", "delay_ms": 10});
    assert_eq!(
        fields(&expect_problem(&app, json, ok(both), 422).await),
        ["run_at"]
    );
    let many: serde_json::Map<String, Value> =
        (0..65).map(|i| (format!("X-H{i}"), json!("v"))).collect();
    let p = expect_problem(
        &app,
        json,
        ok(json!({"target": {"url": "http://example.com", "headers": many}})),
        422,
    )
    .await;
    assert_eq!(fields(&p), ["target.headers"]);
    for hop in [
        "Connection",
        "Transfer-Encoding",
        "Upgrade",
        "Keep-Alive",
        "TE",
    ] {
        let p = expect_problem(
            &app,
            json,
            ok(json!({"target": {"url": "http://example.com", "headers": {hop: "x"}}})),
            422,
        )
        .await;
        assert_eq!(fields(&p), [format!("target.headers.{hop}")]);
    }
    let p = expect_problem(
        &app,
        json,
        ok(json!({"target": {"url": "http://example.com"}, "timeout_ms": 0, "max_attempts": 101})),
        422,
    )
    .await;
    assert_eq!(fields(&p), ["timeout_ms", "max_attempts"]);
    let p = expect_problem(
        &app,
        json,
        ok(json!({"target": {"url": "http://example.com"}, "queue": "Bad Queue!"})),
        422,
    )
    .await;
    assert_eq!(fields(&p), ["queue"]);
    let p = expect_problem(
        &app,
        json,
        ok(json!({"target": {"url": "http://example.com", "body": "a", "json": {}}})),
        422,
    )
    .await;
    assert_eq!(fields(&p), ["target.json"]);
    let p = expect_problem(
        &app,
        json,
        ok(json!({"target": {"url": "http://example.com"}, "priority": "high"})),
        422,
    )
    .await;
    assert_eq!(fields(&p), ["priority"]);

    assert_eq!(
        env.count_jobs(None).await,
        0,
        "no bad request stored anything"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unknown_routes_ids_and_methods_are_problems_too() {
    let env = TestEnv::new().await;
    let app = TestApp::spawn(env.settings.clone()).await;
    for (path, status) in [
        ("/v1/jobs/not-a-uuid", 400),
        (&format!("/v1/jobs/{}", uuid::Uuid::now_v7()) as &str, 404),
        (
            &format!("/v1/jobs/{}/executions", uuid::Uuid::now_v7()),
            404,
        ),
        ("/v1/nothing-here", 404),
        ("/v1/jobs?state=sleeping", 422),
        ("/v1/jobs?limit=0", 422),
        ("/v1/jobs?colour=red", 400),
        ("/v1/queues/Not_Valid!", 400),
    ] {
        let response = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(response.status().as_u16(), status, "{path}");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json",
            "{path}"
        );
    }
    let response = app.client.delete(app.url("/v1/jobs")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_repeated_idempotency_key_returns_the_first_job_and_runs_it_once() {
    let env = TestEnv::new().await;
    let target = Target::start().await;
    let app = TestApp::spawn(env.settings.clone()).await;
    let _worker = WorkerHandle::spawn(env.settings.clone()).await;
    let body = serde_json::to_vec(&job(&target.url("/once"))).unwrap();
    let post = |key: &'static str, body: Vec<u8>| {
        app.client
            .post(app.url("/v1/jobs"))
            .header("content-type", "application/json")
            .header("idempotency-key", key)
            .body(body)
            .send()
    };
    let first = post("order-42", body.clone()).await.unwrap();
    assert_eq!(first.status(), StatusCode::CREATED);
    let first: Value = first.json().await.unwrap();
    let second = post("order-42", body.clone()).await.unwrap();
    assert_eq!(second.status(), StatusCode::OK);
    let second: Value = second.json().await.unwrap();
    assert_eq!(first["id"], second["id"]);

    let id = first["id"].as_str().unwrap();
    app.wait_for_state(id, "succeeded", T).await;
    let third = post("order-42", body).await.unwrap();
    assert_eq!(
        third.status(),
        StatusCode::OK,
        "still the same job after it ran"
    );
    assert_eq!(app.executions(id).await.len(), 1);
    assert_eq!(target.count(), 1);

    let other = serde_json::to_vec(&job(&target.url("/other"))).unwrap();
    let response = post("order-42", other).await.unwrap();
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    assert_eq!(env.count_jobs(None).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_batch_of_1000_is_accepted_and_one_invalid_job_refuses_it_all() {
    let env = TestEnv::new().await;
    let app = TestApp::spawn(env.settings.clone()).await;
    let jobs: Vec<Value> = (0..1000)
        .map(|i| job(&format!("http://127.0.0.1:9/job/{i}")))
        .collect();

    let mut bad = jobs.clone();
    bad[417]["target"]["url"] = json!("gopher://nope");
    bad[902]["priority"] = json!(12);
    let (status, problem) = app.post("/v1/jobs/batch", &json!({"jobs": bad})).await;
    assert_eq!(status, 422, "{problem}");
    assert_eq!(
        fields(&problem),
        ["jobs[417].target.url", "jobs[902].priority"]
    );
    assert_eq!(
        env.count_jobs(None).await,
        0,
        "a refused batch stores nothing"
    );

    let (status, problem) = app.post("/v1/jobs/batch", &json!({"jobs": []})).await;
    assert_eq!(status, 422, "{problem}");
    let too_many: Vec<Value> = (0..1001).map(|_| job("http://127.0.0.1:9/")).collect();
    let (status, _) = app.post("/v1/jobs/batch", &json!({"jobs": too_many})).await;
    assert_eq!(status, 422);

    let (status, body) = app.post("/v1/jobs/batch", &json!({"jobs": jobs})).await;
    assert_eq!(status, 201, "{body}");
    let ids = body["ids"].as_array().unwrap();
    assert_eq!(ids.len(), 1000);
    assert_eq!(env.count_jobs(Some("queued")).await, 1000);
    let first = app.job(ids[0].as_str().unwrap()).await;
    assert_eq!(first["target"]["url"], "http://127.0.0.1:9/job/0");
    let (_, queue) = app.get("/v1/queues/default").await;
    assert_eq!(queue["queued"], 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn queue_depth_matches_the_states_in_postgresql() {
    let env = TestEnv::new().await;
    let target = Target::start().await;
    target.script("/gone", vec![Reply::status(410)]);
    let app = TestApp::spawn(env.settings.clone()).await;
    let mut settings = env.settings.clone();
    settings.worker.queues = vec![courier_core::QueueName::default()];
    let _worker = WorkerHandle::spawn(settings).await;

    let mut finished = Vec::new();
    for _ in 0..4 {
        finished.push(app.submit(job(&target.url("/ok"))).await);
    }
    for _ in 0..2 {
        finished.push(app.submit(job(&target.url("/gone"))).await);
    }
    for _ in 0..3 {
        app.submit(json!({"target": {"url": target.url("/later")}, "delay_ms": 3_600_000}))
            .await;
    }
    for _ in 0..2 {
        app.submit(json!({"target": {"url": target.url("/idle")}, "queue": "unserved"}))
            .await;
    }
    for id in &finished {
        wait_until("jobs to finish", T, || async {
            let state = app.job(id).await["state"].as_str().unwrap().to_owned();
            (state == "succeeded" || state == "dead").then_some(())
        })
        .await;
    }

    let (status, body) = app.get("/v1/queues").await;
    assert_eq!(status, 200);
    let queues = body["queues"].as_array().unwrap();
    let names: Vec<_> = queues.iter().map(|q| q["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["default", "unserved"]);
    for queue in queues {
        let name = queue["name"].as_str().unwrap();
        let count = |state: &'static str| {
            let db = env.db.clone();
            async move {
                sqlx::query_scalar::<_, i64>(
                    "SELECT count(*) FROM jobs WHERE queue = $1 AND state::text = $2",
                )
                .bind(name)
                .bind(state)
                .fetch_one(&db)
                .await
                .unwrap()
            }
        };
        assert_eq!(queue["scheduled"], count("scheduled").await, "{name}");
        assert_eq!(queue["queued"], count("queued").await, "{name}");
        assert_eq!(queue["running"], count("running").await, "{name}");
        assert_eq!(queue["dead"], count("dead").await, "{name}");
        assert_eq!(
            queue["succeeded_last_hour"],
            count("succeeded").await,
            "{name}"
        );
        assert_eq!(queue["dead_last_hour"], count("dead").await, "{name}");
    }
    assert_eq!(
        (queues[0]["scheduled"].as_i64(), queues[0]["dead"].as_i64()),
        (Some(3), Some(2))
    );
    assert_eq!(queues[0]["succeeded_last_hour"], 4);
    assert_eq!(queues[1]["queued"], 2);
    assert!(queues[1]["oldest_queued_age_seconds"].as_f64().unwrap() >= 0.0);
    let (_, one) = app.get("/v1/queues/unserved").await;
    assert_eq!(one["queued"], 2);
    let (status, empty) = app.get("/v1/queues/never-used").await;
    assert_eq!((status.as_u16(), empty["queued"].as_i64()), (200, Some(0)));

    let (_, page) = app.get("/v1/jobs?queue=default&state=dead").await;
    assert_eq!(page["jobs"].as_array().unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn listing_pages_newest_first_and_filters_by_label() {
    let env = TestEnv::new().await;
    let app = TestApp::spawn(env.settings.clone()).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let tenant = if i % 2 == 0 { "acme" } else { "globex" };
        ids.push(
            app.submit(
                json!({"target": {"url": "http://127.0.0.1:9/"}, "labels": {"tenant": tenant}}),
            )
            .await,
        );
    }
    let (_, first) = app.get("/v1/jobs?limit=2").await;
    let got: Vec<_> = first["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(got, [ids[4].clone(), ids[3].clone()]);
    let cursor = first["next_cursor"].as_str().unwrap();
    let (_, second) = app.get(&format!("/v1/jobs?limit=2&cursor={cursor}")).await;
    let got: Vec<_> = second["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(got, [ids[2].clone(), ids[1].clone()]);
    let (_, acme) = app.get("/v1/jobs?label=tenant:acme").await;
    assert_eq!(acme["jobs"].as_array().unwrap().len(), 3);
    assert!(acme["next_cursor"].is_null());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn readyz_reports_an_unreachable_redis_and_jobs_are_still_accepted() {
    let env = TestEnv::new().await;
    let healthy = TestApp::spawn(env.settings.clone()).await;
    let (status, checks) = healthy.get("/readyz").await;
    assert_eq!(status, 200, "{checks}");

    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut settings = env.settings.clone();
    settings.redis.url = format!("redis://127.0.0.1:{closed}");
    settings.redis.command_timeout_ms = 500;
    let app = TestApp::spawn(settings).await;
    let response = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let problem: Value = response.json().await.unwrap();
    assert!(
        problem["detail"].as_str().unwrap().contains("redis"),
        "{problem}"
    );
    let (status, health) = app.get("/healthz").await;
    assert_eq!(status, 200, "{health}");

    let id = app.submit(job("http://127.0.0.1:9/")).await;
    assert_eq!(
        app.job(&id).await["state"],
        "queued",
        "the job waits in PostgreSQL for Redis"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_openapi_document_describes_every_route() {
    let env = TestEnv::new().await;
    let app = TestApp::spawn(env.settings.clone()).await;
    let (status, doc) = app.get("/openapi.json").await;
    assert_eq!(status, 200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    for path in [
        "/v1/jobs",
        "/v1/jobs/batch",
        "/v1/jobs/{id}",
        "/v1/jobs/{id}/executions",
        "/v1/jobs/{id}/cancel",
        "/v1/jobs/{id}/retry",
        "/v1/queues",
        "/v1/queues/{name}",
        "/healthz",
        "/readyz",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} is missing");
    }
    assert!(doc["components"]["schemas"]["JobRequest"].is_object());
}

/// Issue 28, item 8: the document declares the bounds and patterns the server checks
/// (from the same constants), and the server reads bodies as the document describes
/// them: no struct from an array, `3.0` as an integer, no U+0000 (which PostgreSQL's
/// text cannot hold, and which answered 500 before), no period past the end of time.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_document_declares_what_the_server_checks_and_bodies_are_read_by_it() {
    let env = TestEnv::new().await;
    let mut settings = env.settings.clone();
    settings.jobs.max_timeout_ms = 120_000;
    let app = TestApp::spawn(settings).await;
    let (_, doc) = app.get("/openapi.json").await;
    let schemas = &doc["components"]["schemas"];
    let job = &schemas["JobRequest"]["properties"];
    assert_eq!(
        (
            job["max_attempts"]["minimum"].clone(),
            job["max_attempts"]["maximum"].clone()
        ),
        (json!(1), json!(100))
    );
    // A bound that follows a setting follows it in the document too.
    assert_eq!(job["timeout_ms"]["maximum"], 120_000);
    assert_eq!(job["flow_key"]["pattern"], "^[A-Za-z0-9_.:-]{1,128}$");
    assert_eq!(job["queue"]["pattern"], "^[a-z0-9_-]{1,64}$");
    assert_eq!(
        schemas["RateRequest"]["properties"]["per_second"]["exclusiveMinimum"],
        0.0
    );
    assert_eq!(
        schemas["FlowKeyRequest"]["properties"]["max_concurrency"]["maximum"],
        100_000
    );
    let limit = doc["paths"]["/v1/jobs"]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "limit")
        .unwrap();
    assert_eq!(limit["schema"]["maximum"], 500);

    let send = |method: reqwest::Method, path: &'static str, body: &'static str| {
        let request = app
            .client
            .request(method, app.url(path))
            .header("content-type", "application/json")
            .body(body);
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (
                status,
                response.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    use reqwest::Method;
    for (method, path, body, field) in [
        (Method::PUT, "/v1/flow-keys/tenant-1", "[null, null]", ""),
        (
            Method::PATCH,
            "/v1/queues/default/settings",
            "[null, null]",
            "",
        ),
        (
            Method::PUT,
            "/v1/flow-keys/tenant-1",
            r#"{"rate": [1, 2]}"#,
            "rate",
        ),
        (
            Method::POST,
            "/v1/jobs",
            r#"{"target": {"url": "http://example.com", "body": "a\u0000b"}}"#,
            "target.body",
        ),
        (
            Method::POST,
            "/v1/jobs",
            r#"{"target": {"url": "http://example.com"}, "labels": {"k": "\u0000"}}"#,
            "labels.k",
        ),
        (
            Method::POST,
            "/v1/jobs",
            r#"{"target": {"url": "https://\u00cf"}}"#,
            "target.url",
        ),
        (
            Method::POST,
            "/v1/jobs/bulk/retry",
            r#"{"filter": {"label": ["a\u0000:b"]}}"#,
            "filter.label[0]",
        ),
        (
            Method::POST,
            "/v1/schedules",
            r#"{"name": "s", "every_ms": 4611686018427387903, "job": {"target": {"url": "http://example.com"}}}"#,
            "every_ms",
        ),
    ] {
        let (status, problem) = send(method.clone(), path, body).await;
        assert_eq!(status, 422, "{method} {path} {body}: {problem}");
        assert_eq!(
            fields(&problem),
            [field],
            "{method} {path} {body}: {problem}"
        );
    }
    for query in ["q=%00", "label=a%00:b"] {
        let (status, problem) = app.get(&format!("/v1/jobs?{query}")).await;
        assert_eq!(status, 422, "{query}: {problem}");
    }
    // 3.0 is an integer, as JSON Schema reads it; a JSON body's numbers stay as written.
    let (status, body) = send(
        Method::POST,
        "/v1/jobs",
        r#"{"target": {"url": "http://example.com", "json": {"n": 1.0}}, "max_attempts": 2.0, "delay_ms": 60000}"#,
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["max_attempts"], 2);
    // A pause's body may be `null`: no note.
    let (status, body) = send(
        Method::PUT,
        "/v1/schedules/nightly",
        r#"{"every_ms": 60000, "job": {"target": {"url": "http://example.com"}}}"#,
    )
    .await;
    assert!(status == 200 || status == 201, "{status}: {body}");
    let (status, body) = send(Method::POST, "/v1/schedules/nightly/pause", "null").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["paused"], true, "{body}");
}

#[tokio::test]
async fn each_limit_follows_its_setting_with_a_clear_problem() {
    let env = TestEnv::new().await;
    let mut settings = env.settings.clone();
    settings.server.max_request_bytes = 4096;
    settings.server.max_batch_jobs = 3;
    settings.jobs.max_headers = 2;
    settings.jobs.max_header_bytes = 100;
    settings.jobs.max_body_bytes = 10;
    let app = TestApp::spawn(settings).await;
    let url = "https://example.com/";

    let huge = json!({"target": {"url": url, "body": "x".repeat(5000)}});
    let p = expect_problem(&app, "application/json", huge.to_string().into_bytes(), 413).await;
    assert!(p["detail"].as_str().unwrap().contains("4096"), "{p}");

    let cases = [
        (
            json!({"target": {"url": url, "body": "eleven char"}}),
            "target.body",
            "10",
        ),
        (
            json!({"target": {"url": url, "headers": {"A": "1", "B": "2", "C": "3"}}}),
            "target.headers",
            "at most 2 headers",
        ),
        (
            json!({"target": {"url": url, "headers": {"A": "v".repeat(120)}}}),
            "target.headers",
            "at most 100 bytes",
        ),
    ];
    for (body, field, message) in cases {
        let p = expect_problem(&app, "application/json", body.to_string().into_bytes(), 422).await;
        let error = p["errors"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["field"] == field)
            .unwrap_or_else(|| panic!("no error on {field}: {p}"));
        assert!(error["message"].as_str().unwrap().contains(message), "{p}");
    }

    let four = json!({"jobs": (0..4).map(|_| job(url)).collect::<Vec<_>>()});
    let (status, p) = app.post("/v1/jobs/batch", &four).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        p["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("1 to 3"),
        "{p}"
    );
    assert_eq!(env.count_jobs(None).await, 0);
}
