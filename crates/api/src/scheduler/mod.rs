//! The scheduler of recurring schedules (SPEC 9), run by every API process: nothing new
//! to deploy, and any number of them may run. Each pass claims due schedules with
//! `FOR UPDATE SKIP LOCKED`, decides their occurrences (`courier_core::schedule::plan`),
//! and in the same transaction inserts the fired occurrences' jobs, every occurrence's
//! run, and the schedules' next occurrence: a scheduler killed at any point leaves either
//! all of it or none. Between passes it sleeps until the earliest next occurrence, and
//! is woken by `NOTIFY courier_schedules` when a schedule changes.

mod firing;
mod manual;

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use courier_core::{
    QueueName,
    clock::SharedClock,
    crypto::SecretBox,
    maintenance::MaintenanceError,
    queue::RedisQueue,
    repo::{
        self,
        schedules::{self as store, Advance, Claimed, RunKind},
    },
    schedule::{Due, Fate, plan},
    settings::SchedulerSettings,
    stages::{Dispatcher, record},
};
use sqlx::{PgPool, postgres::PgListener};
use tokio_util::sync::CancellationToken;

pub use firing::{Fired, Firing, FiringError};
pub use manual::{Backfilled, Triggered};

/// The channel schedule changes are announced on.
pub const CHANNEL: &str = "courier_schedules";
/// Most occurrences of one schedule decided in one pass (a long outage is decided over
/// several).
const OCCURRENCES_PER_PASS: usize = 1000;
/// How often schedules with a buffered occurrence are looked at: it fires when a job
/// finishes, which no notification announces.
const BUFFERED_POLL: Duration = Duration::from_millis(250);
/// The longest sleep, so a lost notification costs at most this.
const LONGEST_SLEEP: Duration = Duration::from_secs(30);
/// Batches decided at once by one scheduler: each claims its own schedules (`SKIP
/// LOCKED`), so while one waits for its commit and its Redis call the others go on. With
/// one at a time, 1,000 schedules due in the same second were decided 200 after 200, and
/// the last waited for the four transactions before it.
const PARALLEL_PASSES: usize = 4;

/// A scheduler pass failing.
#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    #[error(transparent)]
    Maintenance(#[from] MaintenanceError),
    #[error(transparent)]
    Firing(#[from] FiringError),
}

impl From<repo::RepoError> for SchedulerError {
    fn from(e: repo::RepoError) -> Self {
        Self::Maintenance(e.into())
    }
}

impl From<sqlx::Error> for SchedulerError {
    fn from(e: sqlx::Error) -> Self {
        Self::Maintenance(e.into())
    }
}

/// One process's scheduler.
#[derive(Clone)]
pub struct Scheduler {
    db: PgPool,
    dispatcher: Dispatcher,
    queue: RedisQueue,
    secrets: Arc<SecretBox>,
    clock: SharedClock,
    settings: SchedulerSettings,
}

impl Scheduler {
    pub fn new(
        db: PgPool,
        queue: RedisQueue,
        secrets: Arc<SecretBox>,
        clock: SharedClock,
        settings: SchedulerSettings,
    ) -> Self {
        Self {
            dispatcher: Dispatcher::new(db.clone(), queue.clone()),
            db,
            queue,
            secrets,
            clock,
            settings,
        }
    }

    /// Decides every due schedule, a batch per transaction; returns how many schedules
    /// it decided.
    ///
    /// # Errors
    /// PostgreSQL unreachable, Redis unreachable for a `cancel_previous`, or a template
    /// whose secrets do not open.
    pub async fn run_due(&self) -> Result<usize, SchedulerError> {
        let lanes = (0..PARALLEL_PASSES).map(|_| async {
            let mut decided = 0;
            loop {
                let n = self.pass().await?;
                decided += n;
                if n < self.settings.batch {
                    return Ok::<usize, SchedulerError>(decided);
                }
            }
        });
        let mut decided = 0;
        for lane in futures_util::future::join_all(lanes).await {
            decided += lane?;
        }
        Ok(decided)
    }

    /// One batch: claims, decides, inserts and advances in one transaction, then sends
    /// the new jobs to Redis.
    async fn pass(&self) -> Result<usize, SchedulerError> {
        let now = courier_core::domain::to_micros(self.clock.now());
        let mut tx = self.db.begin().await?;
        let claimed = store::claim_due(&mut *tx, now, self.settings.batch as i64).await?;
        if claimed.is_empty() {
            return Ok(0);
        }
        let grace = chrono::Duration::milliseconds(self.settings.misfire_grace_ms as i64);
        let mut firing = Firing::new(&self.secrets, now);
        // Per schedule: its id, where it stands, and the index of its last fired job.
        let mut plans: Vec<(Advance, Option<usize>)> = Vec::with_capacity(claimed.len());
        for Claimed {
            row,
            previous_live,
            previous_queue,
        } in &claimed
        {
            let def = match row.def() {
                Ok(def) => def,
                Err(e) => {
                    // Nothing can be decided for it: it stops rather than being claimed
                    // again at every pass. Replacing it (PUT) starts it again.
                    tracing::error!(error = %e, "a stored schedule is not valid here; stopping it");
                    plans.push((
                        Advance {
                            id: row.id,
                            next_at: None,
                            last_job_id: row.last_job_id,
                            buffered_at: row.buffered_at,
                        },
                        None,
                    ));
                    continue;
                }
            };
            let mut live = *previous_live;
            let mut last_fired = None;
            let mut buffered_at = row.buffered_at;
            if let Some(at) = buffered_at.filter(|_| !live) {
                last_fired = Some(firing.fire(row.id, &def, at, RunKind::Calendar)?);
                buffered_at = None;
                live = true;
            }
            let mut next_at = row.next_at;
            if let Some(due_at) = next_at.filter(|at| *at <= now) {
                let decided = plan(
                    Due {
                        def: &def,
                        next_at: due_at,
                        previous_live: live,
                        buffered: buffered_at.is_some(),
                    },
                    now,
                    grace,
                    OCCURRENCES_PER_PASS,
                );
                if decided.cancel_previous
                    && let (Some(job), Some(queue)) = (row.last_job_id, previous_queue)
                {
                    self.cancel_previous(&mut tx, job, queue).await?;
                }
                for decision in decided.decisions {
                    match decision.fate {
                        Fate::Fire => {
                            last_fired =
                                Some(firing.fire(row.id, &def, decision.at, RunKind::Calendar)?);
                        }
                        Fate::Buffer => {
                            buffered_at = Some(decision.at);
                            firing.buffer(row.id, &def.job.queue, decision.at);
                        }
                        Fate::Skip(reason) => {
                            firing.skip(
                                row.id,
                                &def.job.queue,
                                decision.at,
                                RunKind::Calendar,
                                reason,
                            );
                        }
                    }
                }
                next_at = decided.next_at;
            }
            plans.push((
                Advance {
                    id: row.id,
                    next_at,
                    last_job_id: row.last_job_id,
                    buffered_at,
                },
                last_fired,
            ));
        }
        let fired = firing.commit(&mut tx).await?;
        let advances: Vec<Advance> = plans
            .into_iter()
            .map(|(mut advance, last)| {
                if let Some(i) = last {
                    advance.last_job_id = Some(fired.job_ids[i].as_uuid());
                }
                advance
            })
            .collect();
        store::advance(&mut *tx, &advances, now).await?;
        tx.commit().await?;
        fired.record_metrics();
        self.dispatch(fired).await;
        Ok(claimed.len())
    }

    /// Cancels the previous occurrence's job (`cancel_previous`), aborting its call, as
    /// `POST /v1/jobs/{id}/cancel` does: Redis first, while the row is locked, so a
    /// failure leaves both as they were.
    async fn cancel_previous(
        &self,
        tx: &mut sqlx::PgConnection,
        job: uuid::Uuid,
        queue: &str,
    ) -> Result<(), SchedulerError> {
        let id = job.into();
        // A callback this makes is sent by the dispatcher's outbox pass.
        if record::cancel(&mut *tx, &self.secrets, id).await?.is_some()
            && let Ok(queue) = QueueName::parse(queue)
        {
            self.queue
                .cancel(&queue, id)
                .await
                .map_err(MaintenanceError::from)?;
        }
        Ok(())
    }

    /// Sends committed jobs to Redis; failure is logged (the dispatcher sends them later).
    pub async fn dispatch(&self, fired: Fired) {
        if self.dispatcher.enqueue_now(&fired.dispatch).await {
            self.dispatcher.clear_outbox(&[fired.outbox]).await;
        }
    }

    /// Runs until `stop`: a pass, then a sleep until the next occurrence is due, a
    /// schedule changes, or (with buffered occurrences) a short poll.
    pub async fn run(self, stop: CancellationToken) {
        let mut listener: Option<PgListener> = None;
        let mut failures = 0u32;
        loop {
            if listener.is_none() {
                listener = listen(&self.db).await;
            }
            let wake = match self.run_due().await {
                Ok(_) => {
                    failures = 0;
                    self.next_wake().await
                }
                Err(e) => {
                    failures += 1;
                    tracing::warn!(error = %e, "scheduler pass failed; retrying");
                    let backoff = Duration::from_millis(100 * 2u64.pow(failures.min(6)));
                    self.clock.now() + chrono::Duration::from_std(backoff).unwrap_or_default()
                }
            };
            tokio::select! {
                () = stop.cancelled() => return,
                () = self.clock.sleep_until(wake) => {}
                notified = async {
                    match listener.as_mut() {
                        Some(l) => l.recv().await.map(|_| ()),
                        None => std::future::pending().await,
                    }
                } => {
                    if notified.is_err() {
                        listener = None;
                    }
                }
            }
        }
    }

    /// When to look again.
    async fn next_wake(&self) -> DateTime<Utc> {
        let now = courier_core::domain::to_micros(self.clock.now());
        let longest = now + chrono::Duration::from_std(LONGEST_SLEEP).unwrap_or_default();
        match store::next_wake(&self.db).await {
            Ok((next, buffered)) => {
                let mut wake = next.map_or(longest, |at| at.min(longest));
                if buffered {
                    wake = wake
                        .min(now + chrono::Duration::from_std(BUFFERED_POLL).unwrap_or_default());
                }
                wake
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the next occurrence");
                now + chrono::Duration::seconds(1)
            }
        }
    }
}

/// A listener on [`CHANNEL`], or `None` (logged) while PostgreSQL is unreachable.
async fn listen(db: &PgPool) -> Option<PgListener> {
    let mut listener = match PgListener::connect_with(db).await {
        Ok(listener) => listener,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for schedule changes; polling meanwhile");
            return None;
        }
    };
    match listener.listen(CHANNEL).await {
        Ok(()) => Some(listener),
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for schedule changes; polling meanwhile");
            None
        }
    }
}
