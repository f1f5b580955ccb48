//! The HTTP side: one client for the API's base URL and key, turning answers into the
//! view types of `courier_wire` and error answers into [`CliError::Api`].

use std::time::Duration;

use reqwest::{Method, RequestBuilder, Response, StatusCode, header};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::CliError;

/// How long one request may take. A batch of 1000 jobs commits in well under a second;
/// this only bounds a hung connection.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The most of a non-problem error body shown.
const BODY_EXCERPT: usize = 300;

/// A client of one Courier API.
#[derive(Clone)]
pub struct Api {
    http: reqwest::Client,
    base: String,
}

/// A 2xx answer: its status, the body as the typed view and as raw JSON (printed as is
/// with `--json`, so that fields this CLI does not know yet still show).
pub struct Answer<T> {
    pub status: StatusCode,
    pub view: T,
    pub raw: Value,
}

impl Api {
    /// A client for the API at `base` (`http://127.0.0.1:8080`), sending `key` as
    /// `Authorization: Bearer` when given.
    ///
    /// # Errors
    /// A base URL that is not http(s), or a key that cannot be a header value.
    pub fn new(base: &str, key: Option<&str>) -> Result<Self, CliError> {
        let base = base.trim_end_matches('/').to_owned();
        let parsed = reqwest::Url::parse(&base)
            .map_err(|e| CliError::Usage(format!("--url {base:?} is not a URL: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
            return Err(CliError::Usage(format!(
                "--url {base:?} must be an http:// or https:// URL"
            )));
        }
        let mut headers = header::HeaderMap::new();
        if let Some(key) = key.filter(|k| !k.is_empty()) {
            let mut value =
                header::HeaderValue::from_str(&format!("Bearer {key}")).map_err(|_| {
                    CliError::Usage("the API key holds characters a header cannot carry".into())
                })?;
            value.set_sensitive(true);
            headers.insert(header::AUTHORIZATION, value);
        }
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .user_agent(concat!("courier-cli/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .build()
            .map_err(|e| CliError::Usage(format!("cannot build an HTTP client: {e}")))?;
        Ok(Self { http, base })
    }

    /// The API's base URL, without a trailing slash.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// A request to `path` (which starts with `/`).
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.http.request(method, format!("{}{path}", self.base))
    }

    /// `GET path`, read as `T`.
    ///
    /// # Errors
    /// No answer, an error answer, or a body that is not a `T`.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<Answer<T>, CliError> {
        self.call(self.request(Method::GET, path), path).await
    }

    /// `POST path` with `body` as JSON (none when `None`), read as `T`.
    ///
    /// # Errors
    /// As [`Self::get`].
    pub async fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Answer<T>, CliError> {
        let mut request = self.request(Method::POST, path);
        if let Some(body) = body {
            request = request.json(body);
        }
        self.call(request, path).await
    }

    /// Sends `request` and reads a 2xx answer as `T`.
    ///
    /// # Errors
    /// As [`Self::get`].
    pub async fn call<T: DeserializeOwned>(
        &self,
        request: RequestBuilder,
        what: &str,
    ) -> Result<Answer<T>, CliError> {
        let response = request.send().await.map_err(|e| self.unreachable(&e))?;
        self.read(response, what).await
    }

    /// Reads a 2xx answer as `T`, or turns an error answer into [`CliError::Api`].
    ///
    /// # Errors
    /// As [`Self::get`].
    pub async fn read<T: DeserializeOwned>(
        &self,
        response: Response,
        what: &str,
    ) -> Result<Answer<T>, CliError> {
        let status = response.status();
        let bytes = response.bytes().await.map_err(|e| self.unreachable(&e))?;
        if !status.is_success() {
            return Err(api_error(status, &bytes));
        }
        let unexpected = |reason: String| CliError::Unexpected {
            what: what.to_owned(),
            reason,
        };
        let raw: Value = serde_json::from_slice(&bytes)
            .map_err(|e| unexpected(format!("the body is not JSON ({e})")))?;
        let view = T::deserialize(&raw).map_err(|e| unexpected(e.to_string()))?;
        Ok(Answer { status, view, raw })
    }

    /// The error for a request that got no answer.
    pub fn unreachable(&self, e: &reqwest::Error) -> CliError {
        CliError::Connection {
            base: self.base.clone(),
            reason: error_chain(e),
        }
    }
}

/// An error answer as [`CliError::Api`], with its problem document when it is one.
pub fn api_error(status: StatusCode, body: &[u8]) -> CliError {
    let problem = serde_json::from_slice(body).ok().map(Box::new);
    let body = if problem.is_some() {
        String::new()
    } else {
        let text = String::from_utf8_lossy(body);
        let text = text.trim();
        match text.char_indices().nth(BODY_EXCERPT) {
            Some((at, _)) => format!("{}…", &text[..at]),
            None => text.to_owned(),
        }
    };
    CliError::Api {
        status: status.as_u16(),
        problem,
        body,
    }
}

/// reqwest's error with its causes (`error sending request: connection refused`).
fn error_chain(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        let message = cause.to_string();
        if !text.contains(&message) {
            text.push_str(": ");
            text.push_str(&message);
        }
        source = cause.source();
    }
    text
}

/// Percent-encodes one path segment or query value.
pub fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
