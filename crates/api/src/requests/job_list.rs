//! The query of `GET /v1/jobs`: which jobs (queue, state, labels, creation time, text in
//! the URL or the last error) and which page, parsed into the repository's filter.

use chrono::Utc;
use courier_core::{JobId, JobState, QueueName, domain::rules, repo::JobFilter};

use super::page::{Page, no_nul, unknown};
use crate::error::ApiError;

/// The filter of a job list and its page.
///
/// # Errors
/// A value that is not valid (422 naming the parameter), an unknown parameter (400).
pub fn job_list_query(query: Option<&str>) -> Result<(JobFilter, Page<JobId>), ApiError> {
    let mut filter = JobFilter::default();
    let mut page = Page::default();
    for (key, value) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        no_nul(&key, &value)?;
        if page.take(&key, &value)? {
            continue;
        }
        match key.as_ref() {
            "queue" => {
                filter.queue =
                    Some(QueueName::parse(&value).map_err(|m| ApiError::field("queue", m))?)
            }
            "state" => {
                filter.state = Some(JobState::parse(&value).ok_or_else(|| {
                    ApiError::field(
                        "state",
                        "must be scheduled, queued, running, succeeded, dead or cancelled",
                    )
                })?)
            }
            "label" => {
                let (k, v) = value
                    .split_once(':')
                    .ok_or_else(|| ApiError::field("label", "must be key:value"))?;
                filter.labels.insert(k.to_owned(), v.to_owned());
            }
            "created_after" | "created_before" => {
                let at = chrono::DateTime::parse_from_rfc3339(&value)
                    .map_err(|_| {
                        ApiError::field(
                            key.as_ref(),
                            "must be an RFC 3339 time, e.g. 2026-11-29T12:00:00Z",
                        )
                    })?
                    .with_timezone(&Utc);
                if key == "created_after" {
                    filter.created_after = Some(at);
                } else {
                    filter.created_before = Some(at);
                }
            }
            "q" => {
                let longest = rules::MAX_QUERY_TEXT;
                if value.chars().count() > longest {
                    return Err(ApiError::field(
                        "q",
                        format!("must be at most {longest} characters"),
                    ));
                }
                filter.text = Some(value.into_owned()).filter(|q| !q.is_empty());
            }
            other => return Err(unknown(other)),
        }
    }
    filter.limit = page.limit;
    filter.before = page.cursor;
    Ok((filter, page))
}
