//! Evaluator identity protection: clear-text `userName` / `userCert` / `userPhone` become one keyed
//! hash, the `evaluator_key`, before anything is written anywhere.
//!
//! The key is HMAC-SHA256 under the operator's secret of the most stable identifier present: the ID
//! number (`userCert`), else the phone, else the name, else a platform's own `certKey`. Each input is
//! tagged with its kind, so a phone number and an ID number never map to the same key. Without the
//! secret the key cannot be reversed by enumerating ID or phone numbers.
//!
//! The dead-letter topic keeps rejected records for replay. [`EvaluatorKeyer::redact_json`] removes the
//! identity fields from such a record and adds `evaluatorKey`, which [`EvaluatorKeyer::key`] passes
//! through unchanged on replay, so a fixed record lands with the same key it would have had. Because
//! of that pass-through, an incoming `evaluatorKey` is accepted only in exactly this format
//! ([`is_evaluator_key`]): anything else could be an ID number on its way into the lake.

use std::borrow::Cow;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::transform::validate::Identity;

/// Wire fields that carry or derive from evaluator identity; none of them survives redaction.
pub const REDACTED_FIELDS: [&str; 4] = ["userName", "userCert", "userPhone", "certKey"];

/// Hex digits of an evaluator key: HMAC-SHA256 is 32 bytes.
pub const EVALUATOR_KEY_LEN: usize = 64;

/// Whether `text` is an evaluator key as [`EvaluatorKeyer::key`] writes it: exactly 64 lowercase hex
/// digits, nothing around them.
pub fn is_evaluator_key(text: &str) -> bool {
    text.len() == EVALUATOR_KEY_LEN
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// An evaluator key: 64 lowercase hex digits, held inline (one is made for every evaluation, so
/// it is not a heap string).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct EvaluatorKey([u8; EVALUATOR_KEY_LEN]);

impl EvaluatorKey {
    /// The key `text` is, if it is one ([`is_evaluator_key`]).
    pub fn parse(text: &str) -> Option<Self> {
        if !is_evaluator_key(text) {
            return None;
        }
        let mut digits = [0u8; EVALUATOR_KEY_LEN];
        digits.copy_from_slice(text.as_bytes());
        Some(Self(digits))
    }

    pub fn as_str(&self) -> &str {
        debug_assert!(is_evaluator_key(
            std::str::from_utf8(&self.0).unwrap_or_default()
        ));
        // SAFETY: only ever hex digits, which are UTF-8: the field is private, and a key is made
        // by `hex` encoding or by `parse`, which checks every byte. Checking them again cost two
        // `str::from_utf8` calls an evaluation (its row and its fingerprint).
        unsafe { std::str::from_utf8_unchecked(&self.0) }
    }
}

impl std::ops::Deref for EvaluatorKey {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl std::fmt::Debug for EvaluatorKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

impl std::fmt::Display for EvaluatorKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<EvaluatorKey> for String {
    fn from(key: EvaluatorKey) -> Self {
        key.as_str().to_owned()
    }
}

/// Feeds `bytes` to the MAC through a stack buffer, in pieces.
fn update_bytes(mac: &mut Hmac<Sha256>, bytes: impl Iterator<Item = u8>) {
    let mut buffer = [0u8; 64];
    let mut len = 0;
    for byte in bytes {
        buffer[len] = byte;
        len += 1;
        if len == buffer.len() {
            mac.update(&buffer);
            len = 0;
        }
    }
    mac.update(&buffer[..len]);
}

/// Turns identities into evaluator keys under one secret.
#[derive(Clone)]
pub struct EvaluatorKeyer {
    mac: Hmac<Sha256>,
}

impl std::fmt::Debug for EvaluatorKeyer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EvaluatorKeyer(<secret>)")
    }
}

impl EvaluatorKeyer {
    pub fn new(secret: &[u8]) -> Self {
        // HMAC accepts keys of any length; the error case cannot happen for HMAC-SHA256.
        let mac = <Hmac<Sha256> as Mac>::new_from_slice(secret)
            .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
        Self { mac }
    }

    /// The evaluator key (64 lowercase hex digits), or `None` when the evaluation names nobody.
    pub fn key(&self, identity: &Identity<'_>) -> Option<EvaluatorKey> {
        // Validation admits an incoming key only in this very format and never next to a clear
        // identity, so passing it through cannot carry anything else into the lake.
        if let Some(key) = &identity.evaluator_key {
            return EvaluatorKey::parse(key);
        }
        let mut mac = self.mac.clone();
        let mut tagged = |kind: &[u8]| {
            mac.update(kind);
            mac.update(b"\x1f");
        };
        // The normalised value is fed to the MAC in pieces through a stack buffer: the same key
        // as hashing it whole, without allocating a string. Only an ID number that is not ASCII
        // is uppercased into a new string (Unicode uppercase can change its length).
        if let Some(cert) = &identity.cert {
            tagged(b"cert");
            let cert = cert.trim();
            if cert.is_ascii() {
                update_bytes(&mut mac, cert.bytes().map(|b| b.to_ascii_uppercase()));
            } else {
                mac.update(cert.to_uppercase().as_bytes());
            }
        } else if let Some(phone) = &identity.phone {
            tagged(b"phone");
            update_bytes(&mut mac, phone.bytes().filter(u8::is_ascii_digit));
        } else if let Some(name) = &identity.name {
            tagged(b"name");
            mac.update(name.trim().as_bytes());
        } else if let Some(cert_key) = &identity.cert_key {
            tagged(b"certKey");
            mac.update(cert_key.trim().as_bytes());
        } else {
            return None;
        }
        let mut digits = [0u8; EVALUATOR_KEY_LEN];
        hex::encode_to_slice(mac.finalize().into_bytes(), &mut digits)
            .unwrap_or_else(|_| unreachable!("32 bytes are 64 hex digits"));
        Some(EvaluatorKey(digits))
    }

    /// Redacts a JSON object record for the dead-letter topic: identity fields removed, `evaluatorKey`
    /// added, and an `evaluatorKey` not in the engine's format dropped (it may be an ID number).
    /// GB18030 records come out as UTF-8 JSON. Returns `None` when the payload is not a JSON object
    /// or holds nothing to redact (then it is parked as received).
    pub fn redact_json(&self, payload: &[u8]) -> Option<Vec<u8>> {
        let json = crate::decode::payload_text(payload)?;
        let mut value: serde_json::Value = serde_json::from_str(&json).ok()?;
        let object = value.as_object_mut()?;
        let foreign_key = object
            .get("evaluatorKey")
            .is_some_and(|key| !key.as_str().is_some_and(is_evaluator_key));
        if !foreign_key && REDACTED_FIELDS.iter().all(|f| !object.contains_key(*f)) {
            return None;
        }
        if foreign_key {
            object.remove("evaluatorKey");
        }
        let text = |field: &str| -> Option<Cow<'_, str>> {
            match object.get(field)? {
                serde_json::Value::String(s) if !s.trim().is_empty() => {
                    Some(Cow::Borrowed(s.as_str()))
                }
                serde_json::Value::Number(n) => Some(Cow::Owned(n.to_string())),
                _ => None,
            }
        };
        let identity = Identity {
            name: text("userName"),
            cert: text("userCert"),
            phone: text("userPhone"),
            cert_key: text("certKey"),
            evaluator_key: None,
        };
        let key = self.key(&identity);
        for field in REDACTED_FIELDS {
            object.remove(field);
        }
        if let Some(key) = key {
            object.insert("evaluatorKey".into(), serde_json::Value::String(key.into()));
        }
        serde_json::to_vec(&value).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity<'a>(
        name: Option<&'a str>,
        cert: Option<&'a str>,
        phone: Option<&'a str>,
    ) -> Identity<'a> {
        Identity {
            name: name.map(Into::into),
            cert: cert.map(Into::into),
            phone: phone.map(Into::into),
            ..Default::default()
        }
    }

    #[test]
    fn key_is_keyed_stable_and_normalised() {
        let keyer = EvaluatorKeyer::new(b"secret-1");
        let a = keyer
            .key(&identity(Some("张三"), Some("41032819900101123x"), None))
            .unwrap();
        let b = keyer
            .key(&identity(
                Some("张 三"),
                Some(" 41032819900101123X "),
                Some("13800000000"),
            ))
            .unwrap();
        assert_eq!(a, b, "the ID number decides, normalised");
        assert_eq!(a.len(), 64);
        assert!(a
            .bytes()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        let other_secret =
            EvaluatorKeyer::new(b"secret-2").key(&identity(None, Some("41032819900101123X"), None));
        assert_ne!(Some(a), other_secret);
        assert!(!a.contains("41032819900101123"));
    }

    /// The key is HMAC-SHA256 of `kind 0x1f normalised value`, computed here in one piece, as keys
    /// in existing lakes were: feeding the MAC through a buffer must not change a single key.
    #[test]
    fn keys_are_the_hmac_of_the_tagged_normalised_value() {
        let secret = b"secret-1";
        let long_phone = format!("+86 {}", "138-0000-0000 ".repeat(12));
        let long_phone_digits = format!("86{}", "13800000000".repeat(12));
        let table: Vec<(Identity<'_>, &str, String)> = vec![
            (
                identity(None, Some(" 41032819900101123x "), None),
                "cert",
                "41032819900101123X".into(),
            ),
            (
                identity(None, Some("ß-证件-x"), None),
                "cert",
                "SS-证件-X".into(),
            ),
            (
                identity(Some("n"), None, Some("138 0000-0000")),
                "phone",
                "13800000000".into(),
            ),
            (
                identity(None, None, Some(long_phone.as_str())),
                "phone",
                long_phone_digits,
            ),
            (identity(Some(" 张三 "), None, None), "name", "张三".into()),
            (
                Identity {
                    cert_key: Some(" ck-1 ".into()),
                    ..Default::default()
                },
                "certKey",
                "ck-1".into(),
            ),
        ];
        let keyer = EvaluatorKeyer::new(secret);
        for (identity, kind, value) in table {
            let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).unwrap();
            mac.update(format!("{kind}\x1f{value}").as_bytes());
            let expected = hex::encode(mac.finalize().into_bytes());
            let key = keyer.key(&identity).unwrap();
            assert_eq!(key.as_str(), expected, "{kind} {value}");
        }
    }

    #[test]
    fn kinds_never_collide_and_nobody_has_no_key() {
        let keyer = EvaluatorKeyer::new(b"s");
        let as_phone = keyer.key(&identity(None, None, Some("13800000000")));
        let as_name = keyer.key(&identity(Some("13800000000"), None, None));
        assert_ne!(as_phone, as_name);
        assert_eq!(keyer.key(&Identity::default()), None);
    }

    #[test]
    fn redacted_record_replays_to_the_same_key() {
        let keyer = EvaluatorKeyer::new(b"s");
        let raw = r#"{"projectNo":"P1","userName":"张三","userCert":"410328199001011234","userPhone":"13800000000","satisfaction":9}"#.as_bytes();
        let redacted = keyer.redact_json(raw).unwrap();
        let text = String::from_utf8(redacted.clone()).unwrap();
        for secret in [
            "张三",
            "410328199001011234",
            "13800000000",
            "userName",
            "userCert",
            "userPhone",
        ] {
            assert!(!text.contains(secret), "{secret} leaked into {text}");
        }
        let value: serde_json::Value = serde_json::from_slice(&redacted).unwrap();
        let replayed = Identity {
            evaluator_key: value["evaluatorKey"].as_str().map(Into::into),
            ..Default::default()
        };
        let original = identity(
            Some("张三"),
            Some("410328199001011234"),
            Some("13800000000"),
        );
        assert_eq!(keyer.key(&replayed), keyer.key(&original));
        assert_eq!(value["satisfaction"], 9, "the rest of the record is kept");
    }

    #[test]
    fn redaction_leaves_non_objects_and_identity_free_records() {
        let keyer = EvaluatorKeyer::new(b"s");
        assert_eq!(keyer.redact_json(b"not json"), None);
        assert_eq!(keyer.redact_json(b"[1]"), None);
        assert_eq!(keyer.redact_json(br#"{"projectNo":"P1"}"#), None);
        let nested = keyer
            .redact_json(r#"{"userName":{"x":"张三"}}"#.as_bytes())
            .unwrap();
        assert_eq!(nested, b"{}");
    }

    #[test]
    fn evaluator_key_format() {
        let keyer = EvaluatorKeyer::new(b"s");
        let made = keyer
            .key(&identity(None, Some("410328199001011234"), None))
            .unwrap();
        let table: &[(&str, bool)] = &[
            (&made, true),
            (
                "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
                true,
            ),
            (
                "0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF",
                false,
            ),
            (
                "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdeF",
                false,
            ),
            ("410328199001011234", false),
            ("41032819900101123X", false),
            ("13800000000", false),
            ("张三", false),
            ("", false),
            (&made[..63], false),
            (&format!("{made}0"), false),
            (&format!(" {}", &made[1..]), false),
            (&format!("{}\n", &made[..63]), false),
            (
                "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdeg",
                false,
            ),
            // 64 bytes, but a full-width digit is not a hex digit.
            (&format!("０{}", &made[3..]), false),
        ];
        for (text, expected) in table {
            assert_eq!(is_evaluator_key(text), *expected, "{text:?}");
        }
    }

    #[test]
    fn redaction_drops_a_key_not_of_ours() {
        let keyer = EvaluatorKeyer::new(b"s");
        for raw in [
            r#"{"projectNo":"P1","evaluatorKey":"410328199001011234"}"#,
            r#"{"projectNo":"P1","evaluatorKey":410328199001011234}"#,
            r#"{"projectNo":"P1","evaluatorKey":["410328199001011234"]}"#,
        ] {
            let redacted = keyer.redact_json(raw.as_bytes()).unwrap();
            assert_eq!(redacted, br#"{"projectNo":"P1"}"#, "{raw}");
        }
        let ours = format!(
            r#"{{"projectNo":"P1","evaluatorKey":"{}"}}"#,
            "a".repeat(64)
        );
        assert_eq!(
            keyer.redact_json(ours.as_bytes()),
            None,
            "nothing to redact"
        );
    }

    #[test]
    fn redaction_reads_gb18030() {
        let keyer = EvaluatorKeyer::new(b"s");
        let text = r#"{"projectNo":"P1","userName":"张三","writingEvaluation":"很好"}"#;
        let (gb, _, _) = encoding_rs::GB18030.encode(text);
        let redacted = keyer.redact_json(&gb).unwrap();
        let value: serde_json::Value = serde_json::from_slice(&redacted).unwrap();
        assert_eq!(value["writingEvaluation"], "很好");
        assert!(value.get("userName").is_none());
        assert_eq!(
            value["evaluatorKey"].as_str(),
            keyer.key(&identity(Some("张三"), None, None)).as_deref()
        );
    }
}
