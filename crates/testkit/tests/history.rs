//! Workers' history when PostgreSQL refuses part of it for good (issue 10): the refused
//! item is set aside with its reason and the rest is written, whether it comes from a
//! live worker's batch or from the journal of a dead one.

use std::time::Duration;

use chrono::Utc;
use courier_core::{
    JobId, JobState, QueueName,
    maintenance::Recovery,
    queue::{Ending, RedisQueue},
    repo::{ExecutionRecord, JobUpdate, Outcome},
    stages::{
        attempt::AttemptEnd,
        record::{self as recording, HistoryBatch},
    },
};
use courier_testkit::{TestApp, TestEnv, wait_until};
use serde_json::json;

fn record(job: JobId, token: courier_core::queue::Token, stepped_back: bool) -> ExecutionRecord {
    let now = Utc::now();
    ExecutionRecord {
        job_id: job,
        attempt: 1,
        token,
        worker: "w".into(),
        outcome: Outcome::Succeeded,
        stale: false,
        status_code: Some(200),
        error: None,
        duration_ms: 3,
        response_excerpt: None,
        started_at: now,
        // A wall clock that stepped back mid-call: the CHECK (finished_at >= started_at)
        // refuses this record whatever is retried.
        finished_at: if stepped_back {
            now - chrono::Duration::seconds(5)
        } else {
            now
        },
    }
}

fn succeeded(job: JobId, token: courier_core::queue::Token) -> JobUpdate {
    JobUpdate {
        id: job,
        token,
        attempts: 1,
        state: JobState::Succeeded,
        run_at: None,
        last: Some((Some(200), None, 3).into()),
        may_call_back: false,
    }
}

fn secrets(env: &TestEnv) -> std::sync::Arc<courier_core::crypto::SecretBox> {
    std::sync::Arc::new(
        courier_core::crypto::SecretBox::from_settings(&env.settings.secrets).unwrap(),
    )
}

async fn states(env: &TestEnv) -> Vec<(String, i64)> {
    sqlx::query_as("SELECT state::text, count(*) FROM jobs GROUP BY 1 ORDER BY 1")
        .fetch_all(&env.db)
        .await
        .unwrap()
}

async fn rejects(env: &TestEnv) -> Vec<(String, String)> {
    sqlx::query_as("SELECT kind, error FROM history_rejects ORDER BY id")
        .fetch_all(&env.db)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_postgresql_refuses_for_good_is_set_aside_and_the_rest_is_written() {
    let env = TestEnv::new().await;
    let app = TestApp::spawn(env.settings.clone()).await;
    let ids: Vec<JobId> = app
        .submit_many(
            3,
            |_| json!({"target": {"url": "http://127.0.0.1:9/x"}, "delay_ms": 600000}),
        )
        .await
        .iter()
        .map(|id| JobId::parse(id).unwrap())
        .collect();
    let token = courier_core::queue::Token(1);
    let batch = HistoryBatch {
        started: vec![],
        records: vec![
            record(ids[0], token, false),
            record(ids[1], token, true),
            record(ids[2], token, false),
        ],
        updates: ids.iter().map(|id| succeeded(*id, token)).collect(),
    };
    let written = recording::write_history(&env.db, &secrets(&env), &batch)
        .await
        .expect("not a transient error");
    assert_eq!(written.rejected, 1);
    let executions: i64 = sqlx::query_scalar("SELECT count(*) FROM job_executions")
        .fetch_one(&env.db)
        .await
        .unwrap();
    assert_eq!(executions, 2, "the two good records are written");
    assert_eq!(states(&env).await, [("succeeded".to_string(), 3)]);
    let kept = rejects(&env).await;
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0].0, "record");
    assert!(kept[0].1.contains("ends_after_start"), "{}", kept[0].1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_record_in_a_dead_workers_journal_does_not_hold_back_the_others() {
    let env = TestEnv::new().await;
    let app = TestApp::spawn(env.settings.clone()).await;
    app.submit_many(20, |_| json!({"target": {"url": "http://127.0.0.1:9/x"}}))
        .await;
    // A "worker" that ends all 20 attempts in Redis, one of them with a record
    // PostgreSQL refuses, and dies before writing any history.
    let queue = RedisQueue::new(&env.settings.redis).unwrap();
    let default = QueueName::default();
    let leased = wait_until("20 jobs in redis", Duration::from_secs(10), || async {
        let jobs = queue
            .fetch(&default, 20, Duration::from_secs(60))
            .await
            .unwrap()
            .jobs;
        (!jobs.is_empty()).then_some(jobs)
    })
    .await;
    let ends: Vec<String> = leased
        .iter()
        .enumerate()
        .map(|(i, job)| {
            serde_json::to_string(&AttemptEnd {
                record: record(job.id, job.token, i == 7),
                update: Some(succeeded(job.id, job.token)),
            })
            .unwrap()
        })
        .collect();
    let endings: Vec<Ending> = leased
        .iter()
        .zip(&ends)
        .map(|(job, record)| Ending {
            id: job.id,
            token: job.token,
            priority: 0,
            retry_at: None,
            key_pause_until: None,
            record: record.clone(),
        })
        .collect();
    assert!(
        queue
            .complete(&default, &endings)
            .await
            .unwrap()
            .iter()
            .all(|a| *a)
    );

    let recovery = Recovery::new(
        env.db.clone(),
        queue.clone(),
        Duration::from_secs(15),
        secrets(&env),
    );
    assert_eq!(
        recovery.flush_journal(Duration::ZERO).await.unwrap(),
        leased.len()
    );
    let succeeded = states(&env)
        .await
        .into_iter()
        .find(|(s, _)| s == "succeeded")
        .map_or(0, |(_, n)| n);
    assert_eq!(
        succeeded as usize,
        leased.len(),
        "every job's end is written"
    );
    assert_eq!(
        rejects(&env).await.len(),
        1,
        "the refused record is kept aside"
    );
    let left = queue
        .journal_older_than(&default, Duration::ZERO, 100)
        .await
        .unwrap();
    assert!(left.is_empty(), "the journal is empty: {:?}", left.len());
}
