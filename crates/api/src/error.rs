//! One error type for every handler, rendered as an RFC 9457 problem. Internal errors are
//! logged with their cause and answered with an opaque 500.

use axum::{
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
/// The problem document lives with the other answer types, where clients read it too.
pub use courier_core::views::Problem;

/// The problems an operation may answer, one line each, for the OpenAPI document: the
/// status, what it means, and whether only operations that take a body answer it.
/// (401, 403 and 429 of authentication are added to every `/v1` operation by
/// `openapi::ApiKeys`.) An operation lists [`ReadProblems`] or [`WriteProblems`], and
/// only those problems of its own whose description says more.
const PROBLEMS: [(u16, &str, bool); 7] = [
    (
        400,
        "The request is malformed (a path parameter, a query string, JSON syntax)",
        false,
    ),
    (404, "No such resource", false),
    (409, "The resource is not in a state that allows this", true),
    (413, "The body is larger than the limit", true),
    (415, "The body is not `application/json`", true),
    (422, "A field is invalid; `errors` names each", true),
    (
        503,
        "PostgreSQL or Redis is unavailable; try again after `Retry-After`",
        false,
    ),
];

fn problem_responses(
    write: bool,
) -> std::collections::BTreeMap<String, utoipa::openapi::RefOr<utoipa::openapi::Response>> {
    use utoipa::openapi::{Content, Ref, RefOr, ResponseBuilder};
    PROBLEMS
        .iter()
        .filter(|(_, _, write_only)| write || !write_only)
        .map(|(status, description, _)| {
            let response = ResponseBuilder::new()
                .description(*description)
                .content(
                    "application/problem+json",
                    Content::new(Some(RefOr::Ref(Ref::from_schema_name("Problem")))),
                )
                .build();
            (status.to_string(), RefOr::T(response))
        })
        .collect()
}

/// The problems of an operation that reads: 400, 404, 503.
pub struct ReadProblems;

impl utoipa::IntoResponses for ReadProblems {
    fn responses()
    -> std::collections::BTreeMap<String, utoipa::openapi::RefOr<utoipa::openapi::Response>> {
        problem_responses(false)
    }
}

/// The problems of an operation that changes something: those of [`ReadProblems`], and
/// 409, 413, 415, 422.
pub struct WriteProblems;

impl utoipa::IntoResponses for WriteProblems {
    fn responses()
    -> std::collections::BTreeMap<String, utoipa::openapi::RefOr<utoipa::openapi::Response>> {
        problem_responses(true)
    }
}
use courier_core::{domain::FieldError, queue::QueueError, repo::RepoError};

/// Seconds a client should wait before retrying when a dependency is down.
const RETRY_AFTER_SECS: &str = "5";

/// Everything a handler can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("requests must be JSON (Content-Type: application/json)")]
    UnsupportedMediaType,
    #[error("the request body is larger than {0} bytes")]
    PayloadTooLarge(usize),
    #[error("the request has invalid fields")]
    Validation(Vec<FieldError>),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("this Idempotency-Key was used with a different request body")]
    IdempotencyMismatch,
    #[error("this route needs `Authorization: Bearer <API key>`; {0}")]
    Unauthorized(&'static str),
    #[error("{0}")]
    Forbidden(String),
    #[error("this API key made more than its allowed requests per second; retry after {0} s")]
    RateLimited(u64),
    #[error("the progress token {0}")]
    BadProgressToken(&'static str),
    #[error("this job reported progress more often than allowed; retry after {0} s")]
    ProgressTooFrequent(u64),
    #[error("{0} is unavailable; try again shortly")]
    Unavailable(&'static str),
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl ApiError {
    /// A 422 naming one field of the request (a body's, or a query parameter).
    pub fn field(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Validation(vec![FieldError::new(field, message)])
    }

    fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Validation(_) | Self::IdempotencyMismatch => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Unauthorized(_) | Self::BadProgressToken(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::RateLimited(_) | Self::ProgressTooFrequent(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn slug(&self) -> &'static str {
        match self {
            Self::BadRequest(_) => "bad-request",
            Self::UnsupportedMediaType => "unsupported-media-type",
            Self::PayloadTooLarge(_) => "payload-too-large",
            Self::Validation(_) => "validation-error",
            Self::Unauthorized(_) | Self::BadProgressToken(_) => "unauthorized",
            Self::Forbidden(_) => "forbidden",
            Self::RateLimited(_) | Self::ProgressTooFrequent(_) => "rate-limited",
            Self::NotFound(_) => "not-found",
            Self::Conflict(_) => "conflict",
            Self::IdempotencyMismatch => "idempotency-key-reused",
            Self::Unavailable(_) => "unavailable",
            Self::Internal(_) => "internal-error",
        }
    }
}

/// Renders any problem; also used for errors raised outside handlers (404 routes).
pub fn problem_response(
    status: StatusCode,
    slug: &str,
    detail: String,
    errors: Vec<FieldError>,
) -> Response {
    let body = Problem {
        kind: format!("/problems/{slug}"),
        title: status.canonical_reason().unwrap_or("Error").to_owned(),
        status: status.as_u16(),
        detail,
        errors,
    };
    let mut response = (status, axum::Json(body)).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    response
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let Self::Internal(cause) = &self {
            tracing::error!(error = format!("{cause:#}"), "request failed");
        }
        let status = self.status();
        let slug = self.slug();
        let detail = self.to_string();
        let retry_after = match &self {
            Self::Unavailable(_) => Some(HeaderValue::from_static(RETRY_AFTER_SECS)),
            Self::RateLimited(secs) | Self::ProgressTooFrequent(secs) => {
                Some(HeaderValue::from(*secs))
            }
            _ => None,
        };
        let unauthorized = matches!(self, Self::Unauthorized(_));
        let errors = match self {
            Self::Validation(errors) => errors,
            _ => Vec::new(),
        };
        let mut response = problem_response(status, slug, detail, errors);
        if let Some(value) = retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        if unauthorized {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"courier\""),
            );
        }
        response
    }
}

impl From<RepoError> for ApiError {
    fn from(e: RepoError) -> Self {
        if e.is_unavailable() {
            tracing::warn!(error = %e, "postgresql unavailable");
            Self::Unavailable("PostgreSQL")
        } else {
            Self::Internal(e.into())
        }
    }
}

impl From<QueueError> for ApiError {
    fn from(e: QueueError) -> Self {
        tracing::warn!(error = %e, "redis unavailable");
        Self::Unavailable("Redis")
    }
}

impl From<courier_core::maintenance::MaintenanceError> for ApiError {
    fn from(e: courier_core::maintenance::MaintenanceError) -> Self {
        use courier_core::maintenance::MaintenanceError as M;
        match e {
            M::Repo(e) => e.into(),
            M::Queue(e) => e.into(),
            M::Database(e) => e.into(),
            M::Busy(why) => {
                tracing::warn!(why, "maintenance busy");
                Self::Unavailable("Redis")
            }
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        RepoError::from(e).into()
    }
}

impl From<crate::intake::IntakeError> for ApiError {
    fn from(e: crate::intake::IntakeError) -> Self {
        match e {
            crate::intake::IntakeError::Unavailable => Self::Unavailable("PostgreSQL"),
            crate::intake::IntakeError::Failed(cause) => Self::Internal(anyhow::anyhow!(cause)),
        }
    }
}
