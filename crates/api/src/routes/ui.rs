//! The dashboard (SPEC 12): its files, embedded in the binary (building it needs no
//! Node.js), served under a strict Content-Security-Policy, and its sign-in session.
//!
//! `POST /ui/session` takes an API key once and answers with an HttpOnly, SameSite=Strict
//! cookie (the page never sees it) and the session's CSRF token, which every change the
//! page makes carries in `X-CSRF-Token` (see `auth`).

use axum::{
    Json, Router,
    extract::State,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Redirect, Response},
    routing::get,
};
use chrono::{Duration, Utc};
use courier_core::repo::{keys::ApiKey, sessions};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{
    auth::{SESSION_COOKIE, key_for_sign_in, session_cookie},
    error::{ApiError, Problem, ReadProblems, WriteProblems},
    extract::ApiJson,
    state::AppState,
};

/// How long a session lasts.
const SESSION_HOURS: i64 = 12;

/// No script, style, image or connection from anywhere but this origin, no inline
/// script or style, no framing.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'self'; \
                   frame-ancestors 'none'";

/// The embedded files: path under `/ui/`, content type, bytes.
const FILES: &[(&str, &str, &[u8])] = &[
    (
        "",
        "text/html; charset=utf-8",
        include_bytes!("../../ui/index.html"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../ui/app.js"),
    ),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_bytes!("../../ui/style.css"),
    ),
    (
        "vendor/uPlot.iife.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../ui/vendor/uPlot.iife.min.js"),
    ),
    (
        "vendor/uPlot.min.css",
        "text/css; charset=utf-8",
        include_bytes!("../../ui/vendor/uPlot.min.css"),
    ),
];

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/ui", get(|| async { Redirect::permanent("/ui/") }))
        .route("/ui/", get(|| async { file("") }))
        .route(
            "/ui/{*path}",
            get(
                |axum::extract::Path(path): axum::extract::Path<String>| async move { file(&path) },
            ),
        )
        .route(
            "/ui/session",
            get(get_session).post(sign_in).delete(sign_out),
        )
}

fn secured(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

fn file(path: &str) -> Response {
    match FILES.iter().find(|(name, _, _)| *name == path) {
        Some((_, content_type, bytes)) => secured(
            (
                [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))],
                *bytes,
            )
                .into_response(),
        ),
        None => secured(crate::error::problem_response(
            StatusCode::NOT_FOUND,
            "not-found",
            format!("the dashboard has no file {path:?}"),
            vec![],
        )),
    }
}

/// The signed-in key, as the dashboard shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionView {
    /// The key's name.
    pub name: String,
    /// `read`, `write` or `admin`: a `read` session sees no actions.
    pub scope: String,
    /// Send it as `X-CSRF-Token` with every change.
    pub csrf_token: String,
    /// The queues the key is limited to, if it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queues: Option<Vec<String>>,
}

impl SessionView {
    fn new(key: &ApiKey, csrf_token: String) -> Self {
        Self {
            name: key.name.clone(),
            scope: key.scope.as_str().to_owned(),
            csrf_token,
            queues: key.queues.clone(),
        }
    }

    /// With authentication off, everyone is an anonymous admin.
    fn anonymous() -> Self {
        Self {
            name: "anonymous (authentication is off)".into(),
            scope: "admin".into(),
            csrf_token: String::new(),
            queues: None,
        }
    }
}

/// Signing in: an API key.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignInRequest {
    pub key: String,
}

fn cookie(state: &AppState, value: &str, max_age: i64) -> HeaderValue {
    let secure = if state
        .settings
        .server
        .public_url
        .as_ref()
        .is_some_and(|u| u.as_str().starts_with("https://"))
    {
        "; Secure"
    } else {
        ""
    };
    HeaderValue::from_str(&format!(
        "{SESSION_COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}"
    ))
    .expect("a hex cookie is a valid header")
}

/// Sign in to the dashboard with an API key: a session cookie and its CSRF token.
#[utoipa::path(post, path = "/ui/session", tag = "dashboard", request_body = SignInRequest,
    security(()),
    responses(
        (status = 200, body = SessionView, headers(("Set-Cookie" = String, description = "The HttpOnly session cookie"))),
        WriteProblems,
        (status = 401, description = "The key is unknown or revoked; no cookie is set", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn sign_in(
    State(state): State<AppState>,
    body: ApiJson<SignInRequest>,
) -> Result<Response, ApiError> {
    if !state.settings.auth.enabled {
        return Ok(Json(SessionView::anonymous()).into_response());
    }
    let key = key_for_sign_in(&state.auth_state(), body.value.key.trim())
        .await?
        .ok_or(ApiError::Unauthorized("this key is unknown or revoked"))?;
    let session =
        sessions::create(&state.db, &key, Utc::now() + Duration::hours(SESSION_HOURS)).await?;
    let set = cookie(&state, &session.secret, SESSION_HOURS * 3600);
    Ok((
        [(header::SET_COOKIE, set)],
        Json(SessionView::new(&key, session.csrf_token)),
    )
        .into_response())
}

/// The signed-in session (401 when there is none).
#[utoipa::path(get, path = "/ui/session", tag = "dashboard",
    security(()),
    responses(
        (status = 200, body = SessionView),
        ReadProblems,
        (status = 401, description = "Not signed in, or the session has ended", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn get_session(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<SessionView>, ApiError> {
    if !state.settings.auth.enabled {
        return Ok(Json(SessionView::anonymous()));
    }
    let secret = session_cookie(&headers).ok_or(ApiError::Unauthorized("not signed in"))?;
    let (key, csrf) = sessions::find(&state.db, secret)
        .await?
        .ok_or(ApiError::Unauthorized(
            "the session has ended; sign in again",
        ))?;
    Ok(Json(SessionView::new(&key, csrf)))
}

/// Sign out: the session ends and its cookie is cleared.
#[utoipa::path(delete, path = "/ui/session", tag = "dashboard",
    security(()),
    responses(
        (status = 204, description = "Signed out"),
        ReadProblems,
    ))]
pub async fn sign_out(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if let Some(secret) = session_cookie(&headers) {
        sessions::delete(&state.db, secret).await?;
    }
    Ok((
        StatusCode::NO_CONTENT,
        [(header::SET_COOKIE, cookie(&state, "", 0))],
    )
        .into_response())
}

impl crate::extract::JsonBody for SignInRequest {
    fn limit(_: &courier_core::Settings) -> usize {
        4 * 1024
    }
}
