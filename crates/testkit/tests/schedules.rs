//! Recurring schedules (SPEC 9, issue 11). Where time itself is the subject (daylight
//! saving, missed occurrences, pause, backfill, end) the API's scheduler runs on a
//! clock the test sets; overlap runs on the real clock with a worker and a slow target.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use courier_core::clock::ManualClock;
use courier_testkit::{Reply, Target, TestApp, TestEnv, WorkerHandle, wait_until};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(30);

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn job(url: &str) -> Value {
    json!({"target": {"url": url}})
}

/// PUTs schedule `name`; panics unless it is created.
async fn put(app: &TestApp, name: &str, body: Value) -> Value {
    let (status, view) = app
        .send(Method::PUT, &format!("/v1/schedules/{name}"), &body)
        .await;
    assert_eq!(status, StatusCode::CREATED, "{view}");
    view
}

/// Every run of `name`, oldest first.
async fn runs(app: &TestApp, name: &str) -> Vec<Value> {
    let (status, page) = app
        .get(&format!("/v1/schedules/{name}/runs?limit=500"))
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let mut runs = page["runs"].as_array().cloned().unwrap_or_default();
    runs.reverse();
    runs
}

/// Waits until `name` has `n` runs; returns them, oldest first.
async fn wait_runs(app: &TestApp, name: &str, n: usize) -> Vec<Value> {
    wait_until(&format!("{n} runs of {name}"), T, || async {
        let runs = runs(app, name).await;
        (runs.len() >= n).then_some(runs)
    })
    .await
}

/// `(occurrence, outcome or reason)` of each run.
fn summary(runs: &[Value]) -> Vec<(String, String)> {
    runs.iter()
        .map(|r| {
            let what = match r["outcome"].as_str().unwrap() {
                "skipped" => format!("skipped:{}", r["reason"].as_str().unwrap()),
                other => other.to_owned(),
            };
            (r["occurrence"].as_str().unwrap().to_owned(), what)
        })
        .collect()
}

fn at(s: &str) -> String {
    utc(s).to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

fn occurrences(runs: &[Value]) -> Vec<DateTime<Utc>> {
    runs.iter()
        .map(|r| utc(r["occurrence"].as_str().unwrap()))
        .collect()
}

async fn manual_world(start: &str) -> (TestEnv, ManualClock, TestApp) {
    let env = TestEnv::new().await;
    let clock = ManualClock::new(utc(start));
    let app = TestApp::spawn_with_clock(env.settings.clone(), Arc::new(clock.clone())).await;
    (env, clock, app)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn daylight_saving_in_warsaw_fires_each_local_time_once_and_periods_keep_their_length() {
    let (_env, clock, app) = manual_world("2027-03-27T12:00:00Z").await;
    let spring = put(
        &app,
        "spring",
        json!({"cron": "30 2 * * *", "timezone": "Europe/Warsaw", "job": job("http://127.0.0.1:9/s")}),
    )
    .await;
    let hourly = put(
        &app,
        "hourly",
        json!({"every_ms": 3_600_000, "start_at": "2027-03-28T00:00:00Z", "job": job("http://127.0.0.1:9/h")}),
    )
    .await;
    // 02:30 does not exist on 28 March (02:00 CET jumps to 03:00 CEST): the first
    // instant after the gap, 03:00 CEST, is 01:00 UTC.
    let next: Vec<&str> = spring["next_occurrences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert_eq!(
        next,
        [
            "2027-03-28T01:00:00Z",
            "2027-03-29T00:30:00Z",
            "2027-03-30T00:30:00Z",
            "2027-03-31T00:30:00Z",
            "2027-04-01T00:30:00Z"
        ]
    );
    let hourly_next: Vec<DateTime<Utc>> = hourly["next_occurrences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| utc(t.as_str().unwrap()))
        .collect();
    for pair in hourly_next.windows(2) {
        assert_eq!(pair[1] - pair[0], chrono::Duration::hours(1));
    }

    // Step the clock just past each hour of the night of the change.
    for hour in 0..=4 {
        clock.set(utc(&format!("2027-03-28T0{hour}:00:00.5Z")));
        wait_runs(&app, "hourly", hour + 1).await;
    }
    let fired = wait_runs(&app, "spring", 1).await;
    clock.set(utc("2027-03-28T23:00:00Z"));
    let hourly_runs = wait_runs(&app, "hourly", 23).await;
    assert_eq!(
        summary(&runs(&app, "spring").await),
        [(at("2027-03-28T01:00:00Z"), "fired".to_string())],
        "02:30 fired once that night, at 03:00 local"
    );
    assert_eq!(utc(fired[0]["occurrence"].as_str().unwrap()), utc(next[0]));
    let hours = occurrences(&hourly_runs);
    assert!(
        hours
            .windows(2)
            .all(|w| w[1] - w[0] == chrono::Duration::hours(1))
    );
    assert_eq!(
        &hours[..5],
        &hourly_next[..5],
        "GET's next-5 list is what fired"
    );

    // Fall back: 31 October, 03:00 CEST goes back to 02:00 CET, so 02:30 happens
    // twice (00:30 and 01:30 UTC); it fires once, at the first.
    for name in ["spring", "hourly"] {
        let (status, _) = app
            .send(
                Method::DELETE,
                &format!("/v1/schedules/{name}"),
                &Value::Null,
            )
            .await;
        assert_eq!(status, StatusCode::NO_CONTENT);
    }
    clock.set(utc("2027-10-30T12:00:00Z"));
    let fall = put(
        &app,
        "fall",
        json!({"cron": "30 2 * * *", "timezone": "Europe/Warsaw", "job": job("http://127.0.0.1:9/f")}),
    )
    .await;
    assert_eq!(fall["next_occurrences"][0], "2027-10-31T00:30:00Z");
    assert_eq!(fall["next_occurrences"][1], "2027-11-01T01:30:00Z");
    // A probe every hour shows when the scheduler has decided each step.
    put(
        &app,
        "probe",
        json!({"every_ms": 3_600_000, "job": job("http://127.0.0.1:9/p")}),
    )
    .await;
    clock.set(utc("2027-10-31T00:30:00.5Z"));
    wait_runs(&app, "fall", 1).await;
    clock.set(utc("2027-10-31T01:30:00.5Z"));
    wait_until("the probe's 01:00 run", T, || async {
        occurrences(&runs(&app, "probe").await)
            .contains(&utc("2027-10-31T01:00:00Z"))
            .then_some(())
    })
    .await;
    clock.set(utc("2027-10-31T23:00:00.5Z"));
    wait_until("the probe's 23:00 run", T, || async {
        occurrences(&runs(&app, "probe").await)
            .contains(&utc("2027-10-31T23:00:00Z"))
            .then_some(())
    })
    .await;
    assert_eq!(
        summary(&runs(&app, "fall").await),
        [(at("2027-10-31T00:30:00Z"), "fired".to_string())]
    );
}

/// Schedules every 10 s with each catch-up policy, decided by a scheduler that was
/// stopped for a minute.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn after_every_scheduler_was_stopped_catch_up_skip_once_and_all_behave() {
    let (env, clock, app) = manual_world("2027-01-01T00:00:00Z").await;
    let every_10s = |catchup: Value| {
        json!({"every_ms": 10_000, "overlap": "allow_all", "catchup": catchup,
               "job": job("http://127.0.0.1:9/c")})
    };
    put(&app, "skip", every_10s(json!({"policy": "skip"}))).await;
    put(&app, "once", every_10s(json!({"policy": "once"}))).await;
    put(&app, "all", every_10s(json!({"policy": "all"}))).await;
    put(
        &app,
        "all-max-3",
        every_10s(json!({"policy": "all", "max": 3})),
    )
    .await;
    put(
        &app,
        "all-window-35s",
        every_10s(json!({"policy": "all", "window_ms": 35_000})),
    )
    .await;
    clock.set(utc("2027-01-01T00:00:00.5Z"));
    for name in ["skip", "once", "all", "all-max-3", "all-window-35s"] {
        wait_runs(&app, name, 1).await;
    }
    // Every scheduler stops; a minute passes (occurrences :10 to :50 are missed, :60 is
    // merely half a second late when the next one starts).
    app.stop().await;
    clock.set(utc("2027-01-01T00:01:00.5Z"));
    let app = TestApp::spawn_with_clock(env.settings.clone(), Arc::new(clock.clone())).await;
    let f = |s: &str| (at(&format!("2027-01-01T00:{s}Z")), "fired".to_string());
    let m = |s: &str| {
        (
            at(&format!("2027-01-01T00:{s}Z")),
            "skipped:missed".to_string(),
        )
    };
    let cases = [
        (
            "skip",
            vec![
                f("00:00"),
                m("00:10"),
                m("00:20"),
                m("00:30"),
                m("00:40"),
                m("00:50"),
                f("01:00"),
            ],
        ),
        (
            "once",
            vec![
                f("00:00"),
                m("00:10"),
                m("00:20"),
                m("00:30"),
                m("00:40"),
                f("00:50"),
                f("01:00"),
            ],
        ),
        (
            "all",
            vec![
                f("00:00"),
                f("00:10"),
                f("00:20"),
                f("00:30"),
                f("00:40"),
                f("00:50"),
                f("01:00"),
            ],
        ),
        (
            "all-max-3",
            vec![
                f("00:00"),
                m("00:10"),
                m("00:20"),
                f("00:30"),
                f("00:40"),
                f("00:50"),
                f("01:00"),
            ],
        ),
        (
            "all-window-35s",
            vec![
                f("00:00"),
                m("00:10"),
                m("00:20"),
                f("00:30"),
                f("00:40"),
                f("00:50"),
                f("01:00"),
            ],
        ),
    ];
    for (name, expected) in cases {
        let runs = wait_runs(&app, name, 7).await;
        assert_eq!(summary(&runs), expected, "{name}");
        let fired = runs.iter().filter(|r| r["outcome"] == "fired").count();
        let jobs: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM jobs WHERE spec->'occurrence'->>'schedule' = $1",
        )
        .bind(name)
        .fetch_one(&env.db)
        .await
        .unwrap();
        assert_eq!(jobs as usize, fired, "{name}: one job per fired occurrence");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pause_resume_trigger_backfill_end_at_and_delete() {
    let (env, clock, app) = manual_world("2027-05-01T10:00:00Z").await;
    // No worker runs: jobs stay live, so overlap is allowed until the trigger below.
    put(
        &app,
        "report",
        json!({"every_ms": 10_000, "overlap": "allow_all", "job": job("http://127.0.0.1:9/r")}),
    )
    .await;
    clock.set(utc("2027-05-01T10:00:00.5Z"));
    wait_runs(&app, "report", 1).await;

    let (status, paused) = app
        .send(
            Method::POST,
            "/v1/schedules/report/pause",
            &json!({"note": "target migrating"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{paused}");
    assert_eq!(
        (paused["paused"].as_bool(), paused["note"].as_str()),
        (Some(true), Some("target migrating"))
    );
    clock.set(utc("2027-05-01T10:00:10.5Z"));
    wait_runs(&app, "report", 2).await;
    clock.set(utc("2027-05-01T10:00:20.5Z"));
    wait_runs(&app, "report", 3).await;
    let (status, resumed) = app
        .send(Method::POST, "/v1/schedules/report/resume", &Value::Null)
        .await;
    assert_eq!(
        (status, resumed["paused"].as_bool()),
        (StatusCode::OK, Some(false))
    );
    clock.set(utc("2027-05-01T10:00:30.5Z"));
    let runs_now = wait_runs(&app, "report", 4).await;
    assert_eq!(
        summary(&runs_now)
            .into_iter()
            .map(|(_, what)| what)
            .collect::<Vec<_>>(),
        ["fired", "skipped:paused", "skipped:paused", "fired"]
    );

    // A trigger fires now, outside the calendar; the job made carries the occurrence.
    // A second one, with the first job not finished (no worker runs), is skipped under
    // the overlap policy `skip`.
    let (status, triggered) = app
        .send(Method::POST, "/v1/schedules/report/trigger", &Value::Null)
        .await;
    assert_eq!(status, StatusCode::OK, "{triggered}");
    assert_eq!(
        (triggered["kind"].as_str(), triggered["outcome"].as_str()),
        (Some("trigger"), Some("fired"))
    );
    let job = app.job(triggered["job_id"].as_str().unwrap()).await;
    assert_eq!(job["schedule"]["name"], "report");
    let (status, _) = app
        .send(
            Method::PATCH,
            "/v1/schedules/report",
            &json!({"overlap": "skip"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, again) = app
        .send(Method::POST, "/v1/schedules/report/trigger", &Value::Null)
        .await;
    assert_eq!(
        (again["outcome"].as_str(), again["reason"].as_str()),
        (Some("skipped"), Some("overlap"))
    );

    // Backfill the minute before the schedule existed: six occurrences, oldest first;
    // a second backfill of the same range makes no new job.
    let range = json!({"from": "2027-05-01T09:59:00Z", "to": "2027-05-01T09:59:59Z"});
    let (status, filled) = app
        .send(Method::POST, "/v1/schedules/report/backfill", &range)
        .await;
    assert_eq!(status, StatusCode::OK, "{filled}");
    let filled = filled["runs"].as_array().unwrap().clone();
    assert_eq!(filled.len(), 6);
    assert_eq!(filled[0]["occurrence"], "2027-05-01T09:59:00Z");
    let (_, refilled) = app
        .send(Method::POST, "/v1/schedules/report/backfill", &range)
        .await;
    let ids = |runs: &[Value]| runs.iter().map(|r| r["job_id"].clone()).collect::<Vec<_>>();
    assert_eq!(ids(&filled), ids(refilled["runs"].as_array().unwrap()));

    // end_at: no occurrence after it, and the schedule ends.
    let (status, patched) = app
        .send(
            Method::PATCH,
            "/v1/schedules/report",
            &json!({"end_at": "2027-05-01T10:00:45Z"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(patched["next_occurrences"], json!(["2027-05-01T10:00:40Z"]));
    clock.set(utc("2027-05-01T10:02:00Z"));
    let all = wait_until("the run at 10:00:40", T, || async {
        let all = runs(&app, "report").await;
        occurrences(&all)
            .contains(&utc("2027-05-01T10:00:40Z"))
            .then_some(all)
    })
    .await;
    assert_eq!(
        occurrences(&all).into_iter().max(),
        Some(utc("2027-05-01T10:00:40Z")),
        "nothing after end_at"
    );
    clock.set(utc("2027-05-01T10:03:00Z"));
    let (_, ended) = app.get("/v1/schedules/report").await;
    assert_eq!(ended["next_occurrences"], json!([]));

    // Delete: the schedule and its runs go, its jobs stay.
    let (status, _) = app
        .send(Method::DELETE, "/v1/schedules/report", &Value::Null)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(
        app.get("/v1/schedules/report").await.0,
        StatusCode::NOT_FOUND
    );
    let jobs: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM jobs WHERE spec->'occurrence'->>'schedule' = 'report'",
    )
    .fetch_one(&env.db)
    .await
    .unwrap();
    assert!(jobs >= 9, "{jobs} jobs stayed");
}

/// A schedule every second whose target takes `call` to answer, with a worker.
async fn overlapping(
    overlap: &str,
    call: Duration,
    every_ms: u64,
) -> (TestEnv, TestApp, Target, WorkerHandle) {
    let env = TestEnv::new().await;
    let target = Target::start().await;
    target.script("/slow", vec![Reply::status(200).after(call)]);
    let app = TestApp::spawn(env.settings.clone()).await;
    let worker = WorkerHandle::spawn(env.settings.clone()).await;
    put(
        &app,
        "slow",
        json!({"every_ms": every_ms, "overlap": overlap, "job": job(&target.url("/slow"))}),
    )
    .await;
    (env, app, target, worker)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn overlap_skip_records_the_occurrences_skipped_while_the_previous_job_runs() {
    let (_env, app, _target, _worker) =
        overlapping("skip", Duration::from_millis(2500), 1000).await;
    let runs = wait_runs(&app, "slow", 6).await;
    let what: Vec<String> = summary(&runs).into_iter().map(|(_, w)| w).collect();
    assert_eq!(what[0], "fired");
    assert!(what.contains(&"skipped:overlap".to_string()), "{what:?}");
    assert!(
        what.iter().all(|w| w == "fired" || w == "skipped:overlap"),
        "{what:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn overlap_buffer_one_fires_one_waiting_occurrence_when_the_previous_job_ends() {
    let (_env, app, target, _worker) =
        overlapping("buffer_one", Duration::from_millis(2500), 1000).await;
    let runs = wait_until("a buffered occurrence to fire", T, || async {
        let runs = runs(&app, "slow").await;
        let late = runs
            .iter()
            .any(|r| r["outcome"] == "fired" && r["lateness_ms"].as_i64().unwrap_or(0) > 500);
        (late && runs.len() >= 6).then_some(runs)
    })
    .await;
    let what: Vec<String> = summary(&runs).into_iter().map(|(_, w)| w).collect();
    assert!(what.contains(&"skipped:overlap".to_string()), "{what:?}");
    assert!(
        what.iter().filter(|w| *w == "buffered").count() <= 1,
        "{what:?}"
    );
    // The calls never overlap: each starts after the previous answered.
    let calls = target.received_on("/slow");
    for pair in calls.windows(2) {
        assert!(
            pair[1].at >= pair[0].at + Duration::from_millis(2400),
            "calls overlapped"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn overlap_allow_all_fires_every_occurrence_with_calls_in_parallel() {
    let (_env, app, target, _worker) =
        overlapping("allow_all", Duration::from_millis(2500), 1000).await;
    let runs = wait_runs(&app, "slow", 5).await;
    assert!(runs.iter().all(|r| r["outcome"] == "fired"), "{runs:?}");
    wait_until("overlapping calls", T, || async {
        let calls = target.received_on("/slow");
        calls
            .windows(2)
            .any(|p| p[1].at < p[0].at + Duration::from_millis(2000))
            .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn overlap_cancel_previous_cancels_the_running_job_and_aborts_its_call() {
    let (_env, app, _target, _worker) =
        overlapping("cancel_previous", Duration::from_secs(30), 5000).await;
    let runs = wait_runs(&app, "slow", 2).await;
    let first = runs[0]["job_id"].as_str().unwrap().to_owned();
    app.wait_for_state(&first, "cancelled", T).await;
    let executions = app.wait_for_executions(&first, 1, T).await;
    assert_eq!(
        executions[0]["outcome"], "cancelled",
        "the call was aborted"
    );

    wait_until("the aborted call as the last outcome", T, || async {
        let job = app.job(&first).await;
        (job["last_outcome"]["error"] == "cancelled while the call was in flight").then_some(())
    })
    .await;
    let second = runs[1]["job_id"].as_str().unwrap();
    app.wait_for_state(second, "running", T).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_kind_of_bad_input_gets_a_422_naming_its_field() {
    let env = TestEnv::new().await;
    let app = TestApp::spawn(env.settings.clone()).await;
    let ok = json!({"name": "n", "cron": "* * * * *", "job": job("https://example.com/x")});
    let with = |patch: Value| {
        let mut body = ok.clone();
        for (k, v) in patch.as_object().unwrap() {
            if v.is_null() {
                body.as_object_mut().unwrap().remove(k);
            } else {
                body[k] = v.clone();
            }
        }
        body
    };
    let cases: Vec<(Value, &str)> = vec![
        (with(json!({"cron": "61 * * * *"})), "cron"),
        (with(json!({"cron": "every tuesday"})), "cron"),
        (with(json!({"timezone": "Europe/Atlantis"})), "timezone"),
        (with(json!({"every_ms": 60000})), "cron"),
        (with(json!({"cron": null})), "cron"),
        (with(json!({"cron": null, "every_ms": 10})), "every_ms"),
        (
            with(json!({"start_at": "2030-01-02T00:00:00Z", "end_at": "2030-01-01T00:00:00Z"})),
            "end_at",
        ),
        (with(json!({"start_at": "tomorrow"})), "start_at"),
        (
            with(json!({"job": {"target": {"url": "ftp://x"}}})),
            "job.target.url",
        ),
        (
            with(json!({"job": {"target": {"url": "http://10.0.0.1/"}}})),
            "job.target.url",
        ),
        (
            with(json!({"job": {"target": {"url": "https://example.com"}, "max_attempts": 0}})),
            "job.max_attempts",
        ),
        (
            with(json!({"job": {"target": {"url": "https://example.com"}, "delay_ms": 5}})),
            "job.delay_ms",
        ),
        (
            with(json!({"job": {"target": {"url": "https://example.com"}, "bogus": 1}})),
            "job.bogus",
        ),
        (with(json!({"overlap": "sometimes"})), "overlap"),
        (
            with(json!({"catchup": {"policy": "once", "max": 0}})),
            "catchup.max",
        ),
        (with(json!({"jitter_ms": -1})), "jitter_ms"),
        (with(json!({"name": "no spaces allowed"})), "name"),
        (with(json!({"name": null})), "name"),
        (with(json!({"surprise": true})), "surprise"),
    ];
    for (body, field) in cases {
        let (status, problem) = app.post("/v1/schedules", &body).await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body}: {problem}"
        );
        let fields: Vec<&str> = problem["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["field"].as_str().unwrap())
            .collect();
        assert!(
            fields.contains(&field),
            "{body}: fields {fields:?}, wanted {field}"
        );
    }
    // Issue 28: the field, the value and its range, not croner's "Number out of bounds."
    for (cron, says) in [
        ("0 25 * * MON-FRI", "hour 25 is out of range 0-23"),
        ("61 * * * *", "minute 61 is out of range 0-59"),
        ("0 9 * 13 *", "month 13 is out of range 1-12"),
    ] {
        let (status, problem) = app
            .post("/v1/schedules", &with(json!({"cron": cron})))
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
        let message = problem["errors"][0]["message"].as_str().unwrap();
        assert!(message.contains(says), "{cron}: {problem}");
    }
    let (status, problem) = app
        .post(
            "/v1/schedules",
            &with(json!({"job": {"target": {"url": "127.0.0.1:8080/healthz"}}})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    assert!(
        problem["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("has no scheme: write http://127.0.0.1:8080/healthz"),
        "{problem}"
    );
    let (status, problem) = app
        .send(
            Method::PUT,
            "/v1/schedules/other",
            &with(json!({"name": "n"})),
        )
        .await;
    assert_eq!(
        (status, problem["errors"][0]["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("name"))
    );
    assert_eq!(app.post("/v1/schedules", &ok).await.0, StatusCode::CREATED);
    assert_eq!(app.post("/v1/schedules", &ok).await.0, StatusCode::CONFLICT);
    let (status, problem) = app
        .send(
            Method::PATCH,
            "/v1/schedules/n",
            &json!({"cron": "0 0 31 2 *"}),
        )
        .await;
    assert_eq!(
        (status, problem["errors"][0]["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("cron"))
    );
    let (status, problem) = app
        .send(
            Method::POST,
            "/v1/schedules/n/backfill",
            &json!({"from": "2026-01-02T00:00:00Z", "to": "2026-01-01T00:00:00Z"}),
        )
        .await;
    assert_eq!(
        (status, problem["errors"][0]["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("to"))
    );
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM schedules")
        .fetch_one(&env.db)
        .await
        .unwrap();
    assert_eq!(count, 1, "nothing half-stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_secret_header_of_a_schedules_job_is_sealed_redacted_and_sent() {
    let env = TestEnv::new().await;
    let target = Target::start().await;
    let app = TestApp::spawn(env.settings.clone()).await;
    let _worker = WorkerHandle::spawn(env.settings.clone()).await;
    let view = put(
        &app,
        "secret",
        json!({"every_ms": 1000, "job": {"target": {"url": target.url("/s"),
               "headers": {"Authorization": "Bearer sched-canary"}}}}),
    )
    .await;
    assert_eq!(
        view["job"]["target"]["headers"]["Authorization"],
        "[redacted]"
    );
    let stored: String = sqlx::query_scalar("SELECT job::text FROM schedules")
        .fetch_one(&env.db)
        .await
        .unwrap();
    assert!(!stored.contains("sched-canary"), "sealed at rest");
    let call = wait_until("a call", T, || async {
        target.received_on("/s").into_iter().next()
    })
    .await;
    assert_eq!(
        call.header("authorization").as_deref(),
        Some("Bearer sched-canary")
    );
    assert_eq!(call.header("x-courier-schedule").as_deref(), Some("secret"));
    let occurrence = utc(&call.header("x-courier-occurrence").unwrap());
    assert_eq!(occurrence.timestamp_subsec_millis(), 0);
}

/// Jobs per occurrence: occurrence -> distinct job ids that called the target.
fn jobs_per_occurrence(target: &Target, path: &str) -> BTreeMap<(String, String), Vec<String>> {
    let mut seen: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for call in target.received_on(path) {
        let key = (
            call.header("x-courier-schedule").unwrap(),
            call.header("x-courier-occurrence").unwrap(),
        );
        let ids = seen.entry(key).or_default();
        let id = call.job_id().unwrap();
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_redis_wiped_while_schedules_run_makes_no_occurrence_fire_twice_and_loses_none() {
    let redis = courier_testkit::RedisServer::start(false, &[]).await;
    let env = TestEnv::on(
        &std::env::var("TEST_DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into()),
        &redis.url(),
    )
    .await;
    let target = Target::start().await;
    let app = TestApp::spawn(env.settings.clone()).await;
    let _worker = WorkerHandle::spawn(env.settings.clone()).await;
    for i in 0..10 {
        put(
            &app,
            &format!("wipe-{i}"),
            json!({"every_ms": 1000, "overlap": "allow_all", "job": job(&target.url("/w"))}),
        )
        .await;
    }
    wait_until("3 occurrences of each", T, || async {
        (jobs_per_occurrence(&target, "/w").len() >= 30).then_some(())
    })
    .await;
    redis.command(&["FLUSHALL"]).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    for i in 0..10 {
        let (status, _) = app
            .send(
                Method::POST,
                &format!("/v1/schedules/wipe-{i}/pause"),
                &Value::Null,
            )
            .await;
        assert_eq!(status, StatusCode::OK);
    }
    // Every fired occurrence's job ends, and each called the target from one job.
    let fired: Vec<(String, String)> = sqlx::query_as(
        "SELECT s.name, to_char(r.occurrence AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')
         FROM schedule_runs r JOIN schedules s ON s.id = r.schedule_id WHERE r.outcome = 'fired'",
    )
    .fetch_all(&env.db)
    .await
    .unwrap();
    wait_until(
        "every fired occurrence to be called",
        Duration::from_secs(60),
        || async {
            let seen = jobs_per_occurrence(&target, "/w");
            fired.iter().all(|k| seen.contains_key(k)).then_some(())
        },
    )
    .await;
    let seen = jobs_per_occurrence(&target, "/w");
    let twice: Vec<_> = seen.iter().filter(|(_, ids)| ids.len() > 1).collect();
    assert!(
        twice.is_empty(),
        "occurrences that made two jobs: {twice:?}"
    );
    assert!(
        fired.len() >= 60,
        "the scheduler went on firing through the wipe ({})",
        fired.len()
    );
    let skipped: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM schedule_runs WHERE outcome <> 'fired' AND reason <> 'paused'",
    )
    .fetch_one(&env.db)
    .await
    .unwrap();
    assert_eq!(skipped, 0, "no occurrence was lost");
}
