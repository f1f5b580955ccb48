//! Exactly one job per occurrence (SPEC 9) with several schedulers and one of them
//! killed: three `courier-api` processes (each runs the scheduler) and two workers, 50
//! schedules every second for 60 s, one API killed with SIGKILL twice. Counted at the
//! target and in `schedule_runs`.

use std::{collections::BTreeMap, time::Duration};

use courier_testkit::{ChildProcess, Target, TestEnv, wait_until};
use serde_json::json;

const SCHEDULES: usize = 50;

/// A run as read back: schedule name, occurrence, outcome, reason, lateness.
type Run = (
    String,
    chrono::DateTime<chrono::Utc>,
    String,
    Option<String>,
    Option<i64>,
);

async fn start_api(env: &TestEnv) -> (ChildProcess, u16) {
    let api = ChildProcess::spawn(
        "courier-api",
        &["serve"],
        &env.process_env_with(&[("COURIER__SERVER__PORT", "0")]),
    );
    let port = api.api_port().await;
    (api, port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_schedulers_one_killed_twice_make_exactly_one_job_per_occurrence() {
    let env = TestEnv::new().await;
    let target = Target::start().await;
    let mut apis = Vec::new();
    for _ in 0..3 {
        apis.push(start_api(&env).await);
    }
    let _workers = [
        ChildProcess::start_worker(&env.process_env()).await,
        ChildProcess::start_worker(&env.process_env()).await,
    ];
    let client = env.client();
    let base = format!("http://127.0.0.1:{}", apis[0].1);
    for i in 0..SCHEDULES {
        let response = client
            .put(format!("{base}/v1/schedules/tick-{i}"))
            .json(&json!({"every_ms": 1000, "overlap": "allow_all",
                          "job": {"target": {"url": target.url("/tick")}}}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
    }

    // One API (not the one the test talks to) is killed, restarted, and killed again.
    let started = tokio::time::Instant::now();
    let victim = 1;
    let at = |s: u64| started + Duration::from_secs(s);
    tokio::time::sleep_until(at(15)).await;
    apis[victim].0.signal("KILL").await;
    tokio::time::sleep_until(at(25)).await;
    apis[victim] = start_api(&env).await;
    tokio::time::sleep_until(at(40)).await;
    apis[victim].0.signal("KILL").await;
    tokio::time::sleep_until(at(60)).await;
    for i in 0..SCHEDULES {
        let response = client
            .post(format!("{base}/v1/schedules/tick-{i}/pause"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }

    // Every occurrence: fired exactly once (the table's key allows one run per
    // occurrence), none skipped or lost, one second after the other.
    let runs: Vec<Run> = sqlx::query_as(
        "SELECT s.name, r.occurrence, r.outcome, r.reason, r.lateness_ms
             FROM schedule_runs r JOIN schedules s ON s.id = r.schedule_id
             ORDER BY s.name, r.occurrence",
    )
    .fetch_all(&env.db)
    .await
    .unwrap();
    let mut by_schedule: BTreeMap<&str, Vec<_>> = BTreeMap::new();
    for run in &runs {
        by_schedule.entry(run.0.as_str()).or_default().push(run);
    }
    assert_eq!(by_schedule.len(), SCHEDULES);
    let mut fired = Vec::new();
    for (name, runs) in &by_schedule {
        let calendar: Vec<_> = runs
            .iter()
            .filter(|r| r.3.as_deref() != Some("paused"))
            .collect();
        assert!(
            calendar.len() >= 55,
            "{name}: {} occurrences in 60 s",
            calendar.len()
        );
        for pair in calendar.windows(2) {
            assert_eq!(
                pair[1].1 - pair[0].1,
                chrono::Duration::seconds(1),
                "{name}: a gap"
            );
        }
        for run in &calendar {
            assert_eq!(run.2, "fired", "{name} {}: {:?}", run.1, run.3);
            fired.push((name.to_string(), run.1, run.4.unwrap_or(0)));
        }
    }

    // At the target: each fired occurrence called, from exactly one job.
    let fired_keys: Vec<(String, String)> = fired
        .iter()
        .map(|(name, at, _)| {
            (
                name.clone(),
                at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
            )
        })
        .collect();
    let calls = wait_until(
        "every fired occurrence to be called",
        Duration::from_secs(60),
        || async {
            let mut seen: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
            for call in target.received_on("/tick") {
                let key = (
                    call.header("x-courier-schedule").unwrap(),
                    call.header("x-courier-occurrence").unwrap(),
                );
                seen.entry(key).or_default().push(call.job_id().unwrap());
            }
            fired_keys
                .iter()
                .all(|k| seen.contains_key(k))
                .then_some(seen)
        },
    )
    .await;
    let mut twice = 0;
    for (key, ids) in &calls {
        let mut distinct = ids.clone();
        distinct.sort();
        distinct.dedup();
        assert_eq!(
            distinct.len(),
            1,
            "occurrence {key:?} made {} jobs",
            distinct.len()
        );
        twice += usize::from(ids.len() > 1);
    }
    assert_eq!(
        calls.len(),
        fired.len(),
        "no call for an occurrence that did not fire"
    );

    let mut lateness: Vec<i64> = fired.iter().map(|(_, _, l)| *l).collect();
    lateness.sort_unstable();
    let pct = |p: f64| lateness[((lateness.len() as f64 - 1.0) * p).round() as usize];
    eprintln!(
        "{} occurrences of {SCHEDULES} schedules, each fired once; {} called twice; \
         job creation lateness p50 {} ms, p99 {} ms, max {} ms",
        fired.len(),
        twice,
        pct(0.5),
        pct(0.99),
        lateness.last().unwrap()
    );
}
