//! Background work of the API: getting committed jobs into Redis, and deleting finished
//! jobs past their retention.
//!
//! Getting committed jobs into Redis: The request path dispatches at once; a job whose
//! dispatch failed (Redis down, the API killed between commit and dispatch) stays
//! marked undispatched in PostgreSQL and the dispatcher loop sends it later.

use std::time::Duration;

use chrono::Utc;
use courier_core::{queue::Dispatch, repo};
use tokio_util::sync::CancellationToken;

use crate::state::AppState;

/// Sends jobs to Redis and marks them dispatched. Failure is logged, not returned: the
/// jobs are safe in PostgreSQL and the dispatcher loop will retry them.
pub async fn dispatch_now(state: &AppState, jobs: &[Dispatch]) {
    if jobs.is_empty() {
        return;
    }
    if let Err(e) = state.queue.enqueue(jobs).await {
        tracing::warn!(error = %e, jobs = jobs.len(), "dispatch to redis failed; the dispatcher will retry");
        return;
    }
    let ids: Vec<_> = jobs.iter().map(|j| j.id).collect();
    if let Err(e) = repo::mark_dispatched(&state.db, &ids).await {
        tracing::warn!(error = %e, "marking jobs dispatched failed; they may be dispatched again");
    }
}

/// Jobs younger than this are left to the request that created them.
const GRACE: Duration = Duration::from_secs(2);
const BATCH: i64 = 500;

/// Re-sends undispatched jobs until `stop` is cancelled.
pub async fn run_dispatcher(state: AppState, stop: CancellationToken) {
    let interval = Duration::from_millis(state.settings.server.dispatch_interval_ms);
    loop {
        match dispatch_pending(&state).await {
            Ok(n) if n as i64 == BATCH => continue,
            Ok(_) => {}
            Err(e) => tracing::warn!(error = format!("{e:#}"), "dispatcher pass failed"),
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
    }
}

/// One pass: locks a batch of undispatched jobs, sends them, marks them. Returns how
/// many were sent.
///
/// # Errors
/// PostgreSQL or Redis unreachable.
pub async fn dispatch_pending(state: &AppState) -> anyhow::Result<usize> {
    let mut tx = state.db.begin().await?;
    let before = Utc::now() - chrono::Duration::from_std(GRACE)?;
    let rows = repo::lock_undispatched(&mut *tx, before, BATCH).await?;
    if rows.is_empty() {
        return Ok(0);
    }
    let jobs: Vec<Dispatch> = rows.iter().filter_map(|r| r.to_dispatch()).collect();
    state.queue.enqueue(&jobs).await?;
    let ids: Vec<_> = rows.iter().map(|r| r.id).collect();
    repo::mark_dispatched(&mut *tx, &ids).await?;
    tx.commit().await?;
    tracing::info!(jobs = ids.len(), "dispatched jobs that had missed redis");
    Ok(ids.len())
}

/// Deletes finished jobs past their retention every `retention.sweep_interval_ms`, until
/// `stop` is cancelled. Several API processes may sweep at once; they skip each other's rows.
pub async fn run_retention(state: AppState, stop: CancellationToken) {
    let interval = Duration::from_millis(state.settings.retention.sweep_interval_ms);
    loop {
        match sweep_expired(&state).await {
            Ok(n) if n as i64 == BATCH => continue,
            Ok(0) => {}
            Ok(n) => tracing::info!(jobs = n, "deleted finished jobs past their retention"),
            Err(e) => tracing::warn!(error = %e, "retention sweep failed"),
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
    }
}

/// One batch of the retention sweep. Returns how many jobs were deleted.
///
/// # Errors
/// PostgreSQL unreachable.
pub async fn sweep_expired(state: &AppState) -> Result<u64, repo::RepoError> {
    let retention = &state.settings.retention;
    let now = Utc::now();
    let hours = |h: u64| chrono::Duration::hours(i64::try_from(h).unwrap_or(i64::MAX / 3_600_000));
    repo::delete_expired(
        &state.db,
        now - hours(retention.succeeded_hours),
        now - hours(retention.dead_hours),
        BATCH,
    )
    .await
}
