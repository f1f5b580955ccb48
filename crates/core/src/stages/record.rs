//! Recording: attempts' ends written to PostgreSQL in batches (a worker's history, or
//! what recovery replays from the journal), and cancellations; each in the transaction
//! that makes the callback jobs the end calls for, so an end is never recorded without
//! its callback. A batch PostgreSQL refuses for good (a record that breaks a `CHECK`) is
//! written item by item, and what still cannot be written is set aside in
//! `history_rejects` with the reason, so it never holds back the rest.

use chrono::Utc;
use serde::Serialize;
use sqlx::{PgConnection, PgPool};

use super::callback::{self, Made};
use crate::{
    crypto::SecretBox,
    domain::{JobId, JobState, Token},
    repo::{self, ExecutionRecord, JobUpdate, RepoError, Started},
};

/// One batch of history.
#[derive(Debug, Default, Clone)]
pub struct HistoryBatch {
    pub started: Vec<Started>,
    pub records: Vec<ExecutionRecord>,
    pub updates: Vec<JobUpdate>,
}

impl HistoryBatch {
    pub fn is_empty(&self) -> bool {
        self.started.is_empty() && self.records.is_empty() && self.updates.is_empty()
    }

    pub fn len(&self) -> usize {
        self.started.len() + self.records.len() + self.updates.len()
    }
}

/// What writing a batch did besides writing it.
#[derive(Debug, Default)]
pub struct Written {
    /// Items PostgreSQL refused for good, set aside in `history_rejects`.
    pub rejected: usize,
    /// Callback jobs the batch's ends made, to dispatch.
    pub callbacks: Vec<Made>,
}

/// Writes `batch`, making the callback jobs of the ends that call back in the same
/// transaction; what PostgreSQL refuses for good is set aside in `history_rejects`
/// (logged, and kept there with the reason).
///
/// # Errors
/// PostgreSQL unreachable, or another error worth retrying: the caller keeps the batch
/// and tries again (replaying what was written is harmless, callbacks included).
pub async fn write_history(
    db: &PgPool,
    secrets: &SecretBox,
    batch: &HistoryBatch,
) -> Result<Written, RepoError> {
    match record_history(db, secrets, &batch.started, &batch.records, &batch.updates).await {
        Ok(made) => Ok(Written {
            rejected: 0,
            callbacks: vec![made],
        }),
        Err(e) if e.is_transient() => Err(e),
        Err(e) => {
            tracing::warn!(error = %e, items = batch.len(),
                "postgresql refused a history batch for good; writing it item by item");
            write_one_by_one(db, secrets, batch).await
        }
    }
}

async fn write_one_by_one(
    db: &PgPool,
    secrets: &SecretBox,
    batch: &HistoryBatch,
) -> Result<Written, RepoError> {
    let mut written = Written::default();
    for s in &batch.started {
        let result = record_history(db, secrets, std::slice::from_ref(s), &[], &[]).await;
        set_aside_if_refused(db, result, s.id, "start", s, &mut written).await?;
    }
    for r in &batch.records {
        let result = record_history(db, secrets, &[], std::slice::from_ref(r), &[]).await;
        set_aside_if_refused(db, result, r.job_id, "record", r, &mut written).await?;
    }
    for u in &batch.updates {
        let result = record_history(db, secrets, &[], &[], std::slice::from_ref(u)).await;
        set_aside_if_refused(db, result, u.id, "update", u, &mut written).await?;
    }
    Ok(written)
}

/// Counts `result`'s callbacks in `written`, or, when it is a permanent refusal, keeps
/// `item` in `history_rejects` and counts it there.
async fn set_aside_if_refused(
    db: &PgPool,
    result: Result<Made, RepoError>,
    job: JobId,
    kind: &str,
    item: &impl Serialize,
    written: &mut Written,
) -> Result<(), RepoError> {
    let error = match result {
        Ok(made) => {
            written.callbacks.push(made);
            return Ok(());
        }
        Err(e) if e.is_transient() => return Err(e),
        Err(e) => e.to_string(),
    };
    tracing::error!(job.id = %job, kind, error,
        "postgresql refuses this history item for good; kept in history_rejects");
    let payload = serde_json::to_value(item).expect("history items serialise");
    repo::set_aside(db, job, kind, payload, &error).await?;
    written.rejected += 1;
    Ok(())
}

/// Writes one batch of worker history: starts first, then records and state changes, so
/// a job that started and finished within the batch ends in its final state. Without
/// starts (the usual case under load: the writer holds starts back briefly and drops
/// those whose end arrived) and without an end that may call back, it is one statement
/// and one round trip. Ends that call back make their callback jobs in the same
/// transaction. Replaying a batch is harmless.
///
/// # Errors
/// PostgreSQL unreachable or refusing an item; nothing of the batch is written then.
pub async fn record_history(
    db: &PgPool,
    secrets: &SecretBox,
    started: &[Started],
    records: &[ExecutionRecord],
    updates: &[JobUpdate],
) -> Result<Made, RepoError> {
    let mut updates = newest_per_job(updates, |u| (u.id, u.token));
    // One lock order for every writer, so two workers' batches never deadlock.
    updates.sort_by_key(|u| u.id);
    // Outcomes of calls a cancellation aborted go to jobs that are already terminal: a
    // statement of their own (rare), so that the common one keeps a plan that visits
    // only live jobs.
    let (cancelled, updates): (Vec<&JobUpdate>, Vec<&JobUpdate>) = updates
        .into_iter()
        .partition(|u| u.state == JobState::Cancelled);
    let may_call_back = updates
        .iter()
        .any(|u| u.state.is_terminal() && u.may_call_back);
    if started.is_empty() && cancelled.is_empty() && !may_call_back {
        repo::write_ends(db, records, &updates).await?;
        return Ok(Made::default());
    }
    let mut tx = db.begin().await?;
    if !cancelled.is_empty() {
        repo::fill_cancelled_outcomes(&mut *tx, &cancelled).await?;
    }
    if !started.is_empty() {
        let mut started = newest_per_job(started, |s| (s.id, s.token));
        started.sort_by_key(|s| s.id);
        repo::mark_started(&mut *tx, &started).await?;
    }
    let ended = repo::write_ends(&mut *tx, records, &updates).await?;
    let made = callback::make(&mut tx, secrets, &ended, Utc::now()).await?;
    tx.commit().await?;
    Ok(made)
}

/// Cancels the live job `id` in `tx`, making its callback job when it calls back on
/// `cancelled`; `None` when the job is not live (terminal or absent).
///
/// # Errors
/// PostgreSQL unreachable.
pub async fn cancel(
    tx: &mut PgConnection,
    secrets: &SecretBox,
    id: JobId,
) -> Result<Option<Made>, RepoError> {
    if !repo::cancel_job(&mut *tx, id).await? {
        return Ok(None);
    }
    Ok(Some(cancelled(tx, secrets, &[id]).await?))
}

/// Makes, in `tx`, the callback jobs of `ids`, just cancelled in `tx` (one job, or a
/// batch of a bulk cancel).
///
/// # Errors
/// PostgreSQL unreachable or refusing the rows.
pub async fn cancelled(
    tx: &mut PgConnection,
    secrets: &SecretBox,
    ids: &[JobId],
) -> Result<Made, RepoError> {
    callback::make(tx, secrets, ids, Utc::now()).await
}

/// Keeps, per job, only the item with the largest token: one `UPDATE .. FROM` may change
/// a row only once, and the newest attempt is the one that counts.
fn newest_per_job<T>(items: &[T], key: impl Fn(&T) -> (JobId, Token)) -> Vec<&T> {
    let mut newest: std::collections::HashMap<JobId, &T> = std::collections::HashMap::new();
    for item in items {
        let (id, token) = key(item);
        newest
            .entry(id)
            .and_modify(|kept| {
                if key(kept).1 <= token {
                    *kept = item;
                }
            })
            .or_insert(item);
    }
    newest.into_values().collect()
}
