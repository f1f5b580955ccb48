//! Request extractors that fail with problem+json instead of axum's plain-text
//! rejections: JSON bodies (content type, size limit, syntax, unknown fields) and path ids.

use std::time::Duration;

use axum::{
    body::{Body, Bytes},
    extract::{FromRequest, FromRequestParts, Request},
    http::{header, request::Parts},
};
use bytes::BytesMut;
use courier_core::{JobId, QueueName, Settings, domain::FieldError};
use futures_util::StreamExt;
use serde::de::DeserializeOwned;

use crate::{auth::Caller, error::ApiError, state::AppState};

/// A request body type and the size limit that applies to it.
pub trait JsonBody: DeserializeOwned {
    fn limit(settings: &Settings) -> usize;
}

/// A parsed JSON body, with the raw bytes (for `Idempotency-Key` comparison).
pub struct ApiJson<T> {
    pub value: T,
    pub raw: Bytes,
}

impl<T: JsonBody> FromRequest<AppState> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(|mime| {
                let mime = mime.trim().to_ascii_lowercase();
                mime == "application/json"
                    || (mime.starts_with("application/") && mime.ends_with("+json"))
            })
            .unwrap_or(false);
        if !is_json {
            return Err(ApiError::UnsupportedMediaType);
        }
        let limit = T::limit(&state.settings);
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        if declared.is_some_and(|len| len > limit.max(DRAIN_BYTES)) {
            // Too large to be worth draining: answer at once.
            return Err(ApiError::PayloadTooLarge(limit));
        }
        let raw = read_body(req.into_body(), limit).await?;
        let value = parse_json(&raw)?;
        Ok(Self { value, raw })
    }
}

/// A body that may be left out: no `Content-Type` and no bytes mean none (`POST
/// .../pause` with or without a note).
impl<T: JsonBody> axum::extract::OptionalFromRequest<AppState> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Option<Self>, ApiError> {
        let empty = req.headers().get(header::CONTENT_TYPE).is_none()
            && req
                .headers()
                .get(header::CONTENT_LENGTH)
                .is_none_or(|v| v.as_bytes() == b"0");
        if empty {
            return Ok(None);
        }
        <Self as FromRequest<AppState>>::from_request(req, state)
            .await
            .map(Some)
    }
}

/// Most bytes of an oversized body read (and dropped) so that the client, still sending,
/// gets its 413 instead of a reset connection.
const DRAIN_BYTES: usize = 64 * 1024 * 1024;
const DRAIN_TIME: Duration = Duration::from_secs(5);

/// Reads the body up to `limit` bytes. A larger body is a 413, answered after draining
/// the rest (within bounds): closing on a client mid-upload makes it see a connection
/// error rather than the problem.
async fn read_body(body: Body, limit: usize) -> Result<Bytes, ApiError> {
    let mut stream = body.into_data_stream();
    let mut buffer = BytesMut::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk
            .map_err(|e| ApiError::BadRequest(format!("could not read the request body: {e}")))?;
        if buffer.len() + chunk.len() > limit {
            let deadline = tokio::time::Instant::now() + DRAIN_TIME;
            let mut drained = buffer.len() + chunk.len();
            while drained < DRAIN_BYTES {
                match tokio::time::timeout_at(deadline, stream.next()).await {
                    Ok(Some(Ok(chunk))) => drained += chunk.len(),
                    _ => break,
                }
            }
            return Err(ApiError::PayloadTooLarge(limit));
        }
        buffer.extend_from_slice(&chunk);
    }
    Ok(buffer.freeze())
}

/// Syntax errors are 400; well-formed JSON of the wrong shape is 422 with the field's path.
fn parse_json<T: DeserializeOwned>(raw: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(raw);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        // A shape error may come before a syntax error further on (`[1, 2`): broken
        // JSON is a 400 whatever its prefix looked like.
        if let Err(syntax) = serde_json::from_slice::<serde::de::IgnoredAny>(raw) {
            return classify(syntax, String::new());
        }
        let path = e.path().to_string();
        classify(
            e.into_inner(),
            if path == "." { String::new() } else { path },
        )
    })?;
    de.end().map_err(|e| classify(e, String::new()))?;
    Ok(value)
}

fn classify(error: serde_json::Error, field: String) -> ApiError {
    use serde_json::error::Category;
    match error.classify() {
        Category::Syntax | Category::Eof | Category::Io => {
            ApiError::BadRequest(format!("the body is not valid JSON: {error}"))
        }
        Category::Data => ApiError::Validation(vec![FieldError::new(
            field,
            strip_position(&error.to_string()),
        )]),
    }
}

/// serde_json appends " at line 1 column 42", which means nothing to a client that
/// already has the field's path.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(at) => message[..at].to_owned(),
        None => message.to_owned(),
    }
}

/// The route's one path parameter, as sent; a path axum cannot read is a 400 problem.
async fn path_param<S: Send + Sync>(parts: &mut Parts, state: &S) -> Result<String, ApiError> {
    let axum::extract::Path(raw) = axum::extract::Path::<String>::from_request_parts(parts, state)
        .await
        .map_err(|e| ApiError::BadRequest(e.body_text()))?;
    Ok(raw)
}

/// A job id from the path; anything but a UUID is a 400 problem.
pub struct JobIdPath(pub JobId);

impl<S: Send + Sync> FromRequestParts<S> for JobIdPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let raw = path_param(parts, state).await?;
        JobId::parse(&raw)
            .map(Self)
            .map_err(|_| ApiError::BadRequest(format!("{raw:?} is not a job id (a UUID)")))
    }
}

/// A queue's name from the path (`/v1/queues/{name}/...`), parsed, and allowed to the
/// caller: 400 for a name that cannot be a queue's, 403 for a queue the caller's key is
/// not allowed.
pub struct QueuePath(pub QueueName);

impl<S: Send + Sync> FromRequestParts<S> for QueuePath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let raw = path_param(parts, state).await?;
        let queue =
            QueueName::parse(&raw).map_err(|m| ApiError::BadRequest(format!("queue name {m}")))?;
        Caller::from_request_parts(parts, state)
            .await?
            .check_queue(queue.as_str())?;
        Ok(Self(queue))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::requests::JobRequest;

    #[test]
    fn syntax_errors_are_400_and_shape_errors_422_with_a_path() {
        assert!(matches!(
            parse_json::<JobRequest>(b"{nope"),
            Err(ApiError::BadRequest(_))
        ));
        match parse_json::<JobRequest>(br#"{"target": {"url": "http://x", "bogus": 1}}"#) {
            Err(ApiError::Validation(errors)) => {
                assert_eq!(errors[0].field, "target.bogus");
                assert!(
                    errors[0].message.contains("unknown field `bogus`"),
                    "{}",
                    errors[0].message
                );
            }
            other => panic!("{other:?}"),
        }
        match parse_json::<JobRequest>(br#"{"target": {"url": "http://x"}, "priority": "high"}"#) {
            Err(ApiError::Validation(errors)) => assert_eq!(errors[0].field, "priority"),
            other => panic!("{other:?}"),
        }
    }
}
