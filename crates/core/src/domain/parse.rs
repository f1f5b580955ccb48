//! Parsing a submitted job's fields into domain values, every problem reported with
//! its field's path (`target.url`, `job.backoff.max_ms`). The request types themselves
//! belong to the API; these are the rules they share (jobs, schedules' job templates,
//! callbacks).

use chrono::{DateTime, Duration as ChronoDuration, Utc};

use super::rules::{self, IntRange};
use super::{Backoff, Labels, Method, Target, TargetUrl};
use crate::settings::JobLimits;

pub use courier_wire::FieldError;

/// Collects field errors while a request is parsed, so a client hears of all of them.
/// Fields are named relative to a prefix (`job.` inside a schedule).
#[derive(Debug, Default)]
pub struct Problems {
    prefix: String,
    errors: Vec<FieldError>,
}

impl Problems {
    pub fn new() -> Self {
        Self::default()
    }

    /// Problems whose fields are under `prefix` (`"job"` gives `job.target.url`).
    pub fn under(prefix: &str) -> Self {
        Self {
            prefix: format!("{prefix}."),
            errors: Vec::new(),
        }
    }

    /// Records a problem with `field` (relative to the prefix; empty for the whole).
    pub fn push(&mut self, field: &str, message: impl Into<String>) {
        let field = match (self.prefix.is_empty(), field.is_empty()) {
            (_, true) => self.prefix.trim_end_matches('.').to_owned(),
            (true, false) => field.to_owned(),
            (false, false) => format!("{}{field}", self.prefix),
        };
        self.errors.push(FieldError::new(field, message));
    }

    /// The value, or `None` with its problem recorded.
    pub fn check<T>(&mut self, field: &str, result: Result<T, String>) -> Option<T> {
        result.map_err(|message| self.push(field, message)).ok()
    }

    /// `value` (or `default` when absent) if within `range`; otherwise a problem.
    pub fn range(&mut self, field: &str, value: Option<i64>, range: IntRange, default: i64) -> i64 {
        let value = value.unwrap_or(default);
        match range.check(value) {
            Ok(value) => value,
            Err(message) => {
                self.push(field, message);
                default
            }
        }
    }

    /// Takes in another collector's problems (made with [`Self::under`] a sub-prefix).
    pub fn absorb(&mut self, other: Problems) {
        self.errors.extend(other.errors);
    }

    pub fn is_empty(&self) -> bool {
        self.errors.is_empty()
    }

    /// `value` when nothing was wrong, otherwise every problem.
    ///
    /// # Errors
    /// The problems recorded.
    pub fn finish<T>(self, value: Option<T>) -> Result<T, Vec<FieldError>> {
        match value {
            Some(value) if self.errors.is_empty() => Ok(value),
            _ => Err(self.errors),
        }
    }
}

/// The parts of a call as submitted.
#[derive(Debug, Default)]
pub struct TargetInput {
    pub url: String,
    pub method: Option<Method>,
    pub headers: Option<std::collections::BTreeMap<String, String>>,
    pub body: Option<String>,
    pub json: Option<serde_json::Value>,
}

/// A call: URL, headers (within the limits, none hop-by-hop) and body (a string, or
/// JSON sent with `Content-Type: application/json`); problems under `field`.
pub fn target(
    p: &mut Problems,
    field: &str,
    input: TargetInput,
    limits: &JobLimits,
) -> Option<Target> {
    let url = p.check(
        &format!("{field}.url"),
        TargetUrl::parse_submitted(&input.url),
    );
    let mut headers: Vec<(String, String)> =
        input.headers.unwrap_or_default().into_iter().collect();
    if let Err(errors) =
        Target::check_headers(&headers, limits.max_headers, limits.max_header_bytes)
    {
        for (name, message) in errors {
            let at = if name.is_empty() {
                format!("{field}.headers")
            } else {
                format!("{field}.headers.{name}")
            };
            p.push(&at, message);
        }
    }
    let body = match (input.body, input.json) {
        (Some(_), Some(_)) => {
            p.push(
                &format!("{field}.json"),
                "give at most one of body and json",
            );
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
        p.push(
            &format!("{field}.body"),
            format!(
                "must be at most {} bytes, got {}",
                limits.max_body_bytes,
                body.len()
            ),
        );
    }
    Some(Target {
        url: url?,
        method: input.method.unwrap_or_default(),
        headers,
        body,
    })
}

/// Exponential backoff; fields left out keep their defaults.
pub fn backoff(
    p: &mut Problems,
    initial_ms: Option<i64>,
    max_ms: Option<i64>,
    multiplier: Option<f64>,
    jitter: Option<bool>,
) -> Backoff {
    let d = Backoff::default();
    let initial_ms = p.range(
        "backoff.initial_ms",
        initial_ms,
        rules::BACKOFF_MS,
        d.initial_ms as i64,
    ) as u64;
    let max_ms = p.range("backoff.max_ms", max_ms, rules::BACKOFF_MS, d.max_ms as i64) as u64;
    // A `max_ms` below `initial_ms` caps every wait, the first included: attempt n
    // waits `min(max_ms, initial_ms * multiplier^(n-1))`, whatever the two are.
    let multiplier = multiplier.unwrap_or(d.multiplier);
    let (min, max) = rules::BACKOFF_MULTIPLIER;
    if !(min..=max).contains(&multiplier) {
        p.push(
            "backoff.multiplier",
            format!("must be between {min} and {max}"),
        );
    }
    Backoff {
        initial_ms,
        max_ms,
        multiplier,
        jitter: jitter.unwrap_or(d.jitter),
    }
}

/// At most 16 labels; keys of `[A-Za-z0-9_.\-/]{1,64}`, values of at most 256 characters.
pub fn labels(p: &mut Problems, labels: Option<Labels>) -> Labels {
    let labels = labels.unwrap_or_default();
    if labels.len() > rules::MAX_LABELS {
        p.push(
            "labels",
            format!("at most {} labels are allowed", rules::MAX_LABELS),
        );
    }
    for (key, value) in &labels {
        if !rules::LABEL_KEY.allows(key) {
            p.push(
                &format!("labels.{key}"),
                format!("keys are {}", rules::LABEL_KEY.describe()),
            );
        }
        if value.chars().count() > rules::MAX_LABEL_VALUE {
            p.push(
                &format!("labels.{key}"),
                format!("values are at most {} characters", rules::MAX_LABEL_VALUE),
            );
        }
    }
    labels
}

/// When the job may start: `run_at` (RFC 3339), `delay_ms` from `now`, or `now`.
pub fn run_at(
    p: &mut Problems,
    run_at: Option<String>,
    delay_ms: Option<i64>,
    now: DateTime<Utc>,
) -> DateTime<Utc> {
    match (run_at, delay_ms) {
        (Some(_), Some(_)) => {
            p.push("run_at", "give at most one of run_at and delay_ms");
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
            let delay = p.range("delay_ms", Some(delay), rules::DELAY_MS, 0);
            now + ChronoDuration::milliseconds(delay)
        }
        (None, None) => now,
    }
}

/// Extra statuses to retry, each an HTTP status.
pub fn retry_statuses(p: &mut Problems, statuses: Option<Vec<i64>>) -> Vec<u16> {
    statuses
        .unwrap_or_default()
        .into_iter()
        .enumerate()
        .filter_map(|(i, code)| {
            p.check(
                &format!("retry_on_status[{i}]"),
                rules::HTTP_STATUS
                    .check(code)
                    .map(|c| c as u16)
                    .map_err(|_| {
                        let r = rules::HTTP_STATUS;
                        format!("must be an HTTP status between {} and {}", r.min, r.max)
                    }),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Settings;

    #[test]
    fn fields_are_named_under_their_prefix() {
        let mut p = Problems::under("job");
        p.push("target.url", "bad");
        p.push("", "whole");
        let mut top = Problems::new();
        top.push("name", "bad");
        top.absorb(p);
        let fields: Vec<String> = top
            .finish::<()>(None)
            .unwrap_err()
            .into_iter()
            .map(|e| e.field)
            .collect();
        assert_eq!(fields, ["name", "job.target.url", "job"]);
    }

    #[test]
    fn json_bodies_get_a_content_type_and_the_body_limit_holds() {
        let limits = Settings::defaults().jobs;
        let mut p = Problems::new();
        let t = target(
            &mut p,
            "target",
            TargetInput {
                url: "https://example.com".into(),
                json: Some(serde_json::json!({"a": 1})),
                ..Default::default()
            },
            &limits,
        )
        .unwrap();
        assert!(p.is_empty());
        assert_eq!(t.body, r#"{"a":1}"#);
        assert!(
            t.headers
                .contains(&("Content-Type".into(), "application/json".into()))
        );

        let mut p = Problems::new();
        target(
            &mut p,
            "target",
            TargetInput {
                url: "https://example.com".into(),
                body: Some("x".repeat(limits.max_body_bytes + 1)),
                ..Default::default()
            },
            &limits,
        );
        assert_eq!(p.finish::<()>(None).unwrap_err()[0].field, "target.body");
    }

    #[test]
    fn delay_sets_run_at() {
        let now = Utc::now();
        let mut p = Problems::new();
        assert_eq!(
            run_at(&mut p, None, Some(1500), now),
            now + ChronoDuration::milliseconds(1500)
        );
        run_at(&mut p, Some("2030-01-01T00:00:00Z".into()), Some(5), now);
        assert!(!p.is_empty());
    }
}
