//! Redis Sentinel (SPEC 13): a master, two replicas and three `redis-sentinel`s of the
//! test's own. The master is killed with kill -9 while workers drain; the sentinels
//! promote a replica, every Courier process follows it, and reconciliation dispatches
//! again from PostgreSQL whatever the new master lacks: no job is lost.

use std::{collections::HashMap, path::PathBuf, process::Stdio, time::Duration};

use courier_testkit::{
    RedisServer, Reply, Target, TestApp, TestEnv, WorkerHandle, free_port, wait_until,
};
use serde_json::json;
use tokio::process::{Child, Command};

/// A `redis-server --sentinel` in a directory of its own (it rewrites its config file).
struct SentinelProcess {
    port: u16,
    dir: PathBuf,
    _child: Child,
}

impl SentinelProcess {
    async fn start(master_port: u16) -> Self {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!(
            "courier-sentinel-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let conf = dir.join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\ndir {}\n\
                 sentinel monitor courier 127.0.0.1 {master_port} 2\n\
                 sentinel down-after-milliseconds courier 1000\n\
                 sentinel failover-timeout courier 5000\n\
                 sentinel parallel-syncs courier 1\n",
                dir.display()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.join("sentinel.log")).unwrap();
        let child = Command::new("redis-server")
            .arg(&conf)
            .arg("--sentinel")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start redis-server --sentinel");
        let sentinel = Self {
            port,
            dir,
            _child: child,
        };
        wait_until(
            "the sentinel to see the master and both replicas",
            Duration::from_secs(30),
            || async {
                let replicas = sentinel.ask(&["SENTINEL", "REPLICAS", "courier"]).await?;
                match replicas {
                    redis::Value::Array(r) if r.len() == 2 => Some(()),
                    _ => None,
                }
            },
        )
        .await;
        sentinel
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    async fn ask(&self, args: &[&str]) -> Option<redis::Value> {
        let client = redis::Client::open(self.url()).ok()?;
        let mut conn = client.get_multiplexed_async_connection().await.ok()?;
        let mut cmd = redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        cmd.query_async(&mut conn).await.ok()
    }

    /// The master's port as this sentinel knows it.
    async fn master_port(&self) -> Option<u16> {
        let addr: Vec<String> = redis::from_redis_value(
            self.ask(&["SENTINEL", "GET-MASTER-ADDR-BY-NAME", "courier"])
                .await?,
        )
        .ok()?;
        addr.get(1)?.parse().ok()
    }
}

impl Drop for SentinelProcess {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_master_killed_mid_drain_is_replaced_and_no_job_is_lost() {
    let mut master = RedisServer::start(false, &[]).await;
    let port = master.port.to_string();
    let _replicas = [
        RedisServer::start(false, &["--replicaof", "127.0.0.1", &port]).await,
        RedisServer::start(false, &["--replicaof", "127.0.0.1", &port]).await,
    ];
    let mut sentinels = Vec::new();
    for _ in 0..3 {
        sentinels.push(SentinelProcess::start(master.port).await);
    }
    let mut env = TestEnv::on(
        &std::env::var("TEST_DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into()),
        &master.url(),
    )
    .await;
    env.settings.redis.sentinels = sentinels.iter().map(SentinelProcess::url).collect();
    env.settings.redis.sentinel_master = "courier".into();

    let target = Target::start().await;
    target.script(
        "/drain",
        vec![Reply::status(200).after(Duration::from_millis(20))],
    );
    let app = TestApp::spawn(env.settings.clone()).await;
    let mut settings = env.settings.clone();
    settings.worker.concurrency = 50;
    let _workers = [
        WorkerHandle::spawn(settings.clone()).await,
        WorkerHandle::spawn(settings).await,
    ];
    let n = 3000;
    let ids = app
        .submit_many(n, |_| json!({"target": {"url": target.url("/drain")}}))
        .await;
    wait_until(
        "a sixth of the jobs to be called",
        Duration::from_secs(60),
        || async { (target.received_on("/drain").len() >= n / 6).then_some(()) },
    )
    .await;
    let called_before = target.received_on("/drain").len();
    let killed_at = std::time::Instant::now();
    master.kill9().await;
    wait_until(
        "a sentinel to promote a replica",
        Duration::from_secs(30),
        || async {
            let now = sentinels[0].master_port().await?;
            (now != master.port).then_some(())
        },
    )
    .await;
    let promoted = killed_at.elapsed();
    wait_until("every job to succeed", Duration::from_secs(180), || async {
        (env.count_jobs(Some("succeeded")).await == n as i64).then_some(())
    })
    .await;
    let mut calls: HashMap<String, usize> = HashMap::new();
    for r in target.received_on("/drain") {
        *calls.entry(r.job_id().unwrap()).or_default() += 1;
    }
    let lost = ids.iter().filter(|id| !calls.contains_key(*id)).count();
    let duplicated: usize = calls.values().map(|c| c - 1).sum();
    println!(
        "sentinel failover: {n} jobs, {called_before} called before the kill, replica promoted \
         {:.1} s after it, lost {lost}, calls made twice {duplicated}",
        promoted.as_secs_f64()
    );
    assert_eq!(lost, 0, "every job was called");
    assert_eq!(env.count_jobs(Some("succeeded")).await, n as i64);
}
