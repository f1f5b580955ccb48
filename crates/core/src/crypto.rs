//! Secret header values at rest: sealed with AES-256-GCM under the key from settings
//! (`secrets.encryption_key`) before a job is stored in PostgreSQL or Redis, and opened
//! only by the worker, just before the call. Earlier keys (`previous_encryption_keys`)
//! still open what they sealed, so keys can be rotated without losing queued jobs.
//!
//! A sealed value reads `sealed:v1:<key id>:<base64url(nonce ‖ ciphertext ‖ tag)>`. The
//! key id is the first 4 bytes of the key's SHA-256, so the right key is found without
//! trying each. The associated data binds the value to its job and header name, so a sealed
//! value copied into another job or header does not open.

use aes_gcm::{
    Aes256Gcm, KeyInit, Nonce,
    aead::{Aead, Payload},
};
use base64::{
    Engine,
    engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD},
};
use hmac::{Hmac, KeyInit as _, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::settings::SecretSettings;

const PREFIX: &str = "sealed:v1:";
const NONCE_BYTES: usize = 12;

/// Why a key or a sealed value was refused. Never carries the secret.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SealError {
    #[error(
        "secrets.encryption_key is not set: set COURIER__SECRETS__ENCRYPTION_KEY to 32 random \
         bytes in base64 (for example `openssl rand -base64 32`), the same for the API and \
         every worker"
    )]
    NoKey,
    #[error("{0} is not 32 bytes of base64")]
    BadKey(&'static str),
    #[error("the value is not sealed by Courier")]
    NotSealed,
    #[error("the value was sealed with key {0}, which is neither the current nor a previous key")]
    UnknownKey(String),
    #[error("the sealed value does not open with its key (altered, or moved from another job)")]
    Corrupt,
}

struct Key {
    id: String,
    cipher: Aes256Gcm,
    /// Keys the fingerprints of request bodies; derived, so no key serves two algorithms.
    fingerprint_key: [u8; 32],
    /// Keys the tokens of progress URLs.
    progress_key: [u8; 32],
}

impl Key {
    fn parse(text: &str, setting: &'static str) -> Result<Self, SealError> {
        let bytes = STANDARD
            .decode(text.trim())
            .map_err(|_| SealError::BadKey(setting))?;
        if bytes.len() != 32 {
            return Err(SealError::BadKey(setting));
        }
        let id = hex::encode(&Sha256::digest(&bytes)[..4]);
        let cipher = Aes256Gcm::new_from_slice(&bytes).map_err(|_| SealError::BadKey(setting))?;
        let derive = |purpose: &[u8]| -> [u8; 32] {
            let mut digest = Sha256::new();
            digest.update(purpose);
            digest.update(&bytes);
            digest.finalize().into()
        };
        Ok(Self {
            id,
            cipher,
            fingerprint_key: derive(b"courier request fingerprint\0"),
            progress_key: derive(b"courier progress token\0"),
        })
    }
}

/// The current key, which seals, and every key that may open.
pub struct SecretBox {
    current: Key,
    previous: Vec<Key>,
}

impl std::fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretBox")
            .field("current", &self.current.id)
            .field(
                "previous",
                &self.previous.iter().map(|k| &k.id).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl SecretBox {
    /// # Errors
    /// No current key, or a key that is not 32 bytes of base64.
    pub fn from_settings(settings: &SecretSettings) -> Result<Self, SealError> {
        if settings.encryption_key.trim().is_empty() {
            return Err(SealError::NoKey);
        }
        Ok(Self {
            current: Key::parse(&settings.encryption_key, "secrets.encryption_key")?,
            previous: settings
                .previous_encryption_keys
                .iter()
                .map(|k| Key::parse(k, "an entry of secrets.previous_encryption_keys"))
                .collect::<Result<_, _>>()?,
        })
    }

    /// A keyed digest (HMAC-SHA256) of a request body, to recognise a repeated request
    /// (`Idempotency-Key`) without storing a plain hash of a body that may hold secrets.
    pub fn fingerprint(&self, data: &[u8]) -> Vec<u8> {
        fingerprint_with(&self.current, data)
    }

    /// Whether `stored` is the fingerprint of `data` under the current or a previous key.
    pub fn fingerprint_matches(&self, data: &[u8], stored: &[u8]) -> bool {
        std::iter::once(&self.current)
            .chain(&self.previous)
            .any(|key| fingerprint_with(key, data) == stored)
    }

    /// The token of the progress URL of one attempt (its fencing token) of job `job`:
    /// `<attempt token>.<HMAC>`, checked without a lookup by [`Self::progress_attempt`].
    pub fn progress_token(&self, job: &str, attempt_token: i64) -> String {
        let mac = progress_mac(&self.current, job, attempt_token);
        format!("{attempt_token}.{}", URL_SAFE_NO_PAD.encode(mac))
    }

    /// The attempt token a progress token was made for (under the current or a previous
    /// key), or `None` for a token not made by this key for `job`.
    pub fn progress_attempt(&self, job: &str, token: &str) -> Option<i64> {
        let (attempt, mac) = token.split_once('.')?;
        let attempt: i64 = attempt.parse().ok()?;
        let mac = URL_SAFE_NO_PAD.decode(mac).ok()?;
        // A shorter tag would be easier to forge: only the full 16 bytes count.
        if mac.len() != PROGRESS_MAC_BYTES {
            return None;
        }
        std::iter::once(&self.current)
            .chain(&self.previous)
            .any(|key| {
                let mut check = Hmac::<Sha256>::new_from_slice(&key.progress_key)
                    .expect("HMAC takes keys of any size");
                check.update(progress_message(job, attempt).as_bytes());
                check.verify_truncated_left(&mac).is_ok()
            })
            .then_some(attempt)
    }

    /// Seals `value` for header `name` of the job with id `context`.
    pub fn seal(&self, context: &str, name: &str, value: &str) -> String {
        let mut nonce = [0u8; NONCE_BYTES];
        rand::rng().fill_bytes(&mut nonce);
        let aad = associated_data(context, name);
        let mut out = nonce.to_vec();
        out.extend(
            self.current
                .cipher
                .encrypt(
                    &Nonce::from(nonce),
                    Payload {
                        msg: value.as_bytes(),
                        aad: &aad,
                    },
                )
                .expect("AES-GCM encrypts any message of this size"),
        );
        format!(
            "{PREFIX}{}:{}",
            self.current.id,
            URL_SAFE_NO_PAD.encode(out)
        )
    }

    /// Opens what [`Self::seal`] made for the same job and header.
    ///
    /// # Errors
    /// A value that is not sealed, sealed under an unknown key, or altered.
    pub fn open(&self, context: &str, name: &str, sealed: &str) -> Result<String, SealError> {
        let rest = sealed.strip_prefix(PREFIX).ok_or(SealError::NotSealed)?;
        let (id, data) = rest.split_once(':').ok_or(SealError::NotSealed)?;
        let key = std::iter::once(&self.current)
            .chain(&self.previous)
            .find(|k| k.id == id)
            .ok_or_else(|| SealError::UnknownKey(id.to_owned()))?;
        let data = URL_SAFE_NO_PAD
            .decode(data)
            .map_err(|_| SealError::Corrupt)?;
        if data.len() < NONCE_BYTES {
            return Err(SealError::Corrupt);
        }
        let (nonce, ciphertext) = data.split_at(NONCE_BYTES);
        let nonce: [u8; NONCE_BYTES] = nonce.try_into().map_err(|_| SealError::Corrupt)?;
        let plain = key
            .cipher
            .decrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: ciphertext,
                    aad: &associated_data(context, name),
                },
            )
            .map_err(|_| SealError::Corrupt)?;
        String::from_utf8(plain).map_err(|_| SealError::Corrupt)
    }
}

/// A progress token's MAC, cut to 16 bytes (128 bits): plenty against forgery, short in
/// a URL.
const PROGRESS_MAC_BYTES: usize = 16;

fn progress_message(job: &str, attempt_token: i64) -> String {
    format!("progress:{job}:{attempt_token}")
}

fn progress_mac(key: &Key, job: &str, attempt_token: i64) -> Vec<u8> {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(&key.progress_key).expect("HMAC takes keys of any size");
    mac.update(progress_message(job, attempt_token).as_bytes());
    mac.finalize().into_bytes()[..PROGRESS_MAC_BYTES].to_vec()
}

fn fingerprint_with(key: &Key, data: &[u8]) -> Vec<u8> {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(&key.fingerprint_key).expect("HMAC takes keys of any size");
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

fn associated_data(context: &str, name: &str) -> Vec<u8> {
    format!("courier-header:{context}:{}", name.to_ascii_lowercase()).into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(key: &str, previous: &[&str]) -> SecretSettings {
        SecretSettings {
            encryption_key: key.into(),
            previous_encryption_keys: previous.iter().map(|s| s.to_string()).collect(),
        }
    }

    const A: &str = "KioqKioqKioqKioqKioqKioqKioqKioqKioqKioqKio=";
    const B: &str = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=";

    #[test]
    fn a_progress_token_names_its_attempt_and_holds_only_for_its_job() {
        let old = SecretBox::from_settings(&settings(A, &[])).unwrap();
        let token = old.progress_token("job-1", 1_700_000_000_123_456);
        assert_eq!(
            old.progress_attempt("job-1", &token),
            Some(1_700_000_000_123_456)
        );
        assert_eq!(old.progress_attempt("job-2", &token), None);
        // Another attempt's number with this MAC, a cut MAC, garbage: refused.
        let (_, mac) = token.split_once('.').unwrap();
        assert_eq!(old.progress_attempt("job-1", &format!("1.{mac}")), None);
        assert_eq!(
            old.progress_attempt("job-1", &token[..token.len() - 2]),
            None
        );
        assert_eq!(old.progress_attempt("job-1", "x.y"), None);
        // After a key rotation the previous key's tokens still hold.
        let rotated = SecretBox::from_settings(&settings(B, &[A])).unwrap();
        assert_eq!(
            rotated.progress_attempt("job-1", &token),
            Some(1_700_000_000_123_456)
        );
        let unrelated = SecretBox::from_settings(&settings(B, &[])).unwrap();
        assert_eq!(unrelated.progress_attempt("job-1", &token), None);
    }

    #[test]
    fn sealed_values_open_only_for_their_job_and_header() {
        let secrets = SecretBox::from_settings(&settings(A, &[])).unwrap();
        let sealed = secrets.seal("job-1", "Authorization", "Bearer hunter2");
        assert!(sealed.starts_with("sealed:v1:") && !sealed.contains("hunter2"));
        assert_ne!(
            sealed,
            secrets.seal("job-1", "Authorization", "Bearer hunter2")
        );
        assert_eq!(
            secrets.open("job-1", "authorization", &sealed).unwrap(),
            "Bearer hunter2"
        );
        assert_eq!(
            secrets.open("job-2", "Authorization", &sealed),
            Err(SealError::Corrupt)
        );
        assert_eq!(
            secrets.open("job-1", "Cookie", &sealed),
            Err(SealError::Corrupt)
        );
        let mut altered = sealed.clone();
        altered.pop();
        altered.push(if sealed.ends_with('A') { 'B' } else { 'A' });
        assert_eq!(
            secrets.open("job-1", "Authorization", &altered),
            Err(SealError::Corrupt)
        );
        assert_eq!(
            secrets.open("job-1", "Authorization", "Bearer hunter2"),
            Err(SealError::NotSealed)
        );
    }

    #[test]
    fn previous_keys_open_during_a_rotation() {
        let old = SecretBox::from_settings(&settings(A, &[])).unwrap();
        let sealed = old.seal("j", "X-Api-Key", "k");
        let rotated = SecretBox::from_settings(&settings(B, &[A])).unwrap();
        assert_eq!(rotated.open("j", "X-Api-Key", &sealed).unwrap(), "k");
        let only_new = SecretBox::from_settings(&settings(B, &[])).unwrap();
        assert!(matches!(
            only_new.open("j", "X-Api-Key", &sealed),
            Err(SealError::UnknownKey(_))
        ));
    }

    #[test]
    fn fingerprints_are_keyed_and_survive_a_rotation() {
        let old = SecretBox::from_settings(&settings(A, &[])).unwrap();
        let print = old.fingerprint(b"{\"a\":1}");
        assert_ne!(print, Sha256::digest(b"{\"a\":1}").to_vec());
        assert!(old.fingerprint_matches(b"{\"a\":1}", &print));
        assert!(!old.fingerprint_matches(b"{\"a\":2}", &print));
        let rotated = SecretBox::from_settings(&settings(B, &[A])).unwrap();
        assert!(rotated.fingerprint_matches(b"{\"a\":1}", &print));
        assert_ne!(rotated.fingerprint(b"{\"a\":1}"), print);
        let other = SecretBox::from_settings(&settings(B, &[])).unwrap();
        assert!(!other.fingerprint_matches(b"{\"a\":1}", &print));
    }

    #[test]
    fn keys_must_be_32_bytes_of_base64() {
        assert_eq!(
            SecretBox::from_settings(&settings("", &[])).unwrap_err(),
            SealError::NoKey
        );
        assert!(SecretBox::from_settings(&settings("c2hvcnQ=", &[])).is_err());
        assert!(SecretBox::from_settings(&settings("not base64!", &[])).is_err());
        assert!(SecretBox::from_settings(&settings(A, &["c2hvcnQ="])).is_err());
    }
}
