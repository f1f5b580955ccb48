//! Making one call: the job's method, URL, headers and body, plus `X-Courier-*` headers
//! and, when secrets are configured, the Standard Webhooks signature headers; redirects
//! off unless the job enables them; SSRF protection on every address connected to; the
//! response read up to a cap.

use std::{sync::Arc, time::Duration};

use chrono::Utc;
use courier_core::{
    Settings, crypto::SecretBox, outbound::OutboundPolicy, queue::Leased, signing::Signer,
};

use crate::client::{
    Client, Outgoing, SendError,
    wire::{parse_retry_after, valid_header_value},
};

/// Response bytes kept with the execution record.
pub const EXCERPT_BYTES: usize = 4 * 1024;
/// Most redirects followed for one call.
pub const MAX_REDIRECTS: usize = 10;

/// The signature headers of Standard Webhooks; a job's own headers of these names are
/// dropped when Courier signs.
const SIGNATURE_HEADERS: [&str; 3] = ["webhook-id", "webhook-timestamp", "webhook-signature"];
/// Headers that stay with their origin: a redirect to another host drops them.
const ORIGIN_BOUND: [&str; 4] = [
    "authorization",
    "cookie",
    "proxy-authorization",
    "www-authenticate",
];

/// What came back from the target.
#[derive(Debug)]
pub enum CallResult {
    Answered {
        status: u16,
        /// The target's `Retry-After`, if it sent one we could read.
        retry_after: Option<Duration>,
        excerpt: String,
    },
    TimedOut,
    /// Connecting, sending or reading failed.
    Failed(String),
    /// SSRF protection refused the target (or a redirect hop): no request left.
    Refused(String),
}

/// The client (its pool, TLS and SSRF protection), the signer, and the keys that open
/// sealed header values.
#[derive(Clone)]
pub struct HttpCaller {
    client: Client,
    outbound: Arc<OutboundPolicy>,
    signer: Arc<Signer>,
    max_response_bytes: usize,
    secrets: Arc<SecretBox>,
}

impl HttpCaller {
    /// # Errors
    /// An invalid `outbound.allow` entry, signing secret or encryption key, or the TLS backend failing
    /// to initialise.
    pub fn new(settings: &Settings) -> anyhow::Result<Self> {
        let outbound = Arc::new(OutboundPolicy::from_settings(&settings.outbound)?);
        let signer = Arc::new(Signer::from_settings(&settings.signing)?);
        let secrets = Arc::new(SecretBox::from_settings(&settings.secrets)?);
        // Courier calls whatever the job names, and never through a proxy from the
        // environment: a proxy would silently reroute (and could expose) every call, and
        // would do the DNS lookups SSRF protection must see.
        let client = Client::new(
            outbound.clone(),
            settings.worker.concurrency,
            Duration::from_secs(60),
            concat!("Courier/", env!("CARGO_PKG_VERSION")).to_owned(),
        )?;
        Ok(Self {
            client,
            outbound,
            signer,
            max_response_bytes: settings.outbound.max_response_bytes,
            secrets,
        })
    }

    /// Makes the call of `job`'s attempt, within the job's timeout.
    pub async fn call(&self, job: &Leased) -> CallResult {
        let spec = &job.spec;
        let url = spec.target.url.as_url();
        // Connections to IP literals skip the resolver: they are checked here.
        if let Err(refusal) = self.outbound.check_url(url) {
            return CallResult::Refused(refusal.to_string());
        }
        let id = job.id.to_string();
        let opened = match spec.target.opened_headers(&self.secrets, &id) {
            Ok(headers) => headers,
            Err((name, e)) => {
                return CallResult::Failed(format!("cannot decrypt header {name}: {e}"));
            }
        };
        let body = spec.target.body.as_bytes();
        let signature = self
            .signer
            .headers(job.queue.as_str(), &id, Utc::now().timestamp(), body);
        let attempt = job.attempt.to_string();
        let mut headers: Vec<(&str, &str)> = Vec::with_capacity(opened.len() + 5);
        for (name, value) in &opened {
            let replaced = signature.is_some()
                && SIGNATURE_HEADERS
                    .iter()
                    .any(|h| name.eq_ignore_ascii_case(h));
            if replaced {
                continue;
            }
            if !valid_header_value(value) {
                return CallResult::Failed(format!("header {name} has an invalid value"));
            }
            headers.push((name.as_str(), value.as_str()));
        }
        if let Some(signature) = &signature {
            headers.push(("webhook-id", &signature.id));
            headers.push(("webhook-timestamp", &signature.timestamp));
            headers.push(("webhook-signature", &signature.signature));
        }
        headers.push(("x-courier-job-id", &id));
        headers.push(("x-courier-attempt", &attempt));
        let method = spec.target.method.as_str();
        let timeout = Duration::from_millis(spec.timeout_ms);
        let follow = spec.follow_redirects;
        match tokio::time::timeout(timeout, self.send(method, url, headers, body, follow)).await {
            Ok(result) => result,
            Err(_) => CallResult::TimedOut,
        }
    }

    /// Sends, following redirects when asked: each hop checked like the first (a hop to a
    /// name is checked again when it resolves), `Authorization` and cookies dropped when
    /// a hop leaves the origin, and a POST turned into a GET by 301, 302 and 303 as
    /// browsers do.
    async fn send(
        &self,
        mut method: &str,
        url: &url::Url,
        mut headers: Vec<(&str, &str)>,
        mut body: &[u8],
        follow: bool,
    ) -> CallResult {
        let mut url = std::borrow::Cow::Borrowed(url);
        let mut hops = 0;
        loop {
            let request = Outgoing {
                method,
                url: &url,
                headers: &headers,
                body,
            };
            let answer = match self.client.send(&request, self.max_response_bytes).await {
                Ok(answer) => answer,
                Err(SendError::Refused(refusal)) => {
                    return CallResult::Refused(refusal.to_string());
                }
                Err(e) => return CallResult::Failed(e.to_string()),
            };
            let redirect = matches!(answer.status, 301 | 302 | 303 | 307 | 308);
            if let (true, true, Some(location)) = (follow, redirect, &answer.location) {
                hops += 1;
                if hops > MAX_REDIRECTS {
                    return CallResult::Failed(format!("more than {MAX_REDIRECTS} redirects"));
                }
                let next = match url.join(location) {
                    Ok(next) if matches!(next.scheme(), "http" | "https") => next,
                    _ => {
                        return CallResult::Failed(format!(
                            "redirect to an invalid location {location:?}"
                        ));
                    }
                };
                if let Err(refusal) = self.outbound.check_url(&next) {
                    return CallResult::Refused(refusal.to_string());
                }
                if (answer.status == 303 && method != "HEAD")
                    || (matches!(answer.status, 301 | 302) && method == "POST")
                {
                    method = "GET";
                    body = b"";
                    headers.retain(|(n, _)| !n.eq_ignore_ascii_case("content-type"));
                }
                if next.origin() != url.origin() {
                    headers
                        .retain(|(n, _)| !ORIGIN_BOUND.iter().any(|h| n.eq_ignore_ascii_case(h)));
                }
                url = std::borrow::Cow::Owned(next);
                continue;
            }
            let now = std::time::SystemTime::from(Utc::now());
            return CallResult::Answered {
                status: answer.status,
                retry_after: answer
                    .retry_after
                    .as_deref()
                    .and_then(|v| parse_retry_after(v, now)),
                excerpt: excerpt(&answer.body),
            };
        }
    }
}

/// The start of a response body as text, at most [`EXCERPT_BYTES`] bytes even when
/// invalid UTF-8 was replaced (each replacement takes three bytes).
fn excerpt(body: &[u8]) -> String {
    let mut text = String::from_utf8_lossy(&body[..body.len().min(EXCERPT_BYTES)]).into_owned();
    if text.len() > EXCERPT_BYTES {
        let mut end = EXCERPT_BYTES;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excerpts_stay_within_their_bytes() {
        assert_eq!(excerpt(b"hello"), "hello");
        assert_eq!(excerpt(&[b'a'; 10_000]).len(), EXCERPT_BYTES);
        let invalid = excerpt(&[0xff; 10_000]);
        assert!(invalid.len() <= EXCERPT_BYTES && invalid.starts_with('\u{fffd}'));
        let multibyte = excerpt("é".repeat(5000).as_bytes());
        assert!(multibyte.len() <= EXCERPT_BYTES && !multibyte.contains('\u{fffd}'));
    }
}
