//! Operating Courier (SPEC 12) against real processes, Redis and PostgreSQL: metrics after
//! a known workload (checked by `promtool` and against `deploy/metrics.txt`), bulk retry
//! and cancel of exactly what matched at a moment, an audit row for every kind of change,
//! and the dashboard's session cookie and CSRF token.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::PathBuf,
    time::Duration,
};

use courier_testkit::{
    ChildProcess, Reply, Target, TestApp, TestEnv, WorkerHandle, client_with_key, free_port,
    wait_until,
};
use reqwest::{StatusCode, header};
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(30);

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `promtool` from the PATH or where `scripts/check-deploy.sh` unpacks it.
fn promtool() -> PathBuf {
    if let Ok(path) = std::env::var("PROMTOOL") {
        return path.into();
    }
    let unpacked = workspace().join("target/deploy-tools/promtool");
    if unpacked.exists() {
        return unpacked;
    }
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|p| p.join("promtool"))
                .find(|p| p.exists())
        })
        .expect(
            "promtool is needed: scripts/check-deploy.sh unpacks it into target/deploy-tools \
             (or install Debian's prometheus package)",
        )
}

/// `promtool check metrics` on a scrape: its exit status and what it said.
fn promtool_check(scrape: &str) -> (bool, String) {
    use std::io::Write;
    let mut child = std::process::Command::new(promtool())
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run promtool");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(scrape.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), said)
}

/// One sample's value: `name{labels}` with labels in any order, e.g.
/// `sample(&text, "courier_attempts_total", &[("queue", "default"), ("outcome", "failed")])`.
fn sample(scrape: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scrape
        .lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric, rest) = series.split_once('{').unwrap_or((series, "}"));
            if metric != name {
                return None;
            }
            let have: BTreeSet<(String, String)> = parse_labels(rest.trim_end_matches('}'));
            let want: BTreeSet<(String, String)> = labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            (have == want).then(|| value.parse().ok())?
        })
}

fn parse_labels(inner: &str) -> BTreeSet<(String, String)> {
    inner
        .split(',')
        .filter(|p| !p.is_empty())
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            Some((k.to_owned(), v.trim_matches('"').to_owned()))
        })
        .collect()
}

/// Every `courier_*` family of a scrape: its type and the label names its samples carry.
fn families(scrape: &str) -> BTreeMap<String, (String, BTreeSet<String>)> {
    let mut out: BTreeMap<String, (String, BTreeSet<String>)> = BTreeMap::new();
    for line in scrape.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            out.entry(name.to_owned()).or_default().0 = kind.to_owned();
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let series = line.rsplit_once(' ').unwrap().0;
        let (metric, rest) = series.split_once('{').unwrap_or((series, "}"));
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| {
                metric
                    .strip_suffix(s)
                    .filter(|f| out.get(*f).is_some_and(|(k, _)| k == "histogram"))
            })
            .unwrap_or(metric);
        let labels = parse_labels(rest.trim_end_matches('}'))
            .into_iter()
            .map(|(k, _)| k)
            .filter(|k| k != "le");
        out.entry(family.to_owned()).or_default().1.extend(labels);
    }
    out.retain(|name, _| name.starts_with("courier_"));
    out
}

/// `deploy/metrics.txt`: name, type and label names of every Courier metric.
fn listed_metrics() -> BTreeMap<String, (String, BTreeSet<String>)> {
    std::fs::read_to_string(workspace().join("deploy/metrics.txt"))
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let parts: Vec<&str> = l.split_whitespace().collect();
            let labels = if parts[2] == "-" {
                BTreeSet::new()
            } else {
                parts[2].split(',').map(str::to_owned).collect()
            };
            (parts[0].to_owned(), (parts[1].to_owned(), labels))
        })
        .filter(|(name, _)| name.starts_with("courier_"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metrics_count_a_known_workload_and_promtool_accepts_them() {
    let env = TestEnv::new().await;
    let target = Target::start().await;
    target.script("/fail", vec![Reply::status(500)]);
    let mut vars = env.process_env();
    vars.push(("COURIER__SERVER__PORT".into(), "0".into()));
    let api = ChildProcess::spawn("courier-api", &["serve"], &vars);
    let base = format!("http://127.0.0.1:{}", api.api_port().await);
    let worker_port = free_port();
    let port = worker_port.to_string();
    let _worker = ChildProcess::start_worker(
        &env.process_env_with(&[("COURIER__WORKER__METRICS_PORT", port.as_str())]),
    )
    .await;
    let client = env.client();
    let submit = |body: Value| {
        let (client, base) = (client.clone(), base.clone());
        async move {
            let r = client
                .post(format!("{base}/v1/jobs"))
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::CREATED);
            r.json::<Value>().await.unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned()
        }
    };
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(submit(json!({"target": {"url": target.url("/ok")}})).await);
    }
    for _ in 0..2 {
        ids.push(submit(json!({"target": {"url": target.url("/fail")}, "max_attempts": 1})).await);
    }
    let later = submit(json!({"target": {"url": target.url("/ok")}, "delay_ms": 600_000})).await;
    let r = client
        .post(format!("{base}/v1/jobs/{later}/cancel"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // A schedule in a queue of its own fires at least once.
    let r = client
        .put(format!("{base}/v1/schedules/metrics-tick"))
        .json(&json!({"every_ms": 1000, "job": {"queue": "sched", "target": {"url": target.url("/ok")}}}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::CREATED,
        "{}",
        r.text().await.unwrap()
    );
    for id in &ids {
        wait_until("every job to end", T, || async {
            let job: Value = client
                .get(format!("{base}/v1/jobs/{id}"))
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            matches!(job["state"].as_str(), Some("succeeded" | "dead")).then_some(())
        })
        .await;
    }
    let scrape = |url: String| async move {
        let r = reqwest::get(url).await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert!(
            r.headers()[header::CONTENT_TYPE]
                .to_str()
                .unwrap()
                .starts_with("text/plain")
        );
        r.text().await.unwrap()
    };
    let worker_url = format!("http://127.0.0.1:{worker_port}/metrics");
    // The worker's counters move once its history is written; the API's depth gauges
    // every 5 s.
    let worker_text = wait_until("the worker's counts", T, || async {
        let text = scrape(worker_url.clone()).await;
        let q = ("queue", "default");
        (sample(
            &text,
            "courier_jobs_finished_total",
            &[q, ("state", "succeeded")],
        ) == Some(5.0)
            && sample(
                &text,
                "courier_jobs_finished_total",
                &[q, ("state", "dead")],
            ) == Some(2.0))
        .then_some(text)
    })
    .await;
    let api_text = wait_until(
        "the api's gauges and the schedule's occurrence",
        T,
        || async {
            let text = scrape(format!("{base}/metrics")).await;
            (sample(
                &text,
                "courier_queue_depth",
                &[("queue", "default"), ("state", "dead")],
            ) == Some(2.0)
                && sample(
                    &text,
                    "courier_schedule_occurrences_total",
                    &[("queue", "sched"), ("outcome", "fired")],
                )
                .is_some_and(|n| n >= 1.0))
            .then_some(text)
        },
    )
    .await;
    let q = ("queue", "default");
    assert_eq!(
        sample(&api_text, "courier_jobs_submitted_total", &[q]),
        Some(8.0)
    );
    assert_eq!(
        sample(
            &api_text,
            "courier_jobs_finished_total",
            &[q, ("state", "cancelled")]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &api_text,
            "courier_queue_depth",
            &[q, ("state", "scheduled")]
        ),
        Some(0.0)
    );
    assert_eq!(sample(&api_text, "courier_redis_up", &[]), Some(1.0));
    assert_eq!(sample(&api_text, "courier_postgres_up", &[]), Some(1.0));
    assert!(
        sample(
            &api_text,
            "courier_schedule_lateness_seconds_count",
            &[("queue", "sched")]
        )
        .is_some_and(|n| n >= 1.0)
    );
    assert_eq!(
        sample(
            &worker_text,
            "courier_attempts_total",
            &[q, ("outcome", "succeeded")]
        ),
        Some(5.0)
    );
    assert_eq!(
        sample(
            &worker_text,
            "courier_attempts_total",
            &[q, ("outcome", "failed")]
        ),
        Some(2.0)
    );
    assert_eq!(
        sample(&worker_text, "courier_attempt_duration_seconds_count", &[q]),
        Some(7.0)
    );
    assert_eq!(
        sample(&worker_text, "courier_queue_wait_seconds_count", &[q]),
        Some(7.0)
    );
    assert_eq!(
        sample(&worker_text, "courier_history_rejects_total", &[]),
        Some(0.0)
    );
    assert!(sample(&worker_text, "courier_calls_in_flight", &[]).is_some());
    assert!(sample(&worker_text, "courier_history_records_buffered", &[]).is_some());

    // The families the two processes export are exactly those deploy/ may use.
    let mut exported = families(&api_text);
    for (name, (kind, labels)) in families(&worker_text) {
        let entry = exported
            .entry(name)
            .or_insert_with(|| (kind.clone(), BTreeSet::new()));
        assert_eq!(entry.0, kind);
        entry.1.extend(labels);
    }
    assert_eq!(
        exported,
        listed_metrics(),
        "exported families vs deploy/metrics.txt"
    );

    for (who, text) in [("api", &api_text), ("worker", &worker_text)] {
        let (ok, said) = promtool_check(text);
        assert!(
            ok,
            "promtool check metrics refuses the {who}'s scrape: {said}"
        );
    }
    // And the check can fail: a counter without _total is refused.
    let (ok, _) =
        promtool_check("# HELP bad_counter x\n# TYPE bad_counter counter\nbad_counter 1\n");
    assert!(!ok, "promtool accepted a badly named counter");

    // The worker's probes.
    let ready = reqwest::get(format!("http://127.0.0.1:{worker_port}/readyz"))
        .await
        .unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
    let alive = reqwest::get(format!("http://127.0.0.1:{worker_port}/healthz"))
        .await
        .unwrap();
    assert_eq!(alive.status(), StatusCode::OK);
}

async fn ids_where(env: &TestEnv, label: &str, state: &str) -> BTreeSet<String> {
    let (k, v) = label.split_once(':').unwrap();
    sqlx::query_scalar::<_, String>(
        "SELECT id::text FROM jobs WHERE labels ->> $1 = $2 AND state::text = $3",
    )
    .bind(k)
    .bind(v)
    .bind(state)
    .fetch_all(&env.db)
    .await
    .unwrap()
    .into_iter()
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bulk_retry_and_cancel_change_only_what_matched_at_the_moment() {
    let env = TestEnv::new().await;
    let target = Target::start().await;
    let app = TestApp::spawn(env.settings.clone()).await;
    let _worker = WorkerHandle::spawn(env.settings.clone()).await;
    // Each job's first call fails, its next succeeds.
    let dying = |group: &str, i: usize| {
        let path = format!("/bulk/{group}/{i}");
        target.script(
            &path,
            vec![Reply::status(500).body("boom"), Reply::status(200)],
        );
        json!({"target": {"url": target.url(&path)}, "max_attempts": 1, "labels": {"group": group}})
    };
    let first: Vec<String> = app.submit_many(30, |i| dying("b", i)).await;
    // One more dead job the filter's text leaves out, and one of another group.
    target.script("/other", vec![Reply::status(500)]);
    app.submit(json!({"target": {"url": target.url("/other")}, "max_attempts": 1, "labels": {"group": "b"}})).await;
    app.submit(dying("x", 0)).await;
    wait_until("the jobs to die", T, || async {
        (ids_where(&env, "group:b", "dead").await.len() == 31
            && ids_where(&env, "group:x", "dead").await.len() == 1)
            .then_some(())
    })
    .await;
    let filter = json!({"state": "dead", "label": ["group:b"], "q": "/BULK/b/"});
    let (status, counted) = app
        .post(
            "/v1/jobs/bulk/retry",
            &json!({"filter": filter, "dry_run": true}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{counted}");
    assert_eq!(counted["matched"], 30);
    assert!(counted.get("done").is_none());
    // Five more match the filter, but only after the count.
    let late: Vec<String> = app.submit_many(5, |i| dying("b", 100 + i)).await;
    wait_until("the late jobs to die", T, || async {
        (ids_where(&env, "group:b", "dead").await.len() == 36).then_some(())
    })
    .await;
    let (status, done) = app
        .post(
            "/v1/jobs/bulk/retry",
            &json!({"filter": filter, "as_of": counted["as_of"]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{done}");
    assert_eq!(
        (done["matched"].as_i64(), done["done"].as_i64()),
        (Some(30), Some(30))
    );
    wait_until("the 30 to succeed", T, || async {
        (ids_where(&env, "group:b", "succeeded").await == first.iter().cloned().collect())
            .then_some(())
    })
    .await;
    for id in &late {
        let job = app.job(id).await;
        assert_eq!(
            (job["state"].as_str(), job["round"].as_i64()),
            (Some("dead"), Some(1)),
            "{job}"
        );
    }
    let retried = app.job(&first[0]).await;
    assert_eq!(
        (retried["round"].as_i64(), retried["attempts"].as_i64()),
        (Some(2), Some(1))
    );

    // Cancel: 25 waiting jobs (10 in another queue the filter leaves out), 3 arrive after.
    let waiting = app
        .submit_many(15, |_| json!({"target": {"url": target.url("/never")}, "delay_ms": 600_000, "labels": {"group": "c"}}))
        .await;
    app.submit_many(10, |_| json!({"queue": "other", "target": {"url": target.url("/never")}, "delay_ms": 600_000, "labels": {"group": "c"}}))
        .await;
    let filter = json!({"queue": "default", "label": ["group:c"]});
    let (_, counted) = app
        .post(
            "/v1/jobs/bulk/cancel",
            &json!({"filter": filter, "dry_run": true}),
        )
        .await;
    assert_eq!(counted["matched"], 15);
    let after = app
        .submit_many(3, |_| json!({"target": {"url": target.url("/never")}, "delay_ms": 600_000, "labels": {"group": "c"}}))
        .await;
    let (status, done) = app
        .post(
            "/v1/jobs/bulk/cancel",
            &json!({"filter": filter, "as_of": counted["as_of"]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{done}");
    assert_eq!(done["done"], 15);
    let cancelled = ids_where(&env, "group:c", "cancelled").await;
    assert_eq!(cancelled, waiting.iter().cloned().collect());
    for id in &after {
        assert_eq!(app.job(id).await["state"], "scheduled");
    }

    // Only admin keys; bad filters are 422s naming the field.
    let writer = courier_core::repo::keys::create_key(
        &env.db,
        "writer",
        courier_core::repo::keys::Scope::Write,
        None,
    )
    .await
    .unwrap()
    .secret;
    let r = client_with_key(&writer)
        .post(app.url("/v1/jobs/bulk/retry"))
        .json(&json!({"filter": {}, "dry_run": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    for (body, field) in [
        (json!({"filter": {"state": "succeeded"}}), "filter.state"),
        (
            json!({"filter": {"created_after": "yesterday"}}),
            "filter.created_after",
        ),
        (json!({"filter": {"label": ["nocolon"]}}), "filter.label"),
        (json!({"filter": {"queue": "Bad Queue"}}), "filter.queue"),
        (json!({"as_of": "2999-01-01T00:00:00Z"}), "as_of"),
    ] {
        let (status, problem) = app.post("/v1/jobs/bulk/retry", &body).await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body}: {problem}"
        );
        assert!(problem.to_string().contains(field), "{body}: {problem}");
    }
    let (status, _) = app
        .post(
            "/v1/jobs/bulk/cancel",
            &json!({"filter": {"state": "dead"}}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, _) = app
        .post("/v1/jobs/bulk/cancel", &json!({"filters": {}}))
        .await;
    assert!(
        status.is_client_error(),
        "an unknown field is refused: {status}"
    );

    // The list takes the same filter.
    let (status, page) = app
        .get("/v1/jobs?state=dead&q=%2Fbulk%2Fb%2F&label=group:b&limit=500")
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page["jobs"].as_array().unwrap().len(), 5);
    let (status, page) = app.get("/v1/jobs?created_after=2999-01-01T00:00:00Z").await;
    assert_eq!(
        (status, page["jobs"].as_array().unwrap().len()),
        (StatusCode::OK, 0)
    );
    let (status, _) = app.get("/v1/jobs?created_before=soon").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);

    // Both are in the audit log with their counts.
    let (_, audit) = app.get("/v1/audit?limit=500").await;
    let entries = audit["entries"].as_array().unwrap();
    let find = |action: &str| {
        entries
            .iter()
            .find(|e| e["action"] == action)
            .cloned()
            .unwrap()
    };
    assert_eq!(find("jobs.bulk_retry")["count"], 30);
    assert_eq!(find("jobs.bulk_retry")["key_name"], "test-app");
    assert_eq!(find("jobs.bulk_cancel")["count"], 15);
    assert_eq!(find("jobs.bulk_cancel")["target"]["queue"], "default");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_kind_of_change_leaves_an_audit_row() {
    let env = TestEnv::new().await;
    let app = TestApp::spawn(env.settings.clone()).await;
    let url = "http://127.0.0.1:9/never";
    let id = app
        .submit(json!({"target": {"url": url}, "delay_ms": 600_000}))
        .await;
    let mut expected: Vec<&str> = Vec::new();
    let mut act = |status: StatusCode, body: Value, action: &'static str| {
        assert!(status.is_success(), "{action}: {status} {body}");
        expected.push(action);
    };
    let (s, b) = app
        .post(&format!("/v1/jobs/{id}/cancel"), &Value::Null)
        .await;
    act(s, b, "jobs.cancel");
    let (s, b) = app
        .post(&format!("/v1/jobs/{id}/retry"), &Value::Null)
        .await;
    act(s, b, "jobs.retry");
    let (s, b) = app
        .post("/v1/jobs/bulk/cancel", &json!({"filter": {}}))
        .await;
    act(s, b, "jobs.bulk_cancel");
    let (s, b) = app.post("/v1/jobs/bulk/retry", &json!({})).await;
    act(s, b, "jobs.bulk_retry");
    let (s, b) = app.post("/v1/queues/default/pause", &Value::Null).await;
    act(s, b, "queues.pause");
    let (s, b) = app.post("/v1/queues/default/resume", &Value::Null).await;
    act(s, b, "queues.resume");
    let (s, b) = app
        .send(
            reqwest::Method::PATCH,
            "/v1/queues/default/settings",
            &json!({"max_concurrency": 5}),
        )
        .await;
    act(s, b, "queues.settings");
    let (s, b) = app
        .send(
            reqwest::Method::PUT,
            "/v1/flow-keys/tenant-1",
            &json!({"max_concurrency": 2}),
        )
        .await;
    act(s, b, "flow_keys.put");
    let (s, b) = app
        .send(
            reqwest::Method::DELETE,
            "/v1/flow-keys/tenant-1",
            &Value::Null,
        )
        .await;
    act(s, b, "flow_keys.delete");
    let schedule = json!({"every_ms": 3_600_000, "job": {"target": {"url": url}}});
    let (s, b) = app
        .send(reqwest::Method::PUT, "/v1/schedules/audited", &schedule)
        .await;
    act(s, b, "schedules.create");
    let (s, b) = app
        .send(
            reqwest::Method::PATCH,
            "/v1/schedules/audited",
            &json!({"jitter_ms": 10}),
        )
        .await;
    act(s, b, "schedules.update");
    let (s, b) = app
        .post(
            "/v1/schedules/audited/pause",
            &json!({"note": "maintenance"}),
        )
        .await;
    act(s, b, "schedules.pause");
    let (s, b) = app.post("/v1/schedules/audited/resume", &Value::Null).await;
    act(s, b, "schedules.resume");
    let (s, b) = app
        .post("/v1/schedules/audited/trigger", &Value::Null)
        .await;
    act(s, b, "schedules.trigger");
    let from = (chrono::Utc::now() - chrono::Duration::hours(3)).to_rfc3339();
    let to = (chrono::Utc::now() - chrono::Duration::hours(1)).to_rfc3339();
    let (s, b) = app
        .post(
            "/v1/schedules/audited/backfill",
            &json!({"from": from, "to": to}),
        )
        .await;
    let backfilled = b["runs"].as_array().map_or(0, Vec::len);
    assert!(backfilled >= 2, "{b}");
    act(s, b, "schedules.backfill");
    let (s, b) = app
        .send(
            reqwest::Method::DELETE,
            "/v1/schedules/audited",
            &Value::Null,
        )
        .await;
    act(s, b, "schedules.delete");
    // Keys are made and revoked from the command line.
    let keys = |args: &[&str]| {
        let out = std::process::Command::new(courier_testkit::binary("courier-api"))
            .arg("keys")
            .args(args)
            .envs(env.process_env())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let secret = keys(&["create", "--name", "audited key", "--scope", "read"]);
    keys(&["revoke", &secret.trim()[..16]]);
    expected.extend(["keys.create", "keys.revoke"]);

    // Newest first, page by page.
    let mut seen: Vec<Value> = Vec::new();
    let mut path = "/v1/audit?limit=5".to_owned();
    loop {
        let (status, page) = app.get(&path).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let entries = page["entries"].as_array().unwrap();
        assert!(entries.len() <= 5);
        seen.extend(entries.iter().cloned());
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/v1/audit?limit=5&cursor={cursor}"),
            None => break,
        }
    }
    let ids: Vec<i64> = seen.iter().map(|e| e["id"].as_i64().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "newest first: {ids:?}");
    let actions: Vec<&str> = seen
        .iter()
        .rev()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, expected);
    let by = |action: &str| seen.iter().find(|e| e["action"] == action).unwrap().clone();
    assert_eq!(by("jobs.cancel")["target"], id.as_str());
    assert_eq!(by("jobs.cancel")["count"], 1);
    assert_eq!(by("jobs.cancel")["key_name"], "test-app");
    assert_eq!(by("queues.settings")["details"]["max_concurrency"], 5);
    assert_eq!(by("schedules.backfill")["count"], backfilled);
    assert_eq!(by("keys.create")["target"]["name"], "audited key");
    let limited = courier_core::repo::keys::create_key(
        &env.db,
        "one queue",
        courier_core::repo::keys::Scope::Read,
        Some(vec!["default".into()]),
    )
    .await
    .unwrap()
    .secret;
    let r = client_with_key(&limited)
        .get(app.url("/v1/audit"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::FORBIDDEN,
        "a queue-limited key sees no audit log"
    );
    let (status, _) = app.get("/v1/audit?limit=0").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, _) = app.get("/v1/audit?cursor=abc").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
}

fn set_cookie(r: &reqwest::Response) -> Option<String> {
    r.headers()
        .get(header::SET_COOKIE)
        .map(|v| v.to_str().unwrap().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_dashboard_signs_in_with_a_cookie_and_refuses_changes_without_its_csrf_token() {
    let env = TestEnv::new().await;
    let app = TestApp::spawn(env.settings.clone()).await;
    let id = app
        .submit(json!({"target": {"url": "http://127.0.0.1:9/x"}, "delay_ms": 600_000}))
        .await;
    let plain = reqwest::Client::new();

    // The page and its files, under a strict CSP.
    let page = plain.get(app.url("/ui/")).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    assert_eq!(page.headers()["x-content-type-options"], "nosniff");
    assert!(page.text().await.unwrap().contains("/ui/app.js"));
    let js = plain.get(app.url("/ui/app.js")).send().await.unwrap();
    assert!(
        js.headers()[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/javascript")
    );
    let r = plain
        .get(app.url("/ui/nothing-here.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = plain.get(app.url("/ui")).send().await.unwrap();
    assert_eq!(r.url().path(), "/ui/", "/ui redirects to /ui/");

    // A wrong key: 401, and no cookie.
    let r = plain
        .post(app.url("/ui/session"))
        .json(&json!({"key": format!("courier_{}", "0".repeat(64))}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(set_cookie(&r), None);
    let r = plain
        .post(app.url("/ui/session"))
        .json(&json!({"key": 1}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_client_error());

    let sign_in = |key: String| {
        let (plain, url) = (plain.clone(), app.url("/ui/session"));
        async move {
            let r = plain
                .post(url)
                .json(&json!({"key": key}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::OK);
            let cookie = set_cookie(&r).unwrap();
            let body: Value = r.json().await.unwrap();
            (cookie, body)
        }
    };
    let (cookie, session) = sign_in(app.api_key.clone()).await;
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    assert_eq!(
        (session["name"].as_str(), session["scope"].as_str()),
        (Some("test-app"), Some("admin"))
    );
    let csrf = session["csrf_token"].as_str().unwrap().to_owned();
    let pair = cookie.split(';').next().unwrap().to_owned();
    let with_cookie = |method: reqwest::Method, path: &str| {
        plain
            .request(method, app.url(path))
            .header(header::COOKIE, pair.clone())
    };
    let r = with_cookie(reqwest::Method::GET, "/ui/session")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.json::<Value>().await.unwrap()["csrf_token"],
        csrf.as_str()
    );
    let r = with_cookie(reqwest::Method::GET, "/v1/jobs")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "a session reads like its key");

    // A change without the token, or with a wrong one: 403 and nothing changed.
    let cancel = format!("/v1/jobs/{id}/cancel");
    let r = with_cookie(reqwest::Method::POST, &cancel)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = with_cookie(reqwest::Method::POST, &cancel)
        .header("x-csrf-token", "wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = with_cookie(reqwest::Method::POST, "/v1/jobs")
        .json(&json!({"target": {"url": "http://127.0.0.1:9/y"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(env.count_jobs(None).await, 1);
    assert_eq!(app.job(&id).await["state"], "scheduled");
    let r = with_cookie(reqwest::Method::POST, &cancel)
        .header("x-csrf-token", &csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    // A read key's session reads but may not change anything, token or not.
    let reader = courier_core::repo::keys::create_key(
        &env.db,
        "reader",
        courier_core::repo::keys::Scope::Read,
        None,
    )
    .await
    .unwrap()
    .secret;
    let (read_cookie, read_session) = sign_in(reader).await;
    assert_eq!(read_session["scope"], "read");
    let r = plain
        .post(app.url(&format!("/v1/jobs/{id}/retry")))
        .header(header::COOKIE, read_cookie.split(';').next().unwrap())
        .header("x-csrf-token", read_session["csrf_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);

    // Signing out ends the session and clears the cookie.
    let r = with_cookie(reqwest::Method::DELETE, "/ui/session")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert!(set_cookie(&r).unwrap().contains("Max-Age=0"));
    let r = with_cookie(reqwest::Method::GET, "/v1/jobs")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = with_cookie(reqwest::Method::GET, "/ui/session")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn throughput_counts_each_minute_of_the_last_hour() {
    let env = TestEnv::new().await;
    let target = Target::start().await;
    target.script("/fail", vec![Reply::status(500)]);
    let app = TestApp::spawn(env.settings.clone()).await;
    let _worker = WorkerHandle::spawn(env.settings.clone()).await;
    let ok = app
        .submit_many(
            4,
            |_| json!({"queue": "tp", "target": {"url": target.url("/ok")}}),
        )
        .await;
    let bad = app
        .submit(json!({"queue": "tp", "target": {"url": target.url("/fail")}, "max_attempts": 1}))
        .await;
    for id in &ok {
        app.wait_for_state(id, "succeeded", T).await;
    }
    app.wait_for_state(&bad, "dead", T).await;
    let (status, body) = app.get("/v1/queues/tp/throughput").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let minutes = body["minutes"].as_array().unwrap();
    assert_eq!(minutes.len(), 60);
    let sum = |field: &str| {
        minutes
            .iter()
            .map(|m| m[field].as_i64().unwrap())
            .sum::<i64>()
    };
    assert_eq!((sum("submitted"), sum("succeeded"), sum("dead")), (5, 4, 1));
    let times: Vec<&str> = minutes.iter().map(|m| m["at"].as_str().unwrap()).collect();
    assert!(times.windows(2).all(|w| w[0] < w[1]), "oldest first");
    let (status, _) = app.get("/v1/queues/Bad%20Name/throughput").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}
