//! HTTP/1.1 on the wire: the request's head, and the response read from a buffer that
//! grows only as far as the answer needs (heads parsed with `httparse`, bodies framed by
//! `Content-Length`, chunked encoding or the end of the connection).

use std::time::Duration;

/// Most bytes a response head may take.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Most headers a response may have.
const MAX_HEADERS: usize = 128;

/// Why a response could not be read.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("the response head is larger than {MAX_HEAD_BYTES} bytes")]
    HeadTooLarge,
    #[error("malformed response: {0}")]
    Malformed(String),
}

/// The request line and headers, ready to write. `headers` are written as given;
/// `Host`, `Content-Length` and (unless given) `User-Agent` are added.
pub fn request_head(
    method: &str,
    target: &str,
    host: &str,
    headers: &[(&str, &str)],
    body_len: usize,
    user_agent: &str,
) -> Vec<u8> {
    let mut head = Vec::with_capacity(256);
    let mut line = |parts: &[&[u8]]| {
        for part in parts {
            head.extend_from_slice(part);
        }
        head.extend_from_slice(b"\r\n");
    };
    line(&[method.as_bytes(), b" ", target.as_bytes(), b" HTTP/1.1"]);
    line(&[b"host: ", host.as_bytes()]);
    let mut has_agent = false;
    for (name, value) in headers {
        has_agent |= name.eq_ignore_ascii_case("user-agent");
        line(&[name.as_bytes(), b": ", value.as_bytes()]);
    }
    if !has_agent {
        line(&[b"user-agent: ", user_agent.as_bytes()]);
    }
    // A body-less GET, HEAD or DELETE says nothing of length, as clients usually do.
    if body_len > 0 || !matches!(method, "GET" | "HEAD" | "DELETE") {
        line(&[b"content-length: ", body_len.to_string().as_bytes()]);
    }
    head.extend_from_slice(b"\r\n");
    head
}

/// Whether `value` can be sent as a header value (no CR, LF or NUL).
pub fn valid_header_value(value: &str) -> bool {
    !value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0)
}

/// How a response body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    None,
    Length(u64),
    Chunked,
    /// Until the server closes the connection.
    Close,
}

/// A parsed response head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub status: u16,
    pub framing: Framing,
    /// Whether the connection may carry another request afterwards.
    pub keep_alive: bool,
    pub retry_after: Option<String>,
    pub location: Option<String>,
    /// Bytes the head took in the buffer.
    pub len: usize,
}

/// Parses a final (non-1xx) response head at the start of `buf`; `Ok(None)` when more
/// bytes are needed. Informational (1xx) heads are skipped.
///
/// # Errors
/// A malformed or oversized head.
pub fn parse_head(buf: &[u8], head_request: bool) -> Result<Option<Head>, WireError> {
    let mut offset = 0;
    loop {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut response = httparse::Response::new(&mut headers);
        let len = match response.parse(&buf[offset..]) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) if buf.len() - offset > MAX_HEAD_BYTES => {
                return Err(WireError::HeadTooLarge);
            }
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(e) => return Err(WireError::Malformed(e.to_string())),
        };
        let status = response.code.unwrap_or(0);
        if (100..200).contains(&status) && status != 101 {
            offset += len;
            continue;
        }
        let http10 = response.version == Some(0);
        let (mut length, mut chunked, mut close, mut keep_alive_header) =
            (None, false, false, false);
        let (mut retry_after, mut location) = (None, None);
        for header in response.headers.iter() {
            let value = String::from_utf8_lossy(header.value);
            let value = value.trim();
            if header.name.eq_ignore_ascii_case("content-length") {
                let n = value
                    .parse::<u64>()
                    .map_err(|_| WireError::Malformed(format!("content-length {value:?}")))?;
                if length.is_some_and(|l| l != n) {
                    return Err(WireError::Malformed("conflicting content-length".into()));
                }
                length = Some(n);
            } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = value
                    .rsplit(',')
                    .next()
                    .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"));
            } else if header.name.eq_ignore_ascii_case("connection") {
                for token in value.split(',').map(str::trim) {
                    close |= token.eq_ignore_ascii_case("close");
                    keep_alive_header |= token.eq_ignore_ascii_case("keep-alive");
                }
            } else if header.name.eq_ignore_ascii_case("retry-after") {
                retry_after = Some(value.to_owned());
            } else if header.name.eq_ignore_ascii_case("location") {
                location = Some(value.to_owned());
            }
        }
        let framing = if head_request || status == 204 || status == 304 {
            Framing::None
        } else if chunked {
            Framing::Chunked
        } else if let Some(n) = length {
            Framing::Length(n)
        } else {
            Framing::Close
        };
        let keep_alive = !close && (!http10 || keep_alive_header) && framing != Framing::Close;
        return Ok(Some(Head {
            status,
            framing,
            keep_alive,
            retry_after,
            location,
            len: offset + len,
        }));
    }
}

/// Decodes a chunked body as its bytes arrive.
#[derive(Debug, Default)]
pub struct Chunked {
    state: ChunkState,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    /// Reading a chunk-size line.
    #[default]
    Size,
    Data(u64),
    /// The CRLF after a chunk's data.
    DataEnd,
    /// Trailer lines after the last chunk, up to an empty line.
    Trailers,
    Done,
}

impl Chunked {
    /// Takes what it can from the front of `input`, appending data to `out` (up to `cap`
    /// bytes in all; the rest is skipped). Returns how many bytes of `input` it used.
    ///
    /// # Errors
    /// A malformed chunk-size line.
    pub fn decode(
        &mut self,
        input: &[u8],
        out: &mut Vec<u8>,
        cap: usize,
    ) -> Result<usize, WireError> {
        let mut used = 0;
        loop {
            let rest = &input[used..];
            match self.state {
                ChunkState::Done => return Ok(used),
                ChunkState::Size | ChunkState::Trailers => {
                    let Some(end) = rest.windows(2).position(|w| w == b"\r\n") else {
                        if rest.len() > 4096 {
                            return Err(WireError::Malformed("chunk line too long".into()));
                        }
                        return Ok(used);
                    };
                    let line = &rest[..end];
                    used += end + 2;
                    if self.state == ChunkState::Trailers {
                        if line.is_empty() {
                            self.state = ChunkState::Done;
                        }
                        continue;
                    }
                    let digits = line.split(|b| *b == b';').next().unwrap_or_default();
                    let digits = std::str::from_utf8(digits).unwrap_or("").trim();
                    let size = u64::from_str_radix(digits, 16)
                        .map_err(|_| WireError::Malformed(format!("chunk size {digits:?}")))?;
                    self.state = if size == 0 {
                        ChunkState::Trailers
                    } else {
                        ChunkState::Data(size)
                    };
                }
                ChunkState::Data(left) => {
                    if rest.is_empty() {
                        return Ok(used);
                    }
                    let take = rest.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                    let keep = take.min(cap.saturating_sub(out.len()));
                    out.extend_from_slice(&rest[..keep]);
                    used += take;
                    let left = left - take as u64;
                    self.state = if left == 0 {
                        ChunkState::DataEnd
                    } else {
                        ChunkState::Data(left)
                    };
                }
                ChunkState::DataEnd => {
                    if rest.len() < 2 {
                        return Ok(used);
                    }
                    if &rest[..2] != b"\r\n" {
                        return Err(WireError::Malformed(
                            "chunk data not followed by CRLF".into(),
                        ));
                    }
                    used += 2;
                    self.state = ChunkState::Size;
                }
            }
        }
    }

    pub fn is_done(&self) -> bool {
        self.state == ChunkState::Done
    }
}

/// `Retry-After` as seconds or as an HTTP date (0 when the date has passed).
pub fn parse_retry_after(value: &str, now: std::time::SystemTime) -> Option<Duration> {
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
    fn a_request_head_has_host_length_and_agent_once() {
        let head = request_head(
            "POST",
            "/a?b=1",
            "example.com:8080",
            &[("x-a", "1")],
            5,
            "Courier/1",
        );
        assert_eq!(
            String::from_utf8(head).unwrap(),
            "POST /a?b=1 HTTP/1.1\r\nhost: example.com:8080\r\nx-a: 1\r\nuser-agent: Courier/1\r\ncontent-length: 5\r\n\r\n"
        );
        let head = request_head("GET", "/", "h", &[("User-Agent", "mine")], 0, "Courier/1");
        assert_eq!(
            String::from_utf8(head).unwrap(),
            "GET / HTTP/1.1\r\nhost: h\r\nUser-Agent: mine\r\n\r\n"
        );
    }

    #[test]
    fn heads_tell_status_framing_and_reuse() {
        let head = parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", false)
            .unwrap()
            .unwrap();
        assert_eq!(
            (head.status, head.framing, head.keep_alive, head.len),
            (200, Framing::Length(2), true, 38)
        );
        let head = parse_head(
            b"HTTP/1.1 500 x\r\nTransfer-Encoding: gzip, chunked\r\nConnection: close\r\n\r\n",
            false,
        )
        .unwrap()
        .unwrap();
        assert_eq!((head.framing, head.keep_alive), (Framing::Chunked, false));
        let head = parse_head(b"HTTP/1.0 200 OK\r\n\r\n", false)
            .unwrap()
            .unwrap();
        assert_eq!((head.framing, head.keep_alive), (Framing::Close, false));
        let head = parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n", true)
            .unwrap()
            .unwrap();
        assert_eq!(head.framing, Framing::None);
        let head = parse_head(
            b"HTTP/1.1 429 x\r\nRetry-After: 2\r\nLocation: /b\r\nContent-Length: 0\r\n\r\n",
            false,
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            (head.retry_after.as_deref(), head.location.as_deref()),
            (Some("2"), Some("/b"))
        );
    }

    #[test]
    fn informational_heads_are_skipped_and_partial_heads_wait() {
        let bytes = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n";
        let head = parse_head(bytes, false).unwrap().unwrap();
        assert_eq!(
            (head.status, head.len, head.framing),
            (204, bytes.len(), Framing::None)
        );
        assert_eq!(
            parse_head(b"HTTP/1.1 200 OK\r\nContent-Le", false).unwrap(),
            None
        );
        assert!(parse_head(b"NOT HTTP\r\n\r\n", false).is_err());
        assert!(parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", false).is_err());
        let huge = format!("HTTP/1.1 200 OK\r\nx: {}", "a".repeat(MAX_HEAD_BYTES + 1));
        assert!(matches!(
            parse_head(huge.as_bytes(), false),
            Err(WireError::HeadTooLarge)
        ));
    }

    #[test]
    fn chunked_bodies_decode_across_any_split_and_respect_the_cap() {
        let wire =
            b"4;ext=1\r\nWiki\r\n6\r\npedia \r\nE\r\nin \r\n\r\nchunks.\r\n0\r\nX-T: 1\r\n\r\n";
        for split in 0..wire.len() {
            let mut decoder = Chunked::default();
            let mut out = Vec::new();
            let used = decoder.decode(&wire[..split], &mut out, 1024).unwrap();
            let mut rest = wire[used..split].to_vec();
            rest.extend_from_slice(&wire[split..]);
            let used2 = decoder.decode(&rest, &mut out, 1024).unwrap();
            assert_eq!(used2, rest.len(), "split at {split}");
            assert!(decoder.is_done());
            assert_eq!(out, b"Wikipedia in \r\n\r\nchunks.");
        }
        let mut decoder = Chunked::default();
        let mut out = Vec::new();
        decoder.decode(wire, &mut out, 5).unwrap();
        assert_eq!((out.as_slice(), decoder.is_done()), (&b"Wikip"[..], true));
        assert!(Chunked::default().decode(b"zz\r\n", &mut out, 5).is_err());
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let now = std::time::SystemTime::now();
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

    #[test]
    fn header_values_with_line_breaks_are_refused() {
        assert!(valid_header_value("Bearer abc"));
        assert!(!valid_header_value("a\r\nx-injected: 1"));
        assert!(!valid_header_value("a\0"));
    }
}
