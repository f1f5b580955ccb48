//! Callback jobs (SPEC 11): when a job with a `callback` ends in one of its states, a job
//! of its own POSTs the job, as `GET /v1/jobs/{id}` shows it, to the callback's URL. It
//! is made inside the transaction that records the end (the history writer's, or the
//! API's cancellation), with the idempotency key `callback:{parent}:{round}`: a replayed
//! end finds the key taken and makes nothing, so each end of a job makes exactly one.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use super::accept;
use crate::{
    crypto::SecretBox,
    domain::Job,
    domain::{DEFAULT_MAX_ATTEMPTS, JobId, JobSpec, Method, NewJob, Target, is_secret_header},
    queue::Dispatch,
    repo::{self, Idempotency, OutboxId, RepoError},
    views::JobView,
};

/// The callback jobs made in a transaction, to dispatch once it commits (their outbox
/// entry sends them otherwise).
#[derive(Debug, Default)]
pub struct Made {
    pub outbox: Option<OutboxId>,
    pub jobs: Vec<Dispatch>,
}

impl Made {
    pub fn is_empty(&self) -> bool {
        self.jobs.is_empty()
    }
}

/// The idempotency key of the callback of `parent`'s end in `round`.
pub fn key(parent: JobId, round: u32) -> String {
    format!("callback:{parent}:{round}")
}

/// Makes the callback jobs of those of `ended` whose end calls back, in `tx` (which must
/// already hold their new states).
///
/// # Errors
/// PostgreSQL unreachable or refusing the rows.
pub async fn make(
    tx: &mut PgConnection,
    secrets: &SecretBox,
    ended: &[JobId],
    now: DateTime<Utc>,
) -> Result<Made, RepoError> {
    if ended.is_empty() {
        return Ok(Made::default());
    }
    let parents = repo::get_jobs(&mut *tx, ended).await?;
    let mut jobs = Vec::new();
    let mut keys = Vec::new();
    for parent in &parents {
        if !parent.spec.calls_back_on(parent.state) {
            continue;
        }
        let key = key(parent.id, parent.round);
        keys.push(Some(Idempotency {
            request_hash: secrets.fingerprint(key.as_bytes()),
            key,
        }));
        jobs.push(callback_job(parent, secrets, now));
    }
    if jobs.is_empty() {
        return Ok(Made::default());
    }
    let accepted = accept(&mut *tx, &jobs, &keys, now).await?;
    let outbox = accepted.outbox;
    let jobs = accepted.into_dispatches();
    Ok(Made {
        outbox: (!jobs.is_empty()).then_some(outbox),
        jobs,
    })
}

/// The job that POSTs `parent` to its callback: in the parent's queue, with its
/// priority, timeout and backoff, and its attempts but never fewer than the default (a
/// job tried once for its own reasons still has its outcome delivered through a
/// receiver's brief outage); no callback, flow key or labels of its own.
fn callback_job(parent: &Job, secrets: &SecretBox, now: DateTime<Utc>) -> NewJob {
    let spec = &parent.spec;
    let callback = spec
        .callback
        .as_ref()
        .expect("only a job with a callback calls back");
    let id = JobId::new();
    // Sealed for the parent; opened here and sealed again for the callback job below.
    let parent_context = parent.id.to_string();
    let mut headers: Vec<(String, String)> = Vec::with_capacity(callback.headers.len() + 1);
    for (name, value) in &callback.headers {
        if !is_secret_header(name) {
            headers.push((name.clone(), value.clone()));
            continue;
        }
        match secrets.open(&parent_context, name, value) {
            Ok(plain) => headers.push((name.clone(), plain)),
            Err(e) => tracing::error!(job.id = %parent.id, header = name, error = %e,
                "a callback header does not open; the callback is sent without it"),
        }
    }
    if !headers
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case("content-type"))
    {
        headers.push(("Content-Type".into(), "application/json".into()));
    }
    let body = serde_json::to_string(&JobView::from(parent)).expect("a job view serialises");
    let mut call = JobSpec::new(Target {
        url: callback.url.clone(),
        method: Method::Post,
        headers,
        body,
    });
    call.timeout_ms = spec.timeout_ms;
    call.max_attempts = spec.max_attempts.max(DEFAULT_MAX_ATTEMPTS);
    call.backoff = spec.backoff;
    call.priority = spec.priority;
    call.seal_secrets(secrets, &id.to_string());
    NewJob {
        id,
        queue: parent.queue.clone(),
        spec: call,
        labels: Default::default(),
        run_at: now,
        callback_of: Some(parent.id),
    }
}
