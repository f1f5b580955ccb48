//! The bounds and character rules of what clients send, each written once: the parsing
//! checks values against them, and the API's OpenAPI document declares them from the
//! same constants (`courier_api::openapi`), so a generated client checks what the server
//! checks.

/// An integer's inclusive range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IntRange {
    pub min: i64,
    pub max: i64,
}

impl IntRange {
    pub const fn new(min: i64, max: i64) -> Self {
        Self { min, max }
    }

    pub fn contains(&self, value: i64) -> bool {
        (self.min..=self.max).contains(&value)
    }

    /// `value` if in range; otherwise what to say.
    ///
    /// # Errors
    /// `must be between MIN and MAX`.
    pub fn check(&self, value: i64) -> Result<i64, String> {
        if self.contains(value) {
            Ok(value)
        } else {
            Err(format!("must be between {} and {}", self.min, self.max))
        }
    }
}

/// A name: 1 to `max` ASCII bytes, each a digit, a letter (lower-case only when
/// `lowercase`) or one of `extra`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NameRule {
    pub max: usize,
    pub lowercase: bool,
    pub extra: &'static str,
}

impl NameRule {
    pub fn allows(&self, raw: &str) -> bool {
        (1..=self.max).contains(&raw.len())
            && raw.bytes().all(|b| {
                b.is_ascii_digit()
                    || b.is_ascii_lowercase()
                    || (!self.lowercase && b.is_ascii_uppercase())
                    || self.extra.as_bytes().contains(&b)
            })
    }

    /// What a valid name is, for a message: `1 to 64 characters of a-z, 0-9, '_' and '-'`.
    pub fn describe(&self) -> String {
        let letters = if self.lowercase { "a-z" } else { "A-Z, a-z" };
        let extra: Vec<String> = self.extra.chars().map(|c| format!("'{c}'")).collect();
        let (last, rest) = extra
            .split_last()
            .expect("a rule names its extra characters");
        format!(
            "1 to {} characters of {letters}, 0-9, {} and {last}",
            self.max,
            rest.join(", ")
        )
    }

    /// The same rule as an ECMA-262 regular expression, for the document's `pattern`.
    pub fn pattern(&self) -> String {
        let letters = if self.lowercase { "a-z" } else { "A-Za-z" };
        // `-` last in the class, where it is a character; the others are literal there.
        let mut extra: String = self.extra.chars().filter(|c| *c != '-').collect();
        if self.extra.contains('-') {
            extra.push('-');
        }
        format!("^[{letters}0-9{extra}]{{1,{}}}$", self.max)
    }
}

/// A queue's name.
pub const QUEUE_NAME: NameRule = NameRule {
    max: 64,
    lowercase: true,
    extra: "_-",
};
/// A schedule's name.
pub const SCHEDULE_NAME: NameRule = NameRule {
    max: 128,
    lowercase: false,
    extra: "_.-",
};
/// A flow key.
pub const FLOW_KEY: NameRule = NameRule {
    max: 128,
    lowercase: false,
    extra: "_.:-",
};
/// A label's key.
pub const LABEL_KEY: NameRule = NameRule {
    max: 64,
    lowercase: false,
    extra: "_./-",
};

/// Attempts of a round.
pub const MAX_ATTEMPTS: IntRange = IntRange::new(1, 100);
/// A job's priority: 0 (the default, lowest) to 9.
pub const PRIORITY: IntRange = IntRange::new(0, 9);
/// `delay_ms`: up to a year and a day.
pub const DELAY_MS: IntRange = IntRange::new(0, 366 * 86_400_000);
/// A backoff's waits: up to a day.
pub const BACKOFF_MS: IntRange = IntRange::new(0, 86_400_000);
/// A backoff's multiplier.
pub const BACKOFF_MULTIPLIER: (f64, f64) = (1.0, 100.0);
/// An HTTP status in `retry_on_status`.
pub const HTTP_STATUS: IntRange = IntRange::new(100, 599);
/// Labels of a job.
pub const MAX_LABELS: usize = 16;
/// A label's value, in characters.
pub const MAX_LABEL_VALUE: usize = 256;
/// A progress report's percentage.
pub const PERCENT: IntRange = IntRange::new(0, 100);
/// A progress report's message, in characters.
pub const MAX_PROGRESS_MESSAGE: usize = 512;
/// Calls in flight at once of a queue or flow key.
pub const CONCURRENCY: IntRange = IntRange::new(1, 100_000);
/// A rate's burst.
pub const BURST: IntRange = IntRange::new(1, 1_000_000);
/// The fastest rate: more than 0 and at most this many calls a second.
pub const MAX_PER_SECOND: f64 = 1_000_000.0;
/// Items of a page of a list.
pub const PAGE_LIMIT: IntRange = IntRange::new(1, 500);
/// Text searched for in a job list (`q`), in characters.
pub const MAX_QUERY_TEXT: usize = 512;
/// A schedule's or a pause's note, in characters.
pub const MAX_NOTE: usize = 1024;
/// `every_ms`: a calendar finer than a second is a queue, not a schedule; the longest
/// period is a year and a day.
pub const EVERY_MS: IntRange = IntRange::new(1000, 366 * 86_400_000);
/// A schedule's jitter: up to a day.
pub const JITTER_MS: IntRange = IntRange::new(0, 86_400_000);
/// How old a missed occurrence may be and still be caught up: up to a year and a day.
pub const CATCHUP_WINDOW_MS: IntRange = IntRange::new(0, 366 * 86_400_000);
/// Occurrences one catch-up may fire.
pub const CATCHUP_MAX: IntRange = IntRange::new(1, 10_000);
/// An `Idempotency-Key`: 1 to this many visible ASCII characters.
pub const MAX_IDEMPOTENCY_KEY: usize = 255;
/// Jobs of one batch.
pub const BATCH_JOBS: IntRange = IntRange::new(1, 1000);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_rule_and_its_pattern_agree() {
        assert_eq!(QUEUE_NAME.pattern(), "^[a-z0-9_-]{1,64}$");
        assert_eq!(FLOW_KEY.pattern(), "^[A-Za-z0-9_.:-]{1,128}$");
        assert_eq!(LABEL_KEY.pattern(), "^[A-Za-z0-9_./-]{1,64}$");
        assert_eq!(
            QUEUE_NAME.describe(),
            "1 to 64 characters of a-z, 0-9, '_' and '-'"
        );
        assert!(QUEUE_NAME.allows("emails-eu_1"));
        for bad in ["", "Emails", "a b", "é", &"a".repeat(65)] {
            assert!(!QUEUE_NAME.allows(bad), "{bad:?}");
        }
        assert!(FLOW_KEY.allows("tenant:42.eu"));
    }

    #[test]
    fn a_range_names_its_bounds() {
        assert_eq!(MAX_ATTEMPTS.check(100), Ok(100));
        assert_eq!(
            MAX_ATTEMPTS.check(0).unwrap_err(),
            "must be between 1 and 100"
        );
    }
}
