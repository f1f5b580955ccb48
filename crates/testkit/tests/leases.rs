//! Leases (SPEC 5.2, 5.3) in-process: a job whose worker vanished is taken back by the
//! reaper and run again, and the vanished attempt's late result is refused.

use std::time::Duration;

use courier_core::{
    JobState,
    queue::{Ending, RedisQueue},
    repo::{ExecutionRecord, JobUpdate, Outcome},
    stages::attempt::AttemptEnd,
};
use courier_testkit::{Target, TestApp, TestEnv, WorkerHandle};
use serde_json::json;

const T: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_job_whose_worker_vanished_is_reaped_and_run_again_and_the_late_result_is_refused() {
    let env = TestEnv::new().await;
    let target = Target::start().await;
    let app = TestApp::spawn(env.settings.clone()).await;
    let id = app
        .submit(json!({"target": {"url": target.url("/orphan")}}))
        .await;

    // A "worker" that takes the lease and then disappears: no heartbeat, no result.
    let queue = RedisQueue::new(&env.settings.redis).unwrap();
    let default = courier_core::QueueName::default();
    let lease = Duration::from_millis(1000);
    let taken = queue.fetch(&default, 10, lease).await.unwrap().jobs;
    assert_eq!(taken.len(), 1);
    let vanished = taken.into_iter().next().unwrap();
    assert_eq!(vanished.attempt, 1);

    let mut settings = env.settings.clone();
    settings.worker.lease_ms = 1000;
    let _worker = WorkerHandle::spawn(settings).await;
    let job = app.wait_for_state(&id, "succeeded", T).await;
    assert_eq!(job["attempts"], 2, "the lost attempt counts");
    let executions = app.wait_for_executions(&id, 2, T).await;
    let outcomes: Vec<_> = executions
        .iter()
        .map(|e| e["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["lease_expired", "succeeded"]);
    assert_eq!(target.count(), 1);

    // The vanished attempt comes back with a result: its token no longer holds a lease.
    let late = queue
        .complete(&default, &[ending(&vanished, "{}")])
        .await
        .unwrap();
    assert_eq!(late, [false]);
    assert_eq!(app.job(&id).await["state"], "succeeded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_payload_the_worker_cannot_read_ends_that_job_dead_and_not_its_neighbours() {
    let env = TestEnv::new().await;
    let target = Target::start().await;
    let app = TestApp::spawn(env.settings.clone()).await;
    let broken = app
        .submit(json!({"target": {"url": target.url("/broken")}}))
        .await;
    let fine = app
        .submit(json!({"target": {"url": target.url("/fine")}}))
        .await;
    // What an API of another version might have written.
    let keys = courier_core::queue::Keys::new(&env.settings.redis.prefix)
        .queue(&courier_core::QueueName::default());
    let mut conn = redis::Client::open(env.settings.redis.url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let _: i64 = redis::cmd("HSET")
        .arg(&keys.jobs)
        .arg(&broken)
        .arg(r#"{"target": "from the future"}"#)
        .query_async(&mut conn)
        .await
        .unwrap();

    let _worker = WorkerHandle::spawn(env.settings.clone()).await;
    app.wait_for_state(&fine, "succeeded", T).await;
    let job = app.wait_for_state(&broken, "dead", T).await;
    assert!(
        job["last_outcome"]["error"]
            .as_str()
            .unwrap()
            .contains("payload"),
        "{job}"
    );
    assert!(target.received_on("/broken").is_empty());
}

fn ending(job: &courier_core::queue::Leased, record: &str) -> Ending {
    Ending {
        id: job.id,
        token: job.token,
        priority: 0,
        retry_at: None,
        key_pause_until: None,
        record: record.to_owned(),
    }
}

/// What a worker writes to the journal for a successful attempt of `job`.
fn succeeded(job: &courier_core::queue::Leased) -> String {
    let now = chrono::Utc::now();
    serde_json::to_string(&AttemptEnd {
        record: ExecutionRecord {
            job_id: job.id,
            attempt: job.attempt as i32,
            token: job.token,
            worker: "killed-worker".into(),
            outcome: Outcome::Succeeded,
            stale: false,
            status_code: Some(200),
            error: None,
            duration_ms: 5,
            response_excerpt: Some("ok".into()),
            started_at: now,
            finished_at: now,
        },
        update: Some(JobUpdate {
            id: job.id,
            token: job.token,
            attempts: job.attempt as i32,
            state: JobState::Succeeded,
            run_at: None,
            last: Some((Some(200), None, 5).into()),
            may_call_back: false,
        }),
    })
    .unwrap()
}

/// What a worker does in Redis for the next job of `queue`: takes its lease and ends it
/// succeeded (the journal keeps the record). PostgreSQL hears nothing.
async fn run_one_in_redis(
    queue: &RedisQueue,
    name: &courier_core::QueueName,
) -> courier_core::queue::Leased {
    let leased = queue
        .fetch(name, 1, Duration::from_secs(15))
        .await
        .unwrap()
        .jobs
        .remove(0);
    let record = succeeded(&leased);
    assert_eq!(
        queue
            .complete(name, &[ending(&leased, &record)])
            .await
            .unwrap(),
        [true]
    );
    leased
}

/// A worker that ended its attempt in Redis and was killed before its history batch
/// reached PostgreSQL: Redis no longer has the job, PostgreSQL still says running.
/// (After the start-up reconciliation, so that only the periodic checks can find it.)
async fn killed_after_ending(
    env: &TestEnv,
    id: &str,
    lose_the_journal_too: bool,
    running_for: &str,
) -> RedisQueue {
    let queue = RedisQueue::new(&env.settings.redis).unwrap();
    courier_testkit::wait_until(
        "the start-up reconciliation",
        Duration::from_secs(20),
        || async {
            let marker = queue
                .marker(courier_core::queue::Marker::All)
                .await
                .unwrap();
            marker.is_settled().then_some(())
        },
    )
    .await;
    let default = courier_core::QueueName::default();
    let leased = run_one_in_redis(&queue, &default).await;
    if lose_the_journal_too {
        queue
            .journal_ack(
                &default,
                &[courier_core::queue::journal_entry(
                    leased.id,
                    leased.token,
                    None,
                )],
            )
            .await
            .unwrap();
    }
    sqlx::query(
        "UPDATE jobs SET state = 'running', attempts = 1, token = $2, updated_at = now() - $3::interval WHERE id = $1::uuid",
    )
    .bind(id)
    .bind(leased.token.0)
    .bind(running_for)
    .execute(&env.db)
    .await
    .unwrap();
    queue
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_record_of_a_worker_killed_before_writing_it_comes_from_the_journal() {
    let env = TestEnv::new().await;
    let target = Target::start().await;
    let app = TestApp::spawn(env.settings.clone()).await;
    let id = app
        .submit(json!({"target": {"url": target.url("/recorded")}}))
        .await;
    killed_after_ending(&env, &id, false, "1 minute").await;
    let job = app
        .wait_for_state(&id, "succeeded", Duration::from_secs(30))
        .await;
    assert_eq!(job["attempts"], 1);
    let executions = app.executions(&id).await;
    assert_eq!(executions.len(), 1);
    assert_eq!(executions[0]["worker"], "killed-worker");
    assert_eq!(target.count(), 0, "the job did not run again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_job_whose_result_never_reached_postgresql_is_run_again() {
    let env = TestEnv::new().await;
    let target = Target::start().await;
    let app = TestApp::spawn(env.settings.clone()).await;
    let id = app
        .submit(json!({"target": {"url": target.url("/lost")}, "timeout_ms": 1000}))
        .await;
    killed_after_ending(&env, &id, true, "1 minute").await;
    let _worker = WorkerHandle::spawn(env.settings.clone()).await;
    let job = app
        .wait_for_state(&id, "succeeded", Duration::from_secs(30))
        .await;
    assert_eq!(job["attempts"], 2, "the lost attempt counts");
    assert_eq!(target.count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_default_timeout_job_whose_result_never_reached_postgresql_is_run_again() {
    let env = TestEnv::new().await;
    let target = Target::start().await;
    let app = TestApp::spawn(env.settings.clone()).await;
    // No timeout_ms: the stored spec leaves the default (90 s) out.
    let id = app
        .submit(json!({"target": {"url": target.url("/lost")}}))
        .await;
    // Running for longer than 90 s + the lease (15 s) + the margin (5 s).
    killed_after_ending(&env, &id, true, "2 minutes").await;
    let _worker = WorkerHandle::spawn(env.settings.clone()).await;
    let job = app
        .wait_for_state(&id, "succeeded", Duration::from_secs(30))
        .await;
    assert_eq!(job["attempts"], 2, "the lost attempt counts");
    assert_eq!(target.count(), 1);
}

/// A job whose dispatch succeeded but was not marked done (its process died in
/// between, or Redis answered too late) stays in the dispatch outbox. Here it has run
/// and ended in Redis, and its worker's history batch has not reached PostgreSQL yet:
/// PostgreSQL still calls it queued. The outbox pass must not send it again (the chaos
/// run of issue 25 saw it do so, a second call 300 ms after the first); it writes the
/// end from the journal instead, and drops the outbox row.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_outbox_pass_does_not_send_again_a_job_that_ran_before_its_dispatch_was_marked() {
    let env = TestEnv::new().await;
    let target = Target::start().await;
    let app = TestApp::spawn(env.settings.clone()).await;
    let id = app
        .submit(json!({"target": {"url": target.url("/once")}}))
        .await;
    let queue = RedisQueue::new(&env.settings.redis).unwrap();
    let default = courier_core::QueueName::default();
    run_one_in_redis(&queue, &default).await;
    // Back in the outbox, as old as an unmarked dispatch the pass takes up.
    sqlx::query(
        "INSERT INTO job_dispatch (job_id, created_at) VALUES ($1::uuid, now() - interval '1 minute')",
    )
    .bind(&id)
    .execute(&env.db)
    .await
    .unwrap();
    let recovery = courier_core::maintenance::Recovery::new(
        env.db.clone(),
        queue.clone(),
        env.settings.worker.lease(),
        std::sync::Arc::new(
            courier_core::crypto::SecretBox::from_settings(&env.settings.secrets).unwrap(),
        ),
    );
    // This pass, or the API's own, which runs the same code, takes the row.
    recovery.dispatch_outbox().await.unwrap();
    courier_testkit::wait_until("the outbox row dropped", T, || async {
        let left: i64 = sqlx::query_scalar("SELECT count(*) FROM job_dispatch")
            .fetch_one(&env.db)
            .await
            .unwrap();
        (left == 0).then_some(())
    })
    .await;
    let job = app.wait_for_state(&id, "succeeded", T).await;
    assert_eq!(job["attempts"], 1);
    let job_id = courier_core::JobId::parse(&id).unwrap();
    assert_eq!(
        queue.present(&default, &[job_id]).await.unwrap(),
        [false],
        "the outbox pass put the job that had ended back into redis"
    );
    assert_eq!(app.executions(&id).await.len(), 1);
}
