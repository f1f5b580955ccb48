//! Prometheus metrics (SPEC 12), through the `metrics` facade and
//! `metrics-exporter-prometheus`. Every name and label is listed in `deploy/metrics.txt`,
//! which the dashboards and alert rules are checked against; labels are bounded (queue,
//! outcome, state), never a job id or a URL.
//!
//! Each process installs one recorder ([`install`]) and serves [`render`] on `/metrics`.
//! Counters and histograms are recorded where things happen; gauges are set by each
//! process's [`StatusLoop`] from one query per interval, never per scrape.

use std::{
    sync::{Arc, OnceLock},
    time::Duration,
};

use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// Histogram buckets in seconds: from 5 ms to 15 min (the longest call a job may make).
const BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs this process's recorder (once; later calls return the same handle).
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let handle = PrometheusBuilder::new()
                .set_buckets(BUCKETS)
                .expect("the buckets are not empty")
                .install_recorder()
                .expect("no other metrics recorder is installed");
            describe();
            // Shown from the start, at 0, rather than from its first increment.
            counter!("courier_history_rejects_total").increment(0);
            for reason in ["reconcile", "missing", "stuck", "outbox"] {
                counter!("courier_jobs_redispatched_total", "reason" => reason).increment(0);
            }
            handle
        })
        .clone()
}

/// The Prometheus text of every metric recorded so far.
pub fn render() -> String {
    let handle = install();
    handle.run_upkeep();
    handle.render()
}

fn describe() {
    describe_counter!("courier_jobs_submitted_total", "Jobs accepted, by queue.");
    describe_counter!(
        "courier_attempts_total",
        "Attempts ended, by queue and outcome (succeeded, failed, timeout, connection_error, cancelled, lease_expired)."
    );
    describe_counter!(
        "courier_jobs_finished_total",
        "Jobs that reached a terminal state, by queue and state."
    );
    describe_counter!(
        "courier_schedule_occurrences_total",
        "Schedule occurrences, by the queue of their job and outcome (fired or skipped)."
    );
    describe_counter!(
        "courier_jobs_redispatched_total",
        "Jobs dispatched again after Redis lost them, by how the loss was found (reconcile, missing, stuck)."
    );
    describe_counter!(
        "courier_history_rejects_total",
        "History records PostgreSQL refused for good (kept in history_rejects)."
    );
    describe_histogram!(
        "courier_attempt_duration_seconds",
        metrics::Unit::Seconds,
        "How long attempts' calls took, by queue."
    );
    describe_histogram!(
        "courier_queue_wait_seconds",
        metrics::Unit::Seconds,
        "From a job's due time to its first attempt's start, by queue."
    );
    describe_histogram!(
        "courier_schedule_lateness_seconds",
        metrics::Unit::Seconds,
        "From a schedule occurrence's time to its job's creation, by queue."
    );
    describe_gauge!(
        "courier_queue_depth",
        "Jobs per queue and state (scheduled, queued, running, dead), as PostgreSQL counts them."
    );
    describe_gauge!(
        "courier_queue_oldest_queued_age_seconds",
        metrics::Unit::Seconds,
        "How long the longest-waiting due job of a queue has waited."
    );
    describe_gauge!(
        "courier_calls_in_flight",
        "Calls this worker is making now."
    );
    describe_gauge!(
        "courier_history_records_buffered",
        "Attempt records this worker holds that PostgreSQL does not have yet."
    );
    describe_gauge!("courier_redis_up", "1 when this process reaches Redis.");
    describe_gauge!(
        "courier_postgres_up",
        "1 when this process reaches PostgreSQL."
    );
}

/// Jobs accepted into `queue`.
pub fn submitted(queue: &str, n: u64) {
    counter!("courier_jobs_submitted_total", "queue" => queue.to_owned()).increment(n);
}

/// An attempt that ended with `outcome`, after `seconds` when its call was timed (an
/// attempt lost with its worker was not).
pub fn attempt(queue: &str, outcome: &'static str, seconds: Option<f64>) {
    counter!("courier_attempts_total", "queue" => queue.to_owned(), "outcome" => outcome)
        .increment(1);
    if let Some(seconds) = seconds {
        histogram!("courier_attempt_duration_seconds", "queue" => queue.to_owned()).record(seconds);
    }
}

/// `n` jobs of `queue` that reached the terminal `state`.
pub fn finished(queue: &str, state: &'static str, n: u64) {
    counter!("courier_jobs_finished_total", "queue" => queue.to_owned(), "state" => state)
        .increment(n);
}

/// A first attempt that started `seconds` after its job fell due.
pub fn queue_wait(queue: &str, seconds: f64) {
    histogram!("courier_queue_wait_seconds", "queue" => queue.to_owned()).record(seconds.max(0.0));
}

/// A schedule occurrence `fired` or skipped; a fired one `late_seconds` after its time.
pub fn occurrence(queue: &str, fired: bool, late_seconds: Option<f64>) {
    let outcome = if fired { "fired" } else { "skipped" };
    counter!("courier_schedule_occurrences_total", "queue" => queue.to_owned(), "outcome" => outcome)
        .increment(1);
    if let Some(late) = late_seconds {
        histogram!("courier_schedule_lateness_seconds", "queue" => queue.to_owned())
            .record(late.max(0.0));
    }
}

/// History records refused for good.
/// Jobs dispatched again after Redis lost them, by how the loss was found: `reconcile`
/// (a loss of Redis data seen by the marker), `missing` (a waiting job Redis lacked),
/// `stuck` (a running job whose result never arrived).
pub fn redispatched(reason: &'static str, n: u64) {
    counter!("courier_jobs_redispatched_total", "reason" => reason).increment(n);
}

pub fn history_rejects(n: u64) {
    counter!("courier_history_rejects_total").increment(n);
}

/// This worker's calls in flight and records not yet in PostgreSQL.
pub fn worker_load(in_flight: usize, buffered: usize) {
    gauge!("courier_calls_in_flight").set(in_flight as f64);
    gauge!("courier_history_records_buffered").set(buffered as f64);
}

/// Whether this process reaches Redis and PostgreSQL.
pub fn connections(redis: bool, postgres: bool) {
    gauge!("courier_redis_up").set(f64::from(u8::from(redis)));
    gauge!("courier_postgres_up").set(f64::from(u8::from(postgres)));
}

/// Depth of every queue, from one `queue_depths` query; queues that were reported
/// before and have no jobs now go to 0 rather than keep their last value.
#[derive(Default)]
pub struct DepthGauges {
    seen: std::sync::Mutex<std::collections::BTreeSet<String>>,
}

impl DepthGauges {
    pub fn set(&self, depths: &[crate::repo::QueueDepth], now: chrono::DateTime<chrono::Utc>) {
        let mut seen = self.seen.lock().expect("depth gauges");
        let current: std::collections::BTreeSet<String> =
            depths.iter().map(|d| d.queue.as_str().to_owned()).collect();
        for gone in seen.difference(&current) {
            for state in ["scheduled", "queued", "running", "dead"] {
                gauge!("courier_queue_depth", "queue" => gone.clone(), "state" => state).set(0.0);
            }
            gauge!("courier_queue_oldest_queued_age_seconds", "queue" => gone.clone()).set(0.0);
        }
        for d in depths {
            let q = d.queue.as_str().to_owned();
            for (state, n) in [
                ("scheduled", d.scheduled),
                ("queued", d.queued),
                ("running", d.running),
                ("dead", d.dead),
            ] {
                gauge!("courier_queue_depth", "queue" => q.clone(), "state" => state).set(n as f64);
            }
            let age = d
                .oldest_queued_since
                .map_or(0.0, |since| (now - since).as_seconds_f64().max(0.0));
            gauge!("courier_queue_oldest_queued_age_seconds", "queue" => q).set(age);
        }
        seen.extend(current);
    }
}

/// How often the status loop looks.
pub const STATUS_EVERY: Duration = Duration::from_secs(5);

/// Sets the connection gauges (and, in the API, the depth gauges) every
/// [`STATUS_EVERY`], until the process stops.
pub struct StatusLoop {
    pub db: sqlx::PgPool,
    pub queue: crate::queue::RedisQueue,
    /// Whether this process reports queue depths (the API does; workers need not, and
    /// one query per API process per interval is cheap).
    pub depths: bool,
}

impl StatusLoop {
    pub fn spawn(
        self,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let gauges = Arc::new(DepthGauges::default());
        tokio::spawn(async move {
            loop {
                self.once(&gauges).await;
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(STATUS_EVERY) => {}
                }
            }
        })
    }

    /// One look: the connections, and the depths where asked.
    pub async fn once(&self, gauges: &DepthGauges) {
        let redis = self.queue.ping().await.is_ok();
        let postgres = sqlx::query("SELECT 1").execute(&self.db).await.is_ok();
        connections(redis, postgres);
        if self.depths && postgres {
            match crate::repo::queue_depths(&self.db, None).await {
                Ok(depths) => gauges.set(&depths, chrono::Utc::now()),
                Err(e) => tracing::warn!(error = %e, "reading queue depths for metrics failed"),
            }
        }
    }
}
