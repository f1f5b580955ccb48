//! `courier submit`: one job, from flags or a JSON file, to `POST /v1/jobs`.

use std::{collections::BTreeMap, io::Read};

use courier_wire::JobView;
use reqwest::{Method, StatusCode};
use serde_json::{Map, Value, json};

use super::Context;
use crate::{args::SubmitArgs, error::CliError, output};

/// Submits the job and prints it.
///
/// # Errors
/// An unreadable `--file`, or the API refusing the job.
pub async fn run(ctx: &Context, args: SubmitArgs) -> Result<(), CliError> {
    let body = match &args.file {
        Some(path) => read_job_file(path)?,
        None => job_from_flags(&args),
    };
    let mut request = ctx.api.request(Method::POST, "/v1/jobs").json(&body);
    if let Some(key) = &args.idempotency_key {
        request = request.header("Idempotency-Key", key);
    }
    let answer = ctx.api.call::<JobView>(request, "POST /v1/jobs").await?;
    if ctx.json {
        return output::json(&answer.raw);
    }
    let job = &answer.view;
    let when = match job.next_attempt_at {
        Some(at) if at > job.created_at => format!(", first attempt at {}", output::time(at)),
        _ => String::new(),
    };
    if answer.status == StatusCode::OK {
        output::line(&format!(
            "job {} was already submitted with this idempotency key: {} in queue {}",
            job.id,
            job.state,
            output::clean(&job.queue)
        ))?;
    } else {
        output::line(&format!(
            "job {} accepted: {} in queue {}{when}",
            job.id,
            job.state,
            output::clean(&job.queue)
        ))?;
    }
    Ok(())
}

/// The job in `path` (`-` for standard input), checked to be a JSON object.
fn read_job_file(path: &std::path::Path) -> Result<Value, CliError> {
    let stdin = path.as_os_str() == "-";
    let shown = if stdin {
        "standard input".to_owned()
    } else {
        path.display().to_string()
    };
    let mut text = String::new();
    let read = if stdin {
        std::io::stdin().read_to_string(&mut text)
    } else {
        std::fs::File::open(path).and_then(|mut f| f.read_to_string(&mut text))
    };
    read.map_err(|e| CliError::Usage(format!("cannot read {shown}: {e}")))?;
    let value: Value = serde_json::from_str(&text)
        .map_err(|e| CliError::Usage(format!("{shown} is not JSON: {e}")))?;
    if !value.is_object() {
        return Err(CliError::Usage(format!(
            "{shown} must hold a job, a JSON object such as {{\"target\": {{\"url\": \"https://…\"}}}}"
        )));
    }
    Ok(value)
}

/// The job the flags describe; fields left out are left to the API's defaults.
fn job_from_flags(args: &SubmitArgs) -> Value {
    let mut target = Map::new();
    target.insert("url".into(), json!(args.url.clone().unwrap_or_default()));
    if let Some(method) = &args.method {
        target.insert("method".into(), json!(method));
    }
    if !args.headers.is_empty() {
        let headers: BTreeMap<&str, &str> = args
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        target.insert("headers".into(), json!(headers));
    }
    if let Some(body) = &args.body {
        target.insert("body".into(), json!(body));
    }
    if let Some(body) = &args.json_body {
        target.insert("json".into(), body.clone());
    }
    let mut job = Map::new();
    job.insert("target".into(), Value::Object(target));
    let mut set = |name: &str, value: Option<Value>| {
        if let Some(value) = value {
            job.insert(name.into(), value);
        }
    };
    set("queue", args.queue.as_ref().map(|q| json!(q)));
    set("delay_ms", args.delay.map(|d| json!(d)));
    set("run_at", args.run_at.as_ref().map(|t| json!(t)));
    set("max_attempts", args.max_attempts.map(|n| json!(n)));
    set("priority", args.priority.map(|p| json!(p)));
    set("timeout_ms", args.timeout.map(|t| json!(t)));
    set("flow_key", args.flow_key.as_ref().map(|k| json!(k)));
    if !args.labels.is_empty() {
        let labels: BTreeMap<&str, &str> = args
            .labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        set("labels", Some(json!(labels)));
    }
    Value::Object(job)
}
