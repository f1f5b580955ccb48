//! What the run did: jobs accepted and finished, lost, duplicated deliveries with the
//! reason for each, faults and recovery times, and the longest a job sat `running`.

use std::{
    collections::{BTreeMap, HashMap},
    fmt,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use crate::{
    Config, System, calls_per_job,
    faults::{Fault, Injected},
};

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
    /// The repeated calls by the fault each was in flight at.
    pub duplicate_faults: BTreeMap<String, usize>,
    /// Repeated calls that were in flight at no fault: each would be a bug.
    pub unexplained_duplicates: usize,
    /// Why jobs were delivered more than once, from their records, with counts.
    pub duplicate_reasons: BTreeMap<String, usize>,
    pub faults: Vec<Injected>,
    /// The longest a job stayed `running` in PostgreSQL beyond its lease and its call.
    pub longest_running_past_lease: Duration,
    pub drain_time: Option<Duration>,
    /// From the end of the last fault (or of the submissions, if later) until every job
    /// was terminal; `None` if some never were.
    pub settled_after_last_fault: Option<Duration>,
    pub workers: Workers,
    pub wall_time: Duration,
}

/// The worker processes at the end of the run.
#[derive(Debug, Default, Clone, Copy)]
pub struct Workers {
    /// Worker processes the harness last started (after each kill, a new one).
    pub started: usize,
    /// Of those, the ones still running at the end.
    pub alive: usize,
    /// Of those alive, the ones with execution records: each ran jobs.
    pub ran_jobs: usize,
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
    let (duplicate_faults, duplicate_reasons) =
        explain(system, &duplicated, &calls, &faults, started).await?;
    let unexplained_duplicates = duplicate_faults.get(NO_FAULT).copied().unwrap_or(0);
    let longest_call = config.call_ms.iter().copied().max().unwrap_or(0);
    let running_limit = Duration::from_millis(config.lease_ms + longest_call);
    Ok(Report {
        config: config.clone(),
        accepted: accepted.len(),
        terminal,
        succeeded,
        lost: accepted.len() - terminal,
        never_called,
        duplicate_deliveries,
        duplicate_faults,
        unexplained_duplicates,
        duplicate_reasons,
        faults,
        longest_running_past_lease: LONGEST_RUNNING
            .lock()
            .unwrap()
            .saturating_sub(running_limit),
        drain_time,
        settled_after_last_fault: None,
        workers: Workers::default(),
        wall_time: started.elapsed(),
    })
}

/// The key of repeated calls that no fault explains.
const NO_FAULT: &str = "**none: no fault near the call**";

/// How long after a call's answer its attempt may still be unsettled (its end on the
/// way into Redis and its record into PostgreSQL): a fault in this time hits the call as
/// surely as one during it.
const SETTLING: Duration = Duration::from_secs(2);

/// The fault each repeated call was in flight at: one that began while the call ran or
/// within [`SETTLING`] of its answer (with PostgreSQL paused, until the pause ended:
/// the record waited in the worker's memory). `None` when no fault was near.
fn fault_at_call(
    faults: &[Injected],
    started: Instant,
    call: &courier_testkit::Received,
) -> Option<Fault> {
    let begun = call.at.saturating_duration_since(started);
    let ms: u64 = call
        .path
        .rsplit('/')
        .next()
        .and_then(|ms| ms.parse().ok())
        .unwrap_or(0);
    let mut settled = begun + Duration::from_millis(ms) + SETTLING;
    for pause in faults.iter().filter(|f| f.fault == Fault::PgPause) {
        if pause.at <= settled && settled <= pause.ended + SETTLING {
            settled = settled.max(pause.ended + SETTLING);
        }
    }
    faults
        .iter()
        .find(|f| f.at <= settled && f.ended >= begun)
        .map(|f| f.fault)
}

/// Why each duplicated job ran more than once: the fault its earlier call was in flight
/// at, and what its execution records show of how.
async fn explain(
    system: &System,
    duplicated: &[&String],
    calls: &HashMap<String, usize>,
    faults: &[Injected],
    started: Instant,
) -> anyhow::Result<(BTreeMap<String, usize>, BTreeMap<String, usize>)> {
    let mut received: HashMap<String, Vec<courier_testkit::Received>> = HashMap::new();
    for call in system.target.received() {
        if let Some(id) = call.job_id() {
            received.entry(id).or_default().push(call);
        }
    }
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
    let mut at_fault = BTreeMap::new();
    let mut examples = 0;
    let mut unexplained = 0;
    for id in duplicated {
        if by_job.get(id.as_str()).map_or(0, Vec::len) < calls[*id] && examples < 5 {
            examples += 1;
            print_example(system, id).await;
        }
        let history = by_job.get(id.as_str()).cloned().unwrap_or_default();
        let mut job_calls = received.remove(id.as_str()).unwrap_or_default();
        job_calls.sort_by_key(|c| c.at);
        // Every call but the last was repeated: say which fault each was in flight at.
        for call in &job_calls[..job_calls.len().saturating_sub(1)] {
            let fault = match fault_at_call(faults, started, call) {
                Some(fault) => fault.name().to_owned(),
                None => {
                    if unexplained < 5 {
                        unexplained += 1;
                        let at = |c: &courier_testkit::Received| {
                            format!(
                                "{:.3} s ({})",
                                c.at.saturating_duration_since(started).as_secs_f64(),
                                c.path
                            )
                        };
                        let calls: Vec<String> = job_calls.iter().map(at).collect();
                        let near: Vec<String> = faults
                            .iter()
                            .map(|f| {
                                format!(
                                    "{} {:.3}-{:.3} s",
                                    f.fault.name(),
                                    f.at.as_secs_f64(),
                                    f.ended.as_secs_f64()
                                )
                            })
                            .collect();
                        eprintln!(
                            "job {id}: a repeated call near no fault; calls at {calls:?}; faults {near:?}"
                        );
                        print_example(system, id).await;
                    }
                    NO_FAULT.to_owned()
                }
            };
            *at_fault.entry(fault).or_insert(0) += 1;
        }
        let extra = calls[*id] - 1;
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
    Ok((at_fault, reasons))
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
        let settled = self
            .settled_after_last_fault
            .map_or("never".to_owned(), |d| format!("{:.2} s", d.as_secs_f64()));
        writeln!(
            f,
            "| every job terminal, after the last fault | {settled} |"
        )?;
        let w = &self.workers;
        writeln!(
            f,
            "| worker processes alive at the end (default metrics port, one host) | {} of {}, {} of them ran jobs |",
            w.alive, w.started, w.ran_jobs
        )?;
        let inside: Vec<String> = self
            .faults
            .iter()
            .filter_map(|f| f.during_reconcile)
            .map(|inside| if inside { "yes" } else { "no (no claim seen)" }.to_owned())
            .collect();
        if !inside.is_empty() {
            writeln!(
                f,
                "| wipe landed while a reconciliation ran | {} |",
                inside.join(", ")
            )?;
        }
        writeln!(f, "| wall time | {:.1} s |", self.wall_time.as_secs_f64())?;
        writeln!(
            f,
            "| setup | {} workers, lease {} ms, calls of {:?} ms, {}% delayed 1-20 s, seed {} |",
            c.workers, c.lease_ms, c.call_ms, c.delayed_pct, c.seed
        )?;
        if !self.duplicate_faults.is_empty() {
            writeln!(
                f,
                "\n| repeated calls, by the fault each was in flight at | count |\n|---|---|"
            )?;
            for (fault, n) in &self.duplicate_faults {
                writeln!(f, "| {fault} | {n} |")?;
            }
        }
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
