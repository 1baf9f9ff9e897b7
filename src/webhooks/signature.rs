//! The Standard Webhooks signature: `v1,` and the base64 HMAC-SHA256 of
//! `"{webhook-id}.{webhook-timestamp}.{body}"` under each secret, space-separated.

use aws_lc_rs::hmac;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use std::fmt;

/// The `whsec_` prefix of a secret, as the Standard Webhooks libraries write them.
const PREFIX: &str = "whsec_";
/// The key lengths accepted (SPEC 12: 24 to 64 bytes).
const KEY_BYTES: std::ops::RangeInclusive<usize> = 24..=64;

/// One signing key. Its `Debug` shows nothing of it.
pub struct Secret(hmac::Key);

impl Secret {
    /// Reads `whsec_` + base64 of 24–64 bytes; the error never repeats the secret.
    pub fn parse(text: &str) -> Result<Self, String> {
        let encoded = text
            .strip_prefix(PREFIX)
            .ok_or_else(|| format!("does not start with {PREFIX}"))?;
        let key = STANDARD
            .decode(encoded)
            .map_err(|_| format!("is not {PREFIX} followed by base64"))?;
        if !KEY_BYTES.contains(&key.len()) {
            return Err(format!(
                "decodes to {} bytes; 24 to 64 are accepted",
                key.len()
            ));
        }
        Ok(Self(hmac::Key::new(hmac::HMAC_SHA256, &key)))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("Secret(…)")
    }
}

/// The `webhook-signature` header of one attempt: a `v1,` signature per secret.
pub fn sign(secrets: &[Secret], id: &str, timestamp: i64, body: &[u8]) -> String {
    let mut signed = Vec::with_capacity(id.len() + body.len() + 24);
    signed.extend_from_slice(id.as_bytes());
    signed.push(b'.');
    signed.extend_from_slice(timestamp.to_string().as_bytes());
    signed.push(b'.');
    signed.extend_from_slice(body);
    secrets
        .iter()
        .map(|Secret(key)| format!("v1,{}", STANDARD.encode(hmac::sign(key, &signed))))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the Standard Webhooks specification (and of its libraries' tests).
    #[test]
    fn signs_the_specifications_example() {
        let secret = Secret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let signature = sign(
            &[secret],
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn signs_once_per_secret() {
        let secrets = [
            Secret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap(),
            Secret::parse(&format!("whsec_{}", STANDARD.encode([7u8; 32]))).unwrap(),
        ];
        let signature = sign(&secrets, "msg_1", 1, b"{}");
        let parts: Vec<&str> = signature.split(' ').collect();
        assert_eq!(parts.len(), 2);
        assert!(parts.iter().all(|part| part.starts_with("v1,")));
        assert_ne!(parts[0], parts[1]);
    }

    #[test]
    fn refuses_secrets_that_are_not_whsec_base64_of_24_to_64_bytes() {
        for text in [
            "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "whsec_not base64!",
            &format!("whsec_{}", STANDARD.encode([1u8; 16])),
            &format!("whsec_{}", STANDARD.encode([1u8; 65])),
        ] {
            let error = Secret::parse(text).unwrap_err();
            assert!(!error.contains(text), "{error} repeats the secret");
        }
        assert!(Secret::parse(&format!("whsec_{}", STANDARD.encode([1u8; 64]))).is_ok());
    }
}
