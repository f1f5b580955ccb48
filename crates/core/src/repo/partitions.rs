//! The day partitions of `jobs` and `job_executions` (SPEC 13): listing them, making
//! them ahead, and removing what is past its retention from one of them, by dropping it,
//! by compacting it, or row by row.
//!
//! Both tables are partitioned by the job's id, and a UUIDv7 starts with the millisecond
//! it was made, so the partition `jobs_pYYYYMMDD` holds the jobs created on that UTC day
//! and `job_executions_pYYYYMMDD` their attempts. `jobs_legacy` holds what a database had
//! before it was partitioned; `jobs_default` any id no day was made for.

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

use super::RepoError;

/// Most jobs a day may still hold for retention to copy them out and empty the day at
/// once ([`compact`]); above it, the expired ones are deleted row by row.
pub const COMPACT_MAX: i64 = 10_000;

/// How long retention waits for the lock on the tables before leaving the day for the
/// next sweep: every query on `jobs` waits behind it while it waits.
const SET_LOCK_TIMEOUT: &str = "SET LOCAL lock_timeout = '1s'";

/// One partition of `jobs` and the partition of `job_executions` with the same range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    /// The `jobs` partition (`jobs_p20261129`, `jobs_legacy`, `jobs_default`).
    pub jobs: String,
    /// The matching `job_executions` partition.
    pub executions: String,
    /// The lowest id it holds; `None` from the lowest there is (legacy) or for DEFAULT.
    pub from: Option<Uuid>,
    /// The id it holds up to (excluded); `None` for the DEFAULT partition.
    pub to: Option<Uuid>,
}

impl Partition {
    /// Whether this is the DEFAULT partition (ids no day was made for).
    pub fn is_default(&self) -> bool {
        self.to.is_none()
    }

    /// When the last job this partition can hold was created.
    pub fn ends_at(&self) -> Option<DateTime<Utc>> {
        self.to.map(id_time)
    }
}

/// The millisecond a UUIDv7 was made.
pub fn id_time(id: Uuid) -> DateTime<Utc> {
    let ms = u64::from_be_bytes({
        let mut b = [0u8; 8];
        b[2..].copy_from_slice(&id.as_bytes()[..6]);
        b
    });
    Utc.timestamp_millis_opt(i64::try_from(ms).unwrap_or(i64::MAX))
        .single()
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// The partitions of `jobs`, oldest first, DEFAULT last.
///
/// # Errors
/// PostgreSQL unreachable.
pub async fn list(db: impl PgExecutor<'_>) -> Result<Vec<Partition>, RepoError> {
    let rows = sqlx::query!(
        r#"SELECT c.relname::text AS "name!", pg_get_expr(c.relpartbound, c.oid) AS "bound!"
           FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
           WHERE i.inhparent = 'jobs'::regclass"#
    )
    .fetch_all(db)
    .await?;
    let mut partitions: Vec<Partition> = rows
        .into_iter()
        .filter_map(|r| {
            let suffix = r.name.strip_prefix("jobs")?;
            let (from, to) = parse_bound(&r.bound)?;
            Some(Partition {
                executions: format!("job_executions{suffix}"),
                jobs: r.name,
                from,
                to,
            })
        })
        .collect();
    partitions.sort_by_key(|p| (p.to.is_none(), p.to));
    Ok(partitions)
}

/// `FOR VALUES FROM ('…') TO ('…')`, `FROM (MINVALUE) TO ('…')` or `DEFAULT`.
fn parse_bound(bound: &str) -> Option<(Option<Uuid>, Option<Uuid>)> {
    if bound == "DEFAULT" {
        return Some((None, None));
    }
    let quoted: Vec<&str> = bound.split('\'').skip(1).step_by(2).collect();
    let to = Uuid::parse_str(quoted.last()?).ok()?;
    let from = match quoted.len() {
        2 => Some(Uuid::parse_str(quoted[0]).ok()?),
        _ => None,
    };
    Some((from, Some(to)))
}

/// Makes the day partitions from `first` to `last` (UTC days) that do not exist yet;
/// returns how many it made. Days the DEFAULT partition already holds ids of are left
/// out (their jobs stay in DEFAULT).
///
/// # Errors
/// PostgreSQL unreachable.
pub async fn create_days(
    db: impl PgExecutor<'_>,
    first: NaiveDate,
    last: NaiveDate,
) -> Result<i32, RepoError> {
    let made = sqlx::query_scalar!(
        r#"SELECT courier_create_partitions($1, $2) AS "made!""#,
        first,
        last
    )
    .fetch_one(db)
    .await?;
    Ok(made)
}

/// What is past its retention: succeeded jobs finished before `succeeded_before`, dead
/// and cancelled ones before `dead_before`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cutoff {
    pub succeeded_before: DateTime<Utc>,
    pub dead_before: DateTime<Utc>,
}

/// When a finished job is past its retention: succeeded ones finished before `$1`, dead
/// and cancelled ones before `$2`.
const EXPIRED: &str = "(finished_at IS NOT NULL AND ((state = 'succeeded' AND finished_at < $1)
                        OR (state IN ('dead', 'cancelled') AND finished_at < $2)))";

/// How many jobs of `p` are not past their retention (live, or finished too recently),
/// counted up to `limit` of each kind. Each count reads one partial index.
///
/// # Errors
/// PostgreSQL unreachable.
pub async fn survivors(
    db: impl PgExecutor<'_>,
    p: &Partition,
    cut: Cutoff,
    limit: i64,
) -> Result<i64, RepoError> {
    let t = ident(&p.jobs);
    let sql = format!(
        "SELECT (SELECT count(*) FROM (SELECT 1 FROM {t}
                   WHERE job_is_live(state) LIMIT $3) live)
              + (SELECT count(*) FROM (SELECT 1 FROM {t}
                   WHERE finished_at IS NOT NULL AND finished_at >= $1 AND state = 'succeeded' LIMIT $3) ok)
              + (SELECT count(*) FROM (SELECT 1 FROM {t}
                   WHERE state IN ('dead', 'cancelled') AND finished_at >= $2 LIMIT $3) failed)"
    );
    let n: i64 = sqlx::query_scalar(audited(sql))
        .bind(cut.succeeded_before)
        .bind(cut.dead_before)
        .bind(limit)
        .fetch_one(db)
        .await?;
    Ok(n)
}

/// Whether `p` holds any job past its retention.
///
/// # Errors
/// PostgreSQL unreachable.
pub async fn has_expired(
    db: impl PgExecutor<'_>,
    p: &Partition,
    cut: Cutoff,
) -> Result<bool, RepoError> {
    let sql = format!(
        "SELECT EXISTS (SELECT 1 FROM {} WHERE {EXPIRED})",
        ident(&p.jobs)
    );
    let any: bool = sqlx::query_scalar(audited(sql))
        .bind(cut.succeeded_before)
        .bind(cut.dead_before)
        .fetch_one(db)
        .await?;
    Ok(any)
}

/// What became of a day retention tried to remove at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removal {
    /// Done.
    Done,
    /// Something in it is not past its retention any more (a job retried meanwhile).
    Kept,
    /// The lock on the tables was not had within a second ([`SET_LOCK_TIMEOUT`]); the next sweep tries
    /// again.
    Busy,
}

/// Drops `p` and its executions (and the idempotency keys of its jobs) if nothing in it
/// is short of its retention, checked again under the lock that dropping takes.
///
/// Dropping a partition locks its parent table for a moment; both parents are locked
/// first, executions then jobs as every other writer does, so that neither lock is taken
/// while the other is held by someone waiting for it.
///
/// # Errors
/// PostgreSQL unreachable.
pub async fn drop_expired(
    conn: &mut PgConnection,
    p: &Partition,
    cut: Cutoff,
) -> Result<Removal, RepoError> {
    let mut tx = sqlx::Connection::begin(&mut *conn).await?;
    sqlx::query(SET_LOCK_TIMEOUT).execute(&mut *tx).await?;
    if !locked(
        sqlx::query("LOCK TABLE job_executions, jobs IN ACCESS EXCLUSIVE MODE")
            .execute(&mut *tx)
            .await,
    )? {
        return Ok(Removal::Busy);
    }
    if survivors(&mut *tx, p, cut, 1).await? > 0 {
        return Ok(Removal::Kept);
    }
    forget_keys(&mut tx, p, None).await?;
    sqlx::query(audited(format!(
        "DROP TABLE {}, {}",
        ident(&p.jobs),
        ident(&p.executions)
    )))
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Removal::Done)
}

/// Empties `p` of what is past its retention by copying the rest (at most
/// [`COMPACT_MAX`] jobs, with their executions) aside, truncating the partition and
/// putting the rest back: a day with a few dead jobs kept longer is emptied at once
/// instead of row by row. Only this partition is locked, not its parent.
///
/// # Errors
/// PostgreSQL unreachable.
pub async fn compact(
    conn: &mut PgConnection,
    p: &Partition,
    cut: Cutoff,
) -> Result<Removal, RepoError> {
    let (jobs, executions) = (ident(&p.jobs), ident(&p.executions));
    let mut tx = sqlx::Connection::begin(&mut *conn).await?;
    sqlx::query(SET_LOCK_TIMEOUT).execute(&mut *tx).await?;
    if !locked(
        sqlx::query(audited(format!(
            "LOCK TABLE {executions}, {jobs} IN ACCESS EXCLUSIVE MODE"
        )))
        .execute(&mut *tx)
        .await,
    )? {
        return Ok(Removal::Busy);
    }
    if survivors(&mut *tx, p, cut, COMPACT_MAX + 1).await? > COMPACT_MAX {
        return Ok(Removal::Kept);
    }
    sqlx::query(audited(format!(
        "CREATE TEMPORARY TABLE courier_kept_jobs ON COMMIT DROP AS
         SELECT * FROM {jobs} WHERE NOT {EXPIRED}"
    )))
    .bind(cut.succeeded_before)
    .bind(cut.dead_before)
    .execute(&mut *tx)
    .await?;
    sqlx::query("ANALYZE courier_kept_jobs")
        .execute(&mut *tx)
        .await?;
    sqlx::query(audited(format!(
        "CREATE TEMPORARY TABLE courier_kept_executions ON COMMIT DROP AS
         SELECT e.* FROM courier_kept_jobs k JOIN {executions} e ON e.job_id = k.id"
    )))
    .execute(&mut *tx)
    .await?;
    forget_keys(&mut tx, p, Some("courier_kept_jobs")).await?;
    for sql in [
        format!("TRUNCATE {jobs}, {executions}"),
        format!("INSERT INTO {jobs} SELECT * FROM courier_kept_jobs"),
        format!("INSERT INTO {executions} SELECT * FROM courier_kept_executions"),
    ] {
        sqlx::query(audited(sql)).execute(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(Removal::Done)
}

/// Deletes up to `limit` jobs of `p` past their retention, with their executions and
/// idempotency keys; returns how many.
///
/// # Errors
/// PostgreSQL unreachable.
pub async fn delete_expired_in(
    db: impl PgExecutor<'_>,
    p: &Partition,
    cut: Cutoff,
    limit: i64,
) -> Result<u64, RepoError> {
    let (jobs, executions) = (ident(&p.jobs), ident(&p.executions));
    let sql = format!(
        "WITH gone AS (
             DELETE FROM {jobs} WHERE id IN (
                 SELECT id FROM {jobs} WHERE {EXPIRED} LIMIT $3 FOR UPDATE SKIP LOCKED)
             RETURNING id
         ), executions AS (
             DELETE FROM {executions} WHERE job_id IN (SELECT id FROM gone)
         ), keys AS (
             DELETE FROM idempotency_keys WHERE job_id IN (SELECT id FROM gone)
         )
         SELECT count(*) FROM gone"
    );
    let n: i64 = sqlx::query_scalar(audited(sql))
        .bind(cut.succeeded_before)
        .bind(cut.dead_before)
        .bind(limit)
        .fetch_one(db)
        .await?;
    Ok(n as u64)
}

/// Deletes the idempotency keys of `p`'s jobs, but those of the jobs in `kept`.
async fn forget_keys(
    tx: &mut PgConnection,
    p: &Partition,
    kept: Option<&str>,
) -> Result<(), RepoError> {
    let keep = kept.map_or(String::new(), |t| {
        format!(" AND NOT EXISTS (SELECT 1 FROM {t} j WHERE j.id = k.job_id)")
    });
    sqlx::query(audited(format!(
        "DELETE FROM idempotency_keys k
         WHERE ($1::uuid IS NULL OR k.job_id >= $1) AND k.job_id < $2{keep}"
    )))
    .bind(p.from)
    .bind(p.to)
    .execute(tx)
    .await?;
    Ok(())
}

/// `Ok(false)` when PostgreSQL gave up waiting for a lock (SQLSTATE 55P03) or broke a
/// deadlock (40P01) by cancelling this statement.
fn locked(result: Result<sqlx::postgres::PgQueryResult, sqlx::Error>) -> Result<bool, RepoError> {
    match result {
        Ok(_) => Ok(true),
        Err(sqlx::Error::Database(e)) if e.code().is_some_and(|c| c == "55P03" || c == "40P01") => {
            Ok(false)
        }
        Err(e) => Err(e.into()),
    }
}

/// SQL made here with [`ident`]'s names and constant text, values bound: audited.
fn audited(sql: String) -> sqlx::AssertSqlSafe<String> {
    sqlx::AssertSqlSafe(sql)
}

/// A partition's name as an SQL identifier. Names come from the catalog and are made
/// by [`create_days`] or the migration, so they are plain; quoting keeps them so.
fn ident(name: &str) -> String {
    debug_assert!(
        name.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    );
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_are_read_back() {
        let a = "01a22499-f800-0000-0000-000000000000";
        let b = "01a229c0-5400-0000-0000-000000000000";
        assert_eq!(
            parse_bound(&format!("FOR VALUES FROM ('{a}') TO ('{b}')")),
            Some((Some(a.parse().unwrap()), Some(b.parse().unwrap())))
        );
        assert_eq!(
            parse_bound(&format!("FOR VALUES FROM (MINVALUE) TO ('{b}')")),
            Some((None, Some(b.parse().unwrap())))
        );
        assert_eq!(parse_bound("DEFAULT"), Some((None, None)));
        assert_eq!(
            parse_bound("FOR VALUES FROM (MINVALUE) TO (MAXVALUE)"),
            None
        );
    }

    #[test]
    fn an_id_tells_its_time() {
        let day: DateTime<Utc> = "2026-11-29T00:00:00Z".parse().unwrap();
        assert_eq!(
            id_time("01a22499-f800-0000-0000-000000000000".parse().unwrap()),
            day
        );
        let now = Utc::now();
        let id = Uuid::now_v7();
        assert!((id_time(id) - now).num_seconds().abs() < 5);
    }
}
