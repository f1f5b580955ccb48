//! Following a redirect, for jobs that allow it, hop by hop: each hop checked by SSRF
//! protection like the first request (an IP literal here, a name when it resolves),
//! method and body changed as browsers do, and on a hop to another origin every header
//! SPEC 4 calls secret dropped (`Authorization`, `X-Api-Key`, any name with `token`...),
//! not only the four that reqwest's redirect policy strips.

use courier_core::{domain::is_secret_header, outbound::OutboundPolicy};
use http::{HeaderMap, Method, StatusCode};
use url::Url;

use super::CallResult;

/// Most redirects followed for one call.
pub const MAX_REDIRECTS: usize = 10;

/// The request to send next.
pub struct Hop {
    pub method: Method,
    pub url: Url,
    pub headers: HeaderMap,
    pub body: bytes::Bytes,
}

/// Whether `status` is a redirect Courier follows.
pub fn is_redirect(status: StatusCode) -> bool {
    matches!(status.as_u16(), 301 | 302 | 303 | 307 | 308)
}

/// The next hop after `hop` answered `status` with `location`; the result to end the
/// attempt with when it cannot be followed.
///
/// # Errors
/// A location that is not an `http`/`https` URL, or one SSRF protection refuses.
pub fn next(
    hop: Hop,
    status: StatusCode,
    location: &str,
    policy: &OutboundPolicy,
) -> Result<Hop, CallResult> {
    let url = match hop.url.join(location) {
        Ok(url) if matches!(url.scheme(), "http" | "https") => url,
        _ => {
            return Err(CallResult::Failed(format!(
                "redirect to an invalid location {location:?}"
            )));
        }
    };
    if let Err(refusal) = policy.check_url(&url) {
        return Err(CallResult::Refused(refusal.to_string()));
    }
    let Hop {
        mut method,
        headers: mut kept,
        mut body,
        ..
    } = hop;
    let code = status.as_u16();
    if (code == 303 && method != Method::HEAD)
        || (matches!(code, 301 | 302) && method == Method::POST)
    {
        method = Method::GET;
        body = bytes::Bytes::new();
        kept.remove(http::header::CONTENT_TYPE);
    }
    if url.origin() != hop.url.origin() {
        let secret: Vec<_> = kept
            .keys()
            .filter(|name| is_secret_header(name.as_str()))
            .cloned()
            .collect();
        for name in secret {
            kept.remove(name);
        }
    }
    Ok(Hop {
        method,
        url,
        headers: kept,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hop(url: &str) -> Hop {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("authorization", "Bearer a"),
            ("x-api-key", "k"),
            ("x-auth-token", "t"),
            ("content-type", "application/json"),
            ("x-plain", "p"),
        ] {
            headers.insert(name, value.parse().unwrap());
        }
        Hop {
            method: Method::POST,
            url: Url::parse(url).unwrap(),
            headers,
            body: bytes::Bytes::from_static(b"{}"),
        }
    }

    fn names(hop: &Hop) -> Vec<&str> {
        let mut names: Vec<&str> = hop.headers.keys().map(|n| n.as_str()).collect();
        names.sort_unstable();
        names
    }

    #[test]
    fn a_hop_to_another_origin_drops_every_secret_header() {
        let policy = OutboundPolicy::new(&["127.0.0.0/8".into()]).unwrap();
        let next = next(
            hop("http://127.0.0.1:1/a"),
            StatusCode::TEMPORARY_REDIRECT,
            "http://127.0.0.2:1/b",
            &policy,
        )
        .unwrap_or_else(|_| panic!("followed"));
        assert_eq!(names(&next), ["content-type", "x-plain"]);
        assert_eq!(next.method, Method::POST);
        assert_eq!(&next.body[..], b"{}");
    }

    #[test]
    fn a_hop_within_the_origin_keeps_them_and_303_turns_into_a_get() {
        let policy = OutboundPolicy::new(&["127.0.0.0/8".into()]).unwrap();
        let next = next(
            hop("http://127.0.0.1:1/a"),
            StatusCode::SEE_OTHER,
            "/b",
            &policy,
        )
        .unwrap_or_else(|_| panic!("followed"));
        assert_eq!(
            names(&next),
            ["authorization", "x-api-key", "x-auth-token", "x-plain"]
        );
        assert_eq!(next.method, Method::GET);
        assert!(next.body.is_empty());
    }

    #[test]
    fn a_hop_to_an_internal_address_is_refused() {
        let refused = next(
            hop("https://example.com/a"),
            StatusCode::FOUND,
            "http://169.254.169.254/latest",
            &OutboundPolicy::default(),
        );
        assert!(matches!(refused, Err(CallResult::Refused(_))));
    }
}
