//! The command line: every command, flag and environment variable.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use courier_wire::JobState;
use uuid::Uuid;

/// The command-line client of a Courier API.
#[derive(Debug, Parser)]
#[command(
    name = "courier",
    version,
    about = "Command-line client of a Courier API: submit, import, get, list, watch, cancel and retry jobs; queues and schedules.",
    after_help = "Exit codes: 0 done; 1 the watched job ended dead or cancelled, or an import refused lines; \
                  2 usage or local input; 3 the API refused the request or could not be reached; 130 interrupted."
)]
pub struct Cli {
    /// The API's base URL. Give it before the command: `submit --url` is the job's target.
    #[arg(
        long = "url",
        env = "COURIER_URL",
        default_value = "http://127.0.0.1:8080",
        value_name = "URL"
    )]
    pub api_url: String,

    /// An API key, sent as `Authorization: Bearer`.
    #[arg(long, env = "COURIER_API_KEY", global = true, hide_env_values = true)]
    pub api_key: Option<String>,

    /// Print the API's JSON (one document; one per line for `watch`) instead of text.
    #[arg(long, global = true)]
    pub json: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Submit one job, from flags or from a JSON file.
    Submit(Box<SubmitArgs>),
    /// Submit many jobs from a JSON Lines file (one job per line), resumably.
    Import(ImportArgs),
    /// Show a job and its executions.
    Get {
        /// The job's id.
        #[arg(value_parser = parse_id)]
        id: Uuid,
    },
    /// List jobs, newest first.
    List(ListArgs),
    /// Follow a job until it ends: exit 0 when it succeeds, 1 when it ends dead or cancelled.
    Watch(WatchArgs),
    /// Cancel a job that has not finished (a running call is aborted).
    Cancel {
        /// The job's id.
        #[arg(value_parser = parse_id)]
        id: Uuid,
    },
    /// Run a dead or cancelled job again, its attempts reset.
    Retry {
        /// The job's id.
        #[arg(value_parser = parse_id)]
        id: Uuid,
    },
    /// Queue depths (all queues, or one).
    Queues {
        /// Only this queue.
        name: Option<String>,
    },
    /// Recurring schedules: list them, show one, or list its runs.
    Schedules {
        #[command(subcommand)]
        command: Option<SchedulesCommand>,
        /// How many schedules to list.
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..))]
        limit: u32,
    },
}

#[derive(Debug, Subcommand)]
pub enum SchedulesCommand {
    /// Show one schedule with its next occurrences.
    Get {
        /// The schedule's name.
        name: String,
    },
    /// Every occurrence of a schedule, newest first: fired (with its job) or skipped, and why.
    Runs {
        /// The schedule's name.
        name: String,
        /// How many runs to list.
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
        limit: u32,
    },
}

/// `courier submit`.
#[derive(Debug, Args)]
pub struct SubmitArgs {
    /// A job as `POST /v1/jobs` takes it, as JSON (`-` for standard input); excludes the
    /// job flags below.
    #[arg(long, value_name = "FILE", conflicts_with_all = [
        "url", "method", "headers", "body", "json_body", "queue", "delay", "run_at",
        "max_attempts", "priority", "labels", "timeout", "flow_key",
    ])]
    pub file: Option<PathBuf>,

    /// The URL to call (absolute http or https).
    #[arg(long, required_unless_present = "file")]
    pub url: Option<String>,

    /// GET, POST, PUT, PATCH, DELETE or HEAD (the API's default is POST).
    #[arg(long, short = 'X', value_parser = parse_method)]
    pub method: Option<String>,

    /// A header to send, `Name: value`; repeat for several.
    #[arg(long = "header", short = 'H', value_name = "NAME:VALUE", value_parser = parse_header)]
    pub headers: Vec<(String, String)>,

    /// The body, sent as is.
    #[arg(long, short = 'd', conflicts_with = "json_body")]
    pub body: Option<String>,

    /// A JSON body, sent with `Content-Type: application/json`.
    #[arg(long, value_name = "JSON", value_parser = parse_json)]
    pub json_body: Option<serde_json::Value>,

    /// The queue (`[a-z0-9_-]{1,64}`; the API's default is `default`).
    #[arg(long)]
    pub queue: Option<String>,

    /// Start no sooner than this from now: `500ms`, `30s`, `5m`, `2h`, `1d` (a bare
    /// number is seconds).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration_ms, conflicts_with = "run_at")]
    pub delay: Option<u64>,

    /// Start no sooner than this RFC 3339 time (`2026-12-01T09:00:00Z`).
    #[arg(long, value_name = "TIME")]
    pub run_at: Option<String>,

    /// Attempts before the job is dead (1 to 100; the API's default is 3).
    #[arg(long)]
    pub max_attempts: Option<i64>,

    /// 0 to 9, higher runs first.
    #[arg(long)]
    pub priority: Option<i64>,

    /// A label, `key=value`; repeat for several.
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_label)]
    pub labels: Vec<(String, String)>,

    /// Each attempt's timeout, as a duration like `--delay`.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration_ms)]
    pub timeout: Option<u64>,

    /// The flow key whose limits the job's calls count against.
    #[arg(long)]
    pub flow_key: Option<String>,

    /// Sent as `Idempotency-Key`: repeating the submission returns the first job.
    #[arg(long)]
    pub idempotency_key: Option<String>,
}

/// `courier import`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// A JSON Lines file: one job per line, as `POST /v1/jobs` takes it.
    pub file: PathBuf,

    /// Jobs per request to `POST /v1/jobs/batch` (1 to 1000).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub batch_size: u16,

    /// The journal that makes the import resumable (default: under
    /// `$XDG_STATE_HOME/courier/imports/`, named by the file's content hash and the API).
    #[arg(long, value_name = "FILE")]
    pub journal: Option<PathBuf>,
}

/// `courier list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only this queue.
    #[arg(long)]
    pub queue: Option<String>,
    /// Only this state.
    #[arg(long, value_parser = parse_state)]
    pub state: Option<JobState>,
    /// Only jobs with this label, `key=value` (or `key:value`); repeat to require several.
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_label_filter)]
    pub labels: Vec<(String, String)>,
    /// How many jobs to show (pages of 500 are fetched as needed).
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..))]
    pub limit: u32,
}

/// `courier watch`.
#[derive(Debug, Args)]
pub struct WatchArgs {
    /// The job's id.
    #[arg(value_parser = parse_id)]
    pub id: Uuid,
    /// How often to ask the API, as a duration (`500ms`, `2s`).
    #[arg(long, default_value = "500ms", value_parser = parse_duration_ms)]
    pub interval: u64,
}

fn parse_id(s: &str) -> Result<Uuid, String> {
    Uuid::parse_str(s.trim())
        .map_err(|_| "is not a job id (a UUID such as 01a22748-c2be-7133-9056-b46fed22e260)".into())
}

fn parse_method(s: &str) -> Result<String, String> {
    let upper = s.to_ascii_uppercase();
    match upper.as_str() {
        "GET" | "POST" | "PUT" | "PATCH" | "DELETE" | "HEAD" => Ok(upper),
        _ => Err("must be GET, POST, PUT, PATCH, DELETE or HEAD".into()),
    }
}

fn parse_header(s: &str) -> Result<(String, String), String> {
    let (name, value) = s
        .split_once(':')
        .ok_or("must be `Name: value` (a colon between name and value)")?;
    let name = name.trim();
    if name.is_empty() {
        return Err("the header name is empty".into());
    }
    Ok((name.to_owned(), value.trim().to_owned()))
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    let (key, value) = s.split_once('=').ok_or("must be `key=value`")?;
    if key.is_empty() {
        return Err("the label key is empty".into());
    }
    Ok((key.to_owned(), value.to_owned()))
}

/// `key=value`, or `key:value` as the API's own filter spells it.
fn parse_label_filter(s: &str) -> Result<(String, String), String> {
    let at = s
        .find(['=', ':'])
        .ok_or("must be `key=value` (or `key:value`)")?;
    let (key, value) = (&s[..at], &s[at + 1..]);
    if key.is_empty() {
        return Err("the label key is empty".into());
    }
    Ok((key.to_owned(), value.to_owned()))
}

fn parse_json(s: &str) -> Result<serde_json::Value, String> {
    serde_json::from_str(s).map_err(|e| format!("not JSON: {e}"))
}

fn parse_state(s: &str) -> Result<JobState, String> {
    JobState::parse(&s.to_ascii_lowercase())
        .ok_or_else(|| "must be scheduled, queued, running, succeeded, dead or cancelled".into())
}

/// `500ms`, `30s`, `5m`, `2h`, `1d`, or a bare number of seconds, in milliseconds.
pub fn parse_duration_ms(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 500ms, 30s, 5m, 2h or 1d"))?;
    let scale = match unit.trim() {
        "ms" => 1.0,
        "" | "s" => 1_000.0,
        "m" => 60_000.0,
        "h" => 3_600_000.0,
        "d" => 86_400_000.0,
        other => return Err(format!("unknown unit {other:?}: use ms, s, m, h or d")),
    };
    let ms = number * scale;
    if !ms.is_finite() || ms > 1e15 {
        return Err(format!("{s:?} is too long"));
    }
    Ok(ms.round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn durations_take_units_and_bare_seconds() {
        assert_eq!(parse_duration_ms("500ms"), Ok(500));
        assert_eq!(parse_duration_ms("30s"), Ok(30_000));
        assert_eq!(parse_duration_ms("1.5m"), Ok(90_000));
        assert_eq!(parse_duration_ms("2h"), Ok(7_200_000));
        assert_eq!(parse_duration_ms("1d"), Ok(86_400_000));
        assert_eq!(parse_duration_ms("10"), Ok(10_000));
        assert!(parse_duration_ms("ten").is_err());
        assert!(parse_duration_ms("5y").is_err());
        assert!(parse_duration_ms("").is_err());
        assert!(parse_duration_ms("99999999999999999999d").is_err());
    }

    #[test]
    fn headers_and_labels_split_at_their_first_separator() {
        assert_eq!(
            parse_header("Authorization: Bearer a:b"),
            Ok(("Authorization".into(), "Bearer a:b".into()))
        );
        assert!(parse_header("no-colon").is_err());
        assert!(parse_header(": v").is_err());
        assert_eq!(parse_label("a=b=c"), Ok(("a".into(), "b=c".into())));
        assert!(parse_label("=x").is_err());
        assert_eq!(parse_label_filter("t:x=1"), Ok(("t".into(), "x=1".into())));
        assert_eq!(parse_label_filter("t=x:1"), Ok(("t".into(), "x:1".into())));
    }
}
