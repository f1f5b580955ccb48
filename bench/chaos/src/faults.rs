//! The faults: when each happens, and doing it to the real processes.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use rand::{Rng, SeedableRng, rngs::StdRng};

use courier_core::queue::Marker;

use crate::{Config, System};

/// One fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Fault {
    /// kill -9 of a worker, replaced by a new one.
    WorkerKill,
    /// kill -9 of Redis, restarted from its AOF a second later.
    RedisKill,
    /// kill -9 of the API, restarted half a second later.
    ApiRestart,
    /// FLUSHALL: Redis loses everything.
    RedisWipe,
    /// kill -9 of Redis, restarted from its AOF a second later, and FLUSHALL two
    /// seconds after that, while the reconciliation the restart started may still run.
    RedisKillThenWipe,
    /// kill -9 of Redis, restarted from its AOF at once, and FLUSHALL as soon as the
    /// reconciliation the restart started has claimed the marker: a loss of data that
    /// lands while a reconciliation runs.
    WipeDuringReconcile,
    /// Every PostgreSQL process stopped (SIGSTOP) for five seconds.
    PgPause,
}

impl Fault {
    pub fn name(self) -> &'static str {
        match self {
            Self::WorkerKill => "worker kill -9",
            Self::RedisKill => "redis kill -9 (AOF restart)",
            Self::ApiRestart => "api kill -9 and restart",
            Self::RedisWipe => "redis FLUSHALL",
            Self::RedisKillThenWipe => "redis kill -9, restart, FLUSHALL 2 s later",
            Self::WipeDuringReconcile => {
                "redis kill -9, restart, FLUSHALL during the reconciliation"
            }
            Self::PgPause => "postgresql paused 5 s",
        }
    }
}

/// One fault done: when, and how long until the target got a call again afterwards.
#[derive(Debug, Clone)]
pub struct Injected {
    pub fault: Fault,
    pub at: Duration,
    /// When the fault was over (everything restarted), from the start of the run.
    pub ended: Duration,
    /// For a wipe during a reconciliation: whether the marker was still claimed just
    /// before the wipe (the reconciliation had not ended).
    pub during_reconcile: Option<bool>,
    /// From the end of the fault (the restart) to the next call the target received.
    pub recovery: Option<Duration>,
}

/// Random times, within the middle 80 % of the run, for every fault the config asks for.
pub fn schedule(config: &Config) -> Vec<(Duration, Fault)> {
    let mut rng = StdRng::seed_from_u64(config.seed);
    let span = config.duration.as_secs_f64();
    let mut events = Vec::new();
    let counts = [
        (Fault::WorkerKill, config.worker_kills),
        (Fault::RedisKill, config.redis_kills),
        (Fault::ApiRestart, config.api_restarts),
        (Fault::RedisWipe, config.wipes),
        (Fault::RedisKillThenWipe, config.kill_then_wipes),
        (Fault::WipeDuringReconcile, config.wipes_in_reconcile),
        (Fault::PgPause, config.pg_pauses),
    ];
    for (fault, n) in counts {
        for _ in 0..n {
            events.push((
                Duration::from_secs_f64(span * rng.random_range(0.1..0.9)),
                fault,
            ));
        }
    }
    events.sort();
    events
}

/// Does every fault at its time, in order.
pub async fn inject(
    system: Arc<System>,
    schedule: Vec<(Duration, Fault)>,
    started: Instant,
) -> Vec<Injected> {
    let mut rng = StdRng::seed_from_u64(schedule.len() as u64);
    let mut done = Vec::with_capacity(schedule.len());
    for (at, fault) in schedule {
        tokio::time::sleep_until((started + at).into()).await;
        let mut during_reconcile = None;
        match fault {
            Fault::WorkerKill => {
                let victim = {
                    let mut workers = system.workers.lock().unwrap();
                    let i = rng.random_range(0..workers.len());
                    workers.swap_remove(i)
                };
                let mut victim = victim;
                victim.signal("KILL").await;
                victim.wait().await;
                let replacement = system.start_worker();
                system.workers.lock().unwrap().push(replacement);
            }
            Fault::RedisKill => {
                let mut redis = system.redis.lock().await;
                redis.kill9().await;
                tokio::time::sleep(Duration::from_secs(1)).await;
                redis.restart().await;
            }
            Fault::ApiRestart => {
                let old = system.api.lock().unwrap().take();
                if let Some(mut api) = old {
                    api.signal("KILL").await;
                    api.wait().await;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
                *system.api.lock().unwrap() = Some(system.start_api());
            }
            Fault::RedisWipe => {
                system.redis.lock().await.command(&["FLUSHALL"]).await;
            }
            Fault::RedisKillThenWipe => {
                let mut redis = system.redis.lock().await;
                redis.kill9().await;
                tokio::time::sleep(Duration::from_secs(1)).await;
                redis.restart().await;
                tokio::time::sleep(Duration::from_secs(2)).await;
                redis.command(&["FLUSHALL"]).await;
            }
            Fault::WipeDuringReconcile => {
                let mut redis = system.redis.lock().await;
                redis.kill9().await;
                redis.restart().await;
                // Polled, not waited on a sleep: the wipe must land inside it.
                let claimed =
                    courier_testkit::wait_until_or_none(Duration::from_secs(10), || async {
                        let marker = system.queue.marker(Marker::All).await.ok()?;
                        marker.is_claimed().then_some(())
                    })
                    .await;
                redis.command(&["FLUSHALL"]).await;
                during_reconcile = Some(claimed.is_some());
            }
            Fault::PgPause => {
                system.pg.pause().await;
                tokio::time::sleep(Duration::from_secs(5)).await;
                system.pg.resume().await;
            }
        }
        let restored = Instant::now();
        let ended = started.elapsed();
        let before = system.target.count();
        let recovery = courier_testkit::wait_until_or_none(Duration::from_secs(60), || async {
            (system.target.count() > before).then_some(())
        })
        .await
        .map(|()| restored.elapsed());
        done.push(Injected {
            fault,
            at,
            ended,
            during_reconcile,
            recovery,
        });
    }
    done
}
