//! `courier import FILE.jsonl`: one job per line, sent in batches to
//! `POST /v1/jobs/batch`, with a progress bar and a summary of what was accepted and
//! which lines were refused, and why.
//!
//! Resumable, without duplicates: the batch endpoint takes no idempotency keys, so the
//! import keeps a journal (see [`journal`]) of the lines each request carried and what
//! became of them. A re-run of the same file (by content) into the same API skips every
//! line already settled. A request cut off without an answer (the CLI killed, the
//! connection lost) may or may not have been committed; each job carries the label
//! `courier-import: <file hash>:<line>`, and the next run asks the API whether the
//! first such job of that request exists: the batch was all or nothing, so that one
//! answer settles the request's every line.

mod batch;
mod journal;
mod lines;

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader, IsTerminal, Read},
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use courier_wire::JobPage;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::{
    args::ImportArgs,
    client::encode,
    commands::Context,
    error::{CliError, exit},
    output,
};
use batch::Line;
use journal::Journal;
use lines::LineSet;

/// The label that marks each imported job with its file and line.
pub const MARKER_LABEL: &str = "courier-import";
/// The API's limit on labels per job: a line already at it gets no marker.
const MAX_LABELS: usize = 16;

/// Imports the file; returns the exit code (1 when any line was refused).
///
/// # Errors
/// An unreadable file or journal, or a failure that stops the import (the API
/// unreachable, the key refused, Ctrl-C); a re-run resumes.
pub async fn run(
    ctx: &Context,
    args: ImportArgs,
    interrupted: Arc<AtomicBool>,
) -> Result<u8, CliError> {
    let path = &args.file;
    let (sha256, total) = hash_and_count(path)?;
    let journal_path = match &args.journal {
        Some(p) => p.clone(),
        None => default_journal(&sha256, ctx.api.base())?,
    };
    let (mut journal, replayed) = Journal::open(
        &journal_path,
        &sha256,
        ctx.api.base(),
        &path.display().to_string(),
        total,
    )?;
    let marker_prefix = &sha256[..16];
    let mut accepted_before = replayed.accepted.len();
    let quiet = ctx.json;
    if !quiet && (accepted_before > 0 || !replayed.refused.is_empty() || replayed.pending.is_some())
    {
        let pending = match &replayed.pending {
            Some(lines) => format!(
                "; lines {lines} were sent without an answer recorded: asking the API whether it committed them"
            ),
            None => String::new(),
        };
        eprintln!(
            "courier: resuming the import of {} recorded in {}: {} lines accepted, {} refused before{pending}",
            path.display(),
            journal.path().display(),
            accepted_before,
            replayed.refused.len()
        );
    }
    let mut progress = Progress::new(total, quiet);
    let mut done = replayed.settled();
    if let Some(pending) = &replayed.pending {
        let committed = settle_pending(ctx, path, marker_prefix, pending, &progress).await?;
        if committed {
            journal.accepted(pending)?;
            done.extend(pending);
            accepted_before += pending.len();
        } else {
            journal.not_committed(pending)?;
        }
    }

    let file = std::fs::File::open(path)
        .map_err(|e| CliError::Usage(format!("cannot read {}: {e}", path.display())))?;
    let mut reader = BufReader::new(file);
    let mut chunk: Vec<Line> = Vec::with_capacity(usize::from(args.batch_size));
    let mut raw = Vec::new();
    let mut number = 0u64;
    let outcome = loop {
        if interrupted.load(Ordering::SeqCst) {
            break Err(CliError::Interrupted);
        }
        raw.clear();
        let read = reader
            .read_until(b'\n', &mut raw)
            .map_err(|e| CliError::Usage(format!("cannot read {}: {e}", path.display())));
        let read = match read {
            Ok(read) => read,
            Err(e) => break Err(e),
        };
        if read == 0 {
            break Ok(());
        }
        number += 1;
        if done.contains(number) {
            progress.bar.inc(1);
            continue;
        }
        match parse_line(&raw, number, marker_prefix) {
            Parsed::Blank => progress.bar.inc(1),
            Parsed::Refused(reason) => {
                if let Err(e) = journal.refused(number, &reason) {
                    break Err(e);
                }
                batch::Settled::refused(&mut progress, number, &reason);
            }
            Parsed::Job(job) => chunk.push(Line { number, job }),
        }
        if chunk.len() >= usize::from(args.batch_size) {
            let lines = std::mem::take(&mut chunk);
            if let Err(e) = batch::send(&ctx.api, &mut journal, lines, &mut progress).await {
                break Err(e);
            }
        }
    };
    let outcome = match outcome {
        Ok(()) if !chunk.is_empty() => {
            batch::send(
                &ctx.api,
                &mut journal,
                std::mem::take(&mut chunk),
                &mut progress,
            )
            .await
        }
        other => other,
    };
    progress.bar.finish_and_clear();
    if let Err(e) = outcome {
        if !quiet {
            eprintln!(
                "courier: the import stopped after {} lines accepted in this run; run the same command again to resume (journal: {})",
                progress.accepted,
                journal.path().display()
            );
        }
        return Err(e);
    }

    let accepted = progress.accepted;
    let earlier = accepted_before;
    let mut refused = replayed.refused;
    refused.extend(progress.refused);
    if ctx.json {
        let refused: Vec<Value> = refused
            .iter()
            .map(|(line, reason)| json!({"line": line, "reason": reason}))
            .collect();
        output::json(&json!({
            "file": path.display().to_string(),
            "sha256": sha256,
            "lines": total,
            "accepted": accepted,
            "accepted_before": earlier,
            "refused": refused,
            "journal": journal.path().display().to_string(),
        }))?;
    } else {
        let before = if earlier > 0 {
            format!(" new ({earlier} in earlier runs)")
        } else {
            String::new()
        };
        output::line(&format!(
            "accepted {accepted}{before}, refused {} ({total} lines in {})",
            refused.len(),
            path.display()
        ))?;
        for (line, reason) in &refused {
            output::line(&format!("line {line}: {}", output::clean(reason)))?;
        }
    }
    Ok(if refused.is_empty() {
        exit::OK
    } else {
        exit::FAILED
    })
}

/// The progress bar (on standard error, hidden when that is not a terminal or with
/// `--json`) and the counts behind it.
struct Progress {
    bar: ProgressBar,
    accepted: u64,
    refused: BTreeMap<u64, String>,
}

impl Progress {
    fn new(total: u64, quiet: bool) -> Self {
        let target = if quiet || !std::io::stderr().is_terminal() {
            ProgressDrawTarget::hidden()
        } else {
            ProgressDrawTarget::stderr()
        };
        let bar = ProgressBar::with_draw_target(Some(total), target);
        if let Ok(style) =
            ProgressStyle::with_template("{bar:40} {pos}/{len} lines, {msg} [{elapsed}, ETA {eta}]")
        {
            bar.set_style(style);
        }
        bar.set_message("accepted 0, refused 0");
        Self {
            bar,
            accepted: 0,
            refused: BTreeMap::new(),
        }
    }

    fn show(&self) {
        self.bar.set_message(format!(
            "accepted {}, refused {}",
            self.accepted,
            self.refused.len()
        ));
    }
}

impl batch::Settled for Progress {
    fn accepted(&mut self, lines: u64) {
        self.accepted += lines;
        self.bar.inc(lines);
        self.show();
    }

    fn refused(&mut self, line: u64, reason: &str) {
        self.refused.insert(line, reason.to_owned());
        self.bar.inc(1);
        self.show();
    }
}

/// One line of the file.
enum Parsed {
    Blank,
    Refused(String),
    Job(Value),
}

fn parse_line(raw: &[u8], number: u64, marker_prefix: &str) -> Parsed {
    let Ok(text) = std::str::from_utf8(raw) else {
        return Parsed::Refused("not UTF-8 text".into());
    };
    let text = text.trim();
    if text.is_empty() {
        return Parsed::Blank;
    }
    let mut job: Value = match serde_json::from_str(text) {
        Ok(job) => job,
        Err(e) => {
            let message = e.to_string().replace(" at line 1 column ", " at column ");
            return Parsed::Refused(format!("not JSON: {message}"));
        }
    };
    if !job.is_object() {
        return Parsed::Refused(
            "not a job: a job is a JSON object such as {\"target\": {\"url\": \"https://…\"}}"
                .into(),
        );
    }
    mark(&mut job, &format!("{marker_prefix}:{number}"));
    Parsed::Job(job)
}

/// Adds the marker label, unless the job's labels are not an object (the API will
/// refuse them), are full, or already hold the key. Returns whether the job is marked.
fn mark(job: &mut Value, marker: &str) -> bool {
    let Some(object) = job.as_object_mut() else {
        return false;
    };
    let labels = object
        .entry("labels")
        .or_insert_with(|| Value::Object(Default::default()));
    match labels.as_object_mut() {
        Some(labels) if labels.len() < MAX_LABELS && !labels.contains_key(MARKER_LABEL) => {
            labels.insert(MARKER_LABEL.into(), Value::String(marker.into()));
            true
        }
        Some(labels) => labels.get(MARKER_LABEL).and_then(Value::as_str) == Some(marker),
        None => false,
    }
}

/// Settles a request an earlier run sent without recording an answer: whether the API
/// holds the first marked job among its lines.
async fn settle_pending(
    ctx: &Context,
    path: &Path,
    marker_prefix: &str,
    pending: &LineSet,
    progress: &Progress,
) -> Result<bool, CliError> {
    if pending.is_empty() {
        return Ok(false);
    }
    let first = pending.iter().next().unwrap_or(0);
    let last = pending.iter().last().unwrap_or(0);
    let file = std::fs::File::open(path)
        .map_err(|e| CliError::Usage(format!("cannot read {}: {e}", path.display())))?;
    let mut reader = BufReader::new(file);
    let mut raw = Vec::new();
    let mut number = 0u64;
    while number < last {
        raw.clear();
        let read = reader
            .read_until(b'\n', &mut raw)
            .map_err(|e| CliError::Usage(format!("cannot read {}: {e}", path.display())))?;
        if read == 0 {
            break;
        }
        number += 1;
        if number < first || !pending.contains(number) {
            continue;
        }
        let marker = format!("{marker_prefix}:{number}");
        let Parsed::Job(job) = parse_line(&raw, number, marker_prefix) else {
            continue;
        };
        if job["labels"][MARKER_LABEL] != Value::String(marker.clone()) {
            continue;
        }
        let mut query = format!(
            "/v1/jobs?limit=1&label={}",
            encode(&format!("{MARKER_LABEL}:{marker}"))
        );
        if let Some(queue) = job.get("queue").and_then(Value::as_str) {
            query.push_str(&format!("&queue={}", encode(queue)));
        }
        return match ctx.api.get::<JobPage>(&query).await {
            Ok(page) => Ok(!page.view.jobs.is_empty()),
            // A queue the API refuses as a filter refused the batch too.
            Err(e) if e.status() == Some(422) => Ok(false),
            Err(e) => Err(e),
        };
    }
    progress.bar.suspend(|| {
        eprintln!(
            "courier: lines {pending} were sent without an answer in an earlier run, and none \
             of them carries the {MARKER_LABEL} label to check whether the API committed them; \
             sending them again (if the API had committed them, they are now there twice)"
        )
    });
    Ok(false)
}

/// The file's SHA-256 (hex) and its number of lines.
fn hash_and_count(path: &Path) -> Result<(String, u64), CliError> {
    let failed =
        |e: std::io::Error| CliError::Usage(format!("cannot read {}: {e}", path.display()));
    let mut file = std::fs::File::open(path).map_err(failed)?;
    if file.metadata().map_err(failed)?.is_dir() {
        return Err(CliError::Usage(format!(
            "{} is a folder, not a JSON Lines file",
            path.display()
        )));
    }
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 16];
    let (mut lines, mut last) = (0u64, b'\n');
    loop {
        let n = file.read(&mut buffer).map_err(failed)?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
        lines += buffer[..n].iter().filter(|&&b| b == b'\n').count() as u64;
        last = buffer[n - 1];
    }
    if last != b'\n' {
        lines += 1;
    }
    Ok((hex::encode(hasher.finalize()), lines))
}

/// `$XDG_STATE_HOME/courier/imports/<file hash>-<API hash>.jsonl` (or under
/// `~/.local/state`): one journal per file content and API.
fn default_journal(sha256: &str, api: &str) -> Result<PathBuf, CliError> {
    let base = std::env::var_os("XDG_STATE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .map(|home| PathBuf::from(home).join(".local/state"))
        })
        .ok_or_else(|| {
            CliError::Usage("neither XDG_STATE_HOME nor HOME is set: give --journal".into())
        })?;
    let api_hash = hex::encode(Sha256::digest(api.as_bytes()));
    Ok(base
        .join("courier/imports")
        .join(format!("{}-{}.jsonl", &sha256[..32], &api_hash[..12])))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_parsed_marked_or_refused_with_a_reason() {
        let Parsed::Job(job) = parse_line(br#"{"target": {"url": "http://x"}}"#, 7, "abc") else {
            panic!("a job")
        };
        assert_eq!(job["labels"][MARKER_LABEL], "abc:7");
        let Parsed::Refused(reason) = parse_line(b"{not json", 1, "abc") else {
            panic!("refused")
        };
        assert!(
            reason.starts_with("not JSON: key must be a string at column 2"),
            "{reason}"
        );
        assert!(
            matches!(parse_line(b"42\n", 1, "abc"), Parsed::Refused(r) if r.starts_with("not a job"))
        );
        assert!(matches!(parse_line(b"  \r\n", 1, "abc"), Parsed::Blank));
        assert!(
            matches!(parse_line(b"\xff\xfe", 1, "abc"), Parsed::Refused(r) if r == "not UTF-8 text")
        );
    }

    #[test]
    fn a_job_with_full_labels_keeps_them_unmarked() {
        let labels: serde_json::Map<String, Value> =
            (0..16).map(|i| (format!("k{i}"), json!("v"))).collect();
        let mut job = json!({"target": {"url": "http://x"}, "labels": labels});
        assert!(!mark(&mut job, "abc:1"));
        assert_eq!(job["labels"].as_object().unwrap().len(), 16);
        let mut odd = json!({"target": {"url": "http://x"}, "labels": "nope"});
        assert!(!mark(&mut odd, "abc:1"));
        assert_eq!(odd["labels"], "nope");
    }

    #[test]
    fn files_are_hashed_and_their_lines_counted() {
        let dir = std::env::temp_dir().join(format!("courier-hash-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("f.jsonl");
        std::fs::write(&path, "a\nb\nc").unwrap();
        let (sha, lines) = hash_and_count(&path).unwrap();
        assert_eq!(lines, 3);
        assert_eq!(sha.len(), 64);
        std::fs::write(&path, "a\nb\nc\n").unwrap();
        assert_eq!(hash_and_count(&path).unwrap().1, 3);
        std::fs::write(&path, "").unwrap();
        assert_eq!(hash_and_count(&path).unwrap().1, 0);
        assert!(hash_and_count(&dir).is_err());
    }
}
