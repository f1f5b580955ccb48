//! Which header values are secrets. They are sent to the target but never shown: every
//! API answer, log line and execution record prints [`REDACTED`] instead.

/// What a secret header value reads as wherever Courier shows it.
pub const REDACTED: &str = "[redacted]";

/// Whether a header's value must be hidden, judged by its name.
pub fn is_secret_header(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    matches!(
        name.as_str(),
        "authorization" | "cookie" | "proxy-authorization" | "set-cookie"
    ) || ["token", "secret", "key", "password", "signature"]
        .iter()
        .any(|needle| name.contains(needle))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_names_are_recognised_whatever_their_case() {
        for name in [
            "Authorization",
            "cookie",
            "X-Api-Key",
            "x-auth-token",
            "Client-Secret",
            "DB_PASSWORD",
        ] {
            assert!(is_secret_header(name), "{name}");
        }
        for name in ["Content-Type", "Accept", "X-Request-Id"] {
            assert!(!is_secret_header(name), "{name}");
        }
    }
}
