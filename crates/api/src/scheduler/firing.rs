//! Turning decided occurrences into jobs and runs, inside the caller's transaction: each
//! fired occurrence becomes a job accepted as `POST /v1/jobs` accepts one (`stages::accept`), with the idempotency key `schedule:{id}:{occurrence}`, so an
//! occurrence makes exactly one job however many schedulers decide it; each occurrence
//! gets its run. The scheduler, trigger and backfill all fire through here.

use chrono::{DateTime, SecondsFormat, Utc};
use courier_core::{
    crypto::SecretBox,
    domain::{JobId, NewJob, Occurrence, QueueName},
    queue::Dispatch,
    repo::{
        self, Idempotency, OutboxId, RepoError,
        schedules::{NewRun, RunKind, RunOutcome},
    },
    schedule::{JobTemplate, ScheduleDef, SkipReason},
    stages::accept,
};
use sqlx::PgConnection;
use uuid::Uuid;

/// Why an occurrence could not be made into a job.
#[derive(Debug, thiserror::Error)]
pub enum FiringError {
    #[error(transparent)]
    Repo(#[from] RepoError),
    #[error("schedule {schedule}: secret header {header} of its job does not open: {reason}")]
    Sealed {
        schedule: String,
        header: String,
        reason: String,
    },
}

enum Pending {
    Fired(usize),
    Buffered,
    Skipped(SkipReason),
}

struct PendingRun {
    schedule: Uuid,
    /// The queue of the schedule's jobs (for metrics).
    queue: QueueName,
    occurrence: DateTime<Utc>,
    kind: RunKind,
    outcome: Pending,
}

/// The jobs and runs of one transaction.
pub struct Firing<'a> {
    secrets: &'a SecretBox,
    now: DateTime<Utc>,
    jobs: Vec<NewJob>,
    keys: Vec<Option<Idempotency>>,
    runs: Vec<PendingRun>,
}

/// What a committed firing made.
pub struct Fired {
    /// Each fired occurrence's job, by the index [`Firing::fire`] returned (the job an
    /// earlier firing of the same occurrence made, when there was one).
    pub job_ids: Vec<JobId>,
    /// The jobs this firing inserted, for Redis after the commit.
    pub dispatch: Vec<Dispatch>,
    pub outbox: OutboxId,
    /// Each occurrence decided, for metrics once committed: its queue, and for one that
    /// made a job, how late (seconds from its time to the job's creation).
    occurrences: Vec<(QueueName, Option<Option<f64>>)>,
}

impl Fired {
    /// Counts the committed occurrences in `courier_schedule_occurrences_total` and their
    /// lateness in `courier_schedule_lateness_seconds`.
    pub fn record_metrics(&self) {
        for (queue, fired) in &self.occurrences {
            match fired {
                Some(late) => courier_core::metrics::occurrence(queue.as_str(), true, *late),
                None => courier_core::metrics::occurrence(queue.as_str(), false, None),
            }
        }
    }
}

impl<'a> Firing<'a> {
    pub fn new(secrets: &'a SecretBox, now: DateTime<Utc>) -> Self {
        Self {
            secrets,
            now,
            jobs: Vec::new(),
            keys: Vec::new(),
            runs: Vec::new(),
        }
    }

    /// The idempotency key of an occurrence.
    pub fn key(schedule: Uuid, at: DateTime<Utc>, kind: RunKind) -> String {
        let at = at.to_rfc3339_opts(SecondsFormat::Micros, true);
        match kind {
            RunKind::Trigger => format!("schedule:{schedule}:trigger:{at}"),
            RunKind::Calendar | RunKind::Backfill => format!("schedule:{schedule}:{at}"),
        }
    }

    /// Makes occurrence `at` of the schedule `id` (defined by `def`) a job; returns its
    /// index. The job starts at the occurrence plus its jitter (a trigger's at once).
    ///
    /// # Errors
    /// A secret header of the template that does not open (a key rotated away).
    pub fn fire(
        &mut self,
        id: Uuid,
        def: &ScheduleDef,
        at: DateTime<Utc>,
        kind: RunKind,
    ) -> Result<usize, FiringError> {
        let job_id = JobId::new();
        let JobTemplate {
            queue,
            spec,
            labels,
        } = def.job.clone();
        let mut spec = spec;
        spec.reseal(
            self.secrets,
            &JobTemplate::secrets_context(id),
            &job_id.to_string(),
        )
        .map_err(|(header, e)| FiringError::Sealed {
            schedule: def.name.to_string(),
            header,
            reason: e.to_string(),
        })?;
        spec.occurrence = Some(Occurrence {
            schedule: def.name.clone(),
            at,
        });
        let run_at = match kind {
            RunKind::Trigger => self.now,
            RunKind::Calendar | RunKind::Backfill => at + def.jitter_for(id, at),
        };
        spec.note_due(run_at, self.now);
        let key = Self::key(id, at, kind);
        self.keys.push(Some(Idempotency {
            request_hash: self.secrets.fingerprint(key.as_bytes()),
            key,
        }));
        self.jobs.push(NewJob {
            id: job_id,
            queue,
            spec,
            labels,
            run_at,
            callback_of: None,
        });
        let index = self.jobs.len() - 1;
        self.runs.push(PendingRun {
            schedule: id,
            queue: def.job.queue.clone(),
            occurrence: at,
            kind,
            outcome: Pending::Fired(index),
        });
        Ok(index)
    }

    /// Records occurrence `at` as waiting for the previous job (`buffer_one`).
    pub fn buffer(&mut self, id: Uuid, queue: &QueueName, at: DateTime<Utc>) {
        self.runs.push(PendingRun {
            schedule: id,
            queue: queue.clone(),
            occurrence: at,
            kind: RunKind::Calendar,
            outcome: Pending::Buffered,
        });
    }

    /// Records occurrence `at` as skipped, and why.
    pub fn skip(
        &mut self,
        id: Uuid,
        queue: &QueueName,
        at: DateTime<Utc>,
        kind: RunKind,
        reason: SkipReason,
    ) {
        self.runs.push(PendingRun {
            schedule: id,
            queue: queue.clone(),
            occurrence: at,
            kind,
            outcome: Pending::Skipped(reason),
        });
    }

    /// Whether nothing was decided.
    pub fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }

    /// Inserts the jobs (with their dispatch outbox entry) and the runs, in `tx`.
    ///
    /// # Errors
    /// PostgreSQL unreachable or refusing.
    pub async fn commit(self, tx: &mut PgConnection) -> Result<Fired, RepoError> {
        let accepted = accept(&mut *tx, &self.jobs, &self.keys, self.now).await?;
        // An occurrence fired before (a backfill racing the calendar) keeps its first job.
        let taken: Vec<String> = self
            .keys
            .iter()
            .enumerate()
            .filter(|(i, _)| !accepted.created(*i))
            .filter_map(|(_, key)| key.as_ref().map(|k| k.key.clone()))
            .collect();
        let earlier = if taken.is_empty() {
            Vec::new()
        } else {
            repo::schedules::jobs_by_keys(&mut *tx, &taken).await?
        };
        let job_ids: Vec<JobId> = self
            .jobs
            .iter()
            .zip(&self.keys)
            .map(|(job, key)| {
                key.as_ref()
                    .and_then(|k| earlier.iter().find(|(held, _)| *held == k.key))
                    .map_or(job.id, |(_, id)| *id)
            })
            .collect();
        let runs: Vec<NewRun> = self
            .runs
            .iter()
            .map(|run| NewRun {
                schedule: run.schedule,
                occurrence: run.occurrence,
                kind: run.kind,
                outcome: match run.outcome {
                    Pending::Fired(i) => RunOutcome::Fired(job_ids[i]),
                    Pending::Buffered => RunOutcome::Buffered,
                    Pending::Skipped(reason) => RunOutcome::Skipped(reason),
                },
                decided_at: self.now,
            })
            .collect();
        repo::schedules::record_runs(&mut *tx, &runs).await?;
        let occurrences = self
            .runs
            .iter()
            .filter_map(|run| match run.outcome {
                Pending::Fired(i) => Some((
                    run.queue.clone(),
                    accepted
                        .created(i)
                        .then(|| Some((self.now - run.occurrence).as_seconds_f64())),
                ))
                .filter(|(_, late)| late.is_some()),
                Pending::Buffered => None,
                Pending::Skipped(_) => Some((run.queue.clone(), None)),
            })
            .collect();
        let outbox = accepted.outbox;
        Ok(Fired {
            job_ids,
            dispatch: accepted.into_dispatches(),
            outbox,
            occurrences,
        })
    }
}
