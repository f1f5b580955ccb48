//! What the run did: jobs accepted and finished, lost, duplicated deliveries with the
//! reason for each, faults and recovery times, and the longest a job sat `running`.

use std::{
    collections::{BTreeMap, HashMap},
    fmt,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use crate::{Config, System, calls_per_job, faults::Injected};

/// The outcome of a chaos run.
#[derive(Debug)]
pub struct Report {
    pub config: Config,
    pub accepted: usize,
    pub terminal: usize,
    pub succeeded: usize,
    pub lost: usize,
    /// Accepted jobs the target never received.
    pub never_called: usize,
    pub duplicate_deliveries: usize,
    /// Why jobs were delivered more than once, with counts.
    pub duplicate_reasons: BTreeMap<String, usize>,
    pub faults: Vec<Injected>,
    /// The longest a job stayed `running` in PostgreSQL beyond its lease and its call.
    pub longest_running_past_lease: Duration,
    pub drain_time: Option<Duration>,
    pub wall_time: Duration,
}

static LONGEST_RUNNING: Mutex<Duration> = Mutex::new(Duration::ZERO);

/// Samples, until aborted, how long the oldest `running` job has been running.
pub async fn watch_running(system: Arc<System>, _started: Instant) {
    loop {
        let oldest: Result<Option<f64>, _> = tokio::time::timeout(
            Duration::from_secs(1),
            sqlx::query_scalar(
                "SELECT EXTRACT(EPOCH FROM max(now() - updated_at))::float8 FROM jobs WHERE state = 'running'",
            )
            .fetch_one(&system.env.db),
        )
        .await
        .unwrap_or(Ok(None));
        if let Ok(Some(secs)) = oldest {
            let mut longest = LONGEST_RUNNING.lock().unwrap();
            *longest = (*longest).max(Duration::from_secs_f64(secs.max(0.0)));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

pub(crate) async fn build(
    system: &System,
    config: &Config,
    accepted: &[String],
    faults: Vec<Injected>,
    drain_time: Option<Duration>,
    started: Instant,
) -> anyhow::Result<Report> {
    let ids: Vec<uuid::Uuid> = accepted.iter().filter_map(|id| id.parse().ok()).collect();
    let states: Vec<(String, String)> =
        sqlx::query_as("SELECT id::text, state::text FROM jobs WHERE id = ANY($1)")
            .bind(&ids)
            .fetch_all(&system.env.db)
            .await?;
    let terminal = states
        .iter()
        .filter(|(_, s)| matches!(s.as_str(), "succeeded" | "dead" | "cancelled"))
        .count();
    let succeeded = states.iter().filter(|(_, s)| s == "succeeded").count();
    let calls = calls_per_job(&system.target);
    let never_called = accepted
        .iter()
        .filter(|id| !calls.contains_key(*id))
        .count();
    let duplicated: Vec<&String> = calls
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(id, _)| id)
        .collect();
    let duplicate_deliveries = calls.values().map(|n| n.saturating_sub(1)).sum();
    let duplicate_reasons = explain(system, &duplicated, &calls).await?;
    let running_limit = Duration::from_millis(config.lease_ms + config.call_ms);
    Ok(Report {
        config: config.clone(),
        accepted: accepted.len(),
        terminal,
        succeeded,
        lost: accepted.len() - terminal,
        never_called,
        duplicate_deliveries,
        duplicate_reasons,
        faults,
        longest_running_past_lease: LONGEST_RUNNING
            .lock()
            .unwrap()
            .saturating_sub(running_limit),
        drain_time,
        wall_time: started.elapsed(),
    })
}

/// Why each duplicated job ran more than once, from its execution records.
async fn explain(
    system: &System,
    duplicated: &[&String],
    calls: &HashMap<String, usize>,
) -> anyhow::Result<BTreeMap<String, usize>> {
    let ids: Vec<uuid::Uuid> = duplicated.iter().filter_map(|id| id.parse().ok()).collect();
    let records: Vec<(String, String, bool)> =
        sqlx::query_as("SELECT job_id::text, outcome, stale FROM job_executions WHERE job_id = ANY($1) ORDER BY started_at")
            .bind(&ids)
            .fetch_all(&system.env.db)
            .await?;
    let mut by_job: HashMap<&str, Vec<(&str, bool)>> = HashMap::new();
    for (id, outcome, stale) in &records {
        by_job
            .entry(id.as_str())
            .or_default()
            .push((outcome.as_str(), *stale));
    }
    let mut reasons = BTreeMap::new();
    let mut examples = 0;
    for id in duplicated {
        if by_job.get(id.as_str()).map_or(0, Vec::len) < calls[*id] && examples < 5 {
            examples += 1;
            print_example(system, id).await;
        }
        let extra = calls[*id] - 1;
        let history = by_job.get(id.as_str()).cloned().unwrap_or_default();
        let reason = if history.iter().any(|(o, _)| *o == "lease_expired") {
            "a worker died mid-call (kill -9); its lease expired and the job ran again".to_owned()
        } else if history.iter().any(|(_, stale)| *stale) {
            "the call's lease was lost mid-call (Redis restarted or wiped); the late result was refused as stale".to_owned()
        } else if history.len() < calls[*id] {
            "a call left no record: its worker was killed before writing it (a stale result, which only the \
             worker's memory holds, or a journal entry Redis lost too)"
                .to_owned()
        } else {
            "Redis lost the job's completion (AOF everysec) and the job ran again; both calls recorded".to_owned()
        };
        *reasons.entry(reason).or_insert(0) += extra;
    }
    Ok(reasons)
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.config;
        writeln!(f, "| figure | value |")?;
        writeln!(f, "|---|---|")?;
        writeln!(f, "| jobs accepted (2xx) | {} |", self.accepted)?;
        writeln!(
            f,
            "| jobs terminal | {} ({} succeeded) |",
            self.terminal, self.succeeded
        )?;
        writeln!(f, "| **lost** | **{}** |", self.lost)?;
        writeln!(f, "| accepted but never called | {} |", self.never_called)?;
        writeln!(
            f,
            "| duplicate deliveries | {} |",
            self.duplicate_deliveries
        )?;
        let mut counts: BTreeMap<&str, (usize, Vec<Duration>)> = BTreeMap::new();
        for injected in &self.faults {
            let entry = counts.entry(injected.fault.name()).or_default();
            entry.0 += 1;
            entry.1.extend(injected.recovery);
        }
        for (name, (n, recoveries)) in &counts {
            let worst = recoveries
                .iter()
                .max()
                .map_or("never".to_owned(), |d| format!("{:.2} s", d.as_secs_f64()));
            writeln!(
                f,
                "| faults: {name} | {n} (slowest recovery to the next call: {worst}) |"
            )?;
        }
        writeln!(
            f,
            "| longest `running` past lease + call time | {:.2} s |",
            self.longest_running_past_lease.as_secs_f64()
        )?;
        let drain = self.drain_time.map_or("did not drain".to_owned(), |d| {
            format!("{:.2} s", d.as_secs_f64())
        });
        writeln!(f, "| drain after the last submission | {drain} |")?;
        writeln!(f, "| wall time | {:.1} s |", self.wall_time.as_secs_f64())?;
        writeln!(
            f,
            "| setup | {} workers, lease {} ms, calls of {} ms, seed {} |",
            c.workers, c.lease_ms, c.call_ms, c.seed
        )?;
        if !self.duplicate_reasons.is_empty() {
            writeln!(f, "\n| duplicate deliveries by reason | count |\n|---|---|")?;
            for (reason, n) in &self.duplicate_reasons {
                writeln!(f, "| {reason} | {n} |")?;
            }
        }
        Ok(())
    }
}

/// Shows, on stderr, a job whose calls outnumber its records: when each call arrived and
/// what each record says, to tell what happened.
async fn print_example(system: &System, id: &str) {
    let uuid: uuid::Uuid = id.parse().expect("job ids are uuids");
    let rows: Vec<(i32, i64, String, bool, String, chrono::DateTime<chrono::Utc>)> = sqlx::query_as(
        "SELECT attempt, token, outcome, stale, worker, started_at FROM job_executions WHERE job_id = $1 ORDER BY started_at",
    )
    .bind(uuid)
    .fetch_all(&system.env.db)
    .await
    .unwrap_or_default();
    let arrivals: Vec<String> = system
        .target
        .received()
        .iter()
        .filter(|r| r.job_id().as_deref() == Some(id))
        .map(|r| {
            format!(
                "{} attempt {}",
                r.received_at.format("%H:%M:%S%.3f"),
                r.header("x-courier-attempt").unwrap_or_default()
            )
        })
        .collect();
    eprintln!(
        "job {id} without a record for every call:\n  calls: {arrivals:?}\n  records: {rows:?}"
    );
}
