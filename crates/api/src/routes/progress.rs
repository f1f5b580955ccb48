//! `POST /v1/jobs/{id}/progress` (SPEC 11): a target reports how far its call has got,
//! with the token of the attempt's `X-Courier-Progress-Url` instead of an API key. The
//! token is an HMAC of the job id and the attempt's fencing token, so it is checked
//! without a lookup; the attempt must still hold the job's lease, so a stale attempt's
//! report never overwrites a newer one's.

use axum::{
    Json, Router,
    extract::{Query, State},
    routing::post,
};
use courier_core::{domain::Token, repo, views::ProgressView};
use serde::Deserialize;

use crate::{
    error::{ApiError, Problem, WriteProblems},
    extract::{ApiJson, JobIdPath},
    requests::ProgressRequest,
    state::AppState,
};

/// How many jobs' report rates are kept before those at rest are forgotten.
const FORGET_ABOVE: usize = 10_000;

pub(super) fn router() -> Router<AppState> {
    Router::new().route("/v1/jobs/{id}/progress", post(report_progress))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct ProgressQuery {
    /// The token of the attempt's `X-Courier-Progress-Url`.
    token: Option<String>,
}

/// Report a running job's progress, with the token its call's `X-Courier-Progress-Url`
/// carries (no API key). Shown in `GET /v1/jobs/{id}` as `progress`.
#[utoipa::path(post, path = "/v1/jobs/{id}/progress", tag = "jobs", request_body = ProgressRequest,
    params(("id" = uuid::Uuid, Path, description = "Job id"), ProgressQuery),
    security(()),
    responses(
        (status = 200, description = "Stored", body = ProgressView),
        WriteProblems,
        (status = 401, description = "No token, or one not made for this job", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The attempt no longer holds the job (a newer attempt runs, or the job ended)", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "More reports a second than `server.progress_per_second`", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn report_progress(
    State(state): State<AppState>,
    JobIdPath(id): JobIdPath,
    Query(query): Query<ProgressQuery>,
    body: ApiJson<ProgressRequest>,
) -> Result<Json<ProgressView>, ApiError> {
    let token = query
        .token
        .ok_or(ApiError::BadProgressToken("is missing (?token=...)"))?;
    let attempt = state
        .secrets
        .progress_attempt(&id.to_string(), &token)
        .map(Token)
        .ok_or(ApiError::BadProgressToken("was not made for this job"))?;
    let (percent, message) = body.value.parse().map_err(ApiError::Validation)?;
    let limiter = &state.progress_limiter;
    // Jobs that stopped reporting are forgotten once there are many.
    if limiter.len() > FORGET_ABOVE {
        limiter.retain_recent();
    }
    limiter.check_key(&id).map_err(|not_until| {
        let wait = not_until.wait_time_from(governor::clock::Clock::now(
            &governor::clock::DefaultClock::default(),
        ));
        ApiError::ProgressTooFrequent(wait.as_secs() + u64::from(wait.subsec_nanos() > 0))
    })?;
    let stale = || {
        ApiError::Conflict(format!(
            "the attempt of this token no longer holds job {id} (a newer attempt runs, or the job ended)"
        ))
    };
    let row = repo::get_job(&state.db, id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no job {id}")))?;
    if row.state.is_terminal() {
        return Err(stale());
    }
    // Redis knows which attempt holds the lease; PostgreSQL may not have heard yet that
    // this one started.
    if state.queue.lease_of(&row.queue, id).await? != Some(attempt) {
        return Err(stale());
    }
    let stored = repo::report_progress(&state.db, id, attempt, percent, message.as_deref())
        .await?
        .ok_or_else(stale)?;
    Ok(Json(ProgressView {
        percent: stored.percent.clamp(0, 100) as u8,
        message: stored.message,
        updated_at: stored.at,
    }))
}
