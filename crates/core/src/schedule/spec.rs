//! A schedule as defined: its name, calendar, the job it makes, and its policies.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::Calendar;
use crate::domain::{JobSpec, Labels, QueueName, ScheduleName};

/// What an occurrence does while the previous occurrence's job has not finished. Stored
/// as text (`schedules.overlap`, whose `CHECK` lists the same names).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema, sqlx::Type,
)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum Overlap {
    /// The occurrence is skipped (recorded with reason `overlap`).
    #[default]
    Skip,
    /// The occurrence waits and fires when the previous job finishes; at most one waits,
    /// later ones are skipped.
    BufferOne,
    /// The occurrence fires anyway.
    AllowAll,
    /// The previous job is cancelled (its call aborted) and the occurrence fires.
    CancelPrevious,
}

impl Overlap {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Skip => "skip",
            Self::BufferOne => "buffer_one",
            Self::AllowAll => "allow_all",
            Self::CancelPrevious => "cancel_previous",
        }
    }
}

/// What happens to occurrences missed while no scheduler ran. Stored as text
/// (`schedules.catchup_policy`, whose `CHECK` lists the same names).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema, sqlx::Type,
)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum CatchupPolicy {
    /// None fires; the next occurrence is on time.
    Skip,
    /// The latest missed occurrence (within the window) fires now.
    #[default]
    Once,
    /// Every missed occurrence within the window fires, oldest first: the most recent
    /// `max` of them.
    All,
}

impl CatchupPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Skip => "skip",
            Self::Once => "once",
            Self::All => "all",
        }
    }
}

/// The catch-up policy and its bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Catchup {
    pub policy: CatchupPolicy,
    /// Only occurrences at most this old count; older missed ones are skipped.
    pub window_ms: i64,
    /// With `all`, at most this many fire.
    pub max: u32,
}

/// SPEC 9's defaults: `once`, a day's window, at most 100.
pub const DEFAULT_CATCHUP: Catchup = Catchup {
    policy: CatchupPolicy::Once,
    window_ms: 86_400_000,
    max: 100,
};

/// The job each occurrence makes: queue, spec (with secret header values sealed for the
/// schedule, and opened and sealed again for each job) and labels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobTemplate {
    pub queue: QueueName,
    pub spec: JobSpec,
    #[serde(default, skip_serializing_if = "Labels::is_empty")]
    pub labels: Labels,
}

impl JobTemplate {
    /// The sealing context of a schedule's secret header values.
    pub fn secrets_context(schedule: uuid::Uuid) -> String {
        format!("schedule:{schedule}")
    }
}

/// Where the occurrences come from, as given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CalendarSource {
    Cron {
        expression: String,
        timezone: String,
    },
    Every {
        every_ms: i64,
    },
}

/// A schedule's definition, valid by construction.
#[derive(Debug, Clone)]
pub struct ScheduleDef {
    pub name: ScheduleName,
    pub source: CalendarSource,
    pub calendar: Calendar,
    pub job: JobTemplate,
    pub overlap: Overlap,
    pub catchup: Catchup,
    pub jitter_ms: i64,
    pub start_at: Option<DateTime<Utc>>,
    pub end_at: Option<DateTime<Utc>>,
    pub paused: bool,
    pub note: String,
}

impl ScheduleDef {
    /// The calendar of `source`; an `every_ms` period counts from `start_at`, or from the
    /// Unix epoch (so `every_ms: 60000` fires on whole minutes).
    ///
    /// # Errors
    /// The field at fault and why.
    pub fn calendar_of(
        source: &CalendarSource,
        start_at: Option<DateTime<Utc>>,
    ) -> Result<Calendar, (&'static str, String)> {
        match source {
            CalendarSource::Cron {
                expression,
                timezone,
            } => Calendar::cron(expression, timezone),
            CalendarSource::Every { every_ms } => Ok(Calendar::every(
                *every_ms,
                start_at.unwrap_or(DateTime::UNIX_EPOCH),
            )),
        }
    }

    /// The first occurrence at or after `from` (and `start_at`), unless past `end_at`.
    pub fn first_occurrence(&self, from: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let from = self.start_at.map_or(from, |s| s.max(from));
        self.calendar
            .first_from(from)
            .filter(|t| self.end_at.is_none_or(|end| *t <= end))
    }

    /// The occurrence after `at`, unless past `end_at`.
    pub fn next_after(&self, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.calendar
            .next_after(at)
            .filter(|t| self.end_at.is_none_or(|end| *t <= end))
    }

    /// The next `n` occurrences from `from`.
    pub fn upcoming(&self, from: DateTime<Utc>, n: usize) -> Vec<DateTime<Utc>> {
        let mut out = Vec::with_capacity(n);
        let mut next = self.first_occurrence(from);
        while let Some(t) = next {
            out.push(t);
            if out.len() == n {
                break;
            }
            next = self.next_after(t);
        }
        out
    }

    /// How late the job of occurrence `at` may start, spread over `0..=jitter_ms`: the
    /// same for the same occurrence however often it is decided.
    pub fn jitter_for(&self, schedule: uuid::Uuid, at: DateTime<Utc>) -> chrono::Duration {
        if self.jitter_ms <= 0 {
            return chrono::Duration::zero();
        }
        use sha2::Digest;
        let digest = sha2::Sha256::new()
            .chain_update(schedule.as_bytes())
            .chain_update(at.timestamp_micros().to_be_bytes())
            .finalize();
        let first = u64::from_be_bytes(digest[..8].try_into().expect("32 bytes"));
        let spread = first % (self.jitter_ms as u64 + 1);
        chrono::Duration::milliseconds(spread as i64)
    }
}
