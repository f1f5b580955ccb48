//! `courier watch`: polls a job until it ends, printing each change (state, attempt,
//! progress) as it is seen. Exit 0 when it succeeded, 1 when it ended dead or cancelled.

use std::time::{Duration, Instant};

use chrono::Utc;
use courier_wire::{JobState, JobView};

use super::{Context, jobs::describe_outcome};
use crate::{
    args::WatchArgs,
    error::{CliError, exit},
    output::{self, clean},
};

/// How long the API may stay unreachable (a restart, a deploy) before watch gives up.
const OUTAGE_LIMIT: Duration = Duration::from_secs(60);

/// What makes a change worth a line.
#[derive(PartialEq)]
struct Seen {
    state: JobState,
    round: u32,
    attempts: u32,
    progress: Option<(u8, Option<String>)>,
    next_attempt_at: Option<chrono::DateTime<Utc>>,
}

impl Seen {
    fn of(job: &JobView) -> Self {
        Self {
            state: job.state,
            round: job.round,
            attempts: job.attempts,
            progress: job
                .progress
                .as_ref()
                .map(|p| (p.percent, p.message.clone())),
            next_attempt_at: job.next_attempt_at,
        }
    }
}

/// Follows the job to its end; returns the exit code.
///
/// # Errors
/// The API refusing (404 for an unknown job), or unreachable for longer than a minute.
pub async fn run(ctx: &Context, args: WatchArgs) -> Result<u8, CliError> {
    let path = format!("/v1/jobs/{}", args.id);
    let interval = Duration::from_millis(args.interval.max(50));
    let mut last: Option<Seen> = None;
    let mut outage: Option<Instant> = None;
    loop {
        match ctx.api.get::<JobView>(&path).await {
            Ok(answer) => {
                if outage.take().is_some() && !ctx.json {
                    eprintln!("courier: the API answers again");
                }
                let job = answer.view;
                let seen = Seen::of(&job);
                if last.as_ref() != Some(&seen) {
                    if ctx.json {
                        output::json_line(&answer.raw)?;
                    } else {
                        output::line(&describe_change(&job, last.as_ref()))?;
                    }
                    last = Some(seen);
                }
                match job.state {
                    JobState::Succeeded => return Ok(exit::OK),
                    JobState::Dead | JobState::Cancelled => return Ok(exit::FAILED),
                    _ => {}
                }
            }
            Err(e) if is_transient(&e) => {
                let since = *outage.get_or_insert_with(|| {
                    if !ctx.json {
                        eprintln!("courier: {e}; still trying");
                    }
                    Instant::now()
                });
                if since.elapsed() > OUTAGE_LIMIT {
                    return Err(e);
                }
            }
            Err(e) => return Err(e),
        }
        tokio::time::sleep(interval).await;
    }
}

/// An answer that may change by itself: no connection, a restarting API, rate limiting.
fn is_transient(e: &CliError) -> bool {
    matches!(e, CliError::Connection { .. }) || matches!(e.status(), Some(429 | 502 | 503 | 504))
}

/// One line: the time, the state, and what changed.
fn describe_change(job: &JobView, before: Option<&Seen>) -> String {
    let now = Utc::now().format("%H:%M:%SZ");
    let attempts = |n: u32| if n == 1 { "attempt" } else { "attempts" };
    let detail = match job.state {
        JobState::Scheduled | JobState::Queued => {
            let failed = job
                .last_outcome
                .as_ref()
                .filter(|_| job.attempts > 0)
                .map(|last| {
                    format!(
                        "attempt {} failed: {}; ",
                        job.attempts,
                        describe_outcome(last)
                    )
                })
                .unwrap_or_default();
            let next = match (job.state, job.next_attempt_at) {
                (JobState::Scheduled, Some(at)) => format!("next attempt at {}", output::time(at)),
                _ => "waiting for a worker".into(),
            };
            format!("{failed}{next}")
        }
        JobState::Running => {
            let progress = job.progress.as_ref().map(|p| {
                let message = p.message.as_deref().map(clean).unwrap_or_default();
                format!("{}% {message}", p.percent).trim_end().to_owned()
            });
            let progress_only = before.is_some_and(|b| {
                b.state == JobState::Running && b.attempts == job.attempts && b.round == job.round
            });
            match progress {
                Some(progress) if progress_only => progress,
                Some(progress) => format!(
                    "attempt {} of {}, {progress}",
                    job.attempts, job.max_attempts
                ),
                None => format!("attempt {} of {}", job.attempts, job.max_attempts),
            }
        }
        JobState::Succeeded | JobState::Dead | JobState::Cancelled => {
            let outcome = job
                .last_outcome
                .as_ref()
                .map(describe_outcome)
                .map_or(String::new(), |o| format!("{o}, "));
            format!("{outcome}after {} {}", job.attempts, attempts(job.attempts))
        }
    };
    format!("{now}  {:<9}  {detail}", job.state.as_str())
}
