//! `POST /v1/jobs` and `POST /v1/jobs/batch`: a job as submitted, and its parsing into a
//! [`NewJob`] by the domain's rules (`courier_core::domain::parse`).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use courier_core::{
    Settings,
    domain::{
        COURIER_HEADER_PREFIX, Callback, DEFAULT_MAX_ATTEMPTS, DEFAULT_ON, DEFAULT_TIMEOUT_MS,
        FieldError, FlowKey, HEADER_NAME_CHARS, HOP_BY_HOP, JobId, JobSpec, JobState,
        MAX_URL_BYTES, Method, NewJob, Priority, Problems, QueueName, Target, TargetUrl,
        parse::{self, TargetInput},
        rules::{self, IntRange},
    },
    outbound::OutboundPolicy,
    settings::JobLimits,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{Declared, Rule};
use crate::extract::JsonBody;

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
    /// `[A-Za-z0-9_.:-]{1,128}`: the flow key (a tenant, the target's host) whose rate and
    /// concurrency limits this job's calls count against; see `PUT /v1/flow-keys/{key}`.
    pub flow_key: Option<String>,
    /// Where to POST the job (as `GET /v1/jobs/{id}` shows it) when it ends in a state of
    /// `on`: a job of its own, signed and retried like any job, made in the transaction
    /// that ends this one.
    pub callback: Option<CallbackRequest>,
}

/// A job's callback.
#[derive(Debug, Clone, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CallbackRequest {
    /// Absolute `http` or `https` URL, under the same SSRF rules as a target.
    #[schema(format = "uri")]
    pub url: String,
    /// Sent with the callback, under the same limits as a target's; secret-looking values
    /// are encrypted at rest and shown as `[redacted]`.
    pub headers: Option<BTreeMap<String, String>>,
    /// Any of `succeeded`, `dead` and `cancelled`; `["succeeded", "dead"]` when left out.
    pub on: Option<Vec<String>>,
}

/// The call to make.
#[derive(Debug, Clone, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TargetRequest {
    /// Absolute `http` or `https` URL, at most 2048 bytes.
    #[schema(format = "uri", example = "https://example.com/hooks/invoice-paid")]
    pub url: String,
    #[schema(value_type = Option<Method>)]
    pub method: Option<Method>,
    /// At most 64 headers and 16 KiB in all by default (settings `jobs.max_headers`, `jobs.max_header_bytes`); hop-by-hop headers are refused.
    pub headers: Option<BTreeMap<String, String>>,
    /// The body, sent as is; at most 1 MiB by default.
    pub body: Option<String>,
    /// A JSON body (any JSON value), sent with `Content-Type: application/json`; excludes `body`.
    #[schema(value_type = Option<serde_json::Value>)]
    pub json: Option<serde_json::Value>,
}

/// Exponential backoff; fields left out keep their defaults.
#[derive(Debug, Clone, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BackoffRequest {
    /// Wait after the first failed attempt; 1000 by default.
    pub initial_ms: Option<i64>,
    /// Longest wait, which also caps `initial_ms` and `Retry-After`; 300000 by default.
    pub max_ms: Option<i64>,
    /// 1 to 100; 2.0 by default.
    pub multiplier: Option<f64>,
    /// Full jitter; on by default.
    pub jitter: Option<bool>,
}

/// `POST /v1/jobs/batch`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    /// 1 to 1000 jobs, accepted all together or not at all.
    pub jobs: Vec<JobRequest>,
}

/// The rules of a job's fields, as the document declares them (see [`super::Rule`]).
pub fn declared(limits: &JobLimits) -> Vec<Declared> {
    use Rule::*;
    let headers = || {
        All(vec![
            MaxProperties(limits.max_headers),
            Keys(Box::new(All(vec![
                Pattern(format!(
                    "^[A-Za-z0-9{}]+$",
                    regex_class_escape(HEADER_NAME_CHARS)
                )),
                Schema(serde_json::json!({"not": {"pattern": reserved_header_pattern()}})),
            ]))),
            // No control character but tab.
            Values(Box::new(Pattern(
                "^[^\\u0000-\\u0008\\u000A-\\u001F\\u007F]*$".into(),
            ))),
        ])
    };
    let url = || All(vec![MaxChars(MAX_URL_BYTES), Pattern(URL_PATTERN.into())]);
    let states: Vec<&'static str> = JobState::ALL
        .iter()
        .filter(|s| s.is_terminal())
        .map(|s| s.as_str())
        .collect();
    vec![
        Declared::new("JobRequest", "queue", Name(rules::QUEUE_NAME)),
        Declared::new("JobRequest", "timeout_ms", Int(timeout_range(limits))),
        Declared::new("JobRequest", "max_attempts", Int(rules::MAX_ATTEMPTS)),
        Declared::new("JobRequest", "priority", Int(rules::PRIORITY)),
        Declared::new("JobRequest", "run_at", DateTime),
        Declared::new("JobRequest", "delay_ms", Int(rules::DELAY_MS)),
        Declared::new(
            "JobRequest",
            "labels",
            All(vec![
                MaxProperties(rules::MAX_LABELS),
                Keys(Box::new(Name(rules::LABEL_KEY))),
                Values(Box::new(MaxChars(rules::MAX_LABEL_VALUE))),
            ]),
        ),
        Declared::new(
            "JobRequest",
            "retry_on_status",
            EachItem(Box::new(Int(rules::HTTP_STATUS))),
        ),
        Declared::new("JobRequest", "flow_key", Name(rules::FLOW_KEY)),
        // `run_at` and `delay_ms` exclude each other.
        Declared::new(
            "JobRequest",
            "",
            Schema(serde_json::json!({"not": {
                "required": ["run_at", "delay_ms"],
                "properties": {"run_at": {"type": "string"}, "delay_ms": {"type": "integer"}}
            }})),
        ),
        Declared::new("TargetRequest", "url", url()),
        Declared::new("TargetRequest", "headers", headers()),
        Declared::new("TargetRequest", "body", MaxChars(limits.max_body_bytes)),
        // `body` and `json` exclude each other (`json: null` is no JSON body).
        Declared::new(
            "TargetRequest",
            "",
            Schema(serde_json::json!({"not": {
                "required": ["body", "json"],
                "properties": {"body": {"type": "string"}, "json": {"not": {"type": "null"}}}
            }})),
        ),
        Declared::new("BackoffRequest", "initial_ms", Int(rules::BACKOFF_MS)),
        Declared::new("BackoffRequest", "max_ms", Int(rules::BACKOFF_MS)),
        Declared::new(
            "BackoffRequest",
            "multiplier",
            Number {
                min: rules::BACKOFF_MULTIPLIER.0,
                exclusive: false,
                max: rules::BACKOFF_MULTIPLIER.1,
            },
        ),
        Declared::new("CallbackRequest", "url", url()),
        Declared::new("CallbackRequest", "headers", headers()),
        Declared::new(
            "CallbackRequest",
            "on",
            All(vec![
                EachItem(Box::new(OneOf(states))),
                Schema(serde_json::json!({"minItems": 1})),
            ]),
        ),
        Declared::new("BatchRequest", "jobs", Items(rules::BATCH_JOBS)),
        Declared::new("ProgressRequest", "percent", Int(rules::PERCENT)),
        Declared::new(
            "ProgressRequest",
            "message",
            MaxChars(rules::MAX_PROGRESS_MESSAGE),
        ),
    ]
}

/// What a URL must start with.
const URL_PATTERN: &str = "^[Hh][Tt][Tt][Pp][Ss]?://";

/// `chars` written to stand for themselves inside a regular expression's class.
fn regex_class_escape(chars: &str) -> String {
    let mut out: String = chars
        .chars()
        .filter(|c| *c != '-')
        .map(|c| match c {
            '^' | ']' | '\\' => format!("\\{c}"),
            c => c.to_string(),
        })
        .collect();
    if chars.contains('-') {
        out.push('-');
    }
    out
}

/// The names of the headers a job may not set ([`HOP_BY_HOP`] and Courier's own), in
/// any case, as a regular expression.
fn reserved_header_pattern() -> String {
    let any_case = |name: &str| -> String {
        name.chars()
            .map(|c| {
                if c.is_ascii_alphabetic() {
                    format!("[{}{}]", c.to_ascii_uppercase(), c.to_ascii_lowercase())
                } else {
                    regex_class_escape(&c.to_string())
                }
            })
            .collect()
    };
    let names: Vec<String> = HOP_BY_HOP.iter().map(|n| any_case(n)).collect();
    format!(
        "^(?:(?:{})$|{})",
        names.join("|"),
        any_case(COURIER_HEADER_PREFIX)
    )
}

/// A job's `timeout_ms`: 1 to the configured longest.
pub fn timeout_range(limits: &JobLimits) -> IntRange {
    IntRange::new(1, i64::try_from(limits.max_timeout_ms).unwrap_or(i64::MAX))
}

impl JsonBody for JobRequest {
    fn limit(settings: &Settings) -> usize {
        settings.server.max_request_bytes
    }
}

impl JsonBody for BatchRequest {
    fn limit(settings: &Settings) -> usize {
        settings.server.max_batch_request_bytes
    }
}

impl TargetRequest {
    /// The call, as the domain's parsing takes it.
    pub fn into_input(self) -> TargetInput {
        TargetInput {
            url: self.url,
            method: self.method,
            headers: self.headers,
            body: self.body,
            json: self.json,
        }
    }
}

impl JobRequest {
    /// The job's spec, queue and labels; problems go to `p` (fields relative to it).
    pub fn parse_parts(
        self,
        p: &mut Problems,
        limits: &JobLimits,
    ) -> Option<(QueueName, JobSpec, courier_core::domain::Labels)> {
        let queue = match self.queue.as_deref() {
            Some(q) => p.check("queue", QueueName::parse(q)),
            None => Some(QueueName::default()),
        };
        let target = parse::target(p, "target", self.target.into_input(), limits);
        let timeouts = timeout_range(limits);
        let timeout_ms = p.range(
            "timeout_ms",
            self.timeout_ms,
            timeouts,
            (DEFAULT_TIMEOUT_MS as i64).min(timeouts.max),
        ) as u64;
        let max_attempts = p.range(
            "max_attempts",
            self.max_attempts,
            rules::MAX_ATTEMPTS,
            i64::from(DEFAULT_MAX_ATTEMPTS),
        ) as u32;
        let priority = Priority::new(p.range("priority", self.priority, rules::PRIORITY, 0))
            .unwrap_or_default();
        let backoff = self.backoff.unwrap_or_default();
        let backoff = parse::backoff(
            p,
            backoff.initial_ms,
            backoff.max_ms,
            backoff.multiplier,
            backoff.jitter,
        );
        let labels = parse::labels(p, self.labels);
        let retry_on_status = parse::retry_statuses(p, self.retry_on_status);
        let flow_key = self
            .flow_key
            .as_deref()
            .and_then(|key| p.check("flow_key", FlowKey::parse(key)));
        let callback = self.callback.and_then(|c| c.parse(p, limits));
        let mut spec = JobSpec::new(target?);
        spec.timeout_ms = timeout_ms;
        spec.max_attempts = max_attempts;
        spec.backoff = backoff;
        spec.priority = priority;
        spec.retry_on_status = retry_on_status;
        spec.follow_redirects = self.follow_redirects.unwrap_or(false);
        spec.flow_key = flow_key;
        spec.callback = callback;
        Some((queue?, spec, labels))
    }

    /// Parses a submitted job against the configured limits, with `now` for `delay_ms`.
    ///
    /// # Errors
    /// Every field that is wrong, each with its path and what is wrong with it.
    pub fn parse(self, limits: &JobLimits, now: DateTime<Utc>) -> Result<NewJob, Vec<FieldError>> {
        let mut p = Problems::new();
        let (run_at, delay_ms) = (self.run_at.clone(), self.delay_ms);
        let run_at = parse::run_at(&mut p, run_at, delay_ms, now);
        let parts = self.parse_parts(&mut p, limits);
        p.finish(parts.map(|(queue, mut spec, labels)| {
            spec.note_due(run_at, now);
            NewJob {
                id: JobId::new(),
                queue,
                spec,
                labels,
                run_at,
                callback_of: None,
            }
        }))
    }

    /// [`Self::parse`], then SSRF protection's check of what the target URL already
    /// shows (an internal IP literal, `localhost`), so that such a job is refused at once
    /// rather than failing at its first attempt.
    ///
    /// # Errors
    /// Every field that is wrong; a refused URL as `target.url`.
    pub fn parse_submitted(
        self,
        limits: &JobLimits,
        outbound: &OutboundPolicy,
        now: DateTime<Utc>,
    ) -> Result<NewJob, Vec<FieldError>> {
        let job = self.parse(limits, now)?;
        let refused = refused_urls(&job.spec, outbound);
        if refused.is_empty() {
            Ok(job)
        } else {
            Err(refused)
        }
    }
}

/// SSRF protection's refusals of the URLs a spec shows (its target's and its callback's),
/// each under its field.
pub fn refused_urls(spec: &JobSpec, outbound: &OutboundPolicy) -> Vec<FieldError> {
    let mut urls = vec![("target.url", spec.target.url.as_url())];
    if let Some(callback) = &spec.callback {
        urls.push(("callback.url", callback.url.as_url()));
    }
    urls.into_iter()
        .filter_map(|(field, url)| {
            outbound
                .check_url(url)
                .err()
                .map(|refusal| FieldError::new(field, refusal.to_string()))
        })
        .collect()
}

impl CallbackRequest {
    /// The callback; problems under `callback`.
    fn parse(self, p: &mut Problems, limits: &JobLimits) -> Option<Callback> {
        let url = p.check("callback.url", TargetUrl::parse_submitted(&self.url));
        let headers: Vec<(String, String)> = self.headers.unwrap_or_default().into_iter().collect();
        if let Err(errors) =
            Target::check_headers(&headers, limits.max_headers, limits.max_header_bytes)
        {
            for (name, message) in errors {
                let at = if name.is_empty() {
                    "callback.headers".to_owned()
                } else {
                    format!("callback.headers.{name}")
                };
                p.push(&at, message);
            }
        }
        let on = match self.on {
            None => DEFAULT_ON.to_vec(),
            Some(names) => {
                let mut on = Vec::new();
                for name in &names {
                    match JobState::parse(name).filter(|s| s.is_terminal()) {
                        Some(state) if !on.contains(&state) => on.push(state),
                        Some(_) => {}
                        None => p.push(
                            "callback.on",
                            format!("{name:?} is not one of succeeded, dead and cancelled"),
                        ),
                    }
                }
                if names.is_empty() {
                    p.push("callback.on", "must name at least one state");
                }
                on
            }
        };
        Some(Callback {
            url: url?,
            headers,
            on,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use courier_core::domain::Backoff;

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
        req.parse(&limits(), Utc::now())
            .unwrap_err()
            .into_iter()
            .map(|e| e.field)
            .collect()
    }

    #[test]
    fn defaults_follow_the_spec() {
        let job = request("https://example.com")
            .parse(&limits(), Utc::now())
            .unwrap();
        assert_eq!(job.queue.as_str(), "default");
        assert_eq!(job.spec.target.method, Method::Post);
        assert_eq!(job.spec.timeout_ms, 90_000);
        assert_eq!(job.spec.max_attempts, 3);
        assert_eq!(job.spec.priority.get(), 0);
        assert_eq!(job.spec.backoff, Backoff::default());
        assert!(!job.spec.follow_redirects);
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
            ["run_at", "queue", "target.url", "max_attempts", "priority"]
        );
    }

    #[test]
    fn submissions_to_internal_addresses_are_refused_on_the_url() {
        let strict = OutboundPolicy::default();
        let refused = request("http://10.0.0.1/")
            .parse_submitted(&limits(), &strict, Utc::now())
            .unwrap_err();
        assert_eq!(refused.len(), 1);
        assert_eq!(refused[0].field, "target.url");
        assert!(
            refused[0].message.contains("10.0.0.1 is private"),
            "{}",
            refused[0].message
        );
        assert!(
            request("https://example.com")
                .parse_submitted(&limits(), &strict, Utc::now())
                .is_ok()
        );
        let allowed = OutboundPolicy::new(&["10.0.0.0/8".into()]).unwrap();
        assert!(
            request("http://10.0.0.1/")
                .parse_submitted(&limits(), &allowed, Utc::now())
                .is_ok()
        );
    }
}

/// `POST /v1/jobs/{id}/progress`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProgressRequest {
    /// 0 to 100.
    pub percent: i64,
    /// At most 512 characters.
    pub message: Option<String>,
}

impl ProgressRequest {
    /// The percentage and message.
    ///
    /// # Errors
    /// Every field that is wrong.
    pub fn parse(self) -> Result<(i16, Option<String>), Vec<FieldError>> {
        let mut p = Problems::new();
        let percent = p.range("percent", Some(self.percent), rules::PERCENT, 0) as i16;
        let longest = rules::MAX_PROGRESS_MESSAGE;
        if self
            .message
            .as_ref()
            .is_some_and(|m| m.chars().count() > longest)
        {
            p.push("message", format!("must be at most {longest} characters"));
        }
        p.finish(Some((percent, self.message)))
    }
}

impl JsonBody for ProgressRequest {
    fn limit(_: &Settings) -> usize {
        8192
    }
}
