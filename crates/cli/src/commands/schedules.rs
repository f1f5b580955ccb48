//! `courier schedules`: the schedules, one with its next occurrences, or its runs.

use courier_wire::{RunPage, ScheduleList, ScheduleView};
use serde_json::{Value, json};

use super::Context;
use crate::{
    client::encode,
    error::CliError,
    output::{self, Table, clean},
};

const MAX_PAGE: u32 = 500;

/// Lists schedules by name, following pages until `limit`.
///
/// # Errors
/// The API refusing the request.
pub async fn list(ctx: &Context, limit: u32) -> Result<(), CliError> {
    let mut schedules: Vec<ScheduleView> = Vec::new();
    let mut raw: Vec<Value> = Vec::new();
    let mut cursor: Option<String> = None;
    let next_cursor = loop {
        let want = (limit - schedules.len() as u32).min(MAX_PAGE);
        let mut path = format!("/v1/schedules?limit={want}");
        if let Some(cursor) = &cursor {
            path.push_str(&format!("&cursor={}", encode(cursor)));
        }
        let page = ctx.api.get::<ScheduleList>(&path).await?;
        schedules.extend(page.view.schedules);
        if let Some(Value::Array(items)) = page.raw.get("schedules") {
            raw.extend(items.iter().cloned());
        }
        match page.view.next_cursor {
            Some(next) if (schedules.len() as u32) < limit => cursor = Some(next),
            next => break next,
        }
    };
    if ctx.json {
        return output::json(&json!({"schedules": raw, "next_cursor": next_cursor}));
    }
    if schedules.is_empty() {
        return output::line("no schedules");
    }
    let mut table = Table::new(&["NAME", "WHEN", "QUEUE", "NEXT", "STATE", "URL"]);
    for s in &schedules {
        table.row(vec![
            clean(&s.name),
            calendar(s),
            clean(&s.job.queue),
            output::maybe_time(s.next_occurrences.first().copied()),
            if s.paused { "paused" } else { "active" }.into(),
            clean(&output::truncate(&s.job.target.url, 50)),
        ]);
    }
    table.print()
}

/// `0 9 * * MON-FRI (Europe/Warsaw)` or `every 30.0 s`.
fn calendar(s: &ScheduleView) -> String {
    match (&s.cron, s.every_ms) {
        (Some(cron), _) if s.timezone == "UTC" => clean(cron),
        (Some(cron), _) => format!("{} ({})", clean(cron), clean(&s.timezone)),
        (None, Some(ms)) => format!("every {}", output::duration_ms(ms.max(0) as u64)),
        (None, None) => "-".into(),
    }
}

/// Prints one schedule with its next occurrences.
///
/// # Errors
/// The API refusing the request (404 for an unknown name).
pub async fn get(ctx: &Context, name: &str) -> Result<(), CliError> {
    let answer = ctx
        .api
        .get::<ScheduleView>(&format!("/v1/schedules/{}", encode(name)))
        .await?;
    if ctx.json {
        return output::json(&answer.raw);
    }
    let s = &answer.view;
    let mut lines = vec![
        format!("schedule   {}", clean(&s.name)),
        format!("when       {}", calendar(s)),
        format!(
            "job        {} {} (queue {})",
            s.job.target.method.as_str(),
            clean(&s.job.target.url),
            clean(&s.job.queue)
        ),
        format!(
            "state      {}{}",
            if s.paused { "paused" } else { "active" },
            if s.note.is_empty() {
                String::new()
            } else {
                format!(" ({})", clean(&s.note))
            }
        ),
    ];
    for (i, at) in s.next_occurrences.iter().enumerate() {
        let label = if i == 0 { "next" } else { "" };
        lines.push(format!("{label:<10} {}", output::time(*at)));
    }
    for text in lines {
        output::line(&text)?;
    }
    Ok(())
}

/// Prints a schedule's runs, newest first.
///
/// # Errors
/// The API refusing the request (404 for an unknown name).
pub async fn runs(ctx: &Context, name: &str, limit: u32) -> Result<(), CliError> {
    let answer = ctx
        .api
        .get::<RunPage>(&format!(
            "/v1/schedules/{}/runs?limit={}",
            encode(name),
            limit.min(MAX_PAGE)
        ))
        .await?;
    if ctx.json {
        return output::json(&answer.raw);
    }
    if answer.view.runs.is_empty() {
        return output::line("no runs yet");
    }
    let mut table = Table::new(&["OCCURRENCE", "KIND", "OUTCOME", "LATENESS", "JOB"]);
    for run in &answer.view.runs {
        let outcome = match &run.reason {
            Some(reason) => format!("{} ({})", run.outcome, reason),
            None => run.outcome.clone(),
        };
        table.row(vec![
            output::time(run.occurrence),
            clean(&run.kind),
            clean(&outcome),
            run.lateness_ms
                .map_or("-".into(), |ms| output::duration_ms(ms.max(0) as u64)),
            run.job_id.map_or("-".into(), |id| id.to_string()),
        ]);
    }
    table.print()
}
