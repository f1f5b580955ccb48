//! Deciding what becomes of a schedule's due occurrences: fired, buffered, or skipped
//! with the reason. A pure function of the schedule, its state and the time, so the
//! rules of SPEC 9 (pause, catch-up, overlap) are tested without a clock or a database.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{CatchupPolicy, Overlap, ScheduleDef};

/// Why an occurrence did not fire. Stored as text (`schedule_runs.reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema, sqlx::Type)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum SkipReason {
    /// The previous occurrence's job had not finished (overlap `skip`, or a second one
    /// waiting with `buffer_one`).
    Overlap,
    /// No scheduler ran at its time, and the catch-up policy or window left it out.
    Missed,
    /// The schedule was paused at its time.
    Paused,
}

impl SkipReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Overlap => "overlap",
            Self::Missed => "missed",
            Self::Paused => "paused",
        }
    }
}

/// What becomes of one occurrence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    Fire,
    /// Waits for the previous job to finish (`buffer_one`).
    Buffer,
    Skip(SkipReason),
}

/// One occurrence and its fate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub at: DateTime<Utc>,
    pub fate: Fate,
}

/// A schedule whose next occurrence is due, and what the decision depends on.
#[derive(Debug, Clone, Copy)]
pub struct Due<'a> {
    pub def: &'a ScheduleDef,
    /// The first occurrence not decided yet.
    pub next_at: DateTime<Utc>,
    /// The job of the latest fired occurrence has not finished.
    pub previous_live: bool,
    /// An occurrence already waits for it (`buffer_one`).
    pub buffered: bool,
}

/// What to do now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Every occurrence from `next_at` up to now (at most the limit), oldest first.
    pub decisions: Vec<Decision>,
    /// The previous job must be cancelled before the occurrence fires
    /// (`cancel_previous`).
    pub cancel_previous: bool,
    /// The first occurrence left for later; `None` once the schedule has ended.
    pub next_at: Option<DateTime<Utc>>,
}

/// Decides the occurrences of `due` up to `now`, at most `limit` of them (the rest are
/// left for the next pass). An occurrence more than `misfire_grace` old was missed (no
/// scheduler ran at its time); younger ones are merely late and fire.
pub fn plan(due: Due<'_>, now: DateTime<Utc>, misfire_grace: Duration, limit: usize) -> Plan {
    let def = due.def;
    let mut pending = Vec::new();
    let mut next = Some(due.next_at);
    while let Some(at) = next {
        if at > now || pending.len() >= limit {
            break;
        }
        pending.push(at);
        next = def.next_after(at);
    }
    if def.paused {
        return Plan {
            decisions: pending
                .into_iter()
                .map(|at| Decision {
                    at,
                    fate: Fate::Skip(SkipReason::Paused),
                })
                .collect(),
            cancel_previous: false,
            next_at: next,
        };
    }

    // Catch-up: the missed occurrences that may fire are the newest ones (one for
    // `once`, `max` for `all`) within the window. They are found walking back from now,
    // so a long outage decided over several passes fires the same ones in any pass.
    let keep = match def.catchup.policy {
        CatchupPolicy::Skip => 0,
        CatchupPolicy::Once => 1,
        CatchupPolicy::All => def.catchup.max as usize,
    };
    let window = Duration::milliseconds(def.catchup.window_ms);
    let mut catching_up = Vec::new();
    let mut back = def.calendar.last_before(now - misfire_grace);
    while let Some(at) = back {
        if catching_up.len() >= keep || at < due.next_at || now - at > window {
            break;
        }
        catching_up.push(at);
        back = def.calendar.last_before(at);
    }
    let candidates: Vec<DateTime<Utc>> = pending
        .iter()
        .copied()
        .filter(|at| now - *at <= misfire_grace || catching_up.contains(at))
        .collect();

    // Overlap: whether each candidate may fire while the job before it runs.
    let mut fates: Vec<(DateTime<Utc>, Fate)> = Vec::with_capacity(candidates.len());
    let mut live = due.previous_live;
    let mut buffered = due.buffered;
    let mut cancel_previous = false;
    for (i, at) in candidates.iter().copied().enumerate() {
        let fate = match def.overlap {
            Overlap::AllowAll => Fate::Fire,
            Overlap::Skip if live => Fate::Skip(SkipReason::Overlap),
            Overlap::Skip => Fate::Fire,
            Overlap::BufferOne if live && !buffered => {
                buffered = true;
                Fate::Buffer
            }
            Overlap::BufferOne if live => Fate::Skip(SkipReason::Overlap),
            Overlap::BufferOne => Fate::Fire,
            // Several due at once: the last fires, and would cancel each before it.
            Overlap::CancelPrevious if i + 1 < candidates.len() => Fate::Skip(SkipReason::Overlap),
            Overlap::CancelPrevious => {
                cancel_previous = live;
                Fate::Fire
            }
        };
        if fate == Fate::Fire {
            live = true;
        }
        fates.push((at, fate));
    }
    let decisions = pending
        .into_iter()
        .map(|at| Decision {
            at,
            fate: fates
                .iter()
                .find(|(t, _)| *t == at)
                .map_or(Fate::Skip(SkipReason::Missed), |(_, fate)| *fate),
        })
        .collect();
    Plan {
        decisions,
        cancel_previous,
        next_at: next,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        domain::{JobSpec, Method, QueueName, Target, TargetUrl},
        schedule::{Calendar, CalendarSource, Catchup, JobTemplate, ScheduleName},
    };

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap()
    }

    /// A schedule every 10 s.
    fn every_10s(overlap: Overlap, policy: CatchupPolicy, window_s: i64, max: u32) -> ScheduleDef {
        let source = CalendarSource::Every { every_ms: 10_000 };
        ScheduleDef {
            name: ScheduleName::parse("s").unwrap(),
            calendar: Calendar::every(10_000, t(0)),
            source,
            job: JobTemplate {
                queue: QueueName::default(),
                spec: JobSpec::new(Target {
                    url: TargetUrl::parse("https://example.com").unwrap(),
                    method: Method::Post,
                    headers: vec![],
                    body: String::new(),
                }),
                labels: Default::default(),
            },
            overlap,
            catchup: Catchup {
                policy,
                window_ms: window_s * 1000,
                max,
            },
            jitter_ms: 0,
            start_at: None,
            end_at: None,
            paused: false,
            note: String::new(),
        }
    }

    fn fates(plan: &Plan) -> Vec<Fate> {
        plan.decisions.iter().map(|d| d.fate).collect()
    }

    const GRACE: Duration = Duration::seconds(5);
    use Fate::{Buffer, Fire, Skip};
    use SkipReason::{Missed, Overlap as Over, Paused};

    fn due(def: &ScheduleDef, next_at: DateTime<Utc>, previous_live: bool) -> Due<'_> {
        Due {
            def,
            next_at,
            previous_live,
            buffered: false,
        }
    }

    #[test]
    fn an_occurrence_on_time_fires_and_the_next_is_ten_seconds_later() {
        let def = every_10s(Overlap::Skip, CatchupPolicy::Once, 3600, 100);
        let p = plan(due(&def, t(10), false), t(10), GRACE, 100);
        assert_eq!(fates(&p), [Fire]);
        assert_eq!(p.next_at, Some(t(20)));
    }

    #[test]
    fn catch_up_skip_once_and_all_after_a_minute_without_a_scheduler() {
        // Down from t(10) to t(65): occurrences 10..60 are due; 10..50 were missed.
        for (policy, expected) in [
            (CatchupPolicy::Skip, vec![Skip(Missed); 5]),
            (
                CatchupPolicy::Once,
                vec![Skip(Missed), Skip(Missed), Skip(Missed), Skip(Missed), Fire],
            ),
            (CatchupPolicy::All, vec![Fire; 5]),
        ] {
            let def = every_10s(Overlap::AllowAll, policy, 3600, 100);
            let p = plan(due(&def, t(10), false), t(65), GRACE, 100);
            let mut want = expected.clone();
            want.push(Fire); // t(60) is 5 s late: within the grace, it fires
            assert_eq!(fates(&p), want, "{policy:?}");
            assert_eq!(p.next_at, Some(t(70)));
        }
    }

    #[test]
    fn the_window_and_max_bound_catch_up() {
        // window 25 s: of the missed 10..50, only 40 and 50 are in it.
        let def = every_10s(Overlap::AllowAll, CatchupPolicy::All, 25, 100);
        let p = plan(due(&def, t(10), false), t(65), GRACE, 100);
        assert_eq!(
            fates(&p),
            [Skip(Missed), Skip(Missed), Skip(Missed), Fire, Fire, Fire]
        );
        // max 2: the most recent two missed, oldest first.
        let def = every_10s(Overlap::AllowAll, CatchupPolicy::All, 3600, 2);
        let p = plan(due(&def, t(10), false), t(65), GRACE, 100);
        assert_eq!(
            fates(&p),
            [Skip(Missed), Skip(Missed), Skip(Missed), Fire, Fire, Fire]
        );
    }

    #[test]
    fn overlap_policies() {
        let skip = every_10s(Overlap::Skip, CatchupPolicy::Once, 3600, 100);
        assert_eq!(
            fates(&plan(due(&skip, t(10), true), t(10), GRACE, 100)),
            [Skip(Over)]
        );
        let allow = every_10s(Overlap::AllowAll, CatchupPolicy::Once, 3600, 100);
        assert_eq!(
            fates(&plan(due(&allow, t(10), true), t(10), GRACE, 100)),
            [Fire]
        );
        let buffer = every_10s(Overlap::BufferOne, CatchupPolicy::Once, 3600, 100);
        assert_eq!(
            fates(&plan(due(&buffer, t(10), true), t(12), GRACE, 100)),
            [Buffer]
        );
        let mut already = due(&buffer, t(10), true);
        already.buffered = true;
        assert_eq!(fates(&plan(already, t(12), GRACE, 100)), [Skip(Over)]);
        let cancel = every_10s(Overlap::CancelPrevious, CatchupPolicy::Once, 3600, 100);
        let p = plan(due(&cancel, t(10), true), t(10), GRACE, 100);
        assert_eq!(fates(&p), [Fire]);
        assert!(p.cancel_previous);
    }

    #[test]
    fn a_paused_schedule_records_each_occurrence_as_skipped_paused() {
        let mut def = every_10s(Overlap::Skip, CatchupPolicy::Once, 3600, 100);
        def.paused = true;
        let p = plan(due(&def, t(10), false), t(30), GRACE, 100);
        assert_eq!(fates(&p), [Skip(Paused); 3]);
        assert_eq!(p.next_at, Some(t(40)));
    }

    #[test]
    fn a_long_outage_decided_in_several_passes_fires_the_same_occurrences() {
        let def = every_10s(Overlap::AllowAll, CatchupPolicy::All, 3600, 2);
        let first = plan(due(&def, t(10), false), t(65), GRACE, 3);
        assert_eq!(fates(&first), [Skip(Missed); 3]);
        let second = plan(due(&def, first.next_at.unwrap(), false), t(65), GRACE, 3);
        assert_eq!(fates(&second), [Fire, Fire, Fire]);
        assert_eq!(second.next_at, Some(t(70)));
    }

    #[test]
    fn end_at_ends_the_schedule_and_the_limit_leaves_the_rest_for_later() {
        let mut def = every_10s(Overlap::AllowAll, CatchupPolicy::All, 3600, 100);
        def.end_at = Some(t(20));
        let p = plan(due(&def, t(10), false), t(30), GRACE, 100);
        assert_eq!(p.decisions.len(), 2);
        assert_eq!(p.next_at, None);

        let def = every_10s(Overlap::AllowAll, CatchupPolicy::All, 3600, 100);
        let p = plan(due(&def, t(10), false), t(100), GRACE, 3);
        assert_eq!(p.decisions.len(), 3);
        assert_eq!(p.next_at, Some(t(40)));
    }
}
