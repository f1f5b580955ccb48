//! Reading what a target answers: the body up to a cap (the rest is never read, and the
//! connection is dropped rather than drained), the excerpt kept with the execution,
//! and `Retry-After`.

use std::time::{Duration, SystemTime};

/// Response bytes kept with the execution record.
pub const EXCERPT_BYTES: usize = 4 * 1024;

/// Reads at most `cap` bytes of `body`. Dropping the body with the rest unread closes
/// its connection instead of returning it to the pool.
///
/// # Errors
/// The connection failing while the body is read.
pub async fn read_capped(
    body: &mut hyper::body::Incoming,
    cap: usize,
) -> Result<Vec<u8>, hyper::Error> {
    use http_body_util::BodyExt;
    let mut read = Vec::new();
    while read.len() < cap {
        let Some(frame) = body.frame().await.transpose()? else {
            break;
        };
        if let Some(data) = frame.data_ref() {
            let room = cap - read.len();
            read.extend_from_slice(&data[..data.len().min(room)]);
        }
    }
    Ok(read)
}

/// The start of a response body as text, at most [`EXCERPT_BYTES`] bytes even when
/// invalid UTF-8 was replaced (each replacement takes three bytes).
pub fn excerpt(body: &[u8]) -> String {
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

/// A `Retry-After` value: seconds, or an HTTP date (a date in the past means now).
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
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

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let now = SystemTime::now();
        assert_eq!(parse_retry_after("2", now), Some(Duration::from_secs(2)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now),
            Some(Duration::ZERO)
        );
        let later = httpdate::fmt_http_date(now + Duration::from_secs(120));
        let wait = parse_retry_after(&later, now).unwrap();
        assert!(
            wait > Duration::from_secs(100) && wait <= Duration::from_secs(120),
            "{wait:?}"
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }
}
