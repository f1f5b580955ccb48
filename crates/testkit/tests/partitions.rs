//! PostgreSQL partitioned by time (SPEC 13): jobs land in the partition of the day their
//! id was made, every read spans the days, and retention removes a day at once when all
//! of it has expired.
//!
//! Jobs of past days are written with ids of those days (a UUIDv7 starts with its
//! millisecond), cloned from a job the API accepted; retention runs with the time given.

use chrono::{DateTime, NaiveDate, Utc};
use courier_core::{
    Settings,
    maintenance::{Retention, retention::Swept},
    repo::{self, partitions},
};
use courier_testkit::{TestApp, TestEnv};
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

const DAY: chrono::Duration = chrono::Duration::days(1);

/// A UUIDv7 made at `at`.
fn id_at(at: DateTime<Utc>) -> Uuid {
    let ts = uuid::Timestamp::from_unix(
        uuid::NoContext,
        at.timestamp() as u64,
        at.timestamp_subsec_nanos(),
    );
    Uuid::new_v7(ts)
}

/// Noon of the day `days` before `now`.
fn noon(now: DateTime<Utc>, days: i64) -> DateTime<Utc> {
    (now.date_naive() - chrono::Days::new(days as u64))
        .and_hms_opt(12, 0, 0)
        .unwrap()
        .and_utc()
}

/// The settings of an API that never sweeps on its own during a test.
fn quiet(env: &TestEnv) -> Settings {
    let mut settings = env.settings.clone();
    settings.retention.succeeded_hours = 1_000_000;
    settings.retention.dead_hours = 1_000_000;
    settings
}

/// Writes a copy of `template` made at `created`, in `state` (finished at `finished`),
/// with an idempotency key of its own and one execution; returns its id.
async fn clone_job(
    db: &PgPool,
    template: &str,
    created: DateTime<Utc>,
    state: &str,
    finished: Option<DateTime<Utc>>,
) -> Uuid {
    let id = id_at(created);
    sqlx::query(
        "INSERT INTO jobs (id, queue, state, priority, spec, labels, max_attempts, run_at, created_at,
                           updated_at, finished_at)
         SELECT $1, queue, $2::job_state, priority, spec, labels, max_attempts,
                CASE WHEN $2 = 'scheduled' THEN now() + interval '1 day' ELSE $3 END, $3, COALESCE($4, $3), $4
         FROM jobs WHERE id = $5::uuid",
    )
    .bind(id)
    .bind(state)
    .bind(created)
    .bind(finished)
    .bind(template)
    .execute(db)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO idempotency_keys (key, job_id, request_hash) VALUES ($1, $2, '\\x00')",
    )
    .bind(format!("key-{id}"))
    .bind(id)
    .execute(db)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO job_executions (job_id, attempt, token, worker, outcome, duration_ms, started_at, finished_at)
         VALUES ($1, 1, 1, 'w', 'succeeded', 1, $2, $2)",
    )
    .bind(id)
    .bind(created)
    .execute(db)
    .await
    .unwrap();
    id
}

/// The partition holding job `id`, if the job is there.
async fn partition_of(db: &PgPool, id: Uuid) -> Option<String> {
    sqlx::query_scalar("SELECT tableoid::regclass::text FROM jobs WHERE id = $1")
        .bind(id)
        .fetch_optional(db)
        .await
        .unwrap()
}

async fn count(db: &PgPool, sql: &str, id: Uuid) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
        .bind(id)
        .fetch_one(db)
        .await
        .unwrap()
}

/// What is left of job `id`: whether the job is there, its idempotency keys and its
/// executions.
async fn traces(db: &PgPool, id: Uuid) -> (bool, i64, i64) {
    (
        partition_of(db, id).await.is_some(),
        count(
            db,
            "SELECT count(*) FROM idempotency_keys WHERE job_id = $1",
            id,
        )
        .await,
        count(
            db,
            "SELECT count(*) FROM job_executions WHERE job_id = $1",
            id,
        )
        .await,
    )
}

/// The `jobs` partitions there are.
async fn day_tables(db: &PgPool) -> Vec<String> {
    partitions::list(db)
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.jobs)
        .collect()
}

fn day_name(day: NaiveDate) -> String {
    format!("jobs_p{}", day.format("%Y%m%d"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn jobs_land_in_their_days_and_every_read_spans_the_days() {
    let env = TestEnv::new().await;
    let app = TestApp::spawn(quiet(&env)).await;
    let now = Utc::now();
    let made = partitions::create_days(
        &env.db,
        now.date_naive() - chrono::Days::new(10),
        now.date_naive(),
    )
    .await
    .unwrap();
    assert_eq!(made, 10, "the migration made today already");
    let template = app
        .submit(json!({"target": {"url": "http://127.0.0.1:9/"}, "queue": "spread"}))
        .await;

    // A job on each of five past days, in every state a job can be in.
    let mut ids = Vec::new();
    for (days, state, finished) in [
        (9, "succeeded", Some(noon(now, 9))),
        (7, "dead", Some(noon(now, 7))),
        (5, "queued", None),
        (3, "scheduled", None),
        (1, "running", None),
    ] {
        let id = clone_job(&env.db, &template, noon(now, days), state, finished).await;
        let day = now.date_naive() - chrono::Days::new(days as u64);
        assert_eq!(partition_of(&env.db, id).await, Some(day_name(day)));
        ids.push(id);
    }
    assert_eq!(
        partition_of(&env.db, template.parse().unwrap()).await,
        Some(day_name(now.date_naive()))
    );

    // A lookup by id reads one day; a list, the queue's counts and the stuck-job net
    // read them all.
    for id in &ids {
        let job = app.job(&id.to_string()).await;
        assert_eq!(job["id"], id.to_string());
    }
    let (_, page) = app.get("/v1/jobs?queue=spread&limit=100").await;
    let listed: Vec<&str> = page["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap())
        .collect();
    assert_eq!(listed.len(), 6, "{page}");
    assert_eq!(listed[5], ids[0].to_string(), "newest first, across days");
    let (_, queue) = app.get("/v1/queues/spread").await;
    assert_eq!(
        (
            queue["queued"].as_i64(),
            queue["scheduled"].as_i64(),
            queue["running"].as_i64()
        ),
        (Some(2), Some(1), Some(1)),
        "{queue}"
    );
    let stuck = repo::stuck_running(&env.db, 0, 10).await.unwrap();
    assert_eq!(
        stuck.iter().map(|j| j.id.as_uuid()).collect::<Vec<_>>(),
        [ids[4]],
        "the running job of yesterday, whose lease is long gone"
    );
    let (status, executions) = app.get(&format!("/v1/jobs/{}/executions", ids[1])).await;
    assert_eq!(status, 200);
    assert_eq!(executions["executions"].as_array().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retention_drops_a_day_only_when_all_of_it_has_expired() {
    let env = TestEnv::new().await;
    let app = TestApp::spawn(quiet(&env)).await;
    let now = Utc::now();
    partitions::create_days(
        &env.db,
        now.date_naive() - chrono::Days::new(40),
        now.date_naive(),
    )
    .await
    .unwrap();
    let template = app
        .submit(json!({"target": {"url": "http://127.0.0.1:9/"}, "queue": "old"}))
        .await;
    let mut retention_settings = env.settings.retention.clone();
    retention_settings.succeeded_hours = 7 * 24;
    retention_settings.dead_hours = 30 * 24;
    let retention = Retention::new(env.db.clone(), retention_settings);

    let job = |days: i64, state: &'static str, finished: Option<DateTime<Utc>>| {
        clone_job(&env.db, &template, noon(now, days), state, finished)
    };
    // 20 days ago: everything succeeded long ago, so the day goes whole.
    let mut gone = Vec::new();
    for _ in 0..3 {
        gone.push(job(20, "succeeded", Some(noon(now, 20))).await);
    }
    // 15 days ago: a succeeded job, and a dead one that keeps 30 days.
    let expired_15 = job(15, "succeeded", Some(noon(now, 15))).await;
    let dead_15 = job(15, "dead", Some(noon(now, 14))).await;
    // 12 days ago: a job still waiting for its time.
    let expired_12 = job(12, "succeeded", Some(noon(now, 12))).await;
    let live_12 = job(12, "scheduled", None).await;
    // 7 days ago at 08:00: a day not wholly past 7 days yet, though this job is.
    let early = noon(now, 7) - chrono::Duration::hours(4);
    let edge = clone_job(&env.db, &template, early, "succeeded", Some(early)).await;
    // No partition: a job of 100 days ago sits in DEFAULT and goes row by row.
    let stray = job(100, "cancelled", Some(noon(now, 100))).await;
    assert_eq!(
        partition_of(&env.db, stray).await.as_deref(),
        Some("jobs_default")
    );

    let swept = retention.sweep(now).await.unwrap();
    assert_eq!(
        (swept.dropped, swept.compacted, swept.deleted),
        // Days 40 to 8 ago are wholly past 7 days: 33, of which two are compacted.
        (31, 2, 1),
        "{swept:?}"
    );
    let day = |d: u64| day_name(now.date_naive() - chrono::Days::new(d));
    let tables = day_tables(&env.db).await;
    assert!(!tables.contains(&day(20)), "{tables:?}");
    assert!(
        tables.contains(&day(15)) && tables.contains(&day(12)),
        "{tables:?}"
    );
    for id in gone.iter().chain([&expired_15, &expired_12, &stray]) {
        assert_eq!(traces(&env.db, *id).await, (false, 0, 0), "{id} was kept");
    }
    for id in [dead_15, live_12, edge] {
        assert_eq!(traces(&env.db, id).await, (true, 1, 1), "{id} was removed");
        let job = app.job(&id.to_string()).await;
        assert_eq!(job["id"], id.to_string());
    }

    // Nothing more to do now: the kept days are not compacted again.
    let again = retention.sweep(now).await.unwrap();
    assert_eq!(
        (again.dropped, again.compacted, again.deleted),
        (0, 0, 0),
        "{again:?}"
    );

    // A day later the edge's day is wholly past: it goes too.
    let later = retention.sweep(now + DAY).await.unwrap();
    assert_eq!(partition_of(&env.db, edge).await, None, "{later:?}");
    assert!(later.dropped >= 1, "{later:?}");

    // 17 days on, the dead job of day 15 is past its 30 days: that day is dropped; day
    // 12 keeps its live job.
    retention.sweep(now + DAY * 17).await.unwrap();
    let tables = day_tables(&env.db).await;
    assert!(!tables.contains(&day(15)), "{tables:?}");
    assert!(tables.contains(&day(12)), "{tables:?}");
    assert!(partition_of(&env.db, live_12).await.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_day_holding_many_jobs_kept_longer_is_swept_row_by_row() {
    let env = TestEnv::new().await;
    let app = TestApp::spawn(quiet(&env)).await;
    let now = Utc::now();
    partitions::create_days(
        &env.db,
        now.date_naive() - chrono::Days::new(10),
        now.date_naive(),
    )
    .await
    .unwrap();
    let template = app
        .submit(json!({"target": {"url": "http://127.0.0.1:9/"}, "queue": "many"}))
        .await;
    // More live jobs than a compaction copies, and three expired ones, on day 9.
    let start = noon(now, 9);
    sqlx::query(
        "INSERT INTO jobs (id, queue, state, priority, spec, labels, max_attempts, run_at)
         SELECT courier_id_floor($1 + make_interval(secs => g)), queue, 'scheduled', priority, spec, labels,
                max_attempts, now() + interval '1 day'
         FROM jobs, generate_series(1, $2) g WHERE id = $3::uuid",
    )
    .bind(start)
    .bind(partitions::COMPACT_MAX as i32 + 1)
    .bind(&template)
    .execute(&env.db)
    .await
    .unwrap();
    let expired: Vec<Uuid> = futures_util::future::join_all(
        (0..3).map(|_| clone_job(&env.db, &template, start, "succeeded", Some(start))),
    )
    .await;
    let retention = Retention::new(env.db.clone(), env.settings.retention.clone());
    let swept: Swept = retention.sweep(now).await.unwrap();
    // Days 10 and 8 ago are empty and go whole; day 9 keeps its live jobs.
    assert_eq!(
        (swept.dropped, swept.compacted, swept.deleted),
        (2, 0, 3),
        "{swept:?}"
    );
    for id in expired {
        assert_eq!(partition_of(&env.db, id).await, None);
    }
    let live: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM {}",
        day_name(start.date_naive())
    )))
    .fetch_one(&env.db)
    .await
    .unwrap();
    assert_eq!(live, partitions::COMPACT_MAX + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_migration_converts_a_database_with_jobs_in_it() {
    let env = TestEnv::new().await;
    let app = TestApp::spawn(quiet(&env)).await;
    let template = app
        .submit(json!({"target": {"url": "http://127.0.0.1:9/"}}))
        .await;
    let spec: String = sqlx::query_scalar("SELECT spec::text FROM jobs WHERE id = $1::uuid")
        .bind(&template)
        .fetch_one(&env.db)
        .await
        .unwrap();
    app.stop().await;
    // A second database, migrated to just before partitioning, with jobs in it.
    let name = format!("courier_test_{}", Uuid::new_v4().simple());
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&env.db)
        .await
        .unwrap();
    let url = format!("{}/{name}", env.database_url.rsplit_once('/').unwrap().0);
    let db = PgPool::connect(&url).await.unwrap();
    let all = &courier_core::db::MIGRATOR;
    let before = sqlx::migrate::Migrator::with_migrations(
        all.iter()
            .filter(|m| m.version < 20261205000001)
            .cloned()
            .collect(),
    );
    before.run(&db).await.unwrap();
    let now = Utc::now();
    let mut old = Vec::new();
    for (days, state) in [(3, "succeeded"), (2, "dead"), (0, "queued")] {
        let id = id_at(noon(now, days).min(now));
        sqlx::query(
            "INSERT INTO jobs (id, queue, state, priority, spec, max_attempts, run_at, finished_at,
                               idempotency_key, request_hash)
             VALUES ($1, 'legacy', $2::job_state, 0, $4::json, 3, now(),
                     CASE WHEN $2 = 'queued' THEN NULL ELSE now() END, $3, '\\x01')",
        )
        .bind(id)
        .bind(state)
        .bind(format!("old-{days}"))
        .bind(&spec)
        .execute(&db)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO job_executions (job_id, attempt, token, worker, outcome, duration_ms, started_at, finished_at)
             VALUES ($1, 1, 1, 'w', 'failed', 1, now(), now())",
        )
        .bind(id)
        .execute(&db)
        .await
        .unwrap();
        old.push(id);
    }

    all.run(&db).await.unwrap();

    for id in &old {
        assert_eq!(partition_of(&db, *id).await.as_deref(), Some("jobs_legacy"));
        assert_eq!(
            count(
                &db,
                "SELECT count(*) FROM job_executions_legacy WHERE job_id = $1",
                *id
            )
            .await,
            1
        );
    }
    let keys: Vec<(String, Uuid)> =
        sqlx::query_as("SELECT key, job_id FROM idempotency_keys ORDER BY key")
            .fetch_all(&db)
            .await
            .unwrap();
    assert_eq!(
        keys,
        [
            ("old-0".to_owned(), old[2]),
            ("old-2".to_owned(), old[1]),
            ("old-3".to_owned(), old[0])
        ]
    );
    // New executions keep numbering after the old ones.
    let next: i64 = sqlx::query_scalar("SELECT nextval('job_executions_id_seq')")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(next, 4);
    // A new job goes to tomorrow's day or later, never into the legacy partition.
    let tomorrow = id_at(now + DAY);
    sqlx::query("INSERT INTO jobs (id, queue, state, priority, spec, max_attempts, run_at) VALUES ($1, 'legacy', 'queued', 0, $2::json, 1, now())")
        .bind(tomorrow)
        .bind(&spec)
        .execute(&db)
        .await
        .unwrap();
    assert_eq!(
        partition_of(&db, tomorrow).await,
        Some(day_name((now + DAY).date_naive()))
    );
    // The API reads the old jobs through the partitioned tables.
    let mut settings = env.settings.clone();
    settings.database.url = url.clone();
    let app = TestApp::spawn(settings).await;
    let job = app.job(&old[1].to_string()).await;
    assert_eq!(
        (job["state"].as_str(), job["queue"].as_str()),
        (Some("dead"), Some("legacy"))
    );
    assert_eq!(app.executions(&old[1].to_string()).await.len(), 1);
    let (status, _) = app.get("/v1/jobs?queue=legacy").await;
    assert_eq!(status, 200);
    app.stop().await;
    db.close().await;
}
