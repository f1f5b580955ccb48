//! Making one call: the job's method, URL, headers and body, plus `X-Courier-*` headers;
//! redirects off unless the job enables them; the response read up to a cap.

use std::time::Duration;

use bytes::BytesMut;
use chrono::Utc;
use courier_core::queue::Leased;
use reqwest::{Client, header::HeaderValue, redirect::Policy};

/// Most response bytes read; the rest is discarded and the connection closed.
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024;
/// Response bytes kept with the execution record.
pub const EXCERPT_BYTES: usize = 4 * 1024;
const MAX_REDIRECTS: usize = 10;

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
}

/// Two clients sharing nothing but settings: one never follows redirects, one does.
#[derive(Clone)]
pub struct HttpCaller {
    direct: Client,
    following: Client,
}

impl HttpCaller {
    /// # Errors
    /// The TLS backend failing to initialise.
    pub fn new(concurrency: usize) -> Result<Self, reqwest::Error> {
        let build = |policy: Policy| {
            Client::builder()
                .redirect(policy)
                // Courier calls whatever the job names; a proxy from the environment would
                // silently reroute (and could expose) every call.
                .no_proxy()
                .pool_max_idle_per_host(concurrency)
                .pool_idle_timeout(Duration::from_secs(60))
                .tcp_nodelay(true)
                .user_agent(concat!("Courier/", env!("CARGO_PKG_VERSION")))
                .build()
        };
        Ok(Self {
            direct: build(Policy::none())?,
            following: build(Policy::limited(MAX_REDIRECTS))?,
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
        let method = reqwest::Method::from_bytes(spec.target.method.as_str().as_bytes())
            .expect("methods are valid");
        let mut request = client.request(method, spec.target.url.as_url().clone());
        for (name, value) in &spec.target.headers {
            request = request.header(name, value);
        }
        request = request
            .header("X-Courier-Job-Id", job.id.to_string())
            .header("X-Courier-Attempt", job.attempt.to_string())
            .body(spec.target.body.clone());
        let timeout = Duration::from_millis(spec.timeout_ms);
        match tokio::time::timeout(timeout, send(request)).await {
            Ok(result) => result,
            Err(_) => CallResult::TimedOut,
        }
    }
}

async fn send(request: reqwest::RequestBuilder) -> CallResult {
    let mut response = match request.send().await {
        Ok(response) => response,
        Err(e) if e.is_timeout() => return CallResult::TimedOut,
        Err(e) => return CallResult::Failed(describe(e)),
    };
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(parse_retry_after);
    let mut body = BytesMut::new();
    while body.len() < MAX_RESPONSE_BYTES {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                body.extend_from_slice(&chunk[..chunk.len().min(MAX_RESPONSE_BYTES - body.len())])
            }
            Ok(None) => break,
            // The answer's status already arrived; a broken body does not change it.
            Err(_) => break,
        }
    }
    // Dropping a response that was not read to the end closes its connection.
    drop(response);
    let excerpt = String::from_utf8_lossy(&body[..body.len().min(EXCERPT_BYTES)]).into_owned();
    CallResult::Answered {
        status,
        retry_after,
        excerpt,
    }
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
}
