//! `/v1/schedules` bodies: a schedule as submitted (`POST`, `PUT`), changes to one
//! (`PATCH`), a pause's note and a backfill's range; parsed into a
//! [`ScheduleDef`], every problem reported with its field.

use chrono::{DateTime, Utc};
use courier_core::{
    Settings,
    crypto::SecretBox,
    domain::{FieldError, Problems, ScheduleName, rules},
    outbound::OutboundPolicy,
    schedule::{
        CalendarSource, Catchup, CatchupPolicy, DEFAULT_CATCHUP, JobTemplate, Overlap, ScheduleDef,
    },
};
use serde::Deserialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::{Declared, JobRequest, Rule, present};
use crate::extract::JsonBody;

/// Most occurrences one backfill may make.
pub const MAX_BACKFILL: usize = 1000;

/// A schedule as clients submit it (`POST /v1/schedules`, `PUT /v1/schedules/{name}`).
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduleRequest {
    /// `[A-Za-z0-9_.-]{1,128}`, unique. Required by `POST`; `PUT` takes it from the path.
    pub name: Option<String>,
    /// A cron expression: 5 fields, or 6 with seconds first (croner's syntax: names,
    /// ranges, steps, `L`, `#`, `W`). Give exactly one of `cron` and `every_ms`.
    #[schema(example = "0 9 * * MON-FRI")]
    pub cron: Option<String>,
    /// A period in milliseconds (at least 1000), counted in absolute time from
    /// `start_at` or the Unix epoch; no time zone.
    pub every_ms: Option<i64>,
    /// The IANA time zone `cron` is read in; `UTC` when left out.
    #[schema(example = "Europe/Warsaw")]
    pub timezone: Option<String>,
    /// The job each occurrence makes: a job as `POST /v1/jobs` takes it, without
    /// `run_at` or `delay_ms` (the occurrence sets its time).
    pub job: JobRequest,
    /// While the previous occurrence's job has not finished: `skip` (default),
    /// `buffer_one`, `allow_all` or `cancel_previous`.
    pub overlap: Option<Overlap>,
    pub catchup: Option<CatchupRequest>,
    /// Each occurrence's job starts up to this many milliseconds late, spread at random
    /// (0 to 86400000; 0 by default).
    pub jitter_ms: Option<i64>,
    /// No occurrence before this RFC 3339 time.
    pub start_at: Option<String>,
    /// No occurrence after this RFC 3339 time.
    pub end_at: Option<String>,
    /// Start paused (occurrences are recorded as skipped: paused).
    pub paused: Option<bool>,
    /// Free text, at most 1024 characters.
    pub note: Option<String>,
}

/// Occurrences missed while no scheduler ran.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CatchupRequest {
    /// `skip`, `once` (default: the latest missed fires) or `all`.
    pub policy: Option<CatchupPolicy>,
    /// Only occurrences at most this old count (default a day).
    pub window_ms: Option<i64>,
    /// With `all`, at most this many fire (1 to 10000, default 100).
    pub max: Option<i64>,
}

/// `PATCH /v1/schedules/{name}`: the fields given replace the schedule's; `null`
/// clears `start_at`, `end_at` or `note`. Giving `cron` replaces `every_ms` and the
/// other way round; `job` is replaced whole.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SchedulePatch {
    pub cron: Option<String>,
    pub every_ms: Option<i64>,
    pub timezone: Option<String>,
    pub job: Option<JobRequest>,
    pub overlap: Option<Overlap>,
    pub catchup: Option<CatchupRequest>,
    pub jitter_ms: Option<i64>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub start_at: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub end_at: Option<Option<String>>,
    pub paused: Option<bool>,
    pub note: Option<String>,
}

/// `POST /v1/schedules/{name}/pause`.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PauseRequest {
    /// Why it is paused (shown with the schedule), at most 1024 characters.
    pub note: Option<String>,
}

/// `POST /v1/schedules/{name}/backfill`: the occurrences between `from` and `to`
/// (both included, both in the past), oldest first, at most 1000.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BackfillRequest {
    pub from: String,
    pub to: String,
}

impl JsonBody for ScheduleRequest {
    fn limit(settings: &Settings) -> usize {
        settings.server.max_request_bytes
    }
}

impl JsonBody for SchedulePatch {
    fn limit(settings: &Settings) -> usize {
        settings.server.max_request_bytes
    }
}

impl JsonBody for PauseRequest {
    fn limit(_: &Settings) -> usize {
        16 * 1024
    }
}

impl JsonBody for BackfillRequest {
    fn limit(_: &Settings) -> usize {
        16 * 1024
    }
}

/// What parsing a schedule needs from the server.
pub struct ParseContext<'a> {
    pub settings: &'a Settings,
    pub outbound: &'a OutboundPolicy,
    pub secrets: &'a SecretBox,
    /// The schedule's id: its template's secret headers are sealed for it.
    pub id: Uuid,
}

fn time(p: &mut Problems, field: &str, raw: Option<&str>) -> Option<DateTime<Utc>> {
    p.check(
        field,
        raw.map(|s| {
            DateTime::parse_from_rfc3339(s)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|e| format!("is not an RFC 3339 time: {e}"))
        })
        .transpose(),
    )
    .flatten()
}

/// The rules of a schedule's fields, as the document declares them.
pub fn declared() -> Vec<Declared> {
    use Rule::*;
    // A schedule's job template: its occurrences set when its jobs run.
    let template = || {
        Schema(serde_json::json!({"properties": {
            "run_at": {"type": "null"},
            "delay_ms": {"type": "null"},
        }}))
    };
    let mut all = vec![
        Declared::new("ScheduleRequest", "name", Name(rules::SCHEDULE_NAME)),
        // Exactly one of `cron` and `every_ms`; a time zone only with `cron`.
        Declared::new(
            "ScheduleRequest",
            "",
            Schema(serde_json::json!({"oneOf": [
                {"required": ["cron"], "properties": {"cron": {"type": "string"}, "every_ms": {"type": "null"}}},
                {"required": ["every_ms"], "properties": {"every_ms": {"type": "integer"},
                 "cron": {"type": "null"}, "timezone": {"type": "null"}}},
            ]})),
        ),
        Declared::new("ScheduleRequest", "job", template()),
        // At most one of `cron` and `every_ms`.
        Declared::new(
            "SchedulePatch",
            "",
            Schema(serde_json::json!({"not": {
                "required": ["cron", "every_ms"],
                "properties": {"cron": {"type": "string"}, "every_ms": {"type": "integer"}}
            }})),
        ),
        Declared::new("SchedulePatch", "job", template()),
        Declared::new("CatchupRequest", "window_ms", Int(rules::CATCHUP_WINDOW_MS)),
        Declared::new("CatchupRequest", "max", Int(rules::CATCHUP_MAX)),
        Declared::new("PauseRequest", "note", MaxChars(rules::MAX_NOTE)),
        Declared::new("BackfillRequest", "from", DateTime),
        Declared::new("BackfillRequest", "to", DateTime),
    ];
    for schema in ["ScheduleRequest", "SchedulePatch"] {
        all.extend([
            // What JSON Schema cannot check is named by a format of its own; the fuzz test
            // teaches schemathesis both (crates/testkit/tests/fuzz/hooks.py).
            Declared::new(
                schema,
                "cron",
                Schema(serde_json::json!({"format": "cron", "minLength": 1})),
            ),
            Declared::new(
                schema,
                "timezone",
                Schema(serde_json::json!({"format": "iana-time-zone"})),
            ),
            Declared::new(schema, "every_ms", Int(rules::EVERY_MS)),
            Declared::new(schema, "jitter_ms", Int(rules::JITTER_MS)),
            Declared::new(schema, "start_at", DateTime),
            Declared::new(schema, "end_at", DateTime),
            Declared::new(schema, "note", MaxChars(rules::MAX_NOTE)),
        ]);
    }
    all
}

/// A note of at most [`rules::MAX_NOTE`] characters.
pub fn check_note(p: &mut Problems, note: &str) {
    if note.chars().count() > rules::MAX_NOTE {
        p.push(
            "note",
            format!("must be at most {} characters", rules::MAX_NOTE),
        );
    }
}

impl ScheduleRequest {
    /// Parses the schedule named `name`.
    ///
    /// # Errors
    /// Every field that is wrong, each with its path.
    pub fn parse(self, name: &str, cx: &ParseContext<'_>) -> Result<ScheduleDef, Vec<FieldError>> {
        let mut p = Problems::new();
        let name = p.check("name", ScheduleName::parse(name));
        let source = match (self.cron, self.every_ms) {
            (Some(expression), None) => Some(CalendarSource::Cron {
                expression,
                timezone: self.timezone.unwrap_or_else(|| "UTC".into()),
            }),
            (None, Some(every_ms)) => {
                if self.timezone.is_some() {
                    p.push(
                        "timezone",
                        "only applies to cron; every_ms is absolute time",
                    );
                }
                Some(CalendarSource::Every {
                    every_ms: p.range(
                        "every_ms",
                        Some(every_ms),
                        rules::EVERY_MS,
                        rules::EVERY_MS.min,
                    ),
                })
            }
            (Some(_), Some(_)) => {
                p.push("cron", "give exactly one of cron and every_ms, not both");
                None
            }
            (None, None) => {
                p.push("cron", "give exactly one of cron and every_ms");
                None
            }
        };
        let start_at = time(&mut p, "start_at", self.start_at.as_deref());
        let end_at = time(&mut p, "end_at", self.end_at.as_deref());
        if let (Some(start), Some(end)) = (start_at, end_at)
            && end < start
        {
            p.push("end_at", "must not be before start_at");
        }
        let calendar = source.as_ref().and_then(|source| {
            ScheduleDef::calendar_of(source, start_at)
                .map_err(|(field, message)| p.push(field, message))
                .ok()
        });
        let job = parse_template(&mut p, self.job, cx);
        let catchup = self.catchup.unwrap_or_default();
        let catchup = Catchup {
            policy: catchup.policy.unwrap_or(DEFAULT_CATCHUP.policy),
            window_ms: p.range(
                "catchup.window_ms",
                catchup.window_ms,
                rules::CATCHUP_WINDOW_MS,
                DEFAULT_CATCHUP.window_ms,
            ),
            max: p.range(
                "catchup.max",
                catchup.max,
                rules::CATCHUP_MAX,
                DEFAULT_CATCHUP.max.into(),
            ) as u32,
        };
        let jitter_ms = p.range("jitter_ms", self.jitter_ms, rules::JITTER_MS, 0);
        let note = self.note.unwrap_or_default();
        check_note(&mut p, &note);
        let def = match (name, source, calendar, job) {
            (Some(name), Some(source), Some(calendar), Some(job)) => Some(ScheduleDef {
                name,
                source,
                calendar,
                job,
                overlap: self.overlap.unwrap_or_default(),
                catchup,
                jitter_ms,
                start_at,
                end_at,
                paused: self.paused.unwrap_or(false),
                note,
            }),
            _ => None,
        };
        p.finish(def)
    }
}

/// The job template: a job as `POST /v1/jobs` takes it (SSRF protection's check of its
/// URL included) without a time of its own, its secret headers sealed for the schedule.
fn parse_template(p: &mut Problems, job: JobRequest, cx: &ParseContext<'_>) -> Option<JobTemplate> {
    let mut jp = Problems::under("job");
    if job.run_at.is_some() {
        jp.push("run_at", "a schedule's occurrences set when its jobs run");
    }
    if job.delay_ms.is_some() {
        jp.push(
            "delay_ms",
            "a schedule's occurrences set when its jobs run (see jitter_ms)",
        );
    }
    let parts = job.parse_parts(&mut jp, &cx.settings.jobs);
    let template = parts.and_then(|(queue, mut spec, labels)| {
        let refused = super::job::refused_urls(&spec, cx.outbound);
        if !refused.is_empty() {
            for refusal in refused {
                jp.push(&refusal.field, refusal.message);
            }
            return None;
        }
        spec.seal_secrets(cx.secrets, &JobTemplate::secrets_context(cx.id));
        Some(JobTemplate {
            queue,
            spec,
            labels,
        })
    });
    p.absorb(jp);
    template
}

impl SchedulePatch {
    /// Applies the changes to `current` (whose template stays unless `job` is given).
    ///
    /// # Errors
    /// Every field that is wrong, each with its path.
    pub fn apply(
        self,
        current: &ScheduleDef,
        cx: &ParseContext<'_>,
    ) -> Result<ScheduleDef, Vec<FieldError>> {
        let mut p = Problems::new();
        let source = match (self.cron, self.every_ms, &current.source) {
            (Some(_), Some(_), _) => {
                p.push("cron", "give at most one of cron and every_ms");
                None
            }
            (Some(expression), None, CalendarSource::Cron { timezone, .. }) => {
                Some(CalendarSource::Cron {
                    expression,
                    timezone: self.timezone.unwrap_or_else(|| timezone.clone()),
                })
            }
            (Some(expression), None, CalendarSource::Every { .. }) => Some(CalendarSource::Cron {
                expression,
                timezone: self.timezone.unwrap_or_else(|| "UTC".into()),
            }),
            (None, Some(every_ms), _) => Some(CalendarSource::Every {
                every_ms: p.range(
                    "every_ms",
                    Some(every_ms),
                    rules::EVERY_MS,
                    rules::EVERY_MS.min,
                ),
            }),
            (
                None,
                None,
                CalendarSource::Cron {
                    expression,
                    timezone,
                },
            ) => Some(CalendarSource::Cron {
                expression: expression.clone(),
                timezone: self.timezone.unwrap_or_else(|| timezone.clone()),
            }),
            (None, None, every @ CalendarSource::Every { .. }) => {
                if self.timezone.is_some() {
                    p.push(
                        "timezone",
                        "only applies to cron; every_ms is absolute time",
                    );
                }
                Some(every.clone())
            }
        };
        let start_at = match self.start_at {
            Some(raw) => time(&mut p, "start_at", raw.as_deref()),
            None => current.start_at,
        };
        let end_at = match self.end_at {
            Some(raw) => time(&mut p, "end_at", raw.as_deref()),
            None => current.end_at,
        };
        if let (Some(start), Some(end)) = (start_at, end_at)
            && end < start
        {
            p.push("end_at", "must not be before start_at");
        }
        let calendar = source.as_ref().and_then(|source| {
            ScheduleDef::calendar_of(source, start_at)
                .map_err(|(field, message)| p.push(field, message))
                .ok()
        });
        let job = match self.job {
            Some(job) => parse_template(&mut p, job, cx),
            None => Some(current.job.clone()),
        };
        let catchup = match self.catchup {
            None => current.catchup,
            Some(c) => Catchup {
                policy: c.policy.unwrap_or(current.catchup.policy),
                window_ms: p.range(
                    "catchup.window_ms",
                    c.window_ms,
                    rules::CATCHUP_WINDOW_MS,
                    current.catchup.window_ms,
                ),
                max: p.range(
                    "catchup.max",
                    c.max,
                    rules::CATCHUP_MAX,
                    current.catchup.max.into(),
                ) as u32,
            },
        };
        let jitter_ms = p.range(
            "jitter_ms",
            self.jitter_ms,
            rules::JITTER_MS,
            current.jitter_ms,
        );
        let note = self.note.unwrap_or_else(|| current.note.clone());
        check_note(&mut p, &note);
        let def = match (source, calendar, job) {
            (Some(source), Some(calendar), Some(job)) => Some(ScheduleDef {
                name: current.name.clone(),
                source,
                calendar,
                job,
                overlap: self.overlap.unwrap_or(current.overlap),
                catchup,
                jitter_ms,
                start_at,
                end_at,
                paused: self.paused.unwrap_or(current.paused),
                note,
            }),
            _ => None,
        };
        p.finish(def)
    }
}

impl BackfillRequest {
    /// The range, in order and in the past.
    ///
    /// # Errors
    /// A time that is not RFC 3339, `to` before `from`, or `to` in the future.
    pub fn parse(
        &self,
        now: DateTime<Utc>,
    ) -> Result<(DateTime<Utc>, DateTime<Utc>), Vec<FieldError>> {
        let mut p = Problems::new();
        let from = time(&mut p, "from", Some(&self.from));
        let to = time(&mut p, "to", Some(&self.to));
        if let (Some(from), Some(to)) = (from, to) {
            if to < from {
                p.push("to", "must not be before from");
            }
            if to > now {
                p.push(
                    "to",
                    "must not be in the future: later occurrences fire from the calendar",
                );
            }
        }
        p.finish(from.zip(to))
    }
}
