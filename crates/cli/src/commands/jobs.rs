//! `courier get`, `list`, `cancel` and `retry`.

use courier_wire::{ExecutionList, JobPage, JobView};
use serde_json::{Value, json};
use uuid::Uuid;

use super::Context;
use crate::{
    args::ListArgs,
    client::encode,
    error::CliError,
    output::{self, Table, clean},
};

/// Most jobs the API returns in one page.
const MAX_PAGE: u32 = 500;

/// Prints a job and its executions.
///
/// # Errors
/// The API refusing either request (404 for an unknown job).
pub async fn get(ctx: &Context, id: Uuid) -> Result<(), CliError> {
    let job = ctx.api.get::<JobView>(&format!("/v1/jobs/{id}")).await?;
    let executions = ctx
        .api
        .get::<ExecutionList>(&format!("/v1/jobs/{id}/executions"))
        .await?;
    if ctx.json {
        return output::json(&json!({
            "job": job.raw,
            "executions": executions.raw.get("executions").cloned().unwrap_or(Value::Null),
        }));
    }
    print_job(&job.view)?;
    output::line("")?;
    if executions.view.executions.is_empty() {
        return output::line("no executions yet");
    }
    let mut table = Table::new(&[
        "ROUND", "ATTEMPT", "STARTED", "DURATION", "OUTCOME", "STATUS", "WORKER", "ERROR",
    ]);
    for e in &executions.view.executions {
        let outcome = if e.stale {
            format!("{} (stale)", e.outcome)
        } else {
            e.outcome.clone()
        };
        table.row(vec![
            e.round.to_string(),
            e.attempt.to_string(),
            output::time(e.started_at),
            output::duration_ms(u64::from(e.duration_ms)),
            clean(&outcome),
            e.status_code.map_or("-".into(), |c| c.to_string()),
            clean(&e.worker),
            e.error
                .as_deref()
                .map_or("-".into(), |m| clean(&output::truncate(m, 80))),
        ]);
    }
    table.print()
}

/// The job's fields, one per line.
pub fn print_job(job: &JobView) -> Result<(), CliError> {
    let mut lines = vec![
        format!("job        {}", job.id),
        format!("state      {}", job.state),
        format!(
            "queue      {} (priority {})",
            clean(&job.queue),
            job.priority
        ),
        format!(
            "target     {} {}",
            job.target.method.as_str(),
            clean(&job.target.url)
        ),
        format!(
            "attempts   {} of {} (round {})",
            job.attempts, job.max_attempts, job.round
        ),
    ];
    if let Some(at) = job.next_attempt_at {
        lines.push(format!("next       {}", output::time(at)));
    }
    if let Some(last) = &job.last_outcome {
        lines.push(format!("last       {}", describe_outcome(last)));
    }
    if let Some(p) = &job.progress {
        lines.push(format!(
            "progress   {}%{}",
            p.percent,
            p.message
                .as_deref()
                .map_or(String::new(), |m| format!(" {}", clean(m)))
        ));
    }
    if !job.labels.is_empty() {
        let labels: Vec<String> = job
            .labels
            .iter()
            .map(|(k, v)| format!("{}={}", clean(k), clean(v)))
            .collect();
        lines.push(format!("labels     {}", labels.join(" ")));
    }
    if let Some(key) = &job.flow_key {
        lines.push(format!("flow key   {}", clean(key)));
    }
    if let Some(s) = &job.schedule {
        lines.push(format!(
            "schedule   {} at {}",
            clean(&s.name),
            output::time(s.occurrence)
        ));
    }
    if let Some(parent) = job.callback_of {
        lines.push(format!("callback of {parent}"));
    }
    lines.push(format!("created    {}", output::time(job.created_at)));
    if let Some(at) = job.finished_at {
        lines.push(format!("finished   {}", output::time(at)));
    }
    for text in lines {
        output::line(&text)?;
    }
    Ok(())
}

/// `200 in 12 ms`, `connection refused after 3.0 s`.
pub fn describe_outcome(last: &courier_wire::LastOutcome) -> String {
    let duration = output::duration_ms(u64::from(last.duration_ms));
    // A failed status's error is only `HTTP 503`: the code says it already.
    let error = last
        .error
        .as_ref()
        .filter(|e| last.status_code.is_none_or(|c| **e != format!("HTTP {c}")));
    match (last.status_code, error) {
        (Some(code), Some(error)) => format!("{code} in {duration}: {}", clean(error)),
        (Some(code), None) => format!("{code} in {duration}"),
        (None, Some(error)) => format!("{} after {duration}", clean(error)),
        (None, None) => format!("no answer after {duration}"),
    }
}

/// Lists jobs, newest first, following pages until `--limit` jobs.
///
/// # Errors
/// The API refusing a filter (422) or the request.
pub async fn list(ctx: &Context, args: ListArgs) -> Result<(), CliError> {
    let mut filter = String::new();
    if let Some(queue) = &args.queue {
        filter.push_str(&format!("&queue={}", encode(queue)));
    }
    if let Some(state) = args.state {
        filter.push_str(&format!("&state={state}"));
    }
    for (key, value) in &args.labels {
        filter.push_str(&format!("&label={}", encode(&format!("{key}:{value}"))));
    }
    let mut jobs: Vec<JobView> = Vec::new();
    let mut raw: Vec<Value> = Vec::new();
    let mut cursor: Option<String> = None;
    let next_cursor = loop {
        let want = (args.limit - jobs.len() as u32).min(MAX_PAGE);
        let mut path = format!("/v1/jobs?limit={want}{filter}");
        if let Some(cursor) = &cursor {
            path.push_str(&format!("&cursor={}", encode(cursor)));
        }
        let page = ctx.api.get::<JobPage>(&path).await?;
        jobs.extend(page.view.jobs);
        if let Some(Value::Array(items)) = page.raw.get("jobs") {
            raw.extend(items.iter().cloned());
        }
        match page.view.next_cursor {
            Some(next) if (jobs.len() as u32) < args.limit => cursor = Some(next),
            next => break next,
        }
    };
    if ctx.json {
        return output::json(&json!({"jobs": raw, "next_cursor": next_cursor}));
    }
    if jobs.is_empty() {
        return output::line("no jobs");
    }
    let mut table = Table::new(&["ID", "STATE", "QUEUE", "ATTEMPTS", "CREATED", "URL"]);
    for job in &jobs {
        table.row(vec![
            job.id.to_string(),
            job.state.to_string(),
            clean(&job.queue),
            format!("{}/{}", job.attempts, job.max_attempts),
            output::time(job.created_at),
            clean(&output::truncate(&job.target.url, 60)),
        ]);
    }
    table.print()?;
    if next_cursor.is_some() {
        output::line(&format!("(the first {}; more with --limit)", jobs.len()))?;
    }
    Ok(())
}

/// Cancels a job.
///
/// # Errors
/// The API refusing (404 unknown, 409 already finished).
pub async fn cancel(ctx: &Context, id: Uuid) -> Result<(), CliError> {
    let job = ctx
        .api
        .post::<JobView>(&format!("/v1/jobs/{id}/cancel"), None)
        .await?;
    if ctx.json {
        return output::json(&job.raw);
    }
    output::line(&format!("job {id} is {}", job.view.state))
}

/// Runs a dead or cancelled job again.
///
/// # Errors
/// The API refusing (404 unknown, 409 neither dead nor cancelled).
pub async fn retry(ctx: &Context, id: Uuid) -> Result<(), CliError> {
    let job = ctx
        .api
        .post::<JobView>(&format!("/v1/jobs/{id}/retry"), None)
        .await?;
    if ctx.json {
        return output::json(&job.raw);
    }
    output::line(&format!(
        "job {id} is {} again (round {})",
        job.view.state, job.view.round
    ))
}
