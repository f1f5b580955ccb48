//! Recurring schedules (SPEC 9): when occurrences fall ([`calendar`]), what a schedule is
//! ([`spec`]), and what becomes of each due occurrence ([`plan`]). The scheduler that
//! acts on them runs in every API process (`courier_api::scheduler`); the tables are
//! `repo::schedules`.

mod calendar;
mod plan;
mod spec;

pub use calendar::Calendar;
pub use plan::{Decision, Due, Fate, Plan, SkipReason, plan};
pub use spec::{
    CalendarSource, Catchup, CatchupPolicy, DEFAULT_CATCHUP, JobTemplate, Overlap, ScheduleDef,
};

pub use crate::domain::ScheduleName;
