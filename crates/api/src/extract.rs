//! Request extractors that fail with problem+json instead of axum's plain-text
//! rejections: JSON bodies (content type, size limit, syntax, shape, unknown fields) and
//! path ids.

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
use serde_json::Value;

use crate::{auth::Caller, error::ApiError, requests::page::NUL_MESSAGE, state::AppState};

/// A request body type and the size limit that applies to it; its schema in the OpenAPI
/// document (`ToSchema::name`) is the shape it is read against.
pub trait JsonBody: DeserializeOwned + utoipa::ToSchema {
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
        let raw = read_json(req, T::limit(&state.settings)).await?;
        let value = parse_json(&raw, &state.document)?;
        Ok(Self { value, raw })
    }
}

/// A body that may be left out: no `Content-Type` and no bytes, or the JSON `null`, mean
/// none (`POST .../pause` with or without a note).
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
        let raw = read_json(req, T::limit(&state.settings)).await?;
        if raw.trim_ascii() == b"null" {
            return Ok(None);
        }
        let value = parse_json(&raw, &state.document)?;
        Ok(Some(Self { value, raw }))
    }
}

/// The bytes of a JSON body (by its `Content-Type`) of at most `limit` bytes.
async fn read_json(req: Request, limit: usize) -> Result<Bytes, ApiError> {
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
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|len| len > limit.max(DRAIN_BYTES)) {
        // Too large to be worth draining: answer at once.
        return Err(ApiError::PayloadTooLarge(limit));
    }
    read_body(req.into_body(), limit).await
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

/// Syntax errors are 400; well-formed JSON of the wrong shape is 422 with the field's
/// path. The JSON is first brought to the shape of `T`'s schema in `document` (see
/// [`conform`]), so that what the document allows is what is read.
///
/// The hot path: a body without an array and without a `\u0000` escape has nothing for
/// [`conform`] to refuse, and is read straight from its bytes when that succeeds (a
/// `3.0` where an integer goes fails there, and takes the long way).
fn parse_json<T: JsonBody>(raw: &[u8], document: &Value) -> Result<T, ApiError> {
    let plain = !raw.contains(&b'[') && !raw.windows(6).any(|w| w == b"\\u0000");
    if plain && let Ok(value) = serde_json::from_slice(raw) {
        return Ok(value);
    }
    let mut json: Value = serde_json::from_slice(raw).map_err(|e| classify(e, String::new()))?;
    let schemas = &document["components"]["schemas"];
    conform(
        &mut json,
        &schemas[T::name().as_ref()],
        schemas,
        &mut String::new(),
    )
    .map_err(|e| ApiError::Validation(vec![e]))?;
    serde_path_to_error::deserialize(json).map_err(|e| {
        let path = e.path().to_string();
        classify(
            e.into_inner(),
            if path == "." { String::new() } else { path },
        )
    })
}

/// Brings `value` to the shape of `schema`, as JSON Schema reads it and serde does not:
/// an integer may be written `3.0`, and an object is never an array (serde would read
/// `[1, 2]` as a struct's fields in order). A string never holds U+0000, which
/// PostgreSQL's text cannot store (the document says so of every string it reads). Follows `$ref`s into `schemas`; the first of
/// a `oneOf` or `anyOf` whose type admits the value is the one followed. Leaves every
/// other check (types, bounds, unknown fields) to the parsing.
fn conform(
    value: &mut Value,
    schema: &Value,
    schemas: &Value,
    path: &mut String,
) -> Result<(), FieldError> {
    let schema = match schema.get("$ref").and_then(Value::as_str) {
        Some(reference) => &schemas[reference.rsplit('/').next().unwrap_or_default()],
        None => schema,
    };
    if let Some(all) = schema.get("allOf").and_then(Value::as_array) {
        for part in all {
            conform(value, part, schemas, path)?;
        }
    }
    let mut types = types_of(schema, schemas);
    for key in ["oneOf", "anyOf"] {
        let Some(alternatives) = schema.get(key).and_then(Value::as_array) else {
            continue;
        };
        match alternatives
            .iter()
            .find(|alternative| admits(&types_of(alternative, schemas), value))
        {
            Some(alternative) => conform(value, alternative, schemas, path)?,
            // None fits: the value's type is wrong, said below with every type named.
            None => types.extend(alternatives.iter().flat_map(|a| types_of(a, schemas))),
        }
    }
    // Only where the document says string: a JSON body (`target.json`) is sent as JSON
    // text, where U+0000 is the escape `\u0000`.
    if types.contains(&"string") && value.as_str().is_some_and(|s| s.contains('\0')) {
        return Err(FieldError::new(path.clone(), NUL_MESSAGE));
    }
    let typed_object = schema.get("properties").is_some()
        || schema
            .get("additionalProperties")
            .is_some_and(Value::is_object);
    match value {
        Value::Array(items) => {
            if !types.is_empty() && !types.contains(&"array") {
                return Err(FieldError::new(
                    path.clone(),
                    format!("must be {}, not an array", describe(&types)),
                ));
            }
            if let Some(item) = schema.get("items") {
                for (i, value) in items.iter_mut().enumerate() {
                    let len = path.len();
                    path.push_str(&format!("[{i}]"));
                    conform(value, item, schemas, path)?;
                    path.truncate(len);
                }
            }
        }
        Value::Object(fields) => {
            for (name, value) in fields.iter_mut() {
                if typed_object && name.contains('\0') {
                    return Err(FieldError::new(path.clone(), NUL_MESSAGE));
                }
                let field = schema
                    .get("properties")
                    .and_then(|p| p.get(name))
                    .or_else(|| schema.get("additionalProperties").filter(|s| s.is_object()));
                if let Some(field) = field {
                    let len = path.len();
                    if !path.is_empty() {
                        path.push('.');
                    }
                    path.push_str(name);
                    conform(value, field, schemas, path)?;
                    path.truncate(len);
                }
            }
        }
        Value::Number(n) if types.contains(&"integer") && !types.contains(&"number") => {
            // 3.0 is an integer to JSON Schema; serde reads only 3 as one.
            if let Some(f) = n.as_f64().filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15)
                && !n.is_i64()
                && !n.is_u64()
            {
                *value = Value::from(f as i64);
            }
        }
        _ => {}
    }
    Ok(())
}

/// The JSON types `schema` names (`type`, a string or a list), following a `$ref`.
fn types_of<'a>(schema: &'a Value, schemas: &'a Value) -> Vec<&'a str> {
    let schema = match schema.get("$ref").and_then(Value::as_str) {
        Some(reference) => &schemas[reference.rsplit('/').next().unwrap_or_default()],
        None => schema,
    };
    match schema.get("type") {
        Some(Value::String(t)) => vec![t.as_str()],
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    }
}

/// Whether `value`'s JSON type is one of `types` (no types admit all).
fn admits(types: &[&str], value: &Value) -> bool {
    types.is_empty()
        || types.iter().any(|t| match (*t, value) {
            ("null", Value::Null)
            | ("boolean", Value::Bool(_))
            | ("string", Value::String(_))
            | ("array", Value::Array(_))
            | ("object", Value::Object(_))
            | ("number", Value::Number(_)) => true,
            ("integer", Value::Number(n)) => {
                n.is_i64() || n.is_u64() || n.as_f64().is_some_and(|f| f.fract() == 0.0)
            }
            _ => false,
        })
}

/// `an object`, `a string or null`.
fn describe(types: &[&str]) -> String {
    let named: Vec<String> = types
        .iter()
        .filter(|t| **t != "null")
        .map(|t| match *t {
            "object" | "array" | "integer" => format!("an {t}"),
            t => format!("a {t}"),
        })
        .collect();
    if named.is_empty() {
        return "null".into();
    }
    named.join(" or ")
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
    use crate::requests::{FlowKeyRequest, JobRequest, ProgressRequest};

    fn parse_json<T: JsonBody>(raw: &[u8]) -> Result<T, ApiError> {
        let document = crate::openapi::document(&Settings::defaults().jobs);
        super::parse_json(raw, &document)
    }

    /// What the document allows is read, and what it forbids is refused: a struct is
    /// never read from an array, and an integer may be written with a zero fraction.
    #[test]
    fn bodies_are_read_as_the_document_describes_them() {
        for body in [&b"[null, null]"[..], br#"{"rate": [1, 2]}"#] {
            match parse_json::<FlowKeyRequest>(body) {
                Err(ApiError::Validation(errors)) => {
                    assert!(
                        errors[0].message.ends_with("not an array"),
                        "{}",
                        errors[0].message
                    );
                }
                other => panic!("{other:?}"),
            }
        }
        let progress: ProgressRequest = parse_json(br#"{"percent": 40.0}"#).unwrap();
        assert_eq!(progress.percent, 40);
        assert!(matches!(
            parse_json::<ProgressRequest>(br#"{"percent": 40.5}"#),
            Err(ApiError::Validation(_))
        ));
        // A JSON body's numbers are the client's: sent as written, never made integers.
        let job: JobRequest = parse_json(
            br#"{"target": {"url": "http://x", "json": {"n": 1.0}}, "max_attempts": 2.0, "retry_on_status": [409.0]}"#,
        )
        .unwrap();
        assert_eq!(job.max_attempts, Some(2));
        assert_eq!(job.retry_on_status, Some(vec![409]));
        assert_eq!(job.target.json.unwrap().to_string(), r#"{"n":1.0}"#);
        // The short way (no array, no U+0000 escape) reads what the long way reads, and
        // refuses what it refuses.
        let job: JobRequest = parse_json(
            br#"{"target": {"url": "http://x"}, "max_attempts": 2, "labels": {"a": "b"}}"#,
        )
        .unwrap();
        assert_eq!(job.max_attempts, Some(2));
        match parse_json::<JobRequest>(br#"{"target": {"url": "http://x", "body": "a\u0000"}}"#) {
            Err(ApiError::Validation(errors)) => assert_eq!(errors[0].field, "target.body"),
            other => panic!("{other:?}"),
        }
    }

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
