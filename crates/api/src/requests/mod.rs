//! What clients send: the request bodies and query strings of the API (bodies with their
//! OpenAPI schemas), each parsed into domain values on the first line of its handler.

mod bulk;
mod flow;
mod job;
mod job_list;
pub mod page;
mod schedule;

use courier_core::domain::rules::{IntRange, NameRule};
use serde::{Deserialize, Deserializer};

pub use bulk::{BulkFilterRequest, BulkRequest, LABEL_FILTER};
pub use flow::{FlowKeyRequest, QueueSettingsPatch, RateRequest};
pub use job::{
    BackoffRequest, BatchRequest, CallbackRequest, JobRequest, ProgressRequest, TargetRequest,
};
pub use job_list::job_list_query;
pub use page::Page;
pub use schedule::{
    BackfillRequest, CatchupRequest, MAX_BACKFILL, ParseContext, PauseRequest, SchedulePatch,
    ScheduleRequest, check_note,
};

/// For a field of a `PATCH` body: `Some(None)` for an explicit `null` (clear it), `None`
/// for a field left out (keep it). Used with `#[serde(default)]`.
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// A bound or pattern the parsing of a request enforces, as the OpenAPI document
/// declares it (`crate::openapi`): each request module lists its own, from the same
/// constants its parsing checks against.
#[derive(Debug, Clone)]
pub enum Rule {
    /// `minimum` and `maximum`.
    Int(IntRange),
    /// `exclusiveMinimum` (when `exclusive`) or `minimum`, and `maximum`.
    Number { min: f64, exclusive: bool, max: f64 },
    /// `pattern`, from the name's rule.
    Name(NameRule),
    /// `pattern`.
    Pattern(String),
    /// `maxLength`, in characters.
    MaxChars(usize),
    /// `minItems` and `maxItems`.
    Items(IntRange),
    /// Each item's rule.
    EachItem(Box<Rule>),
    /// `maxProperties`.
    MaxProperties(usize),
    /// The keys' (`propertyNames`) rule.
    Keys(Box<Rule>),
    /// The values' (`additionalProperties`) rule.
    Values(Box<Rule>),
    /// `enum` (and `null`, for a field that may be left out).
    OneOf(Vec<&'static str>),
    /// `format: date-time` (RFC 3339).
    DateTime,
    /// Several rules on one field.
    All(Vec<Rule>),
    /// Any JSON Schema, for what the others do not say.
    Schema(serde_json::Value),
}

/// A rule of one field of a schema of the document: `field` is a path of property
/// names under the schema (`"rate.per_second"`); empty for the schema itself.
#[derive(Debug, Clone)]
pub struct Declared {
    pub schema: &'static str,
    pub field: &'static str,
    pub rule: Rule,
}

impl Declared {
    pub fn new(schema: &'static str, field: &'static str, rule: Rule) -> Self {
        Self {
            schema,
            field,
            rule,
        }
    }
}

/// Every request body's rules under `limits`.
pub fn declared(limits: &courier_core::settings::JobLimits) -> Vec<Declared> {
    let mut all = job::declared(limits);
    all.extend(flow::declared());
    all.extend(schedule::declared());
    all.extend(bulk::declared());
    all
}
