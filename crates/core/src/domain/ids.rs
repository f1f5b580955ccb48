//! Names and ids: a job's id, an attempt's fencing token, a queue's and a schedule's
//! name, valid by construction.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A job's id: a UUIDv7, so ids sort by creation time.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, sqlx::Type,
)]
#[sqlx(transparent)]
#[serde(transparent)]
pub struct JobId(Uuid);

impl JobId {
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }

    pub fn as_uuid(&self) -> Uuid {
        self.0
    }

    /// When the id was made (a UUIDv7 carries its millisecond); the epoch for an id that
    /// is not a UUIDv7.
    pub fn created_at(&self) -> chrono::DateTime<chrono::Utc> {
        let ms = (self.0.as_u128() >> 80) as i64;
        chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default()
    }

    /// # Errors
    /// Not a UUID.
    pub fn parse(s: &str) -> Result<Self, uuid::Error> {
        Uuid::parse_str(s).map(Self)
    }
}

impl Default for JobId {
    fn default() -> Self {
        Self::new()
    }
}

impl From<Uuid> for JobId {
    fn from(value: Uuid) -> Self {
        Self(value)
    }
}

impl std::fmt::Display for JobId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// The fencing token of one attempt. Tokens grow over time (Redis's clock in
/// microseconds, then a sequence), so a newer attempt of a job always has a larger
/// token than an older one, and PostgreSQL compares them before any write.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, sqlx::Type,
)]
#[sqlx(transparent)]
#[serde(transparent)]
pub struct Token(pub i64);

/// A queue name: `[a-z0-9_-]{1,64}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct QueueName(String);

impl QueueName {
    /// # Errors
    /// A message saying what is wrong with the name.
    pub fn parse(raw: &str) -> Result<Self, String> {
        if super::rules::QUEUE_NAME.allows(raw) {
            Ok(Self(raw.to_owned()))
        } else {
            Err(format!("must be {}", super::rules::QUEUE_NAME.describe()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for QueueName {
    fn default() -> Self {
        Self("default".into())
    }
}

impl TryFrom<String> for QueueName {
    type Error = String;
    fn try_from(value: String) -> Result<Self, String> {
        Self::parse(&value)
    }
}

impl From<QueueName> for String {
    fn from(value: QueueName) -> Self {
        value.0
    }
}

impl std::fmt::Display for QueueName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A schedule's name: `[A-Za-z0-9_.-]{1,128}`, unique; the API addresses schedules by it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ScheduleName(String);

impl ScheduleName {
    /// # Errors
    /// What is wrong with the name.
    pub fn parse(raw: &str) -> Result<Self, String> {
        if super::rules::SCHEDULE_NAME.allows(raw) {
            Ok(Self(raw.to_owned()))
        } else {
            Err(format!(
                "must be {}",
                super::rules::SCHEDULE_NAME.describe()
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ScheduleName {
    type Error = String;
    fn try_from(value: String) -> Result<Self, String> {
        Self::parse(&value)
    }
}

impl From<ScheduleName> for String {
    fn from(value: ScheduleName) -> Self {
        value.0
    }
}

impl std::fmt::Display for ScheduleName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A flow key (SPEC 10), for example a tenant or the target's host: `[A-Za-z0-9_.:-]{1,128}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct FlowKey(String);

impl FlowKey {
    /// # Errors
    /// What is wrong with the key.
    pub fn parse(raw: &str) -> Result<Self, String> {
        if super::rules::FLOW_KEY.allows(raw) {
            Ok(Self(raw.to_owned()))
        } else {
            Err(format!("must be {}", super::rules::FLOW_KEY.describe()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for FlowKey {
    type Error = String;
    fn try_from(value: String) -> Result<Self, String> {
        Self::parse(&value)
    }
}

impl From<FlowKey> for String {
    fn from(value: FlowKey) -> Self {
        value.0
    }
}

impl std::fmt::Display for FlowKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// PostgreSQL `text` for a name newtype: stored names were valid when written (a
/// `CHECK` keeps them so) and are parsed again on the way out.
macro_rules! text_column {
    ($name:ty) => {
        impl sqlx::Type<sqlx::Postgres> for $name {
            fn type_info() -> sqlx::postgres::PgTypeInfo {
                <String as sqlx::Type<sqlx::Postgres>>::type_info()
            }
        }

        impl sqlx::Decode<'_, sqlx::Postgres> for $name {
            fn decode(
                value: sqlx::postgres::PgValueRef<'_>,
            ) -> Result<Self, sqlx::error::BoxDynError> {
                let raw = <&str as sqlx::Decode<sqlx::Postgres>>::decode(value)?;
                Ok(Self::parse(raw)?)
            }
        }

        impl sqlx::Encode<'_, sqlx::Postgres> for $name {
            fn encode_by_ref(
                &self,
                buf: &mut sqlx::postgres::PgArgumentBuffer,
            ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
                <&str as sqlx::Encode<sqlx::Postgres>>::encode(self.as_str(), buf)
            }
        }
    };
}

text_column!(QueueName);
text_column!(ScheduleName);
text_column!(FlowKey);
