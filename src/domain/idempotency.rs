//! `Idempotency-Key` (SPEC 1.5): the key's rules and the fingerprint that tells whether a
//! retried request carries the same body.

use serde_json::Value;
use sha2::{Digest, Sha256};
use std::fmt::Write;

pub const MAX_KEY_LEN: usize = 255;

/// A key as a client sent it: 1–255 visible ASCII characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub fn parse(text: &str) -> Result<Self, &'static str> {
        if text.is_empty() || text.len() > MAX_KEY_LEN {
            Err("Idempotency-Key must be 1 to 255 characters")
        } else if !text.bytes().all(|byte| byte.is_ascii_graphic()) {
            Err("Idempotency-Key must be visible ASCII characters")
        } else {
            Ok(Self(text.to_owned()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// SHA-256 (hex) of the body with its JSON normalised — object keys sorted, whitespace
/// dropped — so that a re-serialised retry counts as the same body. A body that is not
/// JSON is fingerprinted as its bytes.
pub fn body_fingerprint(body: &[u8]) -> String {
    match serde_json::from_slice::<Value>(body) {
        Ok(value) => {
            let mut canonical = String::with_capacity(body.len());
            write_canonical(&value, &mut canonical);
            json_fingerprint(&canonical)
        }
        Err(_) => hex_sha256(&[b"bytes:", body]),
    }
}

/// The fingerprint of a JSON body whose canonical form is `canonical`.
pub(super) fn json_fingerprint(canonical: &str) -> String {
    hex_sha256(&[b"json:", canonical.as_bytes()])
}

fn hex_sha256(parts: &[&[u8]]) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part);
    }
    hasher
        .finalize()
        .iter()
        .fold(String::with_capacity(64), |mut hex, byte| {
            let _ = write!(hex, "{byte:02x}");
            hex
        })
}

/// `value` with object members sorted by name and no whitespace.
pub(super) fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by_key(|(key, _)| *key);
            out.push('{');
            for (index, (key, value)) in entries.into_iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                write_canonical(value, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_one_to_255_visible_ascii_characters() {
        assert!(IdempotencyKey::parse("a").is_ok());
        assert!(IdempotencyKey::parse(&"k".repeat(255)).is_ok());
        assert!(IdempotencyKey::parse("order-42:retry#1").is_ok());
        assert!(IdempotencyKey::parse("").is_err());
        assert!(IdempotencyKey::parse(&"k".repeat(256)).is_err());
        assert!(IdempotencyKey::parse("has space").is_err());
        assert!(IdempotencyKey::parse("tab\there").is_err());
        assert!(IdempotencyKey::parse("clé").is_err());
    }

    #[test]
    fn reformatted_json_has_the_same_fingerprint() {
        let compact = br#"{"b":1,"a":{"y":[1,2],"x":"s"}}"#;
        let pretty = b"{\n  \"a\": { \"x\": \"s\", \"y\": [1, 2] },\n  \"b\": 1\n}";

        assert_eq!(body_fingerprint(compact), body_fingerprint(pretty));
    }

    #[test]
    fn a_changed_value_or_order_in_an_array_changes_the_fingerprint() {
        let original = body_fingerprint(br#"{"events":[1,2]}"#);

        assert_ne!(original, body_fingerprint(br#"{"events":[2,1]}"#));
        assert_ne!(original, body_fingerprint(br#"{"events":[1,3]}"#));
        assert_ne!(original, body_fingerprint(br#"{"events":[1,2],"x":null}"#));
    }

    #[test]
    fn bodies_that_are_not_json_are_fingerprinted_as_bytes() {
        assert_eq!(body_fingerprint(b"{oops"), body_fingerprint(b"{oops"));
        assert_ne!(body_fingerprint(b"{oops"), body_fingerprint(b"{oops "));
        assert_eq!(body_fingerprint(&[]).len(), 64);
    }
}
