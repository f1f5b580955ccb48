//! When a schedule's occurrences fall: a cron expression in an IANA time zone (croner,
//! with chrono-tz's rules), or a fixed period in absolute time.
//!
//! Daylight saving (SPEC 9) is croner's: a fixed local time that does not exist (spring
//! forward) occurs once, at the first instant after the gap; one that happens twice
//! (fall back) occurs once, at its first instance. A pattern whose hours or minutes are
//! wildcards or steps (`*/15 * * * *`) runs on the real clock: every instance of a
//! repeated hour, none of a missing one.

use chrono::{DateTime, Datelike, TimeZone, Utc};
use chrono_tz::Tz;
use croner::{
    Cron,
    parser::{CronParser, Seconds, Year},
};

/// A schedule's calendar.
#[derive(Debug, Clone)]
pub enum Calendar {
    /// A cron expression (5 fields, or 6 with seconds first) in a time zone.
    Cron { cron: Box<Cron>, zone: Tz },
    /// Every `period_ms`, at `anchor + k * period_ms`.
    Every {
        period_ms: i64,
        anchor: DateTime<Utc>,
    },
}

/// How far ahead an occurrence is looked for: a pattern that matches later than this
/// (`0 0 29 2 MON`, once in decades) counts as ended.
const SEARCH_LIMIT_YEARS: i32 = 5;

fn parse(expression: &str) -> Result<Cron, croner::errors::CronError> {
    CronParser::builder()
        .seconds(Seconds::Optional)
        .year(Year::Disallowed)
        .build()
        .parse(expression)
}

/// The fields of a cron expression of 5 fields (6: seconds first), with their bounds.
const FIELDS: [(&str, u32, u32); 6] = [
    ("second", 0, 59),
    ("minute", 0, 59),
    ("hour", 0, 23),
    ("day of month", 1, 31),
    ("month", 1, 12),
    ("day of week", 0, 7),
];

/// What is wrong with `expression`, which croner refused with `error`: croner says what
/// (`Number out of bounds.`), not where. Each field is tried alone (the others `*`) to
/// find the one croner refuses, and a number in it outside the field's bounds is named
/// with them: `hour 25 is out of range 0-23 (in "0 25 * * MON-FRI")`.
fn explain(expression: &str, error: &croner::errors::CronError) -> String {
    let given: Vec<&str> = expression.split_whitespace().collect();
    let fields = &FIELDS[FIELDS.len() - given.len()..];
    for (i, (&text, &(name, low, high))) in given.iter().zip(fields).enumerate() {
        let alone: Vec<&str> = (0..given.len())
            .map(|j| if j == i { text } else { "*" })
            .collect();
        if parse(&alone.join(" ")).is_ok() {
            continue;
        }
        let out_of_range = text
            .split(|c: char| !c.is_ascii_digit())
            .filter_map(|n| n.parse::<u64>().ok())
            .find(|&n| n < u64::from(low) || n > u64::from(high));
        // A step (`*/90`) is bounded by the field too, but is not a value of it.
        return match out_of_range {
            Some(n) if !text.contains('/') || !text.ends_with(&format!("/{n}")) => {
                format!("{name} {n} is out of range {low}-{high} (in {expression:?})")
            }
            _ => format!("{name} {text:?} is not valid ({error}) (in {expression:?})"),
        };
    }
    format!("cannot be parsed: {error}")
}

impl Calendar {
    /// Parses `expression` (croner's syntax: names, ranges, steps, `L`, `#`, `W`; 5 fields
    /// or 6 with seconds) for the zone named `zone`.
    ///
    /// # Errors
    /// `Err(("cron", why))` or `Err(("timezone", why))`.
    pub fn cron(expression: &str, zone: &str) -> Result<Self, (&'static str, String)> {
        let zone: Tz = zone.parse().map_err(|_| {
            (
                "timezone",
                format!("{zone:?} is not an IANA time zone name"),
            )
        })?;
        let fields = expression.split_whitespace().count();
        if !(5..=6).contains(&fields) {
            return Err((
                "cron",
                format!("must have 5 fields, or 6 with seconds first; got {fields}"),
            ));
        }
        let cron = parse(expression).map_err(|e| ("cron", explain(expression, &e)))?;
        // A pattern that never matches (`0 0 30 2 *`) is refused now, not at its first run.
        let probe = Utc::now().with_timezone(&zone);
        cron.find_next_occurrence(&probe, false)
            .map_err(|e| ("cron", format!("has no next occurrence: {e}")))?;
        Ok(Self::Cron {
            cron: Box::new(cron),
            zone,
        })
    }

    /// Every `period_ms` from `anchor`.
    pub fn every(period_ms: i64, anchor: DateTime<Utc>) -> Self {
        Self::Every {
            period_ms: period_ms.max(1),
            anchor,
        }
    }

    /// The first occurrence at or after `at`.
    pub fn first_from(&self, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.find(at, true)
    }

    /// The first occurrence strictly after `at`.
    pub fn next_after(&self, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.find(at, false)
    }

    fn find(&self, at: DateTime<Utc>, inclusive: bool) -> Option<DateTime<Utc>> {
        match self {
            Self::Cron { cron, zone } => {
                let local = zone.from_utc_datetime(&at.naive_utc());
                let found = cron.find_next_occurrence(&local, inclusive).ok()?;
                let found = found.with_timezone(&Utc);
                (found.year() - at.year() <= SEARCH_LIMIT_YEARS).then_some(found)
            }
            Self::Every { period_ms, anchor } => {
                let since = (at - *anchor).num_milliseconds();
                let mut k = since.div_euclid(*period_ms);
                let mut t = nth_every(*anchor, *period_ms, k)?;
                if t < at || (t == at && !inclusive) {
                    k += 1;
                    t = nth_every(*anchor, *period_ms, k)?;
                }
                Some(t)
            }
        }
    }

    /// The last occurrence strictly before `at`.
    pub fn last_before(&self, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Self::Cron { cron, zone } => {
                let local = zone.from_utc_datetime(&at.naive_utc());
                let found = cron.find_previous_occurrence(&local, false).ok()?;
                let found = found.with_timezone(&Utc);
                (at.year() - found.year() <= SEARCH_LIMIT_YEARS).then_some(found)
            }
            Self::Every { period_ms, anchor } => {
                let since = (at - *anchor).num_milliseconds();
                let mut k = since.div_euclid(*period_ms);
                let mut t = nth_every(*anchor, *period_ms, k)?;
                if t >= at {
                    k -= 1;
                    t = nth_every(*anchor, *period_ms, k)?;
                }
                Some(t)
            }
        }
    }

    /// The next `n` occurrences at or after `at`.
    pub fn upcoming(&self, at: DateTime<Utc>, n: usize) -> Vec<DateTime<Utc>> {
        let mut out = Vec::with_capacity(n);
        let mut next = self.first_from(at);
        while let Some(t) = next {
            out.push(t);
            if out.len() == n {
                break;
            }
            next = self.next_after(t);
        }
        out
    }
}

/// The `k`th occurrence of every `period_ms` from `anchor`; none past the last time
/// chrono can hold (an overflow is no occurrence, never a panic).
fn nth_every(anchor: DateTime<Utc>, period_ms: i64, k: i64) -> Option<DateTime<Utc>> {
    anchor.checked_add_signed(chrono::Duration::try_milliseconds(
        k.checked_mul(period_ms)?,
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by schemathesis: a huge period panicked with an overflow in the API.
    #[test]
    fn a_period_past_the_end_of_time_has_no_next_occurrence() {
        let now = utc("2026-12-07T00:00:00Z");
        let huge = Calendar::every(i64::MAX / 2, now);
        assert_eq!(huge.next_after(now), None);
        assert_eq!(huge.first_from(now), Some(now));
        let late = Calendar::every(366 * 86_400_000, DateTime::<Utc>::MAX_UTC);
        assert_eq!(late.next_after(DateTime::<Utc>::MAX_UTC), None);
    }

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn local(times: &[DateTime<Utc>], zone: Tz) -> Vec<String> {
        times
            .iter()
            .map(|t| {
                t.with_timezone(&zone)
                    .format("%Y-%m-%d %H:%M %Z")
                    .to_string()
            })
            .collect()
    }

    #[test]
    fn a_daily_time_inside_the_spring_gap_fires_once_at_the_first_instant_after_it() {
        // Europe/Warsaw springs forward on 2027-03-28 at 02:00 (CET) to 03:00 (CEST).
        let calendar = Calendar::cron("30 2 * * *", "Europe/Warsaw").unwrap();
        let times = calendar.upcoming(utc("2027-03-26T12:00:00Z"), 4);
        assert_eq!(
            local(&times, chrono_tz::Europe::Warsaw),
            [
                "2027-03-27 02:30 CET",
                "2027-03-28 03:00 CEST",
                "2027-03-29 02:30 CEST",
                "2027-03-30 02:30 CEST"
            ]
        );
    }

    #[test]
    fn a_daily_time_repeated_by_the_fall_back_fires_once_at_its_first_instance() {
        // Europe/Warsaw falls back on 2027-10-31 at 03:00 (CEST) to 02:00 (CET).
        let calendar = Calendar::cron("30 2 * * *", "Europe/Warsaw").unwrap();
        let times = calendar.upcoming(utc("2027-10-29T12:00:00Z"), 4);
        assert_eq!(
            local(&times, chrono_tz::Europe::Warsaw),
            [
                "2027-10-30 02:30 CEST",
                "2027-10-31 02:30 CEST",
                "2027-11-01 02:30 CET",
                "2027-11-02 02:30 CET"
            ]
        );
    }

    #[test]
    fn a_period_keeps_its_length_across_daylight_saving() {
        let anchor = utc("2027-03-27T00:00:00Z");
        let calendar = Calendar::every(3_600_000, anchor);
        let times = calendar.upcoming(utc("2027-03-28T00:30:00Z"), 3);
        assert_eq!(
            times,
            [
                utc("2027-03-28T01:00:00Z"),
                utc("2027-03-28T02:00:00Z"),
                utc("2027-03-28T03:00:00Z")
            ]
        );
        assert_eq!(calendar.first_from(anchor), Some(anchor));
        assert_eq!(
            calendar.last_before(anchor + chrono::Duration::hours(1)),
            Some(anchor)
        );
        assert_eq!(
            calendar.next_after(anchor),
            Some(anchor + chrono::Duration::hours(1))
        );
    }

    #[test]
    fn seconds_names_and_last_day_are_croners() {
        let every_10s = Calendar::cron("*/10 * * * * *", "UTC").unwrap();
        assert_eq!(
            every_10s.upcoming(utc("2027-01-01T00:00:05Z"), 2),
            [utc("2027-01-01T00:00:10Z"), utc("2027-01-01T00:00:20Z")]
        );
        let weekdays = Calendar::cron("0 9 * * MON-FRI", "UTC").unwrap();
        // 2027-01-01 is a Friday.
        assert_eq!(
            weekdays.upcoming(utc("2027-01-01T10:00:00Z"), 1),
            [utc("2027-01-04T09:00:00Z")]
        );
        assert_eq!(
            every_10s.last_before(utc("2027-01-01T00:00:10Z")),
            Some(utc("2027-01-01T00:00:00Z"))
        );
        let last_day = Calendar::cron("0 0 L * *", "UTC").unwrap();
        assert_eq!(
            last_day.upcoming(utc("2027-02-01T00:00:00Z"), 1),
            [utc("2027-02-28T00:00:00Z")]
        );
    }

    /// Issue 28: croner's `Number out of bounds.` becomes the field, the value and the
    /// allowed range.
    #[test]
    fn a_number_out_of_its_fields_range_is_named_with_the_range() {
        for (expression, message) in [
            (
                "0 25 * * MON-FRI",
                r#"hour 25 is out of range 0-23 (in "0 25 * * MON-FRI")"#,
            ),
            (
                "61 * * * *",
                r#"minute 61 is out of range 0-59 (in "61 * * * *")"#,
            ),
            (
                "0 9 * 13 *",
                r#"month 13 is out of range 1-12 (in "0 9 * 13 *")"#,
            ),
            (
                "0 9 0 * *",
                r#"day of month 0 is out of range 1-31 (in "0 9 0 * *")"#,
            ),
            (
                "0 9 * * 1-8",
                r#"day of week 8 is out of range 0-7 (in "0 9 * * 1-8")"#,
            ),
            (
                "75 0 9 * * *",
                r#"second 75 is out of range 0-59 (in "75 0 9 * * *")"#,
            ),
        ] {
            assert_eq!(
                Calendar::cron(expression, "UTC").unwrap_err(),
                ("cron", message.to_string())
            );
        }
        let (_, word) = Calendar::cron("0 9 * * FUNDAY", "UTC").unwrap_err();
        assert!(
            word.starts_with(r#"day of week "FUNDAY" is not valid ("#),
            "{word}"
        );
    }

    #[test]
    fn bad_expressions_and_zones_name_their_field() {
        assert_eq!(Calendar::cron("61 * * * *", "UTC").unwrap_err().0, "cron");
        assert_eq!(Calendar::cron("* * *", "UTC").unwrap_err().0, "cron");
        assert_eq!(
            Calendar::cron("0 0 * * * * 2027", "UTC").unwrap_err().0,
            "cron"
        );
        assert_eq!(Calendar::cron("0 0 30 2 *", "UTC").unwrap_err().0, "cron");
        assert_eq!(
            Calendar::cron("0 9 * * *", "Europe/Atlantis")
                .unwrap_err()
                .0,
            "timezone"
        );
    }
}
