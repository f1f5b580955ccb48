//! Signed requests per the Standard Webhooks specification (standardwebhooks.com):
//! `webhook-id`, `webhook-timestamp` and `webhook-signature`, the last holding one
//! `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">` per active secret, separated by
//! spaces, so that receivers keep verifying while a secret is rotated.

use std::collections::BTreeMap;

use base64::{
    Engine, alphabet,
    engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig, general_purpose::STANDARD},
};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::settings::SigningSettings;

/// Secrets are read with or without their `=` padding, as the reference libraries do.
const SECRET_BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The specification's bounds on a symmetric secret, in bytes.
const SECRET_BYTES: std::ops::RangeInclusive<usize> = 24..=64;

/// A signing secret that is not `whsec_` and the base64 of 24 to 64 bytes.
#[derive(Debug, thiserror::Error)]
#[error("{setting}[{index}]: {problem} (expected whsec_ and the base64 of 24 to 64 random bytes)")]
pub struct BadSecret {
    /// `signing.secrets` or `signing.queues.<queue>`.
    pub setting: String,
    pub index: usize,
    pub problem: &'static str,
}

/// One `whsec_` secret, decoded.
#[derive(Clone)]
pub struct Secret(Vec<u8>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl Secret {
    /// # Errors
    /// What is wrong with it (never the secret itself).
    pub fn parse(raw: &str) -> Result<Self, &'static str> {
        let encoded = raw
            .trim()
            .strip_prefix("whsec_")
            .ok_or("does not start with whsec_")?;
        let key = SECRET_BASE64
            .decode(encoded)
            .map_err(|_| "is not valid base64")?;
        if !SECRET_BYTES.contains(&key.len()) {
            return Err("must decode to 24 to 64 bytes");
        }
        Ok(Self(key))
    }

    /// `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes keys of any size");
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
    }
}

/// The secrets of every queue: its own when `signing.queues` names it, else the global
/// ones. No secret, no signature.
#[derive(Debug, Clone, Default)]
pub struct Signer {
    global: Vec<Secret>,
    queues: BTreeMap<String, Vec<Secret>>,
}

/// The three headers of one signed call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureHeaders {
    /// `webhook-id`: the message id (Courier uses the job id).
    pub id: String,
    /// `webhook-timestamp`: unix seconds.
    pub timestamp: String,
    /// `webhook-signature`: `v1,<base64>` per secret, separated by spaces.
    pub signature: String,
}

impl Signer {
    /// # Errors
    /// The first secret that is not valid.
    pub fn from_settings(settings: &SigningSettings) -> Result<Self, BadSecret> {
        let parse = |setting: String, raw: &[String]| {
            raw.iter()
                .enumerate()
                .map(|(index, s)| {
                    Secret::parse(s).map_err(|problem| BadSecret {
                        setting: setting.clone(),
                        index,
                        problem,
                    })
                })
                .collect::<Result<Vec<_>, _>>()
        };
        let global = parse("signing.secrets".into(), &settings.secrets)?;
        let queues = settings
            .queues
            .iter()
            .map(|(queue, raw)| {
                Ok((
                    queue.clone(),
                    parse(format!("signing.queues.{queue}"), raw)?,
                ))
            })
            .collect::<Result<_, BadSecret>>()?;
        Ok(Self { global, queues })
    }

    /// The secrets that sign calls of `queue`.
    pub fn secrets_for(&self, queue: &str) -> &[Secret] {
        self.queues.get(queue).unwrap_or(&self.global)
    }

    /// The headers of a call of `queue` with message id `id` made at `timestamp` (unix
    /// seconds), or `None` when no secret applies.
    pub fn headers(
        &self,
        queue: &str,
        id: &str,
        timestamp: i64,
        body: &[u8],
    ) -> Option<SignatureHeaders> {
        let secrets = self.secrets_for(queue);
        if secrets.is_empty() {
            return None;
        }
        let signature = secrets
            .iter()
            .map(|s| s.sign(id, timestamp, body))
            .collect::<Vec<_>>()
            .join(" ");
        Some(SignatureHeaders {
            id: id.to_owned(),
            timestamp: timestamp.to_string(),
            signature,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(global: &[&str], queues: &[(&str, &[&str])]) -> SigningSettings {
        let list = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        SigningSettings {
            secrets: list(global),
            queues: queues
                .iter()
                .map(|(q, v)| (q.to_string(), list(v)))
                .collect(),
        }
    }

    // The example of the Standard Webhooks reference libraries' own tests.
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    #[test]
    fn signs_like_the_reference_libraries() {
        let secret = Secret::parse(SECRET).unwrap();
        let unpadded = format!("whsec_{}", STANDARD.encode([9u8; 25]).trim_end_matches('='));
        assert!(Secret::parse(&unpadded).is_ok());
        assert_eq!(
            secret.sign(
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1614265330,
                br#"{"test": 2432232314}"#
            ),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn bad_secrets_are_named_without_their_value() {
        for (raw, problem) in [
            (
                "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
                "does not start with whsec_",
            ),
            ("whsec_not base64!", "is not valid base64"),
            ("whsec_c2hvcnQ=", "must decode to 24 to 64 bytes"),
        ] {
            let err = Signer::from_settings(&settings(&[SECRET], &[("pay", &[raw])])).unwrap_err();
            assert_eq!(err.problem, problem, "{raw}");
            assert_eq!(err.setting, "signing.queues.pay");
            assert!(!err.to_string().contains(raw), "{err}");
        }
    }

    #[test]
    fn queue_secrets_replace_the_global_ones_and_each_secret_signs() {
        let other = format!("whsec_{}", STANDARD.encode([7u8; 32]));
        let signer =
            Signer::from_settings(&settings(&[SECRET, &other], &[("pay", &[&other])])).unwrap();
        let both = signer.headers("mail", "id1", 5, b"x").unwrap();
        assert_eq!(both.signature.split(' ').count(), 2);
        let own = signer.headers("pay", "id1", 5, b"x").unwrap();
        assert_eq!(own.signature, both.signature.split(' ').nth(1).unwrap());
        assert_eq!((own.id.as_str(), own.timestamp.as_str()), ("id1", "5"));
        assert!(Signer::default().headers("mail", "id1", 5, b"x").is_none());
    }
}
