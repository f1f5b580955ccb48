//! Settings given as lists (a TOML array, or one comma-separated string from the
//! environment) and the settings parsed into domain values as they load.

use serde::Deserialize;

use crate::domain::{QueueName, TargetUrl};

/// `worker.queues`, parsed into queue names as it loads: a comma-separated list from the
/// environment (`COURIER__WORKER__QUEUES=` means none, not one empty name), where a name
/// of digits alone stays a name; a name that cannot be a queue's is refused, naming it.
pub(super) fn queue_list<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<QueueName>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Name {
        Text(String),
        Number(u64),
    }
    let names = Vec::<Name>::deserialize(deserializer)?;
    names
        .into_iter()
        .map(|n| match n {
            Name::Text(t) => t.trim().to_owned(),
            Name::Number(n) => n.to_string(),
        })
        .filter(|n| !n.is_empty())
        .map(|n| {
            QueueName::parse(&n).map_err(|e| {
                serde::de::Error::custom(format!(
                    "worker.queues (COURIER__WORKER__QUEUES): {n:?} {e}"
                ))
            })
        })
        .collect()
}

/// `server.public_url`, parsed as it loads: none when empty, otherwise an absolute
/// `http` or `https` URL (a progress URL is made from it for each call).
pub(super) fn public_url<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<TargetUrl>, D::Error> {
    let raw = String::deserialize(deserializer)?;
    let raw = raw.trim();
    if raw.is_empty() {
        return Ok(None);
    }
    TargetUrl::parse(raw).map(Some).map_err(|_| {
        serde::de::Error::custom(
            "server.public_url (COURIER__SERVER__PUBLIC_URL) must be an absolute http or https URL, or empty",
        )
    })
}

/// A list given as a TOML array or as one comma-separated string (from the environment).
pub(super) fn string_list<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<String>, D::Error> {
    Ok(split_list(StringOrList::deserialize(deserializer)?))
}

/// A map whose values are lists, each given either way.
pub(super) fn string_list_map<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<std::collections::BTreeMap<String, Vec<String>>, D::Error> {
    let map = std::collections::BTreeMap::<String, StringOrList>::deserialize(deserializer)?;
    Ok(map.into_iter().map(|(k, v)| (k, split_list(v))).collect())
}

#[derive(Deserialize)]
#[serde(untagged)]
enum StringOrList {
    One(String),
    Many(Vec<String>),
}

fn split_list(value: StringOrList) -> Vec<String> {
    let items = match value {
        StringOrList::One(s) => s.split(',').map(str::to_owned).collect(),
        StringOrList::Many(v) => v,
    };
    items
        .into_iter()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect()
}
