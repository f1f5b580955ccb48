//! `POST /v1/jobs` and `POST /v1/jobs/batch`: a job as submitted, and its parsing into a
//! [`NewJob`] by the domain's rules (`courier_core::domain::parse`).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use courier_core::{
    Settings,
    domain::{
        Callback, DEFAULT_MAX_ATTEMPTS, DEFAULT_ON, DEFAULT_TIMEOUT_MS, FieldError, FlowKey, JobId,
        JobSpec, JobState, Method, NewJob, Priority, Problems, QueueName, Target, TargetUrl,
        parse::{self, TargetInput},
    },
    outbound::OutboundPolicy,
    settings::JobLimits,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

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
    #[schema(pattern = "^[A-Za-z0-9_.:-]{1,128}$")]
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
    #[schema(format = "uri", pattern = "^https?://")]
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
    /// Longest wait, which also caps `Retry-After`; 300000 by default.
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
        let max_timeout = i64::try_from(limits.max_timeout_ms).unwrap_or(i64::MAX);
        let timeout_ms = p.range(
            "timeout_ms",
            self.timeout_ms,
            1,
            max_timeout,
            (DEFAULT_TIMEOUT_MS as i64).min(max_timeout),
        ) as u64;
        let max_attempts = p.range(
            "max_attempts",
            self.max_attempts,
            1,
            100,
            i64::from(DEFAULT_MAX_ATTEMPTS),
        ) as u32;
        let priority =
            Priority::new(p.range("priority", self.priority, 0, 9, 0)).unwrap_or_default();
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
        let url = p.check("callback.url", TargetUrl::parse(&self.url));
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

/// The longest progress message, in characters.
pub const MAX_PROGRESS_MESSAGE: usize = 512;

impl ProgressRequest {
    /// The percentage and message.
    ///
    /// # Errors
    /// Every field that is wrong.
    pub fn parse(self) -> Result<(i16, Option<String>), Vec<FieldError>> {
        let mut p = Problems::new();
        let percent = p.range("percent", Some(self.percent), 0, 100, 0) as i16;
        if self
            .message
            .as_ref()
            .is_some_and(|m| m.chars().count() > MAX_PROGRESS_MESSAGE)
        {
            p.push(
                "message",
                format!("must be at most {MAX_PROGRESS_MESSAGE} characters"),
            );
        }
        p.finish(Some((percent, self.message)))
    }
}

impl JsonBody for ProgressRequest {
    fn limit(_: &Settings) -> usize {
        8192
    }
}
