//! `POST /v1/jobs/bulk/retry` and `.../bulk/cancel`: a filter, a dry run, and the moment
//! the filter is taken at.

use chrono::{DateTime, Utc};
use courier_core::{
    JobState, QueueName,
    domain::{FieldError, Labels, rules},
    repo::bulk::{BulkAction, BulkFilter},
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{Declared, Rule};

/// Which jobs a bulk action selects: the same filter as the jobs list.
#[derive(Debug, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkFilterRequest {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    /// For a retry `dead` or `cancelled`; for a cancel `scheduled`, `queued` or
    /// `running`. Left out: every state the action applies to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// `key:value` labels the jobs must all carry.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub label: Vec<String>,
    /// RFC 3339; jobs created at or after.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_after: Option<String>,
    /// RFC 3339; jobs created before.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_before: Option<String>,
    /// Text in the target URL or the last error (case-insensitive).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub q: Option<String>,
}

/// A bulk retry or cancel.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkRequest {
    #[serde(default)]
    pub filter: BulkFilterRequest,
    /// Count the jobs that match, and change nothing.
    #[serde(default)]
    pub dry_run: bool,
    /// The moment the filter is taken at (RFC 3339, not in the future), as a dry run
    /// answered it: jobs that arrive, or end, after it are left alone. Default: now.
    pub as_of: Option<String>,
}

/// The rules of a bulk action's fields, as the document declares them; the states each
/// action takes are declared on its operation (`crate::openapi`).
pub fn declared() -> Vec<Declared> {
    use Rule::*;
    vec![
        Declared::new("BulkFilterRequest", "queue", Name(rules::QUEUE_NAME)),
        Declared::new(
            "BulkFilterRequest",
            "label",
            EachItem(Box::new(Pattern(LABEL_FILTER.into()))),
        ),
        Declared::new("BulkFilterRequest", "created_after", DateTime),
        Declared::new("BulkFilterRequest", "created_before", DateTime),
        Declared::new("BulkFilterRequest", "q", MaxChars(rules::MAX_QUERY_TEXT)),
        Declared::new("BulkRequest", "as_of", DateTime),
    ]
}

/// A label to filter on: `key:value`, the key not empty (and, as every string, no U+0000).
pub const LABEL_FILTER: &str = "^[^:\\u0000]+:[^\\u0000]*$";

fn time(field: &str, value: Option<&str>, errors: &mut Vec<FieldError>) -> Option<DateTime<Utc>> {
    let value = value?;
    match DateTime::parse_from_rfc3339(value) {
        Ok(at) => Some(at.with_timezone(&Utc)),
        Err(_) => {
            errors.push(FieldError::new(
                field,
                "must be an RFC 3339 time, e.g. 2026-11-29T12:00:00Z",
            ));
            None
        }
    }
}

impl BulkFilterRequest {
    /// The filter, checked for `action`.
    ///
    /// # Errors
    /// Every field that is wrong, under `prefix`.
    pub fn parse(
        &self,
        action: Option<BulkAction>,
        prefix: &str,
    ) -> Result<BulkFilter, Vec<FieldError>> {
        let mut errors = Vec::new();
        let field = |name: &str| format!("{prefix}{name}");
        let queue = match self.queue.as_deref().map(QueueName::parse) {
            Some(Err(m)) => {
                errors.push(FieldError::new(field("queue"), m));
                None
            }
            Some(Ok(q)) => Some(q),
            None => None,
        };
        let state = self.state.as_deref().and_then(|s| {
            let parsed = JobState::parse(s);
            let allowed = action.map_or(JobState::ALL.as_slice(), BulkAction::states);
            match parsed.filter(|state| allowed.contains(state)) {
                Some(state) => Some(state),
                None => {
                    let names: Vec<&str> = allowed.iter().map(|s| s.as_str()).collect();
                    errors.push(FieldError::new(
                        field("state"),
                        format!("must be one of {}", names.join(", ")),
                    ));
                    None
                }
            }
        });
        let mut labels = Labels::new();
        for label in &self.label {
            match label.split_once(':') {
                Some((k, v)) if !k.is_empty() => {
                    labels.insert(k.to_owned(), v.to_owned());
                }
                _ => errors.push(FieldError::new(field("label"), "must be key:value")),
            }
        }
        let created_after = time(
            &field("created_after"),
            self.created_after.as_deref(),
            &mut errors,
        );
        let created_before = time(
            &field("created_before"),
            self.created_before.as_deref(),
            &mut errors,
        );
        let text = self.q.as_deref().filter(|q| !q.is_empty());
        let longest = rules::MAX_QUERY_TEXT;
        if text.is_some_and(|q| q.chars().count() > longest) {
            errors.push(FieldError::new(
                field("q"),
                format!("must be at most {longest} characters"),
            ));
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(BulkFilter {
            queue,
            allowed_queues: None,
            state,
            labels,
            created_after,
            created_before,
            text: text.map(str::to_owned),
        })
    }
}

impl BulkRequest {
    /// The filter and the moment it is taken at (`now` unless given).
    ///
    /// # Errors
    /// Every field that is wrong; `as_of` in the future.
    pub fn parse(
        &self,
        action: BulkAction,
        now: DateTime<Utc>,
    ) -> Result<(BulkFilter, DateTime<Utc>), Vec<FieldError>> {
        let mut errors = Vec::new();
        let filter = self.filter.parse(Some(action), "filter.");
        let as_of = time("as_of", self.as_of.as_deref(), &mut errors);
        if as_of.is_some_and(|at| at > now + chrono::Duration::seconds(5)) {
            errors.push(FieldError::new("as_of", "must not be in the future"));
        }
        match filter {
            Ok(filter) if errors.is_empty() => Ok((filter, as_of.unwrap_or(now))),
            Ok(_) => Err(errors),
            Err(mut e) => {
                e.extend(errors);
                Err(e)
            }
        }
    }
}

impl crate::extract::JsonBody for BulkRequest {
    fn limit(_: &courier_core::Settings) -> usize {
        64 * 1024
    }
}
