//! Making one call: the job's method, URL, headers and body, plus `X-Courier-*` headers
//! and, when secrets are configured, the Standard Webhooks signature headers; redirects
//! off unless the job enables them; SSRF protection on every address connected to; the
//! response read up to a cap.

use std::{sync::Arc, time::Duration};

use bytes::BytesMut;
use chrono::Utc;
use courier_core::{
    Settings, crypto::SecretBox, domain::is_secret_header, outbound::OutboundPolicy, queue::Leased,
    signing::Signer,
};
use reqwest::{Client, header::HeaderValue, redirect::Policy};

use crate::guard::{GuardedResolver, redirect_policy, refusal_in};

/// Response bytes kept with the execution record.
pub const EXCERPT_BYTES: usize = 4 * 1024;

/// The signature headers of Standard Webhooks; a job's own headers of these names are
/// dropped when Courier signs.
const SIGNATURE_HEADERS: [&str; 3] = ["webhook-id", "webhook-timestamp", "webhook-signature"];

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

/// Two clients sharing nothing but settings (one never follows redirects, one does), both
/// resolving names through SSRF protection; the signer; and the keys that open sealed
/// header values.
#[derive(Clone)]
pub struct HttpCaller {
    direct: Client,
    following: Client,
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
        let concurrency = settings.worker.concurrency;
        let build = |policy: Policy| {
            Client::builder()
                .redirect(policy)
                .dns_resolver(GuardedResolver {
                    policy: outbound.clone(),
                })
                // Courier calls whatever the job names; a proxy from the environment would
                // silently reroute (and could expose) every call, and would do the DNS
                // lookups SSRF protection must see.
                .no_proxy()
                .pool_max_idle_per_host(concurrency)
                .pool_idle_timeout(Duration::from_secs(60))
                .tcp_nodelay(true)
                .user_agent(concat!("Courier/", env!("CARGO_PKG_VERSION")))
                .build()
        };
        Ok(Self {
            direct: build(Policy::none())?,
            following: build(redirect_policy(outbound.clone()))?,
            outbound,
            signer,
            max_response_bytes: settings.outbound.max_response_bytes,
            secrets,
        })
    }

    /// Makes the call of `job`'s attempt, within the job's timeout.
    pub async fn call(&self, job: &Leased) -> CallResult {
        let spec = &job.spec;
        let client = if spec.follow_redirects {
            &self.following
        } else {
            &self.direct
        };
        let url = spec.target.url.as_url();
        // Connections to IP literals skip the resolver: they are checked here.
        if let Err(refusal) = self.outbound.check_url(url) {
            return CallResult::Refused(refusal.to_string());
        }
        let method = reqwest::Method::from_bytes(spec.target.method.as_str().as_bytes())
            .expect("methods are valid");
        let id = job.id.to_string();
        let headers = match spec.target.opened_headers(&self.secrets, &id) {
            Ok(headers) => headers,
            Err((name, e)) => {
                return CallResult::Failed(format!("cannot decrypt header {name}: {e}"));
            }
        };
        let body = spec.target.body.as_bytes();
        let signature = self
            .signer
            .headers(job.queue.as_str(), &id, Utc::now().timestamp(), body);
        let mut request = client.request(method, url.clone());
        for (name, value) in headers {
            let replaced = signature.is_some()
                && SIGNATURE_HEADERS
                    .iter()
                    .any(|h| name.eq_ignore_ascii_case(h));
            if replaced {
                continue;
            }
            let mut value = match HeaderValue::from_str(&value) {
                Ok(value) => value,
                Err(_) => return CallResult::Failed(format!("header {name} has an invalid value")),
            };
            value.set_sensitive(is_secret_header(&name));
            request = request.header(name, value);
        }
        if let Some(signature) = signature {
            request = request
                .header("webhook-id", signature.id)
                .header("webhook-timestamp", signature.timestamp)
                .header("webhook-signature", signature.signature);
        }
        request = request
            .header("X-Courier-Job-Id", id)
            .header("X-Courier-Attempt", job.attempt.to_string())
            .body(spec.target.body.clone());
        let timeout = Duration::from_millis(spec.timeout_ms);
        match tokio::time::timeout(timeout, send(request, self.max_response_bytes)).await {
            Ok(result) => result,
            Err(_) => CallResult::TimedOut,
        }
    }
}

async fn send(request: reqwest::RequestBuilder, max_bytes: usize) -> CallResult {
    let mut response = match request.send().await {
        Ok(response) => response,
        Err(e) if e.is_timeout() => return CallResult::TimedOut,
        Err(e) => {
            return match refusal_in(&e) {
                Some(refusal) => CallResult::Refused(refusal.to_string()),
                None => CallResult::Failed(describe(e)),
            };
        }
    };
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(parse_retry_after);
    let mut body = BytesMut::new();
    while body.len() < max_bytes {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                body.extend_from_slice(&chunk[..chunk.len().min(max_bytes - body.len())])
            }
            Ok(None) => break,
            // The answer's status already arrived; a broken body does not change it.
            Err(_) => break,
        }
    }
    // Dropping a response that was not read to the end closes its connection.
    drop(response);
    CallResult::Answered {
        status,
        retry_after,
        excerpt: excerpt(&body),
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

/// The error chain, without the URL (which reqwest repeats and which may carry secrets).
fn describe(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut message = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

/// `Retry-After` as seconds or as an HTTP date.
pub fn parse_retry_after(value: &HeaderValue) -> Option<Duration> {
    let value = value.to_str().ok()?.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    let now = std::time::SystemTime::from(Utc::now());
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        assert_eq!(
            parse_retry_after(&HeaderValue::from_static("2")),
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            parse_retry_after(&HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT")),
            Some(Duration::ZERO)
        );
        let later =
            httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(120));
        let wait = parse_retry_after(&HeaderValue::from_str(&later).unwrap()).unwrap();
        assert!(
            wait > Duration::from_secs(100) && wait <= Duration::from_secs(120),
            "{wait:?}"
        );
        assert_eq!(parse_retry_after(&HeaderValue::from_static("soon")), None);
    }

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
