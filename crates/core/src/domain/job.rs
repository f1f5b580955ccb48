//! A job as a client submits it, and the parsed form the rest of Courier works with.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration as ChronoDuration, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::{Backoff, Method, Target, TargetUrl};
use crate::{outbound::OutboundPolicy, settings::JobLimits};

/// A job's id: a UUIDv7, so ids sort by creation time.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, sqlx::Type,
)]
#[sqlx(transparent)]
#[serde(transparent)]
pub struct JobId(Uuid);

impl JobId {
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }

    pub fn as_uuid(&self) -> Uuid {
        self.0
    }

    /// # Errors
    /// Not a UUID.
    pub fn parse(s: &str) -> Result<Self, uuid::Error> {
        Uuid::parse_str(s).map(Self)
    }
}

impl Default for JobId {
    fn default() -> Self {
        Self::new()
    }
}

impl From<Uuid> for JobId {
    fn from(value: Uuid) -> Self {
        Self(value)
    }
}

impl std::fmt::Display for JobId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// A queue name: `[a-z0-9_-]{1,64}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct QueueName(String);

impl QueueName {
    /// # Errors
    /// A message saying what is wrong with the name.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let ok = (1..=64).contains(&raw.len())
            && raw
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        if ok {
            Ok(Self(raw.to_owned()))
        } else {
            Err("must be 1 to 64 characters of a-z, 0-9, '_' and '-'".into())
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for QueueName {
    fn default() -> Self {
        Self("default".into())
    }
}

impl TryFrom<String> for QueueName {
    type Error = String;
    fn try_from(value: String) -> Result<Self, String> {
        Self::parse(&value)
    }
}

impl From<QueueName> for String {
    fn from(value: QueueName) -> Self {
        value.0
    }
}

impl std::fmt::Display for QueueName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// 0 (lowest, the default) to 9 (highest).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "i64", into = "i16")]
pub struct Priority(u8);

impl Priority {
    pub const MAX: u8 = 9;

    /// Priority 0, the default.
    pub fn is_lowest(&self) -> bool {
        self.0 == 0
    }

    /// # Errors
    /// Out of range.
    pub fn new(value: i64) -> Result<Self, String> {
        u8::try_from(value)
            .ok()
            .filter(|p| *p <= Self::MAX)
            .map(Self)
            .ok_or_else(|| format!("must be between 0 and {}", Self::MAX))
    }

    pub fn get(self) -> u8 {
        self.0
    }
}

impl TryFrom<i64> for Priority {
    type Error = String;
    fn try_from(value: i64) -> Result<Self, String> {
        Self::new(value)
    }
}

impl From<Priority> for i16 {
    fn from(value: Priority) -> Self {
        value.0.into()
    }
}

/// Up to 16 string pairs for filtering.
pub type Labels = BTreeMap<String, String>;
const MAX_LABELS: usize = 16;

/// Everything a worker needs to make a job's calls; stored as the job's `spec` in
/// PostgreSQL and as its payload in Redis. A field equal to SPEC 2's default is left out
/// (a queued job with defaults costs 45 bytes of payload instead of 260) and reads back
/// as that default: these constants are part of the stored format.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobSpec {
    pub target: Target,
    #[serde(
        default = "default_timeout_ms",
        skip_serializing_if = "is_default_timeout_ms"
    )]
    pub timeout_ms: u64,
    #[serde(
        default = "default_max_attempts",
        skip_serializing_if = "is_default_max_attempts"
    )]
    pub max_attempts: u32,
    #[serde(default, skip_serializing_if = "Backoff::is_default")]
    pub backoff: Backoff,
    #[serde(default, skip_serializing_if = "Priority::is_lowest")]
    pub priority: Priority,
    /// Statuses retried besides 408, 425, 429 and 5xx.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retry_on_status: Vec<u16>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub follow_redirects: bool,
}

/// SPEC 2's default timeout.
pub const DEFAULT_TIMEOUT_MS: u64 = 90_000;
/// SPEC 2's default number of attempts (`reap.lua` knows it too).
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;

fn default_timeout_ms() -> u64 {
    DEFAULT_TIMEOUT_MS
}

fn is_default_timeout_ms(ms: &u64) -> bool {
    *ms == DEFAULT_TIMEOUT_MS
}

fn default_max_attempts() -> u32 {
    DEFAULT_MAX_ATTEMPTS
}

fn is_default_max_attempts(n: &u32) -> bool {
    *n == DEFAULT_MAX_ATTEMPTS
}

impl JobSpec {
    /// Whether an answer with `status` is worth another attempt.
    pub fn is_retryable_status(&self, status: u16) -> bool {
        matches!(status, 408 | 425 | 429 | 500..=599) || self.retry_on_status.contains(&status)
    }
}

/// A validated job, ready to be stored.
#[derive(Debug, Clone, PartialEq)]
pub struct NewJob {
    pub id: JobId,
    pub queue: QueueName,
    pub spec: JobSpec,
    pub labels: Labels,
    pub run_at: DateTime<Utc>,
}

/// One problem with one field of a request, by its JSON path (`target.url`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// A job as clients submit it (`POST /v1/jobs`).
#[derive(Debug, Clone, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JobRequest {
    /// `[a-z0-9_-]{1,64}`; `default` when left out.
    pub queue: Option<String>,
    pub target: TargetRequest,
    /// 1 to `max_timeout_ms` (900000 by default); 90000 when left out.
    pub timeout_ms: Option<i64>,
    /// 1 to 100; 3 when left out.
    pub max_attempts: Option<i64>,
    pub backoff: Option<BackoffRequest>,
    /// 0 to 9, higher runs first; 0 when left out.
    pub priority: Option<i64>,
    /// Not started before this RFC 3339 time. Excludes `delay_ms`.
    pub run_at: Option<String>,
    /// Not started before this many milliseconds from now. Excludes `run_at`.
    pub delay_ms: Option<i64>,
    /// Up to 16 string pairs, for filtering.
    pub labels: Option<BTreeMap<String, String>>,
    /// Extra statuses to retry besides 408, 425, 429 and 5xx.
    pub retry_on_status: Option<Vec<i64>>,
    /// Follow redirects (up to 10); off by default, when a 3xx ends the job as dead.
    pub follow_redirects: Option<bool>,
}

/// The call to make.
#[derive(Debug, Clone, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TargetRequest {
    /// Absolute `http` or `https` URL, at most 2048 bytes.
    #[schema(
        format = "uri",
        pattern = "^https?://",
        example = "https://example.com/hooks/invoice-paid"
    )]
    pub url: String,
    #[schema(value_type = Option<Method>)]
    pub method: Option<Method>,
    /// At most 64 headers and 16 KiB in all by default (settings `jobs.max_headers`, `jobs.max_header_bytes`); hop-by-hop headers are refused.
    pub headers: Option<BTreeMap<String, String>>,
    /// The body, sent as is; at most 1 MiB by default.
    pub body: Option<String>,
    /// A JSON body, sent with `Content-Type: application/json`; excludes `body`.
    #[schema(value_type = Option<Object>)]
    pub json: Option<serde_json::Value>,
}

/// Exponential backoff; fields left out keep their defaults.
#[derive(Debug, Clone, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BackoffRequest {
    /// Wait after the first failed attempt; 1000 by default.
    pub initial_ms: Option<i64>,
    /// Longest wait, which also caps `Retry-After`; 300000 by default.
    pub max_ms: Option<i64>,
    /// 1 to 100; 2.0 by default.
    pub multiplier: Option<f64>,
    /// Full jitter; on by default.
    pub jitter: Option<bool>,
}

/// Collects field errors while a request is parsed, so a client hears of all of them.
#[derive(Default)]
struct Problems(Vec<FieldError>);

impl Problems {
    fn check<T>(&mut self, field: &str, result: Result<T, String>) -> Option<T> {
        result
            .map_err(|message| self.0.push(FieldError::new(field, message)))
            .ok()
    }

    fn range(&mut self, field: &str, value: Option<i64>, min: i64, max: i64, default: i64) -> i64 {
        let value = value.unwrap_or(default);
        if (min..=max).contains(&value) {
            value
        } else {
            self.0.push(FieldError::new(
                field,
                format!("must be between {min} and {max}"),
            ));
            default
        }
    }
}

impl NewJob {
    /// Seals the job's secret header values (see [`crate::crypto`]) before it is stored.
    pub fn seal_secrets(&mut self, secrets: &crate::crypto::SecretBox) {
        let context = self.id.to_string();
        self.spec.target.seal_secrets(secrets, &context);
    }

    /// Parses a submitted job against the configured limits, with `now` for `delay_ms`.
    ///
    /// # Errors
    /// Every field that is wrong, each with its path and what is wrong with it.
    pub fn parse(
        req: JobRequest,
        limits: &JobLimits,
        now: DateTime<Utc>,
    ) -> Result<Self, Vec<FieldError>> {
        let mut p = Problems::default();
        let queue = match req.queue.as_deref() {
            Some(q) => p.check("queue", QueueName::parse(q)),
            None => Some(QueueName::default()),
        };
        let target = parse_target(req.target, limits, &mut p);
        let max_timeout = i64::try_from(limits.max_timeout_ms).unwrap_or(i64::MAX);
        let timeout_ms = p.range(
            "timeout_ms",
            req.timeout_ms,
            1,
            max_timeout,
            (DEFAULT_TIMEOUT_MS as i64).min(max_timeout),
        ) as u64;
        let max_attempts = p.range(
            "max_attempts",
            req.max_attempts,
            1,
            100,
            i64::from(DEFAULT_MAX_ATTEMPTS),
        ) as u32;
        let priority =
            Priority::new(p.range("priority", req.priority, 0, 9, 0)).unwrap_or_default();
        let backoff = parse_backoff(req.backoff.unwrap_or_default(), &mut p);
        let run_at = match (req.run_at, req.delay_ms) {
            (Some(_), Some(_)) => {
                p.0.push(FieldError::new(
                    "run_at",
                    "give at most one of run_at and delay_ms",
                ));
                now
            }
            (Some(at), None) => p
                .check(
                    "run_at",
                    DateTime::parse_from_rfc3339(&at)
                        .map(|t| t.with_timezone(&Utc))
                        .map_err(|e| format!("is not an RFC 3339 time: {e}")),
                )
                .unwrap_or(now),
            (None, Some(delay)) => {
                let delay = p.range("delay_ms", Some(delay), 0, 366 * 86_400_000, 0);
                now + ChronoDuration::milliseconds(delay)
            }
            (None, None) => now,
        };
        let labels = req.labels.unwrap_or_default();
        if labels.len() > MAX_LABELS {
            p.0.push(FieldError::new(
                "labels",
                format!("at most {MAX_LABELS} labels are allowed"),
            ));
        }
        for (key, value) in &labels {
            let key_ok = (1..=64).contains(&key.len())
                && key
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_.-/".contains(&b));
            if !key_ok {
                p.0.push(FieldError::new(
                    format!("labels.{key}"),
                    "keys are 1 to 64 characters of A-Z, a-z, 0-9, '_', '.', '-', '/'",
                ));
            }
            if value.len() > 256 {
                p.0.push(FieldError::new(
                    format!("labels.{key}"),
                    "values are at most 256 bytes",
                ));
            }
        }
        let retry_on_status: Vec<u16> = req
            .retry_on_status
            .unwrap_or_default()
            .into_iter()
            .enumerate()
            .filter_map(|(i, code)| {
                p.check(
                    &format!("retry_on_status[{i}]"),
                    u16::try_from(code)
                        .ok()
                        .filter(|c| (100..=599).contains(c))
                        .ok_or_else(|| "must be an HTTP status between 100 and 599".to_string()),
                )
            })
            .collect();
        match (queue, target, p.0.is_empty()) {
            (Some(queue), Some(target), true) => Ok(NewJob {
                id: JobId::new(),
                queue,
                spec: JobSpec {
                    target,
                    timeout_ms,
                    max_attempts,
                    backoff,
                    priority,
                    retry_on_status,
                    follow_redirects: req.follow_redirects.unwrap_or(false),
                },
                labels,
                run_at,
            }),
            _ => Err(p.0),
        }
    }
}

impl NewJob {
    /// [`Self::parse`] for a job submitted through the API, then SSRF protection's check
    /// of what the target URL already shows (an internal IP literal, `localhost`), so
    /// that such a job is refused at once rather than failing at its first attempt.
    ///
    /// # Errors
    /// Every field that is wrong; a refused URL as `target.url`.
    pub fn parse_submitted(
        req: JobRequest,
        limits: &JobLimits,
        outbound: &OutboundPolicy,
        now: DateTime<Utc>,
    ) -> Result<Self, Vec<FieldError>> {
        let job = Self::parse(req, limits, now)?;
        match outbound.check_url(job.spec.target.url.as_url()) {
            Ok(()) => Ok(job),
            Err(refusal) => Err(vec![FieldError::new("target.url", refusal.to_string())]),
        }
    }
}

fn parse_target(req: TargetRequest, limits: &JobLimits, p: &mut Problems) -> Option<Target> {
    let url = p.check("target.url", TargetUrl::parse(&req.url));
    let mut headers: Vec<(String, String)> = req.headers.unwrap_or_default().into_iter().collect();
    if let Err(errors) =
        Target::check_headers(&headers, limits.max_headers, limits.max_header_bytes)
    {
        for (name, message) in errors {
            let field = if name.is_empty() {
                "target.headers".to_string()
            } else {
                format!("target.headers.{name}")
            };
            p.0.push(FieldError::new(field, message));
        }
    }
    let body = match (req.body, req.json) {
        (Some(_), Some(_)) => {
            p.0.push(FieldError::new(
                "target.json",
                "give at most one of body and json",
            ));
            String::new()
        }
        (Some(body), None) => body,
        (None, Some(json)) => {
            if !headers
                .iter()
                .any(|(n, _)| n.eq_ignore_ascii_case("content-type"))
            {
                headers.push(("Content-Type".into(), "application/json".into()));
            }
            json.to_string()
        }
        (None, None) => String::new(),
    };
    if body.len() > limits.max_body_bytes {
        p.0.push(FieldError::new(
            "target.body",
            format!(
                "must be at most {} bytes, got {}",
                limits.max_body_bytes,
                body.len()
            ),
        ));
    }
    Some(Target {
        url: url?,
        method: req.method.unwrap_or_default(),
        headers,
        body,
    })
}

fn parse_backoff(req: BackoffRequest, p: &mut Problems) -> Backoff {
    let d = Backoff::default();
    let initial_ms = p.range(
        "backoff.initial_ms",
        req.initial_ms,
        0,
        86_400_000,
        d.initial_ms as i64,
    ) as u64;
    let max_ms = p.range("backoff.max_ms", req.max_ms, 0, 86_400_000, d.max_ms as i64) as u64;
    if max_ms < initial_ms {
        p.0.push(FieldError::new(
            "backoff.max_ms",
            "must be at least initial_ms",
        ));
    }
    let multiplier = req.multiplier.unwrap_or(d.multiplier);
    if !(1.0..=100.0).contains(&multiplier) {
        p.0.push(FieldError::new(
            "backoff.multiplier",
            "must be between 1 and 100",
        ));
    }
    Backoff {
        initial_ms,
        max_ms,
        multiplier,
        jitter: req.jitter.unwrap_or(d.jitter),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Settings;

    fn limits() -> JobLimits {
        Settings::defaults().jobs
    }

    fn request(url: &str) -> JobRequest {
        JobRequest {
            target: TargetRequest {
                url: url.into(),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn fields(req: JobRequest) -> Vec<String> {
        NewJob::parse(req, &limits(), Utc::now())
            .unwrap_err()
            .into_iter()
            .map(|e| e.field)
            .collect()
    }

    #[test]
    fn defaults_follow_the_spec() {
        let job = NewJob::parse(request("https://example.com"), &limits(), Utc::now()).unwrap();
        assert_eq!(job.queue.as_str(), "default");
        assert_eq!(job.spec.target.method, Method::Post);
        assert_eq!(job.spec.timeout_ms, 90_000);
        assert_eq!(job.spec.max_attempts, 3);
        assert_eq!(job.spec.priority.get(), 0);
        assert_eq!(job.spec.backoff, Backoff::default());
        assert!(!job.spec.follow_redirects);
    }

    #[test]
    fn a_spec_stores_only_what_differs_from_the_defaults() {
        let job = NewJob::parse(request("https://example.com/a"), &limits(), Utc::now()).unwrap();
        let json = serde_json::to_string(&job.spec).unwrap();
        assert_eq!(json, r#"{"target":{"url":"https://example.com/a"}}"#);
        let back: JobSpec = serde_json::from_str(&json).unwrap();
        assert_eq!(back, job.spec);

        let mut req = request("https://example.com/b");
        req.target.method = Some(Method::Put);
        req.timeout_ms = Some(5000);
        req.max_attempts = Some(7);
        req.priority = Some(4);
        let job = NewJob::parse(req, &limits(), Utc::now()).unwrap();
        let back: JobSpec =
            serde_json::from_str(&serde_json::to_string(&job.spec).unwrap()).unwrap();
        assert_eq!(back, job.spec);
    }

    #[test]
    fn a_spec_written_in_full_still_reads() {
        let full = r#"{"target": {"url": "http://127.0.0.1:9/x", "body": "", "method": "POST", "headers": []},
            "backoff": {"jitter": true, "max_ms": 300000, "initial_ms": 1000, "multiplier": 2.0},
            "priority": 0, "timeout_ms": 90000, "max_attempts": 3, "retry_on_status": [], "follow_redirects": false}"#;
        let spec: JobSpec = serde_json::from_str(full).unwrap();
        assert_eq!(
            serde_json::to_string(&spec).unwrap(),
            r#"{"target":{"url":"http://127.0.0.1:9/x"}}"#
        );
    }

    #[test]
    fn every_bad_field_is_reported_with_its_path() {
        let mut req = request("ftp://x");
        req.queue = Some("Bad Queue".into());
        req.priority = Some(10);
        req.max_attempts = Some(0);
        req.run_at = Some("2030-01-01T00:00:00Z".into());
        req.delay_ms = Some(5);
        assert_eq!(
            fields(req),
            ["queue", "target.url", "max_attempts", "priority", "run_at"]
        );
    }

    #[test]
    fn json_bodies_get_a_content_type() {
        let mut req = request("https://example.com");
        req.target.json = Some(serde_json::json!({"a": 1}));
        let job = NewJob::parse(req, &limits(), Utc::now()).unwrap();
        assert_eq!(job.spec.target.body, r#"{"a":1}"#);
        assert!(
            job.spec
                .target
                .headers
                .contains(&("Content-Type".into(), "application/json".into()))
        );
    }

    #[test]
    fn delay_sets_run_at() {
        let now = Utc::now();
        let mut req = request("https://example.com");
        req.delay_ms = Some(1500);
        let job = NewJob::parse(req, &limits(), now).unwrap();
        assert_eq!(job.run_at, now + ChronoDuration::milliseconds(1500));
    }

    #[test]
    fn submissions_to_internal_addresses_are_refused_on_the_url() {
        let strict = OutboundPolicy::default();
        let refused =
            NewJob::parse_submitted(request("http://10.0.0.1/"), &limits(), &strict, Utc::now())
                .unwrap_err();
        assert_eq!(refused.len(), 1);
        assert_eq!(refused[0].field, "target.url");
        assert!(
            refused[0].message.contains("10.0.0.1 is private"),
            "{}",
            refused[0].message
        );
        assert!(
            NewJob::parse_submitted(
                request("https://example.com"),
                &limits(),
                &strict,
                Utc::now()
            )
            .is_ok()
        );
        let allowed = OutboundPolicy::new(&["10.0.0.0/8".into()]).unwrap();
        assert!(
            NewJob::parse_submitted(request("http://10.0.0.1/"), &limits(), &allowed, Utc::now())
                .is_ok()
        );
    }

    #[test]
    fn body_limit_is_enforced() {
        let mut req = request("https://example.com");
        req.target.body = Some("x".repeat(limits().max_body_bytes + 1));
        assert_eq!(fields(req), ["target.body"]);
    }
}
