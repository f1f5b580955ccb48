//! A job's callback (SPEC 11): where to POST the job when it ends in one of the listed
//! states. The callback is a job of its own, made in the transaction that ends its
//! parent; its body is the parent as `GET /v1/jobs/{id}` shows it.

use serde::{Deserialize, Serialize};

use super::{
    JobState, TargetUrl,
    target::{open_headers, redacted_headers, seal_headers},
};
use crate::crypto::{SealError, SecretBox};

/// The states a callback fires on when `on` is left out: the job's own outcomes (a
/// cancellation is the caller's doing, and opted into).
pub const DEFAULT_ON: [JobState; 2] = [JobState::Succeeded, JobState::Dead];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Callback {
    pub url: TargetUrl,
    /// Sent with the callback's POST; secret-looking values are sealed like a target's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<(String, String)>,
    /// Terminal states only, each once.
    #[serde(default = "default_on", skip_serializing_if = "is_default_on")]
    pub on: Vec<JobState>,
}

fn default_on() -> Vec<JobState> {
    DEFAULT_ON.to_vec()
}

fn is_default_on(on: &[JobState]) -> bool {
    on == DEFAULT_ON
}

impl Callback {
    /// Whether a job ending in `state` calls back.
    pub fn fires_on(&self, state: JobState) -> bool {
        self.on.contains(&state)
    }

    /// Seals every secret-looking header value for `context` (the job's id).
    pub fn seal_secrets(&mut self, secrets: &SecretBox, context: &str) {
        seal_headers(&mut self.headers, secrets, context);
    }

    /// The headers with secret values opened from `context`.
    ///
    /// # Errors
    /// The name of a secret header whose value does not open, and why.
    pub fn opened_headers(
        &self,
        secrets: &SecretBox,
        context: &str,
    ) -> Result<Vec<(String, String)>, (String, SealError)> {
        open_headers(&self.headers, secrets, context)
    }

    /// The headers as they may be shown: secret values replaced by `[redacted]`.
    pub fn redacted_headers(&self) -> impl Iterator<Item = (&str, &str)> {
        redacted_headers(&self.headers)
    }
}
