//! What a job calls: URL, method, headers and body.

use serde::{Deserialize, Serialize};

use super::redact::{REDACTED, is_secret_header};
use crate::crypto::{SealError, SecretBox};

/// Longest target URL, in bytes.
pub const MAX_URL_BYTES: usize = 2048;

/// Headers that describe one connection, not the message; forwarding them would break
/// the call or smuggle requests. `host` and `content-length` are Courier's to set.
pub const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
];

/// An absolute `http` or `https` URL of at most [`MAX_URL_BYTES`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TargetUrl(url::Url);

impl TargetUrl {
    /// # Errors
    /// A message saying what is wrong with the URL.
    pub fn parse(raw: &str) -> Result<Self, String> {
        if raw.len() > MAX_URL_BYTES {
            return Err(format!("must be at most {MAX_URL_BYTES} bytes"));
        }
        // `127.0.0.1:8080/x` is a relative URL to the parser, and `localhost:8080/x` one
        // with the scheme `localhost`: both lack the scheme, which is what to say.
        let no_scheme = || format!("has no scheme: write http://{raw} or https://{raw}");
        let host_first = !raw.contains("://")
            && raw.starts_with(|c: char| c.is_ascii_alphanumeric())
            && !raw.contains(char::is_whitespace);
        let url = url::Url::parse(raw).map_err(|e| match e {
            url::ParseError::RelativeUrlWithoutBase if host_first => no_scheme(),
            e => format!("is not an absolute URL: {e}"),
        })?;
        let host_and_port = raw
            .get(url.scheme().len() + 1..)
            .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()));
        if host_first && host_and_port {
            return Err(no_scheme());
        }
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!(
                "scheme must be http or https, not {}",
                url.scheme()
            ));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err("must name a host".into());
        }
        Ok(Self(url))
    }

    /// [`Self::parse`] of a URL a client submits, which must also be an RFC 3986 URI
    /// (what the OpenAPI document declares): the WHATWG parser would encode, or read
    /// as something else (`\\` as `/`), what a URI cannot hold. A stored URL is read
    /// with [`Self::parse`], as it was accepted.
    ///
    /// # Errors
    /// As [`Self::parse`], and a character a URI cannot hold.
    pub fn parse_submitted(raw: &str) -> Result<Self, String> {
        let url = Self::parse(raw)?;
        if let Some(c) = raw.chars().find(|c| !is_uri_char(*c)) {
            return Err(format!(
                "holds {c:?}, which a URI cannot (RFC 3986): percent-encode it, and write an \
                 internationalised host in its xn-- form"
            ));
        }
        Ok(url)
    }

    pub fn as_url(&self) -> &url::Url {
        &self.0
    }

    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl TryFrom<String> for TargetUrl {
    type Error = String;
    fn try_from(value: String) -> Result<Self, String> {
        Self::parse(&value)
    }
}

impl From<TargetUrl> for String {
    fn from(value: TargetUrl) -> Self {
        value.0.into()
    }
}

pub use courier_wire::Method;

/// A validated call: the headers are valid HTTP, within the limits, and none is
/// hop-by-hop or reserved for Courier.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Target {
    pub url: TargetUrl,
    #[serde(default, skip_serializing_if = "Method::is_post")]
    pub method: Method,
    /// In the order given; names as given (HTTP compares them case-insensitively).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<(String, String)>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub body: String,
}

impl Target {
    /// Checks `headers` against the limits and HTTP's grammar.
    ///
    /// # Errors
    /// One message per offending header, with the header's name.
    pub fn check_headers(
        headers: &[(String, String)],
        max_headers: usize,
        max_bytes: usize,
    ) -> Result<(), Vec<(String, String)>> {
        let mut errors = Vec::new();
        if headers.len() > max_headers {
            errors.push((
                String::new(),
                format!(
                    "at most {max_headers} headers are allowed, got {}",
                    headers.len()
                ),
            ));
        }
        let total: usize = headers.iter().map(|(n, v)| n.len() + v.len()).sum();
        if total > max_bytes {
            errors.push((
                String::new(),
                format!("headers may hold at most {max_bytes} bytes, got {total}"),
            ));
        }
        for (name, value) in headers {
            let lower = name.to_ascii_lowercase();
            if name.is_empty() || !name.bytes().all(is_token_byte) {
                errors.push((name.clone(), "is not a valid header name".into()));
            } else if HOP_BY_HOP.contains(&lower.as_str()) {
                errors.push((
                    name.clone(),
                    "is a hop-by-hop header and cannot be forwarded".into(),
                ));
            } else if lower.starts_with(COURIER_HEADER_PREFIX) {
                errors.push((
                    name.clone(),
                    "X-Courier-* headers are set by Courier".into(),
                ));
            }
            if value.bytes().any(|b| (b < 0x20 && b != b'\t') || b == 0x7f) {
                errors.push((name.clone(), "value may not hold control characters".into()));
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    /// Seals the value of every secret-looking header for the job `context` (its id),
    /// so that what is stored never holds the secret.
    pub fn seal_secrets(&mut self, secrets: &SecretBox, context: &str) {
        seal_headers(&mut self.headers, secrets, context);
    }

    /// Seals again, for `to`, the secret header values sealed for `from` (a schedule's
    /// template becoming a job).
    ///
    /// # Errors
    /// The name of a secret header whose value does not open, and why.
    pub fn reseal(
        &mut self,
        secrets: &SecretBox,
        from: &str,
        to: &str,
    ) -> Result<(), (String, SealError)> {
        self.headers = self.opened_headers(secrets, from)?;
        self.seal_secrets(secrets, to);
        Ok(())
    }

    /// The headers to send: secret values opened.
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

    /// The headers as they may be shown: secret values replaced by [`REDACTED`].
    pub fn redacted_headers(&self) -> impl Iterator<Item = (&str, &str)> {
        redacted_headers(&self.headers)
    }
}

/// Seals the value of every secret-looking header of `headers` for `context`.
pub(crate) fn seal_headers(headers: &mut [(String, String)], secrets: &SecretBox, context: &str) {
    for (name, value) in headers {
        if is_secret_header(name) {
            *value = secrets.seal(context, name, value);
        }
    }
}

/// `headers` with their secret values, sealed for `context`, opened.
pub(crate) fn open_headers(
    headers: &[(String, String)],
    secrets: &SecretBox,
    context: &str,
) -> Result<Vec<(String, String)>, (String, SealError)> {
    headers
        .iter()
        .map(|(name, value)| {
            if is_secret_header(name) {
                secrets
                    .open(context, name, value)
                    .map(|plain| (name.clone(), plain))
                    .map_err(|e| (name.clone(), e))
            } else {
                Ok((name.clone(), value.clone()))
            }
        })
        .collect()
}

/// `headers` as they may be shown: secret values replaced by [`REDACTED`].
pub(crate) fn redacted_headers(headers: &[(String, String)]) -> impl Iterator<Item = (&str, &str)> {
    headers.iter().map(|(name, value)| {
        let shown = if is_secret_header(name) {
            REDACTED
        } else {
            value.as_str()
        };
        (name.as_str(), shown)
    })
}

/// RFC 9110 `tchar`.
/// The characters of an RFC 3986 URI: unreserved, reserved and `%`.
pub fn is_uri_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-._~:/?#[]@!$&'()*+,;=%".contains(c)
}

/// The characters of a header's name (RFC 9110's `token`).
pub const HEADER_NAME_CHARS: &str = "!#$%&'*+-.^_`|~";

/// The prefix of the headers Courier sets on every call.
pub const COURIER_HEADER_PREFIX: &str = "x-courier-";

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || HEADER_NAME_CHARS.as_bytes().contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 28: a URL without its scheme is not called "a relative URL".
    #[test]
    fn a_url_without_its_scheme_is_told_so() {
        for raw in [
            "127.0.0.1:8080/healthz",
            "localhost:8080/healthz",
            "example.com/x",
        ] {
            assert_eq!(
                TargetUrl::parse(raw).unwrap_err(),
                format!("has no scheme: write http://{raw} or https://{raw}")
            );
        }
        for raw in ["not a url", "/relative"] {
            assert!(
                TargetUrl::parse(raw)
                    .unwrap_err()
                    .starts_with("is not an absolute URL"),
                "{raw}"
            );
        }
        assert_eq!(
            TargetUrl::parse("mailto:ops@example.com").unwrap_err(),
            "scheme must be http or https, not mailto"
        );
    }

    #[test]
    fn urls_must_be_absolute_http() {
        assert!(TargetUrl::parse("https://example.com/a?b=1").is_ok());
        assert!(TargetUrl::parse("http://127.0.0.1:8080").is_ok());
        for bad in [
            "ftp://example.com",
            "/relative",
            "example.com",
            "http://",
            "file:///etc/passwd",
        ] {
            assert!(TargetUrl::parse(bad).is_err(), "{bad}");
        }
        // What the document declares (`format: uri`) is what is accepted: RFC 3986's
        // characters only, where the WHATWG parser would encode the rest.
        for bad in [
            "https://\u{cf}",
            "https://example.com/a b",
            "https://example.com/\"x\"",
            "http://127.0.0.1\\@evil.com/",
        ] {
            assert!(
                TargetUrl::parse_submitted(bad)
                    .unwrap_err()
                    .contains("RFC 3986"),
                "{bad}"
            );
            // A URL stored before is still read.
            assert!(TargetUrl::parse(bad).is_ok(), "{bad}");
        }
        assert!(TargetUrl::parse_submitted("https://xn--bcher-kva.example/%C3%A9?q=a+b").is_ok());
        let long = format!("https://example.com/{}", "a".repeat(MAX_URL_BYTES));
        assert!(TargetUrl::parse(&long).is_err());
    }

    #[test]
    fn hop_by_hop_and_malformed_headers_are_refused() {
        let h = |n: &str, v: &str| vec![(n.to_string(), v.to_string())];
        let check = |headers: &[(String, String)]| Target::check_headers(headers, 64, 16 * 1024);
        assert!(check(&h("Content-Type", "text/plain")).is_ok());
        assert!(check(&h("Connection", "close")).is_err());
        assert!(check(&h("Transfer-Encoding", "chunked")).is_err());
        assert!(check(&h("Bad Name", "x")).is_err());
        assert!(check(&h("X-Ok", "a\r\nInjected: 1")).is_err());
        assert!(check(&h("X-Courier-Attempt", "9")).is_err());
        let many: Vec<_> = (0..65)
            .map(|i| (format!("X-H{i}"), "v".to_string()))
            .collect();
        assert!(check(&many).is_err());
        let big = vec![("X-Big".to_string(), "v".repeat(16 * 1024))];
        assert!(check(&big).is_err());
    }
}
