//! `retention` (issue 15): removing `retention_jobs` expired jobs, with one execution
//! each, by dropping their day partition (what Courier's retention does) against
//! deleting them row by row (what it did before partitioning, 500 a statement), and the
//! rate at which the API accepts jobs meanwhile. Courier only: BullMQ keeps no history in
//! a database.

use std::{
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context as _;
use chrono::{DateTime, Days, NaiveDate, Utc};
use courier_core::{
    maintenance::Retention,
    repo::partitions::{self, Cutoff, Partition},
    settings::RetentionSettings,
};
use sqlx::PgPool;

use crate::{
    load,
    report::{Better, Figure},
    scenarios::Bench,
    systems::{Deployment, System},
};

/// Rows written per statement while loading the expired jobs.
const LOAD_CHUNK: u64 = 250_000;

/// How the API's intake went while something ran beside it.
struct Beside {
    /// How long the work took.
    secs: f64,
    /// Jobs accepted a second meanwhile.
    rate: f64,
    /// The slowest second's p99 latency of a submission.
    worst_p99_ms: f64,
}

impl Bench<'_> {
    pub async fn retention(&self, d: &mut Deployment) -> anyhow::Result<Vec<Figure>> {
        if d.system != System::Courier {
            return Ok(vec![]);
        }
        let db = d.courier_db().context("courier's database")?.clone();
        let n = self.size.retention_jobs;
        let now = Utc::now();
        // Ten days ago: past the 7 days succeeded jobs keep.
        let day = now.date_naive() - Days::new(10);
        partitions::create_days(&db, day, now.date_naive()).await?;

        let idle = self
            .intake_beside(d, async {
                tokio::time::sleep(Duration::from_secs(3)).await;
                Ok(())
            })
            .await?;

        load_expired(&db, day, n).await?;
        let retention = Retention::new(
            db.clone(),
            RetentionSettings {
                succeeded_hours: 7 * 24,
                dead_hours: 30 * 24,
                sweep_interval_ms: 60_000,
                partition_ahead_days: 3,
            },
        );
        let dropped = self
            .intake_beside(d, async {
                let swept = retention.sweep(now).await?;
                anyhow::ensure!(swept.dropped >= 1, "nothing was dropped: {swept:?}");
                Ok(())
            })
            .await?;
        anyhow::ensure!(count(&db).await? == 0, "expired jobs left after the drop");

        partitions::create_days(&db, day, day).await?;
        load_expired(&db, day, n).await?;
        let p = day_partition(&db, day).await?;
        let rows = self
            .intake_beside(d, async {
                let mut deleted = 0;
                loop {
                    let week_ago = now - chrono::Duration::days(7);
                    let cut = Cutoff {
                        succeeded_before: week_ago,
                        dead_before: week_ago,
                    };
                    match partitions::delete_expired_in(&db, &p, cut, 500).await? {
                        0 => break,
                        k => deleted += k,
                    }
                }
                anyhow::ensure!(deleted == n, "{deleted} of {n} deleted");
                Ok(())
            })
            .await?;

        Ok(vec![
            Figure::new("drop: seconds", dropped.secs, Better::Lower),
            Figure::new("row by row: seconds", rows.secs, Better::Lower),
            Figure::new("enqueue jobs/s, idle", idle.rate, Better::Higher),
            Figure::new("enqueue jobs/s, during drop", dropped.rate, Better::Higher),
            Figure::new(
                "enqueue jobs/s, during row by row",
                rows.rate,
                Better::Higher,
            ),
            Figure::new(
                "enqueue p99 ms, during drop",
                dropped.worst_p99_ms,
                Better::Lower,
            ),
            Figure::new(
                "enqueue p99 ms, during row by row",
                rows.worst_p99_ms,
                Better::Lower,
            ),
        ])
    }

    /// Runs `work` while submitting jobs one a request, a second at a time, until it ends
    /// (at least a second).
    async fn intake_beside(
        &self,
        d: &Deployment,
        work: impl Future<Output = anyhow::Result<()>>,
    ) -> anyhow::Result<Beside> {
        let done = Arc::new(AtomicBool::new(false));
        let make = self.single(d.system, "/ok");
        let conns = self.size.enqueue_conns;
        let intake = async {
            let (mut ok, mut elapsed, mut worst) = (0, Duration::ZERO, 0.0f64);
            while !done.load(Ordering::Relaxed) {
                let second =
                    load::closed_loop(&d.endpoint, conns, Duration::from_secs(1), make.clone())
                        .await;
                ok += second.ok;
                elapsed += second.elapsed;
                worst = worst.max(second.latency_ms(0.99));
            }
            (ok, elapsed, worst)
        };
        let timed = async {
            let started = Instant::now();
            let result = work.await;
            done.store(true, Ordering::Relaxed);
            result.map(|()| started.elapsed())
        };
        let (took, (ok, elapsed, worst)) = tokio::join!(timed, intake);
        Ok(Beside {
            secs: took?.as_secs_f64(),
            rate: ok as f64 / elapsed.as_secs_f64(),
            worst_p99_ms: worst,
        })
    }
}

/// Writes `n` jobs created on `day`, succeeded the same day, each with one execution.
async fn load_expired(db: &PgPool, day: NaiveDate, n: u64) -> anyhow::Result<()> {
    let start: DateTime<Utc> = day.and_hms_opt(0, 0, 0).expect("midnight").and_utc();
    // Spread over the day, a millisecond apart at least (ids stay unique).
    let step_ms = (86_400_000 / n.max(1)).max(1) as f64;
    let spec: String = sqlx::query_scalar("SELECT spec::text FROM jobs LIMIT 1")
        .fetch_one(db)
        .await
        .context("a job to copy the spec of")?;
    let started = Instant::now();
    let mut from = 0;
    while from < n {
        let to = (from + LOAD_CHUNK).min(n);
        sqlx::query(
            "INSERT INTO jobs (id, queue, state, priority, spec, max_attempts, attempts, run_at, created_at,
                               updated_at, finished_at)
             SELECT courier_id_floor(t), 'expired', 'succeeded', 0, $4::json, 3, 1, t, t, t, t + interval '1 second'
             FROM generate_series($2::int8, $3::int8 - 1) g,
                  LATERAL (SELECT $1 + make_interval(secs => g * $5 / 1000.0) AS t) x",
        )
        .bind(start)
        .bind(from as i64)
        .bind(to as i64)
        .bind(&spec)
        .bind(step_ms)
        .execute(db)
        .await?;
        from = to;
    }
    sqlx::query(
        "INSERT INTO job_executions (job_id, attempt, token, worker, outcome, status_code, duration_ms,
                                     started_at, finished_at)
         SELECT id, 1, 1, 'bench', 'succeeded', 200, 5, created_at, finished_at
         FROM jobs WHERE queue = 'expired'",
    )
    .execute(db)
    .await?;
    sqlx::query("ANALYZE jobs, job_executions")
        .execute(db)
        .await?;
    eprintln!(
        "    loaded {n} expired jobs in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

async fn count(db: &PgPool) -> anyhow::Result<i64> {
    Ok(
        sqlx::query_scalar("SELECT count(*) FROM jobs WHERE queue = 'expired'")
            .fetch_one(db)
            .await?,
    )
}

/// The partition of `day`.
async fn day_partition(db: &PgPool, day: NaiveDate) -> anyhow::Result<Partition> {
    let name = format!("jobs_p{}", day.format("%Y%m%d"));
    partitions::list(db)
        .await?
        .into_iter()
        .find(|p| p.jobs == name)
        .with_context(|| format!("no partition {name}"))
}
