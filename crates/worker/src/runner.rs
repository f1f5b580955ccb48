//! The worker process: `Worker::build(settings)`, then `run_until_stopped(shutdown)`.
//! A fetch loop leases jobs while there is capacity and otherwise blocks on the queues'
//! wake-up lists (no busy polling); side tasks renew leases, reap dead workers' jobs and
//! listen for cancellations. Shutdown stops fetching, lets calls finish within the
//! grace period, then hands the rest back.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use chrono::Utc;
use courier_core::{
    QueueName, Settings,
    crypto::SecretBox,
    db,
    maintenance::Maintenance,
    queue::{RedisQueue, Wake},
};
use tokio::{sync::Semaphore, task::JoinSet};
use tokio_util::sync::CancellationToken;

use crate::{
    execute::{self, Context},
    history::History,
    http::HttpCaller,
    inflight::{AbortReason, InFlight},
    leases,
};

/// How often the set of queues is re-read when serving every queue.
const QUEUE_REFRESH: Duration = Duration::from_secs(1);
const REAP_EVERY: Duration = Duration::from_secs(1);
/// Redis checks the timeouts of blocked clients `hz` times a second (10 by default), so a
/// blocking wait can end this much after its timeout; shorter waits are timed here.
const REDIS_TIMER_SLACK: Duration = Duration::from_millis(100);
/// How often a worker about to start a scheduled job looks for other work meanwhile.
const SHORT_POLL: Duration = Duration::from_millis(5);

/// A built worker.
pub struct Worker {
    settings: Settings,
    pool: sqlx::PgPool,
    ctx: Arc<Context>,
    secrets: Arc<SecretBox>,
    history_task: tokio::task::JoinHandle<()>,
    metrics: tokio::net::TcpListener,
}

impl Worker {
    /// Connects (lazily) to Redis and PostgreSQL and starts the history writer.
    ///
    /// # Errors
    /// Bad URLs or the TLS backend failing to initialise.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        courier_core::metrics::install();
        let metrics = crate::metrics_server::bind(
            &settings.worker.metrics_host,
            settings.worker.metrics_port,
        )
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "worker.metrics_host {:?}, worker.metrics_port {}: {e}",
                settings.worker.metrics_host,
                settings.worker.metrics_port,
            )
        })?;
        let queue = RedisQueue::new(&settings.redis)?;
        queue.warn_on_unsafe_settings().await;
        let db = db::connect_lazy(&settings.database)?;
        let secrets = Arc::new(SecretBox::from_settings(&settings.secrets)?);
        let (history, history_task) = History::spawn(
            db.clone(),
            queue.clone(),
            secrets.clone(),
            settings.worker.history_batch,
            settings.worker.history_buffer,
        );
        let worker = if settings.worker.name.is_empty() {
            default_name()
        } else {
            settings.worker.name.clone()
        };
        let ctx = Arc::new(Context {
            completer: crate::completer::Completer::spawn(queue.clone()),
            queue,
            http: HttpCaller::new(&settings)?,
            history,
            inflight: InFlight::default(),
            worker,
            lease: leases::redis_lease(settings.worker.lease()),
        });
        Ok(Self {
            settings,
            pool: db,
            ctx,
            secrets,
            history_task,
            metrics,
        })
    }

    /// The port of this worker's `/metrics`.
    pub fn metrics_port(&self) -> u16 {
        self.metrics.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    /// This worker's name in execution records.
    pub fn name(&self) -> &str {
        &self.ctx.worker
    }

    /// Works until `shutdown` resolves, then shuts down gracefully.
    ///
    /// # Errors
    /// A configured queue name that is not valid.
    pub async fn run_until_stopped(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send,
    ) -> anyhow::Result<()> {
        let Self {
            settings,
            pool,
            ctx,
            secrets,
            history_task,
            metrics,
        } = self;
        let configured: Vec<QueueName> = settings.worker.queues.clone();
        let queues = Arc::new(Mutex::new(configured.clone()));
        let metrics_port = metrics.local_addr().map(|a| a.port()).unwrap_or(0);
        let stop_fetching = CancellationToken::new();
        let stop_side = CancellationToken::new();
        let mut side = JoinSet::new();
        side.spawn(crate::metrics_server::serve(
            metrics,
            ctx.clone(),
            pool.clone(),
            stop_side.clone(),
        ));
        side.spawn(leases::heartbeat(ctx.clone(), stop_side.clone()));
        side.spawn(leases::cancel_listener(ctx.clone(), stop_side.clone()));
        // Workers keep PostgreSQL and Redis in step too, so that happens while any
        // Courier process runs (an API need not be up).
        let maintenance = Maintenance {
            db: pool,
            queue: ctx.queue.clone(),
            settings: Arc::new(settings.clone()),
            secrets: secrets.clone(),
        };
        for task in maintenance.spawn(&stop_side, false) {
            side.spawn(async move {
                let _ = task.await;
            });
        }
        let reaper_queues = queues.clone();
        side.spawn(leases::reaper(
            ctx.clone(),
            move || reaper_queues.lock().expect("lock poisoned").clone(),
            REAP_EVERY,
            stop_side.clone(),
        ));

        let permits = Arc::new(Semaphore::new(settings.worker.concurrency));
        let mut calls = JoinSet::new();
        tracing::info!(
            worker = %ctx.worker,
            concurrency = settings.worker.concurrency,
            metrics_port,
            "courier-worker started"
        );
        {
            let fetch = fetch_loop(
                &ctx,
                &settings,
                &queues,
                configured.is_empty(),
                &permits,
                &mut calls,
                &stop_fetching,
            );
            tokio::pin!(fetch);
            tokio::select! {
                () = &mut fetch => {}
                () = shutdown => {
                    stop_fetching.cancel();
                    fetch.await;
                }
            }
        }

        let grace = Duration::from_millis(settings.worker.shutdown_grace_ms);
        tracing::info!(
            in_flight = ctx.inflight.len(),
            grace_ms = grace.as_millis() as u64,
            "stopping: no new jobs; waiting for calls in flight"
        );
        let drained =
            tokio::time::timeout(grace, async { while calls.join_next().await.is_some() {} }).await;
        if drained.is_err() {
            tracing::warn!(
                in_flight = ctx.inflight.len(),
                "grace period over; handing the remaining jobs back"
            );
            ctx.inflight.abort_all(AbortReason::Shutdown);
            while calls.join_next().await.is_some() {}
        }
        stop_side.cancel();
        while side.join_next().await.is_some() {}
        drop(ctx);
        if tokio::time::timeout(Duration::from_secs(60), history_task)
            .await
            .is_err()
        {
            tracing::error!("could not write all history before exiting (PostgreSQL unreachable)");
        }
        tracing::info!("courier-worker stopped");
        Ok(())
    }
}

/// `host-pid`: unique per process, and under Compose the host is the container, so
/// execution records tell the replicas apart.
fn default_name() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "worker".into());
    format!("{host}-{}", std::process::id())
}

/// Leases jobs while there is capacity; blocks on the wake-up lists when there is no
/// work, for at most `idle_poll_ms` or until the next scheduled job falls due.
async fn fetch_loop(
    ctx: &Arc<Context>,
    settings: &Settings,
    queues: &Arc<Mutex<Vec<QueueName>>>,
    discover: bool,
    permits: &Arc<Semaphore>,
    calls: &mut JoinSet<()>,
    stop: &CancellationToken,
) {
    let idle = Duration::from_millis(settings.worker.idle_poll_ms);
    let mut blocking = None;
    let mut last_refresh: Option<Instant> = None;
    let mut error_wait = Duration::from_millis(100);
    loop {
        // Reap finished call tasks so the set does not grow.
        while calls.try_join_next().is_some() {}
        let first = tokio::select! {
            () = stop.cancelled() => return,
            permit = permits.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
        };
        let mut held = vec![first];
        while held.len() < settings.worker.fetch_batch {
            match permits.clone().try_acquire_owned() {
                Ok(permit) => held.push(permit),
                Err(_) => break,
            }
        }
        if discover && last_refresh.is_none_or(|at| at.elapsed() >= QUEUE_REFRESH) {
            match ctx.queue.known_queues().await {
                Ok(known) => {
                    // Only ever add: a queue set that Redis lost must not make a worker
                    // stop serving the queues it knows.
                    let mut current = queues.lock().expect("lock poisoned");
                    for queue in known {
                        if !current.contains(&queue) {
                            current.push(queue);
                        }
                    }
                    drop(current);
                    last_refresh = Some(Instant::now());
                }
                Err(e) => tracing::warn!(error = %e, "cannot list queues"),
            }
        }
        let current = queues.lock().expect("lock poisoned").clone();
        let mut fetched = 0;
        let mut failed = false;
        let mut next_due = None;
        for queue in &current {
            if held.is_empty() {
                break;
            }
            match ctx.queue.fetch(queue, held.len(), ctx.lease).await {
                Ok(found) => {
                    next_due = match (next_due, found.next_due) {
                        (Some(a), Some(b)) => Some(std::cmp::min(a, b)),
                        (a, b) => a.or(b),
                    };
                    for job in found.unreadable {
                        calls.spawn(execute::reject_unreadable(ctx.clone(), queue.clone(), job));
                    }
                    for job in found.jobs {
                        let permit = held
                            .pop()
                            .expect("never fetches more than it holds permits for");
                        calls.spawn(execute::run(ctx.clone(), job, permit));
                        fetched += 1;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, %queue, "fetch failed");
                    failed = true;
                }
            }
        }
        drop(held);
        if failed {
            blocking = None;
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(error_wait) => {}
            }
            error_wait = (error_wait * 2).min(Duration::from_secs(5));
            continue;
        }
        error_wait = Duration::from_millis(100);
        if fetched > 0 {
            continue;
        }
        let until_due = next_due.map(|due| (due - Utc::now()).to_std().unwrap_or(Duration::ZERO));
        if let Some(until_due) = until_due.filter(|d| *d <= REDIS_TIMER_SLACK) {
            // Redis would wake a blocked worker up to 100 ms late: time the last stretch
            // here, looking for new work every few milliseconds meanwhile.
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(until_due.min(SHORT_POLL)) => {}
            }
            continue;
        }
        let wait = until_due.map_or(idle, |d| (d - REDIS_TIMER_SLACK).min(idle));
        if blocking.is_none() {
            blocking = ctx
                .queue
                .waiter()
                .await
                .map_err(|e| tracing::warn!(error = %e, "no blocking connection"))
                .ok();
        }
        let Some(conn) = blocking.as_mut() else {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(error_wait) => {}
            }
            continue;
        };
        tokio::select! {
            () = stop.cancelled() => return,
            woken = ctx.queue.wait_for_work(conn, &current, wait) => match woken {
                Ok(Wake::NewQueue) => last_refresh = None,
                Ok(Wake::Work | Wake::TimedOut) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "waiting for work failed");
                    blocking = None;
                }
            }
        }
    }
}
