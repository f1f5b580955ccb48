//! `/v1/schedules`: recurring schedules (SPEC 9): define, read, change, pause and
//! resume, trigger, backfill, and read every occurrence's run.

use axum::{
    Json, Router,
    extract::{Path, RawQuery, State},
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use chrono::{DateTime, Utc};
use courier_core::{
    domain::{FieldError, ScheduleName},
    repo::schedules::{self as store, ScheduleRow},
    schedule::ScheduleDef,
    views::{RunPage, RunView, ScheduleList, ScheduleView},
};
use uuid::Uuid;

use crate::{
    auth::Caller,
    error::{ApiError, Problem, ReadProblems, WriteProblems},
    extract::ApiJson,
    requests::{
        BackfillRequest, MAX_BACKFILL, Page, ParseContext, PauseRequest, SchedulePatch,
        ScheduleRequest,
    },
    scheduler::{SchedulerError, Triggered},
    state::AppState,
};

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/schedules", post(create_schedule).get(list_schedules))
        .route(
            "/v1/schedules/{name}",
            get(get_schedule)
                .put(put_schedule)
                .patch(patch_schedule)
                .delete(delete_schedule),
        )
        .route("/v1/schedules/{name}/pause", post(pause_schedule))
        .route("/v1/schedules/{name}/resume", post(resume_schedule))
        .route("/v1/schedules/{name}/trigger", post(trigger_schedule))
        .route("/v1/schedules/{name}/backfill", post(backfill_schedule))
        .route("/v1/schedules/{name}/runs", get(list_runs))
}

impl From<SchedulerError> for ApiError {
    fn from(e: SchedulerError) -> Self {
        match e {
            SchedulerError::Maintenance(e) => e.into(),
            SchedulerError::Firing(e) => ApiError::Internal(e.into()),
        }
    }
}

fn parse_context<'a>(state: &'a AppState, id: Uuid) -> ParseContext<'a> {
    ParseContext {
        settings: &state.settings,
        outbound: &state.outbound,
        secrets: &state.secrets,
        id,
    }
}

/// Records a change to schedule `name` in the audit log.
async fn audited(
    state: &AppState,
    caller: &Caller,
    action: &'static str,
    name: &str,
    count: Option<i64>,
) -> Result<(), ApiError> {
    courier_core::repo::audit::record(
        &state.db,
        &caller.audit(action, serde_json::json!(name), count),
    )
    .await?;
    Ok(())
}

/// The schedule named `name`, if it exists and the caller may use its job's queue.
async fn find(
    state: &AppState,
    caller: &Caller,
    name: &str,
) -> Result<(ScheduleRow, ScheduleDef), ApiError> {
    let missing = || ApiError::NotFound(format!("no schedule {name:?}"));
    let name = ScheduleName::parse(name).map_err(|_| missing())?;
    let row = store::get_schedule(&state.db, &name)
        .await?
        .ok_or_else(missing)?;
    let def = row.def().map_err(|e| ApiError::Internal(e.into()))?;
    if !caller.may_use(def.job.queue.as_str()) {
        return Err(missing());
    }
    Ok((row, def))
}

/// Stores `def` (new, or replacing the schedule of that name) with its next occurrence
/// from now; returns the stored row and whether it was created.
async fn store(
    state: &AppState,
    id: Uuid,
    def: &ScheduleDef,
) -> Result<(ScheduleRow, bool), ApiError> {
    let now = state.clock.now();
    let next_at = def.first_occurrence(now);
    let (_, created) = store::upsert_schedule(&state.db, id, def, next_at, now).await?;
    let row = store::get_schedule(&state.db, &def.name)
        .await?
        .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("a stored schedule is gone")))?;
    Ok((row, created))
}

fn view(state: &AppState, row: &ScheduleRow, def: &ScheduleDef) -> ScheduleView {
    crate::views::schedule_view(row, def, state.clock.now())
}

fn created(state: &AppState, row: &ScheduleRow, def: &ScheduleDef) -> Response {
    let location = HeaderValue::from_str(&format!("/v1/schedules/{}", row.name))
        .expect("a schedule name is a valid header value");
    (
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(view(state, row, def)),
    )
        .into_response()
}

/// Define a schedule.
#[utoipa::path(post, path = "/v1/schedules", tag = "schedules", request_body = ScheduleRequest,
    responses(
        (status = 201, description = "Stored; its first occurrence is in `next_occurrences`", body = ScheduleView),
        WriteProblems,
        (status = 409, description = "A schedule of that name exists (PUT replaces it)", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn create_schedule(
    State(state): State<AppState>,
    caller: Caller,
    body: ApiJson<ScheduleRequest>,
) -> Result<Response, ApiError> {
    let mut request = body.value;
    let Some(name) = request.name.take() else {
        return Err(ApiError::Validation(vec![FieldError::new(
            "name",
            "is required (or PUT /v1/schedules/{name})",
        )]));
    };
    let id = Uuid::now_v7();
    let def = request
        .parse(&name, &parse_context(&state, id))
        .map_err(ApiError::Validation)?;
    caller.check_queue(def.job.queue.as_str())?;
    if store::get_schedule(&state.db, &def.name).await?.is_some() {
        return Err(ApiError::Conflict(format!(
            "a schedule named {name:?} exists; PUT /v1/schedules/{name} replaces it"
        )));
    }
    let (row, _) = store(&state, id, &def).await?;
    audited(&state, &caller, "schedules.create", &name, None).await?;
    Ok(created(&state, &row, &def))
}

/// Create or replace a schedule (its runs and id stay).
#[utoipa::path(put, path = "/v1/schedules/{name}", tag = "schedules", request_body = ScheduleRequest,
    params(("name" = String, Path, description = "Schedule name")),
    responses(
        (status = 200, description = "Replaced", body = ScheduleView),
        (status = 201, description = "Created", body = ScheduleView),
        WriteProblems,
    ))]
pub async fn put_schedule(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    body: ApiJson<ScheduleRequest>,
) -> Result<Response, ApiError> {
    let mut request = body.value;
    if request.name.take().is_some_and(|given| given != name) {
        return Err(ApiError::Validation(vec![FieldError::new(
            "name",
            "must match the name in the path",
        )]));
    }
    let existing = match ScheduleName::parse(&name) {
        Ok(parsed) => store::get_schedule(&state.db, &parsed).await?,
        Err(_) => None,
    };
    if let Some(existing) = &existing {
        let queue = existing.job.0.queue.as_str();
        if !caller.may_use(queue) {
            return Err(ApiError::Forbidden(format!(
                "this API key may not use queue {queue:?}"
            )));
        }
    }
    let id = existing.as_ref().map_or_else(Uuid::now_v7, |row| row.id);
    let def = request
        .parse(&name, &parse_context(&state, id))
        .map_err(ApiError::Validation)?;
    caller.check_queue(def.job.queue.as_str())?;
    let (row, was_created) = store(&state, id, &def).await?;
    let action = if was_created {
        "schedules.create"
    } else {
        "schedules.update"
    };
    audited(&state, &caller, action, &name, None).await?;
    if was_created {
        Ok(created(&state, &row, &def))
    } else {
        Ok(Json(view(&state, &row, &def)).into_response())
    }
}

/// Change some fields of a schedule.
#[utoipa::path(patch, path = "/v1/schedules/{name}", tag = "schedules", request_body = SchedulePatch,
    params(("name" = String, Path, description = "Schedule name")),
    responses(
        (status = 200, body = ScheduleView),
        WriteProblems,
    ))]
pub async fn patch_schedule(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    body: ApiJson<SchedulePatch>,
) -> Result<Json<ScheduleView>, ApiError> {
    let (row, current) = find(&state, &caller, &name).await?;
    let def = body
        .value
        .apply(&current, &parse_context(&state, row.id))
        .map_err(ApiError::Validation)?;
    caller.check_queue(def.job.queue.as_str())?;
    let (row, _) = store(&state, row.id, &def).await?;
    audited(&state, &caller, "schedules.update", &name, None).await?;
    Ok(Json(view(&state, &row, &def)))
}

/// A schedule, with its next 5 occurrences.
#[utoipa::path(get, path = "/v1/schedules/{name}", tag = "schedules",
    params(("name" = String, Path, description = "Schedule name")),
    responses(
        (status = 200, body = ScheduleView),
        ReadProblems,
    ))]
pub async fn get_schedule(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<ScheduleView>, ApiError> {
    let (row, def) = find(&state, &caller, &name).await?;
    Ok(Json(view(&state, &row, &def)))
}

/// Schedules by name, with keyset pagination.
#[utoipa::path(get, path = "/v1/schedules", tag = "schedules",
    params(
        ("limit" = Option<i64>, Query, description = "1 to 500, default 50"),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page"),
    ),
    responses(
        (status = 200, body = ScheduleList),
        WriteProblems,
    ))]
pub async fn list_schedules(
    State(state): State<AppState>,
    caller: Caller,
    RawQuery(query): RawQuery,
) -> Result<Json<ScheduleList>, ApiError> {
    let page: Page<ScheduleName> = Page::parse(query.as_deref())?;
    let rows = store::list_schedules(&state.db, page.cursor.as_ref(), page.limit).await?;
    let next_cursor = page.next(&rows, |r| r.name.clone());
    let schedules = rows
        .iter()
        .filter_map(|row| row.def().ok().map(|def| (row, def)))
        .filter(|(_, def)| caller.may_use(def.job.queue.as_str()))
        .map(|(row, def)| view(&state, row, &def))
        .collect();
    Ok(Json(ScheduleList {
        schedules,
        next_cursor,
    }))
}

/// Delete a schedule and its runs (jobs it made stay).
#[utoipa::path(delete, path = "/v1/schedules/{name}", tag = "schedules",
    params(("name" = String, Path, description = "Schedule name")),
    responses(
        (status = 204, description = "Deleted"),
        ReadProblems,
    ))]
pub async fn delete_schedule(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    let (row, _) = find(&state, &caller, &name).await?;
    store::delete_schedule(&state.db, &row.name).await?;
    audited(&state, &caller, "schedules.delete", &name, None).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Pause a schedule: its occurrences are recorded as skipped (paused) until it resumes.
#[utoipa::path(post, path = "/v1/schedules/{name}/pause", tag = "schedules", request_body = Option<PauseRequest>,
    params(("name" = String, Path, description = "Schedule name")),
    responses(
        (status = 200, body = ScheduleView),
        WriteProblems,
    ))]
pub async fn pause_schedule(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    body: Option<ApiJson<PauseRequest>>,
) -> Result<Json<ScheduleView>, ApiError> {
    let note = body.and_then(|b| b.value.note);
    if let Some(note) = &note {
        let mut p = courier_core::domain::Problems::new();
        crate::requests::check_note(&mut p, note);
        p.finish(Some(())).map_err(ApiError::Validation)?;
    }
    set_paused(&state, &caller, &name, true, note.as_deref()).await
}

/// Resume a paused schedule from its next occurrence.
#[utoipa::path(post, path = "/v1/schedules/{name}/resume", tag = "schedules",
    params(("name" = String, Path, description = "Schedule name")),
    responses(
        (status = 200, body = ScheduleView),
        ReadProblems,
    ))]
pub async fn resume_schedule(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<ScheduleView>, ApiError> {
    set_paused(&state, &caller, &name, false, None).await
}

async fn set_paused(
    state: &AppState,
    caller: &Caller,
    name: &str,
    paused: bool,
    note: Option<&str>,
) -> Result<Json<ScheduleView>, ApiError> {
    let (row, _) = find(state, caller, name).await?;
    store::set_paused(&state.db, &row.name, paused, note, state.clock.now()).await?;
    let action = if paused {
        "schedules.pause"
    } else {
        "schedules.resume"
    };
    audited(state, caller, action, name, None).await?;
    let (row, def) = find(state, caller, name).await?;
    Ok(Json(view(state, &row, &def)))
}

/// Fire the schedule now, outside its calendar (under its overlap policy).
#[utoipa::path(post, path = "/v1/schedules/{name}/trigger", tag = "schedules",
    params(("name" = String, Path, description = "Schedule name")),
    responses(
        (status = 200, description = "The occurrence: fired with its job, buffered, or skipped (overlap)", body = RunView),
        ReadProblems,
    ))]
pub async fn trigger_schedule(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<RunView>, ApiError> {
    let (row, def) = find(&state, &caller, &name).await?;
    let (at, triggered) = state
        .scheduler
        .trigger(&row, &def)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no schedule {name:?}")))?;
    let (outcome, reason, job_id) = match triggered {
        Triggered::Fired(job) => ("fired", None, Some(job.as_uuid())),
        Triggered::Buffered => ("buffered", None, None),
        Triggered::Skipped(reason) => ("skipped", Some(reason.as_str().to_owned()), None),
    };
    let jobs = i64::from(job_id.is_some());
    audited(&state, &caller, "schedules.trigger", &name, Some(jobs)).await?;
    Ok(Json(RunView {
        occurrence: at,
        kind: "trigger".into(),
        outcome: outcome.into(),
        reason,
        job_id,
        decided_at: at,
        lateness_ms: job_id.map(|_| 0),
    }))
}

/// Fire the calendar's occurrences in a past range, oldest first.
#[utoipa::path(post, path = "/v1/schedules/{name}/backfill", tag = "schedules", request_body = BackfillRequest,
    params(("name" = String, Path, description = "Schedule name")),
    responses(
        (status = 200, description = "Each occurrence of the range, fired now or earlier", body = RunPage),
        WriteProblems,
        (status = 422, description = "A bad range, or more than 1000 occurrences in it", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn backfill_schedule(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    body: ApiJson<BackfillRequest>,
) -> Result<Json<RunPage>, ApiError> {
    let (row, def) = find(&state, &caller, &name).await?;
    let now = state.clock.now();
    let (from, to) = body.value.parse(now).map_err(ApiError::Validation)?;
    let mut occurrences: Vec<DateTime<Utc>> = Vec::new();
    let mut next = def.first_occurrence(from);
    while let Some(at) = next.filter(|at| *at <= to) {
        if occurrences.len() == MAX_BACKFILL {
            return Err(ApiError::Validation(vec![FieldError::new(
                "to",
                format!(
                    "the range holds more than {MAX_BACKFILL} occurrences; backfill it in parts"
                ),
            )]));
        }
        occurrences.push(at);
        next = def.next_after(at);
    }
    let filled = state.scheduler.backfill(&row, &def, &occurrences).await?;
    let made = filled.iter().filter(|b| !b.already).count() as i64;
    audited(&state, &caller, "schedules.backfill", &name, Some(made)).await?;
    Ok(Json(RunPage {
        runs: filled
            .into_iter()
            .map(|b| RunView {
                occurrence: b.occurrence,
                kind: if b.already { "calendar" } else { "backfill" }.into(),
                outcome: "fired".into(),
                reason: None,
                job_id: Some(b.job.as_uuid()),
                decided_at: now,
                lateness_ms: None,
            })
            .collect(),
        next_cursor: None,
    }))
}

/// Every occurrence of a schedule, newest first: fired (with its job and lateness),
/// buffered, or skipped with the reason.
#[utoipa::path(get, path = "/v1/schedules/{name}/runs", tag = "schedules",
    params(
        ("name" = String, Path, description = "Schedule name"),
        ("limit" = Option<i64>, Query, description = "1 to 500, default 50"),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page"),
    ),
    responses(
        (status = 200, body = RunPage),
        WriteProblems,
    ))]
pub async fn list_runs(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Json<RunPage>, ApiError> {
    let (row, _) = find(&state, &caller, &name).await?;
    let page: Page<DateTime<Utc>> = Page::parse(query.as_deref())?;
    let rows = store::list_runs(&state.db, row.id, page.cursor, page.limit).await?;
    let next_cursor = page.next(&rows, |r| r.occurrence);
    Ok(Json(RunPage {
        runs: rows.into_iter().map(RunView::from).collect(),
        next_cursor,
    }))
}
