//! Flow control's request bodies: a queue's settings (`PATCH`) and a flow key's limits
//! (`PUT`).

use courier_core::{
    Settings,
    domain::{FieldError, Limits, Problems, QueueFlow, Rate, rules},
};
use serde::Deserialize;
use utoipa::ToSchema;

use super::{Declared, Rule, present};
use crate::extract::JsonBody;

/// A token bucket: calls started per second, with a burst.
#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RateRequest {
    /// More than 0 and at most 1000000; fractions allowed (0.5 is one call every 2 s).
    pub per_second: f64,
    /// Calls that may start at once after a quiet spell, 1 to 1000000; the calls of one
    /// second (`per_second` rounded up) when left out.
    pub burst: Option<i64>,
}

/// `PATCH /v1/queues/{name}/settings`: fields left out keep their value, `null` removes
/// a limit.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QueueSettingsPatch {
    /// A paused queue starts no call; calls in flight finish.
    pub paused: Option<bool>,
    /// Calls started per second across every worker; `null` for no limit.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<RateRequest>)]
    pub rate: Option<Option<RateRequest>>,
    /// Calls in flight at once across every worker, 1 to 100000; `null` for no limit.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<i64>)]
    pub max_concurrency: Option<Option<i64>>,
}

/// `PUT /v1/flow-keys/{key}`: the key's limits, replaced whole (a limit left out is no
/// limit).
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FlowKeyRequest {
    pub rate: Option<RateRequest>,
    /// 1 to 100000.
    pub max_concurrency: Option<i64>,
}

/// The rules of flow control's fields, as the document declares them.
pub fn declared() -> Vec<Declared> {
    let per_second = Rule::Number {
        min: 0.0,
        exclusive: true,
        max: rules::MAX_PER_SECOND,
    };
    vec![
        Declared::new("RateRequest", "per_second", per_second),
        Declared::new("RateRequest", "burst", Rule::Int(rules::BURST)),
        Declared::new(
            "QueueSettingsPatch",
            "max_concurrency",
            Rule::Int(rules::CONCURRENCY),
        ),
        Declared::new(
            "FlowKeyRequest",
            "max_concurrency",
            Rule::Int(rules::CONCURRENCY),
        ),
    ]
}

fn rate(p: &mut Problems, rate: RateRequest) -> Option<Rate> {
    Rate::new(rate.per_second, rate.burst)
        .map_err(|(field, message)| p.push(&format!("rate.{field}"), message))
        .ok()
}

fn concurrency(p: &mut Problems, value: i64) -> Option<u32> {
    p.check("max_concurrency", rules::CONCURRENCY.check(value))
        .map(|c| c as u32)
}

impl QueueSettingsPatch {
    /// The change to make to a queue's settings.
    ///
    /// # Errors
    /// Every field that is wrong.
    pub fn parse(self) -> Result<impl FnOnce(&mut QueueFlow), Vec<FieldError>> {
        let mut p = Problems::new();
        let rate = self.rate.map(|r| r.and_then(|r| rate(&mut p, r)));
        let conc = self
            .max_concurrency
            .map(|c| c.and_then(|c| concurrency(&mut p, c)));
        let paused = self.paused;
        p.finish(Some(move |flow: &mut QueueFlow| {
            if let Some(paused) = paused {
                flow.paused = paused;
            }
            if let Some(rate) = rate {
                flow.limits.rate = rate;
            }
            if let Some(conc) = conc {
                flow.limits.max_concurrency = conc;
            }
        }))
    }
}

impl FlowKeyRequest {
    /// The key's limits.
    ///
    /// # Errors
    /// Every field that is wrong.
    pub fn parse(self) -> Result<Limits, Vec<FieldError>> {
        let mut p = Problems::new();
        let rate = self.rate.and_then(|r| rate(&mut p, r));
        let max_concurrency = self.max_concurrency.and_then(|c| concurrency(&mut p, c));
        p.finish(Some(Limits {
            rate,
            max_concurrency,
        }))
    }
}

impl JsonBody for QueueSettingsPatch {
    fn limit(_: &Settings) -> usize {
        4096
    }
}

impl JsonBody for FlowKeyRequest {
    fn limit(_: &Settings) -> usize {
        4096
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn patch(json: &str) -> Result<QueueFlow, Vec<String>> {
        let patch: QueueSettingsPatch = serde_json::from_str(json).unwrap();
        let mut flow = QueueFlow {
            paused: false,
            limits: Limits {
                rate: Some(Rate::new(10.0, None).unwrap()),
                max_concurrency: Some(3),
            },
        };
        let change = patch
            .parse()
            .map_err(|e| e.into_iter().map(|e| e.field).collect::<Vec<_>>())?;
        change(&mut flow);
        Ok(flow)
    }

    #[test]
    fn a_patch_keeps_what_it_leaves_out_and_clears_what_it_nulls() {
        let flow = patch(r#"{"paused": true}"#).unwrap();
        assert!(flow.paused);
        assert_eq!(flow.limits.max_concurrency, Some(3));
        let flow = patch(r#"{"rate": null, "max_concurrency": 7}"#).unwrap();
        assert_eq!(flow.limits.rate, None);
        assert_eq!(flow.limits.max_concurrency, Some(7));
        let flow = patch(r#"{"rate": {"per_second": 2.5}}"#).unwrap();
        assert_eq!(
            flow.limits.rate,
            Some(Rate {
                per_second: 2.5,
                burst: 3
            })
        );
    }

    #[test]
    fn bad_limits_name_their_fields() {
        assert_eq!(
            patch(r#"{"rate": {"per_second": 0}, "max_concurrency": 0}"#).unwrap_err(),
            ["rate.per_second", "max_concurrency"]
        );
        assert_eq!(
            patch(r#"{"rate": {"per_second": -1, "burst": 0}}"#).unwrap_err(),
            ["rate.per_second"]
        );
        assert_eq!(
            patch(r#"{"rate": {"per_second": 1, "burst": 0}}"#).unwrap_err(),
            ["rate.burst"]
        );
    }
}
