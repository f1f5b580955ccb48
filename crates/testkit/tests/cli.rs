//! The `courier` command-line client (SPEC 13), run as the real binary from
//! target/<profile>/ against a real API, worker, Redis, PostgreSQL and target: submit
//! and watch a job to its end, cancel and retry, import a JSON Lines file with bad lines
//! (and again, resumably, without duplicates), `--json` output read back with the API's
//! view types, and exit codes.

use std::{
    path::{Path, PathBuf},
    process::{Output, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{Router, extract::State, http::HeaderMap, routing::any};
use courier_core::views::{ExecutionView, JobPage, JobView, QueueList, RunPage, ScheduleList};
use courier_testkit::{Reply, Target, TestApp, TestEnv, WorkerHandle, binary};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::Command,
    sync::Notify,
};

const T: Duration = Duration::from_secs(60);

/// A `courier` command against `app`, with its key; the environment's own
/// `COURIER_URL` and `COURIER_API_KEY` are not inherited.
fn courier(app: &TestApp, args: &[&str]) -> Command {
    let mut command = Command::new(binary("courier"));
    command
        .env_remove("COURIER_URL")
        .env("COURIER_API_KEY", &app.api_key)
        .arg("--url")
        .arg(&app.base)
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    command
}

/// Runs `command` to its end (at most a minute).
async fn run(mut command: Command) -> Output {
    tokio::time::timeout(T, command.output())
        .await
        .expect("courier finished within a minute")
        .expect("run courier")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Asserts the exit code, showing everything the command wrote when it differs.
fn assert_exit(output: &Output, code: i32) {
    assert_eq!(
        output.status.code(),
        Some(code),
        "exit code; stdout:\n{}\nstderr:\n{}",
        stdout(output),
        stderr(output)
    );
}

fn temp_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("courier-cli-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("create a temporary folder");
    dir
}

/// A target that reports 50% through its call's `X-Courier-Progress-Url`, then holds
/// its answer until the test has seen `watch` print that progress.
#[derive(Clone, Default)]
struct Reporter {
    release: Arc<Notify>,
    calls: Arc<Mutex<usize>>,
}

async fn report(State(reporter): State<Reporter>, headers: HeaderMap) -> axum::http::StatusCode {
    *reporter.calls.lock().unwrap() += 1;
    let url = headers
        .get("x-courier-progress-url")
        .and_then(|v| v.to_str().ok())
        .expect("X-Courier-Progress-Url")
        .to_owned();
    let answer = reqwest::Client::new()
        .post(&url)
        .json(&json!({"percent": 50, "message": "halfway there"}))
        .send()
        .await
        .expect("report progress");
    assert_eq!(answer.status(), StatusCode::OK);
    reporter.release.notified().await;
    axum::http::StatusCode::OK
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn submit_then_watch_follows_the_job_and_its_progress_to_success() {
    let env = TestEnv::new().await;
    let reporter = Reporter::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = format!("http://{}/work", listener.local_addr().unwrap());
    let router = Router::new()
        .route("/work", any(report))
        .with_state(reporter.clone());
    tokio::spawn(async move { axum::serve(listener, router).await });
    let app = TestApp::spawn(env.settings.clone()).await;
    let mut settings = env.settings.clone();
    settings.server.public_url = Some(courier_core::domain::TargetUrl::parse(&app.base).unwrap());
    let _worker = WorkerHandle::spawn(settings).await;

    let submitted = run(courier(
        &app,
        &[
            "submit",
            "--url",
            &target,
            "--method",
            "put",
            "-H",
            "X-Tenant: acme",
            "--json-body",
            r#"{"report": 42}"#,
            "--label",
            "tenant=acme",
            "--queue",
            "cli",
            "--max-attempts",
            "2",
            "--priority",
            "5",
            "--json",
        ],
    ))
    .await;
    assert_exit(&submitted, 0);
    let job: JobView =
        serde_json::from_slice(&submitted.stdout).expect("submit --json is a JobView");
    assert_eq!(job.queue, "cli");
    assert_eq!(job.priority, 5);
    assert_eq!(job.max_attempts, 2);
    assert_eq!(job.target.method.as_str(), "PUT");
    assert_eq!(job.target.body, r#"{"report":42}"#);
    assert_eq!(job.labels.get("tenant").map(String::as_str), Some("acme"));
    let id = job.id.to_string();

    let mut watch = courier(&app, &["watch", &id, "--interval", "50ms"]);
    watch.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = watch.spawn().expect("spawn courier watch");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    let released = tokio::time::timeout(T, async {
        while let Some(line) = lines.next_line().await.expect("read watch's output") {
            seen.push(line.clone());
            if line.contains("50% halfway there") {
                // Only now may the call end: watch showed the progress live.
                reporter.release.notify_one();
            }
            if line.contains("succeeded") {
                break;
            }
        }
    })
    .await;
    assert!(released.is_ok(), "watch printed: {seen:#?}");
    let status = tokio::time::timeout(T, child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(0), "watch printed: {seen:#?}");
    let text = seen.join("\n");
    assert!(text.contains("running    attempt 1 of 2"), "{text}");
    assert!(text.contains("succeeded  200 in"), "{text}");
    assert!(text.contains("after 1 attempt"), "{text}");
    assert_eq!(*reporter.calls.lock().unwrap(), 1);

    // The same idempotency key twice: one job, and the CLI says which.
    let keyed = |app| {
        courier(
            app,
            &[
                "submit",
                "--url",
                &target,
                "--delay",
                "1h",
                "--idempotency-key",
                "k-1",
            ],
        )
    };
    let first = run(keyed(&app)).await;
    assert_exit(&first, 0);
    assert!(
        stdout(&first).contains("accepted: scheduled in queue default, first attempt at"),
        "{}",
        stdout(&first)
    );
    let again = run(keyed(&app)).await;
    assert_exit(&again, 0);
    assert!(
        stdout(&again).contains("already submitted"),
        "{}",
        stdout(&again)
    );
    assert_eq!(env.count_jobs(Some("scheduled")).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn watch_exits_1_for_a_dead_or_cancelled_job_and_cancel_and_retry_say_what_they_did() {
    let env = TestEnv::new().await;
    let target = Target::start().await;
    target.script("/gone", vec![Reply::status(404)]);
    let app = TestApp::spawn(env.settings.clone()).await;
    let _worker = WorkerHandle::spawn(env.settings.clone()).await;

    let dead = app
        .submit(json!({"target": {"url": target.url("/gone")}, "max_attempts": 3}))
        .await;
    let watched = run(courier(&app, &["watch", &dead, "--interval", "50ms"])).await;
    assert_exit(&watched, 1);
    let text = stdout(&watched);
    assert!(text.contains("dead       404 in"), "{text}");
    assert!(
        text.contains("after 1 attempt"),
        "a 404 is not retried: {text}"
    );

    // --json: one JobView per line, the last one dead.
    let json_lines = run(courier(&app, &["watch", &dead, "--json"])).await;
    assert_exit(&json_lines, 1);
    let last: JobView = serde_json::from_str(stdout(&json_lines).lines().last().unwrap()).unwrap();
    assert_eq!(last.state.as_str(), "dead");

    let later = app
        .submit(json!({"target": {"url": target.url("/later")}, "delay_ms": 3_600_000}))
        .await;
    let cancelled = run(courier(&app, &["cancel", &later])).await;
    assert_exit(&cancelled, 0);
    assert_eq!(
        stdout(&cancelled).trim(),
        format!("job {later} is cancelled")
    );
    let watched = run(courier(&app, &["watch", &later])).await;
    assert_exit(&watched, 1);
    assert!(
        stdout(&watched).contains("cancelled"),
        "{}",
        stdout(&watched)
    );

    let again = run(courier(&app, &["cancel", &later])).await;
    assert_exit(&again, 3);
    assert!(
        stderr(&again).contains("Conflict (409)"),
        "{}",
        stderr(&again)
    );
    assert!(
        stderr(&again).contains("already cancelled"),
        "{}",
        stderr(&again)
    );

    let retried = run(courier(&app, &["retry", &later, "--json"])).await;
    assert_exit(&retried, 0);
    let job: JobView = serde_json::from_slice(&retried.stdout).unwrap();
    assert_eq!(job.round, 2);
    assert_ne!(job.state.as_str(), "cancelled");
}

/// Writes `n` job lines to `path`, each calling `url`, and puts the three bad lines in.
fn write_jobs(path: &Path, n: usize, url: &str, bad: &[(usize, String)]) {
    let mut text = String::new();
    for line in 1..=n {
        match bad.iter().find(|(at, _)| *at == line) {
            Some((_, content)) => text.push_str(content),
            None => text.push_str(
                &json!({"target": {"url": url}, "queue": "imports", "labels": {"n": line.to_string()}})
                    .to_string(),
            ),
        }
        text.push('\n');
    }
    std::fs::write(path, text).expect("write the jobs file");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn import_of_10000_lines_accepts_the_good_ones_once_and_names_the_bad_lines() {
    let env = TestEnv::new().await;
    let app = TestApp::spawn(env.settings.clone()).await;
    let dir = temp_dir();
    let file = dir.join("jobs.jsonl");
    let bad = vec![
        (17, "{\"target\": {\"url\": ".to_owned()),
        (
            5_000,
            json!({"target": {"url": "ftp://example.com/x"}}).to_string(),
        ),
        (
            9_999,
            json!({"target": {"url": "http://127.0.0.1:9/x"}, "max_attempts": 0}).to_string(),
        ),
    ];
    write_jobs(&file, 10_000, "http://127.0.0.1:9/import", &bad);
    let state = dir.join("state");
    let import = |json: bool| {
        let mut command = courier(&app, &["import", file.to_str().unwrap()]);
        if json {
            command.arg("--json");
        }
        command.env("XDG_STATE_HOME", &state);
        command
    };

    let first = run(import(false)).await;
    assert_exit(&first, 1);
    let text = stdout(&first);
    assert!(
        text.starts_with("accepted 9997, refused 3 (10000 lines in"),
        "{text}"
    );
    assert!(
        text.contains("\nline 17: not JSON: EOF while parsing a value at column "),
        "{text}"
    );
    assert!(text.contains("\nline 5000: target.url: "), "{text}");
    assert!(text.contains("\nline 9999: max_attempts: "), "{text}");
    assert_eq!(text.lines().count(), 4, "{text}");
    assert_eq!(env.count_jobs(None).await, 9_997);
    let lines: Vec<String> =
        sqlx::query_scalar("SELECT labels->>'n' FROM jobs ORDER BY (labels->>'n')::int")
            .fetch_all(&env.db)
            .await
            .unwrap();
    let expected: Vec<String> = (1..=10_000)
        .filter(|n| ![17, 5_000, 9_999].contains(n))
        .map(|n| n.to_string())
        .collect();
    assert_eq!(lines, expected, "every good line exactly once");

    // Again: everything is settled already; nothing new, nothing twice.
    let second = run(import(true)).await;
    assert_exit(&second, 1);
    let summary: Value = serde_json::from_slice(&second.stdout).expect("import --json");
    assert_eq!(summary["accepted"], 0, "{summary}");
    assert_eq!(summary["accepted_before"], 9_997, "{summary}");
    let refused: Vec<u64> = summary["refused"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["line"].as_u64().unwrap())
        .collect();
    assert_eq!(refused, [17, 5_000, 9_999]);
    assert_eq!(env.count_jobs(None).await, 9_997);

    // Each job carries its line's marker, which is how a cut-off request is settled.
    let markers: i64 =
        sqlx::query_scalar("SELECT count(DISTINCT labels->>'courier-import') FROM jobs")
            .fetch_one(&env.db)
            .await
            .unwrap();
    assert_eq!(markers, 9_997);
}

/// The journal's records, and a copy of it without its last `accepted` record (as if
/// the CLI had been killed after the API committed a batch, before it wrote that down).
fn cut_before_last_accepted(journal: &Path) -> String {
    let text = std::fs::read_to_string(journal).unwrap();
    let mut records: Vec<&str> = text.lines().collect();
    let last = records
        .iter()
        .rposition(|r| r.starts_with("{\"accepted\""))
        .expect("an accepted record");
    records.truncate(last);
    assert!(
        records.last().unwrap().starts_with("{\"sending\""),
        "{records:?}"
    );
    records.join("\n") + "\n"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_import_cut_off_mid_request_settles_that_request_through_its_markers() {
    let env = TestEnv::new().await;
    let app = TestApp::spawn(env.settings.clone()).await;
    let dir = temp_dir();
    let file = dir.join("jobs.jsonl");
    write_jobs(&file, 250, "http://127.0.0.1:9/x", &[]);
    let journal = dir.join("journal.jsonl");
    let import = || {
        courier(
            &app,
            &[
                "import",
                file.to_str().unwrap(),
                "--batch-size",
                "100",
                "--journal",
                journal.to_str().unwrap(),
            ],
        )
    };
    let first = run(import()).await;
    assert_exit(&first, 0);
    assert!(
        stdout(&first).starts_with("accepted 250, refused 0"),
        "{}",
        stdout(&first)
    );

    // Killed after the last batch was committed, before the journal said so: the next
    // run finds the batch's jobs and sends nothing again.
    std::fs::write(&journal, cut_before_last_accepted(&journal)).unwrap();
    let resumed = run(import()).await;
    assert_exit(&resumed, 0);
    assert!(
        stdout(&resumed).starts_with("accepted 0 new (250 in earlier runs)"),
        "{}",
        stdout(&resumed)
    );
    assert_eq!(env.count_jobs(None).await, 250);

    // Killed while the last batch was on its way, before the API committed it: the
    // next run finds none of its jobs and sends it.
    let cut = cut_before_last_accepted(&journal);
    sqlx::query("DELETE FROM jobs WHERE (labels->>'n')::int > 200")
        .execute(&env.db)
        .await
        .unwrap();
    std::fs::write(&journal, cut).unwrap();
    let resent = run(import()).await;
    assert_exit(&resent, 0);
    assert!(
        stdout(&resent).starts_with("accepted 50 new (200 in earlier runs)"),
        "{}",
        stdout(&resent)
    );
    assert_eq!(env.count_jobs(None).await, 250);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn json_output_reads_back_as_the_apis_views_for_get_list_queues_and_schedules() {
    let env = TestEnv::new().await;
    let target = Target::start().await;
    let app = TestApp::spawn(env.settings.clone()).await;
    let _worker = WorkerHandle::spawn(env.settings.clone()).await;
    let ids = app
        .submit_many(3, |i| {
            json!({"target": {"url": target.url("/ok")}, "queue": "reports",
                   "labels": {"batch": "b1", "i": i.to_string()}})
        })
        .await;
    for id in &ids {
        app.wait_for_state(id, "succeeded", T).await;
    }
    app.submit(json!({"target": {"url": target.url("/other")}, "delay_ms": 3_600_000}))
        .await;

    let got = run(courier(&app, &["get", &ids[0], "--json"])).await;
    assert_exit(&got, 0);
    let got: Value = serde_json::from_slice(&got.stdout).unwrap();
    let job: JobView = serde_json::from_value(got["job"].clone()).unwrap();
    let executions: Vec<ExecutionView> = serde_json::from_value(got["executions"].clone()).unwrap();
    assert_eq!(job.id.to_string(), ids[0]);
    assert_eq!(executions.len(), 1);
    assert_eq!(executions[0].status_code, Some(200));

    let human = run(courier(&app, &["get", &ids[0]])).await;
    assert_exit(&human, 0);
    assert!(
        stdout(&human).contains("state      succeeded"),
        "{}",
        stdout(&human)
    );
    assert!(
        stdout(&human).contains("ROUND  ATTEMPT  STARTED"),
        "{}",
        stdout(&human)
    );

    let listed = run(courier(
        &app,
        &[
            "list",
            "--queue",
            "reports",
            "--state",
            "succeeded",
            "--label",
            "batch=b1",
            "--limit",
            "2",
            "--json",
        ],
    ))
    .await;
    assert_exit(&listed, 0);
    let page: JobPage = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(page.jobs.len(), 2);
    assert!(page.next_cursor.is_some(), "a third job is left");
    assert_eq!(page.jobs[0].id.to_string(), ids[2], "newest first");

    let table = run(courier(&app, &["list", "--limit", "10"])).await;
    assert_exit(&table, 0);
    let text = stdout(&table);
    assert!(text.starts_with("ID "), "{text}");
    assert!(text.contains("ATTEMPTS  CREATED"), "{text}");
    assert_eq!(text.lines().count(), 5, "a header and 4 jobs: {text}");
    for id in &ids {
        assert!(text.contains(id.as_str()), "{text}");
    }

    let queues = run(courier(&app, &["queues", "--json"])).await;
    assert_exit(&queues, 0);
    let queues: QueueList = serde_json::from_slice(&queues.stdout).unwrap();
    let reports = queues
        .queues
        .iter()
        .find(|q| q.name == "reports")
        .expect("reports");
    assert_eq!(reports.succeeded_last_hour, 3);
    let default = queues
        .queues
        .iter()
        .find(|q| q.name == "default")
        .expect("default");
    assert_eq!(default.scheduled, 1);
    let table = run(courier(&app, &["queues"])).await;
    assert!(stdout(&table).starts_with("QUEUE"), "{}", stdout(&table));

    let (status, body) = app
        .send(
            Method::PUT,
            "/v1/schedules/nightly",
            &json!({"cron": "0 9 * * MON-FRI", "timezone": "Europe/Warsaw",
                    "job": {"target": {"url": target.url("/nightly")}}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = app
        .send(Method::POST, "/v1/schedules/nightly/trigger", &Value::Null)
        .await;
    assert!(status.is_success(), "{body}");
    let schedules = run(courier(&app, &["schedules", "--json"])).await;
    assert_exit(&schedules, 0);
    let list: ScheduleList = serde_json::from_slice(&schedules.stdout).unwrap();
    assert_eq!(list.schedules.len(), 1);
    assert_eq!(list.schedules[0].next_occurrences.len(), 5);
    let table = run(courier(&app, &["schedules"])).await;
    assert!(
        stdout(&table).contains("nightly  0 9 * * MON-FRI (Europe/Warsaw)"),
        "{}",
        stdout(&table)
    );
    let runs = run(courier(&app, &["schedules", "runs", "nightly", "--json"])).await;
    assert_exit(&runs, 0);
    let runs: RunPage = serde_json::from_slice(&runs.stdout).unwrap();
    assert_eq!(runs.runs.len(), 1);
    assert_eq!(runs.runs[0].kind, "trigger");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn errors_exit_3_with_the_problem_and_usage_errors_exit_2() {
    let env = TestEnv::new().await;
    let app = TestApp::spawn(env.settings.clone()).await;

    let wrong = run(courier(&app, &["list", "--api-key", "not-a-key"])).await;
    assert_exit(&wrong, 3);
    let answer = reqwest::Client::new()
        .get(app.url("/v1/jobs"))
        .bearer_auth("not-a-key")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::UNAUTHORIZED);
    let problem: Value = answer.json().await.unwrap();
    let detail = problem["detail"].as_str().unwrap();
    assert!(
        stderr(&wrong).contains("Unauthorized (401)"),
        "{}",
        stderr(&wrong)
    );
    assert!(
        stderr(&wrong).contains(detail),
        "{} lacks {detail}",
        stderr(&wrong)
    );
    assert!(stdout(&wrong).is_empty());

    let missing = uuid::Uuid::now_v7().to_string();
    let not_found = run(courier(&app, &["get", &missing])).await;
    assert_exit(&not_found, 3);
    assert!(
        stderr(&not_found).contains("Not Found (404)"),
        "{}",
        stderr(&not_found)
    );

    let invalid = run(courier(
        &app,
        &["submit", "--url", "ftp://x", "--priority", "12"],
    ))
    .await;
    assert_exit(&invalid, 3);
    let text = stderr(&invalid);
    assert!(text.contains("Unprocessable Entity (422)"), "{text}");
    assert!(
        text.contains("\n  target.url: ") && text.contains("\n  priority: "),
        "{text}"
    );

    // Nothing listens on port 9 of this machine.
    let mut unreachable = Command::new(binary("courier"));
    unreachable
        .args(["--url", "http://127.0.0.1:9", "queues"])
        .env_remove("COURIER_URL");
    let unreachable = run(unreachable).await;
    assert_exit(&unreachable, 3);
    assert!(
        stderr(&unreachable).contains("cannot reach the API at http://127.0.0.1:9"),
        "{}",
        stderr(&unreachable)
    );

    for args in [
        &["get", "not-a-uuid"][..],
        &["submit", "--method", "post"],
        &[
            "submit",
            "--url",
            "http://x",
            "--delay",
            "5",
            "--run-at",
            "2030-01-01T00:00:00Z",
        ],
        &["submit", "--url", "http://x", "-H", "no-colon"],
        &["list", "--state", "sleeping"],
        &["import", "/nonexistent/jobs.jsonl"],
        &["frobnicate"],
    ] {
        let output = run(courier(&app, args)).await;
        assert_exit(&output, 2);
        assert!(!stderr(&output).is_empty(), "{args:?} says why");
    }
    assert_eq!(env.count_jobs(None).await, 0, "nothing was submitted");
}
