//! `missing-check` (issue 25): the cost of the net that dispatches again waiting jobs
//! Redis lacks, with `missing_check_jobs` jobs in PostgreSQL, `missing_check_waiting` of
//! them waiting (queued in paused queues, and held in Redis as they would be) and the rest
//! succeeded. It times passes of the check, then the API's intake and a drain with all of
//! that in the database and the processes' own checks running every 3 s, as they do by
//! default. Run it again with `COURIER__REDIS__MISSING_CHECK_MS=0` in the environment for
//! the same figures with the check off. Courier only: BullMQ has no database to check.

use std::{sync::Arc, time::Instant};

use anyhow::Context as _;
use chrono::Utc;
use courier_core::{
    JobId, QueueName, Settings,
    crypto::SecretBox,
    domain::JobSpec,
    maintenance::Maintenance,
    queue::{Dispatch, RedisQueue},
    repo::partitions,
};
use serde_json::json;
use sqlx::PgPool;

use crate::{
    report::{Better, Figure},
    scenarios::Bench,
    systems::{Deployment, System},
};

/// Rows written per statement while loading.
const LOAD_CHUNK: u64 = 250_000;
/// Paused queues the waiting jobs are spread over.
const WAITING_QUEUES: u64 = 10;
/// Passes timed.
const PASSES: usize = 10;

impl Bench<'_> {
    pub async fn missing_check(&self, d: &mut Deployment) -> anyhow::Result<Vec<Figure>> {
        if d.system != System::Courier {
            return Ok(vec![]);
        }
        let env = d.courier_env().context("courier's settings")?;
        let (db, settings) = (env.db.clone(), env.settings.clone());
        let total = self.size.missing_check_jobs;
        let waiting = self.size.missing_check_waiting.min(total);
        for q in 0..WAITING_QUEUES {
            d.send(
                reqwest::Method::POST,
                &format!("/v1/queues/waiting-{q}/pause"),
                &json!({}),
            )
            .await?;
        }
        // One job through the API, whose stored spec the loaded jobs copy.
        let url = self.target.url("/ok");
        d.send(
            reqwest::Method::POST,
            "/v1/jobs",
            &json!({"queue": "waiting-0", "target": {"url": url}}),
        )
        .await?;
        let started = Instant::now();
        load(&db, total - waiting, waiting).await?;
        let queue = RedisQueue::new(&settings.redis)?;
        hold_in_redis(&db, &queue).await?;
        // Counted in Redis: the processes' own checks put some there first (they see
        // jobs in PostgreSQL that are not yet in Redis while this loads them).
        let mut held = 0;
        for q in 0..WAITING_QUEUES {
            let name = QueueName::parse(&format!("waiting-{q}")).map_err(anyhow::Error::msg)?;
            let keys = queue.keys().queue(&name);
            held += d.redis_hlen(&keys.jobs).await?;
        }
        // And the one job the API took.
        anyhow::ensure!(
            held == waiting + 1,
            "{held} of {} waiting jobs in redis",
            waiting + 1
        );
        eprintln!(
            "    loaded {total} jobs ({waiting} waiting, in redis too) in {:.1} s",
            started.elapsed().as_secs_f64()
        );

        let check = maintenance(db.clone(), queue, settings)?
            .missing_check()
            .context("the check is on in the bench's own settings")?;
        let mut took = Vec::with_capacity(PASSES);
        let mut looked = 0;
        for _ in 0..PASSES {
            let pass = check.check().await?;
            anyhow::ensure!(pass.missing == 0, "the check found jobs missing: {pass:?}");
            looked = looked.max(pass.looked);
            took.push(pass.took.as_secs_f64() * 1000.0);
        }
        took.sort_by(f64::total_cmp);

        let mut figures = vec![
            Figure::new("pass ms, median", took[PASSES / 2], Better::Lower),
            Figure::new("pass ms, max", took[PASSES - 1], Better::Lower),
            Figure::new(
                "waiting jobs looked at in a pass",
                looked as f64,
                Better::Higher,
            ),
        ];
        // The drain first: the intake's jobs would be drained with it.
        for (label, scenario) in [("drain", "drain"), ("enqueue", "enqueue")] {
            for figure in Box::pin(self.run(scenario, d)).await? {
                if figure.name == "jobs/s" {
                    figures.push(Figure::new(
                        &format!("{label} jobs/s, beside it"),
                        figure.value,
                        Better::Higher,
                    ));
                }
            }
        }
        Ok(figures)
    }
}

/// The maintenance of a process with these settings (the check, with its recovery).
fn maintenance(db: PgPool, queue: RedisQueue, settings: Settings) -> anyhow::Result<Maintenance> {
    let secrets = Arc::new(SecretBox::from_settings(&settings.secrets)?);
    Ok(Maintenance {
        db,
        queue,
        settings: Arc::new(settings),
        secrets,
    })
}

/// Writes `done` succeeded jobs, created over the 20 hours before the last 20, and
/// `waiting` queued ones (over the paused queues) created over the last 20 hours up to a
/// minute ago: due and unchanged for longer than the check's settle time. Each job gets a
/// millisecond of its own (an id is its time's floor).
async fn load(db: &PgPool, done: u64, waiting: u64) -> anyhow::Result<()> {
    let now = Utc::now();
    partitions::create_days(
        db,
        (now - chrono::Duration::hours(41)).date_naive(),
        now.date_naive(),
    )
    .await?;
    let spec: String = sqlx::query_scalar("SELECT spec::text FROM jobs LIMIT 1")
        .fetch_one(db)
        .await
        .context("a job to copy the spec of")?;
    let span = chrono::Duration::hours(20);
    let last = now - chrono::Duration::minutes(1);
    for (n, state, queues, newest) in [
        (done, "succeeded", 1, last - span),
        (waiting, "queued", WAITING_QUEUES, last),
    ] {
        let step_ms = (span.num_milliseconds() as u64 / n.max(1)).max(1) as f64;
        anyhow::ensure!(
            n as f64 * step_ms <= span.num_milliseconds() as f64,
            "{n} jobs do not fit in 20 hours a millisecond apart"
        );
        let mut from = 0;
        while from < n {
            let to = (from + LOAD_CHUNK).min(n);
            sqlx::query(
                "INSERT INTO jobs (id, queue, state, priority, spec, max_attempts, attempts, run_at,
                                   created_at, updated_at, finished_at)
                 SELECT courier_id_floor(t),
                        CASE WHEN $5::int8 = 1 THEN 'done' ELSE 'waiting-' || (g % $5) END,
                        $6::job_state, 0, $1::json, 3, 0, t, t, t,
                        CASE WHEN $6 = 'succeeded' THEN t ELSE NULL END
                 FROM generate_series($2::int8, $3::int8 - 1) g,
                      LATERAL (SELECT $7::timestamptz - make_interval(secs => g * $4 / 1000.0) AS t) x",
            )
            .bind(&spec)
            .bind(from as i64)
            .bind(to as i64)
            .bind(step_ms)
            .bind(queues as i64)
            .bind(state)
            .bind(newest)
            .execute(db)
            .await?;
            from = to;
        }
    }
    sqlx::query("ANALYZE jobs").execute(db).await?;
    Ok(())
}

/// Puts every queued job in Redis, as dispatch would have; returns how many it added.
async fn hold_in_redis(db: &PgPool, queue: &RedisQueue) -> anyhow::Result<u64> {
    let mut after: Option<sqlx::types::Uuid> = None;
    let mut held = 0;
    loop {
        let rows: Vec<(sqlx::types::Uuid, String, String, chrono::DateTime<Utc>)> = sqlx::query_as(
            "SELECT id, queue, spec::text, run_at FROM jobs
             WHERE state = 'queued' AND ($1::uuid IS NULL OR id > $1) ORDER BY id LIMIT 10000",
        )
        .bind(after)
        .fetch_all(db)
        .await?;
        let Some(last) = rows.last() else { break };
        after = Some(last.0);
        let jobs = rows
            .iter()
            .map(|(id, q, spec, run_at)| {
                let spec: JobSpec = serde_json::from_str(spec)?;
                Ok(Dispatch::new(
                    JobId::from(*id),
                    QueueName::parse(q).map_err(|e| anyhow::anyhow!("{q}: {e}"))?,
                    &spec,
                    *run_at,
                    0,
                ))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        for chunk in jobs.chunks(1000) {
            held += queue.enqueue(chunk).await? as u64;
        }
    }
    Ok(held)
}
