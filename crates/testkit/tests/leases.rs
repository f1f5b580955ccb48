//! Leases (SPEC 5.2, 5.3) in-process: a job whose worker vanished is taken back by the
//! reaper and run again, and the vanished attempt's late result is refused.

use std::time::Duration;

use courier_core::queue::{Completion, RedisQueue};
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
        .complete(
            &default,
            &[(vanished.id, vanished.token, 0, Completion::Done)],
        )
        .await
        .unwrap();
    assert_eq!(late, [false]);
    assert_eq!(app.job(&id).await["state"], "succeeded");
}
