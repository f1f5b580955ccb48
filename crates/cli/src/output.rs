//! Writing to standard output: JSON documents for `--json`, aligned tables and short
//! human forms of times and durations otherwise.

use std::io::Write;

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::error::CliError;

/// Writes one line to standard output. A closed pipe surfaces as an error that `main`
/// ends on quietly, instead of the panic `println!` would give.
///
/// # Errors
/// Standard output cannot be written.
pub fn line(text: &str) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{text}")?;
    out.flush()?;
    Ok(())
}

/// Prints a JSON document, indented.
///
/// # Errors
/// As [`line`].
pub fn json(value: &Value) -> Result<(), CliError> {
    line(&serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string()))
}

/// Prints a JSON document on one line (JSON Lines, for `watch --json`).
///
/// # Errors
/// As [`line`].
pub fn json_line(value: &Value) -> Result<(), CliError> {
    line(&value.to_string())
}

/// A table with a header row, columns padded to their widest cell.
pub struct Table {
    header: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&'static str]) -> Self {
        Self {
            header: header.to_vec(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The table as lines, the last column unpadded.
    pub fn render(&self) -> Vec<String> {
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate() {
                if let Some(w) = widths.get_mut(i) {
                    *w = (*w).max(cell.chars().count());
                }
            }
        }
        let format_row = |cells: &mut dyn Iterator<Item = &str>| {
            let mut text = String::new();
            for (i, cell) in cells.enumerate() {
                if i > 0 {
                    text.push_str("  ");
                }
                text.push_str(cell);
                if i + 1 < widths.len() {
                    let pad = widths[i].saturating_sub(cell.chars().count());
                    text.extend(std::iter::repeat_n(' ', pad));
                }
            }
            text.trim_end().to_owned()
        };
        let mut lines = vec![format_row(&mut self.header.iter().copied())];
        for row in &self.rows {
            lines.push(format_row(&mut row.iter().map(String::as_str)));
        }
        lines
    }

    /// Prints the table.
    ///
    /// # Errors
    /// As [`line`].
    pub fn print(&self) -> Result<(), CliError> {
        for text in self.render() {
            line(&text)?;
        }
        Ok(())
    }
}

/// A UTC time to the second: `2026-11-29 12:07:03Z`.
pub fn time(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%SZ").to_string()
}

/// An optional time, `-` when absent.
pub fn maybe_time(at: Option<DateTime<Utc>>) -> String {
    at.map_or_else(|| "-".into(), time)
}

/// Milliseconds as a short duration: `850 ms`, `12.3 s`, `4 m 05 s`, `2 h 03 m`.
pub fn duration_ms(ms: u64) -> String {
    match ms {
        0..1_000 => format!("{ms} ms"),
        1_000..60_000 => format!("{:.1} s", ms as f64 / 1000.0),
        60_000..3_600_000 => format!("{} m {:02} s", ms / 60_000, (ms / 1000) % 60),
        _ => format!("{} h {:02} m", ms / 3_600_000, (ms / 60_000) % 60),
    }
}

/// `text` cut to `max` characters, with `…` when cut.
pub fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max.saturating_sub(1)) {
        Some((at, _)) if text.chars().count() > max => format!("{}…", &text[..at]),
        _ => text.to_owned(),
    }
}

/// Control characters (an ANSI escape in an error message, a newline in a URL) shown
/// escaped, so that API data cannot move the terminal's cursor or forge lines.
pub fn clean(text: &str) -> String {
    if !text.chars().any(char::is_control) {
        return text.to_owned();
    }
    text.chars()
        .flat_map(|c| {
            if c.is_control() {
                c.escape_default().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect()
}

/// Like [`clean`], but keeps line breaks (an error with one field per line).
pub fn clean_lines(text: &str) -> String {
    text.split('\n').map(clean).collect::<Vec<_>>().join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_pad_every_column_but_the_last() {
        let mut t = Table::new(&["ID", "STATE", "URL"]);
        t.row(vec!["1".into(), "succeeded".into(), "http://a".into()]);
        t.row(vec!["22".into(), "dead".into(), "http://bb".into()]);
        assert_eq!(
            t.render(),
            [
                "ID  STATE      URL",
                "1   succeeded  http://a",
                "22  dead       http://bb"
            ]
        );
    }

    #[test]
    fn durations_read_at_a_glance() {
        assert_eq!(duration_ms(850), "850 ms");
        assert_eq!(duration_ms(12_345), "12.3 s");
        assert_eq!(duration_ms(245_000), "4 m 05 s");
        assert_eq!(duration_ms(7_380_000), "2 h 03 m");
    }

    #[test]
    fn truncation_counts_characters_not_bytes() {
        assert_eq!(truncate("héllo wörld", 5), "héll…");
        assert_eq!(truncate("short", 5), "short");
        assert_eq!(truncate("", 3), "");
    }

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(clean("a\x1b[2Jb\nc"), "a\\u{1b}[2Jb\\nc");
        assert_eq!(clean("plain"), "plain");
    }
}
