//! `courier queues`: depth per state, throughput of the last hour, flow control.

use courier_wire::{QueueList, QueueView};

use super::Context;
use crate::{
    client::encode,
    error::CliError,
    output::{self, Table, clean},
};

/// Prints every queue, or the one named.
///
/// # Errors
/// The API refusing the request.
pub async fn run(ctx: &Context, name: Option<String>) -> Result<(), CliError> {
    let (queues, raw) = match name {
        Some(name) => {
            let answer = ctx
                .api
                .get::<QueueView>(&format!("/v1/queues/{}", encode(&name)))
                .await?;
            (vec![answer.view], answer.raw)
        }
        None => {
            let answer = ctx.api.get::<QueueList>("/v1/queues").await?;
            (answer.view.queues, answer.raw)
        }
    };
    if ctx.json {
        return output::json(&raw);
    }
    if queues.is_empty() {
        return output::line("no queues yet");
    }
    let mut table = Table::new(&[
        "QUEUE",
        "SCHEDULED",
        "QUEUED",
        "RUNNING",
        "DEAD",
        "OK/1H",
        "DEAD/1H",
        "OLDEST",
        "LIMITS",
    ]);
    for q in &queues {
        let mut limits = Vec::new();
        if q.paused {
            limits.push("paused".to_owned());
        }
        if let Some(rate) = &q.rate {
            limits.push(format!("{}/s burst {}", rate.per_second, rate.burst));
        }
        if let Some(n) = q.max_concurrency {
            limits.push(format!("{n} at once"));
        }
        table.row(vec![
            clean(&q.name),
            q.scheduled.to_string(),
            q.queued.to_string(),
            q.running.to_string(),
            q.dead.to_string(),
            q.succeeded_last_hour.to_string(),
            q.dead_last_hour.to_string(),
            if q.queued == 0 {
                "-".into()
            } else {
                output::duration_ms((q.oldest_queued_age_seconds * 1000.0) as u64)
            },
            if limits.is_empty() {
                "-".into()
            } else {
                limits.join(", ")
            },
        ]);
    }
    table.print()
}
