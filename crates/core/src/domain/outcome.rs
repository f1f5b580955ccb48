//! What an attempt left as its job's last outcome.

use serde::{Deserialize, Serialize};

/// The last attempt's outcome as the job shows it: the answer's status code (none when
/// nothing answered), the error, and how long the call took.
///
/// Kept in the Redis journal as `[status_code, error, duration_ms]`, the form records
/// written before this type existed have, so a journal survives an upgrade.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    from = "(Option<i16>, Option<String>, i32)",
    into = "(Option<i16>, Option<String>, i32)"
)]
pub struct LastOutcome {
    pub status_code: Option<i16>,
    pub error: Option<String>,
    pub duration_ms: i32,
}

impl From<(Option<i16>, Option<String>, i32)> for LastOutcome {
    fn from((status_code, error, duration_ms): (Option<i16>, Option<String>, i32)) -> Self {
        Self {
            status_code,
            error,
            duration_ms,
        }
    }
}

impl From<LastOutcome> for (Option<i16>, Option<String>, i32) {
    fn from(last: LastOutcome) -> Self {
        (last.status_code, last.error, last.duration_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_journal_form_of_earlier_records() {
        let last = LastOutcome {
            status_code: Some(503),
            error: Some("HTTP 503".into()),
            duration_ms: 12,
        };
        let json = serde_json::to_string(&last).unwrap();
        assert_eq!(json, r#"[503,"HTTP 503",12]"#);
        assert_eq!(serde_json::from_str::<LastOutcome>(&json).unwrap(), last);
    }
}
