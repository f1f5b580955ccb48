//! Sending lines to `POST /v1/jobs/batch`, which commits all of a batch or none of it.
//! A refused batch is resolved so that its good lines still go in: the lines a 422 names
//! by index (`jobs[3].target.url`) are refused with the API's reasons and the rest sent
//! again; a refusal that names no line (a batch too large, a shape error) is bisected
//! down to the lines that cause it.

use std::{collections::BTreeMap, time::Duration};

use courier_wire::{BatchAccepted, Problem};
use reqwest::{Method, StatusCode, header};
use serde_json::{Value, json};

use super::{journal::Journal, lines::LineSet};
use crate::{
    client::{Api, api_error},
    error::CliError,
};

/// Times a batch is sent again after a 429 or 503 before the import stops.
const BUSY_RETRIES: u32 = 5;
/// The wait after a 429 or 503 without `Retry-After`, and the longest one honoured.
const BUSY_WAIT: Duration = Duration::from_secs(5);
const MAX_BUSY_WAIT: Duration = Duration::from_secs(60);

/// One line of the file, parsed, with its marker label set.
pub struct Line {
    pub number: u64,
    pub job: Value,
}

/// What became of lines, reported as they are settled (for the progress bar).
pub trait Settled {
    fn accepted(&mut self, lines: u64);
    fn refused(&mut self, line: u64, reason: &str);
}

/// What one request's answer means for its lines.
enum Answer {
    Committed,
    /// Refused for the lines at these indexes (with their reasons), or for no line in
    /// particular (an empty map).
    Refused {
        by_index: BTreeMap<usize, String>,
        problem: String,
    },
}

/// Sends `lines`, in as many requests as it takes, journaling each one.
///
/// # Errors
/// A failure that is not about the lines themselves: the API unreachable, the key
/// refused (401, 403), the API busy past the retries, a server error. The journal then
/// says whether the request in flight may have been committed.
pub async fn send(
    api: &Api,
    journal: &mut Journal,
    lines: Vec<Line>,
    settled: &mut dyn Settled,
) -> Result<(), CliError> {
    let mut work = vec![lines];
    while let Some(group) = work.pop() {
        if group.is_empty() {
            continue;
        }
        let numbers = LineSet::of(group.iter().map(|l| l.number));
        journal.sending(&numbers)?;
        let answer = match post(api, &group).await {
            Ok(answer) => answer,
            Err(Failure::NotSent(e)) => {
                journal.not_committed(&numbers)?;
                return Err(e);
            }
            // Left pending in the journal: the next run asks the API.
            Err(Failure::Unknown(e)) => return Err(e),
        };
        match answer {
            Answer::Committed => {
                journal.accepted(&numbers)?;
                settled.accepted(numbers.len());
            }
            Answer::Refused { by_index, problem } => {
                journal.not_committed(&numbers)?;
                let named: Vec<(usize, String)> = by_index
                    .into_iter()
                    .filter(|(i, _)| *i < group.len())
                    .collect();
                if !named.is_empty() {
                    let mut rest = Vec::with_capacity(group.len() - named.len());
                    let mut named = named.into_iter().peekable();
                    for (i, line) in group.into_iter().enumerate() {
                        match named.next_if(|(at, _)| *at == i) {
                            Some((_, reason)) => {
                                journal.refused(line.number, &reason)?;
                                settled.refused(line.number, &reason);
                            }
                            None => rest.push(line),
                        }
                    }
                    work.push(rest);
                } else if group.len() == 1 {
                    let number = group[0].number;
                    journal.refused(number, &problem)?;
                    settled.refused(number, &problem);
                } else {
                    let mut first = group;
                    let second = first.split_off(first.len() / 2);
                    work.push(second);
                    work.push(first);
                }
            }
        }
    }
    Ok(())
}

/// Why a request failed as a whole.
enum Failure {
    /// Certainly not committed (no connection was made, or the API answered an error).
    NotSent(CliError),
    /// Perhaps committed: the connection broke after the request went out, or the API
    /// failed (500) after it may have committed.
    Unknown(CliError),
}

/// Posts one batch; a 429 or 503 is waited out and sent again a few times.
async fn post(api: &Api, group: &[Line]) -> Result<Answer, Failure> {
    let jobs: Vec<&Value> = group.iter().map(|l| &l.job).collect();
    let body = json!({ "jobs": jobs });
    let mut busy = 0;
    loop {
        let response = api
            .request(Method::POST, "/v1/jobs/batch")
            .json(&body)
            .send()
            .await;
        let response = match response {
            Ok(response) => response,
            Err(e) if e.is_connect() => return Err(Failure::NotSent(api.unreachable(&e))),
            Err(e) => return Err(Failure::Unknown(api.unreachable(&e))),
        };
        let status = response.status();
        let retry_after = response
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        if status.is_success() {
            // Committed whatever the body says; reading it is only a check.
            return match api
                .read::<BatchAccepted>(response, "POST /v1/jobs/batch")
                .await
            {
                Ok(_) => Ok(Answer::Committed),
                Err(CliError::Unexpected { .. }) => Ok(Answer::Committed),
                Err(e) => Err(Failure::Unknown(e)),
            };
        }
        let bytes = match response.bytes().await {
            Ok(bytes) => bytes,
            Err(e) => return Err(Failure::Unknown(api.unreachable(&e))),
        };
        match status {
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
                if busy < BUSY_RETRIES =>
            {
                busy += 1;
                tokio::time::sleep(retry_after.unwrap_or(BUSY_WAIT).min(MAX_BUSY_WAIT)).await;
            }
            StatusCode::UNPROCESSABLE_ENTITY
            | StatusCode::BAD_REQUEST
            | StatusCode::PAYLOAD_TOO_LARGE => return Ok(refusal(status, &bytes)),
            s if s.is_server_error() && s != StatusCode::SERVICE_UNAVAILABLE => {
                return Err(Failure::Unknown(api_error(status, &bytes)));
            }
            _ => return Err(Failure::NotSent(api_error(status, &bytes))),
        }
    }
}

/// A refusal of the batch's content, with the reasons per line it names.
fn refusal(status: StatusCode, body: &[u8]) -> Answer {
    let problem: Option<Problem> = serde_json::from_slice(body).ok();
    let Some(problem) = problem else {
        return Answer::Refused {
            by_index: BTreeMap::new(),
            problem: format!("the API refused it with HTTP {}", status.as_u16()),
        };
    };
    let mut by_index: BTreeMap<usize, String> = BTreeMap::new();
    let mut unnamed = Vec::new();
    for e in &problem.errors {
        match split_index(&e.field) {
            Some((i, field)) => {
                let reason = by_index.entry(i).or_default();
                if !reason.is_empty() {
                    reason.push_str("; ");
                }
                if field.is_empty() {
                    reason.push_str(&e.message);
                } else {
                    reason.push_str(&format!("{field}: {}", e.message));
                }
            }
            None if e.field.is_empty() => unnamed.push(e.message.clone()),
            None => unnamed.push(format!("{}: {}", e.field, e.message)),
        }
    }
    let problem = if unnamed.is_empty() {
        problem.detail
    } else {
        format!("{}: {}", problem.detail, unnamed.join("; "))
    };
    Answer::Refused { by_index, problem }
}

/// `jobs[12].target.url` → `(12, "target.url")`; `jobs[3]` → `(3, "")`.
fn split_index(field: &str) -> Option<(usize, &str)> {
    let rest = field.strip_prefix("jobs[")?;
    let (index, rest) = rest.split_once(']')?;
    let index = index.parse().ok()?;
    Some((index, rest.strip_prefix('.').unwrap_or(rest)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problem_fields_name_the_line_by_index() {
        assert_eq!(split_index("jobs[12].target.url"), Some((12, "target.url")));
        assert_eq!(split_index("jobs[3]"), Some((3, "")));
        assert_eq!(split_index("jobs"), None);
        assert_eq!(split_index("jobs[x].a"), None);
    }

    #[test]
    fn a_422_is_split_into_reasons_per_line() {
        let body = json!({
            "type": "/problems/validation-error", "title": "Unprocessable Entity", "status": 422,
            "detail": "the request has invalid fields",
            "errors": [
                {"field": "jobs[1].target.url", "message": "must be http or https"},
                {"field": "jobs[1].max_attempts", "message": "must be between 1 and 100"},
                {"field": "jobs[4].target.bogus", "message": "unknown field `bogus`"},
            ]
        });
        let Answer::Refused { by_index, .. } = refusal(
            StatusCode::UNPROCESSABLE_ENTITY,
            body.to_string().as_bytes(),
        ) else {
            panic!("a refusal")
        };
        assert_eq!(
            by_index.get(&1).unwrap(),
            "target.url: must be http or https; max_attempts: must be between 1 and 100"
        );
        assert_eq!(
            by_index.get(&4).unwrap(),
            "target.bogus: unknown field `bogus`"
        );
    }

    #[test]
    fn a_refusal_naming_no_line_keeps_the_problem() {
        let body = json!({
            "type": "/problems/validation-error", "title": "Unprocessable Entity", "status": 422,
            "detail": "the request has invalid fields",
            "errors": [{"field": "jobs", "message": "a batch holds 1 to 10 jobs, got 20"}]
        });
        let Answer::Refused { by_index, problem } = refusal(
            StatusCode::UNPROCESSABLE_ENTITY,
            body.to_string().as_bytes(),
        ) else {
            panic!("a refusal")
        };
        assert!(by_index.is_empty());
        assert!(problem.contains("a batch holds 1 to 10 jobs"), "{problem}");
        let Answer::Refused { problem, .. } = refusal(StatusCode::PAYLOAD_TOO_LARGE, b"<html>")
        else {
            panic!("a refusal")
        };
        assert!(problem.contains("413"), "{problem}");
    }
}
