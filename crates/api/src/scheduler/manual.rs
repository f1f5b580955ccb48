//! Occurrences asked for outside the calendar: a trigger (one now) and a backfill (the
//! calendar's occurrences in a past range). Both fire through the same [`Firing`] as
//! the calendar, in a transaction holding the schedule's row.

use chrono::{DateTime, Utc};
use courier_core::{
    domain::JobId,
    repo::schedules::{self as store, Advance, RunKind, ScheduleRow},
    schedule::{Overlap, ScheduleDef, SkipReason},
};

use super::{Firing, Scheduler, SchedulerError};

/// What a trigger did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Triggered {
    Fired(JobId),
    /// Waits for the previous job to finish (`buffer_one`).
    Buffered,
    Skipped(SkipReason),
}

/// One occurrence of a backfill.
#[derive(Debug, Clone, Copy)]
pub struct Backfilled {
    pub occurrence: DateTime<Utc>,
    pub job: JobId,
    /// It had fired before; its job is that earlier one.
    pub already: bool,
}

impl Scheduler {
    /// Fires the schedule now, outside its calendar, under its overlap policy.
    ///
    /// # Errors
    /// PostgreSQL (or, to cancel the previous job, Redis) unreachable.
    /// `None` when the schedule was deleted meanwhile.
    pub async fn trigger(
        &self,
        row: &ScheduleRow,
        def: &ScheduleDef,
    ) -> Result<Option<(DateTime<Utc>, Triggered)>, SchedulerError> {
        let now = courier_core::domain::to_micros(self.clock.now());
        let mut tx = self.db.begin().await?;
        let Some(row) = store::lock_schedule(&mut *tx, &row.name).await? else {
            return Ok(None);
        };
        let previous = match row.last_job_id {
            Some(id) => courier_core::repo::get_job(&mut *tx, id.into()).await?,
            None => None,
        };
        let live = previous
            .as_ref()
            .is_some_and(|job| !job.state.is_terminal());
        let mut firing = Firing::new(&self.secrets, now);
        let mut advance = Advance {
            id: row.id,
            next_at: row.next_at,
            last_job_id: row.last_job_id,
            buffered_at: row.buffered_at,
        };
        let outcome = match def.overlap {
            Overlap::Skip if live => {
                firing.skip(
                    row.id,
                    &def.job.queue,
                    now,
                    RunKind::Trigger,
                    SkipReason::Overlap,
                );
                Triggered::Skipped(SkipReason::Overlap)
            }
            Overlap::BufferOne if live && row.buffered_at.is_some() => {
                firing.skip(
                    row.id,
                    &def.job.queue,
                    now,
                    RunKind::Trigger,
                    SkipReason::Overlap,
                );
                Triggered::Skipped(SkipReason::Overlap)
            }
            Overlap::BufferOne if live => {
                firing.buffer(row.id, &def.job.queue, now);
                advance.buffered_at = Some(now);
                Triggered::Buffered
            }
            overlap => {
                if overlap == Overlap::CancelPrevious
                    && live
                    && let Some(job) = &previous
                {
                    self.cancel_previous(&mut tx, job.id.as_uuid(), job.queue.as_str())
                        .await?;
                }
                firing.fire(row.id, def, now, RunKind::Trigger)?;
                Triggered::Fired(JobId::default())
            }
        };
        let fired = firing.commit(&mut tx).await?;
        let outcome = match outcome {
            Triggered::Fired(_) => {
                advance.last_job_id = Some(fired.job_ids[0].as_uuid());
                Triggered::Fired(fired.job_ids[0])
            }
            other => other,
        };
        store::advance(&mut *tx, &[advance], now).await?;
        tx.commit().await?;
        fired.record_metrics();
        self.dispatch(fired).await;
        Ok(Some((now, outcome)))
    }

    /// Fires the calendar's occurrences from `from` to `to` (both included), oldest
    /// first; an occurrence that fired before keeps its job. The overlap policy does not
    /// apply: a backfill asks for each of them.
    ///
    /// # Errors
    /// PostgreSQL unreachable.
    pub async fn backfill(
        &self,
        row: &ScheduleRow,
        def: &ScheduleDef,
        occurrences: &[DateTime<Utc>],
    ) -> Result<Vec<Backfilled>, SchedulerError> {
        let now = courier_core::domain::to_micros(self.clock.now());
        let mut tx = self.db.begin().await?;
        let before = store::fired_among(&mut *tx, row.id, occurrences).await?;
        let mut firing = Firing::new(&self.secrets, now);
        let mut indexes = Vec::with_capacity(occurrences.len());
        for at in occurrences {
            match before.iter().find(|(t, _)| t == at) {
                Some((_, job)) => indexes.push(Err((*job).into())),
                None => indexes.push(Ok(firing.fire(row.id, def, *at, RunKind::Backfill)?)),
            }
        }
        let fired = firing.commit(&mut tx).await?;
        tx.commit().await?;
        fired.record_metrics();
        let result = occurrences
            .iter()
            .zip(indexes)
            .map(|(at, index)| match index {
                Ok(i) => Backfilled {
                    occurrence: *at,
                    job: fired.job_ids[i],
                    already: false,
                },
                Err(job) => Backfilled {
                    occurrence: *at,
                    job,
                    already: true,
                },
            })
            .collect();
        self.dispatch(fired).await;
        Ok(result)
    }
}
