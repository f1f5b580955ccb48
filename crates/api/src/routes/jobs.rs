//! `/v1/jobs`: accept, read, list, cancel and retry jobs.

use axum::{
    Json, Router,
    extract::{RawQuery, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use chrono::Utc;
use courier_core::{
    JobId, JobState,
    domain::{FieldError, Job, rules},
    repo::{self, Idempotency},
    stages::{accept, dispatch, record},
};

use crate::{
    auth::Caller,
    error::{ApiError, Problem, ReadProblems, WriteProblems},
    extract::{ApiJson, JobIdPath},
    intake::Admission,
    requests::{BatchRequest, JobRequest, job_list_query},
    state::AppState,
    views::{BatchAccepted, ExecutionList, JobPage, JobView},
};

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/jobs", post(create_job).get(list_jobs))
        .route("/v1/jobs/batch", post(create_batch))
        .route("/v1/jobs/{id}", get(get_job))
        .route("/v1/jobs/{id}/executions", get(list_executions))
        .route("/v1/jobs/{id}/cancel", post(cancel_job))
        .route("/v1/jobs/{id}/retry", post(retry_job))
}

/// Accept one job.
#[utoipa::path(post, path = "/v1/jobs", tag = "jobs", request_body = JobRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "Repeating a request with the same key and body returns the first job")),
    responses(
        (status = 201, description = "Committed and queued", body = JobView),
        (status = 200, description = "The job an earlier request with this Idempotency-Key created", body = JobView),
        WriteProblems,
    ))]
pub async fn create_job(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: ApiJson<JobRequest>,
) -> Result<Response, ApiError> {
    let now = Utc::now();
    let mut job = body
        .value
        .parse_submitted(&state.settings.jobs, &state.outbound, now)
        .map_err(ApiError::Validation)?;
    caller.check_queue(job.queue.as_str())?;
    job.seal_secrets(&state.secrets);
    let idempotency = idempotency_key(&headers)?.map(|key| Idempotency {
        key,
        // Keyed, so the stored digest of a body that carries secrets reveals nothing.
        request_hash: state.secrets.fingerprint(&body.raw),
    });
    let row = match state.intake.submit(job, idempotency.clone()).await? {
        Admission::Created(row) => {
            courier_core::metrics::submitted(row.queue.as_str(), 1);
            row
        }
        Admission::KeyTaken => {
            let idempotency = idempotency.expect("only a taken idempotency key skips the insert");
            return replay(&state, &idempotency, &body.raw).await;
        }
    };
    let location = HeaderValue::from_str(&format!("/v1/jobs/{}", row.id))
        .expect("a uuid path is a valid header");
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(JobView::from(row.as_ref())),
    )
        .into_response())
}

/// A repeated request: the same body gets the original job, another body a 422.
async fn replay(
    state: &AppState,
    idempotency: &Idempotency,
    raw_body: &[u8],
) -> Result<Response, ApiError> {
    let (id, hash) = repo::find_by_idempotency_key(&state.db, &idempotency.key)
        .await?
        .ok_or_else(|| {
            ApiError::Internal(anyhow::anyhow!(
                "idempotency key conflicted but no job holds it"
            ))
        })?;
    if !state.secrets.fingerprint_matches(raw_body, &hash) {
        return Err(ApiError::IdempotencyMismatch);
    }
    let row = repo::get_job(&state.db, id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("job {id} was deleted")))?;
    // The key was already used, so it names a queue this caller may use.
    Ok((StatusCode::OK, Json(JobView::from(&row))).into_response())
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = value
        .to_str()
        .ok()
        .filter(|k| {
            (1..=rules::MAX_IDEMPOTENCY_KEY).contains(&k.len())
                && k.bytes().all(|b| b.is_ascii_graphic())
        })
        .ok_or_else(|| {
            ApiError::Validation(vec![FieldError::new(
                "Idempotency-Key",
                format!(
                    "must be 1 to {} visible ASCII characters",
                    rules::MAX_IDEMPOTENCY_KEY
                ),
            )])
        })?;
    Ok(Some(key.to_owned()))
}

/// Accept up to 1000 jobs atomically.
#[utoipa::path(post, path = "/v1/jobs/batch", tag = "jobs", request_body = BatchRequest,
    responses(
        (status = 201, description = "All committed and queued", body = BatchAccepted),
        WriteProblems,
        (status = 422, description = "One invalid job refuses the batch; errors name the index", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn create_batch(
    State(state): State<AppState>,
    caller: Caller,
    body: ApiJson<BatchRequest>,
) -> Result<Response, ApiError> {
    let max = state.settings.server.max_batch_jobs;
    let requests = body.value.jobs;
    if requests.is_empty() || requests.len() > max {
        return Err(ApiError::Validation(vec![FieldError::new(
            "jobs",
            format!("a batch holds 1 to {max} jobs, got {}", requests.len()),
        )]));
    }
    let now = Utc::now();
    let mut jobs = Vec::with_capacity(requests.len());
    let mut errors = Vec::new();
    for (i, request) in requests.into_iter().enumerate() {
        match request.parse_submitted(&state.settings.jobs, &state.outbound, now) {
            Ok(job) => jobs.push(job),
            Err(field_errors) => errors.extend(field_errors.into_iter().map(|e| {
                let field = if e.field.is_empty() {
                    format!("jobs[{i}]")
                } else {
                    format!("jobs[{i}].{}", e.field)
                };
                FieldError::new(field, e.message)
            })),
        }
    }
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    for job in &mut jobs {
        caller.check_queue(job.queue.as_str())?;
        job.seal_secrets(&state.secrets);
    }
    let accepted = accept(&state.db, &jobs, &[], now).await?;
    let mut per_queue: std::collections::BTreeMap<&str, u64> = std::collections::BTreeMap::new();
    for job in &jobs {
        *per_queue.entry(job.queue.as_str()).or_default() += 1;
    }
    for (queue, n) in per_queue {
        courier_core::metrics::submitted(queue, n);
    }
    let ids = jobs.iter().map(|j| j.id.as_uuid()).collect();
    let outbox = accepted.outbox;
    if state
        .dispatcher()
        .enqueue_now(&accepted.into_dispatches())
        .await
    {
        state.intake.dispatched(outbox);
    }
    Ok((StatusCode::CREATED, Json(BatchAccepted { ids })).into_response())
}

/// A job's state, attempts, next attempt time and last outcome.
#[utoipa::path(get, path = "/v1/jobs/{id}", tag = "jobs",
    params(("id" = uuid::Uuid, Path, description = "Job id")),
    responses(
        (status = 200, body = JobView),
        ReadProblems,
    ))]
pub async fn get_job(
    State(state): State<AppState>,
    caller: Caller,
    JobIdPath(id): JobIdPath,
) -> Result<Json<JobView>, ApiError> {
    let row = find(&state, &caller, id).await?;
    Ok(Json(JobView::from(&row)))
}

/// The job, if it exists and the caller may use its queue (otherwise it does not exist
/// for this caller: a key limited to some queues learns nothing of the others).
async fn find(state: &AppState, caller: &Caller, id: JobId) -> Result<Job, ApiError> {
    repo::get_job(&state.db, id)
        .await?
        .filter(|row| caller.may_use(row.queue.as_str()))
        .ok_or_else(|| ApiError::NotFound(format!("no job {id}")))
}

/// Every attempt of a job.
#[utoipa::path(get, path = "/v1/jobs/{id}/executions", tag = "jobs",
    params(("id" = uuid::Uuid, Path, description = "Job id")),
    responses(
        (status = 200, body = ExecutionList),
        ReadProblems,
    ))]
pub async fn list_executions(
    State(state): State<AppState>,
    caller: Caller,
    JobIdPath(id): JobIdPath,
) -> Result<Json<ExecutionList>, ApiError> {
    find(&state, &caller, id).await?;
    let executions = repo::list_executions(&state.db, id).await?;
    Ok(Json(ExecutionList {
        job_id: id.as_uuid(),
        executions: executions.into_iter().map(Into::into).collect(),
    }))
}

/// Jobs, newest first, with keyset pagination.
#[utoipa::path(get, path = "/v1/jobs", tag = "jobs",
    params(
        ("queue" = Option<String>, Query, description = "Only this queue"),
        ("state" = Option<JobState>, Query, description = "Only this state"),
        ("label" = Option<Vec<String>>, Query, description = "`key:value`; repeat to require several labels"),
        ("created_after" = Option<String>, Query, description = "RFC 3339: jobs created at or after"),
        ("created_before" = Option<String>, Query, description = "RFC 3339: jobs created before"),
        ("q" = Option<String>, Query, description = "Text in the target URL or the last error (case-insensitive)"),
        ("limit" = Option<i64>, Query, description = "1 to 500, default 50"),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page"),
    ),
    responses(
        (status = 200, body = JobPage),
        ReadProblems,
        (status = 403, description = "A key limited to some queues must name one of them", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A filter value is invalid", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn list_jobs(
    State(state): State<AppState>,
    caller: Caller,
    RawQuery(query): RawQuery,
) -> Result<Json<JobPage>, ApiError> {
    let (filter, page) = job_list_query(query.as_deref())?;
    match (&filter.queue, caller.queues()) {
        (Some(queue), _) => caller.check_queue(queue.as_str())?,
        (None, Some(allowed)) => {
            return Err(ApiError::Forbidden(format!(
                "this API key may only list queues {allowed:?}; name one with ?queue="
            )));
        }
        (None, None) => {}
    }
    let rows = repo::list_jobs(&state.db, &filter).await?;
    let next_cursor = page.next(&rows, |job| job.id);
    Ok(Json(JobPage {
        jobs: rows.iter().map(JobView::from).collect(),
        next_cursor,
    }))
}

/// Cancel a job that has not finished; a running call is aborted.
#[utoipa::path(post, path = "/v1/jobs/{id}/cancel", tag = "jobs",
    params(("id" = uuid::Uuid, Path, description = "Job id")),
    responses(
        (status = 200, body = JobView),
        ReadProblems,
        (status = 409, description = "The job is already terminal", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn cancel_job(
    State(state): State<AppState>,
    caller: Caller,
    JobIdPath(id): JobIdPath,
) -> Result<Json<JobView>, ApiError> {
    let mut tx = state.db.begin().await?;
    let row = repo::lock_job(&mut *tx, id)
        .await?
        .filter(|row| caller.may_use(row.queue.as_str()))
        .ok_or_else(|| ApiError::NotFound(format!("no job {id}")))?;
    if row.state.is_terminal() {
        return Err(ApiError::Conflict(format!(
            "job {id} is already {}",
            row.state
        )));
    }
    let made = record::cancel(&mut tx, &state.secrets, id).await?;
    repo::audit::record(
        &mut *tx,
        &caller.audit("jobs.cancel", serde_json::json!(id.to_string()), Some(1)),
    )
    .await?;
    // Redis first, while the row is locked: if Redis cannot be told, the cancel is
    // rolled back rather than leaving a job that PostgreSQL calls cancelled but runs.
    state.queue.cancel(&row.queue, id).await?;
    tx.commit().await?;
    courier_core::metrics::finished(row.queue.as_str(), "cancelled", 1);
    state
        .dispatcher()
        .dispatch_callbacks(made.into_iter().collect())
        .await;
    Ok(Json(JobView::from(&find(&state, &caller, id).await?)))
}

/// Run a dead or cancelled job again, its attempts reset.
#[utoipa::path(post, path = "/v1/jobs/{id}/retry", tag = "jobs",
    params(("id" = uuid::Uuid, Path, description = "Job id")),
    responses(
        (status = 200, body = JobView),
        ReadProblems,
        (status = 409, description = "The job is neither dead nor cancelled", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn retry_job(
    State(state): State<AppState>,
    caller: Caller,
    JobIdPath(id): JobIdPath,
) -> Result<Json<JobView>, ApiError> {
    let mut tx = state.db.begin().await?;
    let row = repo::lock_job(&mut *tx, id)
        .await?
        .filter(|row| caller.may_use(row.queue.as_str()))
        .ok_or_else(|| ApiError::NotFound(format!("no job {id}")))?;
    if !matches!(row.state, JobState::Dead | JobState::Cancelled) {
        return Err(ApiError::Conflict(format!(
            "job {id} is {}; only dead or cancelled jobs can be retried",
            row.state
        )));
    }
    repo::reset_for_retry(&mut *tx, id).await?;
    repo::audit::record(
        &mut *tx,
        &caller.audit("jobs.retry", serde_json::json!(id.to_string()), Some(1)),
    )
    .await?;
    tx.commit().await?;
    let row = find(&state, &caller, id).await?;
    state.dispatcher().dispatch_now(&[dispatch::of(&row)]).await;
    Ok(Json(JobView::from(&row)))
}
