//! `POST /v1/jobs` and `POST /v1/jobs/batch`: a job as submitted, and its parsing into a
//! [`NewJob`] by the domain's rules (`courier_core::domain::parse`).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use courier_core::{
    Settings,
    domain::{
        DEFAULT_MAX_ATTEMPTS, DEFAULT_TIMEOUT_MS, FieldError, FlowKey, JobId, JobSpec, Method,
        NewJob, Priority, Problems, QueueName,
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
        let mut spec = JobSpec::new(target?);
        spec.timeout_ms = timeout_ms;
        spec.max_attempts = max_attempts;
        spec.backoff = backoff;
        spec.priority = priority;
        spec.retry_on_status = retry_on_status;
        spec.follow_redirects = self.follow_redirects.unwrap_or(false);
        spec.flow_key = flow_key;
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
        p.finish(parts.map(|(queue, spec, labels)| NewJob {
            id: JobId::new(),
            queue,
            spec,
            labels,
            run_at,
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
        match outbound.check_url(job.spec.target.url.as_url()) {
            Ok(()) => Ok(job),
            Err(refusal) => Err(vec![FieldError::new("target.url", refusal.to_string())]),
        }
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
