//! The import's journal: an append-only JSON Lines file that records, before each
//! request, which lines it carries, and after it, what became of them. Replayed at the
//! start of a run, it says which lines are done and whether a request was cut off
//! without an answer (its lines `pending`, settled through their marker label).

use std::{
    collections::BTreeMap,
    fs::{File, OpenOptions},
    io::Write,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use super::lines::LineSet;
use crate::error::CliError;

/// One journal line.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Record {
    /// The first line: which file (by content) into which API.
    Import {
        sha256: String,
        api: String,
        file: String,
        lines: u64,
    },
    /// A request carrying these lines is about to be sent.
    Sending(LineSet),
    /// The API committed these lines.
    Accepted(LineSet),
    /// The request carrying these lines committed none of them.
    NotCommitted(LineSet),
    /// A line refused, by the CLI (not JSON) or by the API, with the reason.
    Refused { line: u64, reason: String },
}

/// What earlier runs did, replayed from the journal.
#[derive(Debug, Default)]
pub struct Replayed {
    pub accepted: LineSet,
    pub refused: BTreeMap<u64, String>,
    /// The lines of a request sent without an answer recorded: committed or not, the
    /// journal cannot tell.
    pub pending: Option<LineSet>,
}

impl Replayed {
    /// Every line that needs nothing more: accepted or refused.
    pub fn settled(&self) -> LineSet {
        let mut done = self.accepted.clone();
        done.extend(&LineSet::of(self.refused.keys().copied()));
        done
    }
}

/// The journal, open for appending.
pub struct Journal {
    file: File,
    path: PathBuf,
}

impl Journal {
    /// Opens (or starts) the journal at `path` for the file with content hash `sha256`
    /// imported into `api`, and replays it.
    ///
    /// # Errors
    /// The journal cannot be read or written, or belongs to another file or API.
    pub fn open(
        path: &Path,
        sha256: &str,
        api: &str,
        file: &str,
        lines: u64,
    ) -> Result<(Self, Replayed), CliError> {
        let shown = path.display();
        let failed = |what: &str, e: std::io::Error| {
            CliError::Local(format!("cannot {what} the import journal {shown}: {e}"))
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| failed("create the folder of", e))?;
        }
        let content = match std::fs::read(path) {
            Ok(content) => content,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(failed("read", e)),
        };
        // A crash while a record was written leaves its line cut off: that record's
        // request was never sent, so the line is dropped. A whole last record missing
        // only its newline gets one.
        let whole = content
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |at| at + 1);
        let tail = &content[whole..];
        let tail_is_record = serde_json::from_slice::<Record>(tail).is_ok();
        let handle = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| failed("open", e))?;
        if !tail.is_empty() {
            if tail_is_record {
                (&handle)
                    .write_all(b"\n")
                    .map_err(|e| failed("repair", e))?;
            } else {
                handle
                    .set_len(whole as u64)
                    .map_err(|e| failed("repair", e))?;
            }
        }
        let kept = if tail_is_record {
            &content[..]
        } else {
            &content[..whole]
        };
        let replayed = replay(kept, sha256, api, &shown.to_string())?;
        let mut journal = Self {
            file: handle,
            path: path.to_owned(),
        };
        let replayed = match replayed {
            Some(replayed) => replayed,
            None => {
                journal.append(&Record::Import {
                    sha256: sha256.to_owned(),
                    api: api.to_owned(),
                    file: file.to_owned(),
                    lines,
                })?;
                Replayed::default()
            }
        };
        Ok((journal, replayed))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records that a request carrying `lines` is about to be sent.
    ///
    /// # Errors
    /// The journal cannot be written: the request must then not be sent.
    pub fn sending(&mut self, lines: &LineSet) -> Result<(), CliError> {
        self.append(&Record::Sending(lines.clone()))
    }

    /// Records that `lines` were committed.
    ///
    /// # Errors
    /// The journal cannot be written.
    pub fn accepted(&mut self, lines: &LineSet) -> Result<(), CliError> {
        self.append(&Record::Accepted(lines.clone()))
    }

    /// Records that the request carrying `lines` committed none of them.
    ///
    /// # Errors
    /// The journal cannot be written.
    pub fn not_committed(&mut self, lines: &LineSet) -> Result<(), CliError> {
        self.append(&Record::NotCommitted(lines.clone()))
    }

    /// Records a refused line.
    ///
    /// # Errors
    /// The journal cannot be written.
    pub fn refused(&mut self, line: u64, reason: &str) -> Result<(), CliError> {
        self.append(&Record::Refused {
            line,
            reason: reason.to_owned(),
        })
    }

    /// Appends one record and syncs it to disk: a record the machine loses could make a
    /// later run send a committed batch again.
    fn append(&mut self, record: &Record) -> Result<(), CliError> {
        let mut text = serde_json::to_string(record).expect("journal records serialise");
        text.push('\n');
        self.file
            .write_all(text.as_bytes())
            .and_then(|()| self.file.sync_data())
            .map_err(|e| {
                CliError::Local(format!(
                    "cannot write the import journal {}: {e}",
                    self.path.display()
                ))
            })
    }
}

/// Replays a journal; `None` when it is empty.
fn replay(
    content: &[u8],
    sha256: &str,
    api: &str,
    shown: &str,
) -> Result<Option<Replayed>, CliError> {
    let mut state: Option<Replayed> = None;
    for (i, line) in content.split(|&b| b == b'\n').enumerate() {
        let number = i + 1;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let record: Record = serde_json::from_slice(line).map_err(|e| {
            CliError::Local(format!(
                "the import journal {shown} is damaged at its line {number} ({e}); \
                 move it away to start the import over"
            ))
        })?;
        match (record, state.as_mut()) {
            (
                Record::Import {
                    sha256: s,
                    api: a,
                    file,
                    ..
                },
                None,
            ) => {
                if s != sha256 || a != api {
                    return Err(CliError::Local(format!(
                        "the import journal {shown} is of another import ({file} into {a}); \
                         give another --journal"
                    )));
                }
                state = Some(Replayed::default());
            }
            (_, None) | (Record::Import { .. }, Some(_)) => {
                return Err(CliError::Local(format!(
                    "the import journal {shown} is not one this CLI wrote (line {number}); \
                     give another --journal"
                )));
            }
            (Record::Sending(lines), Some(s)) => s.pending = Some(lines),
            (Record::Accepted(lines), Some(s)) => {
                s.accepted.extend(&lines);
                s.pending = None;
            }
            (Record::NotCommitted(_), Some(s)) => s.pending = None,
            (Record::Refused { line, reason }, Some(s)) => {
                s.refused.insert(line, reason);
            }
        }
    }
    Ok(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn journal_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("courier-journal-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_journal_replays_what_was_committed_refused_and_left_pending() {
        let path = journal_dir().join("j.jsonl");
        {
            let (mut j, replayed) = Journal::open(&path, "abc", "http://api", "f", 10).unwrap();
            assert!(replayed.accepted.is_empty() && replayed.pending.is_none());
            j.refused(1, "not JSON").unwrap();
            j.sending(&LineSet::of([2, 3, 4])).unwrap();
            j.not_committed(&LineSet::of([2, 3, 4])).unwrap();
            j.refused(3, "target.url: bad").unwrap();
            j.sending(&LineSet::of([2, 4])).unwrap();
            j.accepted(&LineSet::of([2, 4])).unwrap();
            j.sending(&LineSet::of([5, 6])).unwrap();
        }
        let (_, replayed) = Journal::open(&path, "abc", "http://api", "f", 10).unwrap();
        assert_eq!(replayed.accepted, LineSet::of([2, 4]));
        assert_eq!(replayed.refused.keys().copied().collect::<Vec<_>>(), [1, 3]);
        assert_eq!(replayed.pending, Some(LineSet::of([5, 6])));
        assert_eq!(replayed.settled(), LineSet::of([1, 2, 3, 4]));

        let other = Journal::open(&path, "xyz", "http://api", "f", 10);
        assert!(matches!(other, Err(CliError::Local(m)) if m.contains("another import")));
        let other_api = Journal::open(&path, "abc", "http://elsewhere", "f", 10);
        assert!(other_api.is_err());
    }

    #[test]
    fn a_last_line_cut_off_by_a_crash_is_ignored_but_damage_elsewhere_is_not() {
        let path = journal_dir().join("j.jsonl");
        drop(Journal::open(&path, "abc", "http://api", "f", 10).unwrap());
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str("{\"accepted\":[[1,2]]}\n{\"sending\":[[3,");
        std::fs::write(&path, &text).unwrap();
        let (mut j, replayed) = Journal::open(&path, "abc", "http://api", "f", 10).unwrap();
        assert_eq!(replayed.accepted, LineSet::of([1, 2]));
        assert_eq!(replayed.pending, None);
        j.accepted(&LineSet::of([3])).unwrap();
        drop(j);
        let (_, replayed) = Journal::open(&path, "abc", "http://api", "f", 10).unwrap();
        assert_eq!(
            replayed.accepted,
            LineSet::of([1, 2, 3]),
            "appended after the cut"
        );
        let text = std::fs::read_to_string(&path).unwrap();

        std::fs::write(&path, text.replace("{\"accepted\"", "garbage{")).unwrap();
        assert!(Journal::open(&path, "abc", "http://api", "f", 10).is_err());
    }
}
